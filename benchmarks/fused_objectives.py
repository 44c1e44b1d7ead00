"""The fused LM objectives at the matmul floor: the policy loss, the distillation loss
and the per-token log-probs + entropies, each against the matmuls it needs at least,
the plain logits path, and Liger-Kernel's fused losses (when ``liger_kernel`` and
``triton`` import; ``pip install liger-kernel triton``, its chunked losses run on a CPU).

    python benchmarks/fused_objectives.py --quick               # V = 32k, fewer repetitions
    python benchmarks/fused_objectives.py                       # V = 32k and 128k, 1 thread and torch's default
    python benchmarks/fused_objectives.py --vocab 128000 --threads 1

Inputs: 2,048 tokens (8 sequences of 256), D = 512, float32. The floor is the matmuls
timed as plain ``torch.mm`` of the same shapes: ``x @ W.T``, ``g @ W``, ``g.T @ x``
(three), plus the teacher's ``x_t @ W_t.T`` for distillation (four); the per-token
path's backward recomputes the logits, so its bound is stated against the three.
Times are medians over repetitions that alternate every implementation (a noisy
machine slows all alike); with one thread they are the process's CPU time
(``time.process_time``), which other processes on a shared machine do not inflate, with
more threads the wall clock. Peak memory is the rise of a fresh process's peak resident
memory during one call (Linux: ``/proc/self/clear_refs``), as a fraction of the
logits path's (in the rows of the first thread count). Liger runs with ``compiled=False`` (its loss math is tiny next to the
matmuls). Where Liger computes the same objective, the loss values are compared.
"""

from __future__ import annotations

import argparse
import importlib.util
import re
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # this checkout's package first, run from anywhere
from discrete_continuous_embed_readout import Readout  # noqa: E402

TOKENS, SEQUENCES, DIM = 2048, 8, 512
HAVE_LIGER = importlib.util.find_spec('liger_kernel') is not None and importlib.util.find_spec('triton') is not None


@dataclass(frozen=True)
class Case:
    name: str
    build: object  # vocab -> dict of label -> (fn returning the loss value or None)
    floor_matmuls: int  # 3, or 4 with a teacher
    liger_compares_values: bool = True


