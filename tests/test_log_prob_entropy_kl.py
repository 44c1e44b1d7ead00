"""Log-probs, entropy and KL of the readout: shapes (a size-one batch axis kept,
``concat=True`` at any batch rank, concatenated logits of several groups), values
whose leading shape broadcasts with the outputs' (as torch.distributions), log-probs
far below the max that do not saturate, and the squashed gaussian's entropy (the
pre-tanh gaussian's by default, a Monte-Carlo estimate of the true one with
``squashed_entropy_samples``, checked against float64 quadrature)."""

import pytest
import torch
from helpers import LOG_2PI, MEAN_STD, concentrations
from helpers.policy_cases import assert_close
from torch.distributions import Beta, Categorical, Normal

from discrete_continuous_embed_readout import DiscreteContinuous, ParameterlessReadout, Readout

# shapes


def test_kl_div_keeps_a_size_one_batch_axis():
    readout = ParameterlessReadout(num_discrete=7)
    p, q = torch.randn(4, 1, 7), torch.randn(4, 1, 7)
    kl = readout.kl_div(p, q)
    expected = torch.distributions.kl_divergence(torch.distributions.Categorical(logits=p), torch.distributions.Categorical(logits=q))
    assert kl.shape == (4, 1) == readout.entropy(p).shape
    torch.testing.assert_close(kl, expected)


@pytest.mark.parametrize('batch', [(), (5,), (2, 3), (2, 3, 4)])
def test_concat_works_for_any_batch_rank(batch):
    readout = ParameterlessReadout(num_discrete=4, num_continuous=3)
    dist = (torch.randn(*batch, 4), torch.randn(*batch, 3, 2))
    sampled = readout.sample(dist)
    lp = readout.log_prob(dist, sampled, concat=True)
    parts = readout.log_prob(dist, sampled)
    assert lp.shape == (*batch, 4)
    torch.testing.assert_close(lp, torch.cat((parts.discrete.unsqueeze(-1), parts.continuous), -1))


def test_entropy_and_log_prob_concat_shapes_and_values():
    readout = ParameterlessReadout(num_discrete=(3, 4), num_continuous=2)
    dist = ((torch.randn(5, 3), torch.randn(5, 4)), torch.randn(5, 2, 2))
    ent = readout.entropy(dist, concat=True)
    cat = [torch.distributions.Categorical(logits=g).entropy() for g in dist[0]]
    normal = torch.distributions.Normal(dist[1][..., 0], dist[1][..., 1].mul(0.5).exp()).entropy()
    torch.testing.assert_close(ent, torch.cat((torch.stack(cat, -1), normal), -1))


def test_concatenated_logits_are_accepted_for_several_groups():
    readout = ParameterlessReadout(num_discrete=(3, 4))
    flat = torch.randn(5, 7)
    ids = torch.stack([torch.randint(0, 3, (5,)), torch.randint(0, 4, (5,))], -1)
    torch.testing.assert_close(readout.log_prob(flat, ids), readout.log_prob(flat.split([3, 4], -1), ids))


# values broadcast against the outputs' leading shape, as torch.distributions' log_prob:
# size-1 axes expand on either side, missing leading axes are added; the group / dim axis must match

H, B, N, C, SIZES = 3, 2, 6, 2, (4, 5)
BROADCASTS = {  # (leading shape of the outputs, of the values)
    'one head against three': ((H, B, N), (1, B, N)),
    'no head axis': ((H, B, N), (B, N)),
    'three heads against one': ((1, B, N), (H, B, N)),
    'both expand': ((H, 1, N), (1, B, N)),
}


def reference_continuous(kind: str, params, values):
    """Per-dim log-density from torch.distributions, in float64, both sides expanded by hand."""
    batch = torch.broadcast_shapes(params.shape[:-2], values.shape[:-1])
    params, values = params.double().expand(*batch, C, 2), values.double().expand(*batch, C)
    if kind == 'beta':
        return Beta(*concentrations(params)).log_prob(values)
    mean, std = MEAN_STD[:C, 0].double(), MEAN_STD[:C, 1].double()
    return Normal(params[..., 0] * std + mean, params[..., 1].mul(0.5).exp() * std).log_prob(values)


@pytest.mark.parametrize('kind', ['normalised gaussian', 'beta'])
@pytest.mark.parametrize('case', list(BROADCASTS))
def test_continuous_values_broadcast_against_the_params(case, kind):
    outer, inner = BROADCASTS[case]
    options = dict(continuous_dist_type='beta') if kind == 'beta' else dict(continuous_mean_std=MEAN_STD[:C])
    readout = ParameterlessReadout(num_continuous=C, **options)
    params = torch.randn(*outer, C, 2, requires_grad=True)
    values = torch.rand(*inner, C) * 0.98 + 0.01 if kind == 'beta' else torch.randn(*inner, C) * 3
    expected = reference_continuous(kind, params.detach(), values)
    for log_prob in (readout.log_prob(params, values), readout.log_prob_continuous(params, values)):
        torch.testing.assert_close(log_prob.double(), expected, rtol=1e-5, atol=1e-5)
    # the loss is the negative log-prob over the broadcast entries, its gradient that of the expanded call
    loss = readout.calculate_loss(params, values)
    torch.testing.assert_close(loss.double(), -expected.mean(), rtol=1e-5, atol=1e-5)
    batch = torch.broadcast_shapes(outer, inner)
    by_hand = readout.calculate_loss(params.expand(*batch, C, 2), values.expand(*batch, C))
    torch.testing.assert_close(torch.autograd.grad(loss, params)[0], torch.autograd.grad(by_hand, params)[0])


