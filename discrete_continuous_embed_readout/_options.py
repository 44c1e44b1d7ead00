"""Checks of option values (constructor arguments, settable options, temperatures,
ranges and bounds): a ``TypeError`` for a wrong type, a ``ValueError`` for a value
out of its domain, naming the option; ``checked_option`` makes a settable option
check every assignment as the constructor does."""

from __future__ import annotations

import math
import numbers

import torch
from torch import Tensor

from ._checks import content_checks_enabled, describe


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
