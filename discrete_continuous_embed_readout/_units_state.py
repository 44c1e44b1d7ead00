"""Bound units (``continuous_range``) in checkpoints: loaded only into a module that
binds them, checked as at construction, and a clear message when only one of the
checkpoint and the module has them."""

from __future__ import annotations

from torch import Tensor

from ._options import check_bound_units
from ._utils import exists


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
