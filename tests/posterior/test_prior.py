"""DiffusionPrior: a diffusion model as a NumPyro distribution."""

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist
import pytest

import rtk_blackjax as rb
from rtk_blackjax.posterior.prior import DiffusionPrior

MEAN = np.array([1.0, -2.0])
COV = np.array([[0.5, 0.2], [0.2, 0.3]])


@pytest.fixture(scope="module")
def prior():
    return DiffusionPrior(rb.targets.gaussian(MEAN, COV), nfe=25)


def test_sample_moments_match_gaussian_target(prior):
    n = 4000
    x = np.asarray(prior.sample(jax.random.key(0), (n,)))
    assert x.shape == (n, 2)
    mean_z = (x.mean(0) - MEAN) / np.sqrt(np.diag(COV) / n)
    var = np.diag(COV)
    cov_se = np.sqrt((np.outer(var, var) + COV**2) / n)
    cov_z = (np.cov(x, rowvar=False) - COV) / cov_se
    assert np.abs(mean_z).max() < 4.5, mean_z
    assert np.abs(cov_z).max() < 4.5, cov_z


def test_sample_shape_and_determinism(prior):
    a = prior.sample(jax.random.key(3), (2, 3))
    b = prior.sample(jax.random.key(3), (2, 3))
    assert a.shape == (2, 3, 2)
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    assert prior.num_evaluations <= 25


def test_log_prob_matches_numpyro(prior):
    x = jax.random.normal(jax.random.key(1), (5, 2))
    expected = dist.MultivariateNormal(MEAN, COV).log_prob(x)
    np.testing.assert_allclose(prior.log_prob(x), expected, rtol=1e-5, atol=1e-5)
    assert prior.log_prob(x[0]).shape == ()


def test_score_only_log_prob_raises_clear_error():
    target = rb.targets.score_only(rb.targets.gaussian(MEAN, COV))
    prior = DiffusionPrior(target, nfe=25)
    with pytest.raises(NotImplementedError, match="logdensity.*split Gibbs|split"):
        prior.log_prob(jnp.zeros(2))
    assert prior.sample(jax.random.key(0), (3,)).shape == (3, 2)


def test_bad_arguments():
    with pytest.raises(ValueError, match="dim is required"):
        DiffusionPrior(rb.targets.from_score(lambda x, t: -x))
    with pytest.raises(TypeError, match="target must be"):
        DiffusionPrior(lambda x, t: -x, dim=2)
    with pytest.raises(TypeError, match="algorithm must be"):
        DiffusionPrior(rb.targets.gaussian(MEAN, COV), algorithm="rtk")
    prior = DiffusionPrior(rb.targets.gaussian(MEAN, COV), nfe=25)
    with pytest.raises(ValueError, match="trailing dimension of size 2"):
        prior.log_prob(jnp.zeros(3))


def test_works_inside_predictive():
    A = jnp.array([[1.0, 0.5]])
    target = rb.targets.gaussian(MEAN, COV)

    def model(y=None):
        # Built inside the model, i.e. while NumPyro traces it.
        x = numpyro.sample("x", DiffusionPrior(target, nfe=25))
        sigma = numpyro.sample("sigma", dist.HalfNormal(1.0))
        numpyro.sample("y", dist.Normal(A @ x, sigma), obs=y)

    n = 1000
    draws = numpyro.infer.Predictive(model, num_samples=n)(jax.random.key(2))
    assert draws["x"].shape == (n, 2)
    assert draws["y"].shape == (n, 1)
    x = np.asarray(draws["x"])
    mean_z = (x.mean(0) - MEAN) / np.sqrt(np.diag(COV) / n)
    assert np.abs(mean_z).max() < 4.5, mean_z
