"""Log-probs, entropy and KL of the readout: shapes (a size-one batch axis kept,
``concat=True`` at any batch rank, concatenated logits of several groups), log-probs
far below the max that do not saturate, and the squashed gaussian's entropy (the
pre-tanh gaussian's by default, a Monte-Carlo estimate of the true one with
``squashed_entropy_samples``, checked against float64 quadrature)."""

import pytest
import torch
from helpers import LOG_2PI, MEAN_STD
from helpers.policy_cases import assert_close
from torch.distributions import Normal

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
