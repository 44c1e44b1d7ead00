"""A mixed readout's action as one distribution object for TorchRL and tensordict.

``CompositeActionDistribution`` is a ``tensordict.nn.CompositeDistribution`` over two
named parts, the readout's ``torch.distributions`` views (``Readout.get_dist``): the
discrete ids and the continuous values. It adds no arithmetic of its own: sampling,
log-probs and the mode are the views' (and so the readout distribution's), the
entropy the readout's (``Readout.entropy``: a squashed gaussian's is its pre-tanh
gaussian's). Samples, modes and per-part log-probs are TensorDicts keyed by
``sample_keys``: what ``ProbabilisticTensorDictModule`` / TorchRL's
``ProbabilisticActor`` write into a rollout and ``ClipPPOLoss`` reads back.

By default the parts are independent, as ``CompositeDistribution`` assumes: each is
scored on its own (TorchRL's ``ProbabilisticActor`` samples and scores part by part),
every continuous dim counting. A parameterised action space, where each discrete
action has continuous parameters of its own and the others never reach the
environment (Platform's), says which dims each id uses (``continuous_used_by``): the
continuous part's log-prob then counts the chosen id's dims only and its entropy is
their expected entropy, so that unused parameters add nothing to a PPO ratio or an
entropy bonus. That part depends on the discrete id, so it is scored through the
composite's ``log_prob`` only (tensordict's ``ProbabilisticTensorDictModule`` does;
scoring it alone is an error that says so).

tensordict is optional: this module needs it (``pip install tensordict``, or torchrl).
"""

# n - discrete ids (one group), c - continuous dims

from __future__ import annotations

from functools import partial

import torch
from torch import Tensor
from torch.distributions import Categorical, Distribution, Independent

from ._checks import check_ids_in_range, check_integer, describe
from ._utils import DiscreteContinuous, exists
from .readout import Readout

try:
    from tensordict import TensorDict, is_tensor_collection
    from tensordict.nn import CompositeDistribution, composite_lp_aggregate
    from tensordict.utils import unravel_key
except ImportError as error:  # pragma: no cover - tensordict is in the test extra
    raise ImportError('CompositeActionDistribution needs tensordict: pip install tensordict (torchrl brings it too)') from error

__all__ = ['SAMPLE_KEYS', 'CompositeActionDistribution']

SAMPLE_KEYS = (('action', 'discrete'), ('action', 'continuous'))


class _ContinuousPart(Independent):
    """The continuous view with the readout's ``entropy`` (TorchRL's losses call each
    part's ``entropy`` directly; the squashed view has none in closed form); under
    ``continuous_used_by``, not to be scored on its own."""

    def __init__(self, view: Independent, entropy, scored_alone: bool):
        super().__init__(view.base_dist, view.reinterpreted_batch_ndims, validate_args=False)
        self._entropy, self._scored_alone = entropy, scored_alone

    def entropy(self) -> Tensor:
        return self._entropy()

    def log_prob(self, value: Tensor) -> Tensor:
        if not self._scored_alone:
            raise ValueError(
                'with continuous_used_by, the continuous part is scored with the discrete id it depends on: use '
                "CompositeActionDistribution.log_prob (TorchRL's ProbabilisticActor(return_log_prob=True) scores parts alone; "
                "tensordict's ProbabilisticTensorDictModule scores the composite)"
            )
        log_prob = self.base_dist.log_prob(value)  # summed here: torch's Independent cannot sum an empty batch
        return log_prob.sum(dim=tuple(range(-self.reinterpreted_batch_ndims, 0)))


def _probs(discrete: Distribution) -> Tensor:
    """``(..., n)``: the one group's probabilities (a squeezed ``Categorical`` or a one-group multi-categorical)."""
    return discrete.probs if isinstance(discrete, Categorical) else discrete.categoricals[0].probs


