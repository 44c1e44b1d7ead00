"""``CompositeActionDistribution``: a mixed readout's action as one tensordict
``CompositeDistribution`` for TorchRL. Its log-probs, entropies, samples and mode
against the readout's own methods and the float64 references of
``helpers.policy_cases``; per-part and aggregated log-probs as tensordict reports
them; parameterised actions (``continuous_used_by``) against hand-masked sums; the
errors; and use inside tensordict's and TorchRL's probabilistic modules and a few
``ClipPPOLoss`` steps (skipped without torchrl)."""

# g - groups, c - continuous dims

import subprocess
import sys
import textwrap

import pytest
import torch
from helpers import bounded_log_density
from helpers.policy_cases import (
    BATCH,
    POLICY_CASES,
    assert_close,
    event_sum,
    make_params,
    native_mode,
    policy_readout,
    ref_continuous_entropy,
    ref_continuous_log_prob,
    ref_discrete_entropy,
    ref_discrete_log_prob,
    to_output_units,
    unpack,
)

tensordict = pytest.importorskip('tensordict')

from tensordict import TensorDict  # noqa: E402
from tensordict.nn import (  # noqa: E402
    CompositeDistribution,
    InteractionType,
    ProbabilisticTensorDictModule,
    ProbabilisticTensorDictSequential,
    TensorDictModule,
    set_composite_lp_aggregate,
    set_interaction_type,
)
from torch import nn  # noqa: E402
from torch.distributions import Categorical, Normal  # noqa: E402

from discrete_continuous_embed_readout import CompositeActionDistribution, EmbedAndReadout, ParameterlessReadout, Readout  # noqa: E402
from discrete_continuous_embed_readout.rl.composite import SAMPLE_KEYS  # noqa: E402

MIXED_CASES = [c for c in POLICY_CASES if c.groups and c.cont]
mixed_case_params = pytest.mark.parametrize('case', MIXED_CASES, ids=lambda c: c.id)
D_KEY, C_KEY = SAMPLE_KEYS
LP_KEYS = (('action', 'discrete_log_prob'), ('action', 'continuous_log_prob'))
RUN_HOP_LEAP = (torch.tensor([0.0, 2.5, 3.0]), torch.tensor([6.0, 5.0, 6.0]))  # examples/hybrid_actions.py's speed bounds


def build(case, dtype=torch.float32, seed=0, **kwargs):
    """The case's readout, its raw outputs (per-group logits as a tuple), and the composite of them."""
    readout, call = policy_readout(case)
    raw = make_params(case, dtype=dtype, seed=seed)
    logits, params = unpack(case, raw)
    flat = logits if case.single else torch.cat(logits, dim=-1)  # one tensordict entry: the groups concatenated
    dist = CompositeActionDistribution(flat, params, readout=readout, rescale_range=case.rescale, **call, **kwargs)
    return readout, call, raw, dist


def parts(action):
    return action[D_KEY], action[C_KEY]


def hybrid(batch=6, seed=0, **kwargs):
    """A readout shaped like examples/hybrid_actions.py's (3 moves, 3 squashed speeds in per-move bounds) and outputs."""
    torch.manual_seed(seed)
    readout = ParameterlessReadout(num_discrete=3, num_continuous=3, continuous_squashed=True)
    logits, params = 2 * torch.randn(batch, 3), torch.stack((0.8 * torch.randn(batch, 3), -2 + 2.5 * torch.rand(batch, 3)), -1)
    return readout, logits, params, CompositeActionDistribution(logits, params, readout=readout, rescale_range=RUN_HOP_LEAP, **kwargs)


# how it is built


def test_get_dist_composite_returns_one_composite_distribution():
    readout, logits, params, _ = hybrid()
    dist = readout.get_dist((logits, params), composite=True, rescale_range=RUN_HOP_LEAP)
    assert isinstance(dist, CompositeActionDistribution) and isinstance(dist, CompositeDistribution)
    assert list(dist.dists) == list(SAMPLE_KEYS) and dist.batch_shape == (6,)
    assert isinstance(dist[D_KEY], Categorical) and dist[C_KEY].event_shape == (3,)


def test_the_constructor_takes_the_outputs_as_keywords_and_nested_sample_keys():
    readout, logits, params, _ = hybrid()
    keys = (('action', 'move'), 'speed')
    dist = CompositeActionDistribution(logits=logits, params=params, readout=readout, rescale_range=RUN_HOP_LEAP, sample_keys=keys)
    action = dist.sample()
    assert action['action', 'move'].shape == (6,) and action['speed'].shape == (6, 3)
    assert set(dist.log_prob(action).keys(True, True)) == {('action', 'move_log_prob'), 'speed_log_prob'}


