"""The fused distillation loss of a language model (``Readout.distill_loss_from_embeds``)
against its definition on the logits path (``helpers.policy_losses.distill_reference``):
forward / reverse KL and the generalised JSD, hard targets, temperature, soft-caps,
masks, the teacher's own table or the student's, gradients to the student only,
precision, double backward, ``no_grad``, empty batches, ``torch.func``, ``torch.compile``
and Liger's ``LigerFusedLinearJSDLoss``."""

import pytest
import torch
import torch._dynamo as dynamo
from helpers.internals import forbid_fused_objective_functions, use_chunks_in_cache_blocks, use_small_fused_chunks
from helpers.policy_losses import assert_close_all, distill_reference, grads, second_order_grads, sharpened

from discrete_continuous_embed_readout import EmbedAndReadout, Readout

VOCAB, DIM, TEACHER_DIM = 37, 16, 24
DIVERGENCES = ['forward_kl', 'reverse_kl', 'jsd']


def pair(dtype=torch.float64, softcaps=(None, None)):
    student = sharpened(Readout(DIM, num_discrete=VOCAB, logit_softcap=softcaps[0])).to(dtype)
    teacher = sharpened(Readout(TEACHER_DIM, num_discrete=VOCAB, logit_softcap=softcaps[1]), std=0.6).to(dtype)
    return student, teacher


def batch(dtype=torch.float64, shape=(3, 11)):
    x = torch.randn(*shape, DIM, dtype=dtype, requires_grad=True)
    x_t = torch.randn(*shape, TEACHER_DIM, dtype=dtype)
    targets = torch.randint(0, VOCAB, shape)
    targets[0, 2] = -1  # ignore_index
    return x, x_t, targets, torch.rand(shape) > 0.3


@pytest.mark.parametrize('divergence', DIVERGENCES)
@pytest.mark.parametrize('hard_weight', [0.0, 0.3])
@pytest.mark.parametrize('temperature', [1.0, 2.0])
@pytest.mark.parametrize('chunks', ['one', 'several', 'in cache blocks'])
def test_every_divergence_matches_its_definition_with_gradients(divergence, hard_weight, temperature, chunks, monkeypatch):
    if chunks == 'several':
        use_small_fused_chunks(monkeypatch)
    elif chunks == 'in cache blocks':  # chunks of 7 rows, blocks of 3 (2 for the JSD's four tiles): the last one partial
        use_chunks_in_cache_blocks(monkeypatch, 7, block_bytes=10 * VOCAB * 8)
    student, teacher = pair()
    x, x_t, targets, mask = batch()
    hard = dict(hard_targets=targets, hard_weight=hard_weight) if hard_weight else {}
    ours = student.distill_loss_from_embeds(x, x_t, teacher=teacher, divergence=divergence, beta=0.3, temperature=temperature, loss_mask=mask, **hard)
    keep = mask & (targets != -1) if hard_weight else mask
    theirs = distill_reference(student(x), teacher(x_t), keep, divergence=divergence, beta=0.3, temperature=temperature, hard_targets=targets,
                               hard_weight=hard_weight)  # fmt: skip
    torch.testing.assert_close(ours, theirs, atol=1e-12, rtol=0)
    assert_close_all(grads(ours, student, x), grads(theirs, student, x), atol=1e-12)


@pytest.mark.parametrize('divergence', DIVERGENCES)
def test_float32_matches_the_float64_definition_to_1e5(divergence):
    student, teacher = pair(torch.float32)
    x, x_t, targets, mask = batch(torch.float32, shape=(4, 40))
    ours = student.distill_loss_from_embeds(x, x_t, teacher=teacher, divergence=divergence, loss_mask=mask, hard_targets=targets, hard_weight=0.2)
    assert ours.dtype == torch.float32
    x64, w64 = x.detach().double().requires_grad_(), student.embeddings.weight.detach().double().requires_grad_()
    theirs = distill_reference(x64 @ w64.T, teacher.double()(x_t.double()), mask & (targets != -1), divergence=divergence, hard_targets=targets,
                               hard_weight=0.2)  # fmt: skip
    torch.testing.assert_close(ours.double(), theirs, atol=1e-5, rtol=0)
    assert_close_all(grads(ours, student, x), torch.autograd.grad(theirs, (x64, w64)), atol=1e-5)


