"""MultiCategorical: log_prob, entropy and KL against torch.distributions.Categorical
per group, the parallel (padded) and sequential paths agreeing (values, gradients,
the readout's loss), a single tensor without a group axis, values that broadcast
against the logits, log-probs far below the max, -inf (filtered or masked) logits,
and when the padded path is taken."""

import pytest
import torch
import torch.nn.functional as F
from helpers import as_dist, randint_groups, random_logits, top_k, with_group_axis
from helpers.internals import (
    categorical_log_softmax,
    log_prob_at,
    padded_path_taken,
    pads_cheaply,
    record_log_prob_op,
    set_short_rows_min_rows,
    use_log_prob_op,
)
from torch.distributions import Categorical, kl_divergence

from discrete_continuous_embed_readout import MultiCategorical, ParameterlessReadout, Readout

MULTI = (3, 7, 2)


SIZES = [(3, 4), (5, 5, 4, 5), (2, 7, 1, 5), (1000, 3, 17), (6,)]  # the first two take the padded path


def random_groups(sizes, batch=(4, 5), scale=3.0):
    return [torch.randn(*batch, n).mul(scale).requires_grad_() for n in sizes]


# the parallel (padded) and sequential paths


@pytest.mark.parametrize('sizes', SIZES)
def test_parallel_and_sequential_agree(sizes):
    logits = random_groups(sizes)
    other = random_groups(sizes)
    value = randint_groups(sizes, (4, 5))
    value[0, 0, 0] = -1  # ignore_index
    results = {}
    for parallel in (True, False):
        p, q = MultiCategorical(logits, parallel), MultiCategorical(other, parallel)
        out = (p.log_prob(value), p.entropy(), p.kl_div(q))
        grads = torch.autograd.grad(sum(o.sum() for o in out), logits)
        results[parallel] = (*out, *grads)
    for a, b in zip(results[True], results[False], strict=True):
        torch.testing.assert_close(a, b, atol=1e-6, rtol=1e-6)


@pytest.mark.parametrize('parallel', [True, False])
def test_readout_loss_and_gradients_agree_across_paths(parallel):
    sizes = (5, 9, 2)
    readout = Readout(16, num_discrete=sizes)
    x = torch.randn(3, 6, 16)
    targets = randint_groups(sizes, (3, 6))
    readout.use_parallel_multi_discrete = True
    loss_parallel = readout(x, targets)
    (grad_parallel,) = torch.autograd.grad(loss_parallel, readout.embeddings.weight)
    readout.use_parallel_multi_discrete = False
    loss_sequential = readout(x, targets)
    (grad_sequential,) = torch.autograd.grad(loss_sequential, readout.embeddings.weight)
    torch.testing.assert_close(loss_parallel, loss_sequential, atol=1e-6, rtol=1e-6)
    torch.testing.assert_close(grad_parallel, grad_sequential, atol=1e-6, rtol=1e-6)


def test_padding_is_used_only_where_it_wastes_little():
    assert pads_cheaply((5, 5, 4, 5)) and pads_cheaply((3, 4))
    assert not pads_cheaply((3, 7, 20, 1000)) and not pads_cheaply((6,))
    assert padded_path_taken(MultiCategorical(random_groups((5, 5, 4, 5))))
    assert not padded_path_taken(MultiCategorical(random_groups((5, 5, 4, 5)), use_parallel_multi_discrete=False))


# against torch.distributions.Categorical


@pytest.mark.parametrize('sizes', SIZES)
def test_values_match_torch_categorical(sizes):
    logits = random_groups(sizes)
    other = random_groups(sizes)
    value = randint_groups(sizes, (4, 5))
    mc = MultiCategorical(logits)
    cats = [torch.distributions.Categorical(logits=g) for g in logits]
    others = [torch.distributions.Categorical(logits=g) for g in other]
    torch.testing.assert_close(mc.log_prob(value), torch.stack([c.log_prob(value[..., i]) for i, c in enumerate(cats)], -1))
    torch.testing.assert_close(mc.entropy(), torch.stack([c.entropy() for c in cats], -1))
    kl = torch.stack([torch.distributions.kl_divergence(c, o) for c, o in zip(cats, others, strict=True)], -1)
    torch.testing.assert_close(mc.kl_div(MultiCategorical(other)), kl)


