"""The examples under ``examples/`` run with small settings (seconds each) and do what
they show: the models learn, the RL policies act inside their action spaces, the
runs are reproducible from their seed, and each ends with a ``RESULT {...}`` line that
``benchmarks/examples_table.py`` (the README's examples table) can read."""

import contextlib
import io
import math
import re

import numpy as np
import pytest
import torch
from gymnasium.utils.env_checker import check_env
from helpers import load_benchmark, load_example

from discrete_continuous_embed_readout import SpaceAdapter

table = load_benchmark('examples_table')


def run_example(name: str, flags: list[str]) -> tuple[dict, dict]:
    """``main(flags)`` of an example, and its RESULT line as the table script reads it."""
    output = io.StringIO()
    with contextlib.redirect_stdout(output):
        metrics = load_example(name).main(flags)
    result = table.parse_result(output.getvalue())
    assert result == metrics['result']  # the printed line holds what main returns
    return metrics, result


# the RESULT line and the table script


def test_result_line_is_the_last_one_and_is_checked():
    output = (
        'RESULT {"metric": "old", "before": 1, "after": 2, "digits": 0}\n'
        'step 3\n'
        'RESULT {"metric": "loss", "before": [2.5, 1], "after": [-0.25, 0.5], "digits": 2}\n'
    )
    result = table.parse_result(output)
    assert result['metric'] == 'loss'
    assert table.show(result['before'], 2) == '2.50 / 1.00' and table.show(result['after'], 2) == '−0.25 / 0.50'
    with pytest.raises(ValueError, match='no line starting with "RESULT "'):
        table.parse_result('loss 0.5\n')
    with pytest.raises(ValueError, match="lacks \\['digits'\\]"):
        table.parse_result('RESULT {"metric": "m", "before": 1, "after": 2}')
    with pytest.raises(ValueError, match='differ in shape'):
        table.parse_result('RESULT {"metric": "m", "before": [1, 2], "after": 2, "digits": 1}')


def test_the_readmes_table_is_what_the_script_writes_and_says_how_much_a_row_moves():
    readme = table.README.read_text()
    written = readme[readme.index(table.START) : readme.index(table.END) + len(table.END)]
    threads = int(re.search(r'`--threads (\d+)`', written)[1])
    assert written == table.block(*table.current_block(readme), threads)  # the text around the rows is the script's
    assert table.RUN_TO_RUN in written and 'last step before a release' in table.RUN_TO_RUN


def test_the_table_script_lists_every_example():
    scripts = {path.name for path in (table.ROOT / 'examples').glob('*.py')} - {'ppo_utils.py'}
    assert {example.file for example in table.EXAMPLES} == scripts


# quickstart.py: three tiny models through one table each


def test_quickstart_losses_fall_and_threads_are_restored():
    threads = torch.get_num_threads()
    metrics, result = run_example('quickstart', ['--steps', '30', '--threads', '1'])
    assert torch.get_num_threads() == threads  # the caller's setting, as it was
    assert list(metrics['losses']) == ['discrete', 'multi-discrete', 'mixed']
    for first, last in metrics['losses'].values():
        assert last < first - 0.1
    assert result['before'] == [first for first, _ in metrics['losses'].values()]


# cross_embodiment.py: two robots through their own selectors


def test_cross_embodiment_both_robots_learn():
    flags = ['--steps', '400', '--num-train', '2048', '--num-val', '512']
    metrics, result = run_example('cross_embodiment', flags)
    assert result['after'] == [100 * metrics['final'][robot]['accuracy'][group] for robot, group in
                               [('arm', 'gripper'), ('rover', 'scoop'), ('rover', 'drive')]]  # fmt: skip

    assert set(metrics['final']) == {'arm', 'rover'}
    for robot in ('arm', 'rover'):
        initial, final = metrics['initial'][robot], metrics['final'][robot]
        assert final['loss'] < initial['loss'] - 1.0, robot
        # every discrete group of each robot beats its untrained accuracy by a wide margin
        assert set(final['accuracy']) == set(initial['accuracy'])
        for group, accuracy in final['accuracy'].items():
            assert accuracy > initial['accuracy'][group] + 0.15, (robot, group)
        for dim, error in final['rmse'].items():
            assert error < 0.6 * initial['rmse'][dim], (robot, dim)

    # each robot is read out through its own selector: its own groups and dims only
    assert list(metrics['final']['arm']['accuracy']) == ['gripper']
    assert list(metrics['final']['rover']['accuracy']) == ['scoop', 'drive']
    assert list(metrics['final']['rover']['rmse']) == ['lift', 'wheel']


# gaussian_forecast.py: a gaussian readout forecasting a series


PNG_SIGNATURE = b'\x89PNG\r\n\x1a\n'


