"""``readout.get_dist``: torch.distributions objects (Categorical /
MultiCategoricalDistribution, Independent Normal / Beta / Kumaraswamy, TanhTransform
for the squashed head) that agree with the readout (log_prob, entropy, mode,
samples, action masks, clipping) and work as the distribution class of tensordict's
ProbabilisticTensorDictModule. Every case of ``helpers.policy_cases`` runs where a
test takes ``case``."""

# g - groups, c - continuous dims, n - draws

import pytest
import torch
import torch.nn.functional as F
from helpers import CLIP_EPS, F32_EDGE, MEAN_STD, pack
from helpers.policy_cases import (
    BATCH,
    POLICY_CASES,
    PolicyCase,
    assert_close,
    event_sum,
    group_list,
    make_params,
    policy_case_params,
    policy_readout,
    ref_continuous_entropy,
    ref_continuous_log_prob,
    ref_discrete_entropy,
    ref_discrete_log_prob,
    ref_log_prob,
    stack_groups,
    to_output_units,
    unpack,
)
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

from discrete_continuous_embed_readout import DiscreteContinuous, Readout

LOG_PROB_KEY = 'action_log_prob'  # what tensordict 0.15 writes for out_keys=['action']


# the distribution objects and their agreement with the readout


def chain(dist):
    """The distribution objects and transforms from ``dist`` down to its leaf
    (torch's Kumaraswamy, itself a transformed uniform, counts as a leaf)."""
    dists, transforms = [dist], []
    while isinstance(dists[-1], (Independent, TransformedDistribution)) and not isinstance(dists[-1], Kumaraswamy):
        if isinstance(dists[-1], TransformedDistribution):
            transforms += list(dists[-1].transforms)
        dists.append(dists[-1].base_dist)
    return dists, transforms


@policy_case_params
def test_get_dist_returns_torch_distributions_of_the_right_kind(case):
    readout, call = policy_readout(case)
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


@policy_case_params
def test_get_dist_log_prob_entropy_and_mode_agree_with_the_readout(case):
    """float64 params: log_prob and entropy sum the readout's (and the float64
    reference's) over groups / dims, normalisation and rescaling included; the
    squashed entropy has no closed form (NotImplementedError); mode is the
    readout's mode."""
    readout, call = policy_readout(case)
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


@policy_case_params
def test_get_dist_samples_follow_the_readouts_distribution(case):
    """4000 draws per entry: discrete frequencies within 0.035 of the softmax
    (4.4 standard errors) for both samplers; continuous marginals of
    ``sample`` / ``rsample`` against the readout's own draws by a two-sample
    KS statistic below 0.06 (its 0.1% critical value is 0.044); rsample is
    differentiable."""
    n, batch = 4000, (2,)
    readout, call = policy_readout(case)
    params = make_params(case, seed=4, batch=batch)
    dist = readout.get_dist(params, rescale_range=case.rescale, **call)
    expanded = pack(*[
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
        cdist = unpack(case, readout.get_dist(pack(pd, leaf), rescale_range=case.rescale, **call))[1]
        cdist.rsample().sum().backward()
        assert leaf.grad is not None and torch.isfinite(leaf.grad).all() and leaf.grad.abs().sum() > 0


@pytest.mark.parametrize('groups', [(7,), (3, 5, 4)], ids=['one_group', 'multi'])
@pytest.mark.parametrize('parallel', [True, False])
def test_get_dist_with_an_action_mask(groups, parallel):
    """Masked actions: probability 0, log-prob -inf, never drawn; log_prob,
    entropy and mode agree with the readout's under the same mask."""
    case = PolicyCase('masked', groups=groups, parallel=parallel)
    readout, _ = policy_readout(case)
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
    case = PolicyCase(kind, cont=kind)
    readout, _ = policy_readout(case)
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
    case = PolicyCase(kind, cont=kind, normalised=normalised)
    readout, _ = policy_readout(case)
    params = make_params(case, torch.float64, seed=7, batch=(4,))
    native = torch.tensor([1e-8, 3e-6, 0.4, 1 - 3e-6], dtype=torch.float64)[:, None].expand(4, 3)
    values = to_output_units(case, native)
    expected = readout.log_prob(params, values).sum(-1)
    assert_close(readout.get_dist(params).log_prob(values), expected, 'log_prob at the edges', rtol=1e-6, atol=1e-6)
    assert_close(expected, ref_continuous_log_prob(case, params, values).sum(-1), 'readout vs reference', rtol=1e-6, atol=1e-6)


def test_get_dist_of_a_mixed_readout_is_a_pair():
    case = POLICY_CASES[[c.id for c in POLICY_CASES].index('mixed_squashed_norm')]
    readout, _ = policy_readout(case)
    dist = readout.get_dist(make_params(case))
    assert isinstance(dist, DiscreteContinuous)
    discrete, continuous = dist
    assert isinstance(dist.discrete, Distribution) and isinstance(dist.continuous, Independent)
    assert discrete.event_shape == (2,) and continuous.event_shape == (3,)


# tensordict's ProbabilisticTensorDictModule


TENSORDICT_CASES = [c for c in POLICY_CASES if c.id in (
    'one_group', 'multi_parallel', 'multi_sequential', 'gaussian_norm', 'squashed', 'squashed_norm_rescaled',
    'beta', 'beta_norm_rescaled', 'kumaraswamy', 'kumaraswamy_norm', 'selector_gaussian_norm', 'selector_discrete',
)]  # fmt: skip


@pytest.mark.parametrize('interaction', [InteractionType.MODE, InteractionType.RANDOM], ids=['MODE', 'RANDOM'])
@pytest.mark.parametrize('case', TENSORDICT_CASES, ids=lambda c: c.id)
def test_get_dist_as_the_distribution_class_of_tensordicts_probabilistic_module(case, interaction):
    readout, call = policy_readout(case)
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
