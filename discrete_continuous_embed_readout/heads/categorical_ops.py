"""The categorical ops ``MultiCategorical`` is built from: log-probs that are 0
(not ``nan``) where a probability is 0, the batched-or-looped choice
(``pads_cheaply``), the log-prob-at-an-index autograd op, Gumbel noise and the
segmented softmax of concatenated groups."""

# g - groups, n - ids of a group (padded to the largest), v - concatenated ids

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from .._checks import check_last_dim, describe, functorch_active
from .._utils import upcast

__all__ = ['PAD_WASTE_LIMIT', 'gumbel_noise', 'log_prob_at', 'log_softmax', 'pads_cheaply', 'segmented_softmax', 'unimix_logits', 'zero_where_impossible']


def zero_where_impossible(logp: Tensor, value: Tensor | None = None) -> Tensor:
    """``value`` (default ``logp``) with 0 where ``logp`` is ``-inf`` (padding, masked or
    filtered ids): their ``p * (...)`` terms are exactly 0 with zero gradients. (A
    finite stand-in such as ``finfo.min`` overflows to inf in the backward as soon
    as the loss weight exceeds 1, and inf * 0 is NaN.)"""
    return torch.where(torch.isneginf(logp), 0.0, logp if value is None else value)


def _filtered(filter_fn, logits: Tensor, filter_kwargs: dict) -> Tensor:
    """``filter_fn(logits, **filter_kwargs)``, checked: a sampler indexes its result
    as the group's logits, so anything else would fail far from the cause or, a
    shorter tensor, draw ids of the wrong range."""
    out = filter_fn(logits, **filter_kwargs)
    if not isinstance(out, Tensor):
        raise TypeError(f'filter_fn must return {_filter_contract(logits)}, got {type(out).__module__}.{type(out).__qualname__}')
    if not out.is_floating_point():
        raise TypeError(f'filter_fn must return {_filter_contract(logits)}, got {describe(out)}')
    if out.shape != logits.shape:
        raise ValueError(f'filter_fn must return {_filter_contract(logits)}, got {describe(out)}')
    return out


def _filter_contract(logits: Tensor) -> str:
    return f'the filtered logits: a floating tensor of the shape it was given, {tuple(logits.shape)}, with -inf at the ids it rules out'


def _pad_groups(groups: tuple[Tensor, ...], value: float) -> Tensor:
    n_max = max(g.shape[-1] for g in groups)
    padded = [F.pad(g, (0, n_max - g.shape[-1]), value=value) for g in groups]
    return torch.stack(padded, dim=-2)  # (..., g, n)


PAD_WASTE_LIMIT = 1.25  # batch by padding when padded size <= this x the real size


def pads_cheaply(sizes) -> bool:
    return len(sizes) > 1 and max(sizes) * len(sizes) <= PAD_WASTE_LIMIT * sum(sizes)


class _LogProbAt(torch.autograd.Function):
    """``log_softmax(logits)[..., index]``, with the log-softmax as a second output.

    Backward is one pass over the saved log-softmax:
    ``grad_logits = v - softmax * v.sum(-1)``, ``v = grad_logp + onehot(index) * grad``
    (on CPU the fused log-softmax kernel beats autograd's gather + log-softmax
    backward). The log-softmax is saved as an *output*, so backward is itself
    differentiable: double backward (MAML, gradient penalties, Hessian-vector
    products) flows back through this function. ``setup_context``, the generated
    vmap rule and (``_LogProbAtWithJvp``, in eager mode) ``jvp`` make it work under
    ``torch.func`` transforms (``grad``, ``vmap``, ``jvp``, ``hessian``) and
    forward-mode AD.
    """

    generate_vmap_rule = True

    @staticmethod
    def forward(logits: Tensor, index: Tensor):
        logp = torch.log_softmax(logits, dim=-1)
        return logp.gather(-1, index.unsqueeze(-1)).squeeze(-1), logp

    @staticmethod
    def setup_context(ctx, inputs, output):
        _, index = inputs
        ctx.save_for_backward(index, output[1])
        ctx.save_for_forward(index, output[1])
        ctx.set_materialize_grads(False)


    @staticmethod
    def backward(ctx, grad: Tensor | None, grad_logp: Tensor | None):
        index, logp = ctx.saved_tensors
        total = grad_logp.sum(-1) if grad_logp is not None else None
        if grad is not None:
            total = grad if total is None else total + grad
        if total is None:
            return None, None
        if torch.is_grad_enabled():  # create_graph=True: out of place, so that this backward is differentiated
            grad_logits = logp.exp() * -total.unsqueeze(-1)
            grad_logits = grad_logits + grad_logp if grad_logp is not None else grad_logits
            if grad is not None:
                grad_logits = grad_logits.scatter_add(-1, index.unsqueeze(-1), grad.unsqueeze(-1).to(grad_logits.dtype))
            return grad_logits, None
        grad_logits = logp.exp().mul_(-total.unsqueeze(-1))
        if grad_logp is not None:
            grad_logits.add_(grad_logp)
        if grad is not None:
            grad_logits.scatter_add_(-1, index.unsqueeze(-1), grad.unsqueeze(-1).to(grad_logits.dtype))
        return grad_logits, None


