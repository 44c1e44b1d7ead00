"""Distributed data parallel training: 2 CPU processes (gloo) give the gradients of
one process on the concatenated batch.

The model is embed -> MLP -> readout loss in one ``nn.Module`` (so DDP sees every
parameter once), with a mixed readout and two selectors: selector 0 has one discrete
group (the fused linear cross entropy path), selector 1 two groups (the logits path).
Both ranks use the same selector in a step; each rank takes its half of a fixed batch.

The readout's losses are means over the kept entries of the rank's own batch, and DDP
averages the ranks' gradients. That is the full-batch gradient when every rank keeps
the same number of entries (the unmasked steps below). With a ``loss_mask`` that keeps
different numbers of entries per rank it is not (``masked_naive``), unless each rank
scales its loss by ``local_count * world_size / global_count`` (``masked_reweighted``).

One ``torch.multiprocessing.spawn`` runs every configuration (untied / tied table,
fused / unfused loss) and writes each rank's gradients and parameters to a file; the
tests compare them with a single-process run in the parent.
"""

from __future__ import annotations

import datetime
import functools

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn

from discrete_continuous_embed_readout import EmbedAndReadout

pytestmark = pytest.mark.skipif(
    not dist.is_available() or not dist.is_gloo_available(),
    reason='torch.distributed with the gloo backend is not available in this torch build',
)

WORLD_SIZE = 2
DIM, BATCH, SEQ = 16, 2 * WORLD_SIZE, 3  # each rank gets BATCH // WORLD_SIZE sequences
SELECTORS = [([[0, 3, 5, 7]], [0, 2]), ([[1, 2, 4], [8, 9, 10, 11]], [1])]
GROUPS = [(4,), (3, 4)]  # discrete group sizes of each selector
CONTINUOUS = [2, 1]  # continuous dims of each selector
LR = 0.5

# (name, selector_index, loss mask handling); an optimizer step follows every step but the last
STEPS = [
    ('selector0', 0, None),
    ('selector1', 1, None),
    ('selector0_masked_reweighted', 0, 'reweight'),
    ('selector1_masked_reweighted', 1, 'reweight'),
    ('selector0_masked_naive', 0, 'naive'),
]
# positions kept by the loss mask of the masked steps: 5 of 6 on rank 0's half, 2 of 6 on rank 1's
MASK = torch.tensor([[1, 1, 1], [1, 1, 0], [0, 1, 0], [1, 0, 0]], dtype=torch.bool)

# (weight_tie, fused_cross_entropy); the fused loss computes in float32 internally
CONFIGS = {
    'untied': (False, True),
    'tied': (True, True),
    'untied_unfused': (False, False),
    'tied_unfused': (True, False),
}


class EmbedModelReadout(nn.Module):
    """embed -> Linear/GELU/Linear -> readout loss (discrete + continuous)."""

    def __init__(self, weight_tie: bool, fused: bool):
        super().__init__()
        self.embed, self.readout = EmbedAndReadout(
            DIM, num_discrete=12, num_continuous=3, selectors=SELECTORS, weight_tie=weight_tie,
            readout_kwargs=dict(fused_cross_entropy=fused),
        )  # fmt: skip
        self.model = nn.Sequential(nn.Linear(DIM, 2 * DIM), nn.GELU(), nn.Linear(2 * DIM, DIM))

    def forward(self, inputs, targets, selector_index: int, loss_mask=None):
        hidden = self.model(self.embed(inputs, selector_index=selector_index))
        loss = self.readout(hidden, targets, selector_index=selector_index, loss_mask=loss_mask)
        return loss.discrete + loss.continuous


def ddp_model(config: str) -> EmbedModelReadout:
    """The model of a configuration, from one seed, in float64."""
    torch.manual_seed(1234)
    return EmbedModelReadout(*CONFIGS[config]).double()


def global_batch(step: int):
    """The full batch of a step: (inputs, targets), each a (discrete, continuous) pair."""
    gen = torch.Generator().manual_seed(100 + step)
    selector_index = STEPS[step][1]

    def ids():
        sizes = GROUPS[selector_index]
        d = torch.stack([torch.randint(0, n, (BATCH, SEQ), generator=gen) for n in sizes], dim=-1)
        return d.squeeze(-1) if len(sizes) == 1 else d  # one group: no trailing group axis

    def values():
        return torch.randn(BATCH, SEQ, CONTINUOUS[selector_index], generator=gen, dtype=torch.float64)

    return (ids(), values()), (ids(), values())


def shard(pair, rank: int):
    half = BATCH // WORLD_SIZE
    return tuple(t[rank * half : (rank + 1) * half] for t in pair)


def grads_of(module: nn.Module) -> dict[str, torch.Tensor]:
    # named_parameters() lists a tied Parameter once (under its first name, embed.embeddings.weight)
    return {name: p.grad.detach().clone() for name, p in module.named_parameters()}


def params_of(module: nn.Module) -> dict[str, torch.Tensor]:
    return {name: p.detach().clone() for name, p in module.named_parameters()}


def run_steps(module, loss_fn, optimizer):
    """Every step of STEPS: loss_fn(step) -> loss; returns the gradients per step and the final parameters."""
    grads = {}
    for step, (name, _, _) in enumerate(STEPS):
        optimizer.zero_grad(set_to_none=True)
        loss_fn(step).backward()
        grads[name] = grads_of(module)
        if step < len(STEPS) - 1:
            optimizer.step()
    return grads, params_of(module)


# worker: one rank


