"""Benchmarks: ours against the plain alternative a user would write, side by side.

    python benchmarks/run.py            # the full table (a few minutes on 2 CPU cores)
    python benchmarks/run.py --quick    # fewer repetitions
    python benchmarks/run.py --only lm  # cases whose name starts with 'lm'
    python benchmarks/run.py --only hot # the RL hot-path table alone (benchmarks/hot_path.py)
    python benchmarks/run.py --only fused  # the fused objectives' table only (benchmarks/fused_objectives.py: one thread, V = 32k and 128k)

The 'checks on vs off' rows time the same call with the content checks (ids in
range, finite values) on against ``set_validate_args(False)``.

Times are medians over repetitions that alternate ours and the baseline (so a
noisy machine slows both alike); ratio = ours / baseline. The language-model rows
also time the floor, the three matmuls a linear + softmax loss with gradients needs
(``x @ W.T``, ``grad @ W``, ``grad.T @ x``), in the same alternation: "ours / floor". Peak memory is the
rise of the process's peak resident memory during one call, measured in a fresh
subprocess per implementation (Linux: /proc/self/clear_refs), as ours / baseline.
"""

from __future__ import annotations

import argparse
import platform
import re
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from hot_path import print_table as print_hot_path_table
from torch.distributions import Categorical, kl_divergence

from discrete_continuous_embed_readout import EmbedAndReadout, ParameterlessReadout, get_validate_args, set_validate_args

THREADS = 2


@dataclass
class Case:
    name: str
    setup: Callable[[], tuple[Callable, Callable]]  # -> (ours, baseline)
    memory: bool = False
    reps: int = 7
    floor: Callable[[], Callable] | None = None  # the matmuls the case needs at least (a column "/ floor")


# LM loss: readout(embeds, labels) against F.cross_entropy(x @ W.T, y)


def lm_loss(vocab: int, tokens: int = 2048, dim: int = 512, grad: bool = True):
    def setup():
        torch.manual_seed(0)
        _, readout = EmbedAndReadout(dim, num_discrete=vocab)
        x = torch.randn(tokens, dim, requires_grad=grad)
        weight = readout.embeddings.weight
        weight.requires_grad_(grad)
        y = torch.randint(0, vocab, (tokens,))

        def ours():
            x.grad = weight.grad = None
            loss = readout(x, y)
            if grad:
                loss.backward()

        def baseline():
            x.grad = weight.grad = None
            loss = F.cross_entropy(x @ weight.T, y)
            if grad:
                loss.backward()

        return (ours, baseline) if grad else (no_grad(ours), no_grad(baseline))

    return setup


def torch_linear_cross_entropy(vocab: int, tokens: int = 2048, dim: int = 512):
    def setup():
        _, baseline = lm_loss(vocab, tokens, dim)()
        torch.manual_seed(0)
        x = torch.randn(tokens, dim, requires_grad=True)
        weight = (torch.randn(vocab, dim) * 0.01).requires_grad_()
        y = torch.randint(0, vocab, (tokens,))
        options = torch.nn.LinearCrossEntropyOptions()

        def torchs():
            x.grad = weight.grad = None
            F.linear_cross_entropy(x, weight, y, options=options).backward()

        return torchs, baseline

    return setup


def matmul_floor(vocab: int, tokens: int = 2048, dim: int = 512):
    """The three matmuls of a linear + softmax loss with its gradients: ``x @ W.T``,
    ``grad @ W`` and ``grad.T @ x`` (the logits stand in for the gradient)."""

    def setup():
        torch.manual_seed(0)
        x, weight = torch.randn(tokens, dim), torch.randn(vocab, dim) * 0.01

        def floor():
            logits = x @ weight.T
            logits @ weight, logits.T @ x

        return floor

    return setup


def floor_row(vocab: int):
    def setup():
        _, logits_path = lm_loss(vocab)()
        return matmul_floor(vocab)(), logits_path

    return setup


def lm_ignored(vocab: int, tokens: int = 2048, dim: int = 512, ignored: float = 0.5):
    """Our loss with a fraction of the targets ignored against the same with none."""

    def setup():
        ours_all, _ = lm_loss(vocab, tokens, dim)()
        torch.manual_seed(0)
        _, readout = EmbedAndReadout(dim, num_discrete=vocab)
        x = torch.randn(tokens, dim, requires_grad=True)
        y = torch.randint(0, vocab, (tokens,)).masked_fill(torch.rand(tokens) < ignored, -1)

        def ours():
            x.grad = readout.embeddings.weight.grad = None
            readout(x, y).backward()

        return ours, ours_all

    return setup


