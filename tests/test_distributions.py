"""Continuous heads through the public Readout API, checked against values
computed independently: torch.distributions, closed forms, numerical integrals
and finite differences (spec sections 2, 5, 6, 8, 11)."""

import math

import pytest
import torch
import torch.nn.functional as F
from torch.distributions import Beta, Kumaraswamy, Laplace, Normal, kl_divergence

from discrete_continuous_embed_readout import (
    CONTINUOUS_DISTRIBUTIONS,
    ContinuousDistribution,
    EmbedAndReadout,
    ParameterlessReadout,
    Readout,
)

EPS = 1e-6  # the package's default numerical floor (spec section 2)
LOG_2PI = math.log(2 * math.pi)

# --------------------------------------------------------------------------- helpers


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def randn(*shape, seed: int, dtype=torch.float32) -> torch.Tensor:
    return torch.randn(*shape, generator=gen(seed), dtype=dtype)


def uniform(lo: float, hi: float, *shape, seed: int, dtype=torch.float32) -> torch.Tensor:
    return torch.rand(*shape, generator=gen(seed), dtype=dtype) * (hi - lo) + lo


def inv_softplus(y: torch.Tensor) -> torch.Tensor:
    """x with softplus(x) = y (y > 0)."""
    return y + torch.log(-torch.expm1(-y))


def gaussian_params(*batch, num_continuous: int, seed: int, dtype=torch.float32) -> torch.Tensor:
    """(..., C, 2) of (mean, log_var) with moderate values."""
    mean = uniform(-2.0, 2.0, *batch, num_continuous, seed=seed, dtype=dtype)
    log_var = uniform(-2.0, 1.5, *batch, num_continuous, seed=seed + 1, dtype=dtype)
    return torch.stack((mean, log_var), dim=-1)


def unit_interval_params(concentrations_a, concentrations_b, offset: float, dtype=torch.float32) -> torch.Tensor:
    """(..., 2) raw params whose softplus(p) + offset gives the requested concentrations."""
    a = torch.as_tensor(concentrations_a, dtype=torch.float64)
    b = torch.as_tensor(concentrations_b, dtype=torch.float64)
    return torch.stack((inv_softplus(a - offset), inv_softplus(b - offset)), dim=-1).to(dtype)


def concentrations(params: torch.Tensor, unimodal: bool):
    """The spec's mapping a, b = softplus(p) + (1 if unimodal else eps), in float64."""
    offset = 1.0 if unimodal else EPS
    c = F.softplus(params.double()) + offset
    return c[..., 0], c[..., 1]


def reference_unit_dist(dist_type: str, a: torch.Tensor, b: torch.Tensor):
    return Beta(a, b) if dist_type == 'beta' else Kumaraswamy(a, b)


def normal_of(params: torch.Tensor) -> Normal:
    p = params.double()
    return Normal(p[..., 0], torch.exp(0.5 * p[..., 1]))


def squashed_log_density(params: torch.Tensor, a: torch.Tensor) -> torch.Tensor:
    """Spec: log N(atanh(a)) - log(1 - a^2), evaluated plainly in float64."""
    a = a.double()
    return normal_of(params).log_prob(torch.atanh(a)) - torch.log1p(-(a * a))


def midpoints(lo: float, hi: float, n: int) -> tuple[torch.Tensor, float]:
    h = (hi - lo) / n
    return lo + (torch.arange(n, dtype=torch.float64) + 0.5) * h, h


def kumaraswamy_kl_reference(a_p: float, b_p: float, a_q: float, b_q: float, n: int = 1_000_000) -> float:
    """KL(Kum(a_p, b_p) || Kum(a_q, b_q)) = E_p[log p(X) - log q(X)] by a midpoint
    rule over the uniform v of the inverse CDF x = (1 - v^(1/b_p))^(1/a_p), all
    log-densities taken in log space (x itself is never formed)."""
    v, _ = midpoints(0.0, 1.0, n)
    s = v ** (1.0 / b_p)  # = 1 - x^a_p
    log_x = torch.log1p(-s) / a_p
    log_one_minus_x_ap = torch.log(v) / b_p
    log_one_minus_x_aq = torch.log(-torch.expm1(a_q * log_x))
    log_p = math.log(a_p * b_p) + (a_p - 1) * log_x + (b_p - 1) * log_one_minus_x_ap
    log_q = math.log(a_q * b_q) + (a_q - 1) * log_x + (b_q - 1) * log_one_minus_x_aq
    return (log_p - log_q).mean().item()


def kumaraswamy_raw_moment(a: torch.Tensor, b: torch.Tensor, k: int) -> torch.Tensor:
    """E[X^k] = b B(1 + k/a, b)."""
    return b * torch.exp(torch.lgamma(1 + k / a) + torch.lgamma(b) - torch.lgamma(1 + k / a + b))


def laplace_closed_forms(loc, scale):
    return dict(
        log_prob=lambda x: -torch.log(2 * scale) - (x - loc).abs() / scale,
        entropy=1 + torch.log(2 * scale),
    )


def laplace_kl_closed_form(m1, b1, m2, b2):
    d = (m1 - m2).abs()
    return torch.log(b2 / b1) + d / b2 + (b1 / b2) * torch.exp(-d / b1) - 1


@pytest.fixture
def register_head():
    """Register user heads in CONTINUOUS_DISTRIBUTIONS and remove them afterwards."""
    added = []

    def _register(name, cls):
        assert name not in CONTINUOUS_DISTRIBUTIONS
        CONTINUOUS_DISTRIBUTIONS[name] = cls
        added.append(name)

    try:
        yield _register
    finally:
        for name in added:
            CONTINUOUS_DISTRIBUTIONS.pop(name, None)


class MyLaplace(ContinuousDistribution):
    """A user head: Laplace(loc = p0, scale = softplus(p1) + eps)."""

    def dist(self, params):
        return Laplace(params[..., 0], F.softplus(params[..., 1]) + self.eps)


