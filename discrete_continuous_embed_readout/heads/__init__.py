"""The continuous heads: a head turns a readout's params for ``c`` dims into a
distribution in its *native* units (the gaussian family, the unit-interval beta and
kumaraswamy, the binned distributional-regression heads), the registry that maps
``continuous_dist_type`` names to them, ``part.ContinuousPart`` (a head applied to
params plus the one units map to the user's units) and its ``torch.distributions``
views. Nothing here knows the ``Readout``: the core builds heads and parts, never
the other way round."""

from .base import ContinuousDistribution
from .binned import BinnedDistribution, symexp, symlog
from .binned_targets import HLGaussDistribution, TwoHotDistribution
from .gaussian import Gaussian, SquashedGaussian
from .registry import CONTINUOUS_DISTRIBUTIONS
from .unit_interval import BetaDistribution, KumaraswamyDistribution

__all__ = [
    'CONTINUOUS_DISTRIBUTIONS',
    'BetaDistribution',
    'BinnedDistribution',
    'ContinuousDistribution',
    'Gaussian',
    'HLGaussDistribution',
    'KumaraswamyDistribution',
    'SquashedGaussian',
    'TwoHotDistribution',
    'symexp',
    'symlog',
]
