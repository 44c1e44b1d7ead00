"""state_dict, save / load, deepcopy, pickling, tying across loads, and 0.2.x checkpoints."""

import copy
import io
import pickle

import pytest
import torch

from discrete_continuous_embed_readout import EmbedAndReadout

MEAN_STD = torch.tensor([[1.0, 2.0], [0.0, 0.5], [3.0, 1.0]])
SELECTORS = [([[0, 3, 5]], [0, 2]), ([[1, 2], [4, 6, 7]], [1])]


def build(seed=0, **kwargs):
    torch.manual_seed(seed)
    return EmbedAndReadout(8, num_discrete=8, num_continuous=3, continuous_mean_std=MEAN_STD, selectors=SELECTORS, **kwargs)


def outputs(embed, readout):
    torch.manual_seed(1)
    ids, values = torch.randint(0, 2, (4, 2)), torch.randn(4, 1)
    hidden = embed((ids, values), selector_index=1)
    out = readout(hidden, selector_index=1)
    loss = readout(hidden, (ids, values), selector_index=1)
    return [hidden, *out.discrete, out.continuous, *loss]


def assert_same(a, b):
    for x, y in zip(outputs(*a), outputs(*b), strict=True):
        assert torch.equal(x, y)


def test_state_dict_holds_each_tensor_once_with_clean_keys():
    embed, readout = build()
    assert set(readout.state_dict()) == {'embeddings.weight', 'continuous_mean_std'}
    assert set(embed.state_dict()) == {'embeddings.weight', 'continuous_mean_std'}


@pytest.mark.parametrize('weight_tie', [False, True])
def test_save_and_load_reproduce_outputs_bit_for_bit(weight_tie):
    embed, readout = build(weight_tie=weight_tie)
    buffer = io.BytesIO()
    torch.save({'embed': embed.state_dict(), 'readout': readout.state_dict()}, buffer)
    buffer.seek(0)
    states = torch.load(buffer)
    fresh = build(seed=123, weight_tie=weight_tie)
    fresh[0].load_state_dict(states['embed'], strict=True)
    fresh[1].load_state_dict(states['readout'], strict=True)
    assert_same((embed, readout), fresh)
    if weight_tie:
        assert fresh[0].embeddings.weight is fresh[1].embeddings.weight


@pytest.mark.parametrize('how', ['torch.save', 'deepcopy', 'pickle'])
def test_whole_modules_survive_save_copy_and_pickle(how):
    pair = build(weight_tie=True)
    pair[1].get_selector(selector_config=[[2, 3]])  # a cached runtime selector travels too
    if how == 'torch.save':
        buffer = io.BytesIO()
        torch.save(pair, buffer)
        buffer.seek(0)
        restored = torch.load(buffer, weights_only=False)
    elif how == 'deepcopy':
        restored = copy.deepcopy(pair)
    else:
        restored = pickle.loads(pickle.dumps(pair))
    assert_same(pair, restored)
    assert restored[0].embeddings.weight is restored[1].embeddings.weight  # still tied
    assert restored[0].embeddings.weight is not pair[0].embeddings.weight


def legacy_state_dict(readout):
    """A 0.2.x checkpoint: the table repeated per selector, the normaliser as '.data' plus a copy per selector."""
    state = readout.state_dict()
    legacy = {'embeddings.weight': state['embeddings.weight'].clone(), 'continuous_mean_std.data': state['continuous_mean_std'].clone()}
    for i in range(len(SELECTORS)):
        legacy[f'selectors.{i}.discrete_selector.embeddings.weight'] = state['embeddings.weight'].clone()
        legacy[f'selectors.{i}.continuous_selector.embed.weight'] = state['embeddings.weight'].clone()
        legacy[f'selectors.{i}.continuous_mean_std.data'] = state['continuous_mean_std'].clone()
    return legacy


def test_a_0_2_checkpoint_loads_strictly_and_gives_the_same_outputs():
    embed, readout = build()
    fresh_embed, fresh_readout = build(seed=7)
    fresh_readout.load_state_dict(legacy_state_dict(readout), strict=True)
    fresh_embed.load_state_dict(legacy_state_dict(embed), strict=True)
    assert_same((embed, readout), (fresh_embed, fresh_readout))


def test_a_legacy_copy_that_disagrees_with_the_table_is_an_error():
    _, readout = build()
    legacy = legacy_state_dict(readout)
    legacy['selectors.1.discrete_selector.embeddings.weight'] += 1.0
    with pytest.raises(ValueError, match='selectors.1.discrete_selector.embeddings.weight'):
        build(seed=7)[1].load_state_dict(legacy)


def test_unknown_keys_still_fail_a_strict_load():
    _, readout = build()
    state = readout.state_dict()
    state['selectors.0.something_else'] = torch.zeros(1)
    with pytest.raises(RuntimeError, match='something_else'):
        build(seed=7)[1].load_state_dict(state, strict=True)
