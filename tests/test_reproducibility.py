"""generator= makes every sample reproducible, discrete and continuous, and leaves the global RNG alone."""

import pytest
import torch

from discrete_continuous_embed_readout import ParameterlessReadout

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
