"""SPEC §10: user mistakes raise ValueError / TypeError / IndexError naming the
argument, what was expected and what arrived; never AssertionError or an
einops error, never a silent wrong answer."""

import ast
import pathlib

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import discrete_continuous_embed_readout as pkg
from discrete_continuous_embed_readout import (
    Embed,
    EmbedAndReadout,
    MultiCategorical,
    ParameterlessReadout,
    Readout,
    segmented_softmax,
    set_validate_args,
)

R = lambda **kw: Readout(8, **kw)  # noqa: E731
x8 = torch.randn(2, 8)
ids2 = torch.tensor([[0, 1], [2, 0]])
mixed = lambda: Readout(8, num_discrete=4, num_continuous=2)  # noqa: E731
gauss = lambda: ParameterlessReadout(num_continuous=2)  # noqa: E731
multi = lambda: ParameterlessReadout(num_discrete=(3, 4))  # noqa: E731
squashed2 = lambda: ParameterlessReadout(num_continuous=2, continuous_squashed=True)  # noqa: E731

# the table of mistakes: each raises its error, naming the argument

MISTAKES = {
    # construction
    'negative num_discrete': (lambda: R(num_discrete=-1), ValueError, 'num_discrete must be >= 0'),
    'zero-sized group': (lambda: R(num_discrete=(3, 0)), ValueError, 'one positive int per group'),
    'float num_discrete': (lambda: R(num_discrete=3.0), TypeError, 'num_discrete'),
    'nothing to read out': (lambda: R(), ValueError, 'at least one of num_discrete and num_continuous'),
    'negative num_continuous': (lambda: R(num_continuous=-2), ValueError, 'num_continuous must be >= 0'),
    'string num_continuous': (lambda: R(num_continuous='2'), TypeError, 'num_continuous'),
    'mean_std wrong shape': (lambda: R(num_continuous=2, continuous_mean_std=torch.ones(3, 2)), ValueError, r'continuous_mean_std must have shape \(2, 2\)'),
    'mean_std zero std': (lambda: R(num_continuous=1, continuous_mean_std=torch.tensor([[0.0, 0.0]])), ValueError, 'std'),
    'mean_std integer': (lambda: R(num_continuous=1, continuous_mean_std=torch.tensor([[0, 1]])), TypeError, 'continuous_mean_std must be a floating'),
    'mean_std without continuous': (lambda: R(num_discrete=3, continuous_mean_std=torch.ones(1, 2)), ValueError, 'needs num_continuous > 0, got num_continuous=0'),
    'unknown dist type': (lambda: R(num_continuous=1, continuous_dist_type='cauchy'), ValueError, 'continuous_dist_type must be one of'),
    'squashed beta': (lambda: R(num_continuous=1, continuous_dist_type='beta', continuous_squashed=True), ValueError, 'continuous_squashed'),
    'regression beta': (lambda: R(num_continuous=1, continuous_dist_type='beta', continuous_log_var_embed=False), ValueError, 'continuous_log_var_embed=False'),
    'bad regression loss': (lambda: R(num_continuous=1, regression_loss_type='huber'), ValueError, 'regression_loss_type'),
    'clamp range reversed': (lambda: R(num_continuous=1, continuous_dist_kwargs=dict(log_var_clamp_range=(2, -2))), ValueError, 'log_var_clamp_range'),
    'unknown dist kwarg': (lambda: R(num_continuous=1, continuous_dist_kwargs=dict(unimodal=True)), TypeError, 'continuous_dist_kwargs'),
    'bad clip_eps': (lambda: R(num_continuous=1, continuous_dist_type='beta', continuous_dist_kwargs=dict(clip_eps=0.7)), ValueError, 'clip_eps'),
    'string dim': (lambda: Readout('8', num_discrete=3), TypeError, 'parameter dim'),
    'embed without dim': (lambda: Embed(None, num_discrete=3), ValueError, 'Embed needs a table'),
    'float ignore_index': (lambda: R(num_discrete=3, ignore_index=1.5), TypeError, 'ignore_index'),
    'string temperature': (lambda: ParameterlessReadout(num_discrete=3).sample(torch.randn(2, 3), temperature='hot'), TypeError, 'temperature must be a finite real number'),
    'string dist type': (lambda: R(num_continuous=1, continuous_dist_type=None), TypeError, 'continuous_dist_type'),
    'bool num_discrete': (lambda: R(num_discrete=True), TypeError, 'num_discrete must be an int'),
    'parameterless with dim': (lambda: ParameterlessReadout(8, num_discrete=3), TypeError, 'takes no dim'),
    'tie mismatched tables': (lambda: EmbedAndReadout(8, num_discrete=3, weight_tie=True, embed_kwargs=dict(num_continuous=1)), ValueError, 'weight_tie'),
    # Embed.forward
    'embed not a tensor': (lambda: Embed(8, num_discrete=3)([0, 1, 2]), TypeError, 'inp must be a torch.Tensor'),
    'embed wrong group count': (lambda: Embed(8, num_discrete=(3, 4))(torch.tensor([[0, 1, 2]])), ValueError, 'discrete input must have a last axis of size 2'),
    'embed negative id': (lambda: Embed(8, num_discrete=5)(torch.tensor([-1])), IndexError, 'discrete input: id -1'),
    'embed id too big': (lambda: Embed(8, num_discrete=5)(torch.tensor([5])), IndexError, r'expected 0 <= id < 5'),
    'embed bool ids': (lambda: Embed(8, num_discrete=5)(torch.tensor([True])), TypeError, 'integer ids'),
    'embed float of the wrong width into discrete-only': (lambda: Embed(8, num_discrete=5)(torch.randn(3)), ValueError, 'last axis of size 5 .*one-hots or probabilities'),
    'embed continuous width': (lambda: Embed(8, num_continuous=2)(torch.randn(4, 3)), ValueError, 'continuous input must have a last axis of size 2'),
    'embed nothing': (lambda: Embed(8, num_discrete=3)((None, None)), ValueError, 'neither'),
    'normalise without mean_std': (lambda: Embed(8, num_continuous=2)(torch.randn(2, 2), normalize_continuous=True), ValueError, 'continuous_mean_std'),
    'mixed embed bare ids': (lambda: Embed(8, num_discrete=3, num_continuous=1)(torch.tensor([0, 1])), TypeError, r'inp must be a \(discrete, continuous\) pair.*embed\(\(ids, None\)\)'),
    'mixed embed bare values': (lambda: Embed(8, num_discrete=3, num_continuous=1)(torch.randn(2, 1)), TypeError, r'embed\(\(None, values\)\)'),
    'explicit dim contradicts auto append': (
        lambda: EmbedAndReadout(8, num_discrete=3, explicit_single_action_dim_given=True, embed_kwargs=dict(auto_append_discrete_set_dim=True)),
        ValueError, 'explicit_single_action_dim_given=True means auto_append_discrete_set_dim=False',
    ),  # fmt: skip
    'temperature nan': (lambda: R(num_discrete=3).sample(torch.randn(2, 3), temperature=float('nan')), ValueError, 'temperature must be a finite real number'),
    'temperature inf': (lambda: R(num_continuous=1).sample(torch.randn(2, 1, 2), temperature=float('inf')), ValueError, r'temperature must be a finite real number \(<= 0 for the mode\).*got float inf'),
    'temperature -inf': (lambda: MultiCategorical(torch.randn(2, 3)).sample(temperature=float('-inf')), ValueError, 'temperature must be a finite'),
    'embed continuous ints in pair': (lambda: Embed(8, num_discrete=3, num_continuous=1)((torch.tensor([0]), torch.tensor([[1]]))), TypeError, 'continuous input must be a floating'),
    # Readout.forward
    'readout wrong width': (lambda: R(num_discrete=3)(torch.randn(2, 7)), ValueError, 'embed must have a last axis of size 8'),
    'readout integer embed': (lambda: R(num_discrete=3)(torch.ones(2, 8, dtype=torch.long)), TypeError, 'embed must be a floating'),
    'loss without targets': (lambda: R(num_discrete=3)(x8, return_loss=True), ValueError, 'return_loss=True needs targets'),
    'targets without loss': (lambda: R(num_discrete=3)(x8, torch.tensor([0, 1]), return_loss=False), ValueError, 'return_loss=False'),
    'float discrete targets': (lambda: R(num_discrete=3)(x8, torch.tensor([0.0, 1.0])), TypeError, 'targets must hold integer ids'),
    'targets wrong shape': (lambda: R(num_discrete=3)(x8, torch.tensor([0, 1, 2])), ValueError, r'targets must have shape \(2,\)'),
    'target out of range': (lambda: R(num_discrete=3)(x8, torch.tensor([0, 3])), IndexError, 'targets: id 3'),
    'multi target spills': (lambda: R(num_discrete=(3, 4))(x8, torch.tensor([[3, 0], [0, 0]])), IndexError, 'group 0'),
    'loss_mask wrong shape': (lambda: R(num_discrete=3)(x8, torch.tensor([0, 1]), loss_mask=torch.ones(3, dtype=torch.bool)), ValueError, 'loss_mask must have the batch shape'),
    'loss_mask float': (lambda: R(num_discrete=3)(x8, torch.tensor([0, 1]), loss_mask=torch.ones(2)), TypeError, 'loss_mask must be a bool'),
    'mixed targets not a pair': (lambda: mixed()(x8, torch.tensor([0, 1])), TypeError, 'targets must be a \\(discrete, continuous\\) pair'),
    'continuous targets width': (lambda: R(num_continuous=2)(x8, torch.randn(2, 3)), ValueError, r'targets must have shape \(2, 2\)'),
    'both selector args': (lambda: R(num_discrete=3)(x8, selector_index=0, selector_config=[[0]]), ValueError, 'either selector_index or selector_config'),
    'float selector_index': (lambda: R(num_discrete=3, selectors=[[[0]], [[1]]])(x8, selector_index=0.0), TypeError, 'selector_index must be an int'),
    'index without selectors': (lambda: R(num_discrete=3)(x8, selector_index=1), IndexError, 'no selectors are registered'),
    # sample / log_prob / entropy / kl_div
    'logits wrong size': (lambda: ParameterlessReadout(num_discrete=(3, 4)).sample(torch.randn(2, 8)), ValueError, r'dist discrete logits must have a last axis of size 7 \(groups \[3, 4\]\)'),
    'logits wrong size for a selector': (lambda: ParameterlessReadout(num_discrete=5, selectors=[[[0, 1, 2]]]).sample(torch.randn(2, 5)), ValueError, 'dist discrete logits must have a last axis of size 3'),
    'too few groups': (lambda: multi().sample([torch.randn(2, 3)]), TypeError, 'sequence of 2 tensors'),
    'group wrong size': (lambda: multi().entropy([torch.randn(2, 3), torch.randn(2, 5)]), ValueError, r'logits\[1\] must have a last axis of size 4'),
    'params wrong shape': (lambda: gauss().sample(torch.randn(5, 2)), ValueError, r'continuous params must have shape \(\.\.\., 2, 2\)'),
    'rescale a gaussian': (lambda: gauss().sample(torch.randn(5, 2, 2), rescale_range=(0, 1)), ValueError, 'no native range'),
    'rescale reversed': (lambda: squashed2().sample(torch.randn(2, 2, 2), rescale_range=(1, 0)), ValueError, 'rescale_range must be finite with lo < hi'),
    'rescale infinite': (lambda: squashed2().sample(torch.randn(2, 2, 2), rescale_range=(-1, float('inf'))), ValueError, 'rescale_range must be finite'),
    'rescale per-dim length': (lambda: squashed2().sample(torch.randn(2, 2, 2), rescale_range=([0, 0, 0], [1, 1, 1])), ValueError, r'one entry per continuous dim \(2\), got 3'),
    'rescale per-dim 2-D': (lambda: squashed2().sample(torch.randn(2, 2, 2), rescale_range=(torch.zeros(2, 1), 1)), ValueError, r'numbers or 1-D, got shapes \(2, 1\)'),
    'rescale not numbers': (lambda: squashed2().sample(torch.randn(2, 2, 2), rescale_range=('lo', 'hi')), TypeError, 'rescale_range must be a pair'),
    'log_prob rescale reversed': (lambda: squashed2().log_prob(torch.randn(3, 2, 2), torch.zeros(3, 2), rescale_range=(1, -1)), ValueError, '^rescale_range must be finite'),
    'mean_std without normaliser': (lambda: gauss().mean_std(gauss().get_selector()), ValueError, 'no continuous_mean_std'),
    'validated multi-categorical id out of range': (lambda: pkg.MultiCategoricalDistribution([torch.randn(2, 3), torch.randn(2, 2)], validate_args=True).log_prob(torch.tensor([[0, 2], [1, 1]])), ValueError, 'support'),
    'validated multi-categorical too few ids': (lambda: pkg.MultiCategoricalDistribution([torch.randn(2, 3), torch.randn(2, 2)], validate_args=True).log_prob(torch.tensor([[0], [1]])), ValueError, 'last axis of 2'),
    'embed parts batch differ': (lambda: EmbedAndReadout(8, num_discrete=4, num_continuous=3).embed((torch.randint(0, 4, (5, 1)), torch.randn(5, 3))), ValueError, r'same batch shape, got \(5, 1\) and \(5,\)'),
    'embed parts batch differ concat': (lambda: EmbedAndReadout(8, num_discrete=4, num_continuous=3).embed((torch.randint(0, 4, (5, 2)), torch.randn(5, 3)), concat_discrete_continuous=True), ValueError, 'same batch shape'),
    'rescale_to_native per-dim': (lambda: squashed2().rescale_to_native(torch.zeros(3, 2), ([0, 0, 0], [1, 2, 3])), ValueError, 'source_range: per-dim bounds'),
    'log_prob id out of range': (lambda: multi().log_prob([torch.randn(2, 3), torch.randn(2, 4)], torch.tensor([[0, 4], [0, 0]])), IndexError, 'sampled: id 4'),
    'log_prob values width': (lambda: gauss().log_prob(torch.randn(5, 2, 2), torch.randn(5, 3)), ValueError, r'sampled must have shape \(5, 2\)'),
    'kl shapes differ': (lambda: gauss().kl_div(torch.randn(5, 2, 2), torch.randn(4, 2, 2)), ValueError, 'dist_true and dist_pred'),
    'regression log_prob': (lambda: ParameterlessReadout(num_continuous=2, continuous_log_var_embed=False).log_prob(torch.randn(3, 2), torch.randn(3, 2)), ValueError, 'needs a distribution'),
    'filter_fn returns torch.topk': (lambda: ParameterlessReadout(num_discrete=3).sample(torch.randn(2, 3), filter_fn=lambda t: t.topk(2)), TypeError, r'filter_fn must return the filtered logits: a floating tensor of the shape it was given, \(2, 3\).*got torch\.return_types\.topk'),
    'filter_fn returns ids': (lambda: multi().sample([torch.randn(2, 3), torch.randn(2, 4)], filter_fn=lambda t, k: t.topk(k).indices, filter_kwargs=dict(k=2)), TypeError, r'filter_fn must return .*\(2, 3\).*got a tensor of shape \(2, 2\) and dtype torch.int64'),
    'filter_fn returns fewer logits': (lambda: ParameterlessReadout(num_discrete=3).sample_discrete(torch.randn(2, 3), filter_fn=lambda t: t.topk(2).values), ValueError, r'filter_fn must return .*\(2, 3\).*got a tensor of shape \(2, 2\)'),
    'filter_fn returns one logit': (lambda: MultiCategorical(torch.randn(2, 3)).sample(temperature=0.5, filter_fn=lambda t: t.amax(-1, keepdim=True)), ValueError, r'filter_fn must return .*got a tensor of shape \(2, 1\)'),
    'mixed dist not a pair': (lambda: ParameterlessReadout(num_discrete=3, num_continuous=1).entropy(torch.randn(2, 3)), TypeError, 'dist must be a \\(discrete, continuous\\) pair'),
    'continuous part on discrete readout': (lambda: ParameterlessReadout(num_discrete=3).entropy(pkg.DiscreteContinuous(torch.randn(2, 3), torch.randn(2, 1, 2))), ValueError, 'no continuous part'),
    # MultiCategorical and helpers
    'no groups': (lambda: MultiCategorical([]), ValueError, 'at least one group'),
    'groups disagree on batch': (lambda: MultiCategorical([torch.randn(2, 3), torch.randn(3, 3)]), ValueError, 'leading shape'),
    'integer logits': (lambda: MultiCategorical(torch.ones(2, 3, dtype=torch.long)), TypeError, 'logits must be a floating'),
    'kl with a tensor': (lambda: MultiCategorical(torch.randn(2, 3)).kl_div(torch.randn(2, 3)), TypeError, 'other must be a MultiCategorical'),
    'value wrong shape': (lambda: MultiCategorical([torch.randn(2, 3), torch.randn(2, 3)]).log_prob(torch.tensor([[0, 1], [1, 0], [0, 0]])), ValueError, r'value must have shape \(2, 2\) or one that broadcasts with it, got a tensor of shape \(3, 2\)'),
    'segments do not add up': (lambda: segmented_softmax(torch.randn(2, 5), [2, 2]), ValueError, 'flat_logits must have a last axis of size 4'),
    'validate switch type': (lambda: set_validate_args('no'), TypeError, 'value must be a bool'),
    # selectors, registered and runtime
    'registered group empty': (lambda: R(num_discrete=6, selectors=[[[0, 1], []]]), ValueError, r'selectors\[0\] discrete group 1 must not be empty'),
    'registered row beyond capacity': (lambda: R(num_discrete=6, selectors=[[[0, 6]]]), IndexError, 'discrete row 6 is out of range'),
    'registered repeated dim': (lambda: R(num_continuous=3, selectors=[[1, 1]]), ValueError, 'must not repeat'),
    'registered wrong nesting': (lambda: R(num_discrete=6, selectors=[[[[0]]]]), TypeError, r'selectors\[0\] must be'),
    'runtime row beyond capacity': (lambda: R(num_discrete=6)(x8, selector_config=[[7]]), IndexError, 'selector_config discrete group 0: discrete row 7'),
    'runtime continuous on discrete-only': (lambda: R(num_discrete=6)(x8, selector_config=[0]), ValueError, 'num_continuous = 0'),
    'runtime local id too big': (lambda: Embed(8, num_discrete=6)(torch.tensor([3]), selector_config=[[0, 2, 4]]), IndexError, r'expected 0 <= id < 3'),
    'runtime pair, bad dims': (lambda: R(num_discrete=6, num_continuous=2)(x8, selector_config=([[0]], 'ab')), TypeError, r'selector_config\[1\]'),
    'selector index negative': (lambda: R(num_discrete=6, selectors=[[[0]], [[1]]])(x8, selector_index=-1), IndexError, 'selector_index must be in'),
    'selector width mismatch': (lambda: Embed(8, num_continuous=3, selectors=[[0, 2]])(torch.randn(2, 3), selector_index=0), ValueError, 'continuous input must have a last axis of size 2'),
    # non-finite values (content checks)
    'nan continuous input': (lambda: Embed(8, num_continuous=2)(torch.tensor([[0.0, float('nan')]])), ValueError, 'continuous input must be finite, got nan'),
    'inf continuous target': (lambda: gauss().calculate_loss(torch.randn(1, 2, 2), torch.tensor([[0.0, float('inf')]])), ValueError, 'targets must be finite, got inf'),
    'nan log_prob value': (lambda: gauss().log_prob(torch.randn(1, 2, 2), torch.tensor([[float('nan'), 0.0]])), ValueError, 'sampled must be finite'),
    'inf mean_std': (lambda: R(num_continuous=1, continuous_mean_std=torch.tensor([[float('inf'), 1.0]])), ValueError, 'continuous_mean_std must be finite'),
    # action masks
    'mask not bool': (lambda: ParameterlessReadout(num_discrete=3).sample(torch.randn(2, 3), action_mask=torch.ones(2, 3)), TypeError, 'action_mask must be a bool'),
    'mask wrong size': (lambda: ParameterlessReadout(num_discrete=3).sample(torch.randn(2, 3), action_mask=torch.ones(2, 4, dtype=torch.bool)), ValueError, 'action_mask must have a last axis of size 3'),
    'mask nothing allowed': (lambda: ParameterlessReadout(num_discrete=3).sample(torch.randn(2, 3), action_mask=torch.tensor([True, True, True]) & torch.tensor([[True], [False]])), ValueError, 'group 0 has no allowed action'),
    'mask per group count': (lambda: multi().sample([torch.randn(2, 3), torch.randn(2, 4)], action_mask=(torch.ones(2, 3, dtype=torch.bool),)), ValueError, 'one mask per group'),
    'mask on continuous readout': (lambda: gauss().sample(torch.randn(2, 2, 2), action_mask=torch.ones(2, dtype=torch.bool)), ValueError, 'no discrete logits'),
    # policy-head options
    'relaxed with log-prob': (lambda: ParameterlessReadout(num_discrete=3).sample(torch.randn(2, 3), differentiable=True, hard=False, return_log_prob=True), ValueError, 'needs hard samples'),
    'entropy samples not squashed': (lambda: gauss().entropy(torch.randn(2, 2, 2), squashed_entropy_samples=10), ValueError, 'squashed_entropy_samples'),
    'entropy samples zero': (lambda: ParameterlessReadout(num_continuous=1, continuous_squashed=True).entropy(torch.randn(2, 1, 2), squashed_entropy_samples=0), ValueError, 'positive int'),
    'regression sample log-prob': (lambda: ParameterlessReadout(num_continuous=1, continuous_log_var_embed=False).sample(torch.randn(2, 1), return_log_prob=True), ValueError, 'needs a distribution'),
    # EmbedAndReadout
    'factory unknown argument': (lambda: EmbedAndReadout(8, num_discrete=3, vocab=3), TypeError, 'vocab'),
    'factory readout-only kwarg to embed': (lambda: EmbedAndReadout(8, num_discrete=3, embed_kwargs=dict(ignore_index=0)), TypeError, 'ignore_index'),
}


