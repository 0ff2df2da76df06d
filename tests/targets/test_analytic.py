import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rtk_blackjax import targets
from rtk_blackjax.targets import analytic as g


def _random_full_mixture(seed=0, dim=3, comps=3):
    rng = np.random.default_rng(seed)
    means = rng.normal(size=(comps, dim))
    a = rng.normal(size=(comps, dim, dim))
    covs = 0.2 * np.einsum("cij,ckj->cik", a, a) + 0.1 * np.eye(dim)
    weights = rng.dirichlet(np.ones(comps))
    return means, covs, weights


@pytest.mark.parametrize("t", [0.0, 0.05, 0.7])
def test_mixture_score_equals_autodiff_and_finite_differences(t):
    means, covs, weights = _random_full_mixture()
    target = targets.gaussian_mixture(means, covs, weights)
    x = jnp.array([0.3, -0.2, 0.5])
    score = np.asarray(target.score(x, t))
    autodiff = np.asarray(jax.grad(target.logdensity)(x, t))
    np.testing.assert_allclose(score, autodiff, rtol=1e-4, atol=1e-5)
    eps = 1e-3
    fd = [
        (target.logdensity(x + eps * e, t) - target.logdensity(x - eps * e, t))
        / (2 * eps)
        for e in np.eye(3)
    ]
    np.testing.assert_allclose(score, np.asarray(fd), rtol=2e-2, atol=2e-2)


def test_mixture_logdensity_matches_scipy_diffused_law():
    scipy_stats = pytest.importorskip("scipy.stats")
    means, covs, weights = _random_full_mixture(seed=1)
    target = targets.gaussian_mixture(means, covs, weights)
    t = 0.4
    a, s2 = np.exp(-t), 1 - np.exp(-2 * t)
    x = np.array([0.1, 0.4, -1.0])
    expected = np.log(
        sum(
            w * scipy_stats.multivariate_normal(a * m, a**2 * c + s2 * np.eye(3)).pdf(x)
            for w, m, c in zip(weights, means, covs)
        )
    )
    assert float(target.logdensity(jnp.asarray(x), t)) == pytest.approx(
        expected, rel=1e-4
    )


def test_diagonal_and_full_covariances_agree():
    rng = np.random.default_rng(3)
    means = rng.normal(size=(2, 4))
    diag = rng.uniform(0.1, 1.0, size=(2, 4))
    full = np.stack([np.diag(d) for d in diag])
    t_diag = targets.gaussian_mixture(means, diag)
    t_full = targets.gaussian_mixture(means, full)
    x = jnp.asarray(rng.normal(size=4))
    for t in (0.0, 0.3):
        np.testing.assert_allclose(
            t_diag.score(x, t), t_full.score(x, t), rtol=1e-5, atol=1e-6
        )
        assert float(t_diag.logdensity(x, t)) == pytest.approx(
            float(t_full.logdensity(x, t)), rel=1e-5
        )


def test_far_away_points_are_numerically_stable():
    target = targets.chessboard(dim=5)
    x = jnp.full(5, 40.0)
    assert np.isfinite(float(target.logdensity(x, 0.0)))
    assert np.all(np.isfinite(np.asarray(target.score(x, 0.0))))


def test_sample_mixture_moments_match_exact():
    means, covs, weights = _random_full_mixture(seed=2)
    params = targets.mixture_from_arrays(means, covs, weights)
    x = np.asarray(targets.sample_mixture(jax.random.key(0), params, 200_000))
    np.testing.assert_allclose(
        x.mean(0), np.asarray(targets.mixture_mean(params)), atol=0.01
    )
    np.testing.assert_allclose(
        x.var(0), np.asarray(targets.mixture_variance(params)), rtol=0.02
    )


def test_chessboard_geometry():
    params = targets.chessboard_mixture(dim=4)
    means = np.asarray(params.means)
    assert means.shape == (8, 4)
    np.testing.assert_allclose(means.mean(0), 0.0, atol=1e-7)
    np.testing.assert_allclose(means[:, 2:], 0.0)
    # black cells only: neighbours along an axis are 0.5 apart, diagonals 0.25*sqrt(2)
    d = np.linalg.norm(means[:, None] - means[None], axis=-1)
    np.fill_diagonal(d, np.inf)
    assert d.min() == pytest.approx(0.25 * np.sqrt(2), rel=1e-6)
    np.testing.assert_allclose(np.asarray(params.cov_eigvals), 0.007)
    np.testing.assert_allclose(np.asarray(params.weights), 1 / 8)


def test_random_mixture_is_reproducible_and_valid():
    a = targets.random_mixture(5, dim=6)
    b = targets.random_mixture(5, dim=6)
    np.testing.assert_array_equal(np.asarray(a.means), np.asarray(b.means))
    assert float(jnp.sum(a.weights)) == pytest.approx(1.0, rel=1e-6)
    assert np.all(np.asarray(a.cov_eigvals) > 0)


def test_random_mixture_variance_range_spreads_scales_and_keeps_the_rest():
    base = targets.random_mixture(4, dim=5, num_components=6)
    wide = targets.random_mixture(
        4, dim=5, num_components=6, variance_range=(1e-4, 1e-1)
    )
    np.testing.assert_array_equal(np.asarray(base.means), np.asarray(wide.means))
    np.testing.assert_array_equal(np.asarray(base.weights), np.asarray(wide.weights))
    scale = np.exp(np.mean(np.log(np.asarray(wide.cov_eigvals)), axis=1))
    # Eigenvalue factors are in [0.5, 2], so per-component scales stay in range.
    assert np.all(scale >= 1e-4 * 0.5) and np.all(scale <= 1e-1 * 2.0)
    assert scale.max() / scale.min() > 30  # default: at most 0.05 / 0.01 = 5
    for bad in [(0.0, 1.0), (1.0, 0.5), "wide", (1.0,)]:
        with pytest.raises(ValueError, match="variance_range"):
            targets.random_mixture(0, 2, variance_range=bad)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(means=np.zeros(3), covariances=1.0), "means"),
        (dict(means=np.zeros((2, 3)), covariances=np.ones((3, 3))), "covariances"),
        (dict(means=np.zeros((2, 2)), covariances=-1.0), "positive definite"),
        (
            dict(means=np.zeros((2, 2)), covariances=1.0, weights=[1.0, 2.0, 3.0]),
            "weights",
        ),
        (
            dict(
                means=np.zeros((1, 2)), covariances=np.array([[[1.0, 0.5], [0.0, 1]]])
            ),
            "symmetric",
        ),
    ],
)
def test_bad_mixture_arrays_raise(kwargs, match):
    with pytest.raises(ValueError, match=match):
        g.mixture_from_arrays(**kwargs)


def test_mixture_covariance_matches_draws():
    # full-covariance components: the within- and between-component parts both count
    from rtk_blackjax.targets.analytic import (
        mixture_covariance,
        random_mixture,
        sample_mixture,
    )

    mix = random_mixture(3, 4, 5)
    draws = np.asarray(sample_mixture(jax.random.key(0), mix, 200_000), np.float64)
    np.testing.assert_allclose(
        np.asarray(mixture_covariance(mix)), np.cov(draws.T), atol=0.02
    )
    diag = random_mixture(3, 4, 5, diagonal=True)
    draws = np.asarray(sample_mixture(jax.random.key(1), diag, 200_000), np.float64)
    np.testing.assert_allclose(
        np.asarray(mixture_covariance(diag)), np.cov(draws.T), atol=0.02
    )
