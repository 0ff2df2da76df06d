"""benchmarks/logdensity_suite.py: the mode-weight verdict knows its noise floor."""

import numpy as np
import pytest
from scripts import load_benchmark_script


@pytest.fixture(scope="module")
def suite():
    return load_benchmark_script("logdensity_suite.py", "logdensity_suite")


def test_floor_matches_the_multinomial_closed_form(suite):
    w = np.full(40, 1 / 40)
    for n in (1000, 4000, 16000):
        mean, q95 = suite.mode_weight_floor(w, n)
        # E|f - w| ≈ sqrt(2 w (1 - w) / (pi n)) per mode for large n.
        closed = 0.5 * np.sum(np.sqrt(2 * w * (1 - w) / (np.pi * n)))
        assert mean == pytest.approx(closed, rel=0.05)
        assert q95 > mean
    assert suite.mode_weight_floor(w, 4000)[0] > suite.MODE_TOL  # why it matters


def _modes_row(suite, draws_x, ess):
    means = np.array([[-5.0], [0.0], [5.0], [10.0]])
    truth = suite.Truth(
        mean=np.array([2.5]),
        sd=np.array([np.sqrt(np.mean(means[:, 0] ** 2) - 2.5**2 + 0.01)]),
        mode_labels=lambda x: np.argmin(np.abs(x - means[:, 0]), axis=1),
        mode_weights=np.full(4, 0.25),
    )
    n = len(draws_x)
    draws = suite.Draws(draws_x, np.full(n, 1.0 / n), ess, evaluations=n)
    return suite.evaluate(None, truth, draws)


def test_exact_draws_pass_and_a_wrong_mode_weight_fails(suite):
    rng = np.random.default_rng(3)
    n = 400  # few draws: the floor is above the 0.03 bar
    exact = rng.choice([-5.0, 0.0, 5.0, 10.0], size=(n, 1)) + 0.1 * rng.normal(
        size=(n, 1)
    )
    row = _modes_row(suite, exact, ess=n)
    assert row["mode_weight_floor_q95"] > suite.MODE_TOL
    assert row["mode_weight_error"] <= row["mode_weight_floor_q95"]
    # The same draws with one mode's weight moved by 0.15: beyond the floor.
    wrong = exact.copy()
    movable = np.flatnonzero(np.abs(wrong[:, 0] - 10.0) < 1)[: int(0.15 * n)]
    wrong[movable] -= 15.0  # mode 10 -> mode -5
    row = _modes_row(suite, wrong, ess=n)
    assert row["mode_weight_error"] > row["mode_weight_floor_q95"]
    # The floor is the ESS's: correlated draws (ESS 40) tolerate more.
    assert _modes_row(suite, wrong, ess=40)["mode_weight_floor_q95"] > 0.15


def test_mean_error_floor_is_the_largest_of_d_standard_normals(suite):
    mean, q95 = suite.mean_error_floor(100, 4000)
    # E max |N(0,1)| over 100 coordinates is about 2.5-2.8.
    assert 2.4 < mean * np.sqrt(4000) < 2.9 and q95 > mean
    assert suite.mean_error_floor(100, 16000)[0] == pytest.approx(mean / 2, rel=0.02)
    assert suite.mean_error_floor(1, 4000)[0] == pytest.approx(
        np.sqrt(2 / np.pi) / np.sqrt(4000), rel=0.05
    )


def test_an_unknown_ess_uses_every_draw(suite):
    x = np.repeat([[-5.0], [0.0], [5.0], [10.0]], 100, axis=0)
    row = _modes_row(suite, x, ess=float("nan"))
    assert row["mode_weight_floor"] == suite.mode_weight_floor(np.full(4, 0.25), 400)[0]
