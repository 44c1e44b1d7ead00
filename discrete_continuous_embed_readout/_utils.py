"""Tiny helpers shared by every module (x-transformers style)."""

from __future__ import annotations

from collections import namedtuple
from itertools import accumulate

DiscreteContinuous = namedtuple('DiscreteContinuous', ('discrete', 'continuous'))
DiscreteContinuous.__doc__ = """A (discrete, continuous) pair: every mixed result is one.

Both parts are reachable by name (``out.discrete``) or by unpacking
(``d, c = out``); a part that does not exist is ``None``.

Attributes:
    discrete: the discrete part (ids, logits, log-probs, ...), or ``None``.
    continuous: the continuous part (values, params, log-probs, ...), or ``None``.
"""


def exists(v) -> bool:
    return v is not None


def default(v, d):
    return v if exists(v) else d


def identity(t, *args, **kwargs):
    return t


def cast_tuple(t, length: int = 1) -> tuple:
    if isinstance(t, (tuple, list)):
        return tuple(t)
    return (t,) * length


def exclusive_cumsum(sizes) -> list[int]:
    """Offsets of consecutive segments: ``[3, 5, 2] -> [0, 3, 8]``."""
    return [0, *accumulate(sizes)][:-1] if len(sizes) else []


def is_pair(v) -> bool:
    return isinstance(v, tuple) and len(v) == 2
