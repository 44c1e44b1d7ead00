"""Training end to end: an x-transformers Decoder between Embed and Readout, for
every modality: embed -> decoder -> readout loss -> backward -> optimizer steps,
with tied and untied tables.

Each loss is recomputed from the logits / params the readout returns, with
F.cross_entropy and the gaussian NLL (``helpers.gaussian_nll``), and each gradient is checked
against where it must land in the table layout of SPEC §2.
"""

# b - batch, n - sequence, d - model dim, g - groups, c - continuous dims

import pytest
import torch
import torch.nn.functional as F
from helpers import MODALITIES, build_pair, gaussian_nll

x_transformers = pytest.importorskip('x_transformers')
Decoder = x_transformers.Decoder

DIM, BATCH, SEQ = 32, 2, 6


def group_sizes(kwargs):
    nd = kwargs.get('num_discrete', 0)
    return (nd,) if isinstance(nd, int) and nd > 0 else tuple(nd) if nd else ()


def make_sequence(modality, gen):
    """``(inputs, targets)``: a sequence of SEQ + 1 steps, targets shifted by one."""
    kwargs = MODALITIES[modality]
    sizes, num_c = group_sizes(kwargs), kwargs.get('num_continuous', 0)
    ids = values = None
    if sizes:
        ids = torch.stack([torch.randint(0, n, (BATCH, SEQ + 1), generator=gen) for n in sizes], dim=-1)
        ids = ids.squeeze(-1) if len(sizes) == 1 else ids  # one group: no group axis
    if num_c:
        values = torch.randn(BATCH, SEQ + 1, num_c, generator=gen)
        if 'continuous_mean_std' in kwargs:
            mean, std = kwargs['continuous_mean_std'].unbind(-1)
            values = values * std + mean  # original units
    seq = [t for t in (ids, values) if t is not None]
    inputs, targets = [t[:, :-1] for t in seq], [t[:, 1:] for t in seq]
    if len(seq) == 1:
        return inputs[0], targets[0]
    return tuple(inputs), tuple(targets)


def transformer_stack(modality, seed=0, **extra):
    """Embed, a one-layer Decoder and the readout of a modality, from one seed."""
    embed, readout = build_pair(DIM, seed, **MODALITIES[modality], **extra)
    decoder = Decoder(dim=DIM, depth=1, heads=2, attn_dim_head=16)
    return embed, decoder, readout


def params_nll(params, target, mean_std=None):
    """-log N(target; mean, exp(log_var)) per entry, in the target's units."""
    mean, log_var = params.unbind(-1)
    if mean_std is None:
        return gaussian_nll(mean, log_var, target)
    shift, std = mean_std.unbind(-1)
    return gaussian_nll(mean, log_var, (target - shift) / std) + std.log()


def reference_losses(modality, out, targets):
    """The loss(es) the readout must report, from its own logits / params."""
    if modality == 'discrete':
        return (F.cross_entropy(out.reshape(-1, out.shape[-1]), targets.reshape(-1)),)
    if modality == 'multi_discrete':
        per_group = [F.cross_entropy(g.reshape(-1, g.shape[-1]), targets[..., i].reshape(-1), reduction='none') for i, g in enumerate(out)]
        return (torch.cat(per_group).mean(),)  # mean over (position, group) entries
    if modality == 'continuous':
        return (params_nll(out, targets, MODALITIES['continuous']['continuous_mean_std']).mean(),)
    logits, params = out
    ids, values = targets
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), ids.reshape(-1)), params_nll(params, values).mean()


def as_tuple(loss):
    return tuple(loss) if isinstance(loss, tuple) else (loss,)


def expected_embed_rows(modality, inputs):
    """The embed-table rows a lookup of ``inputs`` touches (SPEC §2 layout)."""
    kwargs = MODALITIES[modality]
    sizes, num_c = group_sizes(kwargs), kwargs.get('num_continuous', 0)
    used = torch.zeros(sum(sizes) + num_c, dtype=torch.bool)
    ids = inputs[0] if modality == 'mixed' else inputs if sizes else None
    if ids is not None:
        ids = ids.unsqueeze(-1) if len(sizes) == 1 else ids
        offsets = torch.tensor([0, *sizes[:-1]]).cumsum(0)
        used[(ids + offsets).flatten()] = True
    used[sum(sizes) :] = True  # every continuous row scales a (nonzero) value
    return used


def unique_params(*modules):
    """Each Parameter once (a tied table belongs to both embed and readout)."""
    return list({id(p): p for m in modules for p in m.parameters()}.values())


def run(embed, decoder, readout, inputs, targets):
    hidden = decoder(embed(inputs))
    return readout(hidden), readout(hidden, targets)


