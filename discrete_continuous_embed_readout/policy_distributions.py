"""``torch.distributions`` objects built from a readout's outputs (``Readout.get_dist``),
for code that expects them: RL libraries, tensordict's ProbabilisticTensorDictModule.

They agree with the readout's own methods: normalisation (``continuous_mean_std``) and
``rescale_range`` are folded in (an affine map), masks set logits to ``-inf``.
"""

# g - groups, c - continuous dims

from __future__ import annotations

import torch
from torch import Tensor
from torch.distributions import (
    AffineTransform,
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

from ._utils import exists
from .distributions import BetaDistribution, ContinuousDistribution, Gaussian, KumaraswamyDistribution, SquashedGaussian


class MultiCategoricalDistribution(Distribution):
    """Independent categoricals over groups: ``batch_shape`` the leading shape,
    ``event_shape`` ``(g,)``; ``log_prob`` and ``entropy`` sum over the groups.

    Args:
        logits: a sequence of ``(..., n_g)`` tensors (``-inf`` = impossible action).
    """

    arg_constraints = {}
    support = constraints.independent(constraints.nonnegative_integer, 1)
    has_rsample = False

    def __init__(self, logits, validate_args: bool | None = False):
        self.categoricals = [Categorical(logits=g, validate_args=False) for g in logits]
        super().__init__(logits[0].shape[:-1], torch.Size((len(logits),)), validate_args=validate_args)

    @property
    def logits(self) -> tuple[Tensor, ...]:
        return tuple(c.logits for c in self.categoricals)

    def sample(self, sample_shape=()) -> Tensor:
        return torch.stack([c.sample(sample_shape) for c in self.categoricals], dim=-1)

    def log_prob(self, value: Tensor) -> Tensor:
        return sum(c.log_prob(value[..., g]) for g, c in enumerate(self.categoricals))

    def entropy(self) -> Tensor:
        return sum(c.entropy() for c in self.categoricals)

    @property
    def mode(self) -> Tensor:
        return torch.stack([c.logits.argmax(-1) for c in self.categoricals], dim=-1)


class _HeadBeta(Beta):
    """torch's Beta with the head's mode (the mean where no interior mode exists)."""

    def __init__(self, alpha: Tensor, beta: Tensor, mode: Tensor):
        super().__init__(alpha, beta, validate_args=False)
        self._head_mode = mode

    @property
    def mode(self) -> Tensor:
        return self._head_mode


class _HeadKumaraswamy(Kumaraswamy):
    """torch's Kumaraswamy with the head's mode and its log-space log-density."""

    def __init__(self, a: Tensor, b: Tensor, mode: Tensor, head: KumaraswamyDistribution, params: Tensor):
        super().__init__(a, b, validate_args=False)
        self._head_mode, self._head, self._params = mode, head, params

    @property
    def mode(self) -> Tensor:
        return self._head_mode

    def log_prob(self, value: Tensor) -> Tensor:
        return self._head.log_prob(self._params, value)


class HeadTransformed(TransformedDistribution):
    """A head's distribution mapped by ``transforms`` (tanh, then affine), with
    ``mode`` and, where the transforms are affine only, an analytic ``entropy``."""

    def __init__(self, base: Distribution, transforms, mode: Tensor, affine_scale: Tensor | None):
        super().__init__(base, transforms, validate_args=False)
        self._mapped_mode, self._affine_scale = mode, affine_scale

    @property
    def mode(self) -> Tensor:
        return self._mapped_mode

    def entropy(self) -> Tensor:
        if any(isinstance(t, TanhTransform) for t in self.transforms):
            raise NotImplementedError('the squashed gaussian has no closed-form entropy: use Readout.entropy(..., squashed_entropy_samples=n)')
        entropy = self.base_dist.entropy()
        return entropy + self._affine_scale.abs().log() if exists(self._affine_scale) else entropy


def continuous_distribution(head: ContinuousDistribution, params: Tensor, affine: tuple[Tensor, Tensor] | None) -> Distribution:
    """``Independent`` over the ``c`` dims of the head's distribution for
    ``params``, mapped by ``x -> x * scale + loc`` when ``affine = (loc, scale)``."""
    if type(head) is Gaussian:  # an affine map of a normal is a normal
        normal = head.dist(params)
        loc, scale = normal.loc, normal.scale
        if exists(affine):
            loc, scale = loc * affine[1] + affine[0], scale * affine[1].abs()
        return Independent(Normal(loc, scale, validate_args=False), 1)
    mode = head.mode(params)
    if isinstance(head, SquashedGaussian):
        base, transforms = head.base_dist(params), [TanhTransform(cache_size=1)]
    else:
        base, transforms = _native(head, params, mode), []
    if not exists(affine) and isinstance(base, (_HeadBeta, _HeadKumaraswamy)):
        return Independent(base, 1)
    if exists(affine):
        transforms.append(AffineTransform(affine[0], affine[1], cache_size=1))
        mode = mode * affine[1] + affine[0]
    return Independent(HeadTransformed(base, transforms, mode, affine[1] if exists(affine) else None), 1)


def _native(head: ContinuousDistribution, params: Tensor, mode: Tensor) -> Distribution:
    if isinstance(head, KumaraswamyDistribution):
        return _HeadKumaraswamy(*head.concentrations(params), mode, head, params)
    if isinstance(head, BetaDistribution):
        return _HeadBeta(*head.concentrations(params), mode)
    return head.dist(params)
