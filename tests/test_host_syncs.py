"""No call of the default path waits for an accelerator: on a device where reading a
value syncs (CUDA), the content checks step aside (``set_validate_args('auto')``) and
nothing else reads a value (``.item()``, ``bool(tensor)``, ``.tolist()``, ``nonzero``,
boolean-mask indexing, ...). Run here on the CPU with the accelerator's path selected
(the "device syncs" hook patched), counting the operations that would wait;
``benchmarks/gpu.py`` runs the same calls on CUDA under
``torch.cuda.set_sync_debug_mode('error')``. On the CPU the checks still run and raise."""

# g - groups, c - continuous dims

import re
from collections import Counter

import pytest
import torch
from helpers.internals import pretend_device_syncs
from torch.utils._python_dispatch import TorchDispatchMode

from discrete_continuous_embed_readout import EmbedAndReadout, get_validate_args, set_validate_args

# what waits for the device: a value read on the host (item / bool / int / float of a
# tensor), a result whose size depends on values, or a host copy
WAITING_OPS = {
    'aten._local_scalar_dense.default', 'aten.item.default', 'aten.is_nonzero.default', 'aten.equal.default',
    'aten.nonzero.default', 'aten.masked_select.default', 'aten._unique2.default', 'aten.unique_dim.default',
    'aten.unique_consecutive.default', 'aten.argwhere.default',
}  # fmt: skip


class CountWaits(TorchDispatchMode):
    """Counts the operations in ``WAITING_OPS``, boolean-mask indexing (which runs a
    ``nonzero``) and ``repeat_interleave`` without ``output_size``; ``.tolist()`` and
    ``.numpy()``, which read memory without dispatching on the CPU, are counted by
    ``count_waits``."""

    def __init__(self):
        super().__init__()
        self.counts = Counter()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        name = str(func)
        if name in WAITING_OPS:
            self.counts[name] += 1
        if name.startswith(('aten.index.', 'aten.index_put')) and any(_is_bool(i) for i in args[1]):
            self.counts['boolean-mask indexing'] += 1
        if name.startswith('aten.repeat_interleave.Tensor') and kwargs.get('output_size') is None:
            self.counts['repeat_interleave without output_size'] += 1
        return func(*args, **kwargs)


def _is_bool(index) -> bool:
    return isinstance(index, torch.Tensor) and index.dtype in (torch.bool, torch.uint8)


def count_waits(fn) -> Counter:
    """The waiting operations ``fn`` runs."""
    mode = CountWaits()
    with pytest.MonkeyPatch.context() as patch:
        for method in ('tolist', 'numpy'):
            original = getattr(torch.Tensor, method)

            def counted(self, *args, _original=original, _name=method, **kwargs):
                mode.counts[f'Tensor.{_name}'] += 1
                return _original(self, *args, **kwargs)

            patch.setattr(torch.Tensor, method, counted)
        with mode:
            fn()
    return mode.counts


HEADS = {
    'discrete': dict(num_discrete=5),
    'groups': dict(num_discrete=(3, 5, 7)),
    'padded groups': dict(num_discrete=(4, 5)),
    'gaussian': dict(num_continuous=2),
    'squashed': dict(num_continuous=2, continuous_squashed=True),
    'beta': dict(num_continuous=2, continuous_dist_type='beta'),
    'kumaraswamy': dict(num_continuous=2, continuous_dist_type='kumaraswamy'),
    'two_hot': dict(num_continuous=2, continuous_dist_type='two_hot', continuous_dist_kwargs=dict(num_bins=9)),
    'hl_gauss': dict(num_continuous=2, continuous_dist_type='hl_gauss', continuous_dist_kwargs=dict(num_bins=9)),
    'mixed': dict(num_discrete=5, num_continuous=2),
    'mixed squashed': dict(num_discrete=(3, 4), num_continuous=2, continuous_squashed=True),
    'normalised': dict(num_continuous=2, continuous_mean_std=torch.tensor([[1.0, 2.0], [-1.0, 0.5]])),
}
BOUNDED = {'squashed', 'beta', 'kumaraswamy', 'mixed squashed'}
D, BATCH = 8, (3, 4)


