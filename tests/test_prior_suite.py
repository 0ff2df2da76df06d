"""benchmarks/prior_suite.py: the suite's cases, the verdict rule, a tiny real run."""

import json

import numpy as np
import pytest
from scripts import load_benchmark_script

from rtk_blackjax.benchmarks.sampling import TARGETS, make_target


@pytest.fixture(scope="module")
def suite():
    return load_benchmark_script("prior_suite.py", "prior_suite")


def _row(method, mode_tv, var_bias, *, nfe=105, seed=1, held_out=True, grid=None):
    if grid is None:  # the policy's grid
        grid = "logsnr" if method == "dpm-solver++" else "geometric"
    return {
        "target": "mog",
        "dim": 10,
        "seed": seed,
        "method": method,
        "nfe_budget": nfe,
        "held_out": held_out,
        "num_samples": 5000,
        "config": {"grid": grid},
        "mode_tv": mode_tv,
        "var_bias": var_bias,
        "noise_floor": {"mode_tv": 0.01, "var_bias": 0.0001},
    }


def test_suite_covers_the_issue_targets_with_held_out_seeds(suite):
    targets = {(c.target, c.dim) for c in suite.SUITE}
    assert {("mog", d) for d in (2, 10, 32, 100)} <= targets
    assert ("grid25", 10) in targets and ("multiscale", 10) in targets
    held = {c.seed for c in suite.SUITE if c.held_out}
    tuned = {c.seed for c in suite.SUITE if not c.held_out}
    assert held and not held & tuned
    assert all(c.target in TARGETS for c in suite.SUITE)


def test_new_targets_are_what_the_suite_claims():
    grid = make_target("grid25", 10).mixture
    means = np.asarray(grid.means)
    gaps = np.linalg.norm(means[:, None] - means[None], axis=-1)
    # 25 unit-variance modes, every pair at least 8 * sqrt(5) apart in d = 10.
    assert means.shape == (25, 10)
    assert gaps[~np.eye(25, dtype=bool)].min() == pytest.approx(8 * np.sqrt(5))
    wide = make_target("multiscale", 10, seed=1).mixture
    scale = np.exp(np.mean(np.log(np.asarray(wide.cov_eigvals)), axis=1))
    assert scale.max() / scale.min() > 30
    with pytest.raises(ValueError, match="target must be one of"):
        make_target("swiss-roll", 2)


def test_verdict_rule_uses_the_noise_floor_and_the_best_rtk(suite):
    floor_var = np.sqrt(2.0 / (5000 * 10))  # > the row's 1e-4 floor
    rows = [
        _row("rtk-mala", 0.030, 0.001),
        _row("rtk-uld", 0.050, 0.0),  # worse score: not the best RTK
        _row("ddpm", 0.022, 0.001),  # rtk within 0.01 of it on TV
        _row("dpm-solver++", 0.010, 0.0),
    ]
    (v,) = suite.verdicts(rows)
    assert v["best_rtk"] == "rtk-mala" and v["matches_ddpm"]
    assert v["floor_var"] == pytest.approx(floor_var)
    assert "matches_dpm_solver" not in v  # only judged at 505 NFE

    rows[2] = _row("ddpm", 0.015, 0.001)  # TV excess 0.015 > floor 0.01
    (v,) = suite.verdicts(rows)
    assert not v["matches_ddpm"]
    assert v["excess_over_ddpm"][0] == pytest.approx(0.015)

    rows[2] = _row("ddpm", 0.030, 0.0)  # |var_bias| excess 1.5 floors
    rows[0] = _row("rtk-mala", 0.030, -1.5 * floor_var)
    (v,) = suite.verdicts(rows)
    assert not v["matches_ddpm"]

    at_505 = [
        _row(m, tv, vb, nfe=505)
        for m, tv, vb in [
            ("rtk-mala", 0.03, 0.0),
            ("ddpm", 0.03, 0.0),
            ("dpm-solver++", 0.01, 0.0),
        ]
    ]
    (v,) = suite.verdicts(at_505)
    assert v["matches_ddpm"] and not v["matches_dpm_solver"]
    table = suite.format_verdicts([v])
    assert "**miss**" in table and "match (rtk-mala)" in table
    counts = suite.summary([v])
    assert counts["policy/held_out@505"] == {
        "cases": 1,
        "matches_ddpm": 1,
        "matches_dpm_solver": 0,
    }


def test_each_method_is_judged_on_its_policy_grid_or_the_given_one(suite):
    assert suite.policy_grid("dpm-solver++") == "logsnr"
    assert suite.policy_grid("rtk-mala") == suite.policy_grid("ddpm") == "geometric"
    rows = [_row(m, 0.02, 0.0) for m in ("rtk-mala", "ddpm")] + [
        _row(m, tv, 0.0, grid="logsnr") for m, tv in (("rtk-mala", 0.2), ("ddpm", 0.02))
    ]
    (policy,) = suite.verdicts(rows)
    (logsnr,) = suite.verdicts(rows, "logsnr")
    assert policy["grid"] == "policy" and policy["matches_ddpm"]
    assert logsnr["grid"] == "logsnr" and not logsnr["matches_ddpm"]
    assert (
        policy["mode_tv"]["rtk-mala"] == 0.02 and logsnr["mode_tv"]["rtk-mala"] == 0.2
    )


@pytest.mark.slow
def test_tiny_run_writes_rows_and_skips_them_on_rerun(suite, tmp_path, capsys):
    out = tmp_path / "rows.jsonl"
    argv = [
        "--targets",
        "grid25",
        "--quick",
        "--nfe",
        "25",
        "--num-samples",
        "200",
        "--out",
        str(out),
    ]
    assert suite.main(argv) == 0
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert {r["method"] for r in rows} == set(suite.METHODS)
    assert all(r["nfe"] <= 25 for r in rows)
    assert all(r["config"]["grid"] == suite.policy_grid(r["method"]) for r in rows)
    assert "| grid25 | 10 | 0 | policy | 25 |" in capsys.readouterr().out
    assert suite.main(argv) == 0  # everything is already there
    assert len(out.read_text().splitlines()) == len(rows)


def test_bad_arguments_are_refused(suite):
    with pytest.raises(SystemExit):
        suite.main(["--targets", "swiss-roll", "--report"])
    with pytest.raises(SystemExit):
        suite.main(["--num-samples", "10", "--report"])
