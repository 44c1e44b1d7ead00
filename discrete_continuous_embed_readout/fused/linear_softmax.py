"""Per-token softmax statistics of ``x @ W.T`` without the ``(tokens, vocab)`` logits.

``linear_softmax_stats`` returns, for each row of ``x``, the log-prob of its target,
the log-normaliser, the mean logit and the entropy of ``softmax(z)``, where
``z = softcap(x @ W.T) / temperature``, computed chunk by chunk; ``linear_kl_div``
(``linear_kl``) returns KL(p || q) per row for the logits of two tables. Where ``backend.kernels_apply``
(CUDA tensors and Triton, by default) both run on the Triton kernels of ``kernel_ops``
instead of the chunk loop below. Their backward recomputes
each chunk's logits and forms the gradient of any per-token function of the
outputs (the per-token upstream gradients of PPO-style objectives). Both are
differentiable twice (under ``create_graph`` backward runs on tracked ops) and take
the plain formulation under ``torch.func`` transforms.
"""

# n - rows (tokens), v - vocabulary, d - model dim

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from .._checks import functorch_active
from .backend import kernels_apply

__all__ = ['apply_softcap', 'cache_blocks', 'chunk_logits', 'chunk_rows', 'linear_softmax_stats', 'softmax_dtype', 'softmax_lse']

MIN_CHUNK_ROWS = 512  # fewer rows per chunk make the matmuls less efficient and the table-gradient updates memory bound
# the memory budget of one chunk's float32 logits, by device type: cache-sized on a
# CPU; on an accelerator large enough that each chunk's matmuls fill the chip
CHUNK_BYTES = {'cpu': 8 << 20}
ACCELERATOR_CHUNK_BYTES = 1 << 30


