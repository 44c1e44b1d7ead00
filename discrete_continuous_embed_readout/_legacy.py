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
from torch.utils._pytree import tree_map

from ._checks import check_range
from ._selectors import Selector
from ._utils import exists, take
from .multi_categorical import MultiCategorical
from .multi_categorical import gumbel_noise as _gumbel_noise

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


# module-level helpers of the 0.2.x module path


def identity(t, *args, **kwargs):
    """``t`` itself."""
    return t


def first(arr):
    """``arr[0]``."""
    return arr[0]


def compact(arr) -> list:
    """The items of ``arr`` that are not ``None``."""
    return [v for v in arr if v is not None]


def flatten(arr) -> list:
    """One level of nesting removed: ``[[1, 2], [3]] -> [1, 2, 3]``."""
    return [v for sub in arr for v in sub]


def is_unique(arr) -> bool:
    """Whether no item of ``arr`` repeats."""
    return len(arr) == len(set(arr))


def xnor(x, y) -> bool:
    """``x == y`` (both true or both false)."""
    return x == y


def cast_tuple(t) -> tuple:
    """``t`` if it is a tuple, else ``(t,)`` (a list is one item, as in 0.2.x)."""
    return t if isinstance(t, tuple) else (t,)


def safe_cat(tensors, dim: int = 0) -> Tensor | None:
    """Concatenate the tensors that are not ``None``: ``None`` if there are none,
    the tensor itself if there is one."""
    tensors = compact(tensors)
    if len(tensors) <= 1:
        return tensors[0] if tensors else None
    return torch.cat(tensors, dim=dim)


def cat_with_lens(tensors) -> tuple[Tensor, Tensor]:
    """Tensors concatenated along the last axis, and their sizes there (a long tensor)."""
    catted = torch.cat(list(tensors), dim=-1)
    return catted, torch.tensor([t.shape[-1] for t in tensors], device=catted.device)


def exclusive_cumsum(t) -> Tensor:
    """Offsets of consecutive segments, as a tensor: ``[3, 5, 2] -> tensor([0, 3, 8])``."""
    t = torch.as_tensor(t)
    return torch.cumsum(t, dim=-1) - t


def tree_map_tensor(obj, fn):
    """``fn`` applied to every tensor in a nested structure; other leaves kept."""
    return tree_map(lambda v: fn(v) if torch.is_tensor(v) else v, obj)


def log(t: Tensor, eps: float = 1e-20) -> Tensor:
    """``log(max(t, eps))``."""
    return t.clamp(min=eps).log()


def atanh(t: Tensor, eps: float = 1e-6) -> Tensor:
    """``atanh(t)`` as ``(log(1 + t) - log(1 - t)) / 2`` with both arguments floored at ``eps``."""
    return 0.5 * (log(1 + t, eps) - log(1 - t, eps))


def softclamp(t: Tensor, value: float = 1.0) -> Tensor:
    """``tanh(t / value) * value``: smoothly into ``(-value, value)``."""
    return (t / value).tanh() * value


def max_neg_value(t: Tensor) -> float:
    """The most negative finite value of ``t``'s dtype."""
    return -torch.finfo(t.dtype).max


def calc_entropy(t: Tensor, eps: float = 1e-20) -> Tensor:
    """Entropy of ``softmax(t)`` over the last axis, ``(...)`` (``eps`` is accepted
    for 0.2.x calls; the entropy is computed from ``log_softmax``, exactly)."""
    return MultiCategorical(t).entropy()


def assert_valid_range(r):
    """``r`` if it is a pair ``(lo, hi)`` with ``lo < hi``.

    Raises:
        TypeError: not a pair of numbers.
        ValueError: ``lo >= hi``.
    """
    check_range(r, 'range')
    return r


def rescale(t: Tensor, old_range, new_range) -> Tensor:
    """Map ``t`` linearly from ``old_range`` ``(lo, hi)`` onto ``new_range``."""
    (lo, hi), (new_lo, new_hi) = old_range, new_range
    return (t - lo) / (hi - lo) * (new_hi - new_lo) + new_lo


def gumbel_noise(t: Tensor, eps: float = 1e-20) -> Tensor:
    """Gumbel(0, 1) noise shaped like ``t``, drawn in (at least) float32."""
    like = t if t.dtype not in (torch.float16, torch.bfloat16) else t.float()
    return _gumbel_noise(t.shape, like, eps)


def gumbel_sample(t: Tensor, temperature: float = 1.0, differentiable: bool = False, eps: float = 1e-20) -> Tensor:
    """A draw from ``softmax(t / temperature)``: ids ``(...)``, or with
    ``differentiable`` the straight-through one-hot ``(..., n)``."""
    return MultiCategorical(t).sample(temperature, differentiable, eps)


def gumbel_sample_multi_categorical(dists, temperature: float = 1.0, differentiable: bool = False, eps: float = 1e-20) -> Tensor:
    """One draw per group of logits: ids ``(..., g)``, or with ``differentiable``
    the groups' straight-through one-hots concatenated ``(..., sum n_g)``."""
    return MultiCategorical(list(dists)).sample(temperature, differentiable, eps)
