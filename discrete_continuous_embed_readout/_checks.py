"""User-input checks: clear errors that name the argument, what was expected
and what arrived.

Checks of shapes, dtypes and configs read no tensor values: they are free and
always run. Checks of tensor *contents* (ids in range, finite values, values
inside a head's support, an allowed action in every mask row) read values, which
on an accelerator means waiting for the device (a host synchronisation). Like
``torch.distributions``' ``validate_args``, one switch, ``set_validate_args``,
decides where they run:

- ``'auto'`` (the default): on CPU tensors, where reading a value costs no wait,
  they run and raise clear errors; on tensors of any other device (CUDA, MPS, ...)
  they are skipped, so that no call of the default path waits for the device.
  A wait per call stalls the pipeline of a training or acting loop, and the
  device-side alternative (``torch._assert_async``) kills the CUDA context on a
  failure instead of raising; Stable-Baselines3 and TorchRL skip such checks on
  the GPU for the same reason. Debug a GPU run on the CPU, or with ``True``.
- ``True``: everywhere, accelerators included (each check waits for the device).
- ``False``: nowhere; the caller vouches for the contents.

They are also skipped while ``torch.compile`` traces, where a data-dependent
branch would break the graph, and under ``torch.func`` transforms, where a batched
tensor has no single truth value. Where a device "syncs" is decided by one
private hook, ``syncs_on_read``, which the tests patch to run the accelerator's
path on the CPU.
"""

from __future__ import annotations

import math
import numbers
import warnings

import torch
from beartype import BeartypeConf, beartype
from torch import Tensor

from ._utils import DiscreteContinuous

# type checks of constructor arguments: a TypeError naming the parameter, its
# type hint and the value received (ints are accepted where floats are)
typecheck = beartype(conf=BeartypeConf(violation_param_type=TypeError, is_pep484_tower=True))

_validate_args: bool | str = 'auto'


def set_validate_args(value: bool | str) -> None:
    """Choose where the content checks run.

    Content checks read tensor values: ids and targets lie inside their group's
    range, continuous inputs and values are finite and inside a head's support,
    every action-mask row allows an action. Reading a value on an accelerator waits
    for the device (a host synchronisation, which stalls the pipeline of every
    call), and a device-side assert would kill the CUDA context instead of raising,
    so by default they run on the CPU only, as Stable-Baselines3 and TorchRL do.

    Args:
        value: ``'auto'`` (the default): check CPU tensors, skip the checks on any
            other device, so that the default path never waits for the device;
            ``True``: check on every device (a host synchronisation per check on an
            accelerator: for debugging); ``False``: never check (the caller
            vouches for the contents).

    Raises:
        TypeError: ``value`` is neither a bool nor ``'auto'``.

    Examples:
        >>> set_validate_args(True)    # debugging a CUDA run: check there too
        >>> set_validate_args('auto')  # back to the default
    """
    global _validate_args
    if not (isinstance(value, bool) or value == 'auto'):
        raise TypeError(f"set_validate_args: value must be a bool or 'auto', got {describe(value)}")
    _validate_args = value


def get_validate_args() -> bool | str:
    """Where content checks run (see ``set_validate_args``).

    Returns:
        ``'auto'`` (the default: CPU tensors are checked, others are not), ``True``
        (every device) or ``False`` (none). ``'auto'`` is truthy, as ``True``
        was the default before it, so ``if get_validate_args():`` still reads
        "checks are on", and ``set_validate_args(get_validate_args())`` restores
        a setting. Checks are skipped while ``torch.compile`` traces whatever
        this returns.
    """
    return _validate_args


def functorch_active() -> bool:
    """Whether a ``torch.func`` transform (``grad``, ``vmap``, ...) is running."""
    return torch._C._functorch.peek_interpreter_stack() is not None


def syncs_on_read(device: torch.device) -> bool:
    """Whether reading a value of a tensor on ``device`` waits for the device: on
    every device but the CPU. The one place that decides it (the tests patch it
    to take the accelerator's path on the CPU)."""
    return device.type != 'cpu'


