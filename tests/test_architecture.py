"""The package's architecture: one acting call runs through each module once
(``benchmarks/trace_route.py``), and the layout limits hold (``.ci/check_layout.py``)."""

import ast
import importlib.util
import pathlib

ROOT = pathlib.Path(__file__).resolve().parents[1]


def _load(path: pathlib.Path):
    spec = importlib.util.spec_from_file_location(path.stem, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_an_acting_call_crosses_at_most_four_modules():
    trace = _load(ROOT / 'benchmarks' / 'trace_route.py')
    calls = trace.trace(trace.acting_call())
    route = trace.route(calls)
    assert route == ['distribution_methods', '_table', 'readout_distribution', 'heads'], route
    assert len(route) - 1 <= 4


def test_no_call_climbs_back_up_the_layers():
    # data flows one way: what a module delegates to never calls back into it
    trace = _load(ROOT / 'benchmarks' / 'trace_route.py')
    for call in (trace.acting_call(), trace.training_call()):
        calls = trace.trace(call, callers=True)
        assert calls and all(caller is not None for _, _, caller in calls[1:])
        assert trace.upward_calls(calls) == []


def test_the_layer_check_sees_a_callback():
    # the check above is only meaningful if a call from a part into the readout counts
    trace = _load(ROOT / 'benchmarks' / 'trace_route.py')
    calls = [('readout', 'Readout.forward', None), ('heads.part', 'ContinuousPart.loss', 'readout_distribution'), ('readout', 'Readout._project', 'heads.part')]
    assert trace.upward_calls(calls) == [('heads.part', 'readout', 'Readout._project')]


def test_the_tracer_sees_every_package_call():
    # the route above is only meaningful if the tracer records calls into the package
    trace = _load(ROOT / 'benchmarks' / 'trace_route.py')
    calls = trace.trace(trace.acting_call())
    assert ('distribution_methods', 'DistributionMethods.sample') in calls
    assert any(module == 'heads.gaussian' and name.endswith('.log_prob') for module, name in calls)


def test_no_module_is_long_and_public_method_bodies_stay_short():
    # STYLE.md, "Layout": at most 300 lines a module, 15 lines a public body (docstrings excluded)
    layout = _load(ROOT / '.ci' / 'check_layout.py')
    assert layout.offenders() == []


# imports run one way (STYLE.md, "Layout"): the wings under the core know nothing of
# it, rl/ and compat/ sit on top of it; module-level imports only (a function may
# import lazily: Readout.get_dist(composite=True) reaches up to rl/ at call time)

PACKAGE = ROOT / 'discrete_continuous_embed_readout'
CORE_HELPERS = {'_checks', '_options', '_parse', '_utils'}  # what every wing may stand on
# the 0.2.x selector API and methods are mixins of Embed and Readout (STYLE.md: the honest form)
CORE_MAY_IMPORT_FROM_COMPAT = {'compat.table_methods', 'compat.readout_methods'}


def _module_level_imports(path: pathlib.Path) -> set[str]:
    """The package modules ``path`` imports at module level, as dotted names inside the package."""
    tree = ast.parse(path.read_text())
    here = path.relative_to(PACKAGE).with_suffix('').parts[:-1]
    found = set()
    for node in tree.body:
        if isinstance(node, ast.ImportFrom) and node.level > 0:
            base = list(here[: len(here) - (node.level - 1)])
            target = '.'.join(base + ([node.module] if node.module else []))
            found.add(target)
    return found


def _imports_by_module() -> dict[str, set[str]]:
    return {'.'.join(p.relative_to(PACKAGE).with_suffix('').parts): _module_level_imports(p) for p in PACKAGE.rglob('*.py')}


def _wing(module: str) -> str:
    return module.split('.')[0] if '.' in module else 'core'


def test_heads_and_fused_import_only_their_own_wing_and_the_core_helpers():
    for module, imports in _imports_by_module().items():
        if _wing(module) in ('heads', 'fused'):
            bad = {i for i in imports if _wing(i) != _wing(module) and i.split('.')[-1] not in CORE_HELPERS and i != _wing(module)}
            assert not bad, f'{module} imports {sorted(bad)}'


def test_the_core_never_imports_rl_and_compat_only_through_the_mixins():
    for module, imports in _imports_by_module().items():
        if _wing(module) == 'core' and module not in ('__init__', 'discrete_continuous_embed_readout'):
            assert not {i for i in imports if i.startswith('rl')}, f'{module} imports rl/'
            compat = {i for i in imports if i.startswith('compat')}
            assert compat <= CORE_MAY_IMPORT_FROM_COMPAT, f'{module} imports {sorted(compat - CORE_MAY_IMPORT_FROM_COMPAT)}'


def test_compat_and_rl_do_not_import_each_other():
    for module, imports in _imports_by_module().items():
        other = {'rl': 'compat', 'compat': 'rl'}.get(_wing(module))
        if other:
            assert not {i for i in imports if i.startswith(other)}, f'{module} imports {other}/'


def test_the_import_check_reads_relative_imports():
    # the checks above are only meaningful if the walk finds the imports
    imports = _imports_by_module()
    assert 'heads.part' in imports['readout_distribution']
    assert '_checks' in imports['heads.part'] and 'heads.gaussian' in imports['heads.part']
    assert 'compat.readout_methods' in imports['readout']
