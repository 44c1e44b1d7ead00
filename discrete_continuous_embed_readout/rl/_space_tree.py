"""gymnasium space trees flattened into leaves (a discrete group or a block of
continuous dims each) and back: what ``SpaceAdapter`` is built on."""

# g - discrete groups, c - continuous dims

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from .._checks import content_checks_enabled
from .._utils import DiscreteContinuous, exists

try:  # numpy comes with gymnasium; torch does not require it
    import numpy as np
except ImportError:
    np = None


def _gymnasium_spaces():
    try:
        from gymnasium import spaces
    except ImportError:
        raise ImportError(
            'SpaceAdapter needs gymnasium: pip install "discrete-continuous-embed-readout[gymnasium]" (or pip install gymnasium)'
        ) from None
    return spaces


@dataclass(frozen=True)
class _Leaf:
    """One Discrete / MultiDiscrete / MultiBinary / Box inside a (nested) space."""

    kind: str  # 'discrete' or 'continuous'
    shape: tuple[int, ...]  # the space's own sample shape
    dtype: np.dtype
    sizes: tuple[int, ...] = ()  # discrete: ids per group
    start: tuple[int, ...] = ()  # discrete: the id of each group's first action
    low: np.ndarray | None = None  # continuous: flat bounds
    high: np.ndarray | None = None
    path: str = ''  # where it sits in the space, for errors: ['move'] (sample['move'])
    label: str = ''  # the leaf space itself, for errors: Discrete(3)

    @property
    def width(self) -> int:
        return len(self.sizes) if self.kind == 'discrete' else len(self.low)


def _leaves(space, spaces, path: str) -> list[_Leaf]:
    if isinstance(space, spaces.Dict):
        return [leaf for key, sub in space.spaces.items() for leaf in _leaves(sub, spaces, f'{path}[{key!r}]')]
    if isinstance(space, spaces.Tuple):
        return [leaf for i, sub in enumerate(space.spaces) for leaf in _leaves(sub, spaces, f'{path}[{i}]')]
    where = dict(path=path.removeprefix('space'), label=str(space))  # errors say sample[...] / space[...]
    if isinstance(space, spaces.Discrete):
        return [_Leaf('discrete', (), space.dtype, (int(space.n),), (int(space.start),), **where)]
    if isinstance(space, spaces.MultiDiscrete):
        sizes, start = (tuple(int(v) for v in a.reshape(-1)) for a in (space.nvec, space.start))
        return [_Leaf('discrete', tuple(space.shape), space.dtype, sizes, start, **where)]
    if isinstance(space, spaces.MultiBinary):
        shape = tuple(space.shape)
        return [_Leaf('discrete', shape, space.dtype, (2,) * math.prod(shape), (0,) * math.prod(shape), **where)]
    if isinstance(space, spaces.Box):
        low, high = (np.broadcast_to(b, space.shape).reshape(-1).astype(np.float64) for b in (space.low, space.high))
        return [_Leaf('continuous', tuple(space.shape), space.dtype, low=low, high=high, **where)]
    raise TypeError(f'{path}: expected Discrete, MultiDiscrete, MultiBinary, Box, Tuple or Dict, got {type(space).__name__}')


def _as_range(low: np.ndarray, high: np.ndarray):
    """Numbers when every dim has the same bounds, per-dim tensors otherwise."""
    if (low == low[0]).all() and (high == high[0]).all():
        return float(low[0]), float(high[0])
    return torch.as_tensor(low, dtype=torch.float32), torch.as_tensor(high, dtype=torch.float32)


# samples <-> leaves


def _flatten(space, sample, path: str, spaces) -> list:
    """A (nested) sample's leaves, in the order of ``_leaves``."""
    if isinstance(space, spaces.Dict):
        if not isinstance(sample, dict):
            raise TypeError(f'{path}: expected a dict with keys {list(space.spaces)}, got {type(sample).__name__}')
        missing = [key for key in space.spaces if key not in sample]
        if missing:
            raise ValueError(f'{path}: missing keys {missing} (expected {list(space.spaces)})')
        return [x for key, sub in space.spaces.items() for x in _flatten(sub, sample[key], f'{path}[{key!r}]', spaces)]
    if isinstance(space, spaces.Tuple):
        if not isinstance(sample, (tuple, list)) or len(sample) != len(space.spaces):
            raise TypeError(f'{path}: expected a tuple of {len(space.spaces)}, got {type(sample).__name__}')
        return [x for i, (sub, s) in enumerate(zip(space.spaces, sample)) for x in _flatten(sub, s, f'{path}[{i}]', spaces)]
    return [sample]


