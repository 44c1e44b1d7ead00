"""Numerical edges of every loss path (issue 5, item 2).

- float64 ``gradcheck`` of every loss path (``forward`` with the table, and
  ``calculate_loss`` on logits / params), with every loss option;
- reduced / unreduced / partly masked losses against an independent computation;
- fully masked batches: loss exactly 0, gradients exactly 0;
- logits up to +-1e4 (float32, float16, bfloat16), half-precision modules and
  bfloat16 autocast;
- squashed targets at +-(1 - 1e-7) and +-1, log-variances at the edges of
  ``log_var_clamp_range`` and far beyond it (with and without a clamp range),
  beta / kumaraswamy targets and samples at their clip bounds;
- entropy / KL / log_prob / sample at those edges.
"""

import copy
import math

import pytest
import torch
import torch.nn.functional as F
from conftest import randint_groups
from torch.distributions import Beta, Kumaraswamy, Normal
from torch.func import functional_call

from discrete_continuous_embed_readout import ParameterlessReadout, Readout

D = 4
BATCH = (2, 3)
CLAMP = (-5.0, 2.0)
MEAN_STD = torch.tensor([[3.0, 2.0], [-1.0, 0.5]])
LOG_2PI = math.log(2 * math.pi)

CASES = {
    'discrete': dict(num_discrete=7),  # one group: forward uses the fused chunked cross entropy
    'discrete_unfused': dict(num_discrete=7, fused_cross_entropy=False),
    'multi_parallel': dict(num_discrete=(3, 4, 5)),  # similar sizes: the padded batched pass
    'multi_sequential': dict(num_discrete=(3, 4, 5), use_parallel_multi_discrete=False),
    'multi_two_groups': dict(num_discrete=(4, 6)),
    'gaussian': dict(num_continuous=3),
    'gaussian_clamped': dict(num_continuous=3, continuous_dist_kwargs=dict(log_var_clamp_range=CLAMP)),
    'squashed': dict(num_continuous=3, continuous_squashed=True),
    'squashed_clamped': dict(num_continuous=3, continuous_squashed=True, continuous_dist_kwargs=dict(log_var_clamp_range=CLAMP)),
    'beta': dict(num_continuous=3, continuous_dist_type='beta'),
    'beta_unimodal': dict(num_continuous=3, continuous_dist_type='beta', continuous_dist_kwargs=dict(unimodal=True)),
    'kumaraswamy': dict(num_continuous=3, continuous_dist_type='kumaraswamy'),
    'mse': dict(num_continuous=3, continuous_log_var_embed=False),
    'l1': dict(num_continuous=3, continuous_log_var_embed=False, regression_loss_type='l1'),
    'mse_mean_std': dict(num_continuous=2, continuous_log_var_embed=False, continuous_mean_std=MEAN_STD),
    'gaussian_mean_std': dict(num_continuous=2, continuous_mean_std=MEAN_STD),
    'squashed_mean_std': dict(num_continuous=2, continuous_squashed=True, continuous_mean_std=MEAN_STD),
    'mixed': dict(num_discrete=7, num_continuous=2),  # fused discrete + gaussian
    'mixed_multi_beta': dict(num_discrete=(3, 4), num_continuous=2, continuous_dist_type='beta'),
}


