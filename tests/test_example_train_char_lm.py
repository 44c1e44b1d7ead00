"""Smoke test of examples/train_char_lm.py: a tiny model, a few steps, a short sample."""

import math

from conftest import load_example

TINY = ['--dim', '32', '--depth', '1', '--heads', '2', '--context', '32', '--batch-size', '16', '--steps', '40', '--lr', '1e-2',
        '--eval-every', '20', '--prompt', 'The ', '--sample-length', '40', '--top-k', '5']  # fmt: skip


def test_train_char_lm_learns_and_samples():
    example = load_example('train_char_lm')
    metrics = example.main(TINY)

    vocab = metrics['vocab']
    assert metrics['uniform_loss'] == math.log(len(vocab))
    # a table initialised near zero starts at about the uniform loss, and a few steps learn the character frequencies at least
    assert abs(metrics['initial_val_loss'] - metrics['uniform_loss']) < 0.2
    assert metrics['final_val_loss'] < metrics['initial_val_loss'] - 0.5
    assert [step for step, _ in metrics['history']] == [20, 40]
    assert metrics['history'][-1][1] == metrics['final_val_loss']

    sample = metrics['sample']
    assert len(sample) == 40 and set(sample) <= set(vocab)

    # the fixed seed makes the run reproducible, sample included
    again = example.main(TINY)
    assert again['final_val_loss'] == metrics['final_val_loss'] and again['sample'] == sample
