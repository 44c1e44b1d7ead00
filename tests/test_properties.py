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
(``max_examples``) to keep the file fast; ``pytest --hypothesis-show-statistics
tests/test_properties.py`` reports how many ran (off by default: a hundred lines).
"""

from __future__ import annotations

import torch
from helpers import with_group_axis
from helpers.strategies import (
    BOUNDED,
    DIST_TYPES,
    Setup,
    assert_same,
    both_paths,
    config_parts,
    continuous_kwargs,
    discrete_of,
    map_tensors,
    mean_stds,
    parts,
    selector_configs,
    setups,
    soft_clamp,
)
from hypothesis import given
from hypothesis import strategies as st

from discrete_continuous_embed_readout import EmbedAndReadout

# ----------------------------------------------------------------------------
# discrete log-probs normalise; entropy is -sum p log p over the ids


@BOUNDED
@given(setup=setups(need_discrete=True))
def test_discrete_log_probs_normalise(setup):
    readout = setup.readout()
    dist = setup.dist(setup.generator())
    entropy = with_group_axis(discrete_of(readout.entropy(dist)), setup.sizes)  # (*batch, G)
    for g, n in enumerate(setup.sizes):
        # every id of group g on a leading axis; the other groups at id 0
        ids = torch.zeros(n, *setup.batch, setup.num_groups, dtype=torch.long)
        ids[..., g] = torch.arange(n).view(n, *([1] * len(setup.batch)))
        expanded = map_tensors(lambda t, n=n: t.expand(n, *t.shape), dist)
        sampled = setup.squeeze_ids(ids)
        if setup.has_continuous:
            sampled = (sampled, None)
        log_probs = with_group_axis(discrete_of(readout.log_prob(expanded, sampled)), setup.sizes)[..., g]  # (n, *batch)
        assert torch.isfinite(log_probs).all()
        assert (log_probs <= 1e-6).all(), 'a log-prob above 0'
        total = torch.logsumexp(log_probs.double(), dim=0)
        torch.testing.assert_close(total, torch.zeros_like(total), atol=1e-5, rtol=0)
        expected_entropy = -(log_probs.double().exp() * log_probs.double()).sum(0)
        torch.testing.assert_close(entropy[..., g].double(), expected_entropy, atol=1e-5, rtol=1e-5)


# ----------------------------------------------------------------------------
# continuous densities integrate to 1 in original units


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
        sigma = torch.exp(0.5 * soft_clamp(params[:, 1], dict(dist_kwargs).get('log_var_clamp_range')))
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
        d_ent = with_group_axis(d_ent, setup.sizes)
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
        d_pp, d_pq = with_group_axis(d_pp, setup.sizes), with_group_axis(d_pq, setup.sizes)
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
            s_d = with_group_axis(s_d, setup.sizes)
            assert s_d.shape == (*setup.batch, setup.num_groups)
            sizes = torch.tensor(setup.sizes)
            assert (s_d >= 0).all() and (s_d < sizes).all(), f'ids out of range: {s_d} for sizes {setup.sizes}'
        m_d = with_group_axis(m_d, setup.sizes)
        logits = (dist.discrete if setup.has_continuous else dist,)
        logits = logits[0] if isinstance(logits[0], tuple) else logits
        argmax = torch.stack([g.argmax(-1) for g in logits], dim=-1)
        assert torch.equal(m_d, argmax), 'discrete mode is not the argmax'
    if setup.has_continuous:
        _check_continuous_in_range(s_c, setup, rescale_range, 'sample')
        _check_continuous_in_range(m_c, setup, rescale_range, 'mode')


# ----------------------------------------------------------------------------
# embed / readout through a selector == the configured table rows


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
        groups, dims = config_parts(config)
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
