"""Turning what users pass (logits, params, ids, values, pairs) into canonical
parts: a tuple of group logits ``(..., n_g)`` and continuous params, checked
against a selector."""

# g - groups, c - continuous dims

from __future__ import annotations

from torch import Tensor

from ._checks import check_finite, check_floating, check_integer, check_tensor, describe
from ._utils import DiscreteContinuous, exists, is_pair
from .selectors import Selector


def split_pair(obj, selector: Selector, name: str):
    """``(discrete, continuous)`` from a pair (mixed) or a bare part."""
    if selector.has_discrete and selector.has_continuous:
        if not (is_pair(obj) or isinstance(obj, list) and len(obj) == 2):  # 0.2.x took 2-element lists too
            raise TypeError(f'{name} must be a (discrete, continuous) pair for a mixed readout (None for a part you leave out), got {describe(obj)}')
        discrete, continuous = obj
    elif isinstance(obj, DiscreteContinuous):
        discrete, continuous = obj
    else:
        discrete, continuous = (obj, None) if selector.has_discrete else (None, obj)
    if exists(discrete) and not selector.has_discrete:
        raise ValueError(f'{name} has a discrete part but the readout (or selector) has no discrete part')
    if exists(continuous) and not selector.has_continuous:
        raise ValueError(f'{name} has a continuous part but the readout (or selector) has no continuous part')
    if not exists(discrete) and not exists(continuous):
        raise ValueError(f'{name} holds neither a discrete nor a continuous part')
    return discrete, continuous


def logit_groups(logits, selector: Selector, name: str) -> tuple[Tensor, ...]:
    """One tensor per group; a single tensor may also hold all groups concatenated."""
    sizes = selector.group_sizes
    if isinstance(logits, Tensor):
        check_floating(logits, name)
        if logits.ndim == 0 or logits.shape[-1] != sum(sizes):
            raise ValueError(f'{name} must have a last axis of size {sum(sizes)} (groups {list(sizes)}), got {describe(logits)}')
        return (logits,) if len(sizes) == 1 else logits.split(list(sizes), dim=-1)
    if not isinstance(logits, (tuple, list)) or len(logits) != len(sizes):
        raise TypeError(f'{name} must be a tensor or a sequence of {len(sizes)} tensors (one per group), got {describe(logits)}')
    for i, (g, n) in enumerate(zip(logits, sizes)):
        check_floating(g, f'{name}[{i}]')
        if g.ndim == 0 or g.shape[-1] != n:
            raise ValueError(f'{name}[{i}] must have a last axis of size {n} (group {i}), got {describe(g)}')
    return tuple(logits)


def continuous_params(params, selector: Selector, num_params: int, name: str) -> Tensor:
    """``(..., c, num_params)``, or ``(..., c)`` when ``num_params`` is 0 (regression)."""
    check_floating(params, name)
    c = selector.num_continuous
    if num_params == 0:
        ok, expected = params.ndim >= 1 and params.shape[-1] == c, f'(..., {c})'
    else:
        ok, expected = params.ndim >= 2 and params.shape[-2:] == (c, num_params), f'(..., {c}, {num_params})'
    if not ok:
        raise ValueError(f'{name} must have shape {expected} for {c} continuous dims, got {describe(params)}')
    return params


def discrete_values(values, selector: Selector, batch_shape, squeeze: bool, name: str) -> Tensor:
    """Ids as ``(..., g)``; a squeezed single group arrives as ``(...)``."""
    values = check_integer(values, name)
    values = values.unsqueeze(-1) if squeeze else values
    expected = (*batch_shape, selector.num_groups)
    if tuple(values.shape) != expected:
        shown = expected[:-1] if squeeze else expected
        raise ValueError(f'{name} must have shape {shown} (one id per group), got {describe(values)}')
    return values


def continuous_values(values, batch_shape, num_continuous: int, name: str) -> Tensor:
    check_tensor(values, name)
    check_floating(values, name)
    expected = (*batch_shape, num_continuous)
    if tuple(values.shape) != expected:
        raise ValueError(f'{name} must have shape {expected} (one value per continuous dim), got {describe(values)}')
    return check_finite(values, name)


def first_tensor(obj) -> Tensor:
    if isinstance(obj, Tensor):
        return obj
    if isinstance(obj, (tuple, list)):
        for item in obj:
            if exists(item):
                return first_tensor(item)
    raise TypeError(f'expected a tensor or a (nested) sequence of tensors, got {type(obj).__name__}')