@pytest.mark.parametrize('name', list(MISTAKES))
def test_mistake_raises_a_clear_error(name):
    fn, error, match = MISTAKES[name]
    with pytest.raises(error, match=match):
        fn()


def test_the_table_is_large():
    assert len(MISTAKES) >= 50


# ids out of range


@pytest.mark.parametrize('bad', [-1, -3, 3, 7])
def test_out_of_range_ids_are_index_errors(bad):
    embed, readout = EmbedAndReadout(8, num_discrete=(3, 4))
    ids = torch.tensor([[0, 1], [bad, 0]])
    with pytest.raises(IndexError, match='discrete input'):
        embed(ids)
    targets = torch.tensor([[0, 1], [bad if bad != -1 else -2, 0]])  # -1 is the ignore_index
    with pytest.raises(IndexError, match='targets'):
        readout(torch.randn(2, 8), targets)


def test_an_id_past_its_group_does_not_read_the_next_group():
    # id 3 of group 0 (size 3) would be row 3, group 1's id 0: it must be refused
    embed = Embed(8, num_discrete=(3, 4))
    with pytest.raises(IndexError, match='group 0'):
        embed(torch.tensor([[3, 0]]))
    mc = MultiCategorical([torch.randn(2, 3), torch.randn(2, 4)])
    with pytest.raises(IndexError, match='group 1'):
        mc.log_prob(torch.tensor([[0, 4], [1, 1]]))


