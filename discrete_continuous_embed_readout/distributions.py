"""Continuous heads: each turns the readout's ``(..., c, 2)`` parameters into a
distribution. ``CONTINUOUS_DISTRIBUTIONS`` maps ``continuous_dist_type`` names
to classes; users add their own subclasses of ``ContinuousDistribution``.
"""

# c - continuous dims

from __future__ import annotations

import math
from functools import cache

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.distributions import Beta, Distribution, Kumaraswamy, Normal, TanhTransform, TransformedDistribution, kl_divergence

from ._checks import check_range
from ._utils import exists

LOG_2 = math.log(2.0)
LOG_2PI = math.log(2.0 * math.pi)


def _scaled_square(diff: Tensor, log_var: Tensor) -> Tensor:
    """``diff^2 / exp(log_var)``, exactly 0 where ``diff`` is 0 even when the
    variance underflows: the inverse std is kept finite (the log-variance floored
    where ``exp(-log_var / 2)`` would overflow), so no ``0 * inf`` appears in the
    value or the gradients, and every derivative is that of the formula (second
    order included) wherever the variance is representable."""
    floor = -2.0 * math.log(torch.finfo(log_var.dtype).max) + 1.0
    return (diff * torch.exp(-0.5 * log_var.clamp(min=floor))) ** 2


def gaussian_log_prob(mean: Tensor, log_var: Tensor, value: Tensor) -> Tensor:
    """``log N(value; mean, exp(log_var))`` from the log-variance itself: finite
    wherever the answer is (a std built as ``exp(log_var / 2)`` overflows first)."""
    return -0.5 * (log_var + _scaled_square(value - mean, log_var) + LOG_2PI)


def gaussian_entropy(log_var: Tensor) -> Tensor:
    return 0.5 * (log_var + LOG_2PI + 1.0)


def gaussian_kl(mean_p: Tensor, log_var_p: Tensor, mean_q: Tensor, log_var_q: Tensor) -> Tensor:
    return 0.5 * (log_var_q - log_var_p + torch.exp(log_var_p - log_var_q) + _scaled_square(mean_p - mean_q, log_var_q) - 1.0)


