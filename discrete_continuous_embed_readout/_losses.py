"""Loss reductions (masks, ``ignore_index``, means over entries) and the fused
linear + cross-entropy loss that never holds the ``(tokens, vocab)`` logits."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from ._checks import check_ids_in_range, check_tensor, describe, discrete_values, functorch_active
from ._utils import default, exists


def check_loss_mask(mask, batch_shape, name: str = 'loss_mask') -> Tensor | None:
    """``mask`` is ``None`` or a bool tensor of the batch shape ``(...)``."""
    if not exists(mask):
        return None
    check_tensor(mask, name)
    if mask.dtype != torch.bool:
        raise TypeError(f'{name} must be a bool tensor (True = keep), got {describe(mask)}')
    if mask.shape != batch_shape:
        raise ValueError(f'{name} must have the batch shape {tuple(batch_shape)}, got {describe(mask)}')
    return mask


def entry_mask(per_entry: Tensor, loss_mask: Tensor | None, keep: Tensor | None = None) -> Tensor | None:
    """Combine a batch mask ``(...)`` with a per-entry mask ``(..., k)``."""
    if exists(loss_mask):
        loss_mask = loss_mask.unsqueeze(-1).expand_as(per_entry)
        return loss_mask & keep if exists(keep) else loss_mask
    return keep


def masked_loss(per_entry: Tensor, mask: Tensor | None, reduce: bool) -> Tensor:
    """Zero the masked entries; reduced: the mean over the kept entries (0 if none).

    Args:
        per_entry: ``(..., k)`` losses.
        mask: ``(..., k)`` bool, True = keep, or ``None``.
        reduce: return the scalar mean instead of the zeroed entries.
    """
    if not exists(mask):  # the mean over no entries (an empty batch) is 0, with zero gradients
        return per_entry.sum() / max(per_entry.numel(), 1) if reduce else per_entry
    zeroed = per_entry.masked_fill(~mask, 0.0)
    if not reduce:
        return zeroed
    return zeroed.sum() / mask.sum().clamp(min=1)


def regression_loss(pred: Tensor, target: Tensor, kind: str) -> Tensor:
    """Elementwise ``mse`` or ``l1``."""
    fn = F.mse_loss if kind == 'mse' else F.l1_loss
    return fn(pred, target, reduction='none')


# fused linear + cross entropy: never materialise the (tokens, vocab) logits

MIN_CHUNK_ROWS = 256  # fewer rows per chunk make the table-gradient updates memory bound
CHUNK_ELEMENTS = 1 << 21


def chunk_rows(num_rows: int, vocab: int) -> int:
    return max(1, min(num_rows, max(MIN_CHUNK_ROWS, CHUNK_ELEMENTS // max(vocab, 1))))


def _chunk_logits(xc: Tensor, weight: Tensor, buffer: Tensor) -> Tensor:
    logits = buffer[: xc.shape[0]]
    if xc.dtype == buffer.dtype:
        return torch.mm(xc, weight.T, out=logits)
    return logits.copy_(F.linear(xc, weight))  # half precision matmul, float32 softmax


class _LinearCrossEntropySum(torch.autograd.Function):
    """Sum over kept rows of ``-log softmax(x @ W.T)[target]``, chunk by chunk.

    The gradients of x and W are computed in the same pass (softmax minus the
    one-hot, times the rows' keep weights) and saved, so backward is one scale;
    the full logits never exist, one chunk buffer (float32, or float64 for
    float64 inputs) is reused. With ``create_graph=True`` backward recomputes the
    gradients chunk by chunk with differentiable ops instead, so that second
    derivatives are exact. Called only when a gradient is wanted and no
    ``torch.func`` transform is active (see ``linear_cross_entropy_sum``).
    """

    @staticmethod
    def forward(ctx, x: Tensor, weight: Tensor, targets: Tensor, keep: Tensor, rows: int):
        need_x, need_w = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
        dtype = _softmax_dtype(weight)
        grad_x = torch.empty_like(x) if need_x else None
        grad_w = torch.zeros(weight.shape, dtype=dtype, device=weight.device) if need_w else None
        buffer = torch.empty(min(rows, x.shape[0]), weight.shape[0], dtype=dtype, device=x.device)
        total = torch.zeros((), dtype=dtype, device=x.device)
        for start in range(0, x.shape[0], rows):
            xc, t, k = x[start : start + rows], targets[start : start + rows, None], keep[start : start + rows]
            logits = _chunk_logits(xc, weight, buffer)  # (rows, vocab)
            picked = logits.gather(1, t).squeeze(1)
            top = logits.amax(dim=-1)
            probs = logits.sub_(top[:, None]).exp_()  # in place: the buffer now holds exp(l - max)
            norm = probs.sum(dim=-1)
            total = total + ((top + norm.log() - picked) * k).sum()
            grad = probs.mul_((k / norm)[:, None]).scatter_add_(1, t, -k[:, None]).to(weight.dtype)
            if need_x:
                torch.mm(grad, weight, out=grad_x[start : start + rows])
            if need_w and grad.dtype == grad_w.dtype:
                grad_w.addmm_(grad.T, xc)
            elif need_w:  # half precision: the chunk's product in half, the sum in float32
                grad_w.add_(grad.T @ xc)
        ctx.save_for_backward(grad_x, grad_w, x, weight, targets, keep)
        ctx.rows = rows
        return total

    @staticmethod
    def backward(ctx, grad_out: Tensor):
        grad_x, grad_w, x, weight, targets, keep = ctx.saved_tensors
        if torch.is_grad_enabled():  # create_graph=True: gradients as differentiable functions of x and W
            grad_x, grad_w = _differentiable_grads(x, weight, targets, keep, ctx.rows, ctx.needs_input_grad[:2])
        # out of place, so that a second backward (retain_graph, gradcheck) still works
        if grad_x is not None:
            grad_x = grad_x * grad_out.to(grad_x.dtype)
        if grad_w is not None:
            grad_w = (grad_w * grad_out).to(weight.dtype)
        return grad_x, grad_w, None, None, None


def _softmax_dtype(weight: Tensor) -> torch.dtype:
    return torch.promote_types(weight.dtype, torch.float32)  # float32, or float64 for float64 models


def _differentiable_grads(x, weight, targets, keep, rows, needs):
    """The fused forward's gradients, chunk by chunk with autograd-tracked ops."""
    dtype = _softmax_dtype(weight)
    grad_xs, grad_w = [], None
    for start in range(0, x.shape[0], rows):
        xc, t, k = x[start : start + rows], targets[start : start + rows], keep[start : start + rows, None]
        probs = F.linear(xc, weight).to(dtype).softmax(-1)
        minus_one = torch.full((t.shape[0], 1), -1.0, dtype=dtype, device=probs.device)
        grad = (probs.scatter_add(1, t[:, None], minus_one) * k).to(weight.dtype)  # (softmax - one-hot) * keep
        grad_xs.append(grad @ weight)
        grad_w = grad.T @ xc if grad_w is None else grad_w + grad.T @ xc
    grad_x = torch.cat(grad_xs) if grad_xs else torch.zeros_like(x)
    grad_w = grad_w.to(dtype) if grad_w is not None else torch.zeros(weight.shape, dtype=dtype, device=weight.device)
    return (grad_x if needs[0] else None), (grad_w if needs[1] else None)


def _nll_sum(x: Tensor, weight: Tensor, targets: Tensor, keep: Tensor, rows: int) -> Tensor:
    """The forward of ``_LinearCrossEntropySum`` alone: no gradient is wanted."""
    dtype = _softmax_dtype(weight)
    buffer = torch.empty(min(rows, x.shape[0]), weight.shape[0], dtype=dtype, device=x.device)
    total = torch.zeros((), dtype=dtype, device=x.device)
    for start in range(0, x.shape[0], rows):
        logits = _chunk_logits(x[start : start + rows], weight, buffer)
        picked = logits.gather(1, targets[start : start + rows, None]).squeeze(1)
        top = logits.amax(dim=-1)
        norm = logits.sub_(top[:, None]).exp_().sum(dim=-1)  # in place, as the forward with gradients
        total = total + ((top + norm.log() - picked) * keep[start : start + rows]).sum()
    return total


FUSED_MIN_GROUP_SIZE = 4096  # below it, one logits matmul for all groups is cheaper


def can_fuse(fused_cross_entropy: bool, selector) -> bool:
    """Whether ``forward``'s reduced discrete loss takes the fused path: one group,
    or groups all at least ``FUSED_MIN_GROUP_SIZE`` large."""
    sizes = selector.group_sizes
    return fused_cross_entropy and selector.has_discrete and (len(sizes) == 1 or min(sizes) >= FUSED_MIN_GROUP_SIZE)


def fused_discrete_loss(embed: Tensor, weight: Tensor, selector, targets, mask, ignore_index: int | None, squeeze: bool) -> Tensor:
    """The mean cross entropy over the kept entries of ``targets`` (ids ``(...)``
    for a squeezed single group, else ``(..., g)``), straight from the embeddings:
    ``weight`` holds the selector's discrete rows, groups concatenated; ``mask``
    is the ``(...)`` loss mask or ``None``."""
    ids = discrete_values(targets, selector, embed.shape[:-1], squeeze, 'targets')  # (..., g)
    check_ids_in_range(ids, selector.group_sizes_t, 'targets', ignore_index, squeeze)
    keep = entry_mask(ids, check_loss_mask(mask, ids.shape[:-1]), ids != ignore_index if exists(ignore_index) else None)
    keep = default(keep, torch.ones_like(ids, dtype=torch.bool))
    safe = ids.masked_fill(~keep, 0)
    weights = weight.split(list(selector.group_sizes))
    total = sum(linear_cross_entropy_sum(embed, w, safe[..., g], keep[..., g]) for g, w in enumerate(weights))
    return total / keep.sum().clamp(min=1)


def linear_cross_entropy_sum(x: Tensor, weight: Tensor, targets: Tensor, keep: Tensor) -> Tensor:
    """``sum(keep * cross_entropy(x @ weight.T, targets))`` without the logits.

    Without a gradient to compute (``torch.no_grad``, or neither ``x`` nor
    ``weight`` requires one) only the loss is computed. Under ``torch.func``
    transforms (``grad``, ``vmap``) the plain differentiable formulation runs:
    it materialises the ``(tokens, vocab)`` logits, as autograd needs them.

    Args:
        x: ``(..., d)`` inputs.
        weight: ``(vocab, d)`` rows.
        targets: ``(...)`` ids in ``[0, vocab)`` (ignored rows may hold any valid id).
        keep: ``(...)`` 0/1 weights of the rows.
    """
    x = x.reshape(-1, x.shape[-1])
    if torch.is_autocast_enabled(x.device.type):
        dtype = torch.get_autocast_dtype(x.device.type)
        x, weight = x.to(dtype), weight.to(dtype)
    elif x.dtype != weight.dtype:
        x = x.to(weight.dtype)
    with torch.autocast(x.device.type, enabled=False):
        rows = chunk_rows(x.shape[0], weight.shape[0])
        keep = keep.reshape(-1).to(_softmax_dtype(weight))
        targets = targets.reshape(-1)
        if functorch_active():
            logits = F.linear(x, weight).to(keep.dtype)
            return (F.cross_entropy(logits, targets, reduction='none') * keep).sum()
        if not (torch.is_grad_enabled() and (x.requires_grad or weight.requires_grad)):
            return _nll_sum(x, weight, targets, keep, rows)
        return _LinearCrossEntropySum.apply(x, weight, targets, keep, rows)
