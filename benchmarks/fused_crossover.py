"""Where the fused loss pays: forward + backward of ``readout(h, targets)`` on the fused
path (``fused_cross_entropy=True``) against the logits path (``False``), over a grid of
vocabulary sizes and token counts, at 1 and 2 threads, on this machine's CPU.

    python benchmarks/fused_crossover.py            # the grid (about half an hour on 2 busy cores)
    python benchmarks/fused_crossover.py --quick    # fewer repetitions and cells

Prints one table per (threads, D): ``fused / logits`` time ratios over repetitions
that alternate the two (one thread: medians of the process's CPU time; more: minima of
the wall clock, since a busy machine delays most repetitions of a multi-threaded op),
rows = tokens, columns = vocabulary size (below 1: the fused path is faster); cells
over ``MAX_WORK`` multiply-adds are left out. The rule
``_losses.fused_pays`` and its constants come from these tables (see its docstring).
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from discrete_continuous_embed_readout import Readout

VOCABS = (16, 64, 256, 1024, 4096, 16384, 65536)
TOKENS = (1, 16, 64, 256, 1024, 4096)
MAX_WORK = 1 << 31  # tokens * vocab * dim per cell, to keep the grid to minutes


def ratio(tokens: int, vocab: int, dim: int, reps: int, clock=time.process_time, stat=statistics.median) -> float:
    """Fused / logits time of forward + backward (``stat`` of repetitions that alternate
    the two). ``clock``: the process's CPU time by default, which a shared machine's
    other work leaves out (with one thread; with more, idle OpenMP workers spin and
    count, so ``main`` takes the wall clock's minimum there)."""
    torch.manual_seed(0)
    readout = Readout(dim, num_discrete=vocab)
    h = torch.randn(tokens, dim, requires_grad=True)
    y = torch.randint(0, vocab, (tokens,))

    def run(fused: bool):
        def call():
            readout.fused_cross_entropy = fused
            h.grad = readout.embeddings.weight.grad = None
            readout(h, y).backward()

        return call

    fused, logits = run(True), run(False)
    fused(), logits()
    start = clock()
    fused(), logits()
    inner = max(1, int(4e-3 / max(clock() - start, 1e-9)))  # about 2 ms per timing
    times = {fused: [], logits: []}
    for rep in range(reps):
        for fn in (fused, logits) if rep % 2 == 0 else (logits, fused):
            begin = clock()
            for _ in range(inner):
                fn()
            times[fn].append(clock() - begin)
    return stat(times[fused]) / stat(times[logits])


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--quick', action='store_true', help='fewer repetitions and cells')
    parser.add_argument('--threads', type=int, nargs='+', default=[1, 2])
    parser.add_argument('--tokens', type=int, nargs='+', default=list(TOKENS))
    args = parser.parse_args()
    reps = 5 if args.quick else 11
    vocabs = VOCABS[::2] if args.quick else VOCABS
    print(f'# {time.strftime("%Y-%m-%d")}, torch {torch.__version__}: fused / logits time of forward + backward\n')
    for threads in args.threads:
        torch.set_num_threads(threads)
        clock, stat = (time.process_time, statistics.median) if threads == 1 else (time.perf_counter, min)
        for dim in (64, 512):
            print(f'\n{threads} thread(s), D = {dim}\n')
            print('| tokens | ' + ' | '.join(f'V={v}' for v in vocabs) + ' |')
            print('|---|' + '---|' * len(vocabs))
            for tokens in args.tokens:
                cells = [f'{ratio(tokens, v, dim, reps, clock, stat):.2f}' if tokens * v * dim <= MAX_WORK else '' for v in vocabs]
                print(f'| {tokens} | ' + ' | '.join(cells) + ' |', flush=True)


if __name__ == '__main__':
    main()