# content checks, messages and option routing


def test_content_checks_can_be_switched_off():
    # group 0 has rows 0..2, group 1 rows 3..7: id 3 of group 0 is past its group
    embed = Embed(8, num_discrete=(3, 5))
    ids = torch.tensor([[3, 0]])
    set_validate_args(False)
    assert not pkg.get_validate_args()
    # off: nothing is checked, the id reads the next group's row (the caller's responsibility)
    table = embed.embeddings.weight
    torch.testing.assert_close(embed(ids), (table[3] + table[3])[None])
    set_validate_args(True)
    with pytest.raises(IndexError, match='id 3 at index \\(0, 0\\) is out of range for group 0'):
        embed(ids)


def test_error_messages_show_the_users_shape():
    embed, readout = EmbedAndReadout(8, num_discrete=5)
    ids = torch.zeros(16, 64, dtype=torch.long)
    ids[3, 7] = 9
    message = 'id 9 at index \\(3, 7\\) is out of range; expected 0 <= id < 5.*shape \\(16, 64\\)'
    with pytest.raises(IndexError, match=message):
        embed(ids)
    with pytest.raises(IndexError, match=message):
        readout(torch.randn(16, 64, 8), ids)
    with pytest.raises(IndexError, match=message):
        readout.log_prob(readout(torch.randn(16, 64, 8)), ids)


