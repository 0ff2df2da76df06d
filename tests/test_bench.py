"""NFE-budget policy and benchmark CLI: budgets respected, JSON fields present, clear errors."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import rtk_blackjax as rb
from rtk_blackjax import policy
from rtk_blackjax.__main__ import main
from rtk_blackjax.benchmarks import sampling


@pytest.mark.parametrize("method", policy.METHODS)
@pytest.mark.parametrize("nfe", [25, 105])
def test_policy_fits_the_budget_and_reports_true_nfe(method, nfe):
    target = rb.targets.chessboard(dim=3)
    cfg = policy.configure(method, target, nfe=nfe)
    assert cfg.config["expected_nfe"] <= nfe
    result = rb.sample(jax.random.key(0), cfg.algorithm, 4, dim=3)
    assert result.num_evaluations == cfg.config["expected_nfe"]
    if method.startswith("rtk"):
        # a real RTK configuration: it takes inner MCMC steps
        assert cfg.config["inner_steps"] >= 1


def test_score_only_methods_never_see_the_exact_energy():
    target = rb.targets.chessboard(dim=3)
    for method in ("rtk-mala-score", "rtk-uld"):
        cfg = policy.configure(method, target, nfe=25)
        # build a target whose log density explodes if it is ever called
        poisoned = target._replace(logdensity=lambda x, t: 1 / 0)
        cfg = policy.configure(method, poisoned, nfe=25)
        rb.sample(jax.random.key(0), cfg.algorithm, 2, dim=3)


@pytest.mark.parametrize("method", ["rtk-mala", "ddpm"])
def test_configure_takes_an_explicit_grid(method):
    target = rb.targets.chessboard(dim=2)
    times = jnp.array([6.0, 3.0, 2.5, 2.0, 0.5, 0.05, 0.0])
    cfg = policy.configure(method, target, nfe=25, times=times)
    assert cfg.config["grid"] == "explicit" and cfg.config["segments"] == 6
    assert cfg.config["horizon"] == 6.0
    result = rb.sample(jax.random.key(0), cfg.algorithm, 4, dim=2)
    assert result.num_evaluations == cfg.config["expected_nfe"] <= 25


def test_calibrated_bench_grid_is_fitted_to_the_target():
    # 25 modes 8 apart: the fitted grid keeps the policy's segments, horizon and
    # t_min but moves segments to where the modes separate; the pilot is reported.
    row, policy_row = (
        sampling.run_bench(
            target="grid25",
            dim=4,
            method="rtk-mala",
            nfe=25,
            num_samples=200,
            grid=grid,
            noise_floor=False,
        )
        for grid in ("calibrated", None)
    )
    config, base = row["config"], policy_row["config"]
    assert config["grid"] == "calibrated" and base["grid"] == "geometric"
    for key in ("segments", "horizon", "t_min", "expected_nfe"):
        assert config[key] == base[key], key
    assert config["calibration_prior_nfe_total"] == 512 * (1 + 3 * 128)
    assert row["nfe"] == policy_row["nfe"]
    # modes 8 sqrt(2) apart separate around t ~ 2: the geometric grid (5 to 1e-3)
    # has one time in (0.5, 3), the fitted one gathers its segments there
    times = np.asarray(config["times"])
    geometric = np.asarray(
        rb.geometric_grid(base["segments"], base["horizon"], base["t_min"])
    )
    window = lambda t: int(np.sum((t > 0.5) & (t < 3.0)))  # noqa: E731
    assert window(times) >= 3 > window(geometric), (times, geometric)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(method="rtk-mala", nfe=3), "too small"),
        (dict(method="pf-ode", nfe=25, segments=40), "too small"),
        (dict(method="ddpm", nfe=0), "nfe"),
        (dict(method="euler", nfe=25), "method"),
        (dict(method="rtk-mala", nfe=25, grid="cosine"), "grid"),
        (dict(method="ddpm", nfe=25, inner_steps=2), "inner_steps"),
        (dict(method="rtk-mala", nfe=105, segments=3, inner_steps=[1, 1]), "entries"),
    ],
)
def test_configure_rejects_bad_requests(kwargs, match):
    with pytest.raises(ValueError, match=match):
        policy.configure(target=rb.targets.chessboard(dim=2), **kwargs)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(method="ddpm", nfe=25.5), "nfe must be an integer"),
        (dict(method="ddpm", nfe=True), "nfe must be an integer"),
        (
            dict(method="rtk-mala", nfe=None, segments=2.0),
            "segments must be an integer",
        ),
        (dict(method="ddpm", nfe=25, horizon="5"), "horizon"),
        (dict(method="ddpm", nfe=25, target=lambda x, t: -x), "target"),
    ],
)
def test_configure_rejects_wrong_kinds(kwargs, match):
    kwargs = dict(target=rb.targets.chessboard(dim=2)) | kwargs
    with pytest.raises(TypeError, match=match):
        policy.configure(**kwargs)


def test_cli_json_has_the_documented_fields(capsys):
    code = main(
        ["bench", "--dim", "3", "--method", "rtk-mala", "--nfe", "25"]
        + ["--num-samples", "300", "--json"]
    )
    assert code == 0
    out = json.loads(capsys.readouterr().out)
    for key in (
        "target dim method config nfe num_samples marginal_accuracy mode_tv "
        "var_rel_err var_bias sliced_w2 mmd acceptance wall_s noise_floor"
    ).split():
        assert key in out, key
    for key in ("segments", "inner_steps", "grid", "step_size"):
        assert key in out["config"], key
    assert out["nfe"] <= 25
    assert 0 < out["acceptance"] <= 1


def test_cli_reports_bad_budget_as_an_error(capsys):
    assert main(["bench", "--method", "rtk-mala", "--nfe", "2", "--json"]) == 2
    assert "too small" in capsys.readouterr().err


def test_sweep_writes_table_and_plot(tmp_path):
    png = tmp_path / "sweep.png"
    table, rows = sampling.sweep(
        dim=3,
        methods=("ddpm", "rtk-mala"),
        nfes=(25,),
        num_samples=300,
        plot_path=str(png),
        log=lambda _: None,
    )
    assert png.stat().st_size > 1000
    assert table.count("\n") == 4  # header, separator, 2 methods, noise floor
    assert {r["method"] for r in rows} == {"ddpm", "rtk-mala"}


def test_report_rebuilds_the_table_from_saved_rows(tmp_path, capsys):
    rows = tmp_path / "rows.jsonl"
    sampling.sweep(
        dim=2,
        methods=("ddim",),
        nfes=(25,),
        num_samples=200,
        jsonl_path=str(rows),
        log=lambda _: None,
    )
    png = tmp_path / "report.png"
    assert main(["bench", "--report", str(rows), "--plot", str(png)]) == 0
    table = capsys.readouterr().out
    assert "| ddim | 25 |" in table and "noise floor" in table
    assert png.exists()


def test_cli_checkpoint_dir_resumes_to_the_same_result(tmp_path, capsys):
    argv = ["bench", "--dim", "3", "--method", "rtk-mala", "--nfe", "25"]
    argv += ["--num-samples", "200", "--chunk-size", "64", "--json"]
    assert main(argv) == 0
    plain = json.loads(capsys.readouterr().out)
    ckpt = tmp_path / "ckpt"
    with_ckpt = argv + ["--checkpoint-dir", str(ckpt), "--checkpoint-every", "3"]
    assert main(with_ckpt) == 0
    first = json.loads(capsys.readouterr().out)
    assert (ckpt / "checkpoint.json").exists()
    # a second call finds the completed checkpoint and returns it unchanged
    assert main(with_ckpt) == 0
    second = json.loads(capsys.readouterr().out)
    for key in ("marginal_accuracy", "mode_tv", "var_bias", "nfe", "acceptance"):
        assert first[key] == plain[key] == second[key], key


def test_cli_no_info_keeps_acceptance(capsys):
    argv = ["bench", "--dim", "3", "--method", "rtk-mala", "--nfe", "25"]
    argv += ["--num-samples", "100", "--no-info", "--json"]
    assert main(argv) == 0
    out = json.loads(capsys.readouterr().out)
    assert 0 < out["acceptance"] <= 1
    assert "step_size" not in out["config"]


def test_cli_overhead_table(capsys):
    argv = ["bench", "--overhead", "--dim", "4", "--num-samples", "64"]
    argv += ["--nfe", "25", "--repeats", "1", "--methods", "ddpm,rtk-mala", "--json"]
    assert main(argv) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [row["method"] for row in rows] == ["ddpm", "rtk-mala"]
    for row in rows:
        assert row["nfe"] <= 25
        assert row["bare_s"] > 0 and row["sampler_s"] > 0
        assert row["ratio"] == pytest.approx(row["sampler_s"] / row["bare_s"])


# --------------------------------------------------------------------------
# bench-posterior: prior access, likelihood and protocol options
# --------------------------------------------------------------------------


def small_twisted_row(**kwargs) -> dict:
    """One small score-only ``twisted`` run of bench-posterior (d = 8, d_y = 2)."""
    from rtk_blackjax.benchmarks.posterior import run_posterior_bench

    return run_posterior_bench(
        8,
        2,
        "twisted",
        13,
        seed=0,
        num_samples=64,
        num_directions=50,
        prior_access="score",
        **kwargs,
    )


def test_posterior_bench_runs_a_score_only_method_on_a_nonlinear_likelihood():
    row = small_twisted_row(likelihood="phase")
    assert (row["prior_access"], row["likelihood"], row["protocol"]) == (
        "score",
        "phase",
        "gmm",
    )
    assert row["nfe"] == 13.0  # 1 + K (2 + 1) with K = 4 segments
    assert 0.0 <= row["mode_tv"] <= 1.0 and row["reference_error"] > 0.0
    assert row["sliced_w1"] > 0.0


def test_posterior_bench_passes_twisted_options():
    row = small_twisted_row(twisted_options={"num_inner_steps": 0})
    # no MALA steps: K = 6 segments of 2 evaluations for the same 13
    assert row["nfe"] == 13.0 and row["config"]["num_inner_steps"] == 0


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        (dict(method="smc", prior_access="score"), "needs the prior's energy"),
        (dict(method="nuts", likelihood="phase"), "linear-Gaussian likelihood only"),
        (dict(method="twisted", likelihood="phase", protocol="mcgdiff"), "protocol"),
        (dict(method="twisted", prior_access="exact"), "prior_access"),
        (dict(method="dps", twisted_options={"mala_segments": 2}), "twisted_options"),
    ],
)
def test_posterior_bench_refuses_what_a_method_cannot_serve(kwargs, message):
    from rtk_blackjax.benchmarks.posterior import run_posterior_bench

    method = kwargs.pop("method")
    with pytest.raises(ValueError, match=message):
        run_posterior_bench(8, 2, method, 13, seed=0, num_samples=8, **kwargs)


def test_mcgdiff_protocol_problems_follow_their_recipe():

    from rtk_blackjax.posterior import gmm

    problem = gmm.make_problem(3, 8, 2, protocol="mcgdiff")
    singular = np.linalg.svd(np.asarray(problem.obs_matrix), compute_uv=False)
    assert np.all((singular > 0) & (singular < 1))
    assert 0 < problem.sigma < singular.max()
    weights = np.asarray(problem.prior.weights)
    assert weights.std() > 0.2 * weights.mean()  # random, not equal, weights
    np.testing.assert_allclose(weights.sum(), 1.0, rtol=1e-6)
    # the default recipe is unchanged (the published tables depend on it)
    same = gmm.make_problem(3, 8, 2)
    np.testing.assert_allclose(np.asarray(same.prior.weights), 1 / 25, rtol=1e-6)


def test_posterior_bench_tunes_dps_on_the_held_out_problem():
    from rtk_blackjax.benchmarks import posterior as bench
    from rtk_blackjax.posterior.dps import ZETA_GRID

    zeta = bench.tune_dps(8, 1, 20, num_samples=64, access="score")
    assert zeta in ZETA_GRID


def test_posterior_bench_scores_a_method_that_blows_up_as_failed(monkeypatch):
    from rtk_blackjax.benchmarks import posterior as bench

    def blow_up(*args, **kwargs):
        raise FloatingPointError("non-finite particles")

    monkeypatch.setattr(bench, "_run_method", blow_up)
    row = bench.run_posterior_bench(
        8, 1, "tds", 20, num_problems=2, num_samples=8, prior_access="score"
    )
    assert row["mode_tv"] == 1.0 and len(row["failures"]) == 2
    assert "(2/2 failed)" in bench.format_table([row])


@pytest.mark.slow
def test_demo_runs_both_halves(tmp_path, capsys):
    # README's first command: the prior-sampling table, then the posterior demo
    prior_png, posterior_png = tmp_path / "d.png", tmp_path / "p.png"
    code = main(
        ["demo", "--num-samples", "200", "--nfe", "25", "--out", str(prior_png)]
        + ["--posterior-samples", "64", "--posterior-out", str(posterior_png)]
    )
    out = capsys.readouterr().out
    assert code == 0 and prior_png.exists() and posterior_png.exists()
    for method in ("smc", "tds", "split-gibbs"):
        assert f"method={method!r}" in out
