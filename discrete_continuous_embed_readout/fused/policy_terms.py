"""The per-token terms of the clipped-ratio policy-gradient objectives, as plain
functions over per-row tensors: each token's loss, its gradient with respect to the
token's log-prob and entropy (closed forms, for the fused chunk loop and GPU
kernels), the normalisers of the loss types, and the metrics trainers log.

Rows are tokens, flattened; ``PolicyRows`` holds what each row needs besides its
log-prob and entropy. The loss is ``sum(weights * token_losses)``, the weights
carrying the loss type's normaliser.

Loss types (``A`` the advantage, ``r = exp(logp - old_logp)``, ``clip`` to
``[1 - low, 1 + high]``):

- ``'grpo'`` / ``'ppo'``: ``-min(r A, clip(r) A)`` per token, the mean over each
  sequence's kept tokens, then the mean over sequences (DeepSeekMath's GRPO);
- ``'dapo'``: the same token loss, summed over all kept tokens and divided by their
  number (DAPO's token-level normalisation; ``num_tokens`` gives the count of a whole
  accumulated batch, as TRL's ``num_items_in_batch``);
- ``'bnpo'``: divided by the number of kept tokens of this batch (TRL's BNPO);
- ``'dr_grpo'``: summed and divided by ``sequences * max_length``, a constant (Dr. GRPO);
- ``'gspo'``: the sequence-level ratio ``s = exp(mean over the sequence's kept tokens
  of (logp - old_logp))`` in place of ``r``, clipped per sequence, then as ``'grpo'``;
- ``'cispo'``: ``-sg(clip(r)) A logp`` (MiniMax-M1's CISPO: the clipped, detached
  importance weight), normalised as ``'dapo'``.

Then, per token, ``+ kl_coef * k3`` (``k3 = exp(ref - logp) - (ref - logp) - 1``,
Schulman's estimator of KL(policy || reference)) and ``- entropy_coef * entropy``.
"""

# n - rows (tokens), b - sequences, t - tokens per sequence

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor

__all__ = ['LOSS_TYPES', 'PolicyMetrics', 'PolicyOptions', 'PolicyRows', 'k3', 'loss_weights', 'policy_metrics',
           'sequence_grads', 'token_grads', 'token_losses']  # fmt: skip

LOSS_TYPES = ('grpo', 'ppo', 'dapo', 'bnpo', 'dr_grpo', 'gspo', 'cispo')
SEQUENCE_MEAN = ('grpo', 'ppo', 'gspo')  # the mean over each sequence's tokens, then over sequences


class PolicyOptions(NamedTuple):
    """The objective's options (see ``Readout.policy_loss_from_embeds``)."""

    loss_type: str = 'dapo'
    clip_low: float = 0.2
    clip_high: float = 0.2
    kl_coef: float = 0.0
    entropy_coef: float = 0.0
    temperature: float = 1.0
    softcap: float | None = None


class PolicyRows(NamedTuple):
    """What each row (token) needs besides its log-prob and entropy, all ``(n,)``
    (``seq_len``: ``(b,)``). ``old`` / ``ref`` ``None``: on-policy / no reference."""

    ids: Tensor  # the sampled action
    advantages: Tensor  # 0 on dropped rows
    old: Tensor | None  # log-prob under the sampling policy, 0 on dropped rows
    ref: Tensor | None  # log-prob under the reference policy
    weights: Tensor  # the normaliser's weight of the row's loss, 0 on dropped rows
    keep: Tensor  # bool: the row counts
    seq: Tensor | None = None  # gspo: the row's sequence
    seq_len: Tensor | None = None  # gspo: kept rows per sequence, at least 1


class PolicyMetrics(NamedTuple):
    """What trainers log, means over the kept tokens, detached.

    Attributes:
        ratio: the importance ratio (GSPO: each token's sequence ratio).
        clip_low: the fraction whose ratio is below ``1 - low`` where that clips the
            gradient (advantage < 0; CISPO: every such token, its weight clipped).
        clip_high: the fraction above ``1 + high`` where that clips it (advantage > 0; CISPO: every such token).
        kl: the k3 estimate of KL(policy || reference), ``None`` without ``ref_log_probs``.
        entropy: the entropy of ``softmax(logits / temperature)``.
    """

    ratio: Tensor
    clip_low: Tensor
    clip_high: Tensor
    kl: Tensor | None
    entropy: Tensor


def loss_weights(keep: Tensor, loss_type: str, max_length: float, num_tokens) -> Tensor:
    """``(b, t)`` weights of the token losses (``keep`` ``(b, t)`` bool): the loss type's normaliser."""
    kept = keep.to(torch.float64)  # exact counts; the caller casts to the softmax dtype
    if loss_type in SEQUENCE_MEAN:
        return kept / (kept.sum(-1, keepdim=True).clamp(min=1.0) * keep.shape[0])
    if loss_type == 'dr_grpo':
        return kept / (keep.shape[0] * max_length)
    count = kept.sum() if num_tokens is None or loss_type == 'bnpo' else torch.as_tensor(num_tokens, dtype=torch.float64, device=keep.device)
    return kept / count.clamp(min=1.0)


def k3(ref: Tensor, logp: Tensor) -> Tensor:
    """Schulman's k3 estimator of KL(policy || reference) per token."""
    delta = ref - logp
    return delta.exp() - delta - 1.0


