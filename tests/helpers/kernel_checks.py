"""Checks of the fused paths' Triton kernels against float64 references, run on CPU
tensors by Triton's interpreter. ``TRITON_INTERPRET=1`` must be set before Triton is
imported, so ``tests/test_fused_kernels.py`` runs each group in a fresh process:

    TRITON_INTERPRET=1 python -m helpers.kernel_checks stats     # from tests/

prints one JSON line per check: ``{"name", "err", "tol"}`` (relative error of the
kernels' result against the float64 reference, the tolerance) or
``{"name", "exception"}``. Every check runs with ``fused.backend.KERNELS = 'triton'``,
so the public entry points (``Readout.forward``, ``log_prob_from_embeds``,
``kl_div_from_embeds``; ``policy_loss_from_embeds`` and ``distill_loss_from_embeds``
in ``kernel_objective_checks``, whose groups run the same way) reach the kernels. Sizes are odd (tokens and vocabulary not
multiples of the interpreter's 16-wide tiles; the vocabulary in 1 to 7 tiles, merged
from 1 to 3 splits); half-precision inputs are compared with a reference that sees
the same rounded values.
"""

# n - rows (tokens), v - vocabulary, d - model dim

from __future__ import annotations

import json
import os
import sys
import traceback

import torch
import torch.nn.functional as F

from discrete_continuous_embed_readout import EmbedAndReadout, Readout
from discrete_continuous_embed_readout.fused.backend import use_kernels

from . import internals

F32, HALF = dict(value=1e-5, grad=1e-5), {torch.bfloat16: dict(value=1e-5, grad=1.5e-2), torch.float16: dict(value=1e-5, grad=2e-3)}


def tol(dtype, kind: str) -> float:
    return F32[kind] if dtype == torch.float32 else HALF[dtype][kind]


def rel(a, b) -> float:
    a, b = a.detach().double(), b.detach().double()
    return float((a - b).norm() / b.norm().clamp_min(1e-30))


def tempered(z, softcap, temperature):
    return (z if softcap is None else softcap * torch.tanh(z / softcap)) / temperature


def reference_stats(x, w, t, softcap, temperature):
    """``(log p[t], logsumexp, mean, entropy)`` of the float64 logits."""
    z = tempered(x @ w.T, softcap, temperature)
    log_p = z.log_softmax(-1)
    return log_p.gather(-1, t[:, None]).squeeze(-1), z.logsumexp(-1), z.mean(-1), -(log_p.exp() * log_p).sum(-1)


def leaves(*tensors, need=None):
    """Float64 copies (requiring grad where ``need``) of the possibly half-precision inputs."""
    need = need or [True] * len(tensors)
    return [t.detach().double().requires_grad_(n) for t, n in zip(tensors, need)]


def compare_grads(name, outs, refs, inputs, refs_in, dtype):
    """Relative errors of the gradients of the same random-weighted sum of outputs."""
    weights = [torch.randn(o.shape, dtype=torch.float64) for o in refs]
    got = torch.autograd.grad(sum((g.to(o.dtype) * o).sum() for g, o in zip(weights, outs)), inputs)
    want = torch.autograd.grad(sum((g * o).sum() for g, o in zip(weights, refs)), refs_in)
    return [(f'{name} grad {i}', rel(a, b), tol(dtype, 'grad')) for i, (a, b) in enumerate(zip(got, want))]


# ------------------------------------------------------------------ one table: the statistics op


def stats_case(name, dtype, n, v, d, softcap=None, temperature=1.0, need=(True, True)):
    x, w = torch.randn(n, d).to(dtype), (0.4 * torch.randn(v, d)).to(dtype)
    t = torch.randint(0, v, (n,))
    x.requires_grad_(need[0]), w.requires_grad_(need[1])
    outs = internals.linear_softmax_stats(x, w, t, softcap=softcap, temperature=temperature)
    x64, w64 = leaves(x, w, need=need)
    refs = reference_stats(x64, w64, t, softcap, temperature)
    found = [(f'{name} {label}', rel(o, r), tol(dtype, 'value')) for label, o, r in zip(('log p', 'lse', 'mean', 'entropy'), outs, refs)]
    inputs = [a for a, k in zip((x, w), need) if k]
    return found + compare_grads(name, outs, refs, inputs, [a for a, k in zip((x64, w64), need) if k], dtype)