class ContinuousDistribution(nn.Module):
    """Base class of a continuous head; subclass it to add your own.

    A subclass implements ``dist(params)`` returning a
    ``torch.distributions.Distribution`` over ``params[..., 0]``'s shape, and
    may override ``default_range``, ``forward`` (sampling), ``clip_sampled``,
    ``log_prob``, ``entropy`` and ``kl_div``. The Readout builds it as
    ``cls(**continuous_dist_kwargs, eps=eps)``.

    Args:
        eps: numerical floor.
    """

    def __init__(self, eps: float = 1e-6):
        super().__init__()
        self.eps = eps

    @property
    def default_range(self) -> tuple[float, float] | None:
        """The native range ``(lo, hi)`` of samples, or ``None`` if unbounded."""
        return None

    @property
    def support_tolerance(self) -> float:
        """How far outside ``default_range`` a value may lie and still be scored
        (clipped inside first); farther is outside the support."""
        return 0.0

    @property
    def supports_temperature(self) -> bool:
        """Whether the head samples at temperatures other than 0 and 1 (it
        overrides ``tempered_sample``)."""
        return type(self).tempered_sample is not ContinuousDistribution.tempered_sample

    def dist(self, params: Tensor) -> Distribution:
        """The distribution for ``params``; subclasses must implement it.

        Args:
            params: ``(..., c, 2)``, the readout's two raw outputs per dim.

        Returns:
            a ``torch.distributions.Distribution`` with batch shape ``(..., c)``.

        Raises:
            NotImplementedError: in this base class.
        """
        raise NotImplementedError(f'{type(self).__name__} must implement dist(params)')

    def forward(self, params: Tensor, differentiable: bool = False) -> Tensor:
        """A sample at temperature 1, before ``clip_sampled`` (``sample`` clips).

        Args:
            params: ``(..., c, 2)``.
            differentiable: ``rsample`` (reparameterised) instead of ``sample``.

        Returns:
            ``(..., c)`` in the native range.
        """
        d = self.dist(params)
        return d.rsample() if differentiable else d.sample()

    def clip_sampled(self, sampled: Tensor) -> Tensor:
        """Keep samples where their log-density is finite (identity here).

        Args:
            sampled: ``(..., c)``.

        Returns:
            ``(..., c)``: ``sampled`` itself here; the squashed gaussian clamps
            it just inside (-1, 1), beta and kumaraswamy into
            ``[clip_eps, 1 - clip_eps]`` (when ``clip``).
        """
        return sampled

    def log_prob(self, params: Tensor, value: Tensor) -> Tensor:
        """Log-density of ``value`` in the head's native units.

        Args:
            params: ``(..., c, 2)``.
            value: ``(..., c)``, not normalised or rescaled.

        Returns:
            ``(..., c)``, one log-density per dim.
        """
        return self.dist(params).log_prob(value)

    def entropy(self, params: Tensor) -> Tensor:
        """Differential entropy, in native units.

        Args:
            params: ``(..., c, 2)``.

        Returns:
            ``(..., c)``, one entropy per dim.
        """
        return self.dist(params).entropy()

    def kl_div(self, params_true: Tensor, params_pred: Tensor) -> Tensor:
        """KL(true || pred), by ``torch.distributions.kl_divergence`` here.

        Args:
            params_true: ``(..., c, 2)``.
            params_pred: ``(..., c, 2)``.

        Returns:
            ``(..., c)``, one KL per dim.
        """
        return kl_divergence(self.dist(params_true), self.dist(params_pred))

    def mode(self, params: Tensor) -> Tensor:
        """The most likely value (what ``temperature=0`` samples): the
        distribution's ``mode``, clipped.

        Args:
            params: ``(..., c, 2)``.

        Returns:
            ``(..., c)``.
        """
        return self.clip_sampled(self.dist(params).mode)

    def tempered_sample(self, params: Tensor, temperature: float, differentiable: bool = False) -> Tensor:
        """A sample at a temperature other than 0 and 1 (override to support it).

        Args:
            params: ``(..., c, 2)``.
            temperature: > 0 and != 1.
            differentiable: reparameterised.

        Returns:
            ``(..., c)``, before ``clip_sampled``.

        Raises:
            NotImplementedError: in this base class (the readout never calls it
                then: ``supports_temperature`` is false, and it samples at 1 with a
                warning).
        """
        raise NotImplementedError(f'{type(self).__name__} defines no sampling temperature other than 0 (mode) and 1')

    def sample(self, params: Tensor, temperature: float = 1.0, differentiable: bool = False) -> Tensor:
        """``forward`` at temperature 1, ``mode`` at <= 0, else ``tempered_sample``; clipped.

        Args:
            params: ``(..., c, 2)``.
            temperature: how spread out the sample is (see ``tempered_sample``).
            differentiable: reparameterised (no effect at temperature <= 0).

        Returns:
            ``(..., c)`` in the native range.
        """
        if temperature <= 0:
            return self.mode(params)
        sampled = self(params, differentiable) if temperature == 1 else self.tempered_sample(params, temperature, differentiable)
        return self.clip_sampled(sampled)

    def sample_and_log_prob(self, params: Tensor, temperature: float = 1.0, differentiable: bool = False) -> tuple[Tensor, Tensor]:
        """A sample and its log-density under ``params`` (not the tempered one).

        Args:
            params: ``(..., c, 2)``.
            temperature: as in ``sample``.
            differentiable: as in ``sample``.

        Returns:
            ``(sample, log_prob)``, each ``(..., c)``, in native units.
        """
        sampled = self.sample(params, temperature, differentiable)
        return sampled, self.log_prob(params, sampled)


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
        if exists(self.log_var_clamp_range):
            lo, hi = self.log_var_clamp_range
            log_var = lo + (torch.tanh(log_var / (hi - lo)) + 1.0) * 0.5 * (hi - lo)
        return mean, log_var

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

