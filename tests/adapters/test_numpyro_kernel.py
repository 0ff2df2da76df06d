"""RTK inside numpyro.infer.MCMC (adapters.numpyro_kernel)."""

import arviz as az
import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist
import pytest
from numpyro.infer import MCMC

from rtk_blackjax.adapters.numpyro_kernel import RTKKernel
from rtk_blackjax.mcmc.logdensity import gaussian_reference

Y = jnp.array([0.9, 2.1, 1.4, 0.3, 1.8])
PRIOR_MEAN, PRIOR_SD, NOISE_SD = 0.0, 2.0, 1.0
# Conjugate posterior of mu.
POST_VAR = 1.0 / (1.0 / PRIOR_SD**2 + Y.shape[0] / NOISE_SD**2)
POST_MEAN = POST_VAR * (PRIOR_MEAN / PRIOR_SD**2 + float(Y.sum()) / NOISE_SD**2)
LOG_TAU_SD = 0.5


def conjugate_model(y):
    mu = numpyro.sample("mu", dist.Normal(PRIOR_MEAN, PRIOR_SD))
    # A positive site the data do not touch: its posterior is its prior.
    tau = numpyro.sample("tau", dist.LogNormal(0.0, LOG_TAU_SD))
    numpyro.deterministic("mu_plus_tau", mu + tau)
    with numpyro.plate("data", y.shape[0]):
        numpyro.sample("y", dist.Normal(mu, NOISE_SD), obs=y)


TIMES = jnp.array([4.0, 1.5, 0.6, 0.25, 0.08, 0.0])
SMALL = dict(
    times=TIMES,
    num_importance=[32, 32, 32, 32, 0],
    num_inner_steps=2,
    num_pilot_rounds=1,
    pilot_particles=100,
)


def run(chain_method, num_chains, num_samples, seed=0, **kwargs):
    kernel = RTKKernel(conjugate_model, **{**SMALL, **kwargs})
    mcmc = MCMC(
        kernel,
        num_warmup=0,
        num_samples=num_samples,
        num_chains=num_chains,
        chain_method=chain_method,
        progress_bar=False,
    )
    mcmc.run(
        jax.random.key(seed),
        Y,
        extra_fields=("num_evaluations", "acceptance_rate", "diverging"),
    )
    return kernel, mcmc


def test_conjugate_posterior_vectorized_and_constrained_sites():
    kernel, mcmc = run("vectorized", num_chains=4, num_samples=250)
    samples = mcmc.get_samples()
    assert set(samples) == {"mu", "tau", "mu_plus_tau"}
    n = samples["mu"].shape[0]
    assert n == 1000
    mu = np.asarray(samples["mu"])
    # Draws are independent: MC error of the mean is sd / sqrt(n).
    assert abs(mu.mean() - POST_MEAN) < 4 * np.sqrt(POST_VAR / n)
    assert abs(mu.std() / np.sqrt(POST_VAR) - 1) < 4 * np.sqrt(1 / (2 * n))
    tau = np.asarray(samples["tau"])
    assert np.all(tau > 0)
    log_tau = np.log(tau)
    assert abs(log_tau.mean()) < 4 * LOG_TAU_SD / np.sqrt(n)
    assert abs(log_tau.std() / LOG_TAU_SD - 1) < 4 * np.sqrt(1 / (2 * n))
    np.testing.assert_allclose(samples["mu_plus_tau"], mu + tau, rtol=1e-5)
    extra = mcmc.get_extra_fields()
    # The declared costs (checked against a counter inside the model in
    # tests/test_nfe_instruments.py): 1 at init + per segment M + 1 for i-SIR
    # (the candidates and the gradient at the chosen point; M = 0 on the last
    # segment) + 2 MALA steps.
    expected_nfe = 1 + 4 * (32 + 1) + (0 + 1) + 5 * 2
    assert np.all(np.asarray(extra["num_evaluations"]) == expected_nfe)
    assert not np.any(np.asarray(extra["diverging"]))
    acc = np.asarray(extra["acceptance_rate"])
    assert np.all((acc > 0.2) & (acc <= 1.0))
    assert kernel.pilot_evaluations == 100 * expected_nfe


def test_sequential_matches_vectorized_and_arviz():
    # A given reference and no pilot: this test is about the chain plumbing.
    kwargs = dict(num_pilot_rounds=0, reference=gaussian_reference(jnp.zeros(2), 4.0))
    _, seq = run("sequential", num_chains=2, num_samples=5, seed=1, **kwargs)
    _, vec = run("vectorized", num_chains=2, num_samples=5, seed=1, **kwargs)
    a = seq.get_samples(group_by_chain=True)
    b = vec.get_samples(group_by_chain=True)
    assert a["mu"].shape == (2, 5)
    # Each chain's draws depend only on its own key.
    np.testing.assert_allclose(a["mu"], b["mu"], rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(a["tau"], b["tau"], rtol=1e-4, atol=1e-5)
    seq.print_summary()
    idata = az.from_numpyro(vec)
    assert idata.posterior["mu"].dims == ("chain", "draw")
    assert idata.posterior["tau"].shape == (2, 5)
    summary = az.summary(idata, var_names=["mu", "tau"])
    assert np.all(np.isfinite(summary["mean"].to_numpy()))


@pytest.mark.slow
def test_multimodal_numpyro_model_mode_weights():
    # d = 6 mixture posterior, modes 8 apart along e_0, weights 0.7 / 0.3.
    d = 6
    mu = jnp.zeros(d).at[0].set(4.0)

    def model():
        mix = dist.MixtureSameFamily(
            dist.Categorical(probs=jnp.array([0.7, 0.3])),
            dist.MultivariateNormal(jnp.stack([mu, -mu]), jnp.eye(d)),
        )
        numpyro.sample("x", mix)

    kernel = RTKKernel(
        model,
        times=jnp.array([4.0, 2.0, 1.2, 0.7, 0.4, 0.2, 0.08, 0.02, 0.0]),
        num_importance=[64] * 7 + [0],
        num_inner_steps=2,
        num_pilot_rounds=3,
        pilot_particles=100,
    )
    mcmc = MCMC(
        kernel,
        num_warmup=0,
        num_samples=250,
        num_chains=4,
        chain_method="vectorized",
        progress_bar=False,
    )
    mcmc.run(jax.random.key(5))
    x = np.asarray(mcmc.get_samples()["x"])
    n = x.shape[0]
    frac = float(np.mean(x[:, 0] > 0))
    assert abs(frac - 0.7) < 4 * np.sqrt(0.21 / n)


def test_bad_arguments_are_refused():
    with pytest.raises(TypeError, match="model must be a NumPyro model"):
        RTKKernel(3)
    with pytest.raises(ValueError, match="num_pilot_rounds must be"):
        RTKKernel(conjugate_model, num_pilot_rounds=-1)
    with pytest.raises(TypeError, match="reference must be a GaussianReference"):
        RTKKernel(conjugate_model, reference=(0.0, 1.0))
    kernel = RTKKernel(conjugate_model, reference=gaussian_reference(jnp.zeros(2), 1.0))
    with pytest.raises(RuntimeError, match="before RTKKernel.init"):
        kernel.sample(None, (Y,), {})