def _continuous_entropy(dist, num_samples: int | None, discrete: Distribution, used: Tensor | None) -> Tensor:
    per_dim = dist.continuous.entropy(num_samples)  # (..., c)
    if exists(used):  # E_id[entropy of the dims the id uses]
        per_dim = per_dim * (_probs(discrete) @ used.to(per_dim.dtype))  # P(dim used): (..., n) @ (n, c)
    return per_dim.sum(-1)


def _suffixed(key, suffix: str):
    return key + suffix if isinstance(key, str) else (*key[:-1], key[-1] + suffix)


def _check_used_by(used, dist) -> Tensor | None:
    if used is None:
        return None
    if not isinstance(used, Tensor) or used.dtype != torch.bool:
        raise TypeError(f'continuous_used_by must be a bool tensor (n, c), got {describe(used)}')
    sizes, c = dist.selector.group_sizes, dist.continuous.num_continuous
    if len(sizes) != 1:
        raise ValueError(f'continuous_used_by needs a readout (selector) with one discrete group, this one has {len(sizes)}: sizes {list(sizes)}')
    if tuple(used.shape) != (sizes[0], c):
        raise ValueError(f'continuous_used_by must have shape (n, c) = ({sizes[0]}, {c}), got {tuple(used.shape)}')
    return used.to(dist.groups[0].device)


def _check_sample_keys(sample_keys) -> tuple:
    if not isinstance(sample_keys, (tuple, list)) or len(sample_keys) != 2:
        raise ValueError(f'sample_keys must be a (discrete key, continuous key) pair, got {sample_keys!r}')
    try:
        keys = tuple(unravel_key(k) for k in sample_keys)
    except Exception as error:
        raise ValueError(f'sample_keys must hold two tensordict keys (a str or a tuple of str), got {sample_keys!r}') from error
    if keys[0] == keys[1]:
        raise ValueError(f'sample_keys must name two different entries, got {sample_keys!r}')
    return keys


