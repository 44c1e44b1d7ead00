"""The hybrid GapJump task of `hybrid_actions.py` trained with TorchRL's `ClipPPOLoss`, the policy's action
distribution being one `CompositeActionDistribution`.

What it shows: the mixed readout plugs into TorchRL with no glue beyond a `TensorDictModule` that runs the
network and the readout (`observation` -> `logits`, `params`). A probabilistic module with
`distribution_class=CompositeActionDistribution` and `distribution_kwargs={'readout': readout, ...}` samples
the action into `('action', 'move')` and `('action', 'speed')` and writes each part's log-prob next to it
(`('action', 'move_log_prob')`, `('action', 'speed_log_prob')`, tensordict's per-part log-probs);
`ClipPPOLoss` reads those back, re-scores the stored action under the current policy and takes its entropy
bonus from the same distribution; the greedy policy is the module under `InteractionType.DETERMINISTIC`
(`Readout.mode`). The environment, the rollout loop, GAE and the hyper-parameters are those of
`hybrid_actions.py` (imported from it), so the two runs differ only in the loss and the entropy.

Only the chosen move's speed reaches the env, and `hybrid_actions.py` scores only the move and that speed.
Here the distribution says so itself: `continuous_used_by=torch.eye(3)` (move k uses speed k) makes its
continuous log-prob that of the chosen move's speed and its continuous entropy the speeds' entropies
weighted by the moves' probabilities (the expectation of what `hybrid_actions.py` uses). As that part's
log-prob depends on the move, the actor is tensordict's `ProbabilisticTensorDictModule`, which scores the
composite as a whole; TorchRL's `ProbabilisticActor` scores parts one by one, which suits the default,
independent parts (`--score-every-speed`: every speed counts, used or not, with `ProbabilisticActor`;
the unused speeds then add noise to the ratio and the policy settles for hopping over gaps it could run
across: about 92% of the optimal return instead of 99%).

    python examples/hybrid_actions_torchrl.py                        # defaults: 100k steps, seed 0
    python examples/hybrid_actions_torchrl.py --compare              # also runs hybrid_actions.py, same settings
    python examples/hybrid_actions_torchrl.py --score-every-speed    # ProbabilisticActor, whole-action log-probs

It prints the optimal, random and untrained greedy returns over 100 evaluation courses, a line per
evaluation during training, then the greedy return before -> after as a fraction of the optimal one and of
`hybrid_actions.py`'s (its recorded default run, or with `--compare` a run with the same settings); the
last line, `RESULT {...}`, holds the same as JSON for `benchmarks/examples_table.py`. Needs torchrl (`pip install torchrl`; in the `examples` and `test` extras).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch
from tensordict import TensorDict
from tensordict.nn import (
    InteractionType,
    ProbabilisticTensorDictModule,
    ProbabilisticTensorDictSequential,
    TensorDictModule,
    set_interaction_type,
)
from torch import nn
from torchrl.modules import ProbabilisticActor, ValueOperator
from torchrl.objectives import ClipPPOLoss
from tqdm import tqdm

from discrete_continuous_embed_readout import CompositeActionDistribution, DiscreteContinuous, SpaceAdapter

# examples/ is not a package: put it on the path so that the task and the PPO plumbing import both when this
# file runs as a script and when it is loaded by file path (as the tests do)
if str(Path(__file__).resolve().parent) not in sys.path:
    sys.path.insert(0, str(Path(__file__).resolve().parent))
import hybrid_actions  # noqa: E402
from hybrid_actions import MOVES, GapJump, optimal_policy, random_policy, report, run_courses  # noqa: E402
from ppo_utils import (  # noqa: E402
    anneal_lr,
    gae,
    make_vector_env,
    mlp,
    recent_return,
    return_tracker,
    seed_everything,
    sparkline,
    torch_threads,
    track_returns,
)

ACTION_KEYS = (('action', 'move'), ('action', 'speed'))
PLAIN_RETURN = 8.02  # hybrid_actions.py's greedy return after its default run (seed 0, 100k steps; the README's table)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--compare', action='store_true', help='also run hybrid_actions.py with the same settings')
    parser.add_argument('--score-every-speed', action='store_true', help="every speed's log-prob and entropy, used or not (ProbabilisticActor)")
    known, rest = parser.parse_known_args(argv)
    args = hybrid_actions.parse_args(rest)  # every other flag is hybrid_actions.py's
    args.compare, args.score_every_speed = known.compare, known.score_every_speed
    return args


class ScaleObs(nn.Module):
    """Observations scaled to [-1, 1] by the observation space's bounds."""

    def __init__(self, obs_space):
        super().__init__()
        self.register_buffer('low', torch.as_tensor(obs_space.low))
        self.register_buffer('high', torch.as_tensor(obs_space.high))

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        return 2 * (obs - self.low) / (self.high - self.low) - 1


