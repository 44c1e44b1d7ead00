"""Unimix categoricals (``Readout(..., unimix=u)``): every discrete group's distribution
is ``(1 - u) softmax(logits) + u / n`` (uniform over the allowed actions only), in
sampling, log-probs, entropies, KL, the mode, the loss and ``get_dist``; against an
explicit ``Categorical(probs=mixture)``."""

import pytest
import torch
from helpers import assert_frequencies
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
