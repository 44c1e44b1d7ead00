"""Reference formulas of the LM policy-gradient and distillation objectives, written
from their papers on the plain logits path (full ``(tokens, vocab)`` log-softmax,
autograd), independent of the package's fused code.

- GRPO (DeepSeekMath, Shao et al. 2024): ``-min(r A, clip(r) A)`` per token, the mean
  over each completion's tokens, then the mean over completions.
- DAPO (Yu et al. 2025): the same token loss, summed over all tokens of the batch and
  divided by their number. BNPO (TRL): divided by this batch's number of tokens.
- Dr. GRPO (Liu et al. 2025): summed and divided by a constant, ``batch * max length``.
- GSPO (Zheng et al. 2025): ``s_i = exp(mean_t(log pi - log pi_old))`` per sequence in
  place of the token ratio, clipped per sequence; reduced as GRPO (TRL's setting).
- CISPO (MiniMax-M1, 2025): ``-sg(clip(r, 1 - eps_low, 1 + eps_high)) A log pi``,
  normalised by the number of tokens.
- k3 (Schulman, "Approximating KL divergence"): ``exp(ref - logp) - (ref - logp) - 1``.
- Distillation: forward KL(P || Q), reverse KL(Q || P), and the generalised JSD of
  GKD (Agarwal et al. 2024) as TRL / Liger define it: ``beta KL(P || M) + (1 - beta)
  KL(Q || M)``, ``M = beta P + (1 - beta) Q``, P the teacher.
"""

from __future__ import annotations

import torch


def policy_reference(logits, actions, advantages, keep, *, old=None, ref=None, loss_type='dapo', clip=(0.2, 0.2), kl_coef=0.0,
                     entropy_coef=0.0, max_length=None, num_tokens=None):  # fmt: skip
    """``(loss, log-probs, entropies, ratio)`` from ``(B, T, V)`` logits (already tempered)."""
    log_p = logits.log_softmax(-1)
    logp = log_p.gather(-1, actions.clamp(min=0)[..., None]).squeeze(-1)
    entropy = -(log_p.exp() * log_p).sum(-1)
    mask = keep.to(logits.dtype)
    adv = advantages if advantages.shape == keep.shape else advantages[:, None]
    old = logp.detach() if old is None else old
    if loss_type == 'gspo':
        ratio = (((logp - old) * mask).sum(-1) / mask.sum(-1).clamp(min=1)).exp()[:, None]
    else:
        ratio = (logp - old).exp()
    clipped = ratio.clamp(1 - clip[0], 1 + clip[1])
    if loss_type == 'cispo':
        per_token = -clipped.detach() * adv * logp
    else:
        per_token = -torch.min(ratio * adv, clipped * adv)
    if kl_coef:
        per_token = per_token + kl_coef * ((ref - logp).exp() - (ref - logp) - 1)
    per_token = per_token - entropy_coef * entropy
    total = (per_token * mask).sum()
    if loss_type in ('grpo', 'ppo', 'gspo'):
        loss = ((per_token * mask).sum(-1) / mask.sum(-1).clamp(min=1)).mean()
    elif loss_type == 'dr_grpo':
        loss = total / (keep.shape[0] * (keep.shape[1] if max_length is None else max_length))
    elif loss_type in ('dapo', 'cispo') and num_tokens is not None:
        loss = total / num_tokens
    else:
        loss = total / mask.sum().clamp(min=1)
    return loss, logp, entropy, ratio.expand_as(logp)


def distill_reference(student_logits, teacher_logits, keep, *, divergence='forward_kl', beta=0.5, temperature=1.0, hard_targets=None,
                      hard_weight=0.0):  # fmt: skip
    """The mean over kept tokens of ``(1 - h) divergence + h cross_entropy`` from raw ``(..., V)`` logits."""
    log_q = (student_logits / temperature).log_softmax(-1)
    log_p = (teacher_logits / temperature).log_softmax(-1).detach()
    p, q = log_p.exp(), log_q.exp()
    if divergence == 'forward_kl':
        per_token = (p * (log_p - log_q)).sum(-1)
    elif divergence == 'reverse_kl':
        per_token = (q * (log_q - log_p)).sum(-1)
    else:
        m = beta * p + (1 - beta) * q
        per_token = beta * (p * (log_p - m.log())).sum(-1) + (1 - beta) * (q * (log_q - m.log())).sum(-1)
    if hard_weight:
        ce = -student_logits.log_softmax(-1).gather(-1, hard_targets.clamp(min=0)[..., None]).squeeze(-1)
        per_token = (1 - hard_weight) * per_token + hard_weight * ce
    mask = keep.to(per_token.dtype)
    return (per_token * mask).sum() / mask.sum().clamp(min=1)


def sharpened(readout, std: float = 0.4):
    """The readout with a table of std ``std`` (the default 0.01 makes every softmax
    nearly uniform, where clipping and KL never show)."""
    with torch.no_grad():
        readout.embeddings.weight.normal_(0.0, std)
    return readout


def policy_batch(dim: int, num_ids: int, dtype=torch.float64, shape=(3, 9), per_token_advantages=False):
    """``(embeds, actions, advantages, mask)`` for sequences of ``shape``: one ignored
    action (``-1``), a quarter of the tokens masked out, one sequence fully kept."""
    x = torch.randn(*shape, dim, dtype=dtype, requires_grad=True)
    actions = torch.randint(0, num_ids, shape)
    actions[0, 1] = -1  # ignore_index
    mask = torch.rand(shape) > 0.25
    mask[1] = True
    advantages = torch.randn(shape if per_token_advantages else shape[:1], dtype=dtype)
    return x, actions, advantages, mask


def near_log_probs(log_probs, spread: float = 0.3):
    """Log-probs of another policy near ``log_probs``: ratios ``exp(±spread)`` around 1."""
    return log_probs.detach() + spread * torch.randn_like(log_probs)


def grads(loss, readout, x):
    """The gradients of ``loss`` wrt the embeddings ``x`` and the readout's table."""
    return torch.autograd.grad(loss, (x, readout.embeddings.weight))


def second_order_grads(loss, readout, x):
    """The gradients wrt ``x`` and the table of the squared norm of ``loss``'s
    gradients (``create_graph``): a double backward through both."""
    gx, gw = torch.autograd.grad(loss, (x, readout.embeddings.weight), create_graph=True)
    return torch.autograd.grad(gx.square().sum() + gw.square().sum(), (x, readout.embeddings.weight))


def assert_close_all(ours, theirs, atol):
    """Each pair equal to ``atol`` in float64."""
    for a, b in zip(ours, theirs, strict=True):
        torch.testing.assert_close(a.double(), b.double(), atol=atol, rtol=0)
