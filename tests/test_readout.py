"""Readout forward: its table (the embed's rows plus one log-variance row per
continuous dim), logits and continuous params as dot products with the rows,
regression mode, the shapes of what it returns, the forward loss against
calculate_loss, the table-free ParameterlessReadout and the attributes
downstream code reads."""

import pytest
import torch
from helpers import MEAN_STD

from discrete_continuous_embed_readout import DiscreteContinuous, EmbedAndReadout, ParameterlessReadout, Readout

# the table and the projections


def test_table_is_a_superset_of_the_embeds():
    embed, readout = EmbedAndReadout(8, num_discrete=(3, 4), num_continuous=2)
    assert embed.embeddings.weight.shape == (9, 8)
    assert readout.embeddings.weight.shape == (11, 8)  # + one log-var row per continuous dim
    assert Readout(8, num_continuous=2, continuous_log_var_embed=False).embeddings.weight.shape == (2, 8)


def test_discrete_logits_are_dot_products_with_the_rows():
    readout = Readout(8, num_discrete=30)
    x = torch.randn(2, 3, 8)
    torch.testing.assert_close(readout(x), x @ readout.embeddings.weight.T)


def test_multi_discrete_logits_split_per_group():
    readout = Readout(8, num_discrete=(3, 5, 2))
    x = torch.randn(4, 8)
    logits = readout(x)
    full = x @ readout.embeddings.weight.T
    assert isinstance(logits, tuple) and [g.shape[-1] for g in logits] == [3, 5, 2]
    torch.testing.assert_close(torch.cat(logits, -1), full)


def test_continuous_params_use_the_mean_and_log_var_rows():
    readout = Readout(8, num_discrete=4, num_continuous=3)
    x = torch.randn(2, 5, 8)
    out = readout(x)
    table = readout.embeddings.weight
    assert isinstance(out, DiscreteContinuous)
    torch.testing.assert_close(out.discrete, x @ table[:4].T)
    torch.testing.assert_close(out.continuous[..., 0], x @ table[4:7].T)
    torch.testing.assert_close(out.continuous[..., 1], x @ table[7:10].T)


# regression mode


def test_regression_mode_predicts_the_mean_only():
    readout = Readout(8, num_continuous=3, continuous_log_var_embed=False)
    x = torch.randn(6, 8)
    torch.testing.assert_close(readout(x), x @ readout.embeddings.weight.T)
    sampled = readout.sample(readout(x))
    torch.testing.assert_close(sampled, readout(x))


def test_regression_sample_is_denormalised():
    mean_std = MEAN_STD[:1]
    readout = Readout(8, num_continuous=1, continuous_log_var_embed=False, continuous_mean_std=mean_std)
    pred = readout(torch.randn(5, 8))
    mean, std = mean_std[0]
    torch.testing.assert_close(readout.sample(pred), pred * std + mean)


# what forward returns


def test_return_only_discrete_or_continuous_false_gives_a_pair():
    readout = Readout(8, num_discrete=5, return_only_discrete_or_continuous=False)
    out = readout(torch.randn(2, 8))
    assert isinstance(out, DiscreteContinuous) and out.continuous is None
    assert readout(torch.randn(2, 8), return_only_discrete_or_continuous=True).shape == (2, 5)


def test_calculate_loss_equals_forward_loss():
    readout = Readout(8, num_discrete=(3, 4), num_continuous=2)
    x = torch.randn(3, 8)
    targets = (torch.stack([torch.randint(0, 3, (3,)), torch.randint(0, 4, (3,))], -1), torch.randn(3, 2))
    forward = readout(x, targets)
    again = readout.calculate_loss(readout(x), targets)
    torch.testing.assert_close(forward.discrete, again.discrete)
    torch.testing.assert_close(forward.continuous, again.continuous)


# the parameterless readout and attributes


def test_parameterless_readout_needs_no_table():
    readout = ParameterlessReadout(num_discrete=5)
    assert readout.embeddings is None and len(list(readout.parameters())) == 0
    with pytest.raises(TypeError, match='dim'):
        ParameterlessReadout(16, num_discrete=5)
    with pytest.raises(ValueError, match='no table'):
        readout(torch.randn(2, 16))


def test_attributes_downstream_projects_use():
    readout = Readout(8, num_discrete=(3, 4), num_continuous=2, continuous_mean_std=torch.ones(2, 2))
    assert readout.dim == 8 and readout.num_discrete_sets == 2 and readout.num_continuous == 2
    assert readout.has_discrete and readout.has_continuous and readout.can_norm_continuous
    assert readout.ignore_index == -1 and readout.use_parallel_multi_discrete
    selector = readout.get_selector()
    assert selector.has_discrete and selector.has_continuous
    assert readout.get_selector(selector_config=[0, 1]).has_discrete is False
