"""Continuous ranges: the native range of each head, ``rescale_range`` (scalar and
per dim: samples mapped linearly, log-probs changed by the log of the scale, the
rescale helpers inverting each other), units bound once (``continuous_range``: the
same map without per-call arguments, other per-call bounds refused, selectors'
dims, construction checks), ``continuous_mean_std`` normalisation (the
density and entropy in original units, de-normalised samples, the losses), and
values outside a bounded head's support (an error, or -inf with checks off)."""

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from helpers import (
    BOUNDED_HEADS,
    MEAN_STD,
    NATIVE_RANGES,
    bounded_log_density,
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


# bound units: continuous_range, given once at construction

BOUND_SPECS = {
    'numbers': ((-2.0, 2.0), (-2.0, 2.0)),
    'lists': (([0.0, -1.0, 10.0], [1.0, 3.0, 30.0]), ([0.0, -1.0, 10.0], [1.0, 3.0, 30.0])),
    'numpy': ((np.array([0.0, -1.0, 10.0], np.float32), np.array([1.0, 3.0, 30.0], np.float32)), ([0.0, -1.0, 10.0], [1.0, 3.0, 30.0])),
    'tensors': ((torch.tensor([0.5, -1.0, 10.0]), torch.tensor([0.75, 3.0, 30.0])), ([0.5, -1.0, 10.0], [0.75, 3.0, 30.0])),
}


def _away_from_the_edges(kind, values, lo, hi):
    """Rows whose values lie inside the middle 98% of their bounds (where float32
    rounding of the rescaled value cannot move the steep edge densities)."""
    lo, hi = torch.as_tensor(lo, dtype=torch.float64), torch.as_tensor(hi, dtype=torch.float64)
    return ((values.double() - (lo + hi) / 2).abs() < 0.49 * (hi - lo)).all(-1)


@pytest.mark.parametrize('kind', list(BOUNDED_HEADS))
@pytest.mark.parametrize('spec', list(BOUND_SPECS))
def test_bound_units_score_as_the_per_call_rescale_and_the_float64_formula(kind, spec):
    given, (lo, hi) = BOUND_SPECS[spec]
    bound = ParameterlessReadout(num_continuous=3, **BOUNDED_HEADS[kind], continuous_range=given)
    per_call = ParameterlessReadout(num_continuous=3, **BOUNDED_HEADS[kind])
    params = seeded_randn(400, 3, 2, seed=40).requires_grad_()

    torch.manual_seed(3)
    values, log_prob = bound.sample(params, return_log_prob=True)
    torch.manual_seed(3)
    expected_values, expected_log_prob = per_call.sample(params, rescale_range=(lo, hi), return_log_prob=True)
    assert torch.equal(values, expected_values)
    torch.testing.assert_close(log_prob, expected_log_prob, rtol=0, atol=0)
    lo_t, hi_t = torch.tensor(lo, dtype=torch.float64), torch.tensor(hi, dtype=torch.float64)
    assert ((values.double() >= lo_t) & (values.double() <= hi_t)).all()

    scored = bound.log_prob(params, values)  # no per-call units
    torch.testing.assert_close(scored, per_call.log_prob(params, values, rescale_range=(lo, hi)), rtol=0, atol=0)
    inside = _away_from_the_edges(kind, values, lo, hi)
    reference = bounded_log_density(kind, params.detach(), values, lo, hi)
    torch.testing.assert_close(scored[inside].double(), reference[inside], rtol=1e-4, atol=1e-4)
    # gradients (and double backward) flow through the same map
    grad, = torch.autograd.grad(scored[inside].sum(), params, create_graph=True)
    expected_grad, = torch.autograd.grad(per_call.log_prob(params, values, rescale_range=(lo, hi))[inside].sum(), params, create_graph=True)
    torch.testing.assert_close(grad, expected_grad)
    assert torch.isfinite(torch.autograd.grad(grad.square().sum(), params)[0]).all()

    # the entropy gains log(scale) per dim; the mode and get_dist agree with the per-call path
    n_lo, n_hi = NATIVE_RANGES[kind]
    native_entropy = per_call.entropy(params).double()
    torch.testing.assert_close(bound.entropy(params).double(), native_entropy + torch.log((hi_t - lo_t) / (n_hi - n_lo)), rtol=1e-5, atol=1e-5)
    assert torch.equal(bound.mode(params), per_call.mode(params, rescale_range=(lo, hi)))
    torch.testing.assert_close(bound.get_dist(params).log_prob(values), scored.sum(-1), rtol=1e-5, atol=1e-4)
    torch.testing.assert_close(bound.dist(params).log_prob(values), scored, rtol=0, atol=0)


def test_a_sample_in_bound_units_is_scored_right_without_per_call_arguments():
    """The trap: sampled with rescale_range=(0, 1) and scored without it, an unbound
    readout reads the values in its native range (-1, 1), where they also lie, and
    returns another log-prob without any error. Bound once, both calls agree."""
    params = torch.tensor([[[0.3, -1.0]]]).expand(6, 1, 2)
    unbound = ParameterlessReadout(num_continuous=1, continuous_squashed=True)
    bound = ParameterlessReadout(num_continuous=1, continuous_squashed=True, continuous_range=(0.0, 1.0))
    torch.manual_seed(5)
    values = unbound.sample(params, rescale_range=(0.0, 1.0))
    right = bounded_log_density('squashed', params, values, 0.0, 1.0)
    forgotten = unbound.log_prob(params, values)
    assert ((forgotten.double() - right).abs() > 0.1).all()  # the silent wrong answer
    torch.testing.assert_close(bound.log_prob(params, values).double(), right, rtol=1e-5, atol=1e-5)
    torch.manual_seed(5)
    assert torch.equal(bound.sample(params), values)


@pytest.mark.parametrize('kind', list(BOUNDED_HEADS))
def test_the_loss_reads_targets_in_the_bound_units(kind):
    readout = Readout(6, num_continuous=2, **BOUNDED_HEADS[kind], continuous_range=([0.0, -5.0], [4.0, 5.0]))
    with torch.no_grad():
        readout.embeddings.weight.normal_(0.0, 0.3)
    embeds = seeded_randn(5, 6, seed=41)
    targets = torch.stack((seeded_uniform(0.2, 3.8, 5, seed=42), seeded_uniform(-4.5, 4.5, 5, seed=43)), dim=-1)
    w = readout.embeddings.weight.detach().double()
    params = torch.stack((embeds.double() @ w[:2].T, embeds.double() @ w[2:4].T), dim=-1)
    nll = -bounded_log_density(kind, params, targets, [0.0, -5.0], [4.0, 5.0])
    torch.testing.assert_close(readout(embeds, targets).double(), nll.mean(), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(readout.calculate_loss(readout(embeds), targets, return_unreduced_loss=True).double(), nll, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize('same', [(-2.0, 2.0), ([-2.0, -2.0], [2.0, 2.0]), (torch.tensor(-2.0), torch.tensor([2.0, 2.0])), (np.float32(-2), np.float64(2))])
def test_the_same_bounds_per_call_are_taken_silently(same):
    bound = ParameterlessReadout(num_continuous=2, continuous_squashed=True, continuous_range=(-2.0, 2.0))
    params = seeded_randn(8, 2, 2, seed=44)
    values = bound.sample(params)
    torch.testing.assert_close(bound.log_prob(params, values, rescale_range=same), bound.log_prob(params, values), rtol=0, atol=0)
    torch.testing.assert_close(bound.entropy(params, rescale_range=same), bound.entropy(params), rtol=0, atol=0)
    assert torch.equal(bound.mode(params, rescale_range=same), bound.mode(params))


def test_other_bounds_per_call_are_an_error_unless_asked_for():
    bound = ParameterlessReadout(num_continuous=2, continuous_squashed=True, continuous_range=(-2.0, 2.0))
    unbound = ParameterlessReadout(num_continuous=2, continuous_squashed=True)
    params = seeded_randn(8, 2, 2, seed=45)
    other = (0.0, 1.0)
    values = unbound.sample(params, rescale_range=other)
    message = r'rescale_range \(lo=\[0.0, 0.0\], hi=\[1.0, 1.0\]\) differs from the continuous_range .* \(lo=\[-2.0, -2.0\], hi=\[2.0, 2.0\].* override_range=True'
    calls = {
        'sample': lambda **kw: bound.sample(params, rescale_range=other, **kw),
        'mode': lambda **kw: bound.mode(params, rescale_range=other, **kw),
        'log_prob': lambda **kw: bound.log_prob(params, values, rescale_range=other, **kw),
        'entropy': lambda **kw: bound.entropy(params, rescale_range=other, **kw),
        'dist': lambda **kw: bound.dist(params, rescale_range=other, **kw).log_prob(values),
        'get_dist': lambda **kw: bound.get_dist(params, rescale_range=other, **kw).log_prob(values),
    }
    for call in calls.values():
        with pytest.raises(ValueError, match=message):
            call()
    # asked for: the per-call bounds win for that call, as on a readout without bound units
    torch.testing.assert_close(calls['log_prob'](override_range=True), unbound.log_prob(params, values, rescale_range=other), rtol=0, atol=0)
    torch.testing.assert_close(calls['entropy'](override_range=True), unbound.entropy(params, rescale_range=other), rtol=0, atol=0)
    torch.testing.assert_close(calls['get_dist'](override_range=True), unbound.get_dist(params, rescale_range=other).log_prob(values))
    assert torch.equal(calls['mode'](override_range=True), unbound.mode(params, rescale_range=other))
    with pytest.raises(ValueError, match=r'override_range=True needs rescale_range'):
        bound.log_prob(params, values * 2, override_range=True)


BAD_RANGES = {
    'unbounded gaussian': (dict(), (0.0, 1.0), ValueError, r'continuous_range: the Gaussian head is unbounded.*continuous_squashed=True'),
    'regression': (dict(continuous_log_var_embed=False), (0.0, 1.0), ValueError, 'continuous_range: the Gaussian head is unbounded'),
    'two_hot': (dict(continuous_dist_type='two_hot'), (0.0, 1.0), ValueError, r'continuous_range: a binned head \(TwoHotDistribution\).*min_value / max_value'),
    'hl_gauss': (dict(continuous_dist_type='hl_gauss'), (0.0, 1.0), ValueError, r'a binned head \(HLGaussDistribution\)'),
    'lo above hi': (dict(continuous_squashed=True), (1.0, 0.0), ValueError, 'continuous_range must be finite with lo < hi'),
    'one dim reversed': (dict(continuous_squashed=True), ([0.0, 1.0], [1.0, 1.0]), ValueError, r'finite with lo < hi in every dim.* lo=\[0.0, 1.0\], hi=\[1.0, 1.0\]'),
    'infinite': (dict(continuous_squashed=True), (0.0, float('inf')), ValueError, 'finite with lo < hi'),
    'nan per dim': (dict(continuous_squashed=True), (torch.tensor([0.0, float('nan')]), 1.0), ValueError, 'finite with lo < hi'),
    'equal in float32': (dict(continuous_squashed=True), (1.0, 1.0 + 1e-9), ValueError, r'lo < hi in every dim \(in float32\)'),
    'wrong length': (dict(continuous_squashed=True), ([0.0, 0.0, 0.0], [1.0, 1.0, 1.0]), ValueError, r'one entry per continuous dim \(2\), got 3'),
    'not a pair': (dict(continuous_squashed=True), 1.0, TypeError, r'continuous_range must be a pair \(lo, hi\)'),
    'no continuous dims': (dict(num_discrete=3, num_continuous=0), (0.0, 1.0), ValueError, 'continuous_range needs num_continuous > 0'),
}


@pytest.mark.parametrize('name', list(BAD_RANGES))
def test_bad_bound_units_are_refused_at_construction(name):
    kwargs, given, error, match = BAD_RANGES[name]
    with pytest.raises(error, match=match):
        ParameterlessReadout(**{'num_continuous': 2, **kwargs}, continuous_range=given)


def test_bad_bound_units_are_refused_with_content_checks_off():
    set_validate_args(False)
    with pytest.raises(ValueError, match='finite with lo < hi'):
        ParameterlessReadout(num_continuous=2, continuous_squashed=True, continuous_range=(torch.tensor([0.0, 2.0]), torch.tensor([1.0, 1.0])))


def test_bound_units_follow_a_registered_selectors_dims():
    lo, hi = [0.0, -1.0, 10.0, 100.0], [1.0, 1.0, 30.0, 101.0]
    bound = ParameterlessReadout(num_continuous=4, continuous_squashed=True, continuous_range=(lo, hi), selectors=[[2, 0], [3]])
    unbound = ParameterlessReadout(num_continuous=4, continuous_squashed=True, selectors=[[2, 0], [3]])
    params = seeded_randn(300, 2, 2, seed=46)
    values = bound.sample(params, selector_index=0)
    assert ((values[:, 0] >= 10.0) & (values[:, 0] <= 30.0)).all() and ((values[:, 1] >= 0.0) & (values[:, 1] <= 1.0)).all()
    picked = ([10.0, 0.0], [30.0, 1.0])  # the selector's dims [2, 0]
    scored = bound.log_prob(params, values, selector_index=0)
    torch.testing.assert_close(scored, unbound.log_prob(params, values, selector_index=0, rescale_range=picked), rtol=0, atol=0)
    inside = _away_from_the_edges('squashed', values, *picked)
    torch.testing.assert_close(scored[inside].double(), bounded_log_density('squashed', params, values, *picked)[inside], rtol=1e-4, atol=1e-4)
    # the same bounds per call, in the selector's dims, are the same bounds
    torch.testing.assert_close(bound.log_prob(params, values, selector_index=0, rescale_range=picked), scored, rtol=0, atol=0)
    with pytest.raises(ValueError, match='differs from the continuous_range'):
        bound.log_prob(params, values, selector_index=0, rescale_range=([0.0, -1.0], [1.0, 1.0]))  # dims [0, 1]'s bounds


def test_a_runtime_selector_keeps_the_squashed_native_range_under_bound_units():
    bound = ParameterlessReadout(num_continuous=3, continuous_squashed=True, continuous_range=([0.0, -1.0, 10.0], [1.0, 1.0, 30.0]))
    params = seeded_randn(500, 2, 2, seed=47) * 2
    values = bound.sample(params, selector_config=[2, 0])
    assert ((values[:, 0] >= 10.0) & (values[:, 0] <= 30.0)).all() and ((values[:, 1] >= 0.0) & (values[:, 1] <= 1.0)).all()
    assert values[:, 0].min() < 12.0 and values[:, 0].max() > 28.0  # the whole range, squashed: not (-inf, inf) mapped
    inside = _away_from_the_edges('squashed', values, [10.0, 0.0], [30.0, 1.0])
    reference = bounded_log_density('squashed', params, values, [10.0, 0.0], [30.0, 1.0])
    torch.testing.assert_close(bound.log_prob(params, values, selector_config=[2, 0])[inside].double(), reference[inside], rtol=1e-4, atol=1e-4)


def test_legacy_selectors_and_methods_under_bound_units():
    bound = Readout(4, num_continuous=2, continuous_squashed=True, continuous_range=(-2.0, 2.0))
    unsquashed = bound.create_discrete_continuous_selector(continuous_indices=[0, 1], continuous_squashed=False)
    with pytest.raises(ValueError, match=r'continuous_range: this readout binds units, but the selector\'s head, Gaussian, has no native range'):
        bound.sample_continuous(seeded_randn(3, 2, 2, seed=48), selector=unsquashed)
    squashed = bound.create_discrete_continuous_selector(continuous_indices=[1], continuous_squashed=True)
    values = bound.sample_continuous(seeded_randn(300, 1, 2, seed=49), selector=squashed)
    assert values.abs().max() <= 2.0 and values.abs().max() > 1.0
    # the 0.2.x methods use the bound units too; params of fewer dims than bound are refused
    values = bound.sample_continuous(seeded_randn(300, 2, 2, seed=50))
    assert values.abs().max() <= 2.0 and values.abs().max() > 1.0
    with pytest.raises(ValueError, match=r'must have shape \(\.\.\., 2, 2\) for 2 continuous dims'):
        bound.sample_continuous(seeded_randn(3, 1, 2, seed=51))


@pytest.mark.parametrize('dtype', [torch.bfloat16, torch.float16, torch.float64])
def test_bound_units_stay_float32_when_the_module_changes_dtype(dtype):
    readout = Readout(4, num_continuous=2, continuous_squashed=True, continuous_range=(0.1, 0.7)).to(dtype)
    assert readout.continuous_range.dtype == torch.float32
    assert torch.equal(readout.continuous_range, torch.tensor([[0.1, 0.7], [0.1, 0.7]]))  # not rounded to dtype
    params = readout(torch.randn(500, 4, dtype=dtype) * 30)
    values = readout.sample(params, rescale_range=(0.1, 0.7))  # the same bounds: accepted
    assert values.dtype == dtype
    assert (values.double() >= torch.tensor(0.1, dtype=dtype).double()).all() and (values.double() <= torch.tensor(0.7, dtype=dtype).double()).all()
    inside = _away_from_the_edges('squashed', values.float(), 0.1, 0.7)
    torch.testing.assert_close(readout.log_prob(params, values)[inside].double(),
                               bounded_log_density('squashed', params.float(), values.float(), 0.1, 0.7)[inside], rtol=2e-3, atol=2e-3)  # fmt: skip


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