def test_a_readout_with_bound_units_needs_no_per_call_range():
    unbound, logits, params, per_call = hybrid()
    bound = ParameterlessReadout(num_discrete=3, num_continuous=3, continuous_squashed=True, continuous_range=RUN_HOP_LEAP)
    for dist in (CompositeActionDistribution(logits, params, readout=bound), bound.get_dist((logits, params), composite=True)):
        torch.manual_seed(4)
        action = dist.sample()
        torch.manual_seed(4)
        assert (action == per_call.sample()).all()
        _, speed = parts(action)
        lo, hi = RUN_HOP_LEAP
        assert ((speed >= lo) & (speed <= hi)).all()
        torch.testing.assert_close(dist.log_prob(action)[LP_KEYS[1]], per_call.log_prob(action)[LP_KEYS[1]], rtol=0, atol=0)
        reference = bounded_log_density('squashed', params, speed, lo, hi).sum(-1)
        torch.testing.assert_close(dist.log_prob(action)[LP_KEYS[1]].double(), reference, rtol=1e-4, atol=1e-4)
        assert (dist.mode == per_call.mode).all()
        torch.testing.assert_close(dist.entropy()['action', 'continuous_entropy'], per_call.entropy()['action', 'continuous_entropy'], rtol=0, atol=0)
    # the same bounds per call pass; others need override_range=True
    CompositeActionDistribution(logits, params, readout=bound, rescale_range=RUN_HOP_LEAP).sample()
    with pytest.raises(ValueError, match='rescale_range .* differs from the continuous_range .* override_range=True'):
        CompositeActionDistribution(logits, params, readout=bound, rescale_range=(0.0, 1.0)).sample()
    override = CompositeActionDistribution(logits, params, readout=bound, rescale_range=(0.0, 1.0), override_range=True)
    assert override.mode[C_KEY].max() <= 1.0
    with pytest.raises(ValueError, match='differs from the continuous_range'):
        bound.get_dist((logits, params), composite=True, rescale_range=(0.0, 1.0))


# log-probs


@pytest.mark.parametrize('dtype', [torch.float32, torch.float64])
@mixed_case_params
def test_aggregated_log_prob_equals_the_readouts_summed_columns(case, dtype):
    readout, call, raw, dist = build(case, dtype)
    action = dist.sample()
    with set_composite_lp_aggregate(True):
        log_prob = dist.log_prob(action)
    expected = readout.log_prob(raw, parts(action), rescale_range=case.rescale, concat=True, **call).sum(-1)
    assert log_prob.shape == BATCH
    assert_close(log_prob, expected, 'aggregated log-prob', rtol=0.0, atol=1e-6 if dtype == torch.float64 else 2e-6)


@mixed_case_params
def test_per_part_log_probs_match_the_float64_references(case):
    _, _, raw, dist = build(case, seed=1)
    action = dist.sample()
    log_probs = dist.log_prob(action)  # composite_lp_aggregate() is False by default: a TensorDict
    assert set(log_probs.keys(True, True)) == set(LP_KEYS)
    logits, params = unpack(case, raw)
    ids, values = parts(action)
    assert_close(log_probs[LP_KEYS[0]], event_sum(case, 'discrete', ref_discrete_log_prob(case, logits, ids)), 'discrete', rtol=1e-5, atol=1e-5)
    # float32: the readout maps the float32 values back through atanh / the affine inverse
    assert_close(log_probs[LP_KEYS[1]], ref_continuous_log_prob(case, params, values).sum(-1), 'continuous', rtol=1e-4, atol=1e-3)


def test_log_prob_of_samples_with_a_sample_shape():
    readout, logits, params, dist = hybrid()
    action = dist.sample((4,))
    with set_composite_lp_aggregate(True):
        log_prob = dist.log_prob(action)
    expected = readout.log_prob((logits.expand(4, 6, 3), params.expand(4, 6, 3, 2)), parts(action), rescale_range=RUN_HOP_LEAP, concat=True)
    assert_close(log_prob, expected.sum(-1), 'log-prob of (4, 6) samples', rtol=0.0, atol=2e-6)


