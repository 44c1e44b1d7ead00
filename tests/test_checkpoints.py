"""Checkpoints and module state: state_dict, save / load, deepcopy, pickling, tying
across loads, construction on the meta device then loading, checkpoints written by
0.2.7 and 0.2.12, bound units (``continuous_range``) in the state dict, and the
checks a loaded state goes through."""

import copy
import io
import pickle
import warnings
from pathlib import Path

import pytest
import torch
from helpers import MEAN_STD, MIXED_SELECTORS, mixed_pair
from helpers.internals import selector_modules

from discrete_continuous_embed_readout import EmbedAndReadout

# state_dict, save / load, copies and pickles


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
    embed, readout = mixed_pair(seed=0)
    assert set(readout.state_dict()) == {'embeddings.weight', 'continuous_mean_std'}
    assert set(embed.state_dict()) == {'embeddings.weight', 'continuous_mean_std'}


@pytest.mark.parametrize('weight_tie', [False, True])
def test_save_and_load_reproduce_outputs_bit_for_bit(weight_tie):
    embed, readout = mixed_pair(seed=0, weight_tie=weight_tie)
    buffer = io.BytesIO()
    torch.save({'embed': embed.state_dict(), 'readout': readout.state_dict()}, buffer)
    buffer.seek(0)
    states = torch.load(buffer)
    fresh = mixed_pair(seed=123, weight_tie=weight_tie)
    fresh[0].load_state_dict(states['embed'], strict=True)
    fresh[1].load_state_dict(states['readout'], strict=True)
    assert_same((embed, readout), fresh)
    if weight_tie:
        assert fresh[0].embeddings.weight is fresh[1].embeddings.weight


@pytest.mark.parametrize('how', ['torch.save', 'deepcopy', 'pickle'])
def test_whole_modules_survive_save_copy_and_pickle(how):
    pair = mixed_pair(seed=0, weight_tie=True)
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


# construction on the meta device, then to_empty and load_state_dict


META_MODALITIES = {
    'discrete': dict(num_discrete=12, selectors=[[[0, 3, 5]], [[1, 2], [4, 6, 7, 8]]]),
    'multi-discrete': dict(num_discrete=(3, 5, 2)),
    'continuous': dict(num_continuous=4, continuous_mean_std=MEAN_STD, selectors=[[0, 2], [3, 1]]),
    'mixed': dict(num_discrete=9, num_continuous=4, continuous_squashed=True, selectors=MIXED_SELECTORS),
}


def _inputs(name, index):
    torch.manual_seed(9)
    if name == 'discrete':
        return torch.randint(0, 2, (4, 2)) if index == 1 else torch.randint(0, 3, (4,))
    if name == 'multi-discrete':
        return torch.stack([torch.randint(0, n, (4,)) for n in (3, 5, 2)], -1)
    if name == 'continuous':
        return torch.randn(4, 2)
    return (torch.randint(0, 2, (4, 2)), torch.rand(4, 1) - 0.5) if index == 1 else (torch.randint(0, 4, (4,)), torch.rand(4, 3) - 0.5)


@pytest.mark.parametrize('name', list(META_MODALITIES))
def test_meta_device_construction_then_to_empty_and_load_behaves_as_built(name):
    built = EmbedAndReadout(8, **META_MODALITIES[name])
    with torch.device('meta'):
        meta = EmbedAndReadout(8, **META_MODALITIES[name])
    for module, reference in zip(meta, built):
        module.to_empty(device='cpu')
        module.load_state_dict(reference.state_dict())
    for index in ([0, 1] if 'selectors' in META_MODALITIES[name] else [None]):
        sel = {} if index is None else {'selector_index': index}
        inp = _inputs(name, index)
        hidden = built[0](inp, **sel)
        assert torch.equal(meta[0](inp, **sel), hidden)
        out, ref = meta[1](hidden, **sel), built[1](hidden, **sel)
        for a, b in zip(*(o if isinstance(o, tuple) else (o,) for o in (out, ref))):
            for x, y in zip(*(t if isinstance(t, tuple) else (t,) for t in (a, b))):
                assert torch.equal(x, y)
        torch.testing.assert_close(meta[1](hidden, inp, **sel), built[1](hidden, inp, **sel))
    for selector in selector_modules(meta[1]):
        for name_, buffer in selector.named_buffers():
            assert ((buffer >= 0) & (buffer < 100)).all(), f'{name_} holds garbage: {buffer}'


