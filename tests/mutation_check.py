"""Mutation check: do the tests catch a wrong algorithm?

Not a test module (``tests/conftest.py`` keeps pytest from collecting it). Run::

    python tests/mutation_check.py [--only ID,ID] [--timeout 600] [--marker "not slow"]

For each single-point mutation below it copies the repository to a temporary
directory, replaces ``old`` by ``new`` in ``file`` (the snippet must occur exactly
once), runs the listed tests there (``PYTHONPATH`` = the copy, ``-x``: the first
failure kills the mutant) and prints a table: ``killed`` (a test failed),
``survived`` (all passed: the tests cannot see this bug), ``anchor not found``
(the code moved: re-anchor the snippet), ``timeout``.

Snippets are written against the code at the time of writing; the library is being
refactored, so an anchor that no longer matches is reported, never fatal.
"""

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import NamedTuple

ROOT = Path(__file__).resolve().parent.parent


class Mutation(NamedTuple):
    id: str
    file: str
    old: str
    new: str
    tests: tuple
    why: str


E2E = "tests/test_e2e_statistical.py"
NFE = "tests/test_nfe_instruments.py"
POST = "tests/test_e2e_posterior.py"
TWISTED = "tests/posterior/test_twisted.py"

MUTATIONS = [
    Mutation(
        "rtk-discards-inner-chain",
        "rtk_blackjax/mcmc/rtk.py",
        "        position = inner_state.position\n",
        "        position = problem.initial_position\n",
        (E2E + "::test_rtk_inner_kernels_are_accurate_and_needed[mala]",),
        "RTK returns its Gaussian predictor, not the inner chain's result",
    ),
    Mutation(
        "uld-step-times-1e-8",
        "rtk_blackjax/mcmc/uld.py",
        '        "step_size": step_factor / sqrt_curvature,',
        '        "step_size": 1e-8 * step_factor / sqrt_curvature,',
        (E2E + "::test_rtk_inner_kernels_are_accurate_and_needed[uld-adjusted]",),
        "ULD inner chain frozen by a tiny step",
    ),
    Mutation(
        "projection-test-inverted",
        "rtk_blackjax/mcmc/inner.py",
        "inside = jnp.linalg.norm(new_flat - old_flat) <= radius",
        "inside = jnp.linalg.norm(new_flat - old_flat) > radius",
        (
            E2E
            + "::test_score_only_rtk_is_accurate_and_needs_its_moves[score-mala-projected]",
        ),
        "projected score-MALA rejects every move inside the radius",
    ),
    Mutation(
        "score-mala-cost-1-plus-1",
        "rtk_blackjax/mcmc/score_energy.py",
        "    each = 1 + extra  # score(x) itself and the interior nodes\n",
        "    each = 1 + 1  # score(x) itself and the interior nodes\n",
        (NFE + "::test_score_only_rtk_nfe_is_the_real_count",),
        "score-MALA declares 2 evaluations per step whatever its quadrature",
    ),
    Mutation(
        "dps-guidance-doubled",
        "rtk_blackjax/posterior/dps.py",
        "x0 = (x + s2_t * (score + zeta * lik_grad_x)) / a_t",
        "x0 = (x + s2_t * (score + 2.0 * zeta * lik_grad_x)) / a_t",
        (
            POST + "::test_dps_matches_its_exact_law_and_its_guidance_matters",
            "tests/posterior/test_dps.py",
        ),
        "DPS guidance scale doubled",
    ),
    Mutation(
        "uld-adjusted-always-accepts",
        "rtk_blackjax/mcmc/uld.py",
        "is_accepted = log_uniform < log_p_accept",
        "is_accepted = log_uniform < jnp.inf",
        (
            "tests/mcmc/test_uld.py",
            E2E + "::test_rtk_inner_kernels_are_accurate_and_needed[uld-adjusted]",
        ),
        "no Metropolis test in the adjusted ULD kernel",
    ),
    Mutation(
        "secant-curvature-sign",
        "rtk_blackjax/segment.py",
        "    return -jnp.dot(score_u - score_y, direction) / jnp.dot(direction, direction)",
        "    return jnp.dot(score_u - score_y, direction) / jnp.dot(direction, direction)",
        (
            E2E + "::test_rtk_inner_kernels_are_accurate_and_needed[mala]",
            "tests/mcmc/test_rtk.py",
        ),
        "secant curvature estimate with the wrong sign",
    ),
    Mutation(
        "diagonal-curvature-sign",
        "rtk_blackjax/segment.py",
        "    return -(score_fn(y + direction) - score_y) / direction",
        "    return (score_fn(y + direction) - score_y) / direction",
        (
            "tests/mcmc/test_rtk.py",
            E2E + "::test_rtk_inner_kernels_are_accurate_and_needed[mala]",
        ),
        "per-coordinate curvature (RTK's default) with the wrong sign",
    ),
    Mutation(
        "diagonal-curvature-averaged",
        "rtk_blackjax/segment.py",
        "            score_fn, y, score_y, secant_scale * jnp.sqrt(s2) * signs\n        )\n",
        "            score_fn, y, score_y, secant_scale * jnp.sqrt(s2) * signs\n        ).mean()\n",
        ("tests/mcmc/test_rtk.py",),
        "the per-coordinate curvature silently averaged to one isotropic value",
    ),
    Mutation(
        "smc-weights-not-updated",
        "rtk_blackjax/posterior/smc.py",
        "        logw_new = logw + incr\n",
        "        logw_new = logw + 0.0 * incr\n",
        (
            POST + "::test_smc_matches_the_exact_posterior",
            "tests/posterior/test_smc.py",
        ),
        "SMC incremental weights ignored",
    ),
    Mutation(
        "smc-resampling-wrong-indices",
        "rtk_blackjax/posterior/smc.py",
        "idx = jnp.where(do_resample, systematic(k_res, weights, n), jnp.arange(n))",
        "idx = jnp.where(do_resample, jax.random.randint(k_res, (n,), 0, n), "
        "jnp.arange(n))",
        (
            POST + "::test_smc_matches_the_exact_posterior",
            "tests/posterior/test_smc.py",
        ),
        "SMC resamples uniformly (indices not drawn from the weights)",
    ),
    Mutation(
        "split-gibbs-resampling-wrong-indices",
        "rtk_blackjax/posterior/split_gibbs_linear.py",
        "                idx = systematic(key_w, weights, num_chains)\n",
        "                idx = jnp.arange(num_chains)\n",
        (
            POST + "::test_split_gibbs_mode_weights_of_a_bimodal_prior",
            POST + "::test_split_gibbs_matches_the_exact_posterior",
            "tests/posterior/test_split_gibbs.py",
        ),
        "split Gibbs resampling keeps every chain whatever its weight",
    ),
    Mutation(
        "tweedie-mean-off-by-a",
        "rtk_blackjax/segment.py",
        "    return (y + s2 * score_y) / a\n",
        "    return y + s2 * score_y\n",
        (
            E2E + "::test_rtk_inner_kernels_are_accurate_and_needed[mala]",
            "tests/mcmc/test_rtk.py",
        ),
        "Tweedie's mean not divided by a_t",
    ),
    Mutation(
        "uld-friction-in-integrator",
        "rtk_blackjax/mcmc/uld.py",
        "    decay = jnp.exp(-a)\n",
        "    decay = jnp.exp(-2.0 * a)\n",
        (
            "tests/mcmc/test_uld.py",
            E2E + "::test_rtk_inner_kernels_are_accurate_and_needed[uld]",
        ),
        "velocity decays with twice the friction the noise is built for",
    ),
    Mutation(
        "uld-default-friction-wrong",
        "rtk_blackjax/mcmc/uld.py",
        '        "friction": 2.0 * sqrt_curvature,',
        '        "friction": 0.02 * sqrt_curvature,',
        (
            E2E + "::test_rtk_inner_kernels_are_accurate_and_needed[uld]",
            "tests/mcmc/test_rtk_uld.py",
        ),
        "ULD 100x under-damped (still invariant: a mixing bug)",
    ),
    Mutation(
        "drift-check-kernel-frozen",
        "rtk_blackjax/mcmc/logdensity.py",
        "            state, info = kernel(k, state, logdensity_fn, step_size)\n",
        "            state, info = kernel(k, state, logdensity_fn, 0.0 * step_size)\n",
        (
            "tests/adapters/test_logdensity.py::"
            "test_drift_check_is_calibrated_and_sees_a_wrong_spread",
        ),
        "the drift check's MALA chains never move (every draw passes)",
    ),
    Mutation(
        "drift-check-not-run",
        "rtk_blackjax/mcmc/logdensity.py",
        "        _warn_on_drift(drift)\n",
        "        pass\n",
        (
            "tests/adapters/test_logdensity.py::"
            "test_the_funnel_run_stein_missed_is_flagged_by_the_drift_check",
        ),
        "sample_logdensity computes the drift check but never warns",
    ),
    Mutation(
        "stein-sign-flipped",
        "rtk_blackjax/mcmc/logdensity.py",
        "    products = -np.asarray(grads * (x - x.mean(0)), dtype=np.float64)\n",
        "    products = np.asarray(grads * (x - x.mean(0)), dtype=np.float64)\n",
        (
            "tests/adapters/test_logdensity.py::"
            "test_drift_and_stein_see_different_parts_of_a_funnel",
            "tests/adapters/test_logdensity.py::"
            "test_stein_check_is_one_for_exact_draws_of_a_mixture",
        ),
        "Stein's ratio with the wrong sign (-1 for exact draws)",
    ),
    # The log-density path's per-segment counts and the schedule cut from the pilot.
    Mutation(
        "isir-counts-padding",
        "rtk_blackjax/mcmc/logdensity.py",
        "            nfe = nfe + m_k + 1\n",
        "            nfe = nfe + max_m + 1\n",
        (NFE + "::test_sample_logdensity_reports_every_evaluation_it_spends[adapted]",),
        "rtk_logdensity declares every segment's cost at the schedule's largest M",
    ),
    Mutation(
        "adapted-schedule-keeps-useless-candidates",
        "rtk_blackjax/mcmc/logdensity.py",
        "    m = np.where(move < ADAPT_MIN_MOVE_RATE, 0, m)\n",
        "    m = m\n",
        (
            "rtk_blackjax/mcmc/logdensity.py::"
            "rtk_blackjax.mcmc.logdensity.adapted_schedule",
        ),
        "adapted_schedule keeps candidates where the pilot saw none move",
    ),
    # The twisted SMC behind rb.posterior.sample (method "smc") and its peer MCGdiff.
    Mutation(
        "twisted-weights-not-updated",
        "rtk_blackjax/posterior/twisted.py",
        "        logw_new = logw + incr\n",
        "        logw_new = logw + 0.0 * incr\n",
        (TWISTED + "::test_smc_weighs_the_modes_of_a_mixture_prior",),
        "twisted SMC ignores its incremental weights (the twist's proposal alone)",
    ),
    Mutation(
        "twisted-resampling-wrong-indices",
        "rtk_blackjax/posterior/twisted.py",
        "do_resample, systematic(k_res, jax.nn.softmax(logw_new), n), jnp.arange(n)",
        "do_resample, jax.random.randint(k_res, (n,), 0, n), jnp.arange(n)",
        (TWISTED + "::test_smc_weighs_the_modes_of_a_mixture_prior",),
        "twisted SMC resamples uniformly (indices not drawn from the weights)",
    ),
    Mutation(
        "twisted-latent-moves-dropped",
        "rtk_blackjax/posterior/twisted.py",
        "        if likelihood.num_params and config.num_param_steps:\n",
        "        if False:\n",
        (TWISTED + "::test_unknown_sigma_marginal_matches_quadrature",),
        "resample-move of the latent parameters (sigma) switched off",
    ),
    Mutation(
        "mcgdiff-resampling-wrong-indices",
        "rtk_blackjax/posterior/mcgdiff.py",
        "        idx = systematic(k_res, jax.nn.softmax(logw), n)\n",
        "        idx = jax.random.randint(k_res, (n,), 0, n)\n",
        (
            "tests/posterior/test_mcgdiff.py::"
            "test_gaussian_posterior_and_evidence_match_the_closed_form",
        ),
        "MCGdiff resamples uniformly (indices not drawn from the weights)",
    ),
    Mutation(
        "posterior-program-keeps-first-observation",
        "rtk_blackjax/posterior/twisted.py",
        "        lambda bind: _build(prior, dim, bind, num_particles, config),\n",
        "        lambda bind: _build(prior, dim, lambda _, d=likelihood.data: bind(d),"
        " num_particles, config),\n",
        (
            "tests/posterior/test_model_data.py::"
            "test_a_new_observation_compiles_nothing_and_is_read",
        ),
        "the cached twisted-SMC program reads the observation it was built for",
    ),
    Mutation(
        "smc-lineages-forget-resampling",
        "rtk_blackjax/posterior/twisted.py",
        "        info = TwistedSMCInfo(ess, do_resample, mala_rate, param_rate, log_incr, idx)\n",
        "        info = TwistedSMCInfo(\n"
        "            ess, do_resample, mala_rate, param_rate, log_incr, jnp.arange(n)\n"
        "        )\n",
        (
            "tests/posterior/test_twisted.py::"
            "test_smc_reports_its_lineages_and_warns_when_few_survive",
        ),
        "the lineage count ignores the resampling (every draw its own family)",
    ),
    Mutation(
        "kernel-mismatch-trapezoid-sign",
        "rtk_blackjax/posterior/smc.py",
        "        d_log_p = 0.5 * jnp.dot(score_1 + score_2, z1 - z2)",
        "        d_log_p = -0.5 * jnp.dot(score_1 + score_2, z1 - z2)",
        (
            "tests/posterior/test_smc.py::test_calibrated_grid_is_geometric_for_a_gaussian_prior",
        ),
        "score-only grid pilot: trapezoid energy difference with the wrong sign",
    ),
    Mutation(
        "kernel-mismatch-one-candidate",
        "rtk_blackjax/posterior/smc.py",
        "        z1, z2 = q.mean + sd * e1, q.mean + sd * e2",
        "        z1, z2 = q.mean + sd * e1, q.mean + sd * e1",
        (
            "tests/posterior/test_smc.py::test_kernel_mismatch_sees_an_anisotropic_gaussian",
            "tests/posterior/test_smc.py::test_calibrated_grid_concentrates_where_modes_separate",
        ),
        "score-only grid pilot that compares a candidate with itself (sees nothing)",
    ),
]