# shapes in messages are the shapes the user passed


def wrong_ids_calls(ids):
    """Every readout method that takes one group's ids, on a batch of 3 (or (2,) for the labels case)."""
    readout = Readout(8, num_discrete=5)
    x = torch.randn(ids.shape[0], 8)
    logits = readout(x)
    return {
        'forward fused': lambda: readout(x, ids),
        'forward logits': lambda: readout(x, ids, action_mask=torch.ones(5, dtype=torch.bool)),
        'calculate_loss': lambda: readout.calculate_loss(logits, ids),
        'log_prob': lambda: readout.log_prob(logits, ids),
        'log_prob_from_embeds': lambda: readout.log_prob_from_embeds(x, ids),
        'MultiCategorical': lambda: MultiCategorical(logits).log_prob(ids),
    }


@pytest.mark.parametrize('passed, expected', [((3, 1, 1), (3,)), ((2, 9), (2,))], ids=['extra axes', 'a sequence of labels'])
@pytest.mark.parametrize('call', list(wrong_ids_calls(torch.zeros(3, dtype=torch.long))))
def test_a_shape_error_shows_the_ids_as_passed(call, passed, expected):
    ids = torch.zeros(passed, dtype=torch.int32)
    shown = ', '.join(map(str, passed))
    message = rf'must have shape \({expected[0]},\).*got a tensor of shape \({shown}\) and dtype torch.int32$'
    with pytest.raises(ValueError, match=message):
        wrong_ids_calls(ids)[call]()