def may_sync(t: Tensor) -> bool:
    """Whether reading ``t``'s values would wait for its device."""
    return syncs_on_read(t.device)


def content_checks_enabled(t: Tensor | None = None) -> bool:
    """Whether to check the contents of ``t`` (``None``: host data, e.g. numpy).

    Data-dependent checks also step aside while torch.compile traces and under
    torch.func transforms (a batched tensor has no single truth value).
    """
    if _validate_args is False or torch.compiler.is_compiling() or functorch_active():
        return False
    return _validate_args is True or t is None or not syncs_on_read(t.device)


def describe(t) -> str:
    if isinstance(t, Tensor):
        return f'a tensor of shape {tuple(t.shape)} and dtype {t.dtype}'
    if isinstance(t, (tuple, list)):
        return f'a {type(t).__name__} of {len(t)} items'
    return f'{type(t).__name__} {t!r}'


def check_tensor(t, name: str) -> Tensor:
    if not isinstance(t, Tensor):
        raise TypeError(f'{name} must be a torch.Tensor, got {describe(t)}')
    return t


def check_integer(t, name: str) -> Tensor:
    """Integer ids of any integer dtype (int8 ... int64, uint8: gymnasium's
    MultiBinary / MultiDiscrete samples are int8), returned as ``torch.long``."""
    check_tensor(t, name)
    if t.dtype.is_floating_point or t.dtype.is_complex or t.dtype == torch.bool:
        raise TypeError(f'{name} must hold integer ids (e.g. torch.long), got {describe(t)}')
    return t if t.dtype == torch.long else t.long()


def check_floating(t, name: str) -> Tensor:
    check_tensor(t, name)
    if not t.dtype.is_floating_point:
        raise TypeError(f'{name} must be a floating point tensor, got {describe(t)}')
    return t


def check_last_dim(t: Tensor, size: int, name: str, what: str) -> Tensor:
    if t.ndim == 0 or t.shape[-1] != size:
        raise ValueError(f'{name} must have a last axis of size {size} ({what}), got {describe(t)}')
    return t


def check_ids_in_range(ids: Tensor, sizes, name: str, ignore_index: int | None = None, group_axis_added: bool = False, *,
                       owner: str | None = None) -> bool:  # fmt: skip
    """``ids`` is ``(..., g)``; id of group g must lie in ``[0, sizes[g])``.

    ``sizes`` is a sequence of ints (or a tensor). Raises IndexError naming the
    first offending id, where it is and the range, in the shape the user passed
    (``group_axis_added``: the trailing group axis was added to a single group's ids).
    ``owner``: what takes ``ignore_index`` (``'readout'``); an id of -100 (Hugging
    Face's label padding) then gets a hint to construct it with ``ignore_index=-100``.
    Returns whether every id was found inside ``[0, sizes[g])`` (so none equals a
    negative ``ignore_index``); ``False`` where that is unknown (checks skipped) or
    some id is the ``ignore_index``.
    """
    if ids.numel() == 0 or not content_checks_enabled(ids):
        return False
    sizes = tuple(sizes.tolist()) if isinstance(sizes, Tensor) else tuple(sizes)
    if _ids_surely_in_range(ids, sizes):
        return True
    bad = (ids < 0) | (ids >= _long_tensor(sizes, ids.device))
    if exists_ignore := ignore_index is not None:
        bad &= ids != ignore_index
    if not bool(bad.any()):
        return False
    where = tuple(bad.nonzero()[0].tolist())
    group = where[-1]
    allowed = f' or ignore_index {ignore_index}' if exists_ignore else ''
    value, size = int(ids[where]), int(sizes[group])
    hint = ''
    if owner is not None and value == HF_IGNORE_INDEX:
        hint = f"; -100 is Hugging Face's label padding: to skip those entries, construct the {owner} with ignore_index=-100"
    if group_axis_added:
        shown = f'a tensor of shape {tuple(ids.shape[:-1])} and dtype {ids.dtype}'
        raise IndexError(f'{name}: id {value} at index {where[:-1]} is out of range; expected 0 <= id < {size}{allowed} (got {shown}){hint}')
    raise IndexError(f'{name}: id {value} at index {where} is out of range for group {group}; expected 0 <= id < {size}{allowed} (got {describe(ids)}){hint}')


