"""Continuous ranges: the native range of each head, ``rescale_range`` (scalar and
per dim: samples mapped linearly, log-probs changed by the log of the scale, the
rescale helpers inverting each other), ``continuous_mean_std`` normalisation (the
density and entropy in original units, de-normalised samples, the losses), and
values outside a bounded head's support (an error, or -inf with checks off)."""

import math

import pytest
import torch
import torch.nn.functional as F
from helpers import (
    MEAN_STD,
    concentrations,
    gaussian_params,
    kumaraswamy_raw_moment,
    midpoints,
    normal_of,
    reference_unit_dist,
    seeded_randn,
    seeded_uniform,
    squashed_log_density,
    unit_interval_params,
)
from torch.distributions import Normal

from discrete_continuous_embed_readout import ParameterlessReadout, Readout, set_validate_args

MEAN_STD3 = MEAN_STD[:3]  # the three continuous dims of the normalised heads below


# native range and rescale_range


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
    params = seeded_randn(500, 3, 2, seed=19)

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
    params = seeded_randn(400, 3, 2, seed=24)

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
    params = seeded_randn(300, 2, 2, seed=25)
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

    t = seeded_uniform(n_lo, n_hi, 50, 2, seed=21)
    torch.testing.assert_close(readout.rescale_to_native(readout.rescale_from_native(t, (lo, hi)), (lo, hi)), t)
    y = seeded_uniform(lo, hi, 50, 2, seed=22)
    torch.testing.assert_close(readout.rescale_from_native(readout.rescale_to_native(y, (lo, hi)), (lo, hi)), y)


def test_plain_gaussian_rejects_rescale_range():
    readout = ParameterlessReadout(num_continuous=2)
    params = seeded_randn(4, 2, 2, seed=23)
    with pytest.raises(ValueError):
        readout.sample(params, rescale_range=(0.0, 1.0))
    with pytest.raises(ValueError):
        readout.rescale_from_native(torch.zeros(3), (0.0, 1.0))
    with pytest.raises(ValueError):
        readout.rescale_to_native(torch.zeros(3), (0.0, 1.0))


@pytest.mark.parametrize('kind', ['beta', 'kumaraswamy', 'squashed'])
def test_rescale_range_with_a_normaliser_keeps_samples_inside_the_range(kind):
    kwargs = dict(continuous_squashed=True) if kind == 'squashed' else dict(continuous_dist_type=kind)
    readout = ParameterlessReadout(num_continuous=2, continuous_mean_std=torch.tensor([[20.0, 4.0], [-3.0, 0.5]]), **kwargs)
    params = torch.randn(5000, 2, 2) * 2
    sampled, log_prob = readout.sample(params, rescale_range=(-2.0, 2.0), return_log_prob=True)
    assert sampled.min() >= -2.0 and sampled.max() <= 2.0  # 0.2.x-style de-normalise-then-rescale gave [16, 24]
    assert sampled.min() < -1.0 and sampled.max() > 1.0
    torch.testing.assert_close(readout.log_prob(params, sampled, rescale_range=(-2.0, 2.0)), log_prob, rtol=0, atol=1e-5)
    mode = readout.mode(params, rescale_range=(-2.0, 2.0))
    assert mode.min() >= -2.0 and mode.max() <= 2.0


# normalisation: continuous_mean_std


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
    return seeded_randn(*batch, 3, 2, seed=seed)


