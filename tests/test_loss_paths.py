"""Every loss path (``forward`` with the table, ``calculate_loss`` on logits /
params) of every head, with every loss option (loss mask, ignore_index, action
mask, unreduced, all at once), against an independent float64 computation
(torch.distributions / F.cross_entropy through the documented table layout),
float64 ``gradcheck`` of each with respect to the embeddings and the table, and
targets whose leading shape broadcasts with the outputs' (several prediction heads),
and the plain route's gaussian loss against the general route's."""

import pytest
import torch
import torch.nn.functional as F
from helpers import pack
from helpers.internals import record_plain_gaussian_losses, score_plain_gaussians_by_their_part, set_plain_loss_layout
from helpers.loss_cases import BATCH, LOSS_CASES, D, LossCase, partial_mask, parts, reference_loss, split
from torch.distributions import Normal
from torch.func import functional_call

from discrete_continuous_embed_readout import Readout

# the loss-option matrix


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
    for name in LOSS_CASES:
        for option in OPTIONS:
            case = LossCase(name)
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


# values and gradients


@pytest.mark.parametrize('name, option, via', list(matrix()))
def test_loss_matches_independent_computation(name, option, via):
    """Reduced losses are the mean over the kept entries (partly masked / ignored
    entries left out), unreduced ones the per-entry losses with masked entries zeroed."""
    case = LossCase(name)
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
    case = LossCase(name)
    f, _, x, w = loss_fn(case, option, via)
    x.requires_grad_(True)
    w.requires_grad_(True)

    def fn(x, w):
        out = f(x, w)
        return tuple(out) if isinstance(out, tuple) else out

    # the full Jacobian for the plain forward loss, a random projection of it (fast mode) elsewhere
    assert torch.autograd.gradcheck(fn, (x, w), eps=1e-6, atol=1e-5, rtol=1e-4, fast_mode=(option, via) != ('plain', 'forward'))


# targets broadcast against the outputs' leading shape (as torch.distributions' log_prob)

HEADS = 3
BROADCASTS = {'targets of one head': ((HEADS,), (1,)), 'outputs of one head': ((1,), (HEADS,))}  # (outputs', targets' leading axes)


@pytest.mark.parametrize('unreduced', [False, True], ids=['mean', 'unreduced'])
@pytest.mark.parametrize('via', ['forward', 'calculate_loss'])
@pytest.mark.parametrize('direction', list(BROADCASTS))
@pytest.mark.parametrize('name', list(LOSS_CASES))
def test_targets_broadcast_against_the_outputs(name, direction, via, unreduced):
    """The loss of targets that broadcast is the loss of both sides expanded by hand
    (values and gradients), on the fused path too."""
    case = LossCase(name)
    x_lead, t_lead = BROADCASTS[direction]
    readout, targets = case.readout(), case.targets(batch=(*t_lead, *BATCH))
    x, w = torch.randn(*x_lead, *BATCH, D, dtype=torch.float64, requires_grad=True), readout.embeddings.weight
    if via == 'forward':
        out = readout(x, targets, return_unreduced_loss=unreduced)
    else:
        out = case.readout(table=False).calculate_loss(case.as_logits(*case.outputs(w, x)), targets, return_unreduced_loss=unreduced)
    full = (HEADS, *BATCH)

    def expand(t):
        return None if t is None else t.expand(*full, *t.shape[len(full) :])

    expected = reference_loss(case, *case.outputs(w, expand(x)), pack(*map(expand, split(case, targets))), unreduced=unreduced)
    for got, want in zip(parts(out), parts(expected), strict=True):
        assert got.shape == want.shape
        torch.testing.assert_close(got, want, rtol=1e-6, atol=1e-6)
    grads = torch.autograd.grad(sum(p.sum() for p in parts(out)), (x, w))
    for got, want in zip(grads, torch.autograd.grad(sum(p.sum() for p in parts(expected)), (x, w)), strict=True):
        torch.testing.assert_close(got, want, rtol=1e-6, atol=1e-6)


# the plain route's gaussian loss: a plain gaussian (no units) scored without its
# ContinuousPart, the same values, gradients and errors

GAUSSIANS = {
    'mixed': dict(num_discrete=5, num_continuous=2),
    'continuous only': dict(num_continuous=3),
    'soft-clamped log-variance': dict(num_discrete=5, num_continuous=2, continuous_dist_kwargs=dict(log_var_clamp_range=(-3.0, 1.0))),
}


