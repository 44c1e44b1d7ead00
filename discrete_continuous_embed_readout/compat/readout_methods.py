"""The Readout methods named as in 0.2.x that the new API has no twin for: each
is one call on a ``ReadoutDistribution`` (``Readout.dist``), restricted to one
part. ``selector`` arguments take what ``get_selector`` /
``create_discrete_continuous_selector`` return (``None``: the default selector).
Mixed into ``Readout``; uses only its distribution builder."""

# g - discrete groups, c - continuous dims

from __future__ import annotations

from torch import Tensor

from .._options import check_temperature
from .._selectors import Selector
from .._utils import DiscreteContinuous, exists, identity, maybe_concat
from ..heads.categorical import MultiCategorical
from ..heads.categorical_ops import unimix_logits
from ..heads.part import ContinuousPart, head_for
from ..heads.units import rescale_map
from ..readout_distribution import DistConfig, ReadoutDistribution
from .selectors import DiscreteContinuousSelector
from .table_methods import SelectorCompat


class ReadoutCompat(SelectorCompat):
    """0.2.x methods of ``Readout`` (see the module docstring), with the 0.2.x selector API."""

    def sample_discrete(self, discrete_logits, temperature: float = 1.0, differentiable: bool = False, filter_fn=identity,
                        filter_kwargs: dict | None = None, *, selector_index=None, selector_config=None, generator=None,
                        action_mask=None, hard: bool = True):  # fmt: skip
        """``sample`` of discrete logits only, also on a mixed readout.

        Args:
            discrete_logits: ``(..., n)``, a tuple of ``(..., n_g)`` or their concatenation.
            temperature: as in ``sample``.
            differentiable: as in ``sample``.
            filter_fn: as in ``sample``.
            filter_kwargs: as in ``sample``.
            selector_index: a registered selector (see the ``Readout`` docstring).
            selector_config: a selector config for this call only.
            generator: as in ``sample``.
            action_mask: bool, True = allowed (see the ``Readout`` docstring).
            hard: as in ``sample``.

        Returns:
            ids ``(...)`` / ``(..., G)``, or one-hots ``(..., sum n_g)`` with ``differentiable``.
        """
        temperature = check_temperature(temperature)
        dist = self._dist(DiscreteContinuous(discrete_logits, None), selector_index, selector_config, action_mask, None, 'discrete_logits')
        out = dist.sample(temperature, differentiable, filter_fn=filter_fn, filter_kwargs=filter_kwargs, generator=generator, hard=hard)
        return out.discrete if isinstance(out, DiscreteContinuous) else out

    def sample_continuous(self, continuous_dist_params, temperature: float = 1.0, differentiable: bool = False, selector=None, rescale_range=None):
        """``sample`` of the continuous part only.

        Args:
            continuous_dist_params: ``(..., c, 2)`` (``(..., c)`` in regression mode).
            temperature: as in ``sample``.
            differentiable: as in ``sample``.
            selector: from ``get_selector`` (``None``: the default selector).
            rescale_range: as in ``sample``.

        Returns:
            ``(..., c)`` in original units (or in ``rescale_range``).
        """
        temperature = check_temperature(temperature)
        return self._continuous_part(continuous_dist_params, selector, 'continuous_dist_params', rescale_range).sample(temperature, differentiable)[0]

    def log_prob_discrete(self, discrete_logits, sampled) -> Tensor:
        """``MultiCategorical(discrete_logits).log_prob(sampled)`` with this readout's
        ``ignore_index`` and path.

        Args:
            discrete_logits: a tensor ``(..., n)`` or a sequence of ``(..., n_g)``.
            sampled: ids ``(...)`` (``(..., 1)`` also taken) / ``(..., g)``.

        Returns:
            ``(...)`` for a tensor, ``(..., g)`` for a sequence.
        """
        return MultiCategorical(self._unimixed(discrete_logits), self.use_parallel_multi_discrete, self.ignore_index)._checked_log_prob(sampled, 'sampled', 'readout')

    def log_prob_continuous(self, continuous_dist_params, sampled, selector=None, soft_validate_range: bool = False) -> Tensor:
        """``log_prob`` of the continuous part only.

        Args:
            continuous_dist_params: ``(..., c, 2)``.
            sampled: ``(..., c)`` in original units.
            selector: from ``get_selector`` (``None``: the default selector).
            soft_validate_range: as in ``log_prob``.

        Returns:
            ``(..., c)``. Values outside a bounded head's support are clamped into
            it and scored there, as 0.2.x did, with a warning the first time
            (``log_prob`` raises instead).
        """
        part = self._continuous_part(continuous_dist_params, selector, 'continuous_dist_params', what='log_prob_continuous')
        return part.log_prob(sampled, 'sampled', soft_validate_range, legacy=True)

    def entropy_discrete(self, discrete_logits) -> Tensor:
        """``MultiCategorical(discrete_logits).entropy()``.

        Args:
            discrete_logits: a tensor ``(..., n)`` or a sequence of ``(..., n_g)``.

        Returns:
            ``(...)`` for a tensor, ``(..., g)`` for a sequence.
        """
        return MultiCategorical(self._unimixed(discrete_logits), self.use_parallel_multi_discrete, self.ignore_index).entropy()

    def entropy_continuous(self, continuous_dist_params, selector=None) -> Tensor:
        """``entropy`` of the continuous part only (original units).

        Args:
            continuous_dist_params: ``(..., c, 2)``.
            selector: from ``get_selector`` (``None``: the default selector).

        Returns:
            ``(..., c)``.
        """
        return self._continuous_part(continuous_dist_params, selector, 'continuous_dist_params', what='entropy_continuous').entropy()

    def kl_div_discrete(self, discrete_logits_true, discrete_logits_pred) -> Tensor:
        """KL(true || pred) of two ``MultiCategorical`` objects.

        Args:
            discrete_logits_true: a tensor ``(..., n)`` or a sequence of ``(..., n_g)``.
            discrete_logits_pred: the same shapes.

        Returns:
            ``(...)`` for a tensor, ``(..., g)`` for a sequence.
        """
        true, pred = (MultiCategorical(self._unimixed(d), self.use_parallel_multi_discrete, self.ignore_index) for d in (discrete_logits_true, discrete_logits_pred))
        return true.kl_div(pred)

    def kl_div_continuous(self, continuous_dist_params_true, continuous_dist_params_pred, selector=None) -> Tensor:
        """``kl_div`` of the continuous part only.

        Args:
            continuous_dist_params_true: ``(..., c, 2)``.
            continuous_dist_params_pred: ``(..., c, 2)``.
            selector: from ``get_selector`` (``None``: the default selector).

        Returns:
            ``(..., c)``.
        """
        true = self._continuous_part(continuous_dist_params_true, selector, 'continuous_dist_params_true', what='kl_div_continuous')
        return true.kl_div(self._continuous_part(continuous_dist_params_pred, selector, 'continuous_dist_params_pred'))

    def _unimixed(self, logits):
        """0.2.x logits (a tensor or a sequence) with the readout's unimix applied."""
        if not self.unimix:
            return logits
        return unimix_logits(logits, self.unimix) if isinstance(logits, Tensor) else [unimix_logits(g, self.unimix) for g in logits]

    def _continuous_part(self, params, selector, name: str, rescale_range=None, what: str | None = None) -> ContinuousPart:
        """The continuous part of ``params`` under a 0.2.x selector object. Without
        a normaliser or bound units the default selector's params may cover any
        number of dims (0.2.x's heads act per dim, and users pass subsets of their
        action dims)."""
        selector = self._compat_selector(selector, params)
        per_dim = self.can_norm_continuous or self.continuous_range is not None
        lenient = self.continuous_log_var_embed and not per_dim and selector is self.default_selector
        c = params.shape[-2] if lenient and isinstance(params, Tensor) and params.ndim >= 2 else None
        outputs = DiscreteContinuous(None, params)
        part = ReadoutDistribution(outputs, selector, DistConfig.of(self), rescale_range=rescale_range, name=name, num_continuous=c).continuous
        if exists(what):
            part.require_distribution(what)
        return part

    def _compat_selector(self, selector, like) -> Selector:
        if selector is None:
            selector = self._selector(None, None, self._device())
        elif isinstance(selector, DiscreteContinuousSelector):
            if selector._owner.layout != self.layout:
                raise ValueError(f'selector belongs to a module with another table layout ({selector._owner.layout}), not this one ({self.layout})')
            selector = selector.selector
        elif not isinstance(selector, Selector):
            raise TypeError(f'selector must be what get_selector() returns (or None), got {type(selector).__name__}')
        if not selector.has_continuous:
            raise ValueError('this selector has no continuous part')
        if not isinstance(like, Tensor) or selector.group_sizes_t.device == like.device or selector in self.selectors or selector is self.default_selector:
            return selector
        return self._cached_selector(selector.parsed, like.device, selector.squashed)  # index tables on the params' device

    def maybe_concat(self, output, concat: bool = False):
        """With ``concat``, join a (discrete, continuous) pair of per-entry results
        along the last axis ``(..., G + c)`` (a squeezed single group counts as one
        column) in the continuous part's dtype; else ``output`` unchanged.

        Args:
            output: a tensor or a pair of per-entry results (log-probs, entropies, KL).
            concat: join.

        Returns:
            ``output``, the part that is not ``None``, or ``(..., G + c)``.
        """
        return maybe_concat(output, concat)

    # continuous ranges

    def get_continuous_native_range(self, selector_index=None, selector_config=None) -> tuple[float, float] | None:
        """The range of raw continuous samples (the head's native range).

        Args:
            selector_index: a registered selector (see the ``Readout`` docstring).
            selector_config: a selector config for this call only.

        Returns:
            ``(0, 1)`` beta / kumaraswamy, ``(-1, 1)`` squashed; ``None`` for an
            unbounded gaussian or without a continuous part.
        """
        return self._native_range(self._selector(selector_index, selector_config, self._device()))

    def _native_range(self, selector: Selector) -> tuple[float, float] | None:
        return head_for(self.continuous_dist, selector.squashed).default_range if exists(self.continuous_dist) else None

    def rescale_from_native(self, t: Tensor, target_range, selector_index=None, selector_config=None) -> Tensor:
        """Map ``t`` linearly from the native range to ``target_range``.

        Args:
            t: ``(..., c)`` values in the native range.
            target_range: ``(lo, hi)``: numbers, or per-dim sequences / tensors.
            selector_index: a registered selector (see the ``Readout`` docstring).
            selector_config: a selector config for this call only.

        Returns:
            ``(..., c)`` in ``target_range``.

        Raises:
            ValueError: no native range (an unbounded gaussian), or invalid bounds.
        """
        selector = self._selector(selector_index, selector_config, t.device)
        return rescale_map(self._native_range(selector), target_range, 'target_range', t)(t)

    def rescale_to_native(self, t: Tensor, source_range, selector_index=None, selector_config=None) -> Tensor:
        """The inverse of ``rescale_from_native``.

        Args:
            t: ``(..., c)`` values in ``source_range``.
            source_range: ``(lo, hi)``: numbers or per-dim bounds.
            selector_index: a registered selector (see the ``Readout`` docstring).
            selector_config: a selector config for this call only.

        Returns:
            ``(..., c)`` in the native range.
        """
        selector = self._selector(selector_index, selector_config, t.device)
        return rescale_map(self._native_range(selector), source_range, 'source_range', t).inv(t)
