"""Loss reductions: masks, ``ignore_index`` and means over entries."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from ._checks import check_tensor, describe
from ._utils import exists


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
    if not exists(mask):
        return per_entry.mean() if reduce else per_entry
    zeroed = per_entry.masked_fill(~mask, 0.0)
    if not reduce:
        return zeroed
    return zeroed.sum() / mask.sum().clamp(min=1)


def regression_loss(pred: Tensor, target: Tensor, kind: str) -> Tensor:
    """Elementwise ``mse`` or ``l1``."""
    fn = F.mse_loss if kind == 'mse' else F.l1_loss
    return fn(pred, target, reduction='none')
