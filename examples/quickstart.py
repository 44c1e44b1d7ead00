"""Quickstart: one shared table for a language model's tokens, a multi-discrete
action space and continuous actions, trained a few steps on random data.

    make demo      # or: python examples/quickstart.py
"""

import torch

from discrete_continuous_embed_readout import EmbedAndReadout


def train(embed, readout, make_batch, steps=100, lr=3e-3):
    net = torch.nn.Sequential(torch.nn.Linear(32, 64), torch.nn.GELU(), torch.nn.Linear(64, 32))
    params = {*embed.parameters(), *readout.parameters(), *net.parameters()}  # a set: tied tables count once
    opt = torch.optim.Adam(params, lr=lr)
    inputs, targets = make_batch()
    for step in range(steps):
        loss = readout(net(embed(inputs)), targets)
        loss = sum(loss) if isinstance(loss, tuple) else loss  # mixed readouts give (discrete, continuous)
        opt.zero_grad()
        loss.backward()
        opt.step()
        if step in (0, steps - 1):
            print(f'  step {step:3d}  loss {loss.item():.3f}')
    return net


def main():
    torch.manual_seed(0)

    print('discrete (a language model vocabulary, weight-tied):')
    embed, readout = EmbedAndReadout(32, num_discrete=100, weight_tie=True)
    ids = torch.randint(0, 100, (8, 16))
    net = train(embed, readout, lambda: (ids, (ids + 1) % 100))  # learn 'the next id'
    logits = readout(net(embed(ids)))
    print('  logits', tuple(logits.shape), ' greedy sample', tuple(readout.sample(logits, temperature=0.).shape))

    print('multi-discrete (three action groups of sizes 3, 5, 2):')
    embed, readout = EmbedAndReadout(32, num_discrete=(3, 5, 2))
    actions = torch.stack([torch.randint(0, n, (8, 16)) for n in (3, 5, 2)], dim=-1)
    net = train(embed, readout, lambda: (actions, actions))
    logits = readout(net(embed(actions)))
    print('  sampled', tuple(readout.sample(logits).shape), ' log-prob', tuple(readout.log_prob(logits, actions).shape))

    print('mixed (a discrete choice plus 2 squashed continuous values):')
    embed, readout = EmbedAndReadout(32, num_discrete=4, num_continuous=2, continuous_squashed=True)
    choice, values = torch.randint(0, 4, (8, 16)), torch.rand(8, 16, 2) * 1.6 - 0.8
    net = train(embed, readout, lambda: ((choice, values), (choice, values)))
    out = readout(net(embed((choice, values))))
    sampled = readout.sample(out, rescale_range=(-2.0, 2.0))
    print('  discrete', tuple(sampled.discrete.shape), ' continuous in [-2, 2]:', tuple(sampled.continuous.shape))


if __name__ == '__main__':
    main()
