"""Loading 0.2.x checkpoints: their state dicts hold copies of the table per
selector and the normaliser under ``.data``; this rewrites them into ours."""

from __future__ import annotations

import warnings

import torch
from torch import Tensor

from .._utils import take

# what 0.2.x checkpoints hold that this package does not: copies of the table per
# selector, and the normaliser under '.data' (plus a copy per selector)
LEGACY_TABLE_COPIES = ('discrete_selector.embeddings.weight', 'continuous_selector.embed.weight')
LEGACY_MEAN_STD = 'continuous_mean_std.data'
LEGACY_MEAN_STD_COPIES = ('continuous_selector.continuous_mean_std.data', 'continuous_mean_std.data')


def upgrade_legacy_state(module, state_dict, prefix: str) -> None:
    """Rewrite a 0.2.x state dict in place: ``continuous_mean_std.data`` becomes
    ``continuous_mean_std``; each selector's copies of the table and of its
    dims' normaliser are checked and dropped. A table copy that differs is
    what 0.2.x's untied ``weight_tie=True`` wrote: the readout's table
    (``embeddings.weight``) is kept as the shared one, with a warning."""
    if prefix + LEGACY_MEAN_STD in state_dict:
        state_dict[prefix + 'continuous_mean_std'] = state_dict.pop(prefix + LEGACY_MEAN_STD)
    for key in [k for k in state_dict if k.startswith(prefix + 'selectors.')]:
        index, _, name = key[len(prefix + 'selectors.') :].partition('.')
        selector = _legacy_selector_at(module, index)
        if selector is None or name not in (*LEGACY_TABLE_COPIES, *LEGACY_MEAN_STD_COPIES):
            continue  # not a legacy copy: left for load_state_dict to report
        copy = state_dict.pop(key)
        if name in LEGACY_TABLE_COPIES:
            _check_table_copy(copy, state_dict.get(prefix + 'embeddings.weight'), key, prefix)
            continue
        mean_std = state_dict.get(prefix + 'continuous_mean_std')
        if mean_std is not None:  # compared where the selector's index tables live
            mean_std, copy = mean_std.to(selector.group_sizes_t.device), copy.to(selector.group_sizes_t.device)
        expected = take(mean_std, selector.continuous_dims) if mean_std is not None and selector.has_continuous else None
        if expected is not None and (expected.shape != copy.shape or not torch.equal(expected, copy)):
            raise ValueError(f"state_dict: {key} should hold the selector's rows of {prefix}continuous_mean_std (0.2.x layout) but differs from them")


def _legacy_selector_at(module, index: str):
    """The selector a 0.2.x key ``selectors.<index>`` belongs to (0.2.x kept the
    default selector as ``selectors.0``)."""
    if not index.isdigit():
        return None
    if len(module.selectors) == 0:
        return module.default_selector if index == '0' else None
    return module.selectors[int(index)] if int(index) < len(module.selectors) else None


def _check_table_copy(copy: Tensor, table: Tensor | None, key: str, prefix: str) -> None:
    if table is None or (copy.shape == table.shape and torch.equal(copy, table)):
        return
    warnings.warn(
        f'state_dict: {key} differs from {prefix}embeddings.weight. A 0.2.x checkpoint of a weight_tie=True pair holds two tables '
        f'(0.2.x did not really tie: its embed kept looking up {key}); loading {prefix}embeddings.weight, the readout\'s table, '
        f'as the one shared table and dropping {key}',
        UserWarning, stacklevel=4,
    )  # fmt: skip
