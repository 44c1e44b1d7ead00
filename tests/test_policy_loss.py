"""The fused policy-gradient loss of a language model (``Readout.policy_loss_from_embeds``)
against each loss type's formula on the logits path (``helpers.policy_losses``, plain
torch and autograd): values, gradients to the embeddings and the table, metrics, every
loss type, clipping, KL, entropy, masks, temperature, soft-cap, selectors, weight
tying, precision, double backward, ``no_grad``, empty batches, ``torch.func`` and
``torch.compile``."""

import pytest
import torch
import torch._dynamo as dynamo
from helpers.internals import forbid_fused_objective_functions, forbid_separate_sequence_pass, set_min_chunk_rows, use_small_fused_chunks
from helpers.policy_losses import assert_close_all, grads, near_log_probs, policy_batch, policy_reference, second_order_grads, sharpened

from discrete_continuous_embed_readout import EmbedAndReadout, Readout

VOCAB, DIM = 37, 16
LOSS_TYPES = ['grpo', 'ppo', 'dapo', 'bnpo', 'dr_grpo', 'gspo', 'cispo']


def readout_of(dtype=torch.float64, **kwargs):
    return sharpened(Readout(DIM, num_discrete=VOCAB, **kwargs)).to(dtype)


def case(readout, *, per_token=False, off_policy=True, temperature=1.0, dtype=torch.float64, shape=(3, 9)):
    """Inputs and the reference's tempered logits (float64)."""
    x, actions, advantages, mask = policy_batch(DIM, VOCAB, dtype, shape, per_token)
    logits = readout.double()(x.double()) / temperature if dtype == torch.float64 else None
    with torch.no_grad():
        current = (readout(x).double() / temperature).log_softmax(-1).gather(-1, actions.clamp(min=0)[..., None]).squeeze(-1)
    old = near_log_probs(current).to(dtype) if off_policy else None
    ref = near_log_probs(current).to(dtype)
    return x, actions, advantages, mask, old, ref, logits


@pytest.mark.parametrize('loss_type', LOSS_TYPES)
@pytest.mark.parametrize('per_token', [False, True], ids=['sequence_advantages', 'token_advantages'])
@pytest.mark.parametrize('chunks', ['one', 'whole_sequences', 'several'])
def test_every_loss_type_matches_its_formula_with_gradients(loss_type, per_token, chunks, monkeypatch):
    if chunks == 'whole_sequences':
        set_min_chunk_rows(monkeypatch, 20)  # two sequences of up to 9 kept tokens per chunk
        if loss_type == 'gspo':
            forbid_separate_sequence_pass(monkeypatch)  # the chunks hold whole sequences: one pass
    if chunks == 'several':
        use_small_fused_chunks(monkeypatch)  # chunks of 4 rows: sequences of 9 span them (GSPO: a separate log-prob pass)
    readout = readout_of()
    x, actions, advantages, mask, old, ref, logits = case(readout, per_token=per_token, temperature=0.7)
    kw = dict(loss_type=loss_type, clip=(0.15, 0.25), kl_coef=0.1, entropy_coef=0.02 if per_token else 0.0)  # both gradient paths
    out = readout.policy_loss_from_embeds(x, actions, advantages, old_log_probs=old, ref_log_probs=ref, loss_mask=mask, temperature=0.7, **kw)
    keep = mask & (actions != -1)
    loss, logp, entropy, ratio = policy_reference(logits, actions, advantages, keep, old=old, ref=ref, **kw)
    torch.testing.assert_close(out.loss, loss, atol=1e-12, rtol=0)
    assert_close_all(grads(out.loss, readout, x), grads(loss, readout, x), atol=1e-12)


