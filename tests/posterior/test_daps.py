"""DAPS: the data pull on a closed-form posterior, a nonlinear likelihood, a latent
noise scale, the NFE by instrument, bad inputs refused by name.

DAPS is approximate: the tests assert what it measurably achieves (with margin),
and each shows that switching its data correction off (no Langevin steps) fails
the same check.
"""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from instruments import Counter

import rtk_blackjax as rb
from rtk_blackjax.posterior.daps import annealing_levels, daps
from rtk_blackjax.posterior.twisted import (
    GaussianObservation,
    Likelihood,
    linear_gaussian_likelihood,
)

MEAN = jnp.array([0.5, -0.5, 0.0])
VAR = 0.8
A = jnp.array([[1.0, 1.0, 0.0], [0.0, 1.0, -1.0]])
Y = jnp.array([1.5, -0.4])
SIGMA = 0.4
PRIOR = rb.targets.score_only(rb.targets.gaussian(MEAN, VAR))


def posterior_mean():
    C = VAR * np.eye(3)
    A_ = np.asarray(A)
    S = A_ @ C @ A_.T + SIGMA**2 * np.eye(2)
    return np.asarray(MEAN) + C @ A_.T @ np.linalg.solve(S, np.asarray(Y) - A_ @ MEAN)


def product_likelihood():
    """``y ~ N(x0 x1, 0.1)``: a nonlinear forward map."""
    return Likelihood(
        gaussian=GaussianObservation(
            forward=lambda x, u: x[:1] * x[1:2],
            y=jnp.array([1.5]),
            variance=lambda x, u: jnp.full((1,), 0.1),
        )
    )


def noise_scale_likelihood(A, y):
    """``y ~ N(A x, σ² I)`` with ``σ ~ HalfNormal(1)``, sampled as ``u = log σ``."""
    half_normal = math.log(2.0 / math.sqrt(2.0 * math.pi))

    def log_prior(u):
        # HalfNormal(σ; 1) plus the log-Jacobian u of σ = exp(u)
        return jnp.sum(half_normal - 0.5 * jnp.exp(2.0 * u) + u)

    return Likelihood(
        gaussian=GaussianObservation(
            forward=lambda x, u: A @ x,
            y=y,
            variance=lambda x, u: jnp.full(y.shape, jnp.exp(2.0 * u[0])),
        ),
        num_params=1,
        log_prior=log_prior,
        init_params=lambda key: jnp.log(jnp.abs(jax.random.normal(key, (1,))) + 1e-6),
        constrain=lambda u: {"sigma": jnp.exp(u[0])},
    )


def test_moves_the_samples_to_the_posterior_mean():
    lik = linear_gaussian_likelihood(A, Y, SIGMA)
    target = posterior_mean()
    # the prior mean is 1.03 from the posterior mean
    assert np.linalg.norm(np.asarray(MEAN) - target) > 1.0
    res = daps(jax.random.key(3), PRIOR, 3, lik, num_samples=1000, prior_nfe_budget=40)
    err = np.linalg.norm(np.asarray(res.samples[:, 0]).mean(0) - target)
    # measured 0.03 (2000 samples, 60 evaluations); Monte Carlo SE ≈ 0.03 here
    assert err < 0.2
    off = daps(
        jax.random.key(3),
        PRIOR,
        3,
        lik,
        num_samples=1000,
        prior_nfe_budget=40,
        num_langevin_steps=0,
    )
    err_off = np.linalg.norm(np.asarray(off.samples[:, 0]).mean(0) - target)
    assert err_off > 0.8  # a prior sampler: measured 1.03


