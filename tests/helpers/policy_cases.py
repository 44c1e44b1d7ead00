"""Policy-head configurations and their float64 references.

Every case runs across one group, multi-discrete (both paths), the four
continuous heads with and without ``continuous_mean_std``, ``rescale_range``,
mixed readouts and selectors (registered and at call time). References are
independent computations: closed forms, torch.distributions and float64.
"""

# g - groups, c - continuous dims, n - draws

from __future__ import annotations

import math
from dataclasses import dataclass

import pytest
import torch
from torch.distributions import Beta, Kumaraswamy, Normal

from discrete_continuous_embed_readout import DiscreteContinuous, ParameterlessReadout

from . import CLIP_EPS, EPS, LOG_2PI, MEAN_STD, concentrations, inv_softplus, kumaraswamy_raw_moment, pack

BATCH = (5, 2)
NATIVE = {'gaussian': None, 'squashed': (-1.0, 1.0), 'beta': (0.0, 1.0), 'kumaraswamy': (0.0, 1.0)}
SEL_GROUPS = [[0, 3, 5], [7, 8, 9, 10]]  # selector: two groups of sizes 3 and 4
SEL_DIMS = [2, 0]  # selector: continuous dims 2 and 0, in that order


@dataclass(frozen=True)
class PolicyCase:
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


POLICY_CASES = [
    PolicyCase('one_group', groups=(7,)),
    PolicyCase('multi_parallel', groups=(3, 5, 4)),
    PolicyCase('multi_sequential', groups=(3, 5, 4), parallel=False),
    PolicyCase('gaussian', cont='gaussian'),
    PolicyCase('gaussian_norm', cont='gaussian', normalised=True),
    PolicyCase('squashed', cont='squashed'),
    PolicyCase('squashed_norm', cont='squashed', normalised=True),
    PolicyCase('squashed_norm_rescaled', cont='squashed', normalised=True, rescale=(-2.0, 3.0)),
    PolicyCase('beta', cont='beta'),
    PolicyCase('beta_norm_rescaled', cont='beta', normalised=True, rescale=(-2.0, 3.0)),
    PolicyCase('beta_unimodal_rescaled', cont='beta', unimodal=True, rescale=(10.0, 12.0)),
    PolicyCase('kumaraswamy', cont='kumaraswamy'),
    PolicyCase('kumaraswamy_norm', cont='kumaraswamy', normalised=True),
    PolicyCase('kumaraswamy_unimodal_rescaled', cont='kumaraswamy', unimodal=True, rescale=(-1.0, 1.0)),
    PolicyCase('mixed_squashed_norm', groups=(3, 4), cont='squashed', normalised=True),
    PolicyCase('mixed_one_group_beta_rescaled', groups=(6,), cont='beta', rescale=(-2.0, 3.0)),
    PolicyCase('mixed_sequential_gaussian', groups=(3, 5, 4), cont='gaussian', parallel=False),
    PolicyCase('selector_mixed_kumaraswamy_norm', groups=(3, 4), cont='kumaraswamy', normalised=True, selector='registered'),
    PolicyCase('selector_gaussian_norm', cont='gaussian', normalised=True, selector='registered'),
    PolicyCase('selector_discrete', groups=(3, 4), selector='registered'),
    PolicyCase('runtime_selector_mixed_squashed', groups=(3, 4), cont='squashed', normalised=True, rescale=(-2.0, 3.0), selector='runtime'),
]
policy_case_params = pytest.mark.parametrize('case', POLICY_CASES, ids=lambda c: c.id)


def policy_readout(case: PolicyCase):
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


def continuous_params(case: PolicyCase, batch, gen, dtype) -> torch.Tensor:
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


def make_params(case: PolicyCase, dtype=torch.float32, seed=0, batch=BATCH):
    """What ``readout(embed)`` would return for the case: logits, params or a pair."""
    gen = torch.Generator().manual_seed(seed)
    d = c = None
    if case.groups:
        logits = [2.0 * torch.randn(*batch, n, generator=gen, dtype=torch.float64).to(dtype) for n in case.groups]
        d = logits[0] if case.single else tuple(logits)
    if case.cont:
        c = continuous_params(case, batch, gen, dtype)
    return pack(d, c)


def unpack(case: PolicyCase, obj):
    if case.groups and case.cont:
        assert isinstance(obj, DiscreteContinuous), f'a mixed readout returns a DiscreteContinuous pair, got {type(obj)}'
        return obj
    return (obj, None) if case.groups else (None, obj)


def group_list(case: PolicyCase, logits):
    return [logits] if case.single else list(logits)


def stack_groups(case: PolicyCase, per_group):
    return per_group[0] if case.single else torch.stack(per_group, dim=-1)


def used_mean_std(case: PolicyCase):
    mean, std = MEAN_STD[case.dims].double().unbind(-1)
    return mean, std


def rescale_factor(case: PolicyCase) -> float:
    (lo, hi), (new_lo, new_hi) = NATIVE[case.cont], case.rescale
    return (new_hi - new_lo) / (hi - lo)


