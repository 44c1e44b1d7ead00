"""Character-level language model: a weight-tied ``EmbedAndReadout`` around an x-transformers ``Decoder``.

Shows the discrete path of the library end to end on real text: ``embed`` turns character
ids into vectors, a small causal transformer mixes them, and the tied ``readout`` (the same
table, used backwards) gives the next-character cross-entropy while training and samples
with a temperature and a top-k filter while generating.

    python examples/train_char_lm.py            # the defaults: about a minute on 2 CPU cores
    python examples/train_char_lm.py --help     # model size, steps, context, prompt, sampling

The text is ``examples/data/small_things.txt`` (original prose written for this project,
public domain, CC0); its last 10% is held out for validation and the vocabulary is the set
of characters in the file. The script shows a progress bar over the training steps with the
running training loss, prints the validation loss (nats per character) before training,
every ``--eval-every`` steps and at the end, then the uniform baseline ln(V) next to the
final validation loss, a sample generated from ``--prompt``, and last a ``RESULT {...}``
line: the validation loss before and after training as JSON, for
``benchmarks/examples_table.py``.
"""

import argparse
import json
import math
import time
from pathlib import Path

import torch
from torch import Tensor, nn
from tqdm import tqdm
from x_transformers import Decoder

from discrete_continuous_embed_readout import EmbedAndReadout

DATA = Path(__file__).resolve().parent / 'data' / 'small_things.txt'


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument('--data', type=Path, default=DATA, help='plain text file to train on')
    parser.add_argument('--val-fraction', type=float, default=0.1, help='the end of the file held out for validation')
    # the defaults were tuned for the best validation loss in about a minute on 2 CPU cores: on 51 KB
    # of text, longer runs of this model overfit, and wider ones learn less in the time
    parser.add_argument('--dim', type=int, default=64, help='model width (and embedding size)')
    parser.add_argument('--depth', type=int, default=4, help='transformer layers')
    parser.add_argument('--heads', type=int, default=2, help='attention heads (each of width dim / heads)')
    parser.add_argument('--context', type=int, default=64, help='characters the model sees at once')
    parser.add_argument('--batch-size', type=int, default=64)
    parser.add_argument('--steps', type=int, default=700, help='optimiser steps')
    parser.add_argument('--lr', type=float, default=3e-3, help='peak learning rate (linear warm-up, then cosine decay)')
    parser.add_argument('--weight-decay', type=float, default=0.1, help="AdamW's decoupled weight decay")
    parser.add_argument('--eval-every', type=int, default=100, help='steps between validation losses')
    parser.add_argument('--prompt', default='The old ', help='text the sample continues')
    parser.add_argument('--sample-length', type=int, default=300, help='characters to generate')
    parser.add_argument('--temperature', type=float, default=0.8)
    parser.add_argument('--top-k', type=int, default=10, help='sample only among the k most likely characters')
    parser.add_argument('--seed', type=int, default=0)
    parser.add_argument('--threads', type=int, default=1, help='torch CPU threads (more only help on an otherwise idle machine)')
    return parser.parse_args(argv)


# data


def load_text(path: Path) -> tuple[Tensor, list[str]]:
    """The file as a tensor of character ids, and the vocabulary (its sorted characters)."""
    text = path.read_text(encoding='utf-8')
    vocab = sorted(set(text))
    index = {char: i for i, char in enumerate(vocab)}
    return torch.tensor([index[char] for char in text]), vocab


def random_batch(data: Tensor, batch_size: int, context: int, generator: torch.Generator) -> tuple[Tensor, Tensor]:
    """Random windows of the training text; the targets are the inputs shifted by one."""
    starts = torch.randint(0, len(data) - context, (batch_size,), generator=generator)
    windows = torch.stack([data[start : start + context + 1] for start in starts])
    return windows[:, :-1], windows[:, 1:]


def validation_windows(data: Tensor, context: int) -> tuple[Tensor, Tensor]:
    """Windows half a context apart covering the validation text, so that every scored
    character has at least half a context of history. Each target is scored once: a
    window's first half, already scored by the window before, gets the readout's
    ignore_index (-1)."""
    stride = context // 2
    starts = range(0, len(data) - context, stride)
    if len(starts) == 0:
        raise ValueError(f'the validation text ({len(data)} characters) is shorter than one window of context + 1 = {context + 1}')
    windows = torch.stack([data[start : start + context + 1] for start in starts])
    inputs, targets = windows[:, :-1], windows[:, 1:].clone()
    targets[1:, : context - stride] = -1
    return inputs, targets


# model


class CharLM(nn.Module):
    """embed -> causal transformer -> readout, with one table for the first and the last."""

    def __init__(self, num_chars: int, dim: int, depth: int, heads: int):
        super().__init__()
        self.embed, self.readout = EmbedAndReadout(dim, num_discrete=num_chars, weight_tie=True)
        # rotary embeddings give the attention relative positions (no position table to learn),
        # here over the whole width of each head; attn_flash uses torch's fused attention, which
        # is also the faster one on a CPU
        head = dim // heads
        self.decoder = Decoder(
            dim=dim, depth=depth, heads=heads, attn_dim_head=head, rotary_pos_emb=True, rotary_emb_dim=head, attn_flash=True
        )

    def forward(self, ids: Tensor, targets: Tensor | None = None) -> Tensor:
        """Logits ``(batch, seq, num_chars)``, or the mean cross-entropy when given targets."""
        return self.readout(self.decoder(self.embed(ids)), targets)


