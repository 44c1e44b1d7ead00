"""RL policy head (issue 4, items 2, 3, 5, 6), checked against independent
computations: closed forms, torch.distributions, float64 references, quadrature
and finite differences.
- item 2: ``readout.mode`` (argmax; gaussian mean; squashed ``tanh(mean)``;
  beta / kumaraswamy mode, or their mean where no interior mode exists),
  de-normalised and rescaled like samples; ``sample(temperature=0.)`` is the
  same; a continuous temperature scales the standard deviation.
- item 3: ``sample(..., return_log_prob=True)``; the squashed gaussian's
  log-prob comes from the pre-tanh value (accurate where tanh rounds to +-1).
- item 5: ``readout.get_dist`` gives torch.distributions objects that agree
  with the readout and work in tensordict's ProbabilisticTensorDictModule.
- item 6: squashed entropy: the pre-tanh gaussian's by default, a Monte-Carlo
  estimate of the true one with ``squashed_entropy_samples``.

Every case runs across one group, multi-discrete (both paths), the four
continuous heads with and without ``continuous_mean_std``, ``rescale_range``,
mixed readouts and selectors (registered and at call time).
"""

# g - groups, c - continuous dims, n - draws

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass

import pytest
import torch
import torch.nn.functional as F
from tensordict import TensorDict
from tensordict.nn import (
    InteractionType,
    ProbabilisticTensorDictModule,
    ProbabilisticTensorDictSequential,
    TensorDictModule,
)
from torch.distributions import (
    Beta,
    Categorical,
    Distribution,
    Independent,
    Kumaraswamy,
    Normal,
    TanhTransform,
    TransformedDistribution,
)

from discrete_continuous_embed_readout import DiscreteContinuous, ParameterlessReadout, Readout

EPS = 1e-6  # the package's default numerical floor (spec section 2)
CLIP_EPS = 1e-5  # default clip margin of beta / kumaraswamy (spec section 2)
F32_EDGE = 1.0 - torch.finfo(torch.float32).eps  # largest |squashed sample| the readout keeps
LOG_2PI = math.log(2 * math.pi)
LOG_2 = math.log(2.0)
BATCH = (5, 2)
# (mean, std) per continuous dim; every value is exact in float32
MEAN_STD = torch.tensor([[-1.5, 2.0], [0.25, 0.5], [3.0, 1.25], [0.5, 4.0]])
NATIVE = {'gaussian': None, 'squashed': (-1.0, 1.0), 'beta': (0.0, 1.0), 'kumaraswamy': (0.0, 1.0)}
SEL_GROUPS = [[0, 3, 5], [7, 8, 9, 10]]  # selector: two groups of sizes 3 and 4
SEL_DIMS = [2, 0]  # selector: continuous dims 2 and 0, in that order
LOG_PROB_KEY = 'action_log_prob'  # what tensordict 0.15 writes for out_keys=['action']


# --------------------------------------------------------------------------- cases


@dataclass(frozen=True)
class Case:
    id: str
    groups: tuple = ()  # group sizes as the caller sees them
    cont: str | None = None  # 'gaussian', 'squashed', 'beta', 'kumaraswamy'
    normalised: bool = False  # continuous_mean_std given
    rescale: tuple | None = None  # rescale_range
    unimodal: bool = False
    parallel: bool = True  # use_parallel_multi_discrete
    selector: str | None = None  # None, 'registered' or 'runtime'

    @property
    def dims(self) -> list[int]:
        return SEL_DIMS if self.selector else [0, 1, 2]

    @property
    def num_continuous(self) -> int:
        return len(self.dims) if self.cont else 0

    @property
    def single(self) -> bool:
        return len(self.groups) == 1


CASES = [
    Case('one_group', groups=(7,)),
    Case('multi_parallel', groups=(3, 5, 4)),
    Case('multi_sequential', groups=(3, 5, 4), parallel=False),
    Case('gaussian', cont='gaussian'),
    Case('gaussian_norm', cont='gaussian', normalised=True),
    Case('squashed', cont='squashed'),
    Case('squashed_norm', cont='squashed', normalised=True),
    Case('squashed_norm_rescaled', cont='squashed', normalised=True, rescale=(-2.0, 3.0)),
    Case('beta', cont='beta'),
    Case('beta_norm_rescaled', cont='beta', normalised=True, rescale=(-2.0, 3.0)),
    Case('beta_unimodal_rescaled', cont='beta', unimodal=True, rescale=(10.0, 12.0)),
    Case('kumaraswamy', cont='kumaraswamy'),
    Case('kumaraswamy_norm', cont='kumaraswamy', normalised=True),
    Case('kumaraswamy_unimodal_rescaled', cont='kumaraswamy', unimodal=True, rescale=(-1.0, 1.0)),
    Case('mixed_squashed_norm', groups=(3, 4), cont='squashed', normalised=True),
    Case('mixed_one_group_beta_rescaled', groups=(6,), cont='beta', rescale=(-2.0, 3.0)),
    Case('mixed_sequential_gaussian', groups=(3, 5, 4), cont='gaussian', parallel=False),
    Case('selector_mixed_kumaraswamy_norm', groups=(3, 4), cont='kumaraswamy', normalised=True, selector='registered'),
    Case('selector_gaussian_norm', cont='gaussian', normalised=True, selector='registered'),
    Case('selector_discrete', groups=(3, 4), selector='registered'),
    Case('runtime_selector_mixed_squashed', groups=(3, 4), cont='squashed', normalised=True, rescale=(-2.0, 3.0), selector='runtime'),
]
CONTINUOUS_CASES = [c for c in CASES if c.cont]
case_params = pytest.mark.parametrize('case', CASES, ids=lambda c: c.id)


