"""The units map: the only place where a head's native units and the user's meet.

It is a ``torch.distributions.AffineTransform``, ``user = loc + scale * native``:

- with a range ``(lo, hi)``: the head's native range onto ``(lo, hi)`` (bounded
  heads only; the normaliser does not enter). The range is the call's
  ``rescale_range``, else the readout's ``continuous_range`` (bound at
  construction, checked there: ``bound_units``; a per-call range that differs is
  refused unless overridden: ``call_range``);
- else with ``continuous_mean_std``: ``mean + std * native``;
- else the identity.

``ContinuousPart`` (``part.py``) samples, scores and reduces through it; an
``Embed`` with ``continuous_range`` takes its inverse.
"""

# c - continuous dims

from __future__ import annotations

import torch
from torch import Tensor
from torch.distributions.transforms import AffineTransform

from .._options import check_bound_units, check_bounds
from .._utils import exists
from .base import ContinuousDistribution

__all__ = ['bound_units', 'rescale_map', 'unit_map']


class IdentityUnits(AffineTransform):
    """The identity units map, a new one per distribution rather than one shared
    object: a transform keeps its inverse once asked (a strong reference since torch
    2.13), and torchrl 0.14, imported later, patches ``Transform.inv`` to read that
    cache as a weakref, which breaks every transform inverted before the import."""

    def __init__(self):
        super().__init__(0.0, 1.0)


def unit_map(native_range, rescale_range, mean_std: tuple[Tensor, Tensor] | None, like: Tensor, bound: Tensor | None = None) -> AffineTransform:
    """Native to user units for ``c`` dims (see the module docstring); ``like``: a
    tensor of the dtype and device of per-dim bounds, last axis ``c``; ``mean_std``:
    the dims' ``(mean, std)``, std floored, or ``None``; ``bound``: the dims'
    ``(c, 2)`` bound units (checked when bound), used without ``rescale_range``."""
    if exists(rescale_range):
        return rescale_map(native_range, rescale_range, 'rescale_range', like)
    if exists(bound):
        return _affine(native_range, *bound.to(like).unbind(-1), 'continuous_range')
    if exists(mean_std):
        return AffineTransform(*mean_std)
    return IdentityUnits()


def rescale_map(native_range, target_range, name: str, like: Tensor) -> AffineTransform:
    """The map from ``native_range`` onto ``target_range`` (numbers or per-dim bounds)."""
    return _affine(native_range, *check_bounds(target_range, name, like), name)


def _affine(native_range, new_lo, new_hi, name: str) -> AffineTransform:
    """``native_range`` onto ``(new_lo, new_hi)``: the one units arithmetic."""
    if native_range is None:
        raise ValueError(f'{name}: the continuous distribution has no native range to rescale (an unbounded gaussian, or a binned head, whose range is min_value / max_value); use beta, kumaraswamy or continuous_squashed=True')
    lo, hi = native_range
    scale = (new_hi - new_lo) / (hi - lo)
    return AffineTransform(new_lo - lo * scale, scale)


def bound_units(continuous_range, head: ContinuousDistribution | None, num_continuous: int) -> Tensor | None:
    """``continuous_range`` checked at construction: ``(C, 2)`` float32 ``(lo, hi)``
    per dim (numbers broadcast), finite with ``lo < hi`` after float32 rounding, for
    a head with a native range; ``None`` when not given."""
    name = 'continuous_range'
    if continuous_range is None:
        return None
    _check_bindable(head, num_continuous, name)
    if any(isinstance(b, Tensor) and b.is_meta for b in (continuous_range if isinstance(continuous_range, (tuple, list)) else ())):
        return torch.empty(num_continuous, 2, device='meta')  # built on the meta device: the values arrive with load_state_dict (checked there)
    lo, hi = check_bounds(continuous_range, name, torch.empty(num_continuous, dtype=torch.float64, device='cpu'))
    bounds = torch.stack([torch.as_tensor(b, dtype=torch.float64, device='cpu').expand(num_continuous) for b in (lo, hi)], dim=-1).float()
    check_bound_units(bounds, name)
    return bounds.to(torch.get_default_device())


def _check_bindable(head: ContinuousDistribution | None, num_continuous: int, name: str) -> None:
    """Bound units need continuous dims and a head with a native range."""
    if num_continuous == 0 or head is None:
        raise ValueError(f'{name} needs num_continuous > 0 (it gives the continuous values\' units), got num_continuous={num_continuous}')
    if head.discrete_support:
        raise ValueError(f'{name}: a binned head ({type(head).__name__}) reads values in the range of its bins, min_value / max_value '
                         'in continuous_dist_kwargs; it takes no continuous_range (as it takes no rescale_range)')  # fmt: skip
    if head.default_range is None:
        raise ValueError(f'{name}: the {type(head).__name__} head is unbounded, it has no native range to map onto (lo, hi); use '
                         "continuous_squashed=True (a tanh-squashed gaussian, native range (-1, 1)) or continuous_dist_type='beta' / 'kumaraswamy' (0, 1)")  # fmt: skip


def call_range(rescale_range, bound: Tensor | None, override_range: bool, like: Tensor):
    """The range of this call: ``rescale_range`` (a readout without bound units,
    or ``override_range``), else the bound one; per-call bounds that differ from
    the bound ones are an error."""
    if override_range and not exists(rescale_range):
        raise ValueError('override_range=True needs rescale_range=(lo, hi), the units to use for this call instead of the bound continuous_range')
    if not exists(bound) or override_range or not exists(rescale_range):
        return rescale_range
    lo, hi = check_bounds(rescale_range, 'rescale_range', like)
    given = torch.stack([torch.as_tensor(b, dtype=torch.float32, device=bound.device).expand(bound.shape[0]) for b in (lo, hi)], dim=-1)
    if not torch.equal(given, bound):
        raise ValueError(
            f'rescale_range (lo={given[:, 0].tolist()}, hi={given[:, 1].tolist()}) differs from the continuous_range this readout was built with '
            f'(lo={bound[:, 0].tolist()}, hi={bound[:, 1].tolist()} for these dims): drop rescale_range (the bound units apply), '
            'or pass override_range=True to use rescale_range for this call'
        )  # fmt: skip
    return None  # the same bounds: the bound ones apply


def rounding_in_native(user: Tensor, units: AffineTransform) -> Tensor | float:
    """How far rounding ``user`` to its (half precision) dtype can move it, in
    native units: a bound that half precision cannot represent rounds outwards."""
    return torch.finfo(user.dtype).eps * user.detach().float().abs() / units.scale


def inside_bounds(sampled: Tensor, head: ContinuousDistribution, units: AffineTransform) -> Tensor:
    """Half precision samples rounded back inside the mapped native range (the
    nearest representable value of a bound may lie outside it)."""
    if head.default_range is None or isinstance(units, IdentityUnits):
        return sampled
    ulp = torch.finfo(sampled.dtype).eps
    lo, hi = (units(torch.full_like(sampled, b, dtype=torch.float32)) for b in head.default_range)
    lo, hi = lo + ulp * lo.abs(), hi - ulp * hi.abs()  # one ulp inside, in float32
    return torch.maximum(torch.minimum(sampled.float(), hi), lo).to(sampled.dtype)
