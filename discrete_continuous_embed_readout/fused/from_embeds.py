"""Per-token log-probs, entropies and KL straight from the embeddings, for
``Readout.log_prob_from_embeds`` and ``Readout.kl_div_from_embeds``: the inputs
checked against a single discrete group, then the chunked ops of ``loss.py``."""

# d - model dim

from __future__ import annotations

import torch
from torch import Tensor

from .._checks import check_floating, check_ids_in_range, check_last_dim, check_loss_mask
from .._options import check_temperature
from .._parse import discrete_values
from .._utils import exists, take
from .loss import linear_kl_divs, linear_log_probs

__all__ = ['token_kl_divs', 'token_log_probs']


def token_log_probs(readout, embeds: Tensor, targets, temperature, loss_mask, selector_index, selector_config):
    """``(log p[target], entropy)`` per token, 0 where ``ignore_index`` or ``loss_mask``
    drops it. Ids ``(...)``, or with ``auto_squeeze_single_output=False`` also
    ``(..., 1)`` as ``log_prob`` takes them; the results keep that axis, as its do."""
    weight, selector = _single_group(readout, embeds, 'embeds', selector_index, selector_config)
    batch = embeds.shape[:-1]
    group_axis = not readout.auto_squeeze_single_output and getattr(targets, 'ndim', None) == len(batch) + 1
    ids = discrete_values(targets, selector, batch, not group_axis, 'targets')  # (..., 1)
    check_ids_in_range(ids, selector.group_sizes, 'targets', readout.ignore_index, not group_axis, owner='readout')
    ids = ids.squeeze(-1)
    keep = ids != readout.ignore_index if exists(readout.ignore_index) else torch.ones_like(ids, dtype=torch.bool)
    mask = check_loss_mask(loss_mask, batch)
    keep = keep & mask if exists(mask) else keep
    temperature = check_temperature(temperature, positive=True)
    log_p, entropy = linear_log_probs(embeds, weight, ids.masked_fill(~keep, 0), keep, softcap=readout.logit_softcap, temperature=temperature)
    return (log_p.unsqueeze(-1), entropy.unsqueeze(-1)) if group_axis else (log_p, entropy)


def token_kl_divs(readout_true, embeds_true: Tensor, selector_true, readout_pred, embeds_pred: Tensor, selector_pred, temperature, loss_mask) -> Tensor:
    """KL(true || pred) per token, 0 where ``loss_mask`` drops it; each ``selector_*``
    is a ``(selector_index, selector_config)`` pair."""
    weight_true, _ = _single_group(readout_true, embeds_true, 'embeds_true', *selector_true)
    weight_pred, _ = _single_group(readout_pred, embeds_pred, 'embeds_pred', *selector_pred)
    if weight_true.shape[0] != weight_pred.shape[0] or embeds_true.shape[:-1] != embeds_pred.shape[:-1]:
        raise ValueError(f'embeds_true {tuple(embeds_true.shape)} and embeds_pred {tuple(embeds_pred.shape)} need the same leading shape, '
                         f'and both readouts (under their selectors) the same vocabulary ({weight_true.shape[0]} vs {weight_pred.shape[0]})')
    keep = check_loss_mask(loss_mask, embeds_pred.shape[:-1])
    keep = keep if exists(keep) else torch.ones(embeds_pred.shape[:-1], dtype=torch.bool, device=embeds_pred.device)
    softcaps = (readout_true.logit_softcap, readout_pred.logit_softcap)
    temperature = check_temperature(temperature, positive=True)
    return linear_kl_divs(embeds_true, weight_true, embeds_pred, weight_pred, keep, softcaps=softcaps, temperature=temperature)


def _single_group(readout, embeds: Tensor, name: str, selector_index, selector_config):
    """The rows of the readout's one discrete group (under the selector), after
    checking ``embeds``."""
    if readout.unimix:
        raise ValueError(f'{name}: the per-token paths from embeddings compute plain softmaxes; with unimix={readout.unimix} score the logits (readout.log_prob)')
    if not exists(readout.embeddings):
        raise ValueError('this readout has no table (dim is None): there are no rows to score embeddings against')
    check_floating(embeds, name)
    check_last_dim(embeds, readout.dim, name, 'the readout dim')
    selector = readout._selector(selector_index, selector_config, embeds.device)
    if selector.num_groups != 1:
        raise ValueError(f'per-token log-probs and KL from embeddings need one discrete group, this readout (or selector) has {selector.num_groups}')
    return take(readout.embeddings.weight, selector.discrete_rows), selector