HF_IGNORE_INDEX = -100  # what Hugging Face's tokenizers and collators put in padded labels


def _ids_surely_in_range(ids: Tensor, sizes: tuple[int, ...]) -> bool:
    """The common case in one or two reductions: every id lies in ``[0, sizes[g])``.
    ``False`` leaves the answer to the exact check."""
    if len(sizes) == 1:
        lo, hi = torch.aminmax(ids)
        return 0 <= lo.item() and hi.item() < sizes[0]
    return ids.amin().item() >= 0 and (ids - _long_tensor(sizes, ids.device)).amax().item() < 0


_LONG_TENSORS: dict = {}


def _long_tensor(values: tuple[int, ...], device: torch.device) -> Tensor:
    """A constant ``(k,)`` long tensor, built once per values and device."""
    key = (values, device)
    if key not in _LONG_TENSORS:
        _LONG_TENSORS[key] = torch.tensor(values, dtype=torch.long, device=device)
    return _LONG_TENSORS[key]


def check_finite(t: Tensor, name: str) -> Tensor:
    """Content check: no NaN or inf (continuous inputs, targets and values)."""
    # one fast reduction: the sum is finite when every value is; only when it is not
    # (a NaN / inf, or finite values whose sum overflows) run the exact check
    if t.numel() == 0 or not content_checks_enabled(t) or math.isfinite(t.sum().item()):
        return t
    if not bool(torch.isfinite(t).all()):
        where = tuple((~torch.isfinite(t)).nonzero()[0].tolist())
        raise ValueError(f'{name} must be finite, got {t[where].item()} at index {where} (in {describe(t)})')
    return t


def check_temperature(temperature, *, positive: bool = False) -> float:
    """A temperature as a float: any real scalar (a Python or numpy int / float, or
    a 0-dim real tensor), finite, and ``> 0`` where ``positive``.

    A 0-dim tensor is read with ``float()``: that waits for a CUDA tensor's value
    (a device sync), and no gradient flows back into it.

    Raises:
        TypeError: not a real number (a bool, a complex number, a string, ...).
        ValueError: a tensor with dims, not finite, or ``<= 0`` where ``positive``.
    """
    if type(temperature) in (float, int):  # the common case, cheap while torch.compile traces
        value = float(temperature)
    elif isinstance(temperature, Tensor) and not (temperature.dtype.is_complex or temperature.dtype == torch.bool):
        if temperature.ndim != 0:
            raise ValueError(_temperature_message(temperature, positive))
        value = float(temperature.detach())
    elif isinstance(temperature, numbers.Real) and not isinstance(temperature, bool):
        value = float(temperature)
    else:
        raise TypeError(_temperature_message(temperature, positive))
    if not math.isfinite(value) or (positive and value <= 0):
        raise ValueError(_temperature_message(temperature, positive))
    return value


def _temperature_message(temperature, positive: bool) -> str:
    wanted = '> 0 (the per-token paths have no mode)' if positive else '(<= 0 for the mode)'
    got = describe(temperature)
    if isinstance(temperature, Tensor) and temperature.ndim == 0:
        got += f' holding {temperature.item()}'
    return f'temperature must be a finite real number {wanted}, as a Python or numpy scalar or a 0-dim tensor; got {got}'


def check_range(value, name: str) -> tuple[float, float]:
    """A pair ``(lo, hi)`` of numbers with ``lo < hi``."""
    if not (isinstance(value, (tuple, list)) and len(value) == 2):
        raise TypeError(f'{name} must be a pair (lo, hi), got {value!r}')
    lo, hi = (float(v) for v in value)
    if not lo < hi:
        raise ValueError(f'{name} must satisfy lo < hi, got {tuple(value)}')
    return lo, hi