def build(case: Case):
    """The readout of a case, and the selector keyword of its calls."""
    kw = {'use_parallel_multi_discrete': case.parallel}
    if case.cont:
        kw['continuous_dist_type'] = 'gaussian' if case.cont in ('gaussian', 'squashed') else case.cont
        kw['continuous_squashed'] = case.cont == 'squashed'
        if case.unimodal:
            kw['continuous_dist_kwargs'] = {'unimodal': True}
    call = {}
    if case.selector:
        groups = SEL_GROUPS if case.groups else None
        dims = SEL_DIMS if case.cont else None
        config = (groups, dims) if groups and dims else (groups or dims)
        other = (([[1, 2]] if groups else None), ([1] if dims else None))
        other = other if groups and dims else (other[0] or other[1])
        kw.update(num_discrete=12 if groups else 0, num_continuous=4 if dims else 0)
        if case.normalised:
            kw['continuous_mean_std'] = MEAN_STD
        if case.selector == 'registered':
            kw['selectors'] = [config, other]  # two: the index is needed
            call = {'selector_index': 0}
        else:
            call = {'selector_config': config}
    else:
        groups = case.groups
        kw['num_discrete'] = (groups[0] if len(groups) == 1 else tuple(groups)) if groups else 0
        kw['num_continuous'] = case.num_continuous
        if case.normalised:
            kw['continuous_mean_std'] = MEAN_STD[: case.num_continuous]
    return ParameterlessReadout(**kw), call


def inv_softplus(y: torch.Tensor) -> torch.Tensor:
    return y + torch.log(-torch.expm1(-y))


def continuous_params(case: Case, batch, gen, dtype) -> torch.Tensor:
    shape = (*batch, case.num_continuous)
    if case.cont in ('gaussian', 'squashed'):
        mean = 0.8 * torch.randn(*shape, generator=gen, dtype=torch.float64)
        log_var = -2.0 + 2.5 * torch.rand(*shape, generator=gen, dtype=torch.float64)
        return torch.stack((mean, log_var), dim=-1).to(dtype)
    offset = 1.0 if case.unimodal else EPS
    low = 1.2 if case.unimodal else 0.7  # some concentrations below 1: no interior mode there
    conc = low + 3.3 * torch.rand(*shape, 2, generator=gen, dtype=torch.float64)
    if not case.unimodal:  # the first entry has no interior mode: a < 1, b < 1, both < 1
        conc[(0,) * len(batch)] = torch.tensor([[0.8, 3.0], [2.5, 0.75], [0.8, 0.9]], dtype=torch.float64)[: shape[-1]]
    return inv_softplus(conc - offset).to(dtype)


def make_params(case: Case, dtype=torch.float32, seed=0, batch=BATCH):
    """What ``readout(embed)`` would return for the case: logits, params or a pair."""
    gen = torch.Generator().manual_seed(seed)
    d = c = None
    if case.groups:
        logits = [2.0 * torch.randn(*batch, n, generator=gen, dtype=torch.float64).to(dtype) for n in case.groups]
        d = logits[0] if case.single else tuple(logits)
    if case.cont:
        c = continuous_params(case, batch, gen, dtype)
    return pack(case, d, c)


def pack(case: Case, d, c):
    if case.groups and case.cont:
        return DiscreteContinuous(d, c)
    return d if case.groups else c


def unpack(case: Case, obj):
    if case.groups and case.cont:
        assert isinstance(obj, DiscreteContinuous), f'a mixed readout returns a DiscreteContinuous pair, got {type(obj)}'
        return obj
    return (obj, None) if case.groups else (None, obj)


def group_list(case: Case, logits):
    return [logits] if case.single else list(logits)


def stack_groups(case: Case, per_group):
    return per_group[0] if case.single else torch.stack(per_group, dim=-1)


def used_mean_std(case: Case):
    mean, std = MEAN_STD[case.dims].double().unbind(-1)
    return mean, std


def rescale_factor(case: Case) -> float:
    (lo, hi), (new_lo, new_hi) = NATIVE[case.cont], case.rescale
    return (new_hi - new_lo) / (hi - lo)


# --------------------------------------------------------------------------- float64 references


