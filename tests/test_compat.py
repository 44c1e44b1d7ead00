"""Compatibility with 0.2.x: code written against 0.2.7 ... 0.2.12 runs unchanged
(SPEC section 13), in the order of that section: the old module path (its names
and its re-exports), the 0.2.x Readout methods, the selector objects, the
conventions. Values are checked against torch itself (``F.log_softmax``,
``torch.distributions``) or against our new-style calls, which the rest of the
suite checks against torch."""

import math
import warnings

import pytest
import torch
import torch.nn.functional as F
from helpers import MEAN_STD, MIXED_SELECTORS, mixed_pair
from helpers.internals import built_selector
from torch.distributions import Beta, Categorical, Normal

import discrete_continuous_embed_readout as package
from discrete_continuous_embed_readout import EmbedAndReadout, ParameterlessReadout, Readout
from discrete_continuous_embed_readout import discrete_continuous_embed_readout as legacy


def close(a, b, tol=1e-5):
    torch.testing.assert_close(a, b, rtol=tol, atol=tol)


# the module path: every public name of 0.2.12's module

LEGACY_NAMES = (
    'Base BufferModule ContinuousDistribution Gaussian BetaDist KumaraswamyDist DiscreteSelector ContinuousSelector '
    'DiscreteContinuousSelector MultiCategorical Embed Readout EmbedAndReadout ParameterlessReadout DiscreteContinuous '
    'CONTINUOUS_DISTRIBUTIONS exists default identity first compact flatten is_unique xnor cast_tuple safe_cat cat_with_lens '
    'exclusive_cumsum tree_map_tensor log atanh softclamp max_neg_value calc_entropy rescale assert_valid_range gumbel_noise '
    'gumbel_sample gumbel_sample_multi_categorical segmented_softmax rearrange repeat reduce'
).split()


@pytest.mark.parametrize('name', LEGACY_NAMES)
def test_every_0_2_name_imports_from_the_old_module_path(name):
    assert hasattr(legacy, name)
    exec(f'from discrete_continuous_embed_readout.discrete_continuous_embed_readout import {name}', {})


def test_original_module_path_reexports():
    from discrete_continuous_embed_readout.discrete_continuous_embed_readout import (
        CONTINUOUS_DISTRIBUTIONS,
        ContinuousDistribution,
        DiscreteContinuous,
        Embed,
        EmbedAndReadout,
        MultiCategorical,
        Readout,
        exists,
        segmented_softmax,
    )

    assert exists(0) and not exists(None)
    assert issubclass(CONTINUOUS_DISTRIBUTIONS['gaussian'], ContinuousDistribution)
    assert DiscreteContinuous(1, 2).continuous == 2
    assert {Embed, EmbedAndReadout, MultiCategorical, Readout}
    flat, lengths = torch.randn(4, 9), [2, 3, 4]
    expected = torch.cat([s.softmax(-1) for s in flat.split(lengths, -1)], -1)
    torch.testing.assert_close(segmented_softmax(flat, lengths), expected)
    torch.testing.assert_close(segmented_softmax(flat, torch.tensor(lengths)), expected)


def test_the_legacy_names_stay_out_of_the_top_level():
    only_legacy = {'Base', 'BufferModule', 'BetaDist', 'KumaraswamyDist', 'DiscreteSelector', 'ContinuousSelector', 'DiscreteContinuousSelector',
                   'first', 'compact', 'flatten', 'rescale', 'gumbel_sample', 'log', 'atanh', 'rearrange'}  # fmt: skip
    assert not only_legacy & set(package.__all__)
    assert not any(hasattr(package, n) for n in only_legacy)


def test_old_class_names_are_our_classes():
    assert legacy.BetaDist is legacy.BetaDistribution and legacy.KumaraswamyDist is legacy.KumaraswamyDistribution
    assert legacy.CONTINUOUS_DISTRIBUTIONS['beta'] is legacy.BetaDist
    assert legacy.Embed is package.Embed and legacy.Readout is package.Readout and legacy.MultiCategorical is package.MultiCategorical
    assert isinstance(Readout(8, num_discrete=3), legacy.Base) and isinstance(package.Embed(8, num_discrete=3), legacy.Base)


