"""The discrete loss's options on the fused and the logits path: label smoothing,
z-loss, logit soft-capping, unreduced losses, rows without a loss, action masks,
targets that broadcast against the embeddings; each against ``F.cross_entropy`` /
the explicit formula, values and gradients."""

import pytest
import torch
import torch.nn.functional as F
from helpers import smoothed_nll
from helpers.internals import use_small_fused_chunks

from discrete_continuous_embed_readout import Readout

VOCAB, DIM = 29, 12
OPTIONS = {
    'label smoothing': dict(label_smoothing=0.15),
    'z-loss': dict(z_loss_weight=1e-2),
    'softcap': dict(logit_softcap=2.5),
    'all': dict(label_smoothing=0.1, z_loss_weight=1e-3, logit_softcap=4.0),
}


def reference_loss(logits, targets, keep, label_smoothing=0.0, z_loss_weight=0.0, logit_softcap=None, reduce=True):
    """Independent: soft-capped logits, F.cross_entropy with label smoothing, + w lse^2."""
    if logit_softcap is not None:
        logits = logit_softcap * torch.tanh(logits / logit_softcap)
    ce = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.clamp(min=0).reshape(-1), reduction='none', label_smoothing=label_smoothing)
    z = torch.logsumexp(logits, -1).reshape(-1).square()
    keep = keep.reshape(-1).to(ce.dtype)
    per = (ce + z_loss_weight * z) * keep
    if not reduce:
        return per.reshape(targets.shape), (z * keep).reshape(targets.shape)
    return per.sum() / keep.sum().clamp(min=1), (z * keep).sum() / keep.sum().clamp(min=1)


def setup(dtype=torch.float64, **options):
    readout = Readout(DIM, num_discrete=VOCAB, **options).to(dtype)
    x = torch.randn(4, 8, DIM, dtype=dtype, requires_grad=True)
    targets = torch.randint(0, VOCAB, (4, 8))
    targets[0, :3] = -1
    mask = torch.rand(4, 8) > 0.2
    return readout, x, targets, mask, mask & (targets != -1)


def raw_logits(readout, x):
    return x @ readout.embeddings.weight.T


@pytest.mark.parametrize('fused', [True, False], ids=['fused', 'logits'])
@pytest.mark.parametrize('name', list(OPTIONS))
def test_reduced_loss_and_z_loss_match_the_reference(name, fused, monkeypatch):
    use_small_fused_chunks(monkeypatch)
    readout, x, targets, mask, keep = setup(**OPTIONS[name])
    readout.fused_cross_entropy = fused
    loss, z_loss = readout(x, targets, loss_mask=mask, return_z_loss=True)
    ref, ref_z = reference_loss(raw_logits(readout, x), targets, keep, **OPTIONS[name])
    torch.testing.assert_close(loss, ref, atol=1e-10, rtol=0)
    torch.testing.assert_close(z_loss, ref_z, atol=1e-10, rtol=0)
    weight = readout.embeddings.weight
    for a, b in zip(torch.autograd.grad(loss, (x, weight)), torch.autograd.grad(ref, (x, weight))):
        torch.testing.assert_close(a, b, atol=1e-10, rtol=0)


@pytest.mark.parametrize('fused', [True, False], ids=['fused', 'logits'])
@pytest.mark.parametrize('name', list(OPTIONS))
def test_unreduced_losses_match_per_token_with_per_token_gradients(name, fused, monkeypatch):
    use_small_fused_chunks(monkeypatch)
    readout, x, targets, mask, keep = setup(**OPTIONS[name])
    readout.fused_cross_entropy = fused
    per, z = readout(x, targets, loss_mask=mask, return_unreduced_loss=True, return_z_loss=True)
    ref, ref_z = reference_loss(raw_logits(readout, x), targets, keep, reduce=False, **OPTIONS[name])
    torch.testing.assert_close(per, ref, atol=1e-10, rtol=0)
    torch.testing.assert_close(z, ref_z, atol=1e-10, rtol=0)
    g = torch.randn_like(per)
    torch.testing.assert_close(torch.autograd.grad((per * g).sum(), x)[0], torch.autograd.grad((ref * g).sum(), x)[0], atol=1e-10, rtol=0)


