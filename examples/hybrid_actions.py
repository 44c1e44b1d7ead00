"""PPO on a hybrid (discrete + continuous) action space with one mixed `Readout` as the policy head.

What it shows: `GapJump`, a small Platform-style task defined below, has the action space
`Dict(move=Discrete(3), speed=Box(low, high, (3,)))`: choose run, hop or leap and give a take-off
speed for each (per-move bounds; only the chosen move's speed is used). `SpaceAdapter` reads that
space as one readout (`num_discrete=3, num_continuous=3`, a tanh-squashed gaussian rescaled to the
per-dim bounds), and the same readout does everything PPO needs on top of a small MLP:
`readout.sample(..., return_log_prob=True)` acts (both parts in one call), `adapter.to_space` turns
the batched tensors into the dict the vector env takes, `readout.log_prob(..., concat=True)` and
`readout.entropy(..., concat=True)` give the ratio and the entropy bonus (from two of their four
columns: the move and the chosen move's speed, the only parts that reach the env), and
`readout.mode` the deterministic action for evaluation.

The task: every step shows the width of the next gap (0.25 to 2.75 m); a platform 0.5 m long lies
beyond it. Each move takes off at its own angle, so it jumps `speed**2 * sin(2 * angle) / g` metres
and needs a different speed for the same gap; run is free, hop costs 0.2 and leap 0.4. Landing on
the platform pays `1 - cost`, landing short or long ends the episode; 10 gaps make a course. Both
parts matter: the cheapest move that can reach the platform (run up to about 1 m, hop up to about
2 m, leap beyond) and the speed that lands on it. The best possible return averages about 8.

    python examples/hybrid_actions.py                       # defaults: 100k steps, seed 0
    python examples/hybrid_actions.py --total-steps 30000 --seed 1

It prints a table of the optimal policy (computed from the task's physics), a uniformly random
policy and the untrained greedy policy (`readout.mode`) over 100 evaluation courses: mean return,
share of courses finished without a fall, share of jumps that used the cheapest move able to cross.
Then a line per evaluation during training (environment steps, mean return of recent training
episodes, greedy return over 20 other courses), a sparkline of the training returns, the table again
with the trained greedy policy, what it does at six gap widths, and its fraction of the optimal
return. The default run takes about 20-40 s on 2 CPU cores (it reaches about 99% of the optimal
return and finishes every course). The last line, `RESULT {...}`, is the greedy return before and
after training with the references as JSON, for `benchmarks/examples_table.py`.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

import gymnasium as gym
import numpy as np
import torch
from gymnasium import spaces
from torch import nn
from tqdm import tqdm

from discrete_continuous_embed_readout import SpaceAdapter

# examples/ is not a package: put it on the path so that the shared PPO plumbing imports both when this
# file runs as a script and when it is loaded by file path (as the tests do)
if str(Path(__file__).resolve().parent) not in sys.path:
    sys.path.insert(0, str(Path(__file__).resolve().parent))
from ppo_utils import (  # noqa: E402
    anneal_lr,
    gae,
    make_vector_env,
    mlp,
    ppo_step,
    recent_return,
    return_tracker,
    seed_everything,
    sparkline,
    torch_threads,
    track_returns,
)

MOVES = ('run', 'hop', 'leap')
ANGLE_DEGREES = np.array([8.0, 25.0, 45.0])  # take-off angle of each move
MOVE_COST = np.array([0.0, 0.2, 0.4])
SPEED_LOW = np.array([0.0, 2.5, 3.0], dtype=np.float32)  # m/s, per move
SPEED_HIGH = np.array([6.0, 5.0, 6.0], dtype=np.float32)
GRAVITY = 9.81
GAP_RANGE = (0.25, 2.75)
PLATFORM = 0.5  # length of the platform beyond each gap


def reach_per_speed_squared(move: int) -> float:
    """Ballistic range over flat ground: speed**2 * sin(2 * angle) / g."""
    return math.sin(2 * math.radians(ANGLE_DEGREES[move])) / GRAVITY


def jump_distance(move: int, speed: float) -> float:
    return speed**2 * reach_per_speed_squared(move)


def optimal_action(gap: float) -> dict:
    """The cheapest move that can land on the platform, at the speed that lands mid-platform
    (or as near as the move's speed bounds allow)."""
    for move in range(len(MOVES)):
        k = reach_per_speed_squared(move)
        shortest, farthest = SPEED_LOW[move] ** 2 * k, SPEED_HIGH[move] ** 2 * k
        if shortest <= gap + PLATFORM and farthest >= gap:
            speed = (SPEED_LOW + SPEED_HIGH) / 2  # the other moves' speeds are ignored
            speed[move] = math.sqrt(np.clip(gap + PLATFORM / 2, shortest, farthest) / k)
            return {'move': np.int64(move), 'speed': speed.astype(np.float32)}
    raise AssertionError(f'no move reaches a gap of {gap} m; GAP_RANGE and the speed bounds disagree')


class GapJump(gym.Env):
    """Cross `num_gaps` gaps with parameterised jumps (see the module docstring).

    Observation: `[gap width, fraction of the course left]`. An episode ends at the first fall or
    after the last gap.
    """

    metadata = {'render_modes': []}

    def __init__(self, num_gaps: int = 10):
        self.num_gaps = num_gaps
        self.observation_space = spaces.Box(np.zeros(2, np.float32), np.array([GAP_RANGE[1], 1.0], np.float32))
        self.action_space = spaces.Dict(move=spaces.Discrete(len(MOVES)), speed=spaces.Box(SPEED_LOW, SPEED_HIGH))

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)
        self.left = self.num_gaps
        self.gap = self._draw_gap()
        return self._obs(), {}

    def step(self, action: dict):
        move = int(action['move'])
        distance = jump_distance(move, float(action['speed'][move]))
        landed = self.gap <= distance <= self.gap + PLATFORM
        reward = 1.0 - MOVE_COST[move] if landed else 0.0
        self.left -= 1
        terminated = not landed or self.left == 0
        if not terminated:
            self.gap = self._draw_gap()
        return self._obs(), float(reward), terminated, False, {'landed': landed, 'distance': distance}

    def optimal_action(self) -> dict:
        return optimal_action(self.gap)

    def _draw_gap(self) -> float:
        return float(self.np_random.uniform(*GAP_RANGE))

    def _obs(self) -> np.ndarray:
        return np.array([self.gap, self.left / self.num_gaps], dtype=np.float32)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--seed', type=int, default=0)
    parser.add_argument('--total-steps', type=int, default=100_000, help='environment steps of training')
    parser.add_argument('--num-envs', type=int, default=16)
    parser.add_argument('--rollout-steps', type=int, default=64, help='steps per env between updates')
    parser.add_argument('--epochs', type=int, default=8, help='passes over each rollout')
    parser.add_argument('--minibatches', type=int, default=4)
    parser.add_argument('--lr', type=float, default=3e-3, help='annealed linearly to 0')
    parser.add_argument('--gamma', type=float, default=0.95)
    parser.add_argument('--gae-lambda', type=float, default=0.95)
    parser.add_argument('--clip', type=float, default=0.2)
    parser.add_argument('--entropy-coef', type=float, default=0.01)
    parser.add_argument('--value-coef', type=float, default=0.5)
    parser.add_argument('--hidden', type=int, default=64)
    parser.add_argument('--num-gaps', type=int, default=10, help='gaps per course (episode length)')
    parser.add_argument('--eval-every', type=int, default=10, help='iterations between evaluations')
    parser.add_argument('--eval-episodes', type=int, default=100, help='courses in the first and final evaluations')
    parser.add_argument('--threads', type=int, default=1, help='torch threads (1 is fastest for such small nets)')
    parser.add_argument('--quiet', action='store_true', help='no progress bar and no printing but the final RESULT line')
    return parser.parse_args(argv)


