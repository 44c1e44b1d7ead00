"""What several test files share, defined once: constants, reference formulas,
group utilities and small builders (``from helpers import ...``).

The larger shared pieces have their own modules:

- ``helpers.internals``: the one place that touches package internals;
- ``helpers.policy_cases``: the policy-head configurations and their float64 references;
- ``helpers.loss_cases``: the loss-path configurations (every head, every loss option);
- ``helpers.masks``: action-mask builders and the masked references;
- ``helpers.strategies``: hypothesis strategies and random readout setups.

``tests/`` is on ``sys.path`` through ``pythonpath`` in pyproject.toml's pytest options
(and pytest's default prepend import mode), for the main process, xdist workers and
the processes ``test_distributed.py`` spawns alike.
"""

# g - groups, n - ids of a group, s - all groups' ids concatenated

from __future__ import annotations

import importlib.util
import math
import sys
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch.distributions import Beta, Kumaraswamy, Normal

from discrete_continuous_embed_readout import DiscreteContinuous, EmbedAndReadout, ParameterlessReadout

# --------------------------------------------------------------------------- constants

# (mean, std) per continuous dim, every value exact in float32; a head with c dims takes MEAN_STD[:c].
# Row 0 puts the squashed head's upper bound on 5.0, where float32 rounds (1 - 2**-23) * 2 + 3 onto it.
MEAN_STD = torch.tensor([[3.0, 2.0], [-1.0, 0.5], [10.0, 7.0], [0.5, 4.0]])
EPS = 1e-6  # the package's default numerical floor (spec section 2)
CLIP_EPS = 1e-5  # default clip margin of beta / kumaraswamy (spec section 2)
F32_EPS = torch.finfo(torch.float32).eps
F32_EDGE = 1.0 - F32_EPS  # largest |squashed sample| the readout keeps
LOG_2PI = math.log(2 * math.pi)
NUM_SIGMA = 5.0  # frequency checks: each frequency within NUM_SIGMA standard errors
HALF_DTYPES = [torch.float16, torch.bfloat16]

# every kind of real scalar a temperature may be given as (each compared with its float value)
TEMPERATURE_FORMS = {
    'float': 0.6,
    'int': 2,
    'numpy float32': np.float32(0.6),
    'numpy float64': np.float64(0.6),
    'numpy int': np.int64(2),
    '0-dim tensor': torch.tensor(0.6),
    '0-dim float64 tensor': torch.tensor(0.6, dtype=torch.float64),
    '0-dim int tensor': torch.tensor(2),
    '0-dim tensor requiring grad': torch.tensor(0.6, requires_grad=True),
}


def float_value(scalar) -> float:
    """A real scalar of ``TEMPERATURE_FORMS`` as a Python float."""
    return float(scalar.detach()) if isinstance(scalar, torch.Tensor) else float(scalar)

# a mixed layout with two selectors (9 discrete rows, 4 continuous dims, normalised)
MIXED_SELECTORS = [([[0, 1, 2, 3]], [0, 1, 2]), ([[4, 5], [6, 7, 8]], [3])]
MIXED_LAYOUT = dict(num_discrete=9, num_continuous=4, continuous_mean_std=MEAN_STD, selectors=MIXED_SELECTORS)

# one small configuration per modality
MODALITIES = {
    'discrete': dict(num_discrete=50),
    'multi_discrete': dict(num_discrete=(5, 7, 3)),
    'continuous': dict(num_continuous=3, continuous_mean_std=MEAN_STD[:3]),
    'mixed': dict(num_discrete=11, num_continuous=2),
}

EXAMPLES = Path(__file__).resolve().parents[2] / 'examples'
BENCHMARKS = Path(__file__).resolve().parents[2] / 'benchmarks'
README = Path(__file__).resolve().parents[2] / 'README.md'


# --------------------------------------------------------------------------- builders


def build_pair(dim: int = 8, seed: int | None = None, **kwargs):
    """``EmbedAndReadout(dim, **kwargs)``, after ``torch.manual_seed(seed)`` if given."""
    if seed is not None:
        torch.manual_seed(seed)
    return EmbedAndReadout(dim, **kwargs)


