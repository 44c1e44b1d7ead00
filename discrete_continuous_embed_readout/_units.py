"""The one map from a continuous head's native units to the user's, and scoring
values through it.

A head samples and scores in its native units (beta / kumaraswamy on (0, 1), the
squashed gaussian on (-1, 1), a gaussian on the reals, the latter normalised when
``continuous_mean_std`` is set). The user's units are one affine map away:

- with ``rescale_range=(lo, hi)``: the native range mapped linearly onto
  ``(lo, hi)`` (a bounded head only). The normaliser does not enter: samples lie
  in ``(lo, hi)`` whatever ``continuous_mean_std`` says (it still normalises the
  Embed's inputs);
- else with ``continuous_mean_std``: ``x * std + mean``;
- else the identity.

Sampling, the mode, log-probs, entropies, losses and ``get_dist``'s objects all go
through ``UnitMap``: this is the only place that arithmetic exists.
"""

# c - continuous dims

from __future__ import annotations

import math
import warnings

import torch
from torch import Tensor

from ._checks import check_bounds, content_checks_enabled, describe


class UnitMap:
    """``user = native * scale + loc`` (``scale > 0``), per dim or shared.

    Args:
        loc: a float or a ``(c,)`` tensor.
        scale: a float or a ``(c,)`` tensor, positive.
    """

    def __init__(self, loc: Tensor | float = 0.0, scale: Tensor | float = 1.0):
        self.loc, self.scale = loc, scale

    @property
    def is_identity(self) -> bool:
        return not torch.is_tensor(self.loc) and not torch.is_tensor(self.scale) and self.loc == 0.0 and self.scale == 1.0

    def to_user(self, native: Tensor) -> Tensor:
        return native if self.is_identity else native * self.scale + self.loc

    def to_native(self, user: Tensor) -> Tensor:
        return user if self.is_identity else (user - self.loc) / self.scale

    def log_scale(self) -> Tensor | float:
        """``log |d user / d native|``: added to entropies, subtracted from log-densities."""
        return torch.log(self.scale) if torch.is_tensor(self.scale) else math.log(self.scale)

    def tensors(self, like: Tensor) -> tuple[Tensor, Tensor]:
        """``(loc, scale)`` as tensors of ``like``'s dtype and device."""
        return tuple(torch.as_tensor(v, dtype=like.dtype, device=like.device) for v in (self.loc, self.scale))


def rescale_map(native_range, target_range, name: str, like: Tensor) -> UnitMap:
    """The map from ``native_range`` onto ``target_range`` (numbers or per-dim bounds)."""
    if native_range is None:
        raise ValueError(f'{name}: the continuous distribution has no native range (an unbounded gaussian); use beta, kumaraswamy or continuous_squashed=True')
    (lo, hi), (new_lo, new_hi) = native_range, check_bounds(target_range, name, like)
    scale = (new_hi - new_lo) / (hi - lo)
    return UnitMap(new_lo - lo * scale, scale)


def outside_support(head, native: Tensor, rounding: Tensor | float = 0.0) -> Tensor | None:
    """Where ``native`` lies outside the head's native range (beyond its
    ``support_tolerance``, where values are clipped, and the ``rounding`` of the
    value the user passed), or ``None`` for an unbounded head."""
    if head.default_range is None:
        return None
    (lo, hi), tol = head.default_range, head.support_tolerance + rounding
    return (native < lo - tol) | (native > hi + tol)


def rounding_in_native(user: Tensor, units: UnitMap) -> Tensor | float:
    """How far rounding ``user`` to its own dtype can move it, in native units: a
    bound that half precision cannot represent rounds outwards by up to an ulp."""
    if user.dtype not in (torch.float16, torch.bfloat16):
        return 0.0
    return torch.finfo(user.dtype).eps * user.detach().float().abs() / units.scale


def inside_bounds(sampled: Tensor, head, units: UnitMap) -> Tensor:
    """Half precision samples rounded back inside the mapped native range (the
    nearest representable value of a bound may lie outside it)."""
    if sampled.dtype not in (torch.float16, torch.bfloat16) or head.default_range is None or units.is_identity:
        return sampled
    ulp = torch.finfo(sampled.dtype).eps
    lo, hi = (units.to_user(torch.full_like(sampled, b, dtype=torch.float32)) for b in head.default_range)
    lo, hi = lo + ulp * lo.abs(), hi - ulp * hi.abs()  # one ulp inside, in float32
    return torch.maximum(torch.minimum(sampled.float(), hi), lo).to(sampled.dtype)


def score(head, params: Tensor, native: Tensor, units: UnitMap, name: str, soft_validate_range: bool = False, eps: float = 1e-6,
          rounding: Tensor | float = 0.0, legacy: bool = False) -> Tensor:  # fmt: skip
    """Log-density of native values in the user's units ``(..., c)``.

    Values outside the head's support are a ``ValueError`` naming ``name`` while
    content checks are on, and score ``-inf`` while they are off;
    ``soft_validate_range`` clamps them ``eps`` inside the native range instead.
    ``rounding``: how far the user's (half precision) values may have been moved
    by rounding, in native units (see ``rounding_in_native``). ``legacy`` (the
    0.2.x ``log_prob_continuous``): such values are clamped into the support and
    scored there, as 0.2.x did, with a warning the first time.
    """
    if soft_validate_range and head.default_range is not None:
        lo, hi = head.default_range
        native = native.clamp(lo + eps, hi - eps)
    outside = outside_support(head, native, rounding)
    if outside is not None and content_checks_enabled() and bool(outside.any()):
        if not legacy:
            _raise_outside(head, native, outside, units, name)
        _warn_clamped(head, name)
    if outside is not None:
        native = native.clamp(*head.default_range)  # a value within tolerance of a bound is scored there
    log_prob = head.log_prob(params, native) - units.log_scale()
    return log_prob if outside is None or legacy else log_prob.masked_fill(outside, float('-inf'))


def _warn_clamped(head, name: str) -> None:
    if getattr(head, '_warned_clamped', False):
        return
    head._warned_clamped = True
    warnings.warn(
        f'log_prob_continuous: {name} has values outside the support of the {type(head).__name__} head; they are clamped into it '
        'and scored there, as 0.2.x did (Readout.log_prob and the loss raise instead; soft_validate_range=True clamps without this warning)',
        UserWarning, stacklevel=5,
    )  # fmt: skip


def _raise_outside(head, native: Tensor, outside: Tensor, units: UnitMap, name: str):
    where = tuple(outside.nonzero()[0].tolist())
    lo, hi = (units.to_user(torch.full_like(native, bound))[where].item() for bound in head.default_range)
    value = units.to_user(native)[where].item()
    raise ValueError(
        f'{name} must lie inside the support of the {type(head).__name__} head, [{lo:g}, {hi:g}] at index {where} '
        f'(its native range {head.default_range}, in your units), got {value:g} (in {describe(native)}); '
        'pass soft_validate_range=True to clamp values into it'
    )