@pytest.mark.parametrize('loss_type', ['grpo', 'dapo', 'gspo', 'cispo'])
@pytest.mark.parametrize('entropy_coef', [0.0, 0.05])
def test_float32_matches_the_float64_formula_to_1e5(loss_type, entropy_coef):
    readout = readout_of(torch.float32)
    x, actions, advantages, mask, old, ref, _ = case(readout, dtype=torch.float32, shape=(4, 33))
    out = readout.policy_loss_from_embeds(x, actions, advantages, old_log_probs=old, ref_log_probs=ref, kl_coef=0.05, entropy_coef=entropy_coef,
                                          loss_type=loss_type, loss_mask=mask)  # fmt: skip
    assert out.loss.dtype == torch.float32
    reference = readout_of().requires_grad_()
    with torch.no_grad():
        reference.embeddings.weight.copy_(readout.embeddings.weight)
    x64 = x.detach().double().requires_grad_()
    loss, *_ = policy_reference(reference(x64), actions, advantages.double(), mask & (actions != -1), old=old.double(), ref=ref.double(),
                                loss_type=loss_type, kl_coef=0.05, entropy_coef=entropy_coef)  # fmt: skip
    torch.testing.assert_close(out.loss.double(), loss, atol=1e-5, rtol=0)
    assert_close_all(grads(out.loss, readout, x), grads(loss, reference, x64), atol=1e-5)


def test_metrics_are_the_means_over_kept_tokens():
    readout = readout_of()
    x, actions, advantages, mask, old, ref, logits = case(readout, per_token=True)
    keep = mask & (actions != -1)
    for loss_type in ('dapo', 'gspo', 'cispo'):
        out = readout.policy_loss_from_embeds(x, actions, advantages, old_log_probs=old, ref_log_probs=ref, loss_type=loss_type, loss_mask=mask)
        _, logp, entropy, ratio = policy_reference(logits, actions, advantages, keep, old=old, ref=ref, loss_type=loss_type)
        low, high = ratio < 0.8, ratio > 1.2
        if loss_type != 'cispo':  # clipped where the clip removes the gradient
            low, high = low & (advantages < 0), high & (advantages > 0)
        k3 = (ref - logp).exp() - (ref - logp) - 1
        expected = [t[keep].double().mean() for t in (ratio, low, high, k3, entropy)]
        if loss_type == 'dapo':
            assert 0 < expected[1] < 1 and 0 < expected[2] < 1  # the case clips on both sides
        for name, value, want in zip(out.metrics._fields, out.metrics, expected, strict=True):
            assert not value.requires_grad
            torch.testing.assert_close(value, want, atol=1e-12, rtol=0, msg=name)


def test_on_policy_has_ratio_one_and_the_gradient_of_the_log_prob():
    readout = readout_of()
    x, actions, advantages, mask, _, _, logits = case(readout)
    out = readout.policy_loss_from_embeds(x, actions, advantages, loss_type='grpo', loss_mask=mask)
    assert out.metrics.ratio == 1 and out.metrics.clip_low == 0 and out.metrics.kl is None
    keep = (mask & (actions != -1)).double()
    logp = logits.log_softmax(-1).gather(-1, actions.clamp(min=0)[..., None]).squeeze(-1)
    expected = -((advantages[:, None] * logp * keep).sum(-1) / keep.sum(-1)).mean()  # REINFORCE: d ratio = d log p at ratio 1
    torch.testing.assert_close(out.loss, -(advantages[:, None] * keep).sum(-1).div(keep.sum(-1)).mean(), atol=1e-12, rtol=0)
    assert_close_all(grads(out.loss, readout, x), grads(expected, readout, x), atol=1e-12)


def test_advantages_and_log_probs_are_constants():
    readout = readout_of()
    x, actions, advantages, mask, old, ref, _ = case(readout, per_token=True)
    inputs = [t.clone().requires_grad_() for t in (advantages, old, ref)]
    loss = readout.policy_loss_from_embeds(x, actions, inputs[0], old_log_probs=inputs[1], ref_log_probs=inputs[2], kl_coef=0.1).loss
    assert torch.autograd.grad(loss, inputs, allow_unused=True) == (None, None, None)
    # the tracked formulation (torch.func) treats them as constants too
    of_advantages = lambda a: readout.policy_loss_from_embeds(x.detach(), actions, a, old_log_probs=old).loss  # noqa: E731
    assert (torch.func.grad(of_advantages)(advantages) == 0).all()


