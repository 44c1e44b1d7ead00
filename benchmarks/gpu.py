"""The language-model rows on a CUDA GPU: every check and benchmark of the fused paths
in one call, ending in one table.

    make gpu-wheels     # where a package index is reachable: Liger-Kernel's and Cut Cross-Entropy's
                        # wheels (and beartype's) into benchmarks/wheels/, to carry to the GPU machine
    make bench-gpu      # on the GPU machine: pip-installs those wheels with --no-index, runs this script
    python benchmarks/gpu.py --cpu-smoke   # anywhere: the script end to end at tiny sizes on the CPU

Parts, in order (each prints as it goes, so a run cut short still shows what it did):

1. ``check``: on the GPU, the readout's methods on a mixed readout (every continuous
   head, selectors, masks) against the same module on the CPU, in float32; then the
   fused loss (plain, and with label smoothing + z-loss + soft-cap), the per-token
   log-probs / entropies (temperature, soft-cap), the per-token KL, and the fused
   objectives (``gpu_objectives.check_objectives``: the policy loss as GRPO with k3 and
   an entropy bonus, DAPO and GSPO; the distillation loss as forward KL with hard
   targets and the JSD), in bf16, on the Triton kernels and on the chunked PyTorch
   code, against a float64 CPU reference (relative error of values and gradients);
   Liger's and Cut Cross-Entropy's losses against the same reference where they are
   installed.
2. ``tiles``: the Triton kernels' tile sizes (``fused.triton_kernels.TILES``), each
   forward and backward candidate timed on the loss, the KL and the JSD at one vocabulary;
   the fastest are used for the table and printed as the defaults to set.
3. the table: per vocabulary size (32k, 128k, 256k) and case (the loss; per-token
   log-probs with entropies and per-token upstream gradients; the per-token KL to a
   frozen reference), forward + backward time and peak memory of: ours on the Triton
   kernels, ours on the chunked PyTorch code, the plain path as users write it (bf16
   matmul, float32 softmax), the plain path under ``torch.compile``, the floor (the
   three bf16 matmuls ``x @ W.T``, ``grad @ W``, ``grad.T @ x``), and for the loss
   Liger's and Cut Cross-Entropy's fused losses (with its default gradient filter, and
   exact); then the fused objectives (``gpu_objectives.OBJECTIVES``: the policy loss as
   GRPO with a k3 KL and an entropy bonus and as DAPO, the distillation loss as forward
   KL and JSD against a frozen teacher), each against its plain logits path, compiled
   and not, Liger's ``LigerFusedLinearGRPOLoss`` / ``LigerFusedLinearJSDLoss`` where
   installed, and its floor (three matmuls; four with the teacher's logits). Times are
   medians of CUDA-event-timed repetitions, alternating the
   implementations; peak memory is ``torch.cuda.max_memory_allocated`` above what was
   allocated before the call. The last columns are the issue's goals: ours on the
   kernels against the compiled plain path, in time and in peak memory.
4. ``sync``: every call of every head (discrete, several groups, gaussian, squashed
   with ``rescale_range``, beta, kumaraswamy, the binned heads, mixed) on CUDA tensors
   under ``torch.cuda.set_sync_debug_mode('error')``, which raises on any host
   synchronisation: the default path (``set_validate_args('auto')``) must not wait for
   the device (``tests/test_host_syncs.py`` is the CPU's form of this check); whether
   one fused call (loss, per-token, KL, policy, distillation) on the kernels runs under it; and the RL-sized hot-path rows of
   ``benchmarks/hot_path.py`` (batch 1 / 64 / 1,024 against hand-written torch), every
   call of ours under it (the hand-written side's ``torch.distributions`` argument
   checks synchronise, so it runs outside); ``--cpu-smoke`` runs them at batch 1 on the CPU.

``--chunk-budgets-mib 64 256 1024 4096`` adds a sweep of the chunked PyTorch path's
chunk memory budget (``ACCELERATOR_CHUNK_BYTES``) before the table.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import json
import os
import pathlib
import statistics
import time

import torch
import torch.nn.functional as F
from gpu_objectives import check_objectives, objective_workloads  # benchmarks/, this script's folder

from discrete_continuous_embed_readout import EmbedAndReadout, set_validate_args
from discrete_continuous_embed_readout.fused import backend
from discrete_continuous_embed_readout.fused import linear_softmax as _linear_softmax

HERE = pathlib.Path(__file__).resolve().parent
CASES = ('loss', 'token', 'kl')
OURS = {'kernels': 'triton', 'chunked': 'torch'}  # ours, by fused.backend mode
THIRD_PARTY = ('liger', 'cce', 'cce exact')


def sync(device):
    if device.type == 'cuda':
        torch.cuda.synchronize()


def timed(fn, device) -> float:
    """Seconds of one call."""
    if device.type == 'cuda':
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        torch.cuda.synchronize()
        return start.elapsed_time(end) / 1e3
    begin = time.perf_counter()
    fn()
    return time.perf_counter() - begin


def failure(error: BaseException) -> str:
    if isinstance(error, torch.OutOfMemoryError):
        return 'OOM'
    return f'failed: {type(error).__name__}: {str(error).splitlines()[0][:120] if str(error) else ""}'


def medians(fns: dict, device, reps: int, warmup: int = 2) -> dict:
    """Median seconds per implementation (alternating); a failing one gets its failure's text."""
    out, live = {}, {}
    for name, fn in fns.items():
        try:
            for _ in range(warmup):
                fn()
            live[name] = []
        except Exception as error:  # OOM, an unsupported shape: reported in the table
            out[name] = failure(error)
            torch.cuda.empty_cache() if device.type == 'cuda' else None
    sync(device)
    for _ in range(reps):
        for name in list(live):
            try:
                live[name].append(timed(fns[name], device))
            except Exception as error:
                out[name] = failure(error)
                del live[name]
    return {**out, **{k: statistics.median(v) for k, v in live.items()}}