def lm_token_log_probs(vocab: int, tokens: int = 2048, dim: int = 512):
    """Per-token log-probs and entropies with per-token upstream gradients (PPO's
    ``ratio * advantage`` plus an entropy bonus) against the logits path."""

    def setup():
        torch.manual_seed(0)
        _, readout = EmbedAndReadout(dim, num_discrete=vocab)
        x = torch.randn(tokens, dim, requires_grad=True)
        weight = readout.embeddings.weight
        y = torch.randint(0, vocab, (tokens,))
        advantage, bonus = torch.randn(tokens), torch.randn(tokens)

        def ours():
            x.grad = weight.grad = None
            log_p, entropy = readout.log_prob_from_embeds(x, y, return_entropy=True)
            (log_p * advantage + entropy * bonus).sum().backward()

        def baseline():
            x.grad = weight.grad = None
            log_p = (x @ weight.T).log_softmax(-1)
            entropy = -(log_p.exp() * log_p).sum(-1)
            (log_p.gather(-1, y[:, None]).squeeze(-1) * advantage + entropy * bonus).sum().backward()

        return ours, baseline

    return setup


def lm_kl(vocab: int, tokens: int = 2048, dim: int = 512):
    """Per-token KL to a frozen reference from the embeddings against the logits path."""

    def setup():
        torch.manual_seed(0)
        _, student = EmbedAndReadout(dim, num_discrete=vocab)
        _, teacher = EmbedAndReadout(dim, num_discrete=vocab)
        teacher.requires_grad_(False)
        x, x_ref = torch.randn(tokens, dim, requires_grad=True), torch.randn(tokens, dim)
        weight, weight_ref = student.embeddings.weight, teacher.embeddings.weight

        def ours():
            x.grad = weight.grad = None
            student.kl_div_from_embeds(x_ref, x, readout_true=teacher).sum().backward()

        def baseline():
            x.grad = weight.grad = None
            log_p, log_q = (x_ref @ weight_ref.T).log_softmax(-1), (x @ weight.T).log_softmax(-1)
            (log_p.exp() * (log_p - log_q)).sum().backward()

        return ours, baseline

    return setup


def no_grad(fn):
    def run():
        with torch.no_grad():
            fn()

    return run


# multi-discrete: the readout's methods against a loop of F.cross_entropy / Categorical per group


def multi_discrete(sizes, tokens: int, op: str, parallel: bool = True):
    def setup():
        torch.manual_seed(0)
        flat = torch.randn(tokens, sum(sizes), requires_grad=True)
        logits, other = flat.split(sizes, -1), torch.randn(tokens, sum(sizes)).split(sizes, -1)
        targets = torch.stack([torch.randint(0, n, (tokens,)) for n in sizes], -1)
        readout = ParameterlessReadout(num_discrete=sizes, use_parallel_multi_discrete=parallel)
        cats = lambda ls: [Categorical(logits=g) for g in ls]  # noqa: E731
        ours = {
            'loss': lambda: readout.calculate_loss(logits, targets).backward(),
            'sample': lambda: readout.sample(logits),
            'log_prob': lambda: readout.log_prob(logits, targets),
            'entropy': lambda: readout.entropy(logits),
            'kl_div': lambda: readout.kl_div(logits, other),
        }
        baseline = {
            'loss': lambda: torch.stack([F.cross_entropy(g, targets[:, i]) for i, g in enumerate(logits)]).mean().backward(),
            'sample': lambda: torch.stack([c.sample() for c in cats(logits)], -1),
            'log_prob': lambda: torch.stack([c.log_prob(targets[:, i]) for i, c in enumerate(cats(logits))], -1),
            'entropy': lambda: torch.stack([c.entropy() for c in cats(logits)], -1),
            'kl_div': lambda: torch.stack([kl_divergence(p, q) for p, q in zip(cats(logits), cats(other))], -1),
        }
        grad_free = op != 'loss'
        wrap = no_grad if grad_free else (lambda f: f)

        def reset(fn):
            def run():
                flat.grad = None
                fn()

            return run

        return wrap(reset(ours[op])), wrap(reset(baseline[op]))

    return setup


# embed forward + backward against nn.Embedding / the equivalent matmul


