"""Triton kernels of the distillation loss's Jensen-Shannon divergence: the teacher's
and the student's logits tiles both on-chip, never in global memory.

``JSD = beta KL(P || M) + (1 - beta) KL(Q || M)``, ``M = beta P + (1 - beta) Q``
(``P`` the teacher's softmax, ``Q`` the student's), needs both log-normalisers before
``log m`` can be formed, so it takes three passes over the vocabulary (each recomputing
both sides' logits tile by tile, with ``triton_kernels``' building blocks):

1. ``kl_forward_kernel`` (``triton_kernels``): each side's online logsumexp;
2. ``jsd_forward_kernel``: per row ``sum p (log p - log m)`` and ``sum q (log q - log m)``
   (plain sums given the log-normalisers; vocabulary splits merged in PyTorch);
3. ``jsd_backward_kernel`` (in backward): the student's gradient wrt its logits,
   ``dz_q = c q (log q - log m - KL(Q || M))``, ``c`` a per-row coefficient (the
   upstream gradient times ``1 - beta``), into ``dz_q @ W_q`` and ``dz_q.T @ x_q`` with
   float32 atomic adds. The teacher receives no gradient.

Forward and reverse KL need no kernel of their own: they are ``kl_forward_kernel`` /
``kl_backward_kernel`` with the teacher on the true or on the predicted side.
"""

# n - rows (tokens), v - vocabulary, d - model dim, s - vocabulary splits

import triton
import triton.language as tl

from .triton_kernels import _add_grads, _chained, _grouped, _logits, _tile

# internal (no export list): ``triton_launch`` launches these kernels


@triton.jit
def _jsd_terms(zp, zq, lse_p, lse_q, ok, log_beta, log_rest):
    """``(p, q, log p - log m, log q - log m)`` of a tile, 0 outside ``ok``."""
    log_p, log_q = zp - lse_p[:, None], zq - lse_q[:, None]
    a, b = log_beta + log_p, log_rest + log_q
    top = tl.maximum(a, b)
    log_m = top + tl.log(1.0 + tl.exp(-tl.abs(a - b)))  # logaddexp
    p, q = tl.where(ok, tl.exp(log_p), 0.0), tl.where(ok, tl.exp(log_q), 0.0)
    return p, q, tl.where(ok, log_p - log_m, 0.0), tl.where(ok, log_q - log_m, 0.0)


@triton.jit
def _rows_of(pid_n, n, BN: tl.constexpr):
    rows = pid_n * BN + tl.arange(0, BN)
    return rows.to(tl.int64), rows < n


@triton.jit
def jsd_forward_kernel(xp_ptr, wp_ptr, xq_ptr, wq_ptr, lse_ptr, part_ptr, n, v, dp, dq, stride_xp, stride_wp, stride_xq, stride_wq,
                       tiles_per_split, num_splits, cap_p, cap_q, inv_temp, log_beta, log_rest, HAS_CAP_P: tl.constexpr, HAS_CAP_Q: tl.constexpr,
                       UPCAST: tl.constexpr, PRECISION: tl.constexpr, BN: tl.constexpr, BV: tl.constexpr, BD: tl.constexpr):  # fmt: skip
    split = tl.program_id(1)
    rows, row_ok = _rows_of(tl.program_id(0), n, BN)
    lse_p = tl.load(lse_ptr + rows, mask=row_ok, other=0.0)
    lse_q = tl.load(lse_ptr + n + rows, mask=row_ok, other=0.0)
    kl_pm, kl_qm = tl.zeros((BN,), tl.float32), tl.zeros((BN,), tl.float32)
    for tile in range(split * tiles_per_split, tl.minimum((split + 1) * tiles_per_split, tl.cdiv(v, BV))):
        cols, col_ok = _tile(tile, v, BV)
        ok = row_ok[:, None] & col_ok[None, :]
        zp = _logits(xp_ptr, wp_ptr, rows, cols, row_ok, col_ok, dp, stride_xp, stride_wp, cap_p, inv_temp, HAS_CAP_P, UPCAST, PRECISION, BD, BN, BV)
        zq = _logits(xq_ptr, wq_ptr, rows, cols, row_ok, col_ok, dq, stride_xq, stride_wq, cap_q, inv_temp, HAS_CAP_Q, UPCAST, PRECISION, BD, BN, BV)
        p, q, ratio_p, ratio_q = _jsd_terms(tl.where(ok, zp, 0.0), tl.where(ok, zq, 0.0), lse_p, lse_q, ok, log_beta, log_rest)
        kl_pm += tl.sum(p * ratio_p, 1)
        kl_qm += tl.sum(q * ratio_q, 1)
    out = part_ptr + split * n + rows
    tl.store(out, kl_pm, mask=row_ok)
    tl.store(out + num_splits * n, kl_qm, mask=row_ok)


@triton.jit
def jsd_backward_kernel(xp_ptr, wp_ptr, xq_ptr, wq_ptr, lse_ptr, coef_ptr, gxq_ptr, gwq_ptr, n, v, dp, dq, stride_xp, stride_wp, stride_xq, stride_wq,
                        cap_p, cap_q, inv_temp, log_beta, log_rest, HAS_CAP_P: tl.constexpr, HAS_CAP_Q: tl.constexpr, NEED_XQ: tl.constexpr,
                        NEED_WQ: tl.constexpr, UPCAST: tl.constexpr, PRECISION: tl.constexpr, GROUP: tl.constexpr,
                        BN: tl.constexpr, BV: tl.constexpr, BD: tl.constexpr):  # fmt: skip
    pid_n, pid_v = _grouped(tl.program_id(0), n, v, BN, BV, GROUP)
    rows, row_ok = _rows_of(pid_n, n, BN)
    cols, col_ok = _tile(pid_v, v, BV)
    ok = row_ok[:, None] & col_ok[None, :]
    zp = _logits(xp_ptr, wp_ptr, rows, cols, row_ok, col_ok, dp, stride_xp, stride_wp, cap_p, inv_temp, HAS_CAP_P, UPCAST, PRECISION, BD, BN, BV)
    zq = _logits(xq_ptr, wq_ptr, rows, cols, row_ok, col_ok, dq, stride_xq, stride_wq, cap_q, inv_temp, HAS_CAP_Q, UPCAST, PRECISION, BD, BN, BV)
    zq = tl.where(ok, zq, 0.0)
    lse_p = tl.load(lse_ptr + rows, mask=row_ok, other=0.0)
    lse_q = tl.load(lse_ptr + n + rows, mask=row_ok, other=0.0)
    _, q, _, ratio_q = _jsd_terms(tl.where(ok, zp, 0.0), zq, lse_p, lse_q, ok, log_beta, log_rest)
    c = tl.load(coef_ptr + rows, mask=row_ok, other=0.0)
    kl_qm = tl.load(coef_ptr + n + rows, mask=row_ok, other=0.0)
    dz = c[:, None] * q * (ratio_q - kl_qm[:, None])
    dz = tl.where(ok, _chained(dz, zq, cap_q, inv_temp, HAS_CAP_Q), 0.0)
    _add_grads(dz, xq_ptr, wq_ptr, gxq_ptr, gwq_ptr, rows, cols, row_ok, col_ok, dq, stride_xq, stride_wq, NEED_XQ, NEED_WQ, UPCAST, PRECISION, BD)
