"""The low-acceptance warning: the user's run only, at the user's line, their knobs."""

import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import rtk_blackjax as rb
from rtk_blackjax.run import policy


def _stuck_sampler():
    # A huge MALA step on a narrow target: the inner chain never accepts.
    target = rb.targets.gaussian(jnp.zeros(2), 1e-3)
    return rb.rtk(target, rb.geometric_grid(3), rb.mala_inner(step_scale=1e4), 2)


def _low_acceptance(record):
    return [w for w in record if "inner-kernel acceptance" in str(w.message)]


def test_warning_points_at_the_callers_line_and_names_its_knobs():
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        rb.sample(jax.random.key(0), _stuck_sampler(), 20, dim=2)
    (warning,) = _low_acceptance(record)
    assert warning.filename == __file__
    assert "step_scale" in str(warning.message)


def test_no_hint_means_no_warning_and_hints_are_scoped():
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        with policy.low_acceptance_hint(None):
            rb.sample(jax.random.key(0), _stuck_sampler(), 20, dim=2)
        assert policy.current_hint() == policy.SAMPLE_HINT
        with policy.low_acceptance_hint("pass a finer grid to my_function"):
            rb.sample(jax.random.key(0), _stuck_sampler(), 20, dim=2)
    (warning,) = _low_acceptance(record)
    assert "my_function" in str(warning.message)
    assert "step_scale" not in str(warning.message)


def test_rtkkernel_pilot_rounds_do_not_warn():
    numpyro = pytest.importorskip("numpyro")
    import numpyro.distributions as dist
    from numpyro.infer import MCMC

    def model(y):
        mu = numpyro.sample("mu", dist.Normal(0.0, 1.0))
        numpyro.sample("y", dist.Normal(mu, 1.0), obs=y)

    kernel = rb.RTKKernel(model, times=jnp.array([3.0, 0.5, 0.0]),
                          num_importance=8, num_inner_steps=1,
                          num_pilot_rounds=1, pilot_particles=50)  # fmt: skip
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        # The pilot's first round, before any reference, barely accepts.
        with policy.low_acceptance_hint("should not be used by pilots"):
            mcmc = MCMC(kernel, num_warmup=0, num_samples=5, progress_bar=False)
            mcmc.run(jax.random.key(0), jnp.asarray(1.0))
    assert _low_acceptance(record) == []
    assert np.isfinite(np.asarray(mcmc.get_samples()["mu"])).all()


@pytest.mark.slow
def test_sample_logdensity_does_not_warn_on_a_healthy_run():
    from rtk_blackjax.adapters import sample_logdensity

    # A standard Gaussian in d = 50: segment 0 used to start from step factor
    # 0.2 whatever the dimension and accepted 0.03 (a warning on a healthy
    # run); initial_step_factor scales it like MALA's optimal step.
    def logp(x):
        return -0.5 * jnp.sum(x**2)

    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        out = sample_logdensity(jax.random.key(0), logp, 50, num_samples=300)
    assert out.result.acceptance_per_segment().min() > 0.3
    assert _low_acceptance(record) == []
    assert not [w for w in record if "ScaleWarning" in type(w.message).__name__]