def chunk_rows(num_rows: int, vocab: int, device: torch.device) -> int:
    """Rows per chunk: the device's budget over one row's float32 logits, at least ``MIN_CHUNK_ROWS``."""
    budget = CHUNK_BYTES.get(device.type, ACCELERATOR_CHUNK_BYTES)
    return max(1, min(num_rows, max(MIN_CHUNK_ROWS, budget // (4 * max(vocab, 1)))))


# the cache the element-wise passes over a chunk's ``(rows, v)`` tiles may fill, by device
# type: a quarter of a 32 MiB shared cache. On a 2-core AMD EPYC (1 thread), the JSD's
# passes over a 512-row chunk took 27% less time than on the whole chunk at V = 128k,
# 26% less at 32k (blocks of 2 to 64 rows measured; 8 MiB the best at both); elsewhere
# (accelerators, where one kernel covers the chunk) there is one block per chunk
CACHE_BLOCK_BYTES = {'cpu': 8 << 20}


def cache_blocks(rows: int, vocab: int, tiles: int, dtype: torch.dtype, device: torch.device) -> list[slice]:
    """Row blocks of a ``rows``-row chunk for its element-wise passes: ``tiles`` ``(block, vocab)``
    tiles of ``dtype`` within the device's ``CACHE_BLOCK_BYTES`` (one block of all the rows
    on other devices, and while compiling, where the compiler fuses the passes)."""
    budget = CACHE_BLOCK_BYTES.get(device.type)
    if budget is None or torch.compiler.is_compiling():
        return [slice(0, rows)]
    size = max(1, budget // (tiles * max(vocab, 1) * torch.finfo(dtype).bits // 8))
    return [slice(start, min(start + size, rows)) for start in range(0, rows, size)]


def softmax_dtype(weight: Tensor) -> torch.dtype:
    return torch.promote_types(weight.dtype, torch.float32)  # float32, or float64 for float64 models


def chunk_logits(xc: Tensor, weight: Tensor, buffer: Tensor | None) -> Tensor:
    """``xc @ weight.T`` in the softmax dtype, into ``buffer`` (a fresh tensor for ``None``)."""
    if buffer is None:
        return F.linear(xc, weight).to(softmax_dtype(weight))
    logits = buffer[: xc.shape[0]]
    if xc.dtype == buffer.dtype:
        return torch.mm(xc, weight.T, out=logits)
    return logits.copy_(F.linear(xc, weight))  # half precision matmul, float32 softmax


def softmax_lse(z: Tensor, out: Tensor) -> tuple[Tensor, Tensor]:
    """``(softmax(z), logsumexp(z))`` per row; the softmax into ``out``.

    One fused softmax pass; the log-normaliser comes from the row maxima,
    ``lse = max z - log max p`` (``max p = 1 / sum exp(z - max z)``), two cheap reductions.
    """
    top = z.amax(-1)  # before the softmax: ``out`` may be ``z``'s memory
    probs = torch.ops.aten._softmax.out(z, -1, False, out=out[: z.shape[0]])
    return probs, top - probs.amax(-1).log()


def apply_softcap(logits: Tensor, softcap: float | None) -> Tensor:
    """``c * tanh(logits / c)`` (Gemma-2's logit soft-capping), or ``logits`` for ``None``."""
    return logits if softcap is None else torch.tanh(logits / softcap) * softcap


def _tempered(s: Tensor, softcap: float | None, temperature: float) -> Tensor:
    """Raw logits ``s`` to ``softcap(s) / temperature``, in place."""
    if softcap is not None:
        s.div_(softcap).tanh_().mul_(softcap)
    return s.div_(temperature) if temperature != 1.0 else s


def _logits(x: Tensor, weight: Tensor, softcap, temperature: float) -> Tensor:
    """Tracked logits (the plain formulation and the double-backward path)."""
    return apply_softcap(F.linear(x.to(weight.dtype), weight).to(softmax_dtype(weight)), softcap) / temperature


def _plain_stats(x, weight, targets, softcap, temperature):
    z = _logits(x, weight, softcap, temperature)
    log_p = z.log_softmax(-1)
    entropy = -(log_p.exp() * log_p).sum(-1)
    return log_p.gather(-1, targets[:, None]).squeeze(-1), torch.logsumexp(z, -1), z.mean(-1), entropy


def _rows(n: int, rows: int):
    return (slice(start, start + rows) for start in range(0, n, rows))


def _offset(chunk: slice, block: slice) -> slice:
    """The rows of ``block`` (a slice of a chunk's rows) among all rows."""
    return slice(chunk.start + block.start, chunk.start + block.stop)


class _LinearSoftmaxStats(torch.autograd.Function):
    """``(log p[target], logsumexp, mean logit, entropy)`` per row, chunked. One
    chunk buffer holds the logits (and, in backward, their gradient) and one cache
    block the probabilities, both reused (fresh chunk-sized tensors would page-fault
    on every chunk); backward skips the terms whose upstream gradient is absent.
    Element-wise work per chunk, on cache blocks of rows: one fused softmax and the
    entropy's product in forward; the softmax, one fused multiply-add and one product
    in backward."""

    @staticmethod
    def forward(ctx, x: Tensor, weight: Tensor, targets: Tensor, softcap, temperature: float, rows: int):
        dtype = softmax_dtype(weight)
        z_buffer, p_block = _stats_buffers(x, weight, rows, dtype)
        out = torch.empty(4, x.shape[0], dtype=dtype, device=x.device)
        # without a soft-cap the mean logit is x . mean(W) / T: no pass over the chunk
        mean_row = weight.to(dtype).mean(0) / temperature if softcap is None and x.dtype == dtype else None
        for sl in _rows(x.shape[0], rows):
            logits = chunk_logits(x[sl], weight, z_buffer)
            for block in cache_blocks(logits.shape[0], weight.shape[0], 2, dtype, x.device):
                z, b = _tempered(logits[block], softcap, temperature), _offset(sl, block)
                p, lse = softmax_lse(z, p_block)
                out[0, b] = z.gather(1, targets[b, None]).squeeze(1) - lse
                out[1, b], out[2, b] = lse, x[b] @ mean_row if mean_row is not None else z.mean(-1)
                out[3, b] = lse - z.mul_(p).sum(-1)
        ctx.save_for_backward(x, weight, targets, out[1], out[3])
        ctx.softcap, ctx.temperature, ctx.rows = softcap, temperature, rows
        return out[0], out[1], out[2], out[3]

    @staticmethod
    def backward(ctx, *grads):
        x, weight, targets, lse, entropy = ctx.saved_tensors
        if torch.is_grad_enabled():  # create_graph=True: tracked ops, so that the gradients are differentiable
            full = [torch.zeros_like(lse) if g is None else g.to(lse.dtype) for g in grads]
            surrogate = lambda sl: (_plain_stats(x[sl], weight, targets[sl], ctx.softcap, ctx.temperature), [g[sl] for g in full])  # noqa: E731
            return (*_tracked_grads(ctx, (x, weight), x.shape[0], surrogate), None, None, None, None)
        need_x, need_w = ctx.needs_input_grad[:2]
        grad_x = torch.empty_like(x) if need_x else None
        grad_w = (torch.empty if x.shape[0] else torch.zeros)(weight.shape, dtype=lse.dtype, device=weight.device) if need_w else None  # the first chunk writes it
        z_buffer, p_block = _stats_buffers(x, weight, ctx.rows, lse.dtype)
        for sl in _rows(x.shape[0], ctx.rows):
            logits = chunk_logits(x[sl], weight, z_buffer)
            for block in cache_blocks(logits.shape[0], weight.shape[0], 2, lse.dtype, x.device):  # dz in the logits' rows
                z, b = _tempered(logits[block], ctx.softcap, ctx.temperature), _offset(sl, block)
                p = torch.ops.aten._softmax.out(z, -1, False, out=p_block[: z.shape[0]])
                _stats_grad(z, p, targets[b], lse[b], entropy[b], [None if g is None else g[b, None] for g in grads], ctx)
            dz = logits.to(weight.dtype)
            if need_x:
                torch.mm(dz, weight, out=grad_x[sl])
            if need_w and dz.dtype == grad_w.dtype:
                torch.mm(dz.T, x[sl], out=grad_w) if sl.start == 0 else grad_w.addmm_(dz.T, x[sl])
            elif need_w:
                grad_w.copy_(dz.T @ x[sl]) if sl.start == 0 else grad_w.add_(dz.T @ x[sl])
        return grad_x, grad_w.to(weight.dtype) if need_w else None, None, None, None, None


def _stats_buffers(x: Tensor, weight: Tensor, rows: int, dtype: torch.dtype) -> tuple[Tensor, Tensor]:
    """A chunk's logits buffer and one cache block's probabilities (reused by every block:
    a chunk-sized second buffer would be written once per chunk, first page-faulting)."""
    chunk = min(rows, x.shape[0])
    blocks = cache_blocks(chunk, weight.shape[0], 2, dtype, x.device)
    block = blocks[0].stop if blocks else 0
    return (torch.empty(n, weight.shape[0], dtype=dtype, device=x.device) for n in (chunk, block))


def _stats_grad(z: Tensor, p: Tensor, targets: Tensor, lse: Tensor, entropy: Tensor, grads, ctx) -> Tensor:
    """The chunk's gradient wrt the raw logits, in ``z``'s buffer:
    d/dz of log p[t] is onehot - p; of lse, p; of the mean logit, 1 / v; of the
    entropy, -p (z - lse + entropy). So ``dz = p (a - g_H z) + g_logp onehot + g_mean / v``
    with ``a = g_lse - g_logp + g_H (lse - H)``: one fused multiply-add and one product.
    The temperature's ``1 / T`` rides on the per-row coefficients."""
    g_logp, g_lse, g_mean, g_entropy = (None if g is None else g.to(p.dtype) / ctx.temperature for g in grads)  # each (rows, 1) or None
    chain = None if ctx.softcap is None else 1.0 - (z * (ctx.temperature / ctx.softcap)) ** 2  # before z is overwritten
    a = torch.zeros_like(lse)[:, None]
    a = a - g_logp if g_logp is not None else a
    a = a + g_lse if g_lse is not None else a
    if g_entropy is not None:
        dz = torch.addcmul(a + g_entropy * (lse - entropy)[:, None], z, -g_entropy, out=z).mul_(p)
    else:
        dz = torch.mul(p, a, out=z)
    if g_mean is not None:
        dz.add_(g_mean / z.shape[-1])
    if g_logp is not None:
        dz.scatter_add_(1, targets[:, None], g_logp)
    return dz.mul_(chain) if chain is not None else dz


def _tracked_grads(ctx, inputs, n: int, surrogate):
    """The vector-Jacobian product of the outputs with the upstream gradients, wrt the
    inputs that need one, with ``create_graph``: backward as tracked ops, chunk by
    chunk. ``surrogate(rows)`` gives a chunk's tracked outputs and their upstream
    gradients; these enter as ``grad_outputs``, so the result depends on them (and they
    may depend on this op's outputs, as a PPO ratio does) without being differentiated now."""
    wanted = [t for t, need in zip(inputs, ctx.needs_input_grad) if need]
    outputs, upstream = [], []
    for sl in _rows(n, ctx.rows):
        chunk_outputs, chunk_upstream = surrogate(sl)
        outputs.extend(chunk_outputs)
        upstream.extend(chunk_upstream)
    found = iter(torch.autograd.grad(outputs, wanted, upstream, create_graph=True, allow_unused=True)) if wanted else iter(())
    return tuple(next(found) if need else None for need in ctx.needs_input_grad[: len(inputs)])


def _in_compute_dtype(*tensors):
    """Under autocast, the autocast dtype for the matmuls (softmax stays float32)."""
    device = tensors[0].device.type
    if torch.is_autocast_enabled(device):
        return tuple(t.to(torch.get_autocast_dtype(device)) for t in tensors)
    return tensors


def linear_softmax_stats(x: Tensor, weight: Tensor, targets: Tensor, *, softcap: float | None = None, temperature: float = 1.0):
    """Per-row ``(log p[target], logsumexp, mean logit, entropy)`` of
    ``softmax(softcap(x @ weight.T) / temperature)``, without the logits.

    Args:
        x: ``(n, d)``; weight: ``(v, d)``; targets: ``(n,)`` ids in ``[0, v)``.
        softcap: ``c`` of ``c * tanh(logits / c)``, or ``None``.
        temperature: divides the (capped) logits.

    Returns:
        four ``(n,)`` tensors in float32 (float64 for a float64 table).
    """
    x, weight = _in_compute_dtype(x, weight)
    x = x.to(weight.dtype)
    with torch.autocast(x.device.type, enabled=False):
        if functorch_active():
            return _plain_stats(x, weight, targets, softcap, temperature)
        if kernels_apply(x, weight):
            from .kernel_ops import kernel_softmax_stats  # imports Triton

            return kernel_softmax_stats(x, weight, targets, softcap, temperature)
        return _LinearSoftmaxStats.apply(x, weight, targets, softcap, float(temperature), chunk_rows(x.shape[0], weight.shape[0], x.device))
