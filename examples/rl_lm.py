"""RL on a language model: GRPO fine-tuning of the character LM of ``train_char_lm.py``
towards a verifiable reward, with the whole objective computed by one fused call from
the hidden states.

The character LM is first trained briefly on ``examples/data/small_things.txt`` (as in
``train_char_lm.py``); a frozen copy is kept as the reference policy. Then, for a few
rounds, each of several prompts gets a group of sampled continuations; the reward of a
continuation is the fraction of its characters that are the target character (``--target``,
``'e'`` by default: verifiable, no reward model). Advantages are the rewards normalised
within each group (GRPO). The update minimises GRPO's clipped-ratio objective with a k3
KL penalty to the reference and an entropy bonus, in one call:

- ``readout.policy_loss_from_embeds(hidden, tokens, advantages, old_log_probs=...,
  ref_log_probs=..., kl_coef=..., entropy_coef=..., loss_type='grpo', loss_mask=...)``
  returns the loss (its gradients formed chunk by chunk in the same pass, never holding
  the ``(tokens, vocab)`` logits) and the metrics trainers log (ratio, clip fractions,
  KL, entropy);
- ``reference.readout.log_prob_from_embeds(reference_hidden, tokens)`` gives the
  reference policy's log-probs of the sampled tokens, once per round.

Each round also times, on the same batch, the per-token path the call replaces
(``log_prob_from_embeds(..., return_entropy=True)`` and the formula written out) and
checks that both give the same loss. It prints the mean reward before and after, the KL
to the reference and the time per update of each path; the last line, ``RESULT {...}``,
has them as JSON, for ``benchmarks/examples_table.py``.

    python examples/rl_lm.py             # about a minute on 2 CPU cores
    python examples/rl_lm.py --help
"""

from __future__ import annotations

import argparse
import copy
import json
import statistics
import sys
import time
from pathlib import Path

import torch
from torch import Tensor
from tqdm import tqdm

# examples/ is not a package: the character LM imports both as a script and by file path (the tests)
if str(Path(__file__).resolve().parent) not in sys.path:
    sys.path.insert(0, str(Path(__file__).resolve().parent))
from train_char_lm import DATA, CharLM, load_text, random_batch, warmup_cosine  # noqa: E402


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument('--target', default='e', help='the character the reward counts')
    parser.add_argument('--pretrain-steps', type=int, default=300, help='language-model steps before RL')
    parser.add_argument('--rounds', type=int, default=40, help='RL rounds (sample, then update)')
    parser.add_argument('--prompts', type=int, default=8, help='prompts per round')
    parser.add_argument('--group', type=int, default=8, help='continuations per prompt (the GRPO group)')
    parser.add_argument('--length', type=int, default=24, help='characters generated per continuation')
    parser.add_argument('--epochs', type=int, default=2, help='updates per round on its samples')
    parser.add_argument('--clip', type=float, default=0.2, help="the ratio's clip range")
    parser.add_argument('--entropy-bonus', type=float, default=0.01)
    parser.add_argument('--kl-weight', type=float, default=0.3, help='weight of the KL to the reference policy')
    parser.add_argument('--lr', type=float, default=1e-3, help='RL learning rate')
    parser.add_argument('--dim', type=int, default=64)
    parser.add_argument('--depth', type=int, default=2)
    parser.add_argument('--heads', type=int, default=2)
    parser.add_argument('--context', type=int, default=48)
    parser.add_argument('--threads', type=int, default=1, help='torch CPU threads (more only help on an otherwise idle machine)')
    parser.add_argument('--seed', type=int, default=0)
    return parser.parse_args(argv)


def hidden(model: CharLM, ids: Tensor) -> Tensor:
    """The decoder's output for each position: what the readout turns into next-character logits."""
    return model.decoder(model.embed(ids))


