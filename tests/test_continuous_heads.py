"""The built-in continuous heads through the public Readout API, checked against
values computed independently: torch.distributions, closed forms, numerical
integrals and finite differences (spec sections 2, 5, 6, 8, 11).

- gaussian: log_prob, entropy, KL, the NLL loss, ``log_var_clamp_range``, samples;
- beta and kumaraswamy (free and unimodal): log_prob, entropy, KL (kumaraswamy's
  against a numerical integral), clipped samples, moments;
- squashed gaussian: samples are tanh of one normal draw, the change-of-variables
  density, its edges, entropy and KL of the pre-tanh normal;
- reparameterised (differentiable) samples and their gradients.
"""

import math

import pytest
import torch
from helpers import (
    EPS,
    LOG_2PI,
    concentrations,
    gaussian_nll,
    gaussian_params,
    kumaraswamy_raw_moment,
    midpoints,
    normal_of,
    reference_unit_dist,
    seeded_randn,
    seeded_uniform,
    soft_clamp_log_var,
    squashed_log_density,
    unit_interval_params,
)
from torch.distributions import Beta, Kumaraswamy, Normal, kl_divergence

from discrete_continuous_embed_readout import ParameterlessReadout, Readout


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


def squashed_readout(C, **kwargs):
    return ParameterlessReadout(num_continuous=C, continuous_squashed=True, **kwargs)


# gaussian


def test_gaussian_log_prob_entropy_kl_match_torch_normal():
    C = 3
    readout = ParameterlessReadout(num_continuous=C)
    p = gaussian_params(4, 5, num_continuous=C, seed=0)
    q = gaussian_params(4, 5, num_continuous=C, seed=10)
    x = seeded_randn(4, 5, C, seed=20) * 2

    ref_p, ref_q = normal_of(p), normal_of(q)
    torch.testing.assert_close(readout.log_prob(p, x).double(), ref_p.log_prob(x.double()), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(readout.entropy(p).double(), ref_p.entropy(), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(readout.kl_div(p, q).double(), kl_divergence(ref_p, ref_q), rtol=1e-4, atol=1e-5)

    # hand-worked closed forms of the same three quantities
    m, lv = p.double().unbind(-1)
    mq, lvq = q.double().unbind(-1)
    hand_log_prob = -gaussian_nll(m, lv, x.double())
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
    embeds = seeded_randn(2, 5, D, seed=1)
    targets = seeded_randn(2, 5, C, seed=2)

    # params computed by hand from the table layout [mean rows 0..C-1][log-var rows 0..C-1]
    w = readout.embeddings.weight.detach().double()
    mean = embeds.double() @ w[:C].T
    log_var = embeds.double() @ w[C : 2 * C].T
    nll = gaussian_nll(mean, log_var, targets.double())

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
    mean = seeded_randn(6, C, seed=3)
    raw_log_var = seeded_uniform(-15.0, 15.0, 6, C, seed=4)
    params = torch.stack((mean, raw_log_var), dim=-1)
    x = seeded_randn(6, C, seed=5)

    mapped = soft_clamp_log_var(raw_log_var.double(), lo, hi)
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


# beta and kumaraswamy


@pytest.mark.parametrize('dist_type', ['beta', 'kumaraswamy'])
@pytest.mark.parametrize('unimodal', [False, True])
def test_unit_interval_log_prob_and_entropy_match_torch(dist_type, unimodal):
    C = 3
    readout = ParameterlessReadout(
        num_continuous=C, continuous_dist_type=dist_type, continuous_dist_kwargs=dict(unimodal=unimodal)
    )
    params = seeded_randn(5, C, 2, seed=6) * 2
    x = seeded_uniform(0.01, 0.99, 5, C, seed=7)

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
    p = seeded_randn(4, C, 2, seed=8)
    q = seeded_randn(4, C, 2, seed=9)
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
    p = seeded_randn(3, 4, 2, seed=11)
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


def test_kumaraswamy_samples_at_vanishing_concentrations_are_clipped():
    readout = ParameterlessReadout(num_continuous=1, continuous_dist_type='kumaraswamy', continuous_dist_kwargs=dict(clip_eps=1e-3))
    # concentrations near 0 push samples onto 0 and 1 in float32
    params = torch.full((20000, 1, 2), -30.0)
    sampled = readout.sample(params)
    assert sampled.min() >= 1e-3 and sampled.max() <= 1 - 1e-3
    assert torch.isfinite(readout.log_prob(params, sampled)).all()


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


# squashed gaussian


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
    a = seeded_uniform(-0.999, 0.999, 6, C, seed=14)
    expected = squashed_log_density(params, a)
    torch.testing.assert_close(readout.log_prob(params, a).double(), expected, rtol=1e-4, atol=1e-4)


def test_squashed_log_prob_matches_finite_difference_change_of_variables():
    C = 3
    readout = squashed_readout(C)
    params = gaussian_params(6, num_continuous=C, seed=15, dtype=torch.float64)
    a = seeded_uniform(-0.99, 0.99, 6, C, seed=16, dtype=torch.float64)
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


# reparameterised (differentiable) samples


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
