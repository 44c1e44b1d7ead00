"""The 0.2.x surface that is not part of this package's own API: the selector
objects ``get_selector`` returns (with their 0.2.x attributes), ``BufferModule``,
and the module-level helpers of the original module path. Each is a thin
definition over the real code; ``discrete_continuous_embed_readout.discrete_continuous_embed_readout``
re-exports them. Nothing here is in the package's top level or ``__all__``.
"""

# g - discrete groups, c - continuous dims, d - model dim

from __future__ import annotations

import torch
from torch import Tensor, nn

from .._selectors import Selector
from .._utils import exists, take

# selector objects: what get_selector returns


class BufferModule(nn.Module):
    """A module holding one tensor as its buffer ``data`` (0.2.x kept the
    normaliser in one, so checkpoints name it ``continuous_mean_std.data``).

    Args:
        tensor: the tensor to hold.
    """

    def __init__(self, tensor: Tensor):
        super().__init__()
        self.register_buffer('data', tensor)


def _rows(selector: Selector, name: str) -> Tensor:
    index = getattr(selector, name)
    if isinstance(index, slice):
        return torch.arange(index.start, index.stop, device=selector.group_sizes_t.device)
    return index


class DiscreteSelector:
    """The discrete part of a selector (0.2.x attributes), over the owner's table.

    Attributes:
        discrete_indices: the selected table rows, groups concatenated ``(sum n_g,)``.
        discrete_set_lens: the groups' sizes ``(g,)``.
        discrete_set_offsets: where each group starts in ``discrete_indices`` ``(g,)``.
        num_discrete_sets: number of groups.
        embeddings: the owner's ``nn.Embedding`` (``None`` without a table).
    """

    def __init__(self, owner: nn.Module, selector: Selector):
        self._owner, self._selector = owner, selector
        self.num_discrete_sets = selector.num_groups

    @property
    def embeddings(self) -> nn.Embedding | None:
        return self._owner.embeddings

    @property
    def discrete_indices(self) -> Tensor:
        return _rows(self._selector, 'discrete_rows')

    @property
    def discrete_set_lens(self) -> Tensor:
        return self._selector.group_sizes_t

    @property
    def discrete_set_offsets(self) -> Tensor:
        return self._selector.group_offsets

    def embed(self, indices: Tensor) -> Tensor:
        """Embeddings of local ids: ``(..., g)`` for several groups, any shape for one.

        Args:
            indices: local ids.

        Returns:
            ``(..., g, d)`` (several groups) or ``(*indices.shape, d)`` (one group).
        """
        ids = indices if self.num_discrete_sets > 1 else indices.unsqueeze(-1)
        rows = self._selector.global_rows(ids)
        return self._table()[rows if self.num_discrete_sets > 1 else rows.squeeze(-1)]

    def get_readout_embeds(self) -> Tensor:
        """The selected rows, groups concatenated: ``(sum n_g, d)``."""
        return take(self._table(), self._selector.discrete_rows)

    def split_packed(self, logits: Tensor) -> tuple[Tensor, ...]:
        """The last axis of ``logits`` ``(..., sum n_g)`` split into the groups.

        Args:
            logits: ``(..., sum n_g)``.

        Returns:
            a tuple of ``(..., n_g)``.
        """
        return logits.split(list(self._selector.group_sizes), dim=-1)

    def _table(self) -> Tensor:
        if not exists(self._owner.embeddings):
            raise RuntimeError('this module has no table (dim is None): there are no embeddings to select')
        return self._owner.embeddings.weight


class ContinuousSelector:
    """The continuous part of a selector (0.2.x attributes), over the owner's table.

    Attributes:
        continuous_indices: the selected table rows: the dims' rows, then (a readout
            predicting log-variances) their log-variance rows.
        continuous_mean_std: a ``BufferModule`` with the dims' ``(c, 2)`` normaliser, or ``None``.
        continuous_squashed: whether samples are tanh-squashed.
        continuous_log_var_embed: whether the owner predicts (mean, log-variance).
        embed: the owner's ``nn.Embedding``.
    """

    def __init__(self, owner: nn.Module, selector: Selector, squashed: bool):
        self._owner, self._selector = owner, selector
        self.continuous_squashed = squashed
        self.continuous_log_var_embed = bool(getattr(owner, 'continuous_log_var_embed', False)) and owner.layout.log_var_rows

    @property
    def embed(self) -> nn.Embedding | None:
        return self._owner.embeddings

    @property
    def continuous_indices(self) -> Tensor:
        name = 'continuous_readout_rows' if self.continuous_log_var_embed else 'continuous_rows'
        return _rows(self._selector, name)

    @property
    def continuous_mean_std(self) -> BufferModule | None:
        if not self._owner.can_norm_continuous:
            return None
        return BufferModule(take(self._owner.continuous_mean_std, self._selector.continuous_dims))

    def get_embed(self) -> Tensor:
        """The selected rows ``(c, d)`` (``(2c, d)`` with log-variance rows)."""
        if not exists(self._owner.embeddings):
            raise RuntimeError('this module has no table (dim is None): there are no embeddings to select')
        return self._owner.embeddings.weight[self.continuous_indices]


class DiscreteContinuousSelector:
    """What ``get_selector`` and ``create_discrete_continuous_selector`` return:
    which rows one kind of input uses, with the 0.2.x attributes. Pass it back
    as ``selector=`` to the 0.2.x methods (``sample_continuous``, ...).

    Attributes:
        has_discrete, has_continuous: which modalities it selects.
        one_of_discrete_or_continuous: exactly one of the two.
        group_sizes: its discrete groups' sizes (ints); ``num_continuous``: its dims.
        continuous_squashed: whether continuous samples are tanh-squashed.
        continuous_log_var_embed: whether the owner predicts (mean, log-variance)
            (``None`` without a continuous part).
        continuous_mean_std: the dims' normaliser (a ``BufferModule``) or ``None``.
        discrete_indices: the selected discrete rows, or ``None``.
        discrete_selector: a ``DiscreteSelector`` or ``None``.
        continuous_selector: a ``ContinuousSelector`` or ``None``.
    """

    def __init__(self, owner: nn.Module, selector: Selector):
        self._owner, self.selector = owner, selector
        self.has_discrete, self.has_continuous = selector.has_discrete, selector.has_continuous
        self.one_of_discrete_or_continuous = self.has_discrete ^ self.has_continuous
        self.group_sizes, self.num_continuous = selector.group_sizes, selector.num_continuous
        self.continuous_squashed = owner._is_squashed(selector) if self.has_continuous else False
        self.discrete_selector = DiscreteSelector(owner, selector) if self.has_discrete else None
        self.continuous_selector = ContinuousSelector(owner, selector, self.continuous_squashed) if self.has_continuous else None

    @property
    def discrete_indices(self) -> Tensor | None:
        return self.discrete_selector.discrete_indices if self.has_discrete else None

    @property
    def continuous_log_var_embed(self) -> bool | None:
        return self.continuous_selector.continuous_log_var_embed if self.has_continuous else None

    @property
    def continuous_mean_std(self) -> BufferModule | None:
        return self.continuous_selector.continuous_mean_std if self.has_continuous else None

    def __repr__(self) -> str:
        return f'DiscreteContinuousSelector(group_sizes={list(self.group_sizes)}, num_continuous={self.num_continuous}, continuous_squashed={self.continuous_squashed})'