class Agent(nn.Module):
    """Actor: MLP torso -> hidden state -> one mixed readout (move logits + speed distributions).
    Critic: a separate MLP. Observations are scaled to [-1, 1] by the observation space's bounds."""

    def __init__(self, obs_space: spaces.Box, adapter: SpaceAdapter, hidden: int):
        super().__init__()
        self.adapter = adapter
        self.register_buffer('obs_low', torch.as_tensor(obs_space.low))
        self.register_buffer('obs_high', torch.as_tensor(obs_space.high))
        self.torso = nn.Sequential(mlp(obs_space.shape[0], hidden, hidden, out_gain=2**0.5), nn.Tanh())
        _, self.readout = adapter.embed_and_readout(hidden)  # the embed half is not needed here
        self.critic = mlp(obs_space.shape[0], hidden, 1, out_gain=1.0)

    def scale(self, obs: torch.Tensor) -> torch.Tensor:
        return 2 * (obs - self.obs_low) / (self.obs_high - self.obs_low) - 1

    def dist(self, obs: torch.Tensor):
        return self.readout(self.torso(self.scale(obs)))  # DiscreteContinuous(logits (b, 3), params (b, 3, 2))

    def value(self, obs: torch.Tensor) -> torch.Tensor:
        return self.critic(self.scale(obs)).squeeze(-1)

    def act(self, obs: torch.Tensor):
        """A sampled action (tensors, speeds already in the box) and its per-part log-probs."""
        return self.readout.sample(self.dist(obs), rescale_range=self.adapter.rescale_range, return_log_prob=True)

    def greedy(self, obs: torch.Tensor):
        return self.readout.mode(self.dist(obs), rescale_range=self.adapter.rescale_range)


