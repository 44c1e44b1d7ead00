"""Invalid-action masks: ``action_mask=`` (bool, True = allowed; ``(..., n)`` for one
group, ``(..., sum n_g)`` or one mask per group for several) on ``forward``,
``sample``, ``mode``, ``log_prob``, ``entropy``, ``kl_div`` and the losses. A masked
action has probability exactly 0 and is never drawn, its log-prob is ``-inf``,
entropy and KL sum over allowed actions only, a row with no allowed action is a
clear ``ValueError``, and gradients stay finite.

Expected values come from independent computations (``helpers.masks``):
``torch.distributions.Categorical`` on logits filled with ``-inf`` where masked,
hand-written KL sums, ``F.cross_entropy`` and ``F.softmax``, and one hand-worked
example. Frequencies are checked per action: each empirical frequency must lie
within NUM_SIGMA standard errors ``sqrt(p (1 - p) / N)`` of its probability (a
masked action, p = 0, must never occur).
"""

# g - groups, n - actions of a group, s - all groups' actions concatenated

import math
import re

import pytest
import torch
import torch.nn.functional as F
from helpers import (
    argmax_ids,
    as_dist,
    as_groups,
    assert_finite_grad,
    assert_frequencies,
    discrete_readout,
    randint_groups,
    random_logits,
    with_group_axis,
    without_group_axis,
)
from helpers.internals import padded_path_taken
from helpers.masks import (
    BATCH,
    DIM,
    DRAWS,
    GREEDY,
    MASK_CASE_IDS,
    MASK_CASES,
    MULTI_MASK_CASES,
    MULTI_MASK_IDS,
    NEG_INF,
    SAMPLE_MODES,
    all_ids,
    as_weights,
    assert_same_results,
    boosted,
    cat,
    draw,
    draw_ids,
    embeds,
    filled,
    hand_kl,
    mask_arg,
    masked_results,
    random_masks,
    ref_cross_entropy,
    ref_entropy,
    ref_log_prob,
    with_table,
)

from discrete_continuous_embed_readout import DiscreteContinuous, EmbedAndReadout, MultiCategorical, ParameterlessReadout

# forward


FORM_CASES = [(*case, 'concat') for case in MASK_CASES] + [(*case, 'tuple') for case in MULTI_MASK_CASES]


FORM_IDS = [f'{i}-concat' for i in MASK_CASE_IDS] + [f'{i}-tuple' for i in MULTI_MASK_IDS]


@pytest.mark.parametrize('sizes, parallel, form', FORM_CASES, ids=FORM_IDS)
def test_forward_returns_masked_logits(sizes, parallel, form):
    readout, x = with_table(sizes, parallel), embeds()
    masks = random_masks(sizes, BATCH)
    expected = filled(as_groups(readout(x)), masks)
    out = readout(x, action_mask=mask_arg(masks, form))
    assert isinstance(out, torch.Tensor) == (len(sizes) == 1)
    for got, want, m in zip(as_groups(out), expected, masks):
        torch.testing.assert_close(got, want, rtol=0, atol=0)
        assert torch.isneginf(got[~m]).all() and torch.isfinite(got[m]).all()


# log_prob, entropy, kl_div against torch.distributions / hand sums


@pytest.mark.parametrize('sizes, parallel', MASK_CASES, ids=MASK_CASE_IDS)
def test_log_prob_matches_masked_categorical(sizes, parallel):
    readout = discrete_readout(sizes, parallel)
    groups, masks = random_logits(sizes, BATCH), random_masks(sizes, BATCH)
    ids = all_ids(sizes, BATCH)
    got = readout.log_prob(as_dist(groups), without_group_axis(ids, sizes), action_mask=cat(masks))
    torch.testing.assert_close(got, ref_log_prob(groups, masks, ids))
    allowed = torch.stack([m.gather(-1, ids[..., i : i + 1]).squeeze(-1) for i, m in enumerate(masks)], dim=-1)
    got = with_group_axis(got, sizes)
    assert (~allowed).any() and allowed.any()
    assert torch.isneginf(got[~allowed]).all(), 'a masked action must have log-prob exactly -inf'
    assert torch.isfinite(got[allowed]).all()


