"""Triton kernels of the fused linear-softmax ops: the logits ``z = softcap(x @ W.T) / T``
of a tile of rows and vocabulary live in registers only, never in global memory.

Forward (``triton_launch.softmax_stats`` / ``kl_stats``): a program takes a block of rows and a
contiguous split of the vocabulary tiles; per tile it computes the logits (a tiled
matmul over ``d``, float32 accumulation) and folds them into running per-row
statistics: the maximum, ``sum exp(z - max)``, ``sum exp(z - max) z`` (the entropy's),
``sum z`` (the mean logit's) and the target's logit. The splits' partial statistics
are merged in PyTorch (``(splits, rows)`` numbers), so that short batches still fill
the GPU.

Backward (``softmax_stats_backward`` / ``kl_backward``): a program takes one tile of
rows and vocabulary, recomputes its logits and softmax from the saved log-normaliser,
forms the gradient wrt the logits from per-row coefficients, and adds
``dz @ W`` to the rows' gradient and ``dz.T @ x`` to the table's, both with float32
atomic adds (so the gradients are not bitwise reproducible run to run):

- one table: ``dz = p (a + b z) + c + e onehot(target)``, which covers every per-row
  function of ``(log p[target], logsumexp, mean logit, entropy)``: the loss with its
  options, per-token log-probs and entropies, policy objectives built on them;
- two tables: ``dz_p = p (a_p + b_p (z_p - z_q))``, ``dz_q = a_q q + b_q p + e_q onehot``:
  KL(p || q) either way and a distillation loss with hard targets on the q side.

The distillation loss's Jensen-Shannon divergence has kernels of its own
(``triton_distill``), built from this module's pieces.

The tile sizes in ``TILES`` are untuned defaults (no GPU was available when they were
written; ``benchmarks/gpu.py`` sweeps them). Under Triton's interpreter
(``TRITON_INTERPRET=1``, CPU tensors) the tiles are 16 and half-precision operands are
widened to float32 before ``tl.dot`` (the interpreter has no bfloat16 arithmetic;
products of half-precision values are exact in float32, so the results agree).
"""

# n - rows (tokens), v - vocabulary, d - model dim, s - vocabulary splits

import os
from typing import NamedTuple

import triton
import triton.language as tl

# internal (no export list): ``triton_launch`` launches these kernels


class Tiles(NamedTuple):
    """Rows, vocabulary and ``d`` per tile; warps and pipeline stages of a launch."""

    rows: int
    vocab: int
    dim: int
    warps: int = 4
    stages: int = 2


# untimed defaults: the largest tiles tried whose sm_90a build (bf16, soft-cap, every
# gradient) uses no more than 255 registers without spilling (benchmarks/compile_kernels.py)
TILES = {
    'forward': Tiles(64, 128, 64, 8, 3),
    'backward': Tiles(64, 128, 32, 8, 2),
    'kl_forward': Tiles(64, 128, 32, 8, 2),
    'kl_backward': Tiles(64, 64, 32, 8, 2),
    'jsd_forward': Tiles(64, 64, 32, 8, 2),
    'jsd_backward': Tiles(64, 64, 32, 8, 2),
}
INTERPRETER_TILES = Tiles(16, 16, 16)
GROUP_ROWS = 8  # backward: row blocks visited together, so that a table tile is reused from L2


def interpreting() -> bool:
    """Whether the kernels run in Triton's interpreter (``TRITON_INTERPRET=1``)."""
    return os.environ.get('TRITON_INTERPRET', '0').lower() in ('1', 'true', 'on', 'yes')


@triton.jit
def _tanh(u):
    # no libdevice in the interpreter: exp-based, with the series near 0 where 1 - e cancels
    a = tl.abs(u)
    e = tl.exp(-2.0 * a)
    u2 = u * u
    r = tl.where(a < 0.1, a * (1.0 + u2 * (-1.0 / 3.0 + u2 * (2.0 / 15.0 - u2 * (17.0 / 315.0)))), (1.0 - e) / (1.0 + e))
    return tl.where(u < 0, -r, r)


