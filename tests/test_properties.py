"""Property-based tests (hypothesis) over random configurations.

Random group counts and sizes, continuous dims, continuous distribution types,
normalisation, batch shapes and selector configs must satisfy:

- discrete log-probs normalise: log-sum-exp over every id of a group is 0, and the
  reported entropy is ``-sum p log p`` over those ids;
- continuous densities integrate to 1 in original units (change of variables);
- discrete entropy lies in ``[0, log n]``;
- ``KL(p, p) = 0`` and ``KL(p, q) >= 0`` for discrete and continuous parts;
- the parallel (batched) multi-discrete path equals the sequential one (log-prob,
  entropy, KL, loss, samples drawn with the same seed);
- samples and modes lie in the support and range (ids in ``[0, n_g)``, squashed in
  ``(-1, 1)``, beta / kumaraswamy in ``[clip_eps, 1 - clip_eps]``, then de-normalised
  and rescaled);
- an embed through a selector equals the configured table rows, and the readout's
  logits / params through it are the products with those rows, for registered and
  runtime selectors alike.

Every tensor is drawn from a ``torch.Generator`` seeded by a hypothesis-drawn integer,
so a falsifying example printed by hypothesis reproduces exactly. Examples are bounded
(``max_examples``) to keep the file fast; hypothesis' own statistics (``--hypothesis-show-statistics``,
on by default through ``addopts`` in pyproject.toml) report how many ran.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass

import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from discrete_continuous_embed_readout import DiscreteContinuous, EmbedAndReadout, ParameterlessReadout

# PROPERTY_EXAMPLES=1000 runs a deeper search (default 25 per test: the suite stays fast)
BOUNDED = settings(
    max_examples=int(os.environ.get('PROPERTY_EXAMPLES', '25')),
    deadline=None,
    database=None,  # write nothing into the repository
    print_blob=True,
    suppress_health_check=[HealthCheck.too_slow],
)

DIST_TYPES = ('gaussian', 'squashed', 'beta', 'kumaraswamy')
F32_EPS = torch.finfo(torch.float32).eps


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


def with_group_axis(t: torch.Tensor, setup: Setup) -> torch.Tensor:
    return t.unsqueeze(-1) if setup.num_groups == 1 else t


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


# ----------------------------------------------------------------------------
# discrete log-probs normalise; entropy is -sum p log p over the ids


@BOUNDED
@given(setup=setups(need_discrete=True))
def test_discrete_log_probs_normalise(setup):
    readout = setup.readout()
    dist = setup.dist(setup.generator())
    entropy = with_group_axis(discrete_of(readout.entropy(dist)), setup)  # (*batch, G)
    for g, n in enumerate(setup.sizes):
        # every id of group g on a leading axis; the other groups at id 0
        ids = torch.zeros(n, *setup.batch, setup.num_groups, dtype=torch.long)
        ids[..., g] = torch.arange(n).view(n, *([1] * len(setup.batch)))
        expanded = map_tensors(lambda t, n=n: t.expand(n, *t.shape), dist)
        sampled = setup.squeeze_ids(ids)
        if setup.has_continuous:
            sampled = (sampled, None)
        log_probs = with_group_axis(discrete_of(readout.log_prob(expanded, sampled)), setup)[..., g]  # (n, *batch)
        assert torch.isfinite(log_probs).all()
        assert (log_probs <= 1e-6).all(), 'a log-prob above 0'
        total = torch.logsumexp(log_probs.double(), dim=0)
        torch.testing.assert_close(total, torch.zeros_like(total), atol=1e-5, rtol=0)
        expected_entropy = -(log_probs.double().exp() * log_probs.double()).sum(0)
        torch.testing.assert_close(entropy[..., g].double(), expected_entropy, atol=1e-5, rtol=1e-5)


# ----------------------------------------------------------------------------
# continuous densities integrate to 1 in original units


def _soft_clamp(log_var: torch.Tensor, clamp) -> torch.Tensor:
    if clamp is None:
        return log_var
    lo, hi = clamp
    return lo + (torch.tanh(log_var / (hi - lo)) + 1.0) / 2.0 * (hi - lo)


@BOUNDED
@given(
    data=st.data(),
    num_continuous=st.integers(1, 3),
    dist_type=st.sampled_from(DIST_TYPES),
    seed=st.integers(0, 2**31 - 1),
)
def test_continuous_densities_integrate_to_one(data, num_continuous, dist_type, seed):
    # unimodal beta / kumaraswamy: bounded densities, so a grid integrates them well
    dist_kwargs = data.draw(continuous_kwargs(dist_type, unimodal=True))
    # the default clip_eps (1e-5): a wider clip flattens the density near the edges
    dist_kwargs = tuple((k, v) for k, v in dist_kwargs if k != 'clip_eps')
    mean_std = data.draw(mean_stds(num_continuous))
    setup = Setup((), num_continuous, dist_type, dist_kwargs, mean_std, (), seed, 1.0, 1.0, False)
    readout = setup.readout()
    gen = setup.generator()
    params = torch.randn(num_continuous, 2, generator=gen, dtype=torch.float64)
    params[:, 0] = params[:, 0].clamp(-2.0, 2.0)  # moderate means / log-variances:
    params[:, 1] = params[:, 1].clamp(-3.0, 1.0)  # the grid resolves the density

    num_points = 20001
    if dist_type in ('gaussian', 'squashed'):
        sigma = torch.exp(0.5 * _soft_clamp(params[:, 1], dict(dist_kwargs).get('log_var_clamp_range')))
        u = params[:, 0] + sigma * torch.linspace(-12.0, 12.0, num_points, dtype=torch.float64)[:, None]
        native = torch.tanh(u) if dist_type == 'squashed' else u
    else:
        native = torch.linspace(0.0, 1.0, num_points, dtype=torch.float64)[:, None].expand(num_points, num_continuous)
    values = native
    if mean_std is not None:
        ms = torch.tensor(mean_std, dtype=torch.float64)
        values = native * ms[:, 1] + ms[:, 0]
    log_density = readout.log_prob(params.expand(num_points, *params.shape), values)  # (N, C)
    assert log_density.shape == (num_points, num_continuous)
    assert not torch.isnan(log_density).any()
    mass = torch.trapezoid(log_density.exp(), values, dim=0)
    torch.testing.assert_close(mass, torch.ones_like(mass), atol=2e-3, rtol=0)


# ----------------------------------------------------------------------------
# entropy bounds, KL(p, p) = 0, KL(p, q) >= 0


@BOUNDED
@given(setup=setups())
def test_entropy_and_kl(setup):
    readout = setup.readout()
    p, q = setup.dist(setup.generator(0)), setup.dist(setup.generator(1))
    d_ent, c_ent = parts(readout.entropy(p), setup.has_discrete, setup.has_continuous)
    if setup.has_discrete:
        d_ent = with_group_axis(d_ent, setup)
        assert d_ent.shape == (*setup.batch, setup.num_groups)
        log_n = torch.tensor(setup.sizes, dtype=d_ent.dtype).log()
        assert (d_ent >= -1e-6).all(), f'negative discrete entropy {d_ent.min().item()}'
        assert (d_ent <= log_n + 1e-5).all(), 'discrete entropy above log n'
    if setup.has_continuous:
        assert c_ent.shape == (*setup.batch, setup.num_continuous)
        assert torch.isfinite(c_ent).all()

    d_pp, c_pp = parts(readout.kl_div(p, p), setup.has_discrete, setup.has_continuous)
    d_pq, c_pq = parts(readout.kl_div(p, q), setup.has_discrete, setup.has_continuous)
    if setup.has_discrete:
        d_pp, d_pq = with_group_axis(d_pp, setup), with_group_axis(d_pq, setup)
        assert d_pp.shape == d_pq.shape == (*setup.batch, setup.num_groups)
        torch.testing.assert_close(d_pp, torch.zeros_like(d_pp), atol=1e-5, rtol=0)
        assert (d_pq >= -1e-5).all(), f'negative discrete KL {d_pq.min().item()}'
    if setup.has_continuous:
        assert c_pp.shape == c_pq.shape == (*setup.batch, setup.num_continuous)
        # float32 cancellation in -H(p) - E_p[log p]: allow a few ulps of the entropy's size
        tol = 1e-4 + 1e-6 * c_ent.abs()
        assert (c_pp.abs() <= tol).all(), f'continuous KL(p, p) = {c_pp} (entropy {c_ent})'
        assert torch.isfinite(c_pq).all()
        assert (c_pq >= -tol).all(), f'negative continuous KL {c_pq.min().item()}'


# ----------------------------------------------------------------------------
# parallel path == sequential path


@BOUNDED
@given(
    setup=setups(need_discrete=True),
    temperature=st.sampled_from([0.0, 0.5, 1.0]),
    differentiable=st.booleans(),
    unreduced=st.booleans(),
    use_mask=st.booleans(),
)
def test_parallel_equals_sequential(setup, temperature, differentiable, unreduced, use_mask):
    if setup.dist_type == 'kumaraswamy' and temperature not in (0.0, 1.0):
        temperature = 1.0  # kumaraswamy has no other temperature
    readout = setup.readout()
    p, q = setup.dist(setup.generator(0)), setup.dist(setup.generator(1))
    gen = setup.generator(2)
    ids = setup.squeeze_ids(setup.ids(gen, ignore_fraction=0.2))
    torch.manual_seed(setup.seed)
    values = readout.sample(p, generator=setup.generator(3))
    values = parts(values, True, setup.has_continuous)[1]
    targets = (ids, values) if setup.has_continuous else ids
    mask = torch.rand(setup.batch, generator=gen) < 0.7 if use_mask and setup.batch else None

    def run():
        torch.manual_seed(setup.seed + 4)
        samples = readout.sample(p, temperature, differentiable, generator=setup.generator(4))
        torch.manual_seed(setup.seed + 5)
        with_lp = readout.sample(p, temperature, generator=setup.generator(5), return_log_prob=True)
        return dict(
            log_prob=readout.log_prob(p, targets),
            log_prob_concat=readout.log_prob(p, targets, concat=True),
            entropy=readout.entropy(p),
            kl=readout.kl_div(p, q),
            kl_self=readout.kl_div(q, q),
            loss=readout.calculate_loss(p, targets, mask=mask, return_unreduced_loss=unreduced),
            samples=samples,
            sample_with_log_prob=with_lp,
            mode=readout.mode(p),
        )

    parallel, sequential = both_paths(readout, run)
    for key in parallel:
        assert_same(parallel[key], sequential[key], key)


# ----------------------------------------------------------------------------
# samples and modes lie in the support and range


def _expected_interval(setup: Setup, rescale_range):
    """Interval of continuous samples per dim after de-normalising / rescaling: (lo, hi) tensors (C,)."""
    bounds = setup.native_bounds()
    if bounds is None:
        return None
    lo = torch.full((setup.num_continuous,), bounds[0], dtype=torch.float64)
    hi = torch.full((setup.num_continuous,), bounds[1], dtype=torch.float64)
    if rescale_range is not None:  # the native range onto rescale_range: the normaliser does not enter
        (n_lo, n_hi), (r_lo, r_hi) = setup.native_range(), rescale_range
        lo = (lo - n_lo) / (n_hi - n_lo) * (r_hi - r_lo) + r_lo
        hi = (hi - n_lo) / (n_hi - n_lo) * (r_hi - r_lo) + r_lo
    elif setup.mean_std is not None:
        ms = torch.tensor(setup.mean_std, dtype=torch.float64)
        lo, hi = lo * ms[:, 1] + ms[:, 0], hi * ms[:, 1] + ms[:, 0]
    return lo, hi


def _check_continuous_in_range(x: torch.Tensor, setup: Setup, rescale_range, what: str) -> None:
    assert x.shape == (*setup.batch, setup.num_continuous), f'{what}: shape {tuple(x.shape)}'
    assert torch.isfinite(x).all(), f'{what}: non-finite values'
    if setup.mean_std is None and rescale_range is None:  # native units: exact checks
        if setup.dist_type == 'squashed':
            assert (x.abs() < 1).all(), f'{what}: squashed sample outside (-1, 1): {x}'
        bounds = setup.native_bounds()
        if bounds is not None:
            assert (x >= bounds[0]).all() and (x <= bounds[1]).all(), f'{what}: outside {bounds}: {x}'
        return
    interval = _expected_interval(setup, rescale_range)
    if interval is None:
        return
    lo, hi = interval
    tol = 1e-5 * (1 + torch.maximum(lo.abs(), hi.abs()))
    x = x.double()
    assert (x >= lo - tol).all() and (x <= hi + tol).all(), f'{what}: outside [{lo.tolist()}, {hi.tolist()}]: {x}'


@BOUNDED
@given(
    setup=setups(),
    temperature=st.sampled_from([0.0, 0.5, 1.0, 1.5]),
    differentiable=st.booleans(),
    rescale=st.one_of(st.none(), st.tuples(st.floats(-5.0, 5.0), st.floats(0.1, 10.0))),
)
def test_samples_and_modes_in_support(setup, temperature, differentiable, rescale):
    if setup.dist_type == 'kumaraswamy' and temperature not in (0.0, 1.0):
        temperature = 1.0
    rescale_range = None
    if rescale is not None and setup.has_continuous and setup.native_range() is not None:
        rescale_range = (rescale[0], rescale[0] + rescale[1])
    readout = setup.readout()
    dist = setup.dist(setup.generator(0))
    torch.manual_seed(setup.seed)
    sampled = readout.sample(dist, temperature, differentiable, rescale_range=rescale_range, generator=setup.generator(1))
    mode = readout.mode(dist, rescale_range=rescale_range)
    greedy = readout.sample(dist, 0.0, rescale_range=rescale_range, generator=setup.generator(2))
    assert_same(greedy, mode, 'sample(temperature=0) vs mode')

    s_d, s_c = parts(sampled, setup.has_discrete, setup.has_continuous)
    m_d, m_c = parts(mode, setup.has_discrete, setup.has_continuous)
    if setup.has_discrete:
        if differentiable:  # straight-through one-hots, the groups concatenated
            assert s_d.shape == (*setup.batch, sum(setup.sizes))
            for h in s_d.split(list(setup.sizes), dim=-1):
                assert ((h - 0).abs() < 1e-5).logical_or((h - 1).abs() < 1e-5).all(), 'one-hot entries not 0/1'
                torch.testing.assert_close(h.sum(-1), torch.ones_like(h.sum(-1)), atol=1e-5, rtol=0)
        else:
            assert s_d.dtype == torch.long
            s_d = with_group_axis(s_d, setup)
            assert s_d.shape == (*setup.batch, setup.num_groups)
            sizes = torch.tensor(setup.sizes)
            assert (s_d >= 0).all() and (s_d < sizes).all(), f'ids out of range: {s_d} for sizes {setup.sizes}'
        m_d = with_group_axis(m_d, setup)
        logits = (dist.discrete if setup.has_continuous else dist,)
        logits = logits[0] if isinstance(logits[0], tuple) else logits
        argmax = torch.stack([g.argmax(-1) for g in logits], dim=-1)
        assert torch.equal(m_d, argmax), 'discrete mode is not the argmax'
    if setup.has_continuous:
        _check_continuous_in_range(s_c, setup, rescale_range, 'sample')
        _check_continuous_in_range(m_c, setup, rescale_range, 'mode')


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


def _config_parts(config):
    if isinstance(config, tuple):
        return config
    if isinstance(config[0], list):
        return config, None
    return None, config


@BOUNDED
@given(data=st.data())
def test_selector_embed_and_readout_use_configured_rows(data):
    num_discrete = data.draw(st.integers(0, 12), label='num_discrete')
    num_continuous = data.draw(st.integers(0 if num_discrete else 1, 3), label='num_continuous')
    configs = data.draw(st.lists(selector_configs(num_discrete, num_continuous), min_size=1, max_size=3), label='configs')
    mean_std = data.draw(mean_stds(num_continuous), label='mean_std') if num_continuous else None
    weight_tie = data.draw(st.booleans(), label='weight_tie')
    batch = tuple(data.draw(st.lists(st.integers(1, 3), max_size=2), label='batch'))
    seed = data.draw(st.integers(0, 2**31 - 1), label='seed')
    dim = 8

    kwargs = dict(num_discrete=num_discrete, num_continuous=num_continuous, selectors=configs, weight_tie=weight_tie)
    if mean_std is not None:
        kwargs['continuous_mean_std'] = torch.tensor(mean_std, dtype=torch.float32)
    embed, readout = EmbedAndReadout(dim, **kwargs)
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():  # a table worth comparing against (the default init is std 0.01)
        readout.embeddings.weight.copy_(torch.randn(readout.embeddings.weight.shape, generator=gen))
        if not weight_tie:
            embed.embeddings.weight.copy_(torch.randn(embed.embeddings.weight.shape, generator=gen))
    table = embed.embeddings.weight.detach().double()
    readout_table = readout.embeddings.weight.detach().double()

    for k, config in enumerate(configs):
        groups, dims = _config_parts(config)
        expected = torch.zeros(*batch, dim, dtype=torch.float64)
        ids = values = None
        if groups is not None:
            ids = torch.stack([torch.randint(0, len(g), batch, generator=gen) for g in groups], dim=-1)  # (*batch, G)
            for g, rows in enumerate(groups):
                expected += table[torch.tensor(rows)[ids[..., g]]]
            ids = ids.squeeze(-1) if len(groups) == 1 else ids
        if dims is not None:
            values = torch.randn(*batch, len(dims), generator=gen) * 3
            normalised = values.double()
            if mean_std is not None:
                ms = torch.tensor(mean_std, dtype=torch.float64)[dims]
                normalised = (normalised - ms[:, 0]) / ms[:, 1]
            rows = table[[num_discrete + d for d in dims]]  # (c, dim)
            expected += (normalised.unsqueeze(-1) * rows).sum(-2)
        inp = (ids, values) if groups is not None and dims is not None else (ids if groups is not None else values)

        registered = embed(inp, selector_index=k)
        runtime = embed(inp, selector_config=config)
        for name, out in (('registered', registered), ('runtime', runtime)):
            assert out.shape == (*batch, dim), f'{name} selector {k}: shape {tuple(out.shape)}'
            torch.testing.assert_close(
                out.double(), expected, atol=1e-4, rtol=1e-5, msg=lambda m, name=name, k=k: f'{name} selector {k} embed: {m}'
            )

        # the readout through the same selector: products with the configured rows, in order
        hidden = torch.randn(*batch, dim, generator=gen)
        h = hidden.double()
        out_registered = readout(hidden, selector_index=k)
        out_runtime = readout(hidden, selector_config=config)
        assert_same(out_registered, out_runtime, f'selector {k}: registered vs runtime readout', atol=1e-6)
        d_out, c_out = parts(out_registered, groups is not None, dims is not None)
        if groups is not None:
            group_logits = d_out if isinstance(d_out, tuple) else (d_out,)
            assert len(group_logits) == len(groups)
            for g, rows in enumerate(groups):
                want = h @ readout_table[rows].T
                torch.testing.assert_close(group_logits[g].double(), want, atol=1e-4, rtol=1e-5)
        if dims is not None:
            mean_rows = readout_table[[num_discrete + d for d in dims]]
            log_var_rows = readout_table[[num_discrete + num_continuous + d for d in dims]]
            want = torch.stack((h @ mean_rows.T, h @ log_var_rows.T), dim=-1)  # (*batch, c, 2)
            torch.testing.assert_close(c_out.double(), want, atol=1e-4, rtol=1e-5)