def test_normalisers_dr_grpo_constant_and_dapo_token_count():
    readout = readout_of()
    x, actions, advantages, mask, old, _, logits = case(readout)
    keep = mask & (actions != -1)
    for loss_type, kw in (('dr_grpo', dict(max_length=20)), ('dapo', dict(num_tokens=50)), ('cispo', dict(num_tokens=50))):
        out = readout.policy_loss_from_embeds(x, actions, advantages, old_log_probs=old, loss_type=loss_type, loss_mask=mask, **kw)
        loss, *_ = policy_reference(logits, actions, advantages, keep, old=old, loss_type=loss_type, **kw)
        torch.testing.assert_close(out.loss, loss, atol=1e-12, rtol=0)
    dapo = readout.policy_loss_from_embeds(x, actions, advantages, old_log_probs=old, loss_type='dapo', loss_mask=mask)
    bnpo = readout.policy_loss_from_embeds(x, actions, advantages, old_log_probs=old, loss_type='bnpo', loss_mask=mask)
    torch.testing.assert_close(dapo.loss, bnpo.loss, atol=1e-12, rtol=0)  # one batch: the same count


def test_masked_tokens_are_never_read_even_when_they_hold_inf_or_nan():
    readout = readout_of()
    x, actions, advantages, mask, old, ref, _ = case(readout, per_token=True)
    clean = readout.policy_loss_from_embeds(x, actions, advantages, old_log_probs=old, ref_log_probs=ref, kl_coef=0.1, loss_mask=mask)
    dropped = ~mask | (actions == -1)
    poisoned = [t.masked_fill(dropped, v) for t, v in ((advantages, float('nan')), (old, float('inf')), (ref, -float('inf')))]
    dirty = readout.policy_loss_from_embeds(x, actions, *poisoned[:1], old_log_probs=poisoned[1], ref_log_probs=poisoned[2], kl_coef=0.1, loss_mask=mask)
    assert torch.isfinite(dirty.loss)
    torch.testing.assert_close(dirty.loss, clean.loss, atol=1e-12, rtol=0)
    expected = grads(clean.loss, readout, x)
    assert_close_all(grads(dirty.loss, readout, x), expected, atol=1e-12)
    # the tracked formulation (torch.func) computes every row, the dropped ones included
    poisoned[2] = ref.masked_fill(dropped, float('inf'))
    loss_of = lambda xs: readout.policy_loss_from_embeds(xs, actions, poisoned[0], old_log_probs=poisoned[1], ref_log_probs=poisoned[2], kl_coef=0.1,  # noqa: E731
                                                         loss_mask=mask).loss
    torch.testing.assert_close(torch.func.grad(loss_of)(x.detach()), expected[0], atol=1e-12, rtol=0)


@pytest.mark.parametrize('softcap', [None, 2.0])
def test_soft_cap_and_temperature(softcap):
    readout = readout_of(logit_softcap=softcap)
    x, actions, advantages, mask, old, ref, _ = case(readout, temperature=1.6)
    for entropy_coef in (0.0, 0.1):
        logits = readout(x) / 1.6
        out = readout.policy_loss_from_embeds(x, actions, advantages, old_log_probs=old, ref_log_probs=ref, kl_coef=0.2, entropy_coef=entropy_coef,
                                              loss_mask=mask, temperature=1.6)  # fmt: skip
        loss, *_ = policy_reference(logits, actions, advantages, mask & (actions != -1), old=old, ref=ref, kl_coef=0.2, entropy_coef=entropy_coef)
        torch.testing.assert_close(out.loss, loss, atol=1e-12, rtol=0)
        assert_close_all(grads(out.loss, readout, x), grads(loss, readout, x), atol=1e-12)


