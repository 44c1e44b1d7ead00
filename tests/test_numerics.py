"""Numerical edges, through the table and on logits / params: discrete logits up to
+-1e4 (float32, float16, bfloat16); squashed targets at +-(1 - 1e-7) and +-1;
gaussian log-variances at the edges of ``log_var_clamp_range`` and far beyond it
(with and without a clamp range); beta / kumaraswamy targets and samples at their
clip bounds; continuous params up to +-1e4. Losses, gradients, entropy, KL,
log_prob and samples stay finite, and equal independent computations where those
are finite."""

import math

import pytest
import torch
import torch.nn.functional as F
from helpers import CLIP_EPS, HALF_DTYPES, LOG_2PI, gaussian_nll, soft_clamp_log_var
from helpers.loss_cases import BATCH, CLAMP, D, LossCase, partial_mask, parts, split, total

from discrete_continuous_embed_readout import ParameterlessReadout, Readout

# discrete logits up to +-1e4, in float32 / float16 / bfloat16


DTYPES = [torch.float32, *HALF_DTYPES]


DISCRETE_PATHS = ['discrete', 'discrete_unfused', 'multi_parallel', 'multi_sequential', 'multi_two_groups']


def extreme_readout(case, dtype):
    """A readout whose logits are exact multiples of 2500 in [-1e4, 1e4]: table rows
    of +-1 and embeddings of +-2500 (all representable in float16 and bfloat16)."""
    readout = case.readout(torch.float32)
    with torch.no_grad():
        readout.embeddings.weight.copy_(torch.randint(0, 2, readout.embeddings.weight.shape) * 2.0 - 1.0)
    x = (torch.randint(0, 2, (*BATCH, D)) * 2.0 - 1.0) * 2500.0
    row = readout.embeddings.weight.detach()[0]
    x[0, 0] = row * 2500.0  # id 0 of group 0 at +1e4 ...
    x[0, 1] = -row * 2500.0  # ... and at -1e4
    return readout.to(dtype), x.to(dtype)


@pytest.mark.parametrize('via', ['forward', 'calculate_loss'])
@pytest.mark.parametrize('dtype', DTYPES, ids=str)
@pytest.mark.parametrize('name', DISCRETE_PATHS)
def test_logits_up_to_1e4_give_finite_losses_and_gradients(name, dtype, via):
    case = LossCase(name)
    readout, x = extreme_readout(case, dtype)
    x.requires_grad_(True)
    logits = readout(x)
    assert max(g.detach().abs().max().item() for g in parts(logits)) >= 9000
    targets = case.targets()
    targets[0, 1] = 0  # the target's logit is -1e4: a loss of ~2e4
    if via == 'forward':
        loss = readout(x, targets)
    else:
        loss = ParameterlessReadout(**case.kwargs).calculate_loss(logits, targets)
    assert torch.isfinite(loss) and loss.item() > 1000
    loss.backward()
    assert torch.isfinite(x.grad).all() and torch.isfinite(readout.embeddings.weight.grad).all()
    # the value: cross entropy of the same (exactly representable) logits in float64
    groups = [g.detach().double() for g in parts(logits)]
    ids = targets.unsqueeze(-1) if case.single else targets
    want = torch.stack(
        [F.cross_entropy(g.reshape(-1, g.shape[-1]), ids[..., i].reshape(-1), reduction='none') for i, g in enumerate(groups)]
    ).mean()
    torch.testing.assert_close(loss.double(), want, rtol=1e-5, atol=1e-3)
    # fully masked: exactly 0 with zero gradients
    x.grad = readout.embeddings.weight.grad = None
    none = torch.zeros(BATCH, dtype=torch.bool)
    if via == 'forward':
        loss = readout(x, targets, loss_mask=none)
    else:
        loss = ParameterlessReadout(**case.kwargs).calculate_loss(readout(x), targets, mask=none)
    assert loss.item() == 0.0
    loss.backward()
    for grad in (x.grad, readout.embeddings.weight.grad):
        assert torch.isfinite(grad).all() and torch.count_nonzero(grad) == 0


