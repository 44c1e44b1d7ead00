"""Autograd ops over the Triton kernels: what ``linear_softmax_stats`` and
``linear_kl_div`` run where ``backend.kernels_apply`` says so (tensors on a CUDA
device, or any device with ``backend.KERNELS = 'triton'``).

The forward runs one kernel pass (per-row statistics, the logits never stored) and
saves the per-row log-normalisers; backward turns the upstream per-row gradients into
the kernels' per-row coefficients and runs one more pass (the logits recomputed tile
by tile, both gradient matmuls accumulated in float32). Under ``create_graph=True``
backward runs the tracked chunked formulation of ``linear_softmax`` instead, so second
derivatives stay exact. An objective built on ``linear_softmax_stats`` (the loss, the
per-token paths, a policy loss) gets the kernels with no code of its own; one with its
own autograd function calls ``stats_coefficients`` and
``triton_launch.softmax_stats_backward`` the same way.
"""

# n - rows (tokens), v - vocabulary, d - model dim

from __future__ import annotations

import torch
from torch import Tensor

from . import triton_launch as launch
from .linear_kl import _plain_kl
from .linear_softmax import _plain_stats, _tracked_grads, chunk_rows

__all__ = ['kernel_kl_div', 'kernel_softmax_stats', 'kl_coefficients', 'stats_coefficients']


def stats_coefficients(grads, lse: Tensor, entropy: Tensor, vocab: int) -> Tensor:
    """The ``(4, n)`` coefficients ``(a, b, c, e)`` of ``dz = p (a + b z) + c + e onehot``,
    the gradient wrt the logits ``z`` of ``sum(g_logp log p[t] + g_lse lse + g_mean mean(z) + g_ent H)``.

    Args:
        grads: the upstream ``(n,)`` gradients of ``(log p[target], logsumexp, mean logit, entropy)``, ``None`` for absent ones.
        lse, entropy: the forward's ``(n,)`` log-normalisers and entropies.
        vocab: the number of logits per row.

    Returns:
        ``(4, n)`` float32.
    """
    zero = torch.zeros_like(lse)
    g_logp, g_lse, g_mean, g_entropy = (zero if g is None else g.to(lse.dtype) for g in grads)
    # d log p[t] = onehot - p; d lse = p; d mean = 1 / v; d H = -p (z - lse + H)
    return torch.stack((g_lse - g_logp + g_entropy * (lse - entropy), -g_entropy, g_mean / vocab, g_logp))


def kl_coefficients(grad: Tensor, kl: Tensor, lse_p: Tensor, lse_q: Tensor) -> Tensor:
    """The ``(5, n)`` coefficients ``(a_p, b_p, a_q, b_q, e_q)`` of the gradient of
    ``sum(grad * KL(p || q))``: ``dz_p = p (log p - log q - KL)``, ``dz_q = q - p``, each times ``grad``.

    Args:
        grad: the upstream ``(n,)`` gradient.
        kl, lse_p, lse_q: the forward's ``(n,)`` KL and log-normalisers.

    Returns:
        ``(5, n)`` float32.
    """
    g = grad.to(kl.dtype)
    return torch.stack((g * (lse_q - lse_p - kl), g, g, -g, torch.zeros_like(g)))


def _cast(grad: Tensor | None, like: Tensor) -> Tensor | None:
    return None if grad is None else grad.to(like.dtype)


