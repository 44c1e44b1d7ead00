"""Smoke test of examples/cross_embodiment.py with small settings (a few seconds)."""

from conftest import load_example


def test_cross_embodiment_both_robots_learn():
    flags = ['--steps', '400', '--num-train', '2048', '--num-val', '512']
    metrics = load_example('cross_embodiment').main(flags)

    assert set(metrics['final']) == {'arm', 'rover'}
    for robot in ('arm', 'rover'):
        initial, final = metrics['initial'][robot], metrics['final'][robot]
        assert final['loss'] < initial['loss'] - 1.0, robot
        # every discrete group of each robot beats its untrained accuracy by a wide margin
        assert set(final['accuracy']) == set(initial['accuracy'])
        for group, accuracy in final['accuracy'].items():
            assert accuracy > initial['accuracy'][group] + 0.15, (robot, group)
        for dim, error in final['rmse'].items():
            assert error < 0.6 * initial['rmse'][dim], (robot, dim)

    # each robot is read out through its own selector: its own groups and dims only
    assert list(metrics['final']['arm']['accuracy']) == ['gripper']
    assert list(metrics['final']['rover']['accuracy']) == ['scoop', 'drive']
    assert list(metrics['final']['rover']['rmse']) == ['lift', 'wheel']