def concentrations(case: Case, params):
    offset = 1.0 if case.unimodal else EPS
    return (F.softplus(params.double()) + offset).unbind(-1)


def kumaraswamy_mean(a, b):
    """E[X] = b B(1 + 1/a, b)."""
    return torch.exp(torch.log(b) + torch.lgamma(1 + 1 / a) + torch.lgamma(b) - torch.lgamma(1 + 1 / a + b))


def native_mode(case: Case, params):
    """Closed-form deterministic action in native units, and where a unit
    interval head has an interior mode."""
    p = params.double()
    if case.cont == 'gaussian':
        return p[..., 0], None
    if case.cont == 'squashed':
        return torch.tanh(p[..., 0]), None
    a, b = concentrations(case, params)
    interior = (a > 1) & (b > 1)
    if case.cont == 'beta':
        mode, mean = (a - 1) / (a + b - 2), a / (a + b)
    else:
        mode, mean = ((a - 1) / (a * b - 1)) ** (1 / a), kumaraswamy_mean(a, b)
    return torch.where(interior, mode, mean).clamp(CLIP_EPS, 1 - CLIP_EPS), interior


def to_output_units(case: Case, x):
    """Native -> rescale_range (the native range mapped linearly onto it; the
    normaliser does not enter), else -> de-normalised; float64."""
    if case.rescale:
        lo, _ = NATIVE[case.cont]
        return (x - lo) * rescale_factor(case) + case.rescale[0]
    if case.normalised:
        mean, std = used_mean_std(case)
        x = x * std + mean
    return x


def native_log_density(case: Case, params, x):
    p = params.double()
    if case.cont in ('gaussian', 'squashed'):
        normal = Normal(p[..., 0], torch.exp(0.5 * p[..., 1]))
        if case.cont == 'gaussian':
            return normal.log_prob(x)
        return normal.log_prob(torch.atanh(x)) - torch.log1p(-x * x)
    a, b = concentrations(case, params)
    x = x.clamp(CLIP_EPS, 1 - CLIP_EPS)  # the head clips values (spec section 6)
    if case.cont == 'beta':
        return Beta(a, b).log_prob(x)
    return torch.log(a) + torch.log(b) + (a - 1) * torch.log(x) + (b - 1) * torch.log1p(-(x**a))


def ref_continuous_log_prob(case: Case, params, x):
    """Log-density of values ``x`` in output units (change of variables)."""
    x, extra = x.double(), 0.0
    if case.rescale:
        k = rescale_factor(case)
        x, extra = (x - case.rescale[0]) / k + NATIVE[case.cont][0], extra - math.log(k)
    elif case.normalised:
        mean, std = used_mean_std(case)
        x, extra = (x - mean) / std, extra - torch.log(std)
    return native_log_density(case, params, x) + extra


def ref_discrete_log_prob(case: Case, logits, ids):
    groups = group_list(case, logits)
    per_id = [i.unsqueeze(-1) for i in ((ids,) if case.single else ids.unbind(-1))]
    return stack_groups(case, [g.double().log_softmax(-1).gather(-1, i).squeeze(-1) for g, i in zip(groups, per_id)])


def ref_log_prob(case: Case, dist, sampled):
    (d, c), (ds, cs) = unpack(case, dist), unpack(case, sampled)
    rd = ref_discrete_log_prob(case, d, ds) if case.groups else None
    rc = ref_continuous_log_prob(case, c, cs) if case.cont else None
    return pack(case, rd, rc)


def ref_continuous_entropy(case: Case, params):
    """Per-dim entropy in original units (the readout's; squashed: the pre-tanh gaussian's)."""
    p = params.double()
    if case.cont in ('gaussian', 'squashed'):
        h = 0.5 * (1 + LOG_2PI) + 0.5 * p[..., 1]
    else:
        cls = Beta if case.cont == 'beta' else Kumaraswamy
        h = cls(*concentrations(case, params)).entropy()
    if case.rescale:
        return h + math.log(rescale_factor(case))
    return h + torch.log(used_mean_std(case)[1]) if case.normalised else h


def ref_discrete_entropy(case: Case, logits):
    per_group = []
    for g in group_list(case, logits):
        logp = g.double().log_softmax(-1)
        per_group.append(-(logp.exp() * logp).sum(-1))
    return stack_groups(case, per_group)


def assert_close(actual, expected, what, **tol):
    assert actual.shape == expected.shape, f'{what}: shape {tuple(actual.shape)}, expected {tuple(expected.shape)}'
    torch.testing.assert_close(actual.double(), expected.double(), msg=lambda m: f'{what}: {m}', **tol)


def assert_close_pair(case: Case, actual, expected, what, **tol):
    for name, a, e in zip(('discrete', 'continuous'), unpack(case, actual), unpack(case, expected)):
        if e is not None:
            assert a is not None, f'{what}: missing the {name} part'
            assert_close(a, e, f'{what} ({name})', **tol)


# --------------------------------------------------------------------------- item 2: deterministic actions