def peak_bytes(fn, device):
    if device.type != 'cuda':
        return None
    try:
        fn()  # warm (compiled graphs, workspaces)
        torch.cuda.synchronize()
        torch.cuda.empty_cache()
        before = torch.cuda.memory_allocated()
        torch.cuda.reset_peak_memory_stats()
        fn()
        torch.cuda.synchronize()
        return torch.cuda.max_memory_allocated() - before
    except Exception as error:
        torch.cuda.empty_cache()
        return failure(error)


def kernels_runnable(device) -> str | None:
    """``None`` if the Triton kernels can run here, else why not."""
    if not backend.triton_available():
        return 'Triton not installed'
    if device.type != 'cuda' and os.environ.get('TRITON_INTERPRET') != '1':
        return 'needs CUDA (or TRITON_INTERPRET=1)'
    return None


def third_party(device) -> dict:
    """Liger's and Cut Cross-Entropy's fused losses as ``f(x, weight, y)``, or why they are absent."""
    found = {}
    try:
        from liger_kernel.transformers.fused_linear_cross_entropy import LigerFusedLinearCrossEntropyLoss

        liger = LigerFusedLinearCrossEntropyLoss()
        found['liger'] = lambda x, w, y: liger(w, x, y)
    except Exception as error:  # ImportError, or whatever its import needs and lacks
        found['liger'] = f'not installed ({type(error).__name__})'
    try:
        from cut_cross_entropy import linear_cross_entropy

        found['cce'] = lambda x, w, y: linear_cross_entropy(x, w, y)  # its default: gradient filtering ('high')
        found['cce exact'] = lambda x, w, y: linear_cross_entropy(x, w, y, filter_eps=None)
    except Exception as error:
        found['cce'] = found['cce exact'] = f'not installed ({type(error).__name__})'
    if device.type != 'cuda':
        found = {k: v if isinstance(v, str) else 'needs CUDA' for k, v in found.items()}
    return found


# ------------------------------------------------------------------ the workloads


def plain_loss(x, weight, y):
    return F.cross_entropy((x @ weight.T).float(), y)


def plain_token(x, weight, y, advantage, bonus):
    log_p = (x @ weight.T).float().log_softmax(-1)
    entropy = -(log_p.exp() * log_p).sum(-1)
    return (log_p.gather(-1, y[:, None]).squeeze(-1) * advantage + entropy * bonus).sum()


def plain_kl(x, weight, x_ref, weight_ref):
    log_p, log_q = (x_ref @ weight_ref.T).float().log_softmax(-1), (x @ weight.T).float().log_softmax(-1)
    return (log_p.exp() * (log_p - log_q)).sum()