@pytest.mark.parametrize('dtype', DTYPES, ids=str)
@pytest.mark.parametrize('name', ['discrete', 'multi_parallel', 'multi_sequential'])
def test_entropy_kl_log_prob_sample_finite_for_logits_up_to_1e4(name, dtype):
    case = LossCase(name)
    readout = ParameterlessReadout(**case.kwargs)
    logits = tuple((torch.randint(-1, 2, (*BATCH, n)) * 1e4).to(dtype).requires_grad_() for n in case.sizes)
    logits = logits[0] if case.single else logits
    other = tuple(-g.detach() for g in parts(logits))
    other = other[0] if case.single else other
    sampled = readout.sample(logits)
    outs = [
        readout.log_prob(logits, sampled), readout.entropy(logits), readout.kl_div(logits, other),
        readout.log_prob(logits, case.targets()), readout.sample(logits, differentiable=True),
    ]  # fmt: skip
    for out in outs:
        assert torch.isfinite(out).all()
    # only ids tied at the max are drawn (at most 7 ties), never one 1e4 below it
    assert (readout.log_prob(logits, sampled) >= -math.log(7) - 1e-3).all()
    sum(o.float().sum() for o in outs).backward()
    for g in parts(logits):
        assert torch.isfinite(g.grad).all()


# squashed gaussian at the edges of (-1, 1)


EDGE = 1 - 1e-7


@pytest.mark.parametrize('dtype', [torch.float32, torch.float64], ids=str)
@pytest.mark.parametrize('name', ['squashed', 'squashed_clamped', 'squashed_mean_std'])
def test_squashed_targets_at_the_edges_give_finite_losses_and_gradients(name, dtype):
    case = LossCase(name)
    edges = torch.tensor([EDGE, -EDGE, 1.0, -1.0, 0.0, 0.5], dtype=dtype)
    unit = edges[torch.arange(BATCH[0] * BATCH[1] * case.C) % len(edges)].reshape(*BATCH, case.C)
    targets = unit
    if case.mean_std is not None:
        mean, std = case.mean_std.to(dtype).unbind(-1)
        targets = unit * std + mean
    # through the table
    readout = case.readout(dtype)
    x = torch.randn(*BATCH, D, dtype=dtype, requires_grad=True)
    loss = readout(x, targets, return_unreduced_loss=True)
    assert torch.isfinite(loss).all()
    loss.sum().backward()
    assert torch.isfinite(x.grad).all() and torch.isfinite(readout.embeddings.weight.grad).all()
    # on params, including extreme ones (the clamp range or a moderate log-var keeps the density finite)
    plain = ParameterlessReadout(**case.kwargs)
    for mean_value, log_var in ((0.0, 0.0), (8.0, -2.0), (-1e4, 1.0), (1e4, 1.0), (0.0, 1e4 if case.clamp else 20.0)):
        params = torch.tensor([mean_value, log_var], dtype=dtype).expand(*BATCH, case.C, 2).clone().requires_grad_()
        loss = plain.calculate_loss(params, targets, return_unreduced_loss=True)
        assert torch.isfinite(loss).all(), (mean_value, log_var)
        loss.sum().backward()
        assert torch.isfinite(params.grad).all(), (mean_value, log_var)
        lp = plain.log_prob(params, targets)
        torch.testing.assert_close(lp, -loss)


