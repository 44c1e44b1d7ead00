"""The clipped-ratio policy-gradient loss of a language model, fused: computed chunk
by chunk from the hidden states and the table, with its gradients formed in the same
pass (the per-token terms are in ``policy_terms``).

For each chunk of tokens: the logits ``x @ W.T`` into a reused buffer, their softmax,
each token's log-prob and entropy, the objective's gradient with respect to them
(``token_grads``), and from it the input and table gradients. Backward is a scale:
the three matmuls of the floor, once. GSPO's sequence ratio needs every token of a
sequence before any gradient: its chunks hold whole sequences, or, when one sequence
alone exceeds a chunk, it first computes the log-probs in a pass of its own (four
matmuls). Under ``torch.no_grad`` only the forward pass runs; under ``torch.func``
transforms and for double backward, the tracked formulation (the per-token log-probs
and entropies of ``linear_softmax_stats``, then ``token_losses``). Where
``backend.kernels_apply`` (CUDA tensors and Triton, by default) the loss runs on the
Triton kernels instead (``kernel_objectives``: a statistics pass, the objective's
per-row coefficients, a gradient pass).
"""

# n - rows (tokens), b - sequences, t - tokens per sequence, v - vocabulary, d - model dim

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor

from .._checks import functorch_active
from .backend import kernels_apply
from .chunks import LogitGrad, accumulate_grads, chunk_buffers, picked_logits, row_slices, softcap_chain, table_grad_buffer, tempered
from .linear_softmax import chunk_rows, linear_softmax_stats, softmax_dtype, softmax_lse
from .loss import _kept_index
from .policy_terms import PolicyMetrics, PolicyOptions, PolicyRows, loss_weights, policy_metrics, sequence_grads, token_grads, token_losses

__all__ = ['PolicyLoss', 'linear_policy_loss', 'sequence_chunks']


class PolicyLoss(NamedTuple):
    """``(loss, metrics)``: the scalar loss to minimise and the ``PolicyMetrics`` to log."""

    loss: Tensor
    metrics: PolicyMetrics


def _chunk_terms(z: Tensor, probs_buffer: Tensor, ids: Tensor):
    """``(probs, lse, log p[id])`` of a chunk's tempered logits ``z`` (``probs_buffer``
    may be ``z``'s own: the softmax in place)."""
    picked = picked_logits(z, ids)
    probs, lse = softmax_lse(z, probs_buffer)
    return probs, lse, picked - lse


def _entropy_and_grad(z: Tensor, probs: Tensor, ids: Tensor, lse: Tensor, g_logp: Tensor, g_entropy: Tensor | None, chain: Tensor | None):
    """``(entropy, dz)`` with ``dz`` formed element-wise (an entropy term, or the
    soft-cap's chain rule), in the buffers of ``z`` and ``probs``:
    ``dz = p (a - g_H z) + g_logp onehot``, ``a = -g_logp - g_H (H - lse)``."""
    weighted = z.mul_(probs)  # p z
    entropy = lse - weighted.sum(-1)
    if g_entropy is None:
        dz = probs.mul_(-g_logp[:, None])
    else:
        dz = probs.mul_((-g_logp - g_entropy * (entropy - lse))[:, None]).sub_(weighted.mul_(g_entropy[:, None]))
    dz.scatter_add_(1, ids[:, None], g_logp[:, None])
    return entropy, (dz.mul_(chain) if chain is not None else dz)


