"""Losses: cross entropy against torch, ignore_index and loss masks (means over the
kept entries), multi-discrete and mixed reductions, the unreduced shapes, empty,
fully masked and fully ignored batches (exactly 0, with zero gradients), and the
fused (chunked, logits-free) cross entropy of Readout.forward against the logits path."""

import math

import pytest
import torch
import torch.nn.functional as F
from helpers import MEAN_STD, bounded_log_density, normal_of, pack, randint_groups
from helpers.internals import fused_path_taken, record_fused_losses, record_plain_losses, set_plain_loss_layout
from helpers.loss_cases import BATCH, LOSS_CASES, D, LossCase, parts, split, total
from torch.func import functional_call

from discrete_continuous_embed_readout import EmbedAndReadout, ParameterlessReadout, Readout

# hand-worked: logits (0, ln 3) give p = (1/4, 3/4), so nll(0) = ln 4 and nll(1) = ln 4/3
LOGITS = torch.tensor([[0.0, math.log(3.0)]] * 3)
NLL0, NLL1 = math.log(4.0), math.log(4.0 / 3.0)


# cross entropy, ignore_index and loss masks


@pytest.mark.parametrize('fused', [True, 'auto', False])
def test_cross_entropy_matches_torch(fused):
    readout = Readout(16, num_discrete=100, fused_cross_entropy=fused)
    x, y = torch.randn(4, 9, 16), torch.randint(0, 100, (4, 9))
    torch.testing.assert_close(readout(x, y), F.cross_entropy(readout(x).reshape(-1, 100), y.reshape(-1)))


def test_ignore_index_hand_worked():
    readout = ParameterlessReadout(num_discrete=2)
    loss = readout.calculate_loss(LOGITS, torch.tensor([0, 1, -1]))
    torch.testing.assert_close(loss, torch.tensor((NLL0 + NLL1) / 2))
    unreduced = readout.calculate_loss(LOGITS, torch.tensor([0, 1, -1]), return_unreduced_loss=True)
    torch.testing.assert_close(unreduced, torch.tensor([NLL0, NLL1, 0.0]))


def test_custom_ignore_index():
    readout = ParameterlessReadout(num_discrete=2, ignore_index=-100)
    loss = readout.calculate_loss(LOGITS, torch.tensor([-100, 1, 0]))
    torch.testing.assert_close(loss, torch.tensor((NLL1 + NLL0) / 2))


def test_loss_mask_hand_worked():
    readout = ParameterlessReadout(num_discrete=2)
    mask = torch.tensor([True, False, True])
    loss = readout.calculate_loss(LOGITS, torch.tensor([0, 1, 1]), mask=mask)
    torch.testing.assert_close(loss, torch.tensor((NLL0 + NLL1) / 2))
    loss = readout.calculate_loss(LOGITS, torch.tensor([0, 1, -1]), mask=mask)  # mask and ignore together
    torch.testing.assert_close(loss, torch.tensor(NLL0))
    unreduced = readout.calculate_loss(LOGITS, torch.tensor([0, 1, 1]), mask=mask, return_unreduced_loss=True)
    torch.testing.assert_close(unreduced, torch.tensor([NLL0, 0.0, NLL1]))


@pytest.mark.parametrize('parallel', [True, False])
def test_multi_discrete_mean_is_over_kept_entries(parallel):
    sizes = (3, 5)
    readout = ParameterlessReadout(num_discrete=sizes, use_parallel_multi_discrete=parallel)
    logits = (torch.randn(4, 3), torch.randn(4, 5))
    targets = randint_groups(sizes, (4,))
    targets[0, 1] = -1
    mask = torch.tensor([True, True, False, True])
    ce = torch.stack([F.cross_entropy(g, targets[:, i].clamp(min=0), reduction='none') for i, g in enumerate(logits)], -1)
    keep = mask[:, None] & (targets != -1)
    torch.testing.assert_close(readout.calculate_loss(logits, targets, mask=mask), ce[keep].mean())


@pytest.mark.parametrize('parallel', [True, False])
def test_a_two_group_loss_is_not_read_as_a_mixed_pair(parallel):
    embed, readout = EmbedAndReadout(16, num_discrete=(3, 4), use_parallel_multi_discrete=parallel)
    x, targets = torch.randn(2, 5, 16), randint_groups((3, 4), (2, 5))
    logits = readout(x)
    expected = torch.stack([F.cross_entropy(g.transpose(1, -1), targets[..., i], reduction='none') for i, g in enumerate(logits)], -1).mean()
    torch.testing.assert_close(readout(x, targets), expected)