class MyClampedLocHead(ContinuousDistribution):
    """A user head that overrides sampling (returns the loc), clipping and the range."""

    @property
    def default_range(self):
        return (-1.0, 1.0)

    def dist(self, params):
        return Laplace(params[..., 0], F.softplus(params[..., 1]) + self.eps)

    def forward(self, params, differentiable=False):
        return params[..., 0] * 1.0

    def clip_sampled(self, sampled):
        return sampled.clamp(-0.5, 0.5)


# --------------------------------------------------------------------------- 1. gaussian


def test_gaussian_log_prob_entropy_kl_match_torch_normal():
    C = 3
    readout = ParameterlessReadout(num_continuous=C)
    p = gaussian_params(4, 5, num_continuous=C, seed=0)
    q = gaussian_params(4, 5, num_continuous=C, seed=10)
    x = randn(4, 5, C, seed=20) * 2

    ref_p, ref_q = normal_of(p), normal_of(q)
    torch.testing.assert_close(readout.log_prob(p, x).double(), ref_p.log_prob(x.double()), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(readout.entropy(p).double(), ref_p.entropy(), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(readout.kl_div(p, q).double(), kl_divergence(ref_p, ref_q), rtol=1e-4, atol=1e-5)

    # hand-worked closed forms of the same three quantities
    m, lv = p.double().unbind(-1)
    mq, lvq = q.double().unbind(-1)
    hand_log_prob = -0.5 * LOG_2PI - 0.5 * lv - 0.5 * (x.double() - m) ** 2 / lv.exp()
    hand_entropy = 0.5 * (LOG_2PI + 1) + 0.5 * lv
    hand_kl = 0.5 * (lvq - lv + (lv.exp() + (m - mq) ** 2) / lvq.exp() - 1)
    torch.testing.assert_close(readout.log_prob(p, x).double(), hand_log_prob, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(readout.entropy(p).double(), hand_entropy, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(readout.kl_div(p, q).double(), hand_kl, rtol=1e-4, atol=1e-5)
    assert readout.kl_div(p, p).abs().max() < 1e-6


def test_gaussian_readout_loss_is_mean_gaussian_nll_with_constant():
    torch.manual_seed(0)
    D, C = 8, 3
    readout = Readout(D, num_continuous=C)
    with torch.no_grad():
        readout.embeddings.weight.normal_(0.0, 0.3)
    embeds = randn(2, 5, D, seed=1)
    targets = randn(2, 5, C, seed=2)

    # params computed by hand from the table layout [mean rows 0..C-1][log-var rows 0..C-1]
    w = readout.embeddings.weight.detach().double()
    mean = embeds.double() @ w[:C].T
    log_var = embeds.double() @ w[C : 2 * C].T
    nll = 0.5 * LOG_2PI + 0.5 * log_var + 0.5 * (targets.double() - mean) ** 2 / log_var.exp()

    loss = readout(embeds, targets)
    assert loss.ndim == 0
    torch.testing.assert_close(loss.double(), nll.mean(), rtol=1e-5, atol=1e-6)
    unreduced = readout(embeds, targets, return_unreduced_loss=True)
    torch.testing.assert_close(unreduced.double(), nll, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize('clamp_range', [(-2.0, 1.0), (-6.0, 4.0), (0.5, 0.75)])
def test_gaussian_log_var_clamp_range_maps_with_scaled_tanh(clamp_range):
    lo, hi = clamp_range
    C = 4
    readout = ParameterlessReadout(num_continuous=C, continuous_dist_kwargs=dict(log_var_clamp_range=(lo, hi)))
    mean = randn(6, C, seed=3)
    raw_log_var = uniform(-15.0, 15.0, 6, C, seed=4)
    params = torch.stack((mean, raw_log_var), dim=-1)
    x = randn(6, C, seed=5)

    mapped = lo + (torch.tanh(raw_log_var.double() / (hi - lo)) + 1) / 2 * (hi - lo)
    assert (mapped >= lo).all() and (mapped <= hi).all()
    ref = Normal(mean.double(), torch.exp(mapped / 2))
    torch.testing.assert_close(readout.log_prob(params, x).double(), ref.log_prob(x.double()), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(readout.entropy(params).double(), ref.entropy(), rtol=1e-5, atol=1e-5)


def test_gaussian_samples_follow_mean_and_variance():
    torch.manual_seed(0)
    C = 3
    readout = ParameterlessReadout(num_continuous=C)
    params = torch.tensor([[0.5, math.log(0.25)], [-3.0, math.log(4.0)], [10.0, math.log(1e-2)]])
    n = 40_000
    samples = readout.sample(params.expand(n, C, 2)).double()
    mean, std = params[:, 0].double(), torch.exp(0.5 * params[:, 1].double())
    # 5 standard errors of the mean, and of the std (about std / sqrt(2n))
    assert ((samples.mean(0) - mean).abs() < 5 * std / math.sqrt(n)).all()
    assert ((samples.std(0) - std).abs() < 5 * std / math.sqrt(2 * n)).all()


# --------------------------------------------------------------------------- 2. beta and kumaraswamy


@pytest.mark.parametrize('dist_type', ['beta', 'kumaraswamy'])
@pytest.mark.parametrize('unimodal', [False, True])
def test_unit_interval_log_prob_and_entropy_match_torch(dist_type, unimodal):
    C = 3
    readout = ParameterlessReadout(
        num_continuous=C, continuous_dist_type=dist_type, continuous_dist_kwargs=dict(unimodal=unimodal)
    )
    params = randn(5, C, 2, seed=6) * 2
    x = uniform(0.01, 0.99, 5, C, seed=7)

    a, b = concentrations(params, unimodal)
    if unimodal:
        assert (a > 1).all() and (b > 1).all()
    ref = reference_unit_dist(dist_type, a, b)
    torch.testing.assert_close(readout.log_prob(params, x).double(), ref.log_prob(x.double()), rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(readout.entropy(params).double(), ref.entropy(), rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize('unimodal', [False, True])
def test_beta_kl_matches_torch_kl_divergence(unimodal):
    C = 3
    readout = ParameterlessReadout(
        num_continuous=C, continuous_dist_type='beta', continuous_dist_kwargs=dict(unimodal=unimodal)
    )
    p = randn(4, C, 2, seed=8)
    q = randn(4, C, 2, seed=9)
    ref = kl_divergence(Beta(*concentrations(p, unimodal)), Beta(*concentrations(q, unimodal)))
    torch.testing.assert_close(readout.kl_div(p, q).double(), ref, rtol=1e-4, atol=1e-5)
    assert readout.kl_div(p, p).abs().max() < 1e-5


KUMARASWAMY_PAIRS = {
    # name: (a_p, b_p, a_q, b_q)
    'peaked-vs-flat': (2.0, 3.0, 1.5, 1.2),
    'a_p-below-1': (0.7, 1.5, 2.5, 4.0),
    'b_p-below-1': (3.0, 0.8, 1.0, 2.0),
    'both-q-below-1': (1.3, 5.0, 0.9, 0.6),
    # b_p = 0.2 is softplus(-1.5): an ordinary raw parameter, mass piled near x = 1
    'small-b_p': (0.6, 0.2, 1.2, 0.6),
    'small-b_p-same-a': (2.0, 0.25, 2.0, 0.5),
}


@pytest.mark.parametrize('pair', list(KUMARASWAMY_PAIRS.values()), ids=list(KUMARASWAMY_PAIRS))
def test_kumaraswamy_kl_matches_independent_numerical_integral(pair):
    a_p0, b_p0, a_q0, b_q0 = pair
    p = unit_interval_params([a_p0], [b_p0], EPS)
    q = unit_interval_params([a_q0], [b_q0], EPS)
    readout = ParameterlessReadout(num_continuous=1, continuous_dist_type='kumaraswamy')
    kl = readout.kl_div(p, q).double().item()

    # the concentrations the package sees (float32 params), recomputed in float64
    a_p, b_p = (t.item() for t in concentrations(p, unimodal=False))
    a_q, b_q = (t.item() for t in concentrations(q, unimodal=False))
    ref = kumaraswamy_kl_reference(a_p, b_p, a_q, b_q)
    assert ref > 0.05
    assert kl == pytest.approx(ref, rel=1e-3, abs=1e-5)


def test_kumaraswamy_kl_with_unit_a_equals_beta_closed_form():
    """Kumaraswamy(1, b) is Beta(1, b): the KL then has torch's Beta closed form,
    which checks both the package and the reference integrator."""
    b_p = torch.tensor([0.6, 2.0, 3.5])
    b_q = torch.tensor([1.7, 0.9, 3.0])
    ones = torch.ones(3)
    p = unit_interval_params(ones, b_p, EPS)
    q = unit_interval_params(ones, b_q, EPS)
    readout = ParameterlessReadout(num_continuous=3, continuous_dist_type='kumaraswamy')
    kl = readout.kl_div(p, q).double()

    a_p, bb_p = concentrations(p, unimodal=False)
    a_q, bb_q = concentrations(q, unimodal=False)
    closed = kl_divergence(Beta(a_p, bb_p), Beta(a_q, bb_q))
    torch.testing.assert_close(kl, closed, rtol=1e-3, atol=1e-5)
    for i in range(3):
        integral = kumaraswamy_kl_reference(a_p[i].item(), bb_p[i].item(), a_q[i].item(), bb_q[i].item())
        assert integral == pytest.approx(closed[i].item(), rel=1e-4, abs=1e-6)


@pytest.mark.parametrize('unimodal', [False, True])
def test_kumaraswamy_kl_of_a_distribution_with_itself_is_zero(unimodal):
    readout = ParameterlessReadout(
        num_continuous=4, continuous_dist_type='kumaraswamy', continuous_dist_kwargs=dict(unimodal=unimodal)
    )
    p = randn(3, 4, 2, seed=11)
    kl = readout.kl_div(p, p)
    assert kl.abs().max() < 1e-4


@pytest.mark.parametrize('dist_type', ['beta', 'kumaraswamy'])
@pytest.mark.parametrize('clip_eps', [1e-5, 1e-3])
def test_unit_interval_clip_keeps_samples_inside_margin(dist_type, clip_eps):
    """Tiny concentrations push the mass onto the edges: raw kumaraswamy samples
    round to exactly 0 or 1; with clip=True the readout's stay in [clip_eps, 1 - clip_eps]."""
    torch.manual_seed(0)
    C, n = 2, 4000
    readout = ParameterlessReadout(
        num_continuous=C, continuous_dist_type=dist_type, continuous_dist_kwargs=dict(clip=True, clip_eps=clip_eps)
    )
    params = torch.full((n, C, 2), -8.0)
    a, b = concentrations(params[:1], unimodal=False)
    if dist_type == 'kumaraswamy':
        raw = Kumaraswamy(a.float().expand(n, C), b.float().expand(n, C)).sample()
        assert ((raw == 0) | (raw == 1)).any()  # the hazard the clip exists for

    samples = readout.sample(params)
    lo, hi = torch.tensor(clip_eps), torch.tensor(1 - clip_eps)  # the margins in float32
    assert (samples >= lo).all() and (samples <= hi).all()
    # the clamp is active: a margin is reached
    assert (samples == lo).any() or (samples == hi).any()
    log_prob = readout.log_prob(params, samples)
    assert torch.isfinite(log_prob).all()
    x = samples.double()
    if dist_type == 'beta':
        ref = Beta(a, b).log_prob(x)
    else:  # closed form in log space (torch's transformed-uniform form is fragile at tiny a, b)
        ref = torch.log(a * b) + (a - 1) * torch.log(x) + (b - 1) * torch.log(-torch.expm1(a * torch.log(x)))
    torch.testing.assert_close(log_prob.double(), ref, rtol=1e-3, atol=1e-3)


@pytest.mark.parametrize('dist_type', ['beta', 'kumaraswamy'])
def test_unit_interval_samples_match_closed_form_moments(dist_type):
    torch.manual_seed(0)
    n = 40_000
    pairs = torch.tensor([[2.0, 5.0], [0.8, 1.5], [4.0, 1.2]], dtype=torch.float64)
    params = unit_interval_params(pairs[:, 0], pairs[:, 1], EPS)
    readout = ParameterlessReadout(num_continuous=3, continuous_dist_type=dist_type)
    samples = readout.sample(params.expand(n, 3, 2)).double()

    a, b = concentrations(params, unimodal=False)
    if dist_type == 'beta':
        mean = a / (a + b)
        var = a * b / ((a + b) ** 2 * (a + b + 1))
    else:
        mean = kumaraswamy_raw_moment(a, b, 1)
        var = kumaraswamy_raw_moment(a, b, 2) - mean**2
    assert ((samples.mean(0) - mean).abs() < 5 * var.sqrt() / math.sqrt(n)).all()
    assert ((samples.var(0) - var).abs() < 0.03 * var).all()


# --------------------------------------------------------------------------- 3. squashed gaussian


def squashed_readout(C, **kwargs):
    return ParameterlessReadout(num_continuous=C, continuous_squashed=True, **kwargs)


def test_squashed_samples_lie_strictly_inside_unit_interval():
    torch.manual_seed(0)
    readout = squashed_readout(3)
    params = gaussian_params(2000, num_continuous=3, seed=12)
    samples = readout.sample(params)
    assert (samples > -1).all() and (samples < 1).all()


def test_squashed_samples_are_tanh_of_one_normal_draw():
    """atanh of a sample has the pre-tanh normal's moments, and a wide normal
    puts most samples close to +-1 (P(|u| > atanh(0.99)) for u ~ N(0, 10^2))."""
    torch.manual_seed(0)
    readout = squashed_readout(3)
    params = torch.tensor([[0.4, math.log(0.09)], [-0.8, math.log(0.5)], [0.0, math.log(1.0)]])
    n = 40_000
    u = torch.atanh(readout.sample(params.expand(n, 3, 2)).double())
    mean, std = params[:, 0].double(), torch.exp(0.5 * params[:, 1].double())
    assert ((u.mean(0) - mean).abs() < 5 * std / math.sqrt(n)).all()
    assert ((u.std(0) - std).abs() < 5 * std / math.sqrt(2 * n)).all()

    wide = torch.tensor([[0.0, math.log(100.0)]])
    near_edge = (readout.sample(wide.expand(n, 1, 2).expand(n, 3, 2)).abs() > 0.99).double().mean()
    expected = 2 * Normal(0.0, 10.0).cdf(torch.tensor(-math.atanh(0.99))).item()
    assert near_edge.item() == pytest.approx(expected, abs=0.02)


def test_squashed_log_prob_is_normal_at_atanh_minus_log_one_minus_a_squared():
    C = 3
    readout = squashed_readout(C)
    params = gaussian_params(6, num_continuous=C, seed=13)
    a = uniform(-0.999, 0.999, 6, C, seed=14)
    expected = squashed_log_density(params, a)
    torch.testing.assert_close(readout.log_prob(params, a).double(), expected, rtol=1e-4, atol=1e-4)


def test_squashed_log_prob_matches_finite_difference_change_of_variables():
    C = 3
    readout = squashed_readout(C)
    params = gaussian_params(6, num_continuous=C, seed=15, dtype=torch.float64)
    a = uniform(-0.99, 0.99, 6, C, seed=16, dtype=torch.float64)
    h = 1e-6
    d_atanh = (torch.atanh(a + h) - torch.atanh(a - h)) / (2 * h)
    expected = normal_of(params).log_prob(torch.atanh(a)) + torch.log(d_atanh)
    torch.testing.assert_close(readout.log_prob(params, a), expected, rtol=1e-6, atol=1e-6)


def test_squashed_density_integrates_to_one():
    readout = squashed_readout(3)
    params = torch.tensor([[0.3, math.log(0.25)], [-1.0, math.log(2.25)], [2.0, math.log(0.5)]], dtype=torch.float64)
    a, h = midpoints(-1.0, 1.0, 200_000)
    density = readout.log_prob(params.expand(len(a), 3, 2), a[:, None].expand(-1, 3)).exp()
    torch.testing.assert_close(density.sum(0) * h, torch.ones(3, dtype=torch.float64), rtol=0, atol=1e-4)


@pytest.mark.parametrize('edge', [1 - 1e-6, -(1 - 1e-6)])
def test_squashed_log_prob_is_finite_and_accurate_near_the_edges(edge):
    readout = squashed_readout(2)
    params = torch.tensor([[0.0, 0.0], [3.0, math.log(4.0)]])
    a = torch.full((2,), edge)  # float32: the representable point nearest 1 - 1e-6
    out = readout.log_prob(params, a)
    assert torch.isfinite(out).all()
    torch.testing.assert_close(out.double(), squashed_log_density(params, a), rtol=1e-4, atol=1e-4)


def test_squashed_entropy_and_kl_are_those_of_the_pre_tanh_normal():
    C = 3
    readout = squashed_readout(C)
    p = gaussian_params(4, num_continuous=C, seed=17)
    q = gaussian_params(4, num_continuous=C, seed=18)
    # judgement call kept from the original: the pre-tanh entropy (spec section 12)
    torch.testing.assert_close(readout.entropy(p).double(), normal_of(p).entropy(), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(readout.kl_div(p, q).double(), kl_divergence(normal_of(p), normal_of(q)), rtol=1e-4, atol=1e-5)


def test_squashed_kl_equals_numerical_kl_of_the_squashed_densities():
    """KL is invariant under the shared tanh: integrate p log(p/q) over (-1, 1)."""
    readout = squashed_readout(2)
    p = torch.tensor([[0.2, math.log(0.3)], [-0.5, math.log(1.0)]])
    q = torch.tensor([[0.6, math.log(0.5)], [0.1, math.log(0.4)]])
    a, h = midpoints(-1.0, 1.0, 400_000)
    a2 = a[:, None].expand(-1, 2)
    log_p = squashed_log_density(p.expand(len(a), 2, 2), a2)
    log_q = squashed_log_density(q.expand(len(a), 2, 2), a2)
    numerical = (log_p.exp() * (log_p - log_q)).sum(0) * h
    torch.testing.assert_close(readout.kl_div(p, q).double(), numerical, rtol=1e-3, atol=1e-5)


@pytest.mark.parametrize(
    'kwargs, native',
    [
        (dict(), None),
        (dict(continuous_squashed=True), (-1.0, 1.0)),
        (dict(continuous_dist_type='beta'), (0.0, 1.0)),
        (dict(continuous_dist_type='kumaraswamy'), (0.0, 1.0)),
    ],
)
def test_continuous_native_range(kwargs, native):
    readout = ParameterlessReadout(num_continuous=2, **kwargs)
    got = readout.get_continuous_native_range()
    assert got == native if native is None else tuple(got) == native


@pytest.mark.parametrize(
    'kwargs, native',
    [
        (dict(continuous_squashed=True), (-1.0, 1.0)),
        (dict(continuous_dist_type='beta'), (0.0, 1.0)),
        (dict(continuous_dist_type='kumaraswamy'), (0.0, 1.0)),
    ],
)
@pytest.mark.parametrize('target', [(0.0, 10.0), (-3.0, -2.5)])
def test_sample_rescale_range_maps_native_samples_linearly(kwargs, native, target):
    lo, hi = target
    n_lo, n_hi = native
    readout = ParameterlessReadout(num_continuous=3, **kwargs)
    params = randn(500, 3, 2, seed=19)

    torch.manual_seed(7)
    native_samples = readout.sample(params)
    torch.manual_seed(7)
    rescaled = readout.sample(params, rescale_range=(lo, hi))

    expected = (native_samples.double() - n_lo) / (n_hi - n_lo) * (hi - lo) + lo
    torch.testing.assert_close(rescaled.double(), expected, rtol=1e-5, atol=1e-5)
    assert (rescaled >= lo).all() and (rescaled <= hi).all()
    assert rescaled.min() < lo + 0.45 * (hi - lo) and rescaled.max() > hi - 0.45 * (hi - lo)


@pytest.mark.parametrize(
    'kwargs, native',
    [
        (dict(continuous_squashed=True), (-1.0, 1.0)),
        (dict(continuous_dist_type='beta'), (0.0, 1.0)),
        (dict(continuous_dist_type='kumaraswamy'), (0.0, 1.0)),
    ],
)
@pytest.mark.parametrize('as_tensor', [False, True])
def test_per_dim_rescale_range_maps_each_dim_to_its_own_bounds(kwargs, native, as_tensor):
    lo, hi = [-2.0, 0.0, 10.0], [2.0, 1.0, 30.0]
    bounds = (torch.tensor(lo), torch.tensor(hi)) if as_tensor else (lo, hi)
    n_lo, n_hi = native
    readout = ParameterlessReadout(num_continuous=3, **kwargs)
    params = randn(400, 3, 2, seed=24)

    torch.manual_seed(8)
    native_samples, native_log_prob = readout.sample(params, return_log_prob=True)
    torch.manual_seed(8)
    rescaled, log_prob = readout.sample(params, rescale_range=bounds, return_log_prob=True)

    lo_t, hi_t = torch.tensor(lo, dtype=torch.float64), torch.tensor(hi, dtype=torch.float64)
    torch.testing.assert_close(rescaled.double(), (native_samples.double() - n_lo) / (n_hi - n_lo) * (hi_t - lo_t) + lo_t, rtol=1e-5, atol=1e-5)
    assert ((rescaled >= lo_t.float()) & (rescaled <= hi_t.float())).all()
    # the returned log-prob is that of the returned (rescaled, float32) value, everywhere
    torch.testing.assert_close(log_prob, readout.log_prob(params, rescaled, rescale_range=bounds), rtol=0, atol=1e-5)
    torch.testing.assert_close(readout.get_dist(params, rescale_range=bounds).log_prob(rescaled), log_prob.sum(-1), rtol=1e-5, atol=1e-4)
    # the log-density changes by -log(width / native width), dim by dim: away from the
    # edges, where the float32 rounding of the rescaled value moves steep log-densities
    expected = native_log_prob - torch.log((hi_t - lo_t) / (n_hi - n_lo)).float()
    inside = ((native_samples - (n_lo + n_hi) / 2).abs() < 0.49 * (n_hi - n_lo)).all(-1)
    torch.testing.assert_close(log_prob[inside], expected[inside], rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(readout.rescale_to_native(rescaled, bounds), native_samples, rtol=1e-4, atol=1e-5)


def test_per_dim_rescaled_squashed_gaussian_matches_torch_transformed_distribution():
    from torch.distributions import AffineTransform, TanhTransform, TransformedDistribution

    lo, hi = torch.tensor([-2.0, 0.5]), torch.tensor([3.0, 0.75])
    readout = ParameterlessReadout(num_continuous=2, continuous_squashed=True)
    params = randn(300, 2, 2, seed=25)
    values = readout.sample(params, rescale_range=(lo, hi))
    reference = TransformedDistribution(
        Normal(params[..., 0], (0.5 * params[..., 1]).exp()),
        [TanhTransform(), AffineTransform((lo + hi) / 2, (hi - lo) / 2)],
    )
    inside = (values - (lo + hi) / 2).abs() < 0.999 * (hi - lo) / 2  # away from the edges, where torch's tanh inverse is exact enough
    got = readout.log_prob(params, values, rescale_range=(lo, hi))
    torch.testing.assert_close(got[inside], reference.log_prob(values)[inside], rtol=1e-3, atol=1e-3)


@pytest.mark.parametrize('kwargs', [dict(continuous_squashed=True), dict(continuous_dist_type='beta')])
def test_rescale_from_and_to_native_invert_each_other(kwargs):
    readout = ParameterlessReadout(num_continuous=2, **kwargs)
    n_lo, n_hi = readout.get_continuous_native_range()
    lo, hi = -4.0, 6.0
    # hand-worked: the native endpoints and midpoint go to the target's
    ends = torch.tensor([n_lo, (n_lo + n_hi) / 2, n_hi])
    torch.testing.assert_close(readout.rescale_from_native(ends, (lo, hi)), torch.tensor([lo, 1.0, hi]))
    torch.testing.assert_close(readout.rescale_to_native(torch.tensor([lo, 1.0, hi]), (lo, hi)), ends)

    t = uniform(n_lo, n_hi, 50, 2, seed=21)
    torch.testing.assert_close(readout.rescale_to_native(readout.rescale_from_native(t, (lo, hi)), (lo, hi)), t)
    y = uniform(lo, hi, 50, 2, seed=22)
    torch.testing.assert_close(readout.rescale_from_native(readout.rescale_to_native(y, (lo, hi)), (lo, hi)), y)


def test_plain_gaussian_rejects_rescale_range():
    readout = ParameterlessReadout(num_continuous=2)
    params = randn(4, 2, 2, seed=23)
    with pytest.raises(ValueError):
        readout.sample(params, rescale_range=(0.0, 1.0))
    with pytest.raises(ValueError):
        readout.rescale_from_native(torch.zeros(3), (0.0, 1.0))
    with pytest.raises(ValueError):
        readout.rescale_to_native(torch.zeros(3), (0.0, 1.0))


# --------------------------------------------------------------------------- 4. normalisation

MEAN_STD = torch.tensor([[3.0, 2.0], [-1.0, 0.5], [10.0, 7.0]])


def _normalised_reference_log_prob(kind, params, z):
    """Log-density in normalised units z, computed independently per head."""
    if kind == 'gaussian':
        return normal_of(params).log_prob(z.double())
    if kind == 'squashed':
        return squashed_log_density(params, z)
    a, b = concentrations(params, unimodal=True)
    return reference_unit_dist(kind, a, b).log_prob(z.double())


def _normalised_reference_entropy(kind, params):
    if kind in ('gaussian', 'squashed'):
        return normal_of(params).entropy()
    a, b = concentrations(params, unimodal=True)
    return reference_unit_dist(kind, a, b).entropy()


NORMALISED_HEADS = {
    'gaussian': dict(),
    'squashed': dict(continuous_squashed=True),
    'beta': dict(continuous_dist_type='beta', continuous_dist_kwargs=dict(unimodal=True)),
    'kumaraswamy': dict(continuous_dist_type='kumaraswamy', continuous_dist_kwargs=dict(unimodal=True)),
}
NORMALISED_SUPPORT = {'gaussian': (-4.0, 4.0), 'squashed': (-0.99, 0.99), 'beta': (0.02, 0.98), 'kumaraswamy': (0.02, 0.98)}


def _normalised_params(kind, *batch, seed):
    if kind in ('gaussian', 'squashed'):
        return gaussian_params(*batch, num_continuous=3, seed=seed)
    return randn(*batch, 3, 2, seed=seed)


@pytest.mark.parametrize('kind', list(NORMALISED_HEADS))
def test_normalised_log_prob_is_change_of_variables(kind):
    readout = ParameterlessReadout(num_continuous=3, continuous_mean_std=MEAN_STD, **NORMALISED_HEADS[kind])
    params = _normalised_params(kind, 5, seed=24)
    z = uniform(*NORMALISED_SUPPORT[kind], 5, 3, seed=25)
    mean, std = MEAN_STD[:, 0], MEAN_STD[:, 1]
    x = z * std + mean  # original units

    expected = _normalised_reference_log_prob(kind, params, (x.double() - mean) / std) - std.double().log()
    torch.testing.assert_close(readout.log_prob(params, x).double(), expected, rtol=1e-4, atol=1e-4)
    if kind == 'gaussian':
        m, lv = params.double().unbind(-1)
        direct = Normal(m * std + mean, torch.exp(0.5 * lv) * std).log_prob(x.double())
        torch.testing.assert_close(readout.log_prob(params, x).double(), direct, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize('kind', list(NORMALISED_HEADS))
def test_normalised_density_integrates_to_one_in_original_units(kind):
    """The reported density is a density in ORIGINAL units: it integrates to 1 over x."""
    readout = ParameterlessReadout(
        num_continuous=3, continuous_mean_std=MEAN_STD.double(), **NORMALISED_HEADS[kind]
    )
    if kind in ('gaussian', 'squashed'):
        params = torch.tensor([[0.3, math.log(0.25)], [-0.5, math.log(0.6)], [0.1, math.log(0.8)]], dtype=torch.float64)
    else:
        params = unit_interval_params([2.5, 3.0, 1.8], [4.0, 2.0, 2.2], offset=1.0, dtype=torch.float64)
    n = 200_000
    mean, std = MEAN_STD[:, 0].double(), MEAN_STD[:, 1].double()
    if kind == 'gaussian':
        z_lo, z_hi = -6.0, 6.0  # covers +-8 sigma of every dim
    elif kind == 'squashed':
        z_lo, z_hi = -1.0, 1.0
    else:
        z_lo, z_hi = 0.0, 1.0
    u, _ = midpoints(0.0, 1.0, n)
    x = (mean + std * z_lo) + u[:, None] * (std * (z_hi - z_lo))  # (n, 3) grid per dim
    h = std * (z_hi - z_lo) / n
    density = readout.log_prob(params.expand(n, 3, 2), x).exp()
    torch.testing.assert_close(density.sum(0) * h, torch.ones(3, dtype=torch.float64), rtol=0, atol=1e-3)


@pytest.mark.parametrize('kind', list(NORMALISED_HEADS))
def test_normalised_entropy_adds_log_std(kind):
    readout = ParameterlessReadout(num_continuous=3, continuous_mean_std=MEAN_STD, **NORMALISED_HEADS[kind])
    params = _normalised_params(kind, 4, seed=26)
    expected = _normalised_reference_entropy(kind, params) + MEAN_STD[:, 1].double().log()
    torch.testing.assert_close(readout.entropy(params).double(), expected, rtol=1e-4, atol=1e-4)
    if kind == 'gaussian':
        m, lv = params.double().unbind(-1)
        direct = Normal(m * MEAN_STD[:, 1] + MEAN_STD[:, 0], torch.exp(0.5 * lv) * MEAN_STD[:, 1]).entropy()
        torch.testing.assert_close(readout.entropy(params).double(), direct, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize('kind', list(NORMALISED_HEADS))
def test_normalised_sample_is_denormalised(kind):
    """Nearly deterministic heads: the sample is the head's centre mapped by x * std + mean."""
    torch.manual_seed(0)
    readout = ParameterlessReadout(num_continuous=3, continuous_mean_std=MEAN_STD, **NORMALISED_HEADS[kind])
    mean, std = MEAN_STD[:, 0], MEAN_STD[:, 1]
    if kind in ('gaussian', 'squashed'):
        centre = torch.tensor([0.7, -1.2, 0.1])
        params = torch.stack((centre, torch.full((3,), -40.0)), dim=-1).expand(8, 3, 2)
        native = torch.tanh(centre) if kind == 'squashed' else centre
    else:
        a = torch.tensor([2e5, 5e5, 1e5], dtype=torch.float64)
        b = torch.tensor([6e5, 5e5, 3e5], dtype=torch.float64)
        params = unit_interval_params(a, b, offset=1.0).expand(8, 3, 2)
        ca, cb = concentrations(params[0], unimodal=True)
        native = (ca / (ca + cb) if kind == 'beta' else kumaraswamy_raw_moment(ca, cb, 1)).float()
    samples = readout.sample(params)
    expected = (native * std + mean).expand_as(samples)
    torch.testing.assert_close(samples, expected, rtol=0, atol=5e-3)


def test_normalised_gaussian_nll_loss_is_in_original_units():
    torch.manual_seed(0)
    D = 6
    readout = Readout(D, num_continuous=3, continuous_mean_std=MEAN_STD)
    with torch.no_grad():
        readout.embeddings.weight.normal_(0.0, 0.3)
    embeds = randn(4, D, seed=27)
    targets = randn(4, 3, seed=28) * MEAN_STD[:, 1] + MEAN_STD[:, 0]
    w = readout.embeddings.weight.detach().double()
    m, lv = embeds.double() @ w[:3].T, embeds.double() @ w[3:6].T
    std, mean = MEAN_STD[:, 1].double(), MEAN_STD[:, 0].double()
    nll = -Normal(m * std + mean, torch.exp(0.5 * lv) * std).log_prob(targets.double())
    torch.testing.assert_close(readout(embeds, targets).double(), nll.mean(), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize('loss_type', ['mse', 'l1'])
@pytest.mark.parametrize('normalised', [False, True])
def test_regression_loss_and_sample(loss_type, normalised):
    torch.manual_seed(0)
    D, C = 6, 3
    mean_std = MEAN_STD if normalised else None
    readout = Readout(
        D, num_continuous=C, continuous_log_var_embed=False, regression_loss_type=loss_type, continuous_mean_std=mean_std
    )
    with torch.no_grad():
        readout.embeddings.weight.normal_(0.0, 0.5)
    assert readout.embeddings.weight.shape[0] == C  # no log-var rows in regression mode
    embeds = randn(2, 4, D, seed=29)
    targets = randn(2, 4, C, seed=30) * 3 + 1
    pred = embeds @ readout.embeddings.weight.detach().T
    norm_targets = (targets - MEAN_STD[:, 0]) / MEAN_STD[:, 1] if normalised else targets
    fn = F.mse_loss if loss_type == 'mse' else F.l1_loss
    torch.testing.assert_close(readout(embeds, targets), fn(pred, norm_targets), rtol=1e-5, atol=1e-6)
    # the sample of a mean-only head is its prediction, de-normalised
    expected_sample = pred * MEAN_STD[:, 1] + MEAN_STD[:, 0] if normalised else pred
    torch.testing.assert_close(readout.sample(readout(embeds)), expected_sample, rtol=1e-5, atol=1e-5)


# --------------------------------------------------------------------------- 5. user-registered head


@pytest.mark.parametrize('weight_tie', [False, True])
def test_registered_laplace_head_end_to_end(register_head, weight_tie):
    register_head('laplace', MyLaplace)
    torch.manual_seed(0)
    D, C = 8, 2
    embed, readout = EmbedAndReadout(D, num_continuous=C, continuous_dist_type='laplace', weight_tie=weight_tie)
    assert isinstance(readout.continuous_dist, MyLaplace)
    with torch.no_grad():
        readout.embeddings.weight.normal_(0.0, 0.5)
        embed.embeddings.weight.normal_(0.0, 0.5)

    x = randn(3, 5, C, seed=31)
    targets = randn(3, 5, C, seed=32)
    loss = readout(embed(x), targets)

    # the same loss from the tables by hand
    w_e = embed.embeddings.weight
    w_r = readout.embeddings.weight
    e = x @ w_e[:C]
    loc, raw_scale = e @ w_r[:C].T, e @ w_r[C : 2 * C].T
    scale = F.softplus(raw_scale) + EPS
    ref_loss = (torch.log(2 * scale) + (targets - loc).abs() / scale).mean()
    torch.testing.assert_close(loss, ref_loss, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(loss, -Laplace(loc, scale).log_prob(targets).mean(), rtol=1e-5, atol=1e-6)

    params_list = list({id(w_e): w_e, id(w_r): w_r}.values())
    ref_grads = torch.autograd.grad(ref_loss, params_list)
    loss.backward()
    for param, ref in zip(params_list, ref_grads):
        assert param.grad is not None and param.grad.abs().sum() > 0
        torch.testing.assert_close(param.grad, ref, rtol=1e-4, atol=1e-6)
    if weight_tie:
        assert embed.embeddings.weight is readout.embeddings.weight


def test_registered_laplace_head_sample_log_prob_entropy_kl(register_head):
    register_head('laplace', MyLaplace)
    torch.manual_seed(0)
    C = 3
    readout = ParameterlessReadout(num_continuous=C, continuous_dist_type='laplace')
    p = randn(4, C, 2, seed=33)
    q = randn(4, C, 2, seed=34)
    x = randn(4, C, seed=35) * 2
    loc_p, scale_p = p[..., 0].double(), F.softplus(p[..., 1].double()) + EPS
    loc_q, scale_q = q[..., 0].double(), F.softplus(q[..., 1].double()) + EPS
    closed = laplace_closed_forms(loc_p, scale_p)

    torch.testing.assert_close(readout.log_prob(p, x).double(), closed['log_prob'](x.double()), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(readout.log_prob(p, x).double(), Laplace(loc_p, scale_p).log_prob(x.double()), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(readout.entropy(p).double(), closed['entropy'], rtol=1e-5, atol=1e-5)
    kl = readout.kl_div(p, q).double()
    torch.testing.assert_close(kl, laplace_kl_closed_form(loc_p, scale_p, loc_q, scale_q), rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(kl, kl_divergence(Laplace(loc_p, scale_p), Laplace(loc_q, scale_q)), rtol=1e-4, atol=1e-5)

    # samples: median is the loc, mean absolute deviation is the scale
    params = torch.tensor([[1.5, 0.3], [-2.0, -1.0], [0.0, 2.0]])
    n = 40_000
    samples = readout.sample(params.expand(n, C, 2)).double()
    loc, scale = params[:, 0].double(), F.softplus(params[:, 1].double()) + EPS
    assert ((samples.median(0).values - loc).abs() < 5 * scale / math.sqrt(n)).all()
    assert (((samples - loc).abs().mean(0) - scale).abs() < 5 * scale / math.sqrt(n)).all()


def test_registered_head_forward_clip_sampled_and_default_range_are_used(register_head):
    register_head('clamped_loc', MyClampedLocHead)
    readout = ParameterlessReadout(num_continuous=2, continuous_dist_type='clamped_loc')
    assert tuple(readout.get_continuous_native_range()) == (-1.0, 1.0)
    params = torch.tensor([[[-3.0, 0.0], [0.2, 0.0]], [[0.9, 1.0], [-0.4, -1.0]]])
    expected = params[..., 0].clamp(-0.5, 0.5)  # forward gives the loc, clip_sampled clamps it
    torch.testing.assert_close(readout.sample(params), expected)
    torch.testing.assert_close(readout.sample(params, rescale_range=(0.0, 10.0)), (expected + 1) / 2 * 10)


def test_unregistered_head_name_is_rejected_after_removal(register_head):
    register_head('laplace_tmp', MyLaplace)
    ParameterlessReadout(num_continuous=1, continuous_dist_type='laplace_tmp')
    CONTINUOUS_DISTRIBUTIONS.pop('laplace_tmp')
    with pytest.raises(ValueError):
        ParameterlessReadout(num_continuous=1, continuous_dist_type='laplace_tmp')


# --------------------------------------------------------------------------- 6. differentiable sampling


def test_gaussian_differentiable_sample_is_reparameterised():
    torch.manual_seed(0)
    readout = ParameterlessReadout(num_continuous=3)
    params = gaussian_params(50, num_continuous=3, seed=36, dtype=torch.float64).requires_grad_()
    s = readout.sample(params, differentiable=True)
    assert s.requires_grad
    s.sum().backward()
    mean = params.detach()[..., 0]
    # s = mean + exp(log_var / 2) * noise: ds/dmean = 1, ds/dlog_var = (s - mean) / 2
    torch.testing.assert_close(params.grad[..., 0], torch.ones_like(mean))
    torch.testing.assert_close(params.grad[..., 1], 0.5 * (s.detach() - mean))
    # the plain sample carries no graph
    assert not readout.sample(params).requires_grad


def test_squashed_differentiable_sample_is_reparameterised():
    torch.manual_seed(0)
    readout = squashed_readout(3)
    params = gaussian_params(50, num_continuous=3, seed=37, dtype=torch.float64).requires_grad_()
    s = readout.sample(params, differentiable=True)
    s.sum().backward()
    s = s.detach()
    mean = params.detach()[..., 0]
    # s = tanh(mean + std * noise): ds/dmean = 1 - s^2, ds/dlog_var = (1 - s^2) (atanh(s) - mean) / 2
    torch.testing.assert_close(params.grad[..., 0], 1 - s**2)
    torch.testing.assert_close(params.grad[..., 1], (1 - s**2) * 0.5 * (torch.atanh(s) - mean), rtol=1e-5, atol=1e-7)


def test_kumaraswamy_differentiable_sample_has_implicit_reparameterisation_gradient():
    torch.manual_seed(0)
    readout = ParameterlessReadout(num_continuous=3, continuous_dist_type='kumaraswamy')
    params = unit_interval_params([1.5, 2.0, 3.0], [2.0, 4.0, 1.5], EPS, dtype=torch.float64)
    params = params.expand(40, 3, 2).clone().requires_grad_()
    x = readout.sample(params, differentiable=True)
    x.sum().backward()
    x = x.detach()
    a, b = concentrations(params.detach(), unimodal=False)
    sig0, sig1 = torch.sigmoid(params.detach()).unbind(-1)
    # x = (1 - v^(1/b))^(1/a): dx/da = -x log(x) / a, dx/db = x (1 - x^a) log(1 - x^a) / (a b x^a)
    xa = x**a
    torch.testing.assert_close(params.grad[..., 0], -x * torch.log(x) / a * sig0, rtol=1e-6, atol=1e-8)
    torch.testing.assert_close(params.grad[..., 1], x * (1 - xa) * torch.log1p(-xa) / (a * b * xa) * sig1, rtol=1e-6, atol=1e-8)
