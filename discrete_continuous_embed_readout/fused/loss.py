"""The fused linear + cross-entropy loss: ``cross_entropy(x @ W.T, targets)`` chunk by
chunk, never holding the ``(tokens, vocab)`` logits.

Options (``LossOptions``): label smoothing (as ``F.cross_entropy``'s), a z-loss
(``weight * logsumexp^2`` per token, PaLM's), and the logit soft-cap
``c * tanh(logits / c)`` (Gemma 2). Rows that carry no loss (``ignore_index``, the
loss mask) are dropped before the matmul on the CPU (on an accelerator they are
weighted 0 instead: finding them would wait for the device). The reduced loss computes its gradients in
the forward pass (three matmuls in all); the per-token losses go through
``linear_softmax_stats``, whose backward recomputes the logits. On CUDA tensors with
Triton installed (``backend.kernels_apply``) the reduced loss, too, runs on the
per-row statistics of the Triton kernels.
"""

# n - rows (tokens), v - vocabulary, d - model dim

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor

from .._checks import functorch_active, may_sync
from .backend import kernels_apply
from .linear_kl import linear_kl_div
from .linear_softmax import chunk_logits, chunk_rows, linear_softmax_stats, softmax_dtype

__all__ = ['NO_OPTIONS', 'LossOptions', 'linear_cross_entropy_sum', 'linear_kl_divs', 'linear_log_probs', 'linear_token_losses']

class LossOptions(NamedTuple):
    """The discrete loss's options (``Readout(label_smoothing=, z_loss_weight=, logit_softcap=)``)."""

    label_smoothing: float = 0.0
    z_loss_weight: float = 0.0
    softcap: float | None = None


NO_OPTIONS = LossOptions()


def token_losses(z: Tensor, targets: Tensor, options: LossOptions) -> tuple[Tensor, Tensor]:
    """Tracked per-row ``(cross entropy with label smoothing, logsumexp)`` of capped logits ``z``."""
    lse = torch.logsumexp(z, -1)
    ce = lse - z.gather(-1, targets[:, None]).squeeze(-1)
    if options.label_smoothing:
        ce = (1.0 - options.label_smoothing) * ce + options.label_smoothing * (lse - z.mean(-1))
    return ce, lse


def _plain_sums(x, weight, targets, keep, options):
    z = _capped(F.linear(x, weight).to(keep.dtype), options.softcap)
    ce, lse = token_losses(z, targets, options)
    z_sum = (lse.square() * keep).sum()
    return (ce * keep).sum() + options.z_loss_weight * z_sum, z_sum


def _capped(z: Tensor, softcap: float | None) -> Tensor:
    return z if softcap is None else torch.tanh(z / softcap) * softcap