def check_stats():
    yield from stats_case('stats float32 21x41x24', torch.float32, 21, 41, 24)
    yield from stats_case('stats float32 softcap 2 T 0.7', torch.float32, 21, 41, 24, softcap=2.0, temperature=0.7)
    yield from stats_case('stats bfloat16 softcap 5 T 1.3, V=100 (7 tiles, 3 splits)', torch.bfloat16, 19, 100, 24, softcap=5.0, temperature=1.3)
    yield from stats_case('stats float16 one row, V=5, d=20', torch.float16, 1, 5, 20)
    yield from stats_case('stats table frozen', torch.float32, 17, 33, 16, need=(True, False))
    yield from stats_case('stats rows frozen', torch.float32, 17, 33, 16, softcap=3.0, need=(False, True))


def check_stats_edges():
    x, w = torch.zeros(0, 8, requires_grad=True), torch.randn(11, 8, requires_grad=True)
    outs = internals.linear_softmax_stats(x, w, torch.zeros(0, dtype=torch.long))
    gx, gw = torch.autograd.grad(sum(o.sum() for o in outs), (x, w))
    yield 'stats no rows: shapes', float(any(o.shape != (0,) for o in outs) or gx.shape != x.shape), 0.0
    yield 'stats no rows: table gradient is zero', float(gw.abs().max()), 0.0
    # double backward: create_graph runs the tracked formulation
    x, w, t = torch.randn(13, 20, requires_grad=True), (0.4 * torch.randn(23, 20)).requires_grad_(), torch.randint(0, 23, (13,))
    g, u = torch.randn(4, 13, dtype=torch.float64), torch.randn(13, 20, dtype=torch.float64)
    outs = internals.linear_softmax_stats(x, w, t, softcap=3.0, temperature=0.8)
    gx = torch.autograd.grad(sum((gi.float() * o).sum() for gi, o in zip(g, outs)), x, create_graph=True)[0]
    got = torch.autograd.grad((gx * u.float()).sum(), w)[0]
    x64, w64 = leaves(x, w)
    gx64 = torch.autograd.grad(sum((gi * o).sum() for gi, o in zip(g, reference_stats(x64, w64, t, 3.0, 0.8))), x64, create_graph=True)[0]
    yield 'stats double backward (d/dW of grad_x . u)', rel(got, torch.autograd.grad((gx64 * u).sum(), w64)[0]), 1e-5


# ------------------------------------------------------------------ two tables: KL and the general two-table gradient


def reference_kl(xp, wp, xq, wq, softcaps, temperature):
    log_p = tempered(xp @ wp.T, softcaps[0], temperature).log_softmax(-1)
    log_q = tempered(xq @ wq.T, softcaps[1], temperature).log_softmax(-1)
    return (log_p.exp() * (log_p - log_q)).sum(-1)


def kl_case(name, dtype, n, v, dp, dq, softcaps=(None, None), temperature=1.0, need=(True, True, True, True)):
    xp, wp, xq, wq = (torch.randn(n, dp).to(dtype), (0.4 * torch.randn(v, dp)).to(dtype), torch.randn(n, dq).to(dtype), (0.4 * torch.randn(v, dq)).to(dtype))
    for t, k in zip((xp, wp, xq, wq), need):
        t.requires_grad_(k)
    kl = internals.linear_kl_div(xp, wp, xq, wq, softcaps=softcaps, temperature=temperature)
    refs_in = leaves(xp, wp, xq, wq, need=need)
    ref = reference_kl(*refs_in, softcaps, temperature)
    inputs = [t for t, k in zip((xp, wp, xq, wq), need) if k]
    return [(f'{name} KL', rel(kl, ref), 2 * tol(dtype, 'value'))] + compare_grads(name, [kl], [ref], inputs, [t for t, k in zip(refs_in, need) if k], dtype)