@case_params
def test_mode_is_argmax_and_closed_form_mode_then_denormalised_and_rescaled(case):
    readout, call = build(case)
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
    offset = 1.0 if unimodal else EPS
    params = torch.stack((inv_softplus(a - offset), inv_softplus(b - offset)), dim=-1)  # (c, 2)
    readout = ParameterlessReadout(num_continuous=6, continuous_dist_type=kind, continuous_dist_kwargs={'unimodal': unimodal})
    mode = readout.mode(params)
    log_p = (Beta if kind == 'beta' else Kumaraswamy)(a, b).log_prob
    h = 1e-6
    slope = (log_p(mode + h) - log_p(mode - h)) / (2 * h)
    assert slope.abs().max() < 1e-4, f'd/dx log p at the mode: {slope.tolist()}'
    for step in (1e-3, 1e-2):
        assert (log_p(mode) > log_p(mode + step)).all() and (log_p(mode) > log_p(mode - step)).all()


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
    params = torch.stack((inv_softplus(a - EPS), inv_softplus(b - EPS)), dim=-1).float().expand(n, 3, 2)
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


# --------------------------------------------------------------------------- item 3: sample with log-prob


def temperature_cases():
    for case in CASES:
        for temperature in (1.0, 0.5, 0.0):
            if case.cont == 'kumaraswamy' and temperature == 0.5:
                continue  # kumaraswamy has no temperature other than 0 and 1
            yield pytest.param(case, temperature, id=f'{case.id}-T{temperature}')


@pytest.mark.parametrize(('case', 'temperature'), list(temperature_cases()))
def test_sample_with_log_prob_is_the_untempered_log_density_of_the_sample(case, temperature):
    """float64 params: the returned log-prob equals the reference log-density of
    the returned sample (change of variables for normalisation and rescaling)
    and ``log_prob(dist, sample, rescale_range=r)``."""
    readout, call = build(case)
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


DIFFERENTIABLE_CASES = [c for c in CASES if c.id in (
    'one_group', 'multi_sequential', 'squashed_norm_rescaled', 'beta', 'kumaraswamy_norm', 'mixed_squashed_norm',
    'runtime_selector_mixed_squashed',
)]  # fmt: skip


@pytest.mark.parametrize('case', DIFFERENTIABLE_CASES, ids=lambda c: c.id)
def test_differentiable_sample_with_log_prob(case):
    """Straight-through one-hots / reparameterised values with their log-prob,
    which is the reference log-density and has finite gradients."""
    readout, call = build(case)
    params = make_params(case, torch.float64, seed=2)
    d, c = unpack(case, params)
    leaves = [t.requires_grad_() for t in (group_list(case, d) if case.groups else []) + ([c] if case.cont else [])]
    sampled, log_prob = readout.sample(params, differentiable=True, rescale_range=case.rescale, return_log_prob=True, **call)
    d_s, c_s = unpack(case, sampled)
    if case.groups:  # one-hots concatenated over groups -> ids
        assert d_s.shape[-1] == sum(case.groups)
        ids = stack_groups(case, [h.argmax(-1) for h in d_s.detach().split(list(case.groups), dim=-1)])
        d_s = ids
    values = pack(case, d_s, c_s.detach() if case.cont else None)
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


# --------------------------------------------------------------------------- item 5: torch.distributions objects


def chain(dist):
    """The distribution objects and transforms from ``dist`` down to its leaf
    (torch's Kumaraswamy, itself a transformed uniform, counts as a leaf)."""
    dists, transforms = [dist], []
    while isinstance(dists[-1], (Independent, TransformedDistribution)) and not isinstance(dists[-1], Kumaraswamy):
        if isinstance(dists[-1], TransformedDistribution):
            transforms += list(dists[-1].transforms)
        dists.append(dists[-1].base_dist)
    return dists, transforms


@case_params
def test_get_dist_returns_torch_distributions_of_the_right_kind(case):
    readout, call = build(case)
    params = make_params(case)
    dist = readout.get_dist(params, rescale_range=case.rescale, **call)
    d, c = unpack(case, dist)
    if case.groups:
        assert isinstance(d, Distribution)
        if case.single:
            assert isinstance(d, Categorical)
            assert d.batch_shape == BATCH and d.event_shape == ()
        else:
            assert d.batch_shape == BATCH and d.event_shape == (len(case.groups),)
    else:
        assert d is None
    if case.cont:
        assert isinstance(c, Independent)
        assert c.batch_shape == BATCH and c.event_shape == (case.num_continuous,)
        dists, transforms = chain(c)
        leaf = dists[-1]
        expected = {'gaussian': Normal, 'squashed': Normal, 'beta': Beta, 'kumaraswamy': Kumaraswamy}[case.cont]
        assert isinstance(leaf, expected), f'leaf {type(leaf).__name__}, expected {expected.__name__}'
        if case.cont == 'gaussian':
            assert isinstance(c.base_dist, Normal), 'a (de-normalised) gaussian is an Independent(Normal)'
        assert any(isinstance(t, TanhTransform) for t in transforms) == (case.cont == 'squashed')
        if case.cont != 'gaussian':
            assert c.has_rsample
    else:
        assert c is None


