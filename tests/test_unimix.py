"""Unimix categoricals (``Readout(..., unimix=u)``): every discrete group's distribution
is ``(1 - u) softmax(logits) + u / n`` (uniform over the allowed actions only), in
sampling, log-probs, entropies, KL, the mode, the loss and ``get_dist``; against an
explicit ``Categorical(probs=mixture)``."""

import pytest
import torch
from helpers import assert_frequencies, smoothed_nll
from torch.distributions import Categorical, kl_divergence

from discrete_continuous_embed_readout import ParameterlessReadout, Readout

U = 0.1
SIZES = (4, 6, 5)


def mixture(logits, allowed=None, u=U):
    """The explicit mixture of one group, float64: softmax over the allowed ids mixed
    with the uniform over them."""
    logits = logits.double()
    if allowed is not None:
        logits = logits.masked_fill(~allowed, float('-inf'))
    allowed = torch.isfinite(logits)
    uniform = allowed.double() / allowed.sum(-1, keepdim=True)
    return (1 - u) * logits.softmax(-1) + u * uniform


def close(ours, reference):
    """float32 results against float64 references."""
    torch.testing.assert_close(ours.double(), reference.double(), atol=1e-5, rtol=1e-5)


def setup(parallel=True, masked=False):
    readout = ParameterlessReadout(num_discrete=SIZES, unimix=U, use_parallel_multi_discrete=parallel)
    logits = tuple(torch.randn(3, n) * 3 for n in SIZES)
    masks = tuple(torch.rand(3, n) > 0.4 for n in SIZES) if masked else None
    if masks is not None:
        for m in masks:
            m[:, 0] = True
    cats = [Categorical(probs=mixture(g, m)) for g, m in zip(logits, masks or (None,) * len(SIZES))]
    return readout, logits, masks, cats


@pytest.mark.parametrize('masked', [False, True], ids=['unmasked', 'masked'])
@pytest.mark.parametrize('parallel', [True, False], ids=['parallel', 'sequential'])
def test_scores_follow_the_explicit_mixture(parallel, masked):
    readout, logits, masks, cats = setup(parallel, masked)
    ids = torch.stack([c.sample() for c in cats], -1)
    close(readout.log_prob(logits, ids, action_mask=masks), torch.stack([c.log_prob(ids[:, g]) for g, c in enumerate(cats)], -1))
    close(readout.entropy(logits, action_mask=masks), torch.stack([c.entropy() for c in cats], -1))
    other = tuple(torch.randn_like(g) for g in logits)
    other_cats = [Categorical(probs=mixture(g, m)) for g, m in zip(other, masks or (None,) * len(SIZES))]
    close(readout.kl_div(logits, other, action_mask=masks), torch.stack([kl_divergence(p, q) for p, q in zip(cats, other_cats)], -1))
    assert torch.equal(readout.mode(logits, action_mask=masks), torch.stack([c.probs.argmax(-1) for c in cats], -1))
    loss = readout.calculate_loss(logits, ids, action_mask=masks)
    close(loss, -torch.stack([c.log_prob(ids[:, g]) for g, c in enumerate(cats)], -1).mean())
    joint = readout.get_dist(logits, action_mask=masks)
    close(joint.log_prob(ids), sum(c.log_prob(ids[:, g]) for g, c in enumerate(cats)))


@pytest.mark.parametrize('masked', [False, True], ids=['unmasked', 'masked'])
def test_samples_are_drawn_from_the_mixture(masked):
    readout = ParameterlessReadout(num_discrete=6, unimix=0.3)
    logits = torch.tensor([8.0, 0.0, 0.0, -2.0, 1.0, 0.0]).expand(20000, 6)
    mask = torch.tensor([True, True, False, True, True, False]).expand(20000, 6) if masked else None
    ids = readout.sample(logits, action_mask=mask)
    assert_frequencies(ids, mixture(logits[0], None if mask is None else mask[0], u=0.3), 'unimix samples')


def test_a_masked_action_stays_impossible_and_the_uniform_part_covers_the_allowed_only():
    readout = ParameterlessReadout(num_discrete=5, unimix=0.5)
    logits = torch.tensor([[10.0, 0.0, 0.0, 0.0, 0.0]])
    mask = torch.tensor([[True, False, True, False, False]])
    log_p = readout.log_prob(logits.expand(5, 5), torch.arange(5)[:, None].squeeze(-1), action_mask=mask.expand(5, 5))
    assert torch.isneginf(log_p[[1, 3, 4]]).all()
    close(log_p[2].exp(), torch.tensor(0.5 * 2.0**-1 + 0.5 * (1 / (1 + torch.e**10))))


def test_the_forward_loss_is_the_mixture_cross_entropy_and_keeps_its_gradient():
    readout = Readout(8, num_discrete=7, unimix=U)
    x = torch.randn(5, 8, requires_grad=True)
    y = torch.randint(0, 7, (5,))
    loss = readout(x, y)
    logits = readout(x)
    ref = -torch.log(mixture(logits)).gather(-1, y[:, None]).mean()
    close(loss, ref)
    torch.testing.assert_close(torch.autograd.grad(loss, x)[0], torch.autograd.grad(ref.float(), x)[0], atol=1e-6, rtol=0)


