"""Heads on the unit interval: beta and kumaraswamy, two concentrations each,
samples in (0, 1)."""

# c - continuous dims

from __future__ import annotations

from functools import cache

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.distributions import Beta, Kumaraswamy

from .base import ContinuousDistribution

__all__ = ['BetaDistribution', 'KumaraswamyDistribution']


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
        ``> 1`` (always with ``unimodal=True``); elsewhere (a U-shaped, J-shaped or
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

    # log_prob and entropy as torch's Beta computes them (a Dirichlet over (x, 1 - x)),
    # term for term, without building the distribution objects on every call. A
    # readout's params are a transposed view (the pair's stride is c): made contiguous
    # first, or every sum over the pair and every op with the stacked values runs on
    # strided memory (1.3x the time of a PPO step's log_prob + entropy at 1,024 rows)

    def log_prob(self, params: Tensor, value: Tensor) -> Tensor:
        concentration = F.softplus(params.contiguous()).add(1.0 if self.unimodal else self.eps)  # (..., c, 2): alpha, beta
        x = self.clip_sampled(value)
        heads_tails = torch.stack([x, 1.0 - x], -1)
        return torch.xlogy(concentration - 1.0, heads_tails).sum(-1) + torch.lgamma(concentration.sum(-1)) - torch.lgamma(concentration).sum(-1)

    def entropy(self, params: Tensor) -> Tensor:
        concentration = F.softplus(params.contiguous()).add(1.0 if self.unimodal else self.eps)
        total = concentration.sum(-1)
        return (torch.lgamma(concentration).sum(-1) - torch.lgamma(total) - (2.0 - total) * torch.digamma(total)
                - ((concentration - 1.0) * torch.digamma(concentration)).sum(-1))  # fmt: skip

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
def _gauss_legendre(n: int, device: torch.device | None = None) -> tuple[Tensor, Tensor]:
    """Nodes and weights on (0, 1) (Golub-Welsch), float64, on ``device`` (the CPU for
    ``None``; kept per device: copying them there per call would wait for the device)."""
    if device is not None and device.type != 'cpu':
        return tuple(t.to(device) for t in _gauss_legendre(n))
    k = torch.arange(1, n, dtype=torch.float64)
    off = k / torch.sqrt(4.0 * k * k - 1.0)
    nodes, vectors = torch.linalg.eigh(torch.diag(off, 1) + torch.diag(off, -1))
    return (nodes + 1.0) / 2.0, vectors[0] ** 2


def _expect_log_one_minus_pow(a_p: Tensor, b_p: Tensor, a_q: Tensor, num_nodes: int = 64, power: int = 4) -> Tensor:
    """E[log(1 - X^a_q)], X ~ Kumaraswamy(a_p, b_p), by quadrature over v = w^power."""
    w, weights = _gauss_legendre(num_nodes, a_p.device)
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
