"""The Triton kernels of the fused paths (``fused.triton_kernels``) and the switch that
chooses them (``fused.backend``).

Without a GPU the kernels run in Triton's interpreter on CPU tensors. It must be
switched on (``TRITON_INTERPRET=1``) before Triton is imported, and other tests in the
same process may have imported Triton already, so each group of checks
(``helpers/kernel_checks.py``; the policy and distillation losses' in
``helpers/kernel_objective_checks.py``) runs in a fresh process: every kernel, values
and gradients against float64 references, at odd sizes, with every option. Skipped where
Triton is not installed (CI installs it with the test extra). The compile test builds
every kernel for an H100 / H200 (sm_90) with Triton's own compiler, which the
interpreter does not exercise.
"""

import json
import os
import pathlib
import subprocess
import sys
import types

import pytest
import torch
from helpers.internals import record_kernel_choices
from helpers.kernel_checks import GROUPS
from helpers.kernel_objective_checks import GROUPS as OBJECTIVE_GROUPS

from discrete_continuous_embed_readout import Readout
from discrete_continuous_embed_readout.fused import backend

TESTS = pathlib.Path(__file__).resolve().parent
ROOT = TESTS.parent
needs_triton = pytest.mark.skipif(not backend.triton_available(), reason='Triton is not installed (pip install triton; the test extra installs it)')


def _env(**extra) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ('TRITON_INTERPRET', 'DCER_FUSED_KERNELS')}
    env['PYTHONPATH'] = os.pathsep.join(p for p in (str(TESTS), str(ROOT), os.environ.get('PYTHONPATH', '')) if p)
    return {**env, **extra}


def run_group(group: str) -> list[dict]:
    done = subprocess.run([sys.executable, '-m', 'helpers.kernel_checks', group], capture_output=True, text=True, timeout=600,
                          cwd=TESTS, env=_env(TRITON_INTERPRET='1'))  # fmt: skip
    assert done.returncode == 0, done.stderr[-4000:]
    results = [json.loads(line) for line in done.stdout.splitlines() if line.startswith('{')]
    assert results, done.stdout[-2000:] + done.stderr[-2000:]
    return results


@needs_triton
@pytest.mark.parametrize('group', [*GROUPS, *OBJECTIVE_GROUPS])
def test_kernels_match_float64_under_the_interpreter(group):
    results = run_group(group)
    if 'skip' in results[0]:
        pytest.skip(results[0]['skip'])
    failed = [r for r in results if 'exception' in r or not r['err'] <= r['tol']]
    assert not failed, '\n'.join(r.get('exception') or f"{r['name']}: {r['err']:.2e} > {r['tol']:.0e}" for r in failed)


@needs_triton
def test_every_kernel_compiles_for_sm90():
    done = subprocess.run([sys.executable, str(ROOT / 'benchmarks' / 'compile_kernels.py'), '--arch', '90', '--dtype', 'bf16'],
                          capture_output=True, text=True, timeout=600, env=_env())  # fmt: skip
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-4000:]
    assert done.stdout.count('registers') + done.stdout.count('ptxas -v unavailable') == 6, done.stdout


# the switch


def fake(device='cuda', dtype=torch.bfloat16):
    """What ``kernels_apply`` reads of a tensor (a CUDA tensor cannot be made here)."""
    return types.SimpleNamespace(is_cuda=device == 'cuda', dtype=dtype)


@pytest.fixture
def triton_present(monkeypatch):
    monkeypatch.setattr(backend, 'triton_available', lambda: True)


def test_auto_takes_the_kernels_on_cuda_only(triton_present):
    with backend.use_kernels('auto'):
        assert backend.kernels_apply(fake(), fake())
        assert backend.kernels_apply(fake(dtype=torch.float16), fake(dtype=torch.float32))
        assert not backend.kernels_apply(fake(), fake('cpu'))
        assert not backend.kernels_apply(fake(dtype=torch.float64), fake(dtype=torch.float64))
        assert not backend.kernels_apply(torch.randn(2, 3), torch.randn(4, 3))