def _fused_pass(x: Tensor, weight: Tensor, rows: PolicyRows, options: PolicyOptions, rows_per_chunk: int, bounds, need_x: bool, need_w: bool):
    """``(grad_x, grad_w, logp, entropy)``: one pass over the chunks (``bounds``:
    ``(start, stop)`` of each; ``None``: ``rows_per_chunk`` rows each), each row's
    gradient coefficients from ``token_grads``. GSPO's come from ``sequence_grads``:
    on each chunk's rows when the chunks hold whole sequences, else computed beforehand
    from a pass of their own."""
    dtype, temperature, softcap = softmax_dtype(weight), options.temperature, options.softcap
    folded = softcap is None and temperature != 1.0  # the temperature divides the inputs instead of the logits
    xs = x / temperature if folded else x
    slices = [slice(*b) for b in bounds] if bounds is not None else row_slices(x.shape[0], rows_per_chunk)
    precomputed = None
    if options.loss_type == 'gspo' and bounds is None:
        precomputed = sequence_grads(_stats_pass(xs, weight, rows.ids, options, rows_per_chunk, entropy=False)[0], rows, options)
    grad_x = torch.empty_like(x) if need_x else None
    grad_w = table_grad_buffer(weight, need_w, len(slices))
    logp, entropy = (torch.empty(x.shape[0], dtype=dtype, device=x.device) for _ in range(2))
    # dz = -g p + g onehot (no entropy term, no soft-cap): no pass forms it, and the softmax overwrites the logits
    in_place = not options.entropy_coef and softcap is None and need_x and dtype == weight.dtype
    buffers = chunk_buffers(1 if in_place else 2, rows_per_chunk, x, weight)
    for i, sl in enumerate(slices):
        ids = rows.ids[sl]
        z = tempered(xs[sl], weight, buffers[0], softcap, temperature)
        chain = softcap_chain(z, softcap, temperature)
        probs, lse, logp[sl] = _chunk_terms(z, buffers[-1], ids)
        if precomputed is not None:
            g_logp, g_entropy = (g[sl] if g is not None else None for g in precomputed)
        else:
            g_logp, g_entropy = (sequence_grads if options.loss_type == 'gspo' else token_grads)(logp[sl], _slice(rows, sl), options)
        dense_weight = None
        if in_place:
            dense_weight = probs @ weight  # the input gradient's product, and the entropy's: sum p z = x . (p @ W)
            entropy[sl], grad = lse - (xs[sl] * dense_weight).sum(-1), LogitGrad(probs, -g_logp, g_logp)
        else:
            entropy[sl], dense = _entropy_and_grad(z, probs, ids, lse, g_logp, g_entropy, chain)
            grad = LogitGrad(dense)
        accumulate_grads(grad, xs[sl], weight, ids, grad_x[sl] if need_x else None, grad_w, dense_weight, first=i == 0)
    if folded and need_x:
        grad_x.div_(temperature)
    return grad_x, grad_w, logp, entropy


def sequence_chunks(counts, rows_per_chunk: int):
    """``(start, stop)`` of chunks of whole sequences, at most ``rows_per_chunk`` rows
    each (``counts``: the rows of each sequence, in order), so that GSPO's sequence
    ratios need no pass of their own; ``None`` when one sequence alone exceeds a chunk."""
    if max(counts, default=0) > rows_per_chunk:
        return None
    bounds, start, size = [], 0, 0
    for count in counts:
        if size + count > rows_per_chunk:
            bounds.append((start, start + size))
            start, size = start + size, 0
        size += count
    return tuple(bounds + ([(start, start + size)] if size else []))


def _stats_pass(xs: Tensor, weight: Tensor, ids: Tensor, options: PolicyOptions, rows_per_chunk: int, entropy: bool = True):
    """``(log p[id], entropy or None)`` per row, forward only (``xs``: inputs with the
    temperature folded in, as ``_fused_pass``); without the entropy, in one buffer."""
    dtype, n = softmax_dtype(weight), xs.shape[0]
    logp, entropies = torch.empty(n, dtype=dtype, device=xs.device), torch.empty(n, dtype=dtype, device=xs.device) if entropy else None
    buffers = chunk_buffers(2 if entropy else 1, rows_per_chunk, xs, weight)
    for sl in row_slices(n, rows_per_chunk):
        z = tempered(xs[sl], weight, buffers[0], options.softcap, options.temperature)
        probs, lse, logp[sl] = _chunk_terms(z, buffers[-1], ids[sl])
        if entropy:
            entropies[sl] = lse - z.mul_(probs).sum(-1)
    return logp, entropies


def _slice(rows: PolicyRows, sl: slice) -> PolicyRows:
    """The rows of a chunk (``seq_len`` stays whole: sequence ids are global)."""
    return PolicyRows(*(t[sl] if t is not None else None for t in rows[:7]), rows.seq_len)


