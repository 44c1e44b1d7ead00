"""PPO on CartPole-v1 with a discrete `Readout` as the policy head.

What it shows: the readout of `EmbedAndReadout(dim, num_discrete=2)` is everything the policy
needs on top of a small MLP torso: `readout(hidden)` gives the action logits, `readout.sample(...,
return_log_prob=True)` acts and records the log-prob, `readout.log_prob` and `readout.entropy`
give PPO's ratio and entropy bonus, and `readout.mode` the greedy action for evaluation.

    python examples/rl_cartpole.py                      # defaults: 80k steps, seed 0
    python examples/rl_cartpole.py --total-steps 40000 --seed 1

It prints a line per evaluation (environment steps, mean return of recent training episodes,
mean deterministic evaluation return), a sparkline of the training returns and the final
20-episode deterministic evaluation return (the task counts as solved at >= 195; the maximum is
500). The untrained greedy policy is not always poor: with seed 0 it happens to balance the pole
for ~390 steps (a fixed, nearly linear controller can), while the same policy sampling its actions
lasts ~20 steps, where the training curve starts. The default run takes about 15-25 s on 2 CPU
cores. The last line, `RESULT {...}`, is the greedy return before and after training as JSON, for
`benchmarks/examples_table.py`.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import gymnasium as gym
import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from discrete_continuous_embed_readout import EmbedAndReadout

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
    run_episodes,
    seed_everything,
    sparkline,
    torch_threads,
    track_returns,
)

ENV_ID = 'CartPole-v1'
SOLVED_AT = 195.0


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--seed', type=int, default=0)
    parser.add_argument('--total-steps', type=int, default=80_000, help='environment steps of training')
    parser.add_argument('--num-envs', type=int, default=8)
    parser.add_argument('--rollout-steps', type=int, default=128, help='steps per env between updates')
    parser.add_argument('--epochs', type=int, default=10, help='passes over each rollout')
    parser.add_argument('--minibatches', type=int, default=4)
    parser.add_argument('--lr', type=float, default=1e-3, help='annealed linearly to 0')
    parser.add_argument('--gamma', type=float, default=0.99)
    parser.add_argument('--gae-lambda', type=float, default=0.95)
    parser.add_argument('--clip', type=float, default=0.2)
    parser.add_argument('--entropy-coef', type=float, default=0.01)
    parser.add_argument('--value-coef', type=float, default=0.5)
    parser.add_argument('--hidden', type=int, default=64)
    parser.add_argument('--eval-every', type=int, default=10, help='iterations between evaluations')
    parser.add_argument('--eval-episodes', type=int, default=20, help='episodes of the final evaluation')
    parser.add_argument('--threads', type=int, default=1, help='torch threads (1 is fastest for such small nets)')
    parser.add_argument('--quiet', action='store_true', help='no progress bar and no printing but the final RESULT line')
    return parser.parse_args(argv)


class Agent(nn.Module):
    """Actor: MLP torso -> hidden state -> discrete readout. Critic: a separate MLP."""

    def __init__(self, obs_dim: int, num_actions: int, hidden: int):
        super().__init__()
        self.torso = nn.Sequential(mlp(obs_dim, hidden, hidden, out_gain=2**0.5), nn.Tanh())
        _, self.readout = EmbedAndReadout(hidden, num_discrete=num_actions)  # the embed half is not needed here
        self.critic = mlp(obs_dim, hidden, 1, out_gain=1.0)

    def dist(self, obs: torch.Tensor) -> torch.Tensor:
        return self.readout(self.torso(obs))  # logits (batch, num_actions)

    def value(self, obs: torch.Tensor) -> torch.Tensor:
        return self.critic(obs).squeeze(-1)


def make_env() -> gym.Env:
    return gym.make(ENV_ID)


@torch.no_grad()
def evaluate(agent: Agent, episodes: int, seed: int) -> float:
    """Mean return of `episodes` greedy episodes: the readout's mode, the most likely action."""

    def greedy(obs: np.ndarray) -> list[int]:
        return agent.readout.mode(agent.dist(torch.as_tensor(obs, dtype=torch.float32))).tolist()

    return run_episodes(make_env, greedy, episodes, seed)


