import math

import pytest
import torch
import torch.nn.functional as F
from conftest import randint_groups

from discrete_continuous_embed_readout import ParameterlessReadout, Readout

# hand-worked: logits (0, ln 3) give p = (1/4, 3/4), so nll(0) = ln 4 and nll(1) = ln 4/3
LOGITS = torch.tensor([[0.0, math.log(3.0)]] * 3)
NLL0, NLL1 = math.log(4.0), math.log(4.0 / 3.0)


def test_cross_entropy_matches_torch():
    readout = Readout(16, num_discrete=100)
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
    mean_std = torch.tensor([[3.0, 2.0], [-1.0, 0.5]])
    readout = ParameterlessReadout(num_continuous=2, continuous_mean_std=mean_std)
    params, values = torch.randn(7, 2, 2), torch.randn(7, 2) * 2
    mean = params[..., 0] * mean_std[:, 1] + mean_std[:, 0]
    std = params[..., 1].mul(0.5).exp() * mean_std[:, 1]
    torch.testing.assert_close(readout.calculate_loss(params, values), -torch.distributions.Normal(mean, std).log_prob(values).mean())


# the fused (chunked, logits-free) cross entropy of Readout.forward against the logits path

import discrete_continuous_embed_readout.losses as losses_module  # noqa: E402
import discrete_continuous_embed_readout.readout as readout_module  # noqa: E402
from discrete_continuous_embed_readout import EmbedAndReadout  # noqa: E402


@pytest.fixture
def small_chunks(monkeypatch):
    # several chunks, the last one partial, and multi-discrete groups eligible
    monkeypatch.setattr(losses_module, 'MIN_CHUNK_ROWS', 4)
    monkeypatch.setattr(losses_module, 'CHUNK_ELEMENTS', 1)
    monkeypatch.setattr(readout_module, 'FUSED_MIN_GROUP_SIZE', 2)


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
def test_fused_loss_agrees_with_the_logits_path(case, small_chunks):
    build_kwargs, make_targets, call = FUSED_CASES[case]
    embed, readout = EmbedAndReadout(16, **build_kwargs)
    batch = (3, 7)
    targets = make_targets(batch)
    ids = targets[0].clamp(min=0) if isinstance(targets, tuple) else targets.clamp(min=0)
    ids = (ids, targets[1]) if isinstance(targets, tuple) else ids
    kwargs = {'loss_mask': torch.rand(batch) > 0.3} if call.get('loss_mask') else {}
    assert readout._can_fuse(readout.get_selector())
    fused, fused_grads = _loss_and_grads(embed, readout, ids, targets, kwargs)
    readout.fused_cross_entropy = False
    plain, plain_grads = _loss_and_grads(embed, readout, ids, targets, kwargs)
    for a, b in zip((fused, *fused_grads), (plain, *plain_grads), strict=True):
        torch.testing.assert_close(torch.as_tensor(a) if not isinstance(a, tuple) else torch.stack(a), torch.as_tensor(b) if not isinstance(b, tuple) else torch.stack(b), atol=1e-6, rtol=1e-5)


def test_fused_loss_matches_cross_entropy_without_gradients(small_chunks):
    readout = Readout(16, num_discrete=40)
    x, y = torch.randn(5, 9, 16), torch.randint(-1, 40, (5, 9))
    with torch.no_grad():
        loss = readout(x, y)
    torch.testing.assert_close(loss, F.cross_entropy(readout(x).reshape(-1, 40), y.reshape(-1), ignore_index=-1))


def test_fused_loss_checks_targets(small_chunks):
    readout = Readout(16, num_discrete=40)
    with pytest.raises(IndexError, match='targets: id 40'):
        readout(torch.randn(2, 16), torch.tensor([0, 40]))


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
