"""Policy-head actions, checked against independent computations (closed forms,
torch.distributions, float64 references, finite differences):

- ``readout.mode``: argmax; gaussian mean; squashed ``tanh(mean)``; beta /
  kumaraswamy mode, or their mean where no interior mode exists; de-normalised and
  rescaled like samples; ``sample(temperature=0.)`` is the same;
- the sampling temperature of the continuous heads: it scales a gaussian's standard
  deviation and divides beta's concentrations by T^2; kumaraswamy ignores it (with a
  warning);
- ``sample(..., return_log_prob=True)``: the untempered log-density of the returned
  sample; the squashed gaussian's comes from the pre-tanh value (accurate where
  tanh rounds to +-1).

Every case of ``helpers.policy_cases`` runs where a test takes ``case``.
"""

import math
import warnings

import pytest
import torch
import torch.nn.functional as F
from helpers import CLIP_EPS, EPS, MEAN_STD, pack, unit_interval_params
from helpers.policy_cases import (
    POLICY_CASES,
    assert_close,
    assert_close_pair,
    group_list,
    make_params,
    native_mode,
    policy_case_params,
    policy_readout,
    ref_log_prob,
    stack_groups,
    to_output_units,
    unpack,
)
from torch.distributions import Beta, Kumaraswamy, Normal

from discrete_continuous_embed_readout import DiscreteContinuous, ParameterlessReadout

# readout.mode: deterministic actions


@policy_case_params
def test_mode_is_argmax_and_closed_form_mode_then_denormalised_and_rescaled(case):
    readout, call = policy_readout(case)
    params = make_params(case)
    mode = readout.mode(params, rescale_range=case.rescale, **call)
    d_mode, c_mode = unpack(case, mode)
    d, c = unpack(case, params)
    if case.groups:
        expected = stack_groups(case, [g.argmax(-1) for g in group_list(case, d)])
        assert d_mode.dtype == torch.long
        assert torch.equal(d_mode, expected), 'discrete mode must be the argmax of each group'
    if case.cont:
        native, interior = native_mode(case, c)
        if interior is not None and not case.unimodal:  # the case exercises both branches
            assert interior.any() and (~interior).any()
        assert_close(c_mode, to_output_units(case, native), 'continuous mode', rtol=1e-4, atol=1e-4)
    # temperature <= 0 gives exactly the mode, for both parts of a mixed readout
    for temperature in (0.0, -1.0):
        greedy = readout.sample(params, temperature=temperature, rescale_range=case.rescale, **call)
        for got, want in zip(unpack(case, greedy), unpack(case, mode)):
            assert (got is None) == (want is None)
            if want is not None:
                assert torch.equal(got, want), f'sample(temperature={temperature}) differs from mode'


@pytest.mark.parametrize('kind', ['beta', 'kumaraswamy'])
@pytest.mark.parametrize('unimodal', [False, True])
def test_unit_interval_mode_is_the_maximum_of_the_density(kind, unimodal):
    """Finite differences of torch.distributions' log-density at the mode: zero
    slope, and lower on both sides (every concentration > 1 here)."""
    a = torch.tensor([1.5, 3.0, 8.0, 1.2, 2.0, 5.0], dtype=torch.float64)
    b = torch.tensor([1.5, 2.5, 6.0, 9.0, 1.1, 30.0], dtype=torch.float64)
    params = unit_interval_params(a, b, offset=1.0 if unimodal else EPS, dtype=torch.float64)  # (c, 2)
    readout = ParameterlessReadout(num_continuous=6, continuous_dist_type=kind, continuous_dist_kwargs={'unimodal': unimodal})
    mode = readout.mode(params)
    log_p = (Beta if kind == 'beta' else Kumaraswamy)(a, b).log_prob
    h = 1e-6
    slope = (log_p(mode + h) - log_p(mode - h)) / (2 * h)
    assert slope.abs().max() < 1e-4, f'd/dx log p at the mode: {slope.tolist()}'
    for step in (1e-3, 1e-2):
        assert (log_p(mode) > log_p(mode + step)).all() and (log_p(mode) > log_p(mode - step)).all()


