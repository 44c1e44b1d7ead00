"""Generic PPO plumbing shared by the RL examples (`rl_cartpole.py`, `rl_pendulum.py`, `hybrid_actions.py`).

Nothing here uses this library: an MLP with PPO's usual initialisation, vector envs, evaluation
episodes, return bookkeeping, GAE, the clipped-surrogate loss and optimiser step, the learning-rate
schedule, seeding, torch threads and a text sparkline. What is specific to this library — building
the readout, sampling, `log_prob`, `entropy`, `mode` — stays in each example, together with the
rollout and the part of the PPO update that uses it (the ratio and the entropy).

`examples/` is not a package: each example puts its own folder on `sys.path` before importing this
module, so the import works both for `python examples/<name>.py` and for loading the file by path.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

import gymnasium as gym
import numpy as np
import torch
from gymnasium.vector import AutoresetMode
from torch import nn


def seed_everything(seed: int) -> None:
    np.random.seed(seed)
    torch.manual_seed(seed)


@contextmanager
def torch_threads(threads: int) -> Iterator[None]:
    """Run the body with `threads` torch threads, then restore the previous count."""
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def mlp(inp: int, hidden: int, out: int, out_gain: float) -> nn.Sequential:
    """Two tanh layers, orthogonally initialised (a well-known PPO stabiliser)."""
    layers = [nn.Linear(inp, hidden), nn.Tanh(), nn.Linear(hidden, hidden), nn.Tanh(), nn.Linear(hidden, out)]
    for layer in layers:
        if isinstance(layer, nn.Linear):
            nn.init.orthogonal_(layer.weight, gain=out_gain if layer is layers[-1] else 2**0.5)
            nn.init.zeros_(layer.bias)
    return nn.Sequential(*layers)


def make_vector_env(make_env: Callable[[], gym.Env], num_envs: int, seed: int) -> gym.vector.SyncVectorEnv:
    """`num_envs` copies of `make_env()` stepped together, with SAME_STEP autoreset.

    SAME_STEP autoreset resets a finished env within the step that ends its episode, so every
    step is a real transition (no no-op reset steps to mask out of a rollout), and hands back the
    episode's final observation in `info['final_obs']`, which bootstrapping a truncated (time-limit)
    episode needs."""
    envs = gym.vector.SyncVectorEnv([make_env for _ in range(num_envs)], autoreset_mode=AutoresetMode.SAME_STEP)
    envs.action_space.seed(seed)
    return envs


def run_episodes(make_env: Callable[[], gym.Env], policy: Callable[[np.ndarray], list], episodes: int, seed: int) -> float:
    """Mean return of `episodes` episodes, run side by side, one env each (the i-th reset with `seed + i`).

    `policy(obs)` gets the stacked observations (a row per env, finished ones included) and returns
    one action per env."""
    envs = [make_env() for _ in range(episodes)]
    obs = np.stack([env.reset(seed=seed + i)[0] for i, env in enumerate(envs)])
    returns, running = np.zeros(episodes), np.ones(episodes, dtype=bool)
    while running.any():
        actions = policy(obs)
        for i in np.flatnonzero(running):
            obs[i], reward, terminated, truncated, _ = envs[i].step(actions[i])
            returns[i] += reward
            running[i] = not (terminated or truncated)
    for env in envs:
        env.close()
    return float(returns.mean())


def return_tracker(num_envs: int, **extra) -> dict:
    """Episode bookkeeping for `track_returns`: each env's running return and every finished
    episode's return; `extra` adds example-specific entries."""
    return {'running': np.zeros(num_envs), 'finished': [], **extra}


def track_returns(tracker: dict, reward: np.ndarray, done: np.ndarray) -> None:
    """Sum each env's rewards and log the total of every finished episode."""
    tracker['running'] += reward
    for i in np.flatnonzero(done):
        tracker['finished'].append(float(tracker['running'][i]))
        tracker['running'][i] = 0.0


def recent_return(tracker: dict, last: int) -> float:
    """Mean return of the `last` finished episodes (nan before the first one ends)."""
    return float(np.mean(tracker['finished'][-last:])) if tracker['finished'] else float('nan')


def gae(rollout: dict, gamma: float, lam: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Generalised advantage estimates and the value targets (returns).

    `rollout` holds `rewards`, `values` and `dones` of shape `(steps, num_envs)` and `last_value`,
    the value of the observation after the last step. A truncated episode's bootstrap value must
    already be in its last reward: nothing flows back across an episode boundary."""
    rewards, values, dones = rollout['rewards'], rollout['values'], rollout['dones'].float()
    advantages = torch.zeros_like(rewards)
    next_value, next_adv = rollout['last_value'], torch.zeros_like(rollout['last_value'])
    for t in reversed(range(len(rewards))):
        keep = 1.0 - dones[t]
        delta = rewards[t] + gamma * next_value * keep - values[t]
        next_adv = advantages[t] = delta + gamma * lam * keep * next_adv
        next_value = values[t]
    return advantages, advantages + values


def anneal_lr(optimizer: torch.optim.Optimizer, lr: float, iteration: int, iterations: int) -> None:
    """Decay the learning rate linearly from `lr` to 0 over the run (keeps the last policies from drifting)."""
    for group in optimizer.param_groups:
        group['lr'] = lr * (1 - iteration / iterations)


def sparkline(values: list[float], width: int = 60) -> str:
    """`values` as a line of at most `width` block characters (non-finite values are skipped)."""
    values = np.asarray(values, dtype=float)
    values = values[np.isfinite(values)]  # no return is known before the first episode ends
    if not len(values):
        return ''
    # one character per bucket of iterations, so long runs still fit on a line
    buckets = [chunk.mean() for chunk in np.array_split(values, min(width, len(values)))]
    lo, hi = min(buckets), max(buckets)
    bars = '▁▂▃▄▅▆▇█'
    return ''.join(bars[int((b - lo) / (hi - lo + 1e-12) * (len(bars) - 1))] for b in buckets)


def ppo_step(agent: nn.Module, optimizer: torch.optim.Optimizer, ratio, advantages, values, returns, entropy, args) -> None:
    """One PPO minibatch step: the clipped surrogate on normalised advantages, the value
    error and the entropy bonus, then an optimiser step on gradients clipped to norm 0.5."""
    adv = (advantages - advantages.mean()) / (advantages.std() + 1e-8)
    # the clipped surrogate: no incentive to move the ratio beyond 1 +- clip
    policy_loss = -torch.min(ratio * adv, ratio.clamp(1 - args.clip, 1 + args.clip) * adv).mean()
    value_loss = (values - returns).pow(2).mean()
    loss = policy_loss + args.value_coef * value_loss - args.entropy_coef * entropy
    optimizer.zero_grad()
    loss.backward()
    nn.utils.clip_grad_norm_(agent.parameters(), 0.5)
    optimizer.step()
