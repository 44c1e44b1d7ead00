"""Right numbers in every mode users run: half precision sampling, second-order
gradients, ``torch.func`` transforms, ``torch.no_grad``, meta-device construction,
empty batches, small integer ids, out-of-support values. Expected values come from
``torch.nn.functional`` / ``torch.distributions`` in float64 or hand calculations."""

import math

import pytest
import torch
import torch.nn.functional as F
from torch.func import functional_call, grad, vmap

from discrete_continuous_embed_readout import EmbedAndReadout, MultiCategorical, ParameterlessReadout, Readout, set_validate_args
from discrete_continuous_embed_readout import losses as losses_module
from discrete_continuous_embed_readout import readout as readout_module

HALF = [torch.float32, torch.float16, torch.bfloat16]


def chi_square_ok(ids: torch.Tensor, probs: torch.Tensor) -> tuple[bool, float]:
    """Pearson's statistic of the draws against ``probs``, below df + 6 sqrt(2 df)
    (far in the tail of the chi-square distribution: p < 1e-5 for these df)."""
    n = ids.numel()
    counts = torch.bincount(ids.reshape(-1), minlength=probs.numel()).double()
    expected = probs.double() * n
    keep = expected > 0
    stat = ((counts[keep] - expected[keep]) ** 2 / expected[keep]).sum().item()
    df = int(keep.sum()) - 1
    assert (counts[~keep] == 0).all(), 'a draw of probability 0'
    return stat < df + 6 * math.sqrt(2 * df), stat


# half precision sampling: noise and argmax in float32


@pytest.mark.parametrize('dtype', HALF, ids=str)
@pytest.mark.parametrize('temperature', [1.0, 0.5])
def test_equal_half_precision_logits_are_drawn_uniformly(dtype, temperature):
    torch.manual_seed(0)
    ids = MultiCategorical(torch.zeros(20_000, 1000, dtype=dtype)).sample(temperature)
    ok, stat = chi_square_ok(ids, torch.full((1000,), 1e-3))
    assert ok, f'chi-square {stat:.0f} on 999 df'
    assert abs((ids < 100).double().mean().item() - 0.1) < 0.01  # was 33% on the first 10% of ids in bf16


@pytest.mark.parametrize('dtype', HALF, ids=str)
@pytest.mark.parametrize('parallel', [True, False])
@pytest.mark.parametrize(('temperature', 'differentiable'), [(1.0, False), (0.7, False), (0.7, True), (1.3, True)])
def test_draws_follow_the_tempered_softmax_in_every_dtype(dtype, parallel, temperature, differentiable):
    """Two groups (6 and 5 ids, one masked): per-group chi-square against
    softmax(logits / T) in float64 of the very logits given (exact in every dtype)."""
    torch.manual_seed(1)
    n = 30_000
    logits = [torch.tensor([5.0, 0.0, 0.0, -1.0, 2.0, 0.5]), torch.tensor([0.0, 1.0, -2.0, 0.25, 3.0])]
    mask = (torch.ones(6, dtype=torch.bool), torch.tensor([True, True, False, True, True]))
    readout = Readout(None, num_discrete=(6, 5), use_parallel_multi_discrete=parallel)
    groups = tuple(g.to(dtype).expand(n, -1) for g in logits)
    sampled = readout.sample(groups, temperature=temperature, differentiable=differentiable, action_mask=mask)
    if differentiable:
        assert sampled.dtype == dtype
        ids = torch.stack([h.argmax(-1) for h in sampled.split([6, 5], -1)], -1)
    else:
        ids = sampled
    for g, (lg, m) in enumerate(zip(logits, mask)):
        probs = (lg.double() / temperature).masked_fill(~m, -math.inf).softmax(-1)
        ok, stat = chi_square_ok(ids[:, g], probs)
        assert ok, f'group {g}: chi-square {stat:.1f}'


