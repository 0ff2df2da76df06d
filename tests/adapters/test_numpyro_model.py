"""NumPyro models as flat unconstrained log densities (adapters.numpyro_model)."""

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist
import pytest
from numpyro.infer.util import initialize_model
from scipy import stats

from rtk_blackjax.adapters.numpyro_model import ModelDensity, model_density


def scale_model(y):
    mu = numpyro.sample("mu", dist.Normal(1.0, 2.0))
    sigma = numpyro.sample("sigma", dist.LogNormal(0.0, 1.0))
    numpyro.deterministic("double_mu", 2 * mu)
    with numpyro.plate("data", y.shape[0]):
        numpyro.sample("y", dist.Normal(mu, sigma), obs=y)


def vector_model():
    numpyro.sample("z", dist.Normal(jnp.zeros(3), 1.0).to_event(1))
    numpyro.sample("w", dist.Dirichlet(jnp.ones(3)))


Y = jnp.array([0.3, -1.2, 2.0, 0.7])


def test_logdensity_is_minus_potential_with_jacobian():
    md = model_density(scale_model, Y)
    assert isinstance(md, ModelDensity)
    assert md.dim == 2
    # Sites are flattened in sorted-name order: mu, then log(sigma).
    x = jnp.array([0.4, -0.3])
    mu, sigma = 0.4, np.exp(-0.3)
    expected = (
        stats.norm(1.0, 2.0).logpdf(mu)
        + stats.lognorm(s=1.0).logpdf(sigma)
        + np.log(sigma)  # Jacobian of sigma = exp(u)
        + stats.norm(mu, sigma).logpdf(np.asarray(Y)).sum()
    )
    np.testing.assert_allclose(md.logdensity_fn(x), expected, rtol=1e-5)
    info = initialize_model(jax.random.key(0), scale_model, model_args=(Y,))
    np.testing.assert_allclose(
        md.logdensity_fn(x), -info.potential_fn(md.unravel_fn(x)), rtol=1e-6
    )
    # Gradient via autodiff is finite at the initial point.
    g = jax.grad(md.logdensity_fn)(md.initial_position)
    assert g.shape == (2,) and bool(jnp.all(jnp.isfinite(g)))


def test_postprocess_constrains_and_vmaps():
    md = model_density(scale_model, Y)
    xs = jnp.array([[0.0, 0.0], [1.0, -2.0], [-3.0, 5.0]])
    out = jax.vmap(md.postprocess_fn)(xs)
    assert set(out) == {"mu", "sigma", "double_mu"}
    np.testing.assert_allclose(out["sigma"], np.exp([0.0, -2.0, 5.0]), rtol=1e-6)
    np.testing.assert_allclose(out["double_mu"], 2 * xs[:, 0], rtol=1e-6)


def test_vector_and_simplex_sites():
    md = model_density(vector_model, rng_key=jax.random.key(3))
    # z has 3 coordinates; a 3-simplex has 2 unconstrained ones.
    assert md.dim == 5
    w = md.postprocess_fn(jnp.linspace(-1.0, 1.0, 5))["w"]
    assert w.shape == (3,)
    np.testing.assert_allclose(jnp.sum(w), 1.0, rtol=1e-6)
    assert bool(jnp.all(w > 0))
    assert md.unravel_fn(jnp.zeros(5))["z"].shape == (3,)


def test_model_kwargs_are_passed():
    def model(y=None, scale=1.0):
        mu = numpyro.sample("mu", dist.Normal(0.0, scale))
        numpyro.sample("y", dist.Normal(mu, 1.0), obs=y)

    md = model_density(model, y=jnp.array(2.0), scale=10.0)
    # Conjugate: log density differs from the scale=1 prior.
    x = jnp.array([1.0])
    expected = stats.norm(0, 10).logpdf(1.0) + stats.norm(1.0, 1.0).logpdf(2.0)
    np.testing.assert_allclose(md.logdensity_fn(x), expected, rtol=1e-5)


def test_discrete_latent_site_is_refused():
    def model():
        k = numpyro.sample("k", dist.Bernoulli(0.3))
        numpyro.sample("x", dist.Normal(k, 1.0))

    with pytest.raises(ValueError, match="discrete latent site 'k'"):
        model_density(model)


def test_model_without_latent_sites_is_refused():
    def model(y):
        numpyro.sample("y", dist.Normal(0.0, 1.0), obs=y)

    with pytest.raises(ValueError, match="no latent sample sites"):
        model_density(model, 1.0)


def test_non_callable_model_is_refused():
    with pytest.raises(TypeError, match="model must be a NumPyro model"):
        model_density("not a model")
