"""Simulation-based calibration of the posterior samplers on 8x8 digits (issue 16).

Posterior tasks with a *learned* diffusion prior on scikit-learn's digits
(:mod:`rtk_blackjax.benchmarks.digits`) and an unknown noise scale,
``sigma ~ LogNormal(log 0.2, 0.4)`` (model units: a pixel level is 1/8 = 0.125),
``y ~ Normal(A x, sigma)``:

* ``inpaint-random``: a fixed random half of the pixels observed;
* ``inpaint-block``: the upper half observed, the lower half (rows 4-7) hidden;
* ``denoise``: every pixel observed;
* ``blur``: every pixel of the image blurred by the 3x3 kernel
  ``[1, 2, 1] ⊗ [1, 2, 1] / 16`` (zero padding).

**SBC** (:mod:`rtk_blackjax.sbc`): ``x`` from the learned prior, ``sigma`` from its
prior, ``y`` simulated, the sampler's draws, the rank of each true statistic (three
fixed pixels, ``sigma``, the mean intensity, the classifier's logit of digit 0).
The truths must come from the learned model itself, not from real digits, and
from a sampler that is right for it:

* energy prior (``--energy-truth rtk``, the default): RTK-MALA with the exact
  energy in its Metropolis tests at ``--truth-nfe`` (1000) evaluations per draw,
  ``DiffusionPrior(target, nfe=1000)``: a long run of the same kind of sampler whose
  convergence RTK is about, and one that stays where the model was trained.
  ``--energy-truth mala`` instead refines an RTK draw by ``--truth-steps`` MALA
  steps on ``E(·, 0)`` (the density the twisted SMC's last weights and NUTS use):
  measured, those chains leave the data (energies 3000-7000 against 300-400 at
  RTK draws, pixels far outside [-1, 1]): the learned energy at ``t = 0`` is not a
  usable density away from the training data, so its "truths" are not the
  learned model's digits. Kept to reproduce that finding.
* score prior: there is no ``log p_0``; the learned model's ``p_0`` is defined by a
  converged reverse diffusion, here score-only RTK-MALA at 1000 NFE per draw.

Every draw goes through ``rb.posterior.sample``, one model per task and method: the
observation is a model argument, hence data of the compiled program, so ``smc``,
``tds``, ``mcgdiff``, ``dps`` and ``daps`` compile once and each replication only
runs (about 1-2 s here, against 10-20 s with a compilation). The first call
records the entry point's refusals (``mcgdiff``: the latent ``sigma``), cost and
warnings. ``split-gibbs`` and ``nuts`` compile per call; they get
``--other-reps`` replications.

**Held-out real digits** (inpainting tasks): ``--held-out`` test digits with
``sigma = 0.2`` noise; the PSNR of the posterior mean against the digit (all 64
pixels, pixel units 0..16, peak 16) and the coverage of the central 50 % and 90 %
posterior intervals of the hidden pixels.

Cost, measured on 2 cores (2026-12-07): one replication (128 draws, 100 prior NFE
each) of ``smc`` or ``tds`` takes 1.2-2.5 s on the inpainting tasks (32
observations) but about 9.5 s (``smc``) to 16-19 s on ``denoise`` and ``blur`` (64
observations: the twist linearises the forward map, one Jacobian row per
observation); ``dps`` and ``daps`` 0.2-0.4 s. 200 replications of the five cached
method-prior pairs on the two inpainting tasks take about 45 minutes
(``--reps 200 --smc-reps 200 --tasks inpaint-block,inpaint-random``; the defaults
are 120 and 30); ``docs/posteriors.md`` lists the commands of the published
table.

Run (2 cores)::

    python benchmarks/digits_sbc.py --quick          # a few minutes
    python benchmarks/digits_sbc.py --tasks inpaint-block,inpaint-random
    python benchmarks/digits_sbc.py --tasks denoise,blur --methods smc-energy --smc-reps 30

writes ``docs/data/digits_sbc.json`` (merged by task and method; ``--out`` for
another file) and ``docs/digits_sbc_<task>_<method>-<prior>[_<tag>].png`` (rank
histograms; ``--tag`` keeps a variant's pictures apart from the default's). Rows
of the particle methods record ``lineages_mid``: per replication, the fewest
lineages over replicas at mid diffusion time (``res.diagnostics["lineages"]``).
"""