def test_an_out_of_range_id_with_a_kept_trailing_axis_shows_that_axis():
    ids = torch.tensor([[0], [7], [1]])  # MultiCategorical of one tensor takes (..., 1) as 0.2.x did
    with pytest.raises(IndexError, match=r'id 7 at index \(1, 0\) is out of range.*shape \(3, 1\)'):
        MultiCategorical(torch.randn(3, 5)).log_prob(ids)
    readout = Readout(8, num_discrete=5, auto_squeeze_single_output=False)
    with pytest.raises(IndexError, match=r'id 7 at index \(1, 0\) is out of range.*shape \(3, 1\)'):
        readout.log_prob_from_embeds(torch.randn(3, 8), ids)


# Hugging Face pads labels with -100


HF_HINT = "-100 is Hugging Face's label padding: to skip those entries, construct the readout with ignore_index=-100$"


def minus_100_calls():
    readout, multi = Readout(8, num_discrete=5), Readout(8, num_discrete=(5, 4))
    x = torch.randn(3, 8)
    ids = torch.tensor([0, -100, 2])
    unfused = Readout(8, num_discrete=5, fused_cross_entropy=False)
    return {
        'forward fused': lambda: readout(x, ids),
        'forward fused unreduced': lambda: readout(x, ids, return_unreduced_loss=True),
        'forward logits': lambda: unfused(x, ids),
        'forward multi-discrete': lambda: multi(x, torch.stack([ids.clamp(min=0), ids], -1)),
        'calculate_loss': lambda: readout.calculate_loss(readout(x), ids),
        'log_prob': lambda: readout.log_prob(readout(x), ids),
        'log_prob_discrete': lambda: readout.log_prob_discrete(readout(x), ids),
        'log_prob_from_embeds': lambda: readout.log_prob_from_embeds(x, ids),
    }


