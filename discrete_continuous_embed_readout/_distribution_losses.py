"""The losses of a ``ReadoutDistribution`` (a mixin of it): the negative log-prob
against targets with the readout's label smoothing and z-loss, masks and
``ignore_index``, and the regression loss of the continuous part.
The plain reduced discrete loss runs as ``F.cross_entropy``, one fused op per group."""

# g - discrete groups, c - continuous dims

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from ._checks import check_ids_in_range, check_loss_mask
from ._losses import entry_mask, masked_loss
from ._parse import discrete_values, split_pair
from ._utils import as_rows, default, exists, pack, upcast
from .heads.categorical_ops import zero_where_impossible

__all__ = ['DistributionLosses']


class DistributionLosses:
    """``loss`` of ``ReadoutDistribution``; uses its parsed groups, parts and config."""

    def loss(self, targets, *, mask=None, unreduced: bool = False, return_only: bool | None = None, return_z_loss: bool = False):
        """The loss against ``targets``: the negative log-prob with the readout's
        label smoothing and z-loss (regression mode: the regression loss in
        normalised units), masked.

        Args:
            targets: ids, values or a pair; their leading shape may broadcast
                with the distribution's (as in ``log_prob``).
            mask: ``(...)`` bool of the (broadcast) leading shape, True = count this position.
            unreduced: per-entry losses (masked entries zeroed) instead of the mean.
            return_only: bare results with one part missing (default: the readout's).
            return_z_loss: also the discrete logits' ``logsumexp^2``, reduced alike
                (``None`` without a discrete part).

        Returns:
            a scalar per part (mean over the kept entries), or the per-entry losses;
            with ``return_z_loss``, ``(loss, z_loss)``.
        """
        d_target, c_target = split_pair(targets, self.selector, 'targets')
        d_loss = c_loss = z_loss = None
        if self.groups is not None and d_target is not None:
            d_loss, z_loss = self._discrete_loss(d_target, mask, unreduced, return_z_loss)
        if self._build_continuous is not None and c_target is not None:
            per_entry = self.continuous.loss(c_target)
            c_loss = masked_loss(per_entry, entry_mask(per_entry, check_loss_mask(mask, per_entry.shape[:-1])), reduce=not unreduced)
        if d_loss is None and c_loss is None:
            raise ValueError('targets and logits share no part: nothing to compute a loss on')
        loss = pack(d_loss, c_loss, self.mixed, default(return_only, self.config.return_only))
        return (loss, z_loss) if return_z_loss else loss

    def _discrete_loss(self, targets, mask, unreduced: bool, want_z: bool):
        """``(loss, z_loss)``: ``-(1 - eps) log p[t] - eps mean_a log p[a] + w lse^2``
        and ``lse^2`` per entry (``None`` unless wanted), masked and reduced. The
        smoothing mean runs over the allowed actions only (a masked action has
        probability 0 in the smoothed target too); ``lse`` is that of the logits
        (capped, masked), not of unimix's mixture, whose log-normaliser is 0."""
        batch = self.groups[0].shape[:-1]
        ids = discrete_values(targets, self.selector, batch, self.squeeze, 'targets', broadcast=True)
        eps, w, _ = self.config.loss_options
        if not (eps or w or want_z or unreduced or mask is not None) and ids.numel() > 0 and ids.shape[:-1] == batch:
            mean = self._mean_cross_entropy(ids)
            if mean is not None:
                return mean, None
        loss = -self.categorical._log_prob(ids, 'targets', self.squeeze, owner='readout')  # (..., g), the leading shapes broadcast
        ids = ids.expand(loss.shape)
        if not (eps or w or want_z):
            return self._squeezed(masked_loss(loss, self._keep(loss, ids, mask), reduce=not unreduced), not unreduced), None
        if eps:
            loss = (1.0 - eps) * loss - eps * torch.stack([_mean_allowed_log_prob(g) for g in self.groups], dim=-1).expand(loss.shape)
        lse = torch.stack([torch.logsumexp(upcast(g), -1) for g in self.raw_groups], dim=-1).expand(loss.shape)
        loss = loss + w * lse.square() if w else loss
        keep = self._keep(loss, ids, mask)
        return tuple(self._squeezed(masked_loss(t, keep, reduce=not unreduced), not unreduced) for t in (loss, lse.square()))

    def _mean_cross_entropy(self, ids: Tensor) -> Tensor | None:
        """The plain reduced loss by ``F.cross_entropy`` (one fused op per group): the
        sum over groups of the summed cross entropies, over the count of entries not
        ``ignore_index``; ``None`` where ids out of range might pass unnoticed (checks
        off and no ``ignore_index``: ``F.cross_entropy`` would ignore -100)."""
        ignore = self.config.ignore_index
        in_range = check_ids_in_range(ids, self.group_sizes, 'targets', ignore, self.squeeze, owner='readout')
        if not in_range and not exists(ignore):
            return None
        ignore = -100 if in_range else ignore  # F.cross_entropy's default: no id in range equals it
        if in_range and len(self.groups) == 1:
            return F.cross_entropy(as_rows(upcast(self.groups[0])), as_rows(ids[..., 0]))
        sums = [F.cross_entropy(as_rows(upcast(g)), as_rows(ids[..., i]), ignore_index=ignore, reduction='sum') for i, g in enumerate(self.groups)]
        total = sums[0] if len(sums) == 1 else torch.stack(sums).sum()
        return total / (ids.numel() if in_range else (ids != ignore).sum().clamp(min=1))

    def _keep(self, per_entry: Tensor, ids: Tensor, mask) -> Tensor | None:
        ignored = ids != self.config.ignore_index if exists(self.config.ignore_index) else None
        return entry_mask(per_entry, check_loss_mask(mask, ids.shape[:-1]), ignored)


def _mean_allowed_log_prob(logits: Tensor) -> Tensor:
    """``mean_a log softmax(logits)[a]`` over the allowed (finite) logits of each row:
    label smoothing's term, which a masked ``-inf`` logit would make infinite."""
    logits = upcast(logits)
    allowed = (~torch.isneginf(logits)).sum(-1).to(logits.dtype)
    return zero_where_impossible(logits).sum(-1) / allowed - torch.logsumexp(logits, -1)
