"""One chunk of rows of a fused objective: its softmax statistics, and its gradient
with respect to the logits turned into the input and table gradients.

The fused objectives (``policy``, ``distill``) run the same loop: for each chunk of
rows, the logits ``x @ W.T`` into a reused buffer, the objective's per-row terms and
its gradient ``dz`` with respect to those logits, then ``dz @ W`` (the input's
gradient rows) and ``dz.T @ x`` (added to the table's): the three matmuls of the
floor, once. These are plain functions over tensors (a chunk's logits, probabilities,
ids, per-row coefficients); a GPU kernel computes the same quantities.

On a CPU the distillation loss (like ``linear_softmax_stats``) runs a chunk's
element-wise passes on blocks of its rows (``linear_softmax.cache_blocks``) small
enough that each pass after the first reads the cache rather than memory; the matmuls
keep the whole chunk (fewer rows would re-read the table). The results are the same:
every element-wise op and reduction is per row.

A chunk's gradient is held as ``LogitGrad``: ``scale[:, None] * dense`` plus
``picked`` at each row's id. When ``dense`` is the softmax itself (the log-prob's
gradient ``onehot - p`` times a per-row factor), no element-wise pass forms ``dz``: the
row factors go to the small ``(rows, d)`` operands of the two gradient matmuls.
"""

# r - rows of a chunk, v - vocabulary, d - model dim

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor

from .linear_softmax import chunk_logits, softmax_dtype

__all__ = ['LogitGrad', 'accumulate_grads', 'chunk_buffers', 'picked_logits', 'row_slices', 'softcap_chain', 'table_grad_buffer', 'tempered']


class LogitGrad(NamedTuple):
    """A chunk's gradient wrt its logits: ``scale[:, None] * dense``, plus ``picked[i]``
    at ``(i, ids[i])``. ``scale`` / ``picked`` ``None``: 1 / nothing."""

    dense: Tensor  # (r, v)
    scale: Tensor | None = None  # (r,)
    picked: Tensor | None = None  # (r,)


def row_slices(num_rows: int, rows: int):
    return [slice(start, start + rows) for start in range(0, num_rows, rows)]


def chunk_buffers(count: int, rows: int, x: Tensor, weight: Tensor) -> list[Tensor]:
    """``count`` reused ``(rows, v)`` buffers in the softmax dtype (a fresh chunk-sized
    tensor per chunk would page-fault on every chunk)."""
    shape = (min(rows, x.shape[0]), weight.shape[0])
    return [torch.empty(shape, dtype=softmax_dtype(weight), device=x.device) for _ in range(count)]


def tempered(xc: Tensor, weight: Tensor, buffer: Tensor, softcap: float | None, temperature: float) -> Tensor:
    """``softcap(xc @ weight.T) / temperature`` in ``buffer``. Without a soft-cap the
    callers fold the temperature into ``xc`` (``x / T``), so only the matmul runs here."""
    z = chunk_logits(xc, weight, buffer)
    if softcap is not None:
        z.div_(softcap).tanh_().mul_(softcap / temperature)
    return z


def softcap_chain(z: Tensor, softcap: float | None, temperature: float) -> Tensor | None:
    """d z / d raw logits of ``z = c tanh(raw / c) / T``: ``(1 - (z T / c)^2) / T``, or
    ``None`` without a soft-cap (the temperature is then folded into the inputs)."""
    if softcap is None:
        return None
    return (z * (temperature / softcap)).square_().neg_().add_(1.0).div_(temperature)


def picked_logits(z: Tensor, ids: Tensor) -> Tensor:
    """``z[i, ids[i]]``, ``(r,)``."""
    return z.gather(1, ids[:, None]).squeeze(1)


def table_grad_buffer(weight: Tensor, need: bool, chunks: int) -> Tensor | None:
    """The table gradient's float32 (float64) accumulator (``None`` if not ``need``):
    uninitialised, since the first chunk writes it (``accumulate_grads(..., first=True)``);
    zeros when there is no chunk."""
    if not need:
        return None
    return (torch.empty if chunks else torch.zeros)(weight.shape, dtype=softmax_dtype(weight), device=weight.device)


def accumulate_grads(grad: LogitGrad, xc: Tensor, weight: Tensor, ids: Tensor, grad_x: Tensor | None, grad_w: Tensor | None,
                     dense_weight: Tensor | None = None, first: bool = False) -> None:  # fmt: skip
    """``grad_x = dz @ weight`` (written into ``grad_x``, the chunk's rows) and
    ``grad_w += dz.T @ xc`` (``first``: ``=``) for ``dz`` given as a ``LogitGrad``;
    ``dense_weight``: ``grad.dense @ weight`` when the caller already has it."""
    dense = grad.dense.to(weight.dtype)  # half precision matmuls take half operands (float32: no copy)
    if grad_x is not None:
        grad_x.copy_(_input_grad(grad, dense, weight, ids, dense_weight))
    if grad_w is not None:
        _add_table_grad(grad, dense, xc, ids, grad_w, first)


def _input_grad(grad: LogitGrad, dense: Tensor, weight: Tensor, ids: Tensor, dense_weight: Tensor | None) -> Tensor:
    product = dense_weight if dense_weight is not None else dense @ weight  # (r, d)
    product = product * grad.scale[:, None].to(product.dtype) if grad.scale is not None else product
    if grad.picked is not None:
        product = product + grad.picked[:, None].to(weight.dtype) * weight[ids]
    return product


def _add_table_grad(grad: LogitGrad, dense: Tensor, xc: Tensor, ids: Tensor, grad_w: Tensor, first: bool) -> None:
    scaled = xc * grad.scale[:, None].to(xc.dtype) if grad.scale is not None else xc
    if dense.dtype == grad_w.dtype:
        torch.mm(dense.T, scaled, out=grad_w) if first else grad_w.addmm_(dense.T, scaled)
    else:  # half precision: the chunk's product in half, the sum in float32
        grad_w.copy_(dense.T @ scaled) if first else grad_w.add_(dense.T @ scaled)
    if grad.picked is not None:
        grad_w.index_add_(0, ids, (xc * grad.picked[:, None].to(xc.dtype)).to(grad_w.dtype))
