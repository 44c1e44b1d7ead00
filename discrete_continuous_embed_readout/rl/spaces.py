"""gymnasium spaces -> ``EmbedAndReadout`` arguments, and conversions between a
space's samples and the tensors ``Embed`` takes and ``Readout`` gives.

gymnasium is optional: it is imported when a ``SpaceAdapter`` is built, and a
missing install is an ``ImportError`` that says how to get it.
"""

# g - discrete groups, c - continuous dims

from __future__ import annotations

import torch
from torch import Tensor

from .._checks import content_checks_enabled, describe
from .._utils import DiscreteContinuous, default, exists, is_pair
from ..factory import EmbedAndReadout, EmbedReadoutPair
from ._space_tree import (
    _as_range,
    _batch_shape,
    _first_out_of_range,
    _flatten,
    _gymnasium_spaces,
    _ids_from_one_hots,
    _ids_from_sample,
    _leaf_to_space,
    _leaves,
    _numpy,
    _pack,
    _unflatten,
)

try:  # numpy comes with gymnasium; torch does not require it
    import numpy as np
except ImportError:
    np = None

__all__ = ['SpaceAdapter']

BOUNDED_HEADS = ('squashed', 'beta', 'kumaraswamy', None)


class SpaceAdapter:
    """Reads a gymnasium space as an ``EmbedAndReadout`` layout and converts samples both ways.

    Discrete-like leaves (``Discrete``, ``MultiDiscrete``, ``MultiBinary``) become
    discrete groups, one per id, in order; ``Box`` leaves become continuous dims,
    flattened in order. ``Tuple`` and ``Dict`` spaces (nested too) concatenate their
    leaves, so any mix is one readout: discrete, multi-discrete, continuous or mixed.

    Box bounds: when every continuous bound is finite, the continuous head is
    ``bounded_head`` (a tanh-squashed gaussian by default, or beta / kumaraswamy) and
    the readout is built with the box's ``low`` and ``high`` as its
    ``continuous_range``, per dim: ``sample`` / ``mode`` return values in the box and
    ``log_prob`` / the loss read them there, with no per-call argument (the Embed
    maps such values back onto the head's native range). Otherwise the head is an
    unbounded gaussian, and ``to_space`` clips samples into the box.

    Args:
        space: a gymnasium space: ``Discrete``, ``MultiDiscrete``, ``MultiBinary``,
            ``Box``, or ``Tuple`` / ``Dict`` of these.
        bounded_head: ``'squashed'``, ``'beta'``, ``'kumaraswamy'``, or ``None`` for
            an unbounded gaussian even when the box is bounded.

    Attributes:
        kwargs: ``EmbedAndReadout`` arguments (``num_discrete``, ``num_continuous``,
            the continuous head, and for a bounded box ``continuous_range``).
        rescale_range: ``(low, high)``, the box's bounds that ``kwargs`` bind as
            ``continuous_range`` (numbers when every dim has the same bounds, else
            ``(c,)`` float32 tensors), or ``None``; per call only for a readout
            built without them (a bound readout takes them silently).
        group_sizes: ids per discrete group, in order.
        num_continuous: continuous dims, in order.
        low, high: the continuous dims' flat bounds (float64 arrays), or ``None``.
        bounded_head: the head used for the box: ``bounded_head`` when every bound
            is finite, else ``None`` (an unbounded gaussian).

    Examples:
        >>> from gymnasium.spaces import Box, Dict, Discrete
        >>> space = Dict(kind=Discrete(3), force=Box(-2.0, 2.0, (2,)))
        >>> adapter = SpaceAdapter(space)
        >>> embed, readout = adapter.embed_and_readout(64)
        >>> action = readout.sample(readout(torch.randn(64)))  # the force in [-2, 2]: the box is bound
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
        """``EmbedAndReadout`` arguments: ``num_discrete``, ``num_continuous``, the
        continuous head (``continuous_squashed`` or ``continuous_dist_type``) and,
        for a bounded box, its bounds as ``continuous_range``."""
        kwargs = dict(num_discrete=self.num_discrete, num_continuous=self.num_continuous)
        if self.bounded_head == 'squashed':
            kwargs.update(continuous_squashed=True)
        elif exists(self.bounded_head):
            kwargs.update(continuous_dist_type=self.bounded_head)
        if exists(self.bounded_head):
            kwargs.update(continuous_range=self.rescale_range)
        return kwargs

    def embed_and_readout(self, dim: int, **kwargs) -> EmbedReadoutPair:
        """Build the pair for this space.

        Args:
            dim: the model dimension.
            **kwargs: more ``EmbedAndReadout`` arguments; they override ``self.kwargs``.

        Returns:
            ``(embed, readout)``, as ``EmbedAndReadout(dim, **self.kwargs, **kwargs)``:
            for a bounded box, both bound to its units (``continuous_range``), so
            that ``readout.sample`` returns actions in the box and the Embed takes
            them as they are.
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
            sampled: what ``Readout.sample`` / ``mode`` of ``embed_and_readout``'s
                readout return (values already in the box): ids ``(*batch)`` or
                ``(*batch, g)`` (any integer dtype), values ``(*batch, c)``, or a
                ``(discrete, continuous)`` pair. The hard one-hots of
                ``sample(..., differentiable=True)`` (float, the groups' one-hots
                concatenated ``(*batch, sum of group sizes)``) are read as ids:
                each group's argmax.

        Returns:
            numpy arrays of the space's dtypes and shapes (a numpy scalar for an
            unbatched ``Discrete``), a dict for ``Dict`` and a tuple for ``Tuple``; a
            leading batch keeps its axes. Values are clipped into the box (an
            unbounded gaussian's samples, float rounding; a bound readout's
            samples lie in the box already) and rounded for an integer box.

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
