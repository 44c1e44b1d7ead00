"""The distillation loss's divergences (see ``distill``): their definition in
differentiable torch ops (``divergence``, the reference the tracked and kernel paths
share), and each one's chunk body for the fused pass: the per-row value and its
gradient with respect to the student's logits, with the hard-target cross entropy
mixed in, the element-wise work in cache-sized row blocks."""

# n - rows (tokens), v - vocabulary

from __future__ import annotations

import math
from typing import NamedTuple

import torch
from torch import Tensor

from .chunks import picked_logits
from .linear_softmax import softmax_lse

__all__ = ['DIVERGENCES', 'DIVERGENCE_CHUNKS', 'DistillOptions', 'divergence']

DIVERGENCES = ('forward_kl', 'reverse_kl', 'jsd')


class DistillOptions(NamedTuple):
    """The distillation loss's options (see ``Readout.distill_loss_from_embeds``)."""

    divergence: str = 'forward_kl'
    beta: float = 0.5
    temperature: float = 1.0
    hard_weight: float = 0.0
    softcaps: tuple = (None, None)  # (student, teacher)


def divergence(log_q: Tensor, log_p: Tensor, options: DistillOptions) -> Tensor:
    """Per row, the divergence of the student's ``log_q`` from the teacher's ``log_p``
    (``(n, v)`` log-probabilities), in differentiable torch ops: the definition."""
    if options.divergence == 'forward_kl':
        return (log_p.exp() * (log_p - log_q)).sum(-1)
    if options.divergence == 'reverse_kl':
        return (log_q.exp() * (log_q - log_p)).sum(-1)
    beta = options.beta
    log_m = torch.logaddexp(log_p + math.log(beta), log_q + math.log(1.0 - beta))
    return beta * (log_p.exp() * (log_p - log_m)).sum(-1) + (1.0 - beta) * (log_q.exp() * (log_q - log_m)).sum(-1)


class _Hard(NamedTuple):
    """The hard term's pieces taken from the student's tempered logits before they are
    overwritten: the target's logit and, at ``T != 1``, the untempered softmax."""

    picked: Tensor
    probs: Tensor | None
    lse: Tensor | None

    @staticmethod
    def of(z: Tensor, ids, options: DistillOptions, buffer) -> _Hard | None:
        if not options.hard_weight:
            return None
        if options.temperature == 1.0:
            return _Hard(picked_logits(z, ids), None, None)
        probs, lse = softmax_lse(torch.mul(z, options.temperature, out=buffer[: z.shape[0]]), buffer)
        return _Hard(options.temperature * picked_logits(z, ids), probs, lse)


def _mixed(value, dense, q, lse_q, hard: _Hard | None, options: DistillOptions):
    """``(1 - h) divergence + h cross entropy`` and its dense gradient (d CE / dz = T (softmax(T z) - onehot);
    the onehot part is ``_chunk_grad``'s)."""
    if hard is None:
        return value, dense
    h, temperature = options.hard_weight, options.temperature
    cross_entropy = (lse_q if hard.probs is None else hard.lse) - hard.picked
    dense = dense.mul_(1.0 - h).add_(q if hard.probs is None else hard.probs, alpha=h * temperature)
    return (1.0 - h) * value + h * cross_entropy, dense


def _forward_kl(z_of, z_t_of, ids, options: DistillOptions, buffers, blocks):
    """KL(P || Q) = sum p log p - sum p z + lse_q; d/dz = q - p. Three buffers (the
    student's softmax is taken in place); the element-wise passes on ``blocks`` of rows."""
    a, b, c = buffers[:3]
    z_t = z_t_of(a)
    value, lse_q = (torch.empty(z_t.shape[0], dtype=z_t.dtype, device=z_t.device) for _ in range(2))
    for s in blocks:
        p, lse_p = softmax_lse(z_t[s], b[s])
        value[s] = z_t[s].mul_(p).sum(-1) - lse_p  # sum p log p
    z, chain = z_of(a)
    hard = _Hard.of(z, ids, options, buffers[-1])
    alpha = 1.0 - options.hard_weight if hard is not None and hard.probs is None else 1.0  # (1 - h)(q - p) + h q in one pass
    for s in blocks:
        p_z = torch.mul(b[s], z[s], out=_tile(c, s)).sum(-1)
        q, lse_q[s] = softmax_lse(z[s], a[s])
        value[s] += lse_q[s] - p_z
        q.sub_(b[s], alpha=alpha)
    q = dense = a[: z.shape[0]]
    if alpha != 1.0:
        return (1.0 - options.hard_weight) * value + options.hard_weight * (lse_q - hard.picked), dense, chain
    return (*_mixed(value, dense, q, lse_q, hard, options), chain)