def workloads(vocab, tokens, dim, device, dtype, compile_plain=True):
    """``(cases, floor)``: ``cases[case][implementation]`` a forward + backward closure (or
    why that implementation is absent), ``floor`` the three matmuls."""
    torch.manual_seed(0)
    _, readout = EmbedAndReadout(dim, num_discrete=vocab)
    _, reference = EmbedAndReadout(dim, num_discrete=vocab)
    readout.to(device, dtype)
    reference.to(device, dtype).requires_grad_(False)
    weight, weight_ref = readout.embeddings.weight, reference.embeddings.weight
    x = torch.randn(tokens, dim, device=device, dtype=dtype, requires_grad=True)
    x_ref = torch.randn(tokens, dim, device=device, dtype=dtype)
    y = torch.randint(0, vocab, (tokens,), device=device)
    advantage, bonus = torch.randn(tokens, device=device), torch.randn(tokens, device=device)

    def step(objective, mode=None):
        def run():
            x.grad = weight.grad = None
            with backend.use_kernels(mode) if mode else contextlib.nullcontext():
                objective().backward()

        return run

    ours = {
        'loss': lambda: readout(x, y),
        'token': lambda: (lambda lp, ent: (lp * advantage + ent * bonus).sum())(*readout.log_prob_from_embeds(x, y, return_entropy=True)),
        'kl': lambda: readout.kl_div_from_embeds(x_ref, x, readout_true=reference).sum(),
    }
    plains = {'loss': (plain_loss, (x, weight, y)), 'token': (plain_token, (x, weight, y, advantage, bonus)), 'kl': (plain_kl, (x, weight, x_ref, weight_ref))}
    absent = kernels_runnable(device)
    others = third_party(device)
    cases = {}
    for case in CASES:
        fn, args = plains[case]
        compiled = torch.compile(fn, dynamic=False) if compile_plain else None
        cases[case] = {
            'kernels': absent or step(ours[case], 'triton'),
            'chunked': step(ours[case], 'torch'),
            'plain': step(lambda fn=fn, args=args: fn(*args)),
            'compiled': step(lambda c=compiled, args=args: c(*args)) if compile_plain else 'not run (--skip compile)',
        }
        for name in THIRD_PARTY:
            cases[case][name] = (others[name] if isinstance(others[name], str) else step(lambda f=others[name]: f(x, weight, y))) if case == 'loss' else '-'

    def floor():
        logits = x.detach() @ weight.detach().T
        logits @ weight.detach(), logits.T @ x.detach()

    return cases, floor


# ------------------------------------------------------------------ 1. correctness

SELECTORS = [([[0, 1, 2], [3, 5, 7, 9]], [0, 2])]  # 12 discrete rows, 3 continuous dims


def rel(a, b) -> float:
    a, b = a.detach().double().cpu(), b.detach().double().cpu()
    return float((a - b).norm() / b.norm().clamp_min(1e-30))


class Record:
    """Check lines and the names of the failed checks."""

    def __init__(self):
        self.lines, self.failures = [], []

    def __call__(self, name, err, tol):
        ok = err <= tol and err == err
        self.lines.append(f'  {name:<66} rel err {err:.2e} (tol {tol:.0e}) {"ok" if ok else "FAIL"}')
        print(self.lines[-1], flush=True)
        if not ok:
            self.failures.append(name)


def check_modules(device, record: Record):
    """A mixed readout's methods on the device equal the CPU module's (float32)."""
    heads = {'gaussian': {}, 'squashed gaussian': dict(continuous_squashed=True), 'beta': dict(continuous_dist_type='beta'), 'kumaraswamy': dict(continuous_dist_type='kumaraswamy')}
    for dist_type, head in heads.items():
        torch.manual_seed(0)
        _, cpu = EmbedAndReadout(32, num_discrete=12, num_continuous=3, selectors=SELECTORS, **head)
        gpu = EmbedAndReadout(32, num_discrete=12, num_continuous=3, selectors=SELECTORS, **head)[1]
        gpu.load_state_dict(cpu.state_dict())
        gpu.to(device)
        h = torch.randn(64, 32)
        out_cpu, out_gpu = cpu(h, selector_index=0), gpu(h.to(device), selector_index=0)
        sample = cpu.sample(out_cpu, selector_index=0)
        sample_gpu = tuple(s.to(device) for s in sample)
        for method in ('log_prob', 'entropy'):
            a = getattr(cpu, method)(out_cpu, *((sample,) if method == 'log_prob' else ()), selector_index=0)
            b = getattr(gpu, method)(out_gpu, *((sample_gpu,) if method == 'log_prob' else ()), selector_index=0)
            for i, (p, q) in enumerate(zip(a, b)):
                record(f'{dist_type} {method} part {i} ({device.type} vs cpu)', rel(q, p), 1e-4)
        for p, q in zip(cpu.mode(out_cpu, selector_index=0), gpu.mode(out_gpu, selector_index=0)):
            record(f'{dist_type} mode ({device.type} vs cpu)', rel(q, p), 1e-4)
        drawn = gpu.sample(out_gpu, selector_index=0)
        record(f'{dist_type} sample lands on {device.type}', 0.0 if all(t.device.type == device.type for t in drawn) else 1.0, 0)
        for i, (p, q) in enumerate(zip(cpu.calculate_loss(out_cpu, sample, selector_index=0), gpu.calculate_loss(out_gpu, sample_gpu, selector_index=0))):
            record(f'{dist_type} loss part {i} ({device.type} vs cpu)', rel(q, p), 1e-4)


def capped(z, softcap):
    return z if softcap is None else softcap * torch.tanh(z / softcap)


