"""The route of one acting call through the package's modules, traced with
``sys.setprofile``: every Python call into a package function is recorded, helper
modules (``_utils``, ``_checks``) are left out, consecutive calls in the same
module collapse into one step, and a sub-package (``heads/``) is one module. A *module switch* is a step to another module.

    python benchmarks/trace_route.py          # the routes of an acting and a training call
    python benchmarks/trace_route.py --calls  # and every call on it

The calls traced: ``sample(outputs, return_log_prob=True)`` on a mixed readout
(two discrete groups, three squashed-gaussian dims) with a registered selector, and
``forward(embeds, targets)`` with the loss. A call *back up the layers* (``LAYERS``:
the modules users call, what they build per call, what that delegates to) is a
callback from what a module delegated to into the module: data flowing the wrong way.
"""

from __future__ import annotations

import argparse
import sys

import torch

from discrete_continuous_embed_readout import Readout

PACKAGE = 'discrete_continuous_embed_readout'
HELPERS = {f'{PACKAGE}._utils', f'{PACKAGE}._checks', f'{PACKAGE}._options', f'{PACKAGE}._parse'}


def _package_module(frame) -> str | None:
    module = frame.f_globals.get('__name__', '')
    return module.removeprefix(PACKAGE + '.') if module.startswith(PACKAGE) and module not in HELPERS else None


def _calling_module(frame) -> str | None:
    """The package module nearest up the stack from ``frame`` (torch's autograd or a
    comprehension may stand between a caller and its callee)."""
    frame = frame.f_back
    while frame is not None:
        if (module := _package_module(frame)) is not None:
            return module
        frame = frame.f_back
    return None


def trace(fn, callers: bool = False) -> list[tuple[str, ...]]:
    """``(module, function)`` of every call into the package while ``fn`` runs
    (``callers``: ``(module, function, calling module)``)."""
    calls = []

    def profile(frame, event, arg):
        if event != 'call' or (module := _package_module(frame)) is None:
            return
        call = (module, frame.f_code.co_qualname)
        calls.append((*call, _calling_module(frame)) if callers else call)

    sys.setprofile(profile)
    try:
        fn()
    finally:
        sys.setprofile(None)
    return calls


# the layers data flows down through: the modules users call (0), what they build
# per call (1: the selector lookup of the table, the distribution), what that
# delegates to (2: the parts, the heads, the fused ops, loss reductions, masks)
LAYERS = {
    'readout': 0, 'distribution_methods': 0, 'embed': 0, 'factory': 0, 'rl': 0, 'compat': 0, 'discrete_continuous_embed_readout': 0,
    '_table': 1, 'readout_distribution': 1, '_distribution_losses': 1, '_plain_loss': 1,
    'multi_categorical': 2, 'policy_distributions': 2, 'heads': 2, 'fused': 2, '_losses': 2, '_action_masks': 2, '_selectors': 2, '_projection': 2,
}


def layer(module: str) -> int:
    return LAYERS[module.split('.')[0]]


def upward_calls(calls: list[tuple[str, str, str | None]]) -> list[tuple[str, str, str]]:
    """The calls that climb back up the layers: ``(caller module, callee module,
    callee)`` where the callee's layer is above its caller's (a callback into the
    module from what it delegated to)."""
    return [(caller, module, name) for module, name, caller in calls if caller is not None and layer(module) < layer(caller)]


def route(calls: list[tuple[str, str]]) -> list[str]:
    """The modules in the order the call visits them; a sub-package (``heads``,
    ``fused``, ...) counts as one step: its modules are one wing."""
    steps = []
    for module, *_ in calls:
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


def training_call():
    """``forward(embeds, targets)`` with the loss on a mixed readout (the discrete
    part fused, the continuous part from its params), with a loss mask."""
    torch.manual_seed(0)
    readout = Readout(16, num_discrete=8, num_continuous=3)
    embeds, mask = torch.randn(4, 5, 16), torch.rand(4, 5) > 0.3
    targets = (torch.randint(0, 8, (4, 5)), torch.randn(4, 5, 3))
    call = lambda: readout(embeds, targets, loss_mask=mask)  # noqa: E731
    call()
    return call


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--calls', action='store_true', help='print every call')
    args = parser.parse_args()
    for title, call in (('sample(..., return_log_prob=True)', acting_call()), ('forward(embeds, targets, loss_mask=...)', training_call())):
        calls = trace(call, callers=True)
        if args.calls:
            for module, name, caller in calls:
                print(f'{str(caller):22s} -> {module:22s} {name}')
        steps = route(calls)
        print(f'{title}: {len(calls)} calls through {len(set(calls))} functions; {len(steps) - 1} module switches, '
              f'{len(upward_calls(calls))} calls back up the layers:')
        print('  ' + ' -> '.join(steps))


if __name__ == '__main__':
    main()