def _copy(dest: Path) -> None:
    ignore = shutil.ignore_patterns(
        ".git", ".venv", "__pycache__", ".pytest_cache", ".ruff_cache", "*.egg-info"
    )
    shutil.copytree(ROOT, dest, ignore=ignore)


def run(mutation: Mutation, timeout: int, marker: str) -> tuple[str, float]:
    start = time.time()
    with tempfile.TemporaryDirectory(prefix=f"mut-{mutation.id}-") as tmp:
        repo = Path(tmp) / "repo"
        _copy(repo)
        path = repo / mutation.file
        if not path.exists():
            return "anchor not found (file)", 0.0
        text = path.read_text()
        if text.count(mutation.old) != 1:
            found = text.count(mutation.old)
            return f"anchor not found ({found} matches)", 0.0
        path.write_text(text.replace(mutation.old, mutation.new))
        env = dict(os.environ, PYTHONPATH=str(repo), JAX_PLATFORMS="cpu")
        cmd = [
            sys.executable,
            "-m",
            "pytest",
            "-x",
            # in-process: with xdist workers, -x ends the run as "interrupted"
            # (exit code 2) instead of "failed" (1)
            "-n",
            "0",
            "-q",
            "-p",
            "no:cacheprovider",
            "-W",
            "ignore::RuntimeWarning",
            "-m",
            marker,
            *mutation.tests,
        ]
        try:
            proc = subprocess.run(
                cmd, cwd=repo, env=env, capture_output=True, text=True, timeout=timeout
            )
        except subprocess.TimeoutExpired:
            return "timeout", time.time() - start
        elapsed = time.time() - start
        if proc.returncode == 0:
            return "survived", elapsed
        if proc.returncode == 1:
            return "killed", elapsed
        if proc.returncode == 5:
            return "no tests ran", elapsed
        return f"error (pytest rc {proc.returncode})", elapsed


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", default="", help="comma-separated mutation ids")
    parser.add_argument("--timeout", type=int, default=600)
    parser.add_argument("--marker", default="not slow")
    args = parser.parse_args(argv)
    chosen = [m for m in MUTATIONS if not args.only or m.id in args.only.split(",")]
    rows = []
    for mutation in chosen:
        status, elapsed = run(mutation, args.timeout, args.marker)
        rows.append((mutation.id, status, elapsed, mutation.why))
        print(f"{mutation.id:38s} {status:26s} {elapsed:6.0f}s", flush=True)
    print("\n| mutation | result | time | what it breaks |\n|---|---|---|---|")
    for mid, status, elapsed, why in rows:
        print(f"| {mid} | {status} | {elapsed:.0f} s | {why} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