class _UnitInterval(ContinuousDistribution):
    """Shared by beta and kumaraswamy: two concentrations, samples in (0, 1)."""

    def __init__(self, unimodal: bool = False, eps: float = 1e-6, clip: bool = True, clip_eps: float = 1e-5):
        super().__init__(eps=eps)
        if not 0.0 < clip_eps < 0.5:
            raise ValueError(f'clip_eps must lie in (0, 0.5), got {clip_eps}')
        self.unimodal, self.clip, self.clip_eps = unimodal, clip, clip_eps

    @property
    def default_range(self) -> tuple[float, float]:
        return (0.0, 1.0)

    @property
    def support_tolerance(self) -> float:
        return self.clip_eps if self.clip else 0.0

    def concentrations(self, params: Tensor) -> tuple[Tensor, Tensor]:
        offset = 1.0 if self.unimodal else self.eps
        alpha, beta = F.softplus(params).add(offset).unbind(-1)
        return alpha, beta

    def clip_sampled(self, sampled: Tensor) -> Tensor:
        return sampled.clamp(self.clip_eps, 1.0 - self.clip_eps) if self.clip else sampled

    def forward(self, params: Tensor, differentiable: bool = False) -> Tensor:
        """A sample at temperature 1, clipped (as 0.2.12's ``forward``)."""
        return self.clip_sampled(super().forward(params, differentiable))

    def log_prob(self, params: Tensor, value: Tensor) -> Tensor:
        return self.dist(params).log_prob(self.clip_sampled(value))

    def mode(self, params: Tensor) -> Tensor:
        """The mode where it is unique and inside (0, 1), i.e. both concentrations
        > 1 (always with ``unimodal=True``); elsewhere (a U-shaped, J-shaped or
        uniform density) the mean."""
        alpha, beta = self.concentrations(params)
        inside = (alpha > 1) & (beta > 1)
        mode = self._mode(alpha.clamp(min=1 + self.eps), beta.clamp(min=1 + self.eps))
        return self.clip_sampled(torch.where(inside, mode, self.dist(params).mean))


class BetaDistribution(_UnitInterval):
    """Beta with concentrations ``softplus(p) + offset`` (offset 1 if ``unimodal`` else eps).

    Args:
        unimodal: keep both concentrations above 1.
        eps: numerical floor.
        clip: clamp samples (and log-prob values) into ``[clip_eps, 1 - clip_eps]``.
        clip_eps: the clamp margin.
    """

    def dist(self, params: Tensor) -> Beta:
        return Beta(*self.concentrations(params), validate_args=False)

    @staticmethod
    def _mode(alpha: Tensor, beta: Tensor) -> Tensor:
        return (alpha - 1) / (alpha + beta - 2)

    def tempered_sample(self, params: Tensor, temperature: float, differentiable: bool = False) -> Tensor:
        """Concentrations divided by ``temperature^2``: the mean is kept and the
        std scales by about ``temperature`` (exactly as the concentrations grow)."""
        alpha, beta = self.concentrations(params)
        tempered = Beta(alpha / temperature**2, beta / temperature**2, validate_args=False)
        return tempered.rsample() if differentiable else tempered.sample()


class KumaraswamyDistribution(_UnitInterval):
    """Kumaraswamy ``(a, b)``: density ``a b x^(a-1) (1 - x^a)^(b-1)`` on (0, 1).

    Same arguments as ``BetaDistribution``. Its KL has no closed form; it is
    computed by Gauss-Legendre quadrature (see ``kl_div``). It has no natural
    sampling temperature: only 0 (mode) and 1 are defined.
    """

    def dist(self, params: Tensor) -> Kumaraswamy:
        return Kumaraswamy(*self.concentrations(params), validate_args=False)

    @staticmethod
    def _mode(a: Tensor, b: Tensor) -> Tensor:
        return ((a - 1) / (a * b - 1)) ** (1 / a)

    def log_prob(self, params: Tensor, value: Tensor) -> Tensor:
        # closed form in log space: torch's transformed-uniform log_prob gives NaN
        # for tiny concentrations, and 1 - x^a must not round to 0
        a, b = self.concentrations(params)
        log_x = torch.log(self.clip_sampled(value))
        log_one_minus_x_pow_a = torch.log(-torch.expm1(a * log_x))
        return torch.log(a) + torch.log(b) + (a - 1.0) * log_x + (b - 1.0) * log_one_minus_x_pow_a

    def kl_div(self, params_true: Tensor, params_pred: Tensor) -> Tensor:
        """KL(p || q) = -H(p) - E_p[log q(X)].

        With ``Y = X^a_p ~ Beta(1, b_p)``, ``E_p[log X] = (digamma(1) - digamma(1 + b_p)) / a_p``
        exactly; the remaining ``E_p[log(1 - X^a_q)]`` is a 1-d integral over the
        uniform ``v`` of the inverse CDF, taken with 64 Gauss-Legendre nodes after
        ``v = w^4``, which removes its log singularity at ``v = 0``.
        """
        # float64 throughout: the terms grow like the entropy (hundreds for concentrations
        # near 0) and cancel, so float32 would leave tens of ulps of that size
        dtype = params_true.dtype
        if params_true.device.type != 'mps':
            params_true, params_pred = params_true.double(), params_pred.double()
        a_p, b_p = self.concentrations(params_true)
        a_q, b_q = self.concentrations(params_pred)
        entropy_p = self.dist(params_true).entropy()
        e_log_x = (torch.digamma(torch.ones_like(b_p)) - torch.digamma(1.0 + b_p)) / a_p
        e_log_one_minus = _expect_log_one_minus_pow(a_p, b_p, a_q)
        e_log_q = torch.log(a_q) + torch.log(b_q) + (a_q - 1.0) * e_log_x + (b_q - 1.0) * e_log_one_minus
        return (-entropy_p - e_log_q).to(dtype)


