"""What a Readout does with logits / params: sample, mode, log_prob, entropy,
kl_div, get_dist, and the continuous range helpers. Mixed into ``Readout``."""

# g - discrete groups, c - continuous dims

from __future__ import annotations

import warnings
from contextlib import contextmanager, nullcontext

import torch
from torch import Tensor
from torch.distributions import Categorical

from . import _parts
from ._checks import check_temperature
from ._units import UnitMap, inside_bounds, rescale_map, rounding_in_native, score
from ._utils import default, exists, identity
from .distributions import SquashedGaussian
from .multi_categorical import upcast, zero_where_impossible
from .policy_distributions import MultiCategoricalDistribution, continuous_distribution


@contextmanager
def _rng_from(generator: torch.Generator, device: torch.device):
    """Run under the global RNG seeded from ``generator`` and restored afterwards:
    continuous heads (torch's samplers, users' ``forward``) take no generator."""
    seed = int(torch.randint(0, 2**62, (), generator=generator, device=generator.device))
    devices = [device] if device.type != 'cpu' else []
    with torch.random.fork_rng(devices=devices, device_type=device.type if devices else 'cuda'):
        torch.manual_seed(seed)
        yield


def _honoured_temperature(head, temperature: float) -> float:
    """The temperature ``head`` samples at: ``temperature`` itself where the head
    defines it (0 and 1 always), else 1, with a warning the first time (0.2.x
    ignored continuous temperatures, so code written for it must not fail)."""
    if temperature <= 0 or temperature == 1 or head.supports_temperature:
        return temperature
    if not getattr(head, '_warned_temperature', False):
        head._warned_temperature = True
        warnings.warn(
            f'{type(head).__name__} defines no sampling temperature other than 0 (its mode) and 1: '
            f'temperature={temperature} is ignored for the continuous part (sampled at 1), as 0.2.x did',
            UserWarning, stacklevel=4,
        )  # fmt: skip
    return 1.0


