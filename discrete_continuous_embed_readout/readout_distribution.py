"""The distribution a Readout's outputs define, built and checked once per call.

``Readout.dist(outputs)`` returns a ``ReadoutDistribution``: it parses the
outputs against the selector once, and owns sampling, the mode, log-probs,
entropies, KL divergences, losses and ``torch.distributions`` views. It holds

- a discrete part: a ``MultiCategorical`` over the selector's groups (masked);
- a continuous part: a ``ContinuousPart`` (``heads/part.py``), a head
  applied to the params plus the one map from its native units to the user's.

Both parts are built on first use, so that a call runs through each module once.
"""

# g - discrete groups, c - continuous dims

from __future__ import annotations

from contextlib import contextmanager, nullcontext
from functools import partial
from typing import NamedTuple

import torch
from torch import Tensor
from torch.distributions import Categorical

from ._action_masks import mask_logits, split_action_mask
from ._distribution_losses import DistributionLosses
from ._options import check_temperature
from ._parse import continuous_params, discrete_values, logit_groups, split_pair
from ._utils import DiscreteContinuous, default, exists, identity, maybe_concat, pack, upcast
from .fused.loss import NO_OPTIONS, LossOptions
from .heads.base import ContinuousDistribution
from .heads.categorical import MultiCategorical
from .heads.categorical_ops import unimix_logits
from .heads.part import ContinuousPart
from .policy_distributions import MultiCategoricalDistribution

__all__ = ['DistConfig', 'ReadoutDistribution', 'maybe_concat', 'unimix_logits']  # the last two re-exported from where they live now


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
    loss_options: LossOptions = NO_OPTIONS
    unimix: float = 0.0
    num_params: int = 2  # per continuous dim: (mean, log-var), a binned head's bins, or 0 in regression
    continuous_range: Tensor | None = None  # (C, 2) bound units of the whole table (continuous_range), or None

    @classmethod
    def of(cls, readout) -> DistConfig:
        """A readout's options as they are now (its head and buffers read from the
        module's own dicts: ``nn.Module.__getattr__`` costs about 0.6 µs a lookup,
        on every call)."""
        buffers = readout._buffers
        return cls(
            readout._modules.get('continuous_dist'), readout.continuous_log_var_embed, readout.regression_loss_type, readout.ignore_index,
            readout.use_parallel_multi_discrete, readout.auto_squeeze_single_output, readout.return_only_discrete_or_continuous,
            buffers['continuous_mean_std'], readout.eps, LossOptions(readout.label_smoothing, readout.z_loss_weight, readout.logit_softcap), readout.unimix,
            readout.layout.num_bins or (2 if readout.continuous_log_var_embed else 0), buffers['continuous_range'],
        )  # fmt: skip


@contextmanager
def _rng_from(generator: torch.Generator, device: torch.device):
    """The global RNG seeded from ``generator`` and restored afterwards (heads and
    torch's samplers take no generator)."""
    seed = int(torch.randint(0, 2**62, (), generator=generator, device=generator.device))
    devices = [device] if device.type != 'cpu' else []
    with torch.random.fork_rng(devices=devices, device_type=device.type if devices else 'cuda'):
        torch.manual_seed(seed)
        yield


# the pair