from __future__ import annotations

import argparse
import json
import math
import time
import warnings
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist

import rtk_blackjax as rb
from rtk_blackjax.adapters.learned import learned_target
from rtk_blackjax.benchmarks.digits import (
    digits_classifier,
    digits_data,
    digits_prior,
)
from rtk_blackjax.posterior.twisted import mid_time_index
from rtk_blackjax.sbc import plot_rank_histograms, rank_uniformity, sbc_ranks

ROOT = Path(__file__).resolve().parent.parent
DIM = 64
SIGMA_LOC, SIGMA_SCALE = math.log(0.2), 0.4
HELD_OUT_SIGMA = 0.2
TASKS = ("inpaint-random", "inpaint-block", "denoise", "blur")
# (method, prior kind): every method of rb.posterior.sample with the energy prior,
# and the RTK SMC with the score-only prior too.
METHODS = (
    ("smc", "energy"),
    ("smc", "score"),
    ("tds", "energy"),
    ("mcgdiff", "energy"),
    ("dps", "energy"),
    ("daps", "energy"),
    ("split-gibbs", "energy"),
    ("nuts", "energy"),
)
# programs cached per model (a new observation is data): cheap replications
CACHED = ("smc", "tds", "mcgdiff", "dps", "daps")
PIXELS = (19, 36, 50)  # (row 2, col 3), (4, 4), (6, 2): observed / hidden by the block


