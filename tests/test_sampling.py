"""Discrete sampling (SPEC §8, §9): draws against softmax(logits / T) for one group
and several (both paths), greedy decoding, straight-through Gumbel-softmax, logit
filters, the temperature of a mixed readout's discrete part (and the kinds of
real scalar a temperature may be), and reproducible draws with a ``torch.Generator``
(discrete and continuous) that leave the global RNG alone.

Frequencies are checked per category: each empirical frequency must lie within
NUM_SIGMA standard errors sqrt(p (1 - p) / N) of its probability. With N = 100k
a wrong temperature or a wrong group is off by hundreds of standard errors,
while a correct sampler fails one comparison with probability ~6e-7.
"""

# g - groups, n - ids of a group, s - all groups' ids concatenated

import pytest
import torch
import torch.nn.functional as F
from helpers import (
    NUM_SIGMA,
    TEMPERATURE_FORMS,
    as_dist,
    assert_frequencies,
    discrete_readout,
    float_value,
    random_logits,
    top_k,
    with_group_axis,
)

from discrete_continuous_embed_readout import MultiCategorical, ParameterlessReadout, Readout

BATCH = (250, 400)  # 100k draws


TEMPERATURES = (1.0, 0.5, 2.0)


SINGLE = (6,)


MULTI = (3, 7, 2)


def fixed_logits(sizes, seed=0, scale=1.5, dtype=torch.float32):
    """One logit vector per group, drawn from a seeded generator."""
    gen = torch.Generator().manual_seed(seed)
    return [(torch.randn(n, generator=gen, dtype=torch.float64) * scale).to(dtype) for n in sizes]


def per_output_jacobian(y, leaf):
    """``J[..., j, i] = d y_j / d leaf_i`` for a row-wise map ``(b, s) -> (b, s)``."""
    rows = [torch.autograd.grad(y[:, j].sum(), leaf, retain_graph=True)[0] for j in range(y.shape[-1])]
    return torch.stack(rows, dim=1)  # (b, s_out, s_in)


# sampling frequencies


def sample_single(source, logits, temperature):
    k = logits.shape[-1]
    if source == 'parameterless':
        return ParameterlessReadout(num_discrete=k).sample(logits, temperature=temperature)
    if source == 'readout':
        return Readout(8, num_discrete=k).sample(logits, temperature=temperature)
    return MultiCategorical(logits).sample(temperature=temperature)


@pytest.mark.parametrize('source', ['parameterless', 'readout', 'multi_categorical'])
@pytest.mark.parametrize('temperature', TEMPERATURES)
def test_single_group_frequencies_follow_tempered_softmax(source, temperature):
    torch.manual_seed(0)
    (logits,) = fixed_logits(SINGLE)
    ids = sample_single(source, logits.expand(*BATCH, -1), temperature)
    assert ids.shape == BATCH and not ids.dtype.is_floating_point
    assert_frequencies(ids, F.softmax(logits.double() / temperature, -1), f'{source} T={temperature}')


@pytest.mark.parametrize('parallel', [True, False])
@pytest.mark.parametrize('temperature', TEMPERATURES)
def test_multi_discrete_frequencies_follow_tempered_softmax_per_group(parallel, temperature):
    torch.manual_seed(1)
    groups = fixed_logits(MULTI, seed=1)
    readout = discrete_readout(MULTI, parallel)
    ids = readout.sample(tuple(g.expand(*BATCH, -1) for g in groups), temperature=temperature)
    assert ids.shape == (*BATCH, len(MULTI))
    probs = [F.softmax(g.double() / temperature, -1) for g in groups]
    for i, p in enumerate(probs):
        assert_frequencies(ids[..., i], p, f'group {i} T={temperature}')
    # the groups are independent: the joint of groups 0 and 1 is the product
    joint = ids[..., 0] * MULTI[1] + ids[..., 1]
    assert_frequencies(joint, torch.outer(probs[0], probs[1]).flatten(), 'joint of groups 0, 1')