def check_kl():
    yield from kl_case('kl float32 21x41x24', torch.float32, 21, 41, 24, 24)
    yield from kl_case('kl float32 d 24 vs 20, softcap (3, -), T 0.8', torch.float32, 21, 41, 24, 20, softcaps=(3.0, None), temperature=0.8)
    yield from kl_case('kl bfloat16 softcap (-, 4), V=100', torch.bfloat16, 18, 100, 16, 16, softcaps=(None, 4.0))
    yield from kl_case('kl true side frozen', torch.float32, 9, 37, 16, 16, need=(False, False, True, True))


def check_two_table_gradient():
    """The two-table kernels with hard targets and arbitrary coefficients (what a
    distillation loss needs): ``z_q[target]`` and the gradient of
    ``dz_p = p (a_p + b_p (z_p - z_q))``, ``dz_q = a_q q + b_q p + e_q onehot``."""
    launch = internals.kernel_launchers()
    n, v, d, caps, temperature = 15, 37, 20, (2.5, 3.5), 0.9
    xp, wp, xq, wq = torch.randn(n, d), 0.4 * torch.randn(v, d), torch.randn(n, d), 0.4 * torch.randn(v, d)
    t = torch.randint(0, v, (n,))
    kl, lse_p, lse_q, zq_t = launch.kl_stats(xp, wp, xq, wq, t, caps, temperature)
    p64 = leaves(xp, wp, xq, wq)
    zp, zq = tempered(p64[0] @ p64[1].T, caps[0], temperature), tempered(p64[2] @ p64[3].T, caps[1], temperature)
    yield 'two tables: z_q[target]', rel(zq_t, zq.gather(1, t[:, None]).squeeze(1)), 1e-5
    yield 'two tables: logsumexp p, q', rel(torch.stack((lse_p, lse_q)), torch.stack((zp.logsumexp(-1), zq.logsumexp(-1)))), 1e-5
    coefficients = torch.randn(5, n, dtype=torch.float64)
    grads = launch.kl_backward(xp, wp, xq, wq, t, torch.stack((lse_p, lse_q)), coefficients.float(), caps, temperature, (True,) * 4)
    a_p, b_p, a_q, b_q, e_q = (c[:, None] for c in coefficients)
    p, q = zp.softmax(-1).detach(), zq.softmax(-1).detach()
    dz_p = p * (a_p + b_p * (zp - zq).detach())
    dz_q = a_q * q + b_q * p + e_q * F.one_hot(t, v)
    want = torch.autograd.grad((dz_p * zp).sum() + (dz_q * zq).sum(), p64)
    for name, a, b in zip(('x_p', 'W_p', 'x_q', 'W_q'), grads, want):
        yield f'two tables: gradient of {name}', rel(a, b), 1e-5


# ------------------------------------------------------------------ the public entry points


def reference_loss(z, targets, keep, label_smoothing=0.0, z_loss_weight=0.0, logit_softcap=None):
    """Per-row loss of raw float64 logits: ``F.cross_entropy`` with label smoothing, + w lse^2."""
    z = tempered(z, logit_softcap, 1.0)
    ce = F.cross_entropy(z, targets.clamp(min=0), reduction='none', label_smoothing=label_smoothing)
    return (ce + z_loss_weight * z.logsumexp(-1).square()) * keep