@pytest.mark.parametrize('softcaps', [(3.0, None), (None, 2.0), (3.0, 2.0)])
def test_soft_caps_of_either_side(softcaps):
    student, teacher = pair(softcaps=softcaps)
    x, x_t, targets, mask = batch()
    for divergence in DIVERGENCES:
        ours = student.distill_loss_from_embeds(x, x_t, teacher=teacher, divergence=divergence, temperature=1.5, hard_targets=targets, hard_weight=0.4)
        theirs = distill_reference(student(x), teacher(x_t), targets != -1, divergence=divergence, temperature=1.5, hard_targets=targets, hard_weight=0.4)
        torch.testing.assert_close(ours, theirs, atol=1e-12, rtol=0)
        assert_close_all(grads(ours, student, x), grads(theirs, student, x), atol=1e-12)


def test_the_teacher_gets_no_gradient_and_defaults_to_this_readouts_table():
    student, teacher = pair()
    x, x_t, _, _ = batch()
    loss = student.distill_loss_from_embeds(x, x_t, teacher=teacher)
    assert loss.requires_grad and torch.autograd.grad(loss, teacher.embeddings.weight, allow_unused=True)[0] is None
    x_self = torch.randn(3, 11, DIM, dtype=torch.float64)  # teacher=None: the student's own table on other embeddings
    ours = student.distill_loss_from_embeds(x, x_self, divergence='reverse_kl')
    theirs = distill_reference(student(x), student(x_self).detach(), torch.ones(3, 11, dtype=torch.bool), divergence='reverse_kl')
    torch.testing.assert_close(ours, theirs, atol=1e-12, rtol=0)
    assert_close_all(grads(ours, student, x), grads(theirs, student, x), atol=1e-12)  # the table only through the student side


def test_weight_tying_and_bfloat16_autocast():
    embed, student = EmbedAndReadout(DIM, num_discrete=VOCAB, weight_tie=True)
    sharpened(student)
    _, teacher = pair(torch.float32)
    ids, x_t = torch.randint(0, VOCAB, (4, 30)), torch.randn(4, 30, TEACHER_DIM)
    with torch.autocast('cpu', dtype=torch.bfloat16):
        ours = student.distill_loss_from_embeds(embed(ids), x_t, teacher=teacher, divergence='jsd', hard_targets=ids, hard_weight=0.5)
    assert ours.dtype == torch.float32
    table = embed.embeddings.weight.detach().double().requires_grad_()
    rows = table[ids]  # the embed lookup through the tied table
    theirs = distill_reference(rows @ table.T, teacher.double()(x_t.double()), torch.ones(4, 30, dtype=torch.bool), divergence='jsd', hard_targets=ids,
                               hard_weight=0.5)  # fmt: skip
    torch.testing.assert_close(ours.double(), theirs, atol=2e-2, rtol=2e-2)
    (ours_grad,), (their_grad,) = torch.autograd.grad(ours, embed.embeddings.weight), torch.autograd.grad(theirs, table)
    assert (ours_grad.double() - their_grad).norm() <= 0.05 * their_grad.norm()


def test_double_backward_matches_the_definition():
    student, teacher = pair()
    x, x_t, targets, mask = batch()
    ours = student.distill_loss_from_embeds(x, x_t, teacher=teacher, divergence='jsd', temperature=1.5, loss_mask=mask, hard_targets=targets, hard_weight=0.3)
    theirs = distill_reference(student(x), teacher(x_t), mask & (targets != -1), divergence='jsd', temperature=1.5, hard_targets=targets, hard_weight=0.3)
    assert_close_all(second_order_grads(ours, student, x), second_order_grads(theirs, student, x), atol=1e-10)


def test_no_grad_empty_and_fully_masked(monkeypatch):
    student, teacher = pair()
    x, x_t, _, mask = batch()
    expected = student.distill_loss_from_embeds(x, x_t, teacher=teacher, loss_mask=mask)

    def refuse(*args):
        raise AssertionError('the gradient-computing fused function ran under no_grad')

    forbid_fused_objective_functions(monkeypatch, refuse)
    with torch.no_grad():
        torch.testing.assert_close(student.distill_loss_from_embeds(x, x_t, teacher=teacher, loss_mask=mask), expected.detach(), atol=1e-12, rtol=0)
    monkeypatch.undo()
    empty = torch.randn(0, 5, DIM, dtype=torch.float64, requires_grad=True)
    loss = student.distill_loss_from_embeds(empty, torch.randn(0, 5, TEACHER_DIM, dtype=torch.float64), teacher=teacher, divergence='jsd')
    assert loss == 0 and [g.abs().sum() for g in grads(loss, student, empty)] == [0, 0]
    loss = student.distill_loss_from_embeds(x, x_t, teacher=teacher, loss_mask=torch.zeros(3, 11, dtype=torch.bool))
    assert loss == 0 and all(g.abs().sum() == 0 for g in grads(loss, student, x))


