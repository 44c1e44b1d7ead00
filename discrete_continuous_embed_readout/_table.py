"""What Embed and Readout share: arguments, the table, selectors, normalisation."""

# c - continuous dims

from __future__ import annotations

from collections import OrderedDict

import torch
from torch import Tensor, nn

from ._checks import check_floating, describe
from ._options import check_bool, checked_option
from ._selectors import ParsedConfig, Selector, TableLayout, default_config, parse_selector_config
from ._units_state import check_loaded_units, explain_units_keys
from ._utils import exists, take

MAX_CACHED_RUNTIME_SELECTORS = 64

def parse_num_discrete(num_discrete, has_selectors: bool) -> tuple[int, ...]:
    if isinstance(num_discrete, bool) or not isinstance(num_discrete, (int, tuple, list)):
        raise TypeError(f'num_discrete must be an int or a tuple of ints, got {describe(num_discrete)}')
    if isinstance(num_discrete, int):
        if num_discrete < 0:
            raise ValueError(f'num_discrete must be >= 0, got {num_discrete}')
        return (num_discrete,) if num_discrete > 0 else ()
    if has_selectors:
        raise ValueError(f'with selectors, num_discrete must be an int (the total discrete capacity), got {num_discrete!r}')
    sizes = tuple(num_discrete)
    if len(sizes) == 0 or not all(isinstance(n, int) and not isinstance(n, bool) and n > 0 for n in sizes):
        raise ValueError(f'num_discrete must hold one positive int per group, got {num_discrete!r}')
    return sizes


def _check_count(value, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f'{name} must be an int, got {describe(value)}')
    if value < 0:
        raise ValueError(f'{name} must be >= 0, got {value}')
    return value


def _check_mean_std(mean_std, num_continuous: int, name: str = 'continuous_mean_std') -> Tensor | None:
    if not exists(mean_std):
        return None
    check_floating(mean_std, name)
    if num_continuous == 0:
        raise ValueError(f'{name} needs num_continuous > 0, got num_continuous=0 and {describe(mean_std)}')
    if tuple(mean_std.shape) != (num_continuous, 2):
        raise ValueError(f'{name} must have shape ({num_continuous}, 2) (mean, std per dim), got {describe(mean_std)}')
    if mean_std.is_meta:  # built on the meta device: its values arrive with load_state_dict (checked there)
        return mean_std.detach().clone()
    if not bool(torch.isfinite(mean_std).all()) or not bool((mean_std[:, 1] > 0).all()):
        raise ValueError(f'{name} must be finite with std (column 1) > 0, got {mean_std.tolist()}')
    return mean_std.detach().clone()


