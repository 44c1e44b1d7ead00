"""User-registered continuous heads: a ``ContinuousDistribution`` subclass registered
in ``CONTINUOUS_DISTRIBUTIONS`` trains end to end (loss and gradients through the
tables, tied or not), samples, scores, and gives entropy and KL, checked against
Laplace closed forms and torch.distributions; overriding ``forward``,
``clip_sampled`` and ``default_range`` takes effect; a removed name is rejected."""

import math

import pytest
import torch
import torch.nn.functional as F
from helpers import EPS, seeded_randn
from helpers.internals import continuous_head
from torch.distributions import Laplace, kl_divergence

from discrete_continuous_embed_readout import CONTINUOUS_DISTRIBUTIONS, ContinuousDistribution, EmbedAndReadout, ParameterlessReadout


class MyLaplace(ContinuousDistribution):
    """A user head: Laplace(loc = p0, scale = softplus(p1) + eps)."""

    def dist(self, params):
        return Laplace(params[..., 0], F.softplus(params[..., 1]) + self.eps)


class MyClampedLocHead(ContinuousDistribution):
    """A user head that overrides sampling (returns the loc), clipping and the range."""

    @property
    def default_range(self):
        return (-1.0, 1.0)

    def dist(self, params):
        return Laplace(params[..., 0], F.softplus(params[..., 1]) + self.eps)

    def forward(self, params, differentiable=False):
        return params[..., 0] * 1.0

    def clip_sampled(self, sampled):
        return sampled.clamp(-0.5, 0.5)


def laplace_closed_forms(loc, scale):
    return dict(
        log_prob=lambda x: -torch.log(2 * scale) - (x - loc).abs() / scale,
        entropy=1 + torch.log(2 * scale),
    )


def laplace_kl_closed_form(m1, b1, m2, b2):
    d = (m1 - m2).abs()
    return torch.log(b2 / b1) + d / b2 + (b1 / b2) * torch.exp(-d / b1) - 1


@pytest.mark.parametrize('weight_tie', [False, True])
def test_registered_laplace_head_end_to_end(register_head, weight_tie):
    register_head('laplace', MyLaplace)
    torch.manual_seed(0)
    D, C = 8, 2
    embed, readout = EmbedAndReadout(D, num_continuous=C, continuous_dist_type='laplace', weight_tie=weight_tie)
    assert isinstance(continuous_head(readout), MyLaplace)
    with torch.no_grad():
        readout.embeddings.weight.normal_(0.0, 0.5)
        embed.embeddings.weight.normal_(0.0, 0.5)

    x = seeded_randn(3, 5, C, seed=31)
    targets = seeded_randn(3, 5, C, seed=32)
    loss = readout(embed(x), targets)

    # the same loss from the tables by hand
    w_e = embed.embeddings.weight
    w_r = readout.embeddings.weight
    e = x @ w_e[:C]
    loc, raw_scale = e @ w_r[:C].T, e @ w_r[C : 2 * C].T
    scale = F.softplus(raw_scale) + EPS
    ref_loss = (torch.log(2 * scale) + (targets - loc).abs() / scale).mean()
    torch.testing.assert_close(loss, ref_loss, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(loss, -Laplace(loc, scale).log_prob(targets).mean(), rtol=1e-5, atol=1e-6)

    params_list = list({id(w_e): w_e, id(w_r): w_r}.values())
    ref_grads = torch.autograd.grad(ref_loss, params_list)
    loss.backward()
    for param, ref in zip(params_list, ref_grads):
        assert param.grad is not None and param.grad.abs().sum() > 0
        torch.testing.assert_close(param.grad, ref, rtol=1e-4, atol=1e-6)
    if weight_tie:
        assert embed.embeddings.weight is readout.embeddings.weight


def test_registered_laplace_head_sample_log_prob_entropy_kl(register_head):
    register_head('laplace', MyLaplace)
    torch.manual_seed(0)
    C = 3
    readout = ParameterlessReadout(num_continuous=C, continuous_dist_type='laplace')
    p = seeded_randn(4, C, 2, seed=33)
    q = seeded_randn(4, C, 2, seed=34)
    x = seeded_randn(4, C, seed=35) * 2
    loc_p, scale_p = p[..., 0].double(), F.softplus(p[..., 1].double()) + EPS
    loc_q, scale_q = q[..., 0].double(), F.softplus(q[..., 1].double()) + EPS
    closed = laplace_closed_forms(loc_p, scale_p)

    torch.testing.assert_close(readout.log_prob(p, x).double(), closed['log_prob'](x.double()), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(readout.log_prob(p, x).double(), Laplace(loc_p, scale_p).log_prob(x.double()), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(readout.entropy(p).double(), closed['entropy'], rtol=1e-5, atol=1e-5)
    kl = readout.kl_div(p, q).double()
    torch.testing.assert_close(kl, laplace_kl_closed_form(loc_p, scale_p, loc_q, scale_q), rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(kl, kl_divergence(Laplace(loc_p, scale_p), Laplace(loc_q, scale_q)), rtol=1e-4, atol=1e-5)

    # samples: median is the loc, mean absolute deviation is the scale
    params = torch.tensor([[1.5, 0.3], [-2.0, -1.0], [0.0, 2.0]])
    n = 40_000
    samples = readout.sample(params.expand(n, C, 2)).double()
    loc, scale = params[:, 0].double(), F.softplus(params[:, 1].double()) + EPS
    assert ((samples.median(0).values - loc).abs() < 5 * scale / math.sqrt(n)).all()
    assert (((samples - loc).abs().mean(0) - scale).abs() < 5 * scale / math.sqrt(n)).all()


def test_registered_head_forward_clip_sampled_and_default_range_are_used(register_head):
    register_head('clamped_loc', MyClampedLocHead)
    readout = ParameterlessReadout(num_continuous=2, continuous_dist_type='clamped_loc')
    assert tuple(readout.get_continuous_native_range()) == (-1.0, 1.0)
    params = torch.tensor([[[-3.0, 0.0], [0.2, 0.0]], [[0.9, 1.0], [-0.4, -1.0]]])
    expected = params[..., 0].clamp(-0.5, 0.5)  # forward gives the loc, clip_sampled clamps it
    torch.testing.assert_close(readout.sample(params), expected)
    torch.testing.assert_close(readout.sample(params, rescale_range=(0.0, 10.0)), (expected + 1) / 2 * 10)


def test_unregistered_head_name_is_rejected_after_removal(register_head):
    register_head('laplace_tmp', MyLaplace)
    ParameterlessReadout(num_continuous=1, continuous_dist_type='laplace_tmp')
    CONTINUOUS_DISTRIBUTIONS.pop('laplace_tmp')
    with pytest.raises(ValueError):
        ParameterlessReadout(num_continuous=1, continuous_dist_type='laplace_tmp')
