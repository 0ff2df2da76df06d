"""Tests for :mod:`rtk_blackjax.metrics`."""

import math

import jax
import numpy as np
import pytest
import scipy.spatial.distance
import scipy.stats

from rtk_blackjax.metrics import (
    evaluate,
    marginal_accuracy,
    mmd_rbf,
    mode_weight_tv,
    noise_floors,
    sliced_wasserstein,
    var_bias,
    var_rel_err,
    variance_errors,
)


def _numpy_marginal_accuracy(x, y, bins=50, range_=(-5.0, 5.0)):
    tvs = []
    for i in range(x.shape[1]):
        p, _ = np.histogram(x[:, i], bins=bins, range=range_)
        q, _ = np.histogram(y[:, i], bins=bins, range=range_)
        tvs.append(np.sum(np.abs(p / x.shape[0] - q / y.shape[0])))
    return 1.0 - np.mean(tvs) / 2.0


# --------------------------------------------------------------------------
# marginal_accuracy
# --------------------------------------------------------------------------


def test_marginal_accuracy_matches_numpy_histogram():
    rng = np.random.default_rng(0)
    # Heavy tails so that a good fraction of samples falls outside [-5, 5].
    x = (2.5 * rng.standard_t(df=3, size=(700, 6))).astype(np.float32)
    y = (rng.normal(size=(900, 6)) * 2.0 + 0.5).astype(np.float32)
    expected = _numpy_marginal_accuracy(x, y)
    assert marginal_accuracy(x, y) == pytest.approx(expected, abs=1e-6)
    # Non-default bins and range.
    expected = _numpy_marginal_accuracy(x, y, bins=17, range_=(-2.0, 3.0))
    got = marginal_accuracy(x, y, bins=17, range_=(-2.0, 3.0))
    assert got == pytest.approx(expected, abs=1e-6)


def test_marginal_accuracy_edges_and_out_of_range():
    # Right edge is included in the last bin, left edge in the first; values
    # outside the range are dropped but still count in the normalisation.
    x = np.array([[-5.0], [5.0], [7.0], [-6.0], [0.1]])
    y = np.array([[-5.0], [5.0], [0.1], [0.1]])
    expected = _numpy_marginal_accuracy(x, y)
    assert marginal_accuracy(x, y) == pytest.approx(expected, abs=1e-6)
    # Hand computation: p = (1/5, 1/5 [0.1 bin], 1/5 [last bin]), 2/5 dropped;
    # q = (1/4, 2/4, 1/4) -> TV = 0.05 + 0.3 + 0.05 + 0 = 0.4 -> acc = 0.8
    assert marginal_accuracy(x, y) == pytest.approx(0.8, abs=1e-6)


def test_identical_samples_are_perfect():
    rng = np.random.default_rng(1)
    y = rng.normal(size=(400, 5))
    assert marginal_accuracy(y, y) == 1.0
    assert sliced_wasserstein(y, y, jax.random.key(0), num_directions=40) == 0.0
    assert variance_errors(y, np.var(y, axis=0, ddof=1)) == pytest.approx(
        (0.0, 0.0), abs=1e-5
    )


def test_disjoint_supports_give_zero_accuracy():
    rng = np.random.default_rng(2)
    x = rng.uniform(-4.0, -1.0, size=(300, 2))
    y = rng.uniform(1.0, 4.0, size=(300, 2))
    assert marginal_accuracy(x, y) == pytest.approx(0.0, abs=1e-6)


# --------------------------------------------------------------------------
# mode_weight_tv
# --------------------------------------------------------------------------


def test_mode_weight_tv_known_assignment():
    means = np.array([[0.0, 0.0], [10.0, 0.0], [0.0, 10.0]])
    x = np.array(
        [
            [0.5, -0.3],  # 0
            [-1.0, 1.0],  # 0
            [9.0, 0.5],  # 1
            [4.0, 9.0],  # 2
            [0.0, 6.0],  # 2 (closer to (0, 10) than to the origin)
            [6.0, 1.0],  # 1
            [1.0, 0.2],  # 0
            [-3.0, -3.0],  # 0
        ]
    )
    # fractions = (4/8, 2/8, 2/8)
    weights = np.array([0.2, 0.3, 0.5])
    expected = 0.5 * (abs(0.5 - 0.2) + abs(0.25 - 0.3) + abs(0.25 - 0.5))
    assert mode_weight_tv(x, means, weights) == pytest.approx(expected, abs=1e-7)
    assert mode_weight_tv(x, means, [0.5, 0.25, 0.25]) == pytest.approx(0.0, abs=1e-7)