class _LinearCrossEntropySum(torch.autograd.Function):
    """``(sum of keep * (loss + w lse^2), sum of keep * lse^2)`` over rows, chunk by chunk.

    The gradients of x and W are formed in the same pass and saved, so backward is
    one scale: the three matmuls of the loss and no more. One chunk buffer (float32,
    or float64 for float64 inputs) is reused. With ``create_graph=True`` backward
    recomputes the gradients chunk by chunk with tracked ops, so that second
    derivatives are exact.
    """

    @staticmethod
    def forward(ctx, x: Tensor, weight: Tensor, targets: Tensor, keep: Tensor, options: LossOptions, rows: int):
        eps, w, cap = options
        need_x, need_w = ctx.needs_input_grad[:2]
        dtype = softmax_dtype(weight)
        grad_x = torch.empty_like(x) if need_x else None
        grad_w = torch.zeros(weight.shape, dtype=dtype, device=weight.device) if need_w else None
        buffer = torch.empty(min(rows, x.shape[0]), weight.shape[0], dtype=dtype, device=x.device)
        total, z_total = (torch.zeros((), dtype=dtype, device=x.device) for _ in range(2))
        for start in range(0, x.shape[0], rows):
            xc, t, k = x[start : start + rows], targets[start : start + rows, None], keep[start : start + rows]
            z = chunk_logits(xc, weight, buffer)  # (rows, vocab)
            if cap is not None:
                z.div_(cap).tanh_()
                chain = 1.0 - z.square()  # d capped / d raw
                z.mul_(cap)
            picked, top, mean = z.gather(1, t).squeeze(1), z.amax(dim=-1), z.mean(-1) if eps else None
            probs = z.sub_(top[:, None]).exp_()  # in place: the buffer now holds exp(z - max)
            norm = probs.sum(dim=-1)
            lse = top + norm.log()
            ce = lse - picked if not eps else (1.0 - eps) * (lse - picked) + eps * (lse - mean)
            total = total + ((ce + w * lse.square()) * k).sum()
            z_total = z_total + (lse.square() * k).sum()
            # d/dz: p (1 + 2 w lse) - (1 - eps) onehot - eps / v, times keep
            grad = probs.mul_((k * (1.0 + 2.0 * w * lse) / norm)[:, None]).scatter_add_(1, t, -(1.0 - eps) * k[:, None])
            if eps:
                grad.sub_((eps * k / weight.shape[0])[:, None])
            if cap is not None:
                grad.mul_(chain)
            grad = grad.to(weight.dtype)
            if need_x:
                torch.mm(grad, weight, out=grad_x[start : start + rows])
            if need_w and grad.dtype == grad_w.dtype:
                grad_w.addmm_(grad.T, xc)
            elif need_w:  # half precision: the chunk's product in half, the sum in float32
                grad_w.add_(grad.T @ xc)
        ctx.save_for_backward(grad_x, grad_w, x, weight, targets, keep)
        ctx.options, ctx.rows = options, rows
        ctx.mark_non_differentiable(z_total)
        return total, z_total

    @staticmethod
    def backward(ctx, grad_out: Tensor, _):
        grad_x, grad_w, x, weight, targets, keep = ctx.saved_tensors
        if torch.is_grad_enabled():  # create_graph=True: gradients as tracked functions of x and W
            grad_x, grad_w = _tracked_grads(x, weight, targets, keep, ctx)
        # out of place, so that a second backward (retain_graph, gradcheck) still works
        if grad_x is not None:
            grad_x = grad_x * grad_out.to(grad_x.dtype)
        if grad_w is not None:
            grad_w = (grad_w * grad_out).to(weight.dtype)
        return grad_x, grad_w, None, None, None, None


def _tracked_grads(x, weight, targets, keep, ctx):
    """The fused forward's gradients, chunk by chunk with tracked ops (the gradient
    of the same loss, with ``create_graph``)."""
    wanted = [t for t, need in zip((x, weight), ctx.needs_input_grad[:2]) if need]
    total = 0.0
    for start in range(0, x.shape[0], ctx.rows):
        sl = slice(start, start + ctx.rows)
        total = total + _plain_sums(x[sl], weight, targets[sl], keep[sl], ctx.options)[0]
    found = iter(torch.autograd.grad(total, wanted, create_graph=True, allow_unused=True))
    grads = [next(found) if need else None for need in ctx.needs_input_grad[:2]]
    return tuple(torch.zeros_like(t) if need and g is None else g for g, t, need in zip(grads, (x, weight), ctx.needs_input_grad[:2]))


def _nll_sums(x: Tensor, weight: Tensor, targets: Tensor, keep: Tensor, options: LossOptions, rows: int):
    """The forward of ``_LinearCrossEntropySum`` alone (no gradient is wanted), in
    place in one chunk buffer."""
    eps, w, cap = options
    buffer = torch.empty(min(rows, x.shape[0]), weight.shape[0], dtype=softmax_dtype(weight), device=x.device)
    total, z_total = (torch.zeros((), dtype=buffer.dtype, device=x.device) for _ in range(2))
    for start in range(0, x.shape[0], rows):
        z = chunk_logits(x[start : start + rows], weight, buffer)
        if cap is not None:
            z.div_(cap).tanh_().mul_(cap)
        picked, top, mean = z.gather(1, targets[start : start + rows, None]).squeeze(1), z.amax(dim=-1), z.mean(-1) if eps else None
        lse = top + z.sub_(top[:, None]).exp_().sum(dim=-1).log()
        ce = lse - picked if not eps else (1.0 - eps) * (lse - picked) + eps * (lse - mean)
        k = keep[start : start + rows]
        total, z_total = total + ((ce + w * lse.square()) * k).sum(), z_total + (lse.square() * k).sum()
    return total, z_total