@pytest.mark.parametrize('name', ['squashed', 'squashed_clamped', 'squashed_mean_std'])
def test_squashed_sample_log_prob_entropy_kl_finite_at_extreme_means(name):
    case = LossCase(name)
    readout = ParameterlessReadout(**case.kwargs)
    means = torch.tensor([-1e4, -30.0, 0.0, 30.0, 1e4, 9.0])
    params = torch.stack((means.reshape(*BATCH, 1).expand(*BATCH, case.C), torch.full((*BATCH, case.C), -1.0)), -1)
    params.requires_grad_()
    sampled, lp = readout.sample(params, return_log_prob=True)
    if case.mean_std is None:
        assert ((sampled > -1) & (sampled < 1)).all()
    else:
        # clipped inside (-1, 1) in native units; de-normalising can round onto the bound
        # in original units ((1 - 2**-23) * 2 + 3 is 5.0 in float32): closed interval here,
        # and the log-density there must still be finite (below)
        mean, std = case.mean_std.unbind(-1)
        assert ((sampled >= mean - std) & (sampled <= mean + std)).all()
    outs = [lp, readout.log_prob(params, sampled), readout.entropy(params), readout.kl_div(params, params.flip(0))]
    outs.append(readout.sample(params, differentiable=True))
    for out in outs:
        assert torch.isfinite(out).all()
    sum(o.sum() for o in outs).backward()
    assert torch.isfinite(params.grad).all()


# gaussian log-variance: at the clamp range's edges, far beyond, and unclamped


@pytest.mark.parametrize('raw_log_var', [CLAMP[0], CLAMP[1], -1e4, 1e4, -1e30, 1e30])
@pytest.mark.parametrize('squashed', [False, True], ids=['gaussian', 'squashed'])
def test_clamped_log_var_at_and_beyond_the_edges(raw_log_var, squashed):
    kwargs = dict(num_continuous=2, continuous_squashed=squashed, continuous_dist_kwargs=dict(log_var_clamp_range=CLAMP))
    readout = ParameterlessReadout(**kwargs)
    params = torch.stack((torch.randn(*BATCH, 2) * 0.5, torch.full((*BATCH, 2), raw_log_var)), -1).requires_grad_()
    targets = torch.empty(*BATCH, 2).uniform_(-0.9, 0.9)
    loss = readout.calculate_loss(params, targets, return_unreduced_loss=True)
    lo, hi = CLAMP
    log_var = soft_clamp_log_var(torch.tensor(raw_log_var, dtype=torch.float64), lo, hi).float()
    u = torch.atanh(targets) if squashed else targets
    want = gaussian_nll(params[..., 0].detach(), log_var, u)
    if squashed:
        want = want + torch.log1p(-(targets**2))
    torch.testing.assert_close(loss, want, rtol=1e-5, atol=1e-5)
    loss.sum().backward()
    assert torch.isfinite(params.grad).all()
    sampled = readout.sample(params, differentiable=True)
    outs = [readout.entropy(params), readout.kl_div(params, params.flip(0)), readout.log_prob(params, sampled), sampled]
    for out in outs:
        assert torch.isfinite(out).all()
    # through the table, with embeddings scaled so the raw log-var is this far out
    table = Readout(D, **kwargs)
    with torch.no_grad():
        table.embeddings.weight.zero_()
        table.embeddings.weight[2:, 0] = 1.0  # log-var rows read coordinate 0
        table.embeddings.weight[:2, 1] = 1.0  # mean rows read coordinate 1
    x = torch.zeros(*BATCH, D)
    x[..., 0], x[..., 1] = raw_log_var, 0.3
    x.requires_grad_()
    loss = table(x, targets)
    assert torch.isfinite(loss)
    loss.backward()
    assert torch.isfinite(x.grad).all() and torch.isfinite(table.embeddings.weight.grad).all()


