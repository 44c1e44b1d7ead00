"""Loss reductions (masks, ``ignore_index``, means over entries), and when
``forward`` takes the fused loss (``_fused_loss``) instead of the logits."""

from __future__ import annotations

import torch
from torch import Tensor

from ._checks import check_ids_in_range, check_loss_mask, describe
from ._parse import discrete_values
from ._utils import default, exists
from .fused.loss import NO_OPTIONS, LossOptions, linear_cross_entropy_sum, linear_token_losses


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


FUSED_MIN_GROUP_SIZE = 4096  # several groups: below it, one logits matmul for all groups is cheaper

# the automatic choice, fused_cross_entropy='auto' (see fused_pays)
FUSED_MIN_TOKENS = 256
FUSED_MIN_LOGITS = 1 << 22  # tokens * vocab
FUSED_MIN_LOGITS_BYTES = 64 << 20  # of float32 logits: fused whatever the speed


def fused_pays(tokens: int, vocab: int, dim: int, num_groups: int = 1, on_cpu: bool = True) -> bool:
    """Whether ``forward`` takes the fused loss for ``tokens`` rows of ``num_groups``
    ``vocab``-way softmaxes over ``D = dim`` features (``fused_cross_entropy='auto'``):
    where the float32 logits would take at least ``FUSED_MIN_LOGITS_BYTES`` (64 MiB,
    what the fused path exists to avoid holding, whichever is faster), or where it is
    the faster path: at least ``FUSED_MIN_TOKENS`` rows and ``FUSED_MIN_LOGITS``
    logits (``tokens * vocab``).

    Measured on this project's CPU (``benchmarks/fused_crossover.py``; fused / logits
    time of forward + backward, one thread; rows tokens, columns vocab):

    ========  =====  =====  =====  =====  =====  =====  =====
    D = 64    16     64     256    1024   4096   16384  65536
    ========  =====  =====  =====  =====  =====  =====  =====
    1         3.02   2.95   2.85   2.83   2.31   1.88   1.87
    64        2.72   2.46   2.14   1.44   1.21   1.04   0.78
    256       2.66   2.23   1.48   1.16   1.01   0.80   0.66
    1024      2.15   1.57   1.21   1.03   0.76   0.50
    4096      1.65   1.23   1.03   0.76   0.60
    ========  =====  =====  =====  =====  =====  =====  =====

    At ``D = 512`` the two paths come closer (the three matmuls dominate both): 0.96
    to 1.01 from 256 tokens and 4M logits on, 1.15 to 1.46 below 64 tokens at any
    vocabulary. A 5-action policy head (3× at one row, 1.6× at 4096) never fuses; a
    language model's 32k-128k vocabulary over 256 or more tokens always does (0.70-0.80
    at 2,048 tokens, ``D = 512``, two threads: BENCHMARKS.md). The crossover does not
    move with ``D`` beyond that, so ``dim`` does not enter. With two threads the
    measurement on the shared machine was too noisy to place it more finely (ratios
    0.3-2 around the same cells; ``benchmarks/results/cpu-fused-crossover-*.md``).
    """
    if tokens * vocab * num_groups * 4 >= FUSED_MIN_LOGITS_BYTES:
        return True
    # the speed rule was measured on the CPU; on a GPU (H200, bf16) the fused path was
    # measured slower than the logits path, so there (``on_cpu=False``) memory alone decides
    return on_cpu and tokens >= FUSED_MIN_TOKENS and tokens * vocab >= FUSED_MIN_LOGITS


def can_fuse(fused_cross_entropy, selector, embed: Tensor | None = None) -> bool:
    """Whether ``forward``'s discrete loss takes the fused path: one group, or groups
    all at least ``FUSED_MIN_GROUP_SIZE`` large; and ``fused_cross_entropy`` is
    ``True`` (wherever it applies), or ``'auto'`` and ``fused_pays`` for ``embed``'s rows."""
    if fused_cross_entropy is False:
        return False
    if fused_cross_entropy is not True and fused_cross_entropy != 'auto':
        raise TypeError(f"fused_cross_entropy must be True, False or 'auto', got {describe(fused_cross_entropy)}")
    sizes = selector.group_sizes
    if not selector.has_discrete or (len(sizes) > 1 and min(sizes) < FUSED_MIN_GROUP_SIZE):
        return False
    if fused_cross_entropy is True:
        return True
    dim = embed.shape[-1] if embed is not None else 0
    tokens = embed.numel() // dim if dim else 0
    if tokens < FUSED_MIN_TOKENS and tokens * selector.num_discrete_rows * 4 < FUSED_MIN_LOGITS_BYTES:
        return False  # a policy head's few rows, decided without the call: fused_pays says so on every device
    return fused_pays(tokens, min(sizes), dim, len(sizes), on_cpu=embed is None or embed.device.type == 'cpu')


def fused_discrete_loss(embed: Tensor, weight: Tensor, selector, targets, mask, ignore_index: int | None, squeeze: bool,
                        options: LossOptions = NO_OPTIONS, unreduced: bool = False) -> tuple[Tensor, Tensor]:  # fmt: skip
    """``(loss, z_loss)`` of the discrete ``targets`` (ids ``(...)`` for a squeezed
    single group, else ``(..., g)``), straight from the embeddings: the means over
    the kept entries, or (``unreduced``) per entry with dropped entries 0. ``weight``
    holds the selector's discrete rows, groups concatenated; ``mask`` is the
    ``(...)`` loss mask or ``None``; the loss includes ``z_loss_weight * z_loss``."""
    ids = discrete_values(targets, selector, embed.shape[:-1], squeeze, 'targets', broadcast=True)  # (..., g)
    check_ids_in_range(ids, selector.group_sizes, 'targets', ignore_index, squeeze, owner='readout')
    if ids.shape[:-1] != embed.shape[:-1]:  # targets broadcast against the embeddings, as on the logits path
        batch = torch.broadcast_shapes(ids.shape[:-1], embed.shape[:-1])
        ids, embed = ids.expand(*batch, ids.shape[-1]), embed.expand(*batch, embed.shape[-1])
    keep = entry_mask(ids, check_loss_mask(mask, ids.shape[:-1]), ids != ignore_index if exists(ignore_index) else None)
    keep = default(keep, torch.ones_like(ids, dtype=torch.bool))
    safe = ids.masked_fill(~keep, 0)
    weights = weight.split(list(selector.group_sizes)) if selector.num_groups > 1 else (weight,)
    if unreduced:
        per_group = [linear_token_losses(embed, w, safe[..., g], keep[..., g], options) for g, w in enumerate(weights)]
        loss, z_loss = (torch.stack(parts, dim=-1) for parts in zip(*per_group))
        return (loss.squeeze(-1), z_loss.squeeze(-1)) if squeeze else (loss, z_loss)
    sums = [linear_cross_entropy_sum(embed, w, safe[..., g], keep[..., g], options) for g, w in enumerate(weights)]
    kept = keep.sum().clamp(min=1)
    return sum(s[0] for s in sums) / kept, sum(s[1] for s in sums) / kept
