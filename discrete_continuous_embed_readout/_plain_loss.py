"""The loss of ``forward(embed, targets)`` in the common case, straight from the
embeddings: a plain reduced loss (no loss mask, action mask, ``unimix``, label
smoothing or z-loss; ``ignore_index`` set; targets of the embeddings' batch shape)
on the CPU with content checks on. Every other case, and every input this route
cannot vouch for, goes on to the ``ReadoutDistribution`` route
(``_distribution_losses.py``), which gives the same values and raises the same errors.

The discrete part is one ``F.cross_entropy``, which on the CPU itself raises on an id
outside ``[0, n)`` other than ``ignore_index``: the targets' clear error is then found
and raised from there, so the happy path reads no ids. Several groups are scored as one
softmax per group over rows widened to the widest group, the padding's logits ``-inf``
(one matmul with a ``-inf`` bias): an id inside a group's padding scores ``-inf`` and a
batch of ignored ids gives NaN, so the loss is read once (a CPU scalar) and where it is
not finite the general route decides.

The continuous part of a plain gaussian head (no ``continuous_mean_std``, no
``continuous_range``, not squashed) is its negative log-density in native units from
the mean and log-variance split off with the logits (one op), computed by the same ops
as its ``ContinuousPart`` (the same values and gradients). Its mean is read once: a
non-finite target makes it non-finite, and only then does the ``ContinuousPart``
check the targets (and name a non-finite one) or return the same non-finite loss.
"""

# g - discrete groups, c - continuous dims

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from ._checks import check_ids_in_range, check_integer, reads_checked_for_free
from ._parse import discrete_values, split_pair
from ._projection import project
from ._utils import as_dtype_of, as_rows, pack, take, upcast
from .fused.linear_softmax import apply_softcap
from .heads.gaussian import Gaussian, gaussian_nll
from .heads.part import ContinuousPart
from .readout_distribution import DistConfig

__all__ = ['plain_loss']

# from this many rows the logits are class-major (see _discrete_logits): one group, several
CLASS_MAJOR_MIN_ROWS = 512
CLASS_MAJOR_MIN_ROWS_GROUPS = 64


def plain_loss(readout, embed: Tensor, targets, selector, mask, unreduced: bool, return_only: bool, action_mask,
               return_z_loss: bool) -> Tensor | tuple | None:  # fmt: skip
    """The mean loss per part of ``readout(embed, targets)``, as
    ``ReadoutDistribution.loss`` gives it; ``None`` where the general route must
    decide: other options or arguments, content checks off or costly (an
    accelerator), targets that broadcast, an empty batch, a non-finite discrete loss."""
    if (mask is not None or unreduced or action_mask is not None or return_z_loss or selector.free_width or readout.ignore_index is None
            or readout.unimix or readout.label_smoothing or readout.z_loss_weight or not reads_checked_for_free(embed)):  # fmt: skip
        return None
    d_target, c_target = split_pair(targets, selector, 'targets')
    squeeze, batch = readout.auto_squeeze_single_output and selector.num_groups == 1, embed.shape[:-1]
    ids = _ids(d_target, selector, batch, squeeze) if d_target is not None else None
    if d_target is not None and ids is None:
        return None
    if selector.num_groups > 1 and (selector.has_continuous or readout.logit_softcap is not None):
        return None  # several groups: widened with -inf, which a soft-cap would make finite
    lean = c_target is not None and _lean_gaussian(readout, selector, c_target, batch)
    if ids is not None and (not selector.has_continuous or selector.num_groups > 1 or embed.numel() >= CLASS_MAJOR_MIN_ROWS * embed.shape[-1]):
        logits, target = _discrete_logits(readout, embed, ids, selector)  # its own matmul; the params' (if any) apart
        params = _project(readout, embed, selector, False, lean).continuous if c_target is not None else None
    else:  # a mixed head's few rows: one matmul, split
        groups, params = _project(readout, embed, selector, True, lean)
        logits, target = (as_rows(groups[0]), as_rows(ids)) if ids is not None else (None, None)
    d_loss = c_loss = None
    if ids is not None and (d_loss := _mean_cross_entropy(logits, target, ids, selector, readout.ignore_index, squeeze)) is None:
        return None
    if c_target is not None and (c_loss := _continuous_loss(readout, selector, params, c_target)) is None:
        return None
    return pack(d_loss, c_loss, selector.has_discrete and selector.has_continuous, return_only)


def _project(readout, embed: Tensor, selector, discrete: bool = True, split_params: bool = False):
    return project(readout._table_weight(), embed, selector, readout.logit_softcap, readout.layout.num_bins, readout.continuous_log_var_embed, discrete,
                   split_params)  # fmt: skip


def _lean_gaussian(readout, selector, values, batch) -> bool:
    """Whether the continuous loss is the plain gaussian's negative log-density in
    native units (no ``continuous_mean_std``, no ``continuous_range``, not squashed,
    (mean, log-var) params) of targets that are a non-empty floating tensor of the
    batch shape: ``_continuous_loss`` then scores them without a ``ContinuousPart``."""
    buffers = readout._buffers
    return (type(readout._modules.get('continuous_dist')) is Gaussian and not selector.squashed and readout.continuous_log_var_embed
            and buffers['continuous_mean_std'] is None and buffers['continuous_range'] is None and isinstance(values, Tensor)
            and values.is_floating_point() and values.shape == (*batch, selector.num_continuous) and values.numel() > 0)  # fmt: skip