def test_the_0_2_methods_and_zero_unimix():
    readout = Readout(8, num_discrete=SIZES, unimix=U)
    logits = list(readout(torch.randn(3, 8)))
    cats = [Categorical(probs=mixture(g)) for g in logits]
    close(readout.entropy_discrete(logits), torch.stack([c.entropy() for c in cats], -1))
    plain = Readout(8, num_discrete=SIZES)
    plain.load_state_dict(readout.state_dict())
    torch.testing.assert_close(plain.entropy(logits), torch.stack([Categorical(logits=g).entropy() for g in logits], -1))


def test_invalid_unimix_and_the_per_token_paths_say_so():
    with pytest.raises(ValueError, match='unimix'):
        Readout(8, num_discrete=5, unimix=1.0)
    readout = Readout(8, num_discrete=5, unimix=U)
    with pytest.raises(ValueError, match='unimix'):
        readout.log_prob_from_embeds(torch.randn(2, 8), torch.tensor([0, 1]))


def test_forward_returns_the_logits_themselves_masked_or_not():
    readout = Readout(8, num_discrete=5, unimix=U)
    x = torch.randn(3, 8)
    raw = x @ readout.embeddings.weight.T
    torch.testing.assert_close(readout(x), raw)
    mask = torch.tensor([True, False, True, True, False]).expand(3, 5)
    torch.testing.assert_close(readout(x, action_mask=mask), raw.masked_fill(~mask, float('-inf')))


def masked_case(seed_rows=6, n=7):
    allowed = torch.rand(seed_rows, n) > 0.4
    allowed[:, 2] = True
    targets = torch.multinomial(allowed.double(), 1).squeeze(-1)  # an allowed id per row
    return allowed, targets


def log_mixture(logits, allowed):
    """log of the explicit mixture, ``-inf`` at the masked actions (and no NaN gradient there)."""
    p = mixture(logits, allowed)
    return p.where(allowed, 1.0).log().masked_fill(~allowed, float('-inf'))


@pytest.mark.parametrize('label_smoothing', [0.0, 0.2])
def test_the_masked_loss_is_the_mixture_cross_entropy_smoothed_over_the_allowed_actions(label_smoothing):
    readout = Readout(8, num_discrete=7, unimix=U, label_smoothing=label_smoothing).double()
    x = torch.randn(6, 8, dtype=torch.float64, requires_grad=True)
    allowed, y = masked_case()
    ref = smoothed_nll(log_mixture(x @ readout.embeddings.weight.T, allowed), y, label_smoothing)  # float64, by hand
    losses = {
        'forward': readout(x, y, action_mask=allowed),
        'unreduced': readout(x, y, action_mask=allowed, return_unreduced_loss=True),
        'calculate_loss': readout.calculate_loss(readout(x), y, action_mask=allowed),
    }
    for name, loss in losses.items():
        expected = ref if loss.ndim else ref.mean()
        assert torch.isfinite(loss).all(), name
        torch.testing.assert_close(loss, expected, atol=1e-10, rtol=0, msg=name)
        g = torch.randn_like(loss)
        torch.testing.assert_close(torch.autograd.grad((loss * g).sum(), x)[0], torch.autograd.grad((expected * g).sum(), x, retain_graph=True)[0], atol=1e-10, rtol=0, msg=name)


@pytest.mark.parametrize('masked', [False, True], ids=['unmasked', 'masked'])
def test_the_z_loss_is_that_of_the_logits_not_of_the_mixture(masked):
    w, cap = 0.05, 3.0
    readout = Readout(8, num_discrete=7, unimix=U, z_loss_weight=w, logit_softcap=cap).double()
    with torch.no_grad():
        readout.embeddings.weight.normal_(0, 0.5)  # logits of order 1: a z-loss far from 0
    x = torch.randn(6, 8, dtype=torch.float64, requires_grad=True)
    allowed, y = masked_case() if masked else (torch.ones(6, 7, dtype=torch.bool), torch.randint(0, 7, (6,)))
    mask = allowed if masked else None
    raw = (cap * torch.tanh(x @ readout.embeddings.weight.T / cap)).masked_fill(~allowed, float('-inf'))  # soft-capped, masked
    z_ref = torch.logsumexp(raw, -1).square()
    loss_ref = -log_mixture(raw, allowed).gather(-1, y[:, None]).squeeze(-1) + w * z_ref
    assert z_ref.mean() > 0.5
    loss, z = readout(x, y, action_mask=mask, return_z_loss=True)
    torch.testing.assert_close(z, z_ref.mean(), atol=1e-10, rtol=0)
    torch.testing.assert_close(loss, loss_ref.mean(), atol=1e-10, rtol=0)
    torch.testing.assert_close(torch.autograd.grad(loss, x)[0], torch.autograd.grad(loss_ref.mean(), x)[0], atol=1e-10, rtol=0)
    per, z_per = readout(x, y, action_mask=mask, return_z_loss=True, return_unreduced_loss=True)
    torch.testing.assert_close(z_per, z_ref, atol=1e-10, rtol=0)
    torch.testing.assert_close(per, loss_ref, atol=1e-10, rtol=0)
    torch.testing.assert_close(readout.calculate_loss(readout(x), y, action_mask=mask), loss_ref.mean(), atol=1e-10, rtol=0)