def used_parts(move: torch.Tensor) -> torch.Tensor:
    """Which columns of a `concat=True` log-prob / entropy `[move, speed_run, speed_hop, speed_leap]`
    the reward depends on: the move and the chosen move's speed. The other two speeds never reach
    the env, so their log-probs would only add noise to the policy gradient."""
    return torch.cat([torch.ones_like(move)[:, None], nn.functional.one_hot(move, len(MOVES))], dim=-1).bool()


def joint_log_prob(log_probs: torch.Tensor, move: torch.Tensor) -> torch.Tensor:
    # where, not a product: an unused speed far out in the tail may score -inf, and -inf * 0 is nan
    return torch.where(used_parts(move), log_probs, 0.0).sum(-1)


def run_courses(policy, episodes: int, num_gaps: int, seed: int) -> dict:
    """Mean return, success rate (courses finished without a fall) and how often the move was the
    cheapest one that can cross, over `episodes` courses run side by side.

    `policy(obs, envs)` gets the stacked observations (a row per env, finished ones included) and
    the envs, and returns one action per env."""
    envs = [GapJump(num_gaps) for _ in range(episodes)]
    obs = np.stack([env.reset(seed=seed + i)[0] for i, env in enumerate(envs)])
    returns, running, finished = np.zeros(episodes), np.ones(episodes, dtype=bool), np.zeros(episodes, dtype=bool)
    best_move = []
    while running.any():
        actions = policy(obs, envs)
        for i in np.flatnonzero(running):
            best_move.append(int(actions[i]['move']) == int(envs[i].optimal_action()['move']))
            obs[i], reward, terminated, _, info = envs[i].step(actions[i])
            returns[i] += reward
            running[i] = not terminated
            finished[i] = terminated and info['landed']
    return {'return': float(returns.mean()), 'success_rate': float(finished.mean()), 'best_move_rate': float(np.mean(best_move))}


def agent_policy(agent: Agent):
    @torch.no_grad()
    def policy(obs: np.ndarray, envs) -> list[dict]:
        batch = agent.adapter.to_space(agent.greedy(torch.as_tensor(obs)))  # {'move': (n,), 'speed': (n, 3)}
        return [{key: value[i] for key, value in batch.items()} for i in range(len(obs))]

    return policy


def random_policy(seed: int):
    space = GapJump().action_space
    space.seed(seed)
    return lambda obs, envs: [space.sample() for _ in envs]