def loss_case(name, options, dtype=torch.float32, groups=None, unreduced=False):
    sizes = groups or (41,)
    readout = Readout(24, num_discrete=sizes if groups else sizes[0], **options).to(dtype)
    torch.nn.init.normal_(readout.embeddings.weight, std=0.4)
    x = torch.randn(3, 7, 24).to(dtype).requires_grad_()
    targets = torch.stack([torch.randint(0, s, (3, 7)) for s in sizes], -1) if groups else torch.randint(0, sizes[0], (3, 7))
    targets[0, :3] = -1  # ignore_index
    mask = torch.rand(3, 7) > 0.25
    loss = readout(x, targets, loss_mask=mask, return_unreduced_loss=unreduced)
    x64, w64 = leaves(x, readout.embeddings.weight)
    per_group, offset, keeps = [], 0, []
    for g, size in enumerate(sizes):
        y = targets[..., g] if groups else targets
        keep = (mask & (y != -1)).double()
        per_group.append(reference_loss((x64 @ w64[offset : offset + size].T).reshape(-1, size), y.reshape(-1), keep.reshape(-1), **options).reshape(3, 7))
        offset, keeps = offset + size, keeps + [keep]
    per = torch.stack(per_group, -1) if groups else per_group[0]
    ref = per if unreduced else per.sum() / sum(k.sum() for k in keeps).clamp(min=1)
    found = [(f'{name} loss', rel(loss, ref), tol(dtype, 'value'))]
    return found + compare_grads(name, [loss], [ref], [x, readout.embeddings.weight], [x64, w64], dtype)


OPTIONS = {
    'plain': {},
    'label smoothing 0.15': dict(label_smoothing=0.15),
    'z-loss 1e-2, softcap 2.5': dict(z_loss_weight=1e-2, logit_softcap=2.5),
    'label smoothing, z-loss, softcap': dict(label_smoothing=0.1, z_loss_weight=1e-3, logit_softcap=4.0),
}


def check_loss():
    for name, options in OPTIONS.items():
        yield from loss_case(f'loss {name} (ignore_index and loss_mask rows)', options)
    yield from loss_case('loss unreduced, every option', OPTIONS['label smoothing, z-loss, softcap'], unreduced=True)
    yield from loss_case('loss bfloat16, every option', OPTIONS['label smoothing, z-loss, softcap'], dtype=torch.bfloat16)
    internals.fuse_groups_from(2)  # two groups of 23 and 18 ids fused: each group's rows a slice of the table
    yield from loss_case('loss two fused groups', OPTIONS['z-loss 1e-2, softcap 2.5'], groups=(23, 18))


def check_loss_paths():
    readout = Readout(16, num_discrete=29, logit_softcap=3.0)
    x, y = torch.randn(5, 16, requires_grad=True), torch.full((5,), -1)
    loss = readout(x, y)
    gx, gw = torch.autograd.grad(loss, (x, readout.embeddings.weight))
    yield 'loss every row ignored: 0 and zero gradients', float((loss.abs() + gx.abs().max() + gw.abs().max()).detach()), 0.0
    y = torch.randint(0, 29, (5,))
    with torch.no_grad():
        value = readout(x, y)
    yield 'loss under no_grad', rel(value, reference_loss(x.double() @ readout.embeddings.weight.double().T, y, torch.ones(5), logit_softcap=3.0).mean()), 1e-5
    # a selector: the readout scores against the config's rows, in its order
    rows = [3, 17, 0, 25, 8, 11, 20]
    readout = Readout(16, num_discrete=29, selectors=[[rows]])
    y = torch.randint(0, len(rows), (5,))
    loss = readout(x, y, selector_index=0)
    x64, w64 = leaves(x, readout.embeddings.weight)
    ref = F.cross_entropy(x64 @ w64[rows].T, y)
    yield 'loss with a selector', rel(loss, ref), 1e-5
    yield from compare_grads('loss with a selector', [loss], [ref], [x, readout.embeddings.weight], [x64, w64], torch.float32)
    # weight tying: ids -> the shared table -> (a map) -> the readout's loss; one gradient on the one table
    embed, readout = EmbedAndReadout(16, num_discrete=29, weight_tie=True)
    ids, y = torch.randint(0, 29, (4, 6)), torch.randint(0, 29, (4, 6))
    mix = torch.randn(16, 16) / 4
    loss = readout(embed(ids) @ mix, y)
    w64 = leaves(readout.embeddings.weight)[0]
    ref = F.cross_entropy((w64[ids] @ mix.double() @ w64.T).reshape(-1, 29), y.reshape(-1))
    yield 'loss weight-tied: value', rel(loss, ref), 1e-5
    yield from compare_grads('loss weight-tied', [loss], [ref], [readout.embeddings.weight], [w64], torch.float32)
    yield 'loss weight-tied: one table', float(embed.embeddings.weight is not readout.embeddings.weight), 0.0


