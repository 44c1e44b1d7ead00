"""Hypothesis strategies over random readout configurations (group counts and sizes,
continuous dims and heads, normalisation, batch shapes, selector configs), the
``Setup`` they draw, and helpers to compare nested results.

Every tensor is drawn from a ``torch.Generator`` seeded by a hypothesis-drawn integer,
so a falsifying example printed by hypothesis reproduces exactly.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass

import torch
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st

from discrete_continuous_embed_readout import DiscreteContinuous, ParameterlessReadout

from . import F32_EPS, soft_clamp_log_var

# PROPERTY_EXAMPLES=1000 runs a deeper search (default 25 per test: the suite stays fast)
BOUNDED = settings(
    max_examples=int(os.environ.get('PROPERTY_EXAMPLES', '25')),
    deadline=None,
    database=None,  # write nothing into the repository
    print_blob=True,
    suppress_health_check=[HealthCheck.too_slow],
)

DIST_TYPES = ('gaussian', 'squashed', 'beta', 'kumaraswamy')


# ----------------------------------------------------------------------------
# strategies


@st.composite
def group_sizes(draw, min_groups: int = 0, max_groups: int = 4):
    """1-4 group sizes in 1..12; half the time of similar size, so that the
    parallel path really pads and batches (``pads_cheaply``), else independent."""
    num_groups = draw(st.integers(min_groups, max_groups))
    if num_groups == 0:
        return ()
    if draw(st.booleans()):
        top = draw(st.integers(1, 12))
        low = max(1, math.ceil(0.8 * top))
        return tuple(draw(st.integers(low, top)) for _ in range(num_groups))
    return tuple(draw(st.integers(1, 12)) for _ in range(num_groups))


@dataclass(frozen=True)
class Setup:
    """One random readout configuration and the seed of its tensors."""

    sizes: tuple
    num_continuous: int
    dist_type: str
    dist_kwargs: tuple  # sorted (key, value) items
    mean_std: tuple | None  # ((mean, std), ...) per continuous dim
    batch: tuple
    seed: int
    logit_scale: float
    param_scale: float
    single_as_int: bool  # num_discrete=n rather than (n,) for one group

    @property
    def has_discrete(self) -> bool:
        return len(self.sizes) > 0

    @property
    def has_continuous(self) -> bool:
        return self.num_continuous > 0

    @property
    def num_groups(self) -> int:
        return len(self.sizes)

    def readout_kwargs(self) -> dict:
        kw = {}
        if self.has_discrete:
            kw['num_discrete'] = self.sizes[0] if self.single_as_int and self.num_groups == 1 else self.sizes
        if self.has_continuous:
            kw['num_continuous'] = self.num_continuous
            squashed = self.dist_type == 'squashed'
            kw['continuous_dist_type'] = 'gaussian' if squashed else self.dist_type
            kw['continuous_squashed'] = squashed
            kw['continuous_dist_kwargs'] = dict(self.dist_kwargs)
            if self.mean_std is not None:
                kw['continuous_mean_std'] = torch.tensor(self.mean_std, dtype=torch.float32)
        return kw

    def readout(self, **kw) -> ParameterlessReadout:
        return ParameterlessReadout(**self.readout_kwargs(), **kw)

    def generator(self, offset: int = 0) -> torch.Generator:
        return torch.Generator().manual_seed(self.seed + offset)

    def dist(self, gen: torch.Generator):
        """Random logits / params in the form ``forward`` returns them."""
        d = c = None
        if self.has_discrete:
            groups = tuple(torch.randn(*self.batch, n, generator=gen) * self.logit_scale for n in self.sizes)
            d = groups[0] if self.num_groups == 1 else groups
        if self.has_continuous:
            c = torch.randn(*self.batch, self.num_continuous, 2, generator=gen) * self.param_scale
        if d is not None and c is not None:
            return DiscreteContinuous(d, c)
        return d if d is not None else c

    def ids(self, gen: torch.Generator, ignore_fraction: float = 0.0) -> torch.Tensor:
        """Random ids ``(*batch, G)`` (some set to ignore_index -1)."""
        ids = torch.stack([torch.randint(0, n, self.batch, generator=gen) for n in self.sizes], dim=-1)
        if ignore_fraction > 0:
            ids = ids.masked_fill(torch.rand(ids.shape, generator=gen) < ignore_fraction, -1)
        return ids

    def squeeze_ids(self, ids: torch.Tensor) -> torch.Tensor:
        """Ids as the readout takes them: no group axis for a single group."""
        return ids.squeeze(-1) if self.num_groups == 1 else ids

    def native_bounds(self):
        """Closed interval holding raw continuous samples (before de-normalising), or None."""
        kw = dict(self.dist_kwargs)
        if self.dist_type == 'squashed':
            return -1.0 + F32_EPS, 1.0 - F32_EPS
        if self.dist_type in ('beta', 'kumaraswamy'):
            if kw.get('clip', True):
                eps = kw.get('clip_eps', 1e-5)
                return eps, 1.0 - eps
            return 0.0, 1.0
        return None

    def native_range(self):
        return {'squashed': (-1.0, 1.0), 'beta': (0.0, 1.0), 'kumaraswamy': (0.0, 1.0)}.get(self.dist_type)


@st.composite
def continuous_kwargs(draw, dist_type: str, unimodal=None):
    kw = {}
    if dist_type in ('gaussian', 'squashed'):
        if draw(st.booleans()):
            lo = draw(st.floats(-6.0, 0.0))
            kw['log_var_clamp_range'] = (lo, lo + draw(st.floats(0.5, 6.0)))
    else:
        kw['unimodal'] = draw(st.booleans()) if unimodal is None else unimodal
        if draw(st.booleans()):
            kw['clip_eps'] = draw(st.sampled_from([1e-5, 1e-3, 0.05]))
        if unimodal is None and draw(st.integers(0, 4)) == 0:
            kw['clip'] = False
    return tuple(sorted(kw.items()))


@st.composite
def mean_stds(draw, num_continuous: int):
    if not draw(st.booleans()):
        return None
    # float32-exact, so that float64 reference computations use the module's very values
    return tuple((draw(st.floats(-5.0, 5.0, width=32)), draw(st.floats(0.125, 5.0, width=32))) for _ in range(num_continuous))


@st.composite
def setups(draw, need_discrete: bool = False, need_continuous: bool = False, dist_types=DIST_TYPES):
    sizes = draw(group_sizes(min_groups=1 if need_discrete else 0))
    min_c = 1 if (need_continuous or not sizes) else 0
    num_continuous = draw(st.integers(min_c, 3))
    dist_type = draw(st.sampled_from(dist_types))
    dist_kwargs = draw(continuous_kwargs(dist_type)) if num_continuous else ()
    mean_std = draw(mean_stds(num_continuous)) if num_continuous else None
    batch = tuple(draw(st.lists(st.integers(1, 3), max_size=2)))
    return Setup(
        sizes=sizes,
        num_continuous=num_continuous,
        dist_type=dist_type if num_continuous else 'gaussian',
        dist_kwargs=dist_kwargs,
        mean_std=mean_std,
        batch=batch,
        seed=draw(st.integers(0, 2**31 - 1)),
        logit_scale=draw(st.sampled_from([0.1, 1.0, 4.0, 30.0])),  # 30: saturated softmax
        param_scale=draw(st.sampled_from([0.3, 1.0, 2.0, 3.0])),  # 3: concentrations near 0
        single_as_int=draw(st.booleans()),
    )


# ----------------------------------------------------------------------------
# helpers


def map_tensors(fn, obj):
    """Apply ``fn`` to every tensor of a nested (named) tuple of tensors / None."""
    if isinstance(obj, torch.Tensor):
        return fn(obj)
    if isinstance(obj, DiscreteContinuous):
        return DiscreteContinuous(*(map_tensors(fn, o) for o in obj))
    if isinstance(obj, (tuple, list)):
        return type(obj)(map_tensors(fn, o) for o in obj)
    return obj


def discrete_of(out):
    return out.discrete if isinstance(out, DiscreteContinuous) else out


def parts(out, has_discrete: bool, has_continuous: bool):
    """``(discrete, continuous)`` of a readout result (a pair or a bare part)."""
    if isinstance(out, DiscreteContinuous):
        return tuple(out)
    assert not (has_discrete and has_continuous), f'a mixed readout returned a bare {type(out).__name__}'
    return (out, None) if has_discrete else (None, out)


def assert_same(a, b, what: str, atol: float = 1e-6, rtol: float = 1e-6) -> None:
    """Equal nested results (tensors compared to ``atol`` + ``rtol`` (a few float32 ulps:
    padded and per-group reductions may round the last bit of a large KL apart), None to
    None). NaN equals NaN: with ``clip=False`` a beta / kumaraswamy sample may sit on the
    boundary, where both paths give the same non-finite log-density."""
    if isinstance(a, torch.Tensor):
        assert isinstance(b, torch.Tensor), f'{what}: {type(b).__name__} vs tensor'
        assert a.shape == b.shape and a.dtype == b.dtype, f'{what}: {a.shape}/{a.dtype} vs {b.shape}/{b.dtype}'
        if a.dtype.is_floating_point:
            torch.testing.assert_close(a, b, atol=atol, rtol=rtol, equal_nan=True, msg=lambda m: f'{what}: {m}')
        else:
            assert torch.equal(a, b), f'{what}: {a} vs {b}'
    elif isinstance(a, (tuple, list)):
        assert isinstance(b, (tuple, list)) and len(a) == len(b), f'{what}: structure differs'
        for i, (x, y) in enumerate(zip(a, b)):
            assert_same(x, y, f'{what}[{i}]', atol, rtol)
    else:
        assert a is None and b is None, f'{what}: {a!r} vs {b!r}'


def both_paths(readout, fn):
    """``fn()`` on the parallel path, then on the sequential one."""
    readout.use_parallel_multi_discrete = True
    parallel = fn()
    readout.use_parallel_multi_discrete = False
    sequential = fn()
    readout.use_parallel_multi_discrete = True
    return parallel, sequential


def soft_clamp(log_var: torch.Tensor, clamp) -> torch.Tensor:
    """The gaussian head's log-variance under an optional ``log_var_clamp_range``."""
    return log_var if clamp is None else soft_clamp_log_var(log_var, *clamp)


# ----------------------------------------------------------------------------
# embed / readout through a selector == the configured table rows


@st.composite
def selector_configs(draw, num_discrete: int, num_continuous: int):
    """A valid config: discrete groups of unique rows (any order), unique continuous dims, or both."""
    choices = []
    if num_discrete:
        choices.append('discrete')
    if num_continuous:
        choices.append('continuous')
    if num_discrete and num_continuous:
        choices.append('both')
    kind = draw(st.sampled_from(choices))
    groups = dims = None
    if kind in ('discrete', 'both'):
        num_groups = draw(st.integers(1, 4))
        row = st.integers(0, num_discrete - 1)
        groups = [draw(st.lists(row, min_size=1, max_size=min(num_discrete, 6), unique=True)) for _ in range(num_groups)]
    if kind in ('continuous', 'both'):
        dims = draw(st.lists(st.integers(0, num_continuous - 1), min_size=1, max_size=num_continuous, unique=True))
    if kind == 'discrete':
        return groups
    if kind == 'continuous':
        return dims
    return (groups, dims)


def config_parts(config):
    if isinstance(config, tuple):
        return config
    if isinstance(config[0], list):
        return config, None
    return None, config
