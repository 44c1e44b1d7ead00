"""Autograd beyond one backward: a retained graph backpropagated twice, second-order
gradients (a MAML meta-gradient, the Hessian of -log p, gradgradcheck of every
loss and log-prob path), forward mode, and ``torch.func`` transforms (per-sample
gradients with vmap of grad)."""

import pytest
import torch
import torch.nn.functional as F
from helpers.internals import set_fused_min_group_size, use_log_prob_op
from helpers.loss_cases import BATCH, D, LossCase, total
from torch.func import functional_call, grad, vmap

from discrete_continuous_embed_readout import Readout

# a retained graph, backpropagated twice


# ids are scored by log-softmax + gather (autograd's own backward) on small tensors and by the
# log-prob op on large ones: 'op' forces the op on these small ones
LOG_PROB_PATHS = pytest.mark.parametrize('log_prob', ['plain', 'op'])


def _log_prob_path(log_prob: str, monkeypatch) -> None:
    if log_prob == 'op':
        use_log_prob_op(monkeypatch)


@LOG_PROB_PATHS
@pytest.mark.parametrize('name', ['discrete', 'discrete_unfused', 'multi_parallel', 'gaussian', 'mixed'])
def test_backward_twice_through_a_retained_graph_doubles_the_gradients(name, log_prob, monkeypatch):
    _log_prob_path(log_prob, monkeypatch)
    case = LossCase(name)
    readout = case.readout(torch.float32)
    x = torch.randn(*BATCH, D, requires_grad=True)
    loss = total(readout(x, case.targets(dtype=torch.float32)))
    loss.backward(retain_graph=True)
    once = x.grad.clone(), readout.embeddings.weight.grad.clone()
    loss.backward()
    torch.testing.assert_close(x.grad, 2 * once[0])
    torch.testing.assert_close(readout.embeddings.weight.grad, 2 * once[1])


# second-order gradients


def maml_meta_gradient(loss_fn, weight, x_train, y_train, x_val, y_val, lr=0.5):
    """d/dw of the validation loss after one inner SGD step (create_graph=True)."""
    inner = loss_fn(weight, x_train, y_train)
    (g,) = torch.autograd.grad(inner, weight, create_graph=True)
    return torch.autograd.grad(loss_fn(weight - lr * g, x_val, y_val), weight)[0]


@pytest.mark.parametrize('fused', [True, False], ids=['fused', 'logits'])
def test_a_maml_meta_gradient_through_the_loss_is_exact(fused):
    torch.manual_seed(4)
    readout = Readout(6, num_discrete=9, fused_cross_entropy=fused).double()
    x_train, x_val = torch.randn(8, 6, dtype=torch.float64), torch.randn(8, 6, dtype=torch.float64)
    y_train, y_val = torch.randint(0, 9, (8,)), torch.randint(0, 9, (8,))
    y_train[2] = -1  # ignored
    weight = readout.embeddings.weight.detach().clone().requires_grad_()
    ours = maml_meta_gradient(lambda w, x, y: functional_call(readout, {'embeddings.weight': w}, (x, y)), weight, x_train, y_train, x_val, y_val)
    reference = maml_meta_gradient(lambda w, x, y: F.cross_entropy(x @ w.T, y, ignore_index=-1), weight, x_train, y_train, x_val, y_val)
    torch.testing.assert_close(ours, reference, rtol=1e-10, atol=1e-12)
    first_order_only = torch.autograd.grad(F.cross_entropy(x_val @ weight.T, y_val), weight)[0]
    assert (ours - first_order_only).abs().max() > 1e-3  # the curvature term is really there


@LOG_PROB_PATHS
@pytest.mark.parametrize('sizes', [(7,), (3, 4, 3), (3, 40)], ids=['one', 'padded', 'loop'])
def test_the_hessian_of_minus_log_prob_is_the_softmax_covariance(sizes, log_prob, monkeypatch):
    _log_prob_path(log_prob, monkeypatch)
    torch.manual_seed(5)
    readout = Readout(None, num_discrete=sizes if len(sizes) > 1 else sizes[0])
    logits = torch.randn(sum(sizes), dtype=torch.float64)
    ids = torch.stack([torch.randint(0, n, ()) for n in sizes])
    ids = ids[0] if len(sizes) == 1 else ids

    def neg_log_prob(flat):
        groups = flat.split(list(sizes)) if len(sizes) > 1 else flat
        return -readout.log_prob(groups, ids).sum()

    hessian = torch.autograd.functional.hessian(neg_log_prob, logits)
    expected = torch.zeros(sum(sizes), sum(sizes), dtype=torch.float64)
    start = 0
    for n, g in zip(sizes, logits.split(list(sizes))):
        p = g.softmax(-1)
        expected[start : start + n, start : start + n] = torch.diag(p) - torch.outer(p, p)
        start += n
    torch.testing.assert_close(hessian, expected, rtol=1e-10, atol=1e-12)


