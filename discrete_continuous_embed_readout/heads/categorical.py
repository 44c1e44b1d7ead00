"""Several independent categoricals (multi-discrete action spaces).

Two formulations compute the same results: a batched one pads the groups to
one ``(..., g, n_max)`` tensor (padding at ``-inf``, which adds exactly zero
probability) and runs each op once; the other loops over groups.
``use_parallel_multi_discrete=True`` takes the batched one where padding wastes
little (groups of similar size, ``PAD_WASTE_LIMIT``) and the loop elsewhere:
measured on CPU, padding groups of sizes 3 to 1000 to 1000 made every op 4-5x
slower than the loop. Sampling draws its noise once over the concatenated
logits in both, so a seed gives the same samples either way.
"""

# g - groups, n - ids of a group (padded to the largest), v - concatenated ids

from __future__ import annotations

import torch
from torch import Tensor

from .._checks import check_ids_in_range, check_integer, describe
from .._options import check_temperature
from .._parse import broadcasts, check_logit_groups
from .._utils import exists, identity, upcast
from .categorical_ops import _filtered, _pad_groups, gumbel_noise, log_prob_at, log_softmax, pads_cheaply, zero_where_impossible

__all__ = ['MultiCategorical']


class MultiCategorical:
    """Independent categoricals over groups of logits.

    Args:
        logits: one tensor ``(..., n)`` (results carry no group axis) or a
            list/tuple of ``(..., n_g)`` tensors with equal leading shapes.
        use_parallel_multi_discrete: one batched pass instead of a loop.
        ignore_index: a value id that ``log_prob`` scores 0 (``None``: none).

    Shape:
        ``sample``/``log_prob``/``entropy``/``kl_div`` give ``(...)`` for a single
        tensor and ``(..., g)`` for a list of groups.

    Attributes:
        logits, param: the logits as given.
    """

    def __init__(self, logits, use_parallel_multi_discrete: bool = True, ignore_index: int | None = -1):
        self.is_single = isinstance(logits, Tensor)
        groups = (logits,) if self.is_single else tuple(logits)
        batch = check_logit_groups(groups, self.is_single)
        self.param = self.logits = logits
        self.groups = groups
        self.sizes = [g.shape[-1] for g in groups]
        self.batch_shape = batch
        self.batched = use_parallel_multi_discrete and pads_cheaply(self.sizes)
        self.ignore_index = ignore_index

    @classmethod
    def _of_checked(cls, groups: tuple[Tensor, ...], use_parallel_multi_discrete: bool, ignore_index: int | None) -> MultiCategorical:
        """Over a tuple of groups already checked (``_checks.logit_groups``)."""
        self = cls.__new__(cls)
        self.is_single, self.param, self.logits, self.groups = False, groups, groups, groups
        self.sizes = [g.shape[-1] for g in groups]
        self.batch_shape = groups[0].shape[:-1]
        self.batched = use_parallel_multi_discrete and pads_cheaply(self.sizes)
        self.ignore_index = ignore_index
        return self

    def _squeeze(self, t: Tensor) -> Tensor:
        return t.squeeze(-1) if self.is_single else t  # (..., g) -> (...) for one tensor

    def _adds_group_axis(self, value: Tensor) -> bool:
        # a single tensor's ids may keep a trailing axis of 1 (as 0.2.x), else one is added
        return self.is_single and not (value.ndim == len(self.batch_shape) + 1 and value.shape[-1] == 1)

    def _as_groups(self, value: Tensor) -> Tensor:
        return value.unsqueeze(-1) if self._adds_group_axis(value) else value

    def _check_value(self, value, name: str) -> Tensor:
        passed = value
        value = self._as_groups(check_integer(value, name))
        expected = (*self.batch_shape, len(self.groups))
        if value.shape != expected and not broadcasts(value.shape, expected):
            shown = expected[:-1] if self.is_single else expected
            raise ValueError(f'{name} must have shape {shown} or one that broadcasts with it, got {describe(passed)}')
        return value

    def log_softmax(self) -> tuple[Tensor, ...] | Tensor:
        """Per-group log-probs.

        Returns:
            padded ``(..., g, n)`` with ``-inf`` padding (batched path), or a tuple
            of ``(..., n_g)`` (loop), in float32 for half precision logits.
        """
        logp = self._log_softmax(self.batched)
        return (logp,) if len(self.groups) == 1 else logp

    def _log_softmax(self, batched: bool) -> tuple[Tensor, ...] | Tensor:
        if len(self.groups) == 1:
            return log_softmax(upcast(self.groups[0]))
        if batched:
            return log_softmax(upcast(_pad_groups(self.groups, float('-inf'))))
        return tuple(log_softmax(upcast(g)) for g in self.groups)

    def log_prob(self, value: Tensor) -> Tensor:
        """Log-probability of ids ``value``; ids equal to ``ignore_index`` give 0.

        Args:
            value: integer ids ``(...)`` (single tensor; ``(..., 1)`` is taken
                too) or ``(..., g)``, with the logits' leading shape or one that
                broadcasts with it, as in ``torch.distributions`` (size-1 axes
                expand on either side, missing leading axes are added).

        Returns:
            ``(...)`` / ``(..., g)`` over the broadcast leading shape, float32 for
            half precision logits.

        Raises:
            TypeError: ``value`` does not hold integers.
            ValueError: ``value`` has the wrong shape.
            IndexError: an id outside its group's range (when content checks are on).
        """
        return self._checked_log_prob(value, 'value', 'MultiCategorical')

    def _checked_log_prob(self, value, name: str, owner: str) -> Tensor:
        # user ids: shape-checked, then range-checked in the shape they came in
        ids = self._check_value(value, name)
        return self._log_prob(ids, name, self._adds_group_axis(value), owner=owner)

    def _log_prob(self, value: Tensor, name: str, group_axis_added: bool | None = None, owner: str | None = None, in_range: bool = False) -> Tensor:
        # value: (..., g) ids whose leading shape broadcasts with the logits', shape-checked
        # by the caller; range-checked here in the shape it was passed (owner: see
        # check_ids_in_range) unless known to be in range (``in_range``: drawn by ``sample``)
        if not in_range:
            group_axis_added = self.is_single if group_axis_added is None else group_axis_added
            in_range = check_ids_in_range(value, self.sizes, name, self.ignore_index, group_axis_added, owner=owner)
        value, groups = self._broadcast(value)
        # ids all in [0, n_g) cannot equal a negative ignore_index: nothing to zero then
        ignore = exists(self.ignore_index) and not (in_range and self.ignore_index < 0)
        ignored = value == self.ignore_index if ignore else None
        safe = value.masked_fill(ignored, 0) if ignore else value
        if len(groups) == 1:
            out = log_prob_at(groups[0], safe, keepdim=True)
        elif self.batched:
            out = log_prob_at(_pad_groups(groups, float('-inf')), safe)
        else:
            out = torch.stack([log_prob_at(g, safe[..., i]) for i, g in enumerate(groups)], dim=-1)
        if ignore:
            out = out.masked_fill(ignored, 0.0)
        return self._squeeze(out)

    def _broadcast(self, value: Tensor) -> tuple[Tensor, tuple[Tensor, ...]]:
        """Ids ``(..., g)`` and the groups' logits, expanded to one leading shape (views)."""
        if value.shape[:-1] == self.batch_shape:
            return value, self.groups
        batch = torch.broadcast_shapes(value.shape[:-1], self.batch_shape)
        return value.expand(*batch, value.shape[-1]), tuple(g.expand(*batch, g.shape[-1]) for g in self.groups)

    def log_prob_of_sample(self, sampled: Tensor, differentiable: bool = False, hard: bool = True) -> Tensor:
        """Log-probability of what ``sample`` returned: ids, or with
        ``differentiable`` straight-through one-hots (differentiable through them).

        Args:
            sampled: ids ``(...)`` / ``(..., g)``, or one-hots ``(..., sum n_g)``.
            differentiable: ``sampled`` holds one-hots.
            hard: they are hard (straight-through) one-hots.

        Returns:
            ``(...)`` / ``(..., g)``.

        Raises:
            ValueError: relaxed (``hard=False``) samples, which have no categorical log-prob.
            IndexError: an id outside its group's range (when content checks are on).
        """
        return self._log_prob_of_sample(sampled, differentiable, hard, drawn=False)

    def _log_prob_of_sample(self, sampled: Tensor, differentiable: bool, hard: bool, drawn: bool) -> Tensor:
        # drawn: the ids come straight from sample, so they lie in range (no check)
        if not differentiable:
            return self._log_prob(self._as_groups(sampled), 'sampled', self._adds_group_axis(sampled), in_range=drawn)
        if not hard:
            raise ValueError('return_log_prob=True needs hard samples: a relaxed (hard=False) sample has no categorical log-prob')
        one_hots = sampled.split(self.sizes, dim=-1)
        log_probs = [(h * zero_where_impossible(log_softmax(upcast(g)))).sum(-1) for h, g in zip(one_hots, self.groups)]
        return self._squeeze(torch.stack(log_probs, dim=-1))

    def entropy(self) -> Tensor:
        """Entropy of each group (impossible, ``-inf`` ids contribute 0).

        Returns:
            ``(...)`` / ``(..., g)``.
        """
        return self._entropy()

    def _entropy(self, group_axis: bool = True) -> Tensor:
        # group_axis=False: one group's (...) without the axis (added, then squeezed: two nodes in the backward)
        logp = self._log_softmax(self.batched)
        if isinstance(logp, Tensor):  # one group, or padded groups
            entropy = -(logp.exp() * zero_where_impossible(logp)).sum(-1)
            return entropy if self.is_single or self.batched or not group_axis else entropy.unsqueeze(-1)
        return self._squeeze(torch.stack([-(lp.exp() * zero_where_impossible(lp)).sum(-1) for lp in logp], dim=-1))

    def kl_div(self, other: MultiCategorical, keep_num_actions_dim: bool = False) -> Tensor:
        """KL(self || other) per group.

        Args:
            other: a ``MultiCategorical`` with the same group sizes and leading shape.
            keep_num_actions_dim: for a single tensor, keep the group axis ``(..., 1)``.

        Returns:
            ``(...)`` / ``(..., g)``.

        Raises:
            TypeError: ``other`` is not a ``MultiCategorical``.
            ValueError: the group sizes or leading shapes differ.
        """
        if not isinstance(other, MultiCategorical):
            raise TypeError(f'other must be a MultiCategorical, got {type(other).__name__}')
        if other.sizes != self.sizes or other.batch_shape != self.batch_shape:
            raise ValueError(
                f'other must have the same groups and batch shape: sizes {self.sizes} vs {other.sizes}, '
                f'batch {tuple(self.batch_shape)} vs {tuple(other.batch_shape)}'
            )
        p, q = self._log_softmax(self.batched), other._log_softmax(self.batched)
        if isinstance(p, Tensor):  # one group, or padded groups
            kl = (p.exp() * zero_where_impossible(p, p - q)).sum(-1)
            kl = kl if self.batched else kl.unsqueeze(-1)
        else:
            kl = torch.stack([(lp.exp() * zero_where_impossible(lp, lp - lq)).sum(-1) for lp, lq in zip(p, q)], dim=-1)
        return kl if keep_num_actions_dim else self._squeeze(kl)

    def sample(self, temperature: float = 1.0, differentiable: bool = False, eps: float = 1e-20, filter_fn=identity,
               filter_kwargs: dict | None = None, generator: torch.Generator | None = None, hard: bool = True) -> Tensor:  # fmt: skip
        """Draw ids from ``softmax(logits / temperature)`` (Gumbel-max).

        Args:
            temperature: a real scalar (Python or numpy number, or 0-dim tensor);
                ``<= 0`` gives the argmax.
            differentiable: a straight-through Gumbel-softmax one-hot instead of
                ids: ``(..., n)`` for one tensor, the groups' one-hots concatenated
                ``(..., sum n_g)`` otherwise. Its hard draw is the argmax of
                ``logits / T + gumbel`` (a draw from ``softmax(logits / T)``, as
                without ``differentiable``); its gradient is that of the relaxation
                ``softmax((logits / T + gumbel) / T)`` (Gumbel-softmax of the
                tempered logits, ``tau = T``). At temperature 0 it is the argmax of
                the logits, with the gradient of ``softmax(logits)``.
            eps: floor of the uniform noise before the double log.
            filter_fn: a logit filter (top-k, top-p, ...): ``filter_fn(logits, **filter_kwargs)``
                is called on each group's logits ``(..., n_g)`` before the temperature
                and must return logits of the same shape (a floating tensor), with
                ``-inf`` at the ids it rules out; the default keeps them as they are.
            filter_kwargs: keyword arguments of ``filter_fn``.
            generator: optional ``torch.Generator`` for the noise.
            hard: with ``differentiable``, the straight-through one-hot (True) or
                the relaxed sample ``softmax((logits / T + gumbel) / T)`` on the
                simplex (False; the Concrete / Gumbel-softmax distribution).

        Returns:
            ids ``(...)`` / ``(..., g)``, or one-hots as above.

        Raises:
            TypeError, ValueError: ``filter_fn`` returned something other than
                logits of the shape it was given (a ``torch.topk`` result, ids, fewer ids).
        """
        temperature = check_temperature(temperature)
        dtype = self.groups[0].dtype
        # noise, scores and softmax in (at least) float32: half precision uniforms sit
        # on a coarse grid, and its ties go to the lower id
        groups = tuple(upcast(g if filter_fn is identity else _filtered(filter_fn, g, filter_kwargs or {})) for g in self.groups)
        greedy = temperature <= 0
        noise = None if greedy else gumbel_noise((*self.batch_shape, sum(self.sizes)), groups[0], eps, generator)
        noises = () if greedy else (noise,) if len(groups) == 1 else noise.split(self.sizes, -1)
        scores = groups if greedy else tuple((g if temperature == 1 else g / temperature) + n for g, n in zip(groups, noises))
        if differentiable:
            return self._relaxed(groups, scores, max(temperature, 0.0), hard).to(dtype)
        return self._squeeze(self._argmax(scores))

    def _argmax(self, scores: tuple[Tensor, ...]) -> Tensor:
        """The id of each group's highest score, ``(..., g)``."""
        if len(scores) == 1:
            return scores[0].argmax(-1, keepdim=True)
        if self.batched:
            return _pad_groups(scores, float('-inf')).argmax(-1)
        return torch.stack([s.argmax(-1) for s in scores], dim=-1)

    @staticmethod
    def _relaxed(groups, scores, temperature: float, hard: bool) -> Tensor:
        """Straight-through / relaxed one-hots. ``scores`` are ``logits / T + gumbel``
        (their argmax is a draw from ``softmax(logits / T)``); the relaxation is
        ``softmax(scores / T)``, the Gumbel-softmax of the tempered logits with
        ``tau = T``. At ``T = 0``: the argmax of the logits and ``softmax(logits)``."""
        one_hots = []
        for g, sc in zip(groups, scores):
            soft = (sc / temperature).softmax(-1) if temperature > 0 else g.softmax(-1)
            if hard:  # the one-hot's value exactly, the relaxation's gradient (scatter: F.one_hot reads the ids on the CPU)
                one_hot = torch.zeros_like(soft, memory_format=torch.contiguous_format).scatter_(-1, sc.argmax(-1, keepdim=True), 1.0)
                soft = one_hot + (soft - soft.detach())
            one_hots.append(soft)
        return torch.cat(one_hots, dim=-1)