def test_ignore_index_none_works_on_the_sequential_path():
    readout = ParameterlessReadout(num_discrete=(3, 5), ignore_index=None, use_parallel_multi_discrete=False)
    logits = (torch.randn(4, 3), torch.randn(4, 5))
    targets = randint_groups((3, 5), (4,))
    mask = torch.tensor([True, True, False, True])
    ce = torch.stack([F.cross_entropy(g, targets[:, i], reduction='none') for i, g in enumerate(logits)], -1)
    torch.testing.assert_close(readout.calculate_loss(logits, targets, mask=mask), ce[mask].mean())


# mixed and continuous reductions


def test_mixed_loss_reduces_each_part_on_its_own():
    readout = ParameterlessReadout(num_discrete=4, num_continuous=2)
    logits, params = torch.randn(6, 4), torch.randn(6, 2, 2)
    ids, values = torch.randint(0, 4, (6,)), torch.randn(6, 2)
    loss = readout.calculate_loss((logits, params), (ids, values))
    normal = torch.distributions.Normal(params[..., 0], params[..., 1].mul(0.5).exp())
    torch.testing.assert_close(loss.discrete, F.cross_entropy(logits, ids))
    torch.testing.assert_close(loss.continuous, -normal.log_prob(values).mean())
    unreduced = readout.calculate_loss((logits, params), (ids, values), return_unreduced_loss=True)
    assert unreduced.discrete.shape == (6,) and unreduced.continuous.shape == (6, 2)


def test_continuous_loss_with_mean_std_is_in_original_units():
    mean_std = MEAN_STD[:2]
    readout = ParameterlessReadout(num_continuous=2, continuous_mean_std=mean_std)
    params, values = torch.randn(7, 2, 2), torch.randn(7, 2) * 2
    mean = params[..., 0] * mean_std[:, 1] + mean_std[:, 0]
    std = params[..., 1].mul(0.5).exp() * mean_std[:, 1]
    torch.testing.assert_close(readout.calculate_loss(params, values), -torch.distributions.Normal(mean, std).log_prob(values).mean())


def test_masked_continuous_means_are_over_entries():
    readout = ParameterlessReadout(num_continuous=3)
    params, targets = torch.randn(4, 3, 2), torch.randn(4, 3)
    mask = torch.tensor([True, False, True, False])
    nll = -torch.distributions.Normal(params[..., 0], params[..., 1].mul(0.5).exp()).log_prob(targets)
    loss = readout.calculate_loss(params, targets, mask=mask)
    torch.testing.assert_close(loss, nll[mask].mean())


# unreduced losses


@pytest.mark.parametrize('parallel', [True, False])
@pytest.mark.parametrize('sizes', [(7,), (3, 4, 2)])
def test_unreduced_loss_has_the_log_prob_shape(parallel, sizes):
    num_discrete = sizes[0] if len(sizes) == 1 else sizes
    readout = ParameterlessReadout(num_discrete=num_discrete, use_parallel_multi_discrete=parallel)
    logits = tuple(torch.randn(2, 3, n) for n in sizes)
    logits = logits[0] if len(sizes) == 1 else logits
    targets = randint_groups(sizes, (2, 3))
    targets = targets[..., 0] if len(sizes) == 1 else targets
    unreduced = readout.calculate_loss(logits, targets, return_unreduced_loss=True)
    torch.testing.assert_close(unreduced, -readout.log_prob(logits, targets))


# empty, fully masked and fully ignored batches: exactly 0, zero gradients


def test_everything_masked_gives_zero_and_zero_gradients():
    readout = Readout(8, num_discrete=5, num_continuous=2)
    x = torch.randn(3, 8, requires_grad=True)
    targets = (torch.full((3,), -1), torch.randn(3, 2))
    loss = readout(x, targets, loss_mask=torch.tensor([True, True, True]))
    assert loss.discrete.item() == 0.0
    loss = readout(x, (torch.randint(0, 5, (3,)), torch.randn(3, 2)), loss_mask=torch.zeros(3, dtype=torch.bool))
    assert loss.discrete.item() == 0.0 and loss.continuous.item() == 0.0
    (loss.discrete + loss.continuous).backward()
    assert torch.count_nonzero(x.grad) == 0