def log_ratios(logp: Tensor, rows: PolicyRows, options: PolicyOptions) -> Tensor:
    """``log r`` per row: the token's ``logp - old`` (0 with its gradient when
    on-policy), or (gspo) the mean of those over the row's sequence."""
    old = rows.old if rows.old is not None else logp.detach()
    log_ratio = torch.where(rows.keep, logp - old, 0.0)
    if options.loss_type != 'gspo':
        return log_ratio
    per_sequence = log_ratio.new_zeros(rows.seq_len.shape).index_add(0, rows.seq, log_ratio) / rows.seq_len
    return per_sequence[rows.seq]


def _clipped(ratio: Tensor, options: PolicyOptions) -> Tensor:
    return ratio.clamp(1.0 - options.clip_low, 1.0 + options.clip_high)


def _safe_ref(rows: PolicyRows, logp: Tensor) -> Tensor:
    # dropped rows may hold anything: there the reference is the policy (k3 = 0, no overflow)
    return torch.where(rows.keep, rows.ref, logp.detach())


def token_losses(logp: Tensor, entropy: Tensor, rows: PolicyRows, options: PolicyOptions) -> Tensor:
    """Each row's loss (before its weight), in differentiable torch ops: the
    objective's definition (the tracked formulation and the loss value)."""
    ratio = log_ratios(logp, rows, options).exp()
    advantage = rows.advantages
    if options.loss_type == 'cispo':
        loss = -_clipped(ratio, options).detach() * advantage * logp
    else:
        loss = -torch.minimum(ratio * advantage, _clipped(ratio, options) * advantage)
    if options.kl_coef:
        loss = loss + options.kl_coef * k3(_safe_ref(rows, logp), logp)
    if options.entropy_coef:
        loss = loss - options.entropy_coef * entropy
    return torch.where(rows.keep, loss, 0.0)


def _ratio_grad(ratio: Tensor, advantage: Tensor, options: PolicyOptions) -> Tensor:
    """d/d log r of ``-min(r A, clip(r) A)``: ``-A r`` where the unclipped term is the minimum, else 0."""
    return torch.where(ratio * advantage <= _clipped(ratio, options) * advantage, -advantage * ratio, 0.0)


def _local_grads(logp: Tensor, rows: PolicyRows, options: PolicyOptions, g_logp: Tensor):
    """Adds the KL's d/d logp to ``g_logp``; applies the weights; the entropy's coefficient."""
    if options.kl_coef:
        g_logp = g_logp + options.kl_coef * (1.0 - (_safe_ref(rows, logp) - logp).exp())
    g_logp = torch.where(rows.keep, g_logp * rows.weights, 0.0)
    return g_logp, (-options.entropy_coef * rows.weights if options.entropy_coef else None)


def token_grads(logp: Tensor, rows: PolicyRows, options: PolicyOptions) -> tuple[Tensor, Tensor | None]:
    """``(d loss / d logp, d loss / d entropy)`` per row, weights included, for the
    token-level loss types (every type but ``'gspo'``): each row's own closed form,
    so a chunk computes its rows' gradients alone. ``None``: no entropy term."""
    old = rows.old if rows.old is not None else logp
    ratio = torch.where(rows.keep, logp - old, 0.0).exp()
    if options.loss_type == 'cispo':
        g_logp = -_clipped(ratio, options) * rows.advantages
    else:
        g_logp = _ratio_grad(ratio, rows.advantages, options)
    return _local_grads(logp, rows, options, g_logp)


def sequence_grads(logp: Tensor, rows: PolicyRows, options: PolicyOptions) -> tuple[Tensor, Tensor | None]:
    """As ``token_grads`` for ``'gspo'``, all rows at once (a sequence's ratio
    depends on all its tokens): each token gets ``1 / kept tokens`` of its
    sequence's ``d loss / d log s``."""
    ratio = log_ratios(logp, rows, options).exp()
    per_row = _ratio_grad(ratio, rows.advantages, options) * rows.weights
    per_sequence = per_row.new_zeros(rows.seq_len.shape).index_add(0, rows.seq, torch.where(rows.keep, per_row, 0.0))
    g_logp, g_entropy = _local_grads(logp, rows, options, torch.zeros_like(logp))
    return g_logp + torch.where(rows.keep, (per_sequence / rows.seq_len)[rows.seq], 0.0), g_entropy


def policy_metrics(logp: Tensor, entropy: Tensor, rows: PolicyRows, options: PolicyOptions) -> PolicyMetrics:
    """The means over kept rows of the ratio, the clip fractions, k3 and the entropy."""
    logp, entropy = logp.detach(), entropy.detach()
    count = rows.keep.sum().clamp(min=1)

    def mean(t: Tensor) -> Tensor:
        return torch.where(rows.keep, t.to(logp.dtype), 0.0).sum() / count

    ratio = log_ratios(logp, rows, options).exp()
    low, high = ratio < 1.0 - options.clip_low, ratio > 1.0 + options.clip_high
    if options.loss_type != 'cispo':  # only where clipping removes the gradient
        low, high = low & (rows.advantages < 0), high & (rows.advantages > 0)
    kl = mean(k3(_safe_ref(rows, logp), logp)) if rows.ref is not None else None
    return PolicyMetrics(mean(ratio), mean(low), mean(high), kl, mean(entropy))