def _batch_shape(parts: list[np.ndarray], leaves: list[_Leaf]) -> tuple[int, ...]:
    batches = set()
    for x, leaf in zip(parts, leaves):
        if x.shape[x.ndim - len(leaf.shape) :] != leaf.shape or x.ndim < len(leaf.shape):
            raise ValueError(f'sample: expected a trailing shape {leaf.shape} for a leaf of the space, got {x.shape}')
        batches.add(x.shape[: x.ndim - len(leaf.shape)])
    if len(batches) > 1:
        raise ValueError(f'sample: the leaves of the space have different batch shapes {sorted(batches)}')
    return batches.pop()


def _ids_from_sample(x: np.ndarray, leaf: _Leaf) -> np.ndarray:
    """A discrete leaf's sample ``(*batch, *leaf.shape)`` as zero-based int64 ids."""
    name = f'sample{leaf.path}'
    if not (np.issubdtype(x.dtype, np.integer) or x.dtype == np.bool_):
        raise TypeError(f'{name}: expected integer ids for {leaf.label}, got an array of dtype {x.dtype} and shape {x.shape}')
    start, sizes = (np.reshape(v, leaf.shape) for v in (leaf.start, leaf.sizes))
    ids = x.astype(np.int64) - start
    where = _first_out_of_range(ids, sizes) if content_checks_enabled() else None
    if exists(where):
        lo, n = (int(v[where[x.ndim - len(leaf.shape) :]]) for v in (start, sizes))
        raise IndexError(
            f'{name}: id {x[where]} at index {where} is out of range for {leaf.label}; '
            f'expected {lo} <= id < {lo + n} (got an array of dtype {x.dtype} and shape {x.shape})'
        )
    return ids


def _ids_from_one_hots(x: np.ndarray, sizes: tuple[int, ...], name: str) -> np.ndarray:
    """Each group's argmax ``(*batch, g)`` of the one-hots ``(*batch, sum n_g)`` of a differentiable sample."""
    offsets = np.cumsum((0, *sizes[:-1]))
    ones = np.add.reduceat(x, offsets, axis=-1)  # (*batch, g)
    if not (np.isin(x, (0, 1)).all() and (ones == 1).all()):
        raise TypeError(
            f'{name}: a float tensor of shape {x.shape} is read as one-hots, but it is not exactly one-hot (0 or 1, one 1 per group); '
            'a relaxed sample (hard=False)? pass ids, or the hard one-hots of sample(..., differentiable=True, hard=True)'
        )
    local = np.arange(x.shape[-1]) - np.repeat(offsets, sizes)  # each column's id within its group
    return np.add.reduceat(x * local, offsets, axis=-1).astype(np.int64)


def _first_out_of_range(ids: np.ndarray, sizes: np.ndarray) -> tuple[int, ...] | None:
    bad = (ids < 0) | (ids >= sizes)
    return tuple(int(i) for i in np.argwhere(bad)[0]) if bad.any() else None


def _leaf_to_space(leaf: _Leaf, block: np.ndarray, batch: tuple[int, ...]):
    if leaf.kind == 'discrete':
        x = block.astype(np.int64) + np.asarray(leaf.start, dtype=np.int64)
    else:
        x = np.clip(block.astype(np.float64), leaf.low, leaf.high)
        x = np.rint(x) if np.issubdtype(leaf.dtype, np.integer) else x
    x = x.reshape((*batch, *leaf.shape)).astype(leaf.dtype)
    return x[()] if x.ndim == 0 else x  # an unbatched Discrete: a numpy scalar


def _unflatten(space, leaves, spaces):
    if isinstance(space, spaces.Dict):
        return {key: _unflatten(sub, leaves, spaces) for key, sub in space.spaces.items()}
    if isinstance(space, spaces.Tuple):
        return tuple(_unflatten(sub, leaves, spaces) for sub in space.spaces)
    return next(leaves)


def _numpy(t: Tensor) -> np.ndarray:
    t = t.detach().cpu()
    return (t.float() if t.dtype == torch.bfloat16 else t).numpy()  # numpy has no bfloat16


def _pack(d, c):
    if exists(d) and exists(c):
        return DiscreteContinuous(d, c)
    return d if exists(d) else c
