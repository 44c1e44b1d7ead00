"""The gaussian family of continuous heads: ``Gaussian`` (mean and log-variance,
optionally soft-clamped) and ``SquashedGaussian`` (its tanh, native range
``(-1, 1)``). The base class is in ``base.py``.
"""

# c - continuous dims

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.distributions import Distribution, Normal, TanhTransform, TransformedDistribution

from .._options import check_range, check_temperature
from .._utils import exists
from .base import ContinuousDistribution

LOG_2 = math.log(2.0)
LOG_2PI = math.log(2.0 * math.pi)
LOG_2PIE = LOG_2PI + 1.0

__all__ = ['Gaussian', 'SquashedGaussian']


def _scaled_square(diff: Tensor, log_var: Tensor) -> Tensor:
    """``diff^2 / exp(log_var)``, exactly 0 where ``diff`` is 0 even when the
    variance underflows: the inverse std is kept finite (the log-variance floored
    where ``exp(-log_var / 2)`` would overflow), so no ``0 * inf`` appears in the
    value or the gradients, and every derivative is that of the formula (second
    order included) wherever the variance is representable."""
    floor = -2.0 * math.log(torch.finfo(log_var.dtype).max) + 1.0
    return (diff * torch.exp(-0.5 * log_var.clamp(min=floor))) ** 2


def _twice_nll(mean: Tensor, log_var: Tensor, value: Tensor) -> Tensor:
    """``-2 log N(value; mean, exp(log_var))``: ``(value - mean) / std`` squared
    and added in one ``addcmul`` (one op less)."""
    floor = -2.0 * math.log(torch.finfo(log_var.dtype).max) + 1.0
    z = (value - mean) * torch.exp(-0.5 * log_var.clamp(min=floor))  # as _scaled_square, before the square
    return torch.addcmul(log_var + LOG_2PI, z, z)


def gaussian_log_prob(mean: Tensor, log_var: Tensor, value: Tensor) -> Tensor:
    """``log N(value; mean, exp(log_var))`` from the log-variance itself: finite
    wherever the answer is (a std built as ``exp(log_var / 2)`` overflows first)."""
    return -0.5 * _twice_nll(mean, log_var, value)


def gaussian_nll(mean: Tensor, log_var: Tensor, value: Tensor) -> Tensor:
    """``-gaussian_log_prob``, exactly (a negation is exact), in one op less."""
    return 0.5 * _twice_nll(mean, log_var, value)


def gaussian_entropy(log_var: Tensor) -> Tensor:
    return 0.5 * (log_var + LOG_2PIE)  # the constant summed once: one op less


def gaussian_kl(mean_p: Tensor, log_var_p: Tensor, mean_q: Tensor, log_var_q: Tensor) -> Tensor:
    return 0.5 * (log_var_q - log_var_p + torch.exp(log_var_p - log_var_q) + _scaled_square(mean_p - mean_q, log_var_q) - 1.0)


class Gaussian(ContinuousDistribution):
    """Gaussian with params (mean, log-variance).

    Args:
        log_var_clamp_range: optional ``(lo, hi)``; the log-variance is then
            soft-clamped into it as ``lo + (tanh(v / (hi - lo)) + 1) / 2 * (hi - lo)``.
        eps: numerical floor.
    """

    def __init__(self, log_var_clamp_range: tuple[float, float] | None = None, eps: float = 1e-6):
        super().__init__(eps=eps)
        if exists(log_var_clamp_range):
            lo, hi = check_range(log_var_clamp_range, 'log_var_clamp_range')
            log_var_clamp_range = (lo, hi)
        self.log_var_clamp_range = log_var_clamp_range

    def mean_log_var(self, params: Tensor) -> tuple[Tensor, Tensor]:
        mean, log_var = params.unbind(-1)
        return mean, self.clamped_log_var(log_var)

    def clamped_log_var(self, log_var: Tensor) -> Tensor:
        """The raw log-variance output soft-clamped into ``log_var_clamp_range`` (if set)."""
        if exists(self.log_var_clamp_range):
            lo, hi = self.log_var_clamp_range
            log_var = lo + (torch.tanh(log_var / (hi - lo)) + 1.0) * 0.5 * (hi - lo)
        return log_var

    def dist(self, params: Tensor) -> Normal:
        mean, log_var = self.mean_log_var(params)
        return Normal(mean, torch.exp(0.5 * log_var), validate_args=False)

    def log_prob(self, params: Tensor, value: Tensor) -> Tensor:
        return gaussian_log_prob(*self.mean_log_var(params), value)

    def entropy(self, params: Tensor) -> Tensor:
        return gaussian_entropy(self.mean_log_var(params)[1])

    def kl_div(self, params_true: Tensor, params_pred: Tensor) -> Tensor:
        return gaussian_kl(*self.mean_log_var(params_true), *self.mean_log_var(params_pred))

    def mode(self, params: Tensor) -> Tensor:
        return self.mean_log_var(params)[0]

    def tempered_sample(self, params: Tensor, temperature: float, differentiable: bool = False) -> Tensor:
        """``mean + temperature * std * noise``: the temperature scales the std."""
        normal = Gaussian.dist(self, params)
        sampled = normal.loc + temperature * normal.scale * torch.randn_like(normal.loc)
        return sampled if differentiable else sampled.detach()