def test_one_large_logit_among_many_is_drawn_as_often_as_its_probability():
    torch.manual_seed(2)
    logits = torch.zeros(20_000, 1000, dtype=torch.bfloat16)
    logits[:, 0] = 5.0
    share = (MultiCategorical(logits).sample() == 0).double().mean().item()
    expected = math.exp(5) / (math.exp(5) + 999)  # 0.129 (bf16 drew it 45% of the time)
    assert abs(share - expected) < 4 * math.sqrt(expected * (1 - expected) / 20_000)


@pytest.mark.parametrize('kind', ['beta', 'kumaraswamy'])
@pytest.mark.parametrize('dtype', [torch.float16, torch.bfloat16], ids=str)
def test_bounded_heads_sample_half_precision_params(kind, dtype):
    torch.manual_seed(3)
    readout = ParameterlessReadout(num_continuous=2, continuous_dist_type=kind)
    params = torch.tensor([[1.0, 2.0], [0.5, -0.5]]).to(dtype).expand(40_000, 2, 2)
    drawn = readout.sample(params)
    assert drawn.dtype == dtype and drawn.shape == (40_000, 2)
    a, b = (F.softplus(params[0].double()) + 1e-6).unbind(-1)
    dist = torch.distributions.Beta(a, b) if kind == 'beta' else torch.distributions.Kumaraswamy(a, b)
    stderr = dist.variance.sqrt() / math.sqrt(40_000)
    assert ((drawn.double().mean(0) - dist.mean).abs() < 5 * stderr + 4e-3).all()  # + the half rounding of the draws
    assert readout.mode(params).dtype == dtype


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


@pytest.mark.parametrize('sizes', [(7,), (3, 4, 3), (3, 40)], ids=['one', 'padded', 'loop'])
def test_the_hessian_of_minus_log_prob_is_the_softmax_covariance(sizes):
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
    'fused lm loss': dict(num_discrete=7),
    'logits lm loss': dict(num_discrete=7, fused_cross_entropy=False),
    'multi-discrete padded': dict(num_discrete=(3, 4)),
    'multi-discrete loop': dict(num_discrete=(3, 5), use_parallel_multi_discrete=False),
    'fused multi-discrete': dict(num_discrete=(5, 6)),  # fused below its size threshold (patched)
    'gaussian': dict(num_continuous=2),
    'squashed': dict(num_continuous=2, continuous_squashed=True),
    'beta': dict(num_continuous=2, continuous_dist_type='beta'),
}


@pytest.mark.parametrize('case', list(GRADGRAD_CASES))
@pytest.mark.parametrize('what', ['loss', 'log_prob'])
def test_gradgradcheck_on_every_loss_and_log_prob_path(case, what, monkeypatch):
    monkeypatch.setattr(readout_module, 'FUSED_MIN_GROUP_SIZE', 4 if case == 'fused multi-discrete' else readout_module.FUSED_MIN_GROUP_SIZE)
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


# torch.func


@pytest.mark.parametrize('kwargs', [dict(num_discrete=11), dict(num_discrete=(3, 4)), dict(num_discrete=(3, 40), use_parallel_multi_discrete=False), dict(num_continuous=2)],
                         ids=['lm', 'padded', 'loop', 'gaussian'])  # fmt: skip
@pytest.mark.parametrize('what', ['loss', 'log_prob'])
def test_per_sample_gradients_with_vmap_of_grad_equal_a_loop(kwargs, what):
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


# torch.no_grad: no gradient work


def test_the_fused_loss_computes_no_gradient_under_no_grad(monkeypatch):
    torch.manual_seed(8)
    readout = Readout(16, num_discrete=300)
    x, y = torch.randn(64, 16), torch.randint(0, 300, (64,))

    def refuse(*args):
        raise AssertionError('the gradient-computing fused function ran under no_grad')

    monkeypatch.setattr(losses_module._LinearCrossEntropySum, 'apply', refuse)
    with torch.no_grad():
        loss = readout(x, y)
    torch.testing.assert_close(loss, F.cross_entropy(x @ readout.embeddings.weight.T, y))
    with torch.no_grad():
        torch.testing.assert_close(readout(x.requires_grad_(), y), loss)


