"""The registry of continuous heads by name: ``continuous_dist_type`` is a key of
``CONTINUOUS_DISTRIBUTIONS``; add your own ``ContinuousDistribution`` subclass to it."""

from __future__ import annotations

from .base import ContinuousDistribution
from .binned import BinnedDistribution
from .binned_targets import HLGaussDistribution, TwoHotDistribution
from .gaussian import Gaussian, SquashedGaussian
from .unit_interval import BetaDistribution, KumaraswamyDistribution

__all__ = ['CONTINUOUS_DISTRIBUTIONS', 'build_continuous_dist', 'is_binned', 'table_bins']

CONTINUOUS_DISTRIBUTIONS: dict[str, type[ContinuousDistribution]] = {
    'gaussian': Gaussian,
    'beta': BetaDistribution,
    'kumaraswamy': KumaraswamyDistribution,
    'two_hot': TwoHotDistribution,
    'hl_gauss': HLGaussDistribution,
}
"""Continuous heads by name: ``Readout(..., continuous_dist_type=name)`` builds
``CONTINUOUS_DISTRIBUTIONS[name](**continuous_dist_kwargs, eps=eps)`` (with
``continuous_squashed=True``, a ``SquashedGaussian``). Add your own
``ContinuousDistribution`` subclass under a new name."""


def build_continuous_dist(dist_type, dist_kwargs, squashed, log_var, regression_loss_type, eps) -> ContinuousDistribution:
    """Look ``dist_type`` up in ``CONTINUOUS_DISTRIBUTIONS`` (at construction) and
    instantiate it as ``cls(**dist_kwargs, eps=eps)``; squashing picks ``SquashedGaussian``."""
    if not isinstance(dist_type, str) or dist_type not in CONTINUOUS_DISTRIBUTIONS:
        raise ValueError(f'continuous_dist_type must be one of {sorted(CONTINUOUS_DISTRIBUTIONS)}, got {dist_type!r}')
    cls = CONTINUOUS_DISTRIBUTIONS[dist_type]
    if squashed:
        if cls is not Gaussian:
            raise ValueError(f"continuous_squashed=True needs continuous_dist_type='gaussian', got {dist_type!r}")
        cls = SquashedGaussian
    if not log_var and (cls is not Gaussian):
        binned = ' (a binned head reads out logits over bins: leave continuous_log_var_embed at True)' if issubclass(cls, BinnedDistribution) else ''
        raise ValueError(f'continuous_log_var_embed=False (regression) predicts a plain mean: it needs an unsquashed gaussian, got {dist_type!r}{" squashed" if squashed else ""}{binned}')
    _check_options(regression_loss_type, dist_kwargs)
    try:
        return cls(**dist_kwargs, eps=eps)
    except TypeError as err:
        raise TypeError(f'continuous_dist_kwargs {dist_kwargs!r} do not fit {cls.__name__}: {err}') from None


def _check_options(regression_loss_type, dist_kwargs) -> None:
    if regression_loss_type not in ('mse', 'l1'):
        raise ValueError(f"regression_loss_type must be 'mse' or 'l1', got {regression_loss_type!r}")
    if not isinstance(dist_kwargs, dict):
        raise TypeError(f'continuous_dist_kwargs must be a dict, got {type(dist_kwargs).__name__}')


def is_binned(dist_type) -> bool:
    """Whether ``continuous_dist_type`` names a binned head (looked up now: heads may be registered late)."""
    cls = CONTINUOUS_DISTRIBUTIONS.get(dist_type) if isinstance(dist_type, str) else None
    return isinstance(cls, type) and issubclass(cls, BinnedDistribution)


def table_bins(head: ContinuousDistribution | None) -> int:
    """Rows per continuous dim a head's bins take in the table (0: not a binned head)."""
    return head.num_bins if isinstance(head, BinnedDistribution) else 0
