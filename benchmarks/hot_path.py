"""The hot path of RL users: small policy heads at small batches, ours against the few
lines of torch they replace.

    python benchmarks/hot_path.py            # the table (about ten minutes on a busy 2-core machine)
    python benchmarks/hot_path.py --quick    # fewer repetitions
    python benchmarks/hot_path.py --only ppo # the rows whose call starts with 'ppo'

Three calls, each at batch 1, 64 and 1,024 on ``D = 64`` features, one thread:

- ``act``: ``forward`` + ``sample(..., return_log_prob=True)`` under ``torch.no_grad``;
- ``ppo``: ``forward`` + ``log_prob`` + ``entropy`` + backward of
  ``-(log_prob * advantage).mean() - 0.01 * entropy.mean()``;
- ``bc``: ``readout(h, actions)`` (the loss) + backward.

Five heads: 5 discrete actions; a mixed head (5 actions + 2 gaussian dims); the same
with a tanh-squashed gaussian and ``rescale_range=(-2, 2)`` (the loss, which has no
``rescale_range``, scores values in (-1, 1)); 2 beta dims; 3 groups of (3, 5, 7)
actions.

The hand-written side is what a user writes without this package: ``nn.Linear`` heads
(holding the readout's rows, so that both compute the same numbers, which is checked
before timing), ``torch.distributions`` (``Categorical``, ``Normal``, a ``Normal``
through ``TanhTransform`` and ``AffineTransform``, ``Beta``) with their default
``validate_args`` and ``F.cross_entropy``; ours runs with its content checks on (the
default). Times are medians over repetitions that alternate ours and the
hand-written code (which one goes first alternates too), each repetition timing a
few calls; ratio = ours / hand-written.
"""

from __future__ import annotations

import argparse
import contextlib
import math
import statistics
import time
from collections.abc import Callable
from contextlib import contextmanager

import torch
import torch.nn.functional as F
from torch import nn
from torch.distributions import AffineTransform, Beta, Categorical, Normal, TanhTransform, TransformedDistribution

from discrete_continuous_embed_readout import Readout

DIM = 64
BATCHES = (1, 64, 1024)
CALLS = ('act', 'ppo', 'bc')
RANGE = (-2.0, 2.0)


class Hand(nn.Module):
    """The hand-written policy head: linear layers holding the readout's rows, and
    ``torch.distributions`` over their outputs."""

    def __init__(self, readout: Readout, groups=(), num_continuous: int = 0, kind: str = 'gaussian', rescale: bool = False):
        super().__init__()
        weight = readout.embeddings.weight.detach()
        self.groups, self.kind, self.rescale = list(groups), kind, rescale
        num_d = sum(self.groups)
        self.logits = nn.Linear(DIM, num_d, bias=False) if num_d else None
        self.params = nn.Linear(DIM, 2 * num_continuous, bias=False) if num_continuous else None
        with torch.no_grad():
            if self.logits is not None:
                self.logits.weight.copy_(weight[:num_d])
            if self.params is not None:
                self.params.weight.copy_(weight[num_d : num_d + 2 * num_continuous])

    def forward(self, h):
        cats = None
        if self.logits is not None:
            logits = self.logits(h)
            cats = [Categorical(logits=g) for g in logits.split(self.groups, -1)] if len(self.groups) > 1 else Categorical(logits=logits)
        return cats, self.continuous(self.params(h)) if self.params is not None else None

    def continuous(self, out):
        a, b = out.chunk(2, -1)
        if self.kind == 'beta':
            return Beta(F.softplus(a) + 1e-6, F.softplus(b) + 1e-6)
        normal = Normal(a, (0.5 * b).exp())
        if self.kind == 'squashed':
            scale = [AffineTransform(0.0, 2.0)] if self.rescale else []
            return TransformedDistribution(normal, [TanhTransform(cache_size=1), *scale])
        return normal

    def continuous_entropy(self, dist):
        if self.kind == 'squashed':  # the pre-tanh normal's, in the rescaled units (as the readout reports it)
            return dist.base_dist.entropy() + (math.log(2.0) if self.rescale else 0.0)
        return dist.entropy()


# the heads: (readout kwargs, hand-written head kwargs, rescale_range)

HEADS = {
    'discrete 5': (dict(num_discrete=5), dict(groups=(5,)), None),
    'mixed 5 + 2 gaussian': (dict(num_discrete=5, num_continuous=2), dict(groups=(5,), num_continuous=2), None),
    'mixed 5 + 2 squashed, rescale': (dict(num_discrete=5, num_continuous=2, continuous_squashed=True),
                                      dict(groups=(5,), num_continuous=2, kind='squashed', rescale=True), RANGE),  # fmt: skip
    'beta 2': (dict(num_continuous=2, continuous_dist_type='beta'), dict(num_continuous=2, kind='beta'), None),
    'groups (3, 5, 7)': (dict(num_discrete=(3, 5, 7)), dict(groups=(3, 5, 7)), None),
}


