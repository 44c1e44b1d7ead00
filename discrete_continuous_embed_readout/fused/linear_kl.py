"""KL(p || q) per row for the logits of two tables without either side's
``(tokens, vocab)`` logits: ``linear_kl_div``, chunk by chunk in three reused chunk
buffers (or on the Triton kernels of ``kernel_ops`` where ``backend.kernels_apply``),
its backward recomputing each chunk's logits; twice differentiable, the plain
formulation under ``torch.func`` (as ``linear_softmax``'s statistics)."""

# n - rows (tokens), v - vocabulary, d - model dim

from __future__ import annotations

import torch
from torch import Tensor

from .._checks import functorch_active
from .backend import kernels_apply
from .linear_softmax import _in_compute_dtype, _logits, _rows, _tempered, _tracked_grads, chunk_logits, chunk_rows, softmax_dtype

__all__ = ['linear_kl_div']


def _plain_kl(x_p, weight_p, x_q, weight_q, softcaps, temperature):
    log_p = _logits(x_p, weight_p, softcaps[0], temperature).log_softmax(-1)
    log_q = _logits(x_q, weight_q, softcaps[1], temperature).log_softmax(-1)
    return (log_p.exp() * (log_p - log_q)).sum(-1)


class _LinearKL(torch.autograd.Function):
    """KL(softmax(z_p) || softmax(z_q)) per row, chunked, in three reused chunk buffers."""

    @staticmethod
    def forward(ctx, x_p, weight_p, x_q, weight_q, softcaps, temperature: float, rows: int):
        buffers = _kl_buffers(x_q, weight_q, rows)
        kl = torch.empty(x_q.shape[0], dtype=buffers[0].dtype, device=x_q.device)
        for sl in _rows(x_q.shape[0], rows):
            log_p, log_q, p = _kl_chunk(x_p[sl], weight_p, x_q[sl], weight_q, softcaps, temperature, buffers)
            kl[sl] = log_p.sub_(log_q).mul_(p).sum(-1)
        ctx.save_for_backward(x_p, weight_p, x_q, weight_q, kl)
        ctx.softcaps, ctx.temperature, ctx.rows = softcaps, temperature, rows
        return kl

    @staticmethod
    def backward(ctx, grad):
        x_p, weight_p, x_q, weight_q, kl = ctx.saved_tensors
        grad = grad.to(kl.dtype)
        if torch.is_grad_enabled():
            surrogate = lambda sl: ((_plain_kl(x_p[sl], weight_p, x_q[sl], weight_q, ctx.softcaps, ctx.temperature),), (grad[sl],))  # noqa: E731
            return (*_tracked_grads(ctx, (x_p, weight_p, x_q, weight_q), x_q.shape[0], surrogate), None, None, None)
        inputs, need = (x_p, weight_p, x_q, weight_q), ctx.needs_input_grad[:4]
        grads = [torch.zeros(t.shape, dtype=kl.dtype, device=t.device) if n else None for t, n in zip(inputs, need)]
        buffers = _kl_buffers(x_q, weight_q, ctx.rows)
        for sl in _rows(x_q.shape[0], ctx.rows):
            chains = [None if c is None else 1.0 - (_tempered(chunk_logits(x[sl], w, None), c, 1.0) / c) ** 2 for x, w, c in ((x_p, weight_p, ctx.softcaps[0]), (x_q, weight_q, ctx.softcaps[1]))]
            log_p, log_q, p = _kl_chunk(x_p[sl], weight_p, x_q[sl], weight_q, ctx.softcaps, ctx.temperature, buffers)
            g = grad[sl, None]
            d_p = log_p.sub_(log_q).sub_(kl[sl, None]).mul_(p).mul_(g)  # d KL / d z_p = p (log p - log q - KL)
            d_q = log_q.exp_().sub_(p).mul_(g)  # d KL / d z_q = q - p
            for i, (dz, x, w) in enumerate(((d_p, x_p, weight_p), (d_q, x_q, weight_q))):
                if not (need[2 * i] or need[2 * i + 1]):
                    continue
                dz = dz.div_(ctx.temperature) if ctx.temperature != 1.0 else dz
                dz = dz.mul_(chains[i]) if chains[i] is not None else dz
                if need[2 * i]:
                    grads[2 * i][sl] = dz.to(w.dtype) @ w
                if need[2 * i + 1] and x.dtype == dz.dtype:
                    grads[2 * i + 1].addmm_(dz.T, x[sl])
                elif need[2 * i + 1]:  # half precision: the chunk's product in half, the sum in float32
                    grads[2 * i + 1].add_(dz.to(x.dtype).T @ x[sl])
        return (*(g.to(t.dtype) if g is not None else None for g, t in zip(grads, inputs)), None, None, None)


def _kl_buffers(x_q: Tensor, weight_q: Tensor, rows: int):
    return tuple(torch.empty(min(rows, x_q.shape[0]), weight_q.shape[0], dtype=softmax_dtype(weight_q), device=x_q.device) for _ in range(3))


def _kl_chunk(x_p, weight_p, x_q, weight_q, softcaps, temperature, buffers):
    """``(log p, log q, p)`` of one chunk, in the three buffers."""
    out = []
    for x, w, c, buffer in ((x_p, weight_p, softcaps[0], buffers[0]), (x_q, weight_q, softcaps[1], buffers[1])):
        z = _tempered(chunk_logits(x, w, buffer), c, temperature)
        top = z.amax(-1, keepdim=True)
        norm = torch.sub(z, top, out=buffers[2][: z.shape[0]]).exp_().sum(-1, keepdim=True)
        out.append(z.sub_(top.add_(norm.log_())))
    return out[0], out[1], torch.exp(out[0], out=buffers[2][: out[0].shape[0]])


def linear_kl_div(x_p: Tensor, weight_p: Tensor, x_q: Tensor, weight_q: Tensor, *, softcaps=(None, None), temperature: float = 1.0) -> Tensor:
    """Per-row KL(p || q), ``p = softmax(z(x_p, weight_p))``, ``q = softmax(z(x_q, weight_q))``,
    ``z = softcap(x @ weight.T) / temperature``, chunk by chunk.

    Args:
        x_p, weight_p: the true side, ``(n, d)`` and ``(v, d)``.
        x_q, weight_q: the predicted side, ``(n, d')`` and ``(v, d')``.
        softcaps: each side's ``c`` of ``c * tanh(logits / c)``, or ``None``.
        temperature: divides the (capped) logits of both.

    Returns:
        ``(n,)``, differentiable wrt all four inputs (twice).
    """
    x_p, weight_p, x_q, weight_q = _in_compute_dtype(x_p, weight_p, x_q, weight_q)
    x_p, x_q = x_p.to(weight_p.dtype), x_q.to(weight_q.dtype)
    with torch.autocast(x_q.device.type, enabled=False):
        if functorch_active():
            return _plain_kl(x_p, weight_p, x_q, weight_q, softcaps, temperature)
        if x_p.dtype == x_q.dtype and kernels_apply(x_p, weight_p, x_q, weight_q):
            from .kernel_ops import kernel_kl_div  # imports Triton

            return kernel_kl_div(x_p, weight_p, x_q, weight_q, softcaps, temperature)
        rows = chunk_rows(x_q.shape[0], 2 * weight_q.shape[0], x_q.device)
        return _LinearKL.apply(x_p, weight_p, x_q, weight_q, tuple(softcaps), float(temperature), rows)
