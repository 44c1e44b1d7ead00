"""The fused objectives straight from the embeddings, for
``Readout.policy_loss_from_embeds`` and ``Readout.distill_loss_from_embeds``: the
arguments checked against one discrete group, then ``policy`` / ``distill``."""

# b - sequences, t - tokens per sequence, d - model dim

from __future__ import annotations

import math

import torch
from torch import Tensor

from .._checks import check_floating, check_ids_in_range, check_loss_mask, describe
from .._options import check_positive
from .._parse import discrete_values
from .._utils import default, exists
from .distill import DIVERGENCES, DistillOptions, linear_distill_loss
from .from_embeds import _single_group
from .policy import PolicyLoss, linear_policy_loss
from .policy_terms import LOSS_TYPES, PolicyOptions

__all__ = ['distill_loss', 'policy_loss']


def policy_loss(readout, embeds: Tensor, actions: Tensor, advantages: Tensor, *, old_log_probs, loss_type: str, clip, ref_log_probs, kl_coef,
                entropy_coef, loss_mask, temperature, selector_index, selector_config, max_length, num_tokens) -> PolicyLoss:  # fmt: skip
    """``Readout.policy_loss_from_embeds``: checks, then ``linear_policy_loss`` on ``(b, t)`` rows."""
    weight, selector = _single_group(readout, embeds, 'embeds', selector_index, selector_config)
    if embeds.ndim < 2:
        raise ValueError(f'embeds must be (..., tokens, D): sequences of token embeddings, got {describe(embeds)}')
    lead = embeds.shape[:-1]
    keep, ids = _kept_ids(readout, selector, actions, lead, loss_mask, 'actions')
    options = _policy_options(loss_type, clip, kl_coef, entropy_coef, temperature, readout.logit_softcap, ref_log_probs)
    advantages = _advantages(advantages, lead)
    old = _per_token(old_log_probs, lead, 'old_log_probs')
    ref = _per_token(ref_log_probs, lead, 'ref_log_probs')
    max_length, num_tokens = _normalisers(loss_type, max_length, num_tokens, lead[-1])
    sequences = (math.prod(lead[:-1]), lead[-1])  # (b, t): the leading axes are sequences
    flat = lambda t: None if t is None else t.reshape(sequences)  # noqa: E731
    x = embeds.reshape(*sequences, embeds.shape[-1])
    return linear_policy_loss(x, weight, flat(ids), flat(keep), flat(advantages), flat(old), flat(ref), options, max_length=max_length, num_tokens=num_tokens)


def _kept_ids(readout, selector, targets, lead, loss_mask, name: str):
    """``(keep, ids)``: ids of the one group ``(...)``, kept where not ``ignore_index`` and not masked out."""
    ids = discrete_values(targets, selector, lead, True, name).squeeze(-1)
    check_ids_in_range(ids[..., None], selector.group_sizes_t, name, readout.ignore_index, True)
    keep = ids != readout.ignore_index if exists(readout.ignore_index) else torch.ones_like(ids, dtype=torch.bool)
    mask = check_loss_mask(loss_mask, ids.shape)
    keep = keep & mask if exists(mask) else keep
    return keep, ids.masked_fill(~keep, 0)