def _actions(readout_kwargs, batch: int, squashed: bool, beta: bool, device='cpu'):
    """Actions in the readout's layout: ids ``(b,)`` / ``(b, g)``, values ``(b, c)``, or a pair."""
    sizes = readout_kwargs.get('num_discrete', ())
    sizes = (sizes,) if isinstance(sizes, int) else tuple(sizes)
    ids = None
    if sizes:
        ids = torch.stack([torch.randint(0, n, (batch,)) for n in sizes], -1)
        ids = ids.squeeze(-1) if len(sizes) == 1 else ids
    values = None
    if readout_kwargs.get('num_continuous'):
        c = readout_kwargs['num_continuous']
        values = torch.rand(batch, c) * 0.9 + 0.05 if beta else (torch.rand(batch, c) * 1.8 - 0.9 if squashed else torch.randn(batch, c))
    ids, values = (t.to(device) if t is not None else None for t in (ids, values))
    return ids if values is None else values if ids is None else (ids, values)


def _split(hand: Hand, actions):
    """``(ids, values)``, ``None`` for a part the head does not have."""
    if isinstance(actions, tuple):
        return actions
    return (actions, None) if hand.logits is not None else (None, actions)


def _hand_parts(hand: Hand, cats, cont, actions):
    """Per-sample ``(log_prob, entropy)`` of the hand-written head, summed over parts."""
    ids, values = _split(hand, actions)
    lp = ent = 0.0
    if isinstance(cats, list):
        lp = lp + sum(c.log_prob(ids[:, i]) for i, c in enumerate(cats))
        ent = ent + sum(c.entropy() for c in cats)
    elif cats is not None:
        lp, ent = lp + cats.log_prob(ids), ent + cats.entropy()
    if cont is not None:
        lp = lp + cont.log_prob(values).sum(-1)
        ent = ent + hand.continuous_entropy(cont).sum(-1)
    return lp, ent


def _summed(x):
    """A per-sample total over parts, groups and dims: ``(b,)``."""
    if isinstance(x, tuple):
        return sum(_summed(p) for p in x)
    return x.sum(-1) if x.ndim == 2 else x


def _hand_bc_loss(hand: Hand, h, actions):
    ids, values = _split(hand, actions)
    loss = 0.0
    if hand.logits is not None:
        logits = hand.logits(h)
        if len(hand.groups) > 1:
            per_group = [F.cross_entropy(g, ids[:, i]) for i, g in enumerate(logits.split(hand.groups, -1))]
            loss = loss + sum(per_group) / len(per_group)
        else:
            loss = loss + F.cross_entropy(logits, ids)
    if hand.params is not None:
        loss = loss - hand.continuous(hand.params(h)).log_prob(values).mean()
    return loss


def setup(call: str, head: str, batch: int, device='cpu') -> tuple[Callable, Callable]:
    """``(ours, hand)`` for one row on ``device``, after checking that both compute the same numbers."""
    readout_kwargs, hand_kwargs, rescale = HEADS[head]
    torch.manual_seed(0)
    readout = Readout(DIM, **readout_kwargs)
    with torch.no_grad():
        readout.embeddings.weight.normal_(0, 0.3)  # policy-like spreads, not the table's 0.01 init
    squashed, beta = hand_kwargs.get('kind') == 'squashed', hand_kwargs.get('kind') == 'beta'
    bc = call == 'bc'
    hand = Hand(readout, **{**hand_kwargs, 'rescale': hand_kwargs.get('rescale', False) and not bc}).to(device)
    readout = readout.to(device)
    h = torch.randn(batch, DIM).to(device).requires_grad_(call != 'act')
    advantage = torch.randn(batch).to(device)
    actions = _actions(readout_kwargs, batch, squashed, beta, device)
    if squashed and rescale is not None and not bc:
        ids, values = actions
        actions = (ids, values * 2.0)  # in rescale_range's units
    scoring = dict(rescale_range=rescale) if rescale is not None else {}
    params = [*readout.parameters(), *hand.parameters(), h]

    def zero_grads():
        for p in params:
            p.grad = None

    if call == 'act':

        def ours():
            with torch.no_grad():
                return readout.sample(readout(h), return_log_prob=True, **scoring)

        def hand_fn():
            with torch.no_grad():
                cats, cont = hand(h)
                parts = ([cats] if not isinstance(cats, list) else cats) if cats is not None else []
                sampled = [c.sample() for c in parts] + ([cont.sample()] if cont is not None else [])
                log_probs = [c.log_prob(a) for c, a in zip(parts, sampled)] + ([cont.log_prob(sampled[-1])] if cont is not None else [])
                return sampled, log_probs

        return ours, hand_fn

    if call == 'ppo':

        def ours_terms():
            out = readout(h)
            return _summed(readout.log_prob(out, actions, **scoring)), _summed(readout.entropy(out, **scoring))

        def hand_terms():
            return _hand_parts(hand, *hand(h), actions)

        _check_close(ours_terms(), hand_terms(), call, head)

        def ours():
            zero_grads()
            lp, ent = ours_terms()
            (-(lp * advantage).mean() - 0.01 * ent.mean()).backward()

        def hand_fn():
            zero_grads()
            lp, ent = hand_terms()
            (-(lp * advantage).mean() - 0.01 * ent.mean()).backward()

        return ours, hand_fn

    def ours_loss():
        loss = readout(h, actions)
        return sum(loss) if isinstance(loss, tuple) else loss

    _check_close((ours_loss(),), (_hand_bc_loss(hand, h, actions),), call, head)

    def ours():
        zero_grads()
        ours_loss().backward()

    def hand_fn():
        zero_grads()
        _hand_bc_loss(hand, h, actions).backward()

    return ours, hand_fn