def check_fused(device, dtype, record: Record, label: str, vocab: int, tokens: int, dim: int, loss_fn=None):
    """The fused paths (or ``loss_fn(x, weight, y)``) in ``dtype`` against float64 on the CPU."""
    torch.manual_seed(1)
    options = dict(label_smoothing=0.1, z_loss_weight=1e-4, logit_softcap=2.0)  # logits of std ~1.6: the cap bends them
    _, readout = EmbedAndReadout(dim, num_discrete=vocab)
    _, teacher = EmbedAndReadout(dim, num_discrete=vocab)
    for table in (readout, teacher):
        torch.nn.init.normal_(table.embeddings.weight, std=0.1)
    readout.to(device, dtype)
    teacher.to(device, dtype).requires_grad_(False)
    x = torch.randn(tokens, dim, device=device, dtype=dtype, requires_grad=True)
    x_t = torch.randn(tokens, dim, device=device, dtype=dtype)
    y = torch.randint(0, vocab, (tokens,), device=device)
    y[::7] = -1
    g1, g2 = torch.randn(tokens, device=device), torch.randn(tokens, device=device)
    weight = readout.embeddings.weight
    x64, w64 = x.detach().double().cpu().requires_grad_(), weight.detach().double().cpu().requires_grad_()
    wt64, xt64 = teacher.embeddings.weight.detach().double().cpu(), x_t.detach().double().cpu()

    def grads(value, ref):
        return zip(('x', 'W'), torch.autograd.grad(value, (x, weight)), torch.autograd.grad(ref, (x64, w64)))

    if loss_fn is not None:  # a third party's loss: plain cross entropy, no ignored rows
        yk = y.clamp_min(0)
        loss, ref = loss_fn(x, weight, yk), F.cross_entropy(x64 @ w64.T, yk.cpu())
        record(f'{label} loss (vs float64)', rel(loss, ref), 1e-2)
        for name, a, b in grads(loss, ref):
            record(f'{label} loss grad {name}', rel(a, b), 2e-2)
        return
    loss, ref = readout(x, y), F.cross_entropy(x64 @ w64.T, y.cpu(), ignore_index=-1)
    record(f'{label} loss (vs float64)', rel(loss, ref), 1e-2)
    for name, a, b in grads(loss, ref):
        record(f'{label} loss grad {name}', rel(a, b), 2e-2)

    _, with_options = EmbedAndReadout(dim, num_discrete=vocab, readout_kwargs=options)
    with_options.load_state_dict(readout.state_dict())
    with_options.to(device, dtype)
    weight_o = with_options.embeddings.weight
    loss = with_options(x, y)
    z = capped(x64 @ w64.T, options['logit_softcap'])
    keep = (y != -1).cpu()
    per = F.cross_entropy(z, y.clamp_min(0).cpu(), reduction='none', label_smoothing=options['label_smoothing']) + options['z_loss_weight'] * z.logsumexp(-1).square()
    ref = per[keep].mean()
    record(f'{label} loss + smoothing, z-loss, softcap', rel(loss, ref), 1e-2)
    for name, a, b in zip(('x', 'W'), torch.autograd.grad(loss, (x, weight_o)), torch.autograd.grad(ref, (x64, w64))):
        record(f'{label} loss + options grad {name}', rel(a, b), 2e-2)

    yk, temperature = y.clamp_min(0), 0.8
    log_p, entropy = with_options.log_prob_from_embeds(x, yk, temperature=temperature, return_entropy=True)
    lp64 = (capped(x64 @ w64.T, options['logit_softcap']) / temperature).log_softmax(-1)
    ent64, tok64 = -(lp64.exp() * lp64).sum(-1), lp64.gather(-1, yk.cpu()[:, None]).squeeze(-1)
    record(f'{label} per-token log-probs (T {temperature}, softcap)', rel(log_p, tok64), 1e-2)
    record(f'{label} per-token entropies', rel(entropy, ent64), 1e-2)
    value, ref = (log_p * g1 + entropy * g2).sum(), (tok64 * g1.cpu().double() + ent64 * g2.cpu().double()).sum()
    for name, a, b in zip(('x', 'W'), torch.autograd.grad(value, (x, weight_o)), torch.autograd.grad(ref, (x64, w64))):
        record(f'{label} per-token grad {name}', rel(a, b), 2e-2)

    kl = readout.kl_div_from_embeds(x_t, x, readout_true=teacher)
    lt64, lq64 = (xt64 @ wt64.T).log_softmax(-1), (x64 @ w64.T).log_softmax(-1)
    kl64 = (lt64.exp() * (lt64 - lq64)).sum(-1)
    record(f'{label} per-token KL', rel(kl, kl64), 2e-2)
    for name, a, b in grads((kl * g1).sum(), (kl64 * g1.cpu().double()).sum()):
        record(f'{label} per-token KL grad {name}', rel(a, b), 3e-2)


def guarded(record: Record, name: str, run) -> None:
    """Run a group of checks; an exception (a kernel that does not build, an incompatible
    third-party version) is a failed check, and the script goes on."""
    try:
        run()
    except Exception as error:
        record(f'[{name}] {failure(error)}', float('nan'), 0.0)
        torch.cuda.empty_cache() if torch.cuda.is_available() else None


