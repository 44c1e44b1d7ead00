"""Readout forward: its table (the embed's rows plus one log-variance row per
continuous dim), logits and continuous params as dot products with the rows,
regression mode, the shapes of what it returns, the forward loss against
calculate_loss, the table-free ParameterlessReadout (a single group as wide as
its logits), the attributes downstream code reads and the options settable after
construction."""

import copy
import pickle

import pytest
import torch
import torch.nn.functional as F
from helpers import MEAN_STD, assert_frequencies
from torch.distributions import Categorical, kl_divergence

from discrete_continuous_embed_readout import DiscreteContinuous, Embed, EmbedAndReadout, ParameterlessReadout, Readout

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


TABLE_LESS_SINGLE_GROUP = {
    'Readout(dim=0, num_discrete=1)': lambda: Readout(0, num_discrete=1),
    'Readout(None, num_discrete=5)': lambda: Readout(None, num_discrete=5),
    'ParameterlessReadout(num_discrete=1)': lambda: ParameterlessReadout(num_discrete=1),
}


@pytest.mark.parametrize('build', list(TABLE_LESS_SINGLE_GROUP))
def test_a_table_less_single_group_is_as_wide_as_its_logits(build):
    # no rows fix the width, so num_discrete does not either (as in 0.2.x): a plain
    # sampler over logits computed elsewhere, here 256 wide
    readout = TABLE_LESS_SINGLE_GROUP[build]()
    p, q = torch.randn(2, 1, 256) * 2, torch.randn(2, 1, 256) * 2
    ids = torch.randint(0, 256, (2, 1))
    torch.testing.assert_close(readout.log_prob(p, ids), Categorical(logits=p).log_prob(ids))
    torch.testing.assert_close(readout.entropy(p), Categorical(logits=p).entropy())
    torch.testing.assert_close(readout.kl_div(p, q), kl_divergence(Categorical(logits=p), Categorical(logits=q)))
    torch.testing.assert_close(readout.calculate_loss(p, ids), F.cross_entropy(p.reshape(-1, 256), ids.reshape(-1)))
    torch.testing.assert_close(readout.calculate_loss(p, ids, return_unreduced_loss=True), -Categorical(logits=p).log_prob(ids))
    assert torch.equal(readout.mode(p), p.argmax(-1))
    torch.testing.assert_close(readout.get_dist(p).probs, p.softmax(-1))
    assert readout.sample(p).shape == (2, 1)
    one_hot = readout.sample(p, differentiable=True)
    assert one_hot.shape == (2, 1, 256) and torch.equal(one_hot.sum(-1), torch.ones(2, 1))
    # draws follow softmax(logits): frequencies over 6 ids
    row = torch.tensor([1.0, -0.5, 0.0, 2.0, -1.0, 0.5])
    assert_frequencies(readout.sample(row.expand(20000, 6)), row.softmax(-1), build)
    # an id past the logits' width names it
    with pytest.raises(IndexError, match='expected 0 <= id < 256'):
        readout.log_prob(p, torch.tensor([[3], [256]]))


def test_a_table_less_single_group_takes_action_masks_and_a_one_group_tuple():
    readout = ParameterlessReadout(num_discrete=1)
    logits = torch.randn(4000, 10)
    allowed = torch.arange(10) % 3 != 0
    sampled = readout.sample(logits, action_mask=allowed)
    assert allowed[sampled].all()
    masked = logits.masked_fill(~allowed, float('-inf'))
    torch.testing.assert_close(readout.entropy(logits, action_mask=allowed), Categorical(logits=masked).entropy())
    assert torch.isneginf(readout.log_prob(logits, torch.zeros(4000, dtype=torch.long), action_mask=allowed)).all()
    with pytest.raises(ValueError, match='action_mask must have a last axis of size 10'):
        readout.sample(logits, action_mask=allowed[:9])
    mixed = ParameterlessReadout(num_discrete=1, num_continuous=2)
    params = torch.randn(4000, 2, 2)
    log_probs = mixed.log_prob((logits, params), (sampled, params[..., 0]), concat=True)
    torch.testing.assert_close(log_probs[:, 0], Categorical(logits=logits).log_prob(sampled))
    kept = ParameterlessReadout(num_discrete=1, auto_squeeze_single_output=False)
    ids = torch.randint(0, 10, (4000, 1))
    torch.testing.assert_close(kept.log_prob((logits,), ids), Categorical(logits=logits).log_prob(ids[:, 0]).unsqueeze(-1))


