"""Twisted SMC through the reverse diffusion: consistency as particles grow."""

import arviz as az
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import rtk_blackjax as rb
from rtk_blackjax.diffusion import geometric_grid
from rtk_blackjax.posterior import gmm, posterior_to_arviz
from rtk_blackjax.posterior.smc import calibrate_grid, smc_linear_gaussian
from rtk_blackjax.targets.analytic import mixture_target

MEAN = np.array([1.0, -1.0, 0.5])
VAR = 0.5
A = np.array([[1.0, 0.5, 0.0], [0.0, 1.0, -1.0]])
Y = np.array([0.3, 1.2])
SIGMA = 0.4


def _exact_gaussian_posterior(prior_cov=VAR * np.eye(3)):
    K = A @ prior_cov @ A.T + SIGMA**2 * np.eye(2)
    gain = prior_cov @ A.T @ np.linalg.inv(K)
    mean = MEAN + gain @ (Y - A @ MEAN)
    cov = prior_cov - gain @ A @ prior_cov
    resid = Y - A @ MEAN
    log_z = -0.5 * (
        resid @ np.linalg.solve(K, resid)
        + np.linalg.slogdet(K)[1]
        + 2 * np.log(2 * np.pi)
    )
    return mean, cov, log_z


# one prior object: compiled SMC runs are cached per prior and particle count
PRIOR = rb.targets.gaussian(jnp.asarray(MEAN), VAR)


def _run(key, n, **kw):
    return smc_linear_gaussian(
        key, PRIOR, A, Y, SIGMA, num_particles=n, prior_nfe_budget=31, **kw
    )


@pytest.mark.slow
def test_gaussian_posterior_mean_error_shrinks_with_particles():
    mean, cov, log_z = _exact_gaussian_posterior()
    errors, z_errors, pooled = {}, {}, []
    for n in (100, 1600):
        errs, zs = [], []
        for seed in range(4):
            res = _run(jax.random.key(seed), n)
            x = np.asarray(res.samples[:, 0], np.float64)
            errs.append(np.sum((x.mean(0) - mean) ** 2))
            zs.append(float(res.extras["log_evidence"]) - log_z)
            if n == 1600:
                pooled.append(x)
        errors[n], z_errors[n] = np.mean(errs), np.mean(np.square(zs))
    # Monte Carlo error ~ trace(cov) / (n * ESS fraction); 16x particles -> ~16x less
    assert errors[1600] < errors[100] / 4
    assert errors[1600] < 10 * np.trace(cov) / 1600
    assert z_errors[1600] < 0.01
    # covariance right too (the moves and weights are exact for any predictor)
    np.testing.assert_allclose(np.cov(np.concatenate(pooled).T), cov, atol=0.04)


def test_result_fields_and_nfe():
    res = _run(jax.random.key(0), 100)
    assert res.samples.shape == (100, 1, 3)
    K = len(res.extras["times"]) - 1
    assert res.prior_nfe == 1 + 3 * K <= 31
    assert res.extras["ess"].shape == (K,)
    assert res.acceptance["mala"].shape == (100, 1)
    assert np.all(np.asarray(res.acceptance["mala"]) > 0.3)
    summary = az.summary(posterior_to_arviz(res), kind="diagnostics")
    assert summary.shape[0] == res.samples.shape[-1]


def _on_problem(seed, target, problem, num_particles, **kw):
    """SMC on one benchmark problem, keyed by ``seed``."""
    return smc_linear_gaussian(
        jax.random.key(seed),
        target,
        problem.obs_matrix,
        problem.y,
        problem.sigma,
        num_particles=num_particles,
        **kw,
    )


@pytest.mark.slow
def test_mixture_weights_of_a_small_gmm():
    # d = 2, a posterior spread over 5 of the 25 modes (weights 0.37 ... 0.04)
    problem = gmm.make_problem(2, dim=2, obs_dim=1)
    target = mixture_target(problem.prior)
    tvs = []
    for seed in range(3):
        res = _on_problem(seed, target, problem, 4000, prior_nfe_budget=100)
        tvs.append(gmm.mode_tv(problem.posterior, res.samples[:, 0]))
        err = float(res.extras["log_evidence"] - problem.posterior.log_evidence)
        assert abs(err) < 0.3
    assert np.mean(tvs) < 0.05, tvs


