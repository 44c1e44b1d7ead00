"""Per-token log-probs, entropies and KL straight from the embeddings
(``Readout.log_prob_from_embeds``, ``Readout.kl_div_from_embeds``), against the
logits path computed independently: values, gradients with per-token upstream
gradients, double backward, precision modes, masks."""

import pytest
import torch
from helpers import TEMPERATURE_FORMS, float_value
from helpers.internals import use_chunks_in_cache_blocks, use_small_fused_chunks

from discrete_continuous_embed_readout import EmbedAndReadout, Readout

VOCAB, DIM = 37, 16


def reference(readout, x, targets, keep, temperature=1.0):
    """log softmax(logits / T)[target] and the entropy, from the plain logits (float64)."""
    logits = readout(x).double() / temperature
    log_p = logits.log_softmax(-1)
    picked = log_p.gather(-1, targets.clamp(min=0)[..., None]).squeeze(-1)
    entropy = -(log_p.exp() * log_p).sum(-1)
    return picked * keep, entropy * keep


def kl_reference(readout_true, x_true, readout_pred, x_pred, keep, temperature=1.0):
    log_p = (readout_true(x_true).double() / temperature).log_softmax(-1)
    log_q = (readout_pred(x_pred).double() / temperature).log_softmax(-1)
    return (log_p.exp() * (log_p - log_q)).sum(-1) * keep


def data(dtype=torch.float64, shape=(3, 9)):
    x = torch.randn(*shape, DIM, dtype=dtype, requires_grad=True)
    targets = torch.randint(0, VOCAB, shape)
    targets[0, 0] = -1  # ignore_index
    mask = torch.rand(shape) > 0.25
    return x, targets, mask, mask & (targets != -1)


@pytest.mark.parametrize('temperature', [1.0, 0.6])
@pytest.mark.parametrize('softcap', [None, 3.0])
@pytest.mark.parametrize('chunks', ['one', 'several', 'in cache blocks'])
def test_log_probs_and_entropies_match_the_logits_path_with_gradients(temperature, softcap, chunks, monkeypatch):
    if chunks == 'several':
        use_small_fused_chunks(monkeypatch)
    elif chunks == 'in cache blocks':  # chunks of 7 rows, blocks of 5 (two tiles): the last one partial
        use_chunks_in_cache_blocks(monkeypatch, 7, block_bytes=10 * VOCAB * 8)
    readout = Readout(DIM, num_discrete=VOCAB, logit_softcap=softcap).double()
    x, targets, mask, keep = data()
    log_p, entropy = readout.log_prob_from_embeds(x, targets, temperature=temperature, return_entropy=True, loss_mask=mask)
    ref_log_p, ref_entropy = reference(readout, x, targets, keep, temperature)
    torch.testing.assert_close(log_p, ref_log_p, atol=1e-10, rtol=0)
    torch.testing.assert_close(entropy, ref_entropy, atol=1e-10, rtol=0)
    advantage, bonus = torch.randn_like(log_p), torch.randn_like(log_p)  # per-token upstream gradients
    ours = torch.autograd.grad((log_p.exp() * advantage + entropy * bonus).sum(), (x, readout.embeddings.weight))
    theirs = torch.autograd.grad((ref_log_p.exp() * advantage + ref_entropy * bonus).sum(), (x, readout.embeddings.weight))
    for a, b in zip(ours, theirs):
        torch.testing.assert_close(a, b, atol=1e-10, rtol=0)


def test_double_backward_matches_the_logits_path():
    readout = Readout(DIM, num_discrete=VOCAB).double()
    x, targets, mask, keep = data()
    g = torch.randn(3, 9, dtype=torch.float64)
    results = []
    for log_p, entropy in (readout.log_prob_from_embeds(x, targets, return_entropy=True, loss_mask=mask), reference(readout, x, targets, keep)):
        gx, gw = torch.autograd.grad(((log_p + 0.1 * entropy) * g).sum(), (x, readout.embeddings.weight), create_graph=True)
        results.append(torch.autograd.grad(gx.square().sum() + gw.square().sum(), (x, readout.embeddings.weight)))
    for a, b in zip(*results):
        torch.testing.assert_close(a, b, atol=1e-9, rtol=0)


