"""Readout: embeddings to logits / distribution parameters against the shared table.

Data flows one way: ``forward`` projects embeddings onto the table (logits and
params, or the loss); ``dist`` turns such outputs into a ``ReadoutDistribution``
(``readout_distribution.py``), and every other method is one call on it.
"""

# g - discrete groups, c - continuous dims, d - model dim

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor

from ._checks import check_floating, check_last_dim, typecheck
from ._losses import can_fuse, fused_discrete_loss
from ._options import (
    check_fused_choice,
    check_ignore_index,
    check_label_smoothing,
    check_logit_softcap,
    check_temperature,
    check_unit_fraction,
    check_z_loss_weight,
    checked_option,
)
from ._parse import split_pair
from ._selectors import Selector
from ._table import SharedTable
from ._utils import DiscreteContinuous, default, exists, first_tensor, identity, pack, take
from .compat.readout_methods import ReadoutCompat
from .fused.from_embeds import token_kl_divs, token_log_probs
from .fused.linear_softmax import apply_softcap
from .fused.objectives_from_embeds import distill_loss, policy_loss
from .fused.policy import PolicyLoss
from .heads.gaussian import Gaussian, SquashedGaussian
from .heads.registry import build_continuous_dist, table_bins
from .heads.units import bound_units
from .readout_distribution import DistConfig, ReadoutDistribution

__all__ = ['NoTableError', 'Readout']