class _KernelStats(torch.autograd.Function):
    """``(log p[target], logsumexp, mean logit, entropy)`` per row, one kernel pass each way."""

    @staticmethod
    def forward(ctx, x: Tensor, weight: Tensor, targets: Tensor, softcap, temperature: float):
        logp, lse, mean, entropy = launch.softmax_stats(x, weight, targets, softcap, temperature)
        ctx.save_for_backward(x, weight, targets, lse, entropy)
        ctx.softcap, ctx.temperature, ctx.rows = softcap, temperature, chunk_rows(x.shape[0], weight.shape[0], x.device)
        return logp, lse, mean, entropy

    @staticmethod
    def backward(ctx, *grads):
        x, weight, targets, lse, entropy = ctx.saved_tensors
        if torch.is_grad_enabled():  # create_graph=True: the tracked chunked formulation
            full = [torch.zeros_like(lse) if g is None else g.to(lse.dtype) for g in grads]
            surrogate = lambda sl: (_plain_stats(x[sl], weight, targets[sl], ctx.softcap, ctx.temperature), [g[sl] for g in full])  # noqa: E731
            return (*_tracked_grads(ctx, (x, weight), x.shape[0], surrogate), None, None, None)
        coefficients = stats_coefficients(grads, lse, entropy, weight.shape[0])
        gx, gw = launch.softmax_stats_backward(x, weight, targets, lse, coefficients, ctx.softcap, ctx.temperature, *ctx.needs_input_grad[:2])
        return _cast(gx, x), _cast(gw, weight), None, None, None


class _KernelKL(torch.autograd.Function):
    """KL(softmax(z_p) || softmax(z_q)) per row, one kernel pass each way."""

    @staticmethod
    def forward(ctx, x_p, weight_p, x_q, weight_q, softcaps, temperature: float):
        kl, lse_p, lse_q, _ = launch.kl_stats(x_p, weight_p, x_q, weight_q, None, softcaps, temperature)
        ctx.save_for_backward(x_p, weight_p, x_q, weight_q, kl, lse_p, lse_q)
        ctx.softcaps, ctx.temperature, ctx.rows = softcaps, temperature, chunk_rows(x_q.shape[0], 2 * weight_q.shape[0], x_q.device)
        return kl

    @staticmethod
    def backward(ctx, grad):
        x_p, weight_p, x_q, weight_q, kl, lse_p, lse_q = ctx.saved_tensors
        inputs = (x_p, weight_p, x_q, weight_q)
        if torch.is_grad_enabled():
            g = grad.to(kl.dtype)
            surrogate = lambda sl: ((_plain_kl(x_p[sl], weight_p, x_q[sl], weight_q, ctx.softcaps, ctx.temperature),), (g[sl],))  # noqa: E731
            return (*_tracked_grads(ctx, inputs, x_q.shape[0], surrogate), None, None)
        coefficients = kl_coefficients(grad, kl, lse_p, lse_q)
        grads = launch.kl_backward(*inputs, None, torch.stack((lse_p, lse_q)), coefficients, ctx.softcaps, ctx.temperature, ctx.needs_input_grad[:4])
        return (*(_cast(g, t) for g, t in zip(grads, inputs)), None, None)


def kernel_softmax_stats(x: Tensor, weight: Tensor, targets: Tensor, softcap: float | None, temperature: float):
    """``linear_softmax_stats`` on the Triton kernels: four ``(n,)`` float32 tensors.

    Args:
        x: ``(n, d)``; weight: ``(v, d)`` of ``x``'s dtype; targets: ``(n,)`` ids in ``[0, v)``.
        softcap: ``c`` of ``c * tanh(logits / c)``, or ``None``.
        temperature: divides the (capped) logits.

    Returns:
        ``(log p[target], logsumexp, mean logit, entropy)``.
    """
    return _KernelStats.apply(x, weight, targets, softcap, float(temperature))


def kernel_kl_div(x_p: Tensor, weight_p: Tensor, x_q: Tensor, weight_q: Tensor, softcaps, temperature: float) -> Tensor:
    """``linear_kl_div`` on the Triton kernels: ``(n,)`` float32.

    Args:
        x_p, weight_p: the true side, ``(n, d)`` and ``(v, d)``.
        x_q, weight_q: the predicted side, ``(n, d')`` and ``(v, d')``.
        softcaps: each side's soft-cap or ``None``.
        temperature: divides the (capped) logits of both.

    Returns:
        KL(p || q) per row.
    """
    return _KernelKL.apply(x_p, weight_p, x_q, weight_q, tuple(softcaps), float(temperature))