def test_mode_weight_tv_far_from_origin():
    # Assignment must not suffer from cancellation when everything is shifted.
    shift = 1e4
    means = np.array([[shift - 1.0], [shift + 1.0]])
    x = np.array([[shift - 0.1], [shift - 2.0], [shift + 0.1], [shift + 3.0]])
    x = x.astype(np.float32)
    assert mode_weight_tv(x, means, [0.5, 0.5]) == pytest.approx(0.0, abs=1e-7)
    assert mode_weight_tv(x, means, [1.0, 0.0]) == pytest.approx(0.5, abs=1e-7)


# --------------------------------------------------------------------------
# variance errors
# --------------------------------------------------------------------------


def test_variance_errors_match_formula():
    rng = np.random.default_rng(3)
    x = rng.normal(size=(50, 4)) * np.array([1.0, 2.0, 0.5, 3.0])
    exact = np.array([1.0, 3.0, 0.5, 9.0])
    ratio = np.var(x, axis=0, ddof=1) / exact
    rel, bias = variance_errors(x, exact)
    assert rel == pytest.approx(np.mean(np.abs(ratio - 1.0)), rel=1e-5)
    assert bias == pytest.approx(np.mean(ratio) - 1.0, rel=1e-5, abs=1e-6)
    assert var_rel_err(x, exact) == rel
    assert var_bias(x, exact) == bias
    # Signed: under-dispersion gives a negative bias.
    assert var_bias(0.5 * x, exact) < 0.0


def test_var_bias_of_overdispersed_gaussian():
    rng = np.random.default_rng(4)
    n, d = 4000, 50
    x = math.sqrt(1.1) * rng.normal(size=(n, d))
    # Each ratio has sd 1.1 * sqrt(2 / (n - 1)) ~ 0.025; the mean over d coords
    # has sd ~ 0.0035, so 0.015 is more than 4 standard errors.
    assert var_bias(x, np.ones(d)) == pytest.approx(0.1, abs=0.015)
    assert var_rel_err(x, 1.0) == pytest.approx(0.1, abs=0.015)


# --------------------------------------------------------------------------
# sliced_wasserstein
# --------------------------------------------------------------------------


def test_sliced_w2_shifted_gaussians_matches_analytic():
    rng = np.random.default_rng(5)
    n, d = 1000, 5
    mu = np.array([1.0, -1.0, 2.0, 0.5, -1.5])
    x = rng.normal(size=(n, d))
    y = rng.normal(size=(n, d)) + mu
    # E_u <u, mu>^2 = |mu|^2 / d for u uniform on the sphere.
    analytic_sq = np.sum(mu**2) / d
    # Per direction <u, mu>^2 has relative sd ~1.07 (d = 5), so the Monte Carlo
    # error of SW2^2 over 800 directions is ~3.8 %; the finite-n bias is ~1e-2.
    got = sliced_wasserstein(x, y, jax.random.key(0), num_directions=800)
    assert got**2 == pytest.approx(analytic_sq, rel=0.15)
    # Unequal sample sizes go through the quantile-coupling path.
    got = sliced_wasserstein(x[:700], y, jax.random.key(1), num_directions=800)
    assert got**2 == pytest.approx(analytic_sq, rel=0.15)


def test_sliced_w2_same_distribution_is_small():
    rng = np.random.default_rng(6)
    x = rng.normal(size=(1000, 5))
    y = rng.normal(size=(700, 5))
    assert sliced_wasserstein(x, y, jax.random.key(2), num_directions=64) < 0.1


def test_sliced_w1_in_one_dimension_matches_scipy():
    # In 1-D every direction is +-1, so sliced W_1 is the exact 1-D W_1,
    # including for unequal sample sizes.
    rng = np.random.default_rng(7)
    x = rng.normal(size=(37, 1))
    y = 0.7 * rng.normal(size=(53, 1)) + 0.4
    expected = scipy.stats.wasserstein_distance(x[:, 0], y[:, 0])
    got = sliced_wasserstein(x, y, jax.random.key(3), num_directions=5, p=1)
    assert got == pytest.approx(expected, rel=1e-5)


def test_sliced_w2_one_dimension_equal_sizes_matches_sorted_difference():
    rng = np.random.default_rng(8)
    x = rng.normal(size=(64, 1))
    y = rng.exponential(size=(64, 1))
    expected = np.sqrt(np.mean((np.sort(x[:, 0]) - np.sort(y[:, 0])) ** 2))
    got = sliced_wasserstein(x, y, jax.random.key(4), num_directions=3)
    assert got == pytest.approx(expected, rel=1e-5)