class DistributionMethods:
    """Readout methods on distributions (see ``Readout``)."""

    # sampling

    def sample(
        self, dist, temperature: float = 1.0, differentiable: bool = False, selector_index=None, selector_config=None,
        rescale_range=None, *, filter_fn=identity, filter_kwargs: dict | None = None, generator=None,
        action_mask=None, hard: bool = True, return_log_prob: bool = False,
    ):  # fmt: skip
        """Draw from the distribution(s) ``dist`` (what ``forward`` returns).

        Args:
            dist: logits ``(..., n)``, per-group logits ``(..., n_g)`` (a tuple, or
                concatenated ``(..., sum n_g)``), params ``(..., c, 2)``
                (``(..., c)`` in regression mode), or a ``(discrete, continuous)``
                pair (``None`` for a part left out).
            temperature: discrete: divides the logits; continuous: scales the std
                (gaussian, squashed: of the pre-tanh gaussian; beta: concentrations
                divided by ``temperature**2``; kumaraswamy: 0 and 1 only, others sample at 1 with a warning). ``<= 0``
                gives the mode (``mode``). Applies to both parts of a mixed readout;
                ignored in regression mode (the prediction is returned).
            differentiable: straight-through Gumbel-softmax one-hots (discrete),
                reparameterised samples (continuous).
            selector_index: a registered selector.
            selector_config: a selector config for this call only.
            rescale_range: ``(lo, hi)``: map continuous samples linearly from the
                native range (beta/kumaraswamy ``(0, 1)``, squashed ``(-1, 1)``) to
                ``(lo, hi)``; ``lo`` and ``hi`` are numbers or 1-D sequences /
                tensors with one entry per continuous dim (a gymnasium ``Box``'s
                ``low`` and ``high``), finite, ``lo < hi`` in every dim. It replaces
                de-normalisation: samples lie in ``(lo, hi)`` with or without
                ``continuous_mean_std``.
            filter_fn, filter_kwargs: applied to each group's logits first.
            generator: a ``torch.Generator``: the same generator state gives the
                same samples (discrete noise is drawn from it; continuous heads
                sample under the global RNG seeded from it, which is restored).
            action_mask: bool, True = allowed: ``(..., n)``, ``(..., sum n_g)`` or one
                mask per group. Disallowed actions are never drawn.
            hard: with ``differentiable``, the straight-through one-hot (True) or the
                soft relaxed (Concrete / Gumbel-softmax) sample on the simplex (False).
            return_log_prob: also return the log-prob of the sample under ``dist``
                (the untempered distribution): exactly ``log_prob(dist, sample)`` of
                the sample returned; with ``differentiable``, its gradient is the
                reparameterised one (through the pre-tanh draw when squashed).

        Returns:
            ids ``(...)`` (one group, ``auto_squeeze_single_output``) or ``(..., G)``;
            with ``differentiable``, the groups' one-hots concatenated
            ``(..., sum n_g)``; values ``(..., c)`` in original units (or in
            ``rescale_range``); a ``DiscreteContinuous`` pair when both parts are
            sampled. With ``return_log_prob``, ``(sample, log_prob)``, the log-probs
            shaped as ``log_prob`` returns them.

        Raises:
            TypeError: ``temperature`` is not a number.
            ValueError: ``temperature`` NaN or infinite; ``rescale_range`` for an
                unbounded gaussian; ``return_log_prob`` in regression mode or with
                ``hard=False`` relaxed samples.

        Warns:
            UserWarning: once per head, a temperature the head does not define
                (kumaraswamy: other than 0 and 1): it samples at 1, as 0.2.x did.
        """
        check_temperature(temperature)
        selector = self._selector(selector_index, selector_config, _parts.first_tensor(dist).device)
        groups, params = self._parts(dist, selector, action_mask=action_mask)
        d = d_lp = c = c_lp = None
        if exists(groups):
            d, d_lp = self._sample_groups(groups, selector, temperature, differentiable, filter_fn, filter_kwargs, generator, hard, return_log_prob)
        if exists(params):
            with _rng_from(generator, params.device) if exists(generator) else nullcontext():
                c, c_lp = self._sample_continuous(params, selector, temperature, differentiable, rescale_range, return_log_prob)
        sampled = self._result(d, c, selector)
        return (sampled, self._result(d_lp, c_lp, selector)) if return_log_prob else sampled

    def mode(self, dist, selector_index=None, selector_config=None, rescale_range=None, *, action_mask=None):
        """The deterministic action: argmax (discrete); gaussian mean, squashed
        ``tanh(mean)``, beta / kumaraswamy mode where it is unique and inside (0, 1),
        else their mean (continuous); mapped to your units like samples. The
        same as ``sample(dist, temperature=0.)``.

        Args:
            dist: logits, params or a pair, as in ``sample``.
            selector_index: a registered selector.
            selector_config: a selector config for this call only.
            rescale_range: ``(lo, hi)`` for continuous values, as in ``sample``.
            action_mask: bool, True = allowed, as in ``sample``.

        Returns:
            ids ``(...)`` / ``(..., G)``, values ``(..., c)``, or a pair.
        """
        return self.sample(dist, 0.0, False, selector_index, selector_config, rescale_range, action_mask=action_mask)

    def sample_discrete(self, discrete_logits, temperature: float = 1.0, differentiable: bool = False, filter_fn=identity,
                        filter_kwargs: dict | None = None, *, selector_index=None, selector_config=None, generator=None,
                        action_mask=None, hard: bool = True):  # fmt: skip
        """Sample ids from discrete logits only (``filter_fn`` e.g. top-k first).

        Args:
            discrete_logits: ``(..., n)``, a tuple of ``(..., n_g)``, or their
                concatenation ``(..., sum n_g)``.
            temperature: divides the logits; ``<= 0`` gives the argmax.
            differentiable: straight-through Gumbel-softmax one-hots instead of ids.
            filter_fn, filter_kwargs: applied to each group's logits first, as
                ``filter_fn(logits, **filter_kwargs)``.
            selector_index: a registered selector.
            selector_config: a selector config for this call only.
            generator: a ``torch.Generator`` for the noise.
            action_mask: bool, True = allowed, as in ``sample``.
            hard: with ``differentiable``, the one-hot (True) or the relaxed sample (False).

        Returns:
            ids ``(...)`` / ``(..., G)``, or with ``differentiable`` the groups'
            one-hots concatenated ``(..., sum n_g)``.
        """
        check_temperature(temperature)
        selector = self._selector(selector_index, selector_config, _parts.first_tensor(discrete_logits).device)
        groups = self._masked(_parts.logit_groups(discrete_logits, selector, 'discrete_logits'), action_mask, selector)
        return self._sample_groups(groups, selector, temperature, differentiable, filter_fn, filter_kwargs, generator, hard, False)[0]

    def _sample_groups(self, groups, selector, temperature, differentiable, filter_fn, filter_kwargs, generator, hard, with_log_prob):
        categorical = self._categorical(groups)
        out = categorical.sample(temperature, differentiable, filter_fn=filter_fn, filter_kwargs=filter_kwargs, generator=generator, hard=hard)
        if not with_log_prob:
            return (out if differentiable else self._squeezed(out, selector)), None
        if not differentiable:
            return self._squeezed(out, selector), self._squeezed(categorical._log_prob(out, 'sampled'), selector)
        if not hard:
            raise ValueError('return_log_prob=True needs hard samples: a relaxed (hard=False) sample has no categorical log-prob')
        # straight-through: the log-prob of the drawn one-hot, differentiable through it
        one_hots = out.split(categorical.sizes, dim=-1)
        log_probs = [(h * zero_where_impossible(upcast(g).log_softmax(-1))).sum(-1) for h, g in zip(one_hots, groups)]
        return out, self._squeezed(torch.stack(log_probs, dim=-1), selector)

    def _sample_continuous(self, params, selector, temperature, differentiable, rescale_range, with_log_prob):
        """Samples in the user's units and the parameters' dtype (drawn in float32),
        with their log-prob: the value of ``log_prob`` of the returned sample
        (re-scored through the same units map, so a PPO ratio at unchanged
        parameters is exactly 1); with ``differentiable``, the gradient of the
        head's reparameterised log-prob (the pre-tanh one for a squashed gaussian)."""
        dtype, params = params.dtype, upcast(params)
        units = self._units(selector, rescale_range, params)
        if not self.continuous_log_var_embed:
            if with_log_prob:
                self._require_distribution('return_log_prob')
            return units.to_user(params).to(dtype), None  # regression: the prediction itself
        head = self._head(selector)
        temperature = _honoured_temperature(head, temperature)
        head_log_prob = None
        if with_log_prob and differentiable:
            native, head_log_prob = head.sample_and_log_prob(params, temperature, differentiable)
        else:
            native = head.sample(params, temperature, differentiable)
        sampled = inside_bounds(units.to_user(native).to(dtype), head, units)
        if not with_log_prob:
            return sampled, None
        log_prob = score(head, params, units.to_native(upcast(sampled)), units, 'sampled', rounding=rounding_in_native(sampled, units))
        if exists(head_log_prob):
            head_log_prob = head_log_prob - units.log_scale()
            log_prob = head_log_prob + (log_prob - head_log_prob).detach()
        return sampled, log_prob

    def _units(self, selector, rescale_range, ref: Tensor) -> UnitMap:
        """Native to user units for a selector's dims (see ``_units.py``); per-dim
        bounds take ``ref``'s dtype and device."""
        if exists(rescale_range):
            like = ref.new_empty((selector.num_continuous,))
            return rescale_map(self._native_range_of(selector), rescale_range, 'rescale_range', like)
        if self.can_norm_continuous:
            return UnitMap(*self.mean_std(selector))
        return UnitMap()

    # log-probs, entropies, KL

    def log_prob(self, dist, sampled, selector_index=None, selector_config=None, concat: bool = False, *, action_mask=None, rescale_range=None,
                 soft_validate_range: bool = False):  # fmt: skip
        """Log-probability of ``sampled`` under ``dist``.

        Continuous log-densities are in the units of ``sampled``: they include the
        ``-log(std)`` of de-normalisation, or with ``rescale_range`` the ``-log`` of
        its scale. A value outside a bounded head's support is a ``ValueError``
        (``-inf`` with content checks off).

        Args:
            dist: logits, params or a pair, as in ``sample``.
            sampled: ids ``(...)`` / ``(..., G)``; values ``(..., c)`` in original
                units, or in ``rescale_range`` units if given; or a pair. Ids equal
                to ``ignore_index`` give 0, disallowed actions ``-inf``.
            selector_index: a registered selector.
            selector_config: a selector config for this call only.
            concat: join the parts of a pair along the last axis (``maybe_concat``).
            action_mask: bool, True = allowed, as in ``sample``.
            rescale_range: the ``(lo, hi)`` the values were sampled into, as in
                ``sample``.
            soft_validate_range: clamp continuous values (normalised, native
                units) into the head's native range, ``eps`` inside its bounds,
                before scoring (0.2.10's option; bounded heads only).

        Returns:
            ``(...)`` / ``(..., G)`` (discrete), ``(..., c)`` (continuous), a pair,
            or with ``concat`` ``(..., G + c)``.

        Raises:
            IndexError: an id out of its group's range (content checks on).
            ValueError: a continuous part in regression mode, or
                ``rescale_range`` for an unbounded gaussian.
        """
        selector = self._selector(selector_index, selector_config, _parts.first_tensor(dist).device)
        groups, params = self._parts(dist, selector, action_mask=action_mask)
        d_value, c_value = _parts.split_pair(sampled, selector, 'sampled')
        d = c = None
        if exists(groups) and exists(d_value):
            values = _parts.discrete_values(d_value, selector, groups[0].shape[:-1], self._squeeze(selector), 'sampled')
            d = self._squeezed(self._categorical(groups)._log_prob(values, 'sampled', self._squeeze(selector)), selector, concat)
        if exists(params) and exists(c_value):
            self._require_distribution('log_prob')
            c_value = _parts.continuous_values(c_value, self._params_batch(params), selector.num_continuous, 'sampled')
            c = self._continuous_log_prob(params, c_value, selector, 'sampled', rescale_range, soft_validate_range)
        return self.maybe_concat(self._result(d, c, selector), concat)

    def _continuous_log_prob(self, params, values, selector, name: str, rescale_range=None, soft_validate_range: bool = False, legacy: bool = False):
        units = self._units(selector, rescale_range, values)
        rounding = rounding_in_native(values, units)
        params, values = upcast(params), upcast(values)
        return score(self._head(selector), params, units.to_native(values), units, name, soft_validate_range, self.eps, rounding, legacy)

    def entropy(self, dist, selector_index=None, selector_config=None, concat: bool = False, *, action_mask=None,
                squashed_entropy_samples: int | None = None, rescale_range=None):  # fmt: skip
        """Entropy per group ``(...)`` / ``(..., G)`` (over allowed actions) and per
        dim ``(..., c)`` (in original units).

        The squashed gaussian's entropy is that of its pre-tanh gaussian (as in
        0.2.7; the squashed variable's has no closed form and is lower by
        ``-E[log(1 - tanh(u)^2)]``). ``squashed_entropy_samples=n`` returns a
        Monte-Carlo estimate of the true squashed entropy from ``n`` draws instead.

        Args:
            dist: logits, params or a pair, as in ``sample``.
            selector_index: a registered selector.
            selector_config: a selector config for this call only.
            concat: join the parts of a pair along the last axis (``maybe_concat``).
            action_mask: bool, True = allowed, as in ``sample``.
            squashed_entropy_samples: a positive int: Monte-Carlo draws for the
                squashed gaussian's entropy (squashed readouts only).
            rescale_range: ``(lo, hi)``: the entropy in those units (``+ log`` of
                the rescale factor), as ``sample`` maps values.

        Returns:
            ``(...)`` / ``(..., G)`` (discrete), ``(..., c)`` (continuous), a pair,
            or with ``concat`` ``(..., G + c)``.

        Raises:
            ValueError: a continuous part in regression mode, or
                ``squashed_entropy_samples`` without a squashed gaussian or not a
                positive int.
        """
        selector = self._selector(selector_index, selector_config, _parts.first_tensor(dist).device)
        groups, params = self._parts(dist, selector, action_mask=action_mask)
        d = self._squeezed(self._categorical(groups).entropy(), selector, concat) if exists(groups) else None
        c = None
        if exists(params):
            self._require_distribution('entropy')
            params = upcast(params)
            c = self._continuous_entropy(self._head(selector), params, squashed_entropy_samples) + self._units(selector, rescale_range, params).log_scale()
        return self.maybe_concat(self._result(d, c, selector), concat)

    def _continuous_entropy(self, head, params, num_samples):
        if not exists(num_samples):
            return head.entropy(params)
        if not isinstance(head, SquashedGaussian):
            raise ValueError('squashed_entropy_samples is for a squashed gaussian (continuous_squashed=True)')
        if isinstance(num_samples, bool) or not isinstance(num_samples, int) or num_samples < 1:
            raise ValueError(f'squashed_entropy_samples must be a positive int, got {num_samples!r}')
        return head.entropy_estimate(params, num_samples)

    def kl_div(self, dist_true, dist_pred, selector_index=None, selector_config=None, concat: bool = False, *, action_mask=None):
        """KL(true || pred) per group and per continuous dim.

        Args:
            dist_true: logits, params or a pair, as in ``sample``.
            dist_pred: the same, with the same shapes.
            selector_index: a registered selector.
            selector_config: a selector config for this call only.
            concat: join the parts of a pair along the last axis (``maybe_concat``).
            action_mask: bool, True = allowed, applied to both distributions.

        Returns:
            ``(...)`` / ``(..., G)`` (discrete), ``(..., c)`` (continuous), a pair,
            or with ``concat`` ``(..., G + c)``.

        Raises:
            ValueError: the two differ in shape, or a continuous part in
                regression mode.
        """
        selector = self._selector(selector_index, selector_config, _parts.first_tensor(dist_true).device)
        groups_t, params_t = self._parts(dist_true, selector, 'dist_true', action_mask)
        groups_p, params_p = self._parts(dist_pred, selector, 'dist_pred', action_mask)
        d = c = None
        if exists(groups_t) and exists(groups_p):
            d = self._squeezed(self._categorical(groups_t).kl_div(self._categorical(groups_p)), selector, concat)
        if exists(params_t) and exists(params_p):
            self._require_distribution('kl_div')
            if params_t.shape != params_p.shape:
                raise ValueError(f'dist_true and dist_pred continuous params differ in shape: {tuple(params_t.shape)} vs {tuple(params_p.shape)}')
            c = self._head(selector).kl_div(upcast(params_t), upcast(params_p))
        return self.maybe_concat(self._result(d, c, selector), concat)

    def maybe_concat(self, output, concat: bool = False):
        """With ``concat``, join a (discrete, continuous) pair along the last
        axis: ``(..., G + c)`` (a squeezed single group counts as one column).

        Args:
            output: a tensor or a ``(discrete, continuous)`` pair of per-entry
                results (log-probs, entropies, KL).
            concat: join; ``False`` returns ``output`` unchanged.

        Returns:
            ``output`` unchanged (no ``concat``, or not a pair); the part that is
            not ``None``; or ``(..., G + c)`` in the continuous part's dtype.
        """
        if not concat or not isinstance(output, tuple):
            return output
        discrete, continuous = output
        if not exists(discrete) or not exists(continuous):
            return default(discrete, continuous)
        if discrete.ndim == continuous.ndim - 1:
            discrete = discrete.unsqueeze(-1)
        return torch.cat((discrete.to(continuous.dtype), continuous), dim=-1)

    # torch.distributions objects

    def get_dist(self, dist_params, *, action_mask=None, selector_index=None, selector_config=None, rescale_range=None):
        """``torch.distributions`` objects for ``dist_params`` (what ``forward`` returns).

        Discrete: ``Categorical`` (one group; masked with ``action_mask``) or a
        ``MultiCategoricalDistribution`` (``event_shape (G,)``). Continuous:
        ``Independent`` over the dims of a ``Normal`` (normalisation folded in), a
        tanh-transformed normal (squashed), ``Beta`` or ``Kumaraswamy`` (affinely
        mapped when normalised or rescaled). Mixed: a ``DiscreteContinuous`` pair.
        Their ``log_prob`` / ``entropy`` sum the readout's over groups / dims;
        ``sample``, ``rsample`` and ``mode`` match the readout's.

        Args:
            dist_params: logits, params or a pair, as in ``sample``.
            action_mask: bool, True = allowed, as in ``sample``.
            selector_index: a registered selector.
            selector_config: a selector config for this call only.
            rescale_range: ``(lo, hi)`` for continuous values, as in ``sample``.

        Returns:
            a ``torch.distributions.Distribution`` with batch shape ``(...)``, or a
            ``DiscreteContinuous`` pair of them.

        Raises:
            ValueError: a continuous part in regression mode, or
                ``rescale_range`` for an unbounded gaussian.

        Example:
            With tensordict::

                ProbabilisticTensorDictModule(in_keys={'dist_params': 'logits'}, out_keys=['action'],
                                              distribution_class=readout.get_dist, return_log_prob=True)
        """
        selector = self._selector(selector_index, selector_config, _parts.first_tensor(dist_params).device)
        groups, params = self._parts(dist_params, selector, 'dist_params', action_mask)
        d = c = None
        if exists(groups):
            single = self._squeeze(selector)
            d = Categorical(logits=upcast(groups[0]), validate_args=False) if single else MultiCategoricalDistribution([upcast(g) for g in groups])
        if exists(params):
            self._require_distribution('get_dist')
            params = upcast(params)
            c = continuous_distribution(self._head(selector), params, self._units(selector, rescale_range, params))
        return self._result(d, c, selector)

    # continuous ranges

    def get_continuous_native_range(self, selector_index=None, selector_config=None) -> tuple[float, float] | None:
        """The range of raw continuous samples (the head's native range).

        Args:
            selector_index: a registered selector.
            selector_config: a selector config for this call only.

        Returns:
            ``(lo, hi)``: ``(0, 1)`` for beta / kumaraswamy, ``(-1, 1)`` squashed;
            ``None`` for an unbounded gaussian or without a continuous part.
        """
        return self._native_range_of(self._selector(selector_index, selector_config, self._device()))

    def _native_range_of(self, selector) -> tuple[float, float] | None:
        return self._head(selector).default_range if exists(self.continuous_dist) else None

    def rescale_from_native(self, t: Tensor, target_range, selector_index=None, selector_config=None) -> Tensor:
        """Map ``t`` (``(..., c)``) linearly from the native range to ``target_range``.

        Args:
            t: values in the native range (beta / kumaraswamy ``(0, 1)``, squashed ``(-1, 1)``).
            target_range: ``(lo, hi)``: numbers, or per-dim sequences / tensors of
                length ``c`` (a gymnasium ``Box``'s ``low`` and ``high``).
            selector_index: a registered selector (its squashing decides the native range).
            selector_config: a selector config for this call only.

        Returns:
            ``(..., c)`` in ``target_range``.

        Raises:
            ValueError: no native range (an unbounded gaussian), or bounds that
                are not finite with ``lo < hi`` or have the wrong length.
            TypeError: the range is not a pair of numbers / 1-D sequences.
        """
        selector = self._selector(selector_index, selector_config, t.device)
        return rescale_map(self._native_range_of(selector), target_range, 'target_range', t).to_user(t)

    def rescale_to_native(self, t: Tensor, source_range, selector_index=None, selector_config=None) -> Tensor:
        """Map ``t`` linearly from ``source_range`` back to the native range (the
        inverse of ``rescale_from_native``).

        Args:
            t: ``(..., c)`` values in ``source_range``.
            source_range: ``(lo, hi)``: numbers or per-dim bounds, as in
                ``rescale_from_native``.
            selector_index: a registered selector (its squashing decides the native range).
            selector_config: a selector config for this call only.

        Returns:
            ``(..., c)`` in the native range.

        Raises:
            ValueError: no native range (an unbounded gaussian), or bounds that
                are not finite with ``lo < hi`` or have the wrong length.
            TypeError: the range is not a pair of numbers / 1-D sequences.
        """
        selector = self._selector(selector_index, selector_config, t.device)
        return rescale_map(self._native_range_of(selector), source_range, 'source_range', t).to_native(t)