@pytest.mark.parametrize('modality', list(MODALITIES))
def test_loss_matches_reference_and_gradients_reach_both_tables(modality):
    embed, decoder, readout = transformer_stack(modality)
    inputs, targets = make_sequence(modality, torch.Generator().manual_seed(1))
    out, loss = run(embed, decoder, readout, inputs, targets)
    losses, expected = as_tuple(loss), reference_losses(modality, out, targets)
    assert len(losses) == len(expected)
    for got, want in zip(losses, expected):
        assert got.ndim == 0 and torch.isfinite(got)
        torch.testing.assert_close(got, want)

    # the library's loss and the reference give the same gradients everywhere
    params = [embed.embeddings.weight, readout.embeddings.weight, *decoder.parameters()]
    grads = torch.autograd.grad(sum(losses), params, retain_graph=True, allow_unused=True)
    ref_grads = torch.autograd.grad(sum(expected), params, allow_unused=True)
    for g, r in zip(grads, ref_grads):
        if r is None:
            assert g is None or (g == 0).all()
        else:
            torch.testing.assert_close(g, r)

    embed_grad, readout_grad, decoder_grads = grads[0], grads[1], grads[2:]
    assert embed_grad.shape == embed.embeddings.weight.shape
    assert readout_grad.shape == readout.embeddings.weight.shape
    # the readout scores every row (softmax over all ids, mean and log-var rows)
    assert (readout_grad.abs().sum(-1) > 0).all()
    # the embed's gradient lands exactly on the rows the inputs looked up
    touched = embed_grad.abs().sum(-1) > 0
    assert torch.equal(touched, expected_embed_rows(modality, inputs))
    assert any(g is not None and g.abs().sum() > 0 for g in decoder_grads)  # and through the decoder


@pytest.mark.parametrize('modality', list(MODALITIES))
def test_backward_fills_table_grads(modality):
    embed, decoder, readout = transformer_stack(modality, seed=2)
    inputs, targets = make_sequence(modality, torch.Generator().manual_seed(3))
    _, loss = run(embed, decoder, readout, inputs, targets)
    sum(as_tuple(loss)).backward()
    for table in (readout.embeddings.weight, embed.embeddings.weight):
        assert table.grad is not None and torch.isfinite(table.grad).all() and table.grad.abs().sum() > 0


@pytest.mark.parametrize('modality', list(MODALITIES))
def test_adam_steps_on_a_fixed_batch_reduce_the_loss(modality):
    embed, decoder, readout = transformer_stack(modality, seed=4)
    inputs, targets = make_sequence(modality, torch.Generator().manual_seed(5))
    opt = torch.optim.Adam(unique_params(embed, decoder, readout), lr=3e-3)
    history = []
    for _ in range(15):
        out, loss = run(embed, decoder, readout, inputs, targets)
        total = sum(as_tuple(loss))
        torch.testing.assert_close(total, sum(reference_losses(modality, out, targets)))
        history.append(total.item())
        opt.zero_grad()
        total.backward()
        opt.step()
    assert all(torch.isfinite(torch.tensor(history)))
    assert history[-1] < history[0] - 0.2, history


@pytest.mark.parametrize('modality', ['discrete', 'mixed'])
def test_weight_tie_shares_one_parameter_through_an_optimizer_step(modality):
    embed, decoder, readout = transformer_stack(modality, seed=6, weight_tie=True)
    inputs, targets = make_sequence(modality, torch.Generator().manual_seed(7))
    shared = readout.embeddings.weight
    assert embed.embeddings.weight is shared
    tied = unique_params(embed, readout)
    assert len(tied) == 1 and tied[0] is shared

    # an untied twin with the same values: the tied gradient is the sum of both tables' gradients
    twin_embed, twin_decoder, twin_readout = transformer_stack(modality, seed=6)
    num_embed_rows = twin_embed.embeddings.weight.shape[0]
    with torch.no_grad():
        twin_embed.embeddings.weight.copy_(shared[:num_embed_rows])
        twin_readout.embeddings.weight.copy_(shared)
    twin_decoder.load_state_dict(decoder.state_dict())
    _, twin_loss = run(twin_embed, twin_decoder, twin_readout, inputs, targets)
    sum(as_tuple(twin_loss)).backward()
    expected_grad = twin_readout.embeddings.weight.grad.clone()
    expected_grad[:num_embed_rows] += twin_embed.embeddings.weight.grad

    lr = 0.5
    before = shared.detach().clone()
    opt = torch.optim.SGD(unique_params(embed, decoder, readout), lr=lr)
    _, loss = run(embed, decoder, readout, inputs, targets)
    sum(as_tuple(loss)).backward()
    torch.testing.assert_close(shared.grad, expected_grad)
    opt.step()
    assert not torch.equal(shared.detach(), before)
    torch.testing.assert_close(shared.detach(), before - lr * expected_grad)

    # lookups still read the (moved) readout rows
    with torch.no_grad():
        weight = readout.embeddings.weight
        if modality == 'discrete':
            torch.testing.assert_close(embed(inputs), weight[inputs])
        else:
            ids, values = inputs
            torch.testing.assert_close(embed(inputs), weight[ids] + values @ weight[11:13])
        twin_embed.embeddings.weight.copy_(weight[:num_embed_rows])
        torch.testing.assert_close(embed(inputs), twin_embed(inputs))


def test_weight_tied_model_trains_with_adam():
    embed, decoder, readout = transformer_stack('discrete', seed=8, weight_tie=True)
    inputs, targets = make_sequence('discrete', torch.Generator().manual_seed(9))
    opt = torch.optim.Adam(unique_params(embed, decoder, readout), lr=3e-3)
    history = []
    for _ in range(15):
        out, loss = run(embed, decoder, readout, inputs, targets)
        torch.testing.assert_close(loss, reference_losses('discrete', out, targets)[0])
        history.append(loss.item())
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert history[-1] < history[0] - 0.2, history
    torch.testing.assert_close(embed(inputs), readout.embeddings.weight[inputs])