def _worker(rank: int, init_file: str, out_dir: str):
    torch.set_num_threads(1)
    dist.init_process_group(
        'gloo', init_method=f'file://{init_file}', rank=rank, world_size=WORLD_SIZE, timeout=datetime.timedelta(seconds=60)
    )
    try:
        results = {}
        for config in CONFIGS:
            module = ddp_model(config)
            ddp = nn.parallel.DistributedDataParallel(module)
            optimizer = torch.optim.SGD(ddp.parameters(), lr=LR)

            def loss_fn(step, ddp=ddp):
                _, selector_index, masking = STEPS[step]
                inputs, targets = global_batch(step)
                inputs, targets = shard(inputs, rank), shard(targets, rank)
                mask = shard((MASK,), rank)[0] if masking else None
                loss = ddp(inputs, targets, selector_index, loss_mask=mask)
                if masking == 'reweight':
                    # the readout's loss is a mean over this rank's kept entries: weight it by
                    # this rank's share of the kept entries so DDP's average is the global mean
                    local = mask.sum().to(loss.dtype)  # an int64 ratio would be float32
                    total = local.clone()
                    dist.all_reduce(total)
                    loss = loss * (local * WORLD_SIZE / total)
                return loss

            grads, params = run_steps(module, loss_fn, optimizer)
            results[config] = dict(
                grads=grads,
                params=params,
                still_tied=module.embed.embeddings.weight is module.readout.embeddings.weight,
                num_params=len(list(ddp.parameters())),
            )
        torch.save(results, f'{out_dir}/rank{rank}.pt')
    finally:
        dist.destroy_process_group()


@pytest.fixture(scope='module')
def ddp_results(tmp_path_factory):
    # the spawned children import this module by name to find _worker (pytest's default
    # 'prepend' import mode puts tests/ on sys.path, which spawn passes on)
    out = tmp_path_factory.mktemp('ddp')
    mp.spawn(_worker, args=(str(out / 'init_store'), str(out)), nprocs=WORLD_SIZE, join=True)
    return [torch.load(out / f'rank{rank}.pt') for rank in range(WORLD_SIZE)]


@functools.cache
def reference(config: str):
    """One process, the concatenated batch (and its concatenated mask)."""
    module = ddp_model(config)
    optimizer = torch.optim.SGD(module.parameters(), lr=LR)

    def loss_fn(step):
        _, selector_index, masking = STEPS[step]
        inputs, targets = global_batch(step)
        return module(inputs, targets, selector_index, loss_mask=MASK if masking else None)

    return run_steps(module, loss_fn, optimizer)


def tolerance(config: str) -> dict:
    fused = CONFIGS[config][1]
    # the fused cross entropy accumulates in float32 even for float64 inputs
    return dict(rtol=1e-5, atol=1e-8) if fused else dict(rtol=1e-10, atol=1e-12)


EQUAL_STEPS = [name for name, _, masking in STEPS if masking != 'naive']


@pytest.mark.parametrize('config', list(CONFIGS))
@pytest.mark.parametrize('step', EQUAL_STEPS)
def test_ddp_gradients_equal_single_process(ddp_results, config, step):
    ref_grads, _ = reference(config)
    expected = ref_grads[step]
    for rank, results in enumerate(ddp_results):
        got = results[config]['grads'][step]
        assert got.keys() == expected.keys(), f'rank {rank}'
        for name in expected:
            torch.testing.assert_close(got[name], expected[name], **tolerance(config), msg=lambda m, n=name, r=rank: f'rank {r}, {n}: {m}')
    # not vacuous: the table and the model both receive gradient
    assert expected['embed.embeddings.weight'].abs().sum() > 0
    assert expected['model.0.weight'].abs().sum() > 0


@pytest.mark.parametrize('config', list(CONFIGS))
def test_ddp_parameters_after_training_equal_single_process(ddp_results, config):
    _, expected = reference(config)
    initial = params_of(ddp_model(config))
    for rank, results in enumerate(ddp_results):
        got = results[config]['params']
        for name in expected:
            torch.testing.assert_close(got[name], expected[name], **tolerance(config), msg=lambda m, n=name, r=rank: f'rank {r}, {n}: {m}')
    assert not torch.equal(expected['embed.embeddings.weight'], initial['embed.embeddings.weight'])


@pytest.mark.parametrize('config', list(CONFIGS))
def test_ranks_hold_identical_gradients_and_parameters(ddp_results, config):
    first, second = (results[config] for results in ddp_results)
    for step in first['grads']:
        for name in first['grads'][step]:
            torch.testing.assert_close(first['grads'][step][name], second['grads'][step][name], rtol=0, atol=0)
    for name in first['params']:
        torch.testing.assert_close(first['params'][name], second['params'][name], rtol=0, atol=0)


@pytest.mark.parametrize('config', list(CONFIGS))
def test_tied_table_is_one_parameter_under_ddp(ddp_results, config):
    tied = CONFIGS[config][0]
    module = ddp_model(config)
    names = [name for name, _ in module.named_parameters()]
    assert ('readout.embeddings.weight' in names) is not tied
    for results in ddp_results:
        assert results[config]['still_tied'] is tied
        assert results[config]['num_params'] == len(names)  # DDP registered the shared table once
        assert results[config]['grads']['selector0'].keys() == set(names)


@pytest.mark.parametrize('config', list(CONFIGS))
def test_masked_per_rank_means_differ_from_global_mean(ddp_results, config):
    # with unequal kept counts, averaging per-rank means is not the full-batch mean:
    # documents why the reweighted step scales each rank's loss
    ref_grads, _ = reference(config)
    expected = ref_grads['selector0_masked_naive']
    got = ddp_results[0][config]['grads']['selector0_masked_naive']
    with pytest.raises(AssertionError):
        torch.testing.assert_close(got['model.0.weight'], expected['model.0.weight'], rtol=1e-3, atol=1e-6)
