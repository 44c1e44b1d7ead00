"""Embed: the table layout and init, lookups of discrete ids with their group
offsets, continuous values times their rows, normalisation and bound units (values
mapped back onto the head's native range), mixed inputs (summed,
as a pair, concatenated as tokens), weight tying and the integer id dtypes."""

import pytest
import torch
import torch.nn.functional as F
from helpers import MEAN_STD, randint_groups

from discrete_continuous_embed_readout import DiscreteContinuous, Embed, EmbedAndReadout, MultiCategorical

# table layout and lookups


def test_table_layout_and_init():
    embed = Embed(16, num_discrete=(3, 4), num_continuous=2)
    assert embed.embeddings.weight.shape == (3 + 4 + 2, 16)
    assert 0.005 < embed.embeddings.weight.std() < 0.02  # normal, std 0.01


def test_single_group_is_a_plain_lookup():
    embed = Embed(16, num_discrete=50)
    ids = torch.randint(0, 50, (2, 7))
    torch.testing.assert_close(embed(ids), F.embedding(ids, embed.embeddings.weight))


def test_multi_group_ids_use_their_group_offset():
    sizes = (3, 5, 2)
    embed = Embed(8, num_discrete=sizes)
    ids = randint_groups(sizes, (4, 6))
    rows = ids + torch.tensor([0, 3, 8])
    table = embed.embeddings.weight
    torch.testing.assert_close(embed(ids, sum_discrete_sets=False), table[rows])
    torch.testing.assert_close(embed(ids), table[rows].sum(-2))


def test_explicit_single_group_axis():
    embed, readout = EmbedAndReadout(8, num_discrete=9, explicit_single_action_dim_given=True)
    ids = torch.randint(0, 9, (4, 1))
    torch.testing.assert_close(embed(ids), embed.embeddings.weight[ids[:, 0]])
    logits = readout(embed(ids))
    assert isinstance(logits, tuple) and len(logits) == 1
    assert readout.sample(logits).shape == (4, 1)
    torch.testing.assert_close(readout.log_prob(logits, ids), logits[0].log_softmax(-1).gather(-1, ids))


# continuous values and normalisation


def test_continuous_is_value_times_row():
    embed = Embed(8, num_discrete=5, num_continuous=3)
    x = torch.randn(2, 4, 3)
    rows = embed.embeddings.weight[5:8]
    torch.testing.assert_close(embed((None, x)), torch.einsum('bnc,cd->bnd', x, rows))
    torch.testing.assert_close(embed((None, x), sum_continuous=False, return_only_discrete_or_continuous=True), x[..., None] * rows)


def test_continuous_normalisation():
    mean_std = MEAN_STD[:3]
    embed = Embed(8, num_continuous=3, continuous_mean_std=mean_std)
    x = torch.randn(5, 3)
    expected = ((x - mean_std[:, 0]) / mean_std[:, 1]) @ embed.embeddings.weight
    torch.testing.assert_close(embed(x), expected)
    torch.testing.assert_close(embed(x, normalize_continuous=True), expected)


def test_normalize_continuous_false_embeds_the_raw_values():
    mean_std = MEAN_STD[:2]
    embed = Embed(8, num_continuous=2, continuous_mean_std=mean_std)
    x = torch.randn(4, 2)
    rows = embed.embeddings.weight[:2]
    torch.testing.assert_close(embed(x, normalize_continuous=False), x @ rows)
    torch.testing.assert_close(embed(x), ((x - mean_std[:, 0]) / mean_std[:, 1]) @ rows)


