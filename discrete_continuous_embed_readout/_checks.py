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
import warnings

import torch
from beartype import BeartypeConf, beartype
from torch import Tensor

# type checks of constructor arguments: a TypeError naming the parameter, its
# type hint and the value received (ints are accepted where floats are)
typecheck = beartype(conf=BeartypeConf(violation_param_type=TypeError, is_pep484_tower=True))

_validate_args: bool | str = 'auto'
_CPU = torch.device('cpu')


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
    return device != _CPU and device.type != 'cpu'  # a device compares in a fifth of .type's time


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


def reads_checked_for_free(t: Tensor) -> bool:
    """Whether content checks run on ``t`` and reading its values costs no wait
    (``content_checks_enabled`` on a CPU tensor): a route that reads one value
    instead of checking the contents may run."""
    return _validate_args is not False and not syncs_on_read(t.device) and not (torch.compiler.is_compiling() or functorch_active())


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
    if (dtype := t.dtype) is not torch.long and (dtype.is_floating_point or dtype.is_complex or dtype == torch.bool):
        raise TypeError(f'{name} must hold integer ids (e.g. torch.long), got {describe(t)}')
    return t if dtype is torch.long else t.long()


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


def check_loss_mask(mask, batch_shape, name: str = 'loss_mask') -> Tensor | None:
    """``mask`` is ``None`` or a bool tensor of the batch shape ``(...)``."""
    if mask is None:
        return None
    check_tensor(mask, name)
    if mask.dtype != torch.bool:
        raise TypeError(f'{name} must be a bool tensor (True = keep), got {describe(mask)}')
    if mask.shape != batch_shape:
        raise ValueError(f'{name} must have the batch shape {tuple(batch_shape)}, got {describe(mask)}')
    return mask
