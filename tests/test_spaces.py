"""SpaceAdapter: gymnasium spaces -> EmbedAndReadout arguments, samples both ways."""

import sys

import numpy as np
import pytest
import torch
from gymnasium import spaces as S
from gymnasium.vector.utils import batch_space
from torch.distributions import Normal

from discrete_continuous_embed_readout import DiscreteContinuous, EmbedAndReadout, SpaceAdapter


def f32(*values):
    return np.array(values, dtype=np.float32)


SPACES = {
    'discrete': S.Discrete(5),
    'discrete with start': S.Discrete(4, start=-2),
    'multi-discrete': S.MultiDiscrete([3, 4, 2]),
    'multi-discrete 2-D with start': S.MultiDiscrete(np.array([[2, 3], [4, 5]]), start=np.array([[1, 0], [-3, 10]])),
    'multi-binary': S.MultiBinary(4),
    'multi-binary 2-D': S.MultiBinary((2, 3)),
    'box bounded': S.Box(-2.0, 2.0, (3,), np.float32),
    'box per-dim bounds': S.Box(f32(-1, 0, 10), f32(1, 5, 30)),
    'box 2-D': S.Box(-1.0, 1.0, (2, 2), np.float32),
    'box unbounded': S.Box(-np.inf, np.inf, (2,), np.float32),
    'box half bounded': S.Box(f32(0, -np.inf), f32(1, np.inf)),
    'box float64': S.Box(-3.0, 3.0, (2,), np.float64),
    'box integer': S.Box(0, 10, (2,), np.int64),
    'tuple': S.Tuple((S.Discrete(3), S.Box(-1.0, 1.0, (2,), np.float32))),
    'dict hybrid': S.Dict(choice=S.Discrete(3), param=S.Box(f32(0, -5), f32(1, 5))),
    'nested': S.Dict(
        arm=S.Tuple((S.MultiDiscrete([2, 3]), S.Box(-1.0, 1.0, (2,), np.float32))),
        gripper=S.MultiBinary(2),
        wheel=S.Dict(speed=S.Box(0.0, 4.0, (1,), np.float32), gear=S.Discrete(3, start=1)),
    ),
}


def assert_same_sample(got, expected, space):
    if isinstance(space, S.Dict):
        assert isinstance(got, dict) and set(got) == set(space.spaces)
        for key, sub in space.spaces.items():
            assert_same_sample(got[key], expected[key], sub)
    elif isinstance(space, S.Tuple):
        assert isinstance(got, tuple) and len(got) == len(space.spaces)
        for g, e, sub in zip(got, expected, space.spaces):
            assert_same_sample(g, e, sub)
    else:
        got, expected = np.asarray(got), np.asarray(expected)
        assert got.dtype == expected.dtype and got.shape == expected.shape
        np.testing.assert_array_equal(got, expected)


@pytest.mark.parametrize('name', list(SPACES))
@pytest.mark.parametrize('batch', [None, 4])
def test_space_samples_round_trip(name, batch):
    space = SPACES[name] if batch is None else batch_space(SPACES[name], batch)
    space.seed(0)
    adapter = SpaceAdapter(SPACES[name])
    for _ in range(20):
        sample = space.sample()
        back = adapter.to_space(adapter.from_space(sample, dtype=torch.float64))  # float64: exact for float64 boxes
        assert space.contains(back)
        assert_same_sample(back, sample, space)


@pytest.mark.parametrize(
    'space, kwargs',
    [
        (S.Discrete(5), dict(num_discrete=5, num_continuous=0)),
        (S.MultiDiscrete([3, 4]), dict(num_discrete=(3, 4), num_continuous=0)),
        (S.MultiDiscrete([[3], [4]]), dict(num_discrete=(3, 4), num_continuous=0)),
        (S.MultiBinary(3), dict(num_discrete=(2, 2, 2), num_continuous=0)),
        (S.Box(-1.0, 1.0, (2, 3), np.float32), dict(num_discrete=0, num_continuous=6, continuous_squashed=True)),
        (S.Box(-np.inf, np.inf, (2,), np.float32), dict(num_discrete=0, num_continuous=2)),
        (S.Box(f32(0, -np.inf), f32(1, np.inf)), dict(num_discrete=0, num_continuous=2)),
        (SPACES['nested'], dict(num_discrete=(2, 3, 2, 2, 3), num_continuous=3, continuous_squashed=True)),
    ],
)
def test_kwargs_follow_the_space(space, kwargs):
    assert SpaceAdapter(space).kwargs == kwargs


