"""Exact GMM posterior: closed form against brute-force importance sampling (d = 2)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rtk_blackjax.posterior import gmm
from rtk_blackjax.targets.analytic import mixture_from_arrays, sample_mixture


def _importance(problem, num, seed=0):
    """Prior draws with component labels, weighted by the likelihood."""
    prior = problem.prior
    key_c, key_x = jax.random.split(jax.random.key(seed))
    comps = jax.random.choice(key_c, prior.num_components, (num,), p=prior.weights)
    x = prior.means[comps] + jax.random.normal(key_x, (num, prior.dim))
    loglik = jax.vmap(lambda xi: gmm.log_likelihood(problem.posterior, xi))(x)
    w = np.asarray(jax.nn.softmax(loglik), np.float64)
    return np.asarray(x, np.float64), np.asarray(comps), w, np.asarray(loglik)


@pytest.mark.parametrize("seed", [2, 3])
def test_exact_posterior_matches_importance_sampling(seed):
    # seeds 2 and 3 give posteriors spread over 3-5 modes in d = 2
    problem = gmm.make_problem(seed, dim=2, obs_dim=1)
    post = problem.posterior
    num = 200_000
    x, comps, w, loglik = _importance(problem, num, seed)
    ess = 1.0 / np.sum(w**2)
    assert ess > 1000  # enough for the tolerances below

    # mode weights: P(component i | y) = E[1{c = i} lik] / E[lik]
    is_weights = np.bincount(comps, weights=w, minlength=25)
    exact_w = np.asarray(post.weights, np.float64)
    se = np.sqrt(exact_w * (1 - exact_w) / ess)
    np.testing.assert_array_less(np.abs(is_weights - exact_w), 5 * se + 1e-3)

    # posterior mean and covariance
    exact_mean = exact_w @ np.asarray(post.means, np.float64)
    is_mean = w @ x
    var = w @ (x - is_mean) ** 2
    np.testing.assert_array_less(np.abs(is_mean - exact_mean), 5 * np.sqrt(var / ess))
    draws = np.asarray(gmm.sample_posterior(jax.random.key(1), post, 200_000))
    np.testing.assert_array_less(
        np.abs(draws.mean(0) - exact_mean), 5 * np.sqrt(var / 2e5)
    )
    np.testing.assert_allclose(draws.var(0), var, rtol=0.05)

    # evidence: log E_prior[lik]
    log_z = np.log(np.mean(np.exp(loglik - loglik.max()))) + loglik.max()
    assert abs(log_z - float(post.log_evidence)) < 5 / np.sqrt(ess)


def test_posterior_density_is_normalised_and_exact_draws_follow_it():
    problem = gmm.make_problem(2, dim=2, obs_dim=1)
    post = problem.posterior
    draws = np.asarray(gmm.sample_posterior(jax.random.key(0), post, 100_000))
    lo, hi = draws.min(0) - 3, draws.max(0) + 3
    g0, g1 = np.linspace(lo[0], hi[0], 300), np.linspace(lo[1], hi[1], 300)
    grid = np.stack(np.meshgrid(g0, g1, indexing="ij"), -1).reshape(-1, 2)
    logp = jax.jit(
        jax.vmap(lambda z: gmm.posterior_logdensity(problem.prior, post, z))
    )(jnp.asarray(grid, jnp.float32))
    mass = (
        np.exp(np.asarray(logp, np.float64)).sum() * (g0[1] - g0[0]) * (g1[1] - g1[0])
    )
    assert abs(mass - 1.0) < 5e-3
    # the density's mean equals the exact draws' mean
    p = np.exp(np.asarray(logp, np.float64))
    dens_mean = (p[:, None] * grid).sum(0) / p.sum()
    np.testing.assert_allclose(dens_mean, draws.mean(0), atol=0.05)


def test_mode_tv_of_exact_draws_is_at_the_noise_floor_and_detects_errors():
    problem = gmm.make_problem(4, dim=8, obs_dim=1)
    post = problem.posterior
    n = 20_000
    x = gmm.sample_posterior(jax.random.key(0), post, n)
    floor = np.sum(np.sqrt(np.asarray(post.weights) / n))  # ~ E TV for multinomial
    assert gmm.mode_tv(post, x) < floor
    prior_draws = sample_mixture(jax.random.key(1), problem.prior, n)
    assert gmm.mode_tv(post, prior_draws) > 0.5


def test_matheron_covariance_in_high_dimension():
    problem = gmm.make_problem(0, dim=80, obs_dim=4)
    post = problem.posterior
    x = np.asarray(gmm.sample_posterior(jax.random.key(0), post, 50_000), np.float64)
    A = np.asarray(post.obs_matrix, np.float64)
    labels = np.asarray(gmm.assign_modes(post, x))
    main = int(np.argmax(np.asarray(post.weights)))
    xm = x[labels == main]
    # along the observed directions the variance is that of S = I - A^T K^{-1} A
    K = A @ A.T + problem.sigma**2 * np.eye(4)
    S_obs = A @ A.T - A @ A.T @ np.linalg.solve(K, A @ A.T)
    np.testing.assert_allclose(np.cov((xm @ A.T).T), S_obs, atol=0.03)


def test_bad_inputs_are_named():
    with pytest.raises(ValueError, match="obs_dim"):
        gmm.make_problem(0, dim=4, obs_dim=5)
    with pytest.raises(ValueError, match="dim"):
        gmm.grid_prior(1)
    prior = gmm.grid_prior(4)
    with pytest.raises(ValueError, match="obs_matrix"):
        gmm.exact_posterior(prior, np.ones((2, 3)), np.ones(2), 1.0)
    with pytest.raises(ValueError, match="sigma"):
        gmm.exact_posterior(prior, np.ones((2, 4)), np.ones(2), -1.0)
    aniso = mixture_from_arrays(np.zeros((1, 2)), np.array([[1.0, 2.0]]))
    with pytest.raises(ValueError, match="isotropic"):
        gmm.exact_posterior(aniso, np.ones((1, 2)), np.ones(1), 1.0)
    with pytest.raises(ValueError, match="NaN"):
        gmm.mode_tv(gmm.make_problem(0, 4, 1).posterior, np.full((3, 4), np.nan))