class _LogProbAtWithJvp(_LogProbAt):
    """``_LogProbAt`` with a forward-mode rule. Dynamo cannot trace an autograd
    Function that defines ``jvp``, so the compiled path uses ``_LogProbAt``."""

    @staticmethod
    def jvp(ctx, d_logits: Tensor, d_index):
        # forward mode (torch.func.jvp / hessian): d logp = d l - <softmax, d l>
        index, logp = ctx.saved_tensors
        d_logp = d_logits - (logp.exp() * d_logits).sum(-1, keepdim=True)
        return d_logp.gather(-1, index.unsqueeze(-1)).squeeze(-1), d_logp


# below this many logits, log-softmax + gather with autograd's own backward beats the
# op above: its one-pass backward pays off on large tensors, while calling an autograd
# Function costs tens of microseconds of Python (measured on CPU: the op is 2-2.5x
# slower for a (64, 5) policy head and 0.6-0.85x as fast from (4096, 15) up)
LOG_PROB_OP_MIN_NUMEL = 1 << 14


# many short rows: the log-softmax over the first axis of the transpose (see log_softmax)
SHORT_ROW_MAX_WIDTH = 15
SHORT_ROWS_MIN_ROWS = 256


def log_softmax(logits: Tensor) -> Tensor:
    """``logits.log_softmax(-1)``. Over many short rows on the CPU (at least
    ``SHORT_ROWS_MIN_ROWS`` rows of at most ``SHORT_ROW_MAX_WIDTH`` logits) it is
    the log-softmax of the transpose over its first axis, the same values: that
    kernel runs along the rows, where the last axis's runs along each short row
    (forward + backward measured at 0.4-0.9x the time for 256-3,072 rows of 2-10
    logits, one thread; from 16 logits wide the last axis's is faster)."""
    n = logits.shape[-1] if logits.ndim else 0
    if 0 < n <= SHORT_ROW_MAX_WIDTH and logits.ndim > 1 and logits.numel() >= SHORT_ROWS_MIN_ROWS * n and logits.device.type == 'cpu':
        return logits.movedim(-1, 0).log_softmax(0).movedim(0, -1)
    return logits.log_softmax(-1)


def log_prob_at(logits: Tensor, index: Tensor, keepdim: bool = False) -> Tensor:
    """Log-probability of ``index`` ``(...)`` under ``softmax(logits)`` ``(..., n)``:
    by ``_LogProbAt`` where derivatives are wanted (autograd, ``torch.func``) of at
    least ``LOG_PROB_OP_MIN_NUMEL`` logits, else by log-softmax and gather (the same
    values). ``keepdim``: ``index`` and the result ``(..., 1)`` (no views to add and
    remove the axis in the common case: each is a node in the backward)."""
    logits = upcast(logits)
    wanted = logits.numel() >= LOG_PROB_OP_MIN_NUMEL and (logits.requires_grad and torch.is_grad_enabled() or functorch_active())
    if not wanted:
        out = log_softmax(logits).gather(-1, index if keepdim else index.unsqueeze(-1))
        return out if keepdim else out.squeeze(-1)
    op = _LogProbAt if torch.compiler.is_compiling() else _LogProbAtWithJvp
    out = op.apply(logits, index.squeeze(-1) if keepdim else index)[0]
    return out.unsqueeze(-1) if keepdim else out


def segmented_softmax(flat_logits: Tensor, lengths) -> Tensor:
    """Softmax within consecutive segments of the last axis.

    Args:
        flat_logits: ``(..., sum(lengths))``.
        lengths: the segment sizes (ints, or a 1-d tensor).

    Returns:
        ``(..., sum(lengths))``: each segment sums to 1.
    """
    lengths = [int(n) for n in lengths]
    check_last_dim(flat_logits, sum(lengths), 'flat_logits', f'the sum of lengths {lengths}')
    probs = [upcast(s).softmax(-1) for s in flat_logits.split(lengths, dim=-1)]  # float32 for half logits
    return torch.cat(probs, dim=-1).to(flat_logits.dtype)


def gumbel_noise(shape, like: Tensor, eps: float = 1e-20, generator: torch.Generator | None = None) -> Tensor:
    u = torch.rand(shape, device=like.device, dtype=like.dtype, generator=generator)
    return u.clamp_(min=eps).log_().neg_().log_().neg_()  # -log(-log(u)), in place


def unimix_logits(logits: Tensor, unimix: float) -> Tensor:
    """The log-probs of ``(1 - u) softmax(logits) + u / n``, ``n`` the allowed (finite)
    logits of each row: a masked action stays impossible (DreamerV3's unimix)."""
    log_p = upcast(logits).log_softmax(-1)
    allowed = ~torch.isneginf(log_p)
    uniform = math.log(unimix) - allowed.sum(-1, keepdim=True).to(log_p.dtype).log()
    return torch.logaddexp(log_p + math.log1p(-unimix), uniform).masked_fill(~allowed, float('-inf'))