# the sampling temperature of the continuous heads


@pytest.mark.parametrize('normalised', [False, True], ids=['plain', 'normalised'])
@pytest.mark.parametrize('kind', ['gaussian', 'squashed'])
@pytest.mark.parametrize('temperature', [0.5, 2.0])
def test_continuous_temperature_scales_the_gaussian_std(kind, normalised, temperature):
    """Empirical std of 100k draws (pre-tanh via atanh for the squashed head,
    moderate values) is temperature * std within 1.5% (the standard error of an
    empirical std is 0.22% here); the mean does not move."""
    n = 100_000
    mean = torch.tensor([0.3, -0.4, 0.1])
    std = torch.tensor([0.3, 0.5, 0.6])
    params = torch.stack((mean, 2 * std.log()), dim=-1).expand(n, 3, 2)
    kw = {'continuous_mean_std': MEAN_STD[:3]} if normalised else {}
    readout = ParameterlessReadout(num_continuous=3, continuous_squashed=kind == 'squashed', **kw)
    x = readout.sample(params, temperature=temperature).double()
    if normalised:
        m, s = MEAN_STD[:3].double().unbind(-1)
        x = (x - m) / s
    u = torch.atanh(x) if kind == 'squashed' else x
    expected_std = temperature * std.double()
    assert_close(u.std(0), expected_std, 'empirical std', rtol=0.015, atol=0)
    assert ((u.mean(0) - mean.double()).abs() < 5 * expected_std / math.sqrt(n)).all()


@pytest.mark.parametrize('temperature', [0.5, 2.0])
def test_beta_temperature_divides_the_concentrations_by_t_squared(temperature):
    """Moments of 100k draws against Beta(a / T^2, b / T^2)'s closed forms; with
    concentrated Betas (a + b >= 100) the std then scales by T within 3%."""
    n = 100_000
    a = torch.tensor([40.0, 80.0, 90.0], dtype=torch.float64)
    b = torch.tensor([60.0, 30.0, 15.0], dtype=torch.float64)
    params = unit_interval_params(a, b, EPS).expand(n, 3, 2)
    readout = ParameterlessReadout(num_continuous=3, continuous_dist_type='beta')
    x = readout.sample(params, temperature=temperature).double()

    def beta_std(a, b):
        return torch.sqrt(a * b / ((a + b) ** 2 * (a + b + 1)))

    t2 = temperature**2
    tempered_std = beta_std(a / t2, b / t2)
    assert_close(x.std(0), tempered_std, 'empirical std', rtol=0.015, atol=0)
    assert ((x.mean(0) - a / (a + b)).abs() < 5 * tempered_std / math.sqrt(n)).all(), 'the mean must be kept'
    assert_close(tempered_std / beta_std(a, b), torch.full((3,), temperature, dtype=torch.float64), 'std ratio', rtol=0.03, atol=0)


@pytest.mark.parametrize('temperature', [0.5, 2.0])
def test_kumaraswamy_warns_once_and_samples_at_temperature_one(temperature):
    # 0.2.x accepted (and ignored) any continuous temperature: code written for it must not fail
    readout = ParameterlessReadout(num_continuous=2, continuous_dist_type='kumaraswamy')
    params = torch.randn(4, 2, 2)
    with pytest.warns(UserWarning, match=f'temperature={temperature} is ignored'):
        drawn = readout.sample(params, temperature=temperature, generator=torch.Generator().manual_seed(3))
    with warnings.catch_warnings():
        warnings.simplefilter('error')  # once per head: the second call is silent
        again, log_prob = readout.sample(params, temperature=temperature, return_log_prob=True, generator=torch.Generator().manual_seed(3))
    at_one = readout.sample(params, temperature=1.0, generator=torch.Generator().manual_seed(3))
    assert torch.equal(drawn, at_one) and torch.equal(again, at_one)
    assert_close(log_prob, torch.distributions.Kumaraswamy(*(F.softplus(params) + 1e-6).unbind(-1)).log_prob(at_one), 'log_prob', rtol=1e-5, atol=1e-5)
    assert ((drawn >= CLIP_EPS) & (drawn <= 1 - CLIP_EPS)).all()