@pytest.mark.parametrize('temperature', [*TEMPERATURES, 0.0])
@pytest.mark.parametrize('differentiable', [False, True])
def test_parallel_and_sequential_paths_draw_identical_samples(temperature, differentiable):
    groups = random_logits(MULTI, (4, 50), seed=2)
    draws = []
    for parallel in (True, False):
        torch.manual_seed(3)
        draws.append(discrete_readout(MULTI, parallel).sample(tuple(groups), temperature=temperature, differentiable=differentiable))
    torch.testing.assert_close(draws[0], draws[1], rtol=0, atol=0)
    # and they are draws, not a constant: a fresh seed gives other ids somewhere
    if temperature > 0:
        torch.manual_seed(4)
        other = discrete_readout(MULTI, True).sample(tuple(groups), temperature=temperature, differentiable=differentiable)
        assert not torch.equal(other, draws[0])


# greedy


@pytest.mark.parametrize('sizes', [(9,), MULTI], ids=['one_group', 'three_groups'])
@pytest.mark.parametrize('parallel', [True, False])
@pytest.mark.parametrize('temperature', [0.0, -1.0])
def test_nonpositive_temperature_is_argmax(sizes, parallel, temperature):
    torch.manual_seed(5)
    groups = random_logits(sizes, (8, 5), seed=5)
    ids = discrete_readout(sizes, parallel).sample(as_dist(groups), temperature=temperature)
    expected = torch.stack([g.argmax(-1) for g in groups], dim=-1)
    assert torch.equal(with_group_axis(ids, sizes), expected)
    assert ids.shape == ((8, 5) if len(sizes) == 1 else (8, 5, len(sizes)))
    mc = MultiCategorical(as_dist(groups), use_parallel_multi_discrete=parallel)
    assert torch.equal(with_group_axis(mc.sample(temperature=temperature), sizes), expected)


# straight-through Gumbel-softmax


@pytest.mark.parametrize('sizes', [(4,), MULTI], ids=['one_group', 'three_groups'])
@pytest.mark.parametrize('parallel', [True, False])
@pytest.mark.parametrize('tau', [1.0, 0.5])
def test_differentiable_sample_is_straight_through_gumbel_softmax(sizes, parallel, tau):
    """Forward: one one-hot per group. Backward: the Jacobian of the relaxation
    softmax((logits / tau + g) / tau) for the Gumbel noise g behind the hard draw
    (the Gumbel-softmax of the tempered logits, relaxation temperature tau).

    The noise is not exposed, so it is recovered from the Jacobian itself:
    tau^2 J = diag(p) - p p^T pins down p, hence g up to a constant per row
    (g = tau log p - logits / tau). Then: the hard one-hot is argmax p, the draws
    follow softmax(logits / tau), as the draws without ``differentiable`` do, and
    g_1 - g_0 of independent standard Gumbels is Logistic(0, 1).
    """
    torch.manual_seed(6)
    num_rows = 20_000
    base = torch.cat(fixed_logits(sizes, seed=6, dtype=torch.float64))
    flat = base.expand(num_rows, -1).clone().requires_grad_()
    y = discrete_readout(sizes, parallel).sample(as_dist(flat.split(sizes, -1)), temperature=tau, differentiable=True)
    assert y.shape == (num_rows, sum(sizes))
    jac = per_output_jacobian(y, flat)  # (b, s, s)

    offsets = [0, *torch.tensor(sizes).cumsum(0).tolist()]
    block_mask = torch.zeros(sum(sizes), sum(sizes), dtype=torch.bool)
    for g, n in enumerate(sizes):
        sl = slice(offsets[g], offsets[g + 1])
        block_mask[sl, sl] = True
        one_hot, logits = y[:, sl].detach(), base[sl]

        # forward value: exactly one 1 per group, zeros elsewhere
        torch.testing.assert_close(one_hot, one_hot.round(), rtol=0, atol=1e-6)
        assert torch.equal(one_hot.round().sum(-1), torch.ones(num_rows, dtype=one_hot.dtype))
        hard = one_hot.argmax(-1)

        # recover p: non-hard entries are <= 1/2, where d = p (1 - p) inverts stably
        block = tau**2 * jac[:, sl, sl]
        d = block.diagonal(dim1=-2, dim2=-1)
        p = 2 * d / (1 + (1 - 4 * d).clamp(min=0).sqrt())
        is_hard = F.one_hot(hard, n).bool()
        p = p.masked_fill(is_hard, 0.0)
        p = p + is_hard * (1 - p.sum(-1, keepdim=True))
        assert (p > 0).all() and torch.equal(p.argmax(-1), hard)
        torch.testing.assert_close(block, torch.diag_embed(p) - p.unsqueeze(-1) * p.unsqueeze(-2), rtol=1e-6, atol=1e-9)

        # the hard draws follow softmax(logits / tau); the implied noise is Gumbel
        assert_frequencies(hard, F.softmax(logits / tau, -1), f'hard draws of group {g}')
        noise = tau * p.log() - logits / tau
        diff = noise[:, 1] - noise[:, 0]
        for x in (-3.0, -1.0, 0.0, 1.0, 3.0):
            cdf = torch.sigmoid(torch.tensor(x, dtype=torch.float64))
            se = (cdf * (1 - cdf) / num_rows).sqrt()
            assert ((diff <= x).double().mean() - cdf).abs() < NUM_SIGMA * se, f'logistic cdf at {x}'
    # no gradient crosses from one group to another
    assert (jac[:, ~block_mask] == 0).all()