@pytest.mark.parametrize('parallel', [True, False])
def test_multi_categorical_groups_match_torch_categorical(parallel):
    torch.manual_seed(12)
    groups, others = random_logits(MULTI, (4, 5), seed=12), random_logits(MULTI, (4, 5), seed=13)
    mc = MultiCategorical(groups, use_parallel_multi_discrete=parallel)
    value = torch.stack([torch.randint(0, n, (4, 5)) for n in MULTI], dim=-1)
    value[0, 0, 1] = -1  # ignore_index scores 0
    log_prob, entropy = mc.log_prob(value), mc.entropy()
    kl = mc.kl_div(MultiCategorical(others, use_parallel_multi_discrete=parallel))
    assert log_prob.shape == entropy.shape == kl.shape == (4, 5, len(MULTI))
    for i, (g, o) in enumerate(zip(groups, others)):
        ref = Categorical(logits=g)
        expected = ref.log_prob(value[..., i].clamp(min=0)).masked_fill(value[..., i] == -1, 0.0)
        torch.testing.assert_close(log_prob[..., i], expected)
        torch.testing.assert_close(entropy[..., i], ref.entropy())
        torch.testing.assert_close(kl[..., i], kl_divergence(ref, Categorical(logits=o)))
    assert log_prob[0, 0, 1] == 0


def test_single_tensor_has_no_group_axis():
    logits = torch.randn(4, 6)
    mc = MultiCategorical(logits)
    value = torch.randint(0, 6, (4,))
    assert mc.sample().shape == (4,)
    torch.testing.assert_close(mc.log_prob(value), logits.log_softmax(-1).gather(-1, value[:, None])[:, 0])
    torch.testing.assert_close(mc.entropy(), torch.distributions.Categorical(logits=logits).entropy())
    assert mc.param is logits


@pytest.mark.parametrize('parallel', [True, False])
def test_multi_categorical_single_tensor_has_no_group_axis(parallel):
    torch.manual_seed(11)
    logits, other = torch.randn(4, 5, 6), torch.randn(4, 5, 6)
    mc = MultiCategorical(logits, use_parallel_multi_discrete=parallel)
    ref = Categorical(logits=logits)
    value = torch.randint(0, 6, (4, 5))
    assert mc.param is logits
    assert mc.sample().shape == (4, 5)
    torch.testing.assert_close(mc.log_prob(value), ref.log_prob(value))
    torch.testing.assert_close(mc.entropy(), ref.entropy())
    kl = mc.kl_div(MultiCategorical(other, use_parallel_multi_discrete=parallel))
    torch.testing.assert_close(kl, kl_divergence(ref, Categorical(logits=other)))


# values broadcast against the logits' leading shape, as Categorical.log_prob does


@pytest.mark.parametrize('parallel', [True, False])
@pytest.mark.parametrize('shapes', [((3, 2, 6), (1, 2, 6)), ((3, 2, 6), (2, 6)), ((1, 2, 6), (3, 2, 6)), ((3, 0, 6), (1, 0, 6))],
                         ids=['one head against three', 'no head axis', 'three heads against one', 'empty'])  # fmt: skip
def test_log_prob_broadcasts_values_against_the_logits(shapes, parallel):
    outer, inner = shapes
    batch = torch.broadcast_shapes(outer, inner)
    sizes = (4, 5)
    logits = [torch.randn(*outer, n, requires_grad=True) for n in sizes]
    ids = torch.stack([torch.randint(0, n, inner) for n in sizes], -1)
    # validate_args=False: torch's own sample check cannot reshape an empty batch
    expected = [Categorical(logits=g.expand(*batch, g.shape[-1]), validate_args=False).log_prob(ids[..., i].expand(batch)) for i, g in enumerate(logits)]
    expected = torch.stack(expected, -1)
    log_prob = MultiCategorical(logits, use_parallel_multi_discrete=parallel).log_prob(ids)
    torch.testing.assert_close(log_prob, expected)
    weights = torch.randn(batch + (2,))
    for got, want in zip(torch.autograd.grad((log_prob * weights).sum(), logits), torch.autograd.grad((expected * weights).sum(), logits)):
        torch.testing.assert_close(got, want)
    single = MultiCategorical(logits[0], use_parallel_multi_discrete=parallel)
    torch.testing.assert_close(single.log_prob(ids[..., 0]), expected[..., 0])
    if len(inner) == len(outer):  # ids with their trailing axis of 1 (read as the group axis where it adds an axis)
        torch.testing.assert_close(single.log_prob(ids[..., :1]), expected[..., 0])