FIXED_WIDTHS = {
    'a table': (lambda: Readout(8, num_discrete=1), {}, 'last axis of size 1'),
    'several groups': (lambda: ParameterlessReadout(num_discrete=(1, 3)), {}, r'last axis of size 4 \(groups \[1, 3\]\)'),
    'a registered selector': (lambda: ParameterlessReadout(num_discrete=4, selectors=[[[0, 2]]]), {}, 'last axis of size 2'),
    'selector_index=0 of it': (lambda: ParameterlessReadout(num_discrete=4, selectors=[[[0, 2]]]), {'selector_index': 0}, 'last axis of size 2'),
    'a runtime selector_config': (lambda: ParameterlessReadout(num_discrete=4), {'selector_config': [[1, 2, 3]]}, 'last axis of size 3'),
}


@pytest.mark.parametrize('case', list(FIXED_WIDTHS))
def test_widths_fixed_by_rows_or_groups_are_still_checked(case):
    build, call, message = FIXED_WIDTHS[case]
    readout = build()
    for method in (readout.sample, readout.entropy):
        with pytest.raises(ValueError, match=message):
            method(torch.randn(2, 1, 256), **call)


def test_attributes_downstream_projects_use():
    readout = Readout(8, num_discrete=(3, 4), num_continuous=2, continuous_mean_std=torch.ones(2, 2))
    assert readout.dim == 8 and readout.num_discrete_sets == 2 and readout.num_continuous == 2
    assert readout.has_discrete and readout.has_continuous and readout.can_norm_continuous
    assert readout.ignore_index == -1 and readout.use_parallel_multi_discrete
    selector = readout.get_selector()
    assert selector.has_discrete and selector.has_continuous
    assert readout.get_selector(selector_config=[0, 1]).has_discrete is False


# options settable after construction are checked on assignment, as the constructor checks them

BAD_OPTIONS = {
    'label_smoothing 1.5': ('label_smoothing', 1.5, ValueError, r'label_smoothing must lie in \[0, 1\), got 1.5'),
    'label_smoothing -0.1': ('label_smoothing', -0.1, ValueError, r'label_smoothing must lie in \[0, 1\)'),
    'label_smoothing nan': ('label_smoothing', float('nan'), ValueError, 'label_smoothing must be a finite number, got nan'),
    'label_smoothing string': ('label_smoothing', '0.1', TypeError, 'label_smoothing must be a finite number'),
    'z_loss_weight -1': ('z_loss_weight', -1.0, ValueError, 'z_loss_weight must be >= 0, got -1.0'),
    'z_loss_weight inf': ('z_loss_weight', float('inf'), ValueError, 'z_loss_weight must be a finite number'),
    'logit_softcap 0': ('logit_softcap', 0.0, ValueError, 'logit_softcap must be None or > 0'),
    'logit_softcap nan': ('logit_softcap', float('nan'), ValueError, 'logit_softcap must be a finite number'),
    'unimix 1': ('unimix', 1.0, ValueError, r'unimix must be a number in \[0, 1\), got 1.0'),
    'unimix nan': ('unimix', float('nan'), ValueError, r'unimix must be a number in \[0, 1\)'),
    'fused_cross_entropy int': ('fused_cross_entropy', 1, TypeError, "fused_cross_entropy must be True, False or 'auto', got int 1"),
    'use_parallel_multi_discrete None': ('use_parallel_multi_discrete', None, TypeError, 'use_parallel_multi_discrete must be a bool'),
    'ignore_index float': ('ignore_index', -1.0, TypeError, 'ignore_index must be an int or None'),
    'ignore_index bool': ('ignore_index', True, TypeError, 'ignore_index must be an int or None'),
}


