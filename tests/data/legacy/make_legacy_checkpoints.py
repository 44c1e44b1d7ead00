"""Write small reference checkpoints with the ORIGINAL PyPI release.

This script is meant to run in a throwaway virtualenv that has the original
``discrete-continuous-embed-readout`` 0.2.x release installed (and a CPU
torch), never in the project's own environment.  It builds a handful of tiny
models (dim=8), records their state dicts verbatim together with fixed inputs
and the deterministic outputs the original computes for them, and saves one
plain-dict ``.pt`` file per model.  The files only contain tensors and builtin
containers, so they load with ``torch.load(path, weights_only=True)`` without
the original package being installed.

Usage (from the repository root)::

    /tmp/orig027/bin/python tests/data/legacy/make_legacy_checkpoints.py
    /tmp/orig0212/bin/python tests/data/legacy/make_legacy_checkpoints.py

By default the output folder is ``v<major>_<minor>_<patch>`` next to this
script, named after the installed release; ``--out`` overrides it.
"""

from __future__ import annotations

import argparse
import importlib.metadata
from pathlib import Path

import torch
from torch import nn, tensor

DIST_NAME = 'discrete-continuous-embed-readout'
HERE = Path(__file__).resolve().parent

SEED = 1234
DIM = 8
BATCH = (2, 3)
INIT_STD = 0.5  # embedding tables are redrawn with this std so outputs are not ~uniform


# ----------------------------------------------------------------------------
# conversion of outputs into plain containers


def to_plain(obj):
    """Turn the original's return values into tensors / tuples / dicts only."""
    if torch.is_tensor(obj):
        return obj.detach().clone().contiguous()
    if obj is None or isinstance(obj, (bool, int, float, str)):
        return obj
    if isinstance(obj, dict):
        return {str(k): to_plain(v) for k, v in obj.items()}
    if isinstance(obj, (tuple, list)):
        # namedtuples (e.g. DiscreteContinuous) become plain tuples
        return tuple(to_plain(v) for v in obj)
    raise TypeError(f'cannot store object of type {type(obj)!r}')


def plain_state_dict(module):
    return {key: value.detach().clone().contiguous() for key, value in module.state_dict().items()}


def shared_storage_groups(named_tensors):
    """Groups (lists of names) of tensors that share one storage, size > 1 only."""
    by_ptr: dict[int, list[str]] = {}
    for name, value in named_tensors:
        by_ptr.setdefault(value.untyped_storage().data_ptr(), []).append(name)
    return [names for names in by_ptr.values() if len(names) > 1]


def redraw_embedding_tables(*modules):
    """Redraw every distinct nn.Embedding weight in place (shared modules once)."""
    seen = set()
    for module in modules:
        for sub in module.modules():
            if isinstance(sub, nn.Embedding) and id(sub.weight) not in seen:
                seen.add(id(sub.weight))
                with torch.no_grad():
                    sub.weight.normal_(0.0, INIT_STD)


# ----------------------------------------------------------------------------
# fixed inputs


def g(seed):
    gen = torch.Generator().manual_seed(seed)
    return gen


def rand_hidden(seed):
    return torch.randn(*BATCH, DIM, generator=g(seed))


def rand_ints(seed, high, extra=()):
    return torch.randint(0, high, (*BATCH, *extra), generator=g(seed))


def rand_multi_ints(seed, sizes):
    cols = [torch.randint(0, n, BATCH, generator=g(seed + i)) for i, n in enumerate(sizes)]
    return torch.stack(cols, dim=-1)


def rand_float(seed, *shape, scale=1.0):
    return torch.randn(*shape, generator=g(seed)) * scale


def rand_uniform(seed, low, high, shape):
    return torch.rand(*shape, generator=g(seed)) * (high - low) + low


FIXED_MASK = tensor([[True, False, True], [True, True, False]])


# ----------------------------------------------------------------------------
# generic recording for one (model, selector) case