@pytest.mark.parametrize('head, native', [(dict(continuous_squashed=True), (-1.0, 1.0)), (dict(continuous_dist_type='beta'), (0.0, 1.0))])
def test_values_in_bound_units_are_embedded_in_the_heads_native_range(head, native):
    """A policy that embeds its previous action gives it as sample returned it (in the
    bound units); the Embed maps it back, by hand: native = n_lo + (x - lo) / (hi - lo) * (n_hi - n_lo)."""
    lo, hi = torch.tensor([0.0, -10.0, 100.0]), torch.tensor([4.0, 10.0, 101.0])
    embed, policy = EmbedAndReadout(8, num_discrete=3, num_continuous=3, **head, continuous_range=(lo, hi))
    assert torch.equal(embed.continuous_range, policy.continuous_range)
    action = policy.sample(policy(torch.randn(6, 8)))
    n_lo, n_hi = native
    rows = embed.embeddings.weight[3:6]
    expected = (n_lo + (action.continuous.double() - lo) / (hi - lo) * (n_hi - n_lo)).float()
    assert expected.min() >= n_lo and expected.max() <= n_hi
    torch.testing.assert_close(embed((None, action.continuous)), expected @ rows)
    torch.testing.assert_close(embed(action), embed.embeddings.weight[action.discrete] + expected @ rows)
    # as given with normalize_continuous=False; a selector's dims take their own bounds
    torch.testing.assert_close(embed((None, action.continuous), normalize_continuous=False), action.continuous @ rows)
    picked = embed((None, action.continuous[:, [2, 0]]), selector_config=[2, 0], sum_continuous=False, return_only_discrete_or_continuous=True)
    torch.testing.assert_close(picked, expected[:, [2, 0], None] * rows[[2, 0]])


def test_bound_units_replace_the_normaliser_in_the_embed_as_in_the_readout():
    embed, readout = EmbedAndReadout(8, num_continuous=2, continuous_squashed=True, continuous_mean_std=MEAN_STD[:2], continuous_range=(-4.0, 4.0))
    x = torch.tensor([[-4.0, 2.0], [0.0, 4.0]])
    torch.testing.assert_close(embed(x), (x / 4.0) @ embed.embeddings.weight)
    # the readout's samples are in (-4, 4), not de-normalised: the embed reads them back the same way
    assert readout.sample(readout(torch.randn(100, 8) * 20)).abs().max() <= 4.0


def test_an_embed_with_bound_units_needs_a_bounded_head_and_normalize_true_needs_units():
    with pytest.raises(ValueError, match='continuous_range: the Gaussian head is unbounded'):
        Embed(8, num_continuous=2, continuous_range=(0.0, 1.0))
    with pytest.raises(ValueError, match='normalize_continuous=True needs continuous_mean_std or continuous_range'):
        Embed(8, num_continuous=2)(torch.randn(3, 2), normalize_continuous=True)


# mixed inputs: summed, paired, concatenated


def test_mixed_sum_pair_and_concat():
    embed = Embed(8, num_discrete=(3, 4), num_continuous=2)
    ids, x = randint_groups((3, 4), (2, 5)), torch.randn(2, 5, 2)
    table = embed.embeddings.weight
    d_tokens = table[ids + torch.tensor([0, 3])]  # (2, 5, 2, 8)
    c_tokens = x[..., None] * table[7:9]  # (2, 5, 2, 8)
    torch.testing.assert_close(embed((ids, x)), d_tokens.sum(-2) + c_tokens.sum(-2))

    pair = embed((ids, x), sum_discrete_sets=False)
    assert isinstance(pair, DiscreteContinuous)
    torch.testing.assert_close(pair.discrete, d_tokens)
    torch.testing.assert_close(pair.continuous, c_tokens.sum(-2))
    torch.testing.assert_close(embed((ids, x), sum_discrete_continuous=False).discrete, d_tokens.sum(-2))

    concat = embed((ids, x), concat_discrete_continuous=True)
    torch.testing.assert_close(concat, torch.stack((d_tokens.sum(-2), c_tokens.sum(-2)), -2))
    concat_all = embed((ids, x), concat_discrete_continuous=True, sum_discrete_sets=False, sum_continuous=False)
    torch.testing.assert_close(concat_all, torch.cat((d_tokens, c_tokens), -2))  # (2, 5, 4, 8)


