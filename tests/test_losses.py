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