@pytest.mark.parametrize('via', ['forward', 'calculate_loss'])
@pytest.mark.parametrize('unreduced', [False, True], ids=['reduced', 'unreduced'])
@pytest.mark.parametrize('name', list(LOSS_CASES))
def test_fully_masked_batch_gives_zero_loss_and_zero_gradients(name, unreduced, via):
    case = LossCase(name)
    targets = case.targets(dtype=torch.float32)
    readout = case.readout(torch.float32, table=via == 'forward')
    w = case.readout(torch.float32).embeddings.weight.detach().clone().requires_grad_()
    x = torch.randn(*BATCH, D, requires_grad=True)
    none = torch.zeros(BATCH, dtype=torch.bool)
    if via == 'forward':
        out = functional_call(readout, {'embeddings.weight': w}, (x, targets), dict(loss_mask=none, return_unreduced_loss=unreduced))
    else:
        out = readout.calculate_loss(case.as_logits(*case.outputs(w, x)), targets, mask=none, return_unreduced_loss=unreduced)
    for part in parts(out):
        assert torch.count_nonzero(part) == 0 and torch.isfinite(part).all()
        if not unreduced:
            assert part.shape == () and part.item() == 0.0
    total(out).backward()
    for grad in (x.grad, w.grad):
        assert grad is not None and torch.isfinite(grad).all() and torch.count_nonzero(grad) == 0


@pytest.mark.parametrize('via', ['forward', 'calculate_loss'])
@pytest.mark.parametrize('name', ['discrete', 'discrete_unfused', 'multi_parallel', 'multi_sequential', 'mixed'])
def test_all_targets_ignored_gives_zero_discrete_loss_and_zero_gradients(name, via):
    case = LossCase(name)
    targets = case.targets(dtype=torch.float32)
    d_t, c_t = split(case, targets)
    d_t.fill_(-1)
    readout = case.readout(torch.float32, table=via == 'forward')
    w = case.readout(torch.float32).embeddings.weight.detach().clone().requires_grad_()
    x = torch.randn(*BATCH, D, requires_grad=True)
    if via == 'forward':
        out = functional_call(readout, {'embeddings.weight': w}, (x, pack(d_t, c_t)))
    else:
        out = readout.calculate_loss(case.as_logits(*case.outputs(w, x)), pack(d_t, c_t))
    d_loss = out[0] if case.C else out
    assert d_loss.shape == () and d_loss.item() == 0.0
    d_loss.backward()
    for grad in (x.grad, w.grad):
        assert grad is None or (torch.isfinite(grad).all() and torch.count_nonzero(grad) == 0)