@pytest.mark.parametrize('case', list(BAD_OPTIONS))
def test_an_option_set_after_construction_is_checked_as_the_constructor_checks_it(case):
    name, value, error, match = BAD_OPTIONS[case]
    readout = Readout(8, num_discrete=(5, 4))
    x, y = torch.randn(3, 8), torch.stack([torch.randint(0, 5, (3,)), torch.randint(0, 4, (3,))], -1)
    before, kept = readout(x, y), getattr(readout, name)
    with pytest.raises(error, match=match):
        setattr(readout, name, value)
    assert getattr(readout, name) == kept
    torch.testing.assert_close(readout(x, y), before)  # the loss is the one before the bad assignment
    with pytest.raises(error, match=name):  # and the constructor refuses the value too
        Readout(8, num_discrete=(5, 4), **{name: value})


def test_an_embeds_use_parallel_multi_discrete_is_checked_too():
    embed = Embed(8, num_discrete=(5, 4))
    embed.use_parallel_multi_discrete = False
    with pytest.raises(TypeError, match='use_parallel_multi_discrete must be a bool'):
        embed.use_parallel_multi_discrete = 'yes'
    assert embed.use_parallel_multi_discrete is False


def test_options_set_after_construction_take_effect():
    readout = Readout(8, num_discrete=6).double()
    x = torch.randn(5, 8, dtype=torch.float64)
    y = torch.tensor([0, 1, -100, 3, 5])
    logits = x @ readout.embeddings.weight.T
    readout.label_smoothing, readout.ignore_index = 0.1, -100
    torch.testing.assert_close(readout(x, y), F.cross_entropy(logits, y, ignore_index=-100, label_smoothing=0.1))
    readout.logit_softcap = 0.01
    capped = 0.01 * torch.tanh(logits / 0.01)
    torch.testing.assert_close(readout(x), capped)
    readout.label_smoothing, readout.logit_softcap, readout.z_loss_weight = 0, None, 2
    kept = y != -100
    ref = F.cross_entropy(logits, y, ignore_index=-100) + 2 * torch.logsumexp(logits[kept], -1).square().mean()
    torch.testing.assert_close(readout(x, y), ref)
    assert isinstance(readout.label_smoothing, float) and isinstance(readout.z_loss_weight, float)


def test_checked_options_survive_state_dict_deepcopy_pickle_and_compile():
    options = dict(label_smoothing=0.1, z_loss_weight=1e-2, logit_softcap=3.0, unimix=0.05, ignore_index=-100, fused_cross_entropy=False,
                   use_parallel_multi_discrete=False)  # fmt: skip
    readout = Readout(8, num_discrete=(5, 4), **options)
    assert list(readout.state_dict()) == list(Readout(8, num_discrete=(5, 4)).state_dict())  # options are no state
    x, y = torch.randn(3, 8), torch.stack([torch.randint(0, 5, (3,)), torch.randint(0, 4, (3,))], -1)
    for twin in (copy.deepcopy(readout), pickle.loads(pickle.dumps(readout))):
        assert {name: getattr(twin, name) for name in options} == options
        torch.testing.assert_close(twin(x, y), readout(x, y))
        with pytest.raises(ValueError, match='label_smoothing'):
            twin.label_smoothing = 2.0
    compiled = torch.compile(readout, backend='aot_eager', fullgraph=True)
    torch.testing.assert_close(compiled(x, y), readout(x, y))
    readout.label_smoothing = 0.3  # a new value reaches the compiled module (a guard, then a recompile)
    torch.testing.assert_close(compiled(x, y), readout(x, y))
    assert not torch.allclose(readout(x, y), twin(x, y))