@cache
def _gauss_legendre(n: int) -> tuple[Tensor, Tensor]:
    """Nodes and weights on (0, 1) (Golub-Welsch), float64, CPU."""
    k = torch.arange(1, n, dtype=torch.float64)
    off = k / torch.sqrt(4.0 * k * k - 1.0)
    nodes, vectors = torch.linalg.eigh(torch.diag(off, 1) + torch.diag(off, -1))
    return (nodes + 1.0) / 2.0, vectors[0] ** 2


def _expect_log_one_minus_pow(a_p: Tensor, b_p: Tensor, a_q: Tensor, num_nodes: int = 64, power: int = 4) -> Tensor:
    """E[log(1 - X^a_q)], X ~ Kumaraswamy(a_p, b_p), by quadrature over v = w^power."""
    w, weights = (t.to(a_p.device) for t in _gauss_legendre(num_nodes))
    v = w**power
    jacobian = weights * power * w ** (power - 1)
    out_dtype = a_p.dtype
    dtype = torch.float64 if a_p.device.type != 'mps' else a_p.dtype
    a_p, b_p, a_q = (t.to(dtype)[..., None] for t in (a_p, b_p, a_q))
    # inverse CDF: x = (1 - s)^(1/a_p) with s = v^(1/b_p), so x^a_q = exp(y), y = r log(1 - s), r = a_q / a_p.
    # The integrand log(1 - exp(y)) is carried in log space: s underflows for small b_p.
    log_s = torch.log(v.to(dtype)) / b_p
    s = torch.exp(log_s)
    log_neg_log1m_s = torch.where(s < 1e-8, log_s, torch.log(-torch.log1p(-s)))  # log(-log(1 - s))
    log_neg_y = torch.log(a_q / a_p) + log_neg_log1m_s
    integrand = torch.where(log_neg_y < -30, log_neg_y, torch.log(-torch.expm1(-torch.exp(log_neg_y))))
    return (integrand * jacobian.to(dtype)).sum(-1).to(out_dtype)


CONTINUOUS_DISTRIBUTIONS: dict[str, type[ContinuousDistribution]] = {
    'gaussian': Gaussian,
    'beta': BetaDistribution,
    'kumaraswamy': KumaraswamyDistribution,
}


def build_continuous_dist(dist_type, dist_kwargs, squashed, log_var, regression_loss_type, eps) -> ContinuousDistribution:
    """Look ``dist_type`` up in ``CONTINUOUS_DISTRIBUTIONS`` (at construction) and
    instantiate it as ``cls(**dist_kwargs, eps=eps)``; squashing picks ``SquashedGaussian``."""
    if not isinstance(dist_type, str) or dist_type not in CONTINUOUS_DISTRIBUTIONS:
        raise ValueError(f'continuous_dist_type must be one of {sorted(CONTINUOUS_DISTRIBUTIONS)}, got {dist_type!r}')
    cls = CONTINUOUS_DISTRIBUTIONS[dist_type]
    if squashed:
        if cls is not Gaussian:
            raise ValueError(f"continuous_squashed=True needs continuous_dist_type='gaussian', got {dist_type!r}")
        cls = SquashedGaussian
    if not log_var and (cls is not Gaussian):
        raise ValueError(f'continuous_log_var_embed=False (regression) predicts a plain mean: it needs an unsquashed gaussian, got {dist_type!r}{" squashed" if squashed else ""}')
    if regression_loss_type not in ('mse', 'l1'):
        raise ValueError(f"regression_loss_type must be 'mse' or 'l1', got {regression_loss_type!r}")
    if not isinstance(dist_kwargs, dict):
        raise TypeError(f'continuous_dist_kwargs must be a dict, got {type(dist_kwargs).__name__}')
    try:
        return cls(**dist_kwargs, eps=eps)
    except TypeError as err:
        raise TypeError(f'continuous_dist_kwargs {dist_kwargs!r} do not fit {cls.__name__}: {err}') from None
