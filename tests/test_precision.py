"""Precision: half-precision modules, embeddings and logits (float16, bfloat16),
bfloat16 autocast, half embeddings into a float32 readout, float64 kept by the
fused loss, and sampling in every dtype (noise and argmax in float32: draws follow
the tempered softmax; bounded heads and rescaled samples in half precision)."""

import copy
import math

import pytest
import torch
import torch.nn.functional as F
from helpers import HALF_DTYPES
from helpers.loss_cases import BATCH, LOSS_CASES, D, LossCase, partial_mask, parts, total

from discrete_continuous_embed_readout import EmbedAndReadout, MultiCategorical, ParameterlessReadout, Readout

SAMPLING_DTYPES = [torch.float32, *HALF_DTYPES]


# half-precision modules and embeddings, autocast


TOL = {torch.float16: 2e-2, torch.bfloat16: 1.5e-1}


@pytest.mark.parametrize('dtype', HALF_DTYPES, ids=str)
@pytest.mark.parametrize('name', list(LOSS_CASES))
def test_half_precision_module_and_embeddings(name, dtype):
    """A readout cast to float16 / bfloat16 fed embeddings of that dtype: finite
    losses and gradients, close to the float32 ones, on every path."""
    case = LossCase(name)
    readout32 = case.readout(torch.float32)
    readout = copy.deepcopy(readout32).to(dtype)
    targets = case.targets(dtype=torch.float32)
    x32 = torch.randn(*BATCH, D)
    x = x32.to(dtype).requires_grad_()
    for kwargs in (dict(), dict(loss_mask=partial_mask())):
        loss, want = readout(x, targets, **kwargs), readout32(x32, targets, **kwargs)
        for got, ref in zip(parts(loss), parts(want)):
            assert torch.isfinite(got).all()
            torch.testing.assert_close(got.float(), ref, rtol=TOL[dtype], atol=TOL[dtype])
        total(loss).backward()
        assert torch.isfinite(x.grad).all() and torch.isfinite(readout.embeddings.weight.grad).all()
    # logits / params in half precision through calculate_loss
    logits = readout(x)
    loss = ParameterlessReadout(**case.kwargs).calculate_loss(logits, targets, return_unreduced_loss=True)
    for part in parts(loss):
        assert torch.isfinite(part).all()


@pytest.mark.parametrize('name', list(LOSS_CASES))
def test_bfloat16_autocast(name):
    case = LossCase(name)
    readout = case.readout(torch.float32)
    targets = case.targets(dtype=torch.float32)
    x = torch.randn(*BATCH, D, requires_grad=True)
    want = readout(x.detach(), targets)
    with torch.autocast('cpu', dtype=torch.bfloat16):
        loss = readout(x, targets)
        unreduced = readout(x, targets, return_unreduced_loss=True, loss_mask=partial_mask())
    for got, ref in zip(parts(loss), parts(want)):
        assert torch.isfinite(got) and got.dtype == torch.float32
        torch.testing.assert_close(got, ref, rtol=0.15, atol=0.15)
    for part in parts(unreduced):
        assert torch.isfinite(part).all()
    (total(loss) + total(unreduced)).backward()
    assert torch.isfinite(x.grad).all() and torch.isfinite(readout.embeddings.weight.grad).all()


@pytest.mark.parametrize('fused', [True, False])
def test_bfloat16_autocast_losses_are_float32_and_close(fused):
    embed, readout = EmbedAndReadout(32, num_discrete=300, num_continuous=2)
    readout.fused_cross_entropy = fused
    ids, values = torch.randint(0, 300, (4, 16)), torch.randn(4, 16, 2)
    reference = readout(embed((ids, values)), (ids, values))
    with torch.autocast('cpu', dtype=torch.bfloat16):
        low = readout(embed((ids, values)), (ids, values))
    for ref, got in zip(reference, low, strict=True):
        assert got.dtype == torch.float32 and torch.isfinite(got)
        torch.testing.assert_close(got, ref, atol=2e-2, rtol=1e-2)  # bf16 has 8 bits of mantissa


@pytest.mark.parametrize('dtype', HALF_DTYPES, ids=str)
@pytest.mark.parametrize(
    'name, kwargs',
    [
        ('discrete', dict()),  # fused
        ('discrete', dict(return_unreduced_loss=True)),  # not fused
        ('discrete_unfused', dict()),
        ('multi_parallel', dict()),
        ('gaussian', dict()),
        ('mixed', dict()),
    ],
    ids=['fused', 'unreduced', 'unfused', 'multi', 'gaussian', 'mixed'],
)
def test_half_embeddings_into_float32_readout_behave_alike_on_every_path(name, kwargs, dtype):
    """The fused loss accepts half-precision embeddings in a float32 readout (it casts
    them): every other loss path must too, or reject them with a clear TypeError /
    ValueError (SPEC §10), not a bare matmul RuntimeError."""
    case = LossCase(name)
    readout = case.readout(torch.float32)
    x = torch.randn(*BATCH, D).to(dtype).requires_grad_()
    try:
        loss = readout(x, case.targets(dtype=torch.float32), **kwargs)
    except (TypeError, ValueError) as err:
        assert 'embed' in str(err)
        return
    for part in parts(loss):
        assert torch.isfinite(part).all()
    total(loss).backward()
    assert torch.isfinite(x.grad).all()


# float64 kept by the fused loss


def test_fused_discrete_loss_keeps_float64_precision():
    """A float64 readout's fused loss must be a float64 loss equal to the unfused one
    (gradcheck of the fused path cannot pass otherwise)."""
    readout = LossCase('discrete').readout(torch.float64)
    x, y = torch.randn(*BATCH, D, dtype=torch.float64), torch.randint(0, 7, BATCH)
    fused = readout(x, y)
    readout.fused_cross_entropy = False
    unfused = readout(x, y)
    assert fused.dtype == torch.float64
    torch.testing.assert_close(fused, unfused, rtol=1e-12, atol=1e-12)


# sampling in every dtype: noise and argmax in float32


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


@pytest.mark.parametrize('dtype', SAMPLING_DTYPES, ids=str)
@pytest.mark.parametrize('temperature', [1.0, 0.5])
def test_equal_half_precision_logits_are_drawn_uniformly(dtype, temperature):
    torch.manual_seed(0)
    ids = MultiCategorical(torch.zeros(20_000, 1000, dtype=dtype)).sample(temperature)
    ok, stat = chi_square_ok(ids, torch.full((1000,), 1e-3))
    assert ok, f'chi-square {stat:.0f} on 999 df'
    assert abs((ids < 100).double().mean().item() - 0.1) < 0.01  # was 33% on the first 10% of ids in bf16


@pytest.mark.parametrize('dtype', SAMPLING_DTYPES, ids=str)
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