def record_case(embed, readout, selector_index, inp, *, discrete_only, has_native_range, extra=None):
    """Run the original on fixed inputs; returns (inputs, outputs) plain dicts."""
    sel = {} if selector_index is None else dict(selector_index=selector_index)

    inputs = dict(selector_index=selector_index, mask=FIXED_MASK.clone())
    inputs.update(inp)

    out = {}
    out['embed'] = embed(inp['embed_input'], **sel)
    if isinstance(inp['embed_input'], tuple):
        out['embed_unsummed'] = embed(inp['embed_input'], sum_discrete_continuous=False, **sel)

    logits = readout(inp['hidden'], **sel)
    logits_other = readout(inp['hidden_other'], **sel)
    out['readout'] = logits
    out['readout_other'] = logits_other

    out['loss'] = readout(inp['hidden'], targets=inp['targets'], **sel)
    out['loss_unreduced'] = readout(inp['hidden'], targets=inp['targets'], return_unreduced_loss=True, **sel)
    out['loss_masked'] = readout(inp['hidden'], targets=inp['targets'], loss_mask=inputs['mask'], **sel)

    out['log_prob'] = readout.log_prob(logits, inp['values'], **sel)
    out['entropy'] = readout.entropy(logits, **sel)
    out['kl_div'] = readout.kl_div(logits, logits_other, **sel)

    if discrete_only:
        # temperature 0 is argmax: deterministic across implementations
        out['greedy_sample'] = readout.sample(logits, temperature=0.0, **sel)

    if has_native_range:
        target_range = (-2.0, 5.0)
        inputs['rescale_target_range'] = target_range
        out['continuous_native_range'] = tuple(readout.get_continuous_native_range(**sel))
        out['rescale_from_native'] = readout.rescale_from_native(inp['native_values'], target_range, **sel)
        out['rescale_to_native'] = readout.rescale_to_native(inp['range_values'], target_range, **sel)

    if extra is not None:
        extra(inputs, out, logits)

    return to_plain(inputs), to_plain(out)


# ----------------------------------------------------------------------------
# models


def eleven_id_inputs():
    """Fixed inputs of the one-group models with 11 ids (discrete, weight_tied)."""
    return dict(
        embed_input=rand_ints(10, 11),
        hidden=rand_hidden(20),
        hidden_other=rand_hidden(21),
        targets=rand_ints(11, 11),
        values=rand_ints(13, 11),
    )


def model_discrete(ctor):
    kwargs = dict(dim=DIM, num_discrete=11)
    embed, readout = ctor(**kwargs)
    redraw_embedding_tables(embed, readout)

    targets_with_ignore = rand_ints(12, 11)
    targets_with_ignore[0, 1] = -1
    targets_with_ignore[1, 2] = -1

    def extra(inputs, out, logits):
        inputs['targets_with_ignore'] = targets_with_ignore
        out['loss_with_ignore'] = readout(inputs['hidden'], targets=targets_with_ignore)
        out['loss_unreduced_with_ignore'] = readout(inputs['hidden'], targets=targets_with_ignore, return_unreduced_loss=True)
        out['log_prob_with_ignore'] = readout.log_prob(logits, targets_with_ignore)

    inp = eleven_id_inputs()
    cases = {'default': record_case(embed, readout, None, inp, discrete_only=True, has_native_range=False, extra=extra)}
    return kwargs, embed, readout, cases, {}


def model_multi_discrete(ctor):
    sizes = (3, 5, 2)
    kwargs = dict(dim=DIM, num_discrete=sizes)
    embed, readout = ctor(**kwargs)
    redraw_embedding_tables(embed, readout)

    targets_with_ignore = rand_multi_ints(40, sizes)
    targets_with_ignore[0, 0, 1] = -1
    targets_with_ignore[1, 2, 0] = -1

    def extra(inputs, out, logits):
        inputs['targets_with_ignore'] = targets_with_ignore
        out['loss_with_ignore'] = readout(inputs['hidden'], targets=targets_with_ignore)
        out['loss_unreduced_with_ignore'] = readout(inputs['hidden'], targets=targets_with_ignore, return_unreduced_loss=True)

    inp = dict(
        embed_input=rand_multi_ints(10, sizes),
        hidden=rand_hidden(20),
        hidden_other=rand_hidden(21),
        targets=rand_multi_ints(30, sizes),
        values=rand_multi_ints(50, sizes),
    )
    cases = {'default': record_case(embed, readout, None, inp, discrete_only=True, has_native_range=False, extra=extra)}
    return kwargs, embed, readout, cases, {}


def model_continuous_mean_std(ctor):
    mean_std = tensor([[10.0, 2.0], [0.0, 0.5], [-3.0, 1.0]])
    kwargs = dict(dim=DIM, num_continuous=3, continuous_mean_std=mean_std)
    embed, readout = ctor(**kwargs)
    redraw_embedding_tables(embed, readout)

    mean, std = mean_std.unbind(-1)
    inp = dict(
        embed_input=rand_float(10, *BATCH, 3) * std + mean,
        hidden=rand_hidden(20),
        hidden_other=rand_hidden(21),
        targets=rand_float(11, *BATCH, 3) * std + mean,
        values=rand_float(12, *BATCH, 3) * std + mean,
    )
    cases = {'default': record_case(embed, readout, None, inp, discrete_only=False, has_native_range=False)}
    return kwargs, embed, readout, cases, {}


