"""ArviZ conversion and per-segment mixing diagnostics (rtk_blackjax.diagnostics)."""

import warnings

import arviz as az
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import rtk_blackjax as rb
from rtk_blackjax import diagnostics as dg
from rtk_blackjax.interop import arviz as arviz_interop
from rtk_blackjax.mcmc import rtk as rtk_module

MEAN = np.array([0.5, -1.0])
VAR = 0.5
DIM = 2
NUM_CHAINS, NUM_DRAWS = 4, 500


def _exact_q_variance(t_start, t_end, prior_var):
    """Variance of q_k for an isotropic Gaussian prior N(m, prior_var I)."""
    h = t_start - t_end
    a2, s2 = np.exp(-2 * h), 1 - np.exp(-2 * h)
    var_t = prior_var * np.exp(-2 * t_end) + 1 - np.exp(-2 * t_end)
    return 1 / (1 / var_t + a2 / s2)


@pytest.fixture(scope="module")
def setup():
    target = rb.targets.gaussian(MEAN, VAR)
    grid = rb.geometric_grid(6, horizon=4.0, t_min=1e-2)
    return target, grid


@pytest.fixture(scope="module")
def run(setup):
    target, grid = setup
    sampler = rb.rtk(target, grid, rb.mala_inner(), num_inner_steps=2)
    return rb.sample(jax.random.key(0), sampler, 400, dim=DIM)


@pytest.fixture(scope="module")
def well_tuned(setup):
    target, grid = setup
    return dg.segment_diagnostics(
        jax.random.key(0),
        target,
        grid,
        rb.mala_inner(),
        2,
        num_particles=3,
        num_chains=NUM_CHAINS,
        num_draws=NUM_DRAWS,
        num_warmup=50,
        dim=DIM,
    )


# --------------------------------------------------------------------------
# to_arviz
# --------------------------------------------------------------------------


def test_to_arviz_groups_dims_and_values(run):
    idata = dg.to_arviz(run, num_chains=4)
    post, stats = idata.posterior, idata.sample_stats
    assert dict(post["x"].sizes) == {"chain": 4, "draw": 100, "x_dim_0": DIM}
    # Sample i is draw i % 100 of chain i // 100.
    np.testing.assert_array_equal(
        post["x"].values[2, 7], np.asarray(run.samples)[2 * 100 + 7]
    )
    num_segments = run.times.shape[0] - 1
    assert dict(stats["acceptance_rate"].sizes) == {
        "chain": 4,
        "draw": 100,
        "segment": num_segments,
    }
    np.testing.assert_array_equal(
        stats["acceptance_rate"].values[1, 3],
        np.asarray(run.info.acceptance_rate)[:, 103],
    )
    assert (stats["nfe"].values == run.num_evaluations).all()
    assert (stats["segment_nfe"].sum("segment").values + 1 == run.num_evaluations).all()
    assert not stats["diverging"].values.any()
    assert (stats["first_nonfinite_segment"].values == num_segments).all()
    np.testing.assert_allclose(stats["t_end"].values, np.asarray(run.times)[1:])


def test_to_arviz_iid_particles_look_iid(run):
    # RTK particles are independent, so with chains = groups of particles the
    # rank R-hat is ~1 and the ESS ~ the number of samples (400).
    summary = az.summary(dg.to_arviz(run, num_chains=4), kind="diagnostics")
    assert (summary["r_hat"] < 1.02).all(), summary
    # ESS of 400 i.i.d. draws: sd of the estimate ~ 5 %, allow 25 %.
    assert summary["ess_bulk"].between(300, 500).all(), summary
    # The posterior matches N(MEAN, VAR): 5 sd of the MC error of the mean.
    x = np.asarray(run.samples)
    assert np.all(np.abs(x.mean(0) - MEAN) < 5 * np.sqrt(VAR / x.shape[0]))


def test_to_arviz_postprocess_sites_and_pytrees(run):
    def postprocess(x):
        return {"loc": x[0], "scale": jnp.exp(x[1]), "both": x}

    idata = dg.to_arviz(run, num_chains=2, postprocess_fn=postprocess)
    assert set(idata.posterior.data_vars) == {"loc", "scale", "both"}
    assert dict(idata.posterior["scale"].sizes) == {"chain": 2, "draw": 200}
    np.testing.assert_allclose(
        idata.posterior["scale"].values.ravel(),
        np.exp(np.asarray(run.samples)[:, 1]),
        rtol=1e-6,
    )
    tree = run._replace(samples={"a": run.samples[:, 0], "b": run.samples})
    assert set(dg.to_arviz(tree).posterior.data_vars) == {"a", "b"}


