"""Embeddings projected onto a selector's rows of the table: discrete logits per
group and continuous params, in one matmul (``Readout.forward``'s outputs, and the
plain loss's)."""

# g - discrete groups, c - continuous dims, b - bins, d - model dim

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor

from ._utils import DiscreteContinuous, as_dtype_of, take
from .fused.linear_softmax import apply_softcap

__all__ = ['as_params', 'project']


def project(table: Tensor, embed: Tensor, selector, softcap: float | None, num_bins: int, log_var: bool, discrete: bool = True,
            split_params: bool = False) -> DiscreteContinuous:  # fmt: skip
    """``(groups, params)`` of ``embed`` ``(..., d)`` against ``table``'s rows of
    ``selector``, in one matmul, each ``None`` where the selector has no such part
    (or ``discrete=False``); logits soft-capped by ``softcap``, params as ``as_params``
    (``split_params``, for (mean, log-var) params: the pair ``(mean, log_var)``,
    each ``(..., c)``, split off with the logits in one op)."""
    weight = take(table, selector.readout_rows if discrete else selector.continuous_readout_rows)
    out = F.linear(as_dtype_of(embed, weight), weight)  # (..., sum n_g + c * params)
    has_d, has_c = selector.has_discrete and discrete, selector.has_continuous
    if has_d and has_c and softcap is None:  # one split: one node in the backward
        if split_params:
            *groups, mean, log_var = out.split((*selector.group_sizes, selector.num_continuous, selector.num_continuous), dim=-1)
            return DiscreteContinuous(tuple(groups), (mean, log_var))
        *groups, flat = out.split((*selector.group_sizes, out.shape[-1] - selector.num_discrete_rows), dim=-1)
        return DiscreteContinuous(tuple(groups), as_params(flat, num_bins, log_var))
    groups = params = None
    if has_d:  # views of out, sliced and split only where it holds more than one part
        logits = apply_softcap(out[..., : selector.num_discrete_rows] if has_c else out, softcap)
        groups = (logits,) if selector.num_groups == 1 else logits.split(selector.group_sizes, dim=-1)
    if has_c:
        flat = out[..., selector.num_discrete_rows :] if has_d else out
        params = tuple(flat.split(selector.num_continuous, dim=-1)) if split_params else as_params(flat, num_bins, log_var)
    return DiscreteContinuous(groups, params)


def as_params(flat: Tensor, num_bins: int, log_var: bool) -> Tensor:
    """``(..., 2c)`` mean and log-var outputs as ``(..., c, 2)``, a binned head's
    ``(..., c b)`` bin logits as ``(..., c, b)``; regression stays ``(..., c)``."""
    if num_bins:  # '... (c b) -> ... c b'
        return flat.reshape(*flat.shape[:-1], flat.shape[-1] // num_bins, num_bins)
    if log_var:  # '... (two c) -> ... c two'
        return flat.reshape(*flat.shape[:-1], 2, flat.shape[-1] // 2).transpose(-1, -2)
    return flat
