"""A NumPyro model's array arguments reach the posterior samplers as data.

``model_likelihood`` gives every observation of one model structure the same
``Likelihood.bind``, and ``twisted_smc`` / ``tds`` / ``dps`` / ``daps`` key their
compiled programs on it and take the data as an argument. What must hold:

* a second observation compiles nothing (the model body is traced with abstract
  arrays only while a program is built: counted here);
* the cached program reads the *new* observation: its draws are bit-identical to
  those of a program built for that observation alone, and they follow the
  closed-form posterior of each observation (a stale ``y`` fails both);
* models that need their arrays' values while traced, and observations of another
  shape, still get a right answer (their own program).
"""

import math
import warnings

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist
import pytest

import rtk_blackjax as rb
from rtk_blackjax.posterior.daps import daps
from rtk_blackjax.posterior.dps import dps
from rtk_blackjax.posterior.model import model_likelihood
from rtk_blackjax.posterior.twisted import tds, twisted_smc

A = jnp.array([[1.0, 1.0, 0.0], [0.0, 1.0, -1.0]])
SIGMA = 0.4
TARGET = rb.targets.gaussian(jnp.zeros(3), 1.0)
PRIOR = rb.posterior.DiffusionPrior(TARGET, dim=3)


def posterior_mean(y):
    """Closed form for ``x ~ N(0, I)``, ``y ~ N(A x, SIGMA² I)``."""
    a = np.asarray(A)
    gain = a.T @ np.linalg.inv(a @ a.T + SIGMA**2 * np.eye(2))
    cov = np.eye(3) - gain @ a
    return gain @ np.asarray(y), np.sqrt(np.diag(cov))


class TracedCalls:
    """A model that counts the calls it gets with abstract (traced) observations:
    one per program that reads them is built."""

    def __init__(self):
        self.traced = 0

    def __call__(self, y=None):
        if isinstance(y, jax.core.Tracer):
            self.traced += 1
        x = numpyro.sample("x", PRIOR)
        numpyro.sample("y", dist.Normal(A @ x, SIGMA), obs=y)


def sample(model, y, seed=0, method="smc"):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return rb.posterior.sample(
            jax.random.key(seed),
            model,
            num_samples=512,
            # TDS (DDPM kernels, no moves) needs a finer grid than the RTK SMC
            prior_nfe=31 if method == "smc" else 202,
            method=method,
            y=y,
        )


@pytest.mark.parametrize("method", ["smc", "tds", "dps", "daps"])
def test_a_new_observation_compiles_nothing_and_is_read(method):
    model = TracedCalls()
    y1, y2 = jnp.array([1.5, -0.4]), jnp.array([-2.0, 1.0])
    first = sample(model, y1, method=method)
    built = model.traced
    assert built >= 1  # the program traced the model with abstract data
    second = sample(model, y2, method=method)
    assert model.traced == built, "a new observation of the same shape recompiled"
    if method in ("dps", "daps"):
        # not exact samplers: each observation must still pull its draws its way
        # (the posterior means differ by several sd, below)
        gap = np.asarray(second.samples["x"]).mean(0) - posterior_mean(y1)[0]
        assert np.max(np.abs(gap)) > 1.0
        return
    for res, y in ((first, y1), (second, y2)):
        mean, sd = posterior_mean(y)
        x = np.asarray(res.samples["x"])
        # 512 resampled particles, at least a third independent (test_twisted.py)
        assert np.all(np.abs(x.mean(0) - mean) < 4 * sd / math.sqrt(512 / 3)), (
            x.mean(0),
            mean,
        )
    # the posterior means differ by several sd: a stale y could not pass both
    assert np.max(np.abs(posterior_mean(y1)[0] - posterior_mean(y2)[0])) > 1.0


def _dps(key, target, dim, likelihood, **kw):
    return dps(key, target, dim, likelihood, num_samples=64, **kw)


def _daps(key, target, dim, likelihood, **kw):
    return daps(key, target, dim, likelihood, num_samples=64, **kw)


def _particles(runner):
    def run(key, target, dim, likelihood, **kw):
        return runner(key, target, dim, likelihood, num_particles=64, **kw)

    return run


@pytest.mark.parametrize(
    "runner",
    [_particles(twisted_smc), _particles(tds), _dps, _daps],
    ids=["smc", "tds", "dps", "daps"],
)
def test_the_shared_program_draws_what_a_dedicated_one_draws(runner):
    """Bit for bit: data as an argument changes nothing but the compilation."""

    def model(y=None):
        x = numpyro.sample("x", PRIOR)
        numpyro.sample("y", dist.Normal(A @ x, SIGMA), obs=y)

    key = jax.random.key(3)
    _, warm = model_likelihood(key, model, (), {"y": jnp.array([0.3, 0.2])})
    _, lik = model_likelihood(key, model, (), {"y": jnp.array([1.0, -1.0])})
    assert warm.bind is lik.bind and lik.bind is not None
    run = lambda likelihood: runner(  # noqa: E731
        jax.random.key(1), TARGET, 3, likelihood, prior_nfe_budget=20
    )
    run(warm)  # builds the shared program
    shared = run(lik)
    dedicated = run(lik._replace(bind=None, data=None))
    np.testing.assert_array_equal(shared.samples, dedicated.samples)


def test_a_model_that_reads_its_arrays_values_gets_its_own_program():
    def model(y=None):
        x = numpyro.sample("x", PRIOR)
        observed = np.asarray(y)  # needs the value: cannot be traced abstractly
        numpyro.sample("y", dist.Normal(A @ x, SIGMA), obs=jnp.asarray(observed))

    y = jnp.array([1.5, -0.4])
    _, lik = model_likelihood(jax.random.key(0), model, (), {"y": y})
    assert lik.bind is None and lik.data is None
    res = sample(model, y)
    mean, sd = posterior_mean(y)
    x = np.asarray(res.samples["x"])
    assert np.all(np.abs(x.mean(0) - mean) < 4 * sd / math.sqrt(512 / 3))


def test_observations_of_another_shape_or_static_value_bind_apart():
    def model(y=None, scale=1.0):
        x = numpyro.sample("x", PRIOR)
        loc = jnp.resize(A @ x, jnp.shape(y)) * scale
        numpyro.sample("y", dist.Normal(loc, SIGMA), obs=y)

    key = jax.random.key(0)
    bind = lambda **kw: model_likelihood(key, model, (), kw)[1].bind  # noqa: E731
    two = bind(y=jnp.zeros(2))
    assert bind(y=jnp.ones(2)) is two
    assert bind(y=np.ones(2, np.float32)) is two  # NumPy or JAX: same data
    assert bind(y=jnp.zeros(3)) is not two  # another shape: another structure
    assert bind(y=jnp.zeros(2), scale=2.0) is not two  # a static argument
    assert bind(y=jnp.zeros(2), scale=1.0) is bind(y=jnp.ones(2), scale=1.0)