def _kernel_sums(x: Tensor, weight: Tensor, targets: Tensor, keep: Tensor, options: LossOptions):
    """The sums from the per-row statistics of the Triton kernels: one kernel pass
    forward, one backward (the logits recomputed there: four matmuls where the chunk
    loop needs three, but no ``(rows, vocab)`` buffer at all)."""
    logp, lse, mean, _ = linear_softmax_stats(x, weight, targets, softcap=options.softcap)
    eps = options.label_smoothing
    ce = -(1.0 - eps) * logp + eps * (lse - mean) if eps else -logp
    z_sum = (lse.square() * keep).sum()
    return ((ce + options.z_loss_weight * lse.square()) * keep).sum(), z_sum.detach()


def _kept_index(keep: Tensor) -> Tensor | None:
    """The rows to compute, or ``None`` for all of them: every row kept; while
    compiling / under ``torch.func``, where a data-dependent gather cannot run; or on
    an accelerator, where finding the kept rows would wait for the device (the
    dropped rows are computed there and weighted 0)."""
    if torch.compiler.is_compiling() or functorch_active() or may_sync(keep) or bool(keep.all()):
        return None
    return keep.nonzero().squeeze(-1)


def _kept_rows(x: Tensor, targets: Tensor, keep: Tensor):
    """Rows with a loss only: ``(x, targets, keep, index)`` gathered at ``_kept_index``."""
    index = _kept_index(keep)
    if index is None:
        return x, targets, keep, None
    return x.index_select(0, index), targets.index_select(0, index), keep.index_select(0, index), index


def _scattered(out: Tensor, index: Tensor | None, num_rows: int) -> Tensor:
    """Per-row results ``(..., kept)`` back at their rows ``(..., num_rows)``, 0 elsewhere."""
    if index is None:
        return out
    return out.new_zeros((*out.shape[:-1], num_rows)).index_copy(-1, index, out)


def _flat(x: Tensor, weight: Tensor, targets: Tensor, keep: Tensor):
    """Rows ``(n, d)`` in the matmul dtype (autocast's, else the table's), ids and
    float keep weights ``(n,)``."""
    x = x.reshape(-1, x.shape[-1])
    if torch.is_autocast_enabled(x.device.type):
        dtype = torch.get_autocast_dtype(x.device.type)
        x, weight = x.to(dtype), weight.to(dtype)
    return x.to(weight.dtype), weight, targets.reshape(-1), keep.reshape(-1).to(softmax_dtype(weight))


def linear_cross_entropy_sum(x: Tensor, weight: Tensor, targets: Tensor, keep: Tensor, options: LossOptions = NO_OPTIONS):
    """``(sum(keep * (loss + w lse^2)), sum(keep * lse^2))`` of ``x @ weight.T``
    without the logits; ``loss`` is the cross entropy with the options' label
    smoothing and soft-cap, ``lse`` the log-normaliser (the z-loss's term).

    Without a gradient to compute (``torch.no_grad``, or neither ``x`` nor
    ``weight`` requires one) only the sums are computed. Under ``torch.func``
    transforms the plain differentiable formulation runs (it holds the logits).

    Args:
        x: ``(..., d)`` inputs.
        weight: ``(vocab, d)`` rows.
        targets: ``(...)`` ids in ``[0, vocab)`` (dropped rows may hold any valid id).
        keep: ``(...)`` 0/1 weights of the rows.
        options: label smoothing, z-loss weight, soft-cap.

    Returns:
        two scalars; the second carries no gradient.
    """
    x, weight, targets, keep = _flat(x, weight, targets, keep)
    x, targets, keep, _ = _kept_rows(x, targets, keep)
    with torch.autocast(x.device.type, enabled=False):
        if functorch_active():
            return _plain_sums(x, weight, targets, keep, options)
        if kernels_apply(x, weight):
            return _kernel_sums(x, weight, targets, keep, options)
        rows = chunk_rows(x.shape[0], weight.shape[0], x.device)
        if not (torch.is_grad_enabled() and (x.requires_grad or weight.requires_grad)):
            return _nll_sums(x, weight, targets, keep, options, rows)
        return _LinearCrossEntropySum.apply(x, weight, targets, keep, options, rows)


