"""Readout: embeddings to logits / distribution parameters against the shared table.

Data flows one way: ``forward`` projects embeddings onto the table (logits and
params, or the loss); ``dist`` turns such outputs into a ``ReadoutDistribution``
(``readout_distribution.py``), and every other method is one call on it.
"""

# g - discrete groups, c - continuous dims, d - model dim

from __future__ import annotations

from typing import Literal

from torch import Tensor

from ._checks import check_floating, check_last_dim, typecheck
from ._losses import can_fuse, fused_discrete_loss
from ._options import (
    check_fused_choice,
    check_ignore_index,
    check_label_smoothing,
    check_logit_softcap,
    check_unit_fraction,
    check_z_loss_weight,
    checked_option,
)
from ._parse import split_pair
from ._plain_loss import plain_loss
from ._projection import project
from ._selectors import Selector
from ._table import SharedTable
from ._utils import DiscreteContinuous, default, exists, pack, take
from .compat.readout_methods import ReadoutCompat
from .distribution_methods import DistributionMethods
from .fused.readout_methods import FusedReadoutMethods
from .heads.registry import build_continuous_dist, table_bins
from .heads.units import bound_units
from .readout_distribution import DistConfig, ReadoutDistribution

__all__ = ['NoTableError', 'Readout']


class Readout(FusedReadoutMethods, DistributionMethods, ReadoutCompat, SharedTable):
    """Reads embeddings out as logits (discrete) and distribution parameters
    (continuous) against one table, and turns them into losses, samples,
    log-probs, entropies and KL divergences.

    Args:
        dim: embedding width ``D``; ``None``/``0`` for no table (see ``ParameterlessReadout``).
        num_discrete: vocabulary size, or one size per group; with selectors, the
            total discrete capacity (an int).
        num_continuous: number of continuous dims ``C``.
        selector: one selector config to register.
        selectors: several selector configs to register (chosen per call by
            ``selector_index``).
        continuous_log_var_embed: predict (mean, log-variance) per dim; ``False``:
            the mean only, trained by regression (``regression_loss_type``: ``'mse'`` / ``'l1'``).
        continuous_mean_std: ``(C, 2)`` (mean, std): targets are normalised,
            samples de-normalised, densities reported in original units.
        use_parallel_multi_discrete: batched multi-group ops instead of a loop
            (identical results; settable).
        return_only_discrete_or_continuous: with only one modality, return the
            bare tensor rather than a pair.
        continuous_dist_type: a key of ``CONTINUOUS_DISTRIBUTIONS`` (``'gaussian'``,
            ``'beta'``, ``'kumaraswamy'``, the binned ``'two_hot'`` / ``'hl_gauss'``, or yours).
        continuous_dist_kwargs: the head's options (``log_var_clamp_range``;
            ``unimodal``, ``clip``, ``clip_eps``; the binned heads' ``num_bins``,
            ``min_value``, ``max_value``, ``transform``, ``sigma_to_bin_ratio``).
        continuous_squashed: tanh-squashed gaussian.
        regression_loss_type: see ``continuous_log_var_embed``.
        eps: numerical floor.
        return_one_discrete_logits: a single group's logits come as a bare tensor,
            not a one-element tuple (default: when there is one group).
        auto_squeeze_single_output: a single group's ids, log-probs, entropies
            and losses carry no group axis.
        ignore_index: target id that contributes no loss (``None``: none; settable).
            Hugging Face pads labels with -100: pass ``ignore_index=-100`` for those.
        fused_cross_entropy: the discrete loss of ``forward`` chunk by chunk from
            the embeddings, never holding the ``(tokens, vocab)`` logits (not for
            action masks, ``unimix``, or several groups one of which has under 4096
            ids). ``'auto'`` (the default): where it pays, i.e. where the float32
            logits would take 64 MiB or more, or on the CPU from 256 tokens and 4M
            logits (``tokens * vocab``) on, where it was measured faster; so a
            language model's loss is fused and a policy head's few actions are not.
            ``True``: wherever it applies (what ``True``, the default before
            ``'auto'``, always did); ``False``: never. Both paths give the same
            results (settable).
        label_smoothing: the discrete loss's, as ``F.cross_entropy``'s; with an
            action mask the smoothing mass goes to the allowed actions only (settable).
        z_loss_weight: adds ``weight * logsumexp(logits)^2`` per entry to the
            discrete loss (PaLM's z-loss, of the soft-capped, masked logits, also
            with ``unimix``; ``forward(..., return_z_loss=True)`` reports its mean; settable).
        logit_softcap: ``c``: every discrete logit the readout produces is
            ``c * tanh(logits / c)`` (Gemma 2), fused paths included (settable).
        unimix: ``u``: each group's distribution is ``(1 - u) softmax(logits) + u / n``
            (over the allowed actions; DreamerV3's 1%) for sampling, scores, the loss
            and ``get_dist`` (``forward`` still returns the logits; settable).
        continuous_range: ``(lo, hi)``, numbers or per-dim bounds (sequences, numpy
            arrays or tensors of ``num_continuous`` entries; a gymnasium ``Box``'s
            ``low`` and ``high``): the units of the continuous values, bound once.
            Every method then works in them without being told (``rescale_range``
            below, the loss of ``forward`` and ``calculate_loss`` included). A
            bounded head only (squashed, beta, kumaraswamy); finite, ``lo < hi``.
            Kept as the float32 buffer ``continuous_range`` ``(C, 2)`` (in the
            state dict; it stays float32 when the module's dtype changes).

    The settable options are checked on every assignment as the constructor checks
    them (``readout.label_smoothing = 1.5`` is a ``ValueError``).

    Arguments shared by the methods:
        - ``dist``: what ``forward`` returns: logits ``(..., n)``, per-group logits
          ``(..., n_g)`` (a tuple, or concatenated ``(..., sum n_g)``), params
          ``(..., c, 2)`` (``(..., c)`` in regression mode), or a
          ``(discrete, continuous)`` pair (``None`` for a part left out).
        - ``selector_index``, ``selector_config``: a registered selector, or a selector
          config for this call only (see ``get_selector``).
        - ``action_mask``: bool, True = allowed: ``(..., n)``, ``(..., sum n_g)`` or one
          mask per group. Disallowed actions get logit ``-inf``.
        - ``rescale_range``: ``(lo, hi)``, numbers or per-dim bounds (a gymnasium
          ``Box``'s ``low`` and ``high``): continuous values live in ``(lo, hi)``,
          mapped linearly from the head's native range (beta / kumaraswamy
          ``(0, 1)``, squashed ``(-1, 1)``) instead of de-normalised. For a
          readout without ``continuous_range`` (0.2.x style, per call); a readout
          with it takes the same bounds silently and refuses others
          (``ValueError``) unless ``override_range=True``.
        - ``override_range``: with ``rescale_range``, use its bounds for this call
          instead of the bound ``continuous_range``.
        - ``concat``: join the parts of a pair along the last axis (``maybe_concat``).

    Examples:
        >>> import torch
        >>> readout = Readout(512, num_discrete=20000)
        >>> logits = readout(torch.randn(2, 16, 512))  # (2, 16, 20000)
        >>> loss = readout(torch.randn(2, 16, 512), torch.randint(0, 20000, (2, 16)))
    """

    @typecheck
    def __init__(self, dim: int | None, num_discrete: int | tuple[int, ...] | list[int] = 0, num_continuous: int = 0, selector=None,
                 selectors: list | tuple | None = None, continuous_log_var_embed: bool = True, continuous_mean_std: Tensor | None = None,
                 use_parallel_multi_discrete: bool = True, return_only_discrete_or_continuous: bool = True,
                 continuous_dist_type: str = 'gaussian', continuous_dist_kwargs: dict | None = None, continuous_squashed: bool = False,
                 regression_loss_type: str = 'mse', eps: float = 1e-6, return_one_discrete_logits: bool | None = None,
                 auto_squeeze_single_output: bool = True, ignore_index: int | None = -1, *, fused_cross_entropy: bool | Literal['auto'] = 'auto',
                 label_smoothing: float = 0.0, z_loss_weight: float = 0.0, logit_softcap: float | None = None, unimix: float = 0.0,
                 continuous_range=None):  # fmt: skip
        head = None  # built first: a binned head's bins are rows of the table
        if num_continuous > 0:
            head = build_continuous_dist(continuous_dist_type, default(continuous_dist_kwargs, {}), continuous_squashed,
                                         continuous_log_var_embed, regression_loss_type, eps)  # fmt: skip
        super().__init__(
            dim=dim, num_discrete=num_discrete, num_continuous=num_continuous, selector=selector, selectors=selectors,
            continuous_mean_std=continuous_mean_std, use_parallel_multi_discrete=use_parallel_multi_discrete,
            return_only_discrete_or_continuous=return_only_discrete_or_continuous, eps=eps,
            log_var_rows=continuous_log_var_embed and not table_bins(head), num_bins=table_bins(head),
            continuous_range=bound_units(continuous_range, head, num_continuous),
        )  # fmt: skip
        self.continuous_log_var_embed = continuous_log_var_embed
        self.continuous_squashed = continuous_squashed
        self.regression_loss_type = regression_loss_type
        self.return_one_discrete_logits = return_one_discrete_logits
        self.auto_squeeze_single_output = auto_squeeze_single_output
        self.ignore_index = ignore_index
        self.fused_cross_entropy = fused_cross_entropy
        self.label_smoothing, self.z_loss_weight, self.logit_softcap = label_smoothing, z_loss_weight, logit_softcap
        self.unimix = unimix
        self.continuous_dist = head

    # options settable after construction: checked on every assignment, as by the constructor

    ignore_index = checked_option('ignore_index', check_ignore_index, 'The target id that contributes no loss (``None``: none); an int or ``None``.')
    fused_cross_entropy = checked_option(
        'fused_cross_entropy', check_fused_choice, "Whether ``forward``'s discrete loss takes the fused path: ``True``, ``False`` or ``'auto'`` (where it pays)."
    )  # fmt: skip
    label_smoothing = checked_option('label_smoothing', check_label_smoothing, "The discrete loss's label smoothing, in ``[0, 1)``.")
    z_loss_weight = checked_option('z_loss_weight', check_z_loss_weight, "The weight of the discrete loss's z-loss, ``>= 0``.")
    logit_softcap = checked_option('logit_softcap', check_logit_softcap, 'The soft-cap ``c`` of every discrete logit, ``> 0``, or ``None`` for none.')
    unimix = checked_option('unimix', lambda v: check_unit_fraction(v, 'unimix'), "The uniform mixture's weight ``u`` of each discrete group, in ``[0, 1)``.")

    # forward: embeddings -> logits / params, or -> loss

    def forward(self, embed: Tensor, targets=None, return_loss: bool | None = None, return_unreduced_loss: bool = False,
                loss_mask: Tensor | None = None, return_only_discrete_or_continuous: bool | None = None,
                selector_index: int | None = None, selector_config=None, *, action_mask=None, return_z_loss: bool = False):  # fmt: skip
        """Logits / params, or the loss against ``targets``.

        Args:
            embed: ``(..., D)``.
            targets: ids ``(...)`` / ``(..., G)``, values ``(..., c)``, or a pair;
                a leading shape that broadcasts with ``embed``'s is scored over the
                broadcast shape.
            return_loss: defaults to "targets given".
            return_unreduced_loss: per-entry losses (masked entries zeroed).
            loss_mask: ``(...)`` bool, True = count this position.
            return_only_discrete_or_continuous: overrides the module default.
            selector_index: a registered selector (see the class docstring).
            selector_config: a selector config for this call only.
            action_mask: bool, True = allowed (see the class docstring).
            return_z_loss: with a loss, ``(loss, z_loss)``: the mean (or per-entry)
                ``logsumexp^2`` of the discrete logits, for logging (the loss
                already holds ``z_loss_weight`` times it).

        Returns:
            Discrete: logits ``(..., n)`` or a tuple of ``(..., n_g)``. Continuous:
            ``(..., c, 2)`` (mean, log-var), ``(..., c, num_bins)`` bin logits for a
            binned head, or ``(..., c)`` in regression mode. Both:
            ``DiscreteContinuous``. With a loss: a scalar per modality (mean over
            the kept entries), or the unreduced per-entry losses.
        """
        selector = self._forward_selector(embed, targets, return_loss, selector_index, selector_config)
        return_only = default(return_only_discrete_or_continuous, self.return_only_discrete_or_continuous)
        wants_loss = targets is not None if return_loss is None else return_loss
        if wants_loss:
            return self._loss(embed, targets, selector, loss_mask, return_unreduced_loss, return_only, action_mask, return_z_loss)
        groups, params = self._project(embed, selector)
        if exists(action_mask):
            groups = ReadoutDistribution(DiscreteContinuous(groups, params), selector, DistConfig.of(self)._replace(unimix=0.0), action_mask=action_mask).groups
        one = default(self.return_one_discrete_logits, True) and self.auto_squeeze_single_output and selector.num_groups == 1
        logits = (groups[0] if one else tuple(groups)) if exists(groups) else None
        return pack(logits, params, True, return_only)

    def _forward_selector(self, embed, targets, return_loss, selector_index, selector_config) -> Selector:
        if self._modules.get('embeddings') is None:
            raise NoTableError('embeddings not present: this readout has no table (dim is None); pass logits to sample / log_prob / calculate_loss instead')
        check_floating(embed, 'embed')
        check_last_dim(embed, self.dim, 'embed', 'the readout dim')
        if return_loss is not None and return_loss != (targets is not None):
            raise ValueError('return_loss=True needs targets, got targets=None' if return_loss else 'targets were given with return_loss=False: drop the targets or ask for the loss')
        return self._selector(selector_index, selector_config, embed.device)

    def _loss(self, embed, targets, selector, mask, unreduced, return_only, action_mask, return_z_loss):
        if action_mask is None and not self.unimix and can_fuse(self.fused_cross_entropy, selector, embed):
            loss, z_loss = self._fused_loss(embed, targets, selector, mask, return_only, unreduced)
            return (loss, z_loss) if return_z_loss else loss
        if (loss := plain_loss(self, embed, targets, selector, mask, unreduced, return_only, action_mask, return_z_loss)) is not None:
            return loss  # the common case, straight from the embeddings (_plain_loss.py)
        dist = ReadoutDistribution(self._project(embed, selector), selector, DistConfig.of(self), action_mask=action_mask, name='logits')
        return dist.loss(targets, mask=mask, unreduced=unreduced, return_only=return_only, return_z_loss=return_z_loss)

    def _project(self, embed: Tensor, selector: Selector, discrete: bool = True):
        """``(groups, params)`` in one matmul (``_projection.project``)."""
        return project(self._table_weight(), embed, selector, self.logit_softcap, self.layout.num_bins, self.continuous_log_var_embed, discrete)

    def calculate_loss(self, logits, targets, selector_index=None, selector_config=None, mask=None, return_unreduced_loss=False, *, action_mask=None):
        """The loss of ``forward(..., targets)`` from outputs computed elsewhere.

        Args:
            logits: what ``forward`` returns without targets.
            targets: ids, values or a pair, as in ``forward`` (their leading shape
                may broadcast with the logits', as in ``log_prob``).
            mask: ``(...)`` bool loss mask, True = count.
            return_unreduced_loss: per-entry losses, masked entries zeroed.
            selector_index: a registered selector (see the class docstring).
            selector_config: a selector config for this call only.
            action_mask: bool, True = allowed (see the class docstring).

        Returns:
            a scalar per modality (a pair when both parts have targets), or the
            unreduced per-entry losses shaped as ``log_prob`` returns them.
        """
        dist = self._dist(logits, selector_index, selector_config, action_mask, None, 'logits')
        return dist.loss(targets, mask=mask, unreduced=return_unreduced_loss)

    def _fused_loss(self, embed, targets, selector, mask, return_only, unreduced):
        d_target, c_target = split_pair(targets, selector, 'targets')
        d_loss = c_loss = z_loss = None
        config = DistConfig.of(self)
        if exists(d_target):
            weight, squeeze = take(self.embeddings.weight, selector.discrete_rows), self.auto_squeeze_single_output and selector.num_groups == 1
            d_loss, z_loss = fused_discrete_loss(embed, weight, selector, d_target, mask, self.ignore_index, squeeze, config.loss_options, unreduced)
        if exists(c_target):
            dist = ReadoutDistribution(self._project(embed, selector, discrete=False), selector, config, name='logits')
            c_loss = dist.loss(DiscreteContinuous(None, c_target), mask=mask, unreduced=unreduced)
        return pack(d_loss, c_loss, selector.has_discrete and selector.has_continuous, return_only), z_loss

class NoTableError(ValueError, RuntimeError):
    """``forward`` on a readout without a table: a ``ValueError`` (a bad call), and
    a ``RuntimeError`` as 0.2.x raised there."""