def embed_discrete(vocab: int = 32000, dim: int = 512, tokens: int = 8192, selector: bool = False):
    def setup():
        torch.manual_seed(0)
        rows = torch.randperm(vocab)[: vocab // 2]
        kwargs = dict(selectors=[[rows.tolist()]]) if selector else {}
        embed, _ = EmbedAndReadout(dim, num_discrete=vocab, **kwargs)
        local = len(rows) if selector else vocab
        ids = torch.randint(0, local, (tokens,))
        plain = torch.nn.Embedding(vocab, dim)
        weight = plain.weight
        grad_out = torch.randn(tokens, dim)

        def ours():
            embed.embeddings.weight.grad = None
            embed(ids).backward(grad_out)

        def baseline():
            weight.grad = None
            (F.embedding(rows[ids], weight) if selector else plain(ids)).backward(grad_out)

        return ours, baseline

    return setup


def embed_continuous(num_continuous: int = 64, dim: int = 512, tokens: int = 8192, selector: bool = False):
    def setup():
        torch.manual_seed(0)
        dims = list(range(0, num_continuous, 2)) if selector else list(range(num_continuous))
        kwargs = dict(selectors=[dims]) if selector else {}
        embed, _ = EmbedAndReadout(dim, num_continuous=num_continuous, **kwargs)
        values = torch.randn(tokens, len(dims))
        weight = torch.randn(num_continuous, dim, requires_grad=True)
        index = torch.tensor(dims)
        grad_out = torch.randn(tokens, dim)

        def ours():
            embed.embeddings.weight.grad = None
            embed(values).backward(grad_out)

        def baseline():
            weight.grad = None
            (values @ (weight[index] if selector else weight)).backward(grad_out)

        return ours, baseline

    return setup


# the cost of the content checks (ids in range, finite values): on (ours) against off (baseline)


def validation_cost(setup):
    def wrapped():
        checked, _ = setup()

        def unchecked():
            before = get_validate_args()
            set_validate_args(False)
            try:
                checked()
            finally:
                set_validate_args(before)

        return checked, unchecked

    return wrapped


MD_A = (3, 7, 20, 50, 120, 300, 600, 1000)
MD_B = (20000, 20000, 17)

CASES = [
    Case('lm floor: 3 matmuls vs logits path, V=32k', floor_row(32000)),
    Case('lm loss fwd+bwd, V=32k', lm_loss(32000), memory=True, floor=matmul_floor(32000)),
    Case('lm loss fwd+bwd, V=128k', lm_loss(128000), memory=True, reps=3, floor=matmul_floor(128000)),
    Case('lm loss, half the targets ignored vs none, V=32k', lm_ignored(32000)),
    Case('lm log_prob_from_embeds + entropy fwd+bwd, V=32k', lm_token_log_probs(32000), memory=True, floor=matmul_floor(32000)),
    Case('lm log_prob_from_embeds + entropy fwd+bwd, V=128k', lm_token_log_probs(128000), memory=True, reps=3, floor=matmul_floor(128000)),
    Case('lm kl_div_from_embeds fwd+bwd, V=32k', lm_kl(32000), memory=True, floor=matmul_floor(32000)),
    Case('lm loss no_grad, V=32k', lm_loss(32000, grad=False), memory=True),
    Case('lm: torch F.linear_cross_entropy, V=32k', torch_linear_cross_entropy(32000), memory=True),
    *[Case(f'multi-discrete A {op}', multi_discrete(MD_A, 4096, op)) for op in ('loss', 'sample', 'log_prob', 'entropy', 'kl_div')],
    *[Case(f'multi-discrete A {op} [sequential]', multi_discrete(MD_A, 4096, op, parallel=False)) for op in ('loss', 'sample', 'log_prob', 'entropy', 'kl_div')],
    *[Case(f'multi-discrete B {op}', multi_discrete(MD_B, 2048, op), reps=5) for op in ('loss', 'sample', 'log_prob', 'entropy', 'kl_div')],
    *[Case(f'multi-discrete B {op} [sequential]', multi_discrete(MD_B, 2048, op, parallel=False), reps=5) for op in ('loss', 'sample', 'log_prob', 'entropy', 'kl_div')],
    Case('embed discrete fwd+bwd', embed_discrete(), memory=True, reps=21),
    Case('embed discrete + selector fwd+bwd', embed_discrete(selector=True), memory=True, reps=21),
    Case('embed continuous fwd+bwd', embed_continuous(), memory=True, reps=21),
    Case('embed continuous + selector fwd+bwd', embed_continuous(selector=True), memory=True, reps=21),
    Case('checks on vs off: embed discrete fwd+bwd', validation_cost(embed_discrete()), reps=21),
    Case('checks on vs off: embed continuous fwd+bwd', validation_cost(embed_continuous()), reps=21),
    Case('checks on vs off: lm loss fwd+bwd, V=32k', validation_cost(lm_loss(32000))),
    Case('checks on vs off: multi-discrete A log_prob', validation_cost(multi_discrete(MD_A, 4096, 'log_prob')), reps=15),
]


def _peak_rise_mb(fn) -> float:
    def read(field):
        return int(re.search(rf'{field}:\s+(\d+)', open('/proc/self/status').read()).group(1)) / 1024

    with open('/proc/self/clear_refs', 'w') as f:
        f.write('5')  # reset the peak to the current resident size
    before = read('VmRSS')
    fn()
    return read('VmHWM') - before


def measure_memory(name: str, which: str) -> float:
    """In a fresh process: the peak rise of one first call."""
    out = subprocess.run(
        [sys.executable, __file__, '--memory-of', name, which], capture_output=True, text=True, check=True
    )
    return float(out.stdout.strip().splitlines()[-1])


def measure_times(case: Case, reps: int) -> tuple[float, float, float | None]:
    """Medians (ms) of ours, the baseline and the floor, run in alternation."""
    ours, baseline = case.setup()
    fns = {'ours': ours, 'baseline': baseline, **({'floor': case.floor()} if case.floor else {})}
    for fn in (*fns.values(), *fns.values()):  # warm up
        fn()
    times = {label: [] for label in fns}
    for _ in range(reps):
        for label, fn in fns.items():
            start = time.perf_counter()
            fn()
            times[label].append(time.perf_counter() - start)
    medians = {label: statistics.median(t) * 1e3 for label, t in times.items()}
    return medians['ours'], medians['baseline'], medians.get('floor')


def _embed_logits_loss(embed, readout, inp):
    return (lambda: embed(inp), lambda: readout(embed(inp)), lambda: readout(embed(inp), inp))


def compile_row() -> str:
    """Graph breaks of embed, logits and loss in four modalities (torch._dynamo.explain)."""
    import torch._dynamo as dynamo

    builds = {
        'discrete': (dict(num_discrete=50), lambda: torch.randint(0, 50, (2, 5))),
        'multi-discrete': (dict(num_discrete=(5, 7, 3)), lambda: torch.stack([torch.randint(0, n, (2, 5)) for n in (5, 7, 3)], -1)),
        'continuous': (dict(num_continuous=3), lambda: torch.randn(2, 5, 3)),
        'mixed': (dict(num_discrete=11, num_continuous=2), lambda: (torch.randint(0, 11, (2, 5)), torch.randn(2, 5, 2))),
    }
    breaks = graphs = 0
    for kwargs, make in builds.values():
        for fn in _embed_logits_loss(*EmbedAndReadout(16, **kwargs), make()):
            dynamo.reset()
            explained = dynamo.explain(fn)()
            breaks += explained.graph_break_count
            graphs += 1
    return f'| torch.compile graph breaks (embed, logits, loss x 4 modalities) | {breaks} in {graphs} functions | 0.2.7: 6-8 per loss | | | |'


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--quick', action='store_true', help='fewer repetitions')
    parser.add_argument('--only', default='', help='run the cases whose name starts with this')
    parser.add_argument('--memory-of', nargs=2, metavar=('CASE', 'WHICH'), help=argparse.SUPPRESS)
    args = parser.parse_args()
    torch.set_num_threads(THREADS)
    by_name = {c.name: c for c in CASES}

    if args.memory_of:
        name, which = args.memory_of
        ours, baseline = by_name[name].setup()
        print(_peak_rise_mb(ours if which == 'ours' else baseline))
        return

    cpu = platform.processor() or platform.machine()
    print(f'# {time.strftime("%Y-%m-%d")}, torch {torch.__version__}, CPU ({cpu}), {THREADS} threads\n')
    print('| case | ours (ms) | baseline (ms) | ratio | ours / floor | peak memory ours / baseline |')
    print('|---|---|---|---|---|---|')
    for case in CASES:
        if not case.name.startswith(args.only):
            continue
        reps = 3 if args.quick else case.reps
        ours_ms, base_ms, floor_ms = measure_times(case, reps)
        floor = f'{ours_ms / floor_ms:.2f}x (floor {floor_ms:.0f} ms)' if floor_ms else ''
        memory = ''
        if case.memory:
            mine, theirs = measure_memory(case.name, 'ours'), measure_memory(case.name, 'baseline')
            memory = f'{mine:.0f} / {theirs:.0f} MB ({mine / theirs:.0%})'
        print(f'| {case.name} | {ours_ms:.1f} | {base_ms:.1f} | {ours_ms / base_ms:.2f}x | {floor} | {memory} |', flush=True)
    if not args.only or 'compile'.startswith(args.only):
        print(compile_row(), flush=True)
    if not args.only or args.only.startswith('hot'):
        print('\nRL hot path (benchmarks/hot_path.py): one thread, ours against the hand-written torch it replaces\n')
        print_hot_path_table(args.quick)
    if not args.only or args.only.startswith('fused'):  # the fused objectives against their floor and Liger: their own table
        from fused_objectives import run as fused_objectives  # benchmarks/ is the script's folder, on sys.path

        print()
        fused_objectives(vocabs=(32000,) if args.quick else (32000, 128000), thread_counts=(1,), quick=args.quick)  # one thread: CPU time


if __name__ == '__main__':
    main()
