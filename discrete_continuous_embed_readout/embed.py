"""Embed: discrete ids by table lookup, continuous values as value x row."""

# g - discrete groups, c - continuous dims, d - model dim

from __future__ import annotations

import torch
from einops import einsum, rearrange
from torch import Tensor

from ._checks import check_finite, check_floating, check_ids_in_range, check_integer, check_last_dim, check_tensor, describe, typecheck
from ._selectors import Selector
from ._table import SharedTable
from ._utils import DiscreteContinuous, default, exists, is_pair, take, upcast
from .compat.table_methods import SelectorCompat
from .heads.registry import build_continuous_dist, is_binned, table_bins
from .heads.units import bound_units, unit_map

__all__ = ['Embed']


class Embed(SelectorCompat, SharedTable):
    """Embeds discrete ids, continuous values, or both, with one shared table.

    Args:
        dim: embedding width ``D``.
        num_discrete: vocabulary size, or one size per group (multi-discrete);
            with selectors, the total discrete capacity (an int).
        num_continuous: number of continuous dims ``C``.
        selector: one selector config to register (see the [Selectors guide](../guide/selectors.md)).
        selectors: several selector configs, chosen per call by ``selector_index``.
        continuous_log_var_embed: ignored by Embed (accepted so both modules
            take the same arguments).
        continuous_mean_std: ``(C, 2)`` (mean, std): continuous inputs are
            normalised as ``(x - mean) / std`` before embedding.
        use_parallel_multi_discrete: accepted for symmetry with Readout.
        return_only_discrete_or_continuous: with only one modality, return the
            bare tensor rather than a pair.
        continuous_dist_type: a Readout argument, accepted so that
            ``EmbedAndReadout`` can pass one set of arguments to both; only a
            binned head (``'two_hot'``, ``'hl_gauss'``) changes the Embed: a value
            is then embedded as its target weights over the bins times the bin
            rows (``continuous_dist_kwargs`` give the bins).
        continuous_dist_kwargs: the head's options, as ``continuous_dist_type`` (the
            bins of a binned head).
        continuous_squashed: a Readout argument, accepted and ignored.
        regression_loss_type: a Readout argument, accepted and ignored.
        eps: floor of the std.
        auto_append_discrete_set_dim: single-group ids come without a trailing
            group axis (default: true iff there is exactly one group).
        continuous_range: ``(lo, hi)``, the units of the continuous values, as the
            ``Readout``'s (numbers or per-dim bounds): values given in them are
            mapped back onto the native range of the head the arguments name
            (squashed ``(-1, 1)``, beta / kumaraswamy ``(0, 1)``) before they are
            embedded, by the inverse of the readout's units map. So a policy built by
            ``EmbedAndReadout(..., continuous_range=...)`` embeds its previous action
            as ``sample`` returned it, and the table sees values of order one
            whatever the bounds. It replaces the ``continuous_mean_std``
            normalisation (as in the readout); ``normalize_continuous=False`` embeds
            the values as given. Kept as the float32 buffer ``continuous_range``.

    Shape:
        discrete ids ``(...)`` (one group) or ``(..., G)``; continuous ``(..., C)``;
        output ``(..., D)`` (see ``forward`` for the unsummed forms).

    Examples:
        >>> embed = Embed(512, num_discrete=20000)
        >>> embed(torch.randint(0, 20000, (2, 16))).shape
        torch.Size([2, 16, 512])
    """

    @typecheck
    def __init__(
        self,
        dim: int | None,
        num_discrete: int | tuple[int, ...] | list[int] = 0,
        num_continuous: int = 0,
        selector=None,
        selectors: list | tuple | None = None,
        continuous_log_var_embed: bool = True,
        continuous_mean_std: Tensor | None = None,
        use_parallel_multi_discrete: bool = True,
        return_only_discrete_or_continuous: bool = True,
        continuous_dist_type: str = 'gaussian',
        continuous_dist_kwargs: dict | None = None,
        continuous_squashed: bool = False,
        regression_loss_type: str = 'mse',
        eps: float = 1e-6,
        auto_append_discrete_set_dim: bool | None = None,
        *,
        continuous_range=None,
    ):
        bins = head = None  # a binned head's bins: a value is embedded as its target weights times the bin rows
        if num_continuous > 0 and (is_binned(continuous_dist_type) or exists(continuous_range)):
            head = build_continuous_dist(continuous_dist_type, default(continuous_dist_kwargs, {}), continuous_squashed, True, regression_loss_type, eps)
            bins = head if is_binned(continuous_dist_type) else None
        super().__init__(
            dim, num_discrete, num_continuous, selector, selectors, continuous_log_var_embed,
            continuous_mean_std, use_parallel_multi_discrete, return_only_discrete_or_continuous, eps,
            log_var_rows=False, num_bins=table_bins(bins), continuous_range=bound_units(continuous_range, head, num_continuous),
        )  # fmt: skip
        self.continuous_bins = bins
        self._native_range = head.default_range if exists(continuous_range) else None  # what the bound units map back onto
        if not exists(self.dim):
            raise ValueError(f'Embed needs a table: dim must be a positive int, got {dim!r}')
        self.auto_append_discrete_set_dim = auto_append_discrete_set_dim
        self.continuous_squashed = continuous_squashed  # what its 0.2.x selector objects report

    def forward(
        self,
        inp,
        sum_discrete_sets: bool = True,
        sum_continuous: bool = True,
        sum_discrete_continuous: bool = True,
        normalize_continuous: bool | None = None,
        return_only_discrete_or_continuous: bool | None = None,
        selector_index: int | None = None,
        selector_config=None,
        concat_discrete_continuous: bool = False,
    ):
        """Embed ``inp``.

        Args:
            inp: integer ids, floating values, or a ``(discrete, continuous)``
                pair (either may be ``None``). Discrete inputs may also be float
                one-hots or probabilities ``(..., sum n_g)`` (the layout of
                ``sample(..., differentiable=True)``), embedded as ``probs @ rows``:
                a float tensor into an Embed without continuous dims is read so.
            sum_discrete_sets: sum over groups ``(..., D)``, else ``(..., G, D)``.
            sum_continuous: sum over dims ``(..., D)``, else ``(..., C, D)``.
            sum_discrete_continuous: add the two parts; if any ``sum_*`` flag is
                false, the pair ``DiscreteContinuous(discrete, continuous)`` instead.
            normalize_continuous: map the values into the head's native units
                first: from ``continuous_range`` when bound, else normalised with
                ``continuous_mean_std`` (``None``: when either is set).
            return_only_discrete_or_continuous: overrides the module default.
            selector_index: a registered selector.
            selector_config: a selector config used for this call only.
            concat_discrete_continuous: concatenate the parts along axis -2
                ``(..., T, D)`` instead of summing them.

        Returns:
            ``(..., D)``, the unsummed forms above, or a pair.
        """
        discrete, continuous = self._split_input(inp)
        device = (discrete if exists(discrete) else continuous).device
        selector = self._selector(selector_index, selector_config, device)
        if isinstance(inp, Tensor) and selector.has_discrete and selector.has_continuous:
            kind = 'ids' if exists(discrete) else 'values'
            raise TypeError(
                f'inp must be a (discrete, continuous) pair for an Embed with both parts, got {describe(inp)}: '
                f'pass embed((ids, values)), or embed({"(ids, None)" if kind == "ids" else "(None, values)"}) to embed the {kind} alone'
            )
        d_embed = self._embed_discrete(discrete, selector, sum_discrete_sets) if exists(discrete) else None
        c_embed = self._embed_continuous(continuous, selector, sum_continuous, normalize_continuous) if exists(continuous) else None
        return self._combine(d_embed, c_embed, concat_discrete_continuous, sum_discrete_sets, sum_continuous,
                             sum_discrete_continuous, default(return_only_discrete_or_continuous, self.return_only_discrete_or_continuous))  # fmt: skip

    def _split_input(self, inp) -> tuple[Tensor | None, Tensor | None]:
        if is_pair(inp) or isinstance(inp, list) and len(inp) == 2:
            discrete, continuous = inp
        else:
            check_tensor(inp, 'inp')
            values = inp.dtype.is_floating_point and self.has_continuous  # floats into a discrete-only Embed: soft ids
            discrete, continuous = (None, inp) if values else (inp, None)
        if not exists(discrete) and not exists(continuous):
            raise ValueError('inp must hold discrete ids, continuous values or both, got neither')
        if exists(discrete) and not discrete.dtype.is_floating_point:
            discrete = check_integer(discrete, 'discrete input')
        if exists(continuous):
            check_floating(continuous, 'continuous input')
        return discrete, continuous

    def _embed_discrete(self, ids: Tensor, selector: Selector, sum_sets: bool) -> Tensor:
        if not selector.has_discrete:
            raise ValueError(f'discrete input was given but this {"selector" if self.has_discrete else "Embed"} has no discrete part')
        if ids.dtype.is_floating_point:
            return self._embed_soft(ids, selector, sum_sets)
        append = default(self.auto_append_discrete_set_dim, selector.num_groups == 1)
        if append:
            if selector.num_groups != 1:
                raise ValueError(f'auto_append_discrete_set_dim needs exactly one group, the selector has {selector.num_groups}')
            ids = ids.unsqueeze(-1)
        check_last_dim(ids, selector.num_groups, 'discrete input', f'one id per group, {selector.num_groups} groups')
        check_ids_in_range(ids, selector.group_sizes, 'discrete input', group_axis_added=append)
        rows = selector.global_rows(ids)
        if sum_sets and selector.num_groups == 1:
            return self.embeddings(rows.squeeze(-1))  # (..., d): the plain lookup
        embeds = self.embeddings(rows)  # (..., g, d)
        return embeds.sum(-2) if sum_sets else embeds

    def _embed_soft(self, probs: Tensor, selector: Selector, sum_sets: bool) -> Tensor:
        """One-hots or probabilities ``(..., sum n_g)`` as ``probs @ rows`` per group:
        ``embed(ids)`` for exact one-hots, differentiable wrt the probabilities (a
        straight-through sample fed back in)."""
        n = selector.num_discrete_rows
        check_last_dim(probs, n, 'discrete input', f'float discrete input holds one-hots or probabilities over the {n} ids of the groups {list(selector.group_sizes)}')
        check_finite(probs, 'discrete input')
        rows = take(self.embeddings.weight, selector.discrete_rows)  # (sum n_g, d)
        probs = probs.to(rows.dtype)
        if sum_sets:
            return probs @ rows  # (..., d): the groups' embeddings summed
        sizes = list(selector.group_sizes)
        return torch.stack([p @ r for p, r in zip(probs.split(sizes, -1), rows.split(sizes))], dim=-2)  # (..., g, d)

    def _embed_continuous(self, values: Tensor, selector: Selector, sum_dims: bool, normalize: bool | None) -> Tensor:
        if not selector.has_continuous:
            raise ValueError(f'continuous input was given but this {"selector" if self.has_continuous else "Embed"} has no continuous part')
        check_last_dim(values, selector.num_continuous, 'continuous input', 'one value per continuous dim')
        check_finite(values, 'continuous input')
        bound = exists(self.continuous_range)
        if default(normalize, self.can_norm_continuous or bound):
            if not (self.can_norm_continuous or bound):
                raise ValueError('normalize_continuous=True needs continuous_mean_std or continuous_range at construction')
            values = self._from_bound_units(values, selector) if bound else self.normalize(values, selector)
        if exists(self.continuous_bins):
            return self._embed_binned(values, selector, sum_dims)
        rows = take(self.embeddings.weight, selector.continuous_rows)  # (c, d)
        values = values.to(rows.dtype)
        if sum_dims:
            return values @ rows  # (..., d)
        return values.unsqueeze(-1) * rows  # (..., c, d)

    def _from_bound_units(self, values: Tensor, selector: Selector) -> Tensor:
        """Values in the bound units back in the head's native range: the inverse of
        the readout's units map (``heads.units.unit_map``), in float32 at least."""
        units = unit_map(self._native_range, None, None, upcast(values), take(self.continuous_range, selector.continuous_dims))
        return units.inv(upcast(values))

    def _embed_binned(self, values: Tensor, selector: Selector, sum_dims: bool) -> Tensor:
        """Each value as its target weights over its dim's bins times the bin rows:
        the soft embedding of the bins the readout's loss trains towards."""
        rows = take(self.embeddings.weight, selector.continuous_readout_rows)  # (c * b, d)
        rows = rearrange(rows, '(c b) d -> c b d', b=self.layout.num_bins)
        weights = self.continuous_bins.target_probs(values.float()).to(rows.dtype)  # (..., c, b)
        return einsum(weights, rows, '... c b, c b d -> ... d' if sum_dims else '... c b, c b d -> ... c d')

    def _combine(self, d_embed, c_embed, concat, sum_sets, sum_dims, sum_both, return_only):
        if concat and (not exists(c_embed) or not exists(d_embed)):  # the token axis stays: (..., t, d)
            if exists(d_embed):
                return d_embed.unsqueeze(-2) if sum_sets else d_embed
            return c_embed.unsqueeze(-2) if sum_dims else c_embed
        if not exists(c_embed) or not exists(d_embed):
            single = default(d_embed, c_embed)
            if return_only:
                return single
            return DiscreteContinuous(d_embed, c_embed)
        d_batch, c_batch = d_embed.shape[: -1 if sum_sets else -2], c_embed.shape[: -1 if sum_dims else -2]
        if (concat or sum_sets and sum_dims and sum_both) and d_batch != c_batch:  # a sum would broadcast them silently
            raise ValueError(
                f'inp: the discrete and continuous parts must have the same batch shape, got {tuple(d_batch)} and {tuple(c_batch)} '
                '(one discrete group takes ids (...) without a group axis)'
            )
        if concat:
            d_tokens = d_embed.unsqueeze(-2) if sum_sets else d_embed
            c_tokens = c_embed.unsqueeze(-2) if sum_dims else c_embed
            return torch.cat((d_tokens, c_tokens), dim=-2)  # (..., t, d)
        if sum_sets and sum_dims and sum_both:
            return d_embed + c_embed
        return DiscreteContinuous(d_embed, c_embed)