def pretrain(model: CharLM, data: Tensor, args, generator: torch.Generator) -> float:
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=0.1)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, warmup_cosine(args.pretrain_steps, warmup=max(1, args.pretrain_steps // 20)))
    loss = torch.tensor(float('nan'))
    for _ in tqdm(range(args.pretrain_steps), desc='pretraining', unit='step'):
        loss = model(*random_batch(data, 32, args.context, generator))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        schedule.step()
    return loss.item()


@torch.no_grad()
def rollout(model: CharLM, prompts: Tensor, args, generator: torch.Generator) -> tuple[Tensor, Tensor]:
    """``group`` continuations of each prompt: ids ``(prompts * group, prompt + length)``
    and their log-probs under the sampling policy ``(prompts * group, length)``."""
    ids = prompts.repeat_interleave(args.group, dim=0)
    log_probs = []
    for _ in range(args.length):
        last = hidden(model, ids[:, -args.context :])[:, -1]
        token, log_prob = model.readout.sample(model.readout(last), generator=generator, return_log_prob=True)
        ids, log_probs = torch.cat((ids, token[:, None]), dim=1), [*log_probs, log_prob]
    return ids, torch.stack(log_probs, dim=1)


def rewards(ids: Tensor, prompt_length: int, target: int) -> Tensor:
    """The fraction of generated characters equal to ``target``: checkable, no reward model."""
    return (ids[:, prompt_length:] == target).float().mean(-1)


def round_batch(model, reference, ids, sampled_log_probs, prompt_length: int):
    """What a round's updates need: ``(inputs, targets, generated mask, old and reference
    log-probs)``, all ``(samples, positions)``; prompt positions are masked out."""
    inputs, targets = ids[:, :-1], ids[:, 1:]
    generated = torch.zeros_like(targets, dtype=torch.bool)
    generated[:, prompt_length - 1 :] = True  # score only what the policy generated
    old_log_probs = torch.zeros(targets.shape)
    old_log_probs[:, prompt_length - 1 :] = sampled_log_probs
    with torch.no_grad():
        ref_log_probs = reference.readout.log_prob_from_embeds(hidden(reference, inputs), targets)
    return inputs, targets, generated, old_log_probs, ref_log_probs


def grpo_loss(model, batch, advantages, args):
    """GRPO with a KL to the reference and an entropy bonus: one fused call."""
    inputs, targets, generated, old_log_probs, ref_log_probs = batch
    return model.readout.policy_loss_from_embeds(
        hidden(model, inputs), targets, advantages, old_log_probs=old_log_probs, ref_log_probs=ref_log_probs, loss_type='grpo',
        clip=(args.clip, args.clip), kl_coef=args.kl_weight, entropy_coef=args.entropy_bonus, loss_mask=generated,
    )  # fmt: skip


def per_token_grpo_loss(model, batch, advantages, args) -> Tensor:
    """The same objective from per-token log-probs and entropies (the path the fused call replaces)."""
    inputs, targets, generated, old_log_probs, ref_log_probs = batch
    log_probs, entropy = model.readout.log_prob_from_embeds(hidden(model, inputs), targets, return_entropy=True, loss_mask=generated)
    ratio = (log_probs - old_log_probs).exp()
    clipped = torch.minimum(ratio * advantages[:, None], ratio.clamp(1 - args.clip, 1 + args.clip) * advantages[:, None])
    k3 = (ref_log_probs - log_probs).exp() - (ref_log_probs - log_probs) - 1
    per_token = (-clipped + args.kl_weight * k3 - args.entropy_bonus * entropy) * generated
    return (per_token.sum(-1) / generated.sum(-1)).mean()


def update(model, optimizer, batch, advantages, args, compare: bool) -> dict:
    """One GRPO step; with ``compare``, first the per-token path's loss and gradients on
    the same batch (timed, then discarded)."""
    stats = {}
    if compare:
        optimizer.zero_grad()
        start = time.perf_counter()
        per_token = per_token_grpo_loss(model, batch, advantages, args)
        per_token.backward()
        stats.update(per_token_seconds=time.perf_counter() - start, per_token_loss=per_token.item())
    optimizer.zero_grad()
    start = time.perf_counter()
    out = grpo_loss(model, batch, advantages, args)
    out.loss.backward()
    stats['seconds'] = time.perf_counter() - start
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    optimizer.step()
    return dict(stats, loss=out.loss.item(), kl=out.metrics.kl.item(), entropy=out.metrics.entropy.item())


def evaluate(model: CharLM, prompts: Tensor, args, target: int, seed: int) -> float:
    """Mean reward of fresh samples from fixed evaluation prompts (a fixed generator)."""
    ids, _ = rollout(model, prompts, args, torch.Generator().manual_seed(seed))
    return rewards(ids, prompts.shape[1], target).mean().item()


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    threads = torch.get_num_threads()
    torch.set_num_threads(args.threads)
    try:
        return run(args)
    finally:
        torch.set_num_threads(threads)  # leave the caller's setting (e.g. a test process) as it was


def run(args: argparse.Namespace) -> dict:
    started = time.perf_counter()
    torch.manual_seed(args.seed)
    generator = torch.Generator().manual_seed(args.seed)
    data, vocab = load_text(DATA)
    if args.target not in vocab:
        raise ValueError(f'--target {args.target!r} is not a character of the text')
    target = vocab.index(args.target)

    model = CharLM(len(vocab), args.dim, args.depth, args.heads)
    lm_loss = pretrain(model, data, args, generator)
    reference = copy.deepcopy(model).requires_grad_(False)
    model.eval(), reference.eval()  # no dropout: sampling and scoring see the same policy

    eval_prompts = random_batch(data, args.prompts, 8, torch.Generator().manual_seed(1))[0]
    before = evaluate(model, eval_prompts, args, target, seed=2)
    print(f'language model loss after pretraining {lm_loss:.3f} nats/char; mean reward (fraction of {args.target!r}) before RL: {before:.3f}')

    optimizer = torch.optim.Adam(model.parameters(), lr=args.lr)
    stats, times, differences = {}, {'fused': [], 'per_token': []}, []
    bar = tqdm(range(args.rounds), desc='GRPO', unit='round')
    for _ in bar:
        prompts = random_batch(data, args.prompts, 8, generator)[0]
        ids, sampled_log_probs = rollout(model, prompts, args, generator)
        reward = rewards(ids, prompts.shape[1], target).view(args.prompts, args.group)
        advantages = ((reward - reward.mean(-1, keepdim=True)) / (reward.std(-1, keepdim=True) + 1e-6)).view(-1)
        batch = round_batch(model, reference, ids, sampled_log_probs, prompts.shape[1])
        for epoch in range(args.epochs):
            stats = update(model, optimizer, batch, advantages, args, compare=epoch == 0)
            times['fused'].append(stats['seconds'])
            if 'per_token_seconds' in stats:
                times['per_token'].append(stats['per_token_seconds'])
                differences.append(abs(stats['per_token_loss'] - stats['loss']))
        bar.set_postfix(reward=f'{reward.mean().item():.3f}', kl=f'{stats["kl"]:.3f}')

    after = evaluate(model, eval_prompts, args, target, seed=2)
    seconds = time.perf_counter() - started
    fused_ms, per_token_ms = (1e3 * statistics.median(t) for t in (times['fused'], times['per_token']))
    print(f'mean reward before -> after: {before:.3f} -> {after:.3f}; KL to the reference (k3) {stats["kl"]:.3f} nats/token, entropy {stats["entropy"]:.3f}')
    print(f'time per update (loss + backward, median): policy_loss_from_embeds {fused_ms:.1f} ms, the per-token path {per_token_ms:.1f} ms; '
          f'largest loss difference between them {max(differences):.1e}')  # fmt: skip
    print(f'done in {seconds:.1f} s')
    result = dict(
        metric=f'mean reward: fraction of {args.target!r} in sampled continuations',
        before=before,
        after=after,
        digits=3,
        context=f'KL to the starting model {stats["kl"]:.2f} nats/token',
        note=f'one update (loss + backward, median) took {fused_ms:.0f} ms with `policy_loss_from_embeds` and {per_token_ms:.0f} ms on the '
        f'per-token path it replaces, same loss (largest difference {max(differences):.0e}); with 71 characters the decoder, not the '
        'readout, sets both times (the readout-bound comparison is in BENCHMARKS.md)',
    )
    print('RESULT ' + json.dumps(result))
    return dict(result=result, reward_before=before, reward_after=after, kl=stats['kl'], entropy=stats['entropy'], seconds=seconds,
                update_ms=fused_ms, per_token_update_ms=per_token_ms, largest_loss_difference=max(differences))  # fmt: skip


if __name__ == '__main__':
    main()
