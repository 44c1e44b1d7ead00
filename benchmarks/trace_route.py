"""The route of one acting call through the package's modules, traced with
``sys.setprofile``: every Python call into a package function is recorded, helper
modules (``_utils``, ``_checks``) are left out, consecutive calls in the same
module collapse into one step, and a sub-package (``heads/``) is one module. A *module switch* is a step to another module.

    python benchmarks/trace_route.py          # the route of sample(..., return_log_prob=True)
    python benchmarks/trace_route.py --calls  # and every call on it

The call traced: ``sample(outputs, return_log_prob=True)`` on a mixed readout
(two discrete groups, three squashed-gaussian dims) with a registered selector.
"""

from __future__ import annotations

import argparse
import sys

import torch

from discrete_continuous_embed_readout import Readout

PACKAGE = 'discrete_continuous_embed_readout'
HELPERS = {f'{PACKAGE}._utils', f'{PACKAGE}._checks'}


def trace(fn) -> list[tuple[str, str]]:
    """``(module, function)`` of every call into the package while ``fn`` runs."""
    calls = []

    def profile(frame, event, arg):
        if event != 'call':
            return
        module = frame.f_globals.get('__name__', '')
        if module.startswith(PACKAGE) and module not in HELPERS:
            calls.append((module.removeprefix(PACKAGE + '.'), frame.f_code.co_qualname))

    sys.setprofile(profile)
    try:
        fn()
    finally:
        sys.setprofile(None)
    return calls


def route(calls: list[tuple[str, str]]) -> list[str]:
    """The modules in the order the call visits them; a sub-package (``heads``,
    ``fused``, ...) counts as one step: its modules are one wing."""
    steps = []
    for module, _ in calls:
        module = module.split('.')[0]
        if not steps or steps[-1] != module:
            steps.append(module)
    return steps


def acting_call():
    """The call traced, ready to run (and run once: first-call work is not the route)."""
    torch.manual_seed(0)
    readout = Readout(16, num_discrete=8, num_continuous=3, selectors=[([[0, 1, 2], [3, 4, 5, 6, 7]], [0, 1, 2])], continuous_squashed=True)
    outputs = readout(torch.randn(4, 16), selector_index=0)
    call = lambda: readout.sample(outputs, selector_index=0, return_log_prob=True)  # noqa: E731
    call()
    return call


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--calls', action='store_true', help='print every call')
    args = parser.parse_args()
    calls = trace(acting_call())
    if args.calls:
        for module, name in calls:
            print(f'{module:28s} {name}')
    steps = route(calls)
    print(f'{len(calls)} calls through {len({c for c in calls})} functions; {len(steps) - 1} module switches:')
    print(' -> '.join(steps))


if __name__ == '__main__':
    main()