def test_torch_func_and_compile():
    student, teacher = pair()
    x, x_t, targets, mask = batch()
    loss_of = lambda xs: student.distill_loss_from_embeds(xs, x_t, teacher=teacher, divergence='reverse_kl', loss_mask=mask)  # noqa: E731
    theirs = distill_reference(student(x), teacher(x_t), mask, divergence='reverse_kl')
    torch.testing.assert_close(torch.func.grad(loss_of)(x.detach()), torch.autograd.grad(theirs, x)[0], atol=1e-12, rtol=0)

    embed, readout = EmbedAndReadout(DIM, num_discrete=50, weight_tie=True, readout_kwargs=dict(logit_softcap=4.0))
    small_teacher = sharpened(Readout(TEACHER_DIM, num_discrete=50))
    ids, teacher_embeds = torch.randint(0, 50, (2, 5)), torch.randn(2, 5, TEACHER_DIM)

    def step():
        return readout.distill_loss_from_embeds(embed(ids), teacher_embeds, teacher=small_teacher, divergence='jsd', loss_mask=mask[:2, :5],
                                                temperature=2.0, hard_targets=ids, hard_weight=0.5)  # fmt: skip

    dynamo.reset()
    explained = dynamo.explain(step)()
    assert explained.graph_break_count == 0, explained.break_reasons
    eager = step()
    dynamo.reset()
    compiled = torch.compile(step, fullgraph=True, backend='aot_eager')()
    torch.testing.assert_close(compiled, eager)
    weight = readout.embeddings.weight
    torch.testing.assert_close(torch.autograd.grad(compiled, weight)[0], torch.autograd.grad(eager, weight)[0])


def test_matches_liger_fused_linear_jsd_loss():
    liger = pytest.importorskip('liger_kernel.chunked_loss')
    student, teacher = pair(torch.float32)
    x, x_t, targets, _ = batch(torch.float32, shape=(4, 16))
    x2, x2_t, flat_targets = x.reshape(-1, DIM), x_t.reshape(-1, TEACHER_DIM), targets.reshape(-1)
    for beta, divergence in ((0.0, 'forward_kl'), (1.0, 'reverse_kl'), (0.3, 'jsd')):
        for temperature, hard_weight in ((1.0, 0.0), (2.0, 0.4)):
            ours = student.distill_loss_from_embeds(x, x_t, teacher=teacher, divergence=divergence, beta=beta, temperature=temperature,
                                                    hard_targets=targets, hard_weight=hard_weight)  # fmt: skip
            theirs = liger.LigerFusedLinearJSDLoss(weight_hard_loss=hard_weight, weight_soft_loss=1 - hard_weight, beta=beta, ignore_index=-1,
                                                   temperature=temperature, compiled=False)(
                x2, student.embeddings.weight, x2_t, teacher.embeddings.weight, flat_targets)  # fmt: skip
            torch.testing.assert_close(ours, theirs, atol=1e-5, rtol=1e-5, msg=f'{divergence} T={temperature} h={hard_weight}')


def test_bad_arguments_are_refused_with_clear_errors():
    student, teacher = pair()
    x, x_t, targets, _ = batch()

    def call(x_t=x_t, **kw):
        return student.distill_loss_from_embeds(x, x_t, **{'teacher': teacher, **kw})

    with pytest.raises(ValueError, match="divergence must be one of .* got 'kl'"):
        call(divergence='kl')
    with pytest.raises(ValueError, match=r"beta must lie in \(0, 1\) for divergence='jsd'"):
        call(divergence='jsd', beta=0.0)
    with pytest.raises(ValueError, match=r'hard_weight must lie in \[0, 1\]'):
        call(hard_targets=targets, hard_weight=1.5)
    with pytest.raises(ValueError, match='hard_weight=0.5 needs hard_targets'):
        call(hard_weight=0.5)
    with pytest.raises(ValueError, match='need the same leading shape'):
        call(x_t=x_t[:, :5])
    with pytest.raises(ValueError, match=r'the same vocabulary \(40 vs 37\)'):
        call(teacher=Readout(TEACHER_DIM, num_discrete=40).double())
    with pytest.raises(ValueError, match='teacher_embeds must have a last axis of size 24'):
        call(x_t=torch.randn(3, 11, DIM, dtype=torch.float64))
    with pytest.raises(IndexError, match='hard_targets: id 37'):
        call(hard_targets=torch.full((3, 11), VOCAB), hard_weight=0.5)
    with pytest.raises(ValueError, match='temperature must be a finite number > 0'):
        call(temperature=-1.0)