@pytest.mark.parametrize('log_var', [-1e4, -200.0, -120.0, 120.0, 200.0, 1e4])
def test_unclamped_log_var_far_out(log_var):
    """Without a clamp range the log-variance is unbounded. What is expected:

    - the NLL ``0.5 (log_var + (t - m)^2 exp(-log_var) + log 2 pi)`` is finite for a
      huge variance (log_var = 200 or 1e4: about log_var / 2, the std overflows but the
      NLL does not), and for a vanishing one when ``t == m`` exactly (about log_var / 2);
      there the loss and its gradients must be finite;
    - for a vanishing variance and ``t != m`` the NLL truly overflows: the loss must be
      +inf (an honest overflow), never NaN; its gradient is then infinite and not checked;
    - the entropy ``0.5 (1 + log 2 pi + log_var)`` is finite for every log_var, and
      KL(p || p) is exactly 0.
    """
    readout = ParameterlessReadout(num_continuous=2)
    mean, lv = torch.tensor([[0.5, 0.5]]), torch.full((1, 2), log_var)
    targets = torch.tensor([[0.5, 1.5]])  # dim 0: t == m; dim 1: t - m = 1
    params = torch.stack((mean, lv), -1).requires_grad_()
    problems = []

    def check(what, got, want):
        if torch.isnan(got).any() or not torch.allclose(got, want, rtol=1e-5, atol=1e-5, equal_nan=False):
            problems.append(f'{what}: got {got.tolist()}, expected {want.tolist()}')

    loss = readout.calculate_loss(params, targets, return_unreduced_loss=True)
    want = gaussian_nll(mean, lv, targets)
    check('loss', loss.detach(), want)
    finite = torch.isfinite(want)
    loss[finite].sum().backward()
    diff, inv_var = (mean - targets).double(), torch.exp(-lv.double())
    grad_mean = torch.where(diff == 0, 0.0, diff * inv_var)
    grad_lv = 0.5 - 0.5 * torch.where(diff == 0, 0.0, diff**2 * inv_var)
    check('gradient where the loss is finite', params.grad[finite], torch.stack((grad_mean, grad_lv), -1).float()[finite])
    check('entropy', readout.entropy(params.detach()), 0.5 * (1 + LOG_2PI + lv))
    check('KL(p || p)', readout.kl_div(params.detach(), params.detach()), torch.zeros(1, 2))
    assert not problems, f'log_var={log_var}:\n' + '\n'.join(problems)


# beta / kumaraswamy at their clip bounds


UNIT_PARAMS = [-1e4, -30.0, -5.0, 0.0, 5.0, 30.0, 1e4]


def unit_readout(kind, unimodal, **kwargs):
    return ParameterlessReadout(
        num_continuous=1, continuous_dist_type=kind, continuous_dist_kwargs=dict(unimodal=unimodal, clip=True, clip_eps=CLIP_EPS), **kwargs
    )


def unit_params(dtype=torch.float32):
    """Every pair of ``UNIT_PARAMS`` as ``(n, 1, 2)``."""
    grid = torch.tensor(UNIT_PARAMS, dtype=dtype)
    return torch.cartesian_prod(grid, grid).unsqueeze(1)


@pytest.mark.parametrize('dtype', [torch.float32, torch.float64], ids=str)
@pytest.mark.parametrize('unimodal', [False, True], ids=['free', 'unimodal'])
@pytest.mark.parametrize('kind', ['beta', 'kumaraswamy'])
def test_unit_interval_targets_at_and_beyond_the_clip_bounds(kind, unimodal, dtype):
    """Targets exactly 0, 1 and at the clip bounds (clip=True): finite losses and
    gradients for concentrations from eps to 1e4; a target outside
    [clip_eps, 1 - clip_eps] scores like the bound it is clipped to."""
    readout = unit_readout(kind, unimodal)
    values = torch.tensor([0.0, CLIP_EPS, 0.5, 1 - CLIP_EPS, 1.0], dtype=dtype)
    params = unit_params(dtype)
    n = params.shape[0]
    params = params.repeat_interleave(len(values), 0).requires_grad_()
    targets = values.repeat(n).unsqueeze(-1)
    loss = readout.calculate_loss(params, targets, return_unreduced_loss=True)
    bad = ~torch.isfinite(loss).squeeze(-1)
    assert not bad.any(), f'non-finite loss at params {params[bad].tolist()} targets {targets[bad].tolist()}'
    loss.sum().backward()
    bad = ~torch.isfinite(params.grad).all(-1).squeeze(-1)
    assert not bad.any(), f'non-finite gradient at params {params[bad].tolist()} targets {targets[bad].tolist()}'
    per = loss.detach().reshape(n, len(values))
    torch.testing.assert_close(per[:, 0], per[:, 1])
    torch.testing.assert_close(per[:, 4], per[:, 3])
    # through the table
    table = Readout(D, num_continuous=1, continuous_dist_type=kind, continuous_dist_kwargs=dict(unimodal=unimodal)).to(dtype)
    x = (torch.randn(len(values), D, dtype=dtype) * 100).requires_grad_()
    loss = table(x, values.unsqueeze(-1))
    assert torch.isfinite(loss)
    loss.backward()
    assert torch.isfinite(x.grad).all() and torch.isfinite(table.embeddings.weight.grad).all()