class Case:
    """What a case name means: group sizes, continuous dims, head kind."""

    def __init__(self, name):
        self.name, self.kwargs = name, CASES[name]
        nd = self.kwargs.get('num_discrete', 0)
        self.sizes = () if nd == 0 else ((nd,) if isinstance(nd, int) else tuple(nd))
        self.C = self.kwargs.get('num_continuous', 0)
        dist_kwargs = self.kwargs.get('continuous_dist_kwargs', {})
        self.clamp = dist_kwargs.get('log_var_clamp_range')
        self.unimodal = dist_kwargs.get('unimodal', False)
        self.mean_std = self.kwargs.get('continuous_mean_std')
        if not self.kwargs.get('continuous_log_var_embed', True):
            self.kind = self.kwargs.get('regression_loss_type', 'mse')
        elif self.kwargs.get('continuous_squashed', False):
            self.kind = 'squashed'
        else:
            self.kind = self.kwargs.get('continuous_dist_type', 'gaussian')

    @property
    def has_discrete(self):
        return len(self.sizes) > 0

    @property
    def single(self):
        return len(self.sizes) == 1

    @property
    def regression(self):
        return self.kind in ('mse', 'l1')

    @property
    def fused(self):  # what forward computes the discrete loss with (no option that disables it)
        return self.single and self.kwargs.get('fused_cross_entropy', True)

    def readout(self, dtype=torch.float64, table=True):
        if not table:
            return ParameterlessReadout(**self.kwargs).to(dtype)
        readout = Readout(D, **self.kwargs)
        torch.nn.init.normal_(readout.embeddings.weight, std=0.5)  # the default 0.01 makes every loss flat
        return readout.to(dtype)

    def targets(self, batch=BATCH, dtype=torch.float64):
        d = c = None
        if self.has_discrete:
            d = torch.randint(0, self.sizes[0], batch) if self.single else randint_groups(self.sizes, batch)
        if self.C:
            if self.kind == 'squashed':
                c = torch.empty(*batch, self.C, dtype=dtype).uniform_(-0.9, 0.9)
            elif self.kind in ('beta', 'kumaraswamy'):
                c = torch.empty(*batch, self.C, dtype=dtype).uniform_(0.1, 0.9)  # far from the clip bounds
            else:
                c = torch.randn(*batch, self.C, dtype=dtype)
            if self.mean_std is not None:
                mean, std = self.mean_std.to(dtype).unbind(-1)
                c = c * std + mean
        return pack(d, c)

    def outputs(self, weight, x):
        """Independent projection: ``x @ weight.T`` split by the documented table layout
        ``[groups][means][log-vars]``. Returns ``(groups, params)``."""
        out = x @ weight.T
        nd = sum(self.sizes)
        groups = list(out[..., :nd].split(list(self.sizes), -1)) if self.sizes else None
        params = None
        if self.C:
            cont = out[..., nd:]
            params = cont if self.regression else torch.stack((cont[..., : self.C], cont[..., self.C : 2 * self.C]), -1)
        return groups, params

    def as_logits(self, groups, params):
        """``(groups, params)`` in the form ``forward`` returns them."""
        d = None if groups is None else (groups[0] if self.single else tuple(groups))
        return pack(d, params)


def pack(d, c):
    if d is None or c is None:
        return d if c is None else c
    return (d, c)


def split(case, obj):
    if case.has_discrete and case.C:
        return obj
    return (obj, None) if case.has_discrete else (None, obj)


def parts(out):
    return list(out) if isinstance(out, tuple) else [out]


def total(out):
    return sum(p.sum() for p in parts(out))


# independent reference: per-entry losses from torch.distributions / F.cross_entropy


def reference_entries(case, groups, params, targets, action_mask=None):
    """Per-entry losses ``(..., G)`` and ``(..., C)`` in float64 (None for an absent part)."""
    d_t, c_t = split(case, targets)
    d = c = None
    if groups is not None:
        ids = d_t.unsqueeze(-1) if case.single else d_t
        masks = action_mask.split(list(case.sizes), -1) if action_mask is not None else [None] * len(groups)
        cols = []
        for g, (logits, m) in enumerate(zip(groups, masks)):
            logits = logits.double()
            if m is not None:
                logits = logits.masked_fill(~m, float('-inf'))
            t = ids[..., g]
            ce = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), t.reshape(-1).clamp(min=0), reduction='none')
            cols.append(torch.where(t == -1, 0.0, ce.reshape(t.shape)))
        d = torch.stack(cols, -1)
    if params is not None:
        p, t = params.double(), c_t.double()
        log_std = 0.0
        if case.mean_std is not None:
            mean, std = case.mean_std.double().unbind(-1)
            t, log_std = (t - mean) / std, std.log()
        if case.kind == 'mse':
            c = (p - t) ** 2
        elif case.kind == 'l1':
            c = (p - t).abs()
        elif case.kind in ('gaussian', 'squashed'):
            mean, log_var = p.unbind(-1)
            if case.clamp is not None:
                lo, hi = case.clamp
                log_var = lo + (torch.tanh(log_var / (hi - lo)) + 1) / 2 * (hi - lo)
            normal = Normal(mean, (0.5 * log_var).exp())
            if case.kind == 'squashed':
                c = -(normal.log_prob(torch.atanh(t)) - torch.log1p(-(t**2))) + log_std
            else:
                c = -normal.log_prob(t) + log_std
        else:
            off = 1.0 if case.unimodal else 1e-6
            a, b = (F.softplus(p) + off).unbind(-1)
            dist = Beta(a, b) if case.kind == 'beta' else Kumaraswamy(a, b)
            c = -dist.log_prob(t)
    return d, c


