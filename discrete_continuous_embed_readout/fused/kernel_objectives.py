"""The fused objectives on the Triton kernels: what ``policy.linear_policy_loss`` and
``distill.linear_distill_loss`` run where ``backend.kernels_apply`` says so (tensors on
a CUDA device, or any device with ``backend.KERNELS = 'triton'``).

Policy loss: the objective's gradient wrt a row's logits is
``g_logp (onehot(action) - p) + g_H dH/dz``, with ``(g_logp, g_H)`` per row given by the
objective's closed forms (``policy_terms.token_grads`` / ``sequence_grads``) from the
row's log-prob and entropy. So forward is one statistics pass
(``triton_launch.softmax_stats``: per row the online logsumexp, the action's logit and
the entropy, the logits never in global memory), then the loss, the metrics and the
per-row coefficients from those ``(tokens,)`` vectors in PyTorch (``policy_terms``'
functions); backward is one gradient pass (``softmax_stats_backward``: each logits
tile recomputed on-chip, ``grad_x`` and ``grad_W`` accumulated in float32) with those
coefficients times the upstream gradient.

Distillation loss: the divergence on both sides' logits tiles on-chip, the student's
gradient only (the teacher is detached): ``'forward_kl'`` is ``KL(P || Q)`` on the
two-table KL kernels with the teacher as the true side, ``'reverse_kl'`` the same
kernels with the student as the true side, ``'jsd'`` its own op (``_KernelJSD``: a
statistics pass for both log-normalisers, a pass for the two KL-to-mixture sums, and
in backward the student's gradient pass, ``triton_distill``). The hard-target term is
the student's log-prob of the target at temperature 1 on the statistics kernels
(``kernel_ops.kernel_softmax_stats``; one more pass each way over the student's table).

Both follow ``kernel_ops``' contract: under ``torch.no_grad`` only the forward passes
run; under ``create_graph=True`` backward takes the gradient of the tracked
formulation (exact second derivatives); half-precision inputs, float32 accumulation
and results; empty inputs give a zero loss and zero gradients.
"""

# n - rows (tokens), v - vocabulary, d - model dim

from __future__ import annotations

import torch
from torch import Tensor

from . import triton_launch as launch
from .distill import DistillOptions, divergence
from .kernel_ops import _cast, kernel_kl_div, kernel_softmax_stats, stats_coefficients
from .linear_softmax import _logits, _tracked_grads, chunk_rows
from .policy import tracked_grads
from .policy_terms import PolicyOptions, PolicyRows, sequence_grads, token_grads, token_losses

__all__ = ['kernel_distill_loss', 'kernel_policy_loss']


def _policy_terms(x: Tensor, weight: Tensor, rows: PolicyRows, options: PolicyOptions, need_grad: bool):
    """``(loss, logp, entropy, lse, coefficients or None)``: one statistics pass, then the objective in PyTorch."""
    logp, lse, _, entropy = launch.softmax_stats(x, weight, rows.ids, options.softcap, options.temperature)
    loss = (rows.weights * token_losses(logp, entropy, rows, options)).sum()
    if not need_grad:
        return loss, logp, entropy, lse, None
    g_logp, g_entropy = (sequence_grads if options.loss_type == 'gspo' else token_grads)(logp, rows, options)
    return loss, logp, entropy, lse, stats_coefficients((g_logp, None, None, g_entropy), lse, entropy, weight.shape[0])


class _KernelPolicyLoss(torch.autograd.Function):
    """``(loss, logp, entropy)``: one statistics pass forward, one gradient pass backward."""

    @staticmethod
    def forward(ctx, x, weight, ids, advantages, old, ref, weights, keep, seq, seq_len, options: PolicyOptions):
        rows = PolicyRows(ids, advantages, old, ref, weights, keep, seq, seq_len)
        loss, logp, entropy, lse, coefficients = _policy_terms(x, weight, rows, options, True)
        ctx.save_for_backward(x, weight, lse, coefficients, *rows)
        ctx.options = options
        ctx.mark_non_differentiable(logp, entropy)
        return loss, logp, entropy

    @staticmethod
    def backward(ctx, grad_loss, _logp, _entropy):
        x, weight, lse, coefficients, *rows = ctx.saved_tensors
        need_x, need_w = ctx.needs_input_grad[:2]
        if torch.is_grad_enabled():  # create_graph=True: the gradients as tracked functions of x and W
            grads = tracked_grads(x, weight, PolicyRows(*rows), ctx.options, (need_x, need_w))
            return (*(None if g is None else g * grad_loss.to(g.dtype) for g in grads), *([None] * 9))
        options = ctx.options
        gx, gw = launch.softmax_stats_backward(x, weight, rows[0], lse, coefficients * grad_loss.to(coefficients.dtype), options.softcap,
                                               options.temperature, need_x, need_w)  # fmt: skip
        return _cast(gx, x), _cast(gw, weight), *([None] * 9)


