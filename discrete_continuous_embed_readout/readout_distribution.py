"""The distribution a Readout's outputs define, built and checked once per call.

``Readout.dist(outputs)`` returns a ``ReadoutDistribution``: it parses the
outputs against the selector once, and owns sampling, the mode, log-probs,
entropies, KL divergences, losses and ``torch.distributions`` views. It holds

- a discrete part: a ``MultiCategorical`` over the selector's groups (masked);
- a continuous part: ``ContinuousPart``, a head (``distributions``) applied to
  the params, plus the one map from the head's native units to the user's.

The units map (``unit_map``) is the only place where native and user units
meet; it is a ``torch.distributions.AffineTransform``, ``user = loc + scale * native``:

- with ``rescale_range=(lo, hi)``: the head's native range onto ``(lo, hi)``
  (bounded heads only; the normaliser does not enter);
- else with ``continuous_mean_std``: ``mean + std * native``;
- else the identity.
"""

# g - discrete groups, c - continuous dims

from __future__ import annotations

import warnings
from contextlib import contextmanager, nullcontext
from typing import NamedTuple

import torch
from torch import Tensor
from torch.distributions import Categorical, Normal
from torch.distributions.transforms import AffineTransform

from ._action_masks import mask_logits, split_action_mask
from ._checks import check_bounds, check_finite, check_floating, check_integer, check_temperature, check_tensor, describe
from ._losses import check_loss_mask, entry_mask, masked_loss, regression_loss
from ._utils import DiscreteContinuous, default, exists, identity, is_pair, pack, take, upcast
from .distributions import ContinuousDistribution, Gaussian, SquashedGaussian
from .multi_categorical import MultiCategorical
from .policy_distributions import MultiCategoricalDistribution, continuous_distribution

__all__ = ['ContinuousPart', 'ReadoutDistribution', 'maybe_concat', 'rescale_map', 'unit_map']

HALF = (torch.float16, torch.bfloat16)
IDENTITY = AffineTransform(0.0, 1.0)


class DistConfig(NamedTuple):
    """What a readout tells its distributions (read per call: options may change)."""

    head: ContinuousDistribution | None
    log_var: bool  # (mean, log-var) params; False: regression, a mean only
    regression_loss_type: str
    ignore_index: int | None
    parallel: bool
    auto_squeeze: bool
    return_only: bool
    mean_std: Tensor | None  # (C, 2) of the whole table
    eps: float


# units


def unit_map(native_range, rescale_range, mean_std: Tensor | None, like: Tensor) -> AffineTransform:
    """Native to user units for ``c`` dims (see the module docstring); ``like``: a
    ``(c,)`` tensor of the dtype and device of per-dim bounds; ``mean_std``: the
    dims' ``(c, 2)`` normaliser, std floored, or ``None``."""
    if exists(rescale_range):
        return rescale_map(native_range, rescale_range, 'rescale_range', like)
    if exists(mean_std):
        return AffineTransform(mean_std[:, 0], mean_std[:, 1])
    return IDENTITY


def rescale_map(native_range, target_range, name: str, like: Tensor) -> AffineTransform:
    """The map from ``native_range`` onto ``target_range`` (numbers or per-dim bounds)."""
    if native_range is None:
        raise ValueError(f'{name}: the continuous distribution has no native range (an unbounded gaussian); use beta, kumaraswamy or continuous_squashed=True')
    (lo, hi), (new_lo, new_hi) = native_range, check_bounds(target_range, name, like)
    scale = (new_hi - new_lo) / (hi - lo)
    return AffineTransform(new_lo - lo * scale, scale)


def _rounding_in_native(user: Tensor, units: AffineTransform) -> Tensor | float:
    """How far rounding ``user`` to its (half precision) dtype can move it, in
    native units: a bound that half precision cannot represent rounds outwards."""
    return torch.finfo(user.dtype).eps * user.detach().float().abs() / units.scale


