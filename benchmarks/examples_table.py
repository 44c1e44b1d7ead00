"""The README's examples table, from fresh runs (``make examples-table``).

Runs each example in ``EXAMPLES`` as the README tells users to (its default arguments, plus
``--threads`` where the example takes it), reads the ``RESULT {...}`` line it prints last
and rewrites the table between the README's ``<!-- examples-table:start -->`` and
``<!-- examples-table:end -->`` comments. The numbers in the table are therefore always
those of the code at hand; rerun this after a change that moves them, and over every
example (without ``--only``) as the last step before a release. A rerun of unchanged code
moves a row a little (``RUN_TO_RUN``, which the table's notes quote).

The ``RESULT`` line is JSON with these keys:

- ``metric``: what is measured, in words (units included);
- ``before``, ``after``: its value for the untrained and the trained model, each a number
  or a list of numbers (one per part, shown separated by ``/``);
- ``digits``: the decimal places to show;
- ``context`` (optional): what to read the result against, shown next to it;
- ``note`` (optional): a sentence for the notes under the table.

Adding an example: append it to ``EXAMPLES`` and have it print the line.

    python benchmarks/examples_table.py                       # every example: several minutes
    python benchmarks/examples_table.py --only rl_pendulum.py  # rerun some rows, keep the others
    python benchmarks/examples_table.py --no-write            # print the table, leave the README
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import subprocess
import sys
import time
from dataclasses import dataclass
from importlib.metadata import version
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / 'README.md'
START, END = '<!-- examples-table:start -->', '<!-- examples-table:end -->'
HEADER = '| example | what it shows | metric | untrained baseline | trained result | run time | date | machine |'
# how much a row moves when the same code runs again (seeds fixed): measured once, a fresh
# clone against the table of 2026-11-27; remeasure when an example's training changes
RUN_TO_RUN = (
    'A rerun moves a row slightly (the seeds are fixed, but floating-point results can differ between machines and '
    'library builds, and training amplifies small differences): a fresh clone measured `cross_embodiment.py` at '
    '98.9 / 98.9 / 98.2 % (RMSE 0.014 / 0.181) where an earlier run gave 98.9 / 98.4 / 98.1 % '
    '(0.015 / 0.180), and `hybrid_actions.py` at 8.01 where it gave 8.02; differences of that size (0.5 points of '
    'accuracy, 0.001 of RMSE, 0.01 of return) are noise, not a change. The table is regenerated as the last step '
    'before a release.'
)


@dataclass(frozen=True)
class Example:
    file: str  # under examples/
    shows: str  # the 'what it shows' cell


EXAMPLES = [
    Example('quickstart.py', 'discrete, multi-discrete and mixed readouts trained a few steps (`make demo`)'),
    Example(
        'train_char_lm.py',
        'a character LM: weight-tied `EmbedAndReadout` around an x-transformers `Decoder`, trained on original '
        'public-domain text in `examples/data/`; generation with a temperature and a top-k `filter_fn`',
    ),
    Example(
        'gaussian_forecast.py',
        'next-value forecasting of noisy sine mixtures with a gaussian readout and `continuous_mean_std`; saves a plot '
        'of mean ± 2σ against the truth (`outputs/gaussian_forecast.png`)',
    ),
    Example(
        'rl_cartpole.py',
        'PPO on CartPole-v1 with the discrete readout: `sample(return_log_prob=True)`, `log_prob`, `entropy`, `mode` for evaluation',
    ),
    Example('rl_pendulum.py', 'PPO on Pendulum-v1 with a squashed gaussian rescaled to the action bounds'),
    Example(
        'hybrid_actions.py',
        'PPO on a Platform-style task with a `Dict(move=Discrete(3), speed=Box(...))` action space, one mixed '
        'readout through `SpaceAdapter`',
    ),
    Example(
        'hybrid_actions_torchrl.py',
        "the same task trained with TorchRL's `ClipPPOLoss`: one `CompositeActionDistribution` as the actor's "
        "`distribution_class`, `continuous_used_by` scoring only the chosen move's speed",
    ),
    Example(
        'cross_embodiment.py',
        'behaviour cloning of two robots with different action subsets sharing one table through registered selectors, trained jointly',
    ),
    Example(
        'rl_lm.py',
        "GRPO fine-tuning of the character LM towards a checkable reward (more `'e'`s) with one fused "
        '`policy_loss_from_embeds` call (clipped ratio, k3 KL to the frozen starting model, entropy bonus), timed against '
        'the per-token `log_prob_from_embeds` path it replaces',
    ),
    Example(
        'distributional_regression.py',
        'one MLP trained with four heads on `5x³ + 20 sin 4x` plus noise: mse, gaussian, two-hot (symlog bins) and HL-Gauss',
    ),
]


# the RESULT line


def parse_result(output: str) -> dict:
    """The JSON of the last ``RESULT {...}`` line of an example's output, checked."""
    lines = [line for line in output.splitlines() if line.startswith('RESULT ')]
    if not lines:
        raise ValueError('the output has no line starting with "RESULT "')
    result = json.loads(lines[-1][len('RESULT ') :])
    missing = {'metric', 'before', 'after', 'digits'} - set(result)
    if missing:
        raise ValueError(f'the RESULT line lacks {sorted(missing)}: {lines[-1]}')
    before, after = result['before'], result['after']
    if isinstance(before, list) != isinstance(after, list) or (isinstance(before, list) and len(before) != len(after)):
        raise ValueError(f'before and after differ in shape: {before} and {after}')
    if not all(isinstance(value, (int, float)) for value in _as_list(before) + _as_list(after)):
        raise ValueError(f'before and after must be numbers or lists of numbers: {before} and {after}')
    return result