def test_the_remaining_classes_and_einops_functions_behave_as_in_0_2():
    import einops

    assert legacy.rearrange is einops.rearrange and legacy.repeat is einops.repeat and legacy.reduce is einops.reduce
    pair = legacy.DiscreteContinuous(1, 2)
    assert pair.discrete == 1 and pair.continuous == 2 and tuple(pair) == (1, 2)
    params = torch.tensor([[0.5, 3.0], [-1.0, -30.0]])
    gaussian = legacy.Gaussian(log_var_clamp_range=(-4.0, 2.0))
    log_var = -4.0 + (torch.tanh(params[:, 1] / 6.0) + 1) / 2 * 6.0  # SPEC 6: the 0.2.x soft clamp
    normal = gaussian.dist(params)
    close(normal.loc, params[:, 0])
    close(normal.scale, (0.5 * log_var).exp())
    assert gaussian.default_range is None and legacy.ContinuousDistribution().default_range is None
    parameterless = legacy.ParameterlessReadout(num_discrete=4)
    logits = torch.randn(3, 4)
    close(parameterless.log_prob(logits, torch.tensor([0, 1, 3])), F.log_softmax(logits, -1)[torch.arange(3), torch.tensor([0, 1, 3])])


def test_bounded_heads_take_0_2_arguments_in_0_2_order():
    # 0.2.12: BetaDist(unimodal=False, eps=1e-6, clip=True, clip_eps=1e-5)
    head = legacy.BetaDist(True, 1e-3, False, 0.01)
    assert (head.unimodal, head.eps, head.clip, head.clip_eps) == (True, 1e-3, False, 0.01)
    head = legacy.KumaraswamyDist(clip_eps=0.1)
    params = torch.randn(500, 2) * 4
    drawn = head(params)  # 0.2.12's forward returns clipped samples
    assert drawn.min() >= 0.1 and drawn.max() <= 0.9
    assert legacy.ContinuousDistribution().clip_sampled(params) is params


def test_helpers_compute_what_their_names_say():
    t = torch.tensor([0.5, -0.25, 0.0])
    assert legacy.exists(0) and not legacy.exists(None) and legacy.default(None, 3) == 3 and legacy.identity(t) is t
    assert legacy.first([4, 5]) == 4 and legacy.compact([1, None, 2]) == [1, 2] and legacy.flatten([[1, 2], [3]]) == [1, 2, 3]
    assert legacy.is_unique([1, 2]) and not legacy.is_unique([1, 1]) and legacy.xnor(True, True) and not legacy.xnor(True, False)
    assert legacy.cast_tuple(3) == (3,) and legacy.cast_tuple((3, 4)) == (3, 4) and legacy.cast_tuple([3, 4]) == ([3, 4],)
    assert torch.equal(legacy.exclusive_cumsum([3, 5, 2]), torch.tensor([0, 3, 8]))
    assert torch.equal(legacy.exclusive_cumsum(torch.tensor([1, 1, 4])), torch.tensor([0, 1, 2]))
    a, b = torch.randn(2, 3), torch.randn(2, 4)
    assert torch.equal(legacy.safe_cat([a, None, a]), torch.cat([a, a])) and legacy.safe_cat([None]) is None and legacy.safe_cat([a]) is a
    catted, lens = legacy.cat_with_lens([a, b])
    assert torch.equal(catted, torch.cat([a, b], -1)) and lens.tolist() == [3, 4]
    assert legacy.tree_map_tensor({'x': (a, 1)}, lambda x: x * 2)['x'][1] == 1
    close(legacy.tree_map_tensor({'x': (a, 1)}, lambda x: x * 2)['x'][0], a * 2)
    close(legacy.log(torch.tensor([0.0, math.e])), torch.tensor([math.log(1e-20), 1.0]))
    close(legacy.atanh(t), torch.atanh(t))
    close(legacy.softclamp(torch.tensor([3.0]), 2.0), torch.tensor([2 * math.tanh(1.5)]))
    assert legacy.max_neg_value(torch.zeros(1, dtype=torch.float16)) == -65504.0
    close(legacy.calc_entropy(b), -(b.softmax(-1) * b.log_softmax(-1)).sum(-1))
    close(legacy.rescale(torch.tensor([0.0, 0.5, 1.0]), (0.0, 1.0), (-2.0, 2.0)), torch.tensor([-2.0, 0.0, 2.0]))
    assert legacy.assert_valid_range((0.0, 1.0)) == (0.0, 1.0)
    with pytest.raises(ValueError, match='lo < hi'):
        legacy.assert_valid_range((1.0, 0.0))
    close(legacy.segmented_softmax(torch.cat([a, b], -1), torch.tensor([3, 4])), torch.cat([a.softmax(-1), b.softmax(-1)], -1))