def test_to_arviz_without_info_and_with_nonfinite(run):
    samples = np.asarray(run.samples).copy()
    samples[5] = np.nan
    finite = np.ones(400, bool)
    finite[5] = False
    first_bad = np.full(400, run.times.shape[0] - 1)
    first_bad[5] = 2
    broken = run._replace(
        samples=samples, info=None, finite=finite, first_nonfinite_segment=first_bad
    )
    with pytest.warns(
        RuntimeWarning, match="1 of 400 samples are non-finite.*segment 2"
    ):
        idata = dg.to_arviz(broken, num_chains=4)
    assert idata.sample_stats["diverging"].values.sum() == 1
    assert bool(idata.sample_stats["diverging"].values[0, 5])
    assert "acceptance_rate" not in idata.sample_stats


def test_to_arviz_builds_a_datatree_for_arviz_1(run, monkeypatch):
    # arviz 1.x (Python >= 3.12) has no InferenceData: groups go in a DataTree.
    # Only the container differs; the Datasets (and az.rhat/ess on them) do not.
    monkeypatch.setattr(arviz_interop, "_ARVIZ_MAJOR", 1)
    tree = dg.to_arviz(run, num_chains=4)
    assert set(tree.children) == {"posterior", "sample_stats"}
    posterior = tree["posterior"].to_dataset()
    assert dict(posterior["x"].sizes) == {"chain": 4, "draw": 100, "x_dim_0": DIM}
    assert float(az.rhat(posterior)["x"].max()) < 1.02


def test_one_converter_for_every_result_type(run):
    from rtk_blackjax.mcmc.logdensity import ModelSamples
    from rtk_blackjax.posterior import PosteriorResult, posterior_to_arviz
    from rtk_blackjax.posterior.split_gibbs import to_arviz as split_gibbs_to_arviz

    assert dg.to_arviz is posterior_to_arviz is split_gibbs_to_arviz
    # ModelSamples: the constrained sites are the posterior, the run's statistics
    # are the sample_stats of its SampleResult.
    x = np.asarray(run.samples)
    sites = {"loc": x[:, 0], "scale": np.exp(x[:, 1])}
    model_samples = ModelSamples(sites, run, None, 0)
    idata = dg.to_arviz(model_samples, num_chains=4)
    assert set(idata.posterior.data_vars) == {"loc", "scale"}
    np.testing.assert_array_equal(
        idata.posterior["scale"].values.ravel(), sites["scale"]
    )
    expected = dg.to_arviz(run, num_chains=4).sample_stats
    assert set(idata.sample_stats.data_vars) == set(expected.data_vars)
    np.testing.assert_array_equal(
        idata.sample_stats["acceptance_rate"].values,
        expected["acceptance_rate"].values,
    )
    with pytest.raises(ValueError, match="postprocess_fn applies to a SampleResult"):
        dg.to_arviz(model_samples, postprocess_fn=lambda v: {"v": v})
    # PosteriorResult: chains and draws as they are.
    res = PosteriorResult(
        x.reshape(4, 100, DIM), 1.0, 1.0, {"prior": np.ones((4, 100))}, {}
    )
    idata = dg.to_arviz(res, "theta")
    assert dict(idata.posterior["theta"].sizes) == {
        "chain": 4,
        "draw": 100,
        "theta_dim_0": DIM,
    }
    assert dg.to_arviz(res, num_chains=4).posterior["x"].shape == (4, 100, DIM)
    with pytest.raises(ValueError, match="num_chains must be None for a Posterior"):
        dg.to_arviz(res, num_chains=2)


def test_to_arviz_bad_input(run):
    with pytest.raises(ValueError, match="num_chains must divide"):
        dg.to_arviz(run, num_chains=7)
    with pytest.raises(TypeError, match="num_chains"):
        dg.to_arviz(run, num_chains=2.0)
    with pytest.raises(TypeError, match="result must be the SampleResult"):
        dg.to_arviz(np.zeros((4, 2)))
    with pytest.raises(TypeError, match="postprocess_fn must return a dict"):
        dg.to_arviz(run, postprocess_fn=lambda x: x)


# --------------------------------------------------------------------------
# segment_problem (the rtk.py refactor diagnostics rely on)
# --------------------------------------------------------------------------