# meta-device construction


MODALITIES = {
    'discrete': dict(num_discrete=12, selectors=[[[0, 3, 5]], [[1, 2], [4, 6, 7, 8]]]),
    'multi-discrete': dict(num_discrete=(3, 5, 2)),
    'continuous': dict(num_continuous=4, continuous_mean_std=torch.tensor([[1.0, 2.0], [0.0, 0.5], [3.0, 1.5], [-1.0, 4.0]]), selectors=[[0, 2], [3, 1]]),
    'mixed': dict(num_discrete=9, num_continuous=4, continuous_squashed=True, selectors=[([[0, 1, 2, 3]], [0, 1, 2]), ([[4, 5], [6, 7, 8]], [3])]),
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


@pytest.mark.parametrize('name', list(MODALITIES))
def test_meta_device_construction_then_to_empty_and_load_behaves_as_built(name):
    built = EmbedAndReadout(8, **MODALITIES[name])
    with torch.device('meta'):
        meta = EmbedAndReadout(8, **MODALITIES[name])
    for module, reference in zip(meta, built):
        module.to_empty(device='cpu')
        module.load_state_dict(reference.state_dict())
    for index in ([0, 1] if 'selectors' in MODALITIES[name] else [None]):
        sel = {} if index is None else {'selector_index': index}
        inp = _inputs(name, index)
        hidden = built[0](inp, **sel)
        assert torch.equal(meta[0](inp, **sel), hidden)
        out, ref = meta[1](hidden, **sel), built[1](hidden, **sel)
        for a, b in zip(*(o if isinstance(o, tuple) else (o,) for o in (out, ref))):
            for x, y in zip(*(t if isinstance(t, tuple) else (t,) for t in (a, b))):
                assert torch.equal(x, y)
        torch.testing.assert_close(meta[1](hidden, inp, **sel), built[1](hidden, inp, **sel))
    for selector in [s for s in (*meta[1].selectors, meta[1].default_selector) if s is not None]:
        for name_, buffer in selector.named_buffers():
            assert ((buffer >= 0) & (buffer < 100)).all(), f'{name_} holds garbage: {buffer}'


# empty batches


EMPTY_CASES = {
    'lm (fused)': dict(num_discrete=7),
    'lm (logits)': dict(num_discrete=7, readout_kwargs=dict(fused_cross_entropy=False)),
    'multi-discrete': dict(num_discrete=(3, 4)),
    'multi-discrete no ignore_index': dict(num_discrete=(3, 4), readout_kwargs=dict(ignore_index=None)),
    'gaussian': dict(num_continuous=2),
    'squashed': dict(num_continuous=2, continuous_squashed=True),
    'beta': dict(num_continuous=2, continuous_dist_type='beta'),
    'kumaraswamy': dict(num_continuous=2, continuous_dist_type='kumaraswamy'),
    'regression': dict(num_continuous=2, continuous_log_var_embed=False),
    'mixed': dict(num_discrete=3, num_continuous=2),
}


@pytest.mark.parametrize('case', list(EMPTY_CASES))
@pytest.mark.parametrize('reduction', ['mean', 'masked', 'unreduced'])
def test_an_empty_batch_has_zero_loss_and_zero_gradients(case, reduction):
    kwargs = EMPTY_CASES[case]
    embed, readout = EmbedAndReadout(8, **kwargs)
    d, c = kwargs.get('num_discrete', 0), kwargs.get('num_continuous', 0)
    ids = (torch.zeros(0, dtype=torch.long) if isinstance(d, int) else torch.zeros(0, len(d), dtype=torch.long)) if d else None
    values = torch.full((0, c), 0.5) if c else None
    targets = (ids, values) if d and c else (ids if d else values)
    hidden = torch.randn(0, 8, requires_grad=True)
    options = {'masked': dict(loss_mask=torch.zeros(0, dtype=torch.bool)), 'unreduced': dict(return_unreduced_loss=True)}.get(reduction, {})
    loss = readout(hidden, targets, **options)
    parts = loss if isinstance(loss, tuple) else (loss,)
    for part in parts:
        assert torch.isfinite(part).all() and part.sum() == 0
        assert part.ndim == 0 if reduction != 'unreduced' else part.shape[0] == 0
    sum(p.sum() for p in parts).backward()
    assert readout.embeddings.weight.grad is None or (readout.embeddings.weight.grad == 0).all()
    assert hidden.grad is None or hidden.grad.shape == (0, 8)


# small integer ids


@pytest.mark.parametrize('dtype', [torch.int8, torch.uint8, torch.int16, torch.int32, torch.int64], ids=str)
def test_every_integer_id_dtype_is_accepted_everywhere(dtype):
    torch.manual_seed(10)
    embed, readout = EmbedAndReadout(8, num_discrete=(3, 5))
    ids = torch.stack([torch.randint(0, 3, (4, 6)), torch.randint(0, 5, (4, 6))], -1)
    small = ids.to(dtype)
    hidden = embed(ids)
    assert torch.equal(embed(small), hidden)
    logits = readout(hidden)
    torch.testing.assert_close(readout(hidden, small), readout(hidden, ids))
    torch.testing.assert_close(readout.log_prob(logits, small), readout.log_prob(logits, ids))
    torch.testing.assert_close(readout.calculate_loss(logits, small, return_unreduced_loss=True), -readout.log_prob(logits, ids))
    torch.testing.assert_close(MultiCategorical(list(logits)).log_prob(small), readout.log_prob(logits, ids))
    _, lm = EmbedAndReadout(8, num_discrete=7)
    y = torch.randint(0, 7, (4, 6))
    reference = F.cross_entropy(lm(hidden).reshape(-1, 7), y.reshape(-1))
    torch.testing.assert_close(lm(hidden, y.to(dtype)), reference)
    with pytest.raises(IndexError, match='id 9'):
        embed(torch.full((2, 2), 9, dtype=dtype))


# values outside a bounded head's support


def test_a_value_outside_the_support_is_an_error_or_minus_infinity():
    readout = ParameterlessReadout(num_continuous=1, continuous_dist_type='beta')
    params = torch.tensor([[[0.3, -0.2]]]).expand(4, 1, 2)
    values = torch.tensor([[2.98], [1.0], [-2.0], [2.0]])  # in units of rescale_range=(-2, 2): one outside, two on the bounds
    with pytest.raises(ValueError, match=r'sampled must lie inside the support of the BetaDistribution head, \[-2, 2\].*got 2.98'):
        readout.log_prob(params, values, rescale_range=(-2.0, 2.0))
    set_validate_args(False)
    scored = readout.log_prob(params, values, rescale_range=(-2.0, 2.0))[:, 0]
    set_validate_args(True)
    a, b = (F.softplus(params[0, 0].double()) + 1e-6).unbind(-1)
    native = (values[:, 0].double() + 2) / 4
    expected = torch.distributions.Beta(a, b).log_prob(native.clamp(1e-5, 1 - 1e-5)) - math.log(4.0)
    assert scored[0] == -math.inf
    torch.testing.assert_close(scored[1].double(), expected[1], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(scored[2:].double(), expected[2:], rtol=1e-3, atol=1e-3)  # the bounds: clipped (float32 1 - clip_eps)
    # the loss of behaviour cloning on such a value is an error too
    with pytest.raises(ValueError, match='targets must lie inside the support'):
        readout.calculate_loss(params, torch.full((4, 1), 1.2))
    # within clip_eps of a bound: clipped; soft_validate_range clamps on request
    torch.testing.assert_close(readout.log_prob(params, torch.full((4, 1), 1 + 5e-6)), readout.log_prob(params, torch.full((4, 1), 1 - 1e-5)))
    torch.testing.assert_close(readout.log_prob(params, torch.full((4, 1), 3.0), soft_validate_range=True), readout.log_prob(params, torch.full((4, 1), 1 - 1e-6)))


def test_a_squashed_value_outside_minus_one_one_is_an_error():
    readout = ParameterlessReadout(num_continuous=1, continuous_squashed=True, continuous_mean_std=torch.tensor([[10.0, 2.0]]))
    params = torch.zeros(2, 1, 2)
    with pytest.raises(ValueError, match=r'\[8, 12\]'):
        readout.log_prob(params, torch.tensor([[12.5], [10.0]]))
    assert torch.isfinite(readout.log_prob(params, torch.tensor([[12.0], [8.0]]))).all()  # the bounds: clipped inside


@pytest.mark.parametrize('kind', ['beta', 'kumaraswamy', 'squashed'])
def test_rescale_range_with_a_normaliser_keeps_samples_inside_the_range(kind):
    kwargs = dict(continuous_squashed=True) if kind == 'squashed' else dict(continuous_dist_type=kind)
    readout = ParameterlessReadout(num_continuous=2, continuous_mean_std=torch.tensor([[20.0, 4.0], [-3.0, 0.5]]), **kwargs)
    params = torch.randn(5000, 2, 2) * 2
    sampled, log_prob = readout.sample(params, rescale_range=(-2.0, 2.0), return_log_prob=True)
    assert sampled.min() >= -2.0 and sampled.max() <= 2.0  # 0.2.x-style de-normalise-then-rescale gave [16, 24]
    assert sampled.min() < -1.0 and sampled.max() > 1.0
    torch.testing.assert_close(readout.log_prob(params, sampled, rescale_range=(-2.0, 2.0)), log_prob, rtol=0, atol=1e-5)
    mode = readout.mode(params, rescale_range=(-2.0, 2.0))
    assert mode.min() >= -2.0 and mode.max() <= 2.0


@pytest.mark.parametrize('dtype', [torch.float16, torch.bfloat16], ids=str)
@pytest.mark.parametrize(('kind', 'bounds'), [('squashed', (-0.4, 0.4)), ('beta', (-0.3, 0.7)), ('beta', (-3.3, 1.1))])
def test_half_precision_samples_stay_inside_their_range_with_finite_log_probs(dtype, kind, bounds):
    """0.4 is not representable in half precision: the nearest value lies outside
    (-0.4, 0.4). Samples stay inside; every returned log-prob is finite and equals
    log_prob of the sample."""
    torch.manual_seed(11)
    kwargs = dict(continuous_squashed=True) if kind == 'squashed' else dict(continuous_dist_type=kind)
    readout = ParameterlessReadout(num_continuous=1, **kwargs)
    params = (torch.randn(20_000, 1, 2) * 3 + torch.tensor([2.0, 0.0])).to(dtype)
    sampled, log_prob = readout.sample(params, rescale_range=bounds, return_log_prob=True)
    lo, hi = bounds
    assert sampled.dtype == dtype and (sampled.float() >= lo).all() and (sampled.float() <= hi).all()
    assert torch.isfinite(log_prob).all()
    torch.testing.assert_close(readout.log_prob(params, sampled, rescale_range=bounds), log_prob, rtol=0, atol=1e-5)
    at_bound = torch.full((4, 1), hi).to(dtype)  # a bound rounded to half precision (outwards for 0.4, 0.7, 1.1)
    assert torch.isfinite(readout.log_prob(params[:4], at_bound, rescale_range=bounds)).all()


@pytest.mark.filterwarnings('ignore:`torch.jit.script` is deprecated:DeprecationWarning')  # torch.func.hessian's own internals
def test_forward_mode_and_hessians_through_the_log_prob_op():
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