def test_continuous_used_by_scores_the_chosen_moves_speed_only():
    # by hand: log softmax of the move plus the squashed, rescaled normal's density of the chosen speed
    _, logits, params, dist = hybrid(continuous_used_by=torch.eye(3, dtype=torch.bool))
    action = dist.sample()
    move, speed = parts(action)
    lo, hi = RUN_HOP_LEAP
    u = torch.atanh((2 * (speed.double() - lo) / (hi - lo) - 1).clamp(-1 + 1e-12, 1 - 1e-12))
    normal = Normal(params[..., 0].double(), (0.5 * params[..., 1].double()).exp())
    per_dim = normal.log_prob(u) - torch.log1p(-torch.tanh(u) ** 2) - torch.log((hi - lo) / 2).double()
    chosen = per_dim.gather(-1, move[:, None]).squeeze(-1)
    log_probs = dist.log_prob(action)
    assert_close(log_probs[('action', 'discrete_log_prob')], logits.double().log_softmax(-1).gather(-1, move[:, None]).squeeze(-1), 'move', rtol=1e-5, atol=1e-5)
    assert_close(log_probs[('action', 'continuous_log_prob')], chosen, 'chosen speed', rtol=1e-4, atol=1e-3)


def test_sample_and_log_prob_scores_the_draw_as_log_prob_does():
    # tensordict >= 0.15's ProbabilisticTensorDictModule samples through this method
    _, logits, params, dist = hybrid(continuous_used_by=torch.eye(3, dtype=torch.bool))
    action, log_probs = dist.sample_and_log_prob((2,))
    assert action.batch_size == (2, 6) and log_probs.batch_size == (2, 6)
    expected = dist.log_prob(action)
    for key in LP_KEYS:
        assert torch.equal(log_probs[key], expected[key])


# entropy


@mixed_case_params
def test_entropy_per_part_and_summed_matches_the_float64_references(case):
    _, _, raw, dist = build(case, seed=2)
    logits, params = unpack(case, raw)
    discrete = event_sum(case, 'discrete', ref_discrete_entropy(case, logits))
    continuous = ref_continuous_entropy(case, params).sum(-1)
    entropies = dist.entropy()
    assert_close(entropies['action', 'discrete_entropy'], discrete, 'discrete entropy', rtol=1e-5, atol=1e-5)
    assert_close(entropies['action', 'continuous_entropy'], continuous, 'continuous entropy', rtol=1e-5, atol=1e-5)
    with set_composite_lp_aggregate(True):
        assert_close(dist.entropy(), discrete + continuous, 'summed entropy', rtol=1e-5, atol=1e-5)


def test_squashed_entropy_samples_is_the_readouts_monte_carlo_estimate():
    readout, logits, params, _ = hybrid()
    dist = CompositeActionDistribution(logits, params, readout=readout, rescale_range=RUN_HOP_LEAP, squashed_entropy_samples=64)
    torch.manual_seed(3)
    estimate = dist[C_KEY].entropy()
    torch.manual_seed(3)
    expected = readout.entropy((logits, params), rescale_range=RUN_HOP_LEAP, squashed_entropy_samples=64).continuous.sum(-1)
    assert_close(estimate, expected, 'squashed entropy estimate', rtol=0.0, atol=0.0)
    pre_tanh = readout.entropy((logits, params), rescale_range=RUN_HOP_LEAP).continuous.sum(-1)
    assert (estimate < pre_tanh).all()  # tanh only contracts: the squashed variable's entropy is lower


def test_continuous_used_by_entropy_is_the_expected_entropy_of_the_used_speeds():
    readout, logits, params, dist = hybrid(continuous_used_by=torch.eye(3, dtype=torch.bool))
    per_speed = 0.5 * (1 + torch.log(torch.tensor(2 * torch.pi))) + 0.5 * params[..., 1] + torch.log((RUN_HOP_LEAP[1] - RUN_HOP_LEAP[0]) / 2)
    expected = (logits.softmax(-1) * per_speed).sum(-1)  # sum_k p(k) H(speed k), by hand
    assert_close(dist.entropy()['action', 'continuous_entropy'], expected, 'expected used entropy', rtol=1e-5, atol=1e-5)


# samples and the mode


@mixed_case_params
def test_samples_have_each_parts_shape_dtype_and_support(case):
    readout, call, raw, dist = build(case, seed=4)
    action = dist.sample((3,))
    ids, values = parts(action)
    assert action.batch_size == (3, *BATCH)
    assert ids.dtype == torch.int64 and ids.shape == (3, *BATCH, *(() if case.single else (len(case.groups),)))
    sizes = torch.tensor(case.groups)
    assert ((ids >= 0) & (ids < (sizes[0] if case.single else sizes))).all()
    assert values.dtype == torch.float32 and values.shape == (3, *BATCH, case.num_continuous)
    if case.rescale:
        assert ((values >= case.rescale[0]) & (values <= case.rescale[1])).all()
    assert torch.isfinite(readout.log_prob(raw, (ids[0], values[0]), rescale_range=case.rescale, concat=True, **call)).all()


