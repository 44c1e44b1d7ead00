"""The two binned heads (``binned.py``), which differ only in their bins and in a
value's target distribution over them: two-hot (DreamerV3: the two bins around the
value, linearly) and HL-Gauss (the histogram of a gaussian centred on the value)."""

# b - bins

from __future__ import annotations

import math

import torch
from torch import Tensor

from .._options import check_positive
from .binned import BinnedDistribution, _wide

__all__ = ['HLGaussDistribution', 'TwoHotDistribution']


class TwoHotDistribution(BinnedDistribution):
    """Two-hot bins (DreamerV3): ``num_bins`` values even in bin space from
    ``min_value`` to ``max_value`` (both ends are bins). A value's target puts
    weight on the two bins around it, linearly, so its decoded value is the value
    itself (inside the range).

    Args:
        num_bins: as ``BinnedDistribution``.
        min_value: as ``BinnedDistribution``.
        max_value: as ``BinnedDistribution``.
        transform: ``'symlog'`` (default) or ``None``.
        eps: as ``BinnedDistribution``.
    """

    default_transform = 'symlog'

    def centers(self, like: Tensor) -> Tensor:
        """The ``num_bins`` bin positions, even in bin space, both ends included.

        Args:
            like: a tensor whose dtype and device the result takes.

        Returns:
            ``(num_bins,)``.
        """
        return torch.linspace(self.low, self.high, self.num_bins, dtype=like.dtype, device=like.device)

    def target_probs(self, value: Tensor) -> Tensor:
        """Two-hot weights: the two bins around each value, weighted linearly by
        distance in bin space (one bin at an end of the range).

        Args:
            value: ``(..., c)`` in native units (clamped to the range).

        Returns:
            ``(..., c, num_bins)``.
        """
        position = (self._clamped(value) - self.low) * ((self.num_bins - 1) / (self.high - self.low))
        position = position.clamp(0, self.num_bins - 1)  # rounding at the ends must not leave [0, 1] weights
        below = position.floor().clamp(max=self.num_bins - 2)
        above_weight = (position - below).unsqueeze(-1)
        below = below.long().unsqueeze(-1)
        probs = torch.zeros(*value.shape, self.num_bins, dtype=position.dtype, device=value.device)
        return probs.scatter(-1, below, 1.0 - above_weight).scatter_add(-1, below + 1, above_weight)


class HLGaussDistribution(BinnedDistribution):
    """HL-Gauss bins (Imani & White 2018; Farebrother et al. 2024): ``num_bins``
    equal bins tiling ``[min_value, max_value]`` in bin space (values are the bin
    centres). A value's target is the mass of ``N(value, sigma^2)`` in each bin,
    renormalised to the range, with ``sigma = sigma_to_bin_ratio * bin width``.

    Args:
        num_bins: as ``BinnedDistribution``.
        min_value: as ``BinnedDistribution``.
        max_value: as ``BinnedDistribution``.
        transform: ``None`` (default) or ``'symlog'``.
        eps: as ``BinnedDistribution``.
        sigma_to_bin_ratio: the gaussian's std in bin widths (0.75, as in the paper).
    """

    def __init__(self, num_bins: int = 255, min_value: float = -20.0, max_value: float = 20.0, transform: str | None = 'default',
                 sigma_to_bin_ratio: float = 0.75, eps: float = 1e-6):  # fmt: skip
        super().__init__(num_bins, min_value, max_value, transform, eps)
        self.sigma_to_bin_ratio = check_positive(sigma_to_bin_ratio, 'sigma_to_bin_ratio')
        self.sigma = self.sigma_to_bin_ratio * (self.high - self.low) / num_bins

    def edges(self, like: Tensor) -> Tensor:
        """The ``num_bins + 1`` bin edges, even in bin space.

        Args:
            like: a tensor whose dtype and device the result takes.

        Returns:
            ``(num_bins + 1,)``.
        """
        return torch.linspace(self.low, self.high, self.num_bins + 1, dtype=like.dtype, device=like.device)

    def centers(self, like: Tensor) -> Tensor:
        """The bin centres, midway between edges.

        Args:
            like: a tensor whose dtype and device the result takes.

        Returns:
            ``(num_bins,)``.
        """
        edges = self.edges(like)
        return (edges[1:] + edges[:-1]) / 2

    def target_probs(self, value: Tensor) -> Tensor:
        """The mass of ``N(value, sigma^2)`` in each bin (in bin space), renormalised
        to the range; computed in float64.

        Args:
            value: ``(..., c)`` in native units (clamped to the range).

        Returns:
            ``(..., c, num_bins)``.
        """
        # float64: the bin masses are differences of erf values close to +-1
        wide = torch.float32 if value.device.type == 'mps' else torch.float64
        position = self._clamped(value.to(wide)).unsqueeze(-1)
        cdf = torch.special.erf((self.edges(position) - position) / (self.sigma * math.sqrt(2.0)))
        return ((cdf[..., 1:] - cdf[..., :-1]) / (cdf[..., -1:] - cdf[..., :1])).to(_wide(value).dtype)