def linear_token_losses(x: Tensor, weight: Tensor, targets: Tensor, keep: Tensor, options: LossOptions = NO_OPTIONS):
    """Per-row ``(loss, lse^2)`` of ``x @ weight.T``, 0 where ``keep`` is 0, without
    the logits (``loss`` includes the z-loss term ``w lse^2``); the backward
    recomputes the logits chunk by chunk, so per-row upstream gradients work.

    Args:
        x, weight, targets, keep, options: as in ``linear_cross_entropy_sum``.

    Returns:
        two ``(...)`` tensors shaped like ``targets``.
    """
    shape = targets.shape
    x, weight, targets, keep = _flat(x, weight, targets, keep)
    kept_x, kept_targets, kept, index = _kept_rows(x, targets, keep)
    logp, lse, mean, _ = linear_softmax_stats(kept_x, weight, kept_targets, softcap=options.softcap)
    eps = options.label_smoothing
    loss = -(1.0 - eps) * logp + eps * (lse - mean) + options.z_loss_weight * lse.square()
    out = _scattered(torch.stack((loss * kept, lse.square() * kept)), index, x.shape[0])
    return out[0].reshape(shape), out[1].reshape(shape)


def linear_log_probs(x: Tensor, weight: Tensor, targets: Tensor, keep: Tensor, *, softcap: float | None = None, temperature: float = 1.0):
    """Per-row ``(log p[target], entropy)`` of ``softmax(softcap(x @ weight.T) / temperature)``,
    0 where ``keep`` is 0 (those rows never reach the matmul), without the logits.

    Args:
        x, weight, targets, keep: as in ``linear_cross_entropy_sum``.
        softcap, temperature: as in ``linear_softmax_stats``.

    Returns:
        two tensors shaped like ``targets``.
    """
    shape = targets.shape
    x, weight, targets, keep = _flat(x, weight, targets, keep)
    kept_x, kept_targets, kept, index = _kept_rows(x, targets, keep)
    logp, _, _, entropy = linear_softmax_stats(kept_x, weight, kept_targets, softcap=softcap, temperature=temperature)
    out = _scattered(torch.stack((logp * kept, entropy * kept)), index, x.shape[0])
    return out[0].reshape(shape), out[1].reshape(shape)


def linear_kl_divs(x_p: Tensor, weight_p: Tensor, x_q: Tensor, weight_q: Tensor, keep: Tensor, *, softcaps=(None, None), temperature: float = 1.0):
    """Per-row KL(p || q) of two tables' softmaxes (see ``linear_kl_div``), 0 where
    ``keep`` is 0 (those rows never reach the matmuls); shaped like ``keep``."""
    shape, keep = keep.shape, keep.reshape(-1)
    x_p, x_q = x_p.reshape(-1, x_p.shape[-1]), x_q.reshape(-1, x_q.shape[-1])
    index = _kept_index(keep)
    if index is not None:
        x_p, x_q = x_p.index_select(0, index), x_q.index_select(0, index)
    kl = linear_kl_div(x_p, weight_p, x_q, weight_q, softcaps=softcaps, temperature=temperature)
    kl = kl * keep.to(kl.dtype) if index is None else _scattered(kl, index, keep.shape[0])
    return kl.reshape(shape)