def _tracked(x: Tensor, weight: Tensor, rows: PolicyRows, options: PolicyOptions):
    """``(loss, logp, entropy)`` with tracked ops: the per-token statistics (twice
    differentiable, chunked; the plain formulation under ``torch.func``), then the objective."""
    logp, _, _, entropy = linear_softmax_stats(x, weight, rows.ids, softcap=options.softcap, temperature=options.temperature)
    return (rows.weights * token_losses(logp, entropy, rows, options)).sum(), logp, entropy


def tracked_grads(x: Tensor, weight: Tensor, rows: PolicyRows, options: PolicyOptions, needs) -> tuple:
    """``(grad_x, grad_W)`` of the tracked loss with ``create_graph`` (the backward of a
    double-backward pass, on the chunked path and the kernels alike); ``None`` where
    ``needs`` (two bools) says no gradient is wanted."""
    wanted = [t for t, need in zip((x, weight), needs) if need]
    found = iter(torch.autograd.grad(_tracked(x, weight, rows, options)[0], wanted, create_graph=True))
    return tuple(next(found) if need else None for need in needs)


class _FusedPolicyLoss(torch.autograd.Function):
    """``(loss, logp, entropy)``; the gradients of ``x`` and ``W`` are formed in
    forward and saved, so backward is one scale. With ``create_graph=True`` backward
    takes the gradient of the tracked formulation, so second derivatives are exact."""

    @staticmethod
    def forward(ctx, x, weight, ids, advantages, old, ref, weights, keep, seq, seq_len, options: PolicyOptions, rows_per_chunk: int, bounds):
        rows = PolicyRows(ids, advantages, old, ref, weights, keep, seq, seq_len)
        grad_x, grad_w, logp, entropy = _fused_pass(x, weight, rows, options, rows_per_chunk, bounds, *ctx.needs_input_grad[:2])
        loss = (rows.weights * token_losses(logp, entropy, rows, options)).sum()
        ctx.save_for_backward(grad_x, grad_w, x, weight, *rows)
        ctx.options = options
        ctx.mark_non_differentiable(logp, entropy)
        return loss, logp, entropy

    @staticmethod
    def backward(ctx, grad_loss, _logp, _entropy):
        grad_x, grad_w, x, weight, *rows = ctx.saved_tensors
        if torch.is_grad_enabled():  # create_graph=True: the gradients as tracked functions of x and W
            grad_x, grad_w = tracked_grads(x, weight, PolicyRows(*rows), ctx.options, ctx.needs_input_grad[:2])
        grad_x = grad_x * grad_loss.to(grad_x.dtype) if grad_x is not None else None
        grad_w = (grad_w * grad_loss).to(weight.dtype) if grad_w is not None else None
        return grad_x, grad_w, *([None] * 11)


def _rows(ids: Tensor, keep: Tensor, advantages: Tensor, old, ref, options: PolicyOptions, max_length, num_tokens, dtype) -> PolicyRows:
    """``(b, t)`` inputs to flat rows in the softmax ``dtype``, each row's normaliser weight included; values on dropped rows zeroed."""
    weights = loss_weights(keep, options.loss_type, max_length, num_tokens).reshape(-1).to(dtype)
    flat_keep = keep.reshape(-1)

    def flat(t):
        return None if t is None else torch.where(flat_keep, t.reshape(-1).to(dtype), 0.0)

    seq = seq_len = None
    if options.loss_type == 'gspo':
        seq = torch.arange(keep.shape[0], device=keep.device).repeat_interleave(keep.shape[1])
        seq_len = keep.sum(-1).clamp(min=1).to(dtype)
    ref = None if ref is None else ref.reshape(-1).to(dtype)
    return PolicyRows(ids.reshape(-1).masked_fill(~flat_keep, 0), flat(advantages), flat(old), ref, weights, flat_keep, seq, seq_len)