@pytest.mark.parametrize('sizes, parallel', MASK_CASES, ids=MASK_CASE_IDS)
def test_entropy_sums_over_allowed_actions(sizes, parallel):
    readout = discrete_readout(sizes, parallel)
    groups, masks = random_logits(sizes, BATCH), random_masks(sizes, BATCH)
    got = readout.entropy(as_dist(groups), action_mask=cat(masks))
    assert not torch.isnan(got).any()
    torch.testing.assert_close(got, ref_entropy(groups, masks))
    # the first row allows a single action in every group: no uncertainty left
    assert (with_group_axis(got, sizes).reshape(-1, len(sizes))[0] == 0).all()


@pytest.mark.parametrize('sizes, parallel', MASK_CASES, ids=MASK_CASE_IDS)
def test_kl_div_sums_over_allowed_actions(sizes, parallel):
    readout = discrete_readout(sizes, parallel)
    true, pred = random_logits(sizes, BATCH), random_logits(sizes, BATCH)
    masks = random_masks(sizes, BATCH)
    got = readout.kl_div(as_dist(true), as_dist(pred), action_mask=cat(masks))
    assert not torch.isnan(got).any()
    torch.testing.assert_close(got, hand_kl(true, pred, masks))
    same = readout.kl_div(as_dist(true), as_dist(true), action_mask=cat(masks))
    torch.testing.assert_close(same, torch.zeros_like(same))


def test_hand_worked_example():
    # probabilities 1:2:3:4 with actions 1 and 3 masked: the allowed ones get 1/4 and 3/4
    readout = ParameterlessReadout(num_discrete=4)
    logits = torch.tensor([1.0, 2.0, 3.0, 4.0]).log().expand(2, 4)
    uniform = torch.zeros(2, 4)
    mask = torch.tensor([True, False, True, False])
    log_prob = readout.log_prob(logits, torch.tensor([0, 2]), action_mask=mask)
    torch.testing.assert_close(log_prob, torch.tensor([math.log(0.25), math.log(0.75)]))
    assert torch.isneginf(readout.log_prob(logits, torch.tensor([1, 3]), action_mask=mask)).all()
    entropy = -(0.25 * math.log(0.25) + 0.75 * math.log(0.75))
    torch.testing.assert_close(readout.entropy(logits, action_mask=mask), torch.full((2,), entropy))
    kl = 0.25 * math.log(0.25 / 0.5) + 0.75 * math.log(0.75 / 0.5)
    torch.testing.assert_close(readout.kl_div(logits, uniform, action_mask=mask), torch.full((2,), kl))
    loss = readout.calculate_loss(logits, torch.tensor([2, 2]), action_mask=mask)
    torch.testing.assert_close(loss, torch.tensor(-math.log(0.75)))
    # greedy skips the masked favourite (action 3)
    assert readout.sample(logits, temperature=0.0, action_mask=mask).tolist() == [2, 2]


@pytest.mark.parametrize('upstream', ['sum', 'weighted'])
@pytest.mark.parametrize('quantity', ['log_prob', 'entropy', 'kl_div'])
@pytest.mark.parametrize('sizes, parallel', MASK_CASES, ids=MASK_CASE_IDS)
def test_gradients_are_finite_under_masks(sizes, parallel, quantity, upstream):
    """``weighted``: each entry scaled by a random weight of size ~10, as a loss
    coefficient or a mixed-precision loss scale does."""
    readout = discrete_readout(sizes, parallel)
    masks = random_masks(sizes, BATCH)
    groups = [g.requires_grad_() for g in random_logits(sizes, BATCH)]
    others = [g.requires_grad_() for g in random_logits(sizes, BATCH)]
    if quantity == 'log_prob':
        out = readout.log_prob(as_dist(groups), without_group_axis(draw_ids(masks), sizes), action_mask=cat(masks))
    elif quantity == 'entropy':
        out = readout.entropy(as_dist(groups), action_mask=cat(masks))
    else:
        out = readout.kl_div(as_dist(groups), as_dist(others), action_mask=cat(masks))
    assert torch.isfinite(out).all()
    weights = torch.randn_like(out) * 10 if upstream == 'weighted' else torch.ones_like(out)
    (out * weights).sum().backward()
    leaves = groups + (others if quantity == 'kl_div' else [])
    for g, m in zip(leaves, masks + masks):
        assert_finite_grad(g, quantity)
        # the result does not depend on a masked logit
        assert (g.grad[~m] == 0).all()


