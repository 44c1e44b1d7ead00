"""Invalid-action masks: boolean, True = allowed, one per discrete group.

A masked action gets the logit ``-inf``: probability exactly 0, never drawn
(sampling, greedy or differentiable), log-prob ``-inf``; entropies and KL sum
over the allowed actions only.
"""

# g - groups, n - actions of a group

from __future__ import annotations

import torch
from torch import Tensor

from ._checks import check_tensor, content_checks_enabled, describe


def _check_one(mask, size: int, batch_shape, name: str) -> Tensor:
    check_tensor(mask, name)
    if mask.dtype != torch.bool:
        raise TypeError(f'{name} must be a bool tensor (True = allowed), got {describe(mask)}')
    if mask.ndim == 0 or mask.shape[-1] != size:
        raise ValueError(f'{name} must have a last axis of size {size} (one flag per action), got {describe(mask)}')
    try:
        broadcast = torch.broadcast_shapes(mask.shape[:-1], batch_shape)
    except RuntimeError:
        broadcast = None
    if broadcast != tuple(batch_shape):
        raise ValueError(f'{name} must broadcast to the batch shape {tuple(batch_shape)} (+ actions), got {describe(mask)}')
    return mask


def split_action_mask(mask, sizes, batch_shape, name: str = 'action_mask') -> tuple[Tensor, ...]:
    """One ``(..., n_g)`` mask per group, from a tensor ``(..., n)`` (one group),
    ``(..., sum n_g)`` (all groups) or a tuple with one mask per group."""
    sizes = list(sizes)
    if isinstance(mask, (tuple, list)):
        if len(mask) != len(sizes):
            raise ValueError(f'{name} must hold one mask per group ({len(sizes)}), got {len(mask)}')
        masks = tuple(_check_one(m, n, batch_shape, f'{name}[{g}]') for g, (m, n) in enumerate(zip(mask, sizes)))
    else:
        masks = _check_one(mask, sum(sizes), batch_shape, name).split(sizes, dim=-1)
    _check_some_allowed(masks, name)
    return masks


def _check_some_allowed(masks, name: str) -> None:
    if not content_checks_enabled(masks[0]):
        return
    for g, m in enumerate(masks):
        if m.numel() == 0 or m.any(-1).all().item():
            continue
        none = ~m.any(-1)
        if bool(none.any()):
            where = tuple(none.nonzero()[0].tolist())
            raise ValueError(f'{name}: group {g} has no allowed action at batch index {where}; every row needs at least one')


def mask_logits(groups, masks) -> tuple[Tensor, ...]:
    """Logits with disallowed actions at ``-inf``."""
    return tuple(g.masked_fill(~m, float('-inf')) for g, m in zip(groups, masks))