def test_double_backward_of_nonlinear_functions_of_the_outputs():
    # a PPO ratio exp(log p - old) and a squared KL: upstream gradients that depend on the op's own outputs
    readout, teacher = Readout(DIM, num_discrete=VOCAB).double(), Readout(DIM, num_discrete=VOCAB).double()
    x, targets, mask, keep = data()
    x_true = torch.randn(3, 9, DIM, dtype=torch.float64)
    old, advantage = torch.randn(3, 9, dtype=torch.float64) - 3.0, torch.randn(3, 9, dtype=torch.float64)
    ours = (*readout.log_prob_from_embeds(x, targets, return_entropy=True, loss_mask=mask), readout.kl_div_from_embeds(x_true, x, readout_true=teacher))
    theirs = (*reference(readout, x, targets, keep), kl_reference(teacher, x_true, readout, x, torch.ones(3, 9)))
    results = []
    for log_p, entropy, kl in (ours, theirs):
        objective = ((log_p - old).exp() * advantage * keep + entropy.square() + kl.square()).sum()
        gx, gw = torch.autograd.grad(objective, (x, readout.embeddings.weight), create_graph=True)
        results.append(torch.autograd.grad(gx.square().sum() + gw.square().sum(), (x, readout.embeddings.weight)))
    for a, b in zip(*results):
        torch.testing.assert_close(a, b, atol=1e-9, rtol=0)


def test_float32_matches_to_1e5_and_dropped_tokens_are_zero():
    readout = Readout(DIM, num_discrete=VOCAB)
    x, targets, mask, keep = data(torch.float32)
    log_p = readout.log_prob_from_embeds(x, targets, loss_mask=mask)
    ref, _ = reference(readout, x, targets, keep)
    torch.testing.assert_close(log_p.double(), ref, atol=1e-5, rtol=0)
    assert (log_p[~keep] == 0).all()


def test_weight_tying_sends_gradients_into_the_shared_table():
    embed, readout = EmbedAndReadout(DIM, num_discrete=VOCAB, weight_tie=True)
    ids = torch.randint(0, VOCAB, (2, 5))
    log_p = readout.log_prob_from_embeds(embed(ids), ids)
    (grad,) = torch.autograd.grad(log_p.sum(), embed.embeddings.weight)
    ref = torch.autograd.grad(readout(embed(ids)).log_softmax(-1).gather(-1, ids[..., None]).sum(), embed.embeddings.weight)[0]
    torch.testing.assert_close(grad, ref, atol=1e-5, rtol=0)


def test_bfloat16_autocast_computes_the_softmax_in_float32():
    readout = Readout(DIM, num_discrete=VOCAB)
    x, targets, mask, keep = data(torch.float32)
    with torch.autocast('cpu', dtype=torch.bfloat16):
        log_p = readout.log_prob_from_embeds(x, targets, loss_mask=mask)
    assert log_p.dtype == torch.float32
    logits = (x.bfloat16() @ readout.embeddings.weight.bfloat16().T).float()  # what autocast's matmul gives
    ref = logits.log_softmax(-1).gather(-1, targets.clamp(min=0)[..., None]).squeeze(-1) * keep
    torch.testing.assert_close(log_p, ref, atol=1e-4, rtol=0)


def test_no_grad_and_empty_batches():
    readout = Readout(DIM, num_discrete=VOCAB)
    x, targets, _, _ = data(torch.float32)
    with torch.no_grad():
        log_p = readout.log_prob_from_embeds(x, targets)
    assert not log_p.requires_grad
    empty = readout.log_prob_from_embeds(torch.randn(0, DIM, requires_grad=True), torch.zeros(0, dtype=torch.long), return_entropy=True)
    assert [t.shape for t in empty] == [(0,), (0,)]


def test_vmap_of_grad_takes_the_plain_formulation():
    readout = Readout(DIM, num_discrete=VOCAB).double()
    x, targets, _, _ = data()
    target = targets.clamp(min=0)

    def token_log_prob(xi, ti):
        return readout.log_prob_from_embeds(xi[None], ti[None]).sum()

    grads = torch.func.vmap(torch.func.grad(token_log_prob))(x.detach().reshape(-1, DIM), target.reshape(-1))
    ref = torch.autograd.grad(reference(readout, x, target, torch.ones_like(target, dtype=torch.bool))[0].sum(), x)[0]
    torch.testing.assert_close(grads, ref.reshape(-1, DIM), atol=1e-10, rtol=0)