def _continuous_loss(readout, selector, params, values) -> Tensor | None:
    """The mean loss of the continuous ``values``; ``None`` for an empty batch (the
    general route's 0). ``params`` as a ``(mean, log_var)`` pair (``_lean_gaussian``):
    the gaussian's negative log-density as ``ContinuousPart.loss`` computes it (the
    same ops, values and gradients); its mean is read once, and where it is not
    finite (a non-finite target, or params) the ``ContinuousPart`` decides: it names
    a non-finite target, or returns the same loss."""
    if isinstance(params, tuple):
        mean, log_var = upcast(params[0]), upcast(params[1])
        head = readout._modules['continuous_dist']
        loss = gaussian_nll(mean, head.clamped_log_var(log_var), upcast(values)).mean()
        if math.isfinite(loss.item()):
            return loss
        params = torch.stack(params, dim=-1)  # (..., c, 2)
    per_entry = ContinuousPart.build(params, DistConfig.of(readout), selector, None, 'logits').loss(values)  # (..., c)
    return per_entry.mean() if per_entry.numel() > 0 else None


def _ids(targets, selector, batch, squeeze: bool) -> Tensor | None:
    """The targets' ids, ``(...)`` for a squeezed group, else ``(..., g)``; ``None``
    where they broadcast against the batch or there are none."""
    ids = check_integer(targets, 'targets') if squeeze else None
    if ids is None or ids.shape != batch:  # the general parse: its errors, a trailing axis of 1, broadcasting
        ids = discrete_values(targets, selector, batch, squeeze, 'targets', broadcast=True)  # (..., g)
        if ids.shape[:-1] != batch:
            return None
    return ids if ids.numel() > 0 else None


def _mean_cross_entropy(logits: Tensor, target: Tensor, ids: Tensor, selector, ignore_index: int, squeeze: bool) -> Tensor | None:
    """The summed cross entropy over every group and entry, over the count of ids
    not ``ignore_index``, of ``logits`` and ``target`` as ``F.cross_entropy`` takes
    them; ``None`` where it is not finite."""
    try:
        loss = F.cross_entropy(upcast(logits), target, ignore_index=ignore_index)
    except (IndexError, RuntimeError):  # an id out of range: say which, in the user's terms
        check_ids_in_range(ids if selector.num_groups > 1 or not squeeze else ids.unsqueeze(-1), selector.group_sizes, 'targets', ignore_index, squeeze,
                           owner='readout')  # fmt: skip
        raise
    return loss if math.isfinite(loss.item()) else None


def _discrete_logits(readout, embed: Tensor, ids: Tensor, selector) -> tuple[Tensor, Tensor]:
    """``(logits, target)`` for ``F.cross_entropy`` from one matmul of the discrete
    rows; several groups are widened to the widest, their padding ``-inf`` (a bias;
    the padding's rows get gradient 0: their probability is 0). From
    ``CLASS_MAJOR_MIN_ROWS`` rows on (``CLASS_MAJOR_MIN_ROWS_GROUPS`` for several
    groups) the logits are class-major, ``(g, widest, rows)`` against ``(g, rows)``
    targets: the softmax over a non-last axis runs along the rows, measured up to
    twice as fast as one over short rows at 1,024 rows (one thread); below it
    ``(rows g, widest)`` against ``(rows g,)``."""
    g, softcap = selector.num_groups, readout.logit_softcap
    weight = take(readout._table_weight(), selector.padded_rows if g > 1 else selector.discrete_rows)  # (g widest, d)
    x = as_dtype_of(embed, weight)
    if g == 1 and x.ndim == 2 and ids.ndim == 1 and x.shape[0] < CLASS_MAJOR_MIN_ROWS:  # the common case: (rows, n), (rows,)
        return apply_softcap(F.linear(x, weight), softcap), ids
    rows = x.numel() // x.shape[-1]
    if g == 1 and rows < CLASS_MAJOR_MIN_ROWS:  # (rows, n) against (rows,), no view where there are
        return as_rows(apply_softcap(F.linear(x, weight), softcap)), as_rows(ids)
    bias = _padding_bias(selector.group_sizes, weight.dtype, weight.device) if g > 1 else None
    if g > 1 and rows < CLASS_MAJOR_MIN_ROWS_GROUPS:
        return F.linear(x, weight, bias).reshape(-1, weight.shape[0] // g), ids.reshape(-1)
    x = x.reshape(rows, x.shape[-1]).t()
    out = torch.mm(weight, x) if bias is None else torch.addmm(bias[:, None], weight, x)  # (g widest, rows)
    return apply_softcap(out, softcap).view(g, -1, rows), ids.reshape(rows, g).t()


_PADDING_BIASES: dict = {}


def _padding_bias(sizes: tuple[int, ...], dtype: torch.dtype, device: torch.device) -> Tensor:
    """``(g * widest,)``: 0 on each group's ids, ``-inf`` on its padding; built once
    per sizes, dtype and device."""
    key = (sizes, dtype, device)
    if key not in _PADDING_BIASES:
        widest = max(sizes)
        bias = [0.0 if i < n else float('-inf') for n in sizes for i in range(widest)]
        _PADDING_BIASES[key] = torch.tensor(bias, dtype=dtype, device=device)
    return _PADDING_BIASES[key]