# sample(..., return_log_prob=True)


def temperature_cases():
    for case in POLICY_CASES:
        for temperature in (1.0, 0.5, 0.0):
            if case.cont == 'kumaraswamy' and temperature == 0.5:
                continue  # kumaraswamy has no temperature other than 0 and 1
            yield pytest.param(case, temperature, id=f'{case.id}-T{temperature}')


@pytest.mark.parametrize(('case', 'temperature'), list(temperature_cases()))
def test_sample_with_log_prob_is_the_untempered_log_density_of_the_sample(case, temperature):
    """float64 params: the returned log-prob equals the reference log-density of
    the returned sample (change of variables for normalisation and rescaling)
    and ``log_prob(dist, sample, rescale_range=r)``."""
    readout, call = policy_readout(case)
    params = make_params(case, torch.float64, seed=1)
    out = readout.sample(params, temperature=temperature, rescale_range=case.rescale, return_log_prob=True, **call)
    assert isinstance(out, tuple) and len(out) == 2
    sampled, log_prob = out
    mixed = bool(case.groups and case.cont)
    for t in (sampled, log_prob):
        assert isinstance(t, DiscreteContinuous) if mixed else isinstance(t, torch.Tensor)
    assert_close_pair(case, log_prob, ref_log_prob(case, params, sampled), 'log-prob vs reference', rtol=1e-7, atol=1e-7)
    again = readout.log_prob(params, sampled, rescale_range=case.rescale, **call)
    assert_close_pair(case, log_prob, again, 'log-prob vs log_prob()', rtol=1e-7, atol=1e-7)
    if temperature == 0.0:
        mode = readout.mode(params, rescale_range=case.rescale, **call)
        assert_close_pair(case, sampled, mode, 'greedy sample vs mode', rtol=0, atol=0)


DIFFERENTIABLE_CASES = [c for c in POLICY_CASES if c.id in (
    'one_group', 'multi_sequential', 'squashed_norm_rescaled', 'beta', 'kumaraswamy_norm', 'mixed_squashed_norm',
    'runtime_selector_mixed_squashed',
)]  # fmt: skip


@pytest.mark.parametrize('case', DIFFERENTIABLE_CASES, ids=lambda c: c.id)
def test_differentiable_sample_with_log_prob(case):
    """Straight-through one-hots / reparameterised values with their log-prob,
    which is the reference log-density and has finite gradients."""
    readout, call = policy_readout(case)
    params = make_params(case, torch.float64, seed=2)
    d, c = unpack(case, params)
    leaves = [t.requires_grad_() for t in (group_list(case, d) if case.groups else []) + ([c] if case.cont else [])]
    sampled, log_prob = readout.sample(params, differentiable=True, rescale_range=case.rescale, return_log_prob=True, **call)
    d_s, c_s = unpack(case, sampled)
    if case.groups:  # one-hots concatenated over groups -> ids
        assert d_s.shape[-1] == sum(case.groups)
        ids = stack_groups(case, [h.argmax(-1) for h in d_s.detach().split(list(case.groups), dim=-1)])
        d_s = ids
    values = pack(d_s, c_s.detach() if case.cont else None)
    detached = make_params(case, torch.float64, seed=2)  # the same values, no graph
    assert_close_pair(case, log_prob, ref_log_prob(case, detached, values), 'differentiable log-prob', rtol=1e-7, atol=1e-7)
    total = sum(t.sum() for t in unpack(case, log_prob) if t is not None)
    if case.cont:
        total = total + c_s.sum()
    total.backward()
    for leaf in leaves:
        assert leaf.grad is not None and torch.isfinite(leaf.grad).all()