def test_half_precision_logits_under_masks():
    sizes = (4, 5, 5)
    readout = discrete_readout(sizes)
    groups, masks = random_logits(sizes, BATCH), random_masks(sizes, BATCH)
    half = [g.bfloat16() for g in groups]
    entropy = readout.entropy(as_dist(half), action_mask=cat(masks))
    torch.testing.assert_close(entropy.float(), ref_entropy([g.float() for g in half], masks))
    ids = draw_ids(masks)
    log_prob = readout.log_prob(as_dist(half), ids, action_mask=cat(masks))
    torch.testing.assert_close(log_prob.float(), ref_log_prob([g.float() for g in half], masks, ids))


# losses


@pytest.mark.parametrize('entry', ['forward', 'calculate_loss'])
@pytest.mark.parametrize('sizes, parallel', MASK_CASES, ids=MASK_CASE_IDS)
def test_loss_equals_cross_entropy_on_masked_logits(sizes, parallel, entry):
    readout = with_table(sizes, parallel)
    assert readout.fused_cross_entropy  # the fast path a mask must bypass
    x = embeds().requires_grad_()
    masks = random_masks(sizes, BATCH)
    targets = draw_ids(masks)
    targets[0, 0] = -1  # ignore_index: counts nothing
    loss_mask = torch.ones(BATCH, dtype=torch.bool)
    loss_mask[1] = False
    # padded positions may hold a disallowed target: they must count nothing either
    disallowed = torch.stack([torch.multinomial((~m).reshape(-1, m.shape[-1]).float() + 1e-6, 1).view(BATCH) for m in masks], -1)
    targets[1] = disallowed[1]

    logits = as_groups(readout(x))
    nll = ref_cross_entropy(logits, masks, targets.clamp(min=0))
    keep = (targets != -1) & loss_mask[..., None]
    expected_unreduced = torch.where(keep, nll, torch.zeros_like(nll))
    expected = expected_unreduced.sum() / keep.sum()
    assert torch.isfinite(expected)

    def loss(**kwargs):
        t, m = without_group_axis(targets, sizes), cat(masks)
        if entry == 'forward':
            return readout(x, t, loss_mask=loss_mask, action_mask=m, **kwargs)
        return readout.calculate_loss(as_dist(logits), t, mask=loss_mask, action_mask=m, **kwargs)

    got = loss()
    torch.testing.assert_close(got, expected)
    torch.testing.assert_close(loss(return_unreduced_loss=True), without_group_axis(expected_unreduced, sizes))
    unmasked_loss = readout(x, without_group_axis(targets, sizes), loss_mask=loss_mask)
    assert not torch.allclose(unmasked_loss, got), 'the action mask had no effect on the loss'
    got.backward()
    assert_finite_grad(x, 'embed')
    assert torch.isfinite(readout.embeddings.weight.grad).all()


# sampling


@pytest.mark.parametrize(
    'mode',
    ['random', 'random-cold', 'greedy', 'mode', 'sample_discrete', 'differentiable-hard', 'differentiable-soft', 'differentiable-greedy'],
)
@pytest.mark.parametrize('sizes, parallel', MASK_CASES, ids=MASK_CASE_IDS)
def test_samples_never_hit_masked_actions(sizes, parallel, mode):
    readout = discrete_readout(sizes, parallel)
    masks = random_masks(sizes, DRAWS)
    groups = boosted(random_logits(sizes, DRAWS), masks)  # masked actions are the likeliest
    out = draw(readout, as_dist(groups), mode, cat(masks))
    weights = as_weights(out, mode, sizes)
    assert weights.shape == (*DRAWS, sum(sizes))
    assert (weights[~cat(masks)] == 0).all(), f'{mode}: a masked action got weight'
    assert (weights >= 0).all()
    for w in weights.split(list(sizes), dim=-1):
        torch.testing.assert_close(w.sum(-1), torch.ones(DRAWS))
    if mode != 'differentiable-soft':
        assert ((weights == 0) | (weights == 1)).all(), f'{mode}: not one-hot'
    if mode in GREEDY:
        expected = torch.stack([g.argmax(-1) for g in filled(groups, masks)], dim=-1)
        assert torch.equal(argmax_ids(weights, sizes), expected)