def check(device, dtype, sizes) -> Record:
    record = Record()
    tf32 = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = False
    check_modules(device, record)
    absent = kernels_runnable(device)
    for name, mode in OURS.items():
        if name == 'kernels' and absent:
            print(f'  kernels: not checked ({absent})', flush=True)
            continue
        with backend.use_kernels(mode):
            guarded(record, name, lambda name=name: check_fused(device, dtype, record, f'[{name}]', *sizes))
            guarded(record, f'{name} objectives', lambda name=name: check_objectives(device, dtype, record, f'[{name}]', *sizes))
    for name, fn in third_party(device).items():
        if isinstance(fn, str):
            print(f'  {name}: not checked ({fn})', flush=True)
        else:
            guarded(record, name, lambda fn=fn, name=name: check_fused(device, dtype, record, f'[{name}]', *sizes, loss_fn=fn))
    torch.backends.cuda.matmul.allow_tf32 = tf32
    return record


# ------------------------------------------------------------------ 2. tile sizes of the kernels


def tile_candidates(kernels):
    T = kernels.Tiles
    return {
        'forward': [T(64, 128, 64, 8, 3), T(128, 64, 64, 8, 3), T(128, 128, 64, 8, 3), T(64, 64, 64, 4, 3)],
        'backward': [T(64, 128, 32, 8, 2), T(64, 64, 64, 8, 2), T(64, 64, 32, 4, 3), T(128, 128, 32, 8, 2)],
        'kl_forward': [T(64, 128, 32, 8, 2), T(64, 64, 32, 8, 2), T(64, 64, 64, 8, 3)],
        'kl_backward': [T(64, 64, 32, 8, 2), T(32, 128, 32, 8, 2), T(64, 64, 64, 8, 2)],
        'jsd_forward': [T(64, 64, 32, 8, 2), T(64, 128, 32, 8, 2), T(32, 128, 32, 4, 2)],
        'jsd_backward': [T(64, 64, 32, 8, 2), T(32, 128, 32, 8, 2), T(64, 128, 32, 8, 2)],
    }


def sweep_tiles(vocab, tokens, dim, device, dtype, reps) -> dict:
    """Time each candidate of each kernel (the others at their current tiles); keep the fastest."""
    from discrete_continuous_embed_readout.fused import triton_kernels as kernels

    cases, _ = workloads(vocab, tokens, dim, device, dtype, compile_plain=False)
    cases['jsd'] = objective_workloads(vocab, tokens, dim, device, dtype, compile_plain=False)['distill jsd'][0]
    results = {}
    for which, candidates in tile_candidates(kernels).items():
        fn = cases[which.split('_')[0] if which.startswith(('kl', 'jsd')) else 'loss']['kernels']
        times = {}
        for tiles in candidates:
            kernels.TILES[which] = tiles
            times[tiles] = medians({'t': fn}, device, reps)['t']
            shown = f'{times[tiles] * 1e3:8.2f} ms' if isinstance(times[tiles], float) else times[tiles]
            print(f'  V={vocab} {which:<12} {tuple(tiles)}: {shown}', flush=True)
        timed_ok = {t: s for t, s in times.items() if isinstance(s, float)}
        kernels.TILES[which] = min(timed_ok, key=timed_ok.get) if timed_ok else candidates[0]
        results[which] = dict(best=tuple(kernels.TILES[which]), times={str(tuple(t)): s for t, s in times.items()})
    print('  fastest, used below (set as fused.triton_kernels.TILES): ' + ', '.join(f'{k}={v["best"]}' for k, v in results.items()), flush=True)
    del cases
    torch.cuda.empty_cache()
    return results


def sweep_chunks(vocabs, tokens, dim, device, dtype, reps, budgets_mib) -> dict:
    """The chunked PyTorch path's time for several chunk memory budgets (``ACCELERATOR_CHUNK_BYTES``)."""
    default, found = _linear_softmax.ACCELERATOR_CHUNK_BYTES, {}
    for vocab in vocabs:
        for mib in budgets_mib:
            _linear_softmax.ACCELERATOR_CHUNK_BYTES = mib << 20
            cases, _ = workloads(vocab, tokens, dim, device, dtype, compile_plain=False)
            t = medians({case: cases[case]['chunked'] for case in ('loss', 'token')}, device, reps)
            found[f'{vocab}/{mib}'] = t
            print(f'  V={vocab:>6} budget {mib:>5} MiB: ' + ', '.join(f'{k} {cell(v, None)}' for k, v in t.items()), flush=True)
            del cases
    _linear_softmax.ACCELERATOR_CHUNK_BYTES = default
    return found


# ------------------------------------------------------------------ 3. the table


def cell(t, m) -> str:
    time_text = f'{t * 1e3:.2f} ms' if isinstance(t, float) else t
    mem_text = f', {m / 1e9:.2f} GB' if isinstance(m, int) else ''
    return time_text + mem_text


def ratio(a, b) -> str:
    return f'{a / b:.2f}x' if isinstance(a, (int, float)) and isinstance(b, (int, float)) and b else '-'