@mixed_case_params
def test_mode_and_deterministic_sample_are_the_readouts_mode(case):
    readout, call, raw, dist = build(case, seed=5)
    expected = readout.mode(raw, rescale_range=case.rescale, **call)
    for mode in (dist.mode, dist.deterministic_sample):
        ids, values = parts(mode)
        assert torch.equal(ids, expected.discrete) and torch.equal(values, expected.continuous)
    logits, params = unpack(case, raw)
    native, interior = native_mode(case, params)
    if interior is None:  # gaussian / squashed: a closed form, checked independently of the readout
        assert_close(values, to_output_units(case, native), 'mode', rtol=1e-5, atol=1e-5)


# errors


def test_bad_arguments_raise_errors_that_name_them():
    readout, logits, params, _ = hybrid()
    discrete_only = ParameterlessReadout(num_discrete=3)
    with_table = Readout(8, num_discrete=3, num_continuous=3, continuous_squashed=True)  # its rows fix the logits' width
    cases = [
        (TypeError, 'readout must be a Readout', dict(readout=nn.Linear(2, 2))),
        (TypeError, r'logits\[0\] must be a tensor', dict(logits=[0.0, 1.0, 2.0])),
        (ValueError, 'params is None', dict(params=None)),
        (ValueError, 'discrete logits must have a last axis of size 3', dict(logits=torch.randn(6, 4), readout=with_table)),
        (ValueError, 'needs a readout .* with discrete and continuous parts', dict(readout=discrete_only, params=None)),
        (ValueError, 'sample_keys must be a', dict(sample_keys=('action',))),
        (ValueError, 'sample_keys must name two different', dict(sample_keys=('a', 'a'))),
        (TypeError, 'continuous_used_by must be a bool tensor', dict(continuous_used_by=torch.eye(3))),
        (ValueError, r'continuous_used_by must have shape \(n, c\) = \(3, 3\)', dict(continuous_used_by=torch.ones(3, 2, dtype=torch.bool))),
    ]
    for error, message, bad in cases:
        kwargs = dict(logits=logits, params=params, readout=readout, rescale_range=RUN_HOP_LEAP) | bad
        with pytest.raises(error, match=message):
            CompositeActionDistribution(**kwargs)


def test_continuous_used_by_needs_one_discrete_group():
    readout, _, raw, _ = build(MIXED_CASES[0])  # two groups
    logits, params = unpack(MIXED_CASES[0], raw)
    with pytest.raises(ValueError, match=r'needs a readout \(selector\) with one discrete group, this one has 2: sizes \[3, 4\]'):
        CompositeActionDistribution(torch.cat(logits, -1), params, readout=readout, continuous_used_by=torch.ones(3, 3, dtype=torch.bool))


def test_log_prob_of_a_bad_sample_names_it():
    _, logits, params, dist = hybrid()
    with pytest.raises(TypeError, match='sample must be a TensorDict'):
        dist.log_prob((logits.argmax(-1), params[..., 0]))
    with pytest.raises(ValueError, match=r"sample has no entry \[\('action', 'continuous'\)\]"):
        dist.log_prob(dist.sample().exclude(C_KEY))


def test_a_table_less_readouts_group_is_as_wide_as_its_logits():
    readout = ParameterlessReadout(num_discrete=1, num_continuous=3, continuous_squashed=True)
    logits, params = 2 * torch.randn(6, 5), torch.randn(6, 3, 2)
    dist = CompositeActionDistribution(logits, params, readout=readout, continuous_used_by=torch.ones(5, 3, dtype=torch.bool))
    action = dist.sample()
    log_prob = dist.log_prob(action)['action']
    torch.testing.assert_close(log_prob['discrete_log_prob'], Categorical(logits=logits).log_prob(action[D_KEY]))
    torch.testing.assert_close(log_prob['continuous_log_prob'], readout.log_prob((logits, params), (action[D_KEY], action[C_KEY])).continuous.sum(-1))
    action[D_KEY] = torch.full((6,), 5)
    with pytest.raises(IndexError, match='expected 0 <= id < 5'):
        dist.log_prob(action)


