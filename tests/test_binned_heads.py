"""Distributional regression heads (``continuous_dist_type='two_hot'`` / ``'hl_gauss'``):
each continuous dim read out as logits over bins of the shared table. Targets against
the triangular kernel, the normal CDF and the ``hl-gauss-pytorch`` package; the loss
against a hand-written cross entropy; sampling, log-probs, entropies and KL against
``torch.distributions.Categorical``; the embedding against target weights times the
bin rows."""

import math

import pytest
import torch
from helpers import assert_frequencies, build_pair, hl_gauss_reference, symlog64, two_hot_reference
from torch.distributions import Categorical, kl_divergence

from discrete_continuous_embed_readout import HLGaussDistribution, Readout, TwoHotDistribution

BINS = dict(num_bins=21, min_value=-10.0, max_value=10.0)


def binned_pair(kind: str, dim: int = 16, seed: int = 0, **kwargs):
    options = dict(BINS, **kwargs.pop('bins', {}))
    return build_pair(dim, seed, num_continuous=3, continuous_dist_type=kind, continuous_dist_kwargs=options, **kwargs)


def bin_space(values, transform):
    return symlog64(values) if transform == 'symlog' else values.double()


def centers_of(kind: str, transform, num_bins=21, lo=-10.0, hi=10.0) -> torch.Tensor:
    """Bin centres in bin space, float64, from the documented layout (``lo``, ``hi`` in bin space)."""
    if kind == 'two_hot':
        return torch.linspace(float(lo), float(hi), num_bins, dtype=torch.float64)
    edges = torch.linspace(float(lo), float(hi), num_bins + 1, dtype=torch.float64)
    return (edges[1:] + edges[:-1]) / 2


def reference_targets(kind: str, values, transform, ratio: float = 0.75) -> torch.Tensor:
    y = bin_space(values, transform)
    lo, hi = BINS['min_value'], BINS['max_value']  # in bin space
    if kind == 'two_hot':
        return two_hot_reference(y, centers_of(kind, transform))
    edges = torch.linspace(lo, hi, BINS['num_bins'] + 1, dtype=torch.float64)
    return hl_gauss_reference(y, edges, ratio * (hi - lo) / BINS['num_bins'])


def bin_rows(readout, dims):
    """The table rows of each dim's bins: after the discrete and continuous blocks, dim-major."""
    nd, nc, nb = readout.layout.num_discrete, readout.num_continuous, readout.layout.num_bins
    return torch.tensor([[nd + nc + d * nb + b for b in range(nb)] for d in dims])


def decoded(probs, kind, transform):
    """symexp (or the identity) of the expected bin position, float64."""
    position = (probs.double() * centers_of(kind, transform)).sum(-1)
    return torch.sign(position) * torch.expm1(position.abs()) if transform == 'symlog' else position


VALUES = torch.tensor([[-9.5, -0.2, 0.0], [0.37, 3.0, 9.99], [-4.4, 1e-3, 7.25]])
CASES = [('two_hot', 'symlog'), ('two_hot', None), ('hl_gauss', None), ('hl_gauss', 'symlog')]


# targets


@pytest.mark.parametrize('kind, transform', CASES)
def test_targets_match_the_reference_formulas(kind, transform):
    head = (TwoHotDistribution if kind == 'two_hot' else HLGaussDistribution)(**BINS, transform=transform)
    probs = head.target_probs(VALUES)
    torch.testing.assert_close(probs.double(), reference_targets(kind, VALUES, transform), atol=1e-6, rtol=0)
    torch.testing.assert_close(probs.sum(-1), torch.ones(3, 3), atol=1e-6, rtol=0)


@pytest.mark.parametrize('transform', [None, 'symlog'])
def test_hl_gauss_targets_match_the_hl_gauss_package(transform):
    hl_gauss = pytest.importorskip('hl_gauss_pytorch')
    values = torch.cat([VALUES.flatten(), torch.linspace(-10, 10, 101), torch.tensor([-30.0, 12.0, 1e4])])
    ours = HLGaussDistribution(**BINS, transform=transform, sigma_to_bin_ratio=0.75).target_probs(values)
    # the package takes values and transforms them; ours are bin-space bounds already
    lo, hi = (math.copysign(math.expm1(abs(v)), v) if transform == 'symlog' else v for v in (BINS['min_value'], BINS['max_value']))
    theirs = hl_gauss.HLGaussLoss(lo, hi, BINS['num_bins'], sigma_to_bin_ratio=0.75,
                                  clamp_to_range=True, use_symlog=transform == 'symlog', warn_out_of_range=False)  # fmt: skip
    torch.testing.assert_close(ours, theirs.transform_to_probs(values), atol=1e-6, rtol=0)