def reference_loss(case, groups, params, targets, loss_mask=None, action_mask=None, unreduced=False):
    d, c = reference_entries(case, groups, params, targets, action_mask)
    d_t, _ = split(case, targets)
    out = []
    for entries, is_discrete in ((d, True), (c, False)):
        if entries is None:
            out.append(None)
            continue
        keep = torch.ones_like(entries, dtype=torch.bool)
        if loss_mask is not None:
            keep = keep & loss_mask.unsqueeze(-1)
        if is_discrete:
            keep = keep & ((d_t.unsqueeze(-1) if case.single else d_t) != -1)
        if unreduced:
            zeroed = torch.where(keep, entries, 0.0)
            out.append(zeroed.squeeze(-1) if is_discrete and case.single else zeroed)
        else:
            out.append(entries[keep].mean() if keep.any() else entries.new_zeros(()))
    return pack(*out)


# the loss-option matrix


def partial_mask(batch=BATCH):
    mask = torch.ones(batch, dtype=torch.bool)
    mask[0, 1] = mask[1, 0] = mask[1, 2] = False
    return mask


def allowed_actions(case, d_t, batch=BATCH):
    """A random action mask that allows every target (and some other ids)."""
    ids = d_t.unsqueeze(-1) if case.single else d_t
    masks = []
    for g, n in enumerate(case.sizes):
        m = torch.rand(*batch, n) < 0.5
        masks.append(m | F.one_hot(ids[..., g].clamp(min=0), n).bool())
    return torch.cat(masks, -1)


OPTIONS = ['plain', 'loss_mask', 'ignore_index', 'action_mask', 'unreduced', 'all']


def setup(case, option, dtype=torch.float64):
    """Targets and the loss options of one matrix entry."""
    targets = case.targets(dtype=dtype)
    d_t, c_t = split(case, targets)
    loss_mask = action_mask = None
    if option in ('ignore_index', 'all'):
        if case.single:
            d_t[0, 0] = d_t[1, 1] = -1
        else:
            d_t[0, 0, 1] = -1
            d_t[1, 2, :] = -1
    if option in ('loss_mask', 'all'):
        loss_mask = partial_mask()
    if option in ('action_mask', 'all'):
        action_mask = allowed_actions(case, d_t)
    unreduced = option in ('unreduced', 'all')
    return pack(d_t, c_t), loss_mask, action_mask, unreduced


def matrix():
    for name in CASES:
        for option in OPTIONS:
            case = Case(name)
            if option in ('ignore_index', 'action_mask', 'all') and not case.has_discrete:
                continue
            for via in ('forward', 'calculate_loss'):
                yield pytest.param(name, option, via, id=f'{name}-{option}-{via}')


def loss_fn(case, option, via, dtype=torch.float64):
    """``(f(x, weight) -> loss, reference(x, weight), x, weight)`` for one matrix entry."""
    targets, loss_mask, action_mask, unreduced = setup(case, option, dtype)
    if via == 'forward':
        readout = case.readout(dtype)

        def f(x, w):
            return functional_call(
                readout, {'embeddings.weight': w}, (x, targets),
                dict(loss_mask=loss_mask, action_mask=action_mask, return_unreduced_loss=unreduced),
            )  # fmt: skip

        weight = readout.embeddings.weight.detach().clone()
    else:
        table = case.readout(dtype)
        readout = case.readout(dtype, table=False)

        def f(x, w):
            logits = case.as_logits(*case.outputs(w, x))
            return readout.calculate_loss(logits, targets, mask=loss_mask, action_mask=action_mask, return_unreduced_loss=unreduced)

        weight = table.embeddings.weight.detach().clone()

    def reference(x, w):
        return reference_loss(case, *case.outputs(w, x), targets, loss_mask, action_mask, unreduced)

    x = torch.randn(*BATCH, D, dtype=dtype)
    return f, reference, x, weight