def test_gumbel_helpers_draw_from_the_softmax():
    logits = torch.tensor([0.0, 1.0, 2.0]).log_softmax(-1)
    noise = legacy.gumbel_noise(torch.zeros(200_000, dtype=torch.bfloat16))
    assert noise.dtype == torch.float32  # drawn in float32 even for half inputs
    close(noise.mean(), torch.tensor(0.5772), tol=0.01)  # Euler-Mascheroni: the Gumbel mean
    draws = legacy.gumbel_sample(logits.expand(60_000, 3))
    close(torch.bincount(draws, minlength=3) / 60_000.0, logits.exp(), tol=0.01)
    assert torch.equal(legacy.gumbel_sample(logits.expand(2, 3), temperature=0.0), torch.tensor([2, 2]))
    one_hot = legacy.gumbel_sample(logits.expand(2, 3), differentiable=True)
    assert one_hot.shape == (2, 3) and torch.equal(one_hot.sum(-1), torch.ones(2))
    groups = [torch.tensor([5.0, -5.0]).expand(4, 2), torch.tensor([-5.0, -5.0, 5.0]).expand(4, 3)]
    assert torch.equal(legacy.gumbel_sample_multi_categorical(groups, temperature=0.0), torch.tensor([[0, 2]] * 4))
    assert legacy.gumbel_sample_multi_categorical(groups, differentiable=True).shape == (4, 5)


def test_buffer_module_holds_its_tensor_as_data():
    module = legacy.BufferModule(MEAN_STD)
    assert torch.equal(module.data, MEAN_STD) and set(module.state_dict()) == {'data'}


# the 0.2.x Readout methods agree with the new-style calls


def test_discrete_methods_agree_with_torch_and_the_new_calls():
    _, readout = EmbedAndReadout(8, num_discrete=(3, 5))
    logits, other = readout(torch.randn(4, 6, 8)), readout(torch.randn(4, 6, 8))
    ids = readout.sample(logits)
    reference = torch.stack([F.log_softmax(g, -1).gather(-1, ids[..., i : i + 1]).squeeze(-1) for i, g in enumerate(logits)], -1)
    close(readout.log_prob_discrete(logits, ids), reference)
    close(readout.log_prob_discrete(logits, ids), readout.log_prob(logits, ids))
    close(readout.entropy_discrete(logits), readout.entropy(logits))
    close(readout.kl_div_discrete(logits, other), readout.kl_div(logits, other))
    close(readout.kl_div_discrete(logits, other)[..., 1], F.kl_div(other[1].log_softmax(-1), logits[1].log_softmax(-1), log_target=True, reduction='none').sum(-1))
    one = Readout(8, num_discrete=7)
    single = one(torch.randn(4, 8))
    assert one.kl_div_discrete(single, single).shape == (4,) and one.entropy_discrete(single).shape == (4,)


def test_sample_discrete_takes_the_0_2_argument_names():
    _, readout = EmbedAndReadout(8, num_discrete=5)
    logits = torch.tensor([[0.0, 9.0, 0.0, 0.0, 0.0]])
    top1 = readout.sample_discrete(discrete_logits=logits, temperature=0.0, filter_fn=lambda t, k: t.topk(k).values.expand_as(t), filter_kwargs=dict(k=1))
    assert top1.shape == (1,)


