"""torch.compile: embed, logits and loss trace as one graph in every modality,
and compiled (fullgraph, with AOT autograd for the backward) equals eager."""

import pytest
import torch
import torch._dynamo as dynamo
from helpers import MODALITIES, build_pair

TARGETS = {
    'discrete': lambda: torch.randint(-1, 50, (2, 5)),
    'multi_discrete': lambda: torch.stack([torch.randint(0, n, (2, 5)) for n in (5, 7, 3)], -1),
    'continuous': lambda: torch.randn(2, 5, 3),
    'mixed': lambda: (torch.randint(0, 3, (2, 5)), torch.randn(2, 5, 1)),  # through the selector below
}
MIXED_SELECTORS = [([[3, 1, 4]], [1])]
# the fused loss forced ('auto' takes the logits path for these vocabularies)
COMPILED = {**MODALITIES, 'discrete fused': dict(num_discrete=50, readout_kwargs=dict(fused_cross_entropy=True)),
            'mixed fused': dict(MODALITIES['mixed'], readout_kwargs=dict(fused_cross_entropy=True))}  # fmt: skip
TARGETS |= {'discrete fused': TARGETS['discrete'], 'mixed fused': TARGETS['mixed']}


def compiled_calls(modality):
    """Embed, readout and the calls to compile (embed, logits, loss) of a modality."""
    kwargs = dict(COMPILED[modality], **({'selectors': MIXED_SELECTORS} if modality.startswith('mixed') else {}))
    embed, readout = build_pair(16, **kwargs)
    targets = TARGETS[modality]()
    inputs = tuple(t.clamp(min=0) if not t.is_floating_point() else t for t in targets) if isinstance(targets, tuple) else targets.clamp(min=0)
    selector = {'selector_index': 0} if 'selectors' in kwargs else {}
    fns = {
        'embed': lambda: embed(inputs, **selector),
        'logits': lambda: readout(embed(inputs, **selector), **selector),
        'loss': lambda: readout(embed(inputs, **selector), targets, **selector),
    }
    return embed, readout, fns


def flat(out):
    if isinstance(out, torch.Tensor):
        return [out]
    return [t for part in out for t in flat(part)]


@pytest.mark.parametrize('modality', list(COMPILED))
@pytest.mark.parametrize('what', ['embed', 'logits', 'loss'])
def test_no_graph_breaks(modality, what):
    _, _, fns = compiled_calls(modality)
    dynamo.reset()
    explained = dynamo.explain(fns[what])()
    assert explained.graph_break_count == 0, explained.break_reasons
    assert explained.graph_count == 1


@pytest.mark.parametrize('modality', list(COMPILED))
def test_fullgraph_compile_matches_eager(modality):
    embed, readout, fns = compiled_calls(modality)
    params = list({*embed.parameters(), *readout.parameters()})
    eager_loss = sum(t.sum() for t in flat(fns['loss']()))
    eager_grads = torch.autograd.grad(eager_loss, params)
    dynamo.reset()
    compiled = torch.compile(fns['loss'], fullgraph=True, backend='aot_eager')
    loss = sum(t.sum() for t in flat(compiled()))
    grads = torch.autograd.grad(loss, params)
    torch.testing.assert_close(loss, eager_loss)
    for a, b in zip(grads, eager_grads, strict=True):
        torch.testing.assert_close(a, b)
    for what in ('embed', 'logits'):
        for a, b in zip(flat(torch.compile(fns[what], fullgraph=True, backend='aot_eager')()), flat(fns[what]()), strict=True):
            torch.testing.assert_close(a, b)


def test_per_token_log_probs_and_kl_compile_without_graph_breaks_and_match_eager():
    embed, readout = build_pair(16, num_discrete=50, logit_softcap=5.0)
    ids = torch.randint(0, 50, (2, 5))
    mask = torch.rand(2, 5) > 0.3

    def per_token():
        hidden = embed(ids)
        log_p, entropy = readout.log_prob_from_embeds(hidden, ids, return_entropy=True, loss_mask=mask)
        return log_p, entropy, readout.kl_div_from_embeds(hidden.detach(), hidden, loss_mask=mask)

    dynamo.reset()
    explained = dynamo.explain(per_token)()
    assert explained.graph_break_count == 0, explained.break_reasons
    params = list(readout.parameters())
    eager = per_token()
    eager_grads = torch.autograd.grad(sum(t.sum() for t in eager), params)
    dynamo.reset()
    compiled = torch.compile(per_token, fullgraph=True, backend='aot_eager')()
    for a, b in zip(compiled, eager, strict=True):
        torch.testing.assert_close(a, b)
    for a, b in zip(torch.autograd.grad(sum(t.sum() for t in compiled), params), eager_grads, strict=True):
        torch.testing.assert_close(a, b)


def test_bound_units_compile_without_graph_breaks_and_match_eager():
    embed, readout = build_pair(16, num_continuous=3, continuous_squashed=True, continuous_range=([0.0, -1.0, 10.0], [1.0, 1.0, 30.0]), selectors=[[2, 0]])
    u = torch.rand(2, 5, 2) * 0.9 + 0.05
    values = torch.stack((10.0 + 20.0 * u[..., 0], u[..., 1]), -1)  # dims [2, 0], inside their bounds
    hidden = lambda: embed(values, selector_index=0)
    fns = {
        'embed': hidden,
        'loss': lambda: readout(hidden(), values, selector_index=0),
        'log_prob': lambda: readout.log_prob(readout(hidden(), selector_index=0), values, selector_index=0),
        'entropy': lambda: readout.entropy(readout(hidden(), selector_index=0), selector_index=0),
    }
    for what, fn in fns.items():
        dynamo.reset()
        explained = dynamo.explain(fn)()
        assert explained.graph_break_count == 0, (what, explained.break_reasons)
        torch.testing.assert_close(torch.compile(fn, fullgraph=True, backend='aot_eager')(), fn())
