"""Cross-embodiment behaviour cloning: two robots with different action spaces, one table.

An arm and a rover imitate their experts with one policy network, one embedding table and
one optimizer. The table has 7 discrete rows and 4 continuous dims; each robot's actions
are a subset of them, registered as a selector:

    discrete rows    0 open, 1 close       arm gripper and rover scoop (shared)
                     2 hold, 3 release     arm gripper
                     4 reverse, 5 stop, 6 forward    rover drive
    continuous dims  0 shoulder            arm joint 0 and rover lift (shared)
                     1 elbow, 2 wrist      arm
                     3 wheel speed         rover

    arm = ([[OPEN, CLOSE, HOLD, RELEASE]], [SHOULDER, ELBOW, WRIST])        # 1 group of 4, 3 dims
    rover = ([[OPEN, CLOSE], [REVERSE, STOP, FORWARD]], [SHOULDER, WHEEL])  # 2 groups, 2 dims
    embed, readout = EmbedAndReadout(dim, num_discrete=7, num_continuous=4, selectors=[arm, rover], ...)

``selector_index=0`` (arm) or ``1`` (rover) on an ``embed`` / ``readout`` call picks the
rows: local id ``j`` of group ``g`` means row ``config[g][j]``, and the readout's logits and
gaussian params cover exactly that robot's rows, in that order. So the arm's gripper is
one 4-way choice, the rover's scoop and drive are a 2-way and a 3-way choice, and each
robot only ever sees its own action space. Discrete rows 0 and 1 (open / close) and
continuous dim 0 (shoulder / lift) are shared, in the embed and in the readout: both
robots' gradients train the same rows (the experts use the same rules there), and dim 0
has one set of normalisation statistics (``continuous_mean_std`` is per table dim,
computed from both robots' demonstrations).

The task. Each robot observes ``(x, y, z, goal, roughness, distractor)``: the object's
position relative to its tool, how far ahead its goal is, the terrain's roughness and an
unused value; it also gets its own previous action, embedded with its selector. The
experts (deterministic rules plus small gaussian noise on the continuous demonstrations):

- both close their tool when the object is near (``|xyz| < 1.5``) and open it when far;
  the arm also tracks what it holds: near, it closes, or holds if it has already closed or
  was holding; far, it releases if it had closed or was holding, else stays open;
- the arm's joints and the rover's lift move halfway from the previous position to
  ``tanh(xyz @ JOINT_MAP)`` (the rover's lift follows the arm's shoulder rule);
- the rover drives towards the goal (forward / reverse, stop when the goal is close or the
  terrain is rough, and never switches directly between forward and reverse), its wheel
  speed moves halfway to ``3 tanh(2 goal)`` (0 when stopped).

The policy: ``obs -> linear`` + ``embed(previous action, selector_index=robot)`` + a
learned robot embedding -> MLP -> ``readout(hidden, selector_index=robot)``. Each training
step takes a batch from each robot and sums their losses (cross entropy + gaussian NLL).

Run:

    python examples/cross_embodiment.py                # about 15-30 s on 2 CPU cores
    python examples/cross_embodiment.py --steps 3000

It prints, per robot, held-out metrics of the deterministic actions (``readout.mode``)
before and after training: the loss, the accuracy of each discrete group against the
expert, and the RMSE of each continuous action against the expert's noise-free one (next
to the RMSE of repeating the previous action). ``main`` returns the same numbers; the last
line, ``RESULT {...}``, has the accuracies and the largest RMSE of each robot before and after
training as JSON, for ``benchmarks/examples_table.py``.
"""

import argparse
import json

import torch
from torch import nn
from tqdm import tqdm

from discrete_continuous_embed_readout import EmbedAndReadout

OPEN, CLOSE, HOLD, RELEASE, REVERSE, STOP, FORWARD = range(7)  # discrete table rows
SHOULDER, ELBOW, WRIST, WHEEL = range(4)  # continuous table dims
NUM_DISCRETE, NUM_CONTINUOUS = 7, 4  # the table's capacity, shared by both selectors
ROBOTS = ('arm', 'rover')
SELECTORS = [
    ([[OPEN, CLOSE, HOLD, RELEASE]], [SHOULDER, ELBOW, WRIST]),
    ([[OPEN, CLOSE], [REVERSE, STOP, FORWARD]], [SHOULDER, WHEEL]),
]
GROUP_NAMES = (('gripper',), ('scoop', 'drive'))
DIM_NAMES = (('shoulder', 'elbow', 'wrist'), ('lift', 'wheel'))
OBS_DIM = 6
JOINT_MAP = torch.tensor([[0.8, -0.5, 0.3], [0.4, 0.9, -0.6], [-0.3, 0.2, 1.0]])


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('--steps', type=int, default=2500, help='training steps (each: one batch per robot)')
    p.add_argument('--batch-size', type=int, default=128, help='examples per robot per step')
    p.add_argument('--num-train', type=int, default=8192, help='demonstrations per robot')
    p.add_argument('--num-val', type=int, default=2048, help='held-out examples per robot')
    p.add_argument('--demo-noise', type=float, default=0.05, help='std of the noise on continuous demonstrations')
    p.add_argument('--dim', type=int, default=64, help='embedding width')
    p.add_argument('--hidden', type=int, default=128, help='MLP width')
    p.add_argument('--lr', type=float, default=3e-3)
    p.add_argument('--seed', type=int, default=0)
    p.add_argument('--threads', type=int, default=1, help='torch CPU threads (one is fastest for a model this small)')
    return p.parse_args(argv)


