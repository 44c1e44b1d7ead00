"""SpaceAdapter: gymnasium spaces -> EmbedAndReadout arguments (a bounded box bound
as the pair's units), samples both ways."""

import sys

import numpy as np
import pytest
import torch
from gymnasium import spaces as S
from gymnasium.vector.utils import batch_space
from helpers import bounded_log_density
from torch.distributions import Normal

from discrete_continuous_embed_readout import DiscreteContinuous, EmbedAndReadout, SpaceAdapter, get_validate_args, set_validate_args


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
        (S.Box(-1.0, 1.0, (2, 3), np.float32), dict(num_discrete=0, num_continuous=6, continuous_squashed=True, continuous_range=(-1.0, 1.0))),
        (S.Box(-np.inf, np.inf, (2,), np.float32), dict(num_discrete=0, num_continuous=2)),
        (S.Box(f32(0, -np.inf), f32(1, np.inf)), dict(num_discrete=0, num_continuous=2)),
        (
            SPACES['nested'],
            dict(num_discrete=(2, 3, 2, 2, 3), num_continuous=3, continuous_squashed=True, continuous_range=([-1.0, -1.0, 0.0], [1.0, 1.0, 4.0])),
        ),
    ],
)
def test_kwargs_follow_the_space(space, kwargs):
    got = SpaceAdapter(space).kwargs
    if 'continuous_range' in got:  # a bounded box binds its bounds: numbers, or per-dim float32 tensors
        got['continuous_range'] = tuple(b.tolist() if torch.is_tensor(b) else b for b in got['continuous_range'])
    assert got == kwargs


@pytest.mark.parametrize('head, kwargs', [('beta', dict(continuous_dist_type='beta')), ('kumaraswamy', dict(continuous_dist_type='kumaraswamy')), (None, {})])
def test_bounded_head_choice(head, kwargs):
    adapter = SpaceAdapter(S.Box(0.0, 1.0, (2,), np.float32), bounded_head=head)
    bounds = dict(continuous_range=(0.0, 1.0)) if head else {}
    assert adapter.kwargs == dict(num_discrete=0, num_continuous=2, **kwargs, **bounds)
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


@pytest.mark.parametrize('name', ['box bounded', 'box per-dim bounds', 'dict hybrid', 'nested'])
@pytest.mark.parametrize('head', ['squashed', 'beta', 'kumaraswamy'])
def test_the_readout_is_bound_to_the_box_and_acts_in_it_without_per_call_units(name, head):
    space, adapter = SPACES[name], SpaceAdapter(SPACES[name], bounded_head=head)
    _, readout = adapter.embed_and_readout(16)
    assert torch.equal(readout.continuous_range, torch.tensor(np.stack((adapter.low, adapter.high), -1), dtype=torch.float32))
    with torch.no_grad():
        readout.embeddings.weight.normal_(0.0, 0.5)  # spread draws: they reach close to the bounds
    dist = readout(torch.randn(512, 16))
    action, log_prob = readout.sample(dist, return_log_prob=True)
    values = action.continuous if isinstance(action, DiscreteContinuous) else action
    low, high = torch.tensor(adapter.low), torch.tensor(adapter.high)
    assert ((values.double() >= low) & (values.double() <= high)).all()
    assert ((values.double() - low) / (high - low)).amax(0).min() > 0.9  # every dim reaches the top tenth of its box
    # to_space returns the sampled values themselves: nothing to clip
    env_action = adapter.to_space(action)
    assert batch_space(space, 512).contains(env_action)
    stored = adapter.from_space(env_action)
    assert torch.equal(stored.continuous if isinstance(stored, DiscreteContinuous) else stored, values)
    # scored in the box's units, with no per-call argument: the float64 formula, dim by dim
    params = dist.continuous if isinstance(dist, DiscreteContinuous) else dist
    rescored = readout.log_prob(dist, stored)
    c_log_prob = rescored.continuous if isinstance(rescored, DiscreteContinuous) else rescored
    torch.testing.assert_close(rescored, log_prob, rtol=0, atol=0)
    reference = bounded_log_density(head, params, values, low, high)
    inside = (((values.double() - low) / (high - low) - 0.5).abs() < 0.49).all(-1)
    torch.testing.assert_close(c_log_prob[inside].double(), reference[inside], rtol=1e-4, atol=1e-4)


def test_an_embed_built_for_a_bounded_observation_box_maps_it_onto_the_native_range():
    space = S.Box(f32(-1, -1, -8), f32(1, 1, 8))  # Pendulum's observations
    embed, _ = SpaceAdapter(space).embed_and_readout(8)
    obs = f32(0.5, -1.0, 4.0)
    # hand-worked: a squashed head's native range is (-1, 1): the third value / 8
    torch.testing.assert_close(embed(SpaceAdapter(space).from_space(obs)), torch.tensor([0.5, -1.0, 0.5]) @ embed.embeddings.weight)