@pytest.mark.parametrize('selector_index', [0, 1])
def test_continuous_methods_agree_with_the_new_calls(selector_index):
    _, readout = mixed_pair()
    selector = readout.get_selector(selector_index)
    hidden = torch.randn(3, 5, 8)
    dist, other = readout(hidden, selector_index=selector_index), readout(torch.randn(3, 5, 8), selector_index=selector_index)
    params = dist.continuous
    values = readout.sample(dist, selector_index=selector_index).continuous
    new = dict(selector_index=selector_index)
    close(readout.log_prob_continuous(params, values, selector=selector), readout.log_prob((None, params), (None, values), **new))
    close(readout.entropy_continuous(params, selector=selector), readout.entropy(dist, **new).continuous)
    close(readout.kl_div_continuous(params, other.continuous, selector=selector), readout.kl_div(dist, other, **new).continuous)
    # independent: the normal density in original units, log N(x; m * s + mu, exp(lv / 2) * s)
    mean, std = MEAN_STD[list(MIXED_SELECTORS[selector_index][1])].unbind(-1)
    normal = Normal(params[..., 0] * std + mean, (0.5 * params[..., 1]).exp() * std)
    close(readout.log_prob_continuous(params, values, selector=selector), normal.log_prob(values))
    close(readout.entropy_continuous(params, selector=selector), normal.entropy())
    torch.manual_seed(11)
    old = readout.sample_continuous(params, temperature=0.5, selector=selector)
    torch.manual_seed(11)
    close(old, readout.sample((None, params), temperature=0.5, **new))


def test_selector_none_means_the_default_selector():
    _, readout = EmbedAndReadout(8, num_continuous=2, continuous_squashed=True)
    params = readout(torch.randn(6, 8))
    values = readout.sample(params)
    close(readout.log_prob_continuous(params, values), readout.log_prob(params, values))
    close(readout.log_prob_continuous(params, values, readout.get_selector()), readout.log_prob(params, values))
    torch.manual_seed(3)
    first = readout.sample_continuous(params, rescale_range=(-2.0, 2.0))
    torch.manual_seed(3)
    close(first, readout.sample(params, rescale_range=(-2.0, 2.0)))
    assert first.abs().max() < 2.0


def test_soft_validate_range_clamps_into_the_native_range():
    readout = ParameterlessReadout(num_continuous=2, continuous_dist_type='beta')
    params = torch.randn(3, 2, 2)
    values = torch.tensor([[0.3, 1.7], [-0.2, 0.5], [1.0, 0.0]])
    eps = readout.eps
    expected = readout.log_prob_continuous(params, values.clamp(eps, 1 - eps))
    close(readout.log_prob_continuous(params, values, soft_validate_range=True), expected)
    close(readout.log_prob(params, values, soft_validate_range=True), expected)
    a, b = (F.softplus(params) + eps).unbind(-1)
    close(expected, torch.distributions.Beta(a, b).log_prob(values.clamp(max(eps, 1e-5), 1 - 1e-5)), tol=1e-4)


def test_a_temperature_the_head_cannot_honour_warns_once_and_never_raises():
    readout = ParameterlessReadout(num_continuous=2, continuous_dist_type='kumaraswamy')
    params = torch.randn(5, 2, 2)
    with pytest.warns(UserWarning, match='temperature=0.7 is ignored'):
        torch.manual_seed(0)
        tempered = readout.sample_continuous(params, temperature=0.7)
    with warnings.catch_warnings():
        warnings.simplefilter('error')
        readout.sample_continuous(params, temperature=0.7)
    torch.manual_seed(0)
    close(tempered, readout.sample_continuous(params))


def test_methods_reject_a_selector_of_another_kind():
    _, readout = EmbedAndReadout(8, num_continuous=2)
    with pytest.raises(TypeError, match='selector must be what get_selector'):
        readout.log_prob_continuous(torch.randn(2, 2, 2), torch.randn(2, 2), selector=[0, 1])
    _, other = EmbedAndReadout(8, num_continuous=5)
    with pytest.raises(ValueError, match='another table layout'):
        readout.entropy_continuous(torch.randn(2, 2, 2), selector=other.get_selector())
    _, discrete = EmbedAndReadout(8, num_discrete=3)
    with pytest.raises(ValueError, match='no continuous part'):
        discrete.sample_continuous(torch.randn(2, 1, 2))


# selector objects


