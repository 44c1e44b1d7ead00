"""Action-mask builders and the masked references: ``torch.distributions.Categorical``
on logits filled with ``-inf`` where masked, hand-written KL sums and ``F.cross_entropy``."""

# g - groups, n - actions of a group, s - all groups' actions concatenated

import torch
import torch.nn.functional as F
from torch.distributions import Categorical

from discrete_continuous_embed_readout import Readout

from . import as_dist, num_discrete_arg, one_hots, with_group_axis, without_group_axis

NEG_INF = float('-inf')
DIM = 16
BATCH = (4, 5)
DRAWS = (100, 200)  # 20k draws per sampling check

# (group sizes, use_parallel_multi_discrete). Groups (4, 5, 5) pad cheaply, so
# the parallel flag really takes the batched (padded) path for them; (3, 7, 2)
# are uneven and fall back to the loop even with the flag on.
MASK_CASES = [((6,), True), ((4, 5, 5), True), ((4, 5, 5), False), ((3, 7, 2), True)]
MASK_CASE_IDS = ['one-group', 'multi-parallel', 'multi-sequential', 'multi-uneven']
MULTI_MASK_CASES = [c for c in MASK_CASES if len(c[0]) > 1]
MULTI_MASK_IDS = [i for c, i in zip(MASK_CASES, MASK_CASE_IDS) if len(c[0]) > 1]


def with_table(sizes, parallel=True, num_continuous=0, **kwargs):
    """A Readout whose table is drawn N(0, 1) (not the tiny init), so logits differ clearly."""
    readout = Readout(DIM, num_discrete=num_discrete_arg(sizes) if sizes else 0, num_continuous=num_continuous, **kwargs)
    with torch.no_grad():
        readout.embeddings.weight.normal_()
    readout.use_parallel_multi_discrete = parallel
    return readout


def embeds(batch=BATCH):
    return torch.randn(*batch, DIM) * 0.5


def random_masks(sizes, batch):
    """Random masks with at least one allowed action per row; the first row of
    each group allows exactly one action (its last)."""
    masks = []
    for n in sizes:
        mask = torch.rand(*batch, n) < 0.5
        mask |= F.one_hot(torch.randint(0, n, batch), n).bool()
        mask.view(-1, n)[0] = F.one_hot(torch.tensor(n - 1), n).bool()
        masks.append(mask)
    return masks


def boosted(groups, masks, by=4.0):
    """Raise the masked actions' logits, so that ignoring the mask would draw them often."""
    return [g + by * (~m).float() for g, m in zip(groups, masks)]


def cat(masks):
    return torch.cat(list(masks), dim=-1)


def mask_arg(masks, form='concat'):
    """A mask as a readout takes it: ``(..., n)`` / ``(..., sum n_g)``, or a tuple."""
    return tuple(masks) if form == 'tuple' else cat(masks)


def filled(groups, masks):
    return [g.masked_fill(~m, NEG_INF) for g, m in zip(groups, masks)]


def reference(groups, masks):
    """``torch.distributions.Categorical`` per group on the masked logits."""
    return [Categorical(logits=g, validate_args=False) for g in filled(groups, masks)]


def per_group(values, sizes):
    """``(...)`` for one group, ``(..., g)`` for several (the readout's convention)."""
    out = torch.stack(values, dim=-1)
    return out.squeeze(-1) if len(sizes) == 1 else out


def ref_log_prob(groups, masks, ids):
    """``ids``: ``(..., g)``."""
    return per_group([c.log_prob(ids[..., i]) for i, c in enumerate(reference(groups, masks))], groups)


def ref_entropy(groups, masks):
    return per_group([c.entropy() for c in reference(groups, masks)], groups)


def hand_kl(true_groups, pred_groups, masks):
    """KL(true || pred) summed by hand over the allowed actions (both masked alike)."""
    kls = []
    for t, p, m in zip(filled(true_groups, masks), filled(pred_groups, masks), masks):
        lt, lp = F.log_softmax(t, dim=-1), F.log_softmax(p, dim=-1)
        terms = torch.where(m, lt.exp() * (lt - lp), torch.zeros_like(lt))
        kls.append(terms.sum(-1))
    return per_group(kls, true_groups)


def ref_cross_entropy(groups, masks, ids):
    """Per-entry ``F.cross_entropy`` on the masked logits: ``(..., g)``."""
    losses = []
    for i, g in enumerate(filled(groups, masks)):
        losses.append(F.cross_entropy(g.reshape(-1, g.shape[-1]), ids[..., i].reshape(-1), reduction='none').view(ids.shape[:-1]))
    return torch.stack(losses, dim=-1)


def draw_ids(masks):
    """One allowed id per row and group: ``(..., g)``."""
    return torch.stack([torch.multinomial(m.reshape(-1, m.shape[-1]).float(), 1).view(m.shape[:-1]) for m in masks], dim=-1)


def all_ids(sizes, batch):
    """Uniform ids over each whole group (masked ones included): ``(..., g)``."""
    return torch.stack([torch.randint(0, n, batch) for n in sizes], dim=-1)


SAMPLE_MODES = {
    'random': dict(temperature=1.0),
    'random-cold': dict(temperature=0.5),
    'greedy': dict(temperature=0.0),
    'differentiable-hard': dict(differentiable=True),
    'differentiable-soft': dict(differentiable=True, hard=False),
    'differentiable-greedy': dict(temperature=0.0, differentiable=True),
}
GREEDY = {'greedy', 'differentiable-greedy', 'mode'}


def draw(readout, dist, mode, mask):
    if mode == 'mode':
        return readout.mode(dist, action_mask=mask)
    if mode == 'sample_discrete':
        return readout.sample_discrete(dist, action_mask=mask)
    return readout.sample(dist, action_mask=mask, **SAMPLE_MODES[mode])


def as_weights(out, mode, sizes):
    """Concatenated per-group weights ``(..., sum n_g)`` of a draw."""
    if mode.startswith('differentiable'):
        return out
    return one_hots(with_group_axis(out, sizes), sizes)


def masked_results(readout, sizes, logits, other, ids, mask, x=None, **selector):
    """Every masked entry point, each sampler from the same seed."""
    dist, target = as_dist(logits), without_group_axis(ids, sizes)
    out = {
        'log_prob': readout.log_prob(dist, target, action_mask=mask, **selector),
        'entropy': readout.entropy(dist, action_mask=mask, **selector),
        'kl_div': readout.kl_div(dist, as_dist(other), action_mask=mask, **selector),
        'calculate_loss': readout.calculate_loss(dist, target, action_mask=mask, **selector),
    }
    for mode in ('random', 'greedy', 'differentiable-hard', 'differentiable-soft'):
        torch.manual_seed(1)
        out[mode] = readout.sample(dist, action_mask=mask, **SAMPLE_MODES[mode], **selector)
    if x is not None:
        out['forward'] = readout(x, action_mask=mask, **selector)
        out['forward_loss'] = readout(x, target, action_mask=mask, **selector)
    return out


def assert_same_results(a, b):
    assert a.keys() == b.keys()
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=0, atol=0, msg=lambda m, key=key: f'{key}: {m}')