@pytest.mark.parametrize('kind', list(NORMALISED_HEADS))
def test_normalised_log_prob_is_change_of_variables(kind):
    readout = ParameterlessReadout(num_continuous=3, continuous_mean_std=MEAN_STD3, **NORMALISED_HEADS[kind])
    params = _normalised_params(kind, 5, seed=24)
    z = seeded_uniform(*NORMALISED_SUPPORT[kind], 5, 3, seed=25)
    mean, std = MEAN_STD3[:, 0], MEAN_STD3[:, 1]
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
        num_continuous=3, continuous_mean_std=MEAN_STD3.double(), **NORMALISED_HEADS[kind]
    )
    if kind in ('gaussian', 'squashed'):
        params = torch.tensor([[0.3, math.log(0.25)], [-0.5, math.log(0.6)], [0.1, math.log(0.8)]], dtype=torch.float64)
    else:
        params = unit_interval_params([2.5, 3.0, 1.8], [4.0, 2.0, 2.2], offset=1.0, dtype=torch.float64)
    n = 200_000
    mean, std = MEAN_STD3[:, 0].double(), MEAN_STD3[:, 1].double()
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
    readout = ParameterlessReadout(num_continuous=3, continuous_mean_std=MEAN_STD3, **NORMALISED_HEADS[kind])
    params = _normalised_params(kind, 4, seed=26)
    expected = _normalised_reference_entropy(kind, params) + MEAN_STD3[:, 1].double().log()
    torch.testing.assert_close(readout.entropy(params).double(), expected, rtol=1e-4, atol=1e-4)
    if kind == 'gaussian':
        m, lv = params.double().unbind(-1)
        direct = Normal(m * MEAN_STD3[:, 1] + MEAN_STD3[:, 0], torch.exp(0.5 * lv) * MEAN_STD3[:, 1]).entropy()
        torch.testing.assert_close(readout.entropy(params).double(), direct, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize('kind', list(NORMALISED_HEADS))
def test_normalised_sample_is_denormalised(kind):
    """Nearly deterministic heads: the sample is the head's centre mapped by x * std + mean."""
    torch.manual_seed(0)
    readout = ParameterlessReadout(num_continuous=3, continuous_mean_std=MEAN_STD3, **NORMALISED_HEADS[kind])
    mean, std = MEAN_STD3[:, 0], MEAN_STD3[:, 1]
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
    readout = Readout(D, num_continuous=3, continuous_mean_std=MEAN_STD3)
    with torch.no_grad():
        readout.embeddings.weight.normal_(0.0, 0.3)
    embeds = seeded_randn(4, D, seed=27)
    targets = seeded_randn(4, 3, seed=28) * MEAN_STD3[:, 1] + MEAN_STD3[:, 0]
    w = readout.embeddings.weight.detach().double()
    m, lv = embeds.double() @ w[:3].T, embeds.double() @ w[3:6].T
    std, mean = MEAN_STD3[:, 1].double(), MEAN_STD3[:, 0].double()
    nll = -Normal(m * std + mean, torch.exp(0.5 * lv) * std).log_prob(targets.double())
    torch.testing.assert_close(readout(embeds, targets).double(), nll.mean(), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize('loss_type', ['mse', 'l1'])
@pytest.mark.parametrize('normalised', [False, True])
def test_regression_loss_and_sample(loss_type, normalised):
    torch.manual_seed(0)
    D, C = 6, 3
    mean_std = MEAN_STD3 if normalised else None
    readout = Readout(
        D, num_continuous=C, continuous_log_var_embed=False, regression_loss_type=loss_type, continuous_mean_std=mean_std
    )
    with torch.no_grad():
        readout.embeddings.weight.normal_(0.0, 0.5)
    assert readout.embeddings.weight.shape[0] == C  # no log-var rows in regression mode
    embeds = seeded_randn(2, 4, D, seed=29)
    targets = seeded_randn(2, 4, C, seed=30) * 3 + 1
    pred = embeds @ readout.embeddings.weight.detach().T
    norm_targets = (targets - MEAN_STD3[:, 0]) / MEAN_STD3[:, 1] if normalised else targets
    fn = F.mse_loss if loss_type == 'mse' else F.l1_loss
    torch.testing.assert_close(readout(embeds, targets), fn(pred, norm_targets), rtol=1e-5, atol=1e-6)
    # the sample of a mean-only head is its prediction, de-normalised
    expected_sample = pred * MEAN_STD3[:, 1] + MEAN_STD3[:, 0] if normalised else pred
    torch.testing.assert_close(readout.sample(readout(embeds)), expected_sample, rtol=1e-5, atol=1e-5)


# values outside a bounded head's support


def test_a_value_outside_the_support_is_an_error_or_minus_infinity():
    readout = ParameterlessReadout(num_continuous=1, continuous_dist_type='beta')
    params = torch.tensor([[[0.3, -0.2]]]).expand(4, 1, 2)
    values = torch.tensor([[2.98], [1.0], [-2.0], [2.0]])  # in units of rescale_range=(-2, 2): one outside, two on the bounds
    with pytest.raises(ValueError, match=r'sampled must lie inside the support of the BetaDistribution head, \[-2, 2\].*got 2.98'):
        readout.log_prob(params, values, rescale_range=(-2.0, 2.0))
    set_validate_args(False)
    scored = readout.log_prob(params, values, rescale_range=(-2.0, 2.0))[:, 0]
    set_validate_args(True)
    a, b = (F.softplus(params[0, 0].double()) + 1e-6).unbind(-1)
    native = (values[:, 0].double() + 2) / 4
    expected = torch.distributions.Beta(a, b).log_prob(native.clamp(1e-5, 1 - 1e-5)) - math.log(4.0)
    assert scored[0] == -math.inf
    torch.testing.assert_close(scored[1].double(), expected[1], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(scored[2:].double(), expected[2:], rtol=1e-3, atol=1e-3)  # the bounds: clipped (float32 1 - clip_eps)
    # the loss of behaviour cloning on such a value is an error too
    with pytest.raises(ValueError, match='targets must lie inside the support'):
        readout.calculate_loss(params, torch.full((4, 1), 1.2))
    # within clip_eps of a bound: clipped; soft_validate_range clamps on request
    torch.testing.assert_close(readout.log_prob(params, torch.full((4, 1), 1 + 5e-6)), readout.log_prob(params, torch.full((4, 1), 1 - 1e-5)))
    torch.testing.assert_close(readout.log_prob(params, torch.full((4, 1), 3.0), soft_validate_range=True), readout.log_prob(params, torch.full((4, 1), 1 - 1e-6)))


def test_a_squashed_value_outside_minus_one_one_is_an_error():
    readout = ParameterlessReadout(num_continuous=1, continuous_squashed=True, continuous_mean_std=torch.tensor([[10.0, 2.0]]))
    params = torch.zeros(2, 1, 2)
    with pytest.raises(ValueError, match=r'\[8, 12\]'):
        readout.log_prob(params, torch.tensor([[12.5], [10.0]]))
    assert torch.isfinite(readout.log_prob(params, torch.tensor([[12.0], [8.0]]))).all()  # the bounds: clipped inside