@pytest.mark.parametrize('module_index', [0, 1])
def test_selector_objects_carry_the_0_2_attributes(module_index):
    module = mixed_pair()[module_index]
    is_readout = module_index == 1
    selector = module.get_selector(1)
    table = module.embeddings.weight
    assert isinstance(selector, legacy.DiscreteContinuousSelector)
    assert selector.has_discrete and selector.has_continuous and not selector.one_of_discrete_or_continuous
    assert selector.continuous_squashed is False and selector.continuous_log_var_embed is is_readout
    assert selector.discrete_indices.tolist() == [4, 5, 6, 7, 8]
    assert torch.equal(selector.continuous_mean_std.data, MEAN_STD[[3]])
    part = selector.discrete_selector
    assert part.num_discrete_sets == 2 and part.discrete_set_lens.tolist() == [2, 3] and part.discrete_set_offsets.tolist() == [0, 2]
    assert torch.equal(part.get_readout_embeds(), table[[4, 5, 6, 7, 8]])
    split = part.split_packed(torch.arange(10.0).expand(2, 10)[..., :5])
    assert [s.tolist()[0] for s in split] == [[0.0, 1.0], [2.0, 3.0, 4.0]]
    close(part.embed(torch.tensor([[1, 2]])), table[torch.tensor([[5, 8]])])
    rows = [9 + 3, 9 + 4 + 3] if is_readout else [9 + 3]
    assert selector.continuous_selector.continuous_indices.tolist() == rows
    assert torch.equal(selector.continuous_selector.get_embed(), table[rows])
    assert module.get_selector(0).discrete_selector.num_discrete_sets == 1
    assert module.get_selector(selector_config=[[2, 0]]).continuous_selector is None


def test_created_selectors_decide_their_own_squashing():
    _, readout = EmbedAndReadout(8, num_continuous=3)
    squashed = readout.create_discrete_continuous_selector(continuous_indices=[0, 2], continuous_squashed=True)
    assert squashed.continuous_squashed and squashed.num_continuous == 2
    params = torch.randn(4000, 2, 2) * 3
    drawn = readout.sample_continuous(params, selector=squashed)
    assert drawn.abs().max() < 1.0
    u = torch.atanh(drawn.double())
    mean, log_var = params.double().unbind(-1)
    reference = Normal(mean, (0.5 * log_var).exp()).log_prob(u) - torch.log1p(-drawn.double() ** 2)
    close(readout.log_prob_continuous(params, drawn, selector=squashed).double(), reference, tol=1e-3)
    plain = readout.create_discrete_continuous_selector(continuous_indices=[1])
    assert not plain.continuous_squashed
    _, beta = EmbedAndReadout(8, num_continuous=2, continuous_dist_type='beta')
    with pytest.raises(ValueError, match='gaussian head'):
        beta.create_discrete_continuous_selector(continuous_indices=[0], continuous_squashed=True)
    with pytest.raises(TypeError, match='discrete_indices must be a list of lists'):
        beta.create_discrete_continuous_selector(discrete_indices=[0, 1])


@pytest.mark.parametrize('how', ['selector_index', 'selector_config'])
def test_rescale_helpers_take_a_selector_which_decides_the_native_range(how):
    _, squashed = EmbedAndReadout(8, num_continuous=3, continuous_squashed=True, selectors=[[0, 1], [2]])
    kw = dict(selector_index=1) if how == 'selector_index' else dict(selector_config=[2, 0])
    assert squashed.get_continuous_native_range(**kw) == (-1.0, 1.0)
    t = torch.tensor([[-1.0, 0.0, 1.0]]).T
    close(squashed.rescale_from_native(t, (0.0, 10.0), **kw), torch.tensor([[0.0, 5.0, 10.0]]).T)
    close(squashed.rescale_to_native(torch.tensor([[0.0, 5.0, 10.0]]).T, (0.0, 10.0), **kw), t)
    _, beta = EmbedAndReadout(8, num_continuous=3, continuous_dist_type='beta', selectors=[[0, 1], [2]])
    assert beta.get_continuous_native_range(**kw) == (0.0, 1.0)
    close(beta.rescale_from_native(torch.tensor([[0.25]]), (-2.0, 2.0), **kw), torch.tensor([[-1.0]]))


# conventions


def test_selector_index_zero_without_selectors_is_the_default_selector():
    embed, readout = EmbedAndReadout(8, num_discrete=5, num_continuous=2)
    ids, values = torch.randint(0, 5, (3,)), torch.randn(3, 2)
    hidden = embed((ids, values), selector_index=0)
    assert torch.equal(hidden, embed((ids, values)))
    out = readout(hidden, selector_index=0)
    close(readout(hidden, (ids, values), selector_index=0).discrete, F.cross_entropy(out.discrete, ids))
    assert built_selector(readout, 0) is built_selector(readout)
    with pytest.raises(IndexError, match='only 0, the default selector'):
        readout(hidden, selector_index=1)