def test_sliced_w2_one_dimension_unequal_sizes_quantile_integral():
    # W_2^2 = int_0^1 (F^-1(t) - G^-1(t))^2 dt with step quantile functions,
    # evaluated on a fine midpoint grid that refines both level grids.
    rng = np.random.default_rng(9)
    n, m = 6, 10
    x = rng.normal(size=(n, 1))
    y = rng.normal(size=(m, 1)) + 1.0
    grid = (np.arange(n * m) + 0.5) / (n * m)
    qx = np.sort(x[:, 0])[np.floor(grid * n).astype(int)]
    qy = np.sort(y[:, 0])[np.floor(grid * m).astype(int)]
    expected = np.sqrt(np.mean((qx - qy) ** 2))
    got = sliced_wasserstein(x, y, jax.random.key(5), num_directions=2)
    assert got == pytest.approx(expected, rel=1e-5)


def test_sliced_w2_deterministic_and_chunk_independent():
    rng = np.random.default_rng(10)
    x = rng.normal(size=(100, 3))
    y = rng.normal(size=(80, 3)) + 0.3
    key = jax.random.key(6)
    a = sliced_wasserstein(x, y, key, num_directions=70)  # 3 chunks, padded
    b = sliced_wasserstein(x, y, key, num_directions=70)
    assert a == b
    assert a > 0.0


# --------------------------------------------------------------------------
# mmd_rbf
# --------------------------------------------------------------------------


def _numpy_mmd2_unbiased(x, y, h):
    def k(a, b):
        return np.exp(-scipy.spatial.distance.cdist(a, b, "sqeuclidean") / (2 * h**2))

    n, m = len(x), len(y)
    kxx, kyy, kxy = k(x, x), k(y, y), k(x, y)
    return (
        (kxx.sum() - np.trace(kxx)) / (n * (n - 1))
        + (kyy.sum() - np.trace(kyy)) / (m * (m - 1))
        - 2.0 * kxy.mean()
    )


def test_mmd_matches_numpy_u_statistic():
    rng = np.random.default_rng(11)
    x = rng.normal(size=(300, 3))  # > one row block of 256
    y = rng.normal(size=(120, 3)) * 1.3 + 0.2
    expected = _numpy_mmd2_unbiased(x, y, 1.7)
    assert mmd_rbf(x, y, bandwidth=1.7) == pytest.approx(expected, rel=1e-4)


def test_mmd_median_heuristic_bandwidth():
    rng = np.random.default_rng(12)
    x = rng.normal(size=(200, 2))
    y = rng.normal(size=(150, 2)) + 0.5
    h = np.median(scipy.spatial.distance.pdist(np.concatenate([x, y])))
    assert mmd_rbf(x, y) == pytest.approx(mmd_rbf(x, y, bandwidth=h), rel=1e-4)


def test_mmd_same_vs_shifted_distribution():
    rng = np.random.default_rng(13)
    x = rng.normal(size=(400, 3))
    y = rng.normal(size=(400, 3))
    same = mmd_rbf(x, y)
    shifted = mmd_rbf(x + 1.0, y)
    assert abs(same) < 0.01
    assert shifted > 0.1
    assert shifted > 10 * abs(same)


def test_mmd_subsampling_is_deterministic():
    rng = np.random.default_rng(14)
    x = rng.normal(size=(500, 2))
    y = rng.normal(size=(400, 2)) + 0.5
    key = jax.random.key(7)
    a = mmd_rbf(x, y, max_points=100, rng_key=key)
    b = mmd_rbf(x, y, max_points=100, rng_key=key)
    c = mmd_rbf(x, y, max_points=100, rng_key=jax.random.key(8))
    assert a == b
    assert a != c
    assert mmd_rbf(x, y, max_points=100) == mmd_rbf(x, y, max_points=100)


# --------------------------------------------------------------------------
# evaluate / noise_floors
# --------------------------------------------------------------------------


def test_evaluate_and_noise_floors():
    rng = np.random.default_rng(15)
    means = np.array([[-3.0, 0.0], [3.0, 0.0]])
    weights = np.array([0.3, 0.7])

    def mixture(n):
        comp = rng.random(n) < weights[1]
        return means[comp.astype(int)] + 0.5 * rng.normal(size=(n, 2))

    ref_a, ref_b = mixture(400), mixture(400)
    # Var of the mixture along axis 0: 4 * 3^2 * w0 * w1 + 0.5^2.
    exact_var = np.array([36.0 * 0.3 * 0.7 + 0.25, 0.25])
    kwargs = dict(means=means, weights=weights, exact_variance=exact_var)
    key = jax.random.key(9)
    floors = noise_floors(ref_a, ref_b, rng_key=key, **kwargs)
    assert set(floors) == {
        "marginal_accuracy",
        "mode_tv",
        "var_rel_err",
        "var_bias",
        "sliced_w2",
        "mmd",
    }
    # independent of the library: two well-separated modes, so the weight TV is
    # the empirical weight's error; var_bias is the mean variance ratio minus 1
    right = ref_a[:, 0] > 0
    assert floors["mode_tv"] == pytest.approx(abs(right.mean() - weights[1]), abs=1e-6)
    expected_bias = np.mean(ref_a.var(0, ddof=1) / exact_var) - 1.0
    assert floors["var_bias"] == pytest.approx(expected_bias, rel=0.01, abs=5e-3)
    assert floors["marginal_accuracy"] > 0.85
    assert floors["mode_tv"] < 0.07
    assert abs(floors["var_bias"]) < 0.2

    # A sampler that collapses onto one mode is clearly worse than the floor.
    bad = means[1] + 0.5 * rng.normal(size=(400, 2))
    res = evaluate(bad, ref_b, rng_key=key, **kwargs)
    assert res["mode_tv"] == pytest.approx(0.3, abs=1e-6)
    assert res["marginal_accuracy"] < floors["marginal_accuracy"] - 0.1
    assert res["sliced_w2"] > 3 * floors["sliced_w2"]
    assert res["mmd"] > 0.05 > abs(floors["mmd"])
    assert res["var_bias"] < -0.4

    # Optional metrics are None when their inputs are missing.
    res = evaluate(bad, ref_b, rng_key=key)
    assert res["mode_tv"] is None
    assert res["var_rel_err"] is None
    assert res["var_bias"] is None
    assert all(isinstance(res[k], float) for k in ("sliced_w2", "mmd"))