def test_gaussian_forecast_learns_and_plots(tmp_path):
    plot = tmp_path / 'forecast.png'
    flags = ['--steps', '150', '--num-train', '256', '--num-val', '64', '--seq-len', '48', '--hidden', '32', '--plot', str(plot)]
    metrics, result = run_example('gaussian_forecast', flags)
    assert (result['before'], result['after']) == (metrics['initial_nll'], metrics['final_nll'])

    # the untrained model predicts about the marginal gaussian; training must beat it and persistence
    assert math.isfinite(metrics['initial_nll']) and math.isfinite(metrics['final_nll'])
    assert metrics['final_nll'] < metrics['initial_nll'] - 0.5
    assert metrics['final_nll'] < metrics['persistence_nll']
    assert metrics['final_nll'] > metrics['noise_floor_nll']  # no forecaster from noisy values gets below this
    assert 0.8 < metrics['coverage'] <= 1.0

    assert plot.read_bytes()[:8] == PNG_SIGNATURE
    assert metrics['plot'] == str(plot)


def test_gaussian_forecast_is_deterministic(tmp_path):
    flags = ['--steps', '20', '--num-train', '64', '--num-val', '16', '--seq-len', '32', '--plot', str(tmp_path / 'a.png')]
    example = load_example('gaussian_forecast')
    first, second = example.main(flags), example.main(flags)
    for key in ('initial_nll', 'final_nll', 'coverage'):  # the fixed seed fixes data, init and batches
        assert first[key] == second[key]


# hybrid_actions.py: the GapJump env by hand, then a tiny PPO run


hybrid = load_example('hybrid_actions')


HYBRID_TINY = ['--total-steps', '2048', '--num-envs', '8', '--rollout-steps', '32', '--eval-episodes', '20', '--quiet']


@pytest.fixture(scope='module')
def hybrid_metrics():
    return run_example('hybrid_actions', HYBRID_TINY)[0]


def env_at_gap(gap: float):
    env = hybrid.GapJump(num_gaps=10)
    env.reset(seed=0)
    env.gap = gap
    return env


def speeds(move: int, speed: float) -> np.ndarray:
    out = (hybrid.SPEED_LOW + hybrid.SPEED_HIGH) / 2
    out[move] = speed
    return out.astype(np.float32)


@pytest.mark.filterwarnings('ignore:.*symmetric and normalized space')  # the per-move speed bounds are the point
def test_env_passes_gymnasium_checks():
    check_env(hybrid.GapJump(), skip_render_check=True)


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
        assert hybrid.GAP_RANGE[0] <= obs[0] <= hybrid.GAP_RANGE[1] and obs[1] == pytest.approx(0.9)


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
        assert info['landed'] and reward == pytest.approx(1 - hybrid.MOVE_COST[move])


def test_a_course_ends_after_num_gaps_jumps():
    env = hybrid.GapJump(num_gaps=3)
    env.reset(seed=1)
    dones = [env.step(env.optimal_action())[2] for _ in range(3)]
    assert dones == [False, False, True]


def test_the_adapter_reads_the_action_space_as_one_mixed_readout():
    adapter = SpaceAdapter(hybrid.GapJump().action_space)
    kwargs = dict(adapter.kwargs)
    bound = kwargs.pop('continuous_range')  # the box's bounds, bound as the readout's units
    assert kwargs == dict(num_discrete=3, num_continuous=3, continuous_squashed=True)
    low, high = adapter.rescale_range  # per-move bounds, per dim
    assert low.tolist() == hybrid.SPEED_LOW.tolist() and high.tolist() == hybrid.SPEED_HIGH.tolist()
    assert bound[0].tolist() == low.tolist() and bound[1].tolist() == high.tolist()


def test_joint_log_prob_skips_the_unused_speeds():
    log_probs = torch.tensor([[-1.0, -2.0, -float('inf'), -5.0], [-0.5, -float('inf'), -3.0, -4.0]])
    # hand-worked: the move's column plus the chosen move's speed; an unused -inf must not make a nan
    assert hybrid.joint_log_prob(log_probs, torch.tensor([0, 2])).tolist() == [-1.0 - 2.0, -0.5 - 4.0]


def test_hybrid_actions_tiny_run_learns_and_acts_inside_the_space(hybrid_metrics):
    metrics = hybrid_metrics
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
    assert (metrics['result']['before'], metrics['result']['after']) == (metrics['initial_return'], metrics['eval_return'])


# hybrid_actions_torchrl.py: the same task with TorchRL's ClipPPOLoss and a CompositeActionDistribution


def test_hybrid_actions_torchrl_tiny_run_learns_like_the_plain_example():
    pytest.importorskip('torchrl')
    metrics, result = run_example('hybrid_actions_torchrl', HYBRID_TINY)
    assert (result['before'], result['after']) == (metrics['initial_return'], metrics['eval_return'])
    assert metrics['actions_in_space']
    assert all(math.isfinite(value) for value in metrics.values() if isinstance(value, float))
    assert len(metrics['curve']) == 2048 // (8 * 32) and 'eval_return' in metrics['curve'][-1]
    assert metrics['random_return'] < 0.5 and metrics['initial_return'] < 0.5
    # as hybrid_actions.py's tiny run: several jumps per course already (about 2.5-3 over seeds 0-2)
    assert metrics['eval_return'] > metrics['random_return'] + 1.5
    assert metrics['eval_return'] <= metrics['optimal_return'] + 1e-9


