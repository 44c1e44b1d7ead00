"""Selectors: a registered or call-time config picks discrete groups (rows in any
order) and continuous dims of the table; the embed and the readout use exactly
those rows, normalisation uses the selected dims, registered and runtime selectors
agree, local ids are checked against their group, and invalid configs are rejected
with clear errors."""

import pytest
import torch
from helpers import MEAN_STD, build_pair
from helpers.internals import built_selector

from discrete_continuous_embed_readout import Readout

LAYOUT = dict(num_discrete=10, num_continuous=3)


CONFIG = ([[4, 1, 7], [0, 9]], [2, 0])  # 10 discrete rows, 3 continuous dims


# the configured rows


def test_embed_picks_the_configured_rows():
    embed, _ = build_pair(**LAYOUT)
    table = embed.embeddings.weight
    ids = torch.tensor([[2, 1], [0, 0]])
    values = torch.randn(2, 2)
    rows = torch.tensor([[7, 9], [4, 0]])
    expected = table[rows].sum(-2) + values @ table[[10 + 2, 10 + 0]]
    torch.testing.assert_close(embed((ids, values), selector_config=CONFIG), expected)


def test_readout_covers_exactly_the_configured_rows_in_order():
    _, readout = build_pair(**LAYOUT)
    table = readout.embeddings.weight
    x = torch.randn(5, 8)
    out = readout(x, selector_config=CONFIG)
    g0, g1 = out.discrete
    torch.testing.assert_close(g0, x @ table[[4, 1, 7]].T)
    torch.testing.assert_close(g1, x @ table[[0, 9]].T)
    torch.testing.assert_close(out.continuous[..., 0], x @ table[[12, 10]].T)  # mean rows
    torch.testing.assert_close(out.continuous[..., 1], x @ table[[15, 13]].T)  # log-var rows


def test_continuous_normalisation_uses_the_selected_dims():
    mean_std = MEAN_STD[:3]
    embed, readout = build_pair(**LAYOUT, continuous_mean_std=mean_std)
    values = torch.randn(6, 2)
    table = embed.embeddings.weight
    expected = ((values - mean_std[[2, 0], 0]) / mean_std[[2, 0], 1]) @ table[[12, 10]]
    torch.testing.assert_close(embed(values, selector_config=[2, 0]), expected)
    params = torch.randn(6, 2, 2)
    std = params[..., 1].mul(0.5).exp() * mean_std[[2, 0], 1]
    mean = params[..., 0] * mean_std[[2, 0], 1] + mean_std[[2, 0], 0]
    lp = readout.log_prob(params, values, selector_config=[2, 0])
    torch.testing.assert_close(lp, torch.distributions.Normal(mean, std).log_prob(values))


# registered and runtime selectors


def test_registered_and_runtime_selectors_agree():
    embed, readout = build_pair(**LAYOUT, selectors=[CONFIG, [[3, 5]]])
    ids, values = torch.tensor([[2, 1], [0, 0]]), torch.randn(2, 2)
    torch.testing.assert_close(embed((ids, values), selector_index=0), embed((ids, values), selector_config=CONFIG))
    x = torch.randn(2, 8)
    registered, runtime = readout(x, selector_index=0), readout(x, selector_config=CONFIG)
    torch.testing.assert_close(registered.continuous, runtime.continuous)
    sampled = readout.sample(registered, selector_index=0)
    for method in ('log_prob',):
        a = getattr(readout, method)(registered, sampled, selector_index=0, concat=True)
        b = getattr(readout, method)(runtime, sampled, selector_config=CONFIG, concat=True)
        torch.testing.assert_close(a, b)
    torch.testing.assert_close(readout.entropy(registered, selector_index=0, concat=True), readout.entropy(runtime, selector_config=CONFIG, concat=True))
    loss_a = readout(x, (ids, values), selector_index=0)
    loss_b = readout(x, (ids, values), selector_config=CONFIG)
    torch.testing.assert_close(torch.stack(loss_a), torch.stack(loss_b))
    assert readout(x, selector_index=1).shape == (2, 2)


def test_a_runtime_selector_keeps_the_squashing_of_the_head():
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


def test_selector_index_is_required_with_several_selectors():
    _, readout = build_pair(**LAYOUT, selectors=[[[0, 1]], [[2, 3]]])
    with pytest.raises(ValueError, match='selector_index is required'):
        readout(torch.randn(2, 8))
    with pytest.raises(IndexError, match='selector_index'):
        readout(torch.randn(2, 8), selector_index=2)


def test_a_single_registered_selector_is_the_default():
    embed, readout = build_pair(**LAYOUT, selector=[[5, 6, 7]])
    x = torch.randn(3, 8)
    torch.testing.assert_close(readout(x), x @ readout.embeddings.weight[[5, 6, 7]].T)
    torch.testing.assert_close(embed(torch.tensor([0, 2])), embed.embeddings.weight[[5, 7]])


def test_selector_tables_stay_out_of_the_state_dict_and_move_with_the_module():
    _, readout = build_pair(**LAYOUT, selectors=[CONFIG])
    assert set(readout.state_dict()) == {'embeddings.weight'}
    readout = readout.double()
    assert readout(torch.randn(2, 8, dtype=torch.float64)).discrete[0].dtype == torch.float64


def test_runtime_selectors_are_built_once():
    _, readout = build_pair(**LAYOUT)
    config = [[1, 2], [3]]
    first = built_selector(readout, selector_config=config)
    assert built_selector(readout, selector_config=[[1, 2], [3]]) is first


# checks


def test_local_ids_are_checked_against_the_configured_group():
    embed, readout = build_pair(**LAYOUT)
    with pytest.raises(IndexError, match='group 1'):
        embed(torch.tensor([[0, 2]]), selector_config=[[4, 1, 7], [0, 9]])
    with pytest.raises(IndexError, match='targets'):
        readout(torch.randn(1, 8), torch.tensor([3]), selector_config=[[4, 1, 7]])


@pytest.mark.parametrize(
    'config, error, match',
    [
        ([[0, 1], []], ValueError, 'must not be empty'),
        ([[0, 1, 1]], ValueError, 'repeat'),
        ([[0, 10]], IndexError, 'out of range'),
        ([0, 3], IndexError, 'out of range'),
        ([2, 2], ValueError, 'repeat'),
        ([[[0]]], TypeError, 'list\\[list\\[int\\]\\]'),
        ('abc', TypeError, 'selector_config'),
        ((None, None), ValueError, 'selects nothing'),
        (([0, 1], [[0]]), TypeError, 'selector_config\\[0\\]'),
        ([[0.5]], TypeError, 'selector_config'),
    ],
)
def test_invalid_configs_are_rejected(config, error, match):
    _, readout = build_pair(**LAYOUT)
    with pytest.raises(error, match=match):
        readout(torch.randn(2, 8), selector_config=config)


def test_invalid_registered_configs_are_rejected_at_construction():
    with pytest.raises(IndexError, match='selectors\\[1\\]'):
        build_pair(**LAYOUT, selectors=[[[0]], [[11]]])
    with pytest.raises(ValueError, match='total discrete capacity'):
        Readout(8, num_discrete=(3, 4), selectors=[[[0]]])
    with pytest.raises(ValueError, match='either selector or selectors'):
        build_pair(**LAYOUT, selector=[[0]], selectors=[[[1]]])
    with pytest.raises(ValueError, match='num_continuous = 0'):
        Readout(8, num_discrete=4, selectors=[[0, 1]])
