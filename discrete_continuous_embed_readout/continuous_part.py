"""The continuous part of a readout's distribution: a head (``distributions``)
applied to params, plus the one map from the head's native units to the user's.

The units map (``unit_map``) is the only place where native and user units meet;
it is a ``torch.distributions.AffineTransform``, ``user = loc + scale * native``:

- with ``rescale_range=(lo, hi)``: the head's native range onto ``(lo, hi)``
  (bounded heads only; the normaliser does not enter);
- else with ``continuous_mean_std``: ``mean + std * native``;
- else the identity.

Sampling, the mode, log-probs, entropies, losses and ``get_dist``'s objects all go
through it.
"""

# c - continuous dims

from __future__ import annotations

import math
import numbers
import warnings

import torch
from torch import Tensor
from torch.distributions import Normal
from torch.distributions.transforms import AffineTransform

from ._checks import check_bounds, check_finite, check_floating, check_support, check_tensor, describe
from ._losses import regression_loss
from ._utils import exists, take, upcast
from .distributions import ContinuousDistribution, Gaussian, SquashedGaussian
from .policy_distributions import continuous_distribution

__all__ = ['ContinuousPart', 'head_for', 'rescale_map', 'unit_map']

HALF = (torch.float16, torch.bfloat16)


class _Identity(AffineTransform):
    """The identity units map, a new one per distribution rather than one shared
    object: a transform keeps its inverse once asked (a strong reference since torch
    2.13), and torchrl 0.14, imported later, patches ``Transform.inv`` to read that
    cache as a weakref, which breaks every transform inverted before the import."""

    def __init__(self):
        super().__init__(0.0, 1.0)


def unit_map(native_range, rescale_range, mean_std: tuple[Tensor, Tensor] | None, like: Tensor) -> AffineTransform:
    """Native to user units for ``c`` dims (see the module docstring); ``like``: a
    ``(c,)`` tensor of the dtype and device of per-dim bounds; ``mean_std``: the
    dims' ``(mean, std)``, std floored, or ``None``."""
    if exists(rescale_range):
        return rescale_map(native_range, rescale_range, 'rescale_range', like)
    if exists(mean_std):
        return AffineTransform(*mean_std)
    return _Identity()


def rescale_map(native_range, target_range, name: str, like: Tensor) -> AffineTransform:
    """The map from ``native_range`` onto ``target_range`` (numbers or per-dim bounds)."""
    if native_range is None:
        raise ValueError(f'{name}: the continuous distribution has no native range to rescale (an unbounded gaussian, or a binned head, whose range is min_value / max_value); use beta, kumaraswamy or continuous_squashed=True')
    (lo, hi), (new_lo, new_hi) = native_range, check_bounds(target_range, name, like)
    scale = (new_hi - new_lo) / (hi - lo)
    return AffineTransform(new_lo - lo * scale, scale)


def _rounding_in_native(user: Tensor, units: AffineTransform) -> Tensor | float:
    """How far rounding ``user`` to its (half precision) dtype can move it, in
    native units: a bound that half precision cannot represent rounds outwards."""
    return torch.finfo(user.dtype).eps * user.detach().float().abs() / units.scale


def _inside_bounds(sampled: Tensor, head: ContinuousDistribution, units: AffineTransform) -> Tensor:
    """Half precision samples rounded back inside the mapped native range (the
    nearest representable value of a bound may lie outside it)."""
    if head.default_range is None or isinstance(units, _Identity):
        return sampled
    ulp = torch.finfo(sampled.dtype).eps
    lo, hi = (units(torch.full_like(sampled, b, dtype=torch.float32)) for b in head.default_range)
    lo, hi = lo + ulp * lo.abs(), hi - ulp * hi.abs()  # one ulp inside, in float32
    return torch.maximum(torch.minimum(sampled.float(), hi), lo).to(sampled.dtype)


def _honoured_temperature(head: ContinuousDistribution, temperature: float) -> float:
    """``temperature`` where the head defines it (0 and 1 always), else 1 with a
    warning the first time (0.2.x ignored continuous temperatures)."""
    if temperature <= 0 or temperature == 1 or head.supports_temperature:
        return temperature
    if not getattr(head, '_warned_temperature', False):
        head._warned_temperature = True
        warnings.warn(
            f'{type(head).__name__} defines no sampling temperature other than 0 (its mode) and 1: '
            f'temperature={temperature} is ignored for the continuous part (sampled at 1), as 0.2.x did',
            UserWarning, stacklevel=5,
        )  # fmt: skip
    return 1.0


def head_for(head: ContinuousDistribution, squashed: bool | None) -> ContinuousDistribution:
    """The readout's head, or its squashed / unsquashed twin for a 0.2.x selector
    that says otherwise (``squashed=None``: as the readout)."""
    if squashed is None or squashed == isinstance(head, SquashedGaussian):
        return head
    twin = SquashedGaussian if squashed else Gaussian
    return twin(log_var_clamp_range=head.log_var_clamp_range, eps=head.eps)