@pytest.mark.parametrize('temperature', [1.0, 1.7])
def test_kl_from_embeddings_matches_kl_on_logits_with_gradients_on_both_sides(temperature):
    student, teacher = Readout(DIM, num_discrete=VOCAB, logit_softcap=4.0).double(), Readout(DIM + 3, num_discrete=VOCAB).double()
    x, _, mask, _ = data()
    x_true = torch.randn(3, 9, DIM + 3, dtype=torch.float64, requires_grad=True)
    kl = student.kl_div_from_embeds(x_true, x, readout_true=teacher, temperature=temperature, loss_mask=mask)
    ref = kl_reference(teacher, x_true, student, x, mask, temperature)
    torch.testing.assert_close(kl, ref, atol=1e-10, rtol=0)
    g = torch.randn_like(kl)
    inputs = (x, x_true, student.embeddings.weight, teacher.embeddings.weight)
    for a, b in zip(torch.autograd.grad((kl * g).sum(), inputs), torch.autograd.grad((ref * g).sum(), inputs)):
        torch.testing.assert_close(a, b, atol=1e-10, rtol=0)


def test_kl_against_its_own_table_is_zero_for_the_same_embeddings_and_agrees_with_readout_kl_div():
    readout = Readout(DIM, num_discrete=VOCAB)
    x, _, _, _ = data(torch.float32)
    assert readout.kl_div_from_embeds(x, x).abs().max() < 1e-6
    y = torch.randn_like(x)
    torch.testing.assert_close(readout.kl_div_from_embeds(x, y), readout.kl_div(readout(x), readout(y)), atol=1e-5, rtol=0)


def test_clear_errors():
    multi = Readout(DIM, num_discrete=(3, 4))
    with pytest.raises(ValueError, match='one discrete group'):
        multi.log_prob_from_embeds(torch.randn(2, DIM), torch.zeros(2, 2, dtype=torch.long))
    readout = Readout(DIM, num_discrete=VOCAB)
    with pytest.raises(IndexError, match='targets'):
        readout.log_prob_from_embeds(torch.randn(2, DIM), torch.tensor([0, VOCAB]))
    with pytest.raises(ValueError, match='temperature'):
        readout.log_prob_from_embeds(torch.randn(2, DIM), torch.tensor([0, 1]), temperature=0.0)
    with pytest.raises(ValueError, match='same vocabulary'):
        readout.kl_div_from_embeds(torch.randn(2, DIM), torch.randn(2, DIM), readout_true=Readout(DIM, num_discrete=VOCAB + 1))


@pytest.mark.parametrize('dtype', [torch.float16, torch.bfloat16], ids=str)
def test_half_precision_embeddings_into_a_float32_readout_score_in_float32(dtype):
    readout = Readout(DIM, num_discrete=VOCAB)
    x, targets, mask, keep = data(torch.float32)
    half = x.detach().to(dtype)
    log_p, entropy = readout.log_prob_from_embeds(half, targets, return_entropy=True, loss_mask=mask)
    assert log_p.dtype == torch.float32
    ref_log_p, ref_entropy = reference(readout, half.float(), targets, keep)
    torch.testing.assert_close(log_p.double(), ref_log_p, atol=1e-5, rtol=0)
    torch.testing.assert_close(entropy.double(), ref_entropy, atol=1e-5, rtol=0)


# selectors on both sides of the KL

SELECTORS = [[list(range(0, 12))], [list(range(12, 24))], [list(range(30, 37)) + list(range(0, 5))]]  # three groups of 12 rows


def selected_kl_reference(readout_true, x_true, true_selector, readout_pred, x_pred, pred_selector, keep, temperature):
    """KL on the logits each readout computes under its selector (``readout.kl_div``'s path)."""
    logits_true = readout_true(x_true, **true_selector) / temperature
    logits_pred = readout_pred(x_pred, **pred_selector) / temperature
    return readout_pred.kl_div(logits_true, logits_pred, **pred_selector) * keep


KL_SELECTOR_CASES = {
    # readout_true (None: the student), the pred side's selector, the true side's selector arguments
    'same readout, the pred selector on both sides': (False, dict(selector_index=1), {}),
    'same readout, another selector for the true side': (False, dict(selector_index=2), dict(selector_index_true=0)),
    'same readout, a runtime config for the true side': (False, dict(selector_index=0), dict(selector_config_true=[list(range(25, 37))])),
    'a teacher with its own selectors': (True, dict(selector_config=[list(range(5, 17))]), dict(selector_index_true=2)),
}