def event_sum(case: Case, part: str, t):
    """The readout's per-group / per-dim values summed like a distribution's event."""
    return t if part == 'discrete' and case.single else t.sum(-1)


@case_params
def test_get_dist_log_prob_entropy_and_mode_agree_with_the_readout(case):
    """float64 params: log_prob and entropy sum the readout's (and the float64
    reference's) over groups / dims, normalisation and rescaling included; the
    squashed entropy has no closed form (NotImplementedError); mode is the
    readout's mode."""
    readout, call = build(case)
    params = make_params(case, torch.float64, seed=3)
    dist = readout.get_dist(params, rescale_range=case.rescale, **call)
    sampled = readout.sample(params, rescale_range=case.rescale, **call)
    log_prob = readout.log_prob(params, sampled, rescale_range=case.rescale, **call)
    reference = ref_log_prob(case, params, sampled)
    entropy = readout.entropy(params, rescale_range=case.rescale, **call)
    mode = readout.mode(params, rescale_range=case.rescale, **call)
    parts = zip(('discrete', 'continuous'), unpack(case, dist), unpack(case, sampled), unpack(case, log_prob),
                unpack(case, reference), unpack(case, entropy), unpack(case, mode), unpack(case, params))  # fmt: skip
    tol = {'rtol': 1e-6, 'atol': 1e-6}  # the affine map is kept in float32 by get_dist
    for part, dd, x, lp, ref, ent, md, p in parts:
        if dd is None:
            continue
        assert_close(dd.log_prob(x), event_sum(case, part, lp), f'{part} log_prob vs readout', **tol)
        assert_close(dd.log_prob(x), event_sum(case, part, ref), f'{part} log_prob vs reference', **tol)
        assert_close(dd.mode, md, f'{part} mode', **tol)
        if part == 'continuous' and case.cont == 'squashed':
            with pytest.raises(NotImplementedError):
                dd.entropy()
            continue
        ref_ent = ref_discrete_entropy(case, p) if part == 'discrete' else ref_continuous_entropy(case, p)
        assert_close(dd.entropy(), event_sum(case, part, ent), f'{part} entropy vs readout', **tol)
        assert_close(dd.entropy(), event_sum(case, part, ref_ent), f'{part} entropy vs reference', **tol)


def ks_distance(x, y):
    """Two-sample Kolmogorov-Smirnov statistic per column of ``(n, m)`` samples."""
    x, y = x.double().T.contiguous().sort(-1).values, y.double().T.contiguous().sort(-1).values
    both = torch.cat((x, y), dim=-1)
    cdf_x = torch.searchsorted(x, both, right=True) / x.shape[-1]
    cdf_y = torch.searchsorted(y, both, right=True) / y.shape[-1]
    return (cdf_x - cdf_y).abs().amax(-1)


@case_params
def test_get_dist_samples_follow_the_readouts_distribution(case):
    """4000 draws per entry: discrete frequencies within 0.035 of the softmax
    (4.4 standard errors) for both samplers; continuous marginals of
    ``sample`` / ``rsample`` against the readout's own draws by a two-sample
    KS statistic below 0.06 (its 0.1% critical value is 0.044); rsample is
    differentiable."""
    n, batch = 4000, (2,)
    readout, call = build(case)
    params = make_params(case, seed=4, batch=batch)
    dist = readout.get_dist(params, rescale_range=case.rescale, **call)
    expanded = pack(case, *[
        None if t is None else (tuple(g.expand(n, *g.shape) for g in t) if isinstance(t, tuple) else t.expand(n, *t.shape))
        for t in unpack(case, params)
    ])  # fmt: skip
    ours = readout.sample(expanded, rescale_range=case.rescale, **call)
    (dd, dc), (od, oc), (pd, _) = unpack(case, dist), unpack(case, ours), unpack(case, params)
    if case.groups:
        drawn = dd.sample((n,))
        for ids in (drawn, od):
            assert ids.shape == (n, *batch, *(() if case.single else (len(case.groups),)))
            per_group = [ids] if case.single else ids.unbind(-1)
            for g, (logits, i) in enumerate(zip(group_list(case, pd), per_group)):
                freq = F.one_hot(i, logits.shape[-1]).double().mean(0)
                assert (freq - logits.double().softmax(-1)).abs().max() < 0.035, f'group {g} frequencies'
    if case.cont:
        c = case.num_continuous
        for how in ('sample', 'rsample'):
            drawn = getattr(dc, how)((n,))
            assert drawn.shape == (n, *batch, c)
            ks = ks_distance(drawn.reshape(n, -1), oc.reshape(n, -1))
            assert ks.max() < 0.06, f'{how}: KS statistics {ks.tolist()}'
        leaf = unpack(case, params)[1].clone().requires_grad_()
        cdist = unpack(case, readout.get_dist(pack(case, pd, leaf), rescale_range=case.rescale, **call))[1]
        cdist.rsample().sum().backward()
        assert leaf.grad is not None and torch.isfinite(leaf.grad).all() and leaf.grad.abs().sum() > 0