class Readout(ReadoutCompat, SharedTable):
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
        if self.embeddings is None:
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
        dist = ReadoutDistribution(self._project(embed, selector), selector, DistConfig.of(self), action_mask=action_mask, name='logits')
        return dist.loss(targets, mask=mask, unreduced=unreduced, return_only=return_only, return_z_loss=return_z_loss)

    def _project(self, embed: Tensor, selector: Selector, discrete: bool = True):
        """``(groups, params)`` in one matmul, each ``None`` where the selector has no
        such part (or ``discrete=False``)."""
        weight = take(self.embeddings.weight, selector.readout_rows if discrete else selector.continuous_readout_rows)
        out = F.linear(_as_dtype_of(embed, weight), weight)  # (..., sum n_g + c * params)
        has_d, has_c = selector.has_discrete and discrete, selector.has_continuous
        if has_d and has_c and self.logit_softcap is None:  # one split: one node in the backward
            *groups, flat = out.split((*selector.group_sizes, out.shape[-1] - selector.num_discrete_rows), dim=-1)
            return DiscreteContinuous(tuple(groups), self._as_params(flat))
        groups = params = None
        if has_d:  # views of out, sliced and split only where it holds more than one part
            logits = apply_softcap(out[..., : selector.num_discrete_rows] if has_c else out, self.logit_softcap)
            groups = (logits,) if selector.num_groups == 1 else logits.split(selector.group_sizes, dim=-1)
        if has_c:
            params = self._as_params(out[..., selector.num_discrete_rows :] if has_d else out)
        return DiscreteContinuous(groups, params)

    def _as_params(self, flat: Tensor) -> Tensor:
        """``(..., 2c)`` mean and log-var outputs as ``(..., c, 2)``, a binned head's
        ``(..., c b)`` bin logits as ``(..., c, b)``; regression stays ``(..., c)``."""
        nb = self.layout.num_bins
        if nb:  # '... (c b) -> ... c b'
            return flat.reshape(*flat.shape[:-1], flat.shape[-1] // nb, nb)
        if self.continuous_log_var_embed:  # '... (two c) -> ... c two'
            return flat.reshape(*flat.shape[:-1], 2, flat.shape[-1] // 2).transpose(-1, -2)
        return flat

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

    # per-token log-probs, entropies and KL from the embeddings (one discrete group)

    def log_prob_from_embeds(self, embeds: Tensor, targets: Tensor, *, temperature: float = 1.0, return_entropy: bool = False,
                             loss_mask: Tensor | None = None, selector_index=None, selector_config=None):  # fmt: skip
        """Per-token ``log softmax(logits / temperature)[target]`` straight from the
        embeddings, chunk by chunk: the ``(tokens, vocab)`` logits never exist.
        Differentiable wrt ``embeds`` and the table (twice), with any per-token
        upstream gradient (PPO's ``ratio * advantage``, an entropy bonus).

        Args:
            embeds: ``(..., D)``.
            targets: ids ``(...)`` (with ``auto_squeeze_single_output=False`` also
                ``(..., 1)``, as ``log_prob`` takes them); ``ignore_index`` gives 0.
            temperature: divides the (soft-capped) logits; a real number > 0.
            return_entropy: also the per-token entropy of the same distribution.
            loss_mask: ``(...)`` bool, True = keep; dropped tokens give 0 and are never computed.
            selector_index: a registered selector (one discrete group; see the class docstring).
            selector_config: a selector config for this call only.

        Returns:
            log-probs shaped like ``targets`` (``(...)``, or ``(..., 1)`` for ids with
            that axis, as ``log_prob`` returns them), or ``(log_probs, entropies)``.
        """
        log_probs, entropy = token_log_probs(self, embeds, targets, temperature, loss_mask, selector_index, selector_config)
        return (log_probs, entropy) if return_entropy else log_probs

    def kl_div_from_embeds(self, embeds_true: Tensor, embeds_pred: Tensor, *, readout_true: Readout | None = None, temperature: float = 1.0,
                           loss_mask: Tensor | None = None, selector_index=None, selector_config=None, selector_index_true=None,
                           selector_config_true=None) -> Tensor:  # fmt: skip
        """Per-token KL(true || pred) without the logits: the true distribution is
        ``readout_true``'s (a teacher, a frozen reference policy; default this
        readout) for ``embeds_true``, the predicted one this readout's for
        ``embeds_pred``. Gradients reach the pred side, and the true side where
        it requires them.

        Args:
            embeds_true: ``(..., D_true)``.
            embeds_pred: ``(..., D)``, the same leading shape.
            readout_true: a readout with one discrete group of the same size
                (under its selector).
            temperature: divides both sides' (soft-capped) logits; a real number > 0.
            loss_mask: ``(...)`` bool, True = keep; dropped tokens give 0.
            selector_index: this readout's (the pred side's) registered selector
                (one discrete group; see the class docstring).
            selector_config: a selector config of the pred side for this call only.
            selector_index_true: ``readout_true``'s registered selector. When
                ``readout_true`` is ``None`` or this readout and neither
                ``selector_index_true`` nor ``selector_config_true`` is given, the
                true side uses the pred side's selector.
            selector_config_true: a selector config of the true side for this call only.

        Returns:
            ``(...)``.
        """
        pred = (selector_index, selector_config)
        true = (selector_index_true, selector_config_true)
        if (readout_true is None or readout_true is self) and selector_index_true is None and selector_config_true is None:
            true = pred
        return token_kl_divs(default(readout_true, self), embeds_true, true, self, embeds_pred, pred, temperature, loss_mask)

    def policy_loss_from_embeds(self, embeds: Tensor, actions: Tensor, advantages: Tensor, *, old_log_probs: Tensor | None = None,
                                loss_type: str = 'dapo', clip: tuple[float, float] = (0.2, 0.2), ref_log_probs: Tensor | None = None,
                                kl_coef: float = 0.0, entropy_coef: float = 0.0, loss_mask: Tensor | None = None, temperature: float = 1.0,
                                selector_index=None, selector_config=None, max_length: float | None = None, num_tokens=None) -> PolicyLoss:  # fmt: skip
        """The clipped-ratio policy-gradient loss of LM RL trainers (PPO / GRPO and
        their variants) straight from the embeddings, fused: chunk by chunk, with the
        gradients formed in the same pass, so backward is a scale (the three matmuls
        of the loss, once; GSPO four when one sequence exceeds a chunk). The ``(tokens,
        vocab)`` logits never exist. Differentiable twice (``create_graph`` takes the
        tracked formulation); under ``torch.no_grad`` no gradient is computed.

        Per token, with ``r = exp(logp - old_logp)`` and ``clip(r) = clamp(r, 1 - low, 1 + high)``:
        ``-min(r A, clip(r) A)`` (CISPO: ``-sg(clip(r)) A logp``; GSPO: ``r`` the
        sequence's ``exp(mean(logp - old_logp))``) ``+ kl_coef * k3 - entropy_coef * entropy``,
        ``k3 = exp(ref - logp) - (ref - logp) - 1``; reduced as ``loss_type`` says.

        Args:
            embeds: ``(..., T, D)`` hidden states: sequences (the leading axes) of ``T`` tokens.
            actions: ``(..., T)`` the sampled tokens; ``ignore_index`` drops a token.
            advantages: per sequence ``(...)``, broadcast over its tokens, or per token ``(..., T)``; constants (no gradient reaches them).
            old_log_probs: ``(..., T)`` log-probs under the sampling policy; ``None``:
                on-policy (ratio 1, with the log-prob's gradient).
            loss_type: ``'grpo'`` (``'ppo'``): the mean over each sequence's tokens, then
                over sequences; ``'dapo'``: the sum over tokens / their number;
                ``'bnpo'``: / the number of this batch's tokens; ``'dr_grpo'``: / (sequences
                * ``max_length``); ``'gspo'``: the sequence-level ratio, reduced as
                ``'grpo'``; ``'cispo'``: the clipped, detached ratio times the
                log-prob, reduced as ``'dapo'``.
            clip: ``(low, high)``: the ratio is clipped to ``[1 - low, 1 + high]`` (for
                CISPO, ``low >= 1`` leaves it unbounded below, as MiniMax-M1 does).
            ref_log_probs: ``(..., T)`` log-probs under a reference policy, for the KL term and its metric.
            kl_coef: weight of the per-token k3 estimate of KL(policy || reference).
            entropy_coef: weight of the entropy bonus (subtracted).
            loss_mask: ``(..., T)`` bool, True = the token counts (False on prompts, padding).
            temperature: divides the (soft-capped) logits.
            selector_index: a registered selector (one discrete group; see the class docstring).
            selector_config: a selector config for this call only.
            max_length: ``'dr_grpo'``'s constant (default ``T``, the padded length).
            num_tokens: ``'dapo'`` / ``'cispo'``: the number of tokens to divide by
                (default this call's kept tokens; under gradient accumulation, the whole
                batch's, as TRL's ``num_items_in_batch``).

        Returns:
            ``PolicyLoss(loss, metrics)``: the scalar loss and ``PolicyMetrics(ratio,
            clip_low, clip_high, kl, entropy)``, detached means over the kept tokens.
        """
        return policy_loss(self, embeds, actions, advantages, old_log_probs=old_log_probs, loss_type=loss_type, clip=clip,
                           ref_log_probs=ref_log_probs, kl_coef=kl_coef, entropy_coef=entropy_coef, loss_mask=loss_mask, temperature=temperature,
                           selector_index=selector_index, selector_config=selector_config, max_length=max_length, num_tokens=num_tokens)  # fmt: skip

    def distill_loss_from_embeds(self, student_embeds: Tensor, teacher_embeds: Tensor, *, teacher: Readout | None = None, divergence: str = 'forward_kl',
                                 beta: float = 0.5, temperature: float = 1.0, loss_mask: Tensor | None = None, hard_targets: Tensor | None = None,
                                 hard_weight: float = 0.0) -> Tensor:  # fmt: skip
        """A distillation loss from this readout's embeddings (the student) and a
        teacher's, fused: both sides' logits chunk by chunk (never held whole), the
        student's gradients formed in the same pass (the teacher's matmul and the three
        of the loss). The teacher gets no gradient. Differentiable twice (``create_graph``
        takes a tracked formulation that holds each chunk's logits).

        Args:
            student_embeds: ``(..., D)``.
            teacher_embeds: ``(..., D_teacher)``, the same leading shape.
            teacher: the teacher's readout (one discrete group of the same size);
                ``None``: this readout's table, detached.
            divergence: with ``P`` the teacher's distribution and ``Q`` the student's,
                ``'forward_kl'`` KL(P || Q), ``'reverse_kl'`` KL(Q || P), ``'jsd'``
                ``beta KL(P || M) + (1 - beta) KL(Q || M)``, ``M = beta P + (1 - beta) Q``
                (TRL's and Liger's generalised JSD).
            beta: the JSD's weight of the teacher, in ``(0, 1)``.
            temperature: divides both sides' (soft-capped) logits (the divergence is not multiplied by ``T^2``).
            loss_mask: ``(...)`` bool, True = the token counts.
            hard_targets: ``(...)`` ids for a cross-entropy term on the untempered
                logits; ``ignore_index`` drops the token from both terms.
            hard_weight: the loss is ``(1 - hard_weight) * divergence + hard_weight *
                cross_entropy`` (Liger's ``weight_soft_loss`` / ``weight_hard_loss``).

        Returns:
            the mean over the kept tokens, a scalar.
        """
        return distill_loss(self, student_embeds, teacher_embeds, teacher=teacher, divergence=divergence, beta=beta, temperature=temperature,
                            loss_mask=loss_mask, hard_targets=hard_targets, hard_weight=hard_weight)  # fmt: skip

    # the distribution of outputs, and what is done with it

    def dist(self, outputs, *, selector_index=None, selector_config=None, action_mask=None, rescale_range=None,
             override_range: bool = False) -> ReadoutDistribution:  # fmt: skip
        """The distribution ``outputs`` (what ``forward`` returns) define, parsed and
        checked once: sample, mode, log-prob, entropy, KL, loss and
        ``torch.distributions`` views are its methods (see ``ReadoutDistribution``).

        Args:
            outputs: logits, params or a pair (``dist`` in the class docstring).
            selector_index: a registered selector (see the class docstring).
            selector_config: a selector config for this call only.
            action_mask: bool, True = allowed (see the class docstring).
            rescale_range: ``(lo, hi)`` of the continuous values (see the class docstring).
            override_range: see the class docstring.

        Returns:
            a ``ReadoutDistribution``.
        """
        return self._dist(outputs, selector_index, selector_config, action_mask, rescale_range, 'outputs', override_range)

    def _dist(self, outputs, selector_index, selector_config, action_mask, rescale_range, name: str, override_range: bool = False) -> ReadoutDistribution:
        device = first_tensor(outputs).device if selector_config is not None else None  # where a runtime selector's indices go
        selector = self._selector(selector_index, selector_config, device)
        return ReadoutDistribution(outputs, selector, DistConfig.of(self), action_mask=action_mask, rescale_range=rescale_range, name=name,
                                   override_range=override_range)  # fmt: skip

    def sample(self, dist, temperature: float = 1.0, differentiable: bool = False, selector_index=None, selector_config=None,
               rescale_range=None, *, filter_fn=identity, filter_kwargs: dict | None = None, generator=None,
               action_mask=None, hard: bool = True, return_log_prob: bool = False, override_range: bool = False):  # fmt: skip
        """Draw from ``dist``: ``self.dist(dist, ...).sample(...)`` (see
        [`ReadoutDistribution.sample`][] for what each option does per head).

        Args:
            dist: what ``forward`` returns (see the class docstring).
            temperature: see [`ReadoutDistribution.sample`][].
            differentiable: see [`ReadoutDistribution.sample`][].
            selector_index: a registered selector (see the class docstring).
            selector_config: a selector config for this call only.
            rescale_range: ``(lo, hi)`` of the continuous values (see the class docstring).
            filter_fn: see [`ReadoutDistribution.sample`][].
            filter_kwargs: see [`ReadoutDistribution.sample`][].
            generator: see [`ReadoutDistribution.sample`][].
            action_mask: bool, True = allowed (see the class docstring).
            hard: see [`ReadoutDistribution.sample`][].
            return_log_prob: see [`ReadoutDistribution.sample`][].
            override_range: see the class docstring.

        Returns:
            ids ``(...)`` (one group, ``auto_squeeze_single_output``) or ``(..., G)``
            (``differentiable``: one-hots concatenated ``(..., sum n_g)``); values
            ``(..., c)`` in original units (or ``continuous_range``'s / ``rescale_range``'s);
            a pair for both parts; with ``return_log_prob``, ``(sample, log_prob)``.
        """
        temperature = check_temperature(temperature)
        return self._dist(dist, selector_index, selector_config, action_mask, rescale_range, 'dist', override_range).sample(
            temperature, differentiable, filter_fn=filter_fn, filter_kwargs=filter_kwargs, generator=generator, hard=hard, return_log_prob=return_log_prob,
        )  # fmt: skip

    def mode(self, dist, selector_index=None, selector_config=None, rescale_range=None, *, action_mask=None, override_range: bool = False):
        """The deterministic action, ``sample(dist, temperature=0.)``: argmax
        (discrete); gaussian mean, squashed ``tanh(mean)``, beta / kumaraswamy mode
        where unique and inside (0, 1), else their mean (continuous).

        Args:
            dist: what ``forward`` returns (see the class docstring).
            selector_index: a registered selector (see the class docstring).
            selector_config: a selector config for this call only.
            rescale_range: ``(lo, hi)`` of the continuous values (see the class docstring).
            action_mask: bool, True = allowed (see the class docstring).
            override_range: see the class docstring.

        Returns:
            ids ``(...)`` / ``(..., G)``, values ``(..., c)``, or a pair.
        """
        return self._dist(dist, selector_index, selector_config, action_mask, rescale_range, 'dist', override_range).mode()

    def log_prob(self, dist, sampled, selector_index=None, selector_config=None, concat: bool = False, *, action_mask=None, rescale_range=None,
                 soft_validate_range: bool = False, override_range: bool = False):  # fmt: skip
        """Log-probability of ``sampled`` under ``dist``: ids ``(...)`` / ``(..., G)``
        (``ignore_index`` gives 0, disallowed actions ``-inf``), values ``(..., c)``
        in original units (or ``continuous_range``'s / ``rescale_range``'s), or a pair;
        continuous densities are in the values' units.

        Args:
            dist: what ``forward`` returns (see the class docstring).
            sampled: what to score: ids, values or a pair; a leading shape that
                broadcasts with ``dist``'s is scored over the broadcast shape (as
                ``torch.distributions``; the group / dim axis must match).
            selector_index: a registered selector (see the class docstring).
            selector_config: a selector config for this call only.
            concat: join the parts of a pair along the last axis.
            action_mask: bool, True = allowed (see the class docstring).
            rescale_range: ``(lo, hi)`` of the continuous values (see the class docstring).
            soft_validate_range: clamp values ``eps`` inside a bounded head's native
                range first (0.2.10's option); otherwise a value outside the support
                is a ``ValueError`` (``-inf`` with content checks off).
            override_range: see the class docstring.

        Returns:
            ``(...)`` / ``(..., G)``, ``(..., c)``, a pair, or with ``concat`` ``(..., G + c)``.
        """
        dist = self._dist(dist, selector_index, selector_config, action_mask, rescale_range, 'dist', override_range)
        return dist.log_prob(sampled, concat=concat, soft_validate_range=soft_validate_range)

    def entropy(self, dist, selector_index=None, selector_config=None, concat: bool = False, *, action_mask=None,
                squashed_entropy_samples: int | None = None, rescale_range=None, override_range: bool = False):  # fmt: skip
        """Entropy per group (over allowed actions) and per dim (in the user's
        units). The squashed gaussian's is that of its pre-tanh gaussian (as 0.2.7);
        ``squashed_entropy_samples=n`` gives a Monte-Carlo estimate of the squashed
        variable's own from ``n`` draws.

        Args:
            dist: what ``forward`` returns (see the class docstring).
            selector_index: a registered selector (see the class docstring).
            selector_config: a selector config for this call only.
            concat: join the parts of a pair along the last axis.
            action_mask: bool, True = allowed (see the class docstring).
            rescale_range: ``(lo, hi)`` of the continuous values (see the class docstring).
            squashed_entropy_samples: a positive int (squashed readouts only).
            override_range: see the class docstring.

        Returns:
            ``(...)`` / ``(..., G)``, ``(..., c)``, a pair, or with ``concat`` ``(..., G + c)``.
        """
        dist = self._dist(dist, selector_index, selector_config, action_mask, rescale_range, 'dist', override_range)
        return dist.entropy(concat=concat, squashed_entropy_samples=squashed_entropy_samples)

    def kl_div(self, dist_true, dist_pred, selector_index=None, selector_config=None, concat: bool = False, *, action_mask=None):
        """KL(true || pred) per group and per dim.

        Args:
            dist_true: what ``forward`` returns, for the true distribution.
            dist_pred: the predicted one, of the same shapes.
            selector_index: a registered selector (see the class docstring).
            selector_config: a selector config for this call only.
            concat: join the parts of a pair along the last axis.
            action_mask: applied to both.

        Returns:
            ``(...)`` / ``(..., G)``, ``(..., c)``, a pair, or with ``concat`` ``(..., G + c)``.
        """
        true = self._dist(dist_true, selector_index, selector_config, action_mask, None, 'dist_true')
        return true.kl_div(self._dist(dist_pred, selector_index, selector_config, action_mask, None, 'dist_pred'), concat=concat)

    def get_dist(self, dist_params, *, action_mask=None, selector_index=None, selector_config=None, rescale_range=None, composite: bool = False,
                 override_range: bool = False):  # fmt: skip
        """``torch.distributions`` views of ``dist_params`` (see
        ``ReadoutDistribution.get_dist``), e.g. for tensordict's
        ``ProbabilisticTensorDictModule(..., distribution_class=readout.get_dist)``.

        Args:
            dist_params: what ``forward`` returns (see the class docstring).
            action_mask: bool, True = allowed (see the class docstring).
            selector_index: a registered selector (see the class docstring).
            selector_config: a selector config for this call only.
            rescale_range: ``(lo, hi)`` of the continuous values (see the class docstring).
            composite: for a mixed readout, one ``CompositeActionDistribution`` (TorchRL's
                composite interface; needs tensordict) instead of the pair.
            override_range: see the class docstring.

        Returns:
            a ``torch.distributions.Distribution`` with batch shape ``(...)``, or a pair
            of them, or with ``composite`` a ``CompositeActionDistribution``.
        """
        if composite:
            from .rl.composite import CompositeActionDistribution  # tensordict is optional

            logits, params = dist_params if isinstance(dist_params, tuple) and len(dist_params) == 2 else (dist_params, None)
            return CompositeActionDistribution(logits, params, readout=self, action_mask=action_mask, rescale_range=rescale_range,
                                               selector_index=selector_index, selector_config=selector_config, override_range=override_range)  # fmt: skip
        return self._dist(dist_params, selector_index, selector_config, action_mask, rescale_range, 'dist_params', override_range).get_dist()


    def _check_squashable(self) -> None:
        if exists(self.continuous_dist) and type(self.continuous_dist) not in (Gaussian, SquashedGaussian):
            raise ValueError(f'continuous_squashed=True needs a gaussian head, this readout has {type(self.continuous_dist).__name__}')

class NoTableError(ValueError, RuntimeError):
    """``forward`` on a readout without a table: a ``ValueError`` (a bad call), and
    a ``RuntimeError`` as 0.2.x raised there."""


def _as_dtype_of(embed: Tensor, weight: Tensor) -> Tensor:
    """Embeddings in the table's dtype (half embeddings into a float32 readout),
    unless autocast chooses the matmul dtype."""
    if embed.dtype == weight.dtype or torch.is_autocast_enabled(embed.device.type):
        return embed
    return embed.to(weight.dtype)