def _inside_bounds(sampled: Tensor, head: ContinuousDistribution, units: AffineTransform) -> Tensor:
    """Half precision samples rounded back inside the mapped native range (the
    nearest representable value of a bound may lie outside it)."""
    if head.default_range is None or units is IDENTITY:
        return sampled
    ulp = torch.finfo(sampled.dtype).eps
    lo, hi = (units(torch.full_like(sampled, b, dtype=torch.float32)) for b in head.default_range)
    lo, hi = lo + ulp * lo.abs(), hi - ulp * hi.abs()  # one ulp inside, in float32
    return torch.maximum(torch.minimum(sampled.float(), hi), lo).to(sampled.dtype)


def _honoured_temperature(head: ContinuousDistribution, temperature: float) -> float:
    """``temperature`` where the head defines it (0 and 1 always), else 1 with a
    warning the first time (0.2.x ignored continuous temperatures)."""
    if temperature <= 0 or temperature == 1 or head.supports_temperature:
        return temperature
    if not getattr(head, '_warned_temperature', False):
        head._warned_temperature = True
        warnings.warn(
            f'{type(head).__name__} defines no sampling temperature other than 0 (its mode) and 1: '
            f'temperature={temperature} is ignored for the continuous part (sampled at 1), as 0.2.x did',
            UserWarning, stacklevel=5,
        )  # fmt: skip
    return 1.0


@contextmanager
def _rng_from(generator: torch.Generator, device: torch.device):
    """The global RNG seeded from ``generator`` and restored afterwards (heads and
    torch's samplers take no generator)."""
    seed = int(torch.randint(0, 2**62, (), generator=generator, device=generator.device))
    devices = [device] if device.type != 'cpu' else []
    with torch.random.fork_rng(devices=devices, device_type=device.type if devices else 'cuda'):
        torch.manual_seed(seed)
        yield


# the continuous part


