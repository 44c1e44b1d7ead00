"""The distillation loss of a language model, fused: a divergence between the
teacher's and the student's next-token distributions, plus an optional
cross-entropy term on hard targets, chunk by chunk from both sides' hidden states
and tables, with the student's gradients formed in the same pass.

With ``P`` the teacher's ``softmax(softcap(x_t @ W_t.T) / T)`` and ``Q`` the
student's, per token:

- ``'forward_kl'``: ``KL(P || Q)`` (the usual knowledge distillation);
- ``'reverse_kl'``: ``KL(Q || P)`` (mode seeking, as on-policy distillation uses);
- ``'jsd'``: the generalised Jensen-Shannon divergence
  ``beta KL(P || M) + (1 - beta) KL(Q || M)``, ``M = beta P + (1 - beta) Q``
  (the convention of TRL's GKD and Liger's ``LigerFusedLinearJSDLoss``: ``beta`` weighs
  the teacher; their ``beta = 0`` / ``1`` special cases are the two KLs above).

The loss is the mean over the kept tokens of ``(1 - hard_weight) * divergence +
hard_weight * cross_entropy(student logits, hard target)``; the cross entropy is on
the untempered logits (Liger's ``weight_soft_loss`` / ``weight_hard_loss`` are
``1 - hard_weight`` / ``hard_weight``). The divergence is not multiplied by ``T^2``.
The teacher never receives a gradient. Where ``backend.kernels_apply`` (CUDA tensors
and Triton, by default) the loss runs on the Triton kernels instead
(``kernel_objectives``), both sides' logits tiles on-chip.
"""

# n - rows (tokens), v - vocabulary, d - model dim

from __future__ import annotations

import torch
from torch import Tensor

from .._checks import functorch_active
from .backend import kernels_apply
from .chunks import LogitGrad, accumulate_grads, chunk_buffers, row_slices, softcap_chain, table_grad_buffer, tempered
from .divergences import DIVERGENCE_CHUNKS, DIVERGENCES, DistillOptions, divergence
from .linear_softmax import _logits, cache_blocks, chunk_rows, softmax_dtype
from .loss import _kept_index
from .policy import _compute_dtype

__all__ = ['DIVERGENCES', 'DistillOptions', 'divergence', 'linear_distill_loss']

def _token_losses(x, weight, x_t, weight_t, ids, options: DistillOptions) -> Tensor:
    """Tracked per-row losses from the logits of a chunk of rows."""
    (softcap, teacher_softcap), temperature = options.softcaps, options.temperature
    log_q = _logits(x, weight, softcap, temperature).log_softmax(-1)
    log_p = _logits(x_t, weight_t, teacher_softcap, temperature).log_softmax(-1)
    loss = divergence(log_q, log_p, options)
    if not options.hard_weight:
        return loss
    raw = _logits(x, weight, softcap, 1.0)
    cross_entropy = torch.logsumexp(raw, -1) - raw.gather(-1, ids[:, None]).squeeze(-1)
    return (1.0 - options.hard_weight) * loss + options.hard_weight * cross_entropy


def _tracked(x, weight, x_t, weight_t, ids, weights, options: DistillOptions, rows: int) -> Tensor:
    """The loss with tracked ops, chunk by chunk (the graph holds each chunk's logits)."""
    total = x.new_zeros((), dtype=softmax_dtype(weight))
    for sl in row_slices(x.shape[0], rows):
        total = total + (weights[sl] * _token_losses(x[sl], weight, x_t[sl], weight_t, None if ids is None else ids[sl], options)).sum()
    return total


def _buffers(kinds, hard_buffer: bool, options: DistillOptions, rows: int, x: Tensor, weight: Tensor) -> tuple[list[Tensor], int]:
    """The chunk and cache-block buffers of a divergence (``kinds``: ``DIVERGENCE_CHUNKS``'s), and the rows of a cache block."""
    rows = min(rows, x.shape[0])
    blocks = cache_blocks(rows, weight.shape[0], len(kinds), softmax_dtype(weight), x.device)
    block = blocks[0].stop if blocks else 0
    whole = [kind is True or (kind == 'hard' and options.hard_weight > 0) for kind in kinds] + [True] * hard_buffer
    return [chunk_buffers(1, rows if w else block, x, weight)[0] for w in whole], block


def _chunk_grad(dense: Tensor, w: Tensor, ids, options: DistillOptions, chain) -> LogitGrad:
    """The chunk's ``LogitGrad``: rows weighted by ``w``, the hard term's ``-h T`` at the targets, the soft-cap's chain."""
    picked = -options.hard_weight * options.temperature if options.hard_weight else None
    if chain is None:
        return LogitGrad(dense, w, picked * w if picked is not None else None)
    if picked is not None:
        dense.scatter_add_(1, ids[:, None], torch.full_like(w[:, None], picked))
    return LogitGrad(dense.mul_(chain), w)