GRADGRAD_CASES = {
    'fused lm loss': dict(num_discrete=7, fused_cross_entropy=True),
    'logits lm loss': dict(num_discrete=7, fused_cross_entropy=False),
    'multi-discrete padded': dict(num_discrete=(3, 4)),
    'multi-discrete loop': dict(num_discrete=(3, 5), use_parallel_multi_discrete=False),
    'fused multi-discrete': dict(num_discrete=(5, 6), fused_cross_entropy=True),  # fused below its size threshold (patched)
    'gaussian': dict(num_continuous=2),
    'squashed': dict(num_continuous=2, continuous_squashed=True),
    'beta': dict(num_continuous=2, continuous_dist_type='beta'),
}


@LOG_PROB_PATHS
@pytest.mark.parametrize('case', list(GRADGRAD_CASES))
@pytest.mark.parametrize('what', ['loss', 'log_prob'])
def test_gradgradcheck_on_every_loss_and_log_prob_path(case, what, log_prob, monkeypatch):
    _log_prob_path(log_prob, monkeypatch)
    if case == 'fused multi-discrete':
        set_fused_min_group_size(monkeypatch, 4)
    torch.manual_seed(6)
    kwargs = GRADGRAD_CASES[case]
    readout = Readout(3, **kwargs).double()
    x = torch.randn(2, 3, dtype=torch.float64, requires_grad=True)
    w = readout.embeddings.weight.detach().clone().requires_grad_()
    with torch.no_grad():
        out = readout(x)
        target = readout.sample(out) if 'num_discrete' in kwargs else readout.mode(out)

    def fn(x, w):
        if what == 'loss':
            return functional_call(readout, {'embeddings.weight': w}, (x, target))
        return readout.log_prob(functional_call(readout, {'embeddings.weight': w}, (x,)), target)

    assert torch.autograd.gradcheck(fn, (x, w))
    assert torch.autograd.gradgradcheck(fn, (x, w))


# forward mode and torch.func


@pytest.mark.filterwarnings('ignore:`torch.jit.script` is deprecated:DeprecationWarning')  # torch.func.hessian's own internals
@LOG_PROB_PATHS
def test_forward_mode_and_hessians_through_the_log_prob_op(log_prob, monkeypatch):
    _log_prob_path(log_prob, monkeypatch)
    torch.manual_seed(12)
    readout = Readout(None, num_discrete=7)
    logits, ids = torch.randn(4, 7, dtype=torch.float64), torch.randint(0, 7, (4,))

    def reference(lg):
        return F.log_softmax(lg, -1).gather(-1, ids[:, None]).squeeze(-1)

    tangent = torch.randn_like(logits)
    _, ours = torch.func.jvp(lambda lg: readout.log_prob(lg, ids), (logits,), (tangent,))
    _, expected = torch.func.jvp(reference, (logits,), (tangent,))
    torch.testing.assert_close(ours, expected)
    hessian = torch.func.hessian(lambda lg: readout.calculate_loss(lg, ids))(logits)
    torch.testing.assert_close(hessian, torch.func.hessian(lambda lg: -reference(lg).mean())(logits))


@LOG_PROB_PATHS
@pytest.mark.parametrize('kwargs', [dict(num_discrete=11), dict(num_discrete=11, fused_cross_entropy=True), dict(num_discrete=(3, 4)),
                                    dict(num_discrete=(3, 40), use_parallel_multi_discrete=False), dict(num_continuous=2)],
                         ids=['lm', 'lm fused', 'padded', 'loop', 'gaussian'])  # fmt: skip
@pytest.mark.parametrize('what', ['loss', 'log_prob'])
def test_per_sample_gradients_with_vmap_of_grad_equal_a_loop(kwargs, what, log_prob, monkeypatch):
    _log_prob_path(log_prob, monkeypatch)
    torch.manual_seed(7)
    readout = Readout(5, **kwargs)
    x = torch.randn(6, 5)
    with torch.no_grad():
        target = readout.sample(readout(x))
    params = {'embeddings.weight': readout.embeddings.weight.detach()}

    def one(p, xi, ti):
        if what == 'loss':
            return functional_call(readout, p, (xi[None], ti[None]))
        return readout.log_prob(functional_call(readout, p, (xi[None],)), ti[None]).sum()

    per_sample = vmap(grad(one), in_dims=(None, 0, 0))(params, x, target)['embeddings.weight']
    loop = torch.stack([grad(one)(params, x[i], target[i])['embeddings.weight'] for i in range(6)])
    plain = torch.stack([torch.autograd.grad(one({'embeddings.weight': readout.embeddings.weight}, x[i], target[i]), readout.embeddings.weight)[0] for i in range(6)])
    torch.testing.assert_close(per_sample, loop, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(per_sample, plain, rtol=1e-5, atol=1e-6)