@pytest.mark.parametrize('heads', [(3, 1), (1, 3)], ids=['targets of one head', 'embeddings of one head'])
@pytest.mark.parametrize('fused', [True, False], ids=['fused', 'logits'])
def test_targets_that_broadcast_are_scored_with_every_option(fused, heads, monkeypatch):
    use_small_fused_chunks(monkeypatch)
    options = OPTIONS['all']
    readout = Readout(DIM, num_discrete=VOCAB, fused_cross_entropy=fused, **options).to(torch.float64)
    x_heads, t_heads = heads
    x = torch.randn(x_heads, 4, 8, DIM, dtype=torch.float64, requires_grad=True)
    targets = torch.randint(0, VOCAB, (t_heads, 4, 8))
    targets[..., 0, :3] = -1
    full = (3, 4, 8)
    loss, z_loss = readout(x, targets, return_z_loss=True)
    ref, ref_z = reference_loss(raw_logits(readout, x.expand(*full, DIM)), targets.expand(full), targets.expand(full) != -1, **options)
    torch.testing.assert_close(loss, ref, atol=1e-10, rtol=0)
    torch.testing.assert_close(z_loss, ref_z, atol=1e-10, rtol=0)
    torch.testing.assert_close(torch.autograd.grad(loss, x)[0], torch.autograd.grad(ref, x)[0], atol=1e-10, rtol=0)
    for ignore_index in (-1, None):
        readout.ignore_index, targets = ignore_index, targets if ignore_index == -1 else targets.clamp(min=0)
        per, z = readout(x, targets, return_unreduced_loss=True, return_z_loss=True)
        ref, ref_z = reference_loss(raw_logits(readout, x.expand(*full, DIM)), targets.expand(full), targets.expand(full) != -1, reduce=False, **options)
        torch.testing.assert_close(per, ref, atol=1e-10, rtol=0)
        torch.testing.assert_close(z, ref_z, atol=1e-10, rtol=0)


def test_float32_fused_matches_f_cross_entropy_to_1e5():
    readout, x, targets, mask, keep = setup(torch.float32, label_smoothing=0.1, fused_cross_entropy=True)
    loss = readout(x, targets)
    ref = F.cross_entropy(raw_logits(readout, x).reshape(-1, VOCAB), targets.reshape(-1), ignore_index=-1, label_smoothing=0.1)
    torch.testing.assert_close(loss, ref, atol=1e-5, rtol=0)


def test_the_softcap_applies_to_every_logit_the_readout_produces():
    readout, x, targets, _, _ = setup(torch.float32, logit_softcap=1.5)
    logits = readout(x)
    torch.testing.assert_close(logits, 1.5 * torch.tanh(raw_logits(readout, x) / 1.5))
    assert logits.abs().max() <= 1.5
    log_p = readout.log_prob_from_embeds(x, targets.clamp(min=0))
    torch.testing.assert_close(log_p, readout.log_prob(logits, targets.clamp(min=0)), atol=1e-5, rtol=0)


def test_double_backward_of_the_fused_loss_with_options():
    readout, x, targets, mask, keep = setup(**OPTIONS['all'], fused_cross_entropy=True)
    results = []
    for loss in (readout(x, targets, loss_mask=mask), reference_loss(raw_logits(readout, x), targets, keep, **OPTIONS['all'])[0]):
        (gx,) = torch.autograd.grad(loss, x, create_graph=True)
        results.append(torch.autograd.grad(gx.square().sum(), (x, readout.embeddings.weight)))
    for a, b in zip(*results):
        torch.testing.assert_close(a, b, atol=1e-9, rtol=0)


@pytest.mark.parametrize('kwargs, error, match', [
    (dict(label_smoothing=1.0), ValueError, 'label_smoothing'),
    (dict(label_smoothing=-0.1), ValueError, 'label_smoothing'),
    (dict(z_loss_weight=-1.0), ValueError, 'z_loss_weight'),
    (dict(logit_softcap=0.0), ValueError, 'logit_softcap'),
    (dict(logit_softcap='big'), TypeError, 'logit_softcap'),
])  # fmt: skip
def test_invalid_options_are_named(kwargs, error, match):
    with pytest.raises(error, match=match):
        Readout(DIM, num_discrete=VOCAB, **kwargs)