class ContinuousPart:
    """A head's distribution for ``params`` ``(..., c, 2)`` in the user's units
    (``units``); in regression mode (``log_var=False``) a prediction ``(..., c)``.

    Computes in float32 for half precision params; samples come back in the
    params' dtype.
    """

    def __init__(self, head: ContinuousDistribution, params: Tensor, units: AffineTransform, config: DistConfig, name: str):
        self.head, self.units, self.config, self.name = head, units, config, name
        self.is_identity = units is IDENTITY
        self.dtype, self.params = params.dtype, upcast(params)
        self.batch_shape = params.shape[:-2] if config.log_var else params.shape[:-1]
        self.num_continuous = params.shape[-2] if config.log_var else params.shape[-1]

    def expand(self, batch_shape) -> ContinuousPart:
        """The same distribution broadcast to ``(*batch_shape, ...)``."""
        params = self.params.expand(*batch_shape, *self.params.shape)
        return ContinuousPart(self.head, params, self.units, self.config, self.name)

    def require_distribution(self, what: str) -> None:
        if not self.config.log_var:
            raise ValueError(f'{what} needs a distribution, but this readout predicts only a mean (continuous_log_var_embed=False)')

    def sample(self, temperature: float = 1.0, differentiable: bool = False, with_log_prob: bool = False):
        """``(values (..., c), log_prob (..., c) or None)``; the log-prob is exactly
        ``log_prob`` of the returned values (a PPO ratio at unchanged parameters
        is 1); with ``differentiable`` its gradient is the head's reparameterised
        one (through the pre-tanh draw when squashed)."""
        head, params, units = self.head, self.params, self.units
        if not self.config.log_var:
            if with_log_prob:
                self.require_distribution('return_log_prob')
            return units(params).to(self.dtype), None  # regression: the prediction itself
        temperature = _honoured_temperature(head, temperature)
        if with_log_prob and differentiable:
            native, head_log_prob = head.sample_and_log_prob(params, temperature, differentiable)
        else:
            native, head_log_prob = head.sample(params, temperature, differentiable), None
        sampled = units(native).to(self.dtype)
        if sampled.dtype in HALF:
            sampled = _inside_bounds(sampled, head, units)
        if not with_log_prob:
            return sampled, None
        rounding = _rounding_in_native(sampled, units) if sampled.dtype in HALF else 0.0
        rescored = units.inv(upcast(sampled))
        log_prob = head.score(params, rescored, name='sampled', to_user=units, rounding=rounding) - units.log_abs_det_jacobian(rescored, native)
        if exists(head_log_prob):
            head_log_prob = head_log_prob - units.log_abs_det_jacobian(native, native)
            log_prob = head_log_prob + (log_prob - head_log_prob).detach()
        return sampled, log_prob

    def values(self, values, name: str) -> Tensor:
        """``values`` checked: a finite floating tensor ``(..., c)`` of this batch shape."""
        check_tensor(values, name)
        check_floating(values, name)
        expected = (*self.batch_shape, self.num_continuous)
        if tuple(values.shape) != expected:
            raise ValueError(f'{name} must have shape {expected} (one value per continuous dim), got {describe(values)}')
        return check_finite(values, name)

    def log_prob(self, values, name: str = 'value', soft_validate_range: bool = False, legacy: bool = False) -> Tensor:
        """Log-density of user-unit ``values`` ``(..., c)``, in those units."""
        self.require_distribution('log_prob')
        values = self.values(values, name)
        rounding = _rounding_in_native(values, self.units) if values.dtype in HALF else 0.0
        native = self.units.inv(upcast(values))
        log_prob = self.head.score(self.params, native, name=name, to_user=self.units, soft_validate_range=soft_validate_range, rounding=rounding, legacy=legacy)
        return log_prob - self.units.log_abs_det_jacobian(native, native)

    def entropy(self, num_samples: int | None = None) -> Tensor:
        """Entropy per dim in the user's units; ``num_samples``: a Monte-Carlo
        estimate of the squashed gaussian's (true) entropy."""
        self.require_distribution('entropy')
        if not exists(num_samples):
            entropy = self.head.entropy(self.params)
        elif not isinstance(self.head, SquashedGaussian):
            raise ValueError('squashed_entropy_samples is for a squashed gaussian (continuous_squashed=True)')
        elif isinstance(num_samples, bool) or not isinstance(num_samples, int) or num_samples < 1:
            raise ValueError(f'squashed_entropy_samples must be a positive int, got {num_samples!r}')
        else:
            entropy = self.head.entropy_estimate(self.params, num_samples)
        return entropy + self.units.log_abs_det_jacobian(entropy, entropy)

    def kl_div(self, other: ContinuousPart) -> Tensor:
        """KL(self || other) per dim (invariant under the shared units map)."""
        self.require_distribution('kl_div')
        if self.params.shape != other.params.shape:
            raise ValueError(f'{self.name} and {other.name} continuous params differ in shape: {tuple(self.params.shape)} vs {tuple(other.params.shape)}')
        return self.head.kl_div(self.params, other.params)

    def loss(self, targets) -> Tensor:
        """Per-entry loss ``(..., c)``: the negative log-density, or in regression
        mode the regression loss in native (normalised) units."""
        if self.config.log_var:
            return -self.log_prob(targets, 'targets')
        return regression_loss(self.params, self.units.inv(self.values(targets, 'targets')), self.config.regression_loss_type)

    def user_normal(self) -> Normal:
        """A gaussian head's normal mapped to the user's units (still a normal)."""
        normal = self.head.dist(self.params)
        return Normal(self.units(normal.loc), self.units.scale * normal.scale, validate_args=False)

    def torch_dist(self):
        """A ``torch.distributions`` view (see ``policy_distributions``)."""
        self.require_distribution('get_dist')
        return continuous_distribution(self)


# the pair


