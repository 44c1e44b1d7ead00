"""Checks of the fused objectives on the Triton kernels (``fused.kernel_objectives``):
``Readout.policy_loss_from_embeds`` and ``Readout.distill_loss_from_embeds`` against
their float64 definitions on the logits path (``helpers.policy_losses``), values and
gradients to the embeddings and the table. Run by ``kernel_checks`` under Triton's
interpreter (the groups ``policy`` and ``distill``), with the same conventions: odd
sizes (21 tokens, a vocabulary of 41 = 2 tiles and a part), ignored and masked rows,
half-precision inputs compared with a reference that sees the same rounded values.
Each case also checks that its forward and backward ran on the kernels.
"""

# b - sequences, t - tokens per sequence, v - vocabulary, d - model dim

from __future__ import annotations

import contextlib

import torch

from discrete_continuous_embed_readout import EmbedAndReadout, Readout

from . import internals
from .kernel_checks import compare_grads, leaves, rel, tempered, tol
from .policy_losses import distill_reference, policy_reference

SHAPE, V, D = (3, 7), 41, 24
LAUNCHERS = {'forward': ('softmax_stats', 'kl_stats', 'jsd_stats'), 'backward': ('softmax_stats_backward', 'kl_backward', 'jsd_backward')}


@contextlib.contextmanager
def launched(name: str, found: list, backward: bool = True):
    """Counts the launchers' calls in the block; appends a check that both kinds ran."""
    launch, counts, originals = internals.kernel_launchers(), {'forward': 0, 'backward': 0}, {}
    for kind, names in LAUNCHERS.items():
        for fn in names:
            originals[fn] = getattr(launch, fn)
            setattr(launch, fn, lambda *a, _fn=originals[fn], _kind=kind, **k: (counts.__setitem__(_kind, counts[_kind] + 1), _fn(*a, **k))[1])
    try:
        yield
    finally:
        for fn, original in originals.items():
            setattr(launch, fn, original)
    missing = counts['forward'] == 0 or (backward and counts['backward'] == 0)
    found.append((f'{name}: ran on the kernels {counts}', float(missing), 0.0))


def sharp(readout, dtype=torch.float32):
    torch.nn.init.normal_(readout.embeddings.weight, std=0.4)
    return readout.to(dtype)


# ------------------------------------------------------------------ the policy loss


def policy_inputs(readout, x64, w64, softcap, temperature, per_token=False):
    """``(actions, advantages, keep mask, tempered float64 logits, the policy's float64 log-probs)``."""
    actions = torch.randint(0, w64.shape[0], SHAPE)
    actions[0, 1] = -1  # ignore_index
    mask = torch.rand(SHAPE) > 0.25
    mask[1] = True
    advantages = torch.randn(SHAPE if per_token else SHAPE[:1])
    logits = tempered(x64 @ w64.T, softcap, temperature)
    current = logits.detach().log_softmax(-1).gather(-1, actions.clamp(min=0)[..., None]).squeeze(-1)
    return actions, advantages, mask, logits, current


def metric_checks(name, metrics, ref, keep, advantages, loss_type, clip, dtype):
    """The means over kept tokens of the ratio, k3 and the entropy; the clip fractions (float32)."""
    _, logp, entropy, ratio = ref[:4]
    k = keep.double()

    def mean(t):
        return (t * k).sum() / k.sum()

    found = [(f'{name} metric ratio', rel(metrics.ratio, mean(ratio)), tol(dtype, 'grad')), (f'{name} metric entropy', rel(metrics.entropy, mean(entropy)), tol(dtype, 'grad'))]
    if metrics.kl is not None:
        delta = ref[4] - logp
        found.append((f'{name} metric k3', rel(metrics.kl, mean(delta.exp() - delta - 1)), tol(dtype, 'grad')))
    if dtype == torch.float32:
        adv = advantages if advantages.shape == keep.shape else advantages[:, None].expand(keep.shape)
        low, high = ratio < 1 - clip[0], ratio > 1 + clip[1]
        if loss_type != 'cispo':
            low, high = low & (adv < 0), high & (adv > 0)
        found.append((f'{name} clip fractions', float(abs(metrics.clip_low - mean(low.double())) + abs(metrics.clip_high - mean(high.double()))), 1e-6))
    return found