@pytest.mark.parametrize('call', list(minus_100_calls()))
def test_an_id_of_minus_100_says_how_to_ignore_it(call):
    with pytest.raises(IndexError, match=r'id -100 at index .* out of range.*' + HF_HINT):
        minus_100_calls()[call]()


def test_the_minus_100_hint_only_where_it_helps():
    with pytest.raises(IndexError, match=r"-100 is Hugging Face's label padding: to skip those entries, construct the MultiCategorical with ignore_index=-100"):
        MultiCategorical(torch.randn(3, 5)).log_prob(torch.tensor([0, -100, 1]))
    with pytest.raises(IndexError) as other_id:
        Readout(8, num_discrete=5)(torch.randn(3, 8), torch.tensor([0, -99, 1]))
    with pytest.raises(IndexError) as embedded:  # an Embed has no ignore_index
        Embed(8, num_discrete=5)(torch.tensor([0, -100]))
    assert 'Hugging Face' not in str(other_id.value) and 'Hugging Face' not in str(embedded.value)
    readout = Readout(8, num_discrete=5, ignore_index=-100)
    x = torch.randn(3, 8)
    torch.testing.assert_close(readout(x, torch.tensor([0, -100, 2])), F.cross_entropy(readout(x), torch.tensor([0, -100, 2])))


