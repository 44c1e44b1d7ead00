"""``torch.distributions`` objects built from a readout's outputs (``Readout.get_dist``),
for code that expects them: RL libraries, tensordict's ProbabilisticTensorDictModule.

They are views over the readout's distribution (``readout_distribution``): they sample,
score and map units through its continuous part, masks set logits to ``-inf``.
"""

# g - groups, c - continuous dims

from __future__ import annotations

import torch
from torch import Tensor
from torch.distributions import (
    Beta,
    Categorical,
    Distribution,
    Independent,
    Kumaraswamy,
    TanhTransform,
    TransformedDistribution,
    constraints,
    register_kl,
)

from .distributions import Gaussian, SquashedGaussian
from .unit_interval import BetaDistribution, KumaraswamyDistribution

__all__ = ['MultiCategoricalDistribution', 'PartTransformed', 'continuous_distribution']


class MultiCategoricalDistribution(Distribution):
    """Independent categoricals over groups: ``batch_shape`` the leading shape,
    ``event_shape`` ``(g,)``; ``log_prob`` and ``entropy`` sum over the groups.

    Args:
        logits: a sequence of ``(..., n_g)`` tensors (``-inf`` = impossible action).
        validate_args: as in ``torch.distributions`` (off by default): check the
            logits, and that ``log_prob``'s ids have one entry per group, each in
            its group's range (``ValueError`` otherwise).
    """

    arg_constraints = {}
    support = constraints.independent(constraints.nonnegative_integer, 1)
    has_rsample = False

    def __init__(self, logits, validate_args: bool | None = False):
        self.categoricals = [Categorical(logits=g, validate_args=validate_args) for g in logits]
        super().__init__(logits[0].shape[:-1], torch.Size((len(logits),)), validate_args=validate_args)

    @property
    def logits(self) -> tuple[Tensor, ...]:
        """Per-group logits ``(..., n_g)``, normalised as ``Categorical`` stores them (log-probs)."""
        return tuple(c.logits for c in self.categoricals)

    def sample(self, sample_shape=()) -> Tensor:
        """Draw ids from each group's categorical.

        Args:
            sample_shape: leading shape of independent draws.

        Returns:
            ids ``(*sample_shape, ..., g)``.
        """
        return torch.stack([c.sample(sample_shape) for c in self.categoricals], dim=-1)

    def log_prob(self, value: Tensor) -> Tensor:
        """Joint log-probability of one id per group.

        Args:
            value: ids ``(..., g)``.

        Returns:
            ``(...)``: the groups' log-probs summed.
        """
        if self._validate_args and (value.ndim == 0 or value.shape[-1] != len(self.categoricals)):
            raise ValueError(f'value must have a last axis of {len(self.categoricals)} (one id per group), got shape {tuple(value.shape)}')
        return sum(c.log_prob(value[..., g]) for g, c in enumerate(self.categoricals))

    def entropy(self) -> Tensor:
        """Joint entropy.

        Returns:
            ``(...)``: the groups' entropies summed.
        """
        return sum(c.entropy() for c in self.categoricals)

    @property
    def mode(self) -> Tensor:
        """The argmax id of each group, ``(..., g)``."""
        return torch.stack([c.logits.argmax(-1) for c in self.categoricals], dim=-1)


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