def policy_case(name, loss_type, dtype=torch.float32, old=True, ref=True, entropy_coef=0.02, softcap=4.0, temperature=0.8, per_token=False):
    found, clip = [], (0.1, 0.3)
    readout = sharp(Readout(D, num_discrete=V, logit_softcap=softcap), dtype)
    x = torch.randn(*SHAPE, D).to(dtype).requires_grad_()
    x64, w64 = leaves(x, readout.embeddings.weight)
    actions, advantages, mask, logits, current = policy_inputs(readout, x64, w64, softcap, temperature, per_token)
    old_lp = (current + 0.3 * torch.randn(SHAPE)).float() if old else None
    ref_lp = (current + 0.3 * torch.randn(SHAPE)).float() if ref else None
    kl_coef = 0.05 if ref else 0.0
    with launched(name, found):
        result = readout.policy_loss_from_embeds(x, actions, advantages, old_log_probs=old_lp, loss_type=loss_type, clip=clip, ref_log_probs=ref_lp,
                                                 kl_coef=kl_coef, entropy_coef=entropy_coef, loss_mask=mask, temperature=temperature)  # fmt: skip
        keep = mask & (actions != -1)
        double = lambda t: None if t is None else t.double()  # noqa: E731
        want = policy_reference(logits, actions, advantages.double(), keep, old=double(old_lp), ref=double(ref_lp), loss_type=loss_type, clip=clip,
                                kl_coef=kl_coef, entropy_coef=entropy_coef)  # fmt: skip
        found.append((f'{name} loss', rel(result.loss, want[0]), tol(dtype, 'value') * 2))
        found += compare_grads(name, [result.loss], [want[0]], [x, readout.embeddings.weight], [x64, w64], dtype)
    return found + metric_checks(name, result.metrics, (*want, double(ref_lp)), keep, advantages, loss_type, clip, dtype)


def check_policy():
    for loss_type in ('grpo', 'ppo', 'dapo', 'bnpo', 'dr_grpo', 'gspo', 'cispo'):
        yield from policy_case(f'policy {loss_type}, clip (0.1, 0.3), old and ref (k3) given, entropy bonus, softcap 4, T 0.8', loss_type)
    yield from policy_case('policy grpo on-policy (old None), no ref, no entropy bonus, no softcap', 'grpo', old=False, ref=False, entropy_coef=0.0, softcap=None)
    yield from policy_case('policy dapo on-policy, per-token advantages, T 1', 'dapo', old=False, per_token=True, temperature=1.0)
    yield from policy_case('policy gspo on-policy, no softcap', 'gspo', old=False, softcap=None)
    yield from policy_case('policy grpo bfloat16, every term', 'grpo', dtype=torch.bfloat16)


def check_policy_paths():
    found = []
    # a selector config: the actions index the config's rows, in its order
    rows = [[40, 2, 7, 13, 29, 31, 5, 0, 22]]
    readout = sharp(Readout(D, num_discrete=V))
    x = torch.randn(*SHAPE, D, requires_grad=True)
    x64, w64 = leaves(x, readout.embeddings.weight)
    actions, advantages, mask, logits, current = policy_inputs(readout, x64, w64[rows[0]], None, 1.0)
    with launched('policy with a selector config', found):
        loss = readout.policy_loss_from_embeds(x, actions, advantages, loss_type='dapo', loss_mask=mask, selector_config=rows).loss
        want = policy_reference(logits, actions, advantages.double(), mask & (actions != -1), loss_type='dapo')[0]
        found += [('policy with a selector config: loss', rel(loss, want), 2e-5)]
        found += compare_grads('policy with a selector config', [loss], [want], [x, readout.embeddings.weight], [x64, w64], torch.float32)
    # weight tying: ids -> the shared table -> (a map) -> the policy loss; one gradient on the one table
    embed, readout = EmbedAndReadout(16, num_discrete=29, weight_tie=True)
    sharp(readout)
    ids, mix = torch.randint(0, 29, SHAPE), torch.randn(16, 16) / 4
    w64 = leaves(readout.embeddings.weight)[0]
    actions, advantages, mask, logits, _ = policy_inputs(readout, w64[ids] @ mix.double(), w64, 2.0, 1.0)
    with launched('policy weight-tied', found):
        readout.logit_softcap = 2.0
        loss = readout.policy_loss_from_embeds(embed(ids) @ mix, actions, advantages, loss_type='grpo', loss_mask=mask, entropy_coef=0.01).loss
        want = policy_reference(logits, actions, advantages.double(), mask & (actions != -1), loss_type='grpo', entropy_coef=0.01)[0]
        found += [('policy weight-tied: loss', rel(loss, want), 2e-5)]
        found += compare_grads('policy weight-tied', [loss], [want], [readout.embeddings.weight], [w64], torch.float32)
    found.append(('policy weight-tied: one table', float(embed.embeddings.weight is not readout.embeddings.weight), 0.0))
    return found + autocast_case('policy gspo', lambda r, t, x, x_t, a, adv, m: r.policy_loss_from_embeds(x, a, adv, loss_type='gspo', loss_mask=m, entropy_coef=0.02).loss,
                                 lambda lg, lg_t, a, adv, m: policy_reference(lg, a, adv, m, loss_type='gspo', entropy_coef=0.02)[0])  # fmt: skip