@pytest.mark.parametrize('parallel', [True, False])
@pytest.mark.parametrize('case', list(BROADCASTS))
def test_discrete_ids_broadcast_against_the_logits(case, parallel):
    outer, inner = BROADCASTS[case]
    logits = [torch.randn(*outer, n) * 2 for n in SIZES]
    ids = torch.stack([torch.randint(0, n, inner) for n in SIZES], -1)
    batch = torch.broadcast_shapes(outer, inner)
    expected = torch.stack([Categorical(logits=g.expand(*batch, n)).log_prob(ids[..., i].expand(batch)) for i, (g, n) in enumerate(zip(logits, SIZES))], -1)
    readout = ParameterlessReadout(num_discrete=SIZES, use_parallel_multi_discrete=parallel)
    torch.testing.assert_close(readout.log_prob(tuple(logits), ids), expected)
    torch.testing.assert_close(readout.calculate_loss(tuple(logits), ids, return_unreduced_loss=True), -expected)
    torch.testing.assert_close(readout.calculate_loss(tuple(logits), ids), -expected.mean())
    single = ParameterlessReadout(num_discrete=SIZES[0])
    torch.testing.assert_close(single.log_prob(logits[0], ids[..., 0]), expected[..., 0])
    torch.testing.assert_close(single.calculate_loss(logits[0], ids[..., 0]), -expected[..., 0].mean())


def test_a_mixed_pair_broadcasts_each_part():
    readout = ParameterlessReadout(num_discrete=SIZES[0], num_continuous=C)
    logits, params = torch.randn(H, B, N, SIZES[0]), torch.randn(H, B, N, C, 2)
    ids, values = torch.randint(0, SIZES[0], (1, B, N)), torch.randn(1, B, N, C)
    log_prob = readout.log_prob((logits, params), (ids, values), concat=True)
    expected_d = Categorical(logits=logits).log_prob(ids.expand(H, B, N))
    expected_c = Normal(params[..., 0], params[..., 1].mul(0.5).exp()).log_prob(values.expand(H, B, N, C))
    torch.testing.assert_close(log_prob, torch.cat((expected_d.unsqueeze(-1), expected_c), -1))
    loss = readout.calculate_loss((logits, params), (ids, values))
    torch.testing.assert_close(torch.stack(tuple(loss)), torch.stack((-expected_d.mean(), -expected_c.mean())))


def test_values_that_do_not_broadcast_name_the_shapes_as_passed():
    readout = ParameterlessReadout(num_discrete=SIZES, num_continuous=C)
    logits, params = tuple(torch.randn(H, B, N, n) for n in SIZES), torch.randn(H, B, N, C, 2)
    ids, values = torch.zeros(4, B, N, 2, dtype=torch.long), torch.randn(4, B, N, C)
    with pytest.raises(ValueError, match=r'sampled must have shape \(3, 2, 6, 2\) or one that broadcasts with it \(one id per group\), got a tensor of shape \(4, 2, 6, 2\)'):
        readout.log_prob((logits, params), (ids, None))
    with pytest.raises(ValueError, match=r'sampled must have shape \(3, 2, 6, 2\) or one that broadcasts with it \(one value per continuous dim\), got a tensor of shape \(4, 2, 6, 2\)'):
        readout.log_prob((logits, params), (None, values))
    with pytest.raises(ValueError, match=r'targets must have shape \(3, 2, 6, 2\) or one that broadcasts with it .*got a tensor of shape \(1, 2, 6, 3\)'):
        readout.calculate_loss((logits, params), (None, torch.randn(1, B, N, 3)))  # the dim axis never broadcasts
    with pytest.raises(ValueError, match=r'sampled must have shape \(3, 2, 6\) or one that broadcasts with it .*got a tensor of shape \(4, 2, 6\)'):
        ParameterlessReadout(num_discrete=5).log_prob(torch.randn(H, B, N, 5), torch.zeros(4, B, N, dtype=torch.long))


def test_a_single_groups_explicit_axis_of_one_is_not_read_as_a_batch_axis():
    # (B, 1) ids for (B,) logits: the group axis kept (as MultiCategorical takes it), not a (B, B) broadcast
    readout = ParameterlessReadout(num_discrete=5)
    logits, ids = torch.randn(B, 5), torch.tensor([[1], [4]])
    torch.testing.assert_close(readout.log_prob(logits, ids), Categorical(logits=logits).log_prob(ids[:, 0]))


# log-probs far below the max


@pytest.mark.parametrize('parallel', [True, False])
def test_readout_log_probs_do_not_saturate(parallel):
    logits = torch.tensor([[0.0, -60.0, -100.0], [5.0, -80.0, 0.0]])
    readout = ParameterlessReadout(num_discrete=(3, 3), use_parallel_multi_discrete=parallel)
    lp = readout.log_prob((logits[0:1], logits[1:2]), torch.tensor([[2, 1]]))
    expected = torch.stack([logits[0].log_softmax(-1)[2], logits[1].log_softmax(-1)[1]])
    torch.testing.assert_close(lp[0], expected)
    assert lp.min() < -80


# squashed gaussian entropy


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