# temperatures: one check, one message


NOT_TEMPERATURES = {
    'bool': (True, TypeError),
    'numpy bool': (np.bool_(True), TypeError),
    'complex': (0.5j, TypeError),
    'numpy complex': (np.complex64(1), TypeError),
    'string': ('hot', TypeError),
    'None': (None, TypeError),
    'bool tensor': (torch.tensor(True), TypeError),
    'complex tensor': (torch.tensor(1 + 0j), TypeError),
    'one-element tensor': (torch.tensor([0.7]), ValueError),
    'tensor of two': (torch.tensor([0.7, 1.0]), ValueError),
    'nan': (float('nan'), ValueError),
    'numpy inf': (np.float32('inf'), ValueError),
    'nan tensor': (torch.tensor(float('nan')), ValueError),
}


def temperature_calls():
    """Every place that takes a temperature, as a function of it."""
    readout = Readout(8, num_discrete=(5, 4), num_continuous=2)
    logits, params = readout(torch.randn(3, 8))
    binned = ParameterlessReadout(num_continuous=1, continuous_dist_type='two_hot')
    lm = Readout(8, num_discrete=5)
    x = torch.randn(3, 8)
    return {
        'sample': lambda t: readout.sample((logits, params), temperature=t),
        'dist sample': lambda t: readout.dist((logits, params)).sample(t),
        'sample_discrete': lambda t: readout.sample_discrete(logits, t),
        'sample_continuous': lambda t: readout.sample_continuous(params, t),
        'MultiCategorical.sample': lambda t: MultiCategorical(list(logits)).sample(t),
        'head sample': lambda t: readout.continuous_dist.sample(params, t),
        'binned sample': lambda t: binned.sample(torch.randn(3, 1, binned.continuous_dist.num_bins), temperature=t),
        'log_prob_from_embeds': lambda t: lm.log_prob_from_embeds(x, torch.tensor([0, 1, 2]), temperature=t),
        'kl_div_from_embeds': lambda t: lm.kl_div_from_embeds(x, x, temperature=t),
    }


