"""The fused objectives' part of ``benchmarks/gpu.py``: the policy loss
(``Readout.policy_loss_from_embeds``) and the distillation loss
(``Readout.distill_loss_from_embeds``) in its check block and its table.

- ``check_objectives``: GRPO with a k3 KL and an entropy bonus (clip ``(0.2, 0.28)``,
  temperature, masked tokens), DAPO, GSPO, forward KL with hard targets, and the JSD,
  in the run's dtype, on the Triton kernels or the chunked PyTorch code (whichever
  ``fused.backend`` mode is set), against a float64 CPU reference written on the logits
  (relative error of the loss and of the gradients of ``x`` and ``W``).
- ``objective_workloads``: per case (``OBJECTIVES``) a forward + backward closure per
  implementation: ours on the kernels, ours chunked, the plain logits path (bf16
  matmul, float32 softmax), the plain path under ``torch.compile``, and Liger-Kernel's
  ``LigerFusedLinearGRPOLoss`` / ``LigerFusedLinearJSDLoss`` where installed (on CUDA);
  the floor is the matmuls the objective needs at least (three; four with a teacher).

Tokens are ``sequences x length`` with ``sequences = gcd(tokens, 16)``.
"""

from __future__ import annotations

import contextlib
import math

import torch

from discrete_continuous_embed_readout import EmbedAndReadout
from discrete_continuous_embed_readout.fused import backend

OBJECTIVES = ('policy grpo+kl+ent', 'policy dapo', 'distill fwd_kl', 'distill jsd')
POLICY = {'policy grpo+kl+ent': dict(loss_type='grpo', kl_coef=0.04, entropy_coef=0.01), 'policy dapo': dict(loss_type='dapo')}
DISTILL = {'distill fwd_kl': dict(divergence='forward_kl'), 'distill jsd': dict(divergence='jsd', beta=0.5)}
CLIP = (0.2, 0.28)


def _wide(z):
    """Half-precision logits to float32 for the softmax (a float64 reference stays float64)."""
    return z if z.dtype == torch.float64 else z.float()


def _policy_plain(x, weight, actions, advantages, old, ref, loss_type, kl_coef=0.0, entropy_coef=0.0, temperature=1.0, keep=None):
    """The policy loss on the ``(b, t, v)`` logits, as users write it (float32 softmax)."""
    log_p = (_wide(x @ weight.T) / temperature).log_softmax(-1)
    logp = log_p.gather(-1, actions[..., None]).squeeze(-1)
    keep = torch.ones_like(logp) if keep is None else keep.to(logp.dtype)
    ratio = (logp - old).exp()
    if loss_type == 'gspo':
        ratio = (((logp - old) * keep).sum(-1, keepdim=True) / keep.sum(-1, keepdim=True)).exp()
    adv = advantages[:, None]
    per_token = -torch.min(ratio * adv, ratio.clamp(1 - CLIP[0], 1 + CLIP[1]) * adv)
    if kl_coef:
        per_token = per_token + kl_coef * ((ref - logp).exp() - (ref - logp) - 1)
    if entropy_coef:
        per_token = per_token + entropy_coef * (log_p.exp() * log_p).sum(-1)
    if loss_type in ('grpo', 'gspo'):
        return ((per_token * keep).sum(-1) / keep.sum(-1)).mean()
    return (per_token * keep).sum() / keep.sum()


def _distill_plain(x, weight, x_t, weight_t, divergence, beta=0.5, temperature=1.0, targets=None, hard_weight=0.0):
    """The distillation loss on the ``(n, v)`` logits of both sides (float32 softmax)."""
    log_q = (_wide(x @ weight.T) / temperature).log_softmax(-1)
    log_p = (_wide(x_t @ weight_t.T) / temperature).log_softmax(-1)
    if divergence == 'forward_kl':
        per_token = (log_p.exp() * (log_p - log_q)).sum(-1)
    else:
        log_m = torch.logaddexp(log_p + math.log(beta), log_q + math.log(1 - beta))
        per_token = beta * (log_p.exp() * (log_p - log_m)).sum(-1) + (1 - beta) * (log_q.exp() * (log_q - log_m)).sum(-1)
    if hard_weight:
        ce = -_wide(x @ weight.T).log_softmax(-1).gather(-1, targets[:, None]).squeeze(-1)
        per_token = (1 - hard_weight) * per_token + hard_weight * ce
    return per_token.mean()