@torch.no_grad()
def evaluate(model: CharLM, inputs: Tensor, targets: Tensor) -> float:
    """Validation loss in nats per character."""
    model.eval()
    loss = model(inputs, targets).item()
    model.train()
    return loss


# training


def warmup_cosine(steps: int, warmup: int):
    """Learning-rate factor: a linear warm-up (Adam's early steps are noisy), then a cosine
    decay to 10% so the last steps settle rather than bounce."""

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        progress = (step - warmup) / max(1, steps - warmup)
        return 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress))

    return factor


def train(model: CharLM, train_ids: Tensor, val: tuple[Tensor, Tensor], args, generator: torch.Generator) -> list[tuple[int, float]]:
    """Train for ``args.steps`` steps; returns ``(step, validation loss)`` at each evaluation."""
    # model.parameters() lists the tied table once, so it is not updated twice
    optimizer = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=args.weight_decay)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, warmup_cosine(args.steps, warmup=max(1, args.steps // 20)))
    history = []
    running = None
    bar = tqdm(range(1, args.steps + 1), desc='training', unit='step')
    for step in bar:
        loss = model(*random_batch(train_ids, args.batch_size, args.context, generator))
        optimizer.zero_grad()
        loss.backward()
        nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        schedule.step()

        # an exponential average: single batches are too noisy to read
        running = loss.item() if running is None else 0.9 * running + 0.1 * loss.item()
        bar.set_postfix(loss=f'{running:.3f}')
        if step % args.eval_every == 0 or step == args.steps:
            history.append((step, evaluate(model, *val)))
            tqdm.write(f'step {step:4d}  validation loss {history[-1][1]:.3f} nats/char')
    return history


# generation


def top_k(logits: Tensor, k: int) -> Tensor:
    """Keep the k largest logits; the rest become -inf and are never drawn."""
    kth_largest = logits.topk(min(k, logits.shape[-1]), dim=-1).values[..., -1:]
    return logits.masked_fill(logits < kth_largest, float('-inf'))


@torch.no_grad()
def generate(model: CharLM, prompt: Tensor, length: int, context: int, temperature: float, k: int, generator: torch.Generator) -> Tensor:
    """``length`` new character ids continuing ``prompt`` (1-d), one at a time."""
    model.eval()
    ids = prompt
    for _ in range(length):
        # rotary positions are relative, but the model never saw more than `context` characters
        logits = model(ids[None, -context:])[:, -1]
        next_id = model.readout.sample(logits, temperature=temperature, filter_fn=top_k, filter_kwargs=dict(k=k), generator=generator)
        ids = torch.cat((ids, next_id))
    model.train()
    return ids[len(prompt) :]


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

    data, vocab = load_text(args.data)
    split = int(len(data) * (1 - args.val_fraction))
    train_ids, val = data[:split], validation_windows(data[split:], args.context)
    unknown = set(args.prompt) - set(vocab)
    if unknown:
        raise ValueError(f'the prompt has characters that are not in the vocabulary: {sorted(unknown)}')
    print(f'{len(data):,} characters ({len(train_ids):,} train, {len(data) - split:,} validation), vocabulary of {len(vocab)}')

    model = CharLM(len(vocab), args.dim, args.depth, args.heads)
    print(f'{sum(p.numel() for p in model.parameters()):,} parameters')
    initial = evaluate(model, *val)
    print(f'step    0  validation loss {initial:.3f} nats/char')
    history = train(model, train_ids, val, args, generator)
    final = history[-1][1]

    uniform = math.log(len(vocab))
    print(f'uniform baseline ln({len(vocab)}) = {uniform:.3f} nats/char')
    print(f'final validation loss   = {final:.3f} nats/char ({final / math.log(2):.2f} bits/char)')

    prompt = torch.tensor([vocab.index(char) for char in args.prompt])
    sampled = generate(model, prompt, args.sample_length, args.context, args.temperature, args.top_k, generator)
    sample = ''.join(vocab[i] for i in sampled.tolist())
    print(f'\nsample (temperature {args.temperature}, top-{args.top_k}):\n{args.prompt}{sample}\n')

    seconds = time.perf_counter() - started
    print(f'done in {seconds:.1f} s')
    result = dict(
        metric='validation loss, nats/char',
        before=initial,
        after=final,
        digits=2,
        context=f'uniform baseline ln {len(vocab)} = {uniform:.2f}',
    )
    print('RESULT ' + json.dumps(result))
    return dict(
        result=result,
        uniform_loss=uniform,
        initial_val_loss=initial,
        final_val_loss=final,
        history=history,
        vocab=vocab,
        prompt=args.prompt,
        sample=sample,
        seconds=seconds,
    )


if __name__ == '__main__':
    main()
