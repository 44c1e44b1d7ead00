"""Quickstart: one shared table for a language model's tokens, a multi-discrete
action space and continuous actions, trained a few steps on random data.

    make demo      # or: python examples/quickstart.py [--threads 1]

Each model trains behind a progress bar showing its loss; the first and the last loss
of each are printed, and the last line is ``RESULT {...}``: those losses as JSON, for
``benchmarks/examples_table.py``. The mixed model's loss is a cross entropy plus a
gaussian negative log-likelihood, a density's, which goes below 0 once the predicted
gaussians are narrow (a density above 1 at the targets).
"""

import argparse
import json

import torch
from tqdm import tqdm

from discrete_continuous_embed_readout import EmbedAndReadout


def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--steps', type=int, default=100, help='training steps per model')
    parser.add_argument('--threads', type=int, default=1, help='torch CPU threads (one is fastest for models this small)')
    return parser.parse_args(argv)


def train(name, embed, readout, make_batch, steps, lr=3e-3):
    """Train a small MLP between ``embed`` and ``readout``; returns it and the first and last loss."""
    net = torch.nn.Sequential(torch.nn.Linear(32, 64), torch.nn.GELU(), torch.nn.Linear(64, 32))
    params = {*embed.parameters(), *readout.parameters(), *net.parameters()}  # a set: tied tables count once
    opt = torch.optim.Adam(params, lr=lr)
    inputs, targets = make_batch()
    losses = []
    bar = tqdm(range(steps), desc=name, unit='step', leave=False)
    for _ in bar:
        loss = readout(net(embed(inputs)), targets)
        loss = sum(loss) if isinstance(loss, tuple) else loss  # mixed readouts give (discrete, continuous)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
        bar.set_postfix(loss=f'{losses[-1]:.3f}')
    print(f'  loss {losses[0]:.3f} -> {losses[-1]:.3f} in {steps} steps')
    return net, (losses[0], losses[-1])


def run(args):
    torch.manual_seed(0)
    losses = {}

    print('discrete (a language model vocabulary, weight-tied):')
    embed, readout = EmbedAndReadout(32, num_discrete=100, weight_tie=True)
    ids = torch.randint(0, 100, (8, 16))
    net, losses['discrete'] = train('discrete', embed, readout, lambda: (ids, (ids + 1) % 100), args.steps)  # learn 'the next id'
    logits = readout(net(embed(ids)))
    print('  logits', tuple(logits.shape), ' greedy sample', tuple(readout.sample(logits, temperature=0.0).shape))

    print('multi-discrete (three action groups of sizes 3, 5, 2):')
    embed, readout = EmbedAndReadout(32, num_discrete=(3, 5, 2))
    actions = torch.stack([torch.randint(0, n, (8, 16)) for n in (3, 5, 2)], dim=-1)
    net, losses['multi-discrete'] = train('multi-discrete', embed, readout, lambda: (actions, actions), args.steps)
    logits = readout(net(embed(actions)))
    print('  sampled', tuple(readout.sample(logits).shape), ' log-prob', tuple(readout.log_prob(logits, actions).shape))

    print('mixed (a discrete choice plus 2 squashed continuous values):')
    embed, readout = EmbedAndReadout(32, num_discrete=4, num_continuous=2, continuous_squashed=True)
    choice, values = torch.randint(0, 4, (8, 16)), torch.rand(8, 16, 2) * 1.6 - 0.8
    net, losses['mixed'] = train('mixed', embed, readout, lambda: ((choice, values), (choice, values)), args.steps)
    out = readout(net(embed((choice, values))))
    sampled = readout.sample(out, rescale_range=(-2.0, 2.0))
    print('  discrete', tuple(sampled.discrete.shape), ' continuous in [-2, 2]:', tuple(sampled.continuous.shape))
    return losses


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    threads = torch.get_num_threads()
    torch.set_num_threads(args.threads)
    try:
        losses = run(args)
    finally:
        torch.set_num_threads(threads)  # leave the caller's setting (e.g. a test process) as it was
    result = dict(
        metric='training loss: discrete / multi-discrete / mixed',
        before=[first for first, _ in losses.values()],
        after=[last for _, last in losses.values()],
        digits=2,
        note='the mixed loss adds a gaussian negative log-likelihood, which is below 0 where the predicted density exceeds 1',
    )
    print('RESULT ' + json.dumps(result))
    return dict(losses=losses, result=result)


if __name__ == '__main__':
    main()