@pytest.mark.parametrize('case', list(KL_SELECTOR_CASES))
def test_kl_from_embeddings_under_selectors_matches_kl_div_on_the_selected_logits(case):
    with_teacher, pred_args, true_args = KL_SELECTOR_CASES[case]
    student = Readout(DIM, num_discrete=VOCAB, selectors=SELECTORS)
    teacher = Readout(DIM + 3, num_discrete=VOCAB, selectors=SELECTORS, logit_softcap=3.0) if with_teacher else None
    with torch.no_grad():  # logits of order 1, so that the KL is too
        for readout in filter(None, (student, teacher)):
            readout.embeddings.weight.normal_(0, 0.4)
    x = torch.randn(3, 9, DIM, requires_grad=True)
    x_true = torch.randn(3, 9, DIM + 3 if with_teacher else DIM, requires_grad=True)
    mask = torch.rand(3, 9) > 0.25
    kl = student.kl_div_from_embeds(x_true, x, readout_true=teacher, temperature=1.3, loss_mask=mask, **pred_args, **true_args)
    true_selector = {k.removesuffix('_true'): v for k, v in true_args.items()} or pred_args
    ref = selected_kl_reference(teacher or student, x_true, true_selector, student, x, pred_args, mask, 1.3)
    torch.testing.assert_close(kl, ref, atol=1e-5, rtol=0)
    assert ref.mean() > 0.1  # the two sides differ: the check has teeth
    g = torch.randn_like(kl)
    inputs = (x, x_true, student.embeddings.weight, *((teacher.embeddings.weight,) if teacher else ()))
    for a, b in zip(torch.autograd.grad((kl * g).sum(), inputs), torch.autograd.grad((ref * g).sum(), inputs)):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=0)


def test_kl_from_embeddings_with_selectors_needs_an_index_and_groups_of_one_size():
    student = Readout(DIM, num_discrete=VOCAB, selectors=[*SELECTORS, [list(range(4))]])
    x = torch.randn(2, DIM)
    with pytest.raises(ValueError, match='selector_index is required'):
        student.kl_div_from_embeds(x, x)
    with pytest.raises(ValueError, match=r'same vocabulary \(4 vs 12\)'):
        student.kl_div_from_embeds(x, x, selector_index=0, selector_index_true=3)


# ids with a trailing group axis (auto_squeeze_single_output=False)


def test_ids_with_a_group_axis_score_as_log_prob_takes_them_and_keep_the_axis():
    readout = Readout(DIM, num_discrete=VOCAB, auto_squeeze_single_output=False).double()
    x, targets, mask, keep = data()
    ids = targets[..., None]  # (3, 9, 1), as log_prob and forward take them on this readout
    log_p, entropy = readout.log_prob_from_embeds(x, ids, return_entropy=True, loss_mask=mask)
    log_softmax = (x @ readout.embeddings.weight.T).log_softmax(-1)  # independent of the readout's paths
    ref_log_p = log_softmax.gather(-1, ids.clamp(min=0)) * keep[..., None]
    ref_entropy = -(log_softmax.exp() * log_softmax).sum(-1, keepdim=True) * keep[..., None]
    assert log_p.shape == entropy.shape == readout.log_prob(readout(x), ids).shape == (3, 9, 1)
    torch.testing.assert_close(log_p, ref_log_p, atol=1e-10, rtol=0)
    torch.testing.assert_close(entropy, ref_entropy, atol=1e-10, rtol=0)
    g = torch.randn_like(log_p)
    torch.testing.assert_close(torch.autograd.grad((log_p * g).sum(), x)[0], torch.autograd.grad((ref_log_p * g).sum(), x)[0], atol=1e-10, rtol=0)
    plain = readout.log_prob_from_embeds(x, targets, loss_mask=mask)  # ids without the axis: as before
    torch.testing.assert_close(plain, ref_log_p.squeeze(-1), atol=1e-10, rtol=0)
    with pytest.raises(ValueError, match=r'targets must have shape \(3, 9, 1\).*got a tensor of shape \(3, 9, 2\)'):
        readout.log_prob_from_embeds(x, targets[..., None].expand(3, 9, 2))


@pytest.mark.parametrize('form', list(TEMPERATURE_FORMS))
def test_any_real_scalar_temperature_divides_the_logits(form):
    temperature = TEMPERATURE_FORMS[form]
    readout = Readout(DIM, num_discrete=VOCAB).double()
    x, targets, mask, keep = data()
    log_p, entropy = readout.log_prob_from_embeds(x, targets, temperature=temperature, return_entropy=True, loss_mask=mask)
    ref_log_p, ref_entropy = reference(readout, x, targets, keep, float_value(temperature))
    torch.testing.assert_close(log_p, ref_log_p, atol=1e-10, rtol=0)
    torch.testing.assert_close(entropy, ref_entropy, atol=1e-10, rtol=0)
    y = torch.randn_like(x)
    kl = readout.kl_div_from_embeds(x, y, temperature=temperature, loss_mask=mask)
    torch.testing.assert_close(kl, kl_reference(readout, x, readout, y, mask, float_value(temperature)), atol=1e-10, rtol=0)
