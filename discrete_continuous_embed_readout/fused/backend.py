"""Which implementation the fused linear-softmax ops run: the Triton kernels of
``triton_kernels`` (the logits of a tile of rows and vocabulary never leave the
chip) or the chunked PyTorch code of ``linear_softmax`` / ``loss``.

``KERNELS`` decides, read from the environment variable ``DCER_FUSED_KERNELS`` when
the package is imported and settable afterwards (or for a block, ``use_kernels``):

- ``'auto'`` (the default): the Triton kernels where they apply (every tensor on a
  CUDA device in float16 / bfloat16 / float32, Triton importable, not while
  ``torch.compile`` traces, not with ``torch.use_deterministic_algorithms`` on: the
  kernels accumulate gradients with atomic adds), the PyTorch code elsewhere;
- ``'torch'``: always the PyTorch code (A/B comparisons, debugging);
- ``'triton'``: the Triton kernels on any device (float64 still takes the PyTorch
  code); on a CPU only with ``TRITON_INTERPRET=1`` set before Triton is imported
  (Triton's interpreter: how the kernels are tested without a GPU). An error if
  Triton is not installed.

Under ``torch.func`` transforms the plain formulation runs whatever the setting.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os

import torch

__all__ = ['KERNELS', 'KERNEL_DTYPES', 'kernels_apply', 'triton_available', 'use_kernels']

MODES = ('auto', 'torch', 'triton')
KERNELS = os.environ.get('DCER_FUSED_KERNELS', 'auto').strip().lower() or 'auto'
KERNEL_DTYPES = (torch.float16, torch.bfloat16, torch.float32)


def triton_available() -> bool:
    """Whether Triton can be imported (it ships with the CUDA builds of torch)."""
    return importlib.util.find_spec('triton') is not None


def _mode() -> str:
    if KERNELS not in MODES:
        raise ValueError(f'DCER_FUSED_KERNELS / fused.backend.KERNELS: expected one of {MODES}, got {KERNELS!r}')
    return KERNELS


def kernels_apply(*tensors: torch.Tensor) -> bool:
    """Whether the fused ops on these tensors run the Triton kernels (see the module's docstring).

    Args:
        *tensors: the floating inputs of one op (rows and tables).

    Returns:
        ``True`` for the Triton kernels, ``False`` for the chunked PyTorch code.
    """
    mode = _mode()
    if mode == 'torch' or torch.compiler.is_compiling() or not all(t.dtype in KERNEL_DTYPES for t in tensors):
        return False
    if mode == 'triton':
        if not triton_available():
            raise RuntimeError('fused.backend.KERNELS is "triton" but Triton is not installed (pip install triton)')
        return True
    return not torch.are_deterministic_algorithms_enabled() and triton_available() and all(t.is_cuda for t in tensors)


@contextlib.contextmanager
def use_kernels(mode: str):
    """Run the fused ops with ``KERNELS = mode`` inside the block.

    Args:
        mode: ``'auto'``, ``'torch'`` or ``'triton'``.

    Example:
        >>> from discrete_continuous_embed_readout.fused import backend
        >>> with backend.use_kernels('torch'):
        ...     backend.KERNELS
        'torch'
    """
    global KERNELS
    if mode not in MODES:
        raise ValueError(f'use_kernels: mode must be one of {MODES}, got {mode!r}')
    before, KERNELS = KERNELS, mode
    try:
        yield
    finally:
        KERNELS = before
