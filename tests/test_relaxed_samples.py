"""Relaxed (Concrete) samples: ``sample(..., differentiable=True, hard=False)`` is
the soft Gumbel-softmax sample on each group's simplex, sharpening as the
temperature falls; ``hard=True`` (the default) is its straight-through one-hot
(the soft sample's argmax, with the soft sample's gradient); both multi-discrete
paths draw the same relaxed sample from one seed, with and without a mask."""

import pytest
import torch
from helpers import argmax_ids, as_dist, assert_finite_grad, discrete_readout, one_hots, random_logits
from helpers.masks import BATCH, DRAWS, MASK_CASE_IDS, MASK_CASES, cat, random_masks

from discrete_continuous_embed_readout import MultiCategorical


@pytest.mark.parametrize('temperature', [1.0, 0.5])
@pytest.mark.parametrize('sizes, parallel', MASK_CASES, ids=MASK_CASE_IDS)
def test_relaxed_sample_lies_on_each_group_simplex(sizes, parallel, temperature):
    readout = discrete_readout(sizes, parallel)
    groups = random_logits(sizes, DRAWS, scale=1.0)
    soft = readout.sample(as_dist(groups), temperature, differentiable=True, hard=False)
    assert soft.shape == (*DRAWS, sum(sizes))
    assert (soft >= 0).all()
    for w in soft.split(list(sizes), dim=-1):
        torch.testing.assert_close(w.sum(-1), torch.ones(DRAWS))
        # not one-hot in general: most rows keep mass on several actions
        assert (w.amax(-1) < 0.99).float().mean() > 0.5


@pytest.mark.parametrize('sizes, parallel', MASK_CASES, ids=MASK_CASE_IDS)
def test_relaxed_sample_sharpens_as_temperature_falls(sizes, parallel):
    readout = discrete_readout(sizes, parallel)
    dist = as_dist(random_logits(sizes, DRAWS, scale=1.0))
    peaks = []
    for temperature in (2.0, 1.0, 0.1):
        soft = readout.sample(dist, temperature, differentiable=True, hard=False)
        peaks.append(torch.stack([w.amax(-1) for w in soft.split(list(sizes), dim=-1)]).mean())
    assert peaks[0] < peaks[1] < peaks[2]


@pytest.mark.parametrize('sizes, parallel', MASK_CASES, ids=MASK_CASE_IDS)
def test_hard_is_the_default_and_straight_through_of_the_soft_sample(sizes, parallel):
    readout = discrete_readout(sizes, parallel)
    masks, base = random_masks(sizes, BATCH), random_logits(sizes, BATCH)
    weights = torch.randn(*BATCH, sum(sizes))
    results = {}
    for name, kwargs in {'default': {}, 'hard': dict(hard=True), 'soft': dict(hard=False)}.items():
        groups = [g.clone().requires_grad_() for g in base]
        torch.manual_seed(3)
        out = readout.sample(as_dist(groups), 0.7, differentiable=True, action_mask=cat(masks), **kwargs)
        (out * weights).sum().backward()
        results[name] = (out, groups)
    default, hard, soft = (results[k][0] for k in ('default', 'hard', 'soft'))
    torch.testing.assert_close(default, hard, rtol=0, atol=0)
    assert ((hard == 0) | (hard == 1)).all()
    # the hard one-hot is the soft sample's argmax, and its gradient is the soft sample's
    assert torch.equal(hard, one_hots(argmax_ids(soft, sizes), sizes))
    for g_hard, g_soft in zip(results['hard'][1], results['soft'][1]):
        assert_finite_grad(g_soft, 'soft')
        torch.testing.assert_close(g_hard.grad, g_soft.grad)


@pytest.mark.parametrize('sizes', [(4, 5, 5), (3, 7, 2)])
def test_relaxed_sample_same_seed_same_on_both_paths(sizes):
    readout = discrete_readout(sizes)
    masks = random_masks(sizes, BATCH)
    dist = as_dist(random_logits(sizes, BATCH))
    samples = []
    for parallel in (True, False):
        readout.use_parallel_multi_discrete = parallel
        for mask in (None, cat(masks)):
            torch.manual_seed(7)
            samples.append(readout.sample(dist, 0.8, differentiable=True, hard=False, action_mask=mask))
    torch.testing.assert_close(samples[0], samples[2])
    torch.testing.assert_close(samples[1], samples[3])


@pytest.mark.parametrize('sizes', [(6,), (4, 5, 5), (3, 7, 2)])
def test_multicategorical_relaxed_sample(sizes):
    groups = random_logits(sizes, BATCH)
    dist = MultiCategorical(groups[0] if len(sizes) == 1 else groups)
    soft = dist.sample(differentiable=True, hard=False)
    assert soft.shape == (*BATCH, sum(sizes))
    assert (soft >= 0).all()
    for w in soft.split(list(sizes), dim=-1):
        torch.testing.assert_close(w.sum(-1), torch.ones(BATCH))
    assert ((soft > 0) & (soft < 1)).any()
