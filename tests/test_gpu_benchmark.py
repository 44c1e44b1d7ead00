"""``benchmarks/gpu.py`` (one call on a GPU runs every check and benchmark) runs end to
end here: ``--cpu-smoke`` takes it through its checks and its table on the CPU at tiny
sizes, with the Triton kernels in Triton's interpreter where Triton is installed, so
that the rare GPU session spends its minutes measuring, not debugging the script
(the fused objectives' part is ``benchmarks/gpu_objectives.py``)."""

import json
import os
import pathlib
import subprocess
import sys

from discrete_continuous_embed_readout.fused import backend

ROOT = pathlib.Path(__file__).resolve().parents[1]


def test_the_gpu_script_runs_its_checks_and_table_on_the_cpu(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != 'DCER_FUSED_KERNELS'}
    env['PYTHONPATH'] = os.pathsep.join(p for p in (str(ROOT), os.environ.get('PYTHONPATH', '')) if p)
    interpreted = backend.triton_available()
    if interpreted:
        env['TRITON_INTERPRET'] = '1'
    out = tmp_path / 'gpu.json'
    done = subprocess.run([sys.executable, str(ROOT / 'benchmarks' / 'gpu.py'), '--cpu-smoke', '--json', str(out)],
                          capture_output=True, text=True, timeout=600, env=env)  # fmt: skip
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    results = json.loads(out.read_text())
    assert results['check_failures'] == [], results['check_failures']
    # the checks compared the chunked path (and, interpreted, the kernels) with float64
    assert '[chunked] per-token KL grad W' in done.stdout
    assert ('[kernels] loss + options grad W' in done.stdout) == interpreted
    # the fused objectives' checks, on both paths where the kernels run
    for path in ('chunked', 'kernels') if interpreted else ('chunked',):
        for name in ('policy grpo (k3, entropy, T 0.8, mask) grad W', 'policy gspo grad x', 'distill forward_kl (hard targets, T 1.5) grad W', 'distill jsd (beta 0.3) grad x'):
            assert f'[{path}] {name}' in done.stdout, (path, name)
    rows = {(r['vocab'], r['case']): r for r in results['rows']}
    objectives = {(67, case) for case in ('policy grpo+kl+ent', 'policy dapo', 'distill fwd_kl', 'distill jsd')}
    assert set(rows) == {(67, 'loss'), (67, 'token'), (67, 'kl')} | objectives
    for key in objectives:
        assert rows[key]['times']['liger'] in ('needs CUDA', '- (no entropy bonus in Liger)') or rows[key]['times']['liger'].startswith('not installed'), rows[key]
        assert isinstance(rows[key]['floor'], float) and rows[key]['floor'] > 0, rows[key]
    for row in rows.values():
        assert all(isinstance(row['times'][k], float) and row['times'][k] > 0 for k in ('chunked', 'plain')), row
        assert isinstance(row['times']['kernels'], float) == interpreted, row
        assert row['times']['compiled'] == 'not run (--skip compile)'
    assert '| V | case | kernels | chunked | plain | compiled | liger | cce | cce exact | floor |' in done.stdout
    # the RL-sized rows of benchmarks/hot_path.py, which the GPU run takes on CUDA under the sync check
    hot = results['hot_path']
    assert isinstance(hot, list), hot
    assert {(r['call'], r['batch']) for r in hot} == {(call, 1) for call in ('act', 'ppo', 'bc')} and len(hot) == 15, hot
    assert all(r['ours_us'] > 0 and r['hand_us'] > 0 for r in hot), hot