def test_auto_steps_aside_for_deterministic_algorithms(triton_present):
    with backend.use_kernels('auto'):
        torch.use_deterministic_algorithms(True)
        try:
            assert not backend.kernels_apply(fake(), fake())
        finally:
            torch.use_deterministic_algorithms(False)
        assert backend.kernels_apply(fake(), fake())


def test_torch_mode_never_takes_the_kernels(triton_present):
    with backend.use_kernels('torch'):
        assert not backend.kernels_apply(fake(), fake())


def test_triton_mode_takes_them_on_any_device_but_not_float64(triton_present):
    with backend.use_kernels('triton'):
        assert backend.kernels_apply(torch.randn(2, 3), torch.randn(4, 3))
        assert not backend.kernels_apply(torch.randn(2, 3, dtype=torch.float64), torch.randn(4, 3, dtype=torch.float64))


def test_triton_mode_without_triton_is_an_error(monkeypatch):
    monkeypatch.setattr(backend, 'triton_available', lambda: False)
    with backend.use_kernels('triton'), pytest.raises(RuntimeError, match='Triton is not installed'):
        backend.kernels_apply(torch.randn(2, 3))
    with backend.use_kernels('auto'):
        assert not backend.kernels_apply(fake(), fake())


def test_bad_modes_are_rejected(monkeypatch):
    with pytest.raises(ValueError, match="mode must be one of .* got 'gpu'"):
        with backend.use_kernels('gpu'):
            pass
    monkeypatch.setattr(backend, 'KERNELS', 'cuda')
    with pytest.raises(ValueError, match="DCER_FUSED_KERNELS .* got 'cuda'"):
        backend.kernels_apply(torch.randn(2, 3))


def test_use_kernels_restores_the_setting():
    before = backend.KERNELS
    with pytest.raises(KeyError), backend.use_kernels('torch'):
        assert backend.KERNELS == 'torch'
        raise KeyError
    assert backend.KERNELS == before


def test_the_environment_variable_sets_the_default():
    script = (
        'import importlib, os\n'
        'from discrete_continuous_embed_readout.fused import backend\n'
        'for value in ("torch", " Triton ", ""):\n'
        '    os.environ["DCER_FUSED_KERNELS"] = value\n'
        '    print(importlib.reload(backend).KERNELS)\n'
    )
    done = subprocess.run([sys.executable, '-c', script], capture_output=True, text=True, timeout=120, env=_env())
    assert done.stdout.split() == ['torch', 'triton', 'auto'], done.stderr


def test_cpu_tensors_keep_the_chunked_torch_path(monkeypatch):
    """On a CPU (``auto``) no kernel runs, whatever Triton's presence (the LM loss, the
    per-token paths, the policy and distillation losses), and the paths give their
    float64 references."""
    monkeypatch.setattr(backend, 'triton_available', lambda: True)
    choices = record_kernel_choices(monkeypatch)
    readout = Readout(8, num_discrete=13, logit_softcap=3.0)
    x, y = torch.randn(5, 8, requires_grad=True), torch.randint(0, 13, (5,))
    advantages = torch.randn(1)
    with backend.use_kernels('auto'):
        log_p = readout.log_prob_from_embeds(x, y)
        loss = readout(x, y)
        kl = readout.kl_div_from_embeds(x.detach(), x)
        policy = readout.policy_loss_from_embeds(x[None], y[None], advantages, loss_type='grpo').loss
        jsd = readout.distill_loss_from_embeds(x, x.detach(), divergence='jsd')
    assert len(choices) >= 4 and not any(choices), choices  # log-prob, KL, policy, distillation (the loss where it fuses)
    logits = 3.0 * torch.tanh(x.double() @ readout.embeddings.weight.double().T / 3.0)
    torch.testing.assert_close(log_p.double(), logits.log_softmax(-1).gather(-1, y[:, None]).squeeze(-1), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(loss.double(), torch.nn.functional.cross_entropy(logits, y), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(kl.double(), torch.zeros(5, dtype=torch.float64), rtol=0, atol=1e-6)
    # on-policy GRPO: the ratio is 1, the loss -A (the mean over one sequence); a table against itself: JSD 0
    torch.testing.assert_close(policy.double(), -advantages.double()[0], rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(jsd.double(), torch.zeros((), dtype=torch.float64), rtol=0, atol=1e-6)