class ContinuousPart:
    """A head's distribution for ``params`` ``(..., c, p)`` in the user's units
    (``units``); in regression mode (``log_var=False``) a prediction ``(..., c)``.

    Computes in float32 for half precision params; samples come back in the
    params' dtype (a binned head's in float32, which tells every bin apart).
    """

    def __init__(self, head: ContinuousDistribution, params: Tensor, units: AffineTransform | None, config, name: str):
        self.head, self._units, self.config, self.name = head, units, config, name
        self.is_identity = units is None or isinstance(units, _Identity)
        self._log_scale = None  # log |d user / d native|, computed on first use
        self.dtype, self.params = params.dtype, upcast(params)
        self.batch_shape = params.shape[:-2] if config.log_var else params.shape[:-1]
        self.num_continuous = params.shape[-2] if config.log_var else params.shape[-1]

    @classmethod
    def build(cls, params: Tensor, config, selector, rescale_range, name: str) -> ContinuousPart:
        """The part for ``params`` (checked) under ``selector``: the readout's head
        (or its twin for a 0.2.x selector that squashes otherwise) and the units
        map of the selector's dims."""
        head = head_for(config.head, selector.squashed)
        if config.mean_std is None and rescale_range is None:
            return cls(head, params, None, config, name)  # the identity, built only if asked for (``units``)
        mean_std = None
        if config.mean_std is not None:
            mean, std = take(config.mean_std, selector.continuous_dims).unbind(-1)
            mean_std = mean, std.clamp(min=config.eps)
        native_range, like = None, None
        if rescale_range is not None:  # per-dim bounds take the params' dtype and device
            native_range = head.default_range
            like = upcast(params).new_empty((params.shape[-2] if config.log_var else params.shape[-1],))
        return cls(head, params, unit_map(native_range, rescale_range, mean_std, like), config, name)

    @property
    def units(self) -> AffineTransform:
        """The map from the head's native units to the user's (see ``unit_map``)."""
        if self._units is None:
            self._units = _Identity()
        return self._units

    def expand(self, batch_shape) -> ContinuousPart:
        """The same distribution broadcast to ``(*batch_shape, ...)``."""
        params = self.params.expand(*batch_shape, *self.params.shape)
        return ContinuousPart(self.head, params, self._units, self.config, self.name)

    def require_distribution(self, what: str) -> None:
        if not self.config.log_var:
            raise ValueError(f'{what} needs a distribution, but this readout predicts only a mean (continuous_log_var_embed=False)')

    def sample(self, temperature: float = 1.0, differentiable: bool = False, with_log_prob: bool = False):
        """A draw in the user's units, and its log-prob.

        Args:
            temperature: as the head defines it (``<= 0``: the mode).
            differentiable: reparameterised.
            with_log_prob: also the log-prob: exactly ``log_prob`` of the returned
                values (a PPO ratio at unchanged parameters is 1); with
                ``differentiable``, its gradient is the head's reparameterised one
                (through the pre-tanh draw when squashed).

        Returns:
            ``(values (..., c), log_prob (..., c) or None)``, values in the params' dtype.
        """
        if not self.config.log_var:
            if with_log_prob:
                self.require_distribution('return_log_prob')
            return self._to_user(self.params).to(self.dtype), None  # regression: the prediction itself
        sampled, log_prob, head_log_prob = self._draw(_honoured_temperature(self.head, temperature), differentiable, with_log_prob)
        if exists(head_log_prob):  # the value of the re-scored log-prob, the gradient of the head's
            head_log_prob = self._minus_log_jacobian(head_log_prob)
            log_prob = head_log_prob + (log_prob - head_log_prob).detach()
        return sampled, log_prob

    def _draw(self, temperature: float, differentiable: bool, with_log_prob: bool):
        """Draw, map to the user's units and re-score there; between the head's two
        calls only torch runs (see ``benchmarks/trace_route.py``: the units map and
        its log-Jacobian are inlined)."""
        head, params, units, identity = self.head, self.params, self._units, self.is_identity
        log_scale = self._log_jacobian() if with_log_prob else 0.0
        if with_log_prob and differentiable:
            native, head_log_prob = head.sample_and_log_prob(params, temperature, differentiable)
        else:
            native, head_log_prob = head.sample(params, temperature, differentiable), None
        user = native if identity else units(native)
        # a binned head's values stay in float32: half precision cannot tell its bins apart
        sampled = user if head.discrete_support else user.to(self.dtype)
        if sampled.dtype in HALF:
            sampled = _inside_bounds(sampled, head, self.units)
        if not with_log_prob:
            return sampled, None, head_log_prob
        rounding = _rounding_in_native(sampled, self.units) if sampled.dtype in HALF else 0.0
        rescored, outside = check_support(head, upcast(sampled) if identity else units.inv(upcast(sampled)), name='sampled', to_user=self._to_user, rounding=rounding)
        log_prob = head.log_prob(params, rescored)
        log_prob = log_prob if isinstance(log_scale, float) and log_scale == 0.0 else log_prob - log_scale
        return sampled, log_prob if outside is None else log_prob.masked_fill(outside, float('-inf')), head_log_prob

    def values(self, values, name: str) -> Tensor:
        """``values`` checked: a finite floating tensor ``(..., c)`` of this batch shape."""
        check_tensor(values, name)
        check_floating(values, name)
        expected = (*self.batch_shape, self.num_continuous)
        if tuple(values.shape) != expected:
            raise ValueError(f'{name} must have shape {expected} (one value per continuous dim), got {describe(values)}')
        return check_finite(values, name)

    def log_prob(self, values, name: str = 'value', soft_validate_range: bool = False, legacy: bool = False) -> Tensor:
        """Log-density of user-unit ``values`` ``(..., c)``, in those units."""
        self.require_distribution('log_prob')
        values = self.values(values, name)
        rounding = _rounding_in_native(values, self.units) if values.dtype in HALF else 0.0
        native, outside = check_support(self.head, self._to_native(upcast(values)), name=name, to_user=self._to_user,
                                        soft_validate_range=soft_validate_range, rounding=rounding, legacy=legacy)  # fmt: skip
        log_prob = self._minus_log_jacobian(self.head.log_prob(self.params, native))
        return log_prob if outside is None else log_prob.masked_fill(outside, float('-inf'))

    def entropy(self, num_samples: int | None = None) -> Tensor:
        """Entropy per dim in the user's units; ``num_samples``: a Monte-Carlo
        estimate of the squashed gaussian's (true) entropy."""
        self.require_distribution('entropy')
        if not exists(num_samples):
            entropy = self.head.entropy(self.params)
        elif not isinstance(self.head, SquashedGaussian):
            raise ValueError('squashed_entropy_samples is for a squashed gaussian (continuous_squashed=True)')
        elif isinstance(num_samples, bool) or not isinstance(num_samples, int) or num_samples < 1:
            raise ValueError(f'squashed_entropy_samples must be a positive int, got {num_samples!r}')
        else:
            entropy = self.head.entropy_estimate(self.params, num_samples)
        log_scale = self._log_jacobian()
        return entropy if isinstance(log_scale, float) and log_scale == 0.0 else entropy + log_scale

    def _log_jacobian(self) -> Tensor | float:
        """``log |d user / d native|``, a number or one per dim ``(c,)``, which
        densities in the user's units subtract and entropies add (the units map's
        ``log_abs_det_jacobian``, without a tensor of its values); 0 for a binned
        head (probability masses)."""
        if self.head.discrete_support or self.is_identity:
            return 0.0
        if self._log_scale is None:
            scale = self.units.scale
            self._log_scale = math.log(abs(scale)) if isinstance(scale, numbers.Real) else scale.abs().log()
        return self._log_scale

    def _minus_log_jacobian(self, log_prob: Tensor) -> Tensor:
        """A native log-density as one in the user's units."""
        log_scale = self._log_jacobian()
        return log_prob if isinstance(log_scale, float) and log_scale == 0.0 else log_prob - log_scale

    def _to_user(self, native: Tensor) -> Tensor:
        return native if self.is_identity else self.units(native)

    def _to_native(self, user: Tensor) -> Tensor:
        return user if self.is_identity else self.units.inv(user)

    def kl_div(self, other: ContinuousPart) -> Tensor:
        """KL(self || other) per dim (invariant under the shared units map)."""
        self.require_distribution('kl_div')
        if self.params.shape != other.params.shape:
            raise ValueError(f'{self.name} and {other.name} continuous params differ in shape: {tuple(self.params.shape)} vs {tuple(other.params.shape)}')
        return self.head.kl_div(self.params, other.params)

    def loss(self, targets) -> Tensor:
        """Per-entry loss ``(..., c)``: the negative log-density (a binned head: the
        cross entropy against the target's bins), or in regression mode the
        regression loss in native (normalised) units."""
        if self.config.log_var and self.head.discrete_support:
            return self.head.loss(self.params, self._to_native(upcast(self.values(targets, 'targets'))))
        if self.config.log_var:
            return -self.log_prob(targets, 'targets')
        return regression_loss(self.params, self._to_native(self.values(targets, 'targets')), self.config.regression_loss_type)

    def user_normal(self) -> Normal:
        """A gaussian head's normal mapped to the user's units (still a normal)."""
        normal = self.head.dist(self.params)
        return Normal(self.units(normal.loc), self.units.scale * normal.scale, validate_args=False)

    def torch_dist(self):
        """A ``torch.distributions`` view (see ``policy_distributions``)."""
        self.require_distribution('get_dist')
        return continuous_distribution(self)