def table(vocabs, tokens, dim, device, dtype, reps, compile_plain) -> list[dict]:
    rows = []
    for vocab in vocabs:
        cases, floor = workloads(vocab, tokens, dim, device, dtype, compile_plain)
        t_floor = medians({'floor': floor}, device, reps)['floor']
        rows += time_cases(vocab, {case: (fns, t_floor) for case, fns in cases.items()}, device, reps)
        del cases
        torch.cuda.empty_cache() if device.type == 'cuda' else None
        objectives = objective_workloads(vocab, tokens, dim, device, dtype, compile_plain, kernels_runnable(device))
        floors = {case: medians({'floor': f}, device, reps)['floor'] for case, (_, f) in objectives.items()}
        rows += time_cases(vocab, {case: (fns, floors[case]) for case, (fns, _) in objectives.items()}, device, reps)
        del objectives
        torch.cuda.empty_cache() if device.type == 'cuda' else None
    return rows


def time_cases(vocab, cases: dict, device, reps) -> list[dict]:
    """One table row per case: ``cases[case]`` is ``(implementations, floor time)``."""
    rows = []
    for case, (fns, t_floor) in cases.items():
        begin = time.perf_counter()
        runnable = {k: v for k, v in fns.items() if callable(v)}
        timed_ = medians(runnable, device, reps)
        t = {k: timed_[k] if callable(v) else v for k, v in fns.items()}
        mem = {k: peak_bytes(fn, device) for k, fn in runnable.items() if isinstance(t[k], float)}
        rows.append(dict(vocab=vocab, case=case, floor=t_floor, times=t, peaks=mem))
        print(f'  V={vocab} {case}: ' + '; '.join(f'{k} {cell(t[k], mem.get(k))}' for k in fns) + f'; floor {cell(t_floor, None)} ({time.perf_counter() - begin:.0f} s)', flush=True)
    return rows


def print_table(rows):
    names = list(rows[0]['times']) if rows else []
    print('\n| V | case | ' + ' | '.join(names) + ' | floor | kernels / compiled (time) | kernels / compiled (peak) | kernels / floor |')
    print('|---|---|' + '---|' * (len(names) + 4))
    for r in rows:
        t, m = r['times'], r['peaks']
        print(f"| {r['vocab']} | {r['case']} | " + ' | '.join(cell(t[k], m.get(k)) for k in names) + f" | {cell(r['floor'], None)} | "
              f"{ratio(t.get('kernels'), t.get('compiled'))} | {ratio(m.get('kernels'), m.get('compiled'))} | {ratio(t.get('kernels'), r['floor'])} |", flush=True)  # fmt: skip


# ------------------------------------------------------------------ 4. synchronisation


@contextlib.contextmanager
def sync_errors():
    torch.cuda.set_sync_debug_mode('error')
    try:
        yield
    finally:
        torch.cuda.set_sync_debug_mode(0)


def sync_check(device, dtype) -> dict:
    """Whether a fused call (kernels, content checks off) runs without a host synchronisation."""
    torch.manual_seed(0)
    _, readout = EmbedAndReadout(256, num_discrete=4096)
    readout.to(device, dtype)
    x, y = torch.randn(512, 256, device=device, dtype=dtype, requires_grad=True), torch.randint(0, 4096, (512,), device=device)
    sequences, advantages = (x.view(8, 64, 256), y.view(8, 64)), torch.randn(8, device=device)
    calls = {'loss': lambda: readout(x, y).backward(), 'per-token': lambda: readout.log_prob_from_embeds(x, y)[0].sum().backward(),
             'kl': lambda: readout.kl_div_from_embeds(x.detach(), x).sum().backward(),
             'policy (grpo)': lambda: readout.policy_loss_from_embeds(*sequences, advantages, loss_type='grpo', entropy_coef=0.01).loss.backward(),
             'distill (jsd)': lambda: readout.distill_loss_from_embeds(x, x.detach(), divergence='jsd').backward()}  # fmt: skip
    found = {}
    set_validate_args(False)
    for name, call in calls.items():
        try:
            call()  # warm: the kernels' first launch compiles them
            torch.cuda.synchronize()
            with sync_errors():
                call()
            found[name] = 'no synchronisation'
        except Exception as error:  # the sync check's RuntimeError, or any failure of the call
            found[name] = f'synchronises or fails: {type(error).__name__}: {str(error).splitlines()[0][:160] if str(error) else ""}'
        print(f'  {name}: {found[name]}', flush=True)
    set_validate_args(True)
    return found


def hot_path(device, reps: int, batches=(1, 64, 1024)) -> list[dict]:
    """The RL-sized rows of ``benchmarks/hot_path.py`` (ours against hand-written torch)
    on ``device``; on CUDA every call of ours runs under ``set_sync_debug_mode('error')``."""
    spec = importlib.util.spec_from_file_location('hot_path', HERE / 'hot_path.py')
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    guard = sync_errors if device.type == 'cuda' else contextlib.nullcontext
    rows = module.cuda_rows(device, guard=guard, reps=reps, batches=batches)
    print('| call | head | batch | ours (µs) | hand-written (µs) | ratio |\n|---|---|---|---|---|---|')
    for r in rows:
        print(f"| {r['call']} | {r['head']} | {r['batch']} | {r['ours_us']:.1f} | {r['hand_us']:.1f} | {r['ratio']:.2f}x |", flush=True)
    return rows