@pytest.mark.parametrize("inner_name", ["uld", "mala"])
def test_segment_problem_rebuilds_the_kernels_segment(setup, inner_name):
    # Running the inner chain on the rebuilt problem with the kernel's keys gives
    # the kernel's output: the diagnostics examine the very q_k it solved.
    target, grid = setup
    inner = rb.uld_inner() if inner_name == "uld" else rb.mala_inner()
    kernel = rtk_module.build_kernel(target, grid, inner, num_inner_steps=3)
    state = rtk_module.init(jnp.array([0.3, -0.7]), target, grid)
    state = state._replace(step=jnp.asarray(2, jnp.int32))
    key = jax.random.key(5)
    new_state, info = kernel(key, state)

    problem = rtk_module.segment_problem(
        target, grid, 2, state.position, state.score, key, inner
    )
    _, _, key_init, key_chain = jax.random.split(key, 4)
    chain = inner.init(key_init, problem.initial_position, problem.logdensity_fn)
    accepted = []
    for i in range(3):
        chain, step_info = inner.step(
            jax.random.fold_in(key_chain, i),
            chain,
            problem.logdensity_fn,
            **problem.params,
        )
        accepted.append(float(getattr(step_info, "acceptance_rate", 1.0)))
    assert float(problem.params["step_size"]) == float(info.step_size)
    assert int(problem.num_evaluations) == 1  # the secant
    # Equal up to float32 rounding: the kernel's fori_loop is compiled (fused)
    # while this loop runs op by op; a different key would move it by O(0.1).
    # Unadjusted ULD is a smooth function of the keys, so rounding cannot change
    # its path. MALA's accept/reject can: a uniform within rounding of the
    # acceptance probability flips the decision in one program only, and the
    # two paths part. Both runs report their acceptance probabilities, which
    # agree to rounding exactly when the paths agree, so the positions are
    # compared on the same path, never across a flip.
    same_path = np.isclose(np.mean(accepted), float(info.acceptance_rate), rtol=1e-5)
    if inner_name == "mala" and not same_path:
        pytest.skip("a Metropolis decision flipped between the fused and op-by-op runs")
    np.testing.assert_allclose(chain.position, new_state.position, rtol=1e-5)
    with pytest.raises(ValueError, match="k must be a segment index"):
        rtk_module.segment_problem(
            target, grid, 6, state.position, state.score, key, inner
        )


# --------------------------------------------------------------------------
# Per-segment mixing
# --------------------------------------------------------------------------


def test_iid_draws_give_textbook_rhat_ess_mcse():
    # A known case: i.i.d. N(0, 1) draws. ESS ~ C N, R-hat ~ 1, MCSE ~ sd / sqrt(C N).
    # Measured spread of the estimators at C N = 2000: ESS within +-15 %, MCSE
    # within +-10 %; bounds below leave a margin for the max/min over 18 cells.
    rng = np.random.default_rng(0)
    draws = rng.normal(size=(3, 2, NUM_CHAINS, NUM_DRAWS, 3))
    stats = dg._arviz_stats(draws)
    total = NUM_CHAINS * NUM_DRAWS
    assert stats["rhat"].max() < 1.01
    for name in ("ess_bulk", "ess_tail"):
        ratio = stats[name] / total
        assert 0.75 < ratio.min() and ratio.max() < 1.25, (name, ratio)
        assert abs(ratio.mean() - 1) < 0.1
    ratio = stats["mcse_mean"] / (stats["sd"] / np.sqrt(total))
    assert 0.85 < ratio.min() and ratio.max() < 1.2


@pytest.mark.slow
def test_well_tuned_mala_passes_without_warning(well_tuned):
    diag = well_tuned
    assert diag.rhat.shape == (6, 3, DIM)
    assert diag.draws.shape == (6, 3, NUM_CHAINS, NUM_DRAWS, DIM)
    assert diag.finite.all()
    with warnings.catch_warnings():
        warnings.simplefilter("error", dg.MixingWarning)
        table = dg.diagnose(diag)
    assert table["ok"].all(), dg.format_table(table)
    assert (table["max_rhat"] < 1.01).all()
    assert (table["min_ess_bulk"] > 400).all()
    # Roberts-Rosenthal scaling on near-Gaussian q_k: acceptance ~ 0.5-0.9 and
    # an autocorrelation time of a few steps.
    assert table["acceptance"].between(0.5, 0.95).all()
    assert table["tau"].between(1.0, 6.0).all()
    np.testing.assert_allclose(table["steps_per_tau"], 2 / table["tau"], rtol=1e-12)
    # The chains sample q_k: its exact variance is known for a Gaussian prior.
    # ESS ~ 900 per coordinate, 2 coordinates: rel. sd of the variance ~ 0.05.
    pooled = diag.draws.reshape(6, 3, -1, DIM).var(axis=2).mean(axis=-1)
    exact = _exact_q_variance(diag.t_start, diag.t_end, VAR)[:, None]
    assert np.abs(pooled / exact - 1).max() < 0.25, pooled / exact
    text = dg.format_table(table)
    assert "max_rhat" in text and len(text.splitlines()) == 7