def _number(value, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise TypeError(f'{name} must be a finite number, got {describe(value)}')
    return float(value)


def _policy_options(loss_type, clip, kl_coef, entropy_coef, temperature, softcap, ref_log_probs) -> PolicyOptions:
    if loss_type not in LOSS_TYPES:
        raise ValueError(f'loss_type must be one of {LOSS_TYPES}, got {loss_type!r}')
    if not (isinstance(clip, (tuple, list)) and len(clip) == 2):
        raise TypeError(f'clip must be a pair (low, high): the ratio is clipped to [1 - low, 1 + high], got {describe(clip)}')
    low, high = _number(clip[0], 'clip[0]'), _number(clip[1], 'clip[1]')
    if low < 0 or high < 0:
        raise ValueError(f'clip must be two numbers >= 0 (the ratio is clipped to [1 - low, 1 + high]), got {tuple(clip)}')
    kl_coef, entropy_coef = _number(kl_coef, 'kl_coef'), _number(entropy_coef, 'entropy_coef')
    if kl_coef and ref_log_probs is None:
        raise ValueError(f'kl_coef={kl_coef} needs ref_log_probs (the reference policy\'s log-probs of the actions), got None')
    return PolicyOptions(loss_type, low, high, kl_coef, entropy_coef, check_positive(temperature, 'temperature'), softcap)


def _advantages(advantages, lead) -> Tensor:
    """Per token ``(..., t)``, or per sequence ``(...)`` broadcast over its tokens; constants (detached)."""
    check_floating(advantages, 'advantages')
    if advantages.shape == lead:
        return advantages.detach()
    if advantages.shape == lead[:-1]:
        return advantages.detach()[..., None].expand(lead)
    raise ValueError(f'advantages must be per sequence {tuple(lead[:-1])} or per token {tuple(lead)}, got {describe(advantages)}')


def _per_token(values, lead, name: str) -> Tensor | None:
    if values is None:
        return None
    check_floating(values, name)
    if values.shape != lead:
        raise ValueError(f'{name} must have one log-prob per token, shape {tuple(lead)}, got {describe(values)}')
    return values.detach()


def _normalisers(loss_type: str, max_length, num_tokens, length: int):
    """Dr. GRPO's ``max_length`` (default ``length``) and DAPO's / CISPO's ``num_tokens``, where they apply."""
    if max_length is not None and loss_type != 'dr_grpo':
        raise ValueError(f"max_length is Dr. GRPO's constant normaliser (loss_type='dr_grpo'); loss_type={loss_type!r} does not use it")
    if num_tokens is not None and loss_type not in ('dapo', 'cispo'):
        raise ValueError(f"num_tokens is the token count of loss_type='dapo' / 'cispo'; loss_type={loss_type!r} does not use it")
    if max_length is not None:
        max_length = check_positive(max_length, 'max_length')
    if num_tokens is not None and not isinstance(num_tokens, Tensor):
        num_tokens = check_positive(num_tokens, 'num_tokens')
    return default(max_length, float(length)), num_tokens


def distill_loss(readout, student_embeds: Tensor, teacher_embeds: Tensor, *, teacher, divergence: str, beta, temperature, loss_mask,
                 hard_targets, hard_weight) -> Tensor:  # fmt: skip
    """``Readout.distill_loss_from_embeds``: checks, then ``linear_distill_loss``."""
    weight, selector = _single_group(readout, student_embeds, 'student_embeds', None, None)
    teacher = default(teacher, readout)
    teacher_weight = _teacher_rows(teacher, teacher_embeds, student_embeds, weight)
    lead = student_embeds.shape[:-1]
    options = _distill_options(divergence, beta, temperature, hard_weight, hard_targets, readout.logit_softcap, teacher.logit_softcap)
    if exists(hard_targets):
        keep, ids = _kept_ids(readout, selector, hard_targets, lead, loss_mask, 'hard_targets')
    else:
        mask = check_loss_mask(loss_mask, lead)
        keep, ids = (mask if exists(mask) else torch.ones(lead, dtype=torch.bool, device=student_embeds.device)), None
    flat = lambda t: None if t is None else t.reshape(-1)  # noqa: E731
    x, x_t = student_embeds.reshape(-1, student_embeds.shape[-1]), teacher_embeds.reshape(-1, teacher_embeds.shape[-1])
    return linear_distill_loss(x, weight, x_t.detach(), teacher_weight.detach(), flat(keep), flat(ids), options)


def _teacher_rows(teacher, teacher_embeds: Tensor, student_embeds: Tensor, weight: Tensor) -> Tensor:
    teacher_weight, _ = _single_group(teacher, teacher_embeds, 'teacher_embeds', None, None)
    if teacher_embeds.shape[:-1] != student_embeds.shape[:-1] or teacher_weight.shape[0] != weight.shape[0]:
        raise ValueError(f'teacher_embeds {tuple(teacher_embeds.shape)} and student_embeds {tuple(student_embeds.shape)} need the same leading '
                         f'shape, and the teacher and the student the same vocabulary ({teacher_weight.shape[0]} vs {weight.shape[0]})')
    return teacher_weight


def _distill_options(divergence, beta, temperature, hard_weight, hard_targets, softcap, teacher_softcap) -> DistillOptions:
    if divergence not in DIVERGENCES:
        raise ValueError(f'divergence must be one of {DIVERGENCES}, got {divergence!r}')
    beta, hard_weight = _number(beta, 'beta'), _number(hard_weight, 'hard_weight')
    if divergence == 'jsd' and not 0.0 < beta < 1.0:
        raise ValueError(f"beta must lie in (0, 1) for divergence='jsd' (beta=0 / 1 are the plain KLs: use 'forward_kl' / 'reverse_kl'), got {beta}")
    if not 0.0 <= hard_weight <= 1.0:
        raise ValueError(f'hard_weight must lie in [0, 1] (loss = (1 - hard_weight) * divergence + hard_weight * cross entropy), got {hard_weight}')
    if hard_weight and hard_targets is None:
        raise ValueError(f'hard_weight={hard_weight} needs hard_targets (ids for the cross-entropy term), got None')
    return DistillOptions(divergence, beta, check_positive(temperature, 'temperature'), hard_weight, (softcap, teacher_softcap))
