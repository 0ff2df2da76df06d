"""DPS baseline: shapes, honest NFE (score + VJP per step), guidance pulls to the data."""

import arviz as az
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import rtk_blackjax as rb
from rtk_blackjax.posterior import posterior_to_arviz
from rtk_blackjax.posterior.dps import dps_linear_gaussian

PRIOR = rb.targets.gaussian(jnp.zeros(2), 1.0)
A = jnp.array([[1.0, 0.0]])
Y = jnp.array([2.0])


def _counting_prior():
    """A prior whose score records how often it is traced into a step."""
    calls = []

    def score(x, t):
        calls.append(1)
        return -x

    return rb.targets.from_score(score), calls


def test_shapes_and_nfe_count():
    res = dps_linear_gaussian(
        jax.random.key(0), PRIOR, A, Y, 0.5, num_samples=64, prior_nfe_budget=41
    )
    steps = len(res.extras["times"]) - 1
    assert steps == 20
    assert res.samples.shape == (64, 1, 2)
    # each step: one score evaluation and one score-VJP (counted as one evaluation)
    assert res.prior_nfe == 2 * steps == 40
    assert res.likelihood_evals == steps
    summary = az.summary(posterior_to_arviz(res), kind="diagnostics")
    assert summary.shape[0] == res.samples.shape[-1]
    prior, calls = _counting_prior()
    dps_linear_gaussian(
        jax.random.key(0), prior, A, Y, 0.5, num_samples=4, prior_nfe_budget=10
    )
    assert len(calls) == 1  # one score call per traced step: the VJP reuses it


def test_zero_guidance_is_ddpm_and_guidance_moves_towards_the_data():
    # ancestral DDPM loses variance on coarse grids (0.8 at 30 steps on N(0, I))
    free = dps_linear_gaussian(
        jax.random.key(1),
        PRIOR,
        A,
        Y,
        0.5,
        num_samples=4000,
        prior_nfe_budget=200,  # 100 steps: DDPM keeps 0.93 of the variance
        zeta=0.0,
    )
    x = np.asarray(free.samples[:, 0])
    se = 1.0 / np.sqrt(4000)
    np.testing.assert_array_less(np.abs(x.mean(0)), 5 * se)
    np.testing.assert_allclose(x.var(0), 1.0, atol=0.1)
    guided = dps_linear_gaussian(
        jax.random.key(1),
        PRIOR,
        A,
        Y,
        0.5,
        num_samples=4000,
        prior_nfe_budget=60,
        zeta=0.5,
    )
    g = np.asarray(guided.samples[:, 0])
    # exact posterior mean of the observed coordinate is 2 / (1 + 0.25) = 1.6
    assert 0.8 < g[:, 0].mean() < 2.2
    assert abs(g[:, 1].mean()) < 5 * se  # unobserved coordinate untouched


def test_bad_inputs():
    with pytest.raises(ValueError, match="too small"):
        dps_linear_gaussian(
            jax.random.key(0), PRIOR, A, Y, 0.5, num_samples=4, prior_nfe_budget=1
        )
    with pytest.raises(ValueError, match="zeta"):
        dps_linear_gaussian(
            jax.random.key(0),
            PRIOR,
            A,
            Y,
            0.5,
            num_samples=4,
            prior_nfe_budget=10,
            zeta=-1.0,
        )
    with pytest.raises(ValueError, match="obs_dim"):
        dps_linear_gaussian(
            jax.random.key(0), PRIOR, A, Y[:0], 0.5, num_samples=4, prior_nfe_budget=10
        )
    with pytest.raises(TypeError, match="Target"):
        dps_linear_gaussian(
            jax.random.key(0),
            lambda x: x,
            A,
            Y,
            0.5,
            num_samples=4,
            prior_nfe_budget=10,
        )


def test_benchmark_cli_prints_one_json_object(capsys):
    import json

    from rtk_blackjax.benchmarks.posterior import main

    code = main(
        ["--dim", "8", "--obs-dim", "1", "--method", "dps", "--nfe", "20"]
        + ["--seed", "3", "--num-samples", "200", "--num-directions", "100"]
        + ["--zeta", "1.0", "--json"]
    )
    assert code == 0
    row = json.loads(capsys.readouterr().out)
    for key in ("method", "dim", "obs_dim", "nfe", "likelihood_evals", "sliced_w"):
        assert key in row
    assert row["nfe"] == 20.0 and row["mode_tv"] >= 0.0 and row["wall_s"] > 0
