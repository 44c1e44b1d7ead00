"""Fixtures shared by every test file. Plain helpers (constants, reference formulas,
builders) live in the ``helpers`` package next to this file."""

import pytest
import torch
from helpers.internals import forbid_fused_gradient_function, use_small_fused_chunks

from discrete_continuous_embed_readout import CONTINUOUS_DISTRIBUTIONS, set_validate_args


@pytest.fixture(autouse=True)
def _seed_and_validate():
    torch.manual_seed(0)
    set_validate_args('auto')
    yield
    set_validate_args('auto')


@pytest.fixture
def small_fused_chunks(monkeypatch):
    """The fused loss in several chunks (the last one partial), multi-discrete groups fused."""
    use_small_fused_chunks(monkeypatch)


@pytest.fixture
def no_fused_gradient_function(monkeypatch):
    """The fused loss's gradient-computing function fails the test if it runs."""

    def refuse(*args):
        raise AssertionError('the gradient-computing fused function ran under no_grad')

    forbid_fused_gradient_function(monkeypatch, refuse)


@pytest.fixture
def register_head():
    """Register user heads in CONTINUOUS_DISTRIBUTIONS and remove them afterwards."""
    added = []

    def _register(name, cls):
        assert name not in CONTINUOUS_DISTRIBUTIONS
        CONTINUOUS_DISTRIBUTIONS[name] = cls
        added.append(name)

    try:
        yield _register
    finally:
        for name in added:
            CONTINUOUS_DISTRIBUTIONS.pop(name, None)