def _calls(name: str):
    """``{call: fn}`` of every readout method on this head (with ``rescale_range`` for a
    bounded head, per-dim bounds as tensors), and the embed's forward."""
    kwargs = HEADS[name]
    embed, readout = EmbedAndReadout(D, **kwargs)
    h = torch.randn(*BATCH, D, requires_grad=True)
    out, other = readout(h), readout(torch.randn(*BATCH, D))
    scale = dict(rescale_range=(torch.tensor([-2.0, 0.0]), torch.tensor([2.0, 3.0]))) if name in BOUNDED else {}
    with torch.no_grad():
        actions = readout.sample(out, **scale)
        targets = readout.sample(out)
    sizes = kwargs.get('num_discrete')
    mask = torch.rand(BATCH) > 0.3
    calls = {
        'embed forward': lambda: embed(targets),
        'forward': lambda: readout(h),
        'sample': lambda: readout.sample(out, return_log_prob=True, **scale),
        'sample differentiable': lambda: readout.sample(out, differentiable=True, **scale),
        'mode': lambda: readout.mode(out, **scale),
        'log_prob': lambda: readout.log_prob(out, actions, **scale),
        'entropy': lambda: readout.entropy(out, **scale),
        'kl_div': lambda: readout.kl_div(out, other),
        'loss': lambda: _backward(readout(h, targets)),
        'masked loss': lambda: _backward(readout(h, targets, loss_mask=mask)),
        'unreduced loss': lambda: _backward(readout(h, targets, return_unreduced_loss=True)),
        'calculate_loss': lambda: _backward(readout.calculate_loss(out, targets)),
        'get_dist': lambda: [d.log_prob(d.sample()) for d in _parts(readout.get_dist(out, **scale))],
    }
    if sizes is not None:
        discrete = targets[0] if isinstance(targets, tuple) else targets
        ignored = discrete.masked_fill(torch.rand(discrete.shape) < 0.3, -1)
        with_ignored = (ignored, targets[1]) if isinstance(targets, tuple) else ignored
        all_sizes = (sizes,) if isinstance(sizes, int) else sizes
        action_mask = torch.rand(*BATCH, sum(all_sizes)) > 0.3
        action_mask[..., 0] = True
        calls |= {
            'loss with ignored targets': lambda: _backward(readout(h, with_ignored)),
            'sample with an action mask': lambda: readout.sample(out, action_mask=action_mask, return_log_prob=True),
            'loss with an action mask': lambda: _backward(readout(h, targets, action_mask=action_mask)),
        }
    if isinstance(sizes, int):  # one group: the fused loss and the paths from embeddings
        calls |= {
            'fused loss': lambda: _fused(readout, h, with_ignored, mask),
            'log_prob_from_embeds': lambda: _backward(readout.log_prob_from_embeds(h, ignored, return_entropy=True, loss_mask=mask)),
            'kl_div_from_embeds': lambda: _backward(readout.kl_div_from_embeds(torch.randn(*BATCH, D), h, loss_mask=mask)),
        }
    return calls


def _parts(dist):
    return dist if isinstance(dist, tuple) else (dist,)


def _backward(loss):
    sum(t.sum() for t in _parts(loss)).backward()


def _fused(readout, h, targets, mask):
    readout.fused_cross_entropy = True
    try:
        _backward(readout(h, targets))
        _backward(readout(h, targets, loss_mask=mask, return_unreduced_loss=True))
    finally:
        readout.fused_cross_entropy = 'auto'


CASES = [(name, call) for name in HEADS for call in _calls(name)]


@pytest.mark.parametrize(('name', 'call'), CASES, ids=[f'{n}-{c}' for n, c in CASES])
def test_no_call_waits_for_the_device(name, call, monkeypatch):
    torch.manual_seed(1)
    fn = _calls(name)[call]
    pretend_device_syncs(monkeypatch)
    assert get_validate_args() == 'auto'
    assert count_waits(fn) == Counter()