def _fused_pass(x, weight, x_t, weight_t, ids, weights, options: DistillOptions, rows: int, need_x: bool, need_w: bool):
    """``(loss, grad_x, grad_w)``: one pass over the chunks. A side without a
    soft-cap has the temperature folded into its inputs."""
    (softcap, teacher_softcap), temperature = options.softcaps, options.temperature
    xs, xs_t = (_folded(t, cap, temperature) for t, cap in ((x, softcap), (x_t, teacher_softcap)))
    grad_x = torch.empty_like(x) if need_x else None
    slices = row_slices(x.shape[0], rows)
    grad_w = table_grad_buffer(weight, need_w, len(slices))
    chunk, kinds = DIVERGENCE_CHUNKS[options.divergence]
    buffers, block = _buffers(kinds, options.hard_weight > 0 and temperature != 1.0, options, rows, x, weight)
    total = torch.zeros((), dtype=buffers[0].dtype, device=x.device)
    for i, sl in enumerate(slices):
        chunk_ids = ids[sl] if ids is not None else None

        def z_of(buffer, sl=sl):
            z = tempered(xs[sl], weight, buffer, softcap, temperature)
            return z, softcap_chain(z, softcap, temperature)

        z_t_of = lambda buffer, sl=sl: tempered(xs_t[sl], weight_t, buffer, teacher_softcap, temperature)  # noqa: E731
        n = xs[sl].shape[0]
        tiles = [b[:n] for b in buffers]
        blocks = [slice(start, min(start + block, n)) for start in range(0, n, block)]
        value, dense, chain = chunk(z_of, z_t_of, chunk_ids, options, tiles, blocks)
        total = total + (weights[sl] * value).sum()
        if need_x or need_w:
            grad = _chunk_grad(dense, weights[sl], chunk_ids, options, chain)
            accumulate_grads(grad, xs[sl], weight, chunk_ids, grad_x[sl] if need_x else None, grad_w, first=i == 0)
    if need_x and softcap is None and temperature != 1.0:
        grad_x.div_(temperature)
    return total, grad_x, grad_w


def _folded(x: Tensor, softcap, temperature: float) -> Tensor:
    return x / temperature if softcap is None and temperature != 1.0 else x


class _FusedDistillLoss(torch.autograd.Function):
    """The loss; the student's gradients are formed in forward and saved, so backward
    is one scale (with ``create_graph=True``: the gradient of the tracked formulation)."""

    @staticmethod
    def forward(ctx, x, weight, x_t, weight_t, ids, weights, options: DistillOptions, rows: int):
        total, grad_x, grad_w = _fused_pass(x, weight, x_t, weight_t, ids, weights, options, rows, *ctx.needs_input_grad[:2])
        ctx.save_for_backward(grad_x, grad_w, x, weight, x_t, weight_t, ids, weights)
        ctx.options, ctx.rows = options, rows
        return total

    @staticmethod
    def backward(ctx, grad_loss):
        grad_x, grad_w, x, weight, x_t, weight_t, ids, weights = ctx.saved_tensors
        if torch.is_grad_enabled():  # create_graph=True
            wanted = [t for t, need in zip((x, weight), ctx.needs_input_grad[:2]) if need]
            found = iter(torch.autograd.grad(_tracked(x, weight, x_t, weight_t, ids, weights, ctx.options, ctx.rows), wanted, create_graph=True))
            grad_x, grad_w = (next(found) if need else None for need in ctx.needs_input_grad[:2])
        grad_x = grad_x * grad_loss.to(grad_x.dtype) if grad_x is not None else None
        grad_w = (grad_w * grad_loss).to(weight.dtype) if grad_w is not None else None
        return grad_x, grad_w, None, None, None, None, None, None


def linear_distill_loss(x: Tensor, weight: Tensor, x_t: Tensor, weight_t: Tensor, keep: Tensor, ids: Tensor | None, options: DistillOptions) -> Tensor:
    """The distillation loss of the student ``softmax(softcap(x @ weight.T) / T)``
    against the teacher's (``x_t``, ``weight_t``), chunk by chunk, never holding
    either side's ``(tokens, vocab)`` logits; gradients reach ``x`` and ``weight`` only.

    Args:
        x: ``(n, d)`` student hidden states.
        weight: ``(v, d)`` the student's rows.
        x_t: ``(n, d_t)`` teacher hidden states.
        weight_t: ``(v, d_t)`` the teacher's rows.
        keep: ``(n,)`` bool, the tokens that count.
        ids: ``(n,)`` hard targets (any valid id where ``keep`` is False), or ``None``.
        options: divergence, ``beta``, temperature, ``hard_weight``, soft-caps.

    Returns:
        the mean over the kept tokens, a scalar.
    """
    x, weight = _compute_dtype(x, weight)
    x_t, weight_t = _compute_dtype(x_t.detach(), weight_t.detach())
    weights = keep.to(softmax_dtype(weight)) / keep.sum().clamp(min=1)
    index = _kept_index(keep)
    if index is not None:
        x, x_t, weights = x.index_select(0, index), x_t.index_select(0, index), weights.index_select(0, index)
        ids = ids.index_select(0, index) if ids is not None else None
    rows = chunk_rows(x.shape[0], 2 * weight.shape[0], x.device)
    with torch.autocast(x.device.type, enabled=False):
        return _routed(x, weight, x_t, weight_t, ids, weights, options, rows)


def _routed(x, weight, x_t, weight_t, ids, weights, options: DistillOptions, rows: int) -> Tensor:
    """The loss on the path that applies: the tracked formulation under ``torch.func``,
    the Triton kernels, the forward pass alone, or the fused chunk loop."""
    if functorch_active():
        return _tracked(x, weight, x_t, weight_t, ids, weights, options, rows)
    if x.dtype == x_t.dtype and kernels_apply(x, weight, x_t, weight_t):
        from .kernel_objectives import kernel_distill_loss  # imports Triton

        return kernel_distill_loss(x, weight, x_t, weight_t, ids, weights, options)
    if not (torch.is_grad_enabled() and (x.requires_grad or weight.requires_grad)):
        return _fused_pass(x, weight, x_t, weight_t, ids, weights, options, rows, False, False)[0]
    return _FusedDistillLoss.apply(x, weight, x_t, weight_t, ids, weights, options, rows)