# ---- the experts; discrete actions are local ids of each robot's selector --------------


def is_near(obs):
    return obs[:, :3].norm(dim=-1) < 1.5


def joint_targets(obs):
    return torch.tanh(obs[:, :3] @ JOINT_MAP)


def arm_expert(obs, prev_gripper, prev_joints):
    """Gripper: grasp when near, keep holding, release when far. Joints: halfway to the target."""
    holding = (prev_gripper == CLOSE) | (prev_gripper == HOLD)  # the arm's local ids equal its rows
    gripper = torch.where(is_near(obs), torch.where(holding, HOLD, CLOSE), torch.where(holding, RELEASE, OPEN))
    joints = prev_joints + 0.5 * (joint_targets(obs) - prev_joints)
    return gripper.unsqueeze(-1), joints  # one discrete group: ids (batch, 1), squeezed later


def rover_expert(obs, prev_groups, prev_continuous):
    """Scoop: the arm's open / close rule. Drive towards the goal. Lift: the arm's shoulder rule."""
    scoop = is_near(obs).long()  # local 0 = OPEN, 1 = CLOSE
    goal, rough = obs[:, 3], obs[:, 4].abs() > 1.5
    reverse, stop, forward = 0, 1, 2  # local ids of the drive group
    drive = torch.where(goal > 0.3, forward, torch.where(goal < -0.3, reverse, stop))
    drive = torch.where(rough, stop, drive)
    flips = (prev_groups[:, 1] - drive).abs() == 2  # forward <-> reverse must stop first
    drive = torch.where(flips, stop, drive)
    lift = prev_continuous[:, 0] + 0.5 * (joint_targets(obs)[:, 0] - prev_continuous[:, 0])
    speed_target = torch.where(drive == stop, 0.0, 3 * torch.tanh(2 * goal))
    speed = prev_continuous[:, 1] + 0.5 * (speed_target - prev_continuous[:, 1])
    return torch.stack((scoop, drive), -1), torch.stack((lift, speed), -1)


def make_data(robot, num, demo_noise, gen):
    """Observations, previous actions and the expert's next actions (noisy and noise-free)."""
    obs = torch.randn(num, OBS_DIM, generator=gen)
    if robot == 0:
        prev_d = torch.randint(0, 4, (num, 1), generator=gen)
        prev_c = 2 * torch.rand(num, 3, generator=gen) - 1
        action_d, clean_c = arm_expert(obs, prev_d[:, 0], prev_c)
    else:
        prev_d = torch.stack((torch.randint(0, 2, (num,), generator=gen), torch.randint(0, 3, (num,), generator=gen)), -1)
        prev_c = torch.stack((2 * torch.rand(num, generator=gen) - 1, 6 * torch.rand(num, generator=gen) - 3), -1)
        action_d, clean_c = rover_expert(obs, prev_d, prev_c)
    action_c = clean_c + demo_noise * torch.randn(clean_c.shape, generator=gen)
    return dict(obs=obs, prev=(prev_d, prev_c), action=(action_d, action_c), clean=(action_d, clean_c))


def ids(discrete, robot):
    # a selector with one group takes ids of shape (batch,), with several (batch, groups)
    return discrete[:, 0] if len(SELECTORS[robot][0]) == 1 else discrete


def table_mean_std(train):
    """(mean, std) per continuous table dim from both robots' demonstrations; shared dims pool them."""
    values = [[] for _ in range(NUM_CONTINUOUS)]
    for robot, data in enumerate(train):
        for local, dim in enumerate(SELECTORS[robot][1]):
            values[dim].append(data['action'][1][:, local])
    return torch.stack([torch.stack((torch.cat(v).mean(), torch.cat(v).std())) for v in values])  # (NUM_CONTINUOUS, 2)


class Policy(nn.Module):
    def __init__(self, dim, hidden, mean_std):
        super().__init__()
        self.embed, self.readout = EmbedAndReadout(
            dim, num_discrete=NUM_DISCRETE, num_continuous=NUM_CONTINUOUS, selectors=SELECTORS, continuous_mean_std=mean_std
        )
        self.obs_proj = nn.Linear(OBS_DIM, dim)
        self.robot_embed = nn.Embedding(len(ROBOTS), dim)  # lets the shared trunk specialise where the bodies differ
        self.trunk = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, hidden), nn.GELU(), nn.Linear(hidden, dim))

    def hidden(self, robot, obs, prev):
        prev_embed = self.embed((ids(prev[0], robot), prev[1]), selector_index=robot)  # previous action, the robot's rows
        return self.trunk(self.obs_proj(obs) + prev_embed + self.robot_embed.weight[robot])

    def loss(self, robot, obs, prev, action):
        loss = self.readout(self.hidden(robot, obs, prev), (ids(action[0], robot), action[1]), selector_index=robot)
        return loss.discrete + loss.continuous

    @torch.no_grad()
    def act(self, robot, obs, prev):
        """Deterministic actions: argmax per group, gaussian mean (de-normalised)."""
        out = self.readout(self.hidden(robot, obs, prev), selector_index=robot)
        return self.readout.mode(out, selector_index=robot)


