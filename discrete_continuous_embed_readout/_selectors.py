"""Selector configs: which rows of the shared table one kind of input uses.

A config is
- discrete only: ``list[list[int]]``, one list of unique discrete rows per group;
- continuous only: ``list[int]``, unique continuous dims;
- both: ``(list[list[int]], list[int])``.

``Selector`` turns a validated config into index tables, built once and kept
as non-persistent buffers (they move with ``.to()`` and stay out of
``state_dict``). Where rows are contiguous a plain slice replaces the gather.
"""

# g - discrete groups, c - continuous dims

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor, nn

from ._utils import exclusive_cumsum, exists


class TableLayout(NamedTuple):
    """Row layout of a table: ``[discrete rows][continuous rows][log-var rows][bin rows]``
    (a binned head: ``num_bins`` rows per continuous dim, dim-major, and no log-var rows)."""

    num_discrete: int  # total discrete rows
    group_sizes: tuple[int, ...]  # default groups (cover all discrete rows)
    num_continuous: int
    log_var_rows: bool  # the readout's extra block
    num_bins: int = 0  # per continuous dim, for a binned head


class ParsedConfig(NamedTuple):
    groups: tuple[tuple[int, ...], ...] | None
    dims: tuple[int, ...] | None


def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_int_list(v) -> bool:
    return isinstance(v, (list, tuple)) and all(_is_int(i) for i in v)


def _is_groups(v) -> bool:
    return isinstance(v, (list, tuple)) and len(v) > 0 and all(_is_int_list(g) for g in v)


def _split_config(config, name: str) -> ParsedConfig:
    if _is_groups(config):
        return ParsedConfig(tuple(config), None)
    if _is_int_list(config) and len(config) > 0:
        return ParsedConfig(None, tuple(config))
    if isinstance(config, tuple) and len(config) == 2:
        groups, dims = config
        if exists(groups) and not _is_groups(groups):
            raise TypeError(f'{name}[0] must be a list of lists of ints (one list per discrete group), got {groups!r}')
        if exists(dims) and not _is_int_list(dims):
            raise TypeError(f'{name}[1] must be a list of ints (continuous dims), got {dims!r}')
        return ParsedConfig(groups, dims)
    raise TypeError(
        f'{name} must be list[list[int]] (discrete), list[int] (continuous) or '
        f'(list[list[int]], list[int]) (both), got {config!r}'
    )


def _check_unique_in_range(indices, bound: int, name: str, what: str) -> tuple[int, ...]:
    if len(indices) == 0:
        raise ValueError(f'{name} must not be empty: give at least one {what}, got {list(indices)}')
    if len(set(indices)) != len(indices):
        raise ValueError(f'{name} must not repeat an index, got {list(indices)}')
    bad = [i for i in indices if not 0 <= i < bound]
    if bad:
        raise IndexError(f'{name}: {what} {bad[0]} is out of range; expected 0 <= index < {bound}, got {list(indices)}')
    return tuple(indices)


def parse_selector_config(config, layout: TableLayout, name: str = 'selector_config') -> ParsedConfig:
    """Validate a selector config against a table layout (see module docstring)."""
    return _check_parts(*_split_config(config, name), layout, name)


def parse_selector_parts(groups, dims, layout: TableLayout, name: str) -> ParsedConfig:
    """Validate a config given as its two parts (``None`` for a part left out)."""
    if exists(groups) and not _is_groups(groups):
        raise TypeError(f'{name}: discrete_indices must be a list of lists of ints (one list per discrete group), got {groups!r}')
    if exists(dims) and not _is_int_list(dims):
        raise TypeError(f'{name}: continuous_indices must be a list of ints (continuous dims), got {dims!r}')
    return _check_parts(groups, dims, layout, name)


def _check_parts(groups, dims, layout: TableLayout, name: str) -> ParsedConfig:
    if groups is None and dims is None:
        raise ValueError(f'{name} selects nothing: give discrete groups, continuous dims or both')
    if exists(groups):
        if layout.num_discrete == 0:
            raise ValueError(f'{name} selects discrete rows but the module has num_discrete = 0')
        groups = tuple(
            _check_unique_in_range(g, layout.num_discrete, f'{name} discrete group {i}', 'discrete row')
            for i, g in enumerate(groups)
        )
    if exists(dims):
        if layout.num_continuous == 0:
            raise ValueError(f'{name} selects continuous dims but the module has num_continuous = 0')
        dims = _check_unique_in_range(dims, layout.num_continuous, f'{name} continuous dims', 'continuous dim')
    return ParsedConfig(groups, dims)


def default_config(layout: TableLayout) -> ParsedConfig:
    """All rows: the default groups in order and every continuous dim."""
    groups = None
    if layout.num_discrete > 0:
        offsets = exclusive_cumsum(layout.group_sizes)
        groups = tuple(tuple(range(o, o + n)) for o, n in zip(offsets, layout.group_sizes))
    dims = tuple(range(layout.num_continuous)) if layout.num_continuous > 0 else None
    return ParsedConfig(groups, dims)