class ReadoutDistribution:
    """The distribution of a readout's outputs under one selector (see the module
    docstring). Built by ``Readout.dist``; its methods take no selector and give
    results shaped as the Readout's methods return them.

    Args:
        outputs: logits ``(..., n)`` / per-group logits (a tuple or concatenated),
            params ``(..., c, 2)``, or a ``(discrete, continuous)`` pair.
        selector: the selector the outputs were produced under.
        config: the readout's options (``DistConfig``).
        action_mask: bool, True = allowed; disallowed logits become ``-inf``.
        rescale_range: ``(lo, hi)`` of the user's continuous units.
        name: the argument name used in error messages.
        num_continuous: 0.2.x: params may cover this many dims instead of the selector's.

    Attributes:
        categorical: the discrete part (a ``MultiCategorical``) or ``None``.
        continuous: the continuous part (a ``ContinuousPart``) or ``None``.
    """

    def __init__(self, outputs, selector, config: DistConfig, *, action_mask=None, rescale_range=None, name: str = 'outputs',
                 num_continuous: int | None = None):  # fmt: skip
        self.selector, self.config, self.name = selector, config, name
        self.mixed = selector.has_discrete and selector.has_continuous
        self.squeeze = config.auto_squeeze and selector.num_groups == 1
        discrete, continuous = split_pair(outputs, selector, name)
        self.groups = logit_groups(discrete, selector, f'{name} discrete logits') if exists(discrete) else None
        if exists(action_mask):
            if not exists(self.groups):
                raise ValueError('action_mask was given but there are no discrete logits to mask')
            self.groups = mask_logits(self.groups, split_action_mask(action_mask, selector.group_sizes, self.groups[0].shape[:-1]))
        self.continuous, self._categorical = None, None
        if exists(continuous):
            params = continuous_params(continuous, default(num_continuous, selector.num_continuous), 2 if config.log_var else 0, f'{name} continuous params')
            head = head_for(config.head, selector.squashed)
            mean_std = None
            if exists(config.mean_std):
                mean_std = take(config.mean_std, selector.continuous_dims)
                mean_std = torch.stack((mean_std[:, 0], mean_std[:, 1].clamp(min=config.eps)), dim=-1)
            native_range = head.default_range if exists(rescale_range) else None
            like = upcast(params).new_empty((params.shape[-2] if config.log_var else params.shape[-1],))
            self.continuous = ContinuousPart(head, params, unit_map(native_range, rescale_range, mean_std, like), config, name)
        parts = (exists(self.groups), exists(self.continuous))
        self._pack_parts = DiscreteContinuous if self.mixed and (all(parts) or not config.return_only) else default

    @property
    def categorical(self) -> MultiCategorical | None:
        """The discrete part, built on first use (``None`` without discrete logits)."""
        if self._categorical is None and exists(self.groups):  # not functools.cached_property: its lock breaks torch.compile graphs
            self._categorical = MultiCategorical(self.groups, self.config.parallel, self.config.ignore_index)
        return self._categorical

    def _pack(self, discrete, continuous):
        return pack(discrete, continuous, self.mixed, self.config.return_only)

    def _squeezed(self, per_group: Tensor, keep: bool = False) -> Tensor:
        return per_group.squeeze(-1) if self.squeeze and not keep else per_group

    def sample(self, temperature: float = 1.0, differentiable: bool = False, *, filter_fn=identity, filter_kwargs: dict | None = None,
               generator=None, hard: bool = True, return_log_prob: bool = False):  # fmt: skip
        """Draw from the distribution (see ``Readout.sample``)."""
        check_temperature(temperature)
        d = d_lp = c = c_lp = None
        if exists(self.groups):
            categorical = self.categorical
            d = categorical.sample(temperature, differentiable, filter_fn=filter_fn, filter_kwargs=filter_kwargs, generator=generator, hard=hard)
            d_lp = categorical.log_prob_of_sample(d, differentiable, hard) if return_log_prob else None
            d = d if differentiable or not self.squeeze else d.squeeze(-1)
            d_lp = d_lp.squeeze(-1) if exists(d_lp) and self.squeeze else d_lp
        if exists(self.continuous):
            with _rng_from(generator, self.continuous.params.device) if exists(generator) else nullcontext():
                c, c_lp = self.continuous.sample(temperature, differentiable, return_log_prob)
        sampled = self._pack_parts(d, c)
        return (sampled, self._pack_parts(d_lp, c_lp)) if return_log_prob else sampled

    def mode(self):
        """The deterministic action (``sample`` at temperature 0)."""
        return self.sample(0.0)

    def log_prob(self, sampled, *, concat: bool = False, soft_validate_range: bool = False):
        """Log-probability of ``sampled`` (see ``Readout.log_prob``)."""
        d_value, c_value = split_pair(sampled, self.selector, 'sampled')
        d = c = None
        if exists(self.groups) and exists(d_value):
            ids = discrete_values(d_value, self.selector, self.groups[0].shape[:-1], self.squeeze, 'sampled')
            d = self._squeezed(self.categorical._log_prob(ids, 'sampled', self.squeeze), concat)
        if exists(self.continuous) and exists(c_value):
            c = self.continuous.log_prob(c_value, 'sampled', soft_validate_range)
        return maybe_concat(self._pack(d, c), concat)

    def entropy(self, *, concat: bool = False, squashed_entropy_samples: int | None = None):
        """Entropy per group and per dim (see ``Readout.entropy``)."""
        d = self._squeezed(self.categorical.entropy(), concat) if exists(self.groups) else None
        c = self.continuous.entropy(squashed_entropy_samples) if exists(self.continuous) else None
        return maybe_concat(self._pack(d, c), concat)

    def kl_div(self, other: ReadoutDistribution, *, concat: bool = False):
        """KL(self || other) per group and per dim (see ``Readout.kl_div``)."""
        d = c = None
        if exists(self.groups) and exists(other.groups):
            d = self._squeezed(self.categorical.kl_div(other.categorical), concat)
        if exists(self.continuous) and exists(other.continuous):
            c = self.continuous.kl_div(other.continuous)
        return maybe_concat(self._pack(d, c), concat)

    def loss(self, targets, *, mask=None, unreduced: bool = False, return_only: bool | None = None):
        """The loss against ``targets``: the negative log-prob (regression: the
        regression loss), masked, a mean over kept entries or per entry."""
        d_target, c_target = split_pair(targets, self.selector, 'targets')
        d_loss = c_loss = None
        if exists(self.groups) and exists(d_target):
            batch = self.groups[0].shape[:-1]
            ids = discrete_values(d_target, self.selector, batch, self.squeeze, 'targets')
            nll = -self.categorical._log_prob(ids, 'targets', self.squeeze)  # (..., g)
            keep = ids != self.config.ignore_index if exists(self.config.ignore_index) else None
            d_loss = self._squeezed(masked_loss(nll, entry_mask(nll, check_loss_mask(mask, batch), keep), reduce=not unreduced), not unreduced)
        if exists(self.continuous) and exists(c_target):
            per_entry = self.continuous.loss(c_target)
            c_loss = masked_loss(per_entry, entry_mask(per_entry, check_loss_mask(mask, self.continuous.batch_shape)), reduce=not unreduced)
        if not exists(d_loss) and not exists(c_loss):
            raise ValueError('targets and logits share no part: nothing to compute a loss on')
        return pack(d_loss, c_loss, self.mixed, default(return_only, self.config.return_only))

    def get_dist(self):
        """``torch.distributions`` views (see ``Readout.get_dist``)."""
        d = None
        if exists(self.groups):
            logits = [upcast(g) for g in self.groups]
            d = Categorical(logits=logits[0], validate_args=False) if self.squeeze else MultiCategoricalDistribution(logits)
        c = self.continuous.torch_dist() if exists(self.continuous) else None
        return self._pack(d, c)