def _check_close(ours, hand, call: str, head: str) -> None:
    for a, b in zip(ours, hand, strict=True):
        if not torch.allclose(a.detach(), b.detach(), rtol=1e-4, atol=1e-4):
            raise AssertionError(f'{call} / {head}: ours and the hand-written code disagree: {a} vs {b}')


@contextmanager
def threads(n: int):
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def medians(ours: Callable, hand: Callable, reps: int, target_s: float = 5e-3, clock=time.thread_time) -> tuple[float, float]:
    """Median µs per call of each, over ``reps`` repetitions that alternate them (and
    which goes first); each repetition times enough calls to last about ``target_s``.
    ``clock``: the calling thread's CPU time by default (one thread runs every op and
    the backward), which time spent waiting for a shared machine's cores leaves out."""
    for _ in range(3):
        ours(), hand()
    start = clock()
    ours(), hand()
    inner = max(1, int(2 * target_s / max(clock() - start, 1e-9)))
    times = {ours: [], hand: []}
    for rep in range(reps):
        for fn in (ours, hand) if rep % 2 == 0 else (hand, ours):
            start = clock()
            for _ in range(inner):
                fn()
            times[fn].append((clock() - start) / inner)
    return statistics.median(times[ours]) * 1e6, statistics.median(times[hand]) * 1e6


def rows(quick: bool = False, only: str = ''):
    """``(call, head, batch, ours µs, hand µs)`` of every row, one thread."""
    reps = 15 if quick else 61
    with threads(1):
        for call in CALLS:
            if not call.startswith(only):
                continue
            for head in HEADS:
                for batch in BATCHES:
                    ours_us, hand_us = medians(*setup(call, head, batch), reps)
                    yield call, head, batch, ours_us, hand_us


def cuda_rows(device, guard=contextlib.nullcontext, reps: int = 21, batches=BATCHES) -> list[dict]:
    """The rows on ``device`` (``benchmarks/gpu.py`` runs them on CUDA): the wall clock
    around a device synchronisation, medians of alternating repetitions; ``guard()``
    (``torch.cuda.set_sync_debug_mode('error')`` there) wraps every call of ours, not
    the hand-written code's (``torch.distributions``' argument checks synchronise)."""
    device = torch.device(device)

    def clock() -> float:
        if device.type == 'cuda':
            torch.cuda.synchronize(device)
        return time.perf_counter()

    found = []
    for call in CALLS:
        for head in HEADS:
            for batch in batches:
                ours, hand = setup(call, head, batch, device)

                def guarded(_ours=ours):
                    with guard():
                        return _ours()

                ours_us, hand_us = medians(guarded, hand, reps, clock=clock)
                found.append(dict(call=call, head=head, batch=batch, ours_us=ours_us, hand_us=hand_us, ratio=ours_us / hand_us))
    return found


def print_table(quick: bool = False, only: str = '') -> None:
    print('| call | head | batch | ours (µs) | hand-written (µs) | ratio |')
    print('|---|---|---|---|---|---|')
    for call, head, batch, ours_us, hand_us in rows(quick, only):
        print(f'| {call} | {head} | {batch} | {ours_us:.1f} | {hand_us:.1f} | {ours_us / hand_us:.2f}x |', flush=True)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--quick', action='store_true', help='fewer repetitions')
    parser.add_argument('--only', default='', help="the rows whose call starts with this ('act', 'ppo', 'bc')")
    args = parser.parse_args()
    print(f'# {time.strftime("%Y-%m-%d")}, torch {torch.__version__}, 1 thread, D = {DIM}\n')
    print_table(args.quick, args.only)


if __name__ == '__main__':
    main()