@pytest.mark.parametrize('how', ['registered', 'runtime'])
def test_selectors_score_the_selected_rows(how):
    rows = [5, 0, 17, 3, 30, 12, 8]
    readout = sharpened(Readout(DIM, num_discrete=40, selectors=[[rows], [[1, 2]]] if how == 'registered' else None)).double()
    call = dict(selector_index=0) if how == 'registered' else dict(selector_config=[rows])
    x, actions, advantages, mask = policy_batch(DIM, len(rows))
    logits = x @ readout.embeddings.weight[rows].T
    old = near_log_probs(logits.log_softmax(-1).gather(-1, actions.clamp(min=0)[..., None]).squeeze(-1))
    out = readout.policy_loss_from_embeds(x, actions, advantages, old_log_probs=old, loss_type='grpo', loss_mask=mask, **call)
    loss, *_ = policy_reference(logits, actions, advantages, mask & (actions != -1), old=old, loss_type='grpo')
    torch.testing.assert_close(out.loss, loss, atol=1e-12, rtol=0)
    ours, theirs = grads(out.loss, readout, x), grads(loss, readout, x)
    assert_close_all(ours, theirs, atol=1e-12)
    assert ours[1][[1, 2, 39]].abs().sum() == 0  # rows outside the selector get nothing


def test_weight_tying_sends_both_gradients_into_the_shared_table():
    embed, readout = EmbedAndReadout(DIM, num_discrete=VOCAB, weight_tie=True)
    sharpened(readout)
    ids = torch.randint(0, VOCAB, (3, 8))
    advantages = torch.randn(3)
    hidden = embed(ids)  # the "model" is the embedding itself: the table gets both paths' gradients
    old = near_log_probs(readout(hidden).log_softmax(-1).gather(-1, ids[..., None]).squeeze(-1))
    out = readout.policy_loss_from_embeds(hidden, ids, advantages, old_log_probs=old, loss_type='gspo')
    (ours,) = torch.autograd.grad(out.loss, embed.embeddings.weight)
    loss, *_ = policy_reference(readout(embed(ids)), ids, advantages, torch.ones_like(ids, dtype=torch.bool), old=old, loss_type='gspo')
    (theirs,) = torch.autograd.grad(loss, embed.embeddings.weight)
    torch.testing.assert_close(ours, theirs, atol=1e-5, rtol=0)


@pytest.mark.parametrize('loss_type', ['dapo', 'gspo'])
def test_bfloat16_autocast_matches_the_float64_formula_loosely(loss_type):
    readout = readout_of(torch.float32)
    x, actions, advantages, mask, old, ref, _ = case(readout, dtype=torch.float32, shape=(4, 33))
    with torch.autocast('cpu', dtype=torch.bfloat16):
        out = readout.policy_loss_from_embeds(x, actions, advantages, old_log_probs=old, ref_log_probs=ref, kl_coef=0.1, entropy_coef=0.01,
                                              loss_type=loss_type, loss_mask=mask)  # fmt: skip
    assert out.loss.dtype == torch.float32 and out.metrics.entropy.dtype == torch.float32
    x64, w64 = x.detach().double().requires_grad_(), readout.embeddings.weight.detach().double().requires_grad_()
    loss, *_ = policy_reference(x64 @ w64.T, actions, advantages.double(), mask & (actions != -1), old=old.double(), ref=ref.double(),
                                loss_type=loss_type, kl_coef=0.1, entropy_coef=0.01)  # fmt: skip
    torch.testing.assert_close(out.loss.double(), loss, atol=2e-2, rtol=2e-2)
    for ours, theirs in zip(grads(out.loss, readout, x), torch.autograd.grad(loss, (x64, w64))):
        assert ours.dtype == torch.float32
        assert (ours.double() - theirs).norm() <= 0.05 * theirs.norm()


@pytest.mark.parametrize('loss_type', ['grpo', 'gspo', 'cispo'])
def test_double_backward_matches_the_formula(loss_type):
    readout = readout_of()
    x, actions, advantages, mask, old, ref, logits = case(readout)
    kw = dict(loss_type=loss_type, kl_coef=0.1, entropy_coef=0.05)
    ours = readout.policy_loss_from_embeds(x, actions, advantages, old_log_probs=old, ref_log_probs=ref, loss_mask=mask, **kw).loss
    theirs, *_ = policy_reference(logits, actions, advantages, mask & (actions != -1), old=old, ref=ref, **kw)
    assert_close_all(second_order_grads(ours, readout, x), second_order_grads(theirs, readout, x), atol=1e-10)


