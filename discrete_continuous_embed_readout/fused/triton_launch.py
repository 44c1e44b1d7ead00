"""Launchers of the Triton kernels (``triton_kernels``, ``triton_distill``): outputs
allocated, grids sized, the forward's per-split partial statistics merged. They take
2-d rows and tables of one dtype (float16 / bfloat16 / float32, on a CUDA device, or
on the CPU under Triton's interpreter) and return float32; no autograd (``kernel_ops``
and ``kernel_objectives`` wrap them).

Gradient coefficients are per row, float32, stacked ``(k, n)``: see the kernels'
module docstring for the gradient each describes.
"""

# n - rows (tokens), v - vocabulary, d - model dim, s - vocabulary splits

from __future__ import annotations

import functools
import math

import torch
from torch import Tensor

from . import triton_distill as J
from . import triton_kernels as K

__all__ = ['jsd_backward', 'jsd_stats', 'kl_backward', 'kl_stats', 'softmax_stats', 'softmax_stats_backward']


def _cdiv(a: int, b: int) -> int:
    return -(-a // b)


def _tiles(which: str) -> K.Tiles:
    return K.INTERPRETER_TILES if K.interpreting() else K.TILES[which]


def _unit_stride(*tensors: Tensor) -> tuple[Tensor, ...]:
    return tuple(t if t.stride(-1) == 1 else t.contiguous() for t in tensors)


def _precision(x: Tensor) -> dict:
    """``UPCAST`` (half-precision operands widened for the interpreter) and ``tl.dot``'s
    ``input_precision`` (float32 follows ``torch.backends.cuda.matmul.allow_tf32``)."""
    if K.interpreting():
        return dict(UPCAST=True, PRECISION='ieee')
    tf32 = x.dtype != torch.float32 or torch.backends.cuda.matmul.allow_tf32
    return dict(UPCAST=False, PRECISION='tf32' if tf32 else 'ieee')


@functools.lru_cache
def _multiprocessors(index: int) -> int:
    return torch.cuda.get_device_properties(index).multi_processor_count


def _splits(row_blocks: int, vocab_tiles: int, device: torch.device) -> tuple[int, int]:
    """``(splits, tiles per split)`` of the vocabulary: about two programs per multiprocessor
    (three splits under the interpreter, so that the merge is exercised)."""
    want = 3 if device.type != 'cuda' else _cdiv(2 * _multiprocessors(device.index if device.index is not None else torch.cuda.current_device()), row_blocks)
    per = _cdiv(vocab_tiles, max(1, min(vocab_tiles, want)))
    return _cdiv(vocab_tiles, per), per


def _launch(kernel, grid, tiles: K.Tiles, *args, **constexprs) -> None:
    kernel[grid](*args, **constexprs, BN=tiles.rows, BV=tiles.vocab, BD=tiles.dim, num_warps=tiles.warps, num_stages=tiles.stages)


def _merged(m: Tensor, total: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """The splits' ``(s, n)`` running maxima and sums as ``(logsumexp, per-split factors, sum)``."""
    top = m.amax(0)
    factors = torch.exp(m - top)
    total = (total * factors).sum(0)
    return top + total.log(), factors, total


def softmax_stats(x: Tensor, weight: Tensor, targets: Tensor, softcap: float | None, temperature: float) -> tuple[Tensor, ...]:
    """Per row ``(log p[target], logsumexp, mean logit, entropy)`` of
    ``softmax(softcap(x @ weight.T) / temperature)``, float32; ``x (n, d)``,
    ``weight (v, d)``, ``targets (n,)`` ids in ``[0, v)``."""
    (n, d), v = x.shape, weight.shape[0]
    if n == 0:
        return tuple(x.new_zeros(0, dtype=torch.float32) for _ in range(4))
    x, weight, targets = _unit_stride(x, weight, targets)
    tiles = _tiles('forward')
    splits, per = _splits(_cdiv(n, tiles.rows), _cdiv(v, tiles.vocab), x.device)
    part = torch.empty(5, splits, n, dtype=torch.float32, device=x.device)
    _launch(K.stats_forward_kernel, (_cdiv(n, tiles.rows), splits), tiles, x, weight, targets, part, n, v, d, x.stride(0), weight.stride(0),
            per, splits, float(softcap or 1.0), 1.0 / temperature, HAS_CAP=softcap is not None, **_precision(x))  # fmt: skip
    lse, factors, total = _merged(part[0], part[1])
    return part[4].sum(0) - lse, lse, part[3].sum(0) / v, lse - (part[2] * factors).sum(0) / total


def _grad_buffers(x: Tensor, weight: Tensor, need_x: bool, need_w: bool) -> tuple[Tensor | None, Tensor | None, Tensor]:
    """Float32 gradient accumulators (zeros) and a placeholder for the unneeded ones."""
    empty = torch.empty(1, dtype=torch.float32, device=x.device)
    gx = torch.zeros(x.shape, dtype=torch.float32, device=x.device) if need_x else None
    gw = torch.zeros(weight.shape, dtype=torch.float32, device=x.device) if need_w else None
    return gx, gw, empty


def softmax_stats_backward(x: Tensor, weight: Tensor, targets: Tensor, lse: Tensor, coefficients: Tensor, softcap: float | None,
                           temperature: float, need_x: bool, need_w: bool) -> tuple[Tensor | None, Tensor | None]:  # fmt: skip
    """Float32 ``(dz @ weight, dz.T @ x)`` (``None`` where not needed) for
    ``dz = p (a + b z) + c + e onehot(targets)`` wrt the raw logits ``x @ weight.T``,
    with ``coefficients`` the ``(4, n)`` rows ``(a, b, c, e)`` (the chain through the
    soft-cap and temperature applied in the kernel)."""
    (n, d), v = x.shape, weight.shape[0]
    x, weight, targets = _unit_stride(x, weight, targets)
    gx, gw, empty = _grad_buffers(x, weight, need_x, need_w)
    if n and (need_x or need_w):
        tiles = _tiles('backward')
        _launch(K.stats_backward_kernel, (_cdiv(n, tiles.rows) * _cdiv(v, tiles.vocab),), tiles, x, weight, targets, lse.contiguous(),
                coefficients.float().contiguous(), gx if need_x else empty, gw if need_w else empty, n, v, d, x.stride(0), weight.stride(0),
                float(softcap or 1.0), 1.0 / temperature, HAS_CAP=softcap is not None, NEED_X=need_x, NEED_W=need_w, GROUP=K.GROUP_ROWS, **_precision(x))  # fmt: skip
    return gx, gw


def kl_stats(x_p: Tensor, weight_p: Tensor, x_q: Tensor, weight_q: Tensor, targets: Tensor | None, softcaps, temperature: float) -> tuple[Tensor, ...]:
    """Per row ``(KL(p || q), logsumexp_p, logsumexp_q, z_q[target])``, float32, for
    ``p = softmax(z(x_p, weight_p))``, ``q = softmax(z(x_q, weight_q))``; ``targets``
    ``(n,)`` or ``None`` (then the last is 0)."""
    n, v = x_q.shape[0], weight_q.shape[0]
    if n == 0:
        return tuple(x_q.new_zeros(0, dtype=torch.float32) for _ in range(4))
    targets = torch.full((n,), -1, dtype=torch.long, device=x_q.device) if targets is None else targets
    x_p, weight_p, x_q, weight_q, targets = _unit_stride(x_p, weight_p, x_q, weight_q, targets)
    tiles = _tiles('kl_forward')
    splits, per = _splits(_cdiv(n, tiles.rows), _cdiv(v, tiles.vocab), x_q.device)
    part = torch.empty(6, splits, n, dtype=torch.float32, device=x_q.device)
    _launch(K.kl_forward_kernel, (_cdiv(n, tiles.rows), splits), tiles, x_p, weight_p, x_q, weight_q, targets, part, n, v, x_p.shape[1], x_q.shape[1],
            x_p.stride(0), weight_p.stride(0), x_q.stride(0), weight_q.stride(0), per, splits, *_caps(softcaps), 1.0 / temperature, **_has_caps(softcaps), **_precision(x_q))  # fmt: skip
    lse_p, factors, total = _merged(part[0], part[1])
    lse_q = _merged(part[3], part[4])[0]
    return (part[2] * factors).sum(0) / total - lse_p + lse_q, lse_p, lse_q, part[5].sum(0)


def _caps(softcaps) -> tuple[float, float]:
    return tuple(float(c or 1.0) for c in softcaps)


def _has_caps(softcaps) -> dict:
    return dict(HAS_CAP_P=softcaps[0] is not None, HAS_CAP_Q=softcaps[1] is not None)


def kl_backward(x_p: Tensor, weight_p: Tensor, x_q: Tensor, weight_q: Tensor, targets: Tensor | None, lse: Tensor, coefficients: Tensor,
                softcaps, temperature: float, need) -> tuple[Tensor | None, ...]:  # fmt: skip
    """Float32 gradients of ``(x_p, weight_p, x_q, weight_q)`` (``None`` where ``need``
    is false) for ``dz_p = p (a_p + b_p (z_p - z_q))``, ``dz_q = a_q q + b_q p + e_q onehot``,
    ``coefficients`` the ``(5, n)`` rows ``(a_p, b_p, a_q, b_q, e_q)``, ``lse`` the
    ``(2, n)`` log-normalisers of p and q."""
    n, v = x_q.shape[0], weight_q.shape[0]
    targets = torch.full((n,), -1, dtype=torch.long, device=x_q.device) if targets is None else targets
    inputs = _unit_stride(x_p, weight_p, x_q, weight_q, targets)
    grads = [torch.zeros(t.shape, dtype=torch.float32, device=t.device) if wanted else None for t, wanted in zip(inputs, need)]
    if n and any(need):
        tiles, empty = _tiles('kl_backward'), torch.empty(1, dtype=torch.float32, device=x_q.device)
        x_p, weight_p, x_q, weight_q, targets = inputs
        _launch(K.kl_backward_kernel, (_cdiv(n, tiles.rows) * _cdiv(v, tiles.vocab),), tiles, *inputs, lse.contiguous(), coefficients.float().contiguous(),
                *(empty if g is None else g for g in grads), n, v, x_p.shape[1], x_q.shape[1], x_p.stride(0), weight_p.stride(0), x_q.stride(0),
                weight_q.stride(0), *_caps(softcaps), 1.0 / temperature, **_has_caps(softcaps), NEED_XP=need[0], NEED_WP=need[1], NEED_XQ=need[2],
                NEED_WQ=need[3], GROUP=K.GROUP_ROWS, **_precision(x_q))  # fmt: skip
    return tuple(grads)


def _log_weights(beta: float) -> tuple[float, float]:
    return math.log(beta), math.log1p(-beta)


def jsd_stats(x_p: Tensor, weight_p: Tensor, x_q: Tensor, weight_q: Tensor, lse: Tensor, softcaps, temperature: float, beta: float) -> tuple[Tensor, Tensor]:
    """Per row ``(KL(p || m), KL(q || m))``, float32, ``m = beta p + (1 - beta) q``, given
    ``lse`` the ``(2, n)`` log-normalisers of p and q (``kl_stats``)."""
    n, v = x_q.shape[0], weight_q.shape[0]
    if n == 0:
        return x_q.new_zeros(0, dtype=torch.float32), x_q.new_zeros(0, dtype=torch.float32)
    x_p, weight_p, x_q, weight_q = _unit_stride(x_p, weight_p, x_q, weight_q)
    tiles = _tiles('jsd_forward')
    splits, per = _splits(_cdiv(n, tiles.rows), _cdiv(v, tiles.vocab), x_q.device)
    part = torch.empty(2, splits, n, dtype=torch.float32, device=x_q.device)
    _launch(J.jsd_forward_kernel, (_cdiv(n, tiles.rows), splits), tiles, x_p, weight_p, x_q, weight_q, lse.float().contiguous(), part, n, v,
            x_p.shape[1], x_q.shape[1], x_p.stride(0), weight_p.stride(0), x_q.stride(0), weight_q.stride(0), per, splits, *_caps(softcaps),
            1.0 / temperature, *_log_weights(beta), **_has_caps(softcaps), **_precision(x_q))  # fmt: skip
    return part[0].sum(0), part[1].sum(0)


def jsd_backward(x_p: Tensor, weight_p: Tensor, x_q: Tensor, weight_q: Tensor, lse: Tensor, coefficients: Tensor, softcaps, temperature: float,
                 beta: float, need_x: bool, need_w: bool) -> tuple[Tensor | None, Tensor | None]:  # fmt: skip
    """Float32 gradients of ``(x_q, weight_q)`` (``None`` where not needed) for
    ``dz_q = c q (log q - log m - KL(q || m))``, ``coefficients`` the ``(2, n)`` rows
    ``(c, KL(q || m))``, ``lse`` the ``(2, n)`` log-normalisers of p and q."""
    n, v = x_q.shape[0], weight_q.shape[0]
    x_p, weight_p, x_q, weight_q = _unit_stride(x_p, weight_p, x_q, weight_q)
    gx, gw, empty = _grad_buffers(x_q, weight_q, need_x, need_w)
    if n and (need_x or need_w):
        tiles = _tiles('jsd_backward')
        _launch(J.jsd_backward_kernel, (_cdiv(n, tiles.rows) * _cdiv(v, tiles.vocab),), tiles, x_p, weight_p, x_q, weight_q, lse.float().contiguous(),
                coefficients.float().contiguous(), gx if need_x else empty, gw if need_w else empty, n, v, x_p.shape[1], x_q.shape[1], x_p.stride(0),
                weight_p.stride(0), x_q.stride(0), weight_q.stride(0), *_caps(softcaps), 1.0 / temperature, *_log_weights(beta), **_has_caps(softcaps),
                NEED_XQ=need_x, NEED_WQ=need_w, GROUP=K.GROUP_ROWS, **_precision(x_q))  # fmt: skip
    return gx, gw
