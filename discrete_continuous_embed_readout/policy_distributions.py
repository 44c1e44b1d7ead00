"""The discrete part's ``torch.distributions`` object for ``Readout.get_dist``:
independent categoricals over several groups (one group is torch's ``Categorical``),
for code that expects a ``Distribution``: RL libraries, tensordict's
ProbabilisticTensorDictModule. Masked actions have logit ``-inf``. The continuous
part's views are in ``heads/views.py``.
"""

# g - groups, c - continuous dims

from __future__ import annotations

import torch
from torch import Tensor
from torch.distributions import Categorical, Distribution, constraints

__all__ = ['MultiCategoricalDistribution']


class MultiCategoricalDistribution(Distribution):
    """Independent categoricals over groups: ``batch_shape`` the leading shape,
    ``event_shape`` ``(g,)``; ``log_prob`` and ``entropy`` sum over the groups.

    Args:
        logits: a sequence of ``(..., n_g)`` tensors (``-inf`` = impossible action).
        validate_args: as in ``torch.distributions`` (off by default): check the
            logits, and that ``log_prob``'s ids have one entry per group, each in
            its group's range (``ValueError`` otherwise).
    """

    arg_constraints = {}
    support = constraints.independent(constraints.nonnegative_integer, 1)
    has_rsample = False

    def __init__(self, logits, validate_args: bool | None = False):
        self.categoricals = [Categorical(logits=g, validate_args=validate_args) for g in logits]
        super().__init__(logits[0].shape[:-1], torch.Size((len(logits),)), validate_args=validate_args)

    @property
    def logits(self) -> tuple[Tensor, ...]:
        """Per-group logits ``(..., n_g)``, normalised as ``Categorical`` stores them (log-probs)."""
        return tuple(c.logits for c in self.categoricals)

    def sample(self, sample_shape=()) -> Tensor:
        """Draw ids from each group's categorical.

        Args:
            sample_shape: leading shape of independent draws.

        Returns:
            ids ``(*sample_shape, ..., g)``.
        """
        return torch.stack([c.sample(sample_shape) for c in self.categoricals], dim=-1)

    def log_prob(self, value: Tensor) -> Tensor:
        """Joint log-probability of one id per group.

        Args:
            value: ids ``(..., g)``.

        Returns:
            ``(...)``: the groups' log-probs summed.
        """
        if self._validate_args and (value.ndim == 0 or value.shape[-1] != len(self.categoricals)):
            raise ValueError(f'value must have a last axis of {len(self.categoricals)} (one id per group), got shape {tuple(value.shape)}')
        return sum(c.log_prob(value[..., g]) for g, c in enumerate(self.categoricals))

    def entropy(self) -> Tensor:
        """Joint entropy.

        Returns:
            ``(...)``: the groups' entropies summed.
        """
        return sum(c.entropy() for c in self.categoricals)

    @property
    def mode(self) -> Tensor:
        """The argmax id of each group, ``(..., g)``."""
        return torch.stack([c.logits.argmax(-1) for c in self.categoricals], dim=-1)
