"""SPEC §12: each defect of the original 0.2.7, reproduced against ours."""

import pytest
import torch
import torch.nn.functional as F
from conftest import randint_groups

from discrete_continuous_embed_readout import Embed, EmbedAndReadout, MultiCategorical, ParameterlessReadout, Readout


@pytest.mark.parametrize('parallel', [True, False])
def test_01_two_group_loss_is_not_read_as_a_mixed_pair(parallel):
    embed, readout = EmbedAndReadout(16, num_discrete=(3, 4), use_parallel_multi_discrete=parallel)
    x, targets = torch.randn(2, 5, 16), randint_groups((3, 4), (2, 5))
    logits = readout(x)
    expected = torch.stack([F.cross_entropy(g.transpose(1, -1), targets[..., i], reduction='none') for i, g in enumerate(logits)], -1).mean()
    torch.testing.assert_close(readout(x, targets), expected)


def test_02_weight_tie_really_ties():
    embed, readout = EmbedAndReadout(8, num_discrete=10, num_continuous=2, weight_tie=True)
    assert embed.embeddings.weight is readout.embeddings.weight
    opt = torch.optim.SGD({*embed.parameters(), *readout.parameters()}, lr=1.0)
    ids = torch.tensor([3, 7])
    readout(embed((ids, None)), (ids, None)).backward()
    opt.step()
    torch.testing.assert_close(embed((ids, None)), readout.embeddings.weight[ids])


def test_03_mixed_sample_passes_temperature_to_the_discrete_part():
    readout = ParameterlessReadout(num_discrete=6, num_continuous=2)
    logits = torch.randn(500, 6)
    params = torch.randn(500, 2, 2)
    sampled = readout.sample((logits, params), temperature=0.0)
    assert torch.equal(sampled.discrete, logits.argmax(-1))


def test_04_kl_div_keeps_a_size_one_batch_axis():
    readout = ParameterlessReadout(num_discrete=7)
    p, q = torch.randn(4, 1, 7), torch.randn(4, 1, 7)
    kl = readout.kl_div(p, q)
    expected = torch.distributions.kl_divergence(torch.distributions.Categorical(logits=p), torch.distributions.Categorical(logits=q))
    assert kl.shape == (4, 1) == readout.entropy(p).shape
    torch.testing.assert_close(kl, expected)


@pytest.mark.parametrize('parallel', [True, False])
def test_05_log_probs_do_not_saturate(parallel):
    logits = torch.tensor([[0.0, -60.0, -100.0], [5.0, -80.0, 0.0]])
    readout = ParameterlessReadout(num_discrete=(3, 3), use_parallel_multi_discrete=parallel)
    lp = readout.log_prob((logits[0:1], logits[1:2]), torch.tensor([[2, 1]]))
    expected = torch.stack([logits[0].log_softmax(-1)[2], logits[1].log_softmax(-1)[1]])
    torch.testing.assert_close(lp[0], expected)
    assert lp.min() < -80


@pytest.mark.parametrize('batch', [(), (5,), (2, 3), (2, 3, 4)])
def test_06_concat_works_for_any_batch_rank(batch):
    readout = ParameterlessReadout(num_discrete=4, num_continuous=3)
    dist = (torch.randn(*batch, 4), torch.randn(*batch, 3, 2))
    sampled = readout.sample(dist)
    lp = readout.log_prob(dist, sampled, concat=True)
    parts = readout.log_prob(dist, sampled)
    assert lp.shape == (*batch, 4)
    torch.testing.assert_close(lp, torch.cat((parts.discrete.unsqueeze(-1), parts.continuous), -1))


def test_07_normalize_continuous_false_is_honoured():
    mean_std = torch.tensor([[1.0, 2.0], [-3.0, 0.5]])
    embed = Embed(8, num_continuous=2, continuous_mean_std=mean_std)
    x = torch.randn(4, 2)
    rows = embed.embeddings.weight[:2]
    torch.testing.assert_close(embed(x, normalize_continuous=False), x @ rows)
    torch.testing.assert_close(embed(x), ((x - mean_std[:, 0]) / mean_std[:, 1]) @ rows)


def test_08_runtime_selector_keeps_squashing():
    config = [0, 2]
    registered = Readout(8, num_continuous=3, continuous_squashed=True, selectors=[config])
    x = torch.randn(2000, 8) * 50
    params = registered(x, selector_config=config)
    sampled = registered.sample(params, selector_config=config)
    assert sampled.abs().max() < 1
    value = torch.rand(2000, 2) * 1.8 - 0.9
    lp_runtime = registered.log_prob(params, value, selector_config=config)
    lp_registered = registered.log_prob(params, value, selector_index=0)
    u = torch.atanh(value)
    normal = torch.distributions.Normal(params[..., 0], params[..., 1].mul(0.5).exp())
    torch.testing.assert_close(lp_runtime, normal.log_prob(u) - torch.log1p(-value**2))
    torch.testing.assert_close(lp_runtime, lp_registered)