@pytest.mark.parametrize('transform, bound', [('symlog', 10.0), (None, 10.0), ('symlog', 20.0)])  # 20: DreamerV3's bins
def test_two_hot_encode_then_decode_returns_the_value_inside_the_range(transform, bound):
    head = TwoHotDistribution(num_bins=255, min_value=-bound, max_value=bound, transform=transform)
    hi = math.expm1(bound) if transform == 'symlog' else bound  # the largest value the bins cover
    values = torch.cat([torch.linspace(-hi, hi, 1001)[1:-1], torch.tensor([0.0, 1e-4, -3.3, 0.9999])])
    if transform == 'symlog':  # every scale of a symlog range
        values = torch.cat([values, torch.sign(torch.randn(200)) * torch.expm1(torch.rand(200) * bound)])
    back = head.decode(head.target_probs(values.double())).float()
    torch.testing.assert_close(back, values, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize('kind', ['two_hot', 'hl_gauss'])
def test_values_outside_the_range_land_on_the_end_bins(kind):
    head = (TwoHotDistribution if kind == 'two_hot' else HLGaussDistribution)(**BINS, transform=None)
    outside, ends = torch.tensor([-50.0, 1e6]), torch.tensor([-10.0, 10.0])
    torch.testing.assert_close(head.target_probs(outside), head.target_probs(ends), atol=0, rtol=0)
    if kind == 'two_hot':
        assert head.target_probs(outside)[0, 0] == 1 and head.target_probs(outside)[1, -1] == 1


# the readout: loss, sampling, log-probs, entropies, KL, mode


@pytest.mark.parametrize('kind, transform', CASES)
def test_loss_is_the_cross_entropy_against_the_target_bins(kind, transform):
    _, readout = binned_pair(kind, bins=dict(transform=transform))
    x = torch.randn(3, 16, dtype=torch.float64, requires_grad=True)
    readout.double()
    loss = readout(x, VALUES.double())
    logits = (x @ readout.embeddings.weight[bin_rows(readout, range(3))].transpose(-1, -2)).transpose(0, 1)  # (3 tokens, 3 dims, bins)
    expected = -(reference_targets(kind, VALUES, transform) * logits.log_softmax(-1)).sum(-1)
    torch.testing.assert_close(loss, expected.mean(), atol=1e-10, rtol=1e-10)
    unreduced = readout(x, VALUES.double(), return_unreduced_loss=True)
    torch.testing.assert_close(unreduced, expected, atol=1e-10, rtol=1e-10)
    grad, expected_grad = (torch.autograd.grad(v.mean(), x)[0] for v in (unreduced, expected))
    torch.testing.assert_close(grad, expected_grad, atol=1e-10, rtol=1e-10)


def test_loss_normalises_targets_with_continuous_mean_std():
    mean_std = torch.tensor([[1.0, 2.0], [-3.0, 0.5], [0.0, 10.0]])
    _, readout = binned_pair('two_hot', continuous_mean_std=mean_std)
    out = readout(torch.randn(3, 16))
    targets = reference_targets('two_hot', (VALUES - mean_std[:, 0]) / mean_std[:, 1], 'symlog')
    expected = -(targets * out.double().log_softmax(-1)).sum(-1)
    torch.testing.assert_close(readout.calculate_loss(out, VALUES, return_unreduced_loss=True).double(), expected, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize('kind, transform', CASES)
def test_mode_is_the_decoded_expected_value_in_user_units(kind, transform):
    mean_std = torch.tensor([[1.0, 2.0], [-3.0, 0.5], [0.0, 10.0]])
    _, readout = binned_pair(kind, bins=dict(transform=transform), continuous_mean_std=mean_std)
    out = readout(torch.randn(5, 16)) * 50
    expected = decoded(out.softmax(-1), kind, transform) * mean_std[:, 1].double() + mean_std[:, 0].double()
    torch.testing.assert_close(readout.mode(out).double(), expected, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(readout.sample(out, temperature=0.0), readout.mode(out))


def test_a_two_hot_readout_decodes_the_value_it_was_given():
    _, readout = binned_pair('two_hot')
    logits = torch.log(reference_targets('two_hot', VALUES, 'symlog')).float()
    torch.testing.assert_close(readout.mode(logits), VALUES, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize('kind', ['two_hot', 'hl_gauss'])
@pytest.mark.parametrize('temperature', [1.0, 0.5])
def test_sample_draws_bin_values_with_the_softmax_probabilities(kind, temperature):
    _, readout = binned_pair(kind, bins=dict(num_bins=7, min_value=-1.0, max_value=1.0, transform=None))
    logits = torch.tensor([2.0, -1.0, 0.5, 0.0, 1.0, -3.0, 0.3])
    out = logits.expand(20000, 3, 7)
    values = readout.sample(out, temperature=temperature)
    bins = centers_of(kind, None, 7, -1.0, 1.0).float()
    ids = (values.unsqueeze(-1) - bins).abs().argmin(-1)
    torch.testing.assert_close(bins[ids], values)  # every sample is a bin's value
    assert_frequencies(ids, (logits / temperature).softmax(-1), f'{kind} at temperature {temperature}')


@pytest.mark.parametrize('kind', ['two_hot', 'hl_gauss'])
def test_log_prob_entropy_and_kl_are_those_of_the_categorical_over_bins(kind):
    mean_std = torch.tensor([[1.0, 2.0], [-3.0, 0.5], [0.0, 10.0]])
    _, readout = binned_pair(kind, continuous_mean_std=mean_std)  # units move the bins, not the masses
    out, other = readout(torch.randn(4, 16)) * 30, readout(torch.randn(4, 16)) * 30
    values, log_prob = readout.sample(out, return_log_prob=True)
    ids = (((values - mean_std[:, 0]) / mean_std[:, 1]).unsqueeze(-1) - readout.continuous_dist.bin_values(out)).abs().argmin(-1)
    torch.testing.assert_close(log_prob, Categorical(logits=out).log_prob(ids))
    torch.testing.assert_close(readout.log_prob(out, values), Categorical(logits=out).log_prob(ids))
    torch.testing.assert_close(readout.entropy(out), Categorical(logits=out).entropy())
    torch.testing.assert_close(readout.kl_div(out, other), kl_divergence(Categorical(logits=out), Categorical(logits=other)))


def test_log_prob_of_a_value_between_bins_is_that_of_the_nearest_bin():
    _, readout = binned_pair('two_hot', bins=dict(num_bins=5, min_value=-2.0, max_value=2.0, transform=None))
    out = torch.randn(1, 3, 5)
    values = torch.tensor([[-0.6, 0.4, 1.9]])  # nearest bins -1, 0, 2: ids 1, 2, 4
    torch.testing.assert_close(readout.log_prob(out, values), out.log_softmax(-1)[0, [0, 1, 2], [1, 2, 4]][None])


def test_get_dist_is_a_view_of_the_same_distribution():
    _, readout = binned_pair('hl_gauss')
    out = readout(torch.randn(4, 16)) * 20
    dist = readout.get_dist(out)
    values = dist.sample()
    assert values.shape == (4, 3) and dist.batch_shape == (4,) and dist.event_shape == (3,)
    torch.testing.assert_close(dist.log_prob(values), readout.log_prob(out, values).sum(-1))
    torch.testing.assert_close(dist.entropy(), readout.entropy(out).sum(-1))
    torch.testing.assert_close(dist.mode, readout.mode(out))


def test_a_mixed_readout_with_a_binned_part():
    _, readout = build_pair(16, 0, num_discrete=(4, 5), num_continuous=2, continuous_dist_type='two_hot', continuous_dist_kwargs=BINS)
    x = torch.randn(6, 16)
    out = readout(x)
    assert out.discrete[0].shape == (6, 4) and out.continuous.shape == (6, 2, 21)
    rows = readout.embeddings.weight
    torch.testing.assert_close(out.discrete[0], x @ rows[:4].T)  # the discrete block stays first
    actions, log_prob = readout.sample(out, return_log_prob=True)
    torch.testing.assert_close(readout.log_prob(out, actions, concat=True), torch.cat(log_prob, -1))
    loss = readout(x, actions)
    assert all(torch.isfinite(part) for part in loss)


# the table: layout, selectors, the embedding


def test_bins_are_laid_out_after_the_existing_blocks():
    _, gaussian = build_pair(8, 0, num_discrete=10, num_continuous=3)
    _, binned = build_pair(8, 0, num_discrete=10, num_continuous=3, continuous_dist_type='two_hot', continuous_dist_kwargs=BINS)
    assert gaussian.num_rows == 10 + 3 + 3  # unchanged: discrete, continuous, log-var
    assert binned.num_rows == 10 + 3 + 3 * 21  # discrete, continuous, then 21 bins per dim (no log-var rows)
    x = torch.randn(2, 8)
    torch.testing.assert_close(binned(x).continuous, (x @ binned.embeddings.weight[bin_rows(binned, range(3))].transpose(-1, -2)).transpose(0, 1))


def test_a_selector_reads_its_dims_bins():
    _, readout = binned_pair('two_hot', selectors=[[2, 0]])
    _, full = binned_pair('two_hot')
    full.load_state_dict(readout.state_dict())
    x = torch.randn(4, 16)
    torch.testing.assert_close(readout(x, selector_index=0), full(x)[:, [2, 0]])


@pytest.mark.parametrize('kind, transform', CASES)
def test_embed_is_the_target_weights_times_the_bin_rows(kind, transform):
    embed, readout = binned_pair(kind, bins=dict(transform=transform), weight_tie=True)
    rows = readout.embeddings.weight[bin_rows(readout, range(3))].double()  # (3 dims, bins, d)
    expected = torch.einsum('tcb,cbd->tcd', reference_targets(kind, VALUES, transform), rows)
    torch.testing.assert_close(embed(VALUES, sum_continuous=False).double(), expected, atol=1e-6, rtol=1e-6)
    torch.testing.assert_close(embed(VALUES).double(), expected.sum(1), atol=1e-6, rtol=1e-6)
    embed(VALUES).sum().backward()
    grad = readout.embeddings.weight.grad
    assert grad[bin_rows(readout, range(3))].abs().sum() > 0 and grad[:3].abs().sum() == 0  # the bins, not the value rows


def test_embed_with_a_selector_uses_the_selected_dims_bins():
    embed, _ = binned_pair('hl_gauss', selectors=[[2, 0]])
    full, _ = binned_pair('hl_gauss')
    full.load_state_dict(embed.state_dict())
    values = VALUES[:, :2]
    expected = full(torch.stack([torch.zeros(3), torch.zeros(3), values[:, 0]], -1), sum_continuous=False)[:, 2] + \
        full(torch.stack([values[:, 1], torch.zeros(3), torch.zeros(3)], -1), sum_continuous=False)[:, 0]  # fmt: skip
    torch.testing.assert_close(embed(values, selector_index=0), expected)


def test_half_precision_embeddings_score_in_float32():
    _, readout = binned_pair('two_hot')
    x = torch.randn(3, 16)
    full = readout(x, VALUES)
    half = readout.to(torch.bfloat16)(x.bfloat16(), VALUES.bfloat16())
    assert half.dtype == torch.float32 and torch.isfinite(half)
    torch.testing.assert_close(half, full, atol=2e-2, rtol=2e-2)


# errors


@pytest.mark.parametrize('kwargs, match', [
    (dict(num_bins=1), 'num_bins must be an int >= 2'),
    (dict(num_bins=2.5), 'num_bins must be an int >= 2'),
    (dict(min_value=3.0, max_value=3.0), 'min_value < max_value'),
    (dict(max_value=float('inf')), 'finite'),
    (dict(transform='log'), "transform must be 'symlog' or None"),
    (dict(sigma_to_bin_ratio=0.0), 'sigma_to_bin_ratio must be a finite number > 0'),
])  # fmt: skip
def test_bad_bin_options_are_named(kwargs, match):
    with pytest.raises(ValueError, match=match):
        Readout(8, num_continuous=2, continuous_dist_type='hl_gauss', continuous_dist_kwargs=kwargs)


def test_binned_heads_refuse_options_they_cannot_honour():
    with pytest.raises(ValueError, match='continuous_squashed=True needs'):
        Readout(8, num_continuous=2, continuous_dist_type='two_hot', continuous_squashed=True)
    with pytest.raises(ValueError, match='binned head reads out logits over bins'):
        Readout(8, num_continuous=2, continuous_dist_type='two_hot', continuous_log_var_embed=False)
    _, readout = binned_pair('two_hot')
    out = readout(torch.randn(2, 16))
    with pytest.raises(ValueError, match='rescale_range: .* binned head'):
        readout.sample(out, rescale_range=(-1.0, 1.0))
    with pytest.raises(ValueError, match=r'must have shape \(\.\.\., 3, 21\)'):
        readout.sample(torch.randn(2, 3, 2))


def test_default_bins_follow_dreamer_and_the_paper():
    two_hot, hl_gauss = TwoHotDistribution(), HLGaussDistribution()
    assert (two_hot.num_bins, two_hot.min_value, two_hot.max_value, two_hot.transform) == (255, -20.0, 20.0, 'symlog')
    assert (hl_gauss.num_bins, hl_gauss.transform, hl_gauss.sigma_to_bin_ratio) == (255, None, 0.75)
    assert math.isclose(hl_gauss.sigma, 0.75 * 40.0 / 255)
    ends = two_hot.bin_values(torch.empty(0, dtype=torch.float64))[[0, -1]]  # DreamerV3's: symexp(+-20)
    torch.testing.assert_close(ends, torch.tensor([-math.expm1(20.0), math.expm1(20.0)], dtype=torch.float64))


# modes: empty batches, double backward, torch.compile


def test_an_empty_batch_gives_empty_results_and_a_zero_loss():
    embed, readout = binned_pair('hl_gauss')
    out = readout(torch.randn(0, 16))
    assert out.shape == (0, 3, 21) and readout.sample(out).shape == (0, 3) and readout.mode(out).shape == (0, 3)
    assert readout(torch.randn(0, 16), torch.randn(0, 3)) == 0 and embed(torch.randn(0, 3)).shape == (0, 16)


def test_the_loss_is_twice_differentiable():
    _, readout = binned_pair('two_hot')
    readout.double()
    x = torch.randn(4, 16, dtype=torch.float64, requires_grad=True)
    targets = VALUES[:1].double().expand(4, 3)
    assert torch.autograd.gradcheck(lambda x: readout(x, targets), (x,))
    assert torch.autograd.gradgradcheck(lambda x: readout(x, targets), (x,))


def test_embed_readout_and_loss_compile_without_graph_breaks():
    embed, readout = binned_pair('hl_gauss')
    values = VALUES

    def step(values):
        hidden = embed(values)
        return readout(hidden, values), readout.mode(readout(hidden))

    explained = torch._dynamo.explain(step)(values)
    assert explained.graph_break_count == 0, explained.break_reasons
    torch._dynamo.reset()
    compiled = torch.compile(step, backend='eager', fullgraph=True)
    for ours, eager in zip(compiled(values), step(values)):
        torch.testing.assert_close(ours, eager)


# precision, temperature, straight-through samples, the torch view, tying and checkpoints


def test_the_heads_compute_in_float32_for_half_precision_inputs():
    head = TwoHotDistribution()
    values, logits = torch.tensor([0.3, 5.0, 17.3]), torch.randn(3, 255) * 3
    for dtype in (torch.bfloat16, torch.float16):
        half_values, half_logits = values.to(dtype), logits.to(dtype)
        torch.testing.assert_close(head.target_probs(half_values), head.target_probs(half_values.float()))
        torch.testing.assert_close(head.loss(half_logits, half_values), head.loss(half_logits.float(), half_values.float()))
        torch.testing.assert_close(head.log_prob(half_logits, half_values), head.log_prob(half_logits.float(), half_values.float()))
        torch.testing.assert_close(head.mode(half_logits), head.mode(half_logits.float()))
        assert head.nearest_bin(half_values.float()).tolist() == head.nearest_bin(values).tolist()


def test_two_hot_weights_stay_in_the_unit_interval_at_the_ends():
    for num_bins, lo, hi in [(255, -20.0, 20.0), (21, -300.0, 300.0), (201, -7.3, 11.9), (7, -1.0, 1.0)]:
        head = TwoHotDistribution(num_bins=num_bins, min_value=lo, max_value=hi, transform=None)
        ends = head.bin_values(torch.empty(0))[[0, -1]]
        probs = head.target_probs(torch.cat([ends, ends * 10]))
        assert probs.min() >= 0 and probs.max() <= 1, (num_bins, lo, hi)
        assert head.decode(probs).abs().max() <= ends[-1]


def test_half_precision_samples_keep_the_drawn_bin():
    # 1001 bins over [-1000, 1000] are finer than bfloat16 can tell apart near 1000
    _, readout = build_pair(8, 0, num_continuous=1, continuous_dist_type='two_hot',
                            continuous_dist_kwargs=dict(num_bins=1001, min_value=-1000.0, max_value=1000.0, transform=None))  # fmt: skip
    logits = torch.full((4, 1, 1001), -30.0)
    logits[..., 999] = 30.0  # the bin at 998
    values, log_prob = readout.to(torch.bfloat16).sample(logits.bfloat16(), return_log_prob=True)
    assert values.dtype == torch.float32 and (values == 998.0).all()
    torch.testing.assert_close(log_prob, torch.zeros(4, 1), atol=1e-6, rtol=0)
    torch.testing.assert_close(readout.log_prob(logits.bfloat16(), values), log_prob)


def test_a_tiny_temperature_draws_the_most_likely_bin():
    _, readout = binned_pair('hl_gauss')
    out = readout(torch.randn(6, 16)) * 10
    best = readout.continuous_dist.bin_values(out)[out.argmax(-1)]
    torch.testing.assert_close(readout.sample(out, temperature=1e-40), best)


def test_a_differentiable_sample_is_straight_through():
    _, readout = binned_pair('two_hot', bins=dict(num_bins=5, min_value=-2.0, max_value=2.0, transform=None))
    logits = torch.randn(3, 3, 5, requires_grad=True)
    values = readout.sample(logits, differentiable=True)
    bins = torch.linspace(-2.0, 2.0, 5)
    assert ((values.detach().unsqueeze(-1) - bins).abs().min(-1).values == 0).all()  # forward: a bin's value
    (grad,) = torch.autograd.grad(values.sum(), logits)
    probs = logits.detach().softmax(-1)  # backward: d/dlogits of the expected value sum_b p_b v_b
    torch.testing.assert_close(grad, probs * (bins - (probs * bins).sum(-1, keepdim=True)))


def test_the_torch_view_has_the_expected_value_as_mean_and_a_kl():
    _, readout = binned_pair('two_hot', continuous_mean_std=torch.tensor([[1.0, 2.0], [-3.0, 0.5], [0.0, 10.0]]))
    out, other = readout(torch.randn(4, 16)) * 30, readout(torch.randn(4, 16)) * 30
    dist = readout.get_dist(out)
    values = readout.continuous_dist.bin_values(out) * torch.tensor([2.0, 0.5, 10.0])[:, None] + torch.tensor([1.0, -3.0, 0.0])[:, None]
    torch.testing.assert_close(dist.mean, (out.softmax(-1) * values).sum(-1))
    torch.testing.assert_close(kl_divergence(dist, readout.get_dist(other)), readout.kl_div(out, other).sum(-1))
    with pytest.raises(NotImplementedError, match='no reparameterised sample'):
        dist.rsample()


def test_a_registered_binned_head_reaches_the_embed(register_head):
    class LinearBins(TwoHotDistribution):
        default_transform = None

    register_head('linear_bins', LinearBins)
    embed, readout = build_pair(8, 0, num_continuous=2, continuous_dist_type='linear_bins',
                                continuous_dist_kwargs=dict(num_bins=5, min_value=-1.0, max_value=1.0), weight_tie=True)  # fmt: skip
    assert embed.layout.num_bins == readout.layout.num_bins == 5
    rows = readout.embeddings.weight[bin_rows(readout, range(2))]
    values = torch.tensor([[0.25, -1.0]])
    expected = torch.einsum('tcb,cbd->td', embed.continuous_bins.target_probs(values), rows)
    torch.testing.assert_close(embed(values), expected)


def test_tying_needs_the_same_bins():
    bins = dict(num_continuous=2, continuous_dist_type='two_hot', weight_tie=True)
    with pytest.raises(ValueError, match='same bins'):
        build_pair(8, 0, **bins, embed_kwargs=dict(continuous_dist_kwargs=dict(num_bins=5)), readout_kwargs=dict(continuous_dist_kwargs=dict(num_bins=11)))
    with pytest.raises(ValueError, match='same bins'):
        build_pair(8, 0, num_continuous=2, weight_tie=True, readout_kwargs=dict(continuous_dist_type='hl_gauss'))


def test_a_checkpoint_with_other_bins_names_the_layout():
    _, saved = binned_pair('two_hot', bins=dict(num_bins=11))
    _, other = binned_pair('two_hot')
    with pytest.raises(RuntimeError, match=r'this module.s table has 66 \(its layout: 0 discrete, 3 continuous, 3 x 21 bins \(num_bins=21\)'):
        other.load_state_dict(saved.state_dict())