@pytest.mark.parametrize('groups', [(7,), (3, 5, 4)], ids=['one_group', 'multi'])
@pytest.mark.parametrize('parallel', [True, False])
def test_get_dist_with_an_action_mask(groups, parallel):
    """Masked actions: probability 0, log-prob -inf, never drawn; log_prob,
    entropy and mode agree with the readout's under the same mask."""
    case = Case('masked', groups=groups, parallel=parallel)
    readout, _ = build(case)
    logits = make_params(case, seed=5)
    gen = torch.Generator().manual_seed(6)
    mask = torch.rand(*BATCH, sum(groups), generator=gen) < 0.5
    for m in mask.split(list(groups), dim=-1):
        m[..., 0] = True  # every group keeps an allowed action
    dist = readout.get_dist(logits, action_mask=mask)
    masks = mask.split(list(groups), dim=-1)
    masked = [g.masked_fill(~m, float('-inf')) for g, m in zip(group_list(case, logits), masks)]
    if case.single:
        assert isinstance(dist, Categorical)
        assert (dist.probs[~mask] == 0).all()
    assert torch.equal(dist.mode, stack_groups(case, [g.argmax(-1) for g in masked]))
    assert torch.equal(dist.mode, readout.mode(logits, action_mask=mask))
    drawn = dist.sample((500,))
    per_group = [drawn] if case.single else drawn.unbind(-1)
    for m, ids in zip(masks, per_group):
        assert m.expand(500, *m.shape).gather(-1, ids.unsqueeze(-1)).all(), 'a masked action was drawn'
    ids = readout.sample(logits, action_mask=mask)
    lp = readout.log_prob(logits, ids, action_mask=mask)
    assert_close(dist.log_prob(ids), lp if case.single else lp.sum(-1), 'masked log_prob', rtol=1e-6, atol=1e-6)
    ref = ref_discrete_log_prob(case, tuple(masked) if not case.single else masked[0], ids)
    assert_close(dist.log_prob(ids), ref if case.single else ref.sum(-1), 'masked log_prob vs reference', rtol=1e-6, atol=1e-6)
    ent = readout.entropy(logits, action_mask=mask)
    assert_close(dist.entropy(), ent if case.single else ent.sum(-1), 'masked entropy', rtol=1e-6, atol=1e-6)
    # a disallowed action has log-prob -inf
    bad = stack_groups(case, [(~m).int().argmax(-1) for m in masks])
    has_bad = torch.stack([(~m).any(-1) for m in masks], -1).all(-1)
    assert torch.isneginf(dist.log_prob(bad)[has_bad]).all()


@pytest.mark.parametrize('kind', ['beta', 'kumaraswamy', 'squashed'])
def test_get_dist_samples_are_clipped_like_the_readouts(kind):
    """The readout keeps samples where their log-density is finite (spec 6, 8):
    ``[clip_eps, 1 - clip_eps]`` for beta / kumaraswamy, strictly inside
    (-1, 1) for the squashed gaussian. get_dist's ``sample`` / ``rsample``
    promise to match; here the mass piles up at the edges (concentrations
    ~0.05; pre-tanh mean +-12)."""
    n = 2000
    case = Case(kind, cont=kind)
    readout, _ = build(case)
    if kind == 'squashed':
        params = torch.tensor([[12.0, -2.0], [-12.0, -2.0], [0.0, 0.0]])
        inside = lambda x: x.abs() <= F32_EDGE  # noqa: E731
    else:
        params = torch.full((3, 2), -3.0)  # softplus(-3) ~ 0.049
        inside = lambda x: (x >= CLIP_EPS) & (x <= 1 - CLIP_EPS)  # noqa: E731
    ours = readout.sample(params.expand(n, 3, 2))
    assert inside(ours).all(), 'readout samples must be clipped'
    dist = readout.get_dist(params)
    problems = []
    for how in ('sample', 'rsample'):
        drawn = getattr(dist, how)((n,)).detach()
        outside = ~inside(drawn)
        if outside.any():
            problems.append(
                f'{how}: {int(outside.sum())} of {drawn.numel()} values outside the clip range, e.g. {drawn[outside][:4].tolist()}'
            )
        fresh = readout.get_dist(params).log_prob(drawn)  # a new object: no cached pre-image
        if not torch.isfinite(fresh).all():
            problems.append(
                f'{how}: log_prob of a fresh get_dist at its draws is not finite: {int((~torch.isfinite(fresh)).sum())} of {fresh.numel()}'
            )
    assert not problems, '; '.join(problems)


