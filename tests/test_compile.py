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


def compiled_calls(modality):
    """Embed, readout and the calls to compile (embed, logits, loss) of a modality."""
    kwargs = dict(MODALITIES[modality], **({'selectors': MIXED_SELECTORS} if modality == 'mixed' else {}))
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


@pytest.mark.parametrize('modality', list(MODALITIES))
@pytest.mark.parametrize('what', ['embed', 'logits', 'loss'])
def test_no_graph_breaks(modality, what):
    _, _, fns = compiled_calls(modality)
    dynamo.reset()
    explained = dynamo.explain(fns[what])()
    assert explained.graph_break_count == 0, explained.break_reasons
    assert explained.graph_count == 1


@pytest.mark.parametrize('modality', list(MODALITIES))
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