def test_two_element_lists_are_pairs():
    embed, readout = EmbedAndReadout(8, num_discrete=5, num_continuous=2)
    ids, values = torch.randint(0, 5, (3,)), torch.randn(3, 2)
    hidden = embed([ids, values])
    out = readout(hidden)
    as_list = [out.discrete, out.continuous]
    loss = readout(hidden, [ids, values])
    close(loss.discrete, F.cross_entropy(out.discrete, ids))
    close(readout.calculate_loss(as_list, [ids, values]).continuous, loss.continuous)
    sampled = readout.sample(as_list)
    close(readout.log_prob(as_list, [sampled.discrete, sampled.continuous]).continuous, readout.log_prob(out, sampled).continuous)


def test_a_single_modality_with_return_only_false_still_returns_bare_results():
    embed, readout = EmbedAndReadout(8, num_discrete=7, return_only_discrete_or_continuous=False)
    hidden, targets = torch.randn(2, 3, 8), torch.randint(0, 7, (2, 3))
    logits, none = readout(hidden)
    assert none is None and logits.shape == (2, 3, 7)
    loss = readout(hidden, targets)
    assert isinstance(loss, torch.Tensor) and loss.ndim == 0
    close(loss, F.cross_entropy(logits.reshape(-1, 7), targets.reshape(-1)))
    sampled = readout.sample(logits)
    assert isinstance(sampled, torch.Tensor) and sampled.shape == (2, 3)
    close(readout.log_prob(logits, sampled), F.log_softmax(logits, -1).gather(-1, sampled[..., None]).squeeze(-1))
    assert isinstance(readout.entropy(logits), torch.Tensor) and isinstance(readout.kl_div(logits, logits), torch.Tensor)


def test_auto_squeeze_single_output_false_keeps_the_group_axis():
    _, readout = EmbedAndReadout(8, num_discrete=7, readout_kwargs=dict(auto_squeeze_single_output=False))
    hidden = torch.randn(2, 3, 8)
    logits = readout(hidden)
    assert isinstance(logits, tuple) and len(logits) == 1 and logits[0].shape == (2, 3, 7)
    sampled = readout.sample(logits)
    assert sampled.shape == (2, 3, 1)
    close(readout.log_prob(logits, sampled), F.log_softmax(logits[0], -1).gather(-1, sampled))
    assert readout.entropy(logits).shape == (2, 3, 1)
    close(readout(hidden, sampled), -F.log_softmax(logits[0], -1).gather(-1, sampled).mean())


def test_concat_with_one_discrete_group_gives_one_column():
    _, readout = EmbedAndReadout(8, num_discrete=7)
    logits = readout(torch.randn(2, 3, 8))
    sampled = readout.sample(logits)
    joined = readout.log_prob(logits, sampled, concat=True)
    assert joined.shape == (2, 3, 1)
    close(joined[..., 0], readout.log_prob(logits, sampled))
    assert readout.entropy(logits, concat=True).shape == (2, 3, 1) and readout.kl_div(logits, logits, concat=True).shape == (2, 3, 1)


def test_multi_categorical_kl_keeps_the_action_axis_on_request():
    p, q = torch.randn(4, 6), torch.randn(4, 6)
    kl = package.MultiCategorical(p).kl_div(package.MultiCategorical(q), keep_num_actions_dim=True)
    assert kl.shape == (4, 1)
    close(kl[:, 0], F.kl_div(q.log_softmax(-1), p.log_softmax(-1), log_target=True, reduction='none').sum(-1))
    assert package.MultiCategorical(p).kl_div(package.MultiCategorical(q)).shape == (4,)
    assert package.MultiCategorical([p]).kl_div(package.MultiCategorical([q]), keep_num_actions_dim=True).shape == (4, 1)


def test_multi_categorical_log_prob_takes_a_trailing_singleton_axis():
    logits = torch.randn(4, 5, 6)
    ids = torch.randint(0, 6, (4, 5, 1))
    dist = package.MultiCategorical(logits)
    close(dist.log_prob(ids), F.log_softmax(logits, -1).gather(-1, ids).squeeze(-1))
    close(dist.log_prob(ids), dist.log_prob(ids.squeeze(-1)))
    assert dist.logits is logits