class CompositeActionDistribution(CompositeDistribution):
    """The distribution of a mixed readout's action (discrete ids and continuous
    values) as one ``tensordict.nn.CompositeDistribution``, for TorchRL's
    ``ProbabilisticActor`` (``distribution_class=CompositeActionDistribution``), which
    builds it from the readout's outputs in the rollout: ``in_keys=['logits', 'params']``
    and ``distribution_kwargs={'readout': readout, ...}``. ``readout.get_dist(outputs,
    composite=True)`` builds one directly.

    Its parts (``dists``, keyed by ``sample_keys``) are the ``Readout.get_dist`` views:
    ``sample`` and ``log_prob`` are theirs; ``mode`` and ``deterministic_sample`` are
    ``Readout.mode``; ``entropy`` is ``Readout.entropy``, each summed over the part's
    groups / dims. As for any ``CompositeDistribution``, ``log_prob`` and ``entropy``
    return a TensorDict of per-part entries (``<key>_log_prob``, ``<key>_entropy``) unless
    ``tensordict.nn.set_composite_lp_aggregate(True)`` is on, when they return one
    tensor: ``readout.log_prob(outputs, action, concat=True).sum(-1)``.

    Args:
        logits: the readout's discrete logits ``(..., n)`` (several groups: concatenated
            ``(..., sum n_g)``).
        params: the readout's continuous params ``(..., c, 2)``.
        readout: the mixed ``Readout`` that produced them.
        action_mask: as for ``Readout.dist``.
        rescale_range: as for ``Readout.dist``.
        selector_index: as for ``Readout.dist``.
        selector_config: as for ``Readout.dist``.
        sample_keys: where the discrete and the continuous part go in samples (nested
            keys allowed), e.g. ``(('action', 'move'), ('action', 'speed'))``.
        squashed_entropy_samples: ``n``: a squashed gaussian's entropy estimated from
            ``n`` draws instead of the pre-tanh gaussian's (as ``Readout.entropy``).
        continuous_used_by: ``(n, c)`` bool, one discrete group only: row ``k`` marks the
            continuous dims id ``k`` uses (a parameterised action). The continuous
            log-prob then sums the chosen id's dims only, the continuous entropy is
            ``sum_k p(k) * (entropy of the dims k uses)``. ``None``: every dim counts.

    Attributes:
        dists: ``{sample key: part}``: the discrete view (``Categorical`` or
            ``MultiCategoricalDistribution``) and the continuous one (``Independent``).
        readout_dist: the ``ReadoutDistribution`` they are views of.
        continuous_used_by: the checked ``(n, c)`` mask, or ``None``.

    Raises:
        TypeError: ``readout`` is not a ``Readout``; ``logits`` / ``params`` not tensors.
        ValueError: a readout without both parts; a part missing; outputs that do not
            fit the readout; bad ``sample_keys`` or ``continuous_used_by``.

    Example:
        >>> import torch
        >>> from discrete_continuous_embed_readout import EmbedAndReadout
        >>> _, readout = EmbedAndReadout(16, num_discrete=3, num_continuous=2, continuous_squashed=True)
        >>> logits, params = readout(torch.randn(4, 16))
        >>> dist = CompositeActionDistribution(logits, params, readout=readout, rescale_range=(0., 5.))
        >>> action = dist.sample()
        >>> action['action', 'discrete'].shape, action['action', 'continuous'].shape
        (torch.Size([4]), torch.Size([4, 2]))
        >>> sorted(dist.log_prob(action)['action'].keys())
        ['continuous_log_prob', 'discrete_log_prob']
    """

    def __init__(self, logits: Tensor | None = None, params: Tensor | None = None, *, readout: Readout, action_mask=None, rescale_range=None,
                 selector_index=None, selector_config=None, sample_keys=SAMPLE_KEYS, squashed_entropy_samples: int | None = None,
                 continuous_used_by: Tensor | None = None):  # fmt: skip
        dist = _readout_dist(readout, logits, params, selector_index, selector_config, action_mask, rescale_range)
        self.continuous_used_by = used = _check_used_by(continuous_used_by, dist)
        discrete, continuous = dist.get_dist()
        entropy = partial(_continuous_entropy, dist, squashed_entropy_samples, discrete, used)
        continuous = _ContinuousPart(continuous, entropy, scored_alone=not exists(used))
        Distribution.__init__(self, discrete.batch_shape, validate_args=False)
        self.dists = dict(zip(_check_sample_keys(sample_keys), (discrete, continuous)))
        self.readout_dist = dist
        self.log_prob_key = self.entropy_key = None  # CompositeDistribution's defaults
        self.aggregate_probabilities = None

    def _as_tensordict(self, parts) -> TensorDict:
        return TensorDict(dict(zip(self.dists, parts)), batch_size=self.batch_shape)

    @property
    def mode(self) -> TensorDict:
        """The deterministic action, ``Readout.mode``: argmax ids and the heads' modes
        in the user's units, as a TensorDict keyed by ``sample_keys``."""
        return self._as_tensordict(self.readout_dist.mode())

    @property
    def deterministic_sample(self) -> TensorDict:
        """What ``InteractionType.DETERMINISTIC`` (TorchRL's default) takes: ``mode``."""
        return self.mode

    def log_prob(self, sample) -> Tensor | TensorDict:
        """Log-probability of a sample, per part or summed (see the class docstring).

        Args:
            sample: a TensorDict holding both ``sample_keys`` entries (more entries,
                as in a rollout, are ignored).

        Returns:
            a TensorDict of the ``<key>_log_prob`` entries ``(...)``, or with
            ``set_composite_lp_aggregate(True)`` their sum ``(...)``.

        Raises:
            TypeError, ValueError: ``sample`` is not a TensorDict, or lacks an entry.
        """
        ids, values = self._parts_of(sample)
        (d_key, discrete), (c_key, continuous) = self.dists.items()
        ids = check_integer(ids, f'sample[{d_key!r}]')
        check_ids_in_range(ids.unsqueeze(-1) if self.readout_dist.squeeze else ids, self.readout_dist.selector.group_sizes, f'sample[{d_key!r}]',
                           group_axis_added=self.readout_dist.squeeze)  # fmt: skip
        if exists(self.continuous_used_by):  # the per-dim log-densities of the dims the ids use
            used = self.continuous_used_by[ids if self.readout_dist.squeeze else ids.squeeze(-1)]
            c_log_prob = torch.where(used, continuous.base_dist.log_prob(values), 0.0).sum(-1)
        else:
            c_log_prob = continuous.log_prob(values)
        d_log_prob = discrete.log_prob(ids)
        if composite_lp_aggregate():
            return d_log_prob + c_log_prob
        entries = {_suffixed(d_key, '_log_prob'): d_log_prob, _suffixed(c_key, '_log_prob'): c_log_prob}
        return TensorDict(entries, batch_size=sample.batch_size, device=sample.device)

    def sample_and_log_prob(self, shape=None) -> tuple[TensorDict, Tensor | TensorDict]:
        """A sample and its ``log_prob``, the action scored as a whole (for callers
        that score a draw in one call; TorchRL's own helpers score part by part).

        Args:
            shape: leading sample shape (default ``()``).

        Returns:
            ``(sample, log_prob)`` as ``sample`` and ``log_prob`` give them.
        """
        sample = self.sample(shape)
        return sample, self.log_prob(sample)

    def _parts_of(self, sample) -> DiscreteContinuous:
        """``sample``'s two parts, checked."""
        if not is_tensor_collection(sample):
            raise TypeError(f'sample must be a TensorDict with entries {list(self.dists)}, got {describe(sample)}')
        parts = DiscreteContinuous(*(sample.get(key, None) for key in self.dists))
        missing = [key for key, part in zip(self.dists, parts) if part is None]
        if missing:
            raise ValueError(f'sample has no entry {missing} (sample_keys are {list(self.dists)})')
        return parts

    def __repr__(self) -> str:
        parts = ', '.join(f'{key}: {type(part).__name__}' for key, part in self.dists.items())
        return f'{type(self).__name__}({parts}, batch_shape={tuple(self.batch_shape)})'