def test_nonlinear_likelihood_reduces_the_residual():
    prior = rb.targets.score_only(rb.targets.gaussian(jnp.zeros(2), 1.0))
    kwargs = dict(num_samples=1000, prior_nfe_budget=40)
    res = daps(jax.random.key(4), prior, 2, product_likelihood(), **kwargs)
    off = daps(
        jax.random.key(4),
        prior,
        2,
        product_likelihood(),
        num_langevin_steps=0,
        **kwargs,
    )

    def residual(r):
        x = np.asarray(r.samples[:, 0])
        return np.mean(np.abs(1.5 - x[:, 0] * x[:, 1]))

    # measured 0.36 with the data, 1.5 without (60 evaluations, 2000 samples)
    assert residual(res) < 0.6
    assert residual(off) > 1.2


def test_latent_noise_scale_gets_draws_in_a_sane_range():
    key = jax.random.key(5)
    A2 = jnp.array([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0], [1.0, -1.0], [2.0, 0.5]])
    x_true = jnp.array([0.7, -0.3])
    y = A2 @ x_true + 0.3 * jax.random.normal(key, (5,))
    prior = rb.targets.score_only(rb.targets.gaussian(jnp.zeros(2), 1.0))
    res = daps(
        key, prior, 2, noise_scale_likelihood(A2, y), num_samples=500,
        prior_nfe_budget=40,
    )  # fmt: skip
    sigma = np.asarray(res.extras["sites"]["sigma"])
    assert sigma.shape == (500,)
    assert res.extras["params"].shape == (500, 1)
    assert np.all(np.isfinite(sigma)) and np.all(sigma > 0)
    # the true σ is 0.3; five observations leave a broad posterior
    assert 0.1 < np.median(sigma) < 1.0
    assert np.std(np.log(sigma)) > 0.05  # the draws are not collapsed


def test_prior_nfe_is_the_real_count():
    counter = Counter()
    prior = counter.target(
        rb.targets.gaussian(MEAN, VAR), vjp=True, hide_logdensity=True
    )
    n = 3
    res = daps(
        jax.random.key(0),
        prior,
        3,
        linear_gaussian_likelihood(A, Y, SIGMA),
        num_samples=n,
        prior_nfe_budget=13,
        num_ode_steps=3,
        num_langevin_steps=2,
    )
    assert res.prior_nfe == 12.0  # 13 // 3 = 4 levels of 3 ODE steps
    assert res.prior_nfe * n == counter.nfe()
    assert counter.count("vjp") == 0  # the Langevin steps never go through the score
    assert counter.count("logdensity") == 0


def test_levels():
    levels = np.asarray(annealing_levels(5, 100.0, 0.1))
    assert levels[0] == pytest.approx(100.0) and levels[-1] == pytest.approx(0.1)
    assert np.all(np.diff(levels) < 0)


@pytest.mark.parametrize(
    ("kwargs", "error", "name"),
    [
        (dict(num_ode_steps=0), ValueError, "num_ode_steps"),
        (dict(num_ode_steps=1.5), TypeError, "num_ode_steps"),
        (dict(num_langevin_steps=-1), ValueError, "num_langevin_steps"),
        (dict(step_scale=0.0), ValueError, "step_scale"),
        (dict(sigma_min=200.0), ValueError, "sigma_min"),
        (dict(ode_sigma_min=0.5), ValueError, "ode_sigma_min"),
        (dict(prior_nfe_budget=1, num_ode_steps=2), ValueError, "prior_nfe_budget"),
        (dict(prior_nfe_budget=None), ValueError, "prior_nfe_budget"),
        (dict(num_samples=0), ValueError, "num_samples"),
        (dict(likelihood="lik"), TypeError, "likelihood"),
        (dict(prior=lambda x, t: -x), TypeError, "prior"),
        (dict(dim=0), ValueError, "dim"),
        (dict(rng_key=0), TypeError, "rng_key"),
    ],
)
def test_bad_inputs(kwargs, error, name):
    call = dict(
        rng_key=jax.random.key(0),
        prior=PRIOR,
        dim=3,
        likelihood=linear_gaussian_likelihood(A, Y, SIGMA),
        num_samples=4,
        prior_nfe_budget=10,
    )
    call.update(kwargs)
    with pytest.raises(error, match=name):
        daps(**call)