def test_full_prior_covariance_twist_on_an_anisotropic_gaussian_prior():
    # With the true Σ of a Gaussian prior the twist is the exact p(y | x_t); the
    # remaining error is the isotropic predictor's (prior eigenvalues 0.4 .. 3.6).
    rng = np.random.default_rng(0)
    root = rng.normal(size=(3, 3))
    cov = root @ root.T + 0.3 * np.eye(3)
    prior = rb.targets.gaussian(jnp.asarray(MEAN), jnp.asarray(cov))
    mean, post_cov, log_z = _exact_gaussian_posterior(cov)
    res = smc_linear_gaussian(
        jax.random.key(0),
        prior,
        A,
        Y,
        SIGMA,
        num_particles=2000,
        prior_nfe_budget=31,
        prior_covariance=cov,
    )
    x = np.asarray(res.samples[:, 0], np.float64)
    # 2000 particles, ESS >= half of them: 5 standard errors of each coordinate mean
    np.testing.assert_array_less(
        np.abs(x.mean(0) - mean), 5 * np.sqrt(np.diag(post_cov) / 1000)
    )
    np.testing.assert_allclose(np.cov(x.T), post_cov, atol=0.05)
    assert abs(float(res.extras["log_evidence"]) - log_z) < 0.15
    assert float(np.min(res.extras["ess"])) > 0.3


def test_prior_covariance_forms_and_errors():
    # a scalar, its diagonal and its matrix are the same twist
    runs = [
        _run(jax.random.key(3), 50, prior_covariance=c)
        for c in (2.0, np.full(3, 2.0), 2.0 * np.eye(3))
    ]
    for other in runs[1:]:
        np.testing.assert_allclose(other.samples, runs[0].samples, atol=1e-4)
    for bad, match in (
        (-1.0, "positive definite"),
        (np.ones(2), r"prior_covariance must be .* d=3"),
        (np.array([[1.0, 2.0, 0], [0, 1, 0], [0, 0, 1]]), "symmetric"),
        (np.diag([1.0, -1.0, 1.0]), "positive definite"),
    ):
        with pytest.raises(ValueError, match=match):
            _run(jax.random.key(0), 10, prior_covariance=bad)


def test_bad_inputs():
    prior = rb.targets.gaussian(jnp.zeros(3), 1.0)
    with pytest.raises(ValueError, match="prior_nfe_budget=2 is too small"):
        smc_linear_gaussian(
            jax.random.key(0), prior, A, Y, SIGMA, num_particles=10, prior_nfe_budget=2
        )
    with pytest.raises(ValueError, match="y must have shape"):
        smc_linear_gaussian(
            jax.random.key(0),
            prior,
            A,
            Y[:1],
            SIGMA,
            num_particles=10,
            prior_nfe_budget=20,
        )
    with pytest.raises(ValueError, match="logdensity"):
        smc_linear_gaussian(
            jax.random.key(0),
            rb.targets.score_only(prior),
            A,
            Y,
            SIGMA,
            num_particles=10,
            prior_nfe_budget=20,
        )
    with pytest.raises(ValueError, match="twist"):
        smc_linear_gaussian(
            jax.random.key(0),
            prior,
            A,
            Y,
            SIGMA,
            num_particles=10,
            prior_nfe_budget=20,
            twist="exact",
        )


@pytest.mark.parametrize("score_only", [False, True], ids=["weights", "score-only"])
def test_calibrated_grid_is_geometric_for_a_gaussian_prior(score_only):
    # The predictor is exact for an isotropic Gaussian: no segment degenerates (and
    # the trapezoid rule is exact for its quadratic log density), so the fitted
    # grid is the geometric one.
    prior = rb.targets.gaussian(jnp.zeros(4), 2.0)
    if score_only:
        prior = rb.targets.score_only(prior)
    grid = calibrate_grid(jax.random.key(0), prior, 4, 10, num_particles=256)
    assert grid.signal == ("kernel-mismatch" if score_only else "weights")
    assert float(jnp.min(grid.pilot_ess)) > 0.999
    assert float(jnp.max(grid.pilot_log_weight_variance)) < 1e-4
    np.testing.assert_allclose(grid.times, geometric_grid(10, 8.0, 0.3), rtol=1e-5)
    assert grid.prior_nfe == 256 * (1 + 128 * 3)