def test_a_parameterised_continuous_part_refuses_to_be_scored_alone():
    _, _, _, dist = hybrid(continuous_used_by=torch.eye(3, dtype=torch.bool))
    with pytest.raises(ValueError, match='scored with the discrete id it depends on'):
        dist[C_KEY].log_prob(dist.sample()[C_KEY])


# in tensordict's and TorchRL's modules

HIDDEN = 16


def policy_network(seed=0):
    torch.manual_seed(seed)
    _, readout = EmbedAndReadout(HIDDEN, num_discrete=3, num_continuous=3, continuous_squashed=True)
    network = TensorDictModule(nn.Sequential(nn.Linear(2, HIDDEN), nn.Tanh(), readout), in_keys=['observation'], out_keys=['logits', 'params'])
    return readout, network


def policy(kind: str, seed=0):
    """The actor of examples/hybrid_actions_torchrl.py in small: TorchRL's ProbabilisticActor (independent
    parts) or tensordict's modules with continuous_used_by (the chosen move's speed only)."""
    readout, network = policy_network(seed)
    kwargs = {'readout': readout, 'rescale_range': RUN_HOP_LEAP}
    common = dict(in_keys=['logits', 'params'], out_keys=list(SAMPLE_KEYS), distribution_class=CompositeActionDistribution, return_log_prob=True)
    if kind == 'ProbabilisticActor':
        from torchrl.modules import ProbabilisticActor

        return readout, ProbabilisticActor(network, distribution_kwargs=kwargs, **common)
    head = ProbabilisticTensorDictModule(distribution_kwargs={**kwargs, 'continuous_used_by': torch.eye(3, dtype=torch.bool)}, **common)
    return readout, ProbabilisticTensorDictSequential(network, head)


POLICY_KINDS = pytest.mark.parametrize('kind', ['ProbabilisticActor', 'ProbabilisticTensorDictModule'])


def observations(batch=32, seed=0):
    return TensorDict(observation=torch.randn(batch, 2, generator=torch.Generator().manual_seed(seed)), batch_size=[batch])


@POLICY_KINDS
def test_a_probabilistic_module_writes_the_action_and_its_per_part_log_probs(kind):
    if kind == 'ProbabilisticActor':
        pytest.importorskip('torchrl')
    readout, actor = policy(kind)
    with set_interaction_type(InteractionType.RANDOM), torch.no_grad():
        td = actor(observations())
    assert set(LP_KEYS) <= set(td.keys(True, True)) and td[D_KEY].shape == (32,) and td[C_KEY].shape == (32, 3)
    columns = readout.log_prob((td['logits'], td['params']), parts(td), rescale_range=RUN_HOP_LEAP, concat=True)
    used = torch.ones_like(columns, dtype=torch.bool)
    if kind == 'ProbabilisticTensorDictModule':  # the move and the chosen move's speed only
        used[:, 1:] = torch.eye(3, dtype=torch.bool)[td[D_KEY]]
    assert_close(td[LP_KEYS[0]], columns[:, 0], 'stored discrete log-prob', rtol=0.0, atol=1e-6)
    assert_close(td[LP_KEYS[1]], torch.where(used, columns, 0.0)[:, 1:].sum(-1), 'stored continuous log-prob', rtol=0.0, atol=2e-6)
    with set_interaction_type(InteractionType.DETERMINISTIC), torch.no_grad():
        greedy = actor(observations())
    mode = readout.mode((greedy['logits'], greedy['params']), rescale_range=RUN_HOP_LEAP)
    assert torch.equal(greedy[D_KEY], mode.discrete) and torch.equal(greedy[C_KEY], mode.continuous)