# checkpoints written by the original 0.2.7 and 0.2.12 (tests/data/legacy/: the files
# and the script that made them with the original installed in a throwaway venv)

LEGACY = Path(__file__).resolve().parent / 'data' / 'legacy'
LEGACY_FILES = sorted(LEGACY.glob('v0_2_*/*.pt'))


def load_legacy(path):
    data = torch.load(path, weights_only=True)
    embed, readout = EmbedAndReadout(**data['kwargs'])
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter('always')
        embed.load_state_dict(data['embed_state_dict'], strict=True)
        readout.load_state_dict(data['readout_state_dict'], strict=True)
    return data, embed, readout, [str(w.message) for w in caught]


def rerun(embed, readout, inputs, case_outputs):
    """The calls the generating script made, on our modules."""
    sel = {} if inputs['selector_index'] is None else dict(selector_index=inputs['selector_index'])
    hidden, targets = inputs['hidden'], inputs['targets']
    logits, other = readout(hidden, **sel), readout(inputs['hidden_other'], **sel)
    out = dict(
        embed=embed(inputs['embed_input'], **sel),
        readout=logits,
        readout_other=other,
        loss=readout(hidden, targets, **sel),
        loss_unreduced=readout(hidden, targets, return_unreduced_loss=True, **sel),
        loss_masked=readout(hidden, targets, loss_mask=inputs['mask'], **sel),
        log_prob=readout.log_prob(logits, inputs['values'], **sel),
        entropy=readout.entropy(logits, **sel),
        kl_div=readout.kl_div(logits, other, **sel),
    )
    if 'embed_unsummed' in case_outputs:
        out['embed_unsummed'] = embed(inputs['embed_input'], sum_discrete_continuous=False, **sel)
    if 'greedy_sample' in case_outputs:
        out['greedy_sample'] = readout.sample(logits, temperature=0.0, **sel)
    if 'continuous_native_range' in case_outputs:
        target = inputs['rescale_target_range']
        out['continuous_native_range'] = readout.get_continuous_native_range(**sel)
        out['rescale_from_native'] = readout.rescale_from_native(inputs['native_values'], target, **sel)
        out['rescale_to_native'] = readout.rescale_to_native(inputs['range_values'], target, **sel)
    if 'targets_with_ignore' in inputs:
        out['loss_with_ignore'] = readout(hidden, inputs['targets_with_ignore'])
        out['loss_unreduced_with_ignore'] = readout(hidden, inputs['targets_with_ignore'], return_unreduced_loss=True)
        if 'log_prob_with_ignore' in case_outputs:
            out['log_prob_with_ignore'] = readout.log_prob(logits, inputs['targets_with_ignore'])
    if 'values_edge' in inputs:
        out['log_prob_edge'] = readout.log_prob(logits, inputs['values_edge'])
    return out


def entry_mean(unreduced, mask):
    """The masked mean over (position, entry) pairs (SPEC 12.9: 0.2.x divided by positions)."""
    per_entry = unreduced.reshape(*mask.shape, -1)
    return (per_entry * mask[..., None]).sum() / (mask.sum() * per_entry.shape[-1])


def expected_outputs(data, case):
    """The original's outputs, with the intended differences (MIGRATING.md) applied
    to them."""
    inputs, expected = data['inputs'][case], dict(data['outputs'][case])
    if isinstance(expected['loss_masked'], tuple):  # mixed: the continuous part is an entry mean
        expected['loss_masked'] = (expected['loss_masked'][0], entry_mean(expected['loss_unreduced'][1], inputs['mask']))
    elif data['kwargs'].get('num_continuous'):
        expected['loss_masked'] = entry_mean(expected['loss_unreduced'], inputs['mask'])
    if data['kwargs'].get('weight_tie'):  # 0.2.x's embed looked up its own (untied) table
        expected['embed'] = data['readout_state_dict']['embeddings.weight'][inputs['embed_input']]
    if data['version'] == '0.2.7':
        expected.pop('log_prob_edge', None)  # 0.2.7 gave -inf on the beta's bounds; 0.2.12 clips, as we do
    return inputs, expected