def check_bounds(value, name: str, like: Tensor):
    """A pair ``(lo, hi)`` with ``lo < hi``, each a number or a 1-D sequence / tensor
    with one entry per continuous dim (``like.shape[-1]``). Numbers come back as
    floats, per-dim bounds as tensors of ``like``'s dtype and device (their values
    are checked when content checks are on)."""
    if not (isinstance(value, (tuple, list)) and len(value) == 2):
        raise TypeError(f'{name} must be a pair (lo, hi), got {describe(value)}')
    lo, hi = value
    if isinstance(lo, numbers.Real) and isinstance(hi, numbers.Real):  # the common case: no tensors, no sync
        lo, hi = float(lo), float(hi)
        if not (math.isfinite(lo) and math.isfinite(hi) and lo < hi):
            raise ValueError(f'{name} must be finite with lo < hi in every dim, got lo={lo}, hi={hi}')
        return lo, hi
    try:
        lo, hi = (torch.as_tensor(v, dtype=like.dtype, device=like.device) for v in value)
    except (TypeError, ValueError, RuntimeError):
        raise TypeError(f'{name} must be a pair (lo, hi) of numbers or 1-D sequences of numbers, got {value!r}') from None
    if lo.ndim > 1 or hi.ndim > 1:
        raise ValueError(f'{name}: lo and hi must be numbers or 1-D, got shapes {tuple(lo.shape)} and {tuple(hi.shape)}')
    for bound in (lo, hi):
        if bound.ndim == 1 and bound.numel() not in (1, like.shape[-1]):
            raise ValueError(f'{name}: per-dim bounds need one entry per continuous dim ({like.shape[-1]}), got {bound.numel()}')
    if content_checks_enabled(like) and not bool(((lo < hi) & torch.isfinite(lo) & torch.isfinite(hi)).all()):
        raise ValueError(f'{name} must be finite with lo < hi in every dim, got lo={lo.tolist()}, hi={hi.tolist()}')
    return lo, hi


def check_bound_units(bounds: Tensor, name: str) -> None:
    """``(C, 2)`` bounds (``continuous_range``) finite with ``lo < hi`` in every
    dim, whether or not content checks are on (checked once, when bound)."""
    lo, hi = bounds.unbind(-1)
    if not bool((torch.isfinite(bounds).all(-1) & (lo < hi)).all()):
        raise ValueError(f'{name} must be finite with lo < hi in every dim (in float32), got lo={lo.tolist()}, hi={hi.tolist()}')


def check_support(head, native: Tensor, *, name: str, to_user, soft_validate_range: bool = False, rounding: Tensor | float = 0.0,
                  legacy: bool = False) -> tuple[Tensor, Tensor | None]:  # fmt: skip
    """Native values checked against a head's support, ready to score.

    A value farther than the head's ``support_tolerance`` (plus ``rounding``, how
    far rounding the user's half precision values may have moved them) outside
    its ``default_range`` is a ``ValueError`` naming ``name`` (in the user's units,
    ``to_user``) while content checks are on. ``soft_validate_range`` clamps values
    ``eps`` inside the range first; ``legacy`` (0.2.x's ``log_prob_continuous``)
    clamps them into it with a warning the first time instead of raising.

    Returns:
        ``(values clamped into the range, where they were outside)``: score the
        first and set the second to ``-inf`` (``None`` for an unbounded head, with
        ``legacy``, or where the check found every value inside).
    """
    if head.default_range is None:
        return native, None
    lo, hi = head.default_range
    if soft_validate_range:
        native = native.clamp(lo + head.eps, hi - head.eps)
    tolerance = head.support_tolerance + rounding
    checked = content_checks_enabled(native)
    if checked and not isinstance(tolerance, Tensor) and native.numel() > 0:  # the common case in one reduction
        least, most = (v.item() for v in torch.aminmax(native))
        if lo - tolerance <= least and most <= hi + tolerance:
            return native.clamp(lo, hi), None
    outside = (native < lo - tolerance) | (native > hi + tolerance)
    if checked and bool(outside.any()):
        if not legacy:
            raise_outside_support(head, native, outside, to_user, name)
        warn_once_clamped(head, name)
    return native.clamp(lo, hi), None if legacy else outside