def _readout_dist(readout, logits, params, selector_index, selector_config, action_mask, rescale_range):
    """The readout's distribution of ``(logits, params)``, checked: a mixed one with both parts."""
    if not isinstance(readout, Readout):
        raise TypeError(f'readout must be a Readout (the one that produced logits and params), got {describe(readout)}')
    if not (readout.has_discrete and readout.has_continuous):
        raise ValueError('CompositeActionDistribution needs a readout (selector) with discrete and continuous parts; use readout.get_dist for one part')
    if is_tensor_collection(logits):  # several groups, as a TensorDictModule stores forward's tuple: entries '0', '1', ...
        logits = tuple(logits[str(g)] for g in range(len(logits.keys())))
    groups = list(logits) if isinstance(logits, (tuple, list)) else [logits]
    for name, value in [*((f'logits[{g}]' if len(groups) > 1 else 'logits', t) for g, t in enumerate(groups)), ('params', params)]:
        if value is not None and not isinstance(value, Tensor):
            raise TypeError(f'{name} must be a tensor (the readout outputs: logits (..., n) or a tuple per group, params (..., c, 2)), got {describe(value)}')
    if isinstance(params, Tensor) and all(isinstance(t, Tensor) for t in groups) and any(t.shape[:-1] != params.shape[:-2] for t in groups):
        raise ValueError(f'logits and params must have the same batch shape, got logits {[tuple(t.shape) for t in groups]} and params {tuple(params.shape)}')
    dist = readout._dist(DiscreteContinuous(logits, params), selector_index, selector_config, action_mask, rescale_range, 'CompositeActionDistribution:')
    if not dist.mixed:
        raise ValueError('CompositeActionDistribution needs a readout (selector) with discrete and continuous parts; use readout.get_dist for one part')
    for name, value in (('logits', logits), ('params', params)):
        if value is None:
            raise ValueError(f'{name} is None: a mixed action needs both logits (..., n) and params (..., c, 2)')
    return dist