@triton.jit
def _logits(x_ptr, w_ptr, rows, cols, row_ok, col_ok, d, stride_x, stride_w, softcap, inv_temp,
            HAS_CAP: tl.constexpr, UPCAST: tl.constexpr, PRECISION: tl.constexpr, BD: tl.constexpr, BN: tl.constexpr, BV: tl.constexpr):  # fmt: skip
    """The tile's logits ``softcap(x @ W.T) / T``, float32."""
    acc = tl.zeros((BN, BV), tl.float32)
    for k0 in range(0, d, BD):
        ks = k0 + tl.arange(0, BD)
        xa = tl.load(x_ptr + rows[:, None] * stride_x + ks[None, :], mask=row_ok[:, None] & (ks < d)[None, :], other=0.0)
        wa = tl.load(w_ptr + cols[:, None] * stride_w + ks[None, :], mask=col_ok[:, None] & (ks < d)[None, :], other=0.0)
        if UPCAST:
            xa = xa.to(tl.float32)
            wa = wa.to(tl.float32)
        acc = tl.dot(xa, tl.trans(wa), acc, input_precision=PRECISION)
    if HAS_CAP:
        acc = softcap * _tanh(acc / softcap)
    return acc * inv_temp


@triton.jit
def _chained(dz, z, softcap, inv_temp, HAS_CAP: tl.constexpr):
    """``dz`` wrt the tempered logits ``z`` to wrt the raw ones: ``/ T``, times
    ``1 - tanh^2 = 1 - (z T / c)^2`` through the soft-cap."""
    if HAS_CAP:
        u = z / (inv_temp * softcap)
        dz = dz * (1.0 - u * u)
    return dz * inv_temp


@triton.jit
def _add_grads(dz, x_ptr, w_ptr, gx_ptr, gw_ptr, rows, cols, row_ok, col_ok, d, stride_x, stride_w,
               NEED_X: tl.constexpr, NEED_W: tl.constexpr, UPCAST: tl.constexpr, PRECISION: tl.constexpr, BD: tl.constexpr):  # fmt: skip
    """``gx[rows] += dz @ W[cols]``, ``gw[cols] += dz.T @ x[rows]``, float32 atomics, ``d`` in tiles."""
    g = dz.to(x_ptr.dtype.element_ty)  # the gradient matmuls in the inputs' precision, as cuBLAS would run them
    if UPCAST:
        g = g.to(tl.float32)
    for k0 in range(0, d, BD):
        ks = k0 + tl.arange(0, BD)
        if NEED_X:
            wa = tl.load(w_ptr + cols[:, None] * stride_w + ks[None, :], mask=col_ok[:, None] & (ks < d)[None, :], other=0.0)
            if UPCAST:
                wa = wa.to(tl.float32)
            part = tl.dot(g, wa, input_precision=PRECISION)
            tl.atomic_add(gx_ptr + rows[:, None] * d + ks[None, :], part, mask=row_ok[:, None] & (ks < d)[None, :], sem='relaxed')
        if NEED_W:
            xa = tl.load(x_ptr + rows[:, None] * stride_x + ks[None, :], mask=row_ok[:, None] & (ks < d)[None, :], other=0.0)
            if UPCAST:
                xa = xa.to(tl.float32)
            part = tl.dot(tl.trans(g), xa, input_precision=PRECISION)
            tl.atomic_add(gw_ptr + cols[:, None] * d + ks[None, :], part, mask=col_ok[:, None] & (ks < d)[None, :], sem='relaxed')