@POLICY_KINDS
def test_clip_ppo_loss_steps_are_finite_and_reach_the_readout(kind):
    pytest.importorskip('torchrl')
    from torchrl.modules import ValueOperator
    from torchrl.objectives import ClipPPOLoss

    readout, actor = policy(kind)
    critic = ValueOperator(nn.Linear(2, 1), in_keys=['observation'])
    loss_module = ClipPPOLoss(actor, critic, entropy_coeff=0.01, critic_coeff=0.5, loss_critic_type='l2', normalize_advantage=True)
    assert loss_module.tensor_keys.sample_log_prob == list(LP_KEYS) and loss_module.tensor_keys.action == list(SAMPLE_KEYS)
    with set_interaction_type(InteractionType.RANDOM), torch.no_grad():
        batch = actor(observations(64))
    batch.update(advantage=torch.randn(64, 1), value_target=torch.randn(64, 1))
    optimizer = torch.optim.Adam([*actor.parameters(), *critic.parameters()], lr=1e-2)
    for step in range(3):
        losses = loss_module(batch)
        if step == 0:  # unchanged parameters: the re-scored log-probs are the stored ones
            assert losses['mean_ratio'].item() == pytest.approx(1.0, abs=1e-5) and losses['clip_fraction'].item() == 0.0
        loss = losses['loss_objective'] + losses['loss_critic'] + losses['loss_entropy']
        assert torch.isfinite(loss)
        optimizer.zero_grad()
        loss.backward()
        grad = readout.embeddings.weight.grad
        assert grad is not None and torch.isfinite(grad).all() and grad.abs().sum() > 0
        optimizer.step()
    assert losses['mean_ratio'].item() != pytest.approx(1.0, abs=1e-6)  # the policy moved


IMPORT_ORDER_SCRIPT = textwrap.dedent("""
    import torch
    from discrete_continuous_embed_readout import ParameterlessReadout
    readout = ParameterlessReadout(num_discrete=3, num_continuous=2)  # identity units
    outputs = (torch.zeros(4, 3), torch.zeros(4, 2, 2))
    action = readout.sample(outputs)
    readout.log_prob(outputs, action)  # inverts the units map
    import torchrl  # patches Transform.inv, expecting weakref-cached inverses
    readout.log_prob(outputs, action)
""")


def test_torchrl_imported_after_the_readout_was_used_breaks_nothing():
    # torch >= 2.13 caches a transform's inverse by strong reference; torchrl 0.14's import-time patch
    # calls that cache as a weakref, so a units map shared across calls would fail after `import torchrl`
    pytest.importorskip('torchrl')
    done = subprocess.run([sys.executable, '-c', IMPORT_ORDER_SCRIPT], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]


# the readout's own outputs in every form, empty batches, checked ids and shapes


def test_several_groups_come_as_forwards_tuple_or_a_tensordict_of_them():
    _, readout = EmbedAndReadout(16, num_discrete=(3, 4), num_continuous=2, continuous_squashed=True)
    out = readout(torch.randn(5, 16))
    dist = readout.get_dist(out, composite=True)
    action = dist.sample()
    ids, values = action['action', 'discrete'], action['action', 'continuous']
    with set_composite_lp_aggregate(True):
        expected = readout.log_prob(out, (ids, values), concat=True).sum(-1)
        torch.testing.assert_close(dist.log_prob(action), expected)
        as_entries = TensorDict({'0': out.discrete[0], '1': out.discrete[1]}, batch_size=[5])
        torch.testing.assert_close(CompositeActionDistribution(as_entries, out.continuous, readout=readout).log_prob(action), expected)


def test_an_empty_batch_samples_and_scores():
    _, readout = EmbedAndReadout(16, num_discrete=3, num_continuous=2, continuous_squashed=True)
    logits, params = readout(torch.randn(0, 16))
    dist = CompositeActionDistribution(logits, params, readout=readout, rescale_range=(0.0, 5.0))
    with set_composite_lp_aggregate(True):
        assert dist.log_prob(dist.sample()).shape == (0,)


def test_sampled_ids_are_checked_like_the_readouts():
    _, readout = EmbedAndReadout(16, num_discrete=3, num_continuous=2, continuous_squashed=True)
    dist = readout.get_dist(readout(torch.randn(4, 16)), composite=True)
    action = dist.sample()
    action['action', 'discrete'] = torch.tensor([0, 5, 1, 2])
    with pytest.raises(IndexError, match=r"sample\[\('action', 'discrete'\)\]: id 5"):
        dist.log_prob(action)
    action['action', 'discrete'] = torch.tensor([0.0, 1.7, 2.0, 1.0])
    with pytest.raises(TypeError, match='integer'):
        dist.log_prob(action)


def test_outputs_of_different_batch_shapes_are_refused():
    _, readout = EmbedAndReadout(16, num_discrete=3, num_continuous=2, continuous_squashed=True)
    with pytest.raises(ValueError, match='same batch shape'):
        CompositeActionDistribution(torch.randn(4, 3), torch.randn(5, 2, 2), readout=readout)
    _, continuous_only = EmbedAndReadout(16, num_continuous=2)
    with pytest.raises(ValueError, match=r'needs a readout \(selector\) with discrete and continuous parts'):
        CompositeActionDistribution(None, torch.randn(4, 2, 2), readout=continuous_only)
