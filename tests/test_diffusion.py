import numpy as np
import pytest

from rtk_blackjax import diffusion


def test_ou_coefficients_match_closed_form():
    t = np.array([0.0, 1e-6, 0.3, 2.0])
    np.testing.assert_allclose(diffusion.ou_mean_coef(t), np.exp(-t), rtol=1e-6)
    np.testing.assert_allclose(
        diffusion.ou_variance(t), 1 - np.exp(-2 * t), rtol=1e-5, atol=1e-12
    )
    # accurate for tiny t (no cancellation): s^2 ≈ 2t
    assert float(diffusion.ou_variance(1e-7)) == pytest.approx(2e-7, rel=1e-5)


def test_transition_coefs_compose():
    # x_{t2} | x_0 = a2 x_0 + ...: composing 0 -> t1 -> t2 gives the same law.
    t1, t2 = 0.4, 1.1
    a01, s01 = diffusion.transition_coefs(0.0, t1)
    a12, s12 = diffusion.transition_coefs(t1, t2)
    a02, s02 = diffusion.transition_coefs(0.0, t2)
    assert float(a01 * a12) == pytest.approx(float(a02), rel=1e-6)
    assert float(a12**2 * s01 + s12) == pytest.approx(float(s02), rel=1e-6)


def test_uniform_and_geometric_grids():
    grid = np.asarray(diffusion.uniform_grid(5, horizon=2.0))
    np.testing.assert_allclose(grid, [2.0, 1.6, 1.2, 0.8, 0.4, 0.0], atol=1e-6)
    geo = np.asarray(diffusion.geometric_grid(5, horizon=1.0, t_min=1e-4))
    assert geo[0] == pytest.approx(1.0) and geo[-1] == 0.0
    assert geo[-2] == pytest.approx(1e-4, rel=1e-5)
    ratios = geo[1:-1] / geo[:-2]
    np.testing.assert_allclose(ratios, ratios[0], rtol=1e-5)
    assert len(geo) == 6


def test_logsnr_grid_is_uniform_in_log_noise_to_signal():
    grid = np.asarray(diffusion.logsnr_grid(6, horizon=5.0, t_min=1e-3), np.float64)
    assert grid[0] == pytest.approx(5.0) and grid[-1] == 0.0
    assert grid[-2] == pytest.approx(1e-3, rel=1e-5)
    log_sigma = 0.5 * np.log(np.expm1(2.0 * grid[:-1]))
    steps = np.diff(log_sigma)
    np.testing.assert_allclose(steps, steps[0], rtol=1e-4)
    # More of its points than the geometric grid's lie where t > 0.5 (large scales).
    geo = np.asarray(diffusion.geometric_grid(6, horizon=5.0, t_min=1e-3))
    assert np.sum(grid > 0.5) > np.sum(geo > 0.5)
    np.testing.assert_array_equal(
        np.asarray(diffusion.make_grid("logsnr", 6, horizon=5.0, t_min=1e-3)),
        np.asarray(grid, np.float32),
    )
    # Extreme horizons stay finite (no overflow of e^{2t}).
    assert np.all(np.isfinite(np.asarray(diffusion.logsnr_grid(3, horizon=1e4))))


def test_theory_grid_uses_paper_eta():
    eta = diffusion.theory_segment_length(2.0)
    assert eta == pytest.approx(0.5 * np.log(1 + 1 / 4))
    grid = np.asarray(diffusion.theory_grid(2.0, horizon=1.0))
    assert np.all(-np.diff(grid) <= eta + 1e-6)
    assert len(grid) - 1 == int(np.ceil(1.0 / eta))


@pytest.mark.parametrize(
    "times, match",
    [
        ([1.0, 2.0, 0.0], "strictly decreasing"),
        ([1.0, 0.5], "end at 0"),
        ([0.0, 0.0], "horizon"),
        ([[1.0, 0.0]], "1-D"),
        ([1.0], "at least 2"),
        ([1.0, np.nan, 0.0], "finite"),
        ([1.0, 0.5, 0.5, 0.0], "strictly decreasing"),
    ],
)
def test_validate_grid_rejects_bad_grids(times, match):
    with pytest.raises(ValueError, match=match):
        diffusion.validate_grid(times)


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda: diffusion.uniform_grid(0), "num_segments"),
        (lambda: diffusion.uniform_grid(3, horizon=-1.0), "horizon"),
        (lambda: diffusion.geometric_grid(3, t_min=0.0), "t_min"),
        (lambda: diffusion.geometric_grid(3, horizon=1.0, t_min=2.0), "t_min"),
        (lambda: diffusion.logsnr_grid(3, t_min=0.0), "t_min"),
        (lambda: diffusion.logsnr_grid(3, horizon=1.0, t_min=2.0), "t_min"),
        (lambda: diffusion.logsnr_grid(0), "num_segments"),
        (lambda: diffusion.theory_grid(-1.0), "smoothness"),
        (lambda: diffusion.make_grid("cosine", 3), "grid kind"),
        (lambda: diffusion.make_grid("theory"), "smoothness"),
    ],
)
def test_grid_constructors_validate_arguments(call, match):
    with pytest.raises((ValueError, TypeError), match=match):
        call()