def autocast_case(name, ours, theirs):
    """Float32 parameters under bfloat16 autocast: the kernels take the bfloat16 casts, the
    float64 reference the same rounded values; the gradients reach the float32 leaves."""
    found, bf16 = [], torch.bfloat16
    student, teacher = sharp(Readout(D, num_discrete=V)), sharp(Readout(D, num_discrete=V)).requires_grad_(False)
    x, x_t = torch.randn(*SHAPE, D, requires_grad=True), torch.randn(*SHAPE, D)
    actions, advantages, mask = torch.randint(0, V, SHAPE), torch.randn(SHAPE[0]), torch.rand(SHAPE) > 0.25
    with launched(f'{name} under bfloat16 autocast', found):
        with torch.autocast('cpu', dtype=bf16):
            loss = ours(student, teacher, x, x_t, actions, advantages, mask)
        x64, w64 = (t.detach().to(bf16).double().requires_grad_() for t in (x, student.embeddings.weight))
        teacher_logits = x_t.to(bf16).double() @ teacher.embeddings.weight.to(bf16).double().T
        want = theirs(x64 @ w64.T, teacher_logits, actions, advantages.double(), mask)
        found.append((f'{name} under bfloat16 autocast: loss', rel(loss, want), 2e-5))
        found += compare_grads(f'{name} under bfloat16 autocast', [loss], [want], [x, student.embeddings.weight], [x64, w64], bf16)
    return found


# ------------------------------------------------------------------ the distillation loss


def distill_case(name, divergence, dtype=torch.float32, temperature=1.0, hard_weight=0.0, own_table=False, beta=0.3):
    found = []
    student = sharp(Readout(D, num_discrete=V, logit_softcap=3.0), dtype)
    teacher = None if own_table else sharp(Readout(20, num_discrete=V, logit_softcap=5.0), dtype)
    x, x_t = torch.randn(*SHAPE, D).to(dtype).requires_grad_(), torch.randn(*SHAPE, D if own_table else 20).to(dtype)
    targets = torch.randint(0, V, SHAPE)
    targets[0, :2] = -1  # ignore_index: the rows drop out of the loss
    mask = torch.rand(SHAPE) > 0.25
    hard = targets if hard_weight else None
    with launched(name, found):
        loss = student.distill_loss_from_embeds(x, x_t, teacher=teacher, divergence=divergence, beta=beta, temperature=temperature, loss_mask=mask,
                                                hard_targets=hard, hard_weight=hard_weight)  # fmt: skip
        x64, w64 = leaves(x, student.embeddings.weight)
        wt64 = w64.detach() if own_table else leaves(teacher.embeddings.weight, need=[False])[0]
        keep = mask & (targets != -1) if hard_weight else mask
        want = distill_reference(tempered(x64 @ w64.T, 3.0, 1.0), tempered(x_t.double() @ wt64.T, 3.0 if own_table else 5.0, 1.0), keep,
                                 divergence=divergence, beta=beta, temperature=temperature, hard_targets=targets, hard_weight=hard_weight)  # fmt: skip
        found.append((f'{name} loss', rel(loss, want), 2 * tol(dtype, 'value')))
        found += compare_grads(name, [loss], [want], [x, student.embeddings.weight], [x64, w64], dtype)
    return found


def check_distill():
    for divergence in ('forward_kl', 'reverse_kl', 'jsd'):
        yield from distill_case(f'distill {divergence}, teacher readout d=20, softcaps (3, 5), masked rows', divergence)
        yield from distill_case(f'distill {divergence} T 0.7, hard targets (weight 0.3, ignored ids)', divergence, temperature=0.7, hard_weight=0.3)
        yield from distill_case(f'distill {divergence}, own table, T 1.4', divergence, temperature=1.4, own_table=True)
    yield from distill_case('distill forward_kl T 1, hard targets (weight 0.5)', 'forward_kl', hard_weight=0.5)
    yield from distill_case('distill jsd beta 0.8 bfloat16, hard targets', 'jsd', dtype=torch.bfloat16, hard_weight=0.2, beta=0.8)


