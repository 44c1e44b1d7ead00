"""Loading checkpoints: 0.2.x state dicts hold copies of the table per selector
and the normaliser under ``.data``, which this rewrites into ours; bound units
(``continuous_range``) are loaded only into a module that binds them."""

from __future__ import annotations

import warnings

import torch
from torch import Tensor

from ._checks import check_bound_units
from ._utils import exists, take

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


def check_loaded_units(mine: Tensor | None, state_dict, key: str) -> None:
    """Bounds loaded into a module's bound units (``mine``) checked as at construction."""
    saved = state_dict.get(key)
    if isinstance(saved, Tensor) and exists(mine) and saved.shape == mine.shape and not saved.is_meta:
        check_bound_units(saved.float(), f'state_dict[{key}]')


def explain_units_keys(mine: Tensor | None, state_dict, key: str, missing_keys: list, unexpected_keys: list) -> None:
    """Bound units (``continuous_range``) in the module but not the checkpoint, or
    the other way round: the missing / unexpected key, as torch reports it, carries
    why and what to do (in ``strict`` loading's message; it still equals the key)."""
    for keys in (missing_keys, unexpected_keys):
        for i, k in enumerate(keys):
            if k == key:
                keys[i] = ExplainedKey(key, _units_mismatch(state_dict.get(key), mine))


class ExplainedKey(str):
    """A state-dict key (it compares and hashes as the key) that formats with the
    reason it is missing or unexpected, which torch's strict message then shows."""

    def __new__(cls, key: str, why: str):
        explained = super().__new__(cls, key)
        explained.why = why
        return explained

    def __format__(self, spec) -> str:
        return f'{str(self)}: {self.why}'


def _units_mismatch(saved, mine) -> str:
    if exists(saved):
        shown = f' (lo={saved[:, 0].tolist()}, hi={saved[:, 1].tolist()})' if isinstance(saved, Tensor) and saved.ndim == 2 and not saved.is_meta else ''
        return (f'the checkpoint binds continuous units{shown}, but this module was built without continuous_range: '
                'build it with continuous_range=(lo, hi) to load them (or load with strict=False to leave them out)')  # fmt: skip
    shown = '' if mine.is_meta else f' (lo={mine[:, 0].tolist()}, hi={mine[:, 1].tolist()})'
    return ('this module binds continuous units (continuous_range)' + shown + ', but the checkpoint has none (saved by a module built '
            'without continuous_range, or by 0.2.x): build the module without continuous_range, add them to the state dict '
            "(state_dict[key] = module.continuous_range), or load with strict=False to keep this module's")  # fmt: skip