def mixed_pair(seed: int | None = None, **kwargs):
    """Embed and readout of ``MIXED_LAYOUT``."""
    return build_pair(8, seed, **MIXED_LAYOUT, **kwargs)


def num_discrete_arg(sizes):
    """``num_discrete`` for group sizes: an int for one group, a tuple for several."""
    return sizes[0] if len(sizes) == 1 else tuple(sizes)


def discrete_readout(sizes, parallel: bool = True, **kwargs) -> ParameterlessReadout:
    """A parameterless readout of these groups on the parallel or the sequential path."""
    readout = ParameterlessReadout(num_discrete=num_discrete_arg(sizes), **kwargs)
    readout.use_parallel_multi_discrete = parallel
    return readout


def load_example(name: str):
    """Import ``examples/<name>.py`` as a module (``examples/`` is not a package)."""
    return _load_file(EXAMPLES / f'{name}.py', f'example_{name}')


def load_benchmark(name: str):
    """Import ``benchmarks/<name>.py`` as a module (``benchmarks/`` is not a package either)."""
    return _load_file(BENCHMARKS / f'{name}.py', f'benchmark_{name}')


def _load_file(path: Path, module_name: str):
    spec = importlib.util.spec_from_file_location(module_name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module  # as an import would: dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


# --------------------------------------------------------------------------- reference formulas


def inv_softplus(y: torch.Tensor) -> torch.Tensor:
    """x with softplus(x) = y (y > 0)."""
    return y + torch.log(-torch.expm1(-y))


def soft_clamp_log_var(log_var: torch.Tensor, lo: float, hi: float) -> torch.Tensor:
    """The gaussian head's ``log_var_clamp_range``: a scaled tanh onto ``(lo, hi)``."""
    return lo + (torch.tanh(log_var / (hi - lo)) + 1) / 2 * (hi - lo)


def gaussian_nll(mean, log_var, target):
    """``0.5 (log_var + (t - m)^2 exp(-log_var) + log 2 pi)`` in the inputs' dtype;
    ``(t - m)^2 exp(-log_var)`` is exactly 0 at ``t == m`` whatever the variance."""
    sq = (target - mean) ** 2
    scaled = torch.where(sq == 0, 0.0, sq * torch.exp(-log_var))
    return 0.5 * (log_var + scaled + LOG_2PI)


def normal_of(params: torch.Tensor) -> Normal:
    """The float64 normal of ``(..., 2)`` gaussian params ``(mean, log_var)``."""
    p = params.double()
    return Normal(p[..., 0], torch.exp(0.5 * p[..., 1]))


def squashed_log_density(params: torch.Tensor, a: torch.Tensor) -> torch.Tensor:
    """Spec: log N(atanh(a)) - log(1 - a^2), evaluated plainly in float64."""
    a = a.double()
    return normal_of(params).log_prob(torch.atanh(a)) - torch.log1p(-(a * a))


def concentrations(params: torch.Tensor, unimodal: bool = False):
    """The spec's mapping a, b = softplus(p) + (1 if unimodal else eps), in float64."""
    c = F.softplus(params.double()) + (1.0 if unimodal else EPS)
    return c[..., 0], c[..., 1]


def unit_interval_params(concentrations_a, concentrations_b, offset: float, dtype=torch.float32) -> torch.Tensor:
    """(..., 2) raw params whose softplus(p) + offset gives the requested concentrations."""
    a = torch.as_tensor(concentrations_a, dtype=torch.float64)
    b = torch.as_tensor(concentrations_b, dtype=torch.float64)
    return torch.stack((inv_softplus(a - offset), inv_softplus(b - offset)), dim=-1).to(dtype)


def reference_unit_dist(dist_type: str, a: torch.Tensor, b: torch.Tensor):
    """torch's Beta or Kumaraswamy of these concentrations."""
    return Beta(a, b) if dist_type == 'beta' else Kumaraswamy(a, b)


NATIVE_RANGES = {'squashed': (-1.0, 1.0), 'beta': (0.0, 1.0), 'kumaraswamy': (0.0, 1.0)}
BOUNDED_HEADS = {'squashed': dict(continuous_squashed=True), 'beta': dict(continuous_dist_type='beta'), 'kumaraswamy': dict(continuous_dist_type='kumaraswamy')}


def bounded_log_density(kind: str, params: torch.Tensor, values: torch.Tensor, lo, hi) -> torch.Tensor:
    """float64 log-density of ``values`` in the units ``(lo, hi)`` of a bounded head
    (default options): the head's native density (normal then tanh, or beta /
    kumaraswamy) at ``native = n_lo + (values - lo) / scale``, minus ``log scale``,
    the log of the affine map's Jacobian, ``scale = (hi - lo) / (n_hi - n_lo)``."""
    n_lo, n_hi = NATIVE_RANGES[kind]
    lo, hi = (torch.as_tensor(b, dtype=torch.float64) for b in (lo, hi))
    scale = (hi - lo) / (n_hi - n_lo)
    native = n_lo + (values.double() - lo) / scale
    if kind == 'squashed':
        density = squashed_log_density(params, native)
    else:
        density = reference_unit_dist(kind, *concentrations(params)).log_prob(native)
    return density - torch.log(scale)


def kumaraswamy_raw_moment(a: torch.Tensor, b: torch.Tensor, k: int = 1) -> torch.Tensor:
    """E[X^k] = b B(1 + k/a, b)."""
    return b * torch.exp(torch.lgamma(1 + k / a) + torch.lgamma(b) - torch.lgamma(1 + k / a + b))


def midpoints(lo: float, hi: float, n: int) -> tuple[torch.Tensor, float]:
    """Midpoint-rule nodes of ``[lo, hi]`` in float64, and their spacing."""
    h = (hi - lo) / n
    return lo + (torch.arange(n, dtype=torch.float64) + 0.5) * h, h


def smoothed_nll(log_p: torch.Tensor, targets: torch.Tensor, label_smoothing: float) -> torch.Tensor:
    """Label-smoothed cross entropy per row, by hand: ``-(1 - eps) log p[t] - eps mean_a log p[a]``,
    the mean over the possible actions only (``log p > -inf``; a masked action gets no
    target mass). ``log_p``: ``(..., n)`` log-probs; ``targets``: ``(...)``."""
    picked = log_p.gather(-1, targets[..., None]).squeeze(-1)
    possible = torch.isfinite(log_p)
    mean = torch.where(possible, log_p, 0.0).sum(-1) / possible.sum(-1)
    return -(1 - label_smoothing) * picked - label_smoothing * mean


# --------------------------------------------------------------------------- seeded tensors


def seeded_randn(*shape, seed: int, dtype=torch.float32) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=dtype)