def test_log_prob_of_values_that_do_not_broadcast_names_both_shapes():
    with pytest.raises(ValueError, match=r'value must have shape \(3, 2, 2\) or one that broadcasts with it, got a tensor of shape \(4, 2, 2\)'):
        MultiCategorical([torch.randn(3, 2, 4), torch.randn(3, 2, 5)]).log_prob(torch.zeros(4, 2, 2, dtype=torch.long))
    with pytest.raises(IndexError, match=r'value: id 5 at index \(0, 1, 1\) is out of range for group 1; expected 0 <= id < 5'):
        MultiCategorical([torch.randn(3, 2, 4), torch.randn(3, 2, 5)]).log_prob(torch.tensor([[[0, 0], [0, 5]]]))  # in the shape passed


# log-probs far below the max and -inf logits


@pytest.mark.parametrize('sizes', [(3,), MULTI], ids=['one_group', 'three_groups'])
@pytest.mark.parametrize('parallel', [True, False])
def test_log_prob_far_below_the_max_does_not_saturate(sizes, parallel):
    # in every group the target sits 60 nats below the group's max logit
    groups = [torch.zeros(2, n) for n in sizes]
    for g in groups:
        g[:, 0], g[:, -1] = 5.0, -55.0
    target = torch.tensor([n - 1 for n in sizes]).expand(2, -1)
    mc = MultiCategorical(as_dist(groups), use_parallel_multi_discrete=parallel)
    log_prob = with_group_axis(mc.log_prob(target[..., 0] if len(sizes) == 1 else target), sizes)
    expected = torch.stack([F.log_softmax(g.double(), -1)[:, -1] for g in groups], dim=-1)
    assert (expected <= -60).all()  # far beyond the ~-46 floor of log(clamp(softmax))
    torch.testing.assert_close(log_prob.double(), expected, rtol=1e-6, atol=1e-5)


