"""What users pass to a readout, parsed against a selector: a ``(discrete,
continuous)`` pair or a bare part, logits as one tensor or one per group, params,
ids, and values whose leading shape broadcasts with the outputs'. Shape and dtype
checks only (they read no values)."""

# g - discrete groups, c - continuous dims

from __future__ import annotations

from torch import Tensor

from ._checks import check_floating, check_integer, check_last_dim, describe
from ._utils import DiscreteContinuous


def check_logit_groups(groups, single: bool):
    """At least one floating ``(..., n_g)`` group, ``n_g > 0``, all with one leading
    shape (``single``: one tensor was passed): returns that shape."""
    if len(groups) == 0:
        raise ValueError('logits must hold at least one group, got an empty sequence')
    for i, g in enumerate(groups):
        check_floating(g, f'logits[{i}]' if not single else 'logits')
        if g.ndim == 0 or g.shape[-1] == 0:
            raise ValueError(f'logits group {i} needs a non-empty last axis, got {describe(g)}')
    batch = groups[0].shape[:-1]
    for i, g in enumerate(groups[1:], 1):
        if g.shape[:-1] != batch:
            raise ValueError(f'logits group {i} has leading shape {tuple(g.shape[:-1])}, group 0 has {tuple(batch)}')
    return batch


# what users pass to a readout, parsed against a selector


def split_pair(obj, selector, name: str):
    """``(discrete, continuous)`` from a pair (mixed) or a bare part."""
    if selector.has_discrete and selector.has_continuous:
        if not (isinstance(obj, (tuple, list)) and len(obj) == 2):  # 0.2.x took 2-element lists too
            raise TypeError(f'{name} must be a (discrete, continuous) pair for a mixed readout (None for a part you leave out), got {describe(obj)}')
        discrete, continuous = obj
    elif isinstance(obj, DiscreteContinuous):
        discrete, continuous = obj
    else:
        discrete, continuous = (obj, None) if selector.has_discrete else (None, obj)
    if discrete is not None and not selector.has_discrete:
        raise ValueError(f'{name} has a discrete part but the readout (or selector) has no discrete part')
    if continuous is not None and not selector.has_continuous:
        raise ValueError(f'{name} has a continuous part but the readout (or selector) has no continuous part')
    if discrete is None and continuous is None:
        raise ValueError(f'{name} holds neither a discrete nor a continuous part')
    return discrete, continuous


def logit_groups(logits, selector, name: str) -> tuple[Tensor, ...]:
    """One tensor per group; a single tensor may also hold all groups concatenated.
    A ``free_width`` selector's one group takes any non-empty width."""
    sizes = selector.group_sizes
    if isinstance(logits, Tensor):
        check_floating(logits, name)
        if selector.free_width:
            return (_check_width(logits, None, name, 'the group\'s ids'),)
        _check_width(logits, sum(sizes), name, f'groups {list(sizes)}')
        return (logits,) if len(sizes) == 1 else logits.split(list(sizes), dim=-1)
    if not isinstance(logits, (tuple, list)) or len(logits) != len(sizes):
        raise TypeError(f'{name} must be a tensor or a sequence of {len(sizes)} tensors (one per group), got {describe(logits)}')
    for i, (g, n) in enumerate(zip(logits, sizes)):
        check_floating(g, f'{name}[{i}]')
        _check_width(g, None if selector.free_width else n, f'{name}[{i}]', f'group {i}')
        if g.shape[:-1] != logits[0].shape[:-1]:
            raise ValueError(f'{name}: group {i} has leading shape {tuple(g.shape[:-1])}, group 0 has {tuple(logits[0].shape[:-1])}')
    return tuple(logits)


def _check_width(logits: Tensor, size: int | None, name: str, what: str) -> Tensor:
    """A last axis of ``size`` (``None``: of any size but 0)."""
    if size is None and (logits.ndim == 0 or logits.shape[-1] == 0):
        raise ValueError(f'{name} must have a non-empty last axis ({what}), got {describe(logits)}')
    if size is not None:
        check_last_dim(logits, size, name, what)
    return logits


def continuous_params(params, c: int, num_params: int, name: str) -> Tensor:
    """``(..., c, num_params)``, or ``(..., c)`` when ``num_params`` is 0 (regression)."""
    check_floating(params, name)
    if num_params == 0:
        ok, expected = params.ndim >= 1 and params.shape[-1] == c, f'(..., {c})'
    else:
        ok, expected = params.ndim >= 2 and params.shape[-2:] == (c, num_params), f'(..., {c}, {num_params})'
    if not ok:
        raise ValueError(f'{name} must have shape {expected} for {c} continuous dims, got {describe(params)}')
    return params


def broadcasts(shape, expected) -> bool:
    """Whether a value of ``shape`` can be scored against ``expected`` = batch shape +
    one trailing axis: the trailing axis equal, the leading axes broadcasting with
    the batch shape as in ``torch.distributions``' ``log_prob`` (size-1 axes expand on
    either side, missing leading axes are added) but never more of them than the
    batch has: ``(3, 1, 1)`` ids against a ``(3,)`` batch are a mistake, not an outer
    product."""
    if len(shape) == 0 or len(shape) > len(expected) or shape[-1] != expected[-1]:
        return False
    return all(a == b or a == 1 or b == 1 for a, b in zip(reversed(shape[:-1]), reversed(expected[:-1])))


def discrete_values(values, selector, batch_shape, squeeze: bool, name: str, *, broadcast: bool = False) -> Tensor:
    """Ids as ``(..., g)``; a squeezed single group arrives as ``(...)``. With
    ``broadcast``, the leading shape need only broadcast with ``batch_shape``
    (``broadcasts``), the ids come back unexpanded, and a squeezed group's ids may
    keep their trailing axis of 1 (as ``MultiCategorical.log_prob`` takes them),
    which is then never read as one more batch axis."""
    values_passed, passed = values, check_integer(values, name)
    explicit = broadcast and passed.ndim == len(batch_shape) + 1 and passed.shape[-1] == 1
    values = passed.unsqueeze(-1) if squeeze and not explicit else passed
    expected = (*batch_shape, selector.num_groups)
    if tuple(values.shape) != expected and not (broadcast and broadcasts(values.shape, expected)):
        shown = expected[:-1] if squeeze else expected
        also = ' or one that broadcasts with it' if broadcast else ''
        raise ValueError(f'{name} must have shape {shown}{also} (one id per group), got {describe(values_passed)}')
    return values