def check_tokens():
    readout = Readout(24, num_discrete=41, logit_softcap=4.0)
    torch.nn.init.normal_(readout.embeddings.weight, std=0.4)
    x, y = torch.randn(3, 7, 24, requires_grad=True), torch.randint(0, 41, (3, 7))
    y[0, :2] = -1
    mask = torch.rand(3, 7) > 0.25
    log_p, entropy = readout.log_prob_from_embeds(x, y, temperature=0.7, return_entropy=True, loss_mask=mask)
    x64, w64 = leaves(x, readout.embeddings.weight)
    keep = (mask & (y != -1)).double().reshape(-1)
    refs = reference_stats(x64.reshape(-1, 24), w64, y.clamp(min=0).reshape(-1), 4.0, 0.7)
    refs = (refs[0] * keep).reshape(3, 7), (refs[3] * keep).reshape(3, 7)
    yield 'log_prob_from_embeds softcap 4, T 0.7, ignored and masked rows: log p', rel(log_p, refs[0]), 1e-5
    yield 'log_prob_from_embeds: entropy', rel(entropy, refs[1]), 1e-5
    yield from compare_grads('log_prob_from_embeds + entropy', [log_p, entropy], list(refs), [x, readout.embeddings.weight], [x64, w64], torch.float32)
    # a runtime selector config
    rows = [[40, 2, 7, 13, 29, 31, 5, 0, 22]]
    y = torch.randint(0, 9, (3, 7))
    log_p = readout.log_prob_from_embeds(x, y, selector_config=rows)
    ref = tempered(x64 @ w64[rows[0]].T, 4.0, 1.0).log_softmax(-1).gather(-1, y[..., None]).squeeze(-1)
    yield 'log_prob_from_embeds with a selector config', rel(log_p, ref), 1e-5
    yield from compare_grads('log_prob_from_embeds with a selector config', [log_p], [ref], [x, readout.embeddings.weight], [x64, w64], torch.float32)
    # bfloat16
    half = Readout(24, num_discrete=41).to(torch.bfloat16)
    xh = x.detach().to(torch.bfloat16).requires_grad_()
    log_p = half.log_prob_from_embeds(xh, y.clamp(min=0) % 41)
    xh64, wh64 = leaves(xh, half.embeddings.weight)
    ref = (xh64 @ wh64.T).log_softmax(-1).gather(-1, (y.clamp(min=0) % 41)[..., None]).squeeze(-1)
    yield 'log_prob_from_embeds bfloat16', rel(log_p, ref), 1e-5
    yield from compare_grads('log_prob_from_embeds bfloat16', [log_p], [ref], [xh, half.embeddings.weight], [xh64, wh64], torch.bfloat16)


