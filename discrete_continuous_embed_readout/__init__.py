"""Embedding and readout for discrete and continuous values sharing one table:
from language models to multi-discrete and continuous robot action spaces."""

from ._checks import get_validate_args, set_validate_args
from ._utils import DiscreteContinuous
from .embed import Embed
from .factory import EmbedAndReadout, EmbedReadoutPair, ParameterlessReadout
from .heads.base import ContinuousDistribution
from .heads.binned import BinnedDistribution, symexp, symlog
from .heads.binned_targets import HLGaussDistribution, TwoHotDistribution
from .heads.registry import CONTINUOUS_DISTRIBUTIONS
from .multi_categorical import MultiCategorical, segmented_softmax
from .policy_distributions import MultiCategoricalDistribution
from .readout import Readout
from .readout_distribution import ReadoutDistribution

__version__ = '0.3.0'

__all__ = [
    'CONTINUOUS_DISTRIBUTIONS',
    'BinnedDistribution',
    'CompositeActionDistribution',
    'ContinuousDistribution',
    'DiscreteContinuous',
    'Embed',
    'EmbedAndReadout',
    'EmbedReadoutPair',
    'HLGaussDistribution',
    'MultiCategorical',
    'MultiCategoricalDistribution',
    'ParameterlessReadout',
    'Readout',
    'ReadoutDistribution',
    'SpaceAdapter',
    'TwoHotDistribution',
    'get_validate_args',
    'segmented_softmax',
    'set_validate_args',
    'symexp',
    'symlog',
]


def __getattr__(name: str):
    # SpaceAdapter needs numpy and gymnasium, CompositeActionDistribution tensordict
    # (optional): imported on first use
    if name == 'SpaceAdapter':
        from .rl.spaces import SpaceAdapter

        return SpaceAdapter
    if name == 'CompositeActionDistribution':
        from .rl.composite import CompositeActionDistribution

        return CompositeActionDistribution
    raise AttributeError(f'module {__name__!r} has no attribute {name!r}')


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
