"""Compile the fused paths' Triton kernels for a CUDA GPU without one: Triton's
compiler and its bundled ``ptxas`` run on any machine, so this checks that every
kernel builds for the target (the interpreter the tests use runs the kernels as
Python and would accept code the compiler rejects) and prints each build's
registers, spills and shared memory.

    python benchmarks/compile_kernels.py                 # sm_90 (H100 / H200), bfloat16, the TILES defaults
    python benchmarks/compile_kernels.py --arch 80 --dtype fp16
    python benchmarks/compile_kernels.py --no-spills     # exit 1 if a build spills registers

Exit status 1 if a kernel does not compile (or spills, with ``--no-spills``).
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
import time

os.environ.pop('TRITON_INTERPRET', None)  # compile, not interpret
os.environ.setdefault('TRITON_DEFAULT_FP_FUSION', '1')  # Triton 3.9's default, without its warning

import triton  # noqa: E402
from triton.backends.compiler import GPUTarget  # noqa: E402
from triton.compiler import ASTSource  # noqa: E402

from discrete_continuous_embed_readout.fused import triton_distill as J  # noqa: E402
from discrete_continuous_embed_readout.fused import triton_kernels as K  # noqa: E402

TABLE_INPUTS = {'x_ptr', 'w_ptr', 'xp_ptr', 'wp_ptr', 'xq_ptr', 'wq_ptr'}
FLOATS = {'softcap', 'inv_temp', 'cap_p', 'cap_q', 'log_beta', 'log_rest'}

# every option on: the soft-cap, every gradient (the builds with the most live values)
BUILDS = {
    'stats forward': (K.stats_forward_kernel, 'forward', dict(HAS_CAP=True)),
    'stats backward': (K.stats_backward_kernel, 'backward', dict(HAS_CAP=True, NEED_X=True, NEED_W=True, GROUP=K.GROUP_ROWS)),
    'kl forward': (K.kl_forward_kernel, 'kl_forward', dict(HAS_CAP_P=True, HAS_CAP_Q=True)),
    'kl backward': (K.kl_backward_kernel, 'kl_backward', dict(HAS_CAP_P=True, HAS_CAP_Q=True, NEED_XP=True, NEED_WP=True, NEED_XQ=True, NEED_WQ=True, GROUP=K.GROUP_ROWS)),
    'jsd forward': (J.jsd_forward_kernel, 'jsd_forward', dict(HAS_CAP_P=True, HAS_CAP_Q=True)),
    'jsd backward': (J.jsd_backward_kernel, 'jsd_backward', dict(HAS_CAP_P=True, HAS_CAP_Q=True, NEED_XQ=True, NEED_WQ=True, GROUP=K.GROUP_ROWS)),
}


def signature(kernel, dtype: str, constexprs: dict) -> dict:
    """Argument types by name: the rows and tables in ``dtype``, ids int64, other pointers float32."""
    types = {}
    for name in kernel.arg_names:
        if name in constexprs:
            types[name] = 'constexpr'
        elif name in TABLE_INPUTS:
            types[name] = f'*{dtype}'
        elif name == 't_ptr':
            types[name] = '*i64'
        elif name.endswith('_ptr'):
            types[name] = '*fp32'
        else:
            types[name] = 'fp32' if name in FLOATS else 'i32'
    return types


def ptxas_report(ptx: str, arch: int) -> str:
    """``ptxas -v``'s registers and spill stores of a build (with the ptxas Triton bundles)."""
    folder = os.path.join(os.path.dirname(triton.__file__), 'backends', 'nvidia', 'bin')
    for name in ('ptxas-blackwell', 'ptxas'):
        with tempfile.NamedTemporaryFile('w', suffix='.ptx') as f:
            f.write(ptx)
            f.flush()
            suffix = 'a' if arch >= 90 else ''
            done = subprocess.run([os.path.join(folder, name), '-v', '--gpu-name', f'sm_{arch}{suffix}', f.name, '-o', os.devnull], capture_output=True, text=True)
        text = done.stdout + done.stderr
        if done.returncode == 0:
            regs, spills = re.findall(r'Used (\d+) registers', text), re.findall(r'(\d+) bytes spill stores', text)
            return f'{regs[0] if regs else "?"} registers, {spills[0] if spills else "?"} bytes spilled'
    return 'ptxas -v unavailable'


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--arch', type=int, default=90, help='compute capability, e.g. 80, 90')
    parser.add_argument('--dtype', default='bf16', choices=['bf16', 'fp16', 'fp32'])
    parser.add_argument('--no-spills', action='store_true', help='fail if a build spills registers')
    args = parser.parse_args()
    failed = []
    print(f'# triton {triton.__version__}, sm_{args.arch}, {args.dtype}')
    for name, (kernel, which, flags) in BUILDS.items():
        tiles = K.TILES[which]
        constexprs = dict(flags, UPCAST=False, PRECISION='tf32', BN=tiles.rows, BV=tiles.vocab, BD=tiles.dim)
        begin = time.perf_counter()
        try:
            build = triton.compile(ASTSource(kernel, signature(kernel, args.dtype, constexprs), constexprs),
                                   target=GPUTarget('cuda', args.arch, 32), options=dict(num_warps=tiles.warps, num_stages=tiles.stages))  # fmt: skip
        except Exception as error:  # a compile error: report it, go on with the others
            print(f'{name:<15} {tiles}: FAILED {type(error).__name__}: {str(error)[:2000]}')
            failed.append(name)
            continue
        report = ptxas_report(build.asm['ptx'], args.arch)
        print(f'{name:<15} {tiles}: {report}, {build.metadata.shared} bytes shared memory ({time.perf_counter() - begin:.1f} s)')
        if args.no_spills and not report.endswith(' 0 bytes spilled'):
            failed.append(name)
    return 1 if failed else 0


if __name__ == '__main__':
    sys.exit(main())