def event_sum(case: PolicyCase, part: str, t):
    """The readout's per-group / per-dim values summed like a distribution's event."""
    return t if part == 'discrete' and case.single else t.sum(-1)


# --------------------------------------------------------------------------- float64 references


def native_mode(case: PolicyCase, params):
    """Closed-form deterministic action in native units, and where a unit
    interval head has an interior mode."""
    p = params.double()
    if case.cont == 'gaussian':
        return p[..., 0], None
    if case.cont == 'squashed':
        return torch.tanh(p[..., 0]), None
    a, b = concentrations(params, case.unimodal)
    interior = (a > 1) & (b > 1)
    if case.cont == 'beta':
        mode, mean = (a - 1) / (a + b - 2), a / (a + b)
    else:
        mode, mean = ((a - 1) / (a * b - 1)) ** (1 / a), kumaraswamy_raw_moment(a, b, 1)
    return torch.where(interior, mode, mean).clamp(CLIP_EPS, 1 - CLIP_EPS), interior


def to_output_units(case: PolicyCase, x):
    """Native -> rescale_range (the native range mapped linearly onto it; the
    normaliser does not enter), else -> de-normalised; float64."""
    if case.rescale:
        lo, _ = NATIVE[case.cont]
        return (x - lo) * rescale_factor(case) + case.rescale[0]
    if case.normalised:
        mean, std = used_mean_std(case)
        x = x * std + mean
    return x


def native_log_density(case: PolicyCase, params, x):
    p = params.double()
    if case.cont in ('gaussian', 'squashed'):
        normal = Normal(p[..., 0], torch.exp(0.5 * p[..., 1]))
        if case.cont == 'gaussian':
            return normal.log_prob(x)
        return normal.log_prob(torch.atanh(x)) - torch.log1p(-x * x)
    a, b = concentrations(params, case.unimodal)
    x = x.clamp(CLIP_EPS, 1 - CLIP_EPS)  # the head clips values (spec section 6)
    if case.cont == 'beta':
        return Beta(a, b).log_prob(x)
    return torch.log(a) + torch.log(b) + (a - 1) * torch.log(x) + (b - 1) * torch.log1p(-(x**a))


def ref_continuous_log_prob(case: PolicyCase, params, x):
    """Log-density of values ``x`` in output units (change of variables)."""
    x, extra = x.double(), 0.0
    if case.rescale:
        k = rescale_factor(case)
        x, extra = (x - case.rescale[0]) / k + NATIVE[case.cont][0], extra - math.log(k)
    elif case.normalised:
        mean, std = used_mean_std(case)
        x, extra = (x - mean) / std, extra - torch.log(std)
    return native_log_density(case, params, x) + extra


def ref_discrete_log_prob(case: PolicyCase, logits, ids):
    groups = group_list(case, logits)
    per_id = [i.unsqueeze(-1) for i in ((ids,) if case.single else ids.unbind(-1))]
    return stack_groups(case, [g.double().log_softmax(-1).gather(-1, i).squeeze(-1) for g, i in zip(groups, per_id)])


def ref_log_prob(case: PolicyCase, dist, sampled):
    (d, c), (ds, cs) = unpack(case, dist), unpack(case, sampled)
    rd = ref_discrete_log_prob(case, d, ds) if case.groups else None
    rc = ref_continuous_log_prob(case, c, cs) if case.cont else None
    return pack(rd, rc)


def ref_continuous_entropy(case: PolicyCase, params):
    """Per-dim entropy in original units (the readout's; squashed: the pre-tanh gaussian's)."""
    p = params.double()
    if case.cont in ('gaussian', 'squashed'):
        h = 0.5 * (1 + LOG_2PI) + 0.5 * p[..., 1]
    else:
        cls = Beta if case.cont == 'beta' else Kumaraswamy
        h = cls(*concentrations(params, case.unimodal)).entropy()
    if case.rescale:
        return h + math.log(rescale_factor(case))
    return h + torch.log(used_mean_std(case)[1]) if case.normalised else h


def ref_discrete_entropy(case: PolicyCase, logits):
    per_group = []
    for g in group_list(case, logits):
        logp = g.double().log_softmax(-1)
        per_group.append(-(logp.exp() * logp).sum(-1))
    return stack_groups(case, per_group)


# --------------------------------------------------------------------------- assertions


def assert_close(actual, expected, what, **tol):
    """Same shape, and close in float64, with ``what`` in the message."""
    assert actual.shape == expected.shape, f'{what}: shape {tuple(actual.shape)}, expected {tuple(expected.shape)}'
    torch.testing.assert_close(actual.double(), expected.double(), msg=lambda m: f'{what}: {m}', **tol)


def assert_close_pair(case: PolicyCase, actual, expected, what, **tol):
    for name, a, e in zip(('discrete', 'continuous'), unpack(case, actual), unpack(case, expected)):
        if e is not None:
            assert a is not None, f'{what}: missing the {name} part'
            assert_close(a, e, f'{what} ({name})', **tol)
