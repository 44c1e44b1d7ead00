"""Loss-path configurations: every head and loss type, by name, with its targets
and an independent projection through the documented table layout."""

import torch
import torch.nn.functional as F
from torch.distributions import Beta, Kumaraswamy, Normal

from discrete_continuous_embed_readout import ParameterlessReadout, Readout

from . import MEAN_STD, pack, randint_groups, soft_clamp_log_var

D = 4  # embedding width
BATCH = (2, 3)
CLAMP = (-5.0, 2.0)  # a log_var_clamp_range

LOSS_CASES = {
    'discrete': dict(num_discrete=7, fused_cross_entropy=True),  # one group: forward takes the fused chunked cross entropy ('auto' would not, for 7 ids)
    'discrete_unfused': dict(num_discrete=7, fused_cross_entropy=False),
    'multi_parallel': dict(num_discrete=(3, 4, 5)),  # similar sizes: the padded batched pass
    'multi_sequential': dict(num_discrete=(3, 4, 5), use_parallel_multi_discrete=False),
    'multi_two_groups': dict(num_discrete=(4, 6)),
    'gaussian': dict(num_continuous=3),
    'gaussian_clamped': dict(num_continuous=3, continuous_dist_kwargs=dict(log_var_clamp_range=CLAMP)),
    'squashed': dict(num_continuous=3, continuous_squashed=True),
    'squashed_clamped': dict(num_continuous=3, continuous_squashed=True, continuous_dist_kwargs=dict(log_var_clamp_range=CLAMP)),
    'beta': dict(num_continuous=3, continuous_dist_type='beta'),
    'beta_unimodal': dict(num_continuous=3, continuous_dist_type='beta', continuous_dist_kwargs=dict(unimodal=True)),
    'kumaraswamy': dict(num_continuous=3, continuous_dist_type='kumaraswamy'),
    'mse': dict(num_continuous=3, continuous_log_var_embed=False),
    'l1': dict(num_continuous=3, continuous_log_var_embed=False, regression_loss_type='l1'),
    'mse_mean_std': dict(num_continuous=2, continuous_log_var_embed=False, continuous_mean_std=MEAN_STD[:2]),
    'gaussian_mean_std': dict(num_continuous=2, continuous_mean_std=MEAN_STD[:2]),
    'squashed_mean_std': dict(num_continuous=2, continuous_squashed=True, continuous_mean_std=MEAN_STD[:2]),
    'mixed': dict(num_discrete=7, num_continuous=2, fused_cross_entropy=True),  # fused discrete + gaussian
    'mixed_multi_beta': dict(num_discrete=(3, 4), num_continuous=2, continuous_dist_type='beta'),
}


class LossCase:
    """What a case name means: group sizes, continuous dims, head kind."""

    def __init__(self, name):
        self.name, self.kwargs = name, LOSS_CASES[name]
        nd = self.kwargs.get('num_discrete', 0)
        self.sizes = () if nd == 0 else ((nd,) if isinstance(nd, int) else tuple(nd))
        self.C = self.kwargs.get('num_continuous', 0)
        dist_kwargs = self.kwargs.get('continuous_dist_kwargs', {})
        self.clamp = dist_kwargs.get('log_var_clamp_range')
        self.unimodal = dist_kwargs.get('unimodal', False)
        self.mean_std = self.kwargs.get('continuous_mean_std')
        if not self.kwargs.get('continuous_log_var_embed', True):
            self.kind = self.kwargs.get('regression_loss_type', 'mse')
        elif self.kwargs.get('continuous_squashed', False):
            self.kind = 'squashed'
        else:
            self.kind = self.kwargs.get('continuous_dist_type', 'gaussian')

    @property
    def has_discrete(self):
        return len(self.sizes) > 0

    @property
    def single(self):
        return len(self.sizes) == 1

    @property
    def regression(self):
        return self.kind in ('mse', 'l1')

    @property
    def fused(self):  # what forward computes the discrete loss with (no option that disables it)
        return self.single and self.kwargs.get('fused_cross_entropy', 'auto') is True

    def readout(self, dtype=torch.float64, table=True):
        if not table:
            return ParameterlessReadout(**self.kwargs).to(dtype)
        readout = Readout(D, **self.kwargs)
        torch.nn.init.normal_(readout.embeddings.weight, std=0.5)  # the default 0.01 makes every loss flat
        return readout.to(dtype)

    def targets(self, batch=BATCH, dtype=torch.float64):
        d = c = None
        if self.has_discrete:
            d = torch.randint(0, self.sizes[0], batch) if self.single else randint_groups(self.sizes, batch)
        if self.C:
            if self.kind == 'squashed':
                c = torch.empty(*batch, self.C, dtype=dtype).uniform_(-0.9, 0.9)
            elif self.kind in ('beta', 'kumaraswamy'):
                c = torch.empty(*batch, self.C, dtype=dtype).uniform_(0.1, 0.9)  # far from the clip bounds
            else:
                c = torch.randn(*batch, self.C, dtype=dtype)
            if self.mean_std is not None:
                mean, std = self.mean_std.to(dtype).unbind(-1)
                c = c * std + mean
        return pack(d, c)

    def outputs(self, weight, x):
        """Independent projection: ``x @ weight.T`` split by the documented table layout
        ``[groups][means][log-vars]``. Returns ``(groups, params)``."""
        out = x @ weight.T
        nd = sum(self.sizes)
        groups = list(out[..., :nd].split(list(self.sizes), -1)) if self.sizes else None
        params = None
        if self.C:
            cont = out[..., nd:]
            params = cont if self.regression else torch.stack((cont[..., : self.C], cont[..., self.C : 2 * self.C]), -1)
        return groups, params

    def as_logits(self, groups, params):
        """``(groups, params)`` in the form ``forward`` returns them."""
        d = None if groups is None else (groups[0] if self.single else tuple(groups))
        return pack(d, params)


