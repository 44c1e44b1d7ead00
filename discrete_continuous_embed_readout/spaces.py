"""gymnasium spaces -> ``EmbedAndReadout`` arguments, and conversions between a
space's samples and the tensors ``Embed`` takes and ``Readout`` gives.

gymnasium is optional: it is imported when a ``SpaceAdapter`` is built, and a
missing install is an ``ImportError`` that says how to get it.
"""

# g - discrete groups, c - continuous dims

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from ._checks import content_checks_enabled, describe
from ._utils import DiscreteContinuous, default, exists, is_pair
from .factory import EmbedAndReadout, EmbedReadoutPair

try:  # numpy comes with gymnasium; torch does not require it
    import numpy as np
except ImportError:
    np = None

BOUNDED_HEADS = ('squashed', 'beta', 'kumaraswamy', None)


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


class SpaceAdapter:
    """Reads a gymnasium space as an ``EmbedAndReadout`` layout and converts samples both ways.

    Discrete-like leaves (``Discrete``, ``MultiDiscrete``, ``MultiBinary``) become
    discrete groups, one per id, in order; ``Box`` leaves become continuous dims,
    flattened in order. ``Tuple`` and ``Dict`` spaces (nested too) concatenate their
    leaves, so any mix is one readout: discrete, multi-discrete, continuous or mixed.

    Box bounds: when every continuous bound is finite, the continuous head is
    ``bounded_head`` (a tanh-squashed gaussian by default, or beta / kumaraswamy) and
    ``rescale_range`` maps its samples to the box, per dim. Otherwise it is an
    unbounded gaussian, and ``to_space`` clips samples into the box.

    Args:
        space: a gymnasium space: ``Discrete``, ``MultiDiscrete``, ``MultiBinary``,
            ``Box``, or ``Tuple`` / ``Dict`` of these.
        bounded_head: ``'squashed'``, ``'beta'``, ``'kumaraswamy'``, or ``None`` for
            an unbounded gaussian even when the box is bounded.

    Attributes:
        kwargs: ``EmbedAndReadout`` arguments (``num_discrete``, ``num_continuous``,
            the continuous head).
        rescale_range: ``(low, high)`` for ``Readout.sample`` / ``mode`` /
            ``log_prob`` / ``get_dist`` (numbers when every dim has the same bounds,
            else ``(c,)`` float32 tensors), or ``None``.
        group_sizes: ids per discrete group, in order.
        num_continuous: continuous dims, in order.
        low, high: the continuous dims' flat bounds (float64 arrays), or ``None``.
        bounded_head: the head used for the box: ``bounded_head`` when every bound
            is finite, else ``None`` (an unbounded gaussian).

    Example:
        >>> from gymnasium.spaces import Box, Dict, Discrete
        >>> space = Dict(kind=Discrete(3), force=Box(-2.0, 2.0, (2,)))
        >>> adapter = SpaceAdapter(space)
        >>> embed, readout = adapter.embed_and_readout(64)
        >>> action = readout.sample(readout(torch.randn(64)), rescale_range=adapter.rescale_range)
        >>> space.contains(adapter.to_space(action))
        True
    """

    def __init__(self, space, bounded_head: str | None = 'squashed'):
        self._spaces = spaces = _gymnasium_spaces()
        if bounded_head not in BOUNDED_HEADS:
            raise ValueError(f'bounded_head must be one of {BOUNDED_HEADS}, got {bounded_head!r}')
        self.space = space
        self._leaves = _leaves(space, spaces, 'space')
        if not self._leaves:
            raise ValueError(f'space: {space} has no Discrete, MultiDiscrete, MultiBinary or Box inside')
        discrete = [leaf for leaf in self._leaves if leaf.kind == 'discrete']
        continuous = [leaf for leaf in self._leaves if leaf.kind == 'continuous']
        self.group_sizes = tuple(n for leaf in discrete for n in leaf.sizes)
        self._group_leaves = tuple(leaf for leaf in discrete for _ in leaf.sizes)
        self.num_continuous = sum(leaf.width for leaf in continuous)
        self.low = np.concatenate([leaf.low for leaf in continuous]) if continuous else None
        self.high = np.concatenate([leaf.high for leaf in continuous]) if continuous else None
        bounded = self.num_continuous > 0 and bool(np.isfinite(self.low).all() and np.isfinite(self.high).all())
        self.bounded_head = bounded_head if bounded else None
        self.rescale_range = _as_range(self.low, self.high) if exists(self.bounded_head) else None

    # EmbedAndReadout arguments

    @property
    def num_discrete(self) -> int | tuple[int, ...]:
        """One group: its size; several: a tuple of sizes; none: 0."""
        return self.group_sizes[0] if len(self.group_sizes) == 1 else self.group_sizes or 0

    @property
    def kwargs(self) -> dict:
        """``EmbedAndReadout`` arguments: ``num_discrete``, ``num_continuous`` and
        the continuous head (``continuous_squashed`` or ``continuous_dist_type``)."""
        kwargs = dict(num_discrete=self.num_discrete, num_continuous=self.num_continuous)
        if self.bounded_head == 'squashed':
            kwargs.update(continuous_squashed=True)
        elif exists(self.bounded_head):
            kwargs.update(continuous_dist_type=self.bounded_head)
        return kwargs

    def embed_and_readout(self, dim: int, **kwargs) -> EmbedReadoutPair:
        """Build the pair for this space.

        Args:
            dim: the model dimension.
            **kwargs: more ``EmbedAndReadout`` arguments; they override ``self.kwargs``.

        Returns:
            ``(embed, readout)``, as ``EmbedAndReadout(dim, **self.kwargs, **kwargs)``.
        """
        return EmbedAndReadout(dim, **{**self.kwargs, **kwargs})

    # conversions

    def from_space(self, sample, device=None, dtype: torch.dtype = torch.float32) -> Tensor | DiscreteContinuous:
        """A space sample, or a batch of them (leading axes, as vector envs give),
        as ``Embed`` inputs / ``Readout`` targets and ``log_prob`` values.

        Args:
            sample: what ``space.sample()`` or an env returns (a batch allowed).
            device: where the tensors go.
            dtype: the continuous values' dtype.

        Returns:
            ids ``(*batch)`` (one group) or ``(*batch, g)`` (long, shifted so each
            group starts at 0); values ``(*batch, c)``; or a ``DiscreteContinuous``
            pair when the space has both.

        Raises:
            TypeError: a discrete part does not hold integer ids (any integer or bool
                dtype passes: gymnasium's ``MultiBinary`` / ``MultiDiscrete`` give int8).
            ValueError: a part's trailing shape is not its space's.
            IndexError: an id lies outside its space's ``[start, start + n)`` (a
                content check: skipped after ``set_validate_args(False)``).
        """
        parts = [np.asarray(x) for x in _flatten(self.space, sample, 'sample', self._spaces)]
        batch = _batch_shape(parts, self._leaves)
        ids = [_ids_from_sample(x, leaf).reshape(*batch, -1) for x, leaf in zip(parts, self._leaves) if leaf.kind == 'discrete']
        values = [x.reshape(*batch, -1) for x, leaf in zip(parts, self._leaves) if leaf.kind == 'continuous']
        d = c = None
        if ids:
            d = torch.as_tensor(np.concatenate(ids, axis=-1), device=device)
            d = d.squeeze(-1) if len(self.group_sizes) == 1 else d
        if values:
            c = torch.as_tensor(np.concatenate(values, axis=-1), dtype=dtype, device=device)
        return _pack(d, c)

    def to_space(self, sampled):
        """Readout samples in the space's own format, ready for ``env.step``.

        Args:
            sampled: what ``Readout.sample`` / ``mode`` return with
                ``rescale_range=self.rescale_range``: ids ``(*batch)`` or
                ``(*batch, g)`` (any integer dtype), values ``(*batch, c)``, or a
                ``(discrete, continuous)`` pair. The hard one-hots of
                ``sample(..., differentiable=True)`` (float, the groups' one-hots
                concatenated ``(*batch, sum of group sizes)``) are read as ids:
                each group's argmax.

        Returns:
            numpy arrays of the space's dtypes and shapes (a numpy scalar for an
            unbatched ``Discrete``), a dict for ``Dict`` and a tuple for ``Tuple``; a
            leading batch keeps its axes. Values are clipped into the box (an
            unbounded gaussian's samples, float rounding) and rounded for an
            integer box.

        Raises:
            TypeError: ``sampled`` is not a tensor or pair of the space's parts; the
                discrete part is float but not hard one-hots of that shape (float
                ids, or a relaxed ``hard=False`` sample: pass ids or hard
                one-hots), or bool / complex. Whether a float tensor is exactly
                one-hot is always checked: it decides what the tensor is, and
                runs on the host copy made here anyway.
            ValueError: a part's shape does not fit the space or the other part.
            IndexError: an id lies outside ``[0, n)`` of its group (a content
                check: skipped after ``set_validate_args(False)``).
        """
        d, c = self._split(sampled)
        # one device-to-host copy per part; the leaves are numpy views of it
        values = _numpy(c) if exists(c) else None
        ids = self._ids(d, values.shape[:-1] if exists(c) else None) if exists(d) else None
        batch = values.shape[:-1] if exists(c) else ids.shape[:-1]
        parts = {'discrete': ids, 'continuous': values}
        columns = {'discrete': 0, 'continuous': 0}
        leaves = []
        for leaf in self._leaves:
            start = columns[leaf.kind]
            columns[leaf.kind] += leaf.width
            leaves.append(_leaf_to_space(leaf, parts[leaf.kind][..., start : start + leaf.width], tuple(batch)))
        return _unflatten(self.space, iter(leaves), self._spaces)

    def _split(self, sampled):
        has_d, has_c = bool(self.group_sizes), self.num_continuous > 0
        if has_d and has_c:
            if not is_pair(sampled):
                raise TypeError(f'sampled: this space has discrete and continuous parts, expected a (discrete, continuous) pair, got {type(sampled).__name__}')
            d, c = sampled
        else:
            d, c = (sampled, None) if has_d else (None, sampled)
        for name, t in (('discrete', d), ('continuous', c)):
            if (name == 'discrete' and has_d or name == 'continuous' and has_c) and not torch.is_tensor(t):
                raise TypeError(f'sampled: the {name} part must be a tensor, got {type(t).__name__}')
        if has_c and c.shape[-1] != self.num_continuous:
            raise ValueError(f'sampled: continuous values need a last axis of {self.num_continuous}, got shape {tuple(c.shape)}')
        return d, c

    def _ids(self, d: Tensor, batch: tuple[int, ...] | None) -> np.ndarray:
        """Zero-based ids ``(*batch, g)`` from ids or one-hots; ``batch`` is the continuous part's."""
        name = f'sampled: the discrete part (for {self.space})'
        if d.dtype.is_floating_point:
            total = sum(self.group_sizes)
            if d.ndim == 0 or d.shape[-1] != total or (exists(batch) and tuple(d.shape[:-1]) != batch):
                expected = f'({", ".join(map(str, (*batch, total)))})' if exists(batch) else f'(..., {total})'
                raise TypeError(
                    f'{name} must hold integer ids (any integer dtype), or the hard one-hots of sample(..., differentiable=True): '
                    f"float {expected}, the groups' one-hots concatenated; got {describe(d)}"
                )
            return _ids_from_one_hots(_numpy(d), self.group_sizes, name)
        if d.dtype.is_complex or d.dtype == torch.bool:
            raise TypeError(f'{name} must hold integer ids (any integer dtype), got {describe(d)}')
        g = len(self.group_sizes)
        if g > 1 and (d.ndim == 0 or d.shape[-1] != g):
            raise ValueError(f'{name}: ids need a last axis of {g} groups, got {describe(d)}')
        lead = tuple(d.shape if g == 1 else d.shape[:-1])
        if exists(batch) and lead != batch and not (g == 1 and d.shape == (*batch, 1)):
            raise ValueError(f'{name}: ids need the batch shape {batch} of the continuous part, got {describe(d)}')
        ids = d.detach().cpu().long().numpy().reshape(*default(batch, lead), g)
        where = _first_out_of_range(ids, np.asarray(self.group_sizes)) if content_checks_enabled() else None
        if exists(where):
            group, leaf = where[-1], self._group_leaves[where[-1]]
            index = where if d.ndim == ids.ndim else where[:-1]
            raise IndexError(
                f'sampled: discrete id {ids[where]} at index {index} is out of range for group {group} (space{leaf.path}: {leaf.label}); '
                f'expected 0 <= id < {self.group_sizes[group]} (got {describe(d)})'
            )
        return ids

    def __repr__(self) -> str:
        return f'SpaceAdapter({self.space}, kwargs={self.kwargs})'


# reading a space


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