# discrete parts: ids of any integer dtype, the one-hots of a differentiable sample

MOVE_SPEED = S.Dict(move=S.Discrete(3), speed=S.Box(-1.0, 1.0, (2,), np.float32))


def argmax_per_group(one_hots: np.ndarray, sizes) -> np.ndarray:
    """Each group's argmax of concatenated one-hots ``(..., sum n_g)``: ids ``(..., g)``."""
    return np.stack([np.argmax(block, axis=-1) for block in np.split(one_hots, np.cumsum(sizes)[:-1], axis=-1)], axis=-1)


def test_differentiable_one_hots_become_each_moves_argmax():
    adapter = SpaceAdapter(MOVE_SPEED)
    _, readout = adapter.embed_and_readout(16)
    dist = readout(torch.randn(64, 16))
    one_hots, speed = readout.sample(dist, differentiable=True, rescale_range=adapter.rescale_range)
    assert one_hots.shape == (64, 3) and one_hots.dtype == torch.float32
    got = adapter.to_space(DiscreteContinuous(one_hots, speed))
    expected = np.argmax(one_hots.detach().numpy(), axis=-1)
    assert len(set(expected.tolist())) > 1  # the batch draws several moves
    assert got['move'].dtype == np.int64
    np.testing.assert_array_equal(got['move'], expected)
    np.testing.assert_array_equal(got['speed'], np.clip(speed.detach().numpy(), -1.0, 1.0))
    assert batch_space(MOVE_SPEED, 64).contains(got)


def test_multi_discrete_one_hots_by_hand():
    adapter = SpaceAdapter(S.MultiDiscrete([3, 4, 2], start=[1, 0, -1]))
    one_hots = torch.tensor([[0.0, 1, 0, 0, 0, 0, 1, 1, 0], [1, 0, 0, 0, 1, 0, 0, 0, 1]])
    # hand-worked: argmax per group (1, 3, 0) and (0, 1, 1), plus the starts (1, 0, -1)
    np.testing.assert_array_equal(adapter.to_space(one_hots), np.array([[2, 3, -1], [1, 1, 0]]))


@pytest.mark.parametrize('name', ['discrete with start', 'multi-discrete 2-D with start', 'multi-binary 2-D', 'tuple', 'nested'])
def test_differentiable_one_hots_match_their_ids(name):
    adapter = SpaceAdapter(SPACES[name])
    _, readout = adapter.embed_and_readout(16)
    sampled = readout.sample(readout(torch.randn(32, 16)), differentiable=True, rescale_range=adapter.rescale_range)
    one_hots, values = sampled if isinstance(sampled, DiscreteContinuous) else (sampled, None)
    ids = torch.from_numpy(argmax_per_group(one_hots.detach().numpy(), adapter.group_sizes))
    ids = ids.squeeze(-1) if len(adapter.group_sizes) == 1 else ids
    expected = adapter.to_space(ids if values is None else DiscreteContinuous(ids, values))
    assert_same_sample(adapter.to_space(sampled), expected, batch_space(SPACES[name], 32))


def test_a_relaxed_sample_is_not_read_as_one_hots():
    adapter = SpaceAdapter(MOVE_SPEED)
    _, readout = adapter.embed_and_readout(16)
    soft = readout.sample(readout(torch.randn(8, 16)), differentiable=True, hard=False, rescale_range=adapter.rescale_range)
    with pytest.raises(TypeError, match=r'not exactly one-hot .* pass ids, or the hard one-hots'):
        adapter.to_space(soft)


INT_DTYPES = [(torch.int8, np.int8), (torch.uint8, np.uint8), (torch.int16, np.int16), (torch.int32, np.int32), (torch.int64, np.int64)]


@pytest.mark.parametrize('torch_dtype, np_dtype', INT_DTYPES)
def test_ids_of_every_integer_dtype_in_both_directions(torch_dtype, np_dtype):
    space = S.Dict(buttons=S.MultiBinary(3), gears=S.MultiDiscrete([3, 5], start=[1, 2]), move=S.Discrete(4))
    adapter = SpaceAdapter(space)
    sample = {'buttons': np.array([1, 0, 1], np_dtype), 'gears': np.array([3, 6], np_dtype), 'move': np_dtype(2)}
    got = adapter.from_space(sample)
    # hand-worked: buttons as they are; 3 - 1 = 2, 6 - 2 = 4; the move
    assert got.dtype == torch.long and got.tolist() == [1, 0, 1, 2, 4, 2]
    back = adapter.to_space(torch.tensor([1, 0, 1, 2, 4, 2], dtype=torch_dtype))
    expected = {'buttons': np.array([1, 0, 1], np.int8), 'gears': np.array([3, 6]), 'move': np.int64(2)}
    assert_same_sample(back, expected, space)