def split(case, obj):
    """``(discrete, continuous)`` of a case's targets / results (None for an absent part)."""
    if case.has_discrete and case.C:
        return obj
    return (obj, None) if case.has_discrete else (None, obj)


def parts(out):
    return list(out) if isinstance(out, tuple) else [out]


def total(out):
    return sum(p.sum() for p in parts(out))


def partial_mask(batch=BATCH):
    """A loss mask that leaves out three of the six positions."""
    mask = torch.ones(batch, dtype=torch.bool)
    mask[0, 1] = mask[1, 0] = mask[1, 2] = False
    return mask


# independent reference: per-entry losses from torch.distributions / F.cross_entropy


def reference_entries(case, groups, params, targets, action_mask=None):
    """Per-entry losses ``(..., G)`` and ``(..., C)`` in float64 (None for an absent part)."""
    d_t, c_t = split(case, targets)
    d = c = None
    if groups is not None:
        ids = d_t.unsqueeze(-1) if case.single else d_t
        masks = action_mask.split(list(case.sizes), -1) if action_mask is not None else [None] * len(groups)
        cols = []
        for g, (logits, m) in enumerate(zip(groups, masks)):
            logits = logits.double()
            if m is not None:
                logits = logits.masked_fill(~m, float('-inf'))
            t = ids[..., g]
            ce = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), t.reshape(-1).clamp(min=0), reduction='none')
            cols.append(torch.where(t == -1, 0.0, ce.reshape(t.shape)))
        d = torch.stack(cols, -1)
    if params is not None:
        p, t = params.double(), c_t.double()
        log_std = 0.0
        if case.mean_std is not None:
            mean, std = case.mean_std.double().unbind(-1)
            t, log_std = (t - mean) / std, std.log()
        if case.kind == 'mse':
            c = (p - t) ** 2
        elif case.kind == 'l1':
            c = (p - t).abs()
        elif case.kind in ('gaussian', 'squashed'):
            mean, log_var = p.unbind(-1)
            if case.clamp is not None:
                log_var = soft_clamp_log_var(log_var, *case.clamp)
            normal = Normal(mean, (0.5 * log_var).exp())
            if case.kind == 'squashed':
                c = -(normal.log_prob(torch.atanh(t)) - torch.log1p(-(t**2))) + log_std
            else:
                c = -normal.log_prob(t) + log_std
        else:
            off = 1.0 if case.unimodal else 1e-6
            a, b = (F.softplus(p) + off).unbind(-1)
            dist = Beta(a, b) if case.kind == 'beta' else Kumaraswamy(a, b)
            c = -dist.log_prob(t)
    return d, c


def reference_loss(case, groups, params, targets, loss_mask=None, action_mask=None, unreduced=False):
    d, c = reference_entries(case, groups, params, targets, action_mask)
    d_t, _ = split(case, targets)
    out = []
    for entries, is_discrete in ((d, True), (c, False)):
        if entries is None:
            out.append(None)
            continue
        keep = torch.ones_like(entries, dtype=torch.bool)
        if loss_mask is not None:
            keep = keep & loss_mask.unsqueeze(-1)
        if is_discrete:
            keep = keep & ((d_t.unsqueeze(-1) if case.single else d_t) != -1)
        if unreduced:
            zeroed = torch.where(keep, entries, 0.0)
            out.append(zeroed.squeeze(-1) if is_discrete and case.single else zeroed)
        else:
            out.append(entries[keep].mean() if keep.any() else entries.new_zeros(()))
    return pack(*out)