def raise_outside_support(head, native: Tensor, outside: Tensor, to_user, name: str):
    """The error for values outside a bounded head's support, in the user's units."""
    where = tuple(outside.nonzero()[0].tolist())
    lo, hi = (to_user(torch.full_like(native, bound))[where].item() for bound in head.default_range)
    raise ValueError(
        f'{name} must lie inside the support of the {type(head).__name__} head, [{lo:g}, {hi:g}] at index {where} '
        f'(its native range {head.default_range}, in your units), got {to_user(native)[where].item():g} (in {describe(native)}); '
        'pass soft_validate_range=True to clamp values into it'
    )


def warn_once_clamped(head, name: str) -> None:
    """0.2.x's ``log_prob_continuous`` clamps values outside the support: say so once per head."""
    if getattr(head, '_warned_clamped', False):
        return
    head._warned_clamped = True
    warnings.warn(
        f'log_prob_continuous: {name} has values outside the support of the {type(head).__name__} head; they are clamped into it '
        'and scored there, as 0.2.x did (Readout.log_prob and the loss raise instead; soft_validate_range=True clamps without this warning)',
        UserWarning, stacklevel=5,
    )  # fmt: skip


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


def check_positive(value, name: str) -> float:
    """A finite number > 0."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
        raise ValueError(f'{name} must be a finite number > 0, got {value!r}')
    return float(value)


def check_unit_fraction(value, name: str) -> float:
    """A number in ``[0, 1)``."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= value < 1.0:
        raise ValueError(f'{name} must be a number in [0, 1), got {value!r}')
    return float(value)


def _check_number(value, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f'{name} must be a finite number, got {describe(value)}')
    if not math.isfinite(value):
        raise ValueError(f'{name} must be a finite number, got {value}')
    return float(value)


def check_label_smoothing(value) -> float:
    """``0 <= label_smoothing < 1``."""
    value = _check_number(value, 'label_smoothing')
    if not 0.0 <= value < 1.0:
        raise ValueError(f'label_smoothing must lie in [0, 1), got {value}')
    return value


def check_z_loss_weight(value) -> float:
    """``z_loss_weight >= 0``."""
    value = _check_number(value, 'z_loss_weight')
    if value < 0:
        raise ValueError(f'z_loss_weight must be >= 0, got {value}')
    return value


def check_logit_softcap(value) -> float | None:
    """``None`` or ``> 0``."""
    if value is None:
        return None
    value = _check_number(value, 'logit_softcap')
    if value <= 0:
        raise ValueError(f'logit_softcap must be None or > 0, got {value}')
    return value


def check_bool(value, name: str) -> bool:
    if not isinstance(value, bool):
        raise TypeError(f'{name} must be a bool, got {describe(value)}')
    return value


def check_fused_choice(value) -> bool | str:
    """``fused_cross_entropy``: ``True``, ``False`` or ``'auto'``."""
    if value is not True and value is not False and value != 'auto':
        raise TypeError(f"fused_cross_entropy must be True, False or 'auto', got {describe(value)}")
    return value


def check_ignore_index(value) -> int | None:
    if value is not None and (isinstance(value, bool) or not isinstance(value, int)):
        raise TypeError(f'ignore_index must be an int or None, got {value!r}')
    return value


def checked_option(name: str, check, doc: str) -> property:
    """A settable option of a module, checked by ``check`` on every assignment (the
    constructor's included), so that a bad value fails where it is set rather than
    in a later call. The checked value lives in ``_<name>``."""
    attr = f'_{name}'

    def get(self):
        return getattr(self, attr)

    get.__doc__ = doc

    def set(self, value):
        setattr(self, attr, check(value))

    return property(get, set)


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
