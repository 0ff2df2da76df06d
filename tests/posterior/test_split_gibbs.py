"""Split Gibbs with an RTK prior block: exact answers for Gaussian priors."""

import arviz as az
import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist
import pytest

import rtk_blackjax as rb
from rtk_blackjax.posterior.prior import DiffusionPrior
from rtk_blackjax.posterior.split_gibbs import (
    relaxed_gaussian_posterior,
    rho_to_time,
    split_gibbs,
    split_gibbs_linear_gaussian,
    time_to_rho,
    to_arviz,
)

_RNG = np.random.default_rng(0)
MEAN = np.array([0.5, -1.0, 0.2])
_Q = np.linalg.qr(_RNG.normal(size=(3, 3)))[0]
COV = _Q @ np.diag([0.3, 0.8, 1.5]) @ _Q.T
A = _RNG.normal(size=(2, 3))
Y = np.array([0.7, -0.4])
SIGMA = 0.5
PRIOR = rb.targets.gaussian(MEAN, COV)


def _moment_z(samples, mean, cov):
    """Largest standardised errors of the sample mean and covariance (iid draws)."""
    n = samples.shape[0]
    mean_z = (samples.mean(0) - mean) / np.sqrt(np.diag(cov) / n)
    var = np.diag(cov)
    cov_se = np.sqrt((np.outer(var, var) + cov**2) / n)
    cov_z = (np.cov(samples, rowvar=False) - cov) / cov_se
    return np.abs(mean_z).max(), np.abs(cov_z).max()


def test_rho_time_matching():
    rho = np.array([0.05, 0.5, 3.0])
    t = rho_to_time(rho)
    # s_t / a_t = sqrt(1 - e^{-2t}) / e^{-t} = rho
    ratio = np.sqrt(-np.expm1(-2 * t)) / np.exp(-t)
    np.testing.assert_allclose(ratio, rho, rtol=1e-5)
    np.testing.assert_allclose(time_to_rho(t), rho, rtol=1e-5)


def test_stationary_law_is_relaxed_posterior_at_fixed_rho():
    # No annealing, no reweighting: 30 Gibbs sweeps at rho = 0.5 from prior draws
    # (slowest AR(1) coefficient about 1 / (1 + 0.25 / 1.5) = 0.86, so 0.86^30 =
    # 0.01 of the start remains); the last draw of 3000 independent chains must
    # have the analytic relaxed posterior's mean and covariance.
    res = split_gibbs_linear_gaussian(
        jax.random.key(0),
        PRIOR,
        A,
        Y,
        SIGMA,
        num_chains=3000,
        num_draws=1,
        prior_nfe_budget=10**6,
        rho_start=0.5,
        rho_final=0.5,
        num_segments=4,
        inner_steps=4,
        sweeps_per_stage=30,
        reweight=False,
    )
    rho = res.extras["rho_final"]
    assert abs(rho - 0.5) < 1e-4
    mean, cov = relaxed_gaussian_posterior(MEAN, COV, A, Y, SIGMA, rho)
    mean_z, cov_z = _moment_z(np.asarray(res.samples[:, -1]), mean, cov)
    assert mean_z < 4.5 and cov_z < 4.5, (mean_z, cov_z)
    # ...and it is *not* the true posterior (the test can tell them apart).
    true_mean, true_cov = relaxed_gaussian_posterior(MEAN, COV, A, Y, SIGMA, 0.0)
    assert max(_moment_z(np.asarray(res.samples[:, -1]), true_mean, true_cov)) > 6
    assert float(np.mean(res.acceptance["prior"])) > 0.5


@pytest.mark.slow
def test_annealed_reweighted_chains_approach_true_posterior():
    true_mean, true_cov = relaxed_gaussian_posterior(MEAN, COV, A, Y, SIGMA, 0.0)
    errors = {}
    for rho_final in (1.0, 0.1):
        res = split_gibbs_linear_gaussian(
            jax.random.key(1),
            PRIOR,
            A,
            Y,
            SIGMA,
            num_chains=2000,
            num_draws=1,
            prior_nfe_budget=300,
            rho_start=3.0,
            rho_final=rho_final,
            num_segments=6,
            inner_steps=3,
        )
        assert res.prior_nfe <= 300
        x = np.asarray(res.samples[:, -1])
        mean, cov = relaxed_gaussian_posterior(
            MEAN, COV, A, Y, SIGMA, res.extras["rho_final"]
        )
        mean_z, cov_z = _moment_z(x, mean, cov)
        assert mean_z < 4.5 and cov_z < 4.5, (rho_final, mean_z, cov_z)
        errors[rho_final] = np.linalg.norm(x.mean(0) - true_mean) + np.linalg.norm(
            np.cov(x, rowvar=False) - true_cov
        )
    assert errors[0.1] < 0.5 * errors[1.0], errors