def test_a_table_less_single_group_readout_samples_logits_of_any_width():
    # sdft-pytorch builds Readout(dim=0, num_discrete=1) as a plain sampler over 256-wide logits
    readout = Readout(dim=0, num_discrete=1)
    logits = torch.randn(2, 1, 256)
    sampled = readout.sample(logits)
    assert sampled.shape == (2, 1) and sampled.dtype == torch.long
    close(readout.log_prob(logits, sampled), Categorical(logits=logits).log_prob(sampled))
    close(readout.entropy(logits), Categorical(logits=logits).entropy())


def test_targets_of_one_prediction_head_broadcast_against_several():
    # dreamer4's ActionEmbedder.log_probs: targets with a leading axis of 1 against 3 heads' logits / params
    heads, batch, sizes = 3, (2, 6), (4, 5)
    logits = [torch.randn(heads, *batch, n) for n in sizes]
    ids = torch.stack([torch.randint(0, n, (1, *batch)) for n in sizes], -1)
    expected = torch.stack([Categorical(logits=g).log_prob(ids[..., i].expand(heads, *batch)) for i, g in enumerate(logits)], -1)
    close(legacy.MultiCategorical(logits, use_parallel_multi_discrete=True).log_prob(ids), expected)
    readout = Readout(None, num_continuous=2, continuous_dist_type='beta', continuous_dist_kwargs=dict(unimodal=True))
    params, targets = torch.randn(heads, *batch, 2, 2), torch.rand(1, *batch, 2) * 0.98 + 0.01
    log_prob = readout.log_prob_continuous(params, targets, selector=readout.get_selector())
    a, b = (F.softplus(params) + 1.0).unbind(-1)
    close(log_prob, Beta(a, b).log_prob(targets.expand(heads, *batch, 2)), tol=1e-4)


def test_continuous_methods_take_a_subset_of_dims_without_a_normaliser():
    # 0.2.x's heads act per dim: users pass the params of some of their action dims
    readout = Readout(None, num_continuous=3)
    params = torch.randn(2, 5, 1, 2)
    selector = readout.get_selector()
    torch.manual_seed(4)
    drawn = readout.sample_continuous(params, selector=selector)
    torch.manual_seed(4)
    close(drawn, Normal(params[..., 0], (0.5 * params[..., 1]).exp()).sample())
    close(readout.log_prob_continuous(params, drawn, selector=selector), Normal(params[..., 0], (0.5 * params[..., 1]).exp()).log_prob(drawn))
    close(readout.entropy_continuous(params, selector=selector), Normal(params[..., 0], (0.5 * params[..., 1]).exp()).entropy())
    normalised = Readout(None, num_continuous=3, continuous_mean_std=MEAN_STD[:3])
    with pytest.raises(ValueError, match=r'shape \(\.\.\., 3, 2\)'):
        normalised.log_prob_continuous(params, drawn)


def test_forward_without_a_table_is_a_value_error_and_0_2s_runtime_error():
    readout = ParameterlessReadout(num_discrete=3)
    for error in (ValueError, RuntimeError):
        with pytest.raises(error, match='embeddings not present'):
            readout(torch.randn(2, 4))


def test_log_prob_continuous_clamps_values_outside_the_support_as_0_2_did():
    # 0.2.x clipped such values and scored them; code written for it (dreamer4 passes
    # randn values to a beta head) keeps running, with a warning; log_prob raises
    readout = Readout(None, num_continuous=2, continuous_dist_type='beta')
    params, values = torch.randn(3, 2, 2), torch.tensor([[-0.5, 0.3], [1.7, 0.5], [0.2, 0.9]])
    with pytest.warns(UserWarning, match='clamped into it and scored there, as 0.2.x did'):
        scored = readout.log_prob_continuous(params, values)
    a, b = (F.softplus(params) + readout.eps).unbind(-1)
    close(scored, torch.distributions.Beta(a, b).log_prob(values.clamp(1e-5, 1 - 1e-5)), tol=1e-4)
    with warnings.catch_warnings():
        warnings.simplefilter('error')  # once per head
        readout.log_prob_continuous(params, values)
    with pytest.raises(ValueError, match='must lie inside the support'):
        readout.log_prob(params, values)