@pytest.mark.parametrize('sizes', [(9,), MULTI], ids=['one_group', 'three_groups'])
@pytest.mark.parametrize('parallel', [True, False])
def test_differentiable_sample_at_zero_temperature_is_argmax_one_hot(sizes, parallel):
    torch.manual_seed(7)
    flat = torch.cat(random_logits(sizes, (6, 3), seed=7), dim=-1).requires_grad_()
    groups = flat.split(sizes, -1)
    y = discrete_readout(sizes, parallel).sample(as_dist(groups), temperature=0.0, differentiable=True)
    expected = torch.cat([F.one_hot(g.argmax(-1), n).to(flat.dtype) for g, n in zip(groups, sizes)], dim=-1)
    assert not y.isnan().any()
    torch.testing.assert_close(y, expected, rtol=0, atol=1e-6)
    weights = torch.randn(y.shape)
    (y * weights).sum().backward()
    assert torch.isfinite(flat.grad).all() and flat.grad.abs().sum() > 0


def test_differentiable_greedy_sample_of_one_group_is_the_argmax_one_hot():
    logits = torch.randn(6, 5, requires_grad=True)
    one_hot = ParameterlessReadout(num_discrete=5).sample(logits, temperature=0.0, differentiable=True)
    assert torch.equal(one_hot.detach(), F.one_hot(logits.argmax(-1), 5).float())
    (one_hot * torch.randn(6, 5)).sum().backward()
    assert torch.isfinite(logits.grad).all() and logits.grad.abs().sum() > 0


# filters


@pytest.mark.parametrize('api', ['sample', 'sample_discrete'])
@pytest.mark.parametrize('sizes', [(10,), MULTI], ids=['one_group', 'three_groups'])
@pytest.mark.parametrize('parallel', [True, False])
def test_top_k_filter_never_draws_outside_the_top_k(api, sizes, parallel):
    torch.manual_seed(8)
    k, temperature = 2, 0.7
    readout = discrete_readout(sizes, parallel)

    def draw(groups):
        if api == 'sample':
            return readout.sample(as_dist(groups), temperature=temperature, filter_fn=top_k, filter_kwargs=dict(k=k))
        return readout.sample_discrete(as_dist(groups), temperature, False, top_k, dict(k=k))

    # per row: different logits, different top-k sets
    groups = random_logits(sizes, (2000,), seed=8)
    ids = with_group_axis(draw(groups), sizes)
    for i, g in enumerate(groups):
        allowed = g.topk(min(k, g.shape[-1]), dim=-1).indices
        assert (allowed == ids[:, i : i + 1]).any(-1).all(), f'group {i} drew outside its top {k}'

    # frequencies: the tempered softmax renormalised over the top k
    groups = fixed_logits(sizes, seed=9)
    ids = with_group_axis(draw([g.expand(*BATCH, -1) for g in groups]), sizes)
    for i, g in enumerate(groups):
        kept = top_k(g.double(), min(k, g.numel()))
        assert_frequencies(ids[..., i], F.softmax(kept / temperature, -1), f'top-{k} group {i}')