def test_the_counter_sees_the_checks_on_the_cpu(monkeypatch):
    # the same calls on the CPU's path do read values (the checks run there): the
    # counter above would see a wait
    calls = _calls('mixed')
    for call in ('log_prob', 'loss', 'calculate_loss', 'embed forward'):
        assert count_waits(calls[call])['aten._local_scalar_dense.default'] > 0, call
    assert count_waits(_calls('discrete')['fused loss'])['aten.nonzero.default'] > 0  # dropped rows found


def test_validate_args_true_checks_on_the_accelerator(monkeypatch):
    embed, readout = EmbedAndReadout(D, num_discrete=5)
    pretend_device_syncs(monkeypatch)
    bad = torch.tensor([0, 5])
    _unchecked(lambda r, _: r.log_prob(torch.randn(2, 5), bad), readout, None, 'id 5')  # 'auto': the contents are not read
    set_validate_args(True)
    with pytest.raises(IndexError, match='id 5 at index \\(1,\\) is out of range'):
        readout.log_prob(torch.randn(2, 5), bad)
    with pytest.raises(IndexError, match='id 5'):
        embed(bad)


BAD_INPUTS = {
    'id out of range': (dict(num_discrete=5), lambda r, h: r.log_prob(r(h), torch.tensor([0, 5])), IndexError, 'id 5 at index \\(1,\\) is out of range'),
    'target out of range': (dict(num_discrete=5), lambda r, h: r(h, torch.tensor([0, -3])), IndexError, 'id -3 at index \\(1,\\)'),
    'group target out of range': (dict(num_discrete=(3, 4)), lambda r, h: r(h, torch.tensor([[0, 1], [3, 0]])), IndexError, 'id 3 at index \\(1, 0\\) is out of range for group 0'),
    'non-finite value': (dict(num_continuous=2), lambda r, h: r.log_prob(r(h), torch.tensor([[0.0, float('nan')], [1.0, 1.0]])), ValueError, 'must be finite'),
    'value outside the support': (dict(num_continuous=2, continuous_dist_type='beta'), lambda r, h: r.log_prob(r(h), torch.tensor([[0.5, 1.5], [0.5, 0.5]])), ValueError, 'support'),
    'action mask with no allowed action': (dict(num_discrete=3), lambda r, h: r.sample(r(h), action_mask=torch.tensor([[True, False, False], [False] * 3])), ValueError, 'group 0 has no allowed action at batch index \\(1,\\)'),
    'rescale bounds out of order': (dict(num_continuous=2, continuous_squashed=True), lambda r, h: r.sample(r(h), rescale_range=(torch.tensor([0.0, 1.0]), torch.tensor([1.0, 0.0]))), ValueError, 'lo < hi'),
}  # fmt: skip


@pytest.mark.parametrize('case', list(BAD_INPUTS))
def test_the_cpu_path_still_raises_and_the_accelerators_reads_nothing(case, monkeypatch):
    kwargs, call, error, message = BAD_INPUTS[case]
    _, readout = EmbedAndReadout(D, **kwargs)
    h = torch.randn(2, D)
    with pytest.raises(error, match=message):
        call(readout, h)
    pretend_device_syncs(monkeypatch)
    assert count_waits(lambda: _unchecked(call, readout, h, message)) == Counter()


def _unchecked(call, readout, h, message: str) -> None:
    """``call`` without its content check: it goes through, or (an id out of range) the
    gather itself fails, as a CUDA kernel's device assert would; never the check's error."""
    try:
        call(readout, h)
    except (IndexError, RuntimeError) as error:
        assert 'out of bounds' in str(error) and not re.search(message, str(error)), error


def test_validate_args_is_a_three_way_switch():
    assert get_validate_args() == 'auto' and get_validate_args()  # the default, truthy as True was
    for value in (True, False, 'auto'):
        set_validate_args(value)
        assert get_validate_args() == value
    with pytest.raises(TypeError, match="value must be a bool or 'auto', got str 'cpu'"):
        set_validate_args('cpu')
