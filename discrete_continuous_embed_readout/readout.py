"""Readout: embeddings to logits / distribution parameters against the shared
table, and everything done with them (losses, samples, log-probs, entropies, KL)."""

# g - discrete groups, c - continuous dims, d - model dim

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import Tensor

from . import _parts
from ._checks import check_floating, check_ids_in_range, check_last_dim, check_temperature, typecheck
from ._legacy import DiscreteContinuousSelector
from ._readout_methods import DistributionMethods
from ._table import SharedTable
from ._utils import DiscreteContinuous, default, exists
from .action_masks import mask_logits, split_action_mask
from .distributions import Gaussian, SquashedGaussian, build_continuous_dist
from .losses import check_loss_mask, entry_mask, linear_cross_entropy_sum, masked_loss, regression_loss
from .multi_categorical import MultiCategorical, upcast
from .selectors import Selector

FUSED_MIN_GROUP_SIZE = 4096  # below it, one logits matmul for all groups is cheaper


class Readout(DistributionMethods, SharedTable):
    """Reads embeddings out as logits (discrete) and distribution parameters
    (continuous) against one table, and turns them into losses, samples,
    log-probs, entropies and KL divergences.

    Args:
        dim: embedding width ``D``; ``None``/``0`` for no table (see
            ``ParameterlessReadout``).
        num_discrete: vocabulary size, or one size per group; with selectors,
            the total discrete capacity (an int).
        num_continuous: number of continuous dims ``C``.
        selector: one selector config to register.
        selectors: several selector configs, chosen per call by ``selector_index``.
        continuous_log_var_embed: predict (mean, log-variance) per dim; ``False``
            predicts the mean only, trained by regression.
        continuous_mean_std: ``(C, 2)`` (mean, std): targets are normalised,
            samples de-normalised, densities reported in original units.
        use_parallel_multi_discrete: batched multi-group ops instead of a loop
            (identical results; settable after construction).
        return_only_discrete_or_continuous: with only one modality, return the
            bare tensor rather than a pair.
        continuous_dist_type: a key of ``CONTINUOUS_DISTRIBUTIONS``
            (``'gaussian'``, ``'beta'``, ``'kumaraswamy'`` or one you add).
        continuous_dist_kwargs: passed to that class (``log_var_clamp_range``;
            ``unimodal``, ``clip``, ``clip_eps``).
        continuous_squashed: tanh-squashed gaussian (gaussian only).
        regression_loss_type: ``'mse'`` or ``'l1'`` (regression mode).
        eps: numerical floor.
        return_one_discrete_logits: a single group's logits come as a bare
            tensor, not a one-element tuple (default: when there is one group).
        auto_squeeze_single_output: a single group's ids, log-probs, entropies
            and losses carry no group axis.
        ignore_index: target id that contributes no loss (``None``: none).
        fused_cross_entropy: compute the discrete loss of ``forward`` chunk by
            chunk straight from the embeddings, never holding the
            ``(tokens, vocab)`` logits (see ``losses.linear_cross_entropy_sum``);
            settable after construction. Unreduced losses, ``calculate_loss`` and
            multi-discrete readouts with a group smaller than
            ``FUSED_MIN_GROUP_SIZE`` use the logits.

    Example:
        >>> readout = Readout(512, num_discrete=20000)
        >>> logits = readout(torch.randn(2, 16, 512))  # (2, 16, 20000)
        >>> loss = readout(torch.randn(2, 16, 512), torch.randint(0, 20000, (2, 16)))
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
        return_one_discrete_logits: bool | None = None,
        auto_squeeze_single_output: bool = True,
        ignore_index: int | None = -1,
        *,
        fused_cross_entropy: bool = True,
    ):
        super().__init__(
            dim, num_discrete, num_continuous, selector, selectors, continuous_log_var_embed,
            continuous_mean_std, use_parallel_multi_discrete, return_only_discrete_or_continuous, eps,
            log_var_rows=continuous_log_var_embed,
        )  # fmt: skip
        self.continuous_log_var_embed = continuous_log_var_embed
        self.continuous_squashed = continuous_squashed
        self.regression_loss_type = regression_loss_type
        self.return_one_discrete_logits = return_one_discrete_logits
        self.auto_squeeze_single_output = auto_squeeze_single_output
        if exists(ignore_index) and (isinstance(ignore_index, bool) or not isinstance(ignore_index, int)):
            raise TypeError(f'ignore_index must be an int or None, got {ignore_index!r}')
        self.ignore_index = ignore_index
        self.fused_cross_entropy = fused_cross_entropy
        self.continuous_dist = None
        if self.has_continuous:
            self.continuous_dist = build_continuous_dist(
                continuous_dist_type, default(continuous_dist_kwargs, {}), continuous_squashed,
                continuous_log_var_embed, regression_loss_type, eps,
            )  # fmt: skip

    # forward: embeddings -> logits / params, or -> loss

    def forward(
        self,
        embed: Tensor,
        targets=None,
        return_loss: bool | None = None,
        return_unreduced_loss: bool = False,
        loss_mask: Tensor | None = None,
        return_only_discrete_or_continuous: bool | None = None,
        selector_index: int | None = None,
        selector_config=None,
        *,
        action_mask=None,
    ):
        """Logits / params, or the loss against ``targets``.

        Args:
            embed: ``(..., D)``.
            targets: ids ``(...)`` / ``(..., G)``, values ``(..., c)``, or a pair.
            return_loss: defaults to "targets given".
            return_unreduced_loss: per-entry losses (masked entries zeroed).
            loss_mask: ``(...)`` bool, True = count this position.
            return_only_discrete_or_continuous: overrides the module default.
            selector_index: a registered selector.
            selector_config: a selector config for this call only.
            action_mask: bool, True = allowed (``(..., n)``, ``(..., sum n_g)`` or
                one per group): disallowed logits come back as ``-inf``.

        Returns:
            Discrete: logits ``(..., n)`` or a tuple of ``(..., n_g)``. Continuous:
            ``(..., c, 2)`` (mean, log-var) or ``(..., c)`` in regression mode. Both:
            ``DiscreteContinuous``. With a loss: a scalar per modality (mean over
            the kept entries), or the unreduced per-entry losses.
        """
        if not exists(self.embeddings):
            raise NoTableError('embeddings not present: this readout has no table (dim is None); pass logits to sample / log_prob / calculate_loss instead')
        check_floating(embed, 'embed')
        check_last_dim(embed, self.dim, 'embed', 'the readout dim')
        return_loss = default(return_loss, exists(targets))
        if return_loss and not exists(targets):
            raise ValueError('return_loss=True needs targets, got targets=None')
        if exists(targets) and not return_loss:
            raise ValueError('targets were given with return_loss=False: drop the targets or ask for the loss')
        selector = self._selector(selector_index, selector_config, embed.device)
        return_only = default(return_only_discrete_or_continuous, self.return_only_discrete_or_continuous)
        if return_loss and not return_unreduced_loss and action_mask is None and self._can_fuse(selector):
            return self._fused_loss(embed, targets, selector, loss_mask, return_only)
        groups, params = self._project(embed, selector)
        groups = self._masked(groups, action_mask, selector)
        if return_loss:
            return self._loss(groups, params, targets, selector, loss_mask, return_unreduced_loss, return_only)
        return self._pack(self._format_logits(groups, selector), params, return_only)

    def _project(self, embed: Tensor, selector: Selector):
        weight = selector.take(self.embeddings.weight, 'readout_rows')
        out = F.linear(_as_dtype_of(embed, weight), weight)  # (..., sum n_g + c * params)
        num_d = selector.num_discrete_rows
        groups = out[..., :num_d].split(list(selector.group_sizes), dim=-1) if selector.has_discrete else None
        params = self._as_params(out[..., num_d:]) if selector.has_continuous else None
        return groups, params

    def _project_continuous(self, embed: Tensor, selector: Selector) -> Tensor:
        weight = selector.take(self.embeddings.weight, 'continuous_readout_rows')
        return self._as_params(F.linear(_as_dtype_of(embed, weight), weight))

    def _as_params(self, flat: Tensor) -> Tensor:
        """``(..., 2c)`` mean and log-var outputs as ``(..., c, 2)``; regression stays ``(..., c)``."""
        return rearrange(flat, '... (two c) -> ... c two', two=2) if self.continuous_log_var_embed else flat

    def _format_logits(self, groups, selector: Selector):
        if not exists(groups):
            return None
        one = default(self.return_one_discrete_logits, True) and self._squeeze(selector)
        return groups[0] if one else tuple(groups)

    def _pack(self, discrete, continuous, return_only: bool | None = None):
        return_only = default(return_only, self.return_only_discrete_or_continuous)
        if return_only and (not exists(discrete) or not exists(continuous)):
            return default(discrete, continuous)
        return DiscreteContinuous(discrete, continuous)

    def _result(self, discrete, continuous, selector: Selector, return_only: bool | None = None):
        """A per-modality result (loss, sample, log-prob, ...): bare where the
        selector has one modality (whatever ``return_only_discrete_or_continuous``
        says, as in 0.2.x), else packed as ``_pack`` does."""
        if not (selector.has_discrete and selector.has_continuous):
            return default(discrete, continuous)
        return self._pack(discrete, continuous, return_only)

    def _squeeze(self, selector: Selector) -> bool:
        return self.auto_squeeze_single_output and selector.num_groups == 1

    def _squeezed(self, t: Tensor, selector: Selector, keep: bool = False) -> Tensor:
        """``(..., g)`` without its group axis for a squeezed single group (``keep``:
        a column for ``concat=True``)."""
        return t.squeeze(-1) if self._squeeze(selector) and not keep else t

    def _head(self, selector: Selector):
        """The continuous head for a selector: the module's, or its squashed /
        unsquashed twin for a 0.2.x selector that says otherwise."""
        head = self.continuous_dist
        squashed = self._is_squashed(selector)
        if squashed == isinstance(head, SquashedGaussian):
            return head
        twin = SquashedGaussian if squashed else Gaussian
        return twin(log_var_clamp_range=head.log_var_clamp_range, eps=head.eps)

    def _check_squashable(self) -> None:
        if exists(self.continuous_dist) and type(self.continuous_dist) not in (Gaussian, SquashedGaussian):
            raise ValueError(f'continuous_squashed=True needs a gaussian head, this readout has {type(self.continuous_dist).__name__}')

    def _num_params(self) -> int:
        return 2 if self.continuous_log_var_embed else 0

    def _parts(self, dist, selector: Selector, name: str = 'dist', action_mask=None):
        discrete, continuous = _parts.split_pair(dist, selector, name)
        groups = _parts.logit_groups(discrete, selector, f'{name} discrete logits') if exists(discrete) else None
        params = _parts.continuous_params(continuous, selector, self._num_params(), f'{name} continuous params') if exists(continuous) else None
        return self._masked(groups, action_mask, selector), params

    def _masked(self, groups, action_mask, selector: Selector):
        if action_mask is None:
            return groups
        if not exists(groups):
            raise ValueError('action_mask was given but there are no discrete logits to mask')
        return mask_logits(groups, split_action_mask(action_mask, selector.group_sizes, groups[0].shape[:-1]))

    def _params_batch(self, params: Tensor):
        return params.shape[:-2] if self.continuous_log_var_embed else params.shape[:-1]

    def _categorical(self, groups) -> MultiCategorical:
        return MultiCategorical(groups, self.use_parallel_multi_discrete, self.ignore_index)

    def _require_distribution(self, what: str) -> None:
        if not self.continuous_log_var_embed:
            raise ValueError(f'{what} needs a distribution, but this readout predicts only a mean (continuous_log_var_embed=False)')

    # losses

    def calculate_loss(self, logits, targets, selector_index=None, selector_config=None, mask=None, return_unreduced_loss=False, *, action_mask=None):
        """The loss of ``forward(..., targets)`` from logits / params computed elsewhere.

        Args:
            logits: what ``forward`` returns without targets.
            targets: ids, values or a pair, as in ``forward``.
            selector_index: a registered selector.
            selector_config: a selector config for this call only.
            mask: ``(...)`` bool loss mask, True = count.
            return_unreduced_loss: per-entry losses, masked entries zeroed.
            action_mask: bool, True = allowed, as in ``forward``.

        Returns:
            a scalar per modality (mean over the kept entries; a pair when both
            parts have targets), or the unreduced per-entry losses shaped as
            ``log_prob`` returns them.
        """
        device = _parts.first_tensor(logits).device
        selector = self._selector(selector_index, selector_config, device)
        groups, params = self._parts(logits, selector, 'logits', action_mask)
        return self._loss(groups, params, targets, selector, mask, return_unreduced_loss, None)

    def _loss(self, groups, params, targets, selector, mask, unreduced, return_only):
        d_target, c_target = _parts.split_pair(targets, selector, 'targets')
        d_loss = c_loss = None
        if exists(groups) and exists(d_target):
            d_loss = self._discrete_loss(groups, d_target, selector, mask, unreduced)
        if exists(params) and exists(c_target):
            c_loss = self._continuous_loss(params, c_target, selector, mask, unreduced)
        if not exists(d_loss) and not exists(c_loss):
            raise ValueError('targets and logits share no part: nothing to compute a loss on')
        return self._result(d_loss, c_loss, selector, return_only)

    def _can_fuse(self, selector: Selector) -> bool:
        sizes = selector.group_sizes
        return self.fused_cross_entropy and selector.has_discrete and (len(sizes) == 1 or min(sizes) >= FUSED_MIN_GROUP_SIZE)

    def _fused_loss(self, embed, targets, selector, mask, return_only):
        d_target, c_target = _parts.split_pair(targets, selector, 'targets')
        d_loss = self._fused_discrete_loss(embed, d_target, selector, mask) if exists(d_target) else None
        c_loss = None
        if selector.has_continuous and exists(c_target):
            c_loss = self._continuous_loss(self._project_continuous(embed, selector), c_target, selector, mask, False)
        return self._result(d_loss, c_loss, selector, return_only)

    def _fused_discrete_loss(self, embed, targets, selector, mask):
        batch = embed.shape[:-1]
        targets = _parts.discrete_values(targets, selector, batch, self._squeeze(selector), 'targets')  # (..., g)
        check_ids_in_range(targets, selector.group_sizes_t, 'targets', self.ignore_index, self._squeeze(selector))
        keep = entry_mask(targets, check_loss_mask(mask, batch), targets != self.ignore_index if exists(self.ignore_index) else None)
        keep = default(keep, torch.ones_like(targets, dtype=torch.bool))
        safe = targets.masked_fill(~keep, 0)
        weights = selector.take(self.embeddings.weight, 'discrete_rows').split(list(selector.group_sizes))
        total = sum(linear_cross_entropy_sum(embed, w, safe[..., g], keep[..., g]) for g, w in enumerate(weights))
        return total / keep.sum().clamp(min=1)

    def _discrete_loss(self, groups, targets, selector, mask, unreduced):
        batch = groups[0].shape[:-1]
        targets = _parts.discrete_values(targets, selector, batch, self._squeeze(selector), 'targets')
        mask = check_loss_mask(mask, batch)
        nll = -self._categorical(groups)._log_prob(targets, 'targets', self._squeeze(selector))  # (..., g)
        keep = targets != self.ignore_index if exists(self.ignore_index) else None
        loss = masked_loss(nll, entry_mask(nll, mask, keep), reduce=not unreduced)
        return self._squeezed(loss, selector) if unreduced else loss

    def _continuous_loss(self, params, targets, selector, mask, unreduced):
        params = upcast(params)
        batch = self._params_batch(params)
        targets = _parts.continuous_values(targets, batch, selector.num_continuous, 'targets')
        mask = check_loss_mask(mask, batch)
        if self.continuous_log_var_embed:
            loss = -self._continuous_log_prob(params, targets, selector, 'targets')
        else:
            loss = regression_loss(params, self._units(selector, None, params).to_native(targets), self.regression_loss_type)
        return masked_loss(loss, entry_mask(loss, mask), reduce=not unreduced)


    # the 0.2.x methods, each the new-style call restricted to one part. ``selector``
    # is what ``get_selector`` / ``create_discrete_continuous_selector`` return
    # (``None``: the default selector)

    def sample_continuous(self, continuous_dist_params, temperature: float = 1.0, differentiable: bool = False, selector=None, rescale_range=None):
        """0.2.x: ``sample`` of the continuous part only.

        Args:
            continuous_dist_params: ``(..., c, 2)`` (``(..., c)`` in regression mode).
            temperature: as in ``sample`` (a head without one warns once and samples at 1).
            differentiable: reparameterised.
            selector: from ``get_selector`` (``None``: the default selector).
            rescale_range: ``(lo, hi)``, as in ``sample``.

        Returns:
            ``(..., c)`` in original units (or in ``rescale_range``).
        """
        check_temperature(temperature)
        selector = self._legacy_selector(selector, 'continuous', continuous_dist_params)
        params = self._legacy_params(continuous_dist_params, selector, 'continuous_dist_params')
        return self._sample_continuous(params, selector, temperature, differentiable, rescale_range, False)[0]

    def log_prob_discrete(self, discrete_logits, sampled) -> Tensor:
        """0.2.x: ``MultiCategorical(discrete_logits).log_prob(sampled)`` with this
        readout's ``ignore_index`` and path.

        Args:
            discrete_logits: a tensor ``(..., n)`` or a sequence of ``(..., n_g)``.
            sampled: ids ``(...)`` (``(..., 1)`` also taken) / ``(..., g)``.

        Returns:
            ``(...)`` for a tensor, ``(..., g)`` for a sequence.
        """
        return self._categorical(discrete_logits).log_prob(sampled)

    def log_prob_continuous(self, continuous_dist_params, sampled, selector=None, soft_validate_range: bool = False) -> Tensor:
        """0.2.x: ``log_prob`` of the continuous part only.

        Args:
            continuous_dist_params: ``(..., c, 2)``.
            sampled: ``(..., c)`` in original units.
            selector: from ``get_selector`` (``None``: the default selector).
            soft_validate_range: clamp the (normalised) values ``eps`` inside the
                head's native range first, as in ``log_prob``.

        Returns:
            ``(..., c)``. Values outside a bounded head's support are clamped into
            it and scored there, as 0.2.x did, with a warning the first time
            (``log_prob`` raises instead).
        """
        selector = self._legacy_selector(selector, 'continuous', continuous_dist_params)
        self._require_distribution('log_prob_continuous')
        params = self._legacy_params(continuous_dist_params, selector, 'continuous_dist_params')
        values = _parts.continuous_values(sampled, self._params_batch(params), params.shape[-2], 'sampled')
        return self._continuous_log_prob(params, values, selector, 'sampled', None, soft_validate_range, legacy=True)

    def entropy_discrete(self, discrete_logits) -> Tensor:
        """0.2.x: ``MultiCategorical(discrete_logits).entropy()``.

        Args:
            discrete_logits: a tensor ``(..., n)`` or a sequence of ``(..., n_g)``.

        Returns:
            ``(...)`` for a tensor, ``(..., g)`` for a sequence.
        """
        return self._categorical(discrete_logits).entropy()

    def entropy_continuous(self, continuous_dist_params, selector=None) -> Tensor:
        """0.2.x: ``entropy`` of the continuous part only (original units).

        Args:
            continuous_dist_params: ``(..., c, 2)``.
            selector: from ``get_selector`` (``None``: the default selector).

        Returns:
            ``(..., c)``.
        """
        selector = self._legacy_selector(selector, 'continuous', continuous_dist_params)
        self._require_distribution('entropy_continuous')
        params = upcast(self._legacy_params(continuous_dist_params, selector, 'continuous_dist_params'))
        return self._continuous_entropy(self._head(selector), params, None) + self._units(selector, None, params).log_scale()

    def kl_div_discrete(self, discrete_logits_true, discrete_logits_pred) -> Tensor:
        """0.2.x: KL(true || pred) of two ``MultiCategorical`` objects.

        Args:
            discrete_logits_true: a tensor ``(..., n)`` or a sequence of ``(..., n_g)``.
            discrete_logits_pred: the same shapes.

        Returns:
            ``(...)`` for a tensor, ``(..., g)`` for a sequence.
        """
        return self._categorical(discrete_logits_true).kl_div(self._categorical(discrete_logits_pred))

    def kl_div_continuous(self, continuous_dist_params_true, continuous_dist_params_pred, selector=None) -> Tensor:
        """0.2.x: ``kl_div`` of the continuous part only.

        Args:
            continuous_dist_params_true: ``(..., c, 2)``.
            continuous_dist_params_pred: the same shape.
            selector: from ``get_selector`` (``None``: the default selector).

        Returns:
            ``(..., c)``.
        """
        selector = self._legacy_selector(selector, 'continuous', continuous_dist_params_true)
        self._require_distribution('kl_div_continuous')
        true, pred = (
            upcast(self._legacy_params(p, selector, name))
            for p, name in ((continuous_dist_params_true, 'continuous_dist_params_true'), (continuous_dist_params_pred, 'continuous_dist_params_pred'))
        )  # fmt: skip
        if true.shape != pred.shape:
            raise ValueError(f'continuous_dist_params_true and continuous_dist_params_pred differ in shape: {tuple(true.shape)} vs {tuple(pred.shape)}')
        return self._head(selector).kl_div(true, pred)

    def _legacy_params(self, params, selector: Selector, name: str) -> Tensor:
        """Params of the selector's dims; without a normaliser, the default
        selector's params may cover any number of dims (0.2.x's heads act per dim,
        and users pass subsets of their action dims)."""
        c = params.shape[-2] if isinstance(params, Tensor) and params.ndim >= 2 else None
        lenient = self.continuous_log_var_embed and not self.can_norm_continuous and selector is self.default_selector
        if lenient and c is not None and c != selector.num_continuous:
            return _parts.continuous_params(params, _Dims(c), self._num_params(), name)
        return _parts.continuous_params(params, selector, self._num_params(), name)

    def _legacy_selector(self, selector, part: str, like) -> Selector:
        if selector is None:
            selector = self._selector(None, None, self._device())
        elif isinstance(selector, DiscreteContinuousSelector):
            if selector._owner.layout != self.layout:
                raise ValueError(f'selector belongs to a module with another table layout ({selector._owner.layout}), not this one ({self.layout})')
            selector = selector.selector
        elif not isinstance(selector, Selector):
            raise TypeError(f'selector must be what get_selector() returns (or None), got {type(selector).__name__}')
        if part == 'continuous' and not selector.has_continuous:
            raise ValueError('this selector has no continuous part')
        return self._on_device(selector, like) if isinstance(like, Tensor) else selector

    def _on_device(self, selector: Selector, like: Tensor) -> Selector:
        """The selector with its index tables on ``like``'s device (a 0.2.x selector
        object was built where the module was)."""
        if selector.group_sizes_t.device == like.device or selector in self.selectors or selector is self.default_selector:
            return selector
        return self._cached_selector(selector.parsed, like.device, selector.squashed)

class NoTableError(ValueError, RuntimeError):
    """``forward`` on a readout without a table: a ``ValueError`` (a bad call), and
    a ``RuntimeError`` as 0.2.x raised there."""


class _Dims(NamedTuple):
    num_continuous: int


def _as_dtype_of(embed: Tensor, weight: Tensor) -> Tensor:
    """Embeddings in the table's dtype (half embeddings into a float32 readout),
    unless autocast chooses the matmul dtype."""
    if embed.dtype == weight.dtype or torch.is_autocast_enabled(embed.device.type):
        return embed
    return embed.to(weight.dtype)
