"""Distributional regression heads: each continuous dim read out as logits over
``num_bins`` fixed values (bins), as value heads in DreamerV3 (two-hot, bins even
in symlog space) and in "Stop Regressing" (Farebrother et al. 2024; HL-Gauss).

The loss is the cross entropy against the value's target distribution over the
bins (its two-hot weights, or the HL-Gauss histogram of a gaussian centred on it);
the decoded value is the expected bin position mapped back through the
transform. ``min_value`` / ``max_value`` bound the bins in *bin space*, the space
they are even in: with ``transform='symlog'`` they are symlog positions, so the
defaults (-20, 20) are DreamerV3's bins, which cover values up to
``symexp(20)``, about 4.9e8 (pass ``symlog(v)`` to bound the values by ``v``); with
``transform=None`` they are values. Values outside the range are clamped to it
first, so they land on the end bins.

The two target encodings, ``TwoHotDistribution`` and ``HLGaussDistribution``, are in
``binned_targets.py``. Every method computes in float32 (float64 for float64 inputs) and returns in that
dtype: half precision cannot tell neighbouring bins apart.
"""

# c - continuous dims, b - bins

from __future__ import annotations

import math

import torch
from torch import Tensor
from torch.distributions import Categorical

from .._checks import describe
from .base import ContinuousDistribution

__all__ = ['BinnedDistribution', 'symexp', 'symlog']


def symlog(x):
    """``sign(x) log(1 + |x|)``.

    Args:
        x: a tensor or a float.

    Returns:
        the same kind as ``x``.
    """
    if isinstance(x, Tensor):
        return torch.sign(x) * torch.log1p(x.abs())
    return math.copysign(math.log1p(abs(x)), x)


def symexp(x):
    """``sign(x) (exp(|x|) - 1)``, the inverse of ``symlog``.

    Args:
        x: a tensor or a float.

    Returns:
        the same kind as ``x``.
    """
    if isinstance(x, Tensor):
        return torch.sign(x) * torch.expm1(x.abs())
    return math.copysign(math.expm1(abs(x)), x)


TRANSFORMS = {None: (lambda x: x, lambda x: x), 'symlog': (symlog, symexp)}


def _wide(t: Tensor) -> Tensor:
    """``t`` in float32 (float64 stays float64)."""
    return t.to(torch.promote_types(t.dtype, torch.float32))


