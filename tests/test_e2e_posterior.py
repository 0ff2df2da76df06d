"""End-to-end accuracy of the posterior samplers, each with a negative control.

Problem: Gaussian prior ``N(m, diag(0.3, 1))`` (2-D), ``y = A x + 0.3 ε`` with one
observation that couples the coordinates, so the exact posterior is a known
correlated Gaussian. Checks are per-coordinate means and variances within ``Z``
Monte Carlo standard errors at the effective sample size (comments say which),
asserted to hold for the sampler and to FAIL for a control that is wrong in the
way the sampler could be (no guidance, no moves, the prior instead of the
posterior).
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import rtk_blackjax as rb
from rtk_blackjax.posterior import (
    dps_linear_gaussian,
    nuts_linear_gaussian,
    smc_linear_gaussian,
    split_gibbs_linear_gaussian,
)

Z = 4.5
M = np.array([1.0, -0.5])
V = np.array([0.3, 1.0])
A = np.array([[1.0, 0.5]])
Y = np.array([0.4])
SIGMA = 0.3
PRIOR = rb.targets.gaussian(jnp.asarray(M), jnp.asarray(V))
_PRECISION = np.diag(1 / V) + A.T @ A / SIGMA**2
COV = np.linalg.inv(_PRECISION)
MU = COV @ (M / V + A.T @ Y / SIGMA**2)


def moments_ok(x, mean=MU, cov=COV, n_eff=None) -> bool:
    """Means and variances within ``Z`` standard errors at ``n_eff`` draws."""
    x = np.asarray(x, np.float64).reshape(-1, 2)
    n = n_eff or x.shape[0]
    var = np.diag(cov)
    mean_z = (x.mean(0) - mean) / np.sqrt(var / n)
    var_z = (x.var(0, ddof=1) - var) / (var * np.sqrt(2.0 / (n - 1)))
    return bool(np.all(np.abs(mean_z) < Z) and np.all(np.abs(var_z) < Z))


def dps_law(times, zeta):
    """The exact law of DPS's output for a Gaussian prior (an independent reference).

    Every DPS step (the score, its Tweedie estimate, the likelihood gradient
    through it, the guided ancestral step) is affine in ``x`` for a Gaussian prior
    and a linear observation, so the output is Gaussian and its moments propagate
    exactly: ``μ' = F μ + f``, ``Σ' = F Σ Fᵀ + v I`` from ``N(0, I)`` at the horizon.
    Written from DPS's definition (Chung et al. 2023, with this package's OU
    ancestral step), not from the library's code.
    """
    times = np.asarray(times, np.float64)
    mu, cov = np.zeros(2), np.eye(2)
    for t, t_next in zip(times[:-1], times[1:]):
        a, s2 = np.exp(-t), -np.expm1(-2 * t)
        precision = 1.0 / (a**2 * V + s2)  # p_t = N(a m, a^2 V + s^2)

        def step_mean(x, a=a, s2=s2, precision=precision, t=t, t_next=t_next):
            score = -(x - a * M) * precision
            x0 = (x + s2 * score) / a
            g = A.T @ (Y - A @ x0) / SIGMA**2
            likelihood_score = (g - s2 * precision * g) / a  # (dx0/dx)^T g
            x0 = (x + s2 * (score + zeta * likelihood_score)) / a
            a_h, s2_h = np.exp(t_next - t), -np.expm1(2 * (t_next - t))
            a_n, s2_n = np.exp(-t_next), -np.expm1(-2 * t_next)
            if s2_n == 0:
                return x0, 0.0
            var = s2_n * s2_h / (s2_h + a_h**2 * s2_n)
            return var * (a_n * x0 / s2_n + a_h * x / s2_h), var

        offset, var = step_mean(np.zeros(2))
        F = np.stack([step_mean(e)[0] - offset for e in np.eye(2)], 1)
        mu, cov = F @ mu + offset, F @ cov @ F.T + var * np.eye(2)
    return mu, cov


def test_dps_matches_its_exact_law_and_its_guidance_matters():
    # 8000 iid draws: a doubled guidance moves the mean ~6 standard errors
    times = rb.geometric_grid(50, 10.0, 1e-3)

    def run(zeta):
        return dps_linear_gaussian(
            jax.random.key(0),
            PRIOR,
            A,
            Y,
            SIGMA,
            num_samples=8000,
            times=times,
            zeta=zeta,
        ).samples

    mean, cov = dps_law(times, 1.0)
    assert moments_ok(run(1.0), mean, cov)
    assert not moments_ok(run(0.0), mean, cov)  # no guidance: the prior
    assert not moments_ok(run(2.0), mean, cov)  # the guidance scale is seen


@pytest.mark.slow
def test_nuts_matches_the_exact_posterior():
    res = nuts_linear_gaussian(
        jax.random.key(0),
        PRIOR,
        A,
        Y,
        SIGMA,
        num_chains=4,
        num_draws=500,
        num_warmup=200,
    )
    # NUTS draws are autocorrelated: half the draws as the effective size (ESS of
    # NUTS on a 2-D Gaussian is about the number of draws, or more)
    n_eff = res.samples.shape[0] * res.samples.shape[1] // 2
    assert moments_ok(res.samples, n_eff=n_eff)
    control = nuts_linear_gaussian(
        jax.random.key(0),
        PRIOR,
        0.0 * A,
        Y,
        SIGMA,
        num_chains=4,
        num_draws=500,
        num_warmup=200,
    )  # the prior: the check sees a sampler that ignores the data
    assert not moments_ok(control.samples, n_eff=n_eff)


def test_smc_matches_the_exact_posterior():
    def run(A_):
        return smc_linear_gaussian(
            jax.random.key(0),
            PRIOR,
            A_,
            Y,
            SIGMA,
            num_particles=2000,
            prior_nfe_budget=31,
            num_inner_steps=2,
        ).samples

    # the returned cloud is resampled (duplicates): half the particles as the
    # effective size
    assert moments_ok(run(A), n_eff=1000)
    assert not moments_ok(run(0.0 * A), n_eff=1000)  # the prior, not the posterior


@pytest.mark.slow
def test_split_gibbs_matches_the_exact_posterior():
    def run(A_):
        return split_gibbs_linear_gaussian(
            jax.random.key(0),
            PRIOR,
            A_,
            Y,
            SIGMA,
            num_chains=500,
            num_draws=4,
            prior_nfe_budget=400,
            num_segments=8,
        ).samples

    # 4 successive draws per chain are correlated: half the draws as the
    # effective size
    assert moments_ok(run(A), n_eff=1000)
    assert not moments_ok(run(0.0 * A), n_eff=1000)  # the prior, not the posterior


@pytest.mark.slow
def test_split_gibbs_mode_weights_of_a_bimodal_prior():
    # Two modes of equal prior weight; the observation favours the right one:
    # exact posterior weight ∝ w_k N(y; A m_k, σ² + A C Aᵀ) = 0.82. The population
    # weights (reweight + resampling) carry that across the ρ schedule.
    modes = np.array([[-2.0, 0.0], [2.0, 0.0]])
    prior = rb.targets.gaussian_mixture(jnp.asarray(modes), 0.3)
    A1, y1, sigma1 = np.array([[1.0, 0.0]]), np.array([0.5]), 1.0
    log_w = -0.5 * (y1[0] - modes[:, 0]) ** 2 / (sigma1**2 + 0.3)
    exact = np.exp(log_w[1] - np.logaddexp(*log_w))

    def right_weight(A_):
        res = split_gibbs_linear_gaussian(
            jax.random.key(0),
            prior,
            A_,
            y1,
            sigma1,
            num_chains=1000,
            num_draws=2,
            prior_nfe_budget=300,
            num_segments=8,
        )
        return float((np.asarray(res.samples)[..., 0] > 0).mean())

    # 2000 draws, half as the effective size: se = sqrt(w (1 - w) / 1000)
    tol = Z * np.sqrt(exact * (1 - exact) / 1000)
    assert abs(right_weight(A1) - exact) < tol
    assert abs(right_weight(0.0 * A1) - exact) > tol  # the prior's 0.5
