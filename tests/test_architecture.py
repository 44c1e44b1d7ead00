"""The package's architecture: one acting call runs through each module once
(``benchmarks/trace_route.py``), and the layout limits hold (``.ci/check_layout.py``)."""

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
    assert route == ['readout', '_table', 'readout_distribution', 'multi_categorical', 'heads'], route
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
    assert ('readout', 'Readout.sample') in calls
    assert any(module == 'heads.gaussian' and name.endswith('.log_prob') for module, name in calls)


def test_public_method_bodies_stay_short():
    layout = _load(ROOT / '.ci' / 'check_layout.py')
    long_bodies = [o for o in layout.offenders() if 'body' in o]
    assert not long_bodies, long_bodies