@pytest.mark.parametrize('parallel', [True, False])
def test_filter_fn_gets_each_groups_masked_unimixed_logits_before_the_temperature(parallel):
    # the calling convention the docstrings state: filter_fn(logits, **filter_kwargs) once
    # per group on its (..., n_g) logits, after action_mask and unimix, before the temperature
    unimix, gen = 0.1, torch.Generator().manual_seed(12)
    readout = discrete_readout(MULTI, parallel, unimix=unimix)
    groups = random_logits(MULTI, (4,), seed=12)
    masks = [(torch.rand(4, n, generator=gen) > 0.4) | (torch.arange(n) == 0) for n in MULTI]
    seen = []

    def spy(logits, k):
        seen.append((logits.clone(), k))
        return logits

    readout.sample(as_dist(groups), temperature=0.5, action_mask=tuple(masks), filter_fn=spy, filter_kwargs=dict(k=3))
    assert len(seen) == len(MULTI)
    for g, m, (logits, k) in zip(groups, masks, seen):
        p = F.softmax(g.double().masked_fill(~m, float('-inf')), -1)
        expected = torch.log((1 - unimix) * p + unimix * m.double() / m.sum(-1, keepdim=True))
        assert k == 3 and logits.shape == g.shape
        torch.testing.assert_close(logits.double(), expected, rtol=1e-5, atol=1e-6)


# mixed readout


@pytest.mark.parametrize('temperature', [0.0, 0.5, 2.0])
def test_mixed_sample_passes_temperature_to_the_discrete_part(temperature):
    torch.manual_seed(10)
    readout = ParameterlessReadout(num_discrete=5, num_continuous=2)
    if temperature == 0.0:
        (logits,) = random_logits((5,), (64,), seed=10)
    else:
        (logits,) = (g.expand(*BATCH, -1) for g in fixed_logits((5,), seed=10))
    params = torch.randn(*logits.shape[:-1], 2, 2)
    out = readout.sample((logits, params), temperature=temperature)
    discrete, continuous = out
    assert out.discrete is discrete and continuous.shape == (*logits.shape[:-1], 2)
    assert torch.isfinite(continuous).all()
    if temperature == 0.0:
        assert torch.equal(discrete, logits.argmax(-1))
    else:
        assert_frequencies(discrete, F.softmax(logits[0, 0].double() / temperature, -1), f'T={temperature}')


def test_a_mixed_greedy_sample_takes_the_argmax_of_the_discrete_part():
    readout = ParameterlessReadout(num_discrete=6, num_continuous=2)
    logits = torch.randn(500, 6)
    params = torch.randn(500, 2, 2)
    sampled = readout.sample((logits, params), temperature=0.0)
    assert torch.equal(sampled.discrete, logits.argmax(-1))


# generators


@pytest.mark.parametrize('sizes', [SINGLE, MULTI], ids=['one_group', 'three_groups'])
@pytest.mark.parametrize('parallel', [True, False])
@pytest.mark.parametrize('differentiable', [False, True])
def test_sampling_with_a_generator_is_reproducible(sizes, parallel, differentiable):
    torch.manual_seed(16)
    groups = as_dist(random_logits(sizes, (32, 8), seed=16))
    readout = discrete_readout(sizes, parallel)

    def draw(seed, how='sample'):
        gen = torch.Generator().manual_seed(seed)
        if how == 'sample':
            return readout.sample(groups, differentiable=differentiable, generator=gen)
        if how == 'sample_discrete':
            return readout.sample_discrete(groups, differentiable=differentiable, generator=gen)
        mc = MultiCategorical(groups, use_parallel_multi_discrete=parallel)
        return mc.sample(differentiable=differentiable, generator=gen)

    global_state = torch.get_rng_state()
    first = draw(123)
    assert torch.equal(torch.get_rng_state(), global_state), 'a generator draw must leave the global RNG alone'
    torch.manual_seed(999)  # the global seed plays no part
    assert torch.equal(draw(123), first)
    assert torch.equal(draw(123, 'sample_discrete'), first)
    assert torch.equal(draw(123, 'multi_categorical'), first)
    assert not torch.equal(draw(124), first)