# ------------------------------------------------------------------ 4b. every call of every head, without a sync

SYNC_HEADS = {
    'discrete': dict(num_discrete=5),
    'groups': dict(num_discrete=(3, 5, 7)),
    'padded groups': dict(num_discrete=(4, 5)),
    'gaussian': dict(num_continuous=2),
    'squashed': dict(num_continuous=2, continuous_squashed=True),
    'beta': dict(num_continuous=2, continuous_dist_type='beta'),
    'kumaraswamy': dict(num_continuous=2, continuous_dist_type='kumaraswamy'),
    'two_hot': dict(num_continuous=2, continuous_dist_type='two_hot', continuous_dist_kwargs=dict(num_bins=9)),
    'hl_gauss': dict(num_continuous=2, continuous_dist_type='hl_gauss', continuous_dist_kwargs=dict(num_bins=9)),
    'mixed': dict(num_discrete=5, num_continuous=2),
    'mixed squashed': dict(num_discrete=(3, 4), num_continuous=2, continuous_squashed=True),
}
SYNC_BOUNDED = {'squashed', 'beta', 'kumaraswamy', 'mixed squashed'}


def _parts(x):
    return x if isinstance(x, tuple) else (x,)


def _backward(loss):
    sum(t.sum() for t in _parts(loss)).backward()


def sync_calls(name: str, device, dim: int = 8, batch=(3, 4)) -> dict:
    """``{call: fn}`` for one head, every input prepared on ``device`` beforehand."""
    torch.manual_seed(0)
    kwargs = SYNC_HEADS[name]
    embed, readout = EmbedAndReadout(dim, **kwargs)
    embed.to(device), readout.to(device)
    h = torch.randn(*batch, dim, device=device, requires_grad=True)
    out, other = readout(h), readout(torch.randn(*batch, dim, device=device))
    bounds = (torch.tensor([-2.0, 0.0], device=device), torch.tensor([2.0, 3.0], device=device))
    scale = dict(rescale_range=bounds) if name in SYNC_BOUNDED else {}
    with torch.no_grad():
        actions, targets = readout.sample(out, **scale), readout.sample(out)
    mask = torch.rand(batch, device=device) > 0.3
    calls = {
        'embed forward': lambda: embed(targets),
        'forward': lambda: readout(h),
        'sample + log_prob': lambda: readout.sample(out, return_log_prob=True, **scale),
        'sample differentiable': lambda: readout.sample(out, differentiable=True, **scale),
        'mode': lambda: readout.mode(out, **scale),
        'log_prob': lambda: readout.log_prob(out, actions, **scale),
        'entropy': lambda: readout.entropy(out, **scale),
        'kl_div': lambda: readout.kl_div(out, other),
        'loss': lambda: _backward(readout(h, targets)),
        'masked loss': lambda: _backward(readout(h, targets, loss_mask=mask)),
        'calculate_loss': lambda: _backward(readout.calculate_loss(out, targets)),
        'get_dist sample + log_prob': lambda: [d.log_prob(d.sample()) for d in _parts(readout.get_dist(out, **scale))],
    }
    sizes = kwargs.get('num_discrete')
    if sizes is not None:
        discrete = targets[0] if isinstance(targets, tuple) else targets
        ignored = discrete.masked_fill(torch.rand(discrete.shape, device=device) < 0.3, -1)
        with_ignored = (ignored, targets[1]) if isinstance(targets, tuple) else ignored
        action_mask = torch.rand(*batch, sum(_parts(sizes) if isinstance(sizes, tuple) else (sizes,)), device=device) > 0.3
        action_mask[..., 0] = True
        calls['sample with an action mask'] = lambda: readout.sample(out, action_mask=action_mask, return_log_prob=True)
    if isinstance(sizes, int):
        def fused():
            readout.fused_cross_entropy = True
            _backward(readout(h, with_ignored, loss_mask=mask))
            readout.fused_cross_entropy = 'auto'

        calls['fused loss'] = fused
        calls['log_prob_from_embeds'] = lambda: _backward(readout.log_prob_from_embeds(h, ignored, return_entropy=True, loss_mask=mask))
        calls['kl_div_from_embeds'] = lambda: _backward(readout.kl_div_from_embeds(torch.randn(*batch, dim, device=device), h, loss_mask=mask))
    return calls