@torch.no_grad()
def evaluate(policy, val):
    """Per robot: held-out loss, accuracy of each discrete group, RMSE of the continuous actions."""
    metrics = {}
    for robot, data in enumerate(val):
        action = policy.act(robot, data['obs'], data['prev'])
        expert_d, expert_c = data['clean']
        accuracy = (action.discrete.view(len(expert_d), -1) == expert_d).float().mean(0)
        rmse = (action.continuous - expert_c).pow(2).mean(0).sqrt()
        metrics[ROBOTS[robot]] = dict(
            loss=policy.loss(robot, data['obs'], data['prev'], data['action']).item(),
            accuracy={name: acc.item() for name, acc in zip(GROUP_NAMES[robot], accuracy)},
            rmse={name: err.item() for name, err in zip(DIM_NAMES[robot], rmse)},
        )
    return metrics


def train(policy, train_data, steps, batch_size, lr, gen):
    opt = torch.optim.AdamW(policy.parameters(), lr=lr)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps, pct_start=0.1)
    bar = tqdm(range(steps), desc='training', unit='step')
    for _ in bar:
        losses = []
        for robot, data in enumerate(train_data):  # both robots in every step: one joint update
            idx = torch.randint(0, len(data['obs']), (batch_size,), generator=gen)
            action = tuple(a[idx] for a in data['action'])
            losses.append(policy.loss(robot, data['obs'][idx], tuple(p[idx] for p in data['prev']), action))
        opt.zero_grad()
        sum(losses).backward()
        opt.step()
        sched.step()
        bar.set_postfix({f'{name} loss': f'{loss.item():.3f}' for name, loss in zip(ROBOTS, losses)})


def report(initial, final, val):
    for robot, name in enumerate(ROBOTS):
        first, last = initial[name], final[name]
        hold_rmse = (val[robot]['prev'][1] - val[robot]['clean'][1]).pow(2).mean(0).sqrt()
        accuracy = ', '.join(f'{group} {first["accuracy"][group]:.1%} -> {last["accuracy"][group]:.1%}' for group in last['accuracy'])
        rmse = ', '.join(
            f'{dim} {first["rmse"][dim]:.3f} -> {last["rmse"][dim]:.3f} ({hold:.3f})' for dim, hold in zip(last['rmse'], hold_rmse)
        )
        print(f'{name}: loss {first["loss"]:.3f} -> {last["loss"]:.3f}')
        print(f'  accuracy  {accuracy}')
        print(f'  RMSE      {rmse}')


def run(args):
    torch.manual_seed(args.seed)
    gen = torch.Generator().manual_seed(args.seed)
    train_data = [make_data(robot, args.num_train, args.demo_noise, gen) for robot in range(len(ROBOTS))]
    val_data = [make_data(robot, args.num_val, args.demo_noise, gen) for robot in range(len(ROBOTS))]

    policy = Policy(args.dim, args.hidden, table_mean_std(train_data))
    initial = evaluate(policy, val_data)
    train(policy, train_data, args.steps, args.batch_size, args.lr, gen)
    final = evaluate(policy, val_data)

    print('held-out metrics of the deterministic actions (readout.mode), initial -> final')
    print(f'(RMSE against the noise-free expert; in brackets: repeating the previous action; demo noise {args.demo_noise})')
    report(initial, final, val_data)
    result = result_line(initial, final)
    print('RESULT ' + json.dumps(result))
    return dict(initial=initial, final=final, result=result)


def result_line(initial, final):
    """The headline numbers: every discrete group's accuracy, and each robot's worst continuous RMSE."""
    groups = [(robot, group) for robot, names in zip(ROBOTS, GROUP_NAMES) for group in names]
    worst_rmse = ', '.join(
        f'{robot} {max(initial[robot]["rmse"].values()):.2f} → {max(final[robot]["rmse"].values()):.3f}' for robot in ROBOTS
    )
    return dict(
        metric='held-out accuracy, % (' + ' / '.join(f'{robot} {group}' for robot, group in groups) + ')',
        before=[100 * initial[robot]['accuracy'][group] for robot, group in groups],
        after=[100 * final[robot]['accuracy'][group] for robot, group in groups],
        digits=1,
        context=f'largest continuous RMSE: {worst_rmse}',
    )


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    threads = torch.get_num_threads()
    torch.set_num_threads(args.threads)
    try:
        return run(args)
    finally:
        torch.set_num_threads(threads)  # leave the caller's setting (e.g. a test process) as it was


if __name__ == '__main__':
    main()