def assert_matches(actual, expected, where):
    if isinstance(expected, tuple) and not (isinstance(actual, tuple) and len(actual) == len(expected)):
        raise AssertionError(f'{where}: expected {len(expected)} parts, got {type(actual).__name__}')
    if isinstance(expected, tuple):
        for i, (a, e) in enumerate(zip(actual, expected)):
            assert_matches(a, e, f'{where}[{i}]')
    elif isinstance(expected, torch.Tensor):
        actual = actual.reshape(expected.shape) if actual.numel() == expected.numel() else actual  # (..., 1) unreduced losses
        torch.testing.assert_close(actual, expected, rtol=1e-5, atol=1e-5, msg=lambda m: f'{where}: {m}')
    else:
        assert actual == expected, f'{where}: {actual!r} != {expected!r}'


@pytest.mark.parametrize('path', LEGACY_FILES, ids=[f'{p.parent.name}/{p.stem}' for p in LEGACY_FILES])
def test_a_checkpoint_written_by_0_2_loads_strictly_and_reproduces_its_outputs(path):
    data, embed, readout, warned = load_legacy(path)
    for case in data['inputs']:
        inputs, expected = expected_outputs(data, case)
        actual = rerun(embed, readout, inputs, expected)
        for name, value in expected.items():
            assert_matches(actual[name], value, f'{path.parent.name}/{path.stem} {case} {name}')
    if data['kwargs'].get('weight_tie'):
        assert embed.embeddings.weight is readout.embeddings.weight
        assert any('selectors.0.discrete_selector.embeddings.weight' in w and 'dropping' in w for w in warned), warned
    else:
        assert warned == []


def test_the_legacy_fixtures_are_there():
    assert {p.parent.name for p in LEGACY_FILES} == {'v0_2_7', 'v0_2_12'}
    assert len(LEGACY_FILES) == 14


def test_a_legacy_normaliser_copy_that_disagrees_is_an_error():
    data = torch.load(LEGACY / 'v0_2_7' / 'mixed_selectors.pt', weights_only=True)
    state = dict(data['readout_state_dict'])
    state['selectors.1.continuous_selector.continuous_mean_std.data'] = state['selectors.1.continuous_selector.continuous_mean_std.data'] + 1.0
    _, readout = EmbedAndReadout(**data['kwargs'])
    with pytest.raises(ValueError, match='selectors.1.continuous_selector.continuous_mean_std.data'):
        readout.load_state_dict(state)


def test_unknown_keys_still_fail_a_strict_load():
    _, readout = mixed_pair(seed=0)
    state = readout.state_dict()
    state['selectors.0.something_else'] = torch.zeros(1)
    with pytest.raises(RuntimeError, match='something_else'):
        mixed_pair(seed=7)[1].load_state_dict(state, strict=True)


def test_a_loaded_normaliser_is_checked_as_at_construction():
    _, readout = mixed_pair(seed=0)
    state = readout.state_dict()
    state['continuous_mean_std'] = state['continuous_mean_std'].clone()
    state['continuous_mean_std'][1, 1] = -1.0
    with torch.device('meta'):
        _, meta = mixed_pair(seed=0)
    meta.to_empty(device='cpu')
    with pytest.raises(ValueError, match=r'state_dict\[continuous_mean_std\] must be finite with std \(column 1\) > 0'):
        meta.load_state_dict(state)


# bound units (continuous_range): a buffer in the state dict only when bound

BOUND = dict(num_discrete=3, num_continuous=2, continuous_squashed=True)


