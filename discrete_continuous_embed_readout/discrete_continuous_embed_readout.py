"""The original 0.2.x module path: every public name that module defined in
0.2.7 ... 0.2.12 imports from here, so code written against those releases runs
unchanged. This is the compatibility layer: the package's own API is its top
level (``from discrete_continuous_embed_readout import ...``); the names below
that are not there (the old class names, the selector objects, the helpers and
the einops functions the old module carried) are kept for old code only.
"""

from einops import einsum, rearrange, reduce, repeat

from ._table import SharedTable as Base
from ._utils import DiscreteContinuous, default, exists
from .compat.helpers import (
    assert_valid_range,
    atanh,
    calc_entropy,
    cast_tuple,
    cat_with_lens,
    compact,
    exclusive_cumsum,
    first,
    flatten,
    gumbel_noise,
    gumbel_sample,
    gumbel_sample_multi_categorical,
    identity,
    is_unique,
    log,
    max_neg_value,
    rescale,
    safe_cat,
    softclamp,
    tree_map_tensor,
    xnor,
)
from .compat.selectors import BufferModule, ContinuousSelector, DiscreteContinuousSelector, DiscreteSelector
from .embed import Embed
from .factory import EmbedAndReadout, ParameterlessReadout
from .heads.base import ContinuousDistribution
from .heads.gaussian import Gaussian, SquashedGaussian
from .heads.registry import CONTINUOUS_DISTRIBUTIONS
from .heads.unit_interval import BetaDistribution, KumaraswamyDistribution
from .multi_categorical import MultiCategorical, segmented_softmax
from .readout import Readout

# 0.2.x names of the bounded heads: the same classes
BetaDist = BetaDistribution
KumaraswamyDist = KumaraswamyDistribution

__all__ = [
    'CONTINUOUS_DISTRIBUTIONS',
    'Base',
    'BetaDist',
    'BetaDistribution',
    'BufferModule',
    'ContinuousDistribution',
    'ContinuousSelector',
    'DiscreteContinuous',
    'DiscreteContinuousSelector',
    'DiscreteSelector',
    'Embed',
    'EmbedAndReadout',
    'Gaussian',
    'KumaraswamyDist',
    'KumaraswamyDistribution',
    'MultiCategorical',
    'ParameterlessReadout',
    'Readout',
    'SquashedGaussian',
    'assert_valid_range',
    'atanh',
    'calc_entropy',
    'cast_tuple',
    'cat_with_lens',
    'compact',
    'default',
    'einsum',
    'exclusive_cumsum',
    'exists',
    'first',
    'flatten',
    'gumbel_noise',
    'gumbel_sample',
    'gumbel_sample_multi_categorical',
    'identity',
    'is_unique',
    'log',
    'max_neg_value',
    'rearrange',
    'reduce',
    'repeat',
    'rescale',
    'safe_cat',
    'segmented_softmax',
    'softclamp',
    'tree_map_tensor',
    'xnor',
]