def test_one_part_of_a_mixed_input():
    embed = Embed(8, num_discrete=6, num_continuous=2)
    ids = torch.randint(0, 6, (3,))
    torch.testing.assert_close(embed((ids, None)), embed.embeddings.weight[ids])
    pair = embed((ids, None), return_only_discrete_or_continuous=False)
    assert pair.continuous is None
    torch.testing.assert_close(pair.discrete, embed.embeddings.weight[ids])


@pytest.mark.parametrize('sum_sets', [True, False])
@pytest.mark.parametrize('sum_dims', [True, False])
def test_concat_keeps_the_token_axis_whichever_parts_are_given(sum_sets, sum_dims):
    embed = Embed(8, num_discrete=(3, 4), num_continuous=2)
    ids = torch.stack([torch.randint(0, 3, (5, 6)), torch.randint(0, 4, (5, 6))], -1)
    values = torch.randn(5, 6, 2)
    kw = dict(concat_discrete_continuous=True, sum_discrete_sets=sum_sets, sum_continuous=sum_dims)
    both = embed((ids, values), **kw)
    d_tokens, c_tokens = 1 if sum_sets else 2, 1 if sum_dims else 2
    assert both.shape == (5, 6, d_tokens + c_tokens, 8)
    table = embed.embeddings.weight
    per_group = table[ids + torch.tensor([0, 3])]  # (5, 6, 2, 8)
    per_dim = values[..., None] * table[7:9]  # (5, 6, 2, 8)
    torch.testing.assert_close(embed((ids, None), **kw), per_group.sum(-2, keepdim=True) if sum_sets else per_group)
    torch.testing.assert_close(embed((None, values), **kw), per_dim.sum(-2, keepdim=True) if sum_dims else per_dim)
    torch.testing.assert_close(both, torch.cat([embed((ids, None), **kw), embed((None, values), **kw)], -2))


# gradients and weight tying


@pytest.mark.parametrize('weight_tie', [False, True])
def test_gradients_reach_the_rows_used(weight_tie):
    embed, readout = EmbedAndReadout(8, num_discrete=10, num_continuous=2, weight_tie=weight_tie)
    embed((torch.tensor([2, 2, 5]), torch.randn(3, 2))).sum().backward()
    grad = embed.embeddings.weight.grad
    touched = grad.abs().sum(-1) > 0
    expected = torch.zeros(grad.shape[0], dtype=torch.bool)
    expected[[2, 5, 10, 11]] = True
    assert torch.equal(touched, expected)
    torch.testing.assert_close(grad[2], torch.full((8,), 2.0))


def test_weight_tie_makes_the_embed_read_the_trained_readout_rows():
    embed, readout = EmbedAndReadout(8, num_discrete=10, num_continuous=2, weight_tie=True)
    assert embed.embeddings.weight is readout.embeddings.weight
    opt = torch.optim.SGD({*embed.parameters(), *readout.parameters()}, lr=1.0)
    ids = torch.tensor([3, 7])
    readout(embed((ids, None)), (ids, None)).backward()
    opt.step()
    torch.testing.assert_close(embed((ids, None)), readout.embeddings.weight[ids])


# integer id dtypes


@pytest.mark.parametrize('dtype', [torch.int8, torch.uint8, torch.int16, torch.int32, torch.int64], ids=str)
def test_every_integer_id_dtype_is_accepted_everywhere(dtype):
    torch.manual_seed(10)
    embed, readout = EmbedAndReadout(8, num_discrete=(3, 5))
    ids = torch.stack([torch.randint(0, 3, (4, 6)), torch.randint(0, 5, (4, 6))], -1)
    small = ids.to(dtype)
    hidden = embed(ids)
    assert torch.equal(embed(small), hidden)
    logits = readout(hidden)
    torch.testing.assert_close(readout(hidden, small), readout(hidden, ids))
    torch.testing.assert_close(readout.log_prob(logits, small), readout.log_prob(logits, ids))
    torch.testing.assert_close(readout.calculate_loss(logits, small, return_unreduced_loss=True), -readout.log_prob(logits, ids))
    torch.testing.assert_close(MultiCategorical(list(logits)).log_prob(small), readout.log_prob(logits, ids))
    _, lm = EmbedAndReadout(8, num_discrete=7)
    y = torch.randint(0, 7, (4, 6))
    reference = F.cross_entropy(lm(hidden).reshape(-1, 7), y.reshape(-1))
    torch.testing.assert_close(lm(hidden, y.to(dtype)), reference)
    with pytest.raises(IndexError, match='id 9'):
        embed(torch.full((2, 2), 9, dtype=dtype))