def test_no_grad_computes_no_gradient_and_the_same_values(monkeypatch):
    readout = readout_of()
    x, actions, advantages, mask, old, ref, _ = case(readout)
    call = lambda: readout.policy_loss_from_embeds(x, actions, advantages, old_log_probs=old, ref_log_probs=ref, kl_coef=0.1, loss_mask=mask)  # noqa: E731
    expected = call()

    def refuse(*args):
        raise AssertionError('the gradient-computing fused function ran under no_grad')

    forbid_fused_objective_functions(monkeypatch, refuse)
    with torch.no_grad():
        out = call()
    assert not out.loss.requires_grad
    for a, b in zip((out.loss, *out.metrics), (expected.loss, *expected.metrics)):
        torch.testing.assert_close(a, b.detach(), atol=1e-12, rtol=0)


@pytest.mark.parametrize('loss_type', LOSS_TYPES)
def test_empty_batches_and_fully_masked_batches_give_zero(loss_type):
    readout = readout_of()
    for batch in ((0, 9), (3, 0)):
        x = torch.randn(*batch, DIM, dtype=torch.float64, requires_grad=True)
        out = readout.policy_loss_from_embeds(x, torch.zeros(batch, dtype=torch.long), torch.randn(batch[0], dtype=torch.float64), loss_type=loss_type)
        assert out.loss == 0 and all(m == 0 for m in out.metrics if m is not None)
        assert [g.abs().sum() for g in grads(out.loss, readout, x)] == [0, 0]
    x, actions, advantages, _ = policy_batch(DIM, VOCAB)
    out = readout.policy_loss_from_embeds(x, actions, advantages, loss_mask=torch.zeros(actions.shape, dtype=torch.bool), loss_type=loss_type)
    assert out.loss == 0 and not any(g.isnan().any() for g in grads(out.loss, readout, x))


def test_torch_func_grad_takes_the_tracked_formulation():
    readout = readout_of()
    x, actions, advantages, mask, old, ref, logits = case(readout)
    loss_of = lambda xs: readout.policy_loss_from_embeds(xs, actions, advantages, old_log_probs=old, loss_type='gspo', loss_mask=mask).loss  # noqa: E731
    theirs, *_ = policy_reference(logits, actions, advantages, mask & (actions != -1), old=old, loss_type='gspo')
    torch.testing.assert_close(torch.func.grad(loss_of)(x.detach()), torch.autograd.grad(theirs, x)[0], atol=1e-12, rtol=0)


@pytest.mark.parametrize('loss_type', ['grpo', 'gspo'])
def test_compiles_without_graph_breaks_and_matches_eager(loss_type):
    embed, readout = EmbedAndReadout(DIM, num_discrete=50, weight_tie=True, readout_kwargs=dict(logit_softcap=5.0))
    ids, mask, advantages = torch.randint(0, 50, (2, 5)), torch.rand(2, 5) > 0.3, torch.randn(2)
    old, ref = torch.randn(2, 5) - 4, torch.randn(2, 5) - 4

    def step():
        out = readout.policy_loss_from_embeds(embed(ids), ids, advantages, old_log_probs=old, ref_log_probs=ref, kl_coef=0.1, entropy_coef=0.01,
                                              loss_mask=mask, loss_type=loss_type)  # fmt: skip
        return out.loss, *out.metrics

    dynamo.reset()
    explained = dynamo.explain(step)()
    assert explained.graph_break_count == 0, explained.break_reasons
    eager = step()
    dynamo.reset()
    compiled = torch.compile(step, fullgraph=True, backend='aot_eager')()
    for a, b in zip(compiled, eager, strict=True):
        torch.testing.assert_close(a, b)
    weight = readout.embeddings.weight
    torch.testing.assert_close(torch.autograd.grad(compiled[0], weight)[0], torch.autograd.grad(eager[0], weight)[0])


