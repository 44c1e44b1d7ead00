"""``torch.distributions`` views of a continuous part (``heads.part.ContinuousPart``),
for ``Readout.get_dist``: they sample, score and map units through the part, with no
arithmetic of their own (an affine map of a normal is a normal; a tanh-squashed or
rescaled head is a ``TransformedDistribution`` that follows the part)."""

# c - continuous dims

from __future__ import annotations

import torch
from torch import Tensor
from torch.distributions import (
    Beta,
    Distribution,
    Independent,
    Kumaraswamy,
    TanhTransform,
    TransformedDistribution,
    register_kl,
)

from .gaussian import Gaussian, SquashedGaussian
from .unit_interval import BetaDistribution, KumaraswamyDistribution

__all__ = ['PartTransformed', 'continuous_distribution']


class _FollowsPart:
    """Sampling, log-density and mode exactly as the readout's continuous part
    gives them (``readout_distribution.ContinuousPart``): a view, no arithmetic of its own."""

    def _follow(self, part) -> None:
        self._part = part

    @property
    def mode(self) -> Tensor:
        return self._part.sample(0.0)[0]

    def rsample(self, sample_shape=()) -> Tensor:
        return self._part.expand(sample_shape).sample(1.0, differentiable=True)[0]

    def sample(self, sample_shape=()) -> Tensor:
        with torch.no_grad():
            return self.rsample(sample_shape)

    def log_prob(self, value: Tensor) -> Tensor:
        extra = value.shape[: value.ndim - len(self._part.batch_shape) - 1]
        return self._part.expand(extra).log_prob(value, 'value')


class _PartBeta(_FollowsPart, Beta):
    def __init__(self, part):
        Beta.__init__(self, *part.head.concentrations(part.params), validate_args=False)
        self._follow(part)


class _PartKumaraswamy(_FollowsPart, Kumaraswamy):
    def __init__(self, part):
        Kumaraswamy.__init__(self, *part.head.concentrations(part.params), validate_args=False)
        self._follow(part)


class PartTransformed(_FollowsPart, TransformedDistribution):
    """A head's native distribution mapped by the part's transforms (tanh, then
    the units map): sampled, scored and with a mode as the part does; an
    analytic ``entropy`` where the transforms are affine only."""

    def __init__(self, base: Distribution, transforms, part):
        TransformedDistribution.__init__(self, base, transforms, validate_args=False)
        self._follow(part)

    def entropy(self) -> Tensor:
        if any(isinstance(t, TanhTransform) for t in self.transforms):
            raise NotImplementedError('the squashed gaussian has no closed-form entropy: use Readout.entropy(..., squashed_entropy_samples=n)')
        return self._part.entropy()


class _PartBinned(_FollowsPart, Distribution):
    """A binned head's categorical over bin values, in the user's units: sampled,
    scored (the nearest bin's log-probability) and with a mode (the decoded value)
    as the part does; ``mean`` is the expectation of the bin values."""

    has_rsample = False
    arg_constraints = {}

    def __init__(self, part):
        Distribution.__init__(self, batch_shape=part.params.shape[:-1], validate_args=False)
        self._follow(part)

    def rsample(self, sample_shape=()) -> Tensor:
        raise NotImplementedError('a binned head has no reparameterised sample: use Readout.sample(..., differentiable=True) for a straight-through one')

    def sample(self, sample_shape=()) -> Tensor:
        with torch.no_grad():
            return self._part.expand(sample_shape).sample(1.0)[0]

    @property
    def mean(self) -> Tensor:
        probs = self._part.params.softmax(-1)
        return self._part.units((probs * self._part.head.bin_values(probs)).sum(-1))

    def entropy(self) -> Tensor:
        return self._part.entropy()


@register_kl(_PartBinned, _PartBinned)
def _kl_binned(p: _PartBinned, q: _PartBinned) -> Tensor:
    return p._part.kl_div(q._part)


def continuous_distribution(part) -> Distribution:
    """``Independent`` over the ``c`` dims of a continuous part's distribution, in
    the user's units (the part's ``units``, an ``AffineTransform``)."""
    head, params, units = part.head, part.params, part.units
    if head.discrete_support:
        return Independent(_PartBinned(part), 1)
    if type(head) is Gaussian:  # an affine map of a normal is a normal
        return Independent(part.user_normal(), 1)
    unit_transforms = [] if part.is_identity else [units]
    if isinstance(head, SquashedGaussian):
        return Independent(PartTransformed(head.base_dist(params), [TanhTransform(cache_size=1), *unit_transforms], part), 1)
    if isinstance(head, (BetaDistribution, KumaraswamyDistribution)) and not unit_transforms:
        return Independent((_PartKumaraswamy if isinstance(head, KumaraswamyDistribution) else _PartBeta)(part), 1)
    base = head.dist(params)
    return Independent(PartTransformed(base, unit_transforms, part), 1)
