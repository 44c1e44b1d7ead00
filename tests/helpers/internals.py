"""The one place the tests touch package internals: names that are not part of the
public API and may move when the package is restructured. Tests reach them only
through these functions (and the conftest.py fixtures built on them).

- ``fused.linear_softmax.MIN_CHUNK_ROWS``, ``fused.linear_softmax.CHUNK_BYTES``: chunking of the fused loss;
- ``fused.linear_softmax.CACHE_BLOCK_BYTES``: the row blocks of a chunk's element-wise passes;
- ``_losses.FUSED_MIN_GROUP_SIZE``: the group size from which the fused loss is used;
- ``_losses.can_fuse``: whether a forward loss takes the fused path;
- ``fused.loss._LinearCrossEntropySum``: the fused loss's gradient-computing function;
- ``fused.policy._FusedPolicyLoss``, ``fused.distill._FusedDistillLoss``: the fused objectives' ones;
- ``fused.policy._stats_pass``: GSPO's separate log-prob pass;
- ``heads.categorical_ops.pads_cheaply``, ``heads.categorical_ops.log_prob_at``, ``MultiCategorical.batched``:
  the padded (batched) multi-discrete path and the log-prob op;
- ``Readout.selectors``, ``Readout.default_selector``, ``get_selector(...).selector``: selector modules;
- ``Readout.continuous_dist``: the continuous head object;
- ``fused.linear_softmax.linear_softmax_stats`` / ``fused.linear_kl.linear_kl_div``: the per-row ops the
  fused paths share; ``fused.triton_launch``: the Triton kernels' launchers;
  ``fused.kernel_ops``: their gradient coefficients; ``kernels_apply`` as the fused
  modules see it.
- ``_checks.syncs_on_read``: whether reading a tensor's values waits for its device;
- ``heads.categorical_ops.LOG_PROB_OP_MIN_NUMEL``: from how many logits the log-prob op is used;
- ``_losses.FUSED_MIN_TOKENS``, ``_losses.FUSED_MIN_LOGITS``: where ``fused_cross_entropy='auto'`` fuses;
- ``Readout._fused_loss``: the fused loss's entry point;
- ``readout.plain_loss``: the plain loss route of ``forward`` (``_plain_loss.py``), as ``readout.py`` calls it;
- ``heads.categorical_ops.log_softmax`` and its ``SHORT_ROWS_MIN_ROWS``: the log-softmax of many short rows;
- ``_plain_loss.CLASS_MAJOR_MIN_ROWS`` / ``CLASS_MAJOR_MIN_ROWS_GROUPS``: from how many rows its logits are class-major;
- ``_plain_loss.gaussian_nll`` / ``_plain_loss._lean_gaussian``: its plain gaussian's loss, and when it is taken.
"""

import importlib


def _module(name: str):
    """A submodule of the package, imported on first use (so that a moved internal
    fails the tests that use it, not the collection of every test)."""
    return importlib.import_module(f'discrete_continuous_embed_readout.{name}')


def use_small_fused_chunks(monkeypatch) -> None:
    """Several fused-loss chunks (the last one partial), multi-discrete groups fused,
    and ``fused_cross_entropy='auto'`` fusing at any size."""
    monkeypatch.setattr(_module('fused.linear_softmax'), 'MIN_CHUNK_ROWS', 4)
    monkeypatch.setitem(_module('fused.linear_softmax').CHUNK_BYTES, 'cpu', 1)
    set_fused_min_group_size(monkeypatch, 2)
    fuse_at_any_size(monkeypatch)


def fuse_at_any_size(monkeypatch) -> None:
    """``fused_cross_entropy='auto'`` takes the fused loss for any vocabulary and token count."""
    monkeypatch.setattr(_module('_losses'), 'FUSED_MIN_TOKENS', 0)
    monkeypatch.setattr(_module('_losses'), 'FUSED_MIN_LOGITS', 0)


def record_fused_losses(monkeypatch) -> list:
    """A list that grows by the embeddings' shape on every call of the fused loss."""
    calls, readout = [], _module('readout').Readout
    original = readout._fused_loss

    def recorded(self, embed, *args):
        calls.append(tuple(embed.shape))
        return original(self, embed, *args)

    monkeypatch.setattr(readout, '_fused_loss', recorded)
    return calls


def pretend_device_syncs(monkeypatch) -> None:
    """Take the path of a device where reading a value waits for it (CUDA) on the CPU."""
    monkeypatch.setattr(_module('_checks'), 'syncs_on_read', lambda device: True)


def use_log_prob_op(monkeypatch) -> None:
    """Score ids by the log-prob autograd op at any size (not log-softmax + gather)."""
    monkeypatch.setattr(_module('heads.categorical_ops'), 'LOG_PROB_OP_MIN_NUMEL', 0)


def set_fused_min_group_size(monkeypatch, size: int) -> None:
    """Fuse the loss of groups from ``size`` ids on."""
    monkeypatch.setattr(_module('_losses'), 'FUSED_MIN_GROUP_SIZE', size)


def forbid_fused_gradient_function(monkeypatch, replacement) -> None:
    """Replace ``apply`` of the fused loss's gradient-computing autograd function (by one that fails)."""
    monkeypatch.setattr(_module('fused.loss')._LinearCrossEntropySum, 'apply', replacement)


def fused_path_taken(readout, embed=None, **selector) -> bool:
    """Whether ``readout``'s forward loss of ``embed`` takes the fused (logits-free) path."""
    return _module('_losses').can_fuse(readout.fused_cross_entropy, readout.get_selector(**selector).selector, embed)


def pads_cheaply(sizes) -> bool:
    """Whether groups of these sizes take the padded (batched) path."""
    return _module('heads.categorical_ops').pads_cheaply(sizes)