def seeded_uniform(lo: float, hi: float, *shape, seed: int, dtype=torch.float32) -> torch.Tensor:
    return torch.rand(*shape, generator=torch.Generator().manual_seed(seed), dtype=dtype) * (hi - lo) + lo


def gaussian_params(*batch, num_continuous: int, seed: int, dtype=torch.float32) -> torch.Tensor:
    """(..., C, 2) of (mean, log_var) with moderate values."""
    mean = seeded_uniform(-2.0, 2.0, *batch, num_continuous, seed=seed, dtype=dtype)
    log_var = seeded_uniform(-2.0, 1.5, *batch, num_continuous, seed=seed + 1, dtype=dtype)
    return torch.stack((mean, log_var), dim=-1)


def random_logits(sizes, batch, scale: float = 2.0, seed: int | None = None, dtype=torch.float32) -> list[torch.Tensor]:
    """``scale * N(0, 1)`` logits per group; from a generator seeded by ``seed`` if given."""
    gen = None if seed is None else torch.Generator().manual_seed(seed)
    return [torch.randn(*batch, n, generator=gen, dtype=dtype) * scale for n in sizes]


def randint_groups(sizes, batch) -> torch.Tensor:
    """Random ids ``(*batch, len(sizes))``, each in its group's range."""
    return torch.stack([torch.randint(0, n, batch) for n in sizes], dim=-1)


# --------------------------------------------------------------------------- group utilities


def as_dist(groups):
    """What a readout takes and returns: a bare tensor for one group, a tuple for several."""
    return groups[0] if len(groups) == 1 else tuple(groups)