@pytest.mark.slow
def test_broken_inner_kernel_is_flagged(setup):
    # Step size 1e-4 of the automatic one: MALA accepts everything but crawls.
    target, grid = setup
    diag = dg.segment_diagnostics(
        jax.random.key(0),
        target,
        grid,
        rb.mala_inner(step_scale=1e-4),
        2,
        num_particles=2,
        num_chains=NUM_CHAINS,
        num_draws=200,
        num_warmup=0,
        segments=[1, 4],
        dim=DIM,
    )
    with pytest.warns(dg.MixingWarning, match=r"2 of 2 segments.*segments 1 \(.*4 \("):
        table = dg.diagnose(diag)
    assert list(table["segment"]) == [1, 4]
    assert not table["ok"].any()
    assert (table["problem"] == "rhat,ess").all()
    assert (table["max_rhat"] > 1.5).all()
    assert (table["min_ess_bulk"] < 50).all()
    assert (table["acceptance"] > 0.99).all()


def test_nonfinite_chains_are_reported():
    draws = np.random.default_rng(1).normal(size=(2, 1, 4, 50, 2))
    draws[1, 0, 2, 10:] = np.nan
    diag = dg.diagnostics_from_draws(draws, inner_steps=[1, 1])
    assert diag.finite.tolist() == [[True], [False]]
    with pytest.warns(dg.MixingWarning, match="segments 1 "):
        table = dg.diagnose(diag, min_ess=10)
    assert list(table["problem"]) == ["", "nonfinite"]
    with pytest.raises(ValueError, match="draws must have shape"):
        dg.diagnostics_from_draws(draws[0])
    with pytest.raises(ValueError, match="inner_steps must have one entry"):
        dg.diagnostics_from_draws(draws, inner_steps=[1, 2, 3])


def test_plot_writes_png(well_tuned, tmp_path):
    path = dg.plot_segment_diagnostics(well_tuned, tmp_path / "mixing.png")
    assert path.stat().st_size > 10_000
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    dg.plot_segment_diagnostics(well_tuned, tmp_path / "two.png", segments=[0, 5])
    with pytest.raises(ValueError, match="were not examined"):
        dg.plot_segment_diagnostics(well_tuned, tmp_path / "x.png", segments=[9])
    with pytest.raises(ValueError, match=".png"):
        dg.plot_segment_diagnostics(well_tuned, tmp_path / "x.pdf")


def test_segment_diagnostics_bad_input(setup):
    target, grid = setup
    key = jax.random.key(0)
    with pytest.raises(ValueError, match="segments must be indices"):
        dg.segment_diagnostics(key, target, grid, segments=[6], dim=DIM)
    with pytest.raises(ValueError, match="num_chains"):
        dg.segment_diagnostics(key, target, grid, num_chains=1, dim=DIM)
    with pytest.raises(TypeError, match="target must be"):
        dg.segment_diagnostics(key, None, grid, dim=DIM)
    with pytest.raises(ValueError, match="dispersion"):
        dg.segment_diagnostics(key, target, grid, dispersion=-1.0, dim=DIM)
    with pytest.raises(TypeError, match="diagnostics must be"):
        dg.diagnose({})


@pytest.mark.slow
def test_exact_independence_kernel_gives_iid_chains():
    # Isotropic Gaussian target: the secant curvature is exact, so the Gaussian
    # approximation *is* q_k and the independence sampler proposing from it
    # accepts every move: the chains are i.i.d. draws of q_k, ESS ~ C N.
    target = rb.targets.gaussian(np.zeros(3), 0.2)
    grid = rb.geometric_grid(4, horizon=3.0, t_min=1e-2)
    diag = dg.segment_diagnostics(
        jax.random.key(3),
        target,
        grid,
        rb.independence_inner(),
        1,
        num_particles=2,
        num_chains=NUM_CHAINS,
        num_draws=NUM_DRAWS,
        num_warmup=0,
        dispersion=1.0,
        dim=3,
    )
    total = NUM_CHAINS * NUM_DRAWS
    assert diag.acceptance.min() > 0.999
    assert diag.rhat.max() < 1.01
    ratio = diag.ess_bulk / total
    assert 0.75 < ratio.min() and ratio.max() < 1.25, ratio
    # i.i.d. draws of the exact q_k: 2 x 3 x 2000 draws per cell, rel. sd of
    # the variance sqrt(2 / 6000) = 0.018; 5 sd.
    pooled = diag.draws.reshape(4, 2, -1, 3).var(axis=2).mean(axis=-1)
    exact = _exact_q_variance(diag.t_start, diag.t_end, 0.2)[:, None]
    assert np.abs(pooled / exact - 1).max() < 0.09, pooled / exact
    with warnings.catch_warnings():
        warnings.simplefilter("error", dg.MixingWarning)
        dg.diagnose(diag)