def head_for(head: ContinuousDistribution, squashed: bool | None) -> ContinuousDistribution:
    """The readout's head, or its squashed / unsquashed twin for a 0.2.x selector
    that says otherwise (``squashed=None``: as the readout)."""
    if squashed is None or squashed == isinstance(head, SquashedGaussian):
        return head
    twin = SquashedGaussian if squashed else Gaussian
    return twin(log_var_clamp_range=head.log_var_clamp_range, eps=head.eps)


def maybe_concat(output, concat: bool = False):
    """With ``concat``, a (discrete, continuous) pair joined along the last axis
    ``(..., G + c)`` (a squeezed single group counts as one column), in the
    continuous part's dtype; otherwise ``output`` unchanged."""
    if not concat or not isinstance(output, tuple):
        return output
    discrete, continuous = output
    if not exists(discrete) or not exists(continuous):
        return default(discrete, continuous)
    if discrete.ndim == continuous.ndim - 1:
        discrete = discrete.unsqueeze(-1)
    return torch.cat((discrete.to(continuous.dtype), continuous), dim=-1)


# parsing what users pass, against a selector


def split_pair(obj, selector, name: str):
    """``(discrete, continuous)`` from a pair (mixed) or a bare part."""
    if selector.has_discrete and selector.has_continuous:
        if not (is_pair(obj) or isinstance(obj, list) and len(obj) == 2):  # 0.2.x took 2-element lists too
            raise TypeError(f'{name} must be a (discrete, continuous) pair for a mixed readout (None for a part you leave out), got {describe(obj)}')
        discrete, continuous = obj
    elif isinstance(obj, DiscreteContinuous):
        discrete, continuous = obj
    else:
        discrete, continuous = (obj, None) if selector.has_discrete else (None, obj)
    if exists(discrete) and not selector.has_discrete:
        raise ValueError(f'{name} has a discrete part but the readout (or selector) has no discrete part')
    if exists(continuous) and not selector.has_continuous:
        raise ValueError(f'{name} has a continuous part but the readout (or selector) has no continuous part')
    if not exists(discrete) and not exists(continuous):
        raise ValueError(f'{name} holds neither a discrete nor a continuous part')
    return discrete, continuous