class ReadoutDistribution(DistributionLosses):
    """The distribution of a readout's outputs under one selector (see the module
    docstring). Built by ``Readout.dist``; its methods take no selector and give
    results shaped as the Readout's methods return them.

    Args:
        outputs: logits ``(..., n)`` / per-group logits (a tuple or concatenated),
            params ``(..., c, 2)``, or a ``(discrete, continuous)`` pair.
        selector: the selector the outputs were produced under.
        config: the readout's options (``DistConfig``).
        action_mask: bool, True = allowed; disallowed logits become ``-inf``.
        rescale_range: ``(lo, hi)`` of the user's continuous units for this call
            (a readout with a bound ``continuous_range`` takes only the same bounds).
        override_range: ``rescale_range`` replaces different bound units.
        name: the argument name used in error messages.
        num_continuous: 0.2.x: params may cover this many dims instead of the selector's.

    Attributes:
        categorical: the discrete part (a ``MultiCategorical``) or ``None``.
        continuous: the continuous part (a ``ContinuousPart``) or ``None``.
    """

    def __init__(self, outputs, selector, config: DistConfig, *, action_mask=None, rescale_range=None, name: str = 'outputs',
                 num_continuous: int | None = None, override_range: bool = False):  # fmt: skip
        self.selector, self.config, self.name = selector, config, name
        self.mixed = selector.has_discrete and selector.has_continuous
        self.squeeze = config.auto_squeeze and selector.num_groups == 1
        discrete, continuous = split_pair(outputs, selector, name)
        self.groups = logit_groups(discrete, selector, f'{name} discrete logits') if discrete is not None else None
        if action_mask is not None:
            if self.groups is None:
                raise ValueError('action_mask was given but there are no discrete logits to mask')
            self.groups = mask_logits(self.groups, split_action_mask(action_mask, self.group_sizes, self.groups[0].shape[:-1]))
        self.raw_groups = self.groups  # the logits themselves (masked), before unimix: the z-loss's
        if self.groups is not None and config.unimix:
            self.groups = tuple(unimix_logits(g, config.unimix) for g in self.groups)
        self._categorical = self._continuous = self._build_continuous = None
        if continuous is not None:
            params = continuous_params(continuous, default(num_continuous, selector.num_continuous), config.num_params, f'{name} continuous params')
            self._build_continuous = partial(ContinuousPart.build, params, config, selector, rescale_range, name, override_range)
        both = self.groups is not None and self._build_continuous is not None
        self._pack_parts = DiscreteContinuous if self.mixed and (both or not config.return_only) else default

    @property
    def group_sizes(self) -> tuple[int, ...]:
        """The discrete groups' sizes: the selector's, or for a ``free_width``
        selector the logits' width (``()`` without discrete logits)."""
        return tuple(g.shape[-1] for g in self.groups) if exists(self.groups) else ()

    @property
    def group_sizes_t(self) -> Tensor:
        """``group_sizes`` as a ``(g,)`` long tensor (the selector's buffer where it fixes them)."""
        if not self.selector.free_width:
            return self.selector.group_sizes_t
        return torch.tensor(self.group_sizes, dtype=torch.long, device=self.groups[0].device)

    @property
    def categorical(self) -> MultiCategorical | None:
        """The discrete part, built on first use (``None`` without discrete logits)."""
        if self._categorical is None and self.groups is not None:  # not functools.cached_property: its lock breaks torch.compile graphs
            self._categorical = MultiCategorical._of_checked(self.groups, self.config.parallel, self.config.ignore_index)
        return self._categorical

    @property
    def continuous(self) -> ContinuousPart | None:
        """The continuous part, built on first use (``None`` without params)."""
        if self._continuous is None and self._build_continuous is not None:
            self._continuous = self._build_continuous()
        return self._continuous

    def _pack(self, discrete, continuous):
        return pack(discrete, continuous, self.mixed, self.config.return_only)

    def _squeezed(self, per_group: Tensor, keep: bool = False) -> Tensor:
        return per_group.squeeze(-1) if self.squeeze and not keep else per_group

    def sample(self, temperature: float = 1.0, differentiable: bool = False, *, filter_fn=identity, filter_kwargs: dict | None = None,
               generator=None, hard: bool = True, return_log_prob: bool = False):  # fmt: skip
        """Draw from the distribution.

        Args:
            temperature: a real scalar (Python or numpy number, or 0-dim tensor):
                divides the logits; scales the std of a gaussian (squashed:
                the pre-tanh one); divides beta concentrations by its square;
                kumaraswamy knows only 0 and 1 (others sample at 1, with a warning
                once). ``<= 0`` gives the mode. Regression mode returns the prediction.
            differentiable: straight-through Gumbel-softmax one-hots (discrete),
                reparameterised samples (continuous).
            filter_fn: a logit filter (top-k, top-p, ...):
                ``filter_fn(logits, **filter_kwargs)`` is called on each group's logits
                ``(..., n_g)`` (after ``action_mask`` and ``unimix``, before the
                temperature) and must return logits of the same shape (a floating
                tensor), with ``-inf`` at the ids it rules out; e.g. top-k is
                ``lambda logits, k: logits.masked_fill(logits < logits.topk(k).values[..., -1:], float('-inf'))``.
                Anything else (a ``torch.topk`` result, ids, fewer ids) raises
                ``TypeError`` / ``ValueError``. The continuous part ignores it.
            filter_kwargs: keyword arguments for ``filter_fn``.
            generator: a ``torch.Generator``: the same state gives the same samples
                (continuous heads sample under the global RNG seeded from it, restored afterwards).
            hard: with ``differentiable``, the straight-through one-hot (True) or
                the relaxed (Concrete) sample on the simplex (False).
            return_log_prob: also the sample's log-prob under the untempered
                distribution, exactly ``log_prob`` of the returned sample; with
                ``differentiable`` its gradient is the reparameterised one (through
                the pre-tanh draw when squashed).

        Returns:
            ids / one-hots, values, or a pair (shapes as ``Readout.sample``); with
            ``return_log_prob``, ``(sample, log_prob)``.

        Raises:
            TypeError, ValueError: a temperature that is not a finite real scalar;
                ``rescale_range`` for an unbounded gaussian, or one that differs from
                the bound ``continuous_range``; ``return_log_prob`` in regression mode
                or with relaxed samples; a ``filter_fn`` that does not return logits
                of the shape it was given.
        """
        temperature = check_temperature(temperature)
        d = d_lp = c = c_lp = None
        if self.groups is not None:
            categorical = self.categorical
            d = categorical.sample(temperature, differentiable, filter_fn=filter_fn, filter_kwargs=filter_kwargs, generator=generator, hard=hard)
            d_lp = categorical._log_prob_of_sample(d, differentiable, hard, drawn=True) if return_log_prob else None
            d = d if differentiable or not self.squeeze else d.squeeze(-1)
            d_lp = d_lp.squeeze(-1) if d_lp is not None and self.squeeze else d_lp
        if self._build_continuous is not None:
            # built here rather than through the property, so that the call goes straight on to the head
            part = self._continuous = self._continuous if self._continuous is not None else self._build_continuous()
            with _rng_from(generator, part.params.device) if generator is not None else nullcontext():
                c, c_lp = part.sample(temperature, differentiable, return_log_prob)
        sampled = self._pack_parts(d, c)
        return (sampled, self._pack_parts(d_lp, c_lp)) if return_log_prob else sampled

    def mode(self):
        """The deterministic action (``sample`` at temperature 0).

        Returns:
            argmax ids and / or the heads' modes in the user's units.
        """
        return self.sample(0.0)

    def log_prob(self, sampled, *, concat: bool = False, soft_validate_range: bool = False):
        """Log-probability of ``sampled``.

        Args:
            sampled: ids, values (user units) or a pair. Their leading shape may
                broadcast with the distribution's (as in ``torch.distributions``:
                size-1 axes expand, missing leading axes are added); the group
                and dim axes must match.
            concat: join a pair along the last axis.
            soft_validate_range: clamp values ``eps`` inside a bounded head's range first.

        Returns:
            ``(...)`` / ``(..., G)``, ``(..., c)``, a pair, or ``(..., G + c)``, over
            the broadcast leading shape.
        """
        d_value, c_value = split_pair(sampled, self.selector, 'sampled')
        d = c = None
        if self.groups is not None and d_value is not None:
            ids = discrete_values(d_value, self.selector, self.groups[0].shape[:-1], self.squeeze, 'sampled', broadcast=True)
            d = self._squeezed(self.categorical._log_prob(ids, 'sampled', self.squeeze, owner='readout'), concat)
        if self._build_continuous is not None and c_value is not None:
            c = self.continuous.log_prob(c_value, 'sampled', soft_validate_range)
        return maybe_concat(self._pack(d, c), concat)

    def entropy(self, *, concat: bool = False, squashed_entropy_samples: int | None = None):
        """Entropy per group and per dim (user units).

        Args:
            concat: join a pair along the last axis.
            squashed_entropy_samples: Monte-Carlo draws for the squashed entropy.

        Returns:
            ``(...)`` / ``(..., G)``, ``(..., c)``, a pair, or ``(..., G + c)``.
        """
        d = self.categorical._entropy(group_axis=concat or not self.squeeze) if self.groups is not None else None
        c = self.continuous.entropy(squashed_entropy_samples) if self._build_continuous is not None else None
        return maybe_concat(self._pack(d, c), concat)

    def kl_div(self, other: ReadoutDistribution, *, concat: bool = False):
        """KL(self || other) per group and per dim.

        Args:
            other: a ``ReadoutDistribution`` of the same selector and shapes.
            concat: join a pair along the last axis.

        Returns:
            ``(...)`` / ``(..., G)``, ``(..., c)``, a pair, or ``(..., G + c)``.
        """
        d = c = None
        if exists(self.groups) and exists(other.groups):
            d = self._squeezed(self.categorical.kl_div(other.categorical), concat)
        if exists(self._build_continuous) and exists(other._build_continuous):
            c = self.continuous.kl_div(other.continuous)
        return maybe_concat(self._pack(d, c), concat)

    def get_dist(self):
        """``torch.distributions`` views of this distribution: ``Categorical`` (one
        group) or ``MultiCategoricalDistribution`` (``event_shape (G,)``);
        ``Independent`` over the dims of a ``Normal``, a tanh-transformed normal,
        ``Beta`` or ``Kumaraswamy``, in the user's units. Their ``log_prob`` /
        ``entropy`` sum this distribution's over groups / dims; ``sample``,
        ``rsample`` and ``mode`` match it.

        Returns:
            a ``torch.distributions.Distribution`` with batch shape ``(...)``, or a
            ``DiscreteContinuous`` pair of them.
        """
        d = None
        if exists(self.groups):
            logits = [upcast(g) for g in self.groups]
            d = Categorical(logits=logits[0], validate_args=False) if self.squeeze else MultiCategoricalDistribution(logits)
        c = self.continuous.torch_dist() if exists(self._build_continuous) else None
        return self._pack(d, c)