def _kept(x: Tensor, rows: PolicyRows, keep: Tensor, options: PolicyOptions, rows_per_chunk: int):
    """``(x, rows, bounds)``: only the rows that count (none dropped while compiling, under
    ``torch.func``, or when all count); GSPO's chunks of whole sequences (``sequence_chunks``)."""
    index = _kept_index(rows.keep)
    counts = [keep.shape[1]] * keep.shape[0]
    if index is not None:
        take = lambda t: None if t is None else t.index_select(0, index)  # noqa: E731
        x, rows = x.index_select(0, index), PolicyRows(*(take(t) for t in rows[:7]), rows.seq_len)
        counts = keep.sum(-1).tolist() if options.loss_type == 'gspo' else counts  # the index already synchronised
    return x, rows, sequence_chunks(counts, rows_per_chunk) if options.loss_type == 'gspo' else None


def _compute_dtype(x: Tensor, weight: Tensor) -> tuple[Tensor, Tensor]:
    """Inputs and table in the matmul dtype: autocast's, else the table's."""
    if torch.is_autocast_enabled(x.device.type):
        dtype = torch.get_autocast_dtype(x.device.type)
        return x.to(dtype), weight.to(dtype)
    return x.to(weight.dtype), weight


def linear_policy_loss(x: Tensor, weight: Tensor, ids: Tensor, keep: Tensor, advantages: Tensor, old: Tensor | None, ref: Tensor | None,
                       options: PolicyOptions, *, max_length: float | None = None, num_tokens=None) -> PolicyLoss:  # fmt: skip
    """The policy loss of ``softmax(softcap(x @ weight.T) / temperature)`` and its
    metrics, chunk by chunk, never holding the ``(tokens, vocab)`` logits.

    Args:
        x: ``(b, t, d)`` hidden states, ``b`` sequences of ``t`` tokens.
        weight: ``(v, d)`` rows of the action vocabulary.
        ids: ``(b, t)`` sampled actions (any valid id where ``keep`` is False).
        keep: ``(b, t)`` bool, the tokens that count.
        advantages: ``(b, t)``.
        old: ``(b, t)`` log-probs under the sampling policy, or ``None`` (on-policy).
        ref: ``(b, t)`` log-probs under the reference policy, or ``None``.
        options: loss type, clipping, coefficients, temperature, soft-cap.
        max_length: Dr. GRPO's constant (default ``t``).
        num_tokens: DAPO's / CISPO's token count (default: the kept tokens).

    Returns:
        a ``PolicyLoss``.
    """
    x, weight = _compute_dtype(x.reshape(-1, x.shape[-1]), weight)
    rows = _rows(ids, keep, advantages, old, ref, options, max_length if max_length is not None else keep.shape[-1], num_tokens, softmax_dtype(weight))
    rows_per_chunk = chunk_rows(x.shape[0], weight.shape[0], x.device)
    x, rows, bounds = _kept(x, rows, keep, options, rows_per_chunk)
    with torch.autocast(x.device.type, enabled=False):
        loss, logp, entropy = _routed(x, weight, rows, options, rows_per_chunk, bounds)
    return PolicyLoss(loss, policy_metrics(logp, entropy, rows, options))


def _routed(x: Tensor, weight: Tensor, rows: PolicyRows, options: PolicyOptions, rows_per_chunk: int, bounds):
    """``(loss, logp, entropy)`` on the path that applies: the tracked formulation under
    ``torch.func``, the Triton kernels, the forward pass alone, or the fused chunk loop."""
    if functorch_active():
        return _tracked(x, weight, rows, options)
    if kernels_apply(x, weight):
        from .kernel_objectives import kernel_policy_loss  # imports Triton

        return kernel_policy_loss(x, weight, rows, options)
    if not (torch.is_grad_enabled() and (x.requires_grad or weight.requires_grad)):
        logp, entropy = _stats_pass(_folded(x, options), weight, rows.ids, options, rows_per_chunk)
        return (rows.weights * token_losses(logp, entropy, rows, options)).sum(), logp, entropy
    return _FusedPolicyLoss.apply(x, weight, *rows, options, rows_per_chunk, bounds)


def _folded(x: Tensor, options: PolicyOptions) -> Tensor:
    return x / options.temperature if options.softcap is None and options.temperature != 1.0 else x