@pytest.mark.parametrize('rescale', [None, (-2.0, 2.0), (-1.3, 2.7)], ids=['native', 'symmetric', 'asymmetric'])
@pytest.mark.parametrize(('temperature', 'differentiable'), [(1.0, False), (0.5, False), (0.0, False), (1.0, True)])
def test_a_squashed_sample_and_its_log_prob_agree_with_log_prob_of_the_action(rescale, temperature, differentiable):
    """Pre-tanh means from -10 to 10 (tanh rounds to +-1 in float32 from |u| ~ 9):
    the returned log-prob is log_prob of the returned action, to 1e-4 nats, and so
    is get_dist's; a PPO ratio at unchanged parameters is 1. Away from the bounds
    it is also the float64 density of the pre-tanh draw (change of variables)."""
    sigma, n = 0.5, 400
    mean = torch.linspace(-10.0, 10.0, 21).repeat_interleave(n // 20)[:n]
    params = torch.stack((mean, torch.full_like(mean, 2 * math.log(sigma))), dim=-1)[:, None].requires_grad_(differentiable)
    readout = ParameterlessReadout(num_continuous=1, continuous_squashed=True, continuous_mean_std=MEAN_STD[:1])
    action, log_prob = readout.sample(params, temperature=temperature, differentiable=differentiable, rescale_range=rescale, return_log_prob=True)
    again = readout.log_prob(params, action.detach(), rescale_range=rescale)
    assert torch.isfinite(log_prob).all() and (log_prob - again).abs().max() < 1e-4
    ratio = torch.exp(readout.log_prob(params, action.detach(), rescale_range=rescale) - log_prob)
    assert (ratio - 1).abs().max() < 1e-4
    as_dist = readout.get_dist(params, rescale_range=rescale).log_prob(action.detach())
    assert (as_dist - log_prob[:, 0]).abs().max() < 1e-4
    # independent: the float64 density of the action in its own units, where float32 keeps it exact
    lo, hi = rescale or (-1.0, 1.0)
    native = (action.detach().double() - lo) / (hi - lo) * 2 - 1 if rescale else action.detach().double()
    if not rescale:  # no rescale_range: the normaliser maps (-1, 1) to the user's units
        m, s = MEAN_STD[0].double()
        native = (native - m) / s
    jacobian = math.log((hi - lo) / 2) if rescale else math.log(MEAN_STD[0, 1].item())
    inside = native.abs() < 0.999
    reference = Normal(mean.double()[:, None], sigma).log_prob(torch.atanh(native)) - torch.log1p(-native**2) - jacobian
    torch.testing.assert_close(log_prob.detach().double()[inside], reference[inside], rtol=1e-4, atol=1e-4)
    if differentiable:  # reparameterised: the gradient of the pre-tanh log-density, finite everywhere
        log_prob.sum().backward()
        assert torch.isfinite(params.grad).all() and params.grad.abs().sum() > 0


@pytest.mark.parametrize('ignore_index', [0, 2, -1])
@pytest.mark.parametrize('sizes', [5, (3, 4)], ids=['one group', 'two groups'])
def test_a_sampled_log_prob_zeroes_ids_equal_to_ignore_index_as_log_prob_does(sizes, ignore_index):
    # a drawn id can equal a non-negative ignore_index; log_prob scores it 0, and so must
    # sample(..., return_log_prob=True), which skips the masking only for negative ones
    readout = ParameterlessReadout(num_discrete=sizes, ignore_index=ignore_index)
    groups = [5] if isinstance(sizes, int) else list(sizes)
    logits = torch.randn(400, sum(groups))
    ids, log_prob = readout.sample(logits, return_log_prob=True)
    ids_g = ids[:, None] if isinstance(sizes, int) else ids
    expected = torch.stack([torch.distributions.Categorical(logits=g).log_prob(ids_g[:, i]) for i, g in enumerate(logits.split(groups, -1))], -1)
    expected = expected.masked_fill(ids_g == ignore_index, 0.0)
    torch.testing.assert_close(log_prob, expected.squeeze(-1) if isinstance(sizes, int) else expected)
    torch.testing.assert_close(log_prob, readout.log_prob(logits, ids))
    if ignore_index >= 0:
        assert (ids_g == ignore_index).any()  # the case is exercised