def operator(task: str) -> tuple[np.ndarray, np.ndarray]:
    """``(A, hidden)``: the forward matrix and the indices of unobserved pixels."""
    eye = np.eye(DIM, dtype=np.float32)
    if task == "inpaint-random":
        observed = np.sort(np.random.default_rng(1).permutation(DIM)[: DIM // 2])
    elif task == "inpaint-block":
        observed = np.arange(DIM // 2)
    elif task == "denoise":
        return eye, np.array([], int)
    elif task == "blur":
        k = np.array([1.0, 2.0, 1.0]) / 4.0
        band = sum(np.eye(8, k=o) * k[o + 1] for o in (-1, 0, 1))
        return np.kron(band, band).astype(np.float32), np.array([], int)
    else:
        raise ValueError(f"task must be one of {TASKS}, got {task!r}")
    return eye[observed], np.setdiff1d(np.arange(DIM), observed)


def make_model(prior, A):
    """``sigma ~ LogNormal``; ``y ~ N(A x, sigma)``."""
    A = jnp.asarray(A)

    def model(y=None):
        x = numpyro.sample("x", prior)
        sigma = numpyro.sample("sigma", dist.LogNormal(SIGMA_LOC, SIGMA_SCALE))
        numpyro.sample("y", dist.Normal(A @ x, sigma), obs=y)

    return model


# --------------------------------------------------------------------------
# Truths from the learned prior
# --------------------------------------------------------------------------


def energy_truth_sampler(target, num_steps: int, seed: int = 0):
    """``key -> x``: an RTK draw refined by MALA on ``E(·, 0)`` (module docstring),
    its step size, acceptance and a convergence check on a pilot batch."""
    import blackjax

    prior = rb.posterior.DiffusionPrior(target, dim=DIM, nfe=400)
    logdensity = lambda x: target.logdensity(x, 0.0)  # noqa: E731

    def chain(key, x0, step, steps):
        mala = blackjax.mala(logdensity, step)

        def body(i, carry):
            state, acc = carry
            state, info = mala.step(jax.random.fold_in(key, i), state)
            return state, acc + info.acceptance_rate

        state, acc = jax.lax.fori_loop(0, steps, body, (mala.init(x0), jnp.zeros(())))
        return state.position, acc / steps

    batch_chain = jax.jit(jax.vmap(chain, (0, 0, None, None)), static_argnums=3)
    pilot_key = jax.random.key(10_000 + seed)
    x0 = prior.sample(pilot_key, (64,))
    keys = jax.random.split(pilot_key, 64)
    step = 1e-3
    for _ in range(8):  # tune the step for acceptance ≈ 0.6 (a few short runs)
        _, acc = batch_chain(keys, x0, step, 100)
        step *= float(np.exp(2.0 * (float(np.mean(acc)) - 0.6)))
    half, acc_half = batch_chain(keys, x0, step, num_steps // 2)
    full, acc = batch_chain(keys, x0, step, num_steps)
    check = {"step": step, "acceptance": float(np.mean(acc))}

    one = jax.jit(lambda key, x0: chain(key, x0, step, num_steps)[0])

    def draw(key):
        k0, k1 = jax.random.split(key)
        return one(k1, prior.sample(k0, (1,))[0])

    return draw, check, (np.asarray(x0), np.asarray(half), np.asarray(full))


def rtk_truth_sampler(target, nfe: int = 1000):
    """``key -> x``: the package's RTK prior sampler at ``nfe`` evaluations per draw
    (RTK-MALA; exact energy tests for an energy, quadrature for a score)."""
    prior = rb.posterior.DiffusionPrior(target, dim=DIM, nfe=nfe)
    return lambda key: prior.sample(key, (1,))[0], {"nfe": prior.num_evaluations}


def drift(stats_fn, before, after) -> dict:
    """Difference of the statistics' means, in standard errors of the difference."""
    a, b = stats_fn(before), stats_fn(after)
    out = {}
    for k in a:
        se = math.sqrt((np.var(a[k]) + np.var(b[k])) / len(a[k]))
        out[k] = round(float((np.mean(b[k]) - np.mean(a[k])) / max(se, 1e-12)), 2)
    return out


# --------------------------------------------------------------------------
# Posterior draws
# --------------------------------------------------------------------------


def entry_sampler(method, target, A, num_samples, prior_nfe, lineage_log=None):
    """``draws(key, y, caught=None)``: the task's posterior draws through
    ``rb.posterior.sample`` (the methods in ``CACHED`` compile once for
    every observation of the one model). ``caught``: a list that receives the
    call's warnings and result instead of silencing them. ``lineage_log``: a list
    that receives, per call of a particle method, the fewest lineages over its
    replicas at mid diffusion time (what ``lineage_warning`` reads)."""
    model = make_model(rb.posterior.DiffusionPrior(target, dim=DIM, nfe=25), A)

    def draws(key, y, caught=None):
        with warnings.catch_warnings(record=True) as seen:
            warnings.simplefilter("always" if caught is not None else "ignore")
            res = rb.posterior.sample(
                key,
                model,
                num_samples=num_samples,
                prior_nfe=prior_nfe,
                method=method,
                y=jnp.asarray(y, jnp.float32),
            )
        if caught is not None:
            caught.extend([res, *seen])
        if lineage_log is not None and "lineages" in res.diagnostics:
            at = mid_time_index(res.diagnostics["times"])
            lineage_log.append(int(np.min(res.diagnostics["lineages"][:, at])))
        return {
            "x": np.asarray(res.samples["x"]),
            "sigma": np.asarray(res.samples["sigma"]),
        }

    return draws


# --------------------------------------------------------------------------
# One task x method
# --------------------------------------------------------------------------


def statistics_fn(classifier):
    def statistics(theta):
        x = np.asarray(theta["x"], np.float64)
        single = x.ndim == 1
        x2 = np.atleast_2d(x)
        out = {f"pixel{p}": x2[:, p] for p in PIXELS}
        out["sigma"] = np.atleast_1d(np.asarray(theta["sigma"], np.float64))
        out["mean"] = x2.mean(1)
        out["logit0"] = classifier.logits(x2)[:, 0]
        return {k: (v[0] if single else v) for k, v in out.items()}

    return statistics


def num_bins_for(reps: int, num_draws: int) -> int:
    """Most bins (of 20, 10, 8, 5, 4, 2) with ``reps / bins >= 5`` that divide L + 1."""
    for b in (20, 10, 8, 5, 4, 2):
        if (num_draws + 1) % b == 0 and reps / b >= 5:
            return b
    return 2


def run_sbc(task, method, kind, args, truths, classifier, log):
    A, _ = operator(task)
    target = learned_target(digits_prior(kind))
    statistics = statistics_fn(classifier)
    truth_draw = truths[kind]
    cache: dict = {}

    def simulate(key):
        # the same key gives the same truth for every task and method
        k_x, k_s, k_e = jax.random.split(key, 3)
        name = (kind, bytes(np.asarray(jax.random.key_data(k_x))))
        if name not in cache:
            cache[name] = np.asarray(truth_draw(k_x))
        x = cache[name]
        sigma = float(jnp.exp(SIGMA_LOC + SIGMA_SCALE * jax.random.normal(k_s)))
        y = A @ x + sigma * np.asarray(jax.random.normal(k_e, (A.shape[0],)))
        return {"x": x, "sigma": sigma}, y

    row = dict(task=task, method=method, prior=kind)
    # the entry point on the first observation: refusal, cost, warnings
    _, y0 = simulate(
        jax.random.split(jax.random.fold_in(jax.random.key(args.seed), 0), 3)[0]
    )
    start = time.perf_counter()
    try:
        lineage_log: list = []
        draws = entry_sampler(
            method, target, A, args.num_samples, args.prior_nfe, lineage_log
        )
        caught: list = []
        draws(jax.random.key(1), y0, caught)
        res = caught.pop(0)
        row["prior_nfe"] = round(res.prior_nfe, 1)
        row["entry_warnings"] = [str(w.message)[:160] for w in caught][:3]
        row["entry_s"] = round(time.perf_counter() - start, 1)
    except (ValueError, NotImplementedError) as err:
        row["refused"] = str(err)
        log(f"{task:15s} {method:12s} {kind:6s} refused: {str(err)[:120]}")
        return row, None
    reps = args.reps if method in CACHED else args.other_reps
    if method == "smc" and kind == "energy":
        reps = args.smc_reps
    if reps == 0:
        row["skipped"] = "no replications asked for (cost: compiles per call)"
        return row, None
    start = time.perf_counter()
    done = []

    def logged_draws(key, y):  # progress, every 25 replications
        done.append(1)
        if len(done) % 25 == 0:
            log(
                f"  {task} {method}-{kind}: {len(done)}/{reps}, {time.perf_counter() - start:.0f} s"
            )
        return draws(key, y)

    try:
        out = sbc_ranks(
            jax.random.key(args.seed),
            simulate,
            logged_draws,
            statistics,
            reps,
            num_draws=args.num_draws,
        )
    except FloatingPointError as err:
        # the entry point refuses to return non-finite draws: the method cannot
        # serve this observation, so it fails SBC (no rank for it, no retry)
        row.update(
            passed=False,
            failed=f"non-finite draws on replication {len(done)} of {reps}: {err}",
            reps=len(done),
        )
        log(f"{task:15s} {method:12s} {kind:6s} FAIL: {row['failed']}")
        return row, None
    wall = time.perf_counter() - start
    bins = num_bins_for(reps, out.num_draws)
    test = rank_uniformity(out.ranks, out.num_draws, num_bins=bins)
    row.update(
        reps=reps,
        num_draws=out.num_draws,
        num_bins=bins,
        passed=test.passed,
        min_corrected_p=min(test.corrected.values()),
        corrected_p={k: float(f"{v:.3g}") for k, v in test.corrected.items()},
        wall_s=round(wall, 1),
        s_per_rep=round(wall / reps, 2),
        ranks={k: v.tolist() for k, v in out.ranks.items()},
    )
    if len(lineage_log) > 1:
        # per replication, the fewest lineages over replicas at mid time (the
        # entry call's first is the observation checked above, not a replication)
        counts = np.asarray(lineage_log[1:])
        row["lineages_mid"] = {
            "median": float(np.median(counts)),
            "min": int(counts.min()),
            "max": int(counts.max()),
        }
    tag = f"_{args.tag}" if args.tag else ""
    png = ROOT / "docs" / f"digits_sbc_{task}_{method}-{kind}{tag}.png"
    if args.write:
        plot_rank_histograms(
            out.ranks,
            out.num_draws,
            png,
            num_bins=bins,
            title=f"{task}, {method} ({kind} prior): {reps} replications, L = {out.num_draws}",
        )
    log(
        f"{task:15s} {method:12s} {kind:6s} {'pass' if test.passed else 'FAIL'} "
        f"min p_corr {row['min_corrected_p']:.2g}  reps {reps}  NFE {row['prior_nfe']}"
        f"  {wall:.0f} s"
        + (
            f"  lineages at mid time: median {row['lineages_mid']['median']:g}"
            if "lineages_mid" in row
            else ""
        )
    )
    return row, test


def held_out(task, method, kind, args, data, log):
    """PSNR and interval coverage on real held-out digits (inpainting tasks)."""
    A, hidden = operator(task)
    target = learned_target(digits_prior(kind))
    draws_fn = entry_sampler(method, target, A, args.num_samples, args.prior_nfe)
    key = jax.random.key(args.seed + 7)
    psnr, cover50, cover90 = [], [], []
    start = time.perf_counter()
    for i, truth in enumerate(data.test[: args.held_out]):
        k_e, k_p = jax.random.split(jax.random.fold_in(key, i))
        y = A @ truth + HELD_OUT_SIGMA * np.asarray(
            jax.random.normal(k_e, (A.shape[0],))
        )
        x = draws_fn(k_p, y)["x"]
        mse = np.mean((data.to_pixels(x.mean(0)) - data.to_pixels(truth)) ** 2)
        psnr.append(10 * math.log10(16.0**2 / mse))
        q = np.quantile(x[:, hidden], [0.05, 0.25, 0.75, 0.95], axis=0)
        t = truth[hidden]
        cover50.append(np.mean((q[1] <= t) & (t <= q[2])))
        cover90.append(np.mean((q[0] <= t) & (t <= q[3])))
    row = dict(
        task=task,
        method=method,
        prior=kind,
        digits=len(psnr),
        sigma=HELD_OUT_SIGMA,
        psnr=round(float(np.mean(psnr)), 2),
        coverage50=round(float(np.mean(cover50)), 3),
        coverage90=round(float(np.mean(cover90)), 3),
        coverage90_sd_over_digits=round(float(np.std(cover90)), 3),
        wall_s=round(time.perf_counter() - start, 1),
    )
    log(
        f"held-out {task:15s} {method}-{kind}: PSNR {row['psnr']} dB, coverage 50 % "
        f"{row['coverage50']}, 90 % {row['coverage90']} ({row['digits']} digits)"
    )
    return row


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="small run (minutes)")
    p.add_argument("--tasks", default=",".join(TASKS))
    p.add_argument(
        "--methods",
        default=",".join(f"{m}-{k}" for m, k in METHODS),
        help="method-prior pairs, e.g. smc-energy,smc-score,tds-energy",
    )
    p.add_argument(
        "--smc-reps", type=int, default=120, help="smc with the energy prior"
    )
    p.add_argument(
        "--reps", type=int, default=30, help="other cached methods (tds, smc-score)"
    )
    p.add_argument(
        "--other-reps", type=int, default=0, help="methods that compile per call"
    )
    p.add_argument("--num-samples", type=int, default=128)
    p.add_argument(
        "--num-draws", type=int, default=39, help="L, thinned from num-samples"
    )
    p.add_argument("--prior-nfe", type=int, default=100)
    p.add_argument("--energy-truth", default="rtk", choices=("rtk", "mala"))
    p.add_argument("--truth-nfe", type=int, default=1000)
    p.add_argument("--truth-steps", type=int, default=2000, help="--energy-truth mala")
    p.add_argument("--held-out", type=int, default=20, help="real digits (0: none)")
    p.add_argument("--held-out-methods", default="smc-energy,smc-score,tds-energy")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--tag", default="", help="suffix of the PNG names (e.g. 256-particles)"
    )
    p.add_argument("--no-write", dest="write", action="store_false")
    p.add_argument("--out", default=str(ROOT / "docs" / "data" / "digits_sbc.json"))
    args = p.parse_args(argv)
    if args.quick:
        args.smc_reps, args.reps, args.other_reps = 20, 20, 0
        args.num_samples, args.num_draws, args.truth_steps = 64, 19, 500
        args.held_out = min(args.held_out, 4)
        args.tasks = "inpaint-block" if args.tasks == ",".join(TASKS) else args.tasks
    log = lambda s: print(s, flush=True)  # noqa: E731
    data = digits_data()
    classifier = digits_classifier(data)
    pairs = [tuple(s.rsplit("-", 1)) for s in args.methods.split(",")]
    kinds = {k for _, k in pairs}
    truths, truth_info = {}, {}
    statistics = statistics_fn(classifier)
    if "energy" in kinds and args.energy_truth == "rtk":
        truths["energy"], truth_info["energy"] = rtk_truth_sampler(
            learned_target(digits_prior("energy")), args.truth_nfe
        )
        truth_info["energy"]["sampler"] = "rtk"
        log(f"energy truths: {truth_info['energy']}")
    elif "energy" in kinds:
        draw, check, (x0, half, full) = energy_truth_sampler(
            learned_target(digits_prior("energy")), args.truth_steps
        )
        sig = {"sigma": np.ones(len(x0))}
        check["drift_start_to_end"] = drift(
            statistics, {"x": x0, **sig}, {"x": full, **sig}
        )
        check["drift_half_to_end"] = drift(
            statistics, {"x": half, **sig}, {"x": full, **sig}
        )
        check["steps"] = args.truth_steps
        truths["energy"], truth_info["energy"] = draw, check
        log(f"energy truths: {check}")
    if "score" in kinds:
        truths["score"], truth_info["score"] = rtk_truth_sampler(
            learned_target(digits_prior("score")), args.truth_nfe
        )
        log(f"score truths: {truth_info['score']}")
    rows, held = [], []
    for task in args.tasks.split(","):
        for method, kind in pairs:
            row, _ = run_sbc(task, method, kind, args, truths, classifier, log)
            rows.append(row)
    if args.held_out:
        for task in args.tasks.split(","):
            if not task.startswith("inpaint"):
                continue
            for spec in args.held_out_methods.split(","):
                method, kind = spec.rsplit("-", 1)
                held.append(held_out(task, method, kind, args, data, log))
    print_table(rows, held)
    if args.write:
        save(args.out, rows, held, truth_info, vars(args))


def print_table(rows, held):
    print(
        "\n| task | method | prior | SBC | min corrected p | replications (L) | "
        "prior NFE / draw | wall s (s / rep) |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        if "failed" in r:
            print(
                f"| {r['task']} | {r['method']} | {r['prior']} | **fail**: "
                f"{r['failed'][:90]} | – | {r['reps']} | {r.get('prior_nfe', '–')} | – |"
            )
            continue
        if "refused" in r or "skipped" in r:
            why = r.get("refused", r.get("skipped"))
            nfe = r.get("prior_nfe", "–")
            print(
                f"| {r['task']} | {r['method']} | {r['prior']} | "
                f"{'refused' if 'refused' in r else 'not run'}: {why[:90]} | – | – | {nfe} | – |"
            )
            continue
        print(
            f"| {r['task']} | {r['method']} | {r['prior']} | "
            f"{'pass' if r['passed'] else '**fail**'} | {r['min_corrected_p']:.2g} | "
            f"{r['reps']} ({r['num_draws']}) | {r['prior_nfe']} | "
            f"{r['wall_s']:.0f} ({r['s_per_rep']}) |"
        )
    if held:
        print(
            "\n| task | method | prior | digits | PSNR (dB) | 50 % coverage | 90 % coverage |"
        )
        print("|---|---|---|---|---|---|---|")
        for h in held:
            print(
                f"| {h['task']} | {h['method']} | {h['prior']} | {h['digits']} | "
                f"{h['psnr']} | {h['coverage50']} | {h['coverage90']} |"
            )


def save(path, rows, held, truth_info, settings):
    """Merge into the JSON file by (task, method, prior): runs split by task add up."""
    path = Path(path)
    old = json.loads(path.read_text()) if path.exists() else {}
    merged_rows = {(r["task"], r["method"], r["prior"]): r for r in old.get("sbc", [])}
    merged_rows.update({(r["task"], r["method"], r["prior"]): r for r in rows})
    merged_held = {
        (r["task"], r["method"], r["prior"]): r for r in old.get("held_out", [])
    }
    merged_held.update({(r["task"], r["method"], r["prior"]): r for r in held})
    runs = old.get("runs", []) + [
        {k: v for k, v in settings.items() if k != "out"} | {"truths": truth_info}
    ]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(
        json.dumps(
            {
                "sbc": list(merged_rows.values()),
                "held_out": list(merged_held.values()),
                "runs": runs,
            },
            indent=1,
            default=float,
        )
    )
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