def test_kernel_mismatch_sees_an_anisotropic_gaussian():
    # The isotropic secant predictor is not exact for a Gaussian with variances
    # 0.05 and 20: the score-only signal must see that (a control for the test
    # above, which a signal stuck at zero would also pass).
    prior = rb.targets.score_only(
        rb.targets.gaussian(jnp.zeros(2), jnp.diag(jnp.array([0.05, 20.0])))
    )
    grid = calibrate_grid(jax.random.key(0), prior, 2, 10, num_particles=256)
    assert float(jnp.max(grid.pilot_log_weight_variance)) > 1e-2


@pytest.mark.parametrize("score_only", [False, True], ids=["weights", "score-only"])
def test_calibrated_grid_concentrates_where_modes_separate(score_only):
    # Two unit modes at ±30 e_1: they separate where a_t · 30 ≈ s_t, t ≈ 3.4; the
    # pilot's weights degenerate there (with score access: the Gaussian predictor
    # misfits the reverse transition there) and the fitted grid puts its
    # segments there.
    means = jnp.zeros((2, 4)).at[:, 0].set(jnp.array([-30.0, 30.0]))
    prior = rb.targets.gaussian_mixture(means, 1.0, jnp.array([0.3, 0.7]))
    if score_only:
        prior = rb.targets.score_only(prior)
    grid = calibrate_grid(jax.random.key(1), prior, 4, 32, num_particles=512)
    times = np.asarray(grid.times)
    assert times[0] == 8.0 and times[-2] == pytest.approx(0.3) and times[-1] == 0.0
    assert np.all(np.diff(times) < 0) and times.shape == (33,)
    pilot_t = np.asarray(grid.pilot_times[1:])
    worst = pilot_t[np.argmin(np.asarray(grid.pilot_ess))]
    assert 2.0 < worst < 5.0, worst
    window = np.sum((times > 2.0) & (times < 5.0))
    geometric = np.sum(
        (np.asarray(geometric_grid(32, 8.0, 0.3)) > 2.0)
        & (np.asarray(geometric_grid(32, 8.0, 0.3)) < 5.0)
    )
    assert window >= 16 > geometric, (window, geometric)


@pytest.mark.slow
def test_calibrated_grid_gets_mode_weights_in_high_dimension():
    # d = 200 of the 25-mode benchmark, d_y = 1: modes 8·sqrt(100) = 80 apart
    # separate around t ≈ 4; on the calibrated grid the mode weights are right.
    problem_dim = 200
    target = mixture_target(gmm.grid_prior(problem_dim))
    grid = calibrate_grid(jax.random.key(5), target, problem_dim, 33)
    tvs = []
    for seed in range(2):
        problem = gmm.make_problem(seed, dim=problem_dim, obs_dim=1)
        res = _on_problem(seed, target, problem, 2000, times=grid.times)
        assert res.prior_nfe <= 100
        tvs.append(gmm.mode_tv(problem.posterior, res.samples[:, 0]))
    assert np.mean(tvs) < 0.06, tvs


def test_calibrate_grid_errors():
    prior = rb.targets.gaussian(jnp.zeros(2), 1.0)
    key = jax.random.key(0)
    with pytest.raises(ValueError, match="uniform_fraction"):
        calibrate_grid(key, prior, 2, 8, uniform_fraction=1.5)
    with pytest.raises(ValueError, match="num_segments"):
        calibrate_grid(key, prior, 2, 1)
    with pytest.raises(ValueError, match="dim"):
        calibrate_grid(key, prior, 0, 8)
    with pytest.raises(ValueError, match="logdensity"):
        calibrate_grid(key, rb.targets.score_only(prior), 2, 8, signal="weights")
    with pytest.raises(ValueError, match="signal"):
        calibrate_grid(key, prior, 2, 8, signal="ess")