def optimal_policy(obs: np.ndarray, envs) -> list[dict]:
    return [env.optimal_action() for env in envs]


@torch.no_grad()
def collect(agent: Agent, envs, obs: np.ndarray, steps: int, tracker: dict) -> tuple[dict, np.ndarray]:
    """Run the sampling policy for `steps` steps in every env and record what PPO needs."""
    keys = ('obs', 'move', 'speed', 'log_probs', 'values', 'rewards', 'dones')
    buf = {key: [] for key in keys}
    for _ in range(steps):
        obs_t = torch.as_tensor(obs)
        action, log_prob = agent.act(obs_t)
        env_action = agent.adapter.to_space(action)  # a batch of dicts as one dict of arrays
        tracker['in_space'] &= envs.action_space.contains(env_action)
        next_obs, reward, terminated, truncated, _ = envs.step(env_action)
        done = terminated | truncated
        track_returns(tracker, reward, done)
        log_probs = agent.readout.maybe_concat(log_prob, True)  # (n, 1 + 3)
        row = (obs_t, action.discrete, action.continuous, log_probs, agent.value(obs_t), reward.astype(np.float32), done)
        for key, value in zip(keys, row):
            buf[key].append(torch.as_tensor(value))
        obs = next_obs
    rollout = {key: torch.stack(values) for key, values in buf.items()}  # (steps, num_envs, ...)
    rollout['last_value'] = agent.value(torch.as_tensor(obs))
    return rollout, obs


def ppo_update(agent: Agent, optimizer, rollout: dict, advantages, returns, args) -> None:
    flat = {key: rollout[key].flatten(0, 1) for key in ('obs', 'move', 'speed', 'log_probs')}
    advantages, returns = advantages.flatten(), returns.flatten()
    rescale = agent.adapter.rescale_range
    for _ in range(args.epochs):
        for idx in torch.randperm(len(advantages)).chunk(args.minibatches):
            move = flat['move'][idx]
            dist = agent.dist(flat['obs'][idx])
            new_log_probs = agent.readout.log_prob(dist, (move, flat['speed'][idx]), rescale_range=rescale, concat=True)
            ratio = (joint_log_prob(new_log_probs, move) - joint_log_prob(flat['log_probs'][idx], move)).exp()
            # the bonus covers the same parts as the ratio: an unused speed's spread has no cost, so
            # rewarding it would widen it for ever (the pre-tanh gaussian's entropy is unbounded)
            entropy = torch.where(used_parts(move), agent.readout.entropy(dist, concat=True), 0.0).sum(-1).mean()
            ppo_step(agent, optimizer, ratio, advantages[idx], agent.value(flat['obs'][idx]), returns[idx], entropy, args)


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    with torch_threads(args.threads):
        return run(args)