@pytest.fixture
def content_checks_off():
    before = get_validate_args()
    set_validate_args(False)
    yield
    set_validate_args(before)


OUT_OF_RANGE = {
    'to_space id too large': (
        lambda: SpaceAdapter(S.Discrete(3)).to_space(torch.tensor([0, 3])),
        r'sampled: discrete id 3 at index \(1,\) is out of range for group 0 \(space: Discrete\(3\)\); expected 0 <= id < 3',
    ),
    'to_space id negative': (
        lambda: SpaceAdapter(MOVE_SPEED).to_space(DiscreteContinuous(torch.tensor([2, -1]), torch.zeros(2, 2))),
        r"id -1 at index \(1,\) is out of range for group 0 \(space\['move'\]: Discrete\(3\)\)",
    ),
    'to_space multi-discrete': (
        lambda: SpaceAdapter(S.MultiDiscrete([3, 4])).to_space(torch.tensor([[2, 4]])),
        r'id 4 at index \(0, 1\) is out of range for group 1 .* expected 0 <= id < 4',
    ),
    'from_space below start': (
        lambda: SpaceAdapter(S.Discrete(3, start=1)).from_space(np.int64(0)),
        r'sample: id 0 at index \(\) is out of range for Discrete\(3, start=1\); expected 1 <= id < 4',
    ),
    'from_space above range': (
        lambda: SpaceAdapter(MOVE_SPEED).from_space({'move': np.array([1, 3]), 'speed': np.zeros((2, 2))}),
        r"sample\['move'\]: id 3 at index \(1,\)",
    ),
    'from_space negative multi-binary': (
        lambda: SpaceAdapter(S.MultiBinary(2)).from_space(np.array([1, -1], np.int8)),
        r'id -1 at index \(1,\) .* expected 0 <= id < 2',
    ),
}


@pytest.mark.parametrize('name', list(OUT_OF_RANGE))
def test_out_of_range_ids_raise(name):
    fn, match = OUT_OF_RANGE[name]
    with pytest.raises(IndexError, match=match):
        fn()


@pytest.mark.parametrize('name', list(OUT_OF_RANGE))
def test_out_of_range_ids_pass_with_content_checks_off(name, content_checks_off):
    OUT_OF_RANGE[name][0]()  # the caller is trusted: no range check


def test_dtype_checks_stay_on_with_content_checks_off(content_checks_off):
    with pytest.raises(TypeError, match='must hold integer ids'):
        SpaceAdapter(S.Discrete(3)).to_space(torch.tensor([0.2, 1.9]))
    with pytest.raises(TypeError, match='expected integer ids'):
        SpaceAdapter(S.Discrete(3)).from_space(np.array([0.2, 1.9]))


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
    'float ids to_space': (
        lambda: SpaceAdapter(S.Discrete(3)).to_space(torch.tensor([0.2, 1.9, 2.7])),
        TypeError,
        r'float tensor of shape \(3,\) .* not exactly one-hot',
    ),
    'float ids beside values': (
        lambda: SpaceAdapter(MOVE_SPEED).to_space(DiscreteContinuous(torch.tensor([0.0, 2.0]), torch.zeros(2, 2))),
        TypeError,
        r'the discrete part \(for Dict.*\) must hold integer ids .* float \(2, 3\)',
    ),
    'bool ids to_space': (lambda: SpaceAdapter(S.MultiBinary(2)).to_space(torch.tensor([True, False])), TypeError, 'must hold integer ids'),
    'float ids from_space': (
        lambda: SpaceAdapter(MOVE_SPEED).from_space({'move': np.float32(1.0), 'speed': np.zeros(2)}),
        TypeError,
        r"sample\['move'\]: expected integer ids for Discrete\(3\), got an array of dtype float32",
    ),
    'ids wrong batch beside values': (
        lambda: SpaceAdapter(MOVE_SPEED).to_space(DiscreteContinuous(torch.zeros(4, 3, dtype=torch.long), torch.zeros(4, 2))),
        ValueError,
        r'ids need the batch shape \(4,\) of the continuous part',
    ),
    'one-hots wrong width': (lambda: SpaceAdapter(S.MultiDiscrete([2, 3])).to_space(torch.eye(4)), TypeError, r'float \(\.\.\., 5\)'),
}


@pytest.mark.parametrize('name', list(MISTAKES))
def test_mistakes_raise_clear_errors(name):
    fn, error, match = MISTAKES[name]
    with pytest.raises(error, match=match):
        fn()