def test_hybrid_actions_torchrl_scores_every_speed_with_torchrls_actor():
    pytest.importorskip('torchrl')
    flags = ['--total-steps', '512', '--num-envs', '8', '--rollout-steps', '32', '--eval-episodes', '5', '--quiet', '--score-every-speed']
    metrics, result = run_example('hybrid_actions_torchrl', flags)
    assert metrics['actions_in_space'] and math.isfinite(metrics['eval_return'])
    assert len(metrics['curve']) == 2 and 'every speed, ProbabilisticActor' in result['context']


# rl_cartpole.py: a short PPO run with the discrete readout as policy head


CARTPOLE_TINY = ['--quiet', '--seed', '0', '--total-steps', '8192', '--eval-episodes', '3', '--eval-every', '4']


def test_rl_cartpole_learns_in_a_short_run():
    metrics, result = run_example('rl_cartpole', CARTPOLE_TINY)
    assert (result['before'], result['after']) == (metrics['initial_eval_return'], metrics['eval_return'])

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


# rl_pendulum.py: a short PPO run with a tanh-squashed gaussian readout as policy head


# an episode is 200 steps, each costing at most pi^2 + 0.1 * 8^2 + 0.001 * 2^2
WORST_RETURN = -200 * (math.pi**2 + 0.1 * 64 + 0.001 * 4)


def test_rl_pendulum_runs_and_acts_within_bounds():
    flags = ['--quiet', '--seed', '0', '--total-steps', '4096', '--num-envs', '8', '--eval-episodes', '3', '--eval-every', '1']
    metrics, result = run_example('rl_pendulum', flags)
    assert (result['before'], result['after']) == (metrics['initial_eval_return'], metrics['eval_return'])

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


# train_char_lm.py: a tiny character language model, a few steps, a short sample


CHAR_LM_TINY = ['--dim', '32', '--depth', '1', '--heads', '2', '--context', '32', '--batch-size', '16', '--steps', '40', '--lr', '1e-2',
        '--eval-every', '20', '--prompt', 'The ', '--sample-length', '40', '--top-k', '5']  # fmt: skip


def test_train_char_lm_learns_and_samples():
    example = load_example('train_char_lm')
    metrics, result = run_example('train_char_lm', CHAR_LM_TINY)
    assert (result['before'], result['after']) == (metrics['initial_val_loss'], metrics['final_val_loss'])

    vocab = metrics['vocab']
    assert metrics['uniform_loss'] == math.log(len(vocab))
    # a table initialised near zero starts at about the uniform loss, and a few steps learn the character frequencies at least
    assert abs(metrics['initial_val_loss'] - metrics['uniform_loss']) < 0.2
    assert metrics['final_val_loss'] < metrics['initial_val_loss'] - 0.5
    assert [step for step, _ in metrics['history']] == [20, 40]
    assert metrics['history'][-1][1] == metrics['final_val_loss']

    sample = metrics['sample']
    assert len(sample) == 40 and set(sample) <= set(vocab)

    # the fixed seed makes the run reproducible, sample included
    again = example.main(CHAR_LM_TINY)
    assert again['final_val_loss'] == metrics['final_val_loss'] and again['sample'] == sample


# rl_lm.py: GRPO on the character LM with the fused policy loss and a KL to the reference


RL_LM_TINY = ['--pretrain-steps', '20', '--rounds', '4', '--prompts', '2', '--group', '4', '--length', '8', '--dim', '32', '--depth', '1', '--threads', '1']


def test_rl_lm_runs_grpo_with_the_fused_policy_loss_and_a_kl_to_the_reference():
    metrics, result = run_example('rl_lm', RL_LM_TINY)
    assert (result['before'], result['after']) == (metrics['reward_before'], metrics['reward_after'])
    assert 0.0 <= metrics['reward_before'] <= 1.0 and 0.0 <= metrics['reward_after'] <= 1.0
    assert metrics['kl'] >= 0.0 and metrics['kl'] < 1.0  # the policy moved, not far from the reference
    assert 0.0 < metrics['entropy'] <= math.log(71) + 1e-4  # at most the uniform entropy over the vocabulary
    assert metrics['largest_loss_difference'] < 1e-5  # the fused call and the per-token path it replaces agree
    assert metrics['update_ms'] > 0 and metrics['per_token_update_ms'] > 0


# distributional_regression.py: four heads on the same data


def test_distributional_regression_trains_every_head_and_the_binned_ones_resist_outliers():
    metrics, result = run_example('distributional_regression', ['--steps', '300', '--num-train', '4000', '--quiet'])
    results = {noise: metrics[noise] for noise in ('gaussian', 'student-t')}
    for noise, by_head in results.items():
        assert set(by_head) == {'mse', 'gaussian', 'two_hot', 'hl_gauss'}
        for head, r in by_head.items():
            assert r['mae'] < r['mae_before'] / 2.5, (noise, head)
    heavy = results['student-t']
    assert heavy['hl_gauss']['mae'] <= min(heavy['mse']['mae'], heavy['gaussian']['mae'])
    assert result['after'] == [round(r['mae'], 2) for r in heavy.values()]