class BinnedDistribution(ContinuousDistribution):
    """Base of the binned heads: params ``(..., c, num_bins)`` are logits over the
    bins of each dim; a categorical over bin values.

    Sampling draws a bin and returns its value (temperature divides the logits);
    the mode (and temperature 0) is the decoded expected value; ``log_prob`` of a
    value is that of its nearest bin; ``entropy`` and ``kl_div`` are the
    categorical's. These are probability masses: a change of units (e.g.
    ``continuous_mean_std``) moves the bins, not the probabilities.

    Args:
        num_bins: bins per dim (>= 2).
        min_value: the low end of the bins, in bin space (a symlog position for symlog bins).
        max_value: their high end, likewise.
        transform: ``'symlog'`` or ``None``: the space the bins are even in.
        eps: numerical floor.
    """

    default_transform: str | None = None
    discrete_support = True

    def __init__(self, num_bins: int = 255, min_value: float = -20.0, max_value: float = 20.0, transform: str | None = 'default', eps: float = 1e-6):
        super().__init__(eps=eps)
        if isinstance(num_bins, bool) or not isinstance(num_bins, int) or num_bins < 2:
            raise ValueError(f'num_bins must be an int >= 2, got {describe(num_bins)}')
        if not all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in (min_value, max_value)) or not min_value < max_value:
            raise ValueError(f'min_value and max_value must be finite numbers with min_value < max_value, got {min_value!r} and {max_value!r}')
        transform = self.default_transform if transform == 'default' else transform
        if transform not in TRANSFORMS:
            raise ValueError(f"transform must be 'symlog' or None, got {transform!r}")
        self.num_bins, self.min_value, self.max_value, self.transform = num_bins, float(min_value), float(max_value), transform
        self.to_bin_space, self.from_bin_space = TRANSFORMS[transform]
        self.low, self.high = self.min_value, self.max_value  # in bin space

    def centers(self, like: Tensor) -> Tensor:
        """Bin centres in bin space (evenly spaced).

        Args:
            like: a tensor whose dtype and device the result takes.

        Returns:
            ``(num_bins,)``.
        """
        raise NotImplementedError

    def bin_values(self, like: Tensor) -> Tensor:
        """The value of each bin (its centre mapped back from bin space): what a sample returns.

        Args:
            like: a tensor whose dtype and device the result takes.

        Returns:
            ``(num_bins,)``.
        """
        return self.from_bin_space(self.centers(like))

    def target_probs(self, value: Tensor) -> Tensor:
        """The target distribution of values over the bins (what the loss trains
        towards, and the weights ``Embed`` gives the bin rows).

        Args:
            value: ``(..., c)`` in native units.

        Returns:
            ``(..., c, num_bins)``, each row summing to 1.
        """
        raise NotImplementedError

    def decode(self, probs: Tensor) -> Tensor:
        """The expected bin position, mapped back from bin space (``symexp`` for symlog bins).

        Args:
            probs: ``(..., c, num_bins)``.

        Returns:
            values ``(..., c)``.
        """
        probs = _wide(probs)
        return self.from_bin_space((probs * self.centers(probs)).sum(-1))

    def nearest_bin(self, value: Tensor) -> Tensor:
        """The bin nearest each value, in bin space.

        Args:
            value: ``(..., c)`` in native units.

        Returns:
            bin ids ``(..., c)``.
        """
        value = _wide(value)
        centers = self.centers(value)
        step = (centers[-1] - centers[0]) / (self.num_bins - 1)
        position = (self.to_bin_space(value) - centers[0]) / step
        return position.round().clamp(0, self.num_bins - 1).long()

    def dist(self, params: Tensor) -> Categorical:
        """A categorical over bin ids.

        Args:
            params: bin logits ``(..., c, num_bins)``.

        Returns:
            a ``Categorical`` with batch shape ``(..., c)``.
        """
        return Categorical(logits=_wide(params), validate_args=False)

    def forward(self, params: Tensor, differentiable: bool = False) -> Tensor:
        """A bin drawn, returned as its value.

        Args:
            params: bin logits ``(..., c, num_bins)``.
            differentiable: straight-through: the drawn value, with the gradient of the
                expected value ``p @ bin_values`` (so gradients reach the logits).

        Returns:
            ``(..., c)``.
        """
        return self.tempered_sample(params, 1.0, differentiable)

    def tempered_sample(self, params: Tensor, temperature: float, differentiable: bool = False) -> Tensor:
        """A bin drawn from ``softmax(logits / temperature)`` (Gumbel-max on
        ``logits + temperature * gumbel``, so any temperature > 0 is finite),
        returned as its value.

        Args:
            params: bin logits ``(..., c, num_bins)``.
            temperature: ``> 0``.
            differentiable: straight-through, as in ``forward``.

        Returns:
            ``(..., c)``.
        """
        logits = _wide(params)
        gumbel = -torch.empty_like(logits).exponential_().log()
        ids = (logits.detach() + temperature * gumbel).argmax(-1, keepdim=True)
        values = self.bin_values(logits)
        drawn = values[ids.squeeze(-1)]
        if not differentiable:
            return drawn
        probs = (logits / temperature).softmax(-1)  # straight-through: the drawn value, the expected value's gradient
        return drawn + ((probs - probs.detach()) * values).sum(-1)

    def mode(self, params: Tensor) -> Tensor:
        """The decoded value: the expected bin position, mapped back from bin space.

        Args:
            params: bin logits ``(..., c, num_bins)``.

        Returns:
            ``(..., c)``.
        """
        return self.decode(_wide(params).softmax(-1))

    def log_prob(self, params: Tensor, value: Tensor) -> Tensor:
        """Log-probability of the bin nearest each value.

        Args:
            params: bin logits ``(..., c, num_bins)``.
            value: ``(..., c)`` in native units.

        Returns:
            ``(..., c)``.
        """
        return _wide(params).log_softmax(-1).gather(-1, self.nearest_bin(value).unsqueeze(-1)).squeeze(-1)

    def entropy(self, params: Tensor) -> Tensor:
        """Entropy of the categorical over bins.

        Args:
            params: bin logits ``(..., c, num_bins)``.

        Returns:
            ``(..., c)``.
        """
        log_p = _wide(params).log_softmax(-1)
        return -(log_p.exp() * log_p).sum(-1)

    def kl_div(self, params_true: Tensor, params_pred: Tensor) -> Tensor:
        """KL(true || pred) of the categoricals over bins.

        Args:
            params_true: bin logits ``(..., c, num_bins)``.
            params_pred: bin logits ``(..., c, num_bins)``.

        Returns:
            ``(..., c)``.
        """
        log_p, log_q = _wide(params_true).log_softmax(-1), _wide(params_pred).log_softmax(-1)
        return (log_p.exp() * (log_p - log_q)).sum(-1)

    def loss(self, params: Tensor, value: Tensor) -> Tensor:
        """Cross entropy of the logits against ``target_probs(value)``.

        Args:
            params: bin logits ``(..., c, num_bins)``.
            value: ``(..., c)`` in native units (clamped to the range).

        Returns:
            ``(..., c)``.
        """
        log_p = _wide(params).log_softmax(-1)
        return -(self.target_probs(value).to(log_p.dtype) * log_p).sum(-1)

    def _clamped(self, value: Tensor) -> Tensor:
        """``value`` in bin space, clamped to the bins' range."""
        return self.to_bin_space(_wide(value)).clamp(self.low, self.high)