# --------------------------------------------------------------------------
# input validation
# --------------------------------------------------------------------------

_GOOD = np.random.default_rng(16).normal(size=(10, 3))
_KEY = jax.random.key(0)


@pytest.mark.parametrize(
    ("call", "match"),
    [
        (lambda: marginal_accuracy(np.zeros(5), _GOOD), r"x must be a 2-D.*\(5,\)"),
        (lambda: marginal_accuracy(_GOOD, np.zeros((4, 3, 1))), r"y must be a 2-D"),
        (lambda: marginal_accuracy(_GOOD, _GOOD[:, :2]), r"x and y .*same dimension"),
        (lambda: marginal_accuracy(_GOOD[:1], _GOOD), r"x must contain at least 2"),
        (lambda: marginal_accuracy(_GOOD, _GOOD, bins=0), r"bins"),
        (lambda: marginal_accuracy(_GOOD, _GOOD, range_=(1.0, -1.0)), r"range_"),
        (lambda: marginal_accuracy(_GOOD, _GOOD, range_=(0.0,)), r"range_"),
        (lambda: mode_weight_tv(_GOOD, _GOOD[:2], [0.5, 0.6]), r"weights must sum"),
        (lambda: mode_weight_tv(_GOOD, _GOOD[:2], [0.5, 0.25, 0.25]), r"weights"),
        (lambda: mode_weight_tv(_GOOD, _GOOD[:2], [1.5, -0.5]), r"weights"),
        (lambda: mode_weight_tv(_GOOD, _GOOD[:2, :2], [0.5, 0.5]), r"means"),
        (lambda: mode_weight_tv(_GOOD, np.zeros(3), [1.0]), r"means"),
        (lambda: variance_errors(_GOOD, np.ones(2)), r"exact_variance"),
        (lambda: variance_errors(_GOOD, -np.ones(3)), r"exact_variance"),
        (lambda: var_bias(_GOOD[:1], np.ones(3)), r"x must contain at least 2"),
        (lambda: sliced_wasserstein(_GOOD, _GOOD, _KEY, p=0.5), r"\bp\b"),
        (lambda: sliced_wasserstein(_GOOD, _GOOD, _KEY, num_directions=0), "num_dir"),
        (lambda: mmd_rbf(_GOOD, _GOOD, bandwidth=0.0), r"bandwidth"),
        (lambda: mmd_rbf(_GOOD, _GOOD, max_points=1), r"max_points"),
        (lambda: evaluate(_GOOD, _GOOD, means=_GOOD[:2], rng_key=_KEY), r"weights"),
        (lambda: evaluate(_GOOD, _GOOD[:, :2], rng_key=_KEY), r"reference"),
    ],
)
def test_bad_input_raises(call, match):
    with pytest.raises(ValueError, match=match):
        call()


def test_missing_key_is_a_type_error():
    # None is the wrong kind of value for a key: TypeError (rtk_blackjax._checks).
    with pytest.raises(TypeError, match=r"rng_key"):
        sliced_wasserstein(_GOOD, _GOOD, None)


def test_non_finite_rows_are_counted():
    x = _GOOD.copy()
    x[2, 0] = np.nan
    x[5, 1] = np.inf
    x[5, 2] = np.nan
    with pytest.raises(ValueError, match=r"x contains 2 of 10 rows with non-finite"):
        marginal_accuracy(x, _GOOD)
    with pytest.raises(ValueError, match=r"y contains 2 of 10 rows"):
        mmd_rbf(_GOOD, x)
    with pytest.raises(ValueError, match=r"reference contains 2"):
        noise_floors(_GOOD, x, rng_key=_KEY)