def _model(prior, sigma=None):
    A_j = jnp.asarray(A)

    def model(y=None):
        x = numpyro.sample("x", prior)
        s = (
            sigma
            if sigma is not None
            else numpyro.sample("sigma", dist.HalfNormal(1.0))
        )
        numpyro.sample("y", dist.Normal(A_j @ x, s).to_event(1), obs=y)

    return model


@pytest.mark.slow
def test_numpyro_split_gibbs_matches_relaxed_posterior():
    # Same problem through the general path: the MALA likelihood block on the
    # NumPyro log density must give the same stationary law as the exact one.
    model = _model(DiffusionPrior(PRIOR, nfe=25), sigma=SIGMA)
    res = split_gibbs(
        jax.random.key(2),
        model,
        num_chains=2000,
        num_draws=1,
        rho_start=0.5,
        rho_final=0.5,
        num_segments=4,
        inner_steps=4,
        sweeps_per_stage=40,
        likelihood_steps=5,
        y=jnp.asarray(Y),
    )
    mean, cov = relaxed_gaussian_posterior(
        MEAN, COV, A, Y, SIGMA, res.extras["rho_final"]
    )
    mean_z, cov_z = _moment_z(np.asarray(res.samples[:, -1]), mean, cov)
    assert mean_z < 4.5 and cov_z < 4.5, (mean_z, cov_z)
    assert 0.3 < float(np.mean(res.acceptance["likelihood"])) < 0.95


def test_numpyro_model_with_unknown_sigma_end_to_end():
    A_j = jnp.asarray(A)

    def model(y=None):
        x = numpyro.sample("x", DiffusionPrior(PRIOR, nfe=25))  # built while traced
        sigma = numpyro.sample("sigma", dist.HalfNormal(1.0))
        numpyro.sample("y", dist.Normal(A_j @ x, sigma).to_event(1), obs=y)

    res = split_gibbs(
        jax.random.key(3),
        model,
        num_chains=4,
        num_draws=8,
        prior_nfe_budget=200,
        num_segments=3,
        y=jnp.asarray(Y),
    )
    assert res.samples.shape == (4, 8, 3)
    sigma = np.asarray(res.extras["sites"]["sigma"])
    assert sigma.shape == (4, 8) and np.all(sigma > 0) and np.all(np.isfinite(sigma))
    assert set(res.acceptance) == {"prior", "likelihood", "latent"}
    assert res.prior_nfe <= 200 and res.likelihood_evals > 0
    idata = to_arviz(res)
    summary = az.summary(idata, kind="diagnostics")
    assert list(summary.index) == ["x[0]", "x[1]", "x[2]", "sigma"]
    assert "acceptance_latent" in idata.sample_stats


def test_budget_is_honest_and_bad_input_is_refused():
    kwargs = dict(num_chains=2, num_draws=2, num_segments=4)
    res = split_gibbs_linear_gaussian(
        jax.random.key(4), PRIOR, A, Y, SIGMA, prior_nfe_budget=300, **kwargs
    )
    assert 0.7 * 300 < res.prior_nfe <= 300
    with pytest.raises(ValueError, match="prior_nfe_budget=5.* is too small"):
        split_gibbs_linear_gaussian(
            jax.random.key(4), PRIOR, A, Y, SIGMA, prior_nfe_budget=5, **kwargs
        )
    with pytest.raises(ValueError, match="y must have shape"):
        split_gibbs_linear_gaussian(
            jax.random.key(4), PRIOR, A, Y[:1], SIGMA, prior_nfe_budget=300, **kwargs
        )
    with pytest.raises(ValueError, match="sigma must be positive"):
        split_gibbs_linear_gaussian(
            jax.random.key(4), PRIOR, A, Y, -1.0, prior_nfe_budget=300, **kwargs
        )

    def no_prior(y=None):
        numpyro.sample("y", dist.Normal(0.0, 1.0), obs=y)

    with pytest.raises(ValueError, match="exactly one latent DiffusionPrior"):
        split_gibbs(jax.random.key(0), no_prior, num_chains=2, num_draws=2, y=0.0)
