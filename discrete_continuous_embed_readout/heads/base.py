"""The base class of the continuous heads: a head turns a readout's params for ``c``
dims into a distribution in its native units (``default_range``), and samples,
scores and reduces it. Subclass it (and register the class in
``CONTINUOUS_DISTRIBUTIONS``) to add a head; the gaussian family is in
``gaussian.py``, beta and kumaraswamy in ``unit_interval.py``, the binned heads in
``binned.py``."""

# c - continuous dims

from __future__ import annotations

from torch import Tensor, nn
from torch.distributions import Distribution, kl_divergence

from .._options import check_temperature

__all__ = ['ContinuousDistribution']


class ContinuousDistribution(nn.Module):
    """Base class of a continuous head; subclass it to add your own.

    A head works in its *native* units (the readout maps them to the user's).
    A subclass implements ``dist(params)``, a ``torch.distributions.Distribution``
    with batch shape ``(..., c)`` for params ``(..., c, 2)``, and may override
    ``default_range``, ``forward`` (a sample at temperature 1), ``clip_sampled``,
    ``log_prob``, ``entropy``, ``kl_div``, ``mode`` and ``tempered_sample``; every
    method takes params ``(..., c, 2)`` and returns ``(..., c)``. The Readout
    builds it as ``cls(**continuous_dist_kwargs, eps=eps)``.

    Args:
        eps: numerical floor.

    Attributes:
        discrete_support: whether the head is a categorical over fixed values (the
            binned heads): its log-probs and entropies are of probability masses,
            which a change of units does not rescale.
    """

    discrete_support = False

    def __init__(self, eps: float = 1e-6):
        super().__init__()
        self.eps = eps

    @property
    def default_range(self) -> tuple[float, float] | None:
        """The native range ``(lo, hi)`` of samples, or ``None`` if unbounded."""
        return None

    @property
    def support_tolerance(self) -> float:
        """How far outside ``default_range`` a value may lie and still be scored
        (clipped inside first); farther is outside the support."""
        return 0.0

    @property
    def supports_temperature(self) -> bool:
        """Whether the head samples at temperatures other than 0 and 1 (it
        overrides ``tempered_sample``)."""
        return type(self).tempered_sample is not ContinuousDistribution.tempered_sample

    def dist(self, params: Tensor) -> Distribution:
        """The distribution for ``params`` (subclasses must implement it).

        Args:
            params: ``(..., c, 2)``.

        Returns:
            a ``torch.distributions.Distribution`` with batch shape ``(..., c)``.
        """
        raise NotImplementedError(f'{type(self).__name__} must implement dist(params)')

    def forward(self, params: Tensor, differentiable: bool = False) -> Tensor:
        """A sample at temperature 1, before ``clip_sampled``.

        Args:
            params: ``(..., c, 2)``.
            differentiable: ``rsample`` (reparameterised) instead of ``sample``.

        Returns:
            ``(..., c)`` in the native range.
        """
        d = self.dist(params)
        return d.rsample() if differentiable else d.sample()

    def clip_sampled(self, sampled: Tensor) -> Tensor:
        """Samples kept where their log-density is finite.

        Args:
            sampled: ``(..., c)``.

        Returns:
            ``sampled`` itself here; the squashed gaussian keeps it inside (-1, 1),
            beta / kumaraswamy inside ``[clip_eps, 1 - clip_eps]`` (``clip``).
        """
        return sampled

    def log_prob(self, params: Tensor, value: Tensor) -> Tensor:
        """Log-density of ``value`` in native units.

        Args:
            params: ``(..., c, 2)``.
            value: ``(..., c)``.

        Returns:
            ``(..., c)``.
        """
        return self.dist(params).log_prob(value)

    def entropy(self, params: Tensor) -> Tensor:
        """Differential entropy in native units.

        Args:
            params: ``(..., c, 2)``.

        Returns:
            ``(..., c)``.
        """
        return self.dist(params).entropy()

    def kl_div(self, params_true: Tensor, params_pred: Tensor) -> Tensor:
        """KL(true || pred), by ``torch.distributions.kl_divergence`` here.

        Args:
            params_true: ``(..., c, 2)``.
            params_pred: ``(..., c, 2)``.

        Returns:
            ``(..., c)``.
        """
        return kl_divergence(self.dist(params_true), self.dist(params_pred))

    def loss(self, params: Tensor, value: Tensor) -> Tensor:
        """The training loss of ``value`` in native units: the negative log-density
        here (the binned heads: a cross entropy against the value's target bins).

        Args:
            params: ``(..., c, 2)``.
            value: ``(..., c)``.

        Returns:
            ``(..., c)``.
        """
        return -self.log_prob(params, value)

    def mode(self, params: Tensor) -> Tensor:
        """The most likely value (what ``temperature=0`` samples), clipped.

        Args:
            params: ``(..., c, 2)``.

        Returns:
            ``(..., c)``.
        """
        return self.clip_sampled(self.dist(params).mode)

    def tempered_sample(self, params: Tensor, temperature: float, differentiable: bool = False) -> Tensor:
        """A sample at a temperature other than 0 and 1, before ``clip_sampled``;
        override it to define one (without, the readout samples at 1 and warns).

        Args:
            params: ``(..., c, 2)``.
            temperature: ``> 0`` and ``!= 1``.
            differentiable: reparameterised.

        Returns:
            ``(..., c)``.

        Raises:
            NotImplementedError: in this base class.
        """
        raise NotImplementedError(f'{type(self).__name__} defines no sampling temperature other than 0 (mode) and 1')

    def sample(self, params: Tensor, temperature: float = 1.0, differentiable: bool = False) -> Tensor:
        """``mode`` at temperature <= 0, ``forward`` at 1, else ``tempered_sample``; clipped.

        Args:
            params: ``(..., c, 2)``.
            temperature: how spread out the sample is (a real number).
            differentiable: reparameterised (no effect at temperature <= 0).

        Returns:
            ``(..., c)`` in the native range.
        """
        temperature = check_temperature(temperature)
        if temperature <= 0:
            return self.mode(params)
        sampled = self(params, differentiable) if temperature == 1 else self.tempered_sample(params, temperature, differentiable)
        return self.clip_sampled(sampled)

    def sample_and_log_prob(self, params: Tensor, temperature: float = 1.0, differentiable: bool = False) -> tuple[Tensor, Tensor]:
        """A sample and its log-density under ``params`` (not the tempered one).

        Args:
            params: ``(..., c, 2)``.
            temperature: as in ``sample``.
            differentiable: as in ``sample``.

        Returns:
            ``(sample, log_prob)``, each ``(..., c)``, in native units.
        """
        sampled = self.sample(params, temperature, differentiable)
        return sampled, self.log_prob(params, sampled)