def _contiguous(rows: list[int]) -> slice | None:
    if rows and rows == list(range(rows[0], rows[0] + len(rows))):
        return slice(rows[0], rows[0] + len(rows))
    return None


def padded_rows(rows: list[int], sizes) -> list[int]:
    """The groups' ``rows``, each group widened to the widest by repeating its first
    row: ``([7, 8, 9, 4], (3, 1)) -> [7, 8, 9, 4, 4, 4]`` (the padding's logits are
    then set to ``-inf``; see ``_plain_loss.py``)."""
    widest, offsets = max(sizes, default=0), exclusive_cumsum(sizes)
    return [rows[o + min(i, n - 1)] for o, n in zip(offsets, sizes) for i in range(widest)]


class Selector(nn.Module):
    """Index tables of one validated config. Internal; built once per config.

    Attributes:
        has_discrete, has_continuous: which modalities the config uses.
        discrete_rows, continuous_rows, readout_rows, continuous_readout_rows,
            continuous_dims: the table rows (or dims) of each kind, a ``slice``
            where contiguous, else a ``(k,)`` index buffer (a binned head's
            ``continuous_readout_rows`` are its dims' bin rows, dim-major).
        group_sizes: sizes of its discrete groups (Python ints).
        padded_rows: ``(g * widest,)`` index buffer: each group's table rows,
            widened to the widest group (``padded_rows``; for the plain loss).
        num_continuous: number of continuous dims it uses.
        squashed: whether its continuous samples are tanh-squashed; ``None``
            (every selector but those of ``create_discrete_continuous_selector``):
            as the owning module.
        free_width: its one discrete group is as wide as the logits it is given
            (the default selector of a readout without a table: no rows fix the width).
    """

    def __init__(self, parsed: ParsedConfig, layout: TableLayout, squashed: bool | None = None, *, free_width: bool = False):
        super().__init__()
        groups, dims = parsed
        self.parsed = parsed
        self.squashed = squashed  # None: as the owning module (0.2.x selectors could differ)
        self.free_width = free_width
        self.has_discrete = exists(groups)
        self.has_continuous = exists(dims)
        self.group_sizes = tuple(len(g) for g in groups) if self.has_discrete else ()
        self.num_groups = len(self.group_sizes)
        self.num_discrete_rows = sum(self.group_sizes)
        self.num_continuous = len(dims) if self.has_continuous else 0

        discrete_rows = [r for g in (groups or ()) for r in g]
        dims = list(dims or ())
        nd, nc = layout.num_discrete, layout.num_continuous
        mean_rows = [nd + d for d in dims]
        log_var_rows = [nd + nc + d for d in dims] if layout.log_var_rows else []
        nb = layout.num_bins
        bin_rows = [nd + nc + d * nb + b for d in dims for b in range(nb)]  # binned heads read these instead

        self._lists = {}  # the rows of each non-contiguous index, to rebuild it after a move
        self._index('discrete_rows', discrete_rows)
        self._index('continuous_rows', mean_rows)
        continuous_readout_rows = bin_rows if nb else mean_rows + log_var_rows
        self._index('readout_rows', discrete_rows + continuous_readout_rows)
        self._index('continuous_readout_rows', continuous_readout_rows)
        self._index('continuous_dims', dims)
        for name, values in (('group_offsets', exclusive_cumsum(self.group_sizes)), ('group_sizes_t', list(self.group_sizes)),
                             ('padded_rows', padded_rows(discrete_rows, self.group_sizes))):  # fmt: skip
            self._lists[name] = values
            self.register_buffer(name, torch.tensor(values, dtype=torch.long), persistent=False)
        self.offsets_are_zero = self.num_groups <= 1

    def _index(self, name: str, rows: list[int]) -> None:
        """``name`` becomes a ``slice`` where the rows are contiguous, else a
        non-persistent index buffer (use either with ``_utils.take``)."""
        as_slice = _contiguous(rows)
        if exists(as_slice):
            setattr(self, name, as_slice)
            return
        self._lists[name] = rows
        self.register_buffer(name, torch.tensor(rows, dtype=torch.long), persistent=False)

    def _apply(self, fn, *args, **kwargs):
        """Index tables are constants of the config: after any move (``to_empty``
        from the meta device leaves buffers uninitialised) they are rebuilt from
        the Python lists on the buffers' new device."""
        super()._apply(fn, *args, **kwargs)
        for name, rows in self._lists.items():
            device = getattr(self, name).device
            setattr(self, name, torch.tensor(rows, dtype=torch.long, device=device))
        return self

    def global_rows(self, ids: Tensor) -> Tensor:
        """Local ids ``(..., g)`` to rows of the table ``(..., g)``."""
        local = ids if self.offsets_are_zero else ids + self.group_offsets
        rows = self.discrete_rows
        if isinstance(rows, slice):
            return local if rows.start == 0 else local + rows.start
        return rows[local]