EMPTY_CASES = {
    'lm (fused)': dict(num_discrete=7, readout_kwargs=dict(fused_cross_entropy=True)),
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


# the fused (chunked, logits-free) cross entropy against the logits path


FUSED_CASES = {
    'lm': (dict(num_discrete=50), lambda b: torch.randint(0, 50, b), {}),
    'ignore_index': (dict(num_discrete=50), lambda b: torch.randint(-1, 50, b), {}),
    'custom_ignore': (dict(num_discrete=50, readout_kwargs=dict(ignore_index=7)), lambda b: torch.randint(0, 50, b), {}),
    'no_ignore': (dict(num_discrete=50, readout_kwargs=dict(ignore_index=None)), lambda b: torch.randint(0, 50, b), {}),
    'loss_mask': (dict(num_discrete=50), lambda b: torch.randint(0, 50, b), dict(loss_mask=True)),
    'weight_tie': (dict(num_discrete=50, weight_tie=True), lambda b: torch.randint(0, 50, b), {}),
    'selector': (dict(num_discrete=50, selectors=[[[3, 9, 4, 20, 1]]]), lambda b: torch.randint(0, 5, b), {}),
    'multi_discrete': (dict(num_discrete=(6, 9, 4)), lambda b: randint_groups((6, 9, 4), b), {}),
    'mixed': (dict(num_discrete=50, num_continuous=3), lambda b: (torch.randint(-1, 50, b), torch.randn(*b, 3)), dict(loss_mask=True)),
    'mixed_selector': (
        dict(num_discrete=50, num_continuous=3, selectors=[([[7, 2, 30]], [2, 0])]),
        lambda b: (torch.randint(0, 3, b), torch.randn(*b, 2)),
        {},
    ),
}


def _loss_and_grads(embed, readout, ids, targets, kwargs):
    loss = readout(embed(ids), targets, **kwargs)
    total = sum(loss) if isinstance(loss, tuple) else loss
    params = list({*embed.parameters(), *readout.parameters()})
    return loss, torch.autograd.grad(total, params)


@pytest.mark.parametrize('case', list(FUSED_CASES))
def test_fused_loss_agrees_with_the_logits_path(case, small_fused_chunks):
    build_kwargs, make_targets, call = FUSED_CASES[case]
    embed, readout = EmbedAndReadout(16, **build_kwargs)
    batch = (3, 7)
    targets = make_targets(batch)
    ids = targets[0].clamp(min=0) if isinstance(targets, tuple) else targets.clamp(min=0)
    ids = (ids, targets[1]) if isinstance(targets, tuple) else ids
    kwargs = {'loss_mask': torch.rand(batch) > 0.3} if call.get('loss_mask') else {}
    assert fused_path_taken(readout, embed(ids))
    fused, fused_grads = _loss_and_grads(embed, readout, ids, targets, kwargs)
    readout.fused_cross_entropy = False
    plain, plain_grads = _loss_and_grads(embed, readout, ids, targets, kwargs)
    for a, b in zip((fused, *fused_grads), (plain, *plain_grads), strict=True):
        torch.testing.assert_close(torch.as_tensor(a) if not isinstance(a, tuple) else torch.stack(a), torch.as_tensor(b) if not isinstance(b, tuple) else torch.stack(b), atol=1e-6, rtol=1e-5)


def test_fused_loss_matches_cross_entropy_without_gradients(small_fused_chunks):
    readout = Readout(16, num_discrete=40)
    x, y = torch.randn(5, 9, 16), torch.randint(-1, 40, (5, 9))
    with torch.no_grad():
        loss = readout(x, y)
    torch.testing.assert_close(loss, F.cross_entropy(readout(x).reshape(-1, 40), y.reshape(-1), ignore_index=-1))


def test_fused_loss_checks_targets(small_fused_chunks):
    readout = Readout(16, num_discrete=40)
    with pytest.raises(IndexError, match='targets: id 40'):
        readout(torch.randn(2, 16), torch.tensor([0, 40]))


def test_the_fused_loss_computes_no_gradient_under_no_grad(no_fused_gradient_function):
    torch.manual_seed(8)
    readout = Readout(16, num_discrete=300, fused_cross_entropy=True)
    x, y = torch.randn(64, 16), torch.randint(0, 300, (64,))
    with torch.no_grad():
        loss = readout(x, y)
    torch.testing.assert_close(loss, F.cross_entropy(x @ readout.embeddings.weight.T, y))
    with torch.no_grad():
        torch.testing.assert_close(readout(x.requires_grad_(), y), loss)


# which path forward's loss takes: fused_cross_entropy='auto' (the default) by sizes,
# True wherever the fused loss applies, False never


def test_auto_leaves_a_policy_heads_loss_to_the_logits_and_true_forces_the_fused_loss(monkeypatch):
    fused_calls = record_fused_losses(monkeypatch)
    readout = Readout(16, num_discrete=5)
    x, y = torch.randn(64, 16, requires_grad=True), torch.randint(0, 5, (64,))
    reference = F.cross_entropy(x @ readout.embeddings.weight.T, y)
    assert readout.fused_cross_entropy == 'auto'
    torch.testing.assert_close(readout(x, y), reference)
    assert fused_calls == []  # 5 actions: the logits path is 1.6-3x faster
    readout.fused_cross_entropy = True
    torch.testing.assert_close(readout(x, y), reference)
    assert fused_calls == [(64, 16)]
    readout.fused_cross_entropy = False
    torch.testing.assert_close(readout(x, y), reference)
    assert len(fused_calls) == 1


def test_auto_fuses_a_language_models_loss():
    readout = Readout(16, num_discrete=16384)
    x, y = torch.randn(2, 128, 16, requires_grad=True), torch.randint(-1, 16384, (2, 128))
    assert fused_path_taken(readout, x)  # 256 tokens x 16k ids: faster fused
    loss = readout(x, y)
    torch.testing.assert_close(loss, F.cross_entropy((x @ readout.embeddings.weight.T).reshape(-1, 16384), y.reshape(-1), ignore_index=-1))
    assert not fused_path_taken(readout, x[:, :64])  # 128 tokens: too few to pay


@pytest.mark.parametrize(('tokens', 'vocab', 'fused'), [
    (1, 5, False), (4096, 5, False), (255, 1 << 16, False), (256, 1 << 14, True), (1024, 4096, True), (1024, 1024, False),
    (128, 1 << 17, True),  # 64 MiB of float32 logits: fused, although slower at 128 tokens
    (128, (1 << 17) - 1, False),
])  # fmt: skip
def test_auto_fuses_from_256_tokens_and_4m_logits_or_64_mib_of_logits(tokens, vocab, fused):
    with torch.device('meta'):  # a table without memory: only the sizes decide
        readout = Readout(8, num_discrete=vocab)
    assert fused_path_taken(readout, torch.empty(tokens, 8)) == fused
    # on an accelerator (the meta device stands in) only the memory counts: the fused
    # path was measured slower than the logits path on a GPU
    assert fused_path_taken(readout, torch.empty(tokens, 8, device='meta')) == (tokens * vocab * 4 >= 64 << 20)


def test_fused_cross_entropy_takes_true_false_or_auto():
    with pytest.raises(TypeError, match='fused_cross_entropy'):
        Readout(8, num_discrete=5, fused_cross_entropy='always')
    readout = Readout(8, num_discrete=5)
    with pytest.raises(TypeError, match="fused_cross_entropy must be True, False or 'auto', got str 'always'"):
        readout.fused_cross_entropy = 'always'
    assert readout.fused_cross_entropy == 'auto'


# the plain route: forward's loss without masks or options, straight from the embeddings
# (its logits row-major, or class-major from a batch size on: both layouts are tested)

LAYOUTS = ['row-major', 'class-major']


PLAIN_HEADS = {
    'discrete': dict(num_discrete=5),
    'discrete, group axis kept': dict(num_discrete=5, auto_squeeze_single_output=False),
    'discrete, soft-capped': dict(num_discrete=5, logit_softcap=0.5),
    'groups': dict(num_discrete=(3, 5, 7)),
    'mixed gaussian': dict(num_discrete=5, num_continuous=2),
    'mixed squashed, bound units': dict(num_discrete=5, num_continuous=2, continuous_squashed=True, continuous_range=(-2.0, 2.0)),
    'beta': dict(num_continuous=2, continuous_dist_type='beta'),
}


def plain_reference(weight, x, sizes, ids, values, kwargs):
    """float64 ``(discrete mean, continuous mean)``: the cross entropy summed over
    groups and entries over the count of ids not -1, and the mean negative log-density."""
    out = x.double() @ weight.double().T
    d_loss = c_loss = None
    if sizes:
        ids = ids.reshape(*x.shape[:-1], len(sizes))
        logits = out[..., : sum(sizes)]
        cap = kwargs.get('logit_softcap')
        groups = (cap * torch.tanh(logits / cap) if cap else logits).split(sizes, -1)
        sums = sum(F.cross_entropy(g.reshape(-1, g.shape[-1]), ids[..., i].reshape(-1), ignore_index=-1, reduction='sum') for i, g in enumerate(groups))
        d_loss = sums / (ids != -1).sum()
    if values is not None:
        c = values.shape[-1]
        flat = out[..., sum(sizes) :]
        params = torch.stack((flat[..., :c], flat[..., c:]), -1)
        if 'continuous_range' in kwargs:
            density = bounded_log_density('squashed', params, values, -2.0, 2.0)
        elif kwargs.get('continuous_dist_type') == 'beta':
            density = bounded_log_density('beta', params, values, 0.0, 1.0)
        else:
            density = normal_of(params).log_prob(values.double())
        c_loss = -density.mean()
    return d_loss, c_loss


@pytest.mark.parametrize('layout', LAYOUTS)
@pytest.mark.parametrize('batch', [(1,), (4, 3)])
@pytest.mark.parametrize('head', list(PLAIN_HEADS))
def test_the_plain_route_matches_cross_entropy_and_densities_with_gradients(head, batch, layout, monkeypatch):
    kwargs = PLAIN_HEADS[head]
    set_plain_loss_layout(monkeypatch, layout)
    taken = record_plain_losses(monkeypatch)
    torch.manual_seed(0)
    readout = Readout(8, **kwargs)
    with torch.no_grad():
        readout.embeddings.weight.normal_(0, 0.5)
    sizes = kwargs.get('num_discrete', ())
    sizes = [sizes] if isinstance(sizes, int) else list(sizes)
    ids = randint_groups(sizes, batch) if sizes else None
    if ids is not None and len(sizes) == 1:
        ids[(0,) * ids.ndim] = -1 if len(batch) > 1 else 0  # the ignore_index: left out of the mean
        ids = ids if not kwargs.get('auto_squeeze_single_output', True) else ids[..., 0]
    values = None
    if kwargs.get('num_continuous'):
        values = torch.rand(*batch, 2) * 0.9 + 0.05 if 'continuous_dist_type' in kwargs else torch.rand(*batch, 2) * 3.6 - 1.8
    targets = values if ids is None else ids if values is None else (ids, values)
    x = torch.randn(*batch, 8, requires_grad=True)
    x64, w64 = x.detach().double().requires_grad_(), readout.embeddings.weight.detach().double().requires_grad_()
    loss = readout(x, targets)
    expected = [part for part in plain_reference(w64, x64, sizes, ids, values, kwargs) if part is not None]
    assert taken == [True]
    losses = list(loss) if isinstance(loss, tuple) else [loss]
    for got, want in zip(losses, expected, strict=True):
        torch.testing.assert_close(got.double(), want, rtol=1e-5, atol=1e-5)
    sum(losses).backward()
    sum(expected).backward()
    torch.testing.assert_close(x.grad.double(), x64.grad, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(readout.embeddings.weight.grad.double(), w64.grad, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize('layout', LAYOUTS)
def test_the_plain_route_means_groups_over_their_kept_ids(layout, monkeypatch):
    set_plain_loss_layout(monkeypatch, layout)
    # group 0 has two ignored ids, group 2 one: the mean is over the 9 kept entries,
    # not the mean of the groups' means
    taken = record_plain_losses(monkeypatch)
    readout = Readout(8, num_discrete=(3, 5, 7))
    x, ids = torch.randn(4, 8), randint_groups((3, 5, 7), (4,))
    ids[0, 0] = ids[1, 0] = ids[3, 2] = -1
    logits = readout(x)
    ce = torch.stack([F.cross_entropy(g, ids[:, i].clamp(min=0), reduction='none') for i, g in enumerate(logits)], -1)
    torch.testing.assert_close(readout(x, ids), ce[ids != -1].mean())
    assert taken == [True]


@pytest.mark.parametrize('sizes, bad, message', [
    ((3, 5, 7), [[4, 0, 0]], r'targets: id 4 at index \(2, 0\) is out of range for group 0; expected 0 <= id < 3 or ignore_index -1'),  # inside the padding
    ((3, 5, 7), [[0, 9, 0]], r'targets: id 9 at index \(2, 1\) is out of range for group 1; expected 0 <= id < 5'),
    ((3, 5, 7), [[0, 0, -2]], r'targets: id -2 at index \(2, 2\) is out of range for group 2'),
    ((5,), [5], r'targets: id 5 at index \(2,\) is out of range; expected 0 <= id < 5 or ignore_index -1'),
    ((5,), [-100], r"targets: id -100 at index \(2,\) is out of range.*Hugging Face's label padding"),
])  # fmt: skip
@pytest.mark.parametrize('layout', LAYOUTS)
def test_the_plain_route_names_an_id_out_of_range(sizes, bad, message, layout, monkeypatch):
    set_plain_loss_layout(monkeypatch, layout)
    taken = record_plain_losses(monkeypatch)
    readout = Readout(8, num_discrete=sizes)
    ids = torch.tensor([[0] * len(sizes)] * 2 if len(sizes) > 1 else [0, 0])
    ids = torch.cat([ids, torch.tensor(bad)])
    with pytest.raises(IndexError, match=message):
        readout(torch.randn(3, 8), ids)
    readout(torch.randn(2, 8), ids[:2])
    assert taken[-1]  # the route takes such calls (an id in a group's padding scores -inf: it leaves that call to the general route)


@pytest.mark.parametrize('layout', LAYOUTS)
def test_the_plain_route_leaves_non_finite_losses_to_the_general_route(layout, monkeypatch):
    set_plain_loss_layout(monkeypatch, layout)
    taken = record_plain_losses(monkeypatch)
    readout = Readout(8, num_discrete=5)
    ignored = readout(torch.randn(3, 8), torch.full((3,), -1))
    assert ignored.item() == 0.0
    x = torch.randn(3, 8)
    x[1, 0] = float('nan')
    assert torch.isnan(readout(x, torch.zeros(3, dtype=torch.long)))
    assert taken == [False, False]
