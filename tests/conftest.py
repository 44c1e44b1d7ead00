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