@pytest.mark.parametrize('head, kwargs', [('beta', dict(continuous_dist_type='beta')), ('kumaraswamy', dict(continuous_dist_type='kumaraswamy')), (None, {})])
def test_bounded_head_choice(head, kwargs):
    adapter = SpaceAdapter(S.Box(0.0, 1.0, (2,), np.float32), bounded_head=head)
    assert adapter.kwargs == dict(num_discrete=0, num_continuous=2, **kwargs)
    assert (adapter.rescale_range is None) == (head is None)


def test_rescale_range_is_scalar_for_uniform_bounds_and_per_dim_otherwise():
    assert SpaceAdapter(S.Box(-2.0, 2.0, (3,), np.float32)).rescale_range == (-2.0, 2.0)
    lo, hi = SpaceAdapter(SPACES['box per-dim bounds']).rescale_range
    torch.testing.assert_close(lo, torch.tensor([-1.0, 0.0, 10.0]))
    torch.testing.assert_close(hi, torch.tensor([1.0, 5.0, 30.0]))
    assert SpaceAdapter(SPACES['box unbounded']).rescale_range is None
    assert SpaceAdapter(S.Discrete(3)).rescale_range is None


def test_from_space_gives_zero_based_ids_and_float_values():
    space = S.Dict(choice=S.Discrete(4, start=-2), gears=S.MultiDiscrete([3, 5], start=[1, 10]), param=S.Box(-1.0, 1.0, (2,), np.float64))
    got = SpaceAdapter(space).from_space({'choice': np.int64(-1), 'gears': np.array([2, 14]), 'param': np.array([0.25, -0.5])})
    assert isinstance(got, DiscreteContinuous)
    # hand-worked: -1 - (-2) = 1; 2 - 1 = 1; 14 - 10 = 4
    assert got.discrete.dtype == torch.long and got.discrete.tolist() == [1, 1, 4]
    assert got.continuous.dtype == torch.float32 and got.continuous.tolist() == [0.25, -0.5]


def test_to_space_clips_unbounded_samples_into_a_half_bounded_box():
    adapter = SpaceAdapter(SPACES['box half bounded'])
    got = adapter.to_space(torch.tensor([[-0.5, -1e6], [1.5, 3.0]]))
    np.testing.assert_array_equal(got, f32([0.0, -1e6], [1.0, 3.0]))


@pytest.mark.parametrize('dtype', [torch.bfloat16, torch.float16, torch.float64])
def test_to_space_takes_low_and_high_precision_samples(dtype):
    space = S.Box(f32(-1, 0), f32(1, 4))
    got = SpaceAdapter(space).to_space(torch.tensor([[0.5, 2.0], [-0.25, 3.5]], dtype=dtype))  # exact in every dtype
    assert got.dtype == np.float32 and space.shape == got.shape[1:]
    np.testing.assert_array_equal(got, f32([0.5, 2.0], [-0.25, 3.5]))


def test_an_unbatched_discrete_sample_is_a_numpy_scalar():
    got = SpaceAdapter(S.Discrete(3, start=1)).to_space(torch.tensor(2))
    assert isinstance(got, np.int64) and got == 3


@pytest.mark.parametrize('name', list(SPACES))
@pytest.mark.parametrize('head', ['squashed', 'beta', 'kumaraswamy', None])
def test_readout_samples_and_modes_land_in_the_space(name, head):
    space = SPACES[name]
    adapter = SpaceAdapter(space, bounded_head=head)
    embed, readout = adapter.embed_and_readout(16)
    vector = batch_space(space, 64)
    vector.seed(1)
    inputs = adapter.from_space(vector.sample())
    dist = readout(embed(inputs))
    for action in (readout.sample(dist, rescale_range=adapter.rescale_range), readout.mode(dist, rescale_range=adapter.rescale_range)):
        assert vector.contains(adapter.to_space(action))


@pytest.mark.parametrize('name', ['box per-dim bounds', 'dict hybrid', 'nested', 'multi-discrete 2-D with start'])
def test_log_prob_of_converted_actions_matches_the_sample_log_prob(name):
    adapter = SpaceAdapter(SPACES[name])
    _, readout = adapter.embed_and_readout(16)
    dist = readout(torch.randn(32, 16))
    action, log_prob = readout.sample(dist, rescale_range=adapter.rescale_range, return_log_prob=True)
    stored = adapter.from_space(adapter.to_space(action))  # what a replay buffer of env actions gives back
    rescored = readout.log_prob(dist, stored, rescale_range=adapter.rescale_range, concat=True)
    # squashed values a float32 rounding away from the box's edge score differently: compare inside
    close = torch.isclose(rescored, readout.maybe_concat(log_prob, True), rtol=1e-3, atol=1e-3)
    assert close.float().mean() > 0.95