def run(args: argparse.Namespace) -> dict:
    start = time.perf_counter()
    seed_everything(args.seed)
    say = (lambda *a: None) if args.quiet else tqdm.write
    envs = make_vector_env(lambda: GapJump(args.num_gaps), args.num_envs, args.seed)
    obs, _ = envs.reset(seed=args.seed)
    adapter = SpaceAdapter(envs.single_action_space)
    agent = Agent(envs.single_observation_space, adapter, args.hidden)
    optimizer = torch.optim.Adam(agent.parameters(), lr=args.lr, eps=1e-5)
    eval_seed = args.seed + 10_000  # evaluation courses never share gaps with training

    def evaluate(policy, episodes: int = args.eval_episodes, seed: int = eval_seed) -> dict:
        return run_courses(policy, episodes, args.num_gaps, seed)

    optimal = evaluate(optimal_policy)
    uniform = evaluate(random_policy(args.seed))
    initial = evaluate(agent_policy(agent))
    say(f'GapJump, {args.num_gaps} gaps a course, {args.eval_episodes} evaluation courses (greedy = readout.mode):')
    say(report({'optimal': optimal, 'random': uniform, 'untrained greedy': initial}))
    say(f'{"steps":>8} {"train return":>13} {"eval return":>12}')

    batch = args.num_envs * args.rollout_steps
    iterations = max(1, args.total_steps // batch)
    tracker = return_tracker(args.num_envs, in_space=True)
    curve = []
    bar = tqdm(range(iterations), desc='PPO GapJump', unit='it', disable=args.quiet)
    for it in bar:
        anneal_lr(optimizer, args.lr, it, iterations)
        rollout, obs = collect(agent, envs, obs, args.rollout_steps, tracker)
        advantages, returns = gae(rollout, args.gamma, args.gae_lambda)  # courses end for real (a fall or the last gap)
        ppo_update(agent, optimizer, rollout, advantages, returns, args)

        recent = recent_return(tracker, 50)
        point = {'steps': (it + 1) * batch, 'train_return': recent}
        if (it + 1) % args.eval_every == 0 or it == iterations - 1:
            point['eval_return'] = evaluate(agent_policy(agent), 20, eval_seed + 1_000)['return']
            say(f'{point["steps"]:8d} {recent:13.2f} {point["eval_return"]:12.2f}')
        curve.append(point)
        bar.set_postfix(ret=f'{recent:.2f}')
    bar.close()
    envs.close()

    final = evaluate(agent_policy(agent))
    seconds = time.perf_counter() - start
    say(f'training return per iteration: {sparkline([p["train_return"] for p in curve])}')
    say(report({'optimal': optimal, 'random': uniform, 'untrained greedy': initial, 'trained greedy': final}))
    say('\n'.join(describe_jumps(agent)))
    say(
        f'trained greedy return {final["return"]:.2f} = {final["return"] / optimal["return"]:.0%} of optimal, '
        f'courses finished {final["success_rate"]:.0%}; {seconds:.1f} s'
    )
    result = dict(
        metric=f'greedy return, {args.eval_episodes} courses',
        before=initial['return'],
        after=final['return'],
        digits=2,
        context=(f'{final["return"] / optimal["return"]:.0%} of the optimum {optimal["return"]:.2f}, random policy '
                 f'{uniform["return"]:.2f}; {final["success_rate"]:.0%} of courses finished'),
    )  # fmt: skip
    print('RESULT ' + json.dumps(result))
    metrics = {
        'result': result,
        'eval_return': final['return'],
        'success_rate': final['success_rate'],
        'best_move_rate': final['best_move_rate'],
    }
    for name, scores in (('initial', initial), ('random', uniform), ('optimal', optimal)):
        metrics.update({f'{name}_{key}': value for key, value in scores.items()})
    metrics.update(curve=curve, seconds=seconds, episodes=len(tracker['finished']), actions_in_space=bool(tracker['in_space']))
    return metrics


@torch.no_grad()
def describe_jumps(agent: Agent, gaps: tuple[float, ...] = (0.5, 0.9, 1.3, 1.7, 2.1, 2.5)) -> list[str]:
    """What the greedy policy does at a few gap widths (at the start of a course), next to the best move."""
    action = agent.adapter.to_space(agent.greedy(torch.tensor([[gap, 1.0] for gap in gaps])))
    lines = []
    for gap, move, speeds in zip(gaps, action['move'], action['speed']):
        landing = jump_distance(move, float(speeds[move]))
        verdict = 'lands' if gap <= landing <= gap + PLATFORM else 'falls'
        best = MOVES[optimal_action(gap)['move']]
        lines.append(
            f'gap {gap:.1f} m: {MOVES[move]:<4} at {speeds[move]:.2f} m/s -> {landing:.2f} m, {verdict} '
            f'(platform {gap:.1f}-{gap + PLATFORM:.1f} m; cheapest move that can: {best})'
        )
    return lines


def report(results: dict[str, dict]) -> str:
    lines = [f'{"policy":<17} {"return":>7} {"finished":>9} {"best move":>10}']
    for name, r in results.items():
        lines.append(f'{name:<17} {r["return"]:7.2f} {r["success_rate"]:9.0%} {r["best_move_rate"]:10.0%}')
    return '\n'.join(lines)


if __name__ == '__main__':
    main()