def logit_groups(logits, selector, name: str) -> tuple[Tensor, ...]:
    """One tensor per group; a single tensor may also hold all groups concatenated."""
    sizes = selector.group_sizes
    if isinstance(logits, Tensor):
        check_floating(logits, name)
        if logits.ndim == 0 or logits.shape[-1] != sum(sizes):
            raise ValueError(f'{name} must have a last axis of size {sum(sizes)} (groups {list(sizes)}), got {describe(logits)}')
        return (logits,) if len(sizes) == 1 else logits.split(list(sizes), dim=-1)
    if not isinstance(logits, (tuple, list)) or len(logits) != len(sizes):
        raise TypeError(f'{name} must be a tensor or a sequence of {len(sizes)} tensors (one per group), got {describe(logits)}')
    for i, (g, n) in enumerate(zip(logits, sizes)):
        check_floating(g, f'{name}[{i}]')
        if g.ndim == 0 or g.shape[-1] != n:
            raise ValueError(f'{name}[{i}] must have a last axis of size {n} (group {i}), got {describe(g)}')
    return tuple(logits)


def continuous_params(params, c: int, num_params: int, name: str) -> Tensor:
    """``(..., c, num_params)``, or ``(..., c)`` when ``num_params`` is 0 (regression)."""
    check_floating(params, name)
    if num_params == 0:
        ok, expected = params.ndim >= 1 and params.shape[-1] == c, f'(..., {c})'
    else:
        ok, expected = params.ndim >= 2 and params.shape[-2:] == (c, num_params), f'(..., {c}, {num_params})'
    if not ok:
        raise ValueError(f'{name} must have shape {expected} for {c} continuous dims, got {describe(params)}')
    return params


def discrete_values(values, selector, batch_shape, squeeze: bool, name: str) -> Tensor:
    """Ids as ``(..., g)``; a squeezed single group arrives as ``(...)``."""
    values = check_integer(values, name)
    values = values.unsqueeze(-1) if squeeze else values
    expected = (*batch_shape, selector.num_groups)
    if tuple(values.shape) != expected:
        shown = expected[:-1] if squeeze else expected
        raise ValueError(f'{name} must have shape {shown} (one id per group), got {describe(values)}')
    return values