def test_per_dim_box_log_prob_against_torch_distributions():
    """Hand-built reference: Normal -> tanh -> affine per dim, from torch.distributions."""
    from torch.distributions import AffineTransform, TanhTransform, TransformedDistribution

    space = S.Box(f32(-1, 0), f32(3, 0.5))
    adapter = SpaceAdapter(space)
    _, readout = adapter.embed_and_readout(16)
    params = readout(torch.randn(200, 16)).detach()
    lo, hi = torch.tensor([-1.0, 0.0]), torch.tensor([3.0, 0.5])
    reference = TransformedDistribution(
        Normal(params[..., 0], (0.5 * params[..., 1]).exp()), [TanhTransform(), AffineTransform((lo + hi) / 2, (hi - lo) / 2)]
    )
    values = adapter.from_space(np.stack([space.sample() * 0.98 + 0.01 * (space.low + space.high) for _ in range(200)]))
    got = readout.log_prob(params, values, rescale_range=adapter.rescale_range)
    torch.testing.assert_close(got, reference.log_prob(values), rtol=1e-3, atol=1e-3)


def test_observation_space_into_embed():
    space = S.Dict(position=S.Box(-np.inf, np.inf, (3,), np.float32), mode=S.Discrete(4))
    adapter = SpaceAdapter(space)
    embed, _ = EmbedAndReadout(8, **adapter.kwargs)
    obs = {'position': f32(0.5, -1.0, 2.0), 'mode': np.int64(2)}
    got = embed(adapter.from_space(obs))
    weight = embed.embeddings.weight
    # hand-worked: the discrete row plus sum_c value_c * continuous row c (rows after the 4 ids)
    expected = weight[2] + 0.5 * weight[4] - 1.0 * weight[5] + 2.0 * weight[6]
    torch.testing.assert_close(got, expected)


def test_missing_gymnasium_says_how_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, 'gymnasium', None)
    with pytest.raises(ImportError, match=r'pip install "discrete-continuous-embed-readout\[gymnasium\]"'):
        SpaceAdapter(S.Discrete(3))


MISTAKES = {
    'unsupported space': (lambda: SpaceAdapter(S.Text(5)), TypeError, 'space: expected Discrete, MultiDiscrete, MultiBinary, Box, Tuple or Dict, got Text'),
    'unsupported nested': (lambda: SpaceAdapter(S.Dict(a=S.Discrete(2), b=S.Text(3))), TypeError, r"space\['b'\]: expected"),
    'empty tuple': (lambda: SpaceAdapter(S.Tuple(())), ValueError, 'has no Discrete'),
    'bad head': (lambda: SpaceAdapter(S.Discrete(2), bounded_head='gaussian'), ValueError, 'bounded_head must be one of'),
    'dict sample not a dict': (lambda: SpaceAdapter(SPACES['dict hybrid']).from_space([1, 0.5]), TypeError, 'sample: expected a dict'),
    'dict sample missing key': (lambda: SpaceAdapter(SPACES['dict hybrid']).from_space({'choice': 1}), ValueError, r"missing keys \['param'\]"),
    'tuple sample wrong length': (lambda: SpaceAdapter(SPACES['tuple']).from_space((1,)), TypeError, 'expected a tuple of 2'),
    'sample wrong shape': (lambda: SpaceAdapter(S.Box(-1.0, 1.0, (3,), np.float32)).from_space(np.zeros(2)), ValueError, r'trailing shape \(3,\)'),
    'batches differ': (lambda: SpaceAdapter(SPACES['tuple']).from_space((np.zeros(3, dtype=int), np.zeros((4, 2)))), ValueError, 'different batch shapes'),
    'mixed sample not a pair': (lambda: SpaceAdapter(SPACES['tuple']).to_space(torch.zeros(2)), TypeError, r'expected a \(discrete, continuous\) pair'),
    'values wrong width': (lambda: SpaceAdapter(S.Box(-1.0, 1.0, (3,), np.float32)).to_space(torch.zeros(4, 2)), ValueError, 'last axis of 3'),
    'ids wrong width': (lambda: SpaceAdapter(S.MultiDiscrete([2, 3])).to_space(torch.zeros(4, 3, dtype=torch.long)), ValueError, 'last axis of 2 groups'),
    'ids not a tensor': (lambda: SpaceAdapter(S.Discrete(3)).to_space([1, 2]), TypeError, 'discrete part must be a tensor'),
}


@pytest.mark.parametrize('name', list(MISTAKES))
def test_mistakes_raise_clear_errors(name):
    fn, error, match = MISTAKES[name]
    with pytest.raises(error, match=match):
        fn()