def _as_list(value) -> list:
    return value if isinstance(value, list) else [value]


def show(value, digits: int) -> str:
    """A number, or several separated by ' / ', with a typographic minus as in the README's prose."""
    return ' / '.join(f'{number:.{digits}f}'.replace('-', '−') for number in _as_list(value))


# running


def machine() -> str:
    """CPU model, the cores this process may use, torch version."""
    cpu = platform.processor() or platform.machine()
    cpuinfo = Path('/proc/cpuinfo')
    if cpuinfo.exists():
        models = re.findall(r'^model name\s*:\s*(.+)$', cpuinfo.read_text(), re.M)
        cpu = re.sub(r'\((R|TM)\)', '', models[0]).strip() if models else cpu
    cores = len(os.sched_getaffinity(0)) if hasattr(os, 'sched_getaffinity') else os.cpu_count()
    return f'{cpu}, {cores} cores, torch {version("torch")}'


def command(example: Example, threads: int) -> list[str]:
    path = ROOT / 'examples' / example.file
    takes_threads = "'--threads'" in path.read_text()  # each example declares it with argparse
    return [sys.executable, str(path), *(['--threads', str(threads)] if takes_threads else [])]


def run(example: Example, threads: int) -> tuple[dict, float]:
    """Run one example, echoing its output as it comes; its parsed result and wall-clock seconds."""
    env = {**os.environ, 'PYTHONUNBUFFERED': '1'}  # lines as they are printed, not when a buffer fills
    started = time.perf_counter()
    # stderr (the progress bars) goes straight to the terminal; stdout is echoed and kept
    with subprocess.Popen(command(example, threads), cwd=ROOT, env=env, stdout=subprocess.PIPE, text=True) as process:
        output = []
        for line in process.stdout:
            print('    ' + line, end='', flush=True)
            output.append(line)
    seconds = time.perf_counter() - started
    if process.returncode:
        raise RuntimeError(f'{example.file} exited with status {process.returncode}')
    return parse_result(''.join(output)), seconds


# the table


