"""The fused methods of ``Readout`` (a mixin of it): per-token log-probs,
entropies and KL divergences, the policy-gradient loss and the distillation loss,
each straight from the embeddings, chunk by chunk, the ``(tokens, vocab)`` logits
never held (one discrete group)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from torch import Tensor

from .._utils import default
from .from_embeds import token_kl_divs, token_log_probs
from .objectives_from_embeds import distill_loss, policy_loss
from .policy import PolicyLoss

if TYPE_CHECKING:
    from ..readout import Readout

__all__ = ['FusedReadoutMethods']


class FusedReadoutMethods:
    """The ``*_from_embeds`` methods of ``Readout`` (see the module docstring)."""

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
        vocab)`` logits never exist. On CUDA tensors (see ``fused.backend``) it runs on Triton
        kernels instead: one statistics pass forward, the objective from the per-token
        log-probs and entropies, and one gradient pass in backward. Differentiable twice (``create_graph`` takes the
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
        of the loss). On CUDA tensors it runs on Triton kernels, both sides' logits
        tiles on-chip. The teacher gets no gradient. Differentiable twice (``create_graph``
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