PER_TOKEN = ('log_prob_from_embeds', 'kl_div_from_embeds')


@pytest.mark.parametrize('bad', list(NOT_TEMPERATURES))
@pytest.mark.parametrize('call', list(temperature_calls()))
def test_a_temperature_that_is_not_a_finite_real_scalar_is_refused_with_one_message(call, bad):
    value, error = NOT_TEMPERATURES[bad]
    wanted = r'> 0 \(the per-token paths have no mode\)' if call in PER_TOKEN else r'\(<= 0 for the mode\)'
    message = rf'^temperature must be a finite real number {wanted}, as a Python or numpy scalar or a 0-dim tensor; got '
    with pytest.raises(error, match=message):
        temperature_calls()[call](value)


@pytest.mark.parametrize('value', [0, -1.0, np.float32(0.0), torch.tensor(-0.5)], ids=['0', '-1', 'numpy 0', 'tensor -0.5'])
@pytest.mark.parametrize('call', PER_TOKEN)
def test_the_per_token_paths_say_their_temperature_must_be_positive(call, value):
    with pytest.raises(ValueError, match=r'^temperature must be a finite real number > 0 \(the per-token paths have no mode\).*got '):
        temperature_calls()[call](value)


def test_embed_and_readout_routes_options_to_the_module_that_takes_them():
    embed, readout = EmbedAndReadout(8, num_discrete=5, ignore_index=-100, auto_append_discrete_set_dim=True)
    assert readout.ignore_index == -100 and embed.auto_append_discrete_set_dim is True
    targets = torch.tensor([1, -100])
    hidden = torch.randn(2, 8)
    torch.testing.assert_close(readout(hidden, targets), F.cross_entropy(readout(hidden), targets, ignore_index=-100))
    with pytest.raises(TypeError, match="EmbedAndReadout got unexpected keyword arguments \\['ignore_idx'\\].*readout_kwargs"):
        EmbedAndReadout(8, num_discrete=5, ignore_idx=-100)


# the package itself


def test_the_package_has_no_assert_statements():
    root = pathlib.Path(pkg.__file__).parent
    found = [
        f'{path.name}:{node.lineno}'
        for path in root.glob('*.py')
        for node in ast.walk(ast.parse(path.read_text()))
        if isinstance(node, ast.Assert)
    ]
    assert found == []