def build_actor(obs_space, adapter: SpaceAdapter, hidden: int, score_every_speed: bool = False):
    """MLP torso -> mixed readout (move logits, speed params) -> `CompositeActionDistribution` (move k uses speed k)."""
    torso = nn.Sequential(ScaleObs(obs_space), mlp(obs_space.shape[0], hidden, hidden, out_gain=2**0.5), nn.Tanh())
    _, readout = adapter.embed_and_readout(hidden)
    network = TensorDictModule(nn.Sequential(torso, readout), in_keys=['observation'], out_keys=['logits', 'params'])
    kwargs = {'readout': readout, 'rescale_range': adapter.rescale_range, 'sample_keys': ACTION_KEYS}
    common = dict(in_keys=['logits', 'params'], out_keys=list(ACTION_KEYS), distribution_class=CompositeActionDistribution, return_log_prob=True)
    if score_every_speed:  # independent parts: TorchRL's actor, which scores them one by one
        return ProbabilisticActor(network, distribution_kwargs=kwargs, **common)
    used = torch.eye(len(MOVES), dtype=torch.bool)  # the move's speed only: the composite scores the action as a whole
    head = ProbabilisticTensorDictModule(distribution_kwargs={**kwargs, 'continuous_used_by': used}, **common)
    return ProbabilisticTensorDictSequential(network, head)


def build_critic(obs_space, hidden: int) -> ValueOperator:
    return ValueOperator(nn.Sequential(ScaleObs(obs_space), mlp(obs_space.shape[0], hidden, 1, out_gain=1.0)), in_keys=['observation'])


def observe(obs: np.ndarray) -> TensorDict:
    return TensorDict(observation=torch.as_tensor(obs), batch_size=[len(obs)])


def env_action(adapter: SpaceAdapter, td: TensorDict) -> dict:
    return adapter.to_space(DiscreteContinuous(*(td[key] for key in ACTION_KEYS)))  # {'move': (n,), 'speed': (n, 3)}


def greedy_policy(actor, adapter: SpaceAdapter):
    @torch.no_grad()
    def policy(obs: np.ndarray, envs) -> list[dict]:
        with set_interaction_type(InteractionType.DETERMINISTIC):  # the distribution's deterministic_sample: Readout.mode
            batch = env_action(adapter, actor(observe(obs)))
        return [{key: value[i] for key, value in batch.items()} for i in range(len(obs))]

    return policy


@torch.no_grad()
def collect(actor, critic, adapter, envs, obs: np.ndarray, args, tracker: dict) -> tuple[TensorDict, np.ndarray]:
    """`rollout_steps` steps of the sampling policy in every env, as a `(steps, num_envs)` TensorDict with
    the actor's action and per-part log-probs, the value, and GAE's advantage and value target."""
    steps = []
    for _ in range(args.rollout_steps):
        with set_interaction_type(InteractionType.RANDOM):
            td = critic(actor(observe(obs)))
        action = env_action(adapter, td)
        tracker['in_space'] &= envs.action_space.contains(action)
        obs, reward, terminated, truncated, _ = envs.step(action)
        done = terminated | truncated
        track_returns(tracker, reward, done)
        td.update(reward=torch.as_tensor(reward, dtype=torch.float32), done=torch.as_tensor(done))
        steps.append(td.exclude('logits', 'params'))
    rollout = torch.stack(steps)
    values = {'rewards': rollout['reward'], 'values': rollout['state_value'].squeeze(-1), 'dones': rollout['done']}
    advantages, returns = gae({**values, 'last_value': critic(observe(obs))['state_value'].squeeze(-1)}, args.gamma, args.gae_lambda)
    rollout.update(advantage=advantages.unsqueeze(-1), value_target=returns.unsqueeze(-1))
    return rollout, obs


def ppo_update(loss_module: ClipPPOLoss, optimizer, parameters, rollout: TensorDict, args) -> None:
    flat = rollout.reshape(-1)
    for _ in range(args.epochs):
        for idx in torch.randperm(len(flat)).chunk(args.minibatches):
            losses = loss_module(flat[idx])
            loss = losses['loss_objective'] + losses['loss_critic'] + losses['loss_entropy']
            optimizer.zero_grad()
            loss.backward()
            nn.utils.clip_grad_norm_(parameters, 0.5)
            optimizer.step()


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    with torch_threads(args.threads):
        metrics = run(args)
        plain = hybrid_actions.run(args)['eval_return'] if args.compare else PLAIN_RETURN  # the same settings, seed included
    metrics['result'] = result = result_line(args, metrics, plain)
    if not args.quiet:
        print(f"fraction of hybrid_actions.py's greedy return ({plain:.2f}): {metrics['eval_return'] / plain:.0%}")
    print('RESULT ' + json.dumps(result))
    return metrics


