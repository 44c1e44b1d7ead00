import pytest
import torch
from conftest import randint_groups

from discrete_continuous_embed_readout import MultiCategorical, ParameterlessReadout, Readout

SIZES = [(3, 4), (5, 5, 4, 5), (2, 7, 1, 5), (1000, 3, 17), (6,)]  # the first two take the padded path


def groups(sizes, batch=(4, 5), scale=3.0):
    return [torch.randn(*batch, n).mul(scale).requires_grad_() for n in sizes]


@pytest.mark.parametrize('sizes', SIZES)
def test_parallel_and_sequential_agree(sizes):
    logits = groups(sizes)
    other = groups(sizes)
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


@pytest.mark.parametrize('sizes', SIZES)
def test_values_match_torch_categorical(sizes):
    logits = groups(sizes)
    other = groups(sizes)
    value = randint_groups(sizes, (4, 5))
    mc = MultiCategorical(logits)
    cats = [torch.distributions.Categorical(logits=g) for g in logits]
    others = [torch.distributions.Categorical(logits=g) for g in other]
    torch.testing.assert_close(mc.log_prob(value), torch.stack([c.log_prob(value[..., i]) for i, c in enumerate(cats)], -1))
    torch.testing.assert_close(mc.entropy(), torch.stack([c.entropy() for c in cats], -1))
    kl = torch.stack([torch.distributions.kl_divergence(c, o) for c, o in zip(cats, others, strict=True)], -1)
    torch.testing.assert_close(mc.kl_div(MultiCategorical(other)), kl)


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


def test_single_tensor_has_no_group_axis():
    logits = torch.randn(4, 6)
    mc = MultiCategorical(logits)
    value = torch.randint(0, 6, (4,))
    assert mc.sample().shape == (4,)
    torch.testing.assert_close(mc.log_prob(value), logits.log_softmax(-1).gather(-1, value[:, None])[:, 0])
    torch.testing.assert_close(mc.entropy(), torch.distributions.Categorical(logits=logits).entropy())
    assert mc.param is logits


def test_minus_infinity_logits_give_finite_entropy_and_gradients():
    logits = torch.tensor([[0.0, float('-inf'), 1.0], [float('-inf'), 2.0, float('-inf')]], requires_grad=True)
    for parallel in (True, False):
        ent = ParameterlessReadout(num_discrete=3, use_parallel_multi_discrete=parallel).entropy(logits)
        p = torch.tensor([1.0, 0.0, torch.e]) / (1 + torch.e)
        torch.testing.assert_close(ent, torch.stack([-(p[[0, 2]] * p[[0, 2]].log()).sum(), torch.tensor(0.0)]))
        (grad,) = torch.autograd.grad(ent.sum(), logits)
        assert torch.isfinite(grad).all()


def test_padding_is_used_only_where_it_wastes_little():
    from discrete_continuous_embed_readout.multi_categorical import pads_cheaply

    assert pads_cheaply((5, 5, 4, 5)) and pads_cheaply((3, 4))
    assert not pads_cheaply((3, 7, 20, 1000)) and not pads_cheaply((6,))
    assert MultiCategorical(groups((5, 5, 4, 5))).batched
    assert not MultiCategorical(groups((5, 5, 4, 5)), use_parallel_multi_discrete=False).batched


def test_log_prob_gradient_passes_gradcheck():
    from discrete_continuous_embed_readout.multi_categorical import log_prob_at

    logits = torch.randn(3, 4, 6, dtype=torch.float64, requires_grad=True)
    index = torch.randint(0, 6, (3, 4))
    assert torch.autograd.gradcheck(lambda t: log_prob_at(t, index), (logits,))
    torch.testing.assert_close(log_prob_at(logits, index), logits.log_softmax(-1).gather(-1, index[..., None])[..., 0])
