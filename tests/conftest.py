import importlib.util
from pathlib import Path

import pytest
import torch

from discrete_continuous_embed_readout import set_validate_args


@pytest.fixture(autouse=True)
def _seed_and_validate():
    torch.manual_seed(0)
    set_validate_args(True)
    yield
    set_validate_args(True)


def randint_groups(sizes, batch):
    """Random ids ``(*batch, len(sizes))``, each in its group's range."""
    return torch.stack([torch.randint(0, n, batch) for n in sizes], dim=-1)


EXAMPLES = Path(__file__).resolve().parent.parent / 'examples'


def load_example(name: str):
    """Import ``examples/<name>.py`` as a module (``examples/`` is not a package)."""
    spec = importlib.util.spec_from_file_location(f'example_{name}', EXAMPLES / f'{name}.py')
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
