"""The helper functions 0.2.x's module exposed (re-exported at the old import
path, ``discrete_continuous_embed_readout.discrete_continuous_embed_readout``),
each a thin definition over this package's own code."""

from __future__ import annotations

import torch
from torch import Tensor
from torch.utils._pytree import tree_map

from .._options import check_range
from ..heads.categorical import MultiCategorical
from ..heads.categorical_ops import gumbel_noise as _gumbel_noise


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