@pytest.mark.parametrize('mode', ['random', 'random-cold', 'differentiable-hard', 'differentiable-soft'])
@pytest.mark.parametrize('sizes, parallel', MASK_CASES, ids=MASK_CASE_IDS)
def test_sample_frequencies_match_masked_softmax(sizes, parallel, mode):
    """One logit vector and one mask ``(n,)`` / ``(sum n_g,)`` broadcast over 20k rows.
    Drawn ids (argmax of the soft sample: Gumbel-max) follow the softmax over the
    allowed actions at the sampling temperature (the Gumbel-softmax draws at 1)."""
    readout = discrete_readout(sizes, parallel)
    masks = [torch.arange(n) % 3 != 1 for n in sizes]
    logits = boosted([torch.randn(n) for n in sizes], masks, by=3.0)
    dist = as_dist([g.expand(*DRAWS, -1) for g in logits])
    out = draw(readout, dist, mode, cat(masks))
    ids = argmax_ids(as_weights(out, mode, sizes), sizes)
    temperature = 1.0 if mode.startswith('differentiable') else SAMPLE_MODES[mode]['temperature']
    for i, (g, m) in enumerate(zip(logits, masks)):
        probs = F.softmax(g.masked_fill(~m, NEG_INF) / temperature, dim=-1)
        assert_frequencies(ids[..., i], probs, f'{mode}, group {i}')


@pytest.mark.parametrize('sizes, parallel', MASK_CASES, ids=MASK_CASE_IDS)
def test_sample_with_log_prob_under_mask(sizes, parallel):
    readout = discrete_readout(sizes, parallel)
    masks = random_masks(sizes, BATCH)
    groups = random_logits(sizes, BATCH)
    ids, log_prob = readout.sample(as_dist(groups), action_mask=cat(masks), return_log_prob=True)
    torch.testing.assert_close(log_prob, ref_log_prob(groups, masks, with_group_axis(ids, sizes)))


@pytest.mark.parametrize('temperature', [1.0, 0.0])
@pytest.mark.parametrize('hard', [True, False])
@pytest.mark.parametrize('sizes, parallel', MASK_CASES, ids=MASK_CASE_IDS)
def test_differentiable_sample_gradients_are_finite(sizes, parallel, hard, temperature):
    readout = discrete_readout(sizes, parallel)
    masks = random_masks(sizes, BATCH)
    groups = [g.requires_grad_() for g in random_logits(sizes, BATCH)]
    out = readout.sample(as_dist(groups), temperature, differentiable=True, hard=hard, action_mask=cat(masks))
    (out * torch.randn_like(out)).sum().backward()
    for g, m in zip(groups, masks):
        assert_finite_grad(g, f'hard={hard}')
        assert (g.grad[~m] == 0).all()
    assert any(g.grad.abs().sum() > 0 for g in groups), 'no gradient reaches the logits'


# mask forms: per-group tuple = concatenated; broadcasting


@pytest.mark.parametrize('sizes, parallel', MULTI_MASK_CASES, ids=MULTI_MASK_IDS)
def test_tuple_and_concatenated_masks_agree(sizes, parallel):
    readout, x = with_table(sizes, parallel), embeds()
    logits, other = as_groups(readout(x)), random_logits(sizes, BATCH)
    masks = random_masks(sizes, BATCH)
    ids = draw_ids(masks)
    concat = masked_results(readout, sizes, logits, other, ids, cat(masks), x)
    per_group_masks = masked_results(readout, sizes, logits, other, ids, tuple(masks), x)
    assert_same_results(concat, per_group_masks)


@pytest.mark.parametrize('mask_batch', [(), (5,), (1, 5), (4, 1)], ids=['actions-only', 'seq', 'one-batch', 'one-seq'])
@pytest.mark.parametrize('sizes, parallel', MASK_CASES, ids=MASK_CASE_IDS)
def test_broadcastable_mask_equals_expanded_mask(sizes, parallel, mask_batch):
    readout, x = with_table(sizes, parallel), embeds()
    logits, other = as_groups(readout(x)), random_logits(sizes, BATCH)
    masks = random_masks(sizes, mask_batch)
    expanded = [m.expand(*BATCH, -1).clone() for m in masks]
    ids = draw_ids(expanded)
    small = masked_results(readout, sizes, logits, other, ids, cat(masks), x)
    full = masked_results(readout, sizes, logits, other, ids, cat(expanded), x)
    assert_same_results(small, full)
    if len(sizes) > 1:
        assert_same_results(small, masked_results(readout, sizes, logits, other, ids, tuple(masks), x))


# multi-discrete paths


@pytest.mark.parametrize('sizes', [(4, 5, 5), (3, 7, 2)])
def test_parallel_and_sequential_paths_agree_under_masks(sizes):
    readout, x = with_table(sizes), embeds()
    logits, other = as_groups(readout(x)), random_logits(sizes, BATCH)
    masks = random_masks(sizes, BATCH)
    ids = draw_ids(masks)
    results = {}
    for parallel in (True, False):
        readout.use_parallel_multi_discrete = parallel
        results[parallel] = masked_results(readout, sizes, logits, other, ids, cat(masks), x)
    for key in results[True]:
        torch.testing.assert_close(results[True][key], results[False][key], msg=lambda m, key=key: f'{key}: {m}')