def test_bound_units_round_trip_through_the_state_dict():
    embed, readout = EmbedAndReadout(8, **BOUND, continuous_range=([0.0, -1.0], [5.0, 1.0]))
    assert set(readout.state_dict()) == {'embeddings.weight', 'continuous_range'}
    assert set(embed.state_dict()) == {'embeddings.weight', 'continuous_range'}
    buffer = io.BytesIO()
    torch.save(readout.state_dict(), buffer)
    buffer.seek(0)
    _, fresh = EmbedAndReadout(8, **BOUND, continuous_range=(-9.0, 9.0))  # bound, to other units: the checkpoint's replace them
    fresh.load_state_dict(torch.load(buffer), strict=True)
    assert torch.equal(fresh.continuous_range, torch.tensor([[0.0, 5.0], [-1.0, 1.0]]))
    out = readout(torch.randn(4, 8))
    torch.manual_seed(2)
    expected = readout.sample(out)
    torch.manual_seed(2)
    got = fresh.sample(out)
    assert torch.equal(got.continuous, expected.continuous) and (got.continuous[:, 0] >= 0).all() and (got.continuous[:, 0] <= 5).all()
    torch.testing.assert_close(fresh.log_prob(out, got), readout.log_prob(out, expected), rtol=0, atol=0)


def test_a_readout_without_bound_units_has_no_such_key_and_loads_older_checkpoints():
    _, readout = EmbedAndReadout(8, **BOUND)
    assert set(readout.state_dict()) == {'embeddings.weight'} and readout.continuous_range is None
    EmbedAndReadout(8, **BOUND)[1].load_state_dict(readout.state_dict(), strict=True)


def test_bound_units_in_only_one_of_checkpoint_and_module_is_a_clear_error():
    _, bound = EmbedAndReadout(8, **BOUND, continuous_range=(-2.0, 2.0))
    _, unbound = EmbedAndReadout(8, **BOUND)
    with pytest.raises(RuntimeError, match=r'Unexpected key.*"continuous_range: the checkpoint binds continuous units \(lo=\[-2.0, -2.0\], hi=\[2.0, 2.0\]\), but this module was built without continuous_range'):
        unbound.load_state_dict(bound.state_dict())
    with pytest.raises(RuntimeError, match=r'Missing key.*"continuous_range: this module binds continuous units \(continuous_range\) \(lo=\[-2.0, -2.0\], hi=\[2.0, 2.0\]\), but the checkpoint has none'):
        bound.load_state_dict(unbound.state_dict())
    # strict=False: the key is reported as torch reports it, and the module keeps its own units
    assert unbound.load_state_dict(bound.state_dict(), strict=False).unexpected_keys == ['continuous_range']
    assert unbound.continuous_range is None
    assert bound.load_state_dict(unbound.state_dict(), strict=False).missing_keys == ['continuous_range']
    assert torch.equal(bound.continuous_range, torch.tensor([[-2.0, 2.0], [-2.0, 2.0]]))


def test_a_0_2_checkpoint_into_a_module_with_bound_units_says_what_to_do():
    data = torch.load(LEGACY / 'v0_2_12' / 'mixed_squashed.pt', weights_only=True)
    assert data['kwargs']['continuous_squashed']
    _, readout = EmbedAndReadout(**data['kwargs'], continuous_range=(-2.0, 2.0))
    with pytest.raises(RuntimeError, match=r'checkpoint has none \(saved by a module built without continuous_range, or by 0.2.x\)'):
        readout.load_state_dict(data['readout_state_dict'])
    readout.load_state_dict({**data['readout_state_dict'], 'continuous_range': readout.continuous_range}, strict=True)


def test_loaded_bound_units_are_checked_as_at_construction():
    _, readout = EmbedAndReadout(8, **BOUND, continuous_range=(-2.0, 2.0))
    state = readout.state_dict()
    state['continuous_range'] = torch.tensor([[0.0, 1.0], [3.0, 3.0]])
    with torch.device('meta'):
        _, meta = EmbedAndReadout(8, **BOUND, continuous_range=(-2.0, 2.0))
    meta.to_empty(device='cpu')
    with pytest.raises(ValueError, match=r'state_dict\[continuous_range\] must be finite with lo < hi in every dim'):
        meta.load_state_dict(state)
    state['continuous_range'] = torch.tensor([[0.0, 1.0], [3.0, 4.0]])
    meta.load_state_dict(state)
    assert torch.equal(meta.continuous_range, state['continuous_range'])
