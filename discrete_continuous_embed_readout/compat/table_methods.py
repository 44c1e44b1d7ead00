"""The 0.2.x selector objects on ``Embed`` and ``Readout``: ``get_selector`` and
``create_discrete_continuous_selector`` wrap the core's ``Selector`` index tables in
the objects 0.2.x returned, and 0.2.x state dicts are upgraded before loading."""

from __future__ import annotations

from .._selectors import parse_selector_parts
from .._utils import exists
from .checkpoints import upgrade_legacy_state
from .selectors import DiscreteContinuousSelector


class SelectorCompat:
    """Mixin for a ``SharedTable`` (``Embed``, ``Readout``): the 0.2.x selector API."""

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, error_msgs):
        upgrade_legacy_state(self, state_dict, prefix)
        super()._load_from_state_dict(state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, error_msgs)

    def get_selector(self, selector_index: int | None = None, selector_config=None, *, device=None):
        """The selector for a call: registered (``selector_index``), runtime
        (``selector_config``) or the default, as the 0.2.x selector object that
        the ``selector=`` arguments take.

        Args:
            selector_index: index into the selectors registered at construction
                (``0`` also names the default selector when none is registered).
            selector_config: a selector config (see the [Selectors guide](../guide/selectors.md)) for this call
                only; validated, built once and cached per (config, device), at most
                ``MAX_CACHED_RUNTIME_SELECTORS`` kept.
            device: where a runtime selector's index buffers are put.

        Returns:
            a ``DiscreteContinuousSelector`` with ``has_discrete``,
            ``has_continuous``, ``group_sizes``, ``num_continuous`` and the 0.2.x
            attributes (``discrete_selector``, ``continuous_selector``, ...). With
            neither argument: the one registered selector, or all rows when none
            is registered.

        Raises:
            ValueError: both arguments given, neither while several selectors
                are registered, or an invalid config.
            TypeError: ``selector_index`` is not an int, or a malformed config.
            IndexError: ``selector_index`` (or a row of the config) out of range.
        """
        return DiscreteContinuousSelector(self, self._selector(selector_index, selector_config, device))

    def create_discrete_continuous_selector(self, discrete_indices=None, continuous_indices=None, continuous_squashed: bool = False):
        """A selector from its parts, as 0.2.x built them (not registered).

        Args:
            discrete_indices: one list of unique discrete rows per group, or ``None``.
            continuous_indices: unique continuous dims, or ``None``.
            continuous_squashed: whether this selector's continuous samples are
                tanh-squashed (a gaussian head only).

        Returns:
            a ``DiscreteContinuousSelector`` for the ``selector=`` arguments.

        Raises:
            ValueError: neither part, an invalid part, or squashing a head that
                is not a gaussian.
        """
        parsed = parse_selector_parts(discrete_indices, continuous_indices, self.layout, 'create_discrete_continuous_selector')
        squashed = bool(continuous_squashed)
        if squashed and exists(parsed.dims):
            self._check_squashable()
        return DiscreteContinuousSelector(self, self._cached_selector(parsed, self._device(), squashed))