def test_padded_path_is_taken_for_similar_groups():
    # guards the premise of MASK_CASES: (4, 5, 5) with the parallel flag runs the batched code
    groups = random_logits((4, 5, 5), BATCH)
    assert padded_path_taken(MultiCategorical(groups, use_parallel_multi_discrete=True))
    assert not padded_path_taken(MultiCategorical(groups, use_parallel_multi_discrete=False))


# mixed readouts and selectors


@pytest.mark.parametrize('sizes, parallel', MASK_CASES, ids=MASK_CASE_IDS)
def test_mixed_readout_masks_the_discrete_part_only(sizes, parallel):
    readout, x = with_table(sizes, parallel, num_continuous=2), embeds()
    masks = random_masks(sizes, BATCH)
    mask = cat(masks)
    plain = readout(x)
    out = readout(x, action_mask=mask)
    assert isinstance(out, DiscreteContinuous)
    logits = as_groups(plain.discrete)
    for got, want in zip(as_groups(out.discrete), filled(logits, masks)):
        torch.testing.assert_close(got, want, rtol=0, atol=0)
    torch.testing.assert_close(out.continuous, plain.continuous, rtol=0, atol=0)

    ids, values = draw_ids(masks), torch.randn(*BATCH, 2)
    target = (without_group_axis(ids, sizes), values)
    log_prob = readout.log_prob(plain, target, action_mask=mask)
    torch.testing.assert_close(log_prob.discrete, ref_log_prob(logits, masks, ids))
    torch.testing.assert_close(log_prob.continuous, readout.log_prob(plain, target).continuous)
    entropy = readout.entropy(plain, action_mask=mask)
    torch.testing.assert_close(entropy.discrete, ref_entropy(logits, masks))
    torch.testing.assert_close(entropy.continuous, readout.entropy(plain).continuous)
    other = readout(embeds())
    kl = readout.kl_div(plain, other, action_mask=mask)
    torch.testing.assert_close(kl.discrete, hand_kl(logits, as_groups(other.discrete), masks))
    torch.testing.assert_close(kl.continuous, readout.kl_div(plain, other).continuous)

    loss = readout(x, target, action_mask=mask)
    expected = ref_cross_entropy(logits, masks, ids).mean()
    torch.testing.assert_close(loss.discrete, expected)
    torch.testing.assert_close(loss.continuous, readout(x, target).continuous)
    torch.testing.assert_close(readout.calculate_loss(plain, target, action_mask=mask).discrete, expected)

    for mode in ('random', 'greedy', 'differentiable-hard', 'differentiable-soft'):
        d, c = draw(readout, plain, mode, mask)
        weights = as_weights(d, mode, sizes)
        assert (weights[~mask] == 0).all(), mode
        assert c.shape == (*BATCH, 2) and torch.isfinite(c).all()


SELECTOR_CONFIGS = [[[2, 5, 7]], [[0, 3, 4], [1, 2, 8, 9]]]


@pytest.mark.parametrize('config', SELECTOR_CONFIGS, ids=['one-group', 'two-groups'])
def test_selectors_registered_and_runtime_apply_masks_alike(config):
    sizes = [len(g) for g in config]
    _, registered = EmbedAndReadout(DIM, num_discrete=10, selectors=[config])
    with torch.no_grad():
        registered.embeddings.weight.normal_()
    x = embeds()
    masks = random_masks(sizes, BATCH)
    mask = cat(masks)
    rows = torch.cat([torch.tensor(g) for g in config])
    projected = (x @ registered.embeddings.weight[rows].T).split(sizes, dim=-1)
    ids, other = draw_ids(masks), random_logits(sizes, BATCH)
    by = {'registered': dict(selector_index=0), 'runtime': dict(selector_config=config)}
    results = {}
    for how, kwargs in by.items():
        out = registered(x, action_mask=mask, **kwargs)
        for got, want in zip(as_groups(out), filled(projected, masks)):
            torch.testing.assert_close(got, want)
        logits = registered(x, **kwargs)
        torch.testing.assert_close(
            registered.log_prob(logits, without_group_axis(ids, sizes), action_mask=mask, **kwargs), ref_log_prob(list(projected), masks, ids)
        )
        torch.testing.assert_close(registered.entropy(logits, action_mask=mask, **kwargs), ref_entropy(list(projected), masks))
        boosted_logits = as_dist(boosted(as_groups(logits), masks, by=20.0))
        for mode in ('random', 'greedy', 'differentiable-hard', 'differentiable-soft'):
            sample = registered.sample(boosted_logits, action_mask=mask, **SAMPLE_MODES[mode], **kwargs)
            assert (as_weights(sample, mode, sizes)[~mask] == 0).all(), f'{how}, {mode}'
        loss = registered(x, without_group_axis(ids, sizes), action_mask=mask, **kwargs)
        expected = ref_cross_entropy(list(projected), masks, ids).mean()
        torch.testing.assert_close(loss, expected)
        results[how] = masked_results(registered, sizes, as_groups(logits), other, ids, mask, x, **kwargs)
    assert_same_results(results['registered'], results['runtime'])