def test_09_masked_means_are_over_entries():
    readout = ParameterlessReadout(num_continuous=3)
    params, targets = torch.randn(4, 3, 2), torch.randn(4, 3)
    mask = torch.tensor([True, False, True, False])
    nll = -torch.distributions.Normal(params[..., 0], params[..., 1].mul(0.5).exp()).log_prob(targets)
    loss = readout.calculate_loss(params, targets, mask=mask)
    torch.testing.assert_close(loss, nll[mask].mean())


def test_10_ignore_index_none_works_on_the_sequential_path():
    readout = ParameterlessReadout(num_discrete=(3, 5), ignore_index=None, use_parallel_multi_discrete=False)
    logits = (torch.randn(4, 3), torch.randn(4, 5))
    targets = randint_groups((3, 5), (4,))
    mask = torch.tensor([True, True, False, True])
    ce = torch.stack([F.cross_entropy(g, targets[:, i], reduction='none') for i, g in enumerate(logits)], -1)
    torch.testing.assert_close(readout.calculate_loss(logits, targets, mask=mask), ce[mask].mean())


def test_11_differentiable_sample_at_temperature_zero_is_the_argmax_one_hot():
    logits = torch.randn(6, 5, requires_grad=True)
    one_hot = ParameterlessReadout(num_discrete=5).sample(logits, temperature=0.0, differentiable=True)
    assert torch.equal(one_hot.detach(), F.one_hot(logits.argmax(-1), 5).float())
    (one_hot * torch.randn(6, 5)).sum().backward()
    assert torch.isfinite(logits.grad).all() and logits.grad.abs().sum() > 0


@pytest.mark.parametrize('parallel', [True, False])
@pytest.mark.parametrize('sizes', [(7,), (3, 4, 2)])
def test_12_unreduced_loss_has_the_log_prob_shape(parallel, sizes):
    num_discrete = sizes[0] if len(sizes) == 1 else sizes
    readout = ParameterlessReadout(num_discrete=num_discrete, use_parallel_multi_discrete=parallel)
    logits = tuple(torch.randn(2, 3, n) for n in sizes)
    logits = logits[0] if len(sizes) == 1 else logits
    targets = randint_groups(sizes, (2, 3))
    targets = targets[..., 0] if len(sizes) == 1 else targets
    unreduced = readout.calculate_loss(logits, targets, return_unreduced_loss=True)
    torch.testing.assert_close(unreduced, -readout.log_prob(logits, targets))


@pytest.mark.parametrize('bad', [-1, -3, 3, 7])
def test_13_out_of_range_ids_are_errors(bad):
    embed, readout = EmbedAndReadout(8, num_discrete=(3, 4))
    ids = torch.tensor([[0, 1], [bad, 0]])
    with pytest.raises(IndexError, match='discrete input'):
        embed(ids)
    targets = torch.tensor([[0, 1], [bad if bad != -1 else -2, 0]])  # -1 is the ignore_index
    with pytest.raises(IndexError, match='targets'):
        readout(torch.randn(2, 8), targets)


def test_13_an_id_past_its_group_does_not_read_the_next_group():
    # id 3 of group 0 (size 3) would be row 3, group 1's id 0: it must be refused
    embed = Embed(8, num_discrete=(3, 4))
    with pytest.raises(IndexError, match='group 0'):
        embed(torch.tensor([[3, 0]]))
    mc = MultiCategorical([torch.randn(2, 3), torch.randn(2, 4)])
    with pytest.raises(IndexError, match='group 1'):
        mc.log_prob(torch.tensor([[0, 4], [1, 1]]))


def test_14_kumaraswamy_samples_are_clipped():
    readout = ParameterlessReadout(num_continuous=1, continuous_dist_type='kumaraswamy', continuous_dist_kwargs=dict(clip_eps=1e-3))
    # concentrations near 0 push samples onto 0 and 1 in float32
    params = torch.full((20000, 1, 2), -30.0)
    sampled = readout.sample(params)
    assert sampled.min() >= 1e-3 and sampled.max() <= 1 - 1e-3
    assert torch.isfinite(readout.log_prob(params, sampled)).all()
