"""``EmbedAndReadout``: a paired Embed and Readout built from one set of arguments,
and ``ParameterlessReadout`` for logits computed elsewhere."""

from __future__ import annotations

import inspect
from typing import NamedTuple

from ._utils import exists
from .embed import Embed
from .heads.binned import BinnedDistribution
from .readout import Readout

__all__ = ['EmbedAndReadout', 'EmbedReadoutPair', 'ParameterlessReadout']


class EmbedReadoutPair(NamedTuple):
    """What ``EmbedAndReadout`` returns: unpack it as ``embed, readout = ...``.

    Attributes:
        embed: the ``Embed``.
        readout: the ``Readout``.
    """

    embed: Embed
    readout: Readout


def EmbedAndReadout(
    *args,
    weight_tie: bool = False,
    embed_kwargs: dict | None = None,
    readout_kwargs: dict | None = None,
    explicit_single_action_dim_given: bool | None = None,
    **kwargs,
) -> EmbedReadoutPair:
    """Build an ``Embed`` and a ``Readout`` with the same arguments.

    Args:
        *args: shared positional arguments (``dim``, ``num_discrete``, ...; see ``Readout``).
        weight_tie: the Embed uses the Readout's table itself (one Parameter;
            the readout's first rows are the embed's rows).
        embed_kwargs: extra arguments for the Embed only.
        readout_kwargs: extra arguments for the Readout only.
        explicit_single_action_dim_given: single-group ids carry an explicit
            trailing axis of size 1, and outputs keep it (logits then come as a
            one-element tuple).
        **kwargs: shared keyword arguments; an option only one of the two takes
            (``ignore_index``, ``auto_append_discrete_set_dim``, ...) goes to that one.
            ``continuous_range=(lo, hi)`` binds the units of the continuous values
            in both: the readout samples and scores in them, the Embed maps values
            given in them back onto the head's native range (see ``Embed``).

    Returns:
        ``(embed, readout)``, a named tuple.

    Examples:
        >>> embed, readout = EmbedAndReadout(512, num_discrete=20000, weight_tie=True)
        >>> embed.embeddings.weight is readout.embeddings.weight
        True
    """
    embed_kwargs, readout_kwargs = dict(embed_kwargs or {}), dict(readout_kwargs or {})
    if exists(explicit_single_action_dim_given):
        _single_axis_options(explicit_single_action_dim_given, embed_kwargs, readout_kwargs)
    shared, embed_only, readout_only = _route(kwargs)
    embed = Embed(*args, **shared, **embed_only, **embed_kwargs)
    readout = Readout(*args, **shared, **readout_only, **readout_kwargs)
    if weight_tie:
        _tie(embed, readout)
    return EmbedReadoutPair(embed, readout)


def _single_axis_options(explicit: bool, embed_kwargs: dict, readout_kwargs: dict) -> None:
    """What ``explicit_single_action_dim_given`` means for each module's options
    (set where not given; a contradicting option is an error)."""
    implied = not bool(explicit)
    for name, options in (('auto_append_discrete_set_dim', embed_kwargs), ('return_one_discrete_logits', readout_kwargs), ('auto_squeeze_single_output', readout_kwargs)):
        if exists(options.get(name)) and options[name] != implied:
            where = 'embed_kwargs' if options is embed_kwargs else 'readout_kwargs'
            raise ValueError(
                f'explicit_single_action_dim_given={explicit!r} means {name}={implied}, '
                f'but {where} sets {name}={options[name]!r}: drop one of the two'
            )
        options.setdefault(name, implied)


def _parameters(cls) -> set[str]:
    return set(inspect.signature(cls.__init__).parameters) - {'self'}


def _route(kwargs: dict) -> tuple[dict, dict, dict]:
    """Shared options to both modules, an option only one takes to that one."""
    embed_params, readout_params = _parameters(Embed), _parameters(Readout)
    unknown = sorted(k for k in kwargs if k not in embed_params and k not in readout_params)
    if unknown:
        raise TypeError(
            f'EmbedAndReadout got unexpected keyword arguments {unknown}: neither Embed nor Readout takes them '
            '(options for one of the two go in embed_kwargs=dict(...) / readout_kwargs=dict(...))'
        )
    pick = lambda keep: {k: v for k, v in kwargs.items() if keep(k)}
    return (
        pick(lambda k: k in embed_params and k in readout_params),
        pick(lambda k: k in embed_params and k not in readout_params),
        pick(lambda k: k in readout_params and k not in embed_params),
    )


def _tie(embed: Embed, readout: Readout) -> None:
    if embed.dim != readout.dim or embed.layout.num_discrete != readout.layout.num_discrete or embed.num_continuous != readout.num_continuous:
        raise ValueError(
            'weight_tie=True needs the embed and readout tables to share dim, num_discrete and num_continuous, got '
            f'embed ({embed.dim}, {embed.layout.num_discrete}, {embed.num_continuous}) and readout ({readout.dim}, {readout.layout.num_discrete}, {readout.num_continuous})'
        )
    bins = [_bin_spec(m.continuous_bins if isinstance(m, Embed) else m.continuous_dist) for m in (embed, readout)]
    if bins[0] != bins[1]:
        raise ValueError(f'weight_tie=True needs the embed and readout to read the same bins (continuous_dist_type and its bin options), got embed {bins[0]} and readout {bins[1]}')
    # share the module, and so the Parameter itself; the readout's table is the
    # superset (its extra rows are the continuous log-var rows)
    embed.embeddings = readout.embeddings


def _bin_spec(head) -> tuple | None:
    """What a binned head's rows mean (``None`` for any other head)."""
    if not isinstance(head, BinnedDistribution):
        return None
    return (type(head).__name__, head.num_bins, head.low, head.high, head.transform, getattr(head, 'sigma', None))


class ParameterlessReadout(Readout):
    """A Readout without a table: sampling, log-probs, entropies, KL and losses
    on logits / params computed elsewhere. Takes every ``Readout`` argument but
    ``dim``. With one discrete group (and no selectors) the group is as wide as
    the logits it is given, as in 0.2.x: no rows fix its width.

    Args:
        *args: none: every argument goes by keyword (a positional one raises
            ``TypeError``, since it would be read as ``dim``).
        **kwargs: ``Readout``'s arguments (``num_discrete``, ``num_continuous``,
            ...); ``dim`` may only be ``None``.

    Examples:
        >>> import torch
        >>> readout = ParameterlessReadout(num_discrete=(3, 5))
        >>> readout.sample((torch.randn(2, 3), torch.randn(2, 5))).shape
        torch.Size([2, 2])
    """

    def __init__(self, *args, **kwargs):
        if args or kwargs.get('dim') is not None:
            raise TypeError(f'ParameterlessReadout takes no dim (it has no table): pass num_discrete / num_continuous by keyword, got positional {args!r} and dim={kwargs.get("dim")!r}')
        kwargs.pop('dim', None)
        super().__init__(None, **kwargs)
