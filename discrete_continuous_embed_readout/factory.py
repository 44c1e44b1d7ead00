"""``EmbedAndReadout``: a paired Embed and Readout built from one set of arguments,
and ``ParameterlessReadout`` for logits computed elsewhere."""

from __future__ import annotations

from typing import NamedTuple

from ._utils import exists
from .embed import Embed
from .readout import Readout


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
        *args, **kwargs: shared arguments (``dim``, ``num_discrete``, ...; see ``Readout``).
        weight_tie: the Embed uses the Readout's table itself (one Parameter;
            the readout's first rows are the embed's rows).
        embed_kwargs: extra arguments for the Embed only.
        readout_kwargs: extra arguments for the Readout only.
        explicit_single_action_dim_given: single-group ids carry an explicit
            trailing axis of size 1, and outputs keep it (logits then come as a
            one-element tuple).

    Returns:
        ``(embed, readout)``, a named tuple.

    Example:
        >>> embed, readout = EmbedAndReadout(512, num_discrete=20000, weight_tie=True)
        >>> embed.embeddings.weight is readout.embeddings.weight
        True
    """
    embed_kwargs, readout_kwargs = dict(embed_kwargs or {}), dict(readout_kwargs or {})
    if exists(explicit_single_action_dim_given):
        explicit = bool(explicit_single_action_dim_given)
        embed_kwargs.setdefault('auto_append_discrete_set_dim', not explicit)
        readout_kwargs.setdefault('return_one_discrete_logits', not explicit)
        readout_kwargs.setdefault('auto_squeeze_single_output', not explicit)
    embed = Embed(*args, **kwargs, **embed_kwargs)
    readout = Readout(*args, **kwargs, **readout_kwargs)
    if weight_tie:
        _tie(embed, readout)
    return EmbedReadoutPair(embed, readout)


def _tie(embed: Embed, readout: Readout) -> None:
    if embed.dim != readout.dim or embed.layout.num_discrete != readout.layout.num_discrete or embed.num_continuous != readout.num_continuous:
        raise ValueError(
            'weight_tie=True needs the embed and readout tables to share dim, num_discrete and num_continuous, got '
            f'embed ({embed.dim}, {embed.layout.num_discrete}, {embed.num_continuous}) and readout ({readout.dim}, {readout.layout.num_discrete}, {readout.num_continuous})'
        )
    # share the module, and so the Parameter itself; the readout's table is the
    # superset (its extra rows are the continuous log-var rows)
    embed.embeddings = readout.embeddings


class ParameterlessReadout(Readout):
    """A Readout without a table: sampling, log-probs, entropies, KL and losses
    on logits / params computed elsewhere. Takes every ``Readout`` argument but
    ``dim``.

    Args:
        *args: none: every argument goes by keyword (a positional one raises
            ``TypeError``, since it would be read as ``dim``).
        **kwargs: ``Readout``'s arguments (``num_discrete``, ``num_continuous``,
            ...); ``dim`` may only be ``None``.

    Example:
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