def model_mixed_selectors(ctor):
    mean_std = tensor([[1.0, 2.0], [0.0, 0.5], [3.0, 1.5], [-1.0, 4.0]])
    selectors = [([[0, 1, 2, 3]], [0, 1, 2]), ([[4, 5], [6, 7, 8]], [3])]
    kwargs = dict(dim=DIM, num_discrete=9, num_continuous=4, continuous_mean_std=mean_std, selectors=selectors)
    embed, readout = ctor(**kwargs)
    redraw_embedding_tables(embed, readout)

    mean, std = mean_std.unbind(-1)
    cases = {}

    # selector 0: one discrete set over embedding rows 0..3 (local indices 0..3), continuous dims 0, 1, 2
    m0, s0 = mean[:3], std[:3]
    inp0 = dict(
        embed_input=(rand_ints(10, 4), rand_float(11, *BATCH, 3) * s0 + m0),
        hidden=rand_hidden(20),
        hidden_other=rand_hidden(21),
        targets=(rand_ints(12, 4), rand_float(13, *BATCH, 3) * s0 + m0),
        values=(rand_ints(14, 4), rand_float(15, *BATCH, 3) * s0 + m0),
    )
    cases['selector_0'] = record_case(embed, readout, 0, inp0, discrete_only=False, has_native_range=False)

    # selector 1: two discrete sets (sizes 2 and 3, rows 4,5 and 6,7,8), continuous dim 3
    m1, s1 = mean[3:], std[3:]
    inp1 = dict(
        embed_input=(rand_multi_ints(30, (2, 3)), rand_float(31, *BATCH, 1) * s1 + m1),
        hidden=rand_hidden(40),
        hidden_other=rand_hidden(41),
        targets=(rand_multi_ints(32, (2, 3)), rand_float(33, *BATCH, 1) * s1 + m1),
        values=(rand_multi_ints(34, (2, 3)), rand_float(35, *BATCH, 1) * s1 + m1),
    )
    cases['selector_1'] = record_case(embed, readout, 1, inp1, discrete_only=False, has_native_range=False)
    return kwargs, embed, readout, cases, {}


def model_mixed_squashed(ctor):
    kwargs = dict(dim=DIM, num_discrete=4, num_continuous=2, continuous_squashed=True)
    embed, readout = ctor(**kwargs)
    redraw_embedding_tables(embed, readout)

    inp = dict(
        embed_input=(rand_ints(10, 4), rand_uniform(11, -0.95, 0.95, (*BATCH, 2))),
        hidden=rand_hidden(20),
        hidden_other=rand_hidden(21),
        targets=(rand_ints(12, 4), rand_uniform(13, -0.95, 0.95, (*BATCH, 2))),
        values=(rand_ints(14, 4), rand_uniform(15, -0.95, 0.95, (*BATCH, 2))),
        native_values=rand_uniform(16, -1.0, 1.0, (*BATCH, 2)),
        range_values=rand_uniform(17, -2.0, 5.0, (*BATCH, 2)),
    )
    cases = {'default': record_case(embed, readout, None, inp, discrete_only=False, has_native_range=True)}
    return kwargs, embed, readout, cases, {}


def model_weight_tied(ctor):
    kwargs = dict(dim=DIM, num_discrete=11, weight_tie=True)
    embed, readout = ctor(**kwargs)
    redraw_embedding_tables(embed, readout)

    # make sure the readout's table is clearly different from the table the embed
    # keeps inside its selector (the original re-points only `embed.embeddings`)
    with torch.no_grad():
        readout.embeddings.weight.add_(torch.randn(readout.embeddings.weight.shape, generator=g(99)))

    embed_sd = embed.state_dict()
    lookup_key = observed_embed_lookup_key(embed, embed_sd, num_rows=11)

    inp = eleven_id_inputs()
    cases = {'default': record_case(embed, readout, None, inp, discrete_only=True, has_native_range=False)}

    notes = dict(
        embed_lookup_key=lookup_key,
        embed_embeddings_is_readout_embeddings=embed.embeddings is readout.embeddings,
        embed_lookup_table_equals_readout_table=bool(torch.equal(embed_sd[lookup_key], readout.embeddings.weight)),
    )
    return kwargs, embed, readout, cases, notes