# soft inputs: one-hots or probabilities over the ids, embedded as probs @ rows


def one_hots(ids, sizes):
    """(..., g) ids as their groups' one-hots concatenated (..., sum n_g)."""
    return torch.cat([F.one_hot(ids[..., g], n).float() for g, n in enumerate(sizes)], -1)


@pytest.mark.parametrize('sizes', [(7,), (3, 5, 4)], ids=['one group', 'three groups'])
@pytest.mark.parametrize('sum_sets', [True, False])
def test_one_hots_embed_exactly_as_their_ids(sizes, sum_sets):
    embed, _ = EmbedAndReadout(8, num_discrete=sizes if len(sizes) > 1 else sizes[0])
    ids = randint_groups(sizes, (2, 6))
    ids_in = ids.squeeze(-1) if len(sizes) == 1 else ids
    torch.testing.assert_close(embed(one_hots(ids, sizes), sum_discrete_sets=sum_sets), embed(ids_in, sum_discrete_sets=sum_sets), atol=1e-6, rtol=0)


def test_probabilities_are_a_weighted_sum_of_rows_with_their_gradient():
    embed, _ = EmbedAndReadout(8, num_discrete=(3, 5))
    probs = torch.cat([torch.rand(4, 3).softmax(-1), torch.rand(4, 5).softmax(-1)], -1).requires_grad_()
    out = embed(probs)
    table = embed.embeddings.weight
    torch.testing.assert_close(out, probs @ table[:8], atol=1e-6, rtol=0)
    v = torch.randn(4, 8)
    (grad,) = torch.autograd.grad((out * v).sum(), probs)
    torch.testing.assert_close(grad, v @ table[:8].T, atol=1e-6, rtol=0)  # d (p @ W) . v / d p = W v


def test_a_straight_through_sample_feeds_back_through_the_tied_table():
    embed, readout = EmbedAndReadout(8, num_discrete=(3, 5), weight_tie=True)
    logits = tuple(g.detach().requires_grad_() for g in readout(torch.randn(4, 8)))
    sample = readout.sample(logits, differentiable=True)  # (4, 3 + 5) straight-through one-hots
    ids = torch.stack([s.argmax(-1) for s in sample.split([3, 5], -1)], -1)
    out = embed(sample)
    torch.testing.assert_close(out, embed(ids), atol=1e-6, rtol=0)
    out.sum().backward()
    assert all(g.grad is not None and torch.isfinite(g.grad).all() and g.grad.abs().sum() > 0 for g in logits)
    assert embed.embeddings.weight.grad is not None


def test_soft_inputs_respect_selectors_and_mixed_pairs():
    embed, _ = EmbedAndReadout(8, num_discrete=9, num_continuous=2, selectors=[([[4, 5], [6, 7, 8]], [1])])
    ids, values = randint_groups((2, 3), (5,)), torch.randn(5, 1)
    soft = embed((one_hots(ids, (2, 3)), values), selector_index=0)
    torch.testing.assert_close(soft, embed((ids, values), selector_index=0), atol=1e-6, rtol=0)


def test_a_float_input_of_the_wrong_width_is_a_clear_error():
    embed, _ = EmbedAndReadout(8, num_discrete=(3, 5))
    with pytest.raises(ValueError, match=r'discrete input must have a last axis of size 8 .*one-hots or probabilities'):
        embed(torch.rand(4, 7))
