"""Every python block of our README runs (the README's promises are code)."""

import pathlib
import re

import pytest

from discrete_continuous_embed_readout import CONTINUOUS_DISTRIBUTIONS

README = pathlib.Path(__file__).resolve().parents[1] / 'README.md'
BLOCKS = re.findall(r'```python\n(.*?)```', README.read_text(), re.S)


def test_the_readme_has_examples():
    assert len(BLOCKS) >= 6


@pytest.mark.parametrize('index', range(len(BLOCKS)))
def test_readme_block_runs(index):
    registered = dict(CONTINUOUS_DISTRIBUTIONS)
    try:
        exec(compile(BLOCKS[index], f'README block {index}', 'exec'), {})
    finally:
        CONTINUOUS_DISTRIBUTIONS.clear()
        CONTINUOUS_DISTRIBUTIONS.update(registered)