def check_kl_from_embeds():
    teacher, student = Readout(20, num_discrete=41, logit_softcap=5.0), Readout(24, num_discrete=41, logit_softcap=3.0)
    for r in (teacher, student):
        torch.nn.init.normal_(r.embeddings.weight, std=0.4)
    xt, xs = torch.randn(3, 7, 20, requires_grad=True), torch.randn(3, 7, 24, requires_grad=True)
    mask = torch.rand(3, 7) > 0.25
    kl = student.kl_div_from_embeds(xt, xs, readout_true=teacher, temperature=1.5, loss_mask=mask)
    refs_in = leaves(xt, teacher.embeddings.weight, xs, student.embeddings.weight)
    ref = reference_kl(refs_in[0].reshape(-1, 20), refs_in[1], refs_in[2].reshape(-1, 24), refs_in[3], (5.0, 3.0), 1.5).reshape(3, 7) * mask
    yield 'kl_div_from_embeds teacher d=20, softcaps (5, 3), T 1.5, masked rows', rel(kl, ref), 2e-5
    inputs = [xt, teacher.embeddings.weight, xs, student.embeddings.weight]
    yield from compare_grads('kl_div_from_embeds', [kl], [ref], inputs, refs_in, torch.float32)


GROUPS = {
    'stats': (check_stats, check_stats_edges),
    'kl': (check_kl, check_two_table_gradient),
    'loss': (check_loss, check_loss_paths),
    'tokens': (check_tokens, check_kl_from_embeds),
}


NO_BACKWARD_KERNEL = {'check_stats_edges'}  # no rows, and double backward (the tracked formulation)


def count_launches() -> dict:
    """Count the launchers' calls, so that a check that silently took the PyTorch path fails."""
    launch, counts = internals.kernel_launchers(), {'forward': 0, 'backward': 0}

    def counted(fn, kind):
        def run(*args, **kwargs):
            counts[kind] += 1
            return fn(*args, **kwargs)

        return run

    for name, kind in (('softmax_stats', 'forward'), ('kl_stats', 'forward'), ('jsd_stats', 'forward'), ('softmax_stats_backward', 'backward'),
                       ('kl_backward', 'backward'), ('jsd_backward', 'backward')):  # fmt: skip
        setattr(launch, name, counted(getattr(launch, name), kind))
    return counts


def interpreter_broken() -> str | None:
    """Why this Triton's interpreter cannot run a loop with a run-time bound, if it cannot
    (Triton 3.6's with NumPy 2.x: its loop bounds are 1-element arrays NumPy will not make scalars)."""
    import numpy
    import triton
    import triton.language as tl

    @triton.jit
    def probe(out_ptr, n):
        for i in range(0, n):
            tl.store(out_ptr + i, i)

    try:
        probe[(1,)](torch.zeros(3), 3)
    except Exception as error:
        return f'Triton {triton.__version__} interpreter with NumPy {numpy.__version__} cannot run loops: {error!r}'[:300]
    return None


def main(group: str) -> int:
    if os.environ.get('TRITON_INTERPRET') != '1':
        print('set TRITON_INTERPRET=1 (before Triton is imported): the checks run the kernels on CPU tensors', file=sys.stderr)
        return 2
    broken = interpreter_broken()
    if broken:
        print(json.dumps(dict(skip=broken)), flush=True)
        return 0
    torch.manual_seed(0)
    internals.fuse_at_any_size_from_now_on()  # the checks' small losses take the fused path, as a language model's does
    counts = count_launches()
    from .kernel_objective_checks import GROUPS as OBJECTIVES  # here, not at the top: it imports this module's helpers
    from .kernel_objective_checks import NO_BACKWARD_KERNEL as NO_OBJECTIVE_BACKWARD

    with use_kernels('triton'):
        for check in {**GROUPS, **OBJECTIVES}[group]:
            counts.update(forward=0, backward=0)
            try:
                for name, err, tolerance in check():
                    print(json.dumps(dict(name=name, err=err, tol=tolerance)), flush=True)
            except Exception:
                print(json.dumps(dict(name=check.__name__, exception=traceback.format_exc())), flush=True)
            missing = counts['forward'] == 0 or (counts['backward'] == 0 and check.__name__ not in NO_BACKWARD_KERNEL | NO_OBJECTIVE_BACKWARD)
            print(json.dumps(dict(name=f'{check.__name__} launched the kernels ({counts})', err=float(missing), tol=0.0)), flush=True)
    return 0


if __name__ == '__main__':
    sys.exit(main(sys.argv[1]))