def _batch(vocab, tokens, dim, device, dtype, seed=0):
    """A student, a frozen teacher, the rows and what the objectives take besides."""
    torch.manual_seed(seed)
    _, student = EmbedAndReadout(dim, num_discrete=vocab)
    _, teacher = EmbedAndReadout(dim, num_discrete=vocab)
    for table in (student, teacher):
        torch.nn.init.normal_(table.embeddings.weight, std=0.1)
    student.to(device, dtype)
    teacher.to(device, dtype).requires_grad_(False)
    b = math.gcd(tokens, 16)
    x = torch.randn(b, tokens // b, dim, device=device, dtype=dtype, requires_grad=True)
    x_t = torch.randn(tokens, dim, device=device, dtype=dtype)
    actions = torch.randint(0, vocab, (b, tokens // b), device=device)
    with torch.no_grad():
        current = student.log_prob_from_embeds(x, actions).float()
    old, ref = current + 0.2 * torch.randn_like(current), current + 0.2 * torch.randn_like(current)
    return student, teacher, x, x_t, actions, torch.randn(b, device=device), old, ref


def _liger(device, case, compiled):
    """Liger's loss for a case as ``f(x, weight, x_t, weight_t, actions, advantages, old, ref)``, or why it is absent."""
    if device.type != 'cuda':
        return 'needs CUDA'
    try:
        from liger_kernel.chunked_loss import LigerFusedLinearGRPOLoss, LigerFusedLinearJSDLoss
    except Exception as error:  # ImportError, or whatever its import needs and lacks
        return f'not installed ({type(error).__name__})'
    if case in POLICY:
        options = POLICY[case]
        if options.get('entropy_coef'):
            return '- (no entropy bonus in Liger)'
        kl = bool(options.get('kl_coef'))
        loss = LigerFusedLinearGRPOLoss(beta=options.get('kl_coef', 0.0), use_ref_model=kl, compiled=compiled, epsilon_low=CLIP[0], epsilon_high=CLIP[1],
                                        loss_type=options['loss_type'])  # fmt: skip
        return lambda x, w, x_t, w_t, a, adv, old, ref: loss(x, w, a, torch.ones_like(a), adv, old_per_token_logps=old, ref_per_token_logps=ref if kl else None)[0]
    options = DISTILL[case]
    loss = LigerFusedLinearJSDLoss(weight_hard_loss=0.0, weight_soft_loss=1.0, beta=0.0 if options['divergence'] == 'forward_kl' else options['beta'], compiled=compiled)
    return lambda x, w, x_t, w_t, a, adv, old, ref: loss(x.reshape(-1, x.shape[-1]), w, x_t, w_t, a.reshape(-1))


def objective_workloads(vocab, tokens, dim, device, dtype, compile_plain=True, absent=None) -> dict:
    """``{case: ({implementation: closure or why absent}, floor closure)}`` (``absent``: why the kernels cannot run, or ``None``)."""
    student, teacher, x, x_t, actions, advantages, old, ref = _batch(vocab, tokens, dim, device, dtype)
    weight, weight_t = student.embeddings.weight, teacher.embeddings.weight

    def step(objective, mode=None):
        def run():
            x.grad = weight.grad = None
            with backend.use_kernels(mode) if mode else contextlib.nullcontext():
                objective().backward()

        return run

    def ours(case):
        if case in POLICY:
            return lambda: student.policy_loss_from_embeds(x, actions, advantages, old_log_probs=old, ref_log_probs=ref, clip=CLIP, **POLICY[case]).loss
        return lambda: student.distill_loss_from_embeds(x, x_t.view(x.shape), teacher=teacher, **DISTILL[case])

    def plain(case):
        if case in POLICY:
            return lambda x, w, x_t, w_t, a, adv, o, r: _policy_plain(x, w, a, adv, o, r, **POLICY[case])
        return lambda x, w, x_t, w_t, a, adv, o, r: _distill_plain(x.reshape(-1, x.shape[-1]), w, x_t, w_t, **DISTILL[case])

    def floor(matmuls):
        def run():
            if matmuls == 4:
                x_t @ weight_t.T
            logits = x.detach().reshape(-1, dim) @ weight.detach().T
            logits @ weight.detach(), logits.T @ x.detach().reshape(-1, dim)

        return run

    inputs = (x, weight, x_t, weight_t, actions, advantages, old, ref)
    cases = {}
    for case in OBJECTIVES:
        fn, liger = plain(case), _liger(device, case, compiled=compile_plain)
        compiled = torch.compile(fn, dynamic=False) if compile_plain else None
        cases[case] = ({
            'kernels': absent or step(ours(case), 'triton'),
            'chunked': step(ours(case), 'torch'),
            'plain': step(lambda fn=fn: fn(*inputs)),
            'compiled': step(lambda c=compiled: c(*inputs)) if compile_plain else 'not run (--skip compile)',
            'liger': liger if isinstance(liger, str) else step(lambda f=liger: f(*inputs)),
            'cce': '-', 'cce exact': '-',
        }, floor(4 if case in DISTILL else 3))  # fmt: skip
    return cases


def check_objectives(device, dtype, record, label: str, vocab: int, tokens: int, dim: int) -> None:
    """The policy and distillation losses (the mode set by the caller) against float64 on the CPU."""
    student, teacher, x, x_t, actions, advantages, old, ref = _batch(vocab, tokens, dim, device, dtype, seed=2)
    weight = student.embeddings.weight
    keep = torch.rand(actions.shape, device=device) > 0.2
    keep[:, 0] = True
    x64, w64 = x.detach().double().cpu().requires_grad_(), weight.detach().double().cpu().requires_grad_()
    xt64, wt64 = x_t.double().cpu(), teacher.embeddings.weight.double().cpu()
    cpu = [t.cpu() for t in (actions, advantages, old, ref, keep)]
    targets = actions.reshape(-1)
    runs = {
        'policy grpo (k3, entropy, T 0.8, mask)': (dict(loss_type='grpo', kl_coef=0.04, entropy_coef=0.01, temperature=0.8),),
        'policy dapo': (dict(loss_type='dapo'),),
        'policy gspo': (dict(loss_type='gspo'),),
        'distill forward_kl (hard targets, T 1.5)': (dict(divergence='forward_kl', temperature=1.5, hard_weight=0.3),),
        'distill jsd (beta 0.3)': (dict(divergence='jsd', beta=0.3),),
    }
    for name, (options,) in runs.items():
        if name.startswith('policy'):
            loss = student.policy_loss_from_embeds(x, actions, advantages, old_log_probs=old, ref_log_probs=ref, clip=CLIP, loss_mask=keep, **options).loss
            want = _policy_plain(x64, w64, cpu[0], cpu[1].double(), cpu[2].double(), cpu[3].double(), keep=cpu[4], **options)
        else:
            hard = dict(hard_targets=actions) if options.get('hard_weight') else {}
            loss = student.distill_loss_from_embeds(x, x_t.view(x.shape), teacher=teacher, **hard, **options)
            want = _distill_plain(x64.reshape(-1, dim), w64, xt64, wt64, targets=targets.cpu(), **options)
        record(f'{label} {name}', _rel(loss, want), 1e-2)
        for which, a, b in zip(('x', 'W'), torch.autograd.grad(loss, (x, weight)), torch.autograd.grad(want, (x64, w64))):
            record(f'{label} {name} grad {which}', _rel(a, b), 2e-2)


def _rel(a, b) -> float:
    a, b = a.detach().double().cpu(), b.detach().double().cpu()
    return float((a - b).norm() / b.norm().clamp_min(1e-30))