@torch.no_grad()
def collect(agent: Agent, envs, obs: np.ndarray, steps: int, gamma: float, tracker: dict) -> tuple[dict, np.ndarray]:
    """Run the sampling policy for `steps` steps in every env and record what PPO needs."""
    keys = ('obs', 'actions', 'log_probs', 'values', 'rewards', 'dones')
    buf = {key: [] for key in keys}
    for _ in range(steps):
        obs_t = torch.as_tensor(obs, dtype=torch.float32)
        action, log_prob = agent.readout.sample(agent.dist(obs_t), return_log_prob=True)
        next_obs, reward, terminated, truncated, info = envs.step(action.numpy())
        track_returns(tracker, reward, terminated | truncated)
        reward = reward.astype(np.float32)
        # a time-limit cut is not a failure: credit the value of the state the episode was cut at
        cut = truncated & ~terminated
        if cut.any():
            final_obs = torch.as_tensor(np.stack(info['final_obs'][cut]), dtype=torch.float32)
            reward[cut] += gamma * agent.value(final_obs).numpy()
        for key, value in zip(keys, (obs_t, action, log_prob, agent.value(obs_t), reward, terminated | truncated)):
            buf[key].append(torch.as_tensor(value))
        obs = next_obs
    rollout = {key: torch.stack(values) for key, values in buf.items()}  # (steps, num_envs, ...)
    rollout['last_value'] = agent.value(torch.as_tensor(obs, dtype=torch.float32))
    return rollout, obs


def ppo_update(agent: Agent, optimizer, rollout: dict, advantages, returns, args) -> None:
    flat = {key: rollout[key].flatten(0, 1) for key in ('obs', 'actions', 'log_probs')}
    advantages, returns = advantages.flatten(), returns.flatten()
    size = len(advantages)
    for _ in range(args.epochs):
        for idx in torch.randperm(size).chunk(args.minibatches):
            dist = agent.dist(flat['obs'][idx])
            ratio = (agent.readout.log_prob(dist, flat['actions'][idx]) - flat['log_probs'][idx]).exp()
            entropy = agent.readout.entropy(dist).mean()
            ppo_step(agent, optimizer, ratio, advantages[idx], agent.value(flat['obs'][idx]), returns[idx], entropy, args)


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    with torch_threads(args.threads):
        return run(args)


def run(args: argparse.Namespace) -> dict:
    start = time.perf_counter()
    seed_everything(args.seed)
    say = (lambda *a: None) if args.quiet else tqdm.write
    envs = make_vector_env(make_env, args.num_envs, args.seed)
    obs, _ = envs.reset(seed=args.seed)
    agent = Agent(envs.single_observation_space.shape[0], int(envs.single_action_space.n), args.hidden)
    optimizer = torch.optim.Adam(agent.parameters(), lr=args.lr, eps=1e-5)
    eval_seed = args.seed + 10_000  # evaluation episodes never share starts with training

    initial = evaluate(agent, args.eval_episodes, eval_seed)
    say(f'{ENV_ID}: greedy return of the untrained policy {initial:.1f}')
    say(f'{"steps":>8} {"train return":>13} {"eval return":>12}')

    batch = args.num_envs * args.rollout_steps
    iterations = max(1, args.total_steps // batch)
    tracker = return_tracker(args.num_envs)
    curve = []
    bar = tqdm(range(iterations), desc='PPO CartPole', unit='it', disable=args.quiet)
    for it in bar:
        anneal_lr(optimizer, args.lr, it, iterations)
        rollout, obs = collect(agent, envs, obs, args.rollout_steps, args.gamma, tracker)
        advantages, returns = gae(rollout, args.gamma, args.gae_lambda)
        ppo_update(agent, optimizer, rollout, advantages, returns, args)

        recent = recent_return(tracker, 20)
        point = {'steps': (it + 1) * batch, 'train_return': recent}
        if (it + 1) % args.eval_every == 0 or it == iterations - 1:
            point['eval_return'] = evaluate(agent, 5, eval_seed + 1_000)
            say(f'{point["steps"]:8d} {recent:13.1f} {point["eval_return"]:12.1f}')
        curve.append(point)
        bar.set_postfix(ret=f'{recent:.1f}')
    bar.close()
    envs.close()

    final = evaluate(agent, args.eval_episodes, eval_seed)
    seconds = time.perf_counter() - start
    say(f'training return per iteration: {sparkline([p["train_return"] for p in curve])}')
    say(
        f'final greedy return over {args.eval_episodes} episodes: {final:.1f} '
        f'({"solved" if final >= SOLVED_AT else "not solved"}, threshold {SOLVED_AT:.0f}); {seconds:.1f} s'
    )
    sampled = curve[0]['train_return']  # the untrained policy's first rollout, its actions sampled
    result = dict(
        metric=f'greedy return, {args.eval_episodes} episodes (max 500)',
        before=initial,
        after=final,
        digits=1,
        context=f'solved at {SOLVED_AT:.0f}',
        note=(f"the baseline is not a training result: the untrained greedy policy (the readout's mode) already keeps "
              f'the pole up for {initial:.1f} steps on average, as a fixed, nearly linear controller can; the same '
              f'policy sampling its actions lasts {sampled:.1f} steps, where training starts'),
    )  # fmt: skip
    print('RESULT ' + json.dumps(result))
    return {
        'result': result,
        'eval_return': final,
        'initial_eval_return': initial,
        'curve': curve,
        'seconds': seconds,
        'episodes': len(tracker['finished']),
    }


if __name__ == '__main__':
    main()