def observed_embed_lookup_key(embed, embed_sd, num_rows):
    """Which state-dict entry the embed really reads from (found by running it)."""
    ids = torch.arange(num_rows)
    looked_up = embed(ids)
    matches = [key for key, value in embed_sd.items() if value.shape == looked_up.shape and torch.equal(value, looked_up)]
    assert len(matches) == 1, f'expected exactly one matching table, found {matches}'
    return matches[0]


def model_beta(ctor):
    # native value v maps to (v - mean) / std, which has to lie in (0, 1) for a beta
    mean_std = tensor([[0.0, 2.0], [1.0, 0.5]])
    kwargs = dict(dim=DIM, num_continuous=2, continuous_dist_type='beta', continuous_mean_std=mean_std)
    embed, readout = ctor(**kwargs)
    redraw_embedding_tables(embed, readout)

    mean, std = mean_std.unbind(-1)

    def in_support(seed):
        return rand_uniform(seed, 0.05, 0.95, (*BATCH, 2)) * std + mean

    # values exactly on the support's edges (0 and 1 after normalisation)
    edge_unit = tensor([[[0.0, 1.0], [1.0, 0.0], [0.5, 1.0]], [[1.0, 1.0], [0.0, 0.0], [0.25, 0.0]]])
    edge_values = edge_unit * std + mean

    def extra(inputs, out, logits):
        inputs['values_edge'] = edge_values
        out['log_prob_edge'] = readout.log_prob(logits, edge_values)

    inp = dict(
        embed_input=in_support(10),
        hidden=rand_hidden(20),
        hidden_other=rand_hidden(21),
        targets=in_support(11),
        values=in_support(12),
        native_values=rand_uniform(16, 0.0, 1.0, (*BATCH, 2)),
        range_values=rand_uniform(17, -2.0, 5.0, (*BATCH, 2)),
    )
    cases = {'default': record_case(embed, readout, None, inp, discrete_only=False, has_native_range=True, extra=extra)}
    return kwargs, embed, readout, cases, {}


MODELS = dict(
    discrete=model_discrete,
    multi_discrete=model_multi_discrete,
    continuous_mean_std=model_continuous_mean_std,
    mixed_selectors=model_mixed_selectors,
    mixed_squashed=model_mixed_squashed,
    weight_tied=model_weight_tied,
    beta=model_beta,
)


# ----------------------------------------------------------------------------


def main():
    import discrete_continuous_embed_readout as original

    version = importlib.metadata.version(DIST_NAME)

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--out', type=Path, default=None, help='output folder (default: v<version> beside this script)')
    parser.add_argument('--only', nargs='*', default=None, help='subset of model names')
    args = parser.parse_args()

    out_dir = args.out or HERE / ('v' + version.replace('.', '_'))
    out_dir.mkdir(parents=True, exist_ok=True)

    torch.set_default_dtype(torch.float32)

    for index, (name, build) in enumerate(MODELS.items()):
        if args.only and name not in args.only:
            continue

        torch.manual_seed(SEED + index)
        kwargs, embed, readout, cases, notes = build(original.EmbedAndReadout)

        embed_sd = embed.state_dict()
        readout_sd = readout.state_dict()

        payload = dict(
            version=version,
            torch_version=torch.__version__.split('+')[0],
            name=name,
            constructor='EmbedAndReadout',
            kwargs=clone_kwargs(kwargs),
            embed_state_dict=plain_state_dict(embed),
            readout_state_dict=plain_state_dict(readout),
            embed_shared_storage=shared_storage_groups(embed_sd.items()),
            readout_shared_storage=shared_storage_groups(readout_sd.items()),
            embed_readout_shared_storage=shared_storage_groups(
                [('embed:' + k, v) for k, v in embed_sd.items()] + [('readout:' + k, v) for k, v in readout_sd.items()]
            ),
            init_std=INIT_STD,
            inputs={case: inputs for case, (inputs, _) in cases.items()},
            outputs={case: outputs for case, (_, outputs) in cases.items()},
            notes=to_plain(notes),
        )

        path = out_dir / f'{name}.pt'
        torch.save(payload, path)
        print(f'wrote {path} ({path.stat().st_size} bytes)')


def clone_kwargs(kwargs):
    """Constructor kwargs as given (lists stay lists so selectors keep their shape)."""

    def conv(v):
        if torch.is_tensor(v):
            return v.detach().clone()
        if isinstance(v, list):
            return [conv(x) for x in v]
        if isinstance(v, tuple):
            return tuple(conv(x) for x in v)
        return v

    return {k: conv(v) for k, v in kwargs.items()}


if __name__ == '__main__':
    main()