def _reverse_kl(z_of, z_t_of, ids, options: DistillOptions, buffers, blocks):
    """KL(Q || P) = sum q (z - z_t) - lse_q + lse_p; d/dz = q (z - z_t - lse_q + lse_p - KL). Three buffers."""
    a, b, c = buffers[:3]
    z_t = z_t_of(a)
    z, chain = z_of(b)
    hard = _Hard.of(z, ids, options, buffers[-1])
    value, lse_q = (torch.empty(z.shape[0], dtype=z.dtype, device=z.device) for _ in range(2))
    for s in blocks:
        lse_p = softmax_lse(z_t[s], _tile(c, s))[1]
        q, lse_q[s] = softmax_lse(z[s], _tile(c, s))
        weighted = torch.mul(q, z[s].sub_(z_t[s]), out=a[s])
        value[s] = weighted.sum(-1) - lse_q[s] + lse_p
        weighted.addcmul_(q, -(value[s] + lse_q[s] - lse_p)[:, None])
    n = z.shape[0]
    return (*_mixed(value, a[:n], c[:n], lse_q, hard, options), chain)


def _jsd(z_of, z_t_of, ids, options: DistillOptions, buffers, blocks):
    """JSD_beta = beta KL(P || M) + (1 - beta) KL(Q || M); d/dz = (1 - beta) q (log q - log m - KL(Q || M)).
    ``M = (1 - beta) M'`` with ``M' = Q + P beta / (1 - beta)`` (one pass), so ``log m = log m' + log(1 - beta)``
    and, as ``sum q = 1``, ``U = sum q (z - log m') = lse_q + log(1 - beta) + KL(Q || M)``. Four buffers."""
    a, b, c, d = buffers[:4]
    beta = options.beta
    ratio, log_rest = beta / (1.0 - beta), math.log(1.0 - beta)
    z_t = z_t_of(a)
    z, chain = z_of(c)
    hard = _Hard.of(z, ids, options, buffers[-1])
    value, lse_q = (torch.empty(z.shape[0], dtype=z.dtype, device=z.device) for _ in range(2))
    for s in blocks:
        p, lse_p = softmax_lse(z_t[s], _tile(b, s))
        p_log_p = z_t[s].mul_(p).sum(-1) - lse_p
        q, lse_q[s] = softmax_lse(z[s], _tile(d, s))
        log_m = torch.add(q, p, alpha=ratio, out=a[s]).clamp_min_(torch.finfo(q.dtype).tiny).log_()  # log m'
        p_log_m = p.mul_(log_m).sum(-1) + log_rest
        weighted = torch.mul(q, z[s].sub_(log_m), out=a[s])  # q (z - log m')
        total = weighted.sum(-1)
        value[s] = beta * (p_log_p - p_log_m) + (1.0 - beta) * (total - lse_q[s] - log_rest)
        weighted.addcmul_(q, -total[:, None]).mul_(1.0 - beta)
    n = z.shape[0]
    return (*_mixed(value, a[:n], d[:n], lse_q, hard, options), chain)


# each divergence's chunk function and its buffers: True holds a whole chunk, False one cache
# block (reused by every block, so not page-faulted per chunk), 'hard' a whole chunk with a hard term
DIVERGENCE_CHUNKS = {'forward_kl': (_forward_kl, (True, True, False)), 'reverse_kl': (_reverse_kl, (True, True, 'hard')),
                     'jsd': (_jsd, (True, False, True, 'hard'))}  # fmt: skip


def _tile(buffer: Tensor, block: slice) -> Tensor:
    """A buffer's rows for ``block``: its rows of the chunk, or a block buffer's first rows."""
    return buffer[block] if buffer.shape[0] >= block.stop else buffer[: block.stop - block.start]