# invalid masks


def error_case_masks(sizes):
    s = sum(sizes)
    return {
        'float': (torch.ones(*BATCH, s), TypeError),
        'int': (torch.ones(*BATCH, s, dtype=torch.long), TypeError),
        'wrong-size': (torch.ones(*BATCH, s + 1, dtype=torch.bool), ValueError),
        'one-group-size-only': (torch.ones(*BATCH, sizes[0], dtype=torch.bool), ValueError),
        'unbroadcastable': (torch.ones(3, s, dtype=torch.bool), ValueError),
        'tuple-too-short': (tuple(torch.ones(*BATCH, n, dtype=torch.bool) for n in sizes[:-1]), ValueError),
        'tuple-wrong-group-size': (tuple(torch.ones(*BATCH, n + (g == 1), dtype=torch.bool) for g, n in enumerate(sizes)), ValueError),
    }


ENTRY_POINTS = {
    'forward': lambda r, x, dist, target, m: r(x, action_mask=m),
    'forward-loss': lambda r, x, dist, target, m: r(x, target, action_mask=m),
    'calculate_loss': lambda r, x, dist, target, m: r.calculate_loss(dist, target, action_mask=m),
    'sample': lambda r, x, dist, target, m: r.sample(dist, action_mask=m),
    'sample-greedy': lambda r, x, dist, target, m: r.sample(dist, temperature=0.0, action_mask=m),
    'sample-soft': lambda r, x, dist, target, m: r.sample(dist, differentiable=True, hard=False, action_mask=m),
    'log_prob': lambda r, x, dist, target, m: r.log_prob(dist, target, action_mask=m),
    'entropy': lambda r, x, dist, target, m: r.entropy(dist, action_mask=m),
    'kl_div': lambda r, x, dist, target, m: r.kl_div(dist, dist, action_mask=m),
}


@pytest.mark.parametrize('bad', list(error_case_masks((4, 5, 5))))
@pytest.mark.parametrize('entry', list(ENTRY_POINTS))
def test_invalid_mask_raises(entry, bad):
    sizes = (4, 5, 5)
    readout, x = with_table(sizes), embeds()
    mask, error = error_case_masks(sizes)[bad]
    with pytest.raises(error, match='action_mask'):
        ENTRY_POINTS[entry](readout, x, readout(x), randint_ids(sizes), mask)


def randint_ids(sizes):
    return without_group_axis(randint_groups(sizes, BATCH), sizes)


@pytest.mark.parametrize('entry', list(ENTRY_POINTS))
@pytest.mark.parametrize('sizes, parallel', MASK_CASES, ids=MASK_CASE_IDS)
def test_row_without_allowed_action_raises(sizes, parallel, entry):
    readout, x = with_table(sizes, parallel), embeds()
    masks = random_masks(sizes, BATCH)
    group = len(sizes) - 1
    masks[group][2, 3] = False
    with pytest.raises(ValueError) as info:
        ENTRY_POINTS[entry](readout, x, readout(x), randint_ids(sizes), cat(masks))
    assert 'action_mask' in str(info.value)
    assert re.search(rf'group {group}\b', str(info.value)), str(info.value)


@pytest.mark.parametrize('entry', list(ENTRY_POINTS))
def test_mask_on_continuous_only_readout_raises(entry):
    readout, x = with_table((), num_continuous=3), embeds()
    mask = torch.ones(*BATCH, 3, dtype=torch.bool)
    with pytest.raises(ValueError, match='action_mask'):
        ENTRY_POINTS[entry](readout, x, readout(x), torch.randn(*BATCH, 3), mask)