def check_distill_paths():
    found = []
    # weight tying: the student's embeddings come from the table it reads out with
    embed, readout = EmbedAndReadout(16, num_discrete=29, weight_tie=True)
    sharp(readout)
    teacher = sharp(Readout(12, num_discrete=29))
    ids, mix, x_t = torch.randint(0, 29, SHAPE), torch.randn(16, 16) / 4, torch.randn(*SHAPE, 12)
    w64, wt64 = leaves(readout.embeddings.weight)[0], teacher.embeddings.weight.double()
    with launched('distill jsd weight-tied', found):
        loss = readout.distill_loss_from_embeds(embed(ids) @ mix, x_t, teacher=teacher, divergence='jsd', temperature=1.2)
        want = distill_reference(w64[ids] @ mix.double() @ w64.T, x_t.double() @ wt64.T, torch.ones(SHAPE, dtype=torch.bool), divergence='jsd', temperature=1.2)
        found += [('distill jsd weight-tied: loss', rel(loss, want), 2e-5)]
        found += compare_grads('distill jsd weight-tied', [loss], [want], [readout.embeddings.weight], [w64], torch.float32)
    return found + autocast_case('distill jsd, hard targets, T 0.9',
                                 lambda r, t, x, x_t, a, adv, m: r.distill_loss_from_embeds(x, x_t, teacher=t, divergence='jsd', loss_mask=m, hard_targets=a,
                                                                                            hard_weight=0.2, temperature=0.9),
                                 lambda lg, lg_t, a, adv, m: distill_reference(lg, lg_t, m, divergence='jsd', hard_targets=a, hard_weight=0.2, temperature=0.9))  # fmt: skip


# ------------------------------------------------------------------ both: no_grad, no rows, double backward


def check_objective_edges():
    student, teacher = sharp(Readout(D, num_discrete=V, logit_softcap=3.0)), sharp(Readout(20, num_discrete=V))
    x, x_t, actions, advantages = torch.randn(*SHAPE, D, requires_grad=True), torch.randn(*SHAPE, 20), torch.randint(0, V, SHAPE), torch.randn(3)
    x64, w64 = leaves(x, student.embeddings.weight)
    logits, teacher_logits = tempered(x64 @ w64.T, 3.0, 1.0), x_t.double() @ teacher.embeddings.weight.double().T
    every = torch.ones(SHAPE, dtype=torch.bool)
    with torch.no_grad():
        policy = student.policy_loss_from_embeds(x, actions, advantages, loss_type='grpo', entropy_coef=0.1).loss
        jsd = student.distill_loss_from_embeds(x, x_t, teacher=teacher, divergence='jsd')
    yield 'policy under no_grad', rel(policy, policy_reference(logits, actions, advantages.double(), every, loss_type='grpo', entropy_coef=0.1)[0]), 2e-5
    yield 'distill jsd under no_grad', rel(jsd, distill_reference(logits, teacher_logits, every, divergence='jsd')), 2e-5
    none = torch.zeros(SHAPE, dtype=torch.bool)  # every row masked out: no rows reach the kernels
    for name, loss in (('policy gspo', student.policy_loss_from_embeds(x, actions, advantages, loss_type='gspo', loss_mask=none).loss),
                       ('distill jsd', student.distill_loss_from_embeds(x, x_t, teacher=teacher, divergence='jsd', loss_mask=none))):  # fmt: skip
        gx, gw = torch.autograd.grad(loss, (x, student.embeddings.weight))
        yield f'{name}, every row masked: 0 and zero gradients', float((loss.abs() + gx.abs().max() + gw.abs().max()).detach()), 0.0
    # double backward: d/dW of grad_x . u, create_graph through the tracked formulations
    u = torch.randn(*SHAPE, D, dtype=torch.float64)
    old = (logits.detach().log_softmax(-1).gather(-1, actions[..., None]).squeeze(-1) + 0.3 * torch.randn(SHAPE)).float()
    kw = dict(old_log_probs=old, loss_type='dapo', clip=(0.1, 0.3), ref_log_probs=old + 0.1, kl_coef=0.05, entropy_coef=0.02)
    for name, ours, theirs in (
        ('policy dapo', lambda: student.policy_loss_from_embeds(x, actions, advantages, **kw).loss,
         lambda lg: policy_reference(lg, actions, advantages.double(), every, old=old.double(), ref=old.double() + 0.1, loss_type='dapo',
                                     clip=(0.1, 0.3), kl_coef=0.05, entropy_coef=0.02)[0]),
        ('distill jsd, T 0.7', lambda: student.distill_loss_from_embeds(x, x_t, teacher=teacher, divergence='jsd', temperature=0.7),
         lambda lg: distill_reference(lg, teacher_logits, every, divergence='jsd', temperature=0.7)),
    ):  # fmt: skip
        gx = torch.autograd.grad(ours(), x, create_graph=True)[0]
        got = torch.autograd.grad((gx * u.float()).sum(), student.embeddings.weight)[0]
        x64, w64 = leaves(x, student.embeddings.weight)
        gx64 = torch.autograd.grad(theirs(tempered(x64 @ w64.T, 3.0, 1.0)), x64, create_graph=True)[0]
        yield f'{name} double backward (d/dW of grad_x . u)', rel(got, torch.autograd.grad((gx64 * u).sum(), w64)[0]), 1e-5


GROUPS = {
    'policy': (check_policy, check_policy_paths),
    'distill': (check_distill, check_distill_paths, check_objective_edges),
}
NO_BACKWARD_KERNEL = {'check_objective_edges'}  # no_grad, no rows, and double backward (the tracked formulations)
