"""The methods of ``Readout`` that turn its outputs into a distribution and use
it (a mixin of it): ``dist`` parses the outputs once into a ``ReadoutDistribution``,
and ``sample``, ``mode``, ``log_prob``, ``entropy``, ``kl_div`` and ``get_dist`` are
each one call on it."""

# g - discrete groups, c - continuous dims

from __future__ import annotations

from ._options import check_temperature
from ._utils import exists, first_tensor, identity
from .heads.gaussian import Gaussian, SquashedGaussian
from .readout_distribution import DistConfig, ReadoutDistribution

__all__ = ['DistributionMethods']


class DistributionMethods:
    """``dist`` and the methods that use it (see the module docstring)."""

    def dist(self, outputs, *, selector_index=None, selector_config=None, action_mask=None, rescale_range=None,
             override_range: bool = False) -> ReadoutDistribution:  # fmt: skip
        """The distribution ``outputs`` (what ``forward`` returns) define, parsed and
        checked once: sample, mode, log-prob, entropy, KL, loss and
        ``torch.distributions`` views are its methods (see ``ReadoutDistribution``).

        Args:
            outputs: logits, params or a pair (``dist`` in the class docstring).
            selector_index: a registered selector (see the class docstring).
            selector_config: a selector config for this call only.
            action_mask: bool, True = allowed (see the class docstring).
            rescale_range: ``(lo, hi)`` of the continuous values (see the class docstring).
            override_range: see the class docstring.

        Returns:
            a ``ReadoutDistribution``.
        """
        return self._dist(outputs, selector_index, selector_config, action_mask, rescale_range, 'outputs', override_range)

    def _dist(self, outputs, selector_index, selector_config, action_mask, rescale_range, name: str, override_range: bool = False) -> ReadoutDistribution:
        device = first_tensor(outputs).device if selector_config is not None else None  # where a runtime selector's indices go
        selector = self._selector(selector_index, selector_config, device)
        return ReadoutDistribution(outputs, selector, DistConfig.of(self), action_mask=action_mask, rescale_range=rescale_range, name=name,
                                   override_range=override_range)  # fmt: skip

    def sample(self, dist, temperature: float = 1.0, differentiable: bool = False, selector_index=None, selector_config=None,
               rescale_range=None, *, filter_fn=identity, filter_kwargs: dict | None = None, generator=None,
               action_mask=None, hard: bool = True, return_log_prob: bool = False, override_range: bool = False):  # fmt: skip
        """Draw from ``dist``: ``self.dist(dist, ...).sample(...)`` (see
        [`ReadoutDistribution.sample`][] for what each option does per head).

        Args:
            dist: what ``forward`` returns (see the class docstring).
            temperature: see [`ReadoutDistribution.sample`][].
            differentiable: see [`ReadoutDistribution.sample`][].
            selector_index: a registered selector (see the class docstring).
            selector_config: a selector config for this call only.
            rescale_range: ``(lo, hi)`` of the continuous values (see the class docstring).
            filter_fn: see [`ReadoutDistribution.sample`][].
            filter_kwargs: see [`ReadoutDistribution.sample`][].
            generator: see [`ReadoutDistribution.sample`][].
            action_mask: bool, True = allowed (see the class docstring).
            hard: see [`ReadoutDistribution.sample`][].
            return_log_prob: see [`ReadoutDistribution.sample`][].
            override_range: see the class docstring.

        Returns:
            ids ``(...)`` (one group, ``auto_squeeze_single_output``) or ``(..., G)``
            (``differentiable``: one-hots concatenated ``(..., sum n_g)``); values
            ``(..., c)`` in original units (or ``continuous_range``'s / ``rescale_range``'s);
            a pair for both parts; with ``return_log_prob``, ``(sample, log_prob)``.
        """
        temperature = check_temperature(temperature)
        return self._dist(dist, selector_index, selector_config, action_mask, rescale_range, 'dist', override_range).sample(
            temperature, differentiable, filter_fn=filter_fn, filter_kwargs=filter_kwargs, generator=generator, hard=hard, return_log_prob=return_log_prob,
        )  # fmt: skip

    def mode(self, dist, selector_index=None, selector_config=None, rescale_range=None, *, action_mask=None, override_range: bool = False):
        """The deterministic action, ``sample(dist, temperature=0.)``: argmax
        (discrete); gaussian mean, squashed ``tanh(mean)``, beta / kumaraswamy mode
        where unique and inside (0, 1), else their mean (continuous).

        Args:
            dist: what ``forward`` returns (see the class docstring).
            selector_index: a registered selector (see the class docstring).
            selector_config: a selector config for this call only.
            rescale_range: ``(lo, hi)`` of the continuous values (see the class docstring).
            action_mask: bool, True = allowed (see the class docstring).
            override_range: see the class docstring.

        Returns:
            ids ``(...)`` / ``(..., G)``, values ``(..., c)``, or a pair.
        """
        return self._dist(dist, selector_index, selector_config, action_mask, rescale_range, 'dist', override_range).mode()

    def log_prob(self, dist, sampled, selector_index=None, selector_config=None, concat: bool = False, *, action_mask=None, rescale_range=None,
                 soft_validate_range: bool = False, override_range: bool = False):  # fmt: skip
        """Log-probability of ``sampled`` under ``dist``: ids ``(...)`` / ``(..., G)``
        (``ignore_index`` gives 0, disallowed actions ``-inf``), values ``(..., c)``
        in original units (or ``continuous_range``'s / ``rescale_range``'s), or a pair;
        continuous densities are in the values' units.

        Args:
            dist: what ``forward`` returns (see the class docstring).
            sampled: what to score: ids, values or a pair; a leading shape that
                broadcasts with ``dist``'s is scored over the broadcast shape (as
                ``torch.distributions``; the group / dim axis must match).
            selector_index: a registered selector (see the class docstring).
            selector_config: a selector config for this call only.
            concat: join the parts of a pair along the last axis.
            action_mask: bool, True = allowed (see the class docstring).
            rescale_range: ``(lo, hi)`` of the continuous values (see the class docstring).
            soft_validate_range: clamp values ``eps`` inside a bounded head's native
                range first (0.2.10's option); otherwise a value outside the support
                is a ``ValueError`` (``-inf`` with content checks off).
            override_range: see the class docstring.

        Returns:
            ``(...)`` / ``(..., G)``, ``(..., c)``, a pair, or with ``concat`` ``(..., G + c)``.
        """
        dist = self._dist(dist, selector_index, selector_config, action_mask, rescale_range, 'dist', override_range)
        return dist.log_prob(sampled, concat=concat, soft_validate_range=soft_validate_range)

    def entropy(self, dist, selector_index=None, selector_config=None, concat: bool = False, *, action_mask=None,
                squashed_entropy_samples: int | None = None, rescale_range=None, override_range: bool = False):  # fmt: skip
        """Entropy per group (over allowed actions) and per dim (in the user's
        units). The squashed gaussian's is that of its pre-tanh gaussian (as 0.2.7);
        ``squashed_entropy_samples=n`` gives a Monte-Carlo estimate of the squashed
        variable's own from ``n`` draws.

        Args:
            dist: what ``forward`` returns (see the class docstring).
            selector_index: a registered selector (see the class docstring).
            selector_config: a selector config for this call only.
            concat: join the parts of a pair along the last axis.
            action_mask: bool, True = allowed (see the class docstring).
            rescale_range: ``(lo, hi)`` of the continuous values (see the class docstring).
            squashed_entropy_samples: a positive int (squashed readouts only).
            override_range: see the class docstring.

        Returns:
            ``(...)`` / ``(..., G)``, ``(..., c)``, a pair, or with ``concat`` ``(..., G + c)``.
        """
        dist = self._dist(dist, selector_index, selector_config, action_mask, rescale_range, 'dist', override_range)
        return dist.entropy(concat=concat, squashed_entropy_samples=squashed_entropy_samples)

    def kl_div(self, dist_true, dist_pred, selector_index=None, selector_config=None, concat: bool = False, *, action_mask=None):
        """KL(true || pred) per group and per dim.

        Args:
            dist_true: what ``forward`` returns, for the true distribution.
            dist_pred: the predicted one, of the same shapes.
            selector_index: a registered selector (see the class docstring).
            selector_config: a selector config for this call only.
            concat: join the parts of a pair along the last axis.
            action_mask: applied to both.

        Returns:
            ``(...)`` / ``(..., G)``, ``(..., c)``, a pair, or with ``concat`` ``(..., G + c)``.
        """
        true = self._dist(dist_true, selector_index, selector_config, action_mask, None, 'dist_true')
        return true.kl_div(self._dist(dist_pred, selector_index, selector_config, action_mask, None, 'dist_pred'), concat=concat)

    def get_dist(self, dist_params, *, action_mask=None, selector_index=None, selector_config=None, rescale_range=None, composite: bool = False,
                 override_range: bool = False):  # fmt: skip
        """``torch.distributions`` views of ``dist_params`` (see
        ``ReadoutDistribution.get_dist``), e.g. for tensordict's
        ``ProbabilisticTensorDictModule(..., distribution_class=readout.get_dist)``.

        Args:
            dist_params: what ``forward`` returns (see the class docstring).
            action_mask: bool, True = allowed (see the class docstring).
            selector_index: a registered selector (see the class docstring).
            selector_config: a selector config for this call only.
            rescale_range: ``(lo, hi)`` of the continuous values (see the class docstring).
            composite: for a mixed readout, one ``CompositeActionDistribution`` (TorchRL's
                composite interface; needs tensordict) instead of the pair.
            override_range: see the class docstring.

        Returns:
            a ``torch.distributions.Distribution`` with batch shape ``(...)``, or a pair
            of them, or with ``composite`` a ``CompositeActionDistribution``.
        """
        if composite:
            from .rl.composite import CompositeActionDistribution  # tensordict is optional

            logits, params = dist_params if isinstance(dist_params, tuple) and len(dist_params) == 2 else (dist_params, None)
            return CompositeActionDistribution(logits, params, readout=self, action_mask=action_mask, rescale_range=rescale_range,
                                               selector_index=selector_index, selector_config=selector_config, override_range=override_range)  # fmt: skip
        return self._dist(dist_params, selector_index, selector_config, action_mask, rescale_range, 'dist_params', override_range).get_dist()

    def _check_squashable(self) -> None:
        if exists(self.continuous_dist) and type(self.continuous_dist) not in (Gaussian, SquashedGaussian):
            raise ValueError(f'continuous_squashed=True needs a gaussian head, this readout has {type(self.continuous_dist).__name__}')