def kernel_policy_loss(x: Tensor, weight: Tensor, rows: PolicyRows, options: PolicyOptions) -> tuple[Tensor, Tensor, Tensor]:
    """``(loss, logp, entropy)`` of ``policy.linear_policy_loss`` on the kernels (``x`` and
    ``weight`` in one dtype, ``rows`` in float32); the loss differentiable wrt both."""
    if torch.is_grad_enabled() and (x.requires_grad or weight.requires_grad):
        return _KernelPolicyLoss.apply(x, weight, *rows, options)
    return _policy_terms(x, weight, rows, options, False)[:3]


def _plain_jsd(x_p, weight_p, x_q, weight_q, softcaps, temperature: float, beta: float) -> Tensor:
    """The tracked JSD per row (double backward), with ``distill.divergence``'s definition."""
    log_p = _logits(x_p, weight_p, softcaps[0], temperature).log_softmax(-1)
    log_q = _logits(x_q, weight_q, softcaps[1], temperature).log_softmax(-1)
    return divergence(log_q, log_p, DistillOptions('jsd', beta))


class _KernelJSD(torch.autograd.Function):
    """``beta KL(P || M) + (1 - beta) KL(Q || M)`` per row, ``P`` of ``(x_p, weight_p)``
    (no gradient: the caller detaches it), ``Q`` of ``(x_q, weight_q)``."""

    @staticmethod
    def forward(ctx, x_p, weight_p, x_q, weight_q, softcaps, temperature: float, beta: float):
        _, lse_p, lse_q, _ = launch.kl_stats(x_p, weight_p, x_q, weight_q, None, softcaps, temperature)
        lse = torch.stack((lse_p, lse_q))
        kl_pm, kl_qm = launch.jsd_stats(x_p, weight_p, x_q, weight_q, lse, softcaps, temperature, beta)
        ctx.save_for_backward(x_p, weight_p, x_q, weight_q, lse, kl_qm)
        ctx.softcaps, ctx.temperature, ctx.beta = softcaps, temperature, beta
        ctx.rows = chunk_rows(x_q.shape[0], 2 * weight_q.shape[0], x_q.device)
        return beta * kl_pm + (1.0 - beta) * kl_qm

    @staticmethod
    def backward(ctx, grad):
        x_p, weight_p, x_q, weight_q, lse, kl_qm = ctx.saved_tensors
        if torch.is_grad_enabled():
            g = grad.to(kl_qm.dtype)
            surrogate = lambda sl: ((_plain_jsd(x_p[sl], weight_p, x_q[sl], weight_q, ctx.softcaps, ctx.temperature, ctx.beta),), (g[sl],))  # noqa: E731
            return (*_tracked_grads(ctx, (x_p, weight_p, x_q, weight_q), x_q.shape[0], surrogate), None, None, None)
        coefficients = torch.stack(((1.0 - ctx.beta) * grad.to(kl_qm.dtype), kl_qm))
        gx, gw = launch.jsd_backward(x_p, weight_p, x_q, weight_q, lse, coefficients, ctx.softcaps, ctx.temperature, ctx.beta, *ctx.needs_input_grad[2:4])
        return None, None, _cast(gx, x_q), _cast(gw, weight_q), None, None, None


def kernel_distill_loss(x: Tensor, weight: Tensor, x_t: Tensor, weight_t: Tensor, ids: Tensor | None, weights: Tensor, options: DistillOptions) -> Tensor:
    """``distill.linear_distill_loss``'s sum of ``weights`` times each row's loss on the
    kernels (every input in one dtype); differentiable wrt ``x`` and ``weight`` only."""
    (softcap, teacher_softcap), temperature = options.softcaps, options.temperature
    x_t, weight_t = x_t.detach(), weight_t.detach()
    if options.divergence == 'forward_kl':
        per_row = kernel_kl_div(x_t, weight_t, x, weight, (teacher_softcap, softcap), temperature)
    elif options.divergence == 'reverse_kl':
        per_row = kernel_kl_div(x, weight, x_t, weight_t, (softcap, teacher_softcap), temperature)
    else:
        per_row = _KernelJSD.apply(x_t, weight_t, x, weight, (teacher_softcap, softcap), float(temperature), float(options.beta))
    if options.hard_weight:  # the cross entropy on the untempered logits: -log p[target] at temperature 1
        log_p = kernel_softmax_stats(x, weight, ids, softcap, 1.0)[0]
        per_row = (1.0 - options.hard_weight) * per_row - options.hard_weight * log_p
    return (weights * per_row).sum()
