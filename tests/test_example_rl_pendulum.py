"""Smoke test of examples/rl_pendulum.py: a short PPO run with a tanh-squashed gaussian readout as policy head."""

import math

from conftest import load_example

# an episode is 200 steps, each costing at most pi^2 + 0.1 * 8^2 + 0.001 * 2^2
WORST_RETURN = -200 * (math.pi**2 + 0.1 * 64 + 0.001 * 4)


def test_rl_pendulum_runs_and_acts_within_bounds():
    flags = ['--quiet', '--seed', '0', '--total-steps', '4096', '--num-envs', '8', '--eval-episodes', '3', '--eval-every', '1']
    metrics = load_example('rl_pendulum').main(flags)

    assert set(metrics) >= {'eval_return', 'initial_eval_return', 'curve', 'seconds'}
    for key in ('eval_return', 'initial_eval_return'):
        assert math.isfinite(metrics[key]) and WORST_RETURN <= metrics[key] <= 0
    curve = metrics['curve']
    assert [p['steps'] for p in curve] == [2048, 4096]
    assert all(WORST_RETURN <= p['eval_return'] <= 0 for p in curve)
    assert all(WORST_RETURN <= p['train_return'] <= 0 for p in curve)  # 256 steps per env: an episode ends in each rollout
    # sampled torques were rescaled from the squashed (-1, 1) onto the env's [-2, 2] and spread over most of it
    assert -2 <= metrics['action_min'] < -1 and 1 < metrics['action_max'] <= 2


def test_rl_pendulum_is_reproducible():
    flags = ['--quiet', '--total-steps', '1024', '--num-envs', '4', '--eval-episodes', '2', '--seed', '5']
    example = load_example('rl_pendulum')
    first, second = example.main(flags), example.main(flags)
    assert first['eval_return'] == second['eval_return']
    assert first['curve'] == second['curve']