HEADS = {
    'gaussian': {},
    'squashed': dict(continuous_squashed=True),
    'beta': dict(continuous_dist_type='beta'),
    'kumaraswamy': dict(continuous_dist_type='kumaraswamy'),
}


@pytest.mark.parametrize('head', list(HEADS))
@pytest.mark.parametrize('differentiable', [False, True])
def test_same_generator_seed_same_samples(head, differentiable):
    readout = ParameterlessReadout(num_discrete=(3, 5), num_continuous=2, **HEADS[head])
    dist = ((torch.randn(64, 3), torch.randn(64, 5)), torch.randn(64, 2, 2))
    global_state = torch.get_rng_state()

    def draw(seed, **kwargs):
        return readout.sample(dist, differentiable=differentiable, generator=torch.Generator().manual_seed(seed), **kwargs)

    a, b, c = draw(11), draw(11), draw(12)
    assert torch.equal(a.discrete, b.discrete) and torch.equal(a.continuous, b.continuous)
    assert not torch.equal(a.continuous, c.continuous)
    assert torch.equal(global_state, torch.get_rng_state())
    # with the log-prob and a rescale too
    (s1, lp1), (s2, lp2) = draw(5, return_log_prob=True), draw(5, return_log_prob=True)
    assert torch.equal(s1.continuous, s2.continuous) and torch.equal(lp1.continuous, lp2.continuous)


def test_generator_draws_follow_the_distribution():
    readout = ParameterlessReadout(num_continuous=1)
    params = torch.tensor([[[1.5, 2 * torch.log(torch.tensor(0.5))]]]).expand(20000, 1, 2)
    sampled = readout.sample(params, generator=torch.Generator().manual_seed(0))
    assert abs(sampled.mean().item() - 1.5) < 0.02 and abs(sampled.std().item() - 0.5) < 0.02


# a temperature may be any real scalar


def flat_tensors(out):
    return [out] if isinstance(out, torch.Tensor) else [t for part in out for t in flat_tensors(part)]


def seeded(draw):
    """``draw`` under the global RNG seeded alike each time (heads take no generator)."""

    def run(t):
        with torch.random.fork_rng():
            torch.manual_seed(7)
            return draw(t)

    return run


@pytest.mark.parametrize('form', list(TEMPERATURE_FORMS))
def test_every_real_scalar_is_a_temperature_and_draws_as_its_float(form):
    temperature = TEMPERATURE_FORMS[form]
    readout = Readout(8, num_discrete=(5, 4), num_continuous=2)
    binned = ParameterlessReadout(num_continuous=1, continuous_dist_type='two_hot')
    with torch.no_grad():
        logits, params = readout(torch.randn(64, 8) * 50)
    bin_logits = torch.randn(64, 1, binned.continuous_dist.num_bins)
    generator = lambda: torch.Generator().manual_seed(7)  # noqa: E731
    draws = {
        'sample': lambda t: readout.sample((logits, params), temperature=t, generator=generator()),
        'dist sample': lambda t: readout.dist((logits, params)).sample(t, generator=generator()),
        'sample_discrete': lambda t: readout.sample_discrete(logits, t, generator=generator()),
        'straight-through': lambda t: readout.sample_discrete(logits, t, True, generator=generator()),
        'MultiCategorical.sample': lambda t: MultiCategorical(list(logits)).sample(t, generator=generator()),
        'sample_continuous': seeded(lambda t: readout.sample_continuous(params, t)),
        'head sample': seeded(lambda t: readout.continuous_dist.sample(params, t)),
        'binned sample': lambda t: binned.sample(bin_logits, temperature=t, generator=generator()),
    }
    for name, draw in draws.items():
        for a, b in zip(flat_tensors(draw(temperature)), flat_tensors(draw(float_value(temperature))), strict=True):
            assert torch.equal(a, b), name
    at_one = draws['sample'](1.0)
    assert not torch.equal(draws['sample'](temperature).discrete, at_one.discrete)  # the temperature is not ignored