def categorical_log_softmax(logits):
    """The package's log-softmax over the last axis (transposed over many short rows)."""
    return _module('heads.categorical_ops').log_softmax(logits)


def set_short_rows_min_rows(monkeypatch, rows: int) -> None:
    """From how many rows the log-softmax of short rows runs transposed."""
    monkeypatch.setattr(_module('heads.categorical_ops'), 'SHORT_ROWS_MIN_ROWS', rows)


def log_prob_at(logits, index):
    """The package's log-prob op: ``log_softmax(logits)`` at ``index``."""
    return _module('heads.categorical_ops').log_prob_at(logits, index)


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


def linear_softmax_stats(*args, **kwargs):
    """Per-row ``(log p[target], logsumexp, mean logit, entropy)`` of ``x @ W.T`` (the fused op)."""
    return _module('fused.linear_softmax').linear_softmax_stats(*args, **kwargs)


def linear_kl_div(*args, **kwargs):
    """Per-row KL of two tables' softmaxes (the fused op)."""
    return _module('fused.linear_kl').linear_kl_div(*args, **kwargs)


def kernel_launchers():
    """The Triton kernels' launchers (imports Triton)."""
    return _module('fused.triton_launch')


def kernels_module():
    """The Triton kernels themselves and their tile sizes (imports Triton)."""
    return _module('fused.triton_kernels')


def fuse_at_any_size_from_now_on() -> None:
    """``fused_cross_entropy='auto'`` fuses at any size, for the rest of the process (subprocess checks)."""
    _module('_losses').FUSED_MIN_TOKENS = 0
    _module('_losses').FUSED_MIN_LOGITS = 0


def fuse_groups_from(size: int) -> None:
    """Fuse the loss of groups from ``size`` ids on, for the rest of the process (subprocess checks)."""
    _module('_losses').FUSED_MIN_GROUP_SIZE = size


def record_kernel_choices(monkeypatch) -> list:
    """The decisions of ``fused.backend.kernels_apply`` made by the fused ops from now on
    (``True`` = Triton kernels), appended to the returned list."""
    choices = []
    for name in ('fused.linear_softmax', 'fused.linear_kl', 'fused.loss', 'fused.policy', 'fused.distill'):
        module = _module(name)

        def recorded(*tensors, _choose=module.kernels_apply):
            choices.append(_choose(*tensors))
            return choices[-1]

        monkeypatch.setattr(module, 'kernels_apply', recorded)
    return choices
def record_log_prob_op(monkeypatch) -> list:
    """A list that grows by the logits' shape whenever ids are scored by the log-prob
    autograd op (``heads.categorical_ops._LogProbAt`` / ``_LogProbAtWithJvp``)."""
    calls, module = [], _module('heads.categorical_ops')
    for op in (module._LogProbAtWithJvp, module._LogProbAt):  # the subclass first: it inherits apply
        original = op.apply

        def recorded(logits, index, _original=original):
            calls.append(tuple(logits.shape))
            return _original(logits, index)

        monkeypatch.setattr(op, 'apply', recorded)
    return calls


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


def use_chunks_in_cache_blocks(monkeypatch, chunk_rows: int, block_bytes: int) -> None:
    """Chunks of ``chunk_rows`` rows whose element-wise passes run on row blocks of
    ``block_bytes`` (so many rows that all of a pass's ``(rows, v)`` tiles fit in it)."""
    set_min_chunk_rows(monkeypatch, chunk_rows)
    monkeypatch.setitem(_module('fused.linear_softmax').CACHE_BLOCK_BYTES, 'cpu', block_bytes)


def set_min_chunk_rows(monkeypatch, rows: int) -> None:
    """Chunks of ``rows`` rows (the fused paths' minimum, with the CPU budget at one byte)."""
    monkeypatch.setattr(_module('fused.linear_softmax'), 'MIN_CHUNK_ROWS', rows)
    monkeypatch.setitem(_module('fused.linear_softmax').CHUNK_BYTES, 'cpu', 1)


def record_plain_losses(monkeypatch) -> list:
    """A list that grows by one bool per call of ``forward``'s plain loss route:
    whether it gave the loss (``False``: it left the call to the general route)."""
    calls, module = [], _module('readout')
    original = module.plain_loss

    def recorded(*args, **kwargs):
        loss = original(*args, **kwargs)
        calls.append(loss is not None)
        return loss

    monkeypatch.setattr(module, 'plain_loss', recorded)
    return calls


def set_plain_loss_layout(monkeypatch, layout: str) -> None:
    """The plain loss route's logits ``'class-major'`` at any batch size, or ``'row-major'`` at every one."""
    rows = 0 if layout == 'class-major' else 1 << 62
    monkeypatch.setattr(_module('_plain_loss'), 'CLASS_MAJOR_MIN_ROWS', rows)
    monkeypatch.setattr(_module('_plain_loss'), 'CLASS_MAJOR_MIN_ROWS_GROUPS', rows)


def record_plain_gaussian_losses(monkeypatch) -> list:
    """A list that grows by the values' shape whenever the plain loss route scores
    continuous targets as the plain gaussian's (without a ``ContinuousPart``)."""
    calls, module = [], _module('_plain_loss')
    original = module.gaussian_nll

    def recorded(mean, log_var, values):
        calls.append(tuple(values.shape))
        return original(mean, log_var, values)

    monkeypatch.setattr(module, 'gaussian_nll', recorded)
    return calls


def score_plain_gaussians_by_their_part(monkeypatch) -> None:
    """The plain loss route scores a plain gaussian's targets through its ``ContinuousPart`` (as before its lean loss)."""
    monkeypatch.setattr(_module('_plain_loss'), '_lean_gaussian', lambda *args: False)