def log_one_minus_tanh_sq(u: Tensor) -> Tensor:
    """``log(1 - tanh(u)^2)`` without cancellation: ``2 (log 2 - u - softplus(-2u))``."""
    return 2.0 * (LOG_2 - u - F.softplus(-2.0 * u))


class SquashedGaussian(Gaussian):
    """``tanh(u)``, ``u ~ N(mean, exp(log_var))``: samples in ``(-1, 1)``.

    ``entropy`` and ``kl_div`` are those of the pre-tanh gaussian (KL is
    invariant under the shared bijection; the entropy is the original 0.2.7's
    choice and not the squashed variable's).
    """

    @property
    def default_range(self) -> tuple[float, float]:
        return (-1.0, 1.0)

    @property
    def support_tolerance(self) -> float:
        return 1e-6  # float32 rounding of a bound mapped back from rescale_range

    def base_dist(self, params: Tensor) -> Normal:
        """The pre-tanh gaussian."""
        return Gaussian.dist(self, params)

    def pre_tanh_sample(self, params: Tensor, temperature: float = 1.0, differentiable: bool = False) -> Tensor:
        """``u`` with ``sample = tanh(u)``; the mean at temperature <= 0."""
        temperature = check_temperature(temperature)
        if temperature <= 0:
            return self.mean_log_var(params)[0]
        if temperature == 1:
            base = self.base_dist(params)
            return base.rsample() if differentiable else base.sample()
        return Gaussian.tempered_sample(self, params, temperature, differentiable)

    def forward(self, params: Tensor, differentiable: bool = False) -> Tensor:
        return torch.tanh(self.pre_tanh_sample(params, 1.0, differentiable))

    def mode(self, params: Tensor) -> Tensor:
        return self.clip_sampled(torch.tanh(self.mean_log_var(params)[0]))

    def tempered_sample(self, params: Tensor, temperature: float, differentiable: bool = False) -> Tensor:
        return torch.tanh(self.pre_tanh_sample(params, temperature, differentiable))

    def sample_and_log_prob(self, params: Tensor, temperature: float = 1.0, differentiable: bool = False) -> tuple[Tensor, Tensor]:
        """The log-density comes from the pre-tanh ``u``, so it stays exact where
        ``tanh(u)`` rounds to +-1 (recomputing ``atanh`` of the sample cannot)."""
        u = self.pre_tanh_sample(params, temperature, differentiable)
        log_prob = gaussian_log_prob(*self.mean_log_var(params), u) - log_one_minus_tanh_sq(u)
        return self.clip_sampled(torch.tanh(u)), log_prob

    def entropy_estimate(self, params: Tensor, num_samples: int) -> Tensor:
        """Monte-Carlo estimate of the squashed variable's entropy ``(..., c)``:
        ``H(u) + E[log(1 - tanh(u)^2)]`` over ``num_samples`` reparameterised draws."""
        u = self.base_dist(params).rsample((num_samples,))
        return gaussian_entropy(self.mean_log_var(params)[1]) + log_one_minus_tanh_sq(u).mean(0)

    def clip_sampled(self, sampled: Tensor) -> Tensor:
        """tanh rounds to exactly +-1 for |u| > ~9 in float32: keep samples at the
        last representable point inside (-1, 1), where the log-density is finite."""
        bound = 1.0 - torch.finfo(sampled.dtype).eps
        return sampled.clamp(-bound, bound)

    def log_prob(self, params: Tensor, value: Tensor) -> Tensor:
        u = torch.atanh(self.clip_sampled(value))
        return gaussian_log_prob(*self.mean_log_var(params), u) - log_one_minus_tanh_sq(u)

    def dist(self, params: Tensor) -> Distribution:
        return TransformedDistribution(self.base_dist(params), [TanhTransform(cache_size=1)], validate_args=False)
