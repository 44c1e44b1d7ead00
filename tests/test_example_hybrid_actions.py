"""Smoke test of examples/hybrid_actions.py: the GapJump env by hand, then a tiny PPO run."""

import math

import numpy as np
import pytest
import torch
from conftest import load_example
from gymnasium.utils.env_checker import check_env

from discrete_continuous_embed_readout import SpaceAdapter

example = load_example('hybrid_actions')

TINY = ['--total-steps', '2048', '--num-envs', '8', '--rollout-steps', '32', '--eval-episodes', '20', '--quiet']


@pytest.fixture(scope='module')
def metrics():
    return example.main(TINY)


def env_at_gap(gap: float):
    env = example.GapJump(num_gaps=10)
    env.reset(seed=0)
    env.gap = gap
    return env


def speeds(move: int, speed: float) -> np.ndarray:
    out = (example.SPEED_LOW + example.SPEED_HIGH) / 2
    out[move] = speed
    return out.astype(np.float32)


@pytest.mark.filterwarnings('ignore:.*symmetric and normalized space')  # the per-move speed bounds are the point
def test_env_passes_gymnasium_checks():
    check_env(example.GapJump(), skip_render_check=True)


@pytest.mark.parametrize(
    'move, speed, landed, reward',
    [
        # hand-worked: run at 6 m/s, 8 degrees: 36 * sin(16 deg) / 9.81 = 1.0115 m, on the platform 1.0-1.5 m
        (0, 6.0, True, 1.0),
        # leap at 45 degrees: speed**2 / 9.81 = 1.2 m needs sqrt(11.772) = 3.431 m/s; pays 1 - 0.4
        (2, math.sqrt(1.2 * 9.81), True, 0.6),
        # hop at 2.5 m/s, 25 degrees: 6.25 * sin(50 deg) / 9.81 = 0.488 m, short of the gap
        (1, 2.5, False, 0.0),
        # leap at 6 m/s: 36 / 9.81 = 3.67 m, beyond the platform's far end
        (2, 6.0, False, 0.0),
    ],
)
def test_hand_computed_jumps(move, speed, landed, reward):
    env = env_at_gap(1.0)
    obs, got_reward, terminated, truncated, info = env.step({'move': np.int64(move), 'speed': speeds(move, speed)})
    assert info['landed'] == landed and got_reward == pytest.approx(reward)
    assert terminated == (not landed) and not truncated
    if landed:  # the next gap is drawn and one tenth of the course is done
        assert example.GAP_RANGE[0] <= obs[0] <= example.GAP_RANGE[1] and obs[1] == pytest.approx(0.9)


def test_only_the_chosen_moves_speed_counts():
    env = env_at_gap(1.0)
    action = {'move': np.int64(0), 'speed': np.array([6.0, 2.5, 3.0], np.float32)}  # hop and leap speeds would fall short
    _, reward, terminated, _, info = env.step(action)
    assert info['landed'] and reward == 1.0 and not terminated


def test_optimal_action_takes_the_cheapest_move_that_lands():
    for gap, move in [(0.3, 0), (0.9, 0), (1.2, 1), (1.9, 1), (2.1, 2), (2.75, 2)]:
        env = env_at_gap(gap)
        action = env.optimal_action()
        assert action['move'] == move and env.action_space.contains(action)
        _, reward, _, _, info = env.step(action)
        assert info['landed'] and reward == pytest.approx(1 - example.MOVE_COST[move])


def test_a_course_ends_after_num_gaps_jumps():
    env = example.GapJump(num_gaps=3)
    env.reset(seed=1)
    dones = [env.step(env.optimal_action())[2] for _ in range(3)]
    assert dones == [False, False, True]


def test_the_adapter_reads_the_action_space_as_one_mixed_readout():
    adapter = SpaceAdapter(example.GapJump().action_space)
    assert adapter.kwargs == dict(num_discrete=3, num_continuous=3, continuous_squashed=True)
    low, high = adapter.rescale_range  # per-move bounds, per dim
    assert low.tolist() == example.SPEED_LOW.tolist() and high.tolist() == example.SPEED_HIGH.tolist()


def test_joint_log_prob_skips_the_unused_speeds():
    log_probs = torch.tensor([[-1.0, -2.0, -float('inf'), -5.0], [-0.5, -float('inf'), -3.0, -4.0]])
    # hand-worked: the move's column plus the chosen move's speed; an unused -inf must not make a nan
    assert example.joint_log_prob(log_probs, torch.tensor([0, 2])).tolist() == [-1.0 - 2.0, -0.5 - 4.0]


def test_tiny_run_learns_and_acts_inside_the_space(metrics):
    assert metrics['actions_in_space']  # every batched env action the adapter produced
    scalars = {key: value for key, value in metrics.items() if isinstance(value, float)}
    assert all(math.isfinite(value) for value in scalars.values())
    assert len(metrics['curve']) == 2048 // (8 * 32) and 'eval_return' in metrics['curve'][-1]
    # the optimal policy crosses every course; the random and the untrained greedy ones hardly any gap
    assert metrics['optimal_success_rate'] == 1.0 and metrics['optimal_return'] > 7.5
    assert metrics['random_return'] < 0.5 and metrics['initial_return'] < 0.5
    # 8 PPO iterations already land several jumps per course (about 2.5-3.5 over seeds 0-3)
    assert metrics['eval_return'] > metrics['random_return'] + 1.5
    assert metrics['eval_return'] <= metrics['optimal_return'] + 1e-9
