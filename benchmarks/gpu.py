"""The language-model rows on a CUDA GPU, in bf16: ours against the plain logits path
and against ``torch.compile`` of the plain path, plus the three-matmul floor.

    python benchmarks/gpu.py                  # check, chunk sweep, table (a CUDA GPU)
    python benchmarks/gpu.py --device cpu --tokens 256 --dim 64 --vocab 1000 --reps 2   # a dry run

Parts, in order:

1. ``check``: on the GPU, the readout's methods on a mixed readout (every
   continuous head, selectors, masks) against the same module on the CPU, in
   float32; the fused loss, per-token log-probs / entropies and KL in bf16 against a
   float64 CPU reference (relative error of values and gradients).
2. ``syncs``: every call of every head (discrete, several groups, gaussian, squashed
   with ``rescale_range``, beta, kumaraswamy, the binned heads, mixed) on CUDA tensors
   under ``torch.cuda.set_sync_debug_mode('error')``, which raises on any host
   synchronisation: the default path (``set_validate_args('auto')``) must not wait
   for the device (``tests/test_host_syncs.py`` is the CPU's form of this check).
3. ``sweep``: the fused loss's time for several chunk memory budgets
   (``ACCELERATOR_CHUNK_BYTES``), to choose the default.
4. the table: per vocabulary size, forward + backward of the loss, of per-token
   log-probs with entropies (per-token upstream gradients) and of the per-token KL to a
   frozen reference; ours, the plain path in PyTorch (bf16 matmul, float32 softmax,
   as users write it), the plain path under ``torch.compile``, and the floor (the
   three bf16 matmuls: ``x @ W.T``, ``grad @ W``, ``grad.T @ x``). Times are medians
   of CUDA-event-timed repetitions, alternating the implementations; peak memory is
   ``torch.cuda.max_memory_allocated`` above what was allocated before the call.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import torch
import torch.nn.functional as F

from discrete_continuous_embed_readout import EmbedAndReadout, _linear_softmax


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


def medians(fns: dict, device, reps: int, warmup: int = 2) -> dict:
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    sync(device)
    times = {k: [] for k in fns}
    for _ in range(reps):
        for k, fn in fns.items():
            times[k].append(timed(fn, device))
    return {k: statistics.median(v) for k, v in times.items()}


def peak_bytes(fn, device) -> int:
    if device.type != 'cuda':
        return 0
    fn()  # warm (compiled graphs, workspaces)
    torch.cuda.synchronize()
    torch.cuda.empty_cache()
    before = torch.cuda.memory_allocated()
    torch.cuda.reset_peak_memory_stats()
    fn()
    torch.cuda.synchronize()
    return torch.cuda.max_memory_allocated() - before


# the three workloads: ours, plain


def workloads(vocab, tokens, dim, device, dtype):
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

    def clear():
        x.grad = weight.grad = None

    def plain_loss(x, weight, y):
        return F.cross_entropy((x @ weight.T).float(), y)

    def plain_token(x, weight, y, advantage, bonus):
        log_p = (x @ weight.T).float().log_softmax(-1)
        entropy = -(log_p.exp() * log_p).sum(-1)
        return (log_p.gather(-1, y[:, None]).squeeze(-1) * advantage + entropy * bonus).sum()

    def plain_kl(x, weight, x_ref, weight_ref):
        log_p, log_q = (x_ref @ weight_ref.T).float().log_softmax(-1), (x @ weight.T).float().log_softmax(-1)
        return (log_p.exp() * (log_p - log_q)).sum()

    def ours_loss():
        return readout(x, y)

    def ours_token():
        log_p, entropy = readout.log_prob_from_embeds(x, y, return_entropy=True)
        return (log_p * advantage + entropy * bonus).sum()

    def ours_kl():
        return readout.kl_div_from_embeds(x_ref, x, readout_true=reference).sum()

    def backward(objective):
        def run():
            clear()
            objective().backward()

        return run

    compiled = {name: torch.compile(fn, dynamic=False) for name, fn in (('loss', plain_loss), ('token', plain_token), ('kl', plain_kl))}
    plain_args = {'loss': (x, weight, y), 'token': (x, weight, y, advantage, bonus), 'kl': (x, weight, x_ref, weight_ref)}
    plains = {'loss': plain_loss, 'token': plain_token, 'kl': plain_kl}
    ours = {'loss': ours_loss, 'token': ours_token, 'kl': ours_kl}
    out = {}
    for name in ours:
        out[name] = {
            'ours': backward(ours[name]),
            'plain': backward(lambda name=name: plains[name](*plain_args[name])),
            'compiled': backward(lambda name=name: compiled[name](*plain_args[name])),
        }

    w = weight.detach()

    def floor():
        logits = x.detach() @ w.T
        logits @ w, logits.T @ x.detach()

    return out, floor


# 1. correctness on the device

SELECTORS = [([[0, 1, 2], [3, 5, 7, 9]], [0, 2])]  # 12 discrete rows, 3 continuous dims


def rel(a, b) -> float:
    a, b = a.detach().double().cpu(), b.detach().double().cpu()
    return float((a - b).norm() / b.norm().clamp_min(1e-30))


def check(device, dtype, vocab=4096, tokens=1024, dim=256) -> list[str]:
    lines, failures = [], []
    torch.backends.cuda.matmul.allow_tf32 = False

    def record(name, err, tol):
        ok = err <= tol and err == err
        lines.append(f'  {name:<58} rel err {err:.2e} (tol {tol:.0e}) {"ok" if ok else "FAIL"}')
        if not ok:
            failures.append(name)

    # (a) a mixed readout: every method on the device equals the CPU module (float32)
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
            args = (sample,) if method == 'log_prob' else ()
            args_gpu = (sample_gpu,) if method == 'log_prob' else ()
            a = getattr(cpu, method)(out_cpu, *args, selector_index=0)
            b = getattr(gpu, method)(out_gpu, *args_gpu, selector_index=0)
            for i, (p, q) in enumerate(zip(a, b)):
                record(f'{dist_type} {method} part {i} (cuda vs cpu)', rel(q, p), 1e-4)
        for p, q in zip(cpu.mode(out_cpu, selector_index=0), gpu.mode(out_gpu, selector_index=0)):
            record(f'{dist_type} mode (cuda vs cpu)', rel(q, p), 1e-4)
        drawn = gpu.sample(out_gpu, selector_index=0)
        record(f'{dist_type} sample lands on {device.type}', 0.0 if all(t.device.type == device.type for t in drawn) else 1.0, 0)
        loss_cpu = cpu.calculate_loss(out_cpu, sample, selector_index=0)
        loss_gpu = gpu.calculate_loss(out_gpu, sample_gpu, selector_index=0)
        for i, (p, q) in enumerate(zip(loss_cpu, loss_gpu)):
            record(f'{dist_type} loss part {i} (cuda vs cpu)', rel(q, p), 1e-4)

    # (b) the fused paths in bf16 against float64 on the CPU
    torch.manual_seed(1)
    _, readout = EmbedAndReadout(dim, num_discrete=vocab)
    _, teacher = EmbedAndReadout(dim, num_discrete=vocab)
    readout.to(device, dtype)
    teacher.to(device, dtype).requires_grad_(False)
    x = torch.randn(tokens, dim, device=device, dtype=dtype, requires_grad=True)
    x_t = torch.randn(tokens, dim, device=device, dtype=dtype)
    y = torch.randint(0, vocab, (tokens,), device=device)
    y[::7] = -1
    g1, g2 = torch.randn(tokens, device=device), torch.randn(tokens, device=device)
    # the reference sees the bf16-rounded inputs in float64
    w64 = readout.embeddings.weight.detach().double().cpu()
    wt64 = teacher.embeddings.weight.detach().double().cpu()
    x64 = x.detach().double().cpu().requires_grad_()
    w64.requires_grad_()

    def ref_grads(value):
        gx, gw = torch.autograd.grad(value, (x64, w64), retain_graph=True)
        return gx, gw

    weight = readout.embeddings.weight
    loss = readout(x, y)
    gx, gw = torch.autograd.grad(loss, (x, weight))
    ref = F.cross_entropy(x64 @ w64.T, y.cpu(), ignore_index=-1)
    rgx, rgw = ref_grads(ref)
    record('fused loss (bf16 vs float64)', rel(loss, ref.detach()), 1e-2)
    record('fused loss grad x', rel(gx, rgx), 2e-2)
    record('fused loss grad W', rel(gw, rgw), 2e-2)

    yk = y.clamp_min(0)
    log_p, entropy = readout.log_prob_from_embeds(x, yk, return_entropy=True)
    gx, gw = torch.autograd.grad((log_p * g1 + entropy * g2).sum(), (x, weight))
    lp64 = (x64 @ w64.T).log_softmax(-1)
    ent64 = -(lp64.exp() * lp64).sum(-1)
    tok64 = lp64.gather(-1, yk.cpu()[:, None]).squeeze(-1)
    rgx, rgw = ref_grads((tok64 * g1.cpu().double() + ent64 * g2.cpu().double()).sum())
    record('per-token log-probs (bf16 vs float64)', rel(log_p, tok64.detach()), 1e-2)
    record('per-token entropies', rel(entropy, ent64.detach()), 1e-2)
    record('per-token grad x', rel(gx, rgx), 2e-2)
    record('per-token grad W', rel(gw, rgw), 2e-2)

    kl = readout.kl_div_from_embeds(x_t, x, readout_true=teacher)
    gx, gw = torch.autograd.grad((kl * g1).sum(), (x, weight))
    lt64 = (x_t.double().cpu() @ wt64.T).log_softmax(-1)
    kl64 = (lt64.exp() * (lt64 - lp64)).sum(-1)
    rgx, rgw = ref_grads((kl64 * g1.cpu().double()).sum())
    record('per-token KL (bf16 vs float64)', rel(kl, kl64.detach()), 2e-2)
    record('per-token KL grad x', rel(gx, rgx), 3e-2)
    record('per-token KL grad W', rel(gw, rgw), 3e-2)
    return lines, failures


# 2. no host synchronisation on the default path

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


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--device', default='cuda')
    parser.add_argument('--dtype', default='bfloat16')
    parser.add_argument('--tokens', type=int, default=8192)
    parser.add_argument('--dim', type=int, default=4096)
    parser.add_argument('--vocab', type=int, nargs='+', default=[32768, 131072])
    parser.add_argument('--reps', type=int, default=10)
    parser.add_argument('--budgets-mib', type=int, nargs='*', default=[64, 256, 1024, 4096], help='chunk budgets to sweep (MiB)')
    parser.add_argument('--skip', nargs='*', default=[], choices=['check', 'syncs', 'sweep', 'compile'])
    parser.add_argument('--json', default='', help='write the numbers here')
    args = parser.parse_args()
    device, dtype = torch.device(args.device), getattr(torch, args.dtype)
    name = torch.cuda.get_device_name() if device.type == 'cuda' else 'cpu'
    print(f'# {name}, torch {torch.__version__}, {args.dtype}, {args.tokens} tokens, dim {args.dim}', flush=True)
    results = {'device': name, 'torch': torch.__version__, 'dtype': args.dtype, 'tokens': args.tokens, 'dim': args.dim}

    if 'check' not in args.skip:
        lines, failures = check(device, dtype)
        print('\n'.join(['## check'] + lines), flush=True)
        results['check_failures'] = failures
    torch.backends.cuda.matmul.allow_tf32 = True

    if 'syncs' not in args.skip and device.type == 'cuda':
        lines, failures = syncs(device)
        print('\n'.join(["## host synchronisations on the default path (set_sync_debug_mode('error'))"] + lines), flush=True)
        results['sync_failures'] = failures

    if 'sweep' not in args.skip:
        print('## chunk budget sweep (fused loss, forward + backward, ms)', flush=True)
        results['sweep'] = {}
        default = _linear_softmax.ACCELERATOR_CHUNK_BYTES
        for vocab in args.vocab:
            for mib in args.budgets_mib:
                _linear_softmax.ACCELERATOR_CHUNK_BYTES = mib << 20
                cases, _ = workloads(vocab, args.tokens, args.dim, device, dtype)
                t = medians({'ours': cases['loss']['ours'], 'token': cases['token']['ours']}, device, max(3, args.reps // 2))
                results['sweep'][f'{vocab}/{mib}'] = t
                print(f'  V={vocab:>6} budget {mib:>5} MiB: loss {t["ours"] * 1e3:8.2f}  per-token {t["token"] * 1e3:8.2f}', flush=True)
                del cases
                torch.cuda.empty_cache() if device.type == 'cuda' else None
        _linear_softmax.ACCELERATOR_CHUNK_BYTES = default

    print(f'## table (chunk budget {_linear_softmax.ACCELERATOR_CHUNK_BYTES >> 20} MiB)', flush=True)
    rows = []
    for vocab in args.vocab:
        cases, floor = workloads(vocab, args.tokens, args.dim, device, dtype)
        t_floor = medians({'floor': floor}, device, args.reps)['floor']
        for case, fns in cases.items():
            if 'compile' in args.skip:
                fns = {k: v for k, v in fns.items() if k != 'compiled'}
            begin = time.perf_counter()
            t = medians(fns, device, args.reps)
            mem = {k: peak_bytes(fn, device) for k, fn in fns.items()}
            row = dict(vocab=vocab, case=case, floor=t_floor, **{f't_{k}': v for k, v in t.items()}, **{f'mem_{k}': v for k, v in mem.items()})
            rows.append(row)
            print(f'  V={vocab} {case}: ' + ', '.join(f'{k} {v * 1e3:.2f} ms' for k, v in t.items()) + f', floor {t_floor * 1e3:.2f} ms ({time.perf_counter() - begin:.0f} s)', flush=True)
        del cases
        torch.cuda.empty_cache() if device.type == 'cuda' else None
    results['rows'] = rows

    print('\n| V | case | ours ms | plain ms | compiled ms | floor ms | ours/plain | ours/compiled | ours/floor | peak ours/plain | peak ours/compiled |')
    print('|---|---|---|---|---|---|---|---|---|---|---|')
    for r in rows:
        c = r.get('t_compiled', float('nan'))
        mp = r['mem_ours'] / r['mem_plain'] if r['mem_plain'] else float('nan')
        mc = r['mem_ours'] / r['mem_compiled'] if r.get('mem_compiled') else float('nan')
        print(f"| {r['vocab']} | {r['case']} | {r['t_ours'] * 1e3:.2f} | {r['t_plain'] * 1e3:.2f} | {c * 1e3:.2f} | {r['floor'] * 1e3:.2f} | "
              f"{r['t_ours'] / r['t_plain']:.2f} | {r['t_ours'] / c:.2f} | {r['t_ours'] / r['floor']:.2f} | {mp:.2f} | {mc:.2f} |")
    if args.json:
        with open(args.json, 'w') as f:
            json.dump(results, f, indent=1)


if __name__ == '__main__':
    main()