def as_groups(logits) -> list[torch.Tensor]:
    return [logits] if isinstance(logits, torch.Tensor) else list(logits)


def pack(d, c):
    """A mixed result as a ``DiscreteContinuous`` pair, else the part that is there."""
    if d is not None and c is not None:
        return DiscreteContinuous(d, c)
    return d if c is None else c


def with_group_axis(ids: torch.Tensor, sizes) -> torch.Tensor:
    """``(..., g)`` ids; a single group's ``(...)`` ids gain the group axis."""
    return ids.unsqueeze(-1) if len(sizes) == 1 else ids


def without_group_axis(ids: torch.Tensor, sizes) -> torch.Tensor:
    """Ids as a readout takes them: no group axis for a single group."""
    return ids.squeeze(-1) if len(sizes) == 1 else ids


def top_k(logits: torch.Tensor, k: int) -> torch.Tensor:
    """Keep the k largest logits of the last axis, the rest to -inf (a logit filter)."""
    kth = logits.topk(k, dim=-1).values[..., -1:]
    return logits.masked_fill(logits < kth, float('-inf'))


def one_hots(ids: torch.Tensor, sizes) -> torch.Tensor:
    """``(..., g)`` ids -> concatenated one-hots ``(..., sum n_g)``."""
    return torch.cat([F.one_hot(ids[..., i], n).float() for i, n in enumerate(sizes)], dim=-1)


def argmax_ids(weights: torch.Tensor, sizes) -> torch.Tensor:
    """Concatenated per-group weights ``(..., sum n_g)`` -> the argmax id of each group ``(..., g)``."""
    return torch.stack([w.argmax(-1) for w in weights.split(list(sizes), dim=-1)], dim=-1)


def symlog64(x: torch.Tensor) -> torch.Tensor:
    """DreamerV3's symlog in float64: sign(x) ln(1 + |x|)."""
    x = x.double()
    return torch.where(x < 0, -torch.log(1 - x), torch.log(1 + x))


def two_hot_reference(values: torch.Tensor, centers: torch.Tensor) -> torch.Tensor:
    """Two-hot weights as the triangular kernel ``max(0, 1 - |y - c_i| / step)``
    over even bin centres (float64), ``y`` clamped to the end centres."""
    centers = centers.double()
    y = values.double().clamp(centers[0], centers[-1]).unsqueeze(-1)
    step = centers[1] - centers[0]
    return (1 - (y - centers).abs() / step).clamp(min=0)


def hl_gauss_reference(values: torch.Tensor, edges: torch.Tensor, sigma: float) -> torch.Tensor:
    """HL-Gauss target: the mass of N(y, sigma^2) in each bin, renormalised to
    the edges, from the normal CDF (``torch.special.ndtr``) in float64."""
    edges = edges.double()
    y = values.double().clamp(edges[0], edges[-1]).unsqueeze(-1)
    cdf = torch.special.ndtr((edges - y) / sigma)
    return (cdf[..., 1:] - cdf[..., :-1]) / (cdf[..., -1:] - cdf[..., :1])


# --------------------------------------------------------------------------- assertions


def assert_frequencies(ids: torch.Tensor, probs: torch.Tensor, what: str = '') -> None:
    """Every category's empirical frequency within NUM_SIGMA standard errors
    ``sqrt(p (1 - p) / N)`` of its probability (p = 0: never drawn)."""
    ids, probs = ids.reshape(-1), probs.double()
    assert ids.min() >= 0 and ids.max() < probs.numel(), f'{what}: ids outside [0, {probs.numel()})'
    freq = torch.bincount(ids, minlength=probs.numel()).double() / ids.numel()
    tol = NUM_SIGMA * (probs * (1 - probs) / ids.numel()).sqrt()
    bad = (freq - probs).abs() > tol + 1e-12
    assert not bad.any(), f'{what}: frequencies {freq.tolist()} vs probabilities {probs.tolist()}'


def assert_finite_grad(t: torch.Tensor, what: str = '') -> None:
    assert t.grad is not None, f'{what}: no gradient'
    assert torch.isfinite(t.grad).all(), f'{what}: non-finite gradient {t.grad}'