def result_line(args: argparse.Namespace, metrics: dict, plain: float) -> dict:
    """What `benchmarks/examples_table.py` reads: the greedy return before and after, against the optimum and
    against hybrid_actions.py's return (a run with the same settings under `--compare`, else its recorded one)."""
    final, optimal = metrics['eval_return'], metrics['optimal_return']
    scored = 'every speed, ProbabilisticActor' if args.score_every_speed else "the chosen move's speed only"
    return dict(
        metric=f'greedy return, {args.eval_episodes} courses',
        before=metrics['initial_return'],
        after=final,
        digits=2,
        context=(f"{final / optimal:.0%} of the optimum {optimal:.2f} and {final / plain:.0%} of hybrid_actions.py's {plain:.2f}; "
                 f'{metrics["success_rate"]:.0%} of courses finished; scored: {scored}'),
    )  # fmt: skip


def run(args: argparse.Namespace) -> dict:
    start = time.perf_counter()
    seed_everything(args.seed)
    say = (lambda *a: None) if args.quiet else tqdm.write
    envs = make_vector_env(lambda: GapJump(args.num_gaps), args.num_envs, args.seed)
    obs, _ = envs.reset(seed=args.seed)
    adapter = SpaceAdapter(envs.single_action_space)
    actor = build_actor(envs.single_observation_space, adapter, args.hidden, args.score_every_speed)
    critic = build_critic(envs.single_observation_space, args.hidden)
    loss_module = ClipPPOLoss(actor, critic, clip_epsilon=args.clip, entropy_coeff=args.entropy_coef, critic_coeff=args.value_coef,
                              loss_critic_type='l2', normalize_advantage=True)  # fmt: skip
    parameters = [*actor.parameters(), *critic.parameters()]
    optimizer = torch.optim.Adam(parameters, lr=args.lr, eps=1e-5)
    eval_seed = args.seed + 10_000  # evaluation courses never share gaps with training

    def evaluate(policy, episodes: int = args.eval_episodes, seed: int = eval_seed) -> dict:
        return run_courses(policy, episodes, args.num_gaps, seed)

    optimal, uniform, initial = evaluate(optimal_policy), evaluate(random_policy(args.seed)), evaluate(greedy_policy(actor, adapter))
    say(f'GapJump with TorchRL ClipPPOLoss, {args.eval_episodes} evaluation courses (greedy = deterministic_sample = readout.mode):')
    say(report({'optimal': optimal, 'random': uniform, 'untrained greedy': initial}))
    say(f'{"steps":>8} {"train return":>13} {"eval return":>12}')

    batch = args.num_envs * args.rollout_steps
    iterations = max(1, args.total_steps // batch)
    tracker = return_tracker(args.num_envs, in_space=True)
    curve = []
    for it in tqdm(range(iterations), desc='ClipPPOLoss GapJump', unit='it', disable=args.quiet):
        anneal_lr(optimizer, args.lr, it, iterations)
        rollout, obs = collect(actor, critic, adapter, envs, obs, args, tracker)
        ppo_update(loss_module, optimizer, parameters, rollout, args)
        point = {'steps': (it + 1) * batch, 'train_return': recent_return(tracker, 50)}
        if (it + 1) % args.eval_every == 0 or it == iterations - 1:
            point['eval_return'] = evaluate(greedy_policy(actor, adapter), 20, eval_seed + 1_000)['return']
            say(f'{point["steps"]:8d} {point["train_return"]:13.2f} {point["eval_return"]:12.2f}')
        curve.append(point)
    envs.close()

    final = evaluate(greedy_policy(actor, adapter))
    seconds = time.perf_counter() - start
    say(f'training return per iteration: {sparkline([p["train_return"] for p in curve])}')
    say(report({'optimal': optimal, 'random': uniform, 'untrained greedy': initial, 'trained greedy': final}))
    say(
        f'greedy return {initial["return"]:.2f} -> {final["return"]:.2f} = {final["return"] / optimal["return"]:.0%} of optimal, '
        f'courses finished {final["success_rate"]:.0%}; {seconds:.1f} s'
    )
    metrics = {'eval_return': final['return'], 'success_rate': final['success_rate'], 'best_move_rate': final['best_move_rate']}
    for name, result in (('initial', initial), ('random', uniform), ('optimal', optimal)):
        metrics.update({f'{name}_{key}': value for key, value in result.items()})
    metrics.update(curve=curve, seconds=seconds, actions_in_space=bool(tracker['in_space']))
    return metrics


if __name__ == '__main__':
    main()