@pytest.mark.parametrize('kind', ['beta', 'kumaraswamy'])
@pytest.mark.parametrize('normalised', [False, True], ids=['plain', 'normalised'])
def test_get_dist_log_prob_matches_the_readout_near_the_edges(kind, normalised):
    """Values within clip_eps of 0 and 1 (which get_dist's own unclipped draws
    produce): the readout clips them before the density; get_dist's log_prob
    must give the same."""
    case = Case(kind, cont=kind, normalised=normalised)
    readout, _ = build(case)
    params = make_params(case, torch.float64, seed=7, batch=(4,))
    native = torch.tensor([1e-8, 3e-6, 0.4, 1 - 3e-6], dtype=torch.float64)[:, None].expand(4, 3)
    values = to_output_units(case, native)
    expected = readout.log_prob(params, values).sum(-1)
    assert_close(readout.get_dist(params).log_prob(values), expected, 'log_prob at the edges', rtol=1e-6, atol=1e-6)
    assert_close(expected, ref_continuous_log_prob(case, params, values).sum(-1), 'readout vs reference', rtol=1e-6, atol=1e-6)


TENSORDICT_CASES = [c for c in CASES if c.id in (
    'one_group', 'multi_parallel', 'multi_sequential', 'gaussian_norm', 'squashed', 'squashed_norm_rescaled',
    'beta', 'beta_norm_rescaled', 'kumaraswamy', 'kumaraswamy_norm', 'selector_gaussian_norm', 'selector_discrete',
)]  # fmt: skip


@pytest.mark.parametrize('interaction', [InteractionType.MODE, InteractionType.RANDOM], ids=['MODE', 'RANDOM'])
@pytest.mark.parametrize('case', TENSORDICT_CASES, ids=lambda c: c.id)
def test_get_dist_as_the_distribution_class_of_tensordicts_probabilistic_module(case, interaction):
    readout, call = build(case)
    params = make_params(case, seed=8)
    if isinstance(params, tuple):  # a multi-discrete tensordict entry: the groups concatenated
        params = torch.cat(params, dim=-1)
    dist_kwargs = dict(call)
    if case.rescale:
        dist_kwargs['rescale_range'] = case.rescale
    module = ProbabilisticTensorDictModule(
        in_keys={'dist_params': 'params'}, out_keys=['action'], distribution_class=readout.get_dist,
        distribution_kwargs=dist_kwargs, return_log_prob=True, default_interaction_type=interaction,
    )  # fmt: skip
    td = module(TensorDict({'params': params}, batch_size=list(BATCH)))
    assert module.log_prob_key == LOG_PROB_KEY and LOG_PROB_KEY in td.keys()
    action, log_prob = td['action'], td[LOG_PROB_KEY]
    assert log_prob.shape == BATCH and torch.isfinite(log_prob).all()
    if interaction == InteractionType.MODE:
        mode = readout.mode(params, rescale_range=case.rescale, **call)
        assert_close(action, mode, 'MODE action', rtol=1e-5, atol=1e-5)
    part = 'discrete' if case.groups else 'continuous'
    expected = readout.log_prob(params, action, rescale_range=case.rescale, **call)
    # float32: the readout recomputes through atanh / the affine inverse of the float32 action
    assert_close(log_prob, event_sum(case, part, expected), 'written log-prob', rtol=1e-4, atol=1e-3)


def test_tensordict_policy_with_a_readout_table_backpropagates_into_the_table():
    """Readout -> params -> get_dist in a ProbabilisticTensorDictSequential
    (squashed, normalised, rescaled through distribution_kwargs)."""
    readout = Readout(16, num_continuous=2, continuous_squashed=True, continuous_mean_std=MEAN_STD[:2])
    rescale = (-2.0, 3.0)
    policy = ProbabilisticTensorDictSequential(
        TensorDictModule(readout, in_keys=['embed'], out_keys=['params']),
        ProbabilisticTensorDictModule(
            in_keys={'dist_params': 'params'}, out_keys=['action'], distribution_class=readout.get_dist,
            distribution_kwargs={'rescale_range': rescale}, return_log_prob=True,
            default_interaction_type=InteractionType.RANDOM,
        ),
    )  # fmt: skip
    td = policy(TensorDict({'embed': 3 * torch.randn(8, 16)}, batch_size=[8]))
    action, log_prob = td['action'], td[LOG_PROB_KEY]
    assert action.shape == (8, 2) and log_prob.shape == (8,)
    expected = readout.log_prob(td['params'].detach(), action.detach(), rescale_range=rescale).sum(-1)
    # float32: the readout recomputes through atanh of the float32 action
    assert_close(log_prob.detach(), expected, 'log-prob', rtol=1e-4, atol=1e-3)
    log_prob.sum().backward()
    grad = readout.embeddings.weight.grad
    assert grad is not None and torch.isfinite(grad).all() and grad.abs().sum() > 0


def test_get_dist_of_a_mixed_readout_is_a_pair():
    case = CASES[[c.id for c in CASES].index('mixed_squashed_norm')]
    readout, _ = build(case)
    dist = readout.get_dist(make_params(case))
    assert isinstance(dist, DiscreteContinuous)
    discrete, continuous = dist
    assert isinstance(dist.discrete, Distribution) and isinstance(dist.continuous, Independent)
    assert discrete.event_shape == (2,) and continuous.event_shape == (3,)


