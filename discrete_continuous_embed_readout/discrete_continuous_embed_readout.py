"""The original 0.2.x module path, kept so that its imports keep working."""

from ._utils import DiscreteContinuous, default, exists
from .distributions import (
    CONTINUOUS_DISTRIBUTIONS,
    BetaDistribution,
    ContinuousDistribution,
    Gaussian,
    KumaraswamyDistribution,
    SquashedGaussian,
)
from .embed import Embed
from .factory import EmbedAndReadout, ParameterlessReadout
from .multi_categorical import MultiCategorical, segmented_softmax
from .readout import Readout

__all__ = [
    'CONTINUOUS_DISTRIBUTIONS',
    'BetaDistribution',
    'ContinuousDistribution',
    'DiscreteContinuous',
    'Embed',
    'EmbedAndReadout',
    'Gaussian',
    'KumaraswamyDistribution',
    'MultiCategorical',
    'ParameterlessReadout',
    'Readout',
    'SquashedGaussian',
    'default',
    'exists',
    'segmented_softmax',
]
