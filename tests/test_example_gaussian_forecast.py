"""Smoke test of examples/gaussian_forecast.py with tiny settings (a few seconds)."""

import math

from conftest import load_example

PNG_SIGNATURE = b'\x89PNG\r\n\x1a\n'


def test_gaussian_forecast_learns_and_plots(tmp_path):
    plot = tmp_path / 'forecast.png'
    flags = ['--steps', '150', '--num-train', '256', '--num-val', '64', '--seq-len', '48', '--hidden', '32', '--plot', str(plot)]
    metrics = load_example('gaussian_forecast').main(flags)

    # the untrained model predicts about the marginal gaussian; training must beat it and persistence
    assert math.isfinite(metrics['initial_nll']) and math.isfinite(metrics['final_nll'])
    assert metrics['final_nll'] < metrics['initial_nll'] - 0.5
    assert metrics['final_nll'] < metrics['persistence_nll']
    assert metrics['final_nll'] > metrics['noise_floor_nll']  # no forecaster from noisy values gets below this
    assert 0.8 < metrics['coverage'] <= 1.0

    assert plot.read_bytes()[:8] == PNG_SIGNATURE
    assert metrics['plot'] == str(plot)


def test_gaussian_forecast_is_deterministic(tmp_path):
    flags = ['--steps', '20', '--num-train', '64', '--num-val', '16', '--seq-len', '32', '--plot', str(tmp_path / 'a.png')]
    example = load_example('gaussian_forecast')
    first, second = example.main(flags), example.main(flags)
    for key in ('initial_nll', 'final_nll', 'coverage'):  # the fixed seed fixes data, init and batches
        assert first[key] == second[key]
