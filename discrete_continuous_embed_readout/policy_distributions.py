"""``torch.distributions`` objects built from a readout's outputs (``Readout.get_dist``),
for code that expects them: RL libraries, tensordict's ProbabilisticTensorDictModule.

They agree with the readout's own methods: they sample, score and map units through the
readout's head and its one units map (``_units.UnitMap``), masks set logits to ``-inf``.
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
    Normal,
    TanhTransform,
    TransformedDistribution,
    constraints,
)
from torch.distributions.transforms import Transform

from ._units import UnitMap, score
from .distributions import BetaDistribution, ContinuousDistribution, Gaussian, KumaraswamyDistribution, SquashedGaussian


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


class _UnitTransform(Transform):
    """The readout's map from native to user units (``_units.UnitMap``) as a transform."""

    domain = constraints.real
    codomain = constraints.real
    bijective = True
    sign = +1

    def __init__(self, units: UnitMap):
        super().__init__(cache_size=1)
        self.units = units

    def _call(self, x: Tensor) -> Tensor:
        return self.units.to_user(x)

    def _inverse(self, y: Tensor) -> Tensor:
        return self.units.to_native(y)

    def log_abs_det_jacobian(self, x: Tensor, y: Tensor) -> Tensor:
        return torch.zeros_like(x) + self.units.log_scale()


class _FollowsHead:
    """Sampling (clipping included), log-density and mode exactly as the readout's
    head and units map give them."""

    def _follow(self, head: ContinuousDistribution, params: Tensor, units: UnitMap) -> None:
        self._head, self._params, self._units = head, params, units
        self._head_mode = units.to_user(head.mode(params))

    @property
    def mode(self) -> Tensor:
        return self._head_mode

    def rsample(self, sample_shape=()) -> Tensor:
        params = self._params.expand(*sample_shape, *self._params.shape)
        return self._units.to_user(self._head.clip_sampled(self._head(params, differentiable=True)))

    def sample(self, sample_shape=()) -> Tensor:
        with torch.no_grad():
            return self.rsample(sample_shape)

    def log_prob(self, value: Tensor) -> Tensor:
        params = self._params.expand(*value.shape[: value.ndim - self._params.ndim + 1], *self._params.shape)
        return score(self._head, params, self._units.to_native(value), self._units, 'value')


class _HeadBeta(_FollowsHead, Beta):
    def __init__(self, head: BetaDistribution, params: Tensor):
        Beta.__init__(self, *head.concentrations(params), validate_args=False)
        self._follow(head, params, UnitMap())


class _HeadKumaraswamy(_FollowsHead, Kumaraswamy):
    def __init__(self, head: KumaraswamyDistribution, params: Tensor):
        Kumaraswamy.__init__(self, *head.concentrations(params), validate_args=False)
        self._follow(head, params, UnitMap())


class HeadTransformed(_FollowsHead, TransformedDistribution):
    """A head's distribution mapped by ``transforms`` (tanh, then the units map):
    sampled, scored and with a mode as the head does; an analytic ``entropy``
    where the transforms are affine only."""

    def __init__(self, base: Distribution, transforms, head: ContinuousDistribution, params: Tensor, units: UnitMap):
        TransformedDistribution.__init__(self, base, transforms, validate_args=False)
        self._follow(head, params, units)

    def entropy(self) -> Tensor:
        if any(isinstance(t, TanhTransform) for t in self.transforms):
            raise NotImplementedError('the squashed gaussian has no closed-form entropy: use Readout.entropy(..., squashed_entropy_samples=n)')
        return self.base_dist.entropy() + self._units.log_scale()


def continuous_distribution(head: ContinuousDistribution, params: Tensor, units: UnitMap) -> Distribution:
    """``Independent`` over the ``c`` dims of the head's distribution for
    ``params``, in the user's units (``units``)."""
    if type(head) is Gaussian:  # an affine map of a normal is a normal
        normal = head.dist(params)
        loc, scale = units.tensors(normal.loc)
        return Independent(Normal(normal.loc * scale + loc, normal.scale * scale, validate_args=False), 1)
    unit_transforms = [] if units.is_identity else [_UnitTransform(units)]
    if isinstance(head, SquashedGaussian):
        return Independent(HeadTransformed(head.base_dist(params), [TanhTransform(cache_size=1), *unit_transforms], head, params, units), 1)
    base = _native(head, params)
    if units.is_identity and isinstance(base, (_HeadBeta, _HeadKumaraswamy)):
        return Independent(base, 1)
    return Independent(HeadTransformed(base, unit_transforms, head, params, units), 1)


def _native(head: ContinuousDistribution, params: Tensor) -> Distribution:
    if isinstance(head, KumaraswamyDistribution):
        return _HeadKumaraswamy(head, params)
    if isinstance(head, BetaDistribution):
        return _HeadBeta(head, params)
    return head.dist(params)