@triton.jit
def _fold(m, total, z, col_ok):
    """One more tile into the running ``(max, sum exp(z - max))``; also the factor
    that rescales other running sums and the tile's ``exp(z - max)``."""
    top = tl.maximum(m, tl.max(tl.where(col_ok[None, :], z, float('-inf')), 1))
    e = tl.where(col_ok[None, :], tl.exp(z - top[:, None]), 0.0)
    rescale = tl.exp(m - top)
    return top, total * rescale + tl.sum(e, 1), rescale, e


@triton.jit
def _block(pid_n, n, BN: tl.constexpr, t_ptr):
    rows = pid_n * BN + tl.arange(0, BN)
    row_ok = rows < n
    return rows.to(tl.int64), row_ok, tl.load(t_ptr + rows, mask=row_ok, other=-1)


@triton.jit
def _tile(pid_v, v, BV: tl.constexpr):
    cols = pid_v * BV + tl.arange(0, BV)
    return cols.to(tl.int64), cols < v


@triton.jit
def _grouped(pid, n, v, BN: tl.constexpr, BV: tl.constexpr, GROUP: tl.constexpr):
    """Tile ``pid`` as ``(row block, vocab tile)``: ``GROUP`` row blocks run over the vocabulary side by side."""
    num_n = tl.cdiv(n, BN)
    per_group = GROUP * tl.cdiv(v, BV)
    first = (pid // per_group) * GROUP
    size = tl.minimum(num_n - first, GROUP)
    return first + (pid % per_group) % size, (pid % per_group) // size


@triton.jit
def stats_forward_kernel(x_ptr, w_ptr, t_ptr, part_ptr, n, v, d, stride_x, stride_w, tiles_per_split, num_splits, softcap, inv_temp,
                          HAS_CAP: tl.constexpr, UPCAST: tl.constexpr, PRECISION: tl.constexpr, BN: tl.constexpr, BV: tl.constexpr, BD: tl.constexpr):  # fmt: skip
    split = tl.program_id(1)
    rows, row_ok, target = _block(tl.program_id(0), n, BN, t_ptr)
    m = tl.full((BN,), float('-inf'), tl.float32)
    total, moment, z_sum, z_target = tl.zeros((BN,), tl.float32), tl.zeros((BN,), tl.float32), tl.zeros((BN,), tl.float32), tl.zeros((BN,), tl.float32)
    for tile in range(split * tiles_per_split, tl.minimum((split + 1) * tiles_per_split, tl.cdiv(v, BV))):
        cols, col_ok = _tile(tile, v, BV)
        z = _logits(x_ptr, w_ptr, rows, cols, row_ok, col_ok, d, stride_x, stride_w, softcap, inv_temp, HAS_CAP, UPCAST, PRECISION, BD, BN, BV)
        z = tl.where(col_ok[None, :], z, 0.0)
        m, total, rescale, e = _fold(m, total, z, col_ok)
        moment = moment * rescale + tl.sum(e * z, 1)
        z_sum += tl.sum(z, 1)
        z_target += tl.sum(tl.where(cols[None, :] == target[:, None], z, 0.0), 1)
    out = part_ptr + split * n + rows
    tl.store(out, m, mask=row_ok)
    tl.store(out + num_splits * n, total, mask=row_ok)
    tl.store(out + 2 * num_splits * n, moment, mask=row_ok)
    tl.store(out + 3 * num_splits * n, z_sum, mask=row_ok)
    tl.store(out + 4 * num_splits * n, z_target, mask=row_ok)


@triton.jit
def stats_backward_kernel(x_ptr, w_ptr, t_ptr, lse_ptr, coef_ptr, gx_ptr, gw_ptr, n, v, d, stride_x, stride_w, softcap, inv_temp,
                           HAS_CAP: tl.constexpr, NEED_X: tl.constexpr, NEED_W: tl.constexpr, UPCAST: tl.constexpr, PRECISION: tl.constexpr,
                           GROUP: tl.constexpr, BN: tl.constexpr, BV: tl.constexpr, BD: tl.constexpr):  # fmt: skip
    pid_n, pid_v = _grouped(tl.program_id(0), n, v, BN, BV, GROUP)
    rows, row_ok, target = _block(pid_n, n, BN, t_ptr)
    cols, col_ok = _tile(pid_v, v, BV)
    z = _logits(x_ptr, w_ptr, rows, cols, row_ok, col_ok, d, stride_x, stride_w, softcap, inv_temp, HAS_CAP, UPCAST, PRECISION, BD, BN, BV)
    lse = tl.load(lse_ptr + rows, mask=row_ok, other=0.0)
    a = tl.load(coef_ptr + rows, mask=row_ok, other=0.0)
    b = tl.load(coef_ptr + n + rows, mask=row_ok, other=0.0)
    c = tl.load(coef_ptr + 2 * n + rows, mask=row_ok, other=0.0)
    e = tl.load(coef_ptr + 3 * n + rows, mask=row_ok, other=0.0)
    ok = row_ok[:, None] & col_ok[None, :]
    z = tl.where(ok, z, 0.0)
    p = tl.exp(z - lse[:, None])
    dz = p * (a[:, None] + b[:, None] * z) + c[:, None] + tl.where(cols[None, :] == target[:, None], e[:, None], 0.0)
    dz = tl.where(ok, _chained(dz, z, softcap, inv_temp, HAS_CAP), 0.0)
    _add_grads(dz, x_ptr, w_ptr, gx_ptr, gw_ptr, rows, cols, row_ok, col_ok, d, stride_x, stride_w, NEED_X, NEED_W, UPCAST, PRECISION, BD)


@triton.jit
def kl_forward_kernel(xp_ptr, wp_ptr, xq_ptr, wq_ptr, t_ptr, part_ptr, n, v, dp, dq, stride_xp, stride_wp, stride_xq, stride_wq,
                       tiles_per_split, num_splits, cap_p, cap_q, inv_temp, HAS_CAP_P: tl.constexpr, HAS_CAP_Q: tl.constexpr,
                       UPCAST: tl.constexpr, PRECISION: tl.constexpr, BN: tl.constexpr, BV: tl.constexpr, BD: tl.constexpr):  # fmt: skip
    split = tl.program_id(1)
    rows, row_ok, target = _block(tl.program_id(0), n, BN, t_ptr)
    m_p, m_q = tl.full((BN,), float('-inf'), tl.float32), tl.full((BN,), float('-inf'), tl.float32)
    total_p, cross, total_q, zq_target = tl.zeros((BN,), tl.float32), tl.zeros((BN,), tl.float32), tl.zeros((BN,), tl.float32), tl.zeros((BN,), tl.float32)
    for tile in range(split * tiles_per_split, tl.minimum((split + 1) * tiles_per_split, tl.cdiv(v, BV))):
        cols, col_ok = _tile(tile, v, BV)
        zp = _logits(xp_ptr, wp_ptr, rows, cols, row_ok, col_ok, dp, stride_xp, stride_wp, cap_p, inv_temp, HAS_CAP_P, UPCAST, PRECISION, BD, BN, BV)
        zq = _logits(xq_ptr, wq_ptr, rows, cols, row_ok, col_ok, dq, stride_xq, stride_wq, cap_q, inv_temp, HAS_CAP_Q, UPCAST, PRECISION, BD, BN, BV)
        zp, zq = tl.where(col_ok[None, :], zp, 0.0), tl.where(col_ok[None, :], zq, 0.0)
        m_p, total_p, rescale, e = _fold(m_p, total_p, zp, col_ok)
        cross = cross * rescale + tl.sum(e * (zp - zq), 1)  # sum exp(z_p - max) (z_p - z_q)
        m_q, total_q, _, _ = _fold(m_q, total_q, zq, col_ok)
        zq_target += tl.sum(tl.where(cols[None, :] == target[:, None], zq, 0.0), 1)
    out = part_ptr + split * n + rows
    tl.store(out, m_p, mask=row_ok)
    tl.store(out + num_splits * n, total_p, mask=row_ok)
    tl.store(out + 2 * num_splits * n, cross, mask=row_ok)
    tl.store(out + 3 * num_splits * n, m_q, mask=row_ok)
    tl.store(out + 4 * num_splits * n, total_q, mask=row_ok)
    tl.store(out + 5 * num_splits * n, zq_target, mask=row_ok)


@triton.jit
def kl_backward_kernel(xp_ptr, wp_ptr, xq_ptr, wq_ptr, t_ptr, lse_ptr, coef_ptr, gxp_ptr, gwp_ptr, gxq_ptr, gwq_ptr,
                        n, v, dp, dq, stride_xp, stride_wp, stride_xq, stride_wq, cap_p, cap_q, inv_temp,
                        HAS_CAP_P: tl.constexpr, HAS_CAP_Q: tl.constexpr, NEED_XP: tl.constexpr, NEED_WP: tl.constexpr,
                        NEED_XQ: tl.constexpr, NEED_WQ: tl.constexpr, UPCAST: tl.constexpr, PRECISION: tl.constexpr,
                        GROUP: tl.constexpr, BN: tl.constexpr, BV: tl.constexpr, BD: tl.constexpr):  # fmt: skip
    pid_n, pid_v = _grouped(tl.program_id(0), n, v, BN, BV, GROUP)
    rows, row_ok, target = _block(pid_n, n, BN, t_ptr)
    cols, col_ok = _tile(pid_v, v, BV)
    ok = row_ok[:, None] & col_ok[None, :]
    zp = _logits(xp_ptr, wp_ptr, rows, cols, row_ok, col_ok, dp, stride_xp, stride_wp, cap_p, inv_temp, HAS_CAP_P, UPCAST, PRECISION, BD, BN, BV)
    zq = _logits(xq_ptr, wq_ptr, rows, cols, row_ok, col_ok, dq, stride_xq, stride_wq, cap_q, inv_temp, HAS_CAP_Q, UPCAST, PRECISION, BD, BN, BV)
    zp, zq = tl.where(ok, zp, 0.0), tl.where(ok, zq, 0.0)
    p = tl.exp(zp - tl.load(lse_ptr + rows, mask=row_ok, other=0.0)[:, None])
    a_q = tl.load(coef_ptr + 2 * n + rows, mask=row_ok, other=0.0)
    b_q = tl.load(coef_ptr + 3 * n + rows, mask=row_ok, other=0.0)
    e_q = tl.load(coef_ptr + 4 * n + rows, mask=row_ok, other=0.0)
    q = tl.exp(zq - tl.load(lse_ptr + n + rows, mask=row_ok, other=0.0)[:, None])
    dz_q = a_q[:, None] * q + b_q[:, None] * p + tl.where(cols[None, :] == target[:, None], e_q[:, None], 0.0)
    dz_q = tl.where(ok, _chained(dz_q, zq, cap_q, inv_temp, HAS_CAP_Q), 0.0)
    _add_grads(dz_q, xq_ptr, wq_ptr, gxq_ptr, gwq_ptr, rows, cols, row_ok, col_ok, dq, stride_xq, stride_wq, NEED_XQ, NEED_WQ, UPCAST, PRECISION, BD)
    if NEED_XP or NEED_WP:
        a_p = tl.load(coef_ptr + rows, mask=row_ok, other=0.0)
        b_p = tl.load(coef_ptr + n + rows, mask=row_ok, other=0.0)
        dz_p = tl.where(ok, _chained(p * (a_p[:, None] + b_p[:, None] * (zp - zq)), zp, cap_p, inv_temp, HAS_CAP_P), 0.0)
        _add_grads(dz_p, xp_ptr, wp_ptr, gxp_ptr, gwp_ptr, rows, cols, row_ok, col_ok, dp, stride_xp, stride_wp, NEED_XP, NEED_WP, UPCAST, PRECISION, BD)