def gaussian_case(head: str, batch=(6,), values_dtype=torch.float32):
    """``(readout, x, targets)``: a plain gaussian head's readout, embeddings and (ids, values) targets."""
    torch.manual_seed(0)
    kwargs = GAUSSIANS[head]
    readout = Readout(8, **kwargs)
    with torch.no_grad():
        readout.embeddings.weight.normal_(0, 0.5)
    values = (torch.randn(*batch, kwargs['num_continuous']) * 2).to(values_dtype)
    targets = (torch.randint(0, 5, batch), values) if kwargs.get('num_discrete') else values
    return readout, torch.randn(*batch, 8), targets


def gaussian_reference(readout, x, values, kwargs) -> torch.Tensor:
    """float64 mean negative log-density of ``values`` under the params' normals
    (the log-variance soft-clamped into ``log_var_clamp_range`` where set)."""
    c = values.shape[-1]
    mean, log_var = (x.double() @ readout.embeddings.weight.detach().double().T)[..., -2 * c :].split(c, -1)
    if (clamp := kwargs.get('continuous_dist_kwargs', {}).get('log_var_clamp_range')) is not None:
        lo, hi = clamp
        log_var = lo + (torch.tanh(log_var / (hi - lo)) + 1) * 0.5 * (hi - lo)
    return -Normal(mean, torch.exp(0.5 * log_var)).log_prob(values.double()).mean()


def losses_and_grads(readout, x, targets):
    x = x.clone().requires_grad_(True)
    readout.zero_grad()
    loss = readout(x, targets)
    losses = list(loss) if isinstance(loss, tuple) else [loss]
    sum(losses).backward()
    return losses, x.grad, readout.embeddings.weight.grad.clone()


@pytest.mark.parametrize('layout', ['row-major', 'class-major'])
@pytest.mark.parametrize('values_dtype', [torch.float32, torch.float64, torch.float16], ids=str)
@pytest.mark.parametrize('head', list(GAUSSIANS))
def test_the_plain_gaussian_loss_is_the_part_loss_exactly(head, values_dtype, layout, monkeypatch):
    """The same losses and gradients, bit for bit, as scoring through the head's
    ``ContinuousPart``, and the mean negative log-density of a float64 normal."""
    set_plain_loss_layout(monkeypatch, layout)
    readout, x, targets = gaussian_case(head, values_dtype=values_dtype)
    lean = record_plain_gaussian_losses(monkeypatch)
    losses, x_grad, w_grad = losses_and_grads(readout, x, targets)
    assert lean == [(6, GAUSSIANS[head]['num_continuous'])]
    values = targets[1] if isinstance(targets, tuple) else targets
    torch.testing.assert_close(losses[-1].double(), gaussian_reference(readout, x, values, GAUSSIANS[head]), rtol=1e-5, atol=1e-6)
    score_plain_gaussians_by_their_part(monkeypatch)
    part_losses, part_x_grad, part_w_grad = losses_and_grads(readout, x, targets)
    assert len(lean) == 1
    for got, want in zip([*losses, x_grad, w_grad], [*part_losses, part_x_grad, part_w_grad], strict=True):
        assert got.dtype == want.dtype and torch.equal(got, want)


@pytest.mark.parametrize('bad, error, message', [
    ('nan', ValueError, r'targets must be finite, got nan at index \(2, 1\)'),
    ('inf', ValueError, r'targets must be finite, got -inf at index \(2, 1\)'),
    ('ids', TypeError, r'targets must be a floating point tensor, got a tensor of shape \(6, 2\) and dtype torch.int64'),
    ('list', TypeError, r'targets must be a torch.Tensor, got a list of 6 items'),
])  # fmt: skip
def test_the_plain_gaussian_loss_raises_as_the_general_route(bad, error, message):
    readout, x, (ids, values) = gaussian_case('mixed')
    values = {'nan': values.index_put((torch.tensor(2), torch.tensor(1)), torch.tensor(float('nan'))),
              'inf': values.index_put((torch.tensor(2), torch.tensor(1)), torch.tensor(float('-inf'))),
              'ids': values.long(), 'list': values.tolist()}[bad]  # fmt: skip
    with pytest.raises(error, match=message):
        readout(x, (ids, values))
    with pytest.raises(error, match=message):  # the general route, on the outputs
        readout.calculate_loss(readout(x), (ids, values))


def test_the_plain_gaussian_loss_of_non_finite_params_is_the_general_routes(monkeypatch):
    """A non-finite mean loss from finite targets (here a NaN embedding) raises
    nothing: the general route gives the same NaN."""
    readout, x, targets = gaussian_case('continuous only')
    x[3, 0] = float('nan')
    lean = record_plain_gaussian_losses(monkeypatch)
    loss = readout(x, targets)
    assert lean and torch.isnan(loss) and torch.isnan(readout.calculate_loss(readout(x), targets))