def syncs(device) -> tuple[list[str], list[str]]:
    """Every call under ``set_sync_debug_mode('error')``, after one warm-up call (a
    first call may build what later calls reuse: cuBLAS handles, a head's constants
    on the device): ``(lines, failures)``."""
    lines, failures = [], []
    for name in SYNC_HEADS:
        calls = sync_calls(name, device)
        for fn in calls.values():
            fn()
        torch.cuda.synchronize()
        for call, fn in calls.items():
            torch.cuda.set_sync_debug_mode('error')
            try:
                fn()
                verdict = 'ok'
            except RuntimeError as error:
                verdict = f'FAIL: {str(error).splitlines()[0]}'
                failures.append(f'{name} {call}')
            finally:
                torch.cuda.set_sync_debug_mode('default')
            lines.append(f'  {name:<16} {call:<28} {verdict}')
    return lines, failures


# ------------------------------------------------------------------ main


def arguments():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--device', default='cuda')
    parser.add_argument('--dtype', default='bfloat16')
    parser.add_argument('--tokens', type=int, default=8192)
    parser.add_argument('--dim', type=int, default=4096)
    parser.add_argument('--vocab', type=int, nargs='+', default=[32768, 131072, 262144])
    parser.add_argument('--reps', type=int, default=7)
    parser.add_argument('--check-sizes', type=int, nargs=3, default=[4096, 1024, 256], metavar=('VOCAB', 'TOKENS', 'DIM'))
    parser.add_argument('--tile-vocab', type=int, default=131072, help='the vocabulary of the tile sweep')
    parser.add_argument('--chunk-budgets-mib', type=int, nargs='*', default=[], help='also sweep the chunked path\'s chunk budget (e.g. 64 256 1024 4096)')
    parser.add_argument('--skip', nargs='*', default=[], choices=['check', 'tiles', 'table', 'compile', 'sync', 'hot'])
    parser.add_argument('--json', default='', help='write the numbers here (rewritten after each part)')
    parser.add_argument('--cpu-smoke', action='store_true', help='the whole script on the CPU at tiny sizes, float32, no torch.compile')
    args = parser.parse_args()
    if args.cpu_smoke:
        args.device, args.dtype, args.tokens, args.dim, args.vocab, args.reps = 'cpu', 'float32', 40, 24, [67], 1
        args.check_sizes, args.skip = [53, 24, 16], sorted({*args.skip, 'compile', 'tiles', 'sync'})
    return args


def main():
    args = arguments()
    device, dtype = torch.device(args.device), getattr(torch, args.dtype)
    name = torch.cuda.get_device_name() if device.type == 'cuda' else 'cpu'
    triton_version = importlib.util.find_spec('triton') and __import__('triton').__version__
    print(f'# {name}, torch {torch.__version__}, triton {triton_version}, {args.dtype}, {args.tokens} tokens, dim {args.dim}', flush=True)
    results = dict(device=name, torch=torch.__version__, triton=triton_version, dtype=args.dtype, tokens=args.tokens, dim=args.dim)

    def save():
        if args.json:
            pathlib.Path(args.json).write_text(json.dumps(results, indent=1, default=str))

    if 'check' not in args.skip:
        print('## check', flush=True)
        record = check(device, dtype, args.check_sizes)
        results['check_failures'] = record.failures
        print(f'  {len(record.lines) - len(record.failures)} ok, {len(record.failures)} failed', flush=True)
        save()
    torch.backends.cuda.matmul.allow_tf32 = True
    if 'tiles' not in args.skip and not kernels_runnable(device):
        print(f'## tiles (V={args.tile_vocab}, loss and KL forward + backward)', flush=True)
        results['tiles'] = sweep_tiles(args.tile_vocab, args.tokens, args.dim, device, dtype, max(3, args.reps // 2))
        save()
    if args.chunk_budgets_mib:
        print('## chunk budgets of the chunked PyTorch path (forward + backward)', flush=True)
        results['chunk_budgets'] = sweep_chunks(args.vocab, args.tokens, args.dim, device, dtype, max(3, args.reps // 2), args.chunk_budgets_mib)
        save()
    if 'table' not in args.skip:
        print('## table', flush=True)
        results['rows'] = table(args.vocab, args.tokens, args.dim, device, dtype, args.reps, 'compile' not in args.skip)
        print_table(results['rows'])
        save()
    if 'sync' not in args.skip and device.type == 'cuda':
        print("## sync (torch.cuda.set_sync_debug_mode('error'))", flush=True)
        lines, failures = syncs(device)
        print('\n'.join(lines), flush=True)
        results['sync_failures'] = failures
        results['sync'] = sync_check(device, dtype)
        save()
    if 'hot' not in args.skip:
        print('## hot path (RL-sized calls against hand-written torch; on CUDA under the sync check)', flush=True)
        try:
            results['hot_path'] = hot_path(device, max(3, 3 * args.reps), (1,) if args.cpu_smoke else (1, 64, 1024))
        except Exception as error:
            results['hot_path'] = failure(error)
            print(f'  hot path: {results["hot_path"]}', flush=True)
        save()


if __name__ == '__main__':
    main()
