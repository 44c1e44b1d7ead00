"""Smoke test of examples/rl_cartpole.py: a short PPO run with the discrete readout as policy head."""

import math

from conftest import load_example

TINY = ['--quiet', '--seed', '0', '--total-steps', '8192', '--eval-episodes', '3', '--eval-every', '4']


def test_rl_cartpole_learns_in_a_short_run():
    metrics = load_example('rl_cartpole').main(TINY)

    assert set(metrics) >= {'eval_return', 'initial_eval_return', 'curve', 'seconds'}
    # CartPole pays 1 per step and stops at 500 steps
    for key in ('eval_return', 'initial_eval_return'):
        assert math.isfinite(metrics[key]) and 1 <= metrics[key] <= 500
    curve = metrics['curve']
    assert len(curve) == 8 and [p['steps'] for p in curve] == [1024 * (i + 1) for i in range(8)]
    assert sum('eval_return' in p for p in curve) == 2  # every 4 iterations
    # a random policy keeps the pole up for ~20 steps; 8k steps of PPO at least doubles that
    first, last = curve[0]['train_return'], curve[-1]['train_return']
    assert math.isfinite(first) and first < 40
    assert last > 2 * first, (first, last)


def test_rl_cartpole_is_reproducible():
    flags = ['--quiet', '--total-steps', '1024', '--eval-episodes', '2', '--seed', '3']
    example = load_example('rl_cartpole')
    first, second = example.main(flags), example.main(flags)
    assert first['eval_return'] == second['eval_return']
    assert first['curve'] == second['curve']
