"""The one place the tests touch package internals: names that are not part of the
public API and may move when the package is restructured. Tests reach them only
through these functions (and the conftest.py fixtures built on them).

- ``fused.linear_softmax.MIN_CHUNK_ROWS``, ``fused.linear_softmax.CHUNK_BYTES``: chunking of the fused loss;
- ``_losses.FUSED_MIN_GROUP_SIZE``: the group size from which the fused loss is used;
- ``_losses.can_fuse``: whether a forward loss takes the fused path;
- ``fused.loss._LinearCrossEntropySum``: the fused loss's gradient-computing function;
- ``fused.policy._FusedPolicyLoss``, ``fused.distill._FusedDistillLoss``: the fused objectives' ones;
- ``fused.policy._stats_pass``: GSPO's separate log-prob pass;
- ``multi_categorical.pads_cheaply``, ``multi_categorical.log_prob_at``, ``MultiCategorical.batched``:
  the padded (batched) multi-discrete path and the log-prob op;
- ``Readout.selectors``, ``Readout.default_selector``, ``get_selector(...).selector``: selector modules;
- ``Readout.continuous_dist``: the continuous head object.
"""

import importlib


def _module(name: str):
    """A submodule of the package, imported on first use (so that a moved internal
    fails the tests that use it, not the collection of every test)."""
    return importlib.import_module(f'discrete_continuous_embed_readout.{name}')


def use_small_fused_chunks(monkeypatch) -> None:
    """Several fused-loss chunks (the last one partial), and multi-discrete groups fused."""
    monkeypatch.setattr(_module('fused.linear_softmax'), 'MIN_CHUNK_ROWS', 4)
    monkeypatch.setitem(_module('fused.linear_softmax').CHUNK_BYTES, 'cpu', 1)
    set_fused_min_group_size(monkeypatch, 2)


def set_fused_min_group_size(monkeypatch, size: int) -> None:
    """Fuse the loss of groups from ``size`` ids on."""
    monkeypatch.setattr(_module('_losses'), 'FUSED_MIN_GROUP_SIZE', size)


def forbid_fused_gradient_function(monkeypatch, replacement) -> None:
    """Replace ``apply`` of the fused loss's gradient-computing autograd function (by one that fails)."""
    monkeypatch.setattr(_module('fused.loss')._LinearCrossEntropySum, 'apply', replacement)


def fused_path_taken(readout, **selector) -> bool:
    """Whether ``readout``'s forward loss takes the fused (logits-free) path."""
    return _module('_losses').can_fuse(readout.fused_cross_entropy, readout.get_selector(**selector).selector)


def pads_cheaply(sizes) -> bool:
    """Whether groups of these sizes take the padded (batched) path."""
    return _module('multi_categorical').pads_cheaply(sizes)


def log_prob_at(logits, index):
    """The package's log-prob op: ``log_softmax(logits)`` at ``index``."""
    return _module('multi_categorical').log_prob_at(logits, index)


def padded_path_taken(dist) -> bool:
    """Whether a ``MultiCategorical`` computes on the padded (batched) path."""
    return dist.batched


def selector_modules(module) -> list:
    """The registered selectors and the default one of an Embed / Readout."""
    return [s for s in (*module.selectors, module.default_selector) if s is not None]


def built_selector(module, *args, **kwargs):
    """The selector module behind ``module.get_selector(...)``."""
    return module.get_selector(*args, **kwargs).selector


def continuous_head(readout):
    """The continuous head object a readout samples and scores with."""
    return readout.continuous_dist


def forbid_fused_objective_functions(monkeypatch, replacement) -> None:
    """Replace ``apply`` of the fused policy and distillation losses' gradient-computing
    autograd functions (``fused.policy._FusedPolicyLoss``, ``fused.distill._FusedDistillLoss``)."""
    monkeypatch.setattr(_module('fused.policy')._FusedPolicyLoss, 'apply', replacement)
    monkeypatch.setattr(_module('fused.distill')._FusedDistillLoss, 'apply', replacement)


def forbid_separate_sequence_pass(monkeypatch) -> None:
    """GSPO's separate log-prob pass (``fused.policy._stats_pass``, run when a sequence
    exceeds a chunk) fails the test if it runs with gradients."""

    def refuse(*args):
        raise AssertionError('GSPO took a separate log-prob pass')

    monkeypatch.setattr(_module('fused.policy'), '_stats_pass', refuse)


def set_min_chunk_rows(monkeypatch, rows: int) -> None:
    """Chunks of ``rows`` rows (the fused paths' minimum, with the CPU budget at one byte)."""
    monkeypatch.setattr(_module('fused.linear_softmax'), 'MIN_CHUNK_ROWS', rows)
    monkeypatch.setitem(_module('fused.linear_softmax').CHUNK_BYTES, 'cpu', 1)