@pytest.mark.parametrize('parallel', [True, False])
def test_entropy_and_kl_ignore_filtered_ids(parallel):
    # -inf logits (a top-k filter) have zero probability: finite entropy and KL
    groups, others = random_logits(MULTI, (3,), seed=14), random_logits(MULTI, (3,), seed=15)
    filtered = [top_k(g, min(2, g.shape[-1])) for g in groups]
    mc = MultiCategorical(filtered, use_parallel_multi_discrete=parallel)
    entropy, kl = mc.entropy(), mc.kl_div(MultiCategorical(others, use_parallel_multi_discrete=parallel))
    for i, (f, o) in enumerate(zip(filtered, others)):
        p = F.softmax(f.double(), -1)
        kept = p > 0
        ent = -(p[kept] * p[kept].log()).view(3, -1).sum(-1)
        kl_ref = (p[kept] * (p[kept].log() - F.log_softmax(o.double(), -1)[kept])).view(3, -1).sum(-1)
        torch.testing.assert_close(entropy[:, i].double(), ent, rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(kl[:, i].double(), kl_ref, rtol=1e-5, atol=1e-6)


def test_minus_infinity_logits_give_finite_entropy_and_gradients():
    logits = torch.tensor([[0.0, float('-inf'), 1.0], [float('-inf'), 2.0, float('-inf')]], requires_grad=True)
    for parallel in (True, False):
        ent = ParameterlessReadout(num_discrete=3, use_parallel_multi_discrete=parallel).entropy(logits)
        p = torch.tensor([1.0, 0.0, torch.e]) / (1 + torch.e)
        torch.testing.assert_close(ent, torch.stack([-(p[[0, 2]] * p[[0, 2]].log()).sum(), torch.tensor(0.0)]))
        (grad,) = torch.autograd.grad(ent.sum(), logits)
        assert torch.isfinite(grad).all()


@pytest.mark.parametrize('op', [False, True], ids=['plain', 'op'])
def test_log_prob_gradient_passes_gradcheck(op, monkeypatch):
    if op:  # the log-prob op at this size (it takes over from 16k logits)
        use_log_prob_op(monkeypatch)
    logits = torch.randn(3, 4, 6, dtype=torch.float64, requires_grad=True)
    index = torch.randint(0, 6, (3, 4))
    assert torch.autograd.gradcheck(lambda t: log_prob_at(t, index), (logits,))
    torch.testing.assert_close(log_prob_at(logits, index), logits.log_softmax(-1).gather(-1, index[..., None])[..., 0])


def test_ids_are_scored_by_the_log_prob_op_from_16k_logits_that_need_gradients(monkeypatch):
    # below that, log-softmax + gather with autograd's own backward is faster (the op's
    # Python costs tens of microseconds); both give the same values and gradients
    calls = record_log_prob_op(monkeypatch)
    for n, expected_calls in ((255, 0), (256, 1)):  # (64, 255) and (64, 256) logits
        logits = torch.randn(64, n, dtype=torch.float64, requires_grad=True)
        index, weight = torch.randint(0, n, (64,)), torch.randn(64, dtype=torch.float64)
        ours = log_prob_at(logits, index)
        reference = logits.log_softmax(-1).gather(-1, index[:, None]).squeeze(-1)
        torch.testing.assert_close(ours, reference)
        torch.testing.assert_close(torch.autograd.grad((ours * weight).sum(), logits)[0], torch.autograd.grad((reference * weight).sum(), logits)[0])
        assert len(calls) == expected_calls
        with torch.no_grad():
            log_prob_at(logits, index)  # no gradient wanted: never the op
        assert len(calls) == expected_calls


# many short rows: the log-softmax runs over the transpose's first axis (same values)


@pytest.mark.parametrize('shape', [(300, 5), (4, 100, 7), (1024, 2), (300, 16), (3, 5), (300, 3)])
def test_the_log_softmax_of_many_short_rows_matches_torchs(shape):
    logits = torch.randn(shape, dtype=torch.float64, requires_grad=True)
    logits.data[0, ..., 0] = float('-inf')  # a masked action stays impossible
    ours = categorical_log_softmax(logits)
    expected = F.log_softmax(logits.detach().clone().requires_grad_(), -1)
    torch.testing.assert_close(ours, expected)
    weights = torch.randn(shape, dtype=torch.float64).masked_fill(torch.isneginf(ours), 0.0)
    (grad,) = torch.autograd.grad((ours.masked_fill(torch.isneginf(ours), 0.0) * weights).sum(), logits, create_graph=True)
    finite = logits.detach().clone().requires_grad_()
    ref = F.log_softmax(finite, -1)
    (ref_grad,) = torch.autograd.grad((ref.masked_fill(torch.isneginf(ref), 0.0) * weights).sum(), finite, create_graph=True)
    torch.testing.assert_close(grad, ref_grad)
    torch.testing.assert_close(torch.autograd.grad(grad.square().sum(), logits)[0], torch.autograd.grad(ref_grad.square().sum(), finite)[0])


@pytest.mark.parametrize('sizes', [(5,), (3, 5, 7)])
def test_many_rows_score_as_torch_categorical(sizes, monkeypatch):
    set_short_rows_min_rows(monkeypatch, 4)  # the transposed log-softmax for a batch of 8 too
    logits = [torch.randn(8, n, dtype=torch.float64) for n in sizes]
    ids = randint_groups(sizes, (8,))
    mc = MultiCategorical(logits if len(sizes) > 1 else logits[0])
    cats = [Categorical(logits=g) for g in logits]
    log_prob = torch.stack([c.log_prob(ids[:, i]) for i, c in enumerate(cats)], -1)
    entropy = torch.stack([c.entropy() for c in cats], -1)
    torch.testing.assert_close(mc.log_prob(ids if len(sizes) > 1 else ids[:, 0]), log_prob if len(sizes) > 1 else log_prob[:, 0])
    torch.testing.assert_close(mc.entropy(), entropy if len(sizes) > 1 else entropy[:, 0])
