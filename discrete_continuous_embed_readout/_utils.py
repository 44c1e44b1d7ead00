"""Tiny helpers shared by every module (x-transformers style)."""

from __future__ import annotations

from itertools import accumulate
from typing import Any, NamedTuple

import torch


class DiscreteContinuous(NamedTuple):
    """A (discrete, continuous) pair: every mixed result is one.

    Both parts are reachable by name (``out.discrete``) or by unpacking
    (``d, c = out``); a part that does not exist is ``None``.

    Attributes:
        discrete: the discrete part (ids, logits, log-probs, ...), or ``None``.
        continuous: the continuous part (values, params, log-probs, ...), or ``None``.
    """

    discrete: Any
    continuous: Any


def exists(v) -> bool:
    return v is not None


def default(v, d):
    return v if v is not None else d


def identity(t, *args, **kwargs):
    return t


def exclusive_cumsum(sizes) -> list[int]:
    """Offsets of consecutive segments: ``[3, 5, 2] -> [0, 3, 8]``."""
    return [0, *accumulate(sizes)][:-1] if len(sizes) else []


def is_pair(v) -> bool:
    return isinstance(v, tuple) and len(v) == 2


def take(t, index, dim: int = 0):
    """Rows (``dim=0``) or columns (``dim=-1``) of ``t`` at ``index``: a ``slice``
    (a view) or a 1-D index tensor (a gather)."""
    if isinstance(index, slice):
        if index.start == 0 and index.stop == t.shape[dim]:
            return t  # all of it: no view, whose backward would copy the whole gradient
        return t[index] if dim == 0 else t[..., index]
    return t.index_select(dim, index)


def first_tensor(obj):
    """The first tensor in ``obj``: a tensor or a (nested) sequence holding one."""
    if isinstance(obj, torch.Tensor):
        return obj
    if isinstance(obj, (tuple, list)):
        for item in obj:
            if exists(item):
                return first_tensor(item)
    raise TypeError(f'expected a tensor or a (nested) sequence of tensors, got {type(obj).__name__}')


def upcast(t):
    """Half precision tensors as float32 (softmax, noise and sums run in float32)."""
    return t.float() if t.dtype in (torch.float16, torch.bfloat16) else t


def pack(discrete, continuous, mixed: bool, return_only: bool):
    """A per-modality result: the bare part for a one-modality selector, else a
    ``DiscreteContinuous`` pair (bare too with ``return_only`` and a part missing)."""
    if not mixed or (return_only and (discrete is None or continuous is None)):
        return discrete if discrete is not None else continuous
    return DiscreteContinuous(discrete, continuous)


def maybe_concat(output, concat: bool = False):
    """With ``concat``, a (discrete, continuous) pair joined along the last axis
    ``(..., G + c)`` (a squeezed single group counts as one column), in the
    continuous part's dtype; otherwise ``output`` unchanged."""
    if not concat or not isinstance(output, tuple):
        return output
    discrete, continuous = output
    if not exists(discrete) or not exists(continuous):
        return default(discrete, continuous)
    if discrete.ndim == continuous.ndim - 1:
        discrete = discrete.unsqueeze(-1)
    return torch.cat((discrete.to(continuous.dtype), continuous), dim=-1)


def as_rows(t: torch.Tensor) -> torch.Tensor:
    """Logits ``(..., n)`` as ``(rows, n)``, ids ``(...)`` as ``(rows,)`` (``F.cross_entropy``'s
    layout): no view where they already are (a view is one more node in the backward)."""
    if t.is_floating_point():
        return t if t.ndim == 2 else t.reshape(-1, t.shape[-1])
    return t if t.ndim == 1 else t.reshape(-1)


def as_dtype_of(embed: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """Embeddings in the table's dtype (half embeddings into a float32 readout),
    unless autocast chooses the matmul dtype."""
    if embed.dtype == weight.dtype or torch.is_autocast_enabled(embed.device.type):
        return embed
    return embed.to(weight.dtype)