@pytest.mark.parametrize('name, option, via', list(matrix()))
def test_loss_matches_independent_computation(name, option, via):
    """Reduced losses are the mean over the kept entries (partly masked / ignored
    entries left out), unreduced ones the per-entry losses with masked entries zeroed."""
    case = Case(name)
    f, reference, x, w = loss_fn(case, option, via)
    out, expected = f(x, w), reference(x, w)
    assert isinstance(out, tuple) == isinstance(expected, tuple)
    for got, want in zip(parts(out), parts(expected)):
        assert got.shape == want.shape
        # float32-level tolerance: this checks what is averaged; the float64 precision of
        # the fused path is test_fused_discrete_loss_keeps_float64_precision's business
        torch.testing.assert_close(got.double(), want, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize('name, option, via', list(matrix()))
def test_gradcheck_float64(name, option, via):
    """Analytical gradients of every loss path match finite differences in float64,
    with respect to the input embeddings and to the table."""
    case = Case(name)
    f, _, x, w = loss_fn(case, option, via)
    x.requires_grad_(True)
    w.requires_grad_(True)

    def fn(x, w):
        out = f(x, w)
        return tuple(out) if isinstance(out, tuple) else out

    # the full Jacobian for the plain forward loss, a random projection of it (fast mode) elsewhere
    assert torch.autograd.gradcheck(fn, (x, w), eps=1e-6, atol=1e-5, rtol=1e-4, fast_mode=(option, via) != ('plain', 'forward'))


# fully masked batches


@pytest.mark.parametrize('via', ['forward', 'calculate_loss'])
@pytest.mark.parametrize('unreduced', [False, True], ids=['reduced', 'unreduced'])
@pytest.mark.parametrize('name', list(CASES))
def test_fully_masked_batch_gives_zero_loss_and_zero_gradients(name, unreduced, via):
    case = Case(name)
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
    case = Case(name)
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


# discrete logits up to +-1e4, in float32 / float16 / bfloat16

HALF = [torch.float16, torch.bfloat16]
DTYPES = [torch.float32, *HALF]
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
    case = Case(name)
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
    case = Case(name)
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


# half precision and autocast

TOL = {torch.float16: 2e-2, torch.bfloat16: 1.5e-1}


@pytest.mark.parametrize('dtype', HALF, ids=str)
@pytest.mark.parametrize('name', list(CASES))
def test_half_precision_module_and_embeddings(name, dtype):
    """A readout cast to float16 / bfloat16 fed embeddings of that dtype: finite
    losses and gradients, close to the float32 ones, on every path."""
    case = Case(name)
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


@pytest.mark.parametrize('name', list(CASES))
def test_bfloat16_autocast(name):
    case = Case(name)
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


@pytest.mark.parametrize('dtype', HALF, ids=str)
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
    case = Case(name)
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


# fused cross entropy in float64, and twice through a retained graph


def test_fused_discrete_loss_keeps_float64_precision():
    """A float64 readout's fused loss must be a float64 loss equal to the unfused one
    (gradcheck of the fused path cannot pass otherwise)."""
    readout = Case('discrete').readout(torch.float64)
    x, y = torch.randn(*BATCH, D, dtype=torch.float64), torch.randint(0, 7, BATCH)
    fused = readout(x, y)
    readout.fused_cross_entropy = False
    unfused = readout(x, y)
    assert fused.dtype == torch.float64
    torch.testing.assert_close(fused, unfused, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize('name', ['discrete', 'discrete_unfused', 'multi_parallel', 'gaussian', 'mixed'])
def test_backward_twice_through_a_retained_graph_doubles_the_gradients(name):
    case = Case(name)
    readout = case.readout(torch.float32)
    x = torch.randn(*BATCH, D, requires_grad=True)
    loss = total(readout(x, case.targets(dtype=torch.float32)))
    loss.backward(retain_graph=True)
    once = x.grad.clone(), readout.embeddings.weight.grad.clone()
    loss.backward()
    torch.testing.assert_close(x.grad, 2 * once[0])
    torch.testing.assert_close(readout.embeddings.weight.grad, 2 * once[1])


# squashed gaussian at the edges of (-1, 1)

EDGE = 1 - 1e-7


@pytest.mark.parametrize('dtype', [torch.float32, torch.float64], ids=str)
@pytest.mark.parametrize('name', ['squashed', 'squashed_clamped', 'squashed_mean_std'])
def test_squashed_targets_at_the_edges_give_finite_losses_and_gradients(name, dtype):
    case = Case(name)
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
    case = Case(name)
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
    log_var = torch.tensor(lo + (math.tanh(raw_log_var / (hi - lo)) + 1) / 2 * (hi - lo))
    u = torch.atanh(targets) if squashed else targets
    want = 0.5 * (log_var + (u - params[..., 0].detach()) ** 2 * torch.exp(-log_var) + LOG_2PI)
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


def gaussian_nll(mean, log_var, target):
    """``0.5 (log_var + (t - m)^2 exp(-log_var) + log 2 pi)`` in the inputs' dtype;
    ``(t - m)^2 exp(-log_var)`` is exactly 0 at ``t == m`` whatever the variance."""
    sq = (target - mean) ** 2
    scaled = torch.where(sq == 0, 0.0, sq * torch.exp(-log_var))
    return 0.5 * (log_var + scaled + LOG_2PI)


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

CLIP_EPS = 1e-5
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
    case = Case(name)
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