def row(example: Example, result: dict, seconds: float, date: str, where: str) -> str:
    after = f'**{show(result["after"], result["digits"])}**'
    if result.get('context'):
        after += f' ({result["context"]})'
    cells = [f'`{example.file}`', example.shows, result['metric'], show(result['before'], result['digits']), after]
    return '| ' + ' | '.join([*cells, f'{seconds:.0f} s', date, where]) + ' |'


def block(rows: dict[str, str], notes: dict[str, str], threads: int) -> str:
    lines = [
        START,
        '<!-- generated by `make examples-table` (benchmarks/examples_table.py): edit that script, not this table -->',
        HEADER,
        '|' + '---|' * HEADER.count(' | ') + '---|',
        *(rows[example.file] for example in EXAMPLES if example.file in rows),
        '',
        f'Each example ran with its default arguments and `--threads {threads}`. The untrained baseline is the same '
        'metric for the model before its first training step; the run time is the wall clock of the whole script, '
        'imports included, on a machine that may have been busy (its load average at the start is in the last column). '
        f'{RUN_TO_RUN} Notes:',
        '',
        *(notes[example.file] for example in EXAMPLES if example.file in notes),
        END,
    ]
    return '\n'.join(lines)


def current_block(readme: str) -> tuple[dict[str, str], dict[str, str]]:
    """The rows and notes of the table now in the README, by example file."""
    if START not in readme or END not in readme:
        raise ValueError(f'README.md has no {START} ... {END} markers to write the table between')
    text = readme[readme.index(START) : readme.index(END)]
    rows = {m[1]: m[0] for m in re.finditer(r'^\| `([^`]+)` \|.*$', text, re.M)}
    notes = {m[1]: m[0] for m in re.finditer(r'^- `([^`]+)`: .*$', text, re.M)}
    return rows, notes


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--only', nargs='+', metavar='FILE', help='rerun these examples only; keep the other rows as they are')
    parser.add_argument('--threads', type=int, default=1, help='torch threads, for the examples that take --threads')
    parser.add_argument('--no-write', action='store_true', help='print the table instead of writing it into README.md')
    args = parser.parse_args(argv)
    unknown = set(args.only or ()) - {example.file for example in EXAMPLES}
    if unknown:
        parser.error(f'not in EXAMPLES: {sorted(unknown)}')

    readme = README.read_text()
    rows, notes = current_block(readme)
    chosen = [example for example in EXAMPLES if not args.only or example.file in args.only]
    date, where, failed, started = time.strftime('%Y-%m-%d'), machine(), [], time.perf_counter()
    print(f'{len(chosen)} examples on {where}, --threads {args.threads}')
    for i, example in enumerate(chosen, 1):
        load = os.getloadavg()[0] if hasattr(os, 'getloadavg') else float('nan')
        print(f'[{i}/{len(chosen)}] {example.file} (load average {load:.1f}, {time.perf_counter() - started:.0f} s so far)', flush=True)
        try:
            result, seconds = run(example, args.threads)
        except (RuntimeError, ValueError) as error:
            print(f'[{i}/{len(chosen)}] {example.file} FAILED: {error}; its row stays as it was')
            failed.append(example.file)
            continue
        rows[example.file] = row(example, result, seconds, date, f'{where}, load {load:.1f}')
        notes.pop(example.file, None)
        if result.get('note'):
            notes[example.file] = f'- `{example.file}`: {result["note"]}.'
        print(f'[{i}/{len(chosen)}] {example.file}: {result["metric"]}: {show(result["before"], result["digits"])} → '
              f'{show(result["after"], result["digits"])} in {seconds:.0f} s')  # fmt: skip

    table = block(rows, notes, args.threads)
    print(f'\ntotal {time.perf_counter() - started:.0f} s' + (f'; failed: {", ".join(failed)}' if failed else ''))
    if args.no_write:
        print(table)
    else:
        README.write_text(readme[: readme.index(START)] + table + readme[readme.index(END) + len(END) :])
        print(f'wrote the table into {README.relative_to(ROOT)}')
    return 1 if failed else 0


if __name__ == '__main__':
    sys.exit(main())