def _inputs(vocab: int, seed: int = 0):
    gen = torch.Generator().manual_seed(seed)
    readout = Readout(DIM, num_discrete=vocab)
    with torch.no_grad():
        readout.embeddings.weight.normal_(0.0, 0.05, generator=gen)
    x = torch.randn(SEQUENCES, TOKENS // SEQUENCES, DIM, generator=gen).requires_grad_()
    actions = torch.randint(0, vocab, (SEQUENCES, TOKENS // SEQUENCES), generator=gen)
    return readout, x, actions, gen


def _run(readout, x, fn):
    """Forward + backward with fresh gradients; returns the loss value."""

    def call():
        x.grad = readout.embeddings.weight.grad = None
        loss = fn()
        loss.backward()
        return loss.item()

    return call


def policy_case(loss_type: str, kl: bool, entropy_coef: float):
    """Ours, the logits path and (without an entropy bonus) Liger's ``LigerFusedLinearGRPOLoss`` on one objective."""

    def build(vocab: int):
        readout, x, actions, gen = _inputs(vocab)
        weight = readout.embeddings.weight
        advantages = torch.randn(SEQUENCES, generator=gen)
        with torch.no_grad():
            current = readout.log_prob_from_embeds(x, actions)  # the policy's log-probs, without holding the logits
        old = current + 0.3 * torch.randn(current.shape, generator=gen)
        ref = current + 0.3 * torch.randn(current.shape, generator=gen) if kl else None
        mask = torch.ones(actions.shape, dtype=torch.bool)
        kw = dict(loss_type=loss_type, ref_log_probs=ref, kl_coef=0.04 if kl else 0.0, entropy_coef=entropy_coef)

        def ours():
            return readout.policy_loss_from_embeds(x, actions, advantages, old_log_probs=old, **kw).loss

        def logits_path():
            log_p = (x @ weight.T).log_softmax(-1)
            logp = log_p.gather(-1, actions[..., None]).squeeze(-1)
            if loss_type == 'gspo':
                ratio = (logp - old).mean(-1, keepdim=True).exp()
            else:
                ratio = (logp - old).exp()
            per_token = -torch.min(ratio * advantages[:, None], ratio.clamp(0.8, 1.2) * advantages[:, None])
            if kl:
                per_token = per_token + 0.04 * ((ref - logp).exp() - (ref - logp) - 1)
            if entropy_coef:
                per_token = per_token + entropy_coef * (log_p.exp() * log_p).sum(-1)
            return per_token.mean(-1).mean() if loss_type in ('grpo', 'gspo') else per_token.mean()

        fns = {'ours': _run(readout, x, ours), 'logits': _run(readout, x, logits_path)}
        if HAVE_LIGER and not entropy_coef:
            from liger_kernel.chunked_loss import LigerFusedLinearGRPOLoss

            level = 'sequence' if loss_type == 'gspo' else 'token'
            liger = LigerFusedLinearGRPOLoss(beta=0.04 if kl else 0.0, use_ref_model=kl, compiled=False, importance_sampling_level=level,
                                             loss_type='grpo' if loss_type == 'gspo' else loss_type)  # fmt: skip
            fns['liger'] = _run(readout, x, lambda: liger(x, weight, actions, mask.long(), advantages, old_per_token_logps=old, ref_per_token_logps=ref)[0])
        return fns

    return build


def distill_case(divergence: str, beta: float):
    """Ours, the logits path and Liger's ``LigerFusedLinearJSDLoss`` (``beta`` 0: forward KL; else the JSD)."""

    def build(vocab: int):
        readout, x, _, gen = _inputs(vocab)
        teacher = Readout(DIM, num_discrete=vocab)
        with torch.no_grad():
            teacher.embeddings.weight.normal_(0.0, 0.05, generator=gen)
        teacher.requires_grad_(False)
        x_t = torch.randn(TOKENS, DIM, generator=gen)
        weight, flat = readout.embeddings.weight, x.view(-1, DIM)

        def ours():
            return readout.distill_loss_from_embeds(flat, x_t, teacher=teacher, divergence=divergence, beta=beta)

        def logits_path():
            log_q = (flat @ weight.T).log_softmax(-1)
            log_p = (x_t @ teacher.embeddings.weight.T).log_softmax(-1)
            if divergence == 'forward_kl':
                return (log_p.exp() * (log_p - log_q)).sum(-1).mean()
            log_m = torch.logaddexp(log_p + torch.tensor(beta).log(), log_q + torch.tensor(1 - beta).log())
            return (beta * (log_p.exp() * (log_p - log_m)).sum(-1) + (1 - beta) * (log_q.exp() * (log_q - log_m)).sum(-1)).mean()

        fns = {'ours': _run(readout, x, ours), 'logits': _run(readout, x, logits_path)}
        if HAVE_LIGER:
            from liger_kernel.chunked_loss import LigerFusedLinearJSDLoss

            liger = LigerFusedLinearJSDLoss(weight_hard_loss=0.0, weight_soft_loss=1.0, beta=0.0 if divergence == 'forward_kl' else beta, compiled=False)
            targets = torch.zeros(TOKENS, dtype=torch.long)
            fns['liger'] = _run(readout, x, lambda: liger(flat, weight, x_t, teacher.embeddings.weight, targets))
        return fns

    return build


def token_log_probs_case(vocab: int):
    """Per-token log-probs and entropies with per-token upstream gradients (a PPO
    objective and an entropy bonus written by the user) against the logits path."""
    readout, x, actions, gen = _inputs(vocab)
    weight = readout.embeddings.weight
    advantage, bonus = torch.randn(actions.shape, generator=gen), torch.randn(actions.shape, generator=gen)

    def ours():
        log_p, entropy = readout.log_prob_from_embeds(x, actions, return_entropy=True)
        return (log_p * advantage + entropy * bonus).sum()

    def logits_path():
        log_p = (x @ weight.T).log_softmax(-1)
        entropy = -(log_p.exp() * log_p).sum(-1)
        return (log_p.gather(-1, actions[..., None]).squeeze(-1) * advantage + entropy * bonus).sum()

    return {'ours': _run(readout, x, ours), 'logits': _run(readout, x, logits_path)}


CASES = [
    Case('policy DAPO (no KL)', policy_case('dapo', kl=False, entropy_coef=0.0), 3),
    Case('policy GRPO + k3 KL', policy_case('grpo', kl=True, entropy_coef=0.0), 3),
    Case('policy GRPO + k3 KL + entropy bonus', policy_case('grpo', kl=True, entropy_coef=0.01), 3),
    Case('policy GSPO', policy_case('gspo', kl=False, entropy_coef=0.0), 3),
    Case('distill forward KL', distill_case('forward_kl', 0.0), 4),
    Case('distill JSD beta=0.5', distill_case('jsd', 0.5), 4),
    Case('log_prob_from_embeds + entropy', token_log_probs_case, 3),
]


def floor(vocab: int, matmuls: int):
    """The matmuls of the objective as plain ``torch.mm`` (the logits stand in for the gradient)."""
    gen = torch.Generator().manual_seed(1)
    x, weight = torch.randn(TOKENS, DIM, generator=gen), torch.randn(vocab, DIM, generator=gen) * 0.05
    x_t, weight_t = torch.randn(TOKENS, DIM, generator=gen), torch.randn(vocab, DIM, generator=gen) * 0.05

    def run():
        if matmuls == 4:
            x_t @ weight_t.T
        logits = x @ weight.T
        logits @ weight, logits.T @ x

    return run


def measure_times(case: Case, vocab: int, reps: int) -> tuple[dict, dict]:
    """Median ms per label (the floor included), alternating; and each label's loss value."""
    fns = {**case.build(vocab), 'floor': floor(vocab, case.floor_matmuls)}
    values = {label: fn() for label, fn in fns.items()}  # warm-up, and the values
    times = {label: [] for label in fns}
    clock = time.process_time if torch.get_num_threads() == 1 else time.perf_counter
    for _ in range(reps):
        for label, fn in fns.items():
            start = clock()
            fn()
            times[label].append(clock() - start)
    return {label: statistics.median(t) * 1e3 for label, t in times.items()}, values


def _peak_rise_mb(fn) -> float:
    def read(field):
        return int(re.search(rf'{field}:\s+(\d+)', Path('/proc/self/status').read_text()).group(1)) / 1024

    with open('/proc/self/clear_refs', 'w') as f:
        f.write('5')  # reset the peak to the current resident size
    before = read('VmRSS')
    fn()
    return read('VmHWM') - before


def measure_memory(case: Case, vocab: int, label: str) -> float:
    """In a fresh process: the peak rise of one first call."""
    command = [sys.executable, __file__, '--memory-of', case.name, str(vocab), label]
    out = subprocess.run(command, capture_output=True, text=True, check=True)
    return float(out.stdout.strip().splitlines()[-1])


def row(case: Case, vocab: int, threads: int, reps: int, memory: bool) -> str:
    ms, values = measure_times(case, vocab, reps)
    liger = 'liger' in ms
    cells = [case.name, f'{vocab // 1000}k', str(threads), f'{ms["ours"]:.0f}', f'{ms["logits"]:.0f}', f'{ms["liger"]:.0f}' if liger else '',
             f'{ms["floor"]:.0f}', f'{ms["ours"] / ms["floor"]:.2f}x', f'{ms["ours"] / ms["liger"]:.2f}x' if liger else '']  # fmt: skip
    if memory:
        mine, logits = measure_memory(case, vocab, 'ours'), measure_memory(case, vocab, 'logits')
        theirs = f', Liger {measure_memory(case, vocab, "liger"):.0f}' if liger else ''
        cells.append(f'{mine / logits:.0%} ({mine:.0f} / {logits:.0f} MB{theirs})')
    else:
        cells.append('')
    if liger:
        same = abs(values['ours'] - values['liger']) <= 1e-4 * max(1.0, abs(values['liger']))
        cells.append(f'{values["ours"]:.5f} / {values["liger"]:.5f}' + ('' if same else ' (differ)'))
    else:
        cells.append('')
    return '| ' + ' | '.join(cells) + ' |'


HEADER = ('| objective | V | threads | ours (ms) | logits path (ms) | Liger (ms) | floor (ms) | ours / floor | ours / Liger '
          '| peak memory: ours / logits path (ours, logits path, Liger) | loss ours / Liger |\n|---|---|---|---|---|---|---|---|---|---|---|')  # fmt: skip


def run(vocabs=(32000, 128000), thread_counts=(1, None), quick: bool = False, memory: bool = True, only: str = '', reps: int | None = None) -> None:
    """Print the table (``None`` threads: torch's default); peak memory in the rows of the first thread count."""
    default_threads = torch.get_num_threads()
    print(f'# fused objectives, {time.strftime("%Y-%m-%d")}, torch {torch.__version__}, Liger {"installed" if HAVE_LIGER else "not installed"}\n')
    print(HEADER, flush=True)
    try:
        for vocab in vocabs:
            for threads in thread_counts:
                torch.set_num_threads(threads or default_threads)
                for case in CASES:
                    if case.name.startswith(only):
                        count = reps or (2 if quick or vocab > 64000 else 5)
                        print(row(case, vocab, torch.get_num_threads(), count, memory and threads == thread_counts[0]), flush=True)
    finally:
        torch.set_num_threads(default_threads)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--quick', action='store_true', help='V = 32k only, two repetitions')
    parser.add_argument('--vocab', type=int, action='append', help='vocabulary sizes (default 32000 and 128000)')
    parser.add_argument('--threads', type=int, action='append', help='torch threads (default: 1 and torch\'s default)')
    parser.add_argument('--only', default='', help='the objectives whose name starts with this')
    parser.add_argument('--no-memory', action='store_true', help='skip the peak-memory subprocesses')
    parser.add_argument('--reps', type=int, help='repetitions per row (default 5; 2 with --quick or V > 64k)')
    parser.add_argument('--memory-of', nargs=3, metavar=('CASE', 'VOCAB', 'LABEL'), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.memory_of:
        name, vocab, label = args.memory_of
        fns = next(c for c in CASES if c.name == name).build(int(vocab))
        print(_peak_rise_mb(fns[label]))
        return
    vocabs = args.vocab or ((32000,) if args.quick else (32000, 128000))
    run(vocabs, tuple(args.threads) if args.threads else (1, None), args.quick, not args.no_memory, args.only, args.reps)


if __name__ == '__main__':
    main()
