"""The loss of ``forward(embed, targets)`` in the common case, straight on the
projected outputs: a plain reduced loss (no loss mask, action mask, ``unimix``,
label smoothing or z-loss, ``ignore_index`` set) on the CPU with content checks on.
Every other case, and every input this route cannot vouch for, goes on to the
``ReadoutDistribution`` route (``_distribution_losses.py``), which gives the same
values and raises the same errors.

The discrete part is one ``F.cross_entropy`` (several groups: over their logits
padded with ``-inf`` to the widest group, one row per group), which on the CPU itself
raises on an id outside ``[0, widest)`` other than ``ignore_index``: the targets' clear
error is then found and raised from there, so the happy path reads no ids. An id
inside the padding scores ``-inf`` and a batch of ignored ids gives NaN: the loss is
read once (a CPU scalar), and where it is not finite the general route decides.
"""

# g - discrete groups, c - continuous dims

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from ._checks import check_ids_in_range, check_integer, reads_checked_for_free
from ._parse import discrete_values, split_pair
from ._utils import as_rows, pack, upcast
from .heads.part import ContinuousPart
from .readout_distribution import DistConfig

__all__ = ['plain_loss']


def plain_loss(readout, outputs, embed: Tensor, targets, selector, mask, unreduced: bool, return_only: bool, action_mask,
               return_z_loss: bool) -> Tensor | tuple | None:  # fmt: skip
    """The mean loss per part of ``readout``'s projected ``outputs`` (``(groups,
    params)``) against ``targets``, as ``ReadoutDistribution.loss`` gives it;
    ``None`` where the general route must decide: other options or arguments,
    content checks off or costly (an accelerator), targets that broadcast, an
    empty batch, a non-finite discrete loss."""
    if (mask is not None or unreduced or action_mask is not None or return_z_loss or selector.free_width or readout.ignore_index is None
            or readout.unimix or readout.label_smoothing or readout.z_loss_weight or not reads_checked_for_free(embed)):  # fmt: skip
        return None
    groups, params = outputs
    d_target, c_target = split_pair(targets, selector, 'targets')
    d_loss = c_loss = None
    if d_target is not None:
        squeeze = readout.auto_squeeze_single_output and selector.num_groups == 1
        if (d_loss := _mean_cross_entropy(groups, d_target, selector, readout.ignore_index, squeeze)) is None:
            return None
    if c_target is not None:
        per_entry = ContinuousPart.build(params, DistConfig.of(readout), selector, None, 'logits').loss(c_target)  # (..., c)
        if per_entry.numel() == 0:
            return None
        c_loss = per_entry.mean()
    return pack(d_loss, c_loss, selector.has_discrete and selector.has_continuous, return_only)


def _mean_cross_entropy(groups, targets, selector, ignore_index: int, squeeze: bool) -> Tensor | None:
    """The summed cross entropy over every group and entry, over the count of ids
    not ``ignore_index``; ``None`` where the general route must decide."""
    batch = groups[0].shape[:-1]
    ids = check_integer(targets, 'targets') if squeeze else None
    if ids is None or ids.shape != batch or not batch.numel():  # the general parse: its errors, a trailing axis of 1, broadcasting
        ids = discrete_values(targets, selector, batch, squeeze, 'targets', broadcast=True)  # (..., g)
        if ids.shape[:-1] != batch or ids.numel() == 0:
            return None
    logits = groups[0] if len(groups) == 1 else _padded(groups, selector)  # (..., n) or (..., g, widest)
    try:
        loss = F.cross_entropy(as_rows(upcast(logits)), as_rows(ids), ignore_index=ignore_index)
    except (IndexError, RuntimeError):  # an id out of range: say which, in the user's terms
        check_ids_in_range(ids if ids.ndim > len(batch) else ids.unsqueeze(-1), selector.group_sizes, 'targets', ignore_index, squeeze, owner='readout')
        raise
    return loss if math.isfinite(loss.item()) else None


def _padded(groups, selector) -> Tensor:
    """The groups' logits ``(..., g, widest)``, each padded with ``-inf`` (one gather
    of the concatenated logits and a ``-inf`` column)."""
    flat = torch.cat((*groups, groups[0].new_full((*groups[0].shape[:-1], 1), float('-inf'))), dim=-1)
    index = selector.padded_columns  # (g * widest,): the columns of each group, then the -inf column
    return flat.index_select(-1, index).unflatten(-1, (selector.num_groups, -1))