@pytest.mark.parametrize('unimodal', [False, True], ids=['free', 'unimodal'])
@pytest.mark.parametrize('kind', ['beta', 'kumaraswamy'])
def test_unit_interval_samples_log_prob_entropy_kl_at_extreme_concentrations(kind, unimodal):
    """Samples stay in [clip_eps, 1 - clip_eps] (many land exactly on a bound here),
    their log-densities are finite, and entropy and KL(p || p) are finite, KL ~ 0."""
    readout = unit_readout(kind, unimodal)
    params = unit_params()
    sampled = readout.sample(params)
    assert ((sampled >= CLIP_EPS) & (sampled <= 1 - CLIP_EPS)).all()
    if not unimodal:
        assert (sampled == CLIP_EPS).any() and (sampled == 1 - CLIP_EPS).any()  # the bounds are reached
    for out in (readout.log_prob(params, sampled), readout.sample(params, return_log_prob=True)[1], readout.entropy(params)):
        bad = ~torch.isfinite(out).squeeze(-1)
        assert not bad.any(), f'non-finite at params {params[bad].tolist()}'
    kl = readout.kl_div(params, params).squeeze(-1)
    bad = ~torch.isfinite(kl)
    assert not bad.any(), f'KL(p || p) non-finite at params {params[bad].squeeze(1).tolist()}: {kl[bad].tolist()}'
    scale = 1.0 + readout.entropy(params).abs().squeeze(-1)
    assert (kl.abs() <= 1e-3 * scale).all(), kl


# continuous params far out, through the table (float32)


@pytest.mark.parametrize(
    'name', ['gaussian_clamped', 'squashed_clamped', 'beta', 'beta_unimodal', 'kumaraswamy', 'mse', 'l1', 'mixed_multi_beta']
)
def test_continuous_params_up_to_1e4_through_the_table(name):
    """Embeddings scaled so every mean / log-var / concentration parameter is +-1e4
    (unclamped gaussians are left out: a log-var of -1e4 truly overflows the NLL, see
    ``test_unclamped_log_var_far_out``)."""
    case = LossCase(name)
    readout = case.readout(torch.float32)
    with torch.no_grad():
        readout.embeddings.weight.copy_(torch.randint(0, 2, readout.embeddings.weight.shape) * 2.0 - 1.0)
    x = ((torch.randint(0, 2, (*BATCH, D)) * 2.0 - 1.0) * 2500.0).requires_grad_()
    targets = case.targets(dtype=torch.float32)
    _, c_t = split(case, targets)
    if case.kind in ('beta', 'kumaraswamy'):
        c_t[0, 0] = 0.0
        c_t[1, 1] = 1.0
    for option in (dict(), dict(loss_mask=partial_mask()), dict(return_unreduced_loss=True)):
        loss = readout(x, targets, **option)
        for part in parts(loss):
            assert torch.isfinite(part).all()
        total(loss).backward()
        assert torch.isfinite(x.grad).all() and torch.isfinite(readout.embeddings.weight.grad).all()
    # fully masked: exactly 0, and nothing of the extreme entries leaks into the gradients
    x.grad = readout.embeddings.weight.grad = None
    loss = readout(x, targets, loss_mask=torch.zeros(BATCH, dtype=torch.bool))
    assert all(part.item() == 0.0 for part in parts(loss))
    total(loss).backward()
    for grad in (x.grad, readout.embeddings.weight.grad):
        assert torch.isfinite(grad).all() and torch.count_nonzero(grad) == 0
