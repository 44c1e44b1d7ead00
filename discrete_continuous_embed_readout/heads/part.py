"""The continuous part of a readout's distribution: a head (``base.py``,
``gaussian.py``, ...) applied to params, in the user's units through the one units
map (``units.py``). Sampling, the mode, log-probs, entropies, losses and
``get_dist``'s objects (``views.py``) all go through it.
"""

# c - continuous dims

from __future__ import annotations

import math
import numbers
import warnings

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.distributions import Normal
from torch.distributions.transforms import AffineTransform

from .._checks import check_finite, check_floating, check_support, check_tensor, describe
from .._parse import broadcasts
from .._utils import exists, take, upcast
from .base import ContinuousDistribution
from .gaussian import Gaussian, SquashedGaussian
from .units import IdentityUnits, call_range, inside_bounds, rounding_in_native, unit_map
from .views import continuous_distribution

__all__ = ['ContinuousPart', 'head_for']

HALF = (torch.float16, torch.bfloat16)


def regression_loss(pred: Tensor, target: Tensor, kind: str) -> Tensor:
    """Elementwise ``mse`` or ``l1``."""
    fn = F.mse_loss if kind == 'mse' else F.l1_loss
    return fn(pred, target, reduction='none')


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
        self.is_identity = units is None or isinstance(units, IdentityUnits)
        self._log_scale = None  # log |d user / d native|, computed on first use
        self.dtype, self.params = params.dtype, upcast(params)
        self.batch_shape = params.shape[:-2] if config.log_var else params.shape[:-1]
        self.num_continuous = params.shape[-2] if config.log_var else params.shape[-1]

    @classmethod
    def build(cls, params: Tensor, config, selector, rescale_range, name: str, override_range: bool = False) -> ContinuousPart:
        """The part for ``params`` (checked) under ``selector``: the readout's head
        (or its twin for a 0.2.x selector that squashes otherwise) and the units
        map of the selector's dims (``rescale_range``, else the readout's bound
        ``continuous_range``; see ``call_range``)."""
        head = head_for(config.head, selector.squashed)
        if config.mean_std is None and rescale_range is None and config.continuous_range is None and not override_range:
            return cls(head, params, None, config, name)  # the identity, built only if asked for (``units``)
        mean_std = None
        if config.mean_std is not None:
            mean, std = take(config.mean_std, selector.continuous_dims).unbind(-1)
            mean_std = mean, std.clamp(min=config.eps)
        like = upcast(params).new_empty((params.shape[-2] if config.log_var else params.shape[-1],))
        bound = take(config.continuous_range, selector.continuous_dims) if exists(config.continuous_range) else None
        rescale_range = call_range(rescale_range, bound, override_range, like)
        if exists(bound) and not exists(rescale_range) and head.default_range is None:
            raise ValueError(f'continuous_range: this readout binds units, but the selector\'s head, {type(head).__name__}, has no native range to map onto them '
                             '(a 0.2.x selector made with continuous_squashed=False): use a selector that squashes as the readout does')  # fmt: skip
        native_range = head.default_range if exists(rescale_range) or exists(bound) else None
        return cls(head, params, unit_map(native_range, rescale_range, mean_std, like, bound), config, name)

    @property
    def units(self) -> AffineTransform:
        """The map from the head's native units to the user's (see ``unit_map``)."""
        if self._units is None:
            self._units = IdentityUnits()
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
            sampled = inside_bounds(sampled, head, self.units)
        if not with_log_prob:
            return sampled, None, head_log_prob
        rounding = rounding_in_native(sampled, self.units) if sampled.dtype in HALF else 0.0
        rescored, outside = check_support(head, upcast(sampled) if identity else units.inv(upcast(sampled)), name='sampled', to_user=self._to_user, rounding=rounding)
        log_prob = head.log_prob(params, rescored)
        log_prob = log_prob if isinstance(log_scale, float) and log_scale == 0.0 else log_prob - log_scale
        return sampled, log_prob if outside is None else log_prob.masked_fill(outside, float('-inf')), head_log_prob

    def values(self, values, name: str) -> Tensor:
        """``values`` checked: a finite floating tensor ``(..., c)`` whose leading
        shape broadcasts with this batch shape (``torch.distributions``' rule), unexpanded."""
        check_tensor(values, name)
        check_floating(values, name)
        expected = (*self.batch_shape, self.num_continuous)
        if tuple(values.shape) != expected and not broadcasts(values.shape, expected):
            raise ValueError(f'{name} must have shape {expected} or one that broadcasts with it (one value per continuous dim), got {describe(values)}')
        return check_finite(values, name)

    def _broadcast(self, native: Tensor) -> tuple[Tensor, Tensor]:
        """``(native values, params)`` expanded to one leading shape (views), so
        that every head, a user's too, sees params and values of one batch shape."""
        if native.shape[:-1] == self.batch_shape:
            return native, self.params
        batch = torch.broadcast_shapes(native.shape[:-1], self.batch_shape)
        return native.expand(*batch, native.shape[-1]), self.params.expand(*batch, *self.params.shape[len(self.batch_shape):])

    def log_prob(self, values, name: str = 'value', soft_validate_range: bool = False, legacy: bool = False) -> Tensor:
        """Log-density of user-unit ``values`` ``(..., c)``, in those units, over the
        leading shape broadcast from the values' and the params'."""
        self.require_distribution('log_prob')
        values = self.values(values, name)
        if self.is_identity and self.head.default_range is None:  # an unbounded head in its own units: no support, no Jacobian
            native, params = self._broadcast(upcast(values))
            return self.head.log_prob(params, native)
        rounding = rounding_in_native(values, self.units) if values.dtype in HALF else 0.0
        native, outside = check_support(self.head, self._to_native(upcast(values)), name=name, to_user=self._to_user,
                                        soft_validate_range=soft_validate_range, rounding=rounding, legacy=legacy)  # fmt: skip
        native, params = self._broadcast(native)
        log_prob = self._minus_log_jacobian(self.head.log_prob(params, native))
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
        if self.config.log_var and not self.head.discrete_support:
            return -self.log_prob(targets, 'targets')
        native, params = self._broadcast(self._to_native(upcast(self.values(targets, 'targets'))))
        if self.config.log_var:
            return self.head.loss(params, native)
        return regression_loss(params, native, self.config.regression_loss_type)

    def user_normal(self) -> Normal:
        """A gaussian head's normal mapped to the user's units (still a normal)."""
        normal = self.head.dist(self.params)
        return Normal(self.units(normal.loc), self.units.scale * normal.scale, validate_args=False)

    def torch_dist(self):
        """A ``torch.distributions`` view (see ``policy_distributions``)."""
        self.require_distribution('get_dist')
        return continuous_distribution(self)