# --------------------------------------------------------------------------- item 6: squashed entropy


def squashed_entropy_by_quadrature(mean: float, std: float, num: int = 2_000_000):
    """-int p log p over (-1, 1), midpoint rule in float64, with
    p(a) = N(atanh a; mean, std) / (1 - a^2); also returns int p."""
    a = (torch.arange(num, dtype=torch.float64) + 0.5) * (2.0 / num) - 1.0
    log_p = Normal(torch.tensor(mean, dtype=torch.float64), std).log_prob(torch.atanh(a)) - torch.log1p(-a * a)
    p = log_p.exp()
    return (-(p * log_p).sum() * (2.0 / num)).item(), (p.sum() * (2.0 / num)).item()


MC_CASES = [(0.0, 1.0), (0.8, 0.5), (-1.2, 0.7), (0.3, 1.5), (2.0, 0.3)]  # (pre-tanh mean, std)


@pytest.mark.parametrize('variant', ['plain', 'normalised', 'mixed'])
def test_squashed_entropy_default_is_the_pre_tanh_gaussians_and_documented(variant):
    mean = torch.tensor([m for m, _ in MC_CASES])
    log_var = 2 * torch.tensor([s for _, s in MC_CASES]).log()
    params = torch.stack((mean, log_var), dim=-1).expand(3, 5, 2)
    kw = {'continuous_mean_std': torch.cat((MEAN_STD, MEAN_STD[:1]))} if variant == 'normalised' else {}
    if variant == 'mixed':
        kw['num_discrete'] = 4
    readout = ParameterlessReadout(num_continuous=5, continuous_squashed=True, **kw)
    logits = torch.randn(3, 4)
    dist = DiscreteContinuous(logits, params) if variant == 'mixed' else params
    entropy = readout.entropy(dist)
    continuous = entropy.continuous if variant == 'mixed' else entropy
    expected = 0.5 * (1 + LOG_2PI) + 0.5 * log_var.double()
    if variant == 'normalised':
        expected = expected + kw['continuous_mean_std'][:, 1].double().log()
    assert_close(continuous, expected.expand(3, 5), 'default squashed entropy', rtol=1e-6, atol=1e-6)
    doc = Readout.entropy.__doc__
    assert 'pre-tanh' in doc and 'squashed_entropy_samples' in doc, 'entropy() must document the squashed case'


@pytest.mark.parametrize('variant', ['plain', 'normalised', 'mixed'])
def test_squashed_entropy_monte_carlo_estimate_matches_quadrature(variant):
    """200k draws per dim: the estimate is within 0.02 nats of the float64
    quadrature of -p log p (its standard error is below 0.004 for these
    cases), and below the pre-tanh gaussian's entropy."""
    mean = torch.tensor([m for m, _ in MC_CASES])
    std = torch.tensor([s for _, s in MC_CASES])
    params = torch.stack((mean, 2 * std.log()), dim=-1)[None]  # (1, 5, 2)
    kw = {}
    shift = torch.zeros(5, dtype=torch.float64)
    if variant == 'normalised':
        kw['continuous_mean_std'] = torch.cat((MEAN_STD, MEAN_STD[:1]))
        shift = kw['continuous_mean_std'][:, 1].double().log()
    if variant == 'mixed':
        kw['num_discrete'] = (3, 4)
    readout = ParameterlessReadout(num_continuous=5, continuous_squashed=True, **kw)
    logits = (torch.randn(1, 3), torch.randn(1, 4))
    dist = DiscreteContinuous(logits, params) if variant == 'mixed' else params
    estimate = readout.entropy(dist, squashed_entropy_samples=200_000)
    default = readout.entropy(dist)
    if variant == 'mixed':
        assert_close(estimate.discrete, default.discrete, 'discrete entropy', rtol=0, atol=0)
        estimate, default = estimate.continuous, default.continuous
    assert estimate.shape == (1, 5)
    reference = []
    for m, s in MC_CASES:
        h, mass = squashed_entropy_by_quadrature(m, s)
        assert abs(mass - 1) < 1e-6, 'the quadrature must capture all the mass'
        reference.append(h)
    expected = torch.tensor(reference, dtype=torch.float64) + shift
    assert_close(estimate[0], expected, 'MC squashed entropy', rtol=0, atol=0.02)
    assert (estimate < default).all()


def test_squashed_entropy_samples_option_is_checked():
    params = torch.randn(2, 3, 2)
    with pytest.raises(ValueError):
        ParameterlessReadout(num_continuous=3).entropy(params, squashed_entropy_samples=10)
    squashed = ParameterlessReadout(num_continuous=3, continuous_squashed=True)
    for bad in (0, -3, 2.5, True):
        with pytest.raises(ValueError):
            squashed.entropy(params, squashed_entropy_samples=bad)