@pytest.mark.parametrize('fused', [True, False], ids=['fused', 'logits'])
def test_a_fully_masked_or_empty_batch_gives_zero_loss_and_zero_gradients_with_options(fused):
    readout, x, targets, _, _ = setup(**OPTIONS['all'])
    readout.fused_cross_entropy = fused
    loss, z = readout(x, targets, loss_mask=torch.zeros(4, 8, dtype=torch.bool), return_z_loss=True)
    assert loss.item() == 0.0 and z.item() == 0.0
    assert torch.autograd.grad(loss, x)[0].abs().max() == 0.0
    empty = torch.zeros(0, DIM, dtype=torch.float64, requires_grad=True)
    loss = readout(empty, torch.zeros(0, dtype=torch.long))
    assert loss.item() == 0.0
    (grad,) = torch.autograd.grad(loss, empty, allow_unused=True)
    assert grad is None or grad.shape == (0, DIM)


# with an action mask, label smoothing spreads its mass over the allowed actions only


def masked_setup(label_smoothing=0.2, z_loss_weight=1e-2):
    readout = Readout(DIM, num_discrete=VOCAB, label_smoothing=label_smoothing, z_loss_weight=z_loss_weight).double()
    x = torch.randn(4, 8, DIM, dtype=torch.float64, requires_grad=True)
    allowed = torch.rand(4, 8, VOCAB) > 0.5
    allowed[..., 3] = True
    targets = torch.multinomial(allowed.reshape(-1, VOCAB).double(), 1).reshape(4, 8)  # an allowed id at each position
    return readout, x, allowed, targets


def masked_reference(readout, x, allowed, targets, label_smoothing=0.2, z_loss_weight=1e-2):
    """Per entry, by hand: the smoothed cross entropy of the masked softmax + w lse^2 of the masked logits."""
    logits = raw_logits(readout, x).masked_fill(~allowed, float('-inf'))
    return smoothed_nll(logits.log_softmax(-1), targets, label_smoothing) + z_loss_weight * torch.logsumexp(logits, -1).square()


MASKED_PATHS = {
    'forward': lambda readout, x, allowed, targets: readout(x, targets, action_mask=allowed),
    'unreduced': lambda readout, x, allowed, targets: readout(x, targets, action_mask=allowed, return_unreduced_loss=True),
    'calculate_loss': lambda readout, x, allowed, targets: readout.calculate_loss(readout(x), targets, action_mask=allowed),
    'calculate_loss unreduced': lambda readout, x, allowed, targets: readout.calculate_loss(readout(x), targets, action_mask=allowed, return_unreduced_loss=True),
}


@pytest.mark.parametrize('path', list(MASKED_PATHS))
def test_label_smoothing_with_an_action_mask_smooths_over_the_allowed_actions(path):
    readout, x, allowed, targets = masked_setup()
    loss = MASKED_PATHS[path](readout, x, allowed, targets)
    ref = masked_reference(readout, x, allowed, targets)
    ref = ref if loss.ndim else ref.mean()
    assert torch.isfinite(loss).all()
    torch.testing.assert_close(loss, ref, atol=1e-10, rtol=0)
    g = torch.randn_like(loss)
    weight = readout.embeddings.weight
    for a, b in zip(torch.autograd.grad((loss * g).sum(), (x, weight)), torch.autograd.grad((ref * g).sum(), (x, weight))):
        torch.testing.assert_close(a, b, atol=1e-10, rtol=0)


def test_with_every_action_allowed_the_masked_smoothing_is_f_cross_entropys():
    readout, x, _, targets = masked_setup(z_loss_weight=0.0)
    allowed = torch.ones(4, 8, VOCAB, dtype=torch.bool)
    ref = F.cross_entropy(raw_logits(readout, x).reshape(-1, VOCAB), targets.reshape(-1), label_smoothing=0.2)
    torch.testing.assert_close(readout(x, targets, action_mask=allowed), ref, atol=1e-10, rtol=0)
