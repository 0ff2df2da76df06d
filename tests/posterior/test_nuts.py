"""NUTS baseline on the exact posterior: Gaussian posterior moments, NFE counted."""

import arviz as az
import jax
import jax.numpy as jnp
import numpy as np

import rtk_blackjax as rb
from rtk_blackjax.posterior import posterior_to_arviz
from rtk_blackjax.posterior.nuts import nuts_linear_gaussian


def test_gaussian_posterior_moments_and_nfe():
    prior = rb.targets.gaussian(jnp.zeros(2), 1.0)
    A, y, sigma = np.array([[1.0, 0.0]]), np.array([2.0]), 0.5
    res = nuts_linear_gaussian(
        jax.random.key(0),
        prior,
        A,
        y,
        sigma,
        num_chains=8,
        num_draws=250,
        num_warmup=150,
    )
    x = np.asarray(res.samples).reshape(-1, 2)
    # exact posterior: N((1.6, 0), diag(0.2, 1))
    np.testing.assert_allclose(x.mean(0), [1.6, 0.0], atol=0.15)
    np.testing.assert_allclose(x.var(0), [0.2, 1.0], rtol=0.25)
    assert res.acceptance["nuts"].shape == (8, 250)
    # every returned draw costs at least one gradient, warm-up included
    assert res.prior_nfe > 1.0 and res.prior_nfe == res.likelihood_evals
    summary = az.summary(posterior_to_arviz(res), kind="diagnostics")
    assert summary.shape[0] == res.samples.shape[-1]