def test_matches_liger_fused_linear_grpo_loss_where_the_types_overlap():
    liger = pytest.importorskip('liger_kernel.chunked_loss')
    readout = readout_of(torch.float32)
    x, actions, advantages, mask, old, ref, _ = case(readout, dtype=torch.float32, shape=(4, 12))
    actions = actions.clamp(min=0)
    weight = readout.embeddings.weight
    for ours_kw, liger_kw in (
        (dict(loss_type='dapo'), dict(loss_type='dapo')),
        (dict(loss_type='grpo', kl_coef=0.05), dict(loss_type='grpo', beta=0.05)),
        (dict(loss_type='bnpo', clip=(0.1, 0.3)), dict(loss_type='bnpo', epsilon_low=0.1, epsilon_high=0.3)),
        (dict(loss_type='dr_grpo', max_length=16), dict(loss_type='dr_grpo', max_completion_length=16)),
        (dict(loss_type='gspo'), dict(loss_type='grpo', importance_sampling_level='sequence')),
        (dict(loss_type='cispo', clip=(1.0, 4.0)), dict(loss_type='cispo', epsilon_high=5.0)),  # Liger's bound is epsilon_high itself
    ):
        kl = dict(ref_log_probs=ref) if 'kl_coef' in ours_kw else {}
        ours = readout.policy_loss_from_embeds(x, actions, advantages, old_log_probs=old, loss_mask=mask, **kl, **ours_kw).loss
        theirs = liger.LigerFusedLinearGRPOLoss(compiled=False, use_ref_model='beta' in liger_kw, **{'beta': 0.0, **liger_kw})(
            x, weight, actions, mask.long(), advantages, old_per_token_logps=old, ref_per_token_logps=ref if kl else None)[0]
        torch.testing.assert_close(ours, theirs, atol=1e-5, rtol=1e-5, msg=str(ours_kw))


def test_bad_arguments_are_refused_with_clear_errors():
    readout = readout_of()
    x, actions, advantages, mask = policy_batch(DIM, VOCAB)

    def call(x=x, a=actions, adv=advantages, **kw):
        return readout.policy_loss_from_embeds(x, a, adv, **kw)

    with pytest.raises(ValueError, match="loss_type must be one of .* got 'ppo2'"):
        call(loss_type='ppo2')
    with pytest.raises(TypeError, match='clip must be a pair'):
        call(clip=0.2)
    with pytest.raises(ValueError, match='clip must be two numbers >= 0'):
        call(clip=(-0.1, 0.2))
    with pytest.raises(ValueError, match='kl_coef=0.1 needs ref_log_probs'):
        call(kl_coef=0.1)
    with pytest.raises(ValueError, match=r'advantages must be per sequence \(3,\) or per token \(3, 9\)'):
        call(adv=torch.randn(9, dtype=torch.float64))
    with pytest.raises(ValueError, match=r'old_log_probs must have one log-prob per token, shape \(3, 9\)'):
        call(old_log_probs=torch.randn(3, dtype=torch.float64))
    with pytest.raises(TypeError, match='advantages must be a floating point tensor'):
        call(adv=torch.ones(3, dtype=torch.long))
    with pytest.raises(ValueError, match="max_length is Dr. GRPO's constant"):
        call(loss_type='grpo', max_length=10)
    with pytest.raises(ValueError, match="num_tokens is the token count of loss_type='dapo' / 'cispo'"):
        call(loss_type='gspo', num_tokens=10)
    with pytest.raises(ValueError, match='temperature must be a finite number > 0'):
        call(temperature=0.0)
    with pytest.raises(IndexError, match='actions: id 37'):
        call(a=torch.full((3, 9), VOCAB))
    with pytest.raises(ValueError, match=r'embeds must be \(..., tokens, D\)'):
        call(x=torch.randn(DIM, dtype=torch.float64), a=torch.tensor(1), adv=torch.tensor(1.0, dtype=torch.float64))
    with pytest.raises(ValueError, match='need one discrete group'):
        Readout(DIM, num_discrete=(4, 5)).double().policy_loss_from_embeds(x, actions, advantages)