class SharedTable(nn.Module):
    """Base of Embed and Readout (internal). See ``Embed`` for the arguments."""

    def __init__(
        self,
        dim,
        num_discrete=0,
        num_continuous=0,
        selector=None,
        selectors=None,
        continuous_log_var_embed: bool = True,
        continuous_mean_std: Tensor | None = None,
        use_parallel_multi_discrete: bool = True,
        return_only_discrete_or_continuous: bool = True,
        eps: float = 1e-6,
        *,
        log_var_rows: bool,
        num_bins: int = 0,
        continuous_range: Tensor | None = None,
    ):
        super().__init__()
        if exists(selector) and exists(selectors):
            raise ValueError('give either selector or selectors, not both')
        if exists(dim) and (isinstance(dim, bool) or not isinstance(dim, int) or dim < 0):
            raise TypeError(f'dim must be a non-negative int or None, got {describe(dim)}')
        configs = [selector] if exists(selector) else list(selectors or [])
        group_sizes = parse_num_discrete(num_discrete, has_selectors=len(configs) > 0)
        num_continuous = _check_count(num_continuous, 'num_continuous')
        if not group_sizes and num_continuous == 0:
            raise ValueError(f'at least one of num_discrete and num_continuous must be > 0, got num_discrete={num_discrete!r} and num_continuous={num_continuous!r}')

        self.dim = dim or None
        self.eps = eps
        self.num_continuous = num_continuous
        self.use_parallel_multi_discrete = use_parallel_multi_discrete
        self.return_only_discrete_or_continuous = return_only_discrete_or_continuous
        self.continuous_squashed = False
        self.layout = TableLayout(sum(group_sizes), group_sizes, num_continuous, log_var_rows and num_continuous > 0, num_bins if num_continuous > 0 else 0)
        self.register_buffer('continuous_mean_std', _check_mean_std(continuous_mean_std, num_continuous))
        self.register_buffer('continuous_range', continuous_range)  # (C, 2), checked (bound_units); None: not in the state dict

        self.selectors = nn.ModuleList(
            [Selector(parse_selector_config(c, self.layout, f'selectors[{i}]'), self.layout) for i, c in enumerate(configs)]
        )
        self.default_selector = self.selectors[0] if len(configs) == 1 else None
        if not configs:  # all rows; without a table one group takes its width from the logits (as 0.2.x)
            self.default_selector = Selector(default_config(self.layout), self.layout, free_width=self.dim is None and len(group_sizes) == 1)
        self._runtime_selectors = OrderedDict()

        self.embeddings = None
        if exists(self.dim):
            self.embeddings = nn.Embedding(self.num_rows, self.dim)
            nn.init.normal_(self.embeddings.weight, std=0.01)

    # properties

    use_parallel_multi_discrete = checked_option(
        'use_parallel_multi_discrete', lambda v: check_bool(v, 'use_parallel_multi_discrete'),
        'Whether multi-group ops run in one batched pass rather than a loop (identical results); a bool, settable.',
    )  # fmt: skip

    @property
    def num_rows(self) -> int:
        """Rows of the table: discrete rows, one per continuous dim, and (a
        readout with ``continuous_log_var_embed``) one log-variance row per dim, or
        (a binned head) ``num_bins`` rows per dim; counted even when there is no
        table (``dim=None``)."""
        nd, _, nc, log_var, nb = self.layout
        return nd + nc + (nc if log_var else 0) + nc * nb

    @property
    def has_discrete(self) -> bool:
        """Whether the module has discrete rows (``num_discrete`` > 0)."""
        return self.layout.num_discrete > 0

    @property
    def has_continuous(self) -> bool:
        """Whether the module has continuous dims (``num_continuous`` > 0)."""
        return self.num_continuous > 0

    @property
    def num_discrete_sets(self) -> int:
        """Number of discrete groups built at construction (0 without a discrete
        part; 1 with selectors, whose capacity is one int)."""
        return len(self.layout.group_sizes)

    @property
    def can_norm_continuous(self) -> bool:
        """Whether ``continuous_mean_std`` was given, so continuous values are normalised."""
        return exists(self.continuous_mean_std)

    def _apply(self, fn, *args, **kwargs):
        """The bound units stay float32 when the module's dtype changes (half
        precision would move bounds such as 0.1 and make the same per-call bounds
        differ); they follow its device."""
        bounds = self.continuous_range
        super()._apply(fn, *args, **kwargs)
        moved = self.continuous_range
        if exists(moved) and moved.dtype != torch.float32:
            self.continuous_range = moved.float() if bounds.is_meta else bounds.to(moved.device, torch.float32)
        return self

    # checkpoints

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, error_msgs):
        table = state_dict.get(prefix + 'embeddings.weight')
        rows = self.embeddings.weight.shape[0] if exists(self.embeddings) else None  # a tied Embed holds the readout's table
        if exists(rows) and isinstance(table, Tensor) and table.ndim == 2 and table.shape[0] != rows:
            nd, _, nc, log_var, nb = self.layout
            error_msgs.append(
                f'{prefix}embeddings.weight has {table.shape[0]} rows, but this module\'s table has {rows} (its layout: {nd} discrete, '
                f'{nc} continuous' + (f', {nc} log-variance' if log_var else '') + (f', {nc} x {nb} bins (num_bins={nb})' if nb else '')
                + ' rows); build the module with the layout the checkpoint was saved with'
            )  # fmt: skip
        mean_std = state_dict.get(prefix + 'continuous_mean_std')
        if mean_std is not None and exists(self.continuous_mean_std) and mean_std.shape == self.continuous_mean_std.shape:
            _check_mean_std(mean_std, self.num_continuous, f'state_dict[{prefix}continuous_mean_std]')
        check_loaded_units(self.continuous_range, state_dict, prefix + 'continuous_range')
        super()._load_from_state_dict(state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, error_msgs)
        explain_units_keys(self.continuous_range, state_dict, prefix + 'continuous_range', missing_keys, unexpected_keys)

    # selectors

    def _check_squashable(self) -> None:
        """Embed has no head: squashing only changes what a readout samples."""

    def _is_squashed(self, selector: Selector) -> bool:
        return self.continuous_squashed if selector.squashed is None else selector.squashed

    def _table_weight(self) -> Tensor:
        """The table, ``embeddings.weight``: the module read from ``_modules`` (on
        every call; ``nn.Module.__getattr__`` costs ~0.6 µs a lookup), a parameter
        from its ``_parameters`` (else as ``.weight`` reads it: a parametrization's)."""
        embeddings = self._modules['embeddings']
        weight = embeddings._parameters.get('weight')
        return weight if weight is not None else embeddings.weight

    def _device(self):
        return self.embeddings.weight.device if exists(self.embeddings) else None

    def _selector(self, selector_index=None, selector_config=None, device=None) -> Selector:
        if selector_index is None and selector_config is None:  # the common case first: every call asks
            selector = self._modules.get('default_selector')  # nn.Module.__getattr__ costs ~0.6 µs a lookup
            if selector is None:
                raise ValueError(f'selector_index is required: {len(self.selectors)} selectors are registered')
            return selector
        if selector_index is not None and selector_config is not None:
            raise ValueError('give either selector_index or selector_config, not both')
        if selector_config is not None:
            return self._runtime_selector(selector_config, device)
        return self._registered_selector(selector_index)

    def _registered_selector(self, index) -> Selector:
        if isinstance(index, bool) or not isinstance(index, int):
            raise TypeError(f'selector_index must be an int, got {describe(index)}')
        if len(self.selectors) == 0 and index == 0:
            return self.default_selector  # 0.2.x: the default selector is selectors[0]
        if len(self.selectors) == 0:
            raise IndexError(f'selector_index was given but no selectors are registered (only 0, the default selector, is valid; pass selectors=[...] at construction), got selector_index={index!r}')
        if not 0 <= index < len(self.selectors):
            raise IndexError(f'selector_index must be in [0, {len(self.selectors)}), got {index}')
        return self.selectors[index]

    def _runtime_selector(self, config, device) -> Selector:
        return self._cached_selector(parse_selector_config(config, self.layout, 'selector_config'), device, None)

    def _cached_selector(self, parsed: ParsedConfig, device, squashed: bool | None) -> Selector:
        key = (parsed, str(device), squashed)
        cache = self._runtime_selectors
        if key in cache:
            cache.move_to_end(key)
            return cache[key]
        selector = Selector(parsed, self.layout, squashed)
        if exists(device):
            selector = selector.to(device)
        cache[key] = selector
        if len(cache) > MAX_CACHED_RUNTIME_SELECTORS:
            cache.popitem(last=False)
        return selector

    # continuous normalisation, in the units of a selector's dims

    def mean_std(self, selector: Selector) -> tuple[Tensor, Tensor]:
        """The normaliser of a selector's continuous dims.

        Needs ``continuous_mean_std`` (see ``can_norm_continuous``); without it,
        this and ``normalize`` / ``denormalize`` / ``log_std`` raise ``ValueError``.

        Args:
            selector: from ``get_selector``.

        Returns:
            ``(mean, std)``, each ``(c,)`` for the selector's ``c`` dims; ``std``
            floored at ``eps``.
        """
        if not self.can_norm_continuous:
            raise ValueError('mean_std: this module has no continuous_mean_std (pass continuous_mean_std= at construction)')
        mean, std = take(self.continuous_mean_std, _unwrap(selector).continuous_dims).unbind(-1)
        return mean, std.clamp(min=self.eps)

    def normalize(self, x: Tensor, selector: Selector) -> Tensor:
        """Original units to normalised: ``(x - mean) / std``.

        Args:
            x: ``(..., c)``, one value per continuous dim of ``selector``.
            selector: from ``get_selector``.

        Returns:
            ``(..., c)``.
        """
        mean, std = self.mean_std(selector)
        return (x - mean) / std

    def denormalize(self, x: Tensor, selector: Selector) -> Tensor:
        """Normalised to original units: ``x * std + mean`` (inverse of ``normalize``).

        Args:
            x: ``(..., c)``, one value per continuous dim of ``selector``.
            selector: from ``get_selector``.

        Returns:
            ``(..., c)``.
        """
        mean, std = self.mean_std(selector)
        return x * std + mean

    def log_std(self, selector: Selector) -> Tensor:
        """``log(std)`` of a selector's dims: what de-normalising adds to
        entropies and subtracts from log-densities.

        Args:
            selector: from ``get_selector``.

        Returns:
            ``(c,)``.
        """
        return self.mean_std(selector)[1].log()


def _unwrap(selector) -> Selector:
    """The index tables behind a selector object (``get_selector``'s 0.2.x wrapper, or our own)."""
    return selector if isinstance(selector, Selector) else selector.selector
