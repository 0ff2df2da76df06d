"""RTK on NumPyro posteriors vs NUTS: mode weights and eight schools.

(a) Multimodal posterior, d = 10: a two-component Gaussian mixture with unit
    covariances, means ``±(6/sqrt(d)) (1, ..., 1)`` (12 apart: the density
    between them is ``e^{-18}`` of the peaks) and weights 0.7 / 0.3.
    Mode-weight error = total variation between the fractions of samples nearest
    each mode and the true weights. RTK (``RTKKernel``) against NUTS with several
    chains at the same total number of log-density/gradient evaluations (NUTS
    evaluations counted from ``num_steps``, warmup included; RTK's include the
    pilot runs).
(b) Eight schools, non-centred: RTK posterior means / sds of mu, tau, theta
    against a long NUTS run, with Monte Carlo standard errors.

Usage::

    python benchmarks/numpyro_posteriors.py                 # both tables
    python benchmarks/numpyro_posteriors.py --json out.json --num-samples 2000
"""

import argparse
import json
import time

import arviz as az
import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist
from numpyro.infer import MCMC, NUTS

from rtk_blackjax.adapters.numpyro_kernel import RTKKernel

WEIGHTS = np.array([0.7, 0.3])


def mixture_model(dim: int, half_distance: float = 4.0):
    direction = jnp.ones(dim) / jnp.sqrt(dim)
    means = jnp.stack([half_distance * direction, -half_distance * direction])

    def model():
        numpyro.sample(
            "x",
            dist.MixtureSameFamily(
                dist.Categorical(probs=jnp.asarray(WEIGHTS)),
                dist.MultivariateNormal(means, jnp.eye(dim)),
            ),
        )

    return model, np.asarray(means)


def mode_weight_error(x: np.ndarray, means: np.ndarray) -> tuple[float, np.ndarray]:
    nearest = np.argmin(((x[:, None, :] - means[None]) ** 2).sum(-1), axis=1)
    frac = np.bincount(nearest, minlength=len(means)) / len(x)
    return 0.5 * float(np.abs(frac - WEIGHTS).sum()), frac


def run_rtk(model, key, num_samples, num_chains, model_args=(), **kernel_kwargs):
    kernel = RTKKernel(model, **kernel_kwargs)
    mcmc = MCMC(
        kernel,
        num_warmup=0,
        num_samples=num_samples // num_chains,
        num_chains=num_chains,
        chain_method="vectorized",
        progress_bar=False,
    )
    start = time.perf_counter()
    mcmc.run(key, *model_args, extra_fields=("num_evaluations", "diverging"))
    seconds = time.perf_counter() - start
    extra = mcmc.get_extra_fields()
    evals = int(np.asarray(extra["num_evaluations"]).sum()) + kernel.pilot_evaluations
    return mcmc, evals, seconds, int(np.asarray(extra["diverging"]).sum())


def run_nuts(model, key, budget, num_chains, num_warmup, model_args=(), min_samples=50):
    """NUTS with ``num_chains`` vectorized chains, sized to ``budget`` evaluations."""
    mcmc = MCMC(
        NUTS(model),
        num_warmup=num_warmup,
        num_samples=min_samples,
        num_chains=num_chains,
        chain_method="vectorized",
        progress_bar=False,
    )
    start = time.perf_counter()
    mcmc.warmup(key, *model_args, collect_warmup=True, extra_fields=("num_steps",))
    warm_steps = int(np.asarray(mcmc.get_extra_fields()["num_steps"]).sum())
    per_iter = warm_steps / (num_warmup * num_chains)
    remaining = max(budget - warm_steps, 0)
    num_samples = max(min_samples, int(remaining / (per_iter * num_chains)))
    mcmc.num_samples = num_samples
    mcmc.run(jax.random.fold_in(key, 1), *model_args, extra_fields=("num_steps",))
    seconds = time.perf_counter() - start
    steps = warm_steps + int(np.asarray(mcmc.get_extra_fields()["num_steps"]).sum())
    return mcmc, steps, seconds


def multimodal_table(args) -> dict:
    model, means = mixture_model(args.dim, args.half_distance)
    key = jax.random.key(args.seed)
    mcmc, evals, seconds, div = run_rtk(
        model,
        key,
        args.num_samples,
        num_chains=4,
        num_pilot_rounds=args.pilot_rounds,
        pilot_particles=args.pilot_particles,
    )
    x = np.asarray(mcmc.get_samples()["x"])
    err, frac = mode_weight_error(x, means)
    rows = [
        dict(
            method="RTK (RTKKernel)",
            samples=len(x),
            evaluations=evals,
            mode_fractions=frac.round(4).tolist(),
            mode_weight_error=err,
            mc_sd=float(np.sqrt(WEIGHTS[0] * WEIGHTS[1] / len(x))),
            seconds=seconds,
            divergences=div,
        )
    ]
    for chains in args.nuts_chains:
        nuts, steps, nsec = run_nuts(
            model, jax.random.fold_in(key, chains), evals, chains, args.nuts_warmup
        )
        xn = np.asarray(nuts.get_samples()["x"])
        errn, fracn = mode_weight_error(xn, means)
        per_chain = np.asarray(nuts.get_samples(group_by_chain=True)["x"])
        switched = sum(
            len(set(np.argmin(((c[:, None] - means[None]) ** 2).sum(-1), 1))) > 1
            for c in per_chain
        )
        rows.append(
            dict(
                method=f"NUTS, {chains} chains",
                samples=len(xn),
                evaluations=steps,
                mode_fractions=fracn.round(4).tolist(),
                mode_weight_error=errn,
                chains_visiting_both=int(switched),
                seconds=nsec,
            )
        )
    return dict(
        dim=args.dim,
        half_distance=args.half_distance,
        weights=WEIGHTS.tolist(),
        rows=rows,
    )


J = 8
Y = np.array([28.0, 8.0, -3.0, 7.0, -1.0, 1.0, 18.0, 12.0])
SIGMA = np.array([15.0, 10.0, 16.0, 11.0, 9.0, 11.0, 10.0, 18.0])


def eight_schools(sigma, y=None):
    mu = numpyro.sample("mu", dist.Normal(0.0, 5.0))
    tau = numpyro.sample("tau", dist.HalfCauchy(5.0))
    with numpyro.plate("J", sigma.shape[0]):
        theta_tilde = numpyro.sample("theta_tilde", dist.Normal(0.0, 1.0))
        theta = numpyro.deterministic("theta", mu + tau * theta_tilde)
        numpyro.sample("obs", dist.Normal(theta, sigma), obs=y)


def _moments(mcmc, names):
    idata = az.from_numpyro(mcmc)
    summary = az.summary(idata, var_names=names, kind="all", round_to="none")
    return summary


def eight_schools_table(args) -> dict:
    key = jax.random.key(args.seed + 1)
    model_args = (jnp.asarray(SIGMA), jnp.asarray(Y))
    mcmc, evals, seconds, div = run_rtk(
        eight_schools,
        key,
        args.num_samples,
        num_chains=4,
        model_args=model_args,
        num_pilot_rounds=args.pilot_rounds,
        pilot_particles=args.pilot_particles,
    )
    ref = MCMC(
        NUTS(eight_schools, target_accept_prob=0.95),
        num_warmup=2000,
        num_samples=args.nuts_reference_samples,
        num_chains=4,
        chain_method="vectorized",
        progress_bar=False,
    )
    start = time.perf_counter()
    ref.run(jax.random.fold_in(key, 7), *model_args, extra_fields=("num_steps",))
    ref_seconds = time.perf_counter() - start
    names = ["mu", "tau", "theta"]
    s_rtk, s_ref = _moments(mcmc, names), _moments(ref, names)
    rows = []
    for param in s_ref.index:
        m_ref, sd_ref, se_ref = (
            s_ref.loc[param, c] for c in ("mean", "sd", "mcse_mean")
        )
        m, sd, se = (s_rtk.loc[param, c] for c in ("mean", "sd", "mcse_mean"))
        se_sd_rtk, se_sd_ref = s_rtk.loc[param, "mcse_sd"], s_ref.loc[param, "mcse_sd"]
        rows.append(
            dict(
                param=param,
                nuts_mean=m_ref,
                nuts_mcse=se_ref,
                rtk_mean=m,
                rtk_mcse=se,
                z_mean=(m - m_ref) / np.hypot(se, se_ref),
                nuts_sd=sd_ref,
                rtk_sd=sd,
                z_sd=(sd - sd_ref) / np.hypot(se_sd_rtk, se_sd_ref),
                rtk_ess=s_rtk.loc[param, "ess_bulk"],
            )
        )
    return dict(
        rtk_samples=int(args.num_samples),
        rtk_evaluations=evals,
        rtk_seconds=seconds,
        rtk_divergences=div,
        nuts_reference_draws=4 * args.nuts_reference_samples,
        nuts_reference_evaluations=int(
            np.asarray(ref.get_extra_fields()["num_steps"]).sum()
        ),
        nuts_reference_divergences=int(
            np.asarray(ref.get_extra_fields().get("diverging", np.zeros(1))).sum()
        ),
        nuts_seconds=ref_seconds,
        rows=rows,
    )


def print_tables(out: dict) -> None:
    if "multimodal" in out:
        mm = out["multimodal"]
        print(
            f"\n(a) Two-mode mixture posterior, d = {mm['dim']}, modes "
            f"{2 * mm['half_distance']:g} apart, weights {mm['weights']}"
        )
        print(
            "| method | samples | evaluations | mode fractions | mode-weight error | s |"
        )
        print("|---|---|---|---|---|---|")
        for r in mm["rows"]:
            extra = (
                f" (MC sd {r['mc_sd']:.3f})"
                if "mc_sd" in r
                else f" ({r['chains_visiting_both']} chains visit both)"
            )
            print(
                f"| {r['method']} | {r['samples']} | {r['evaluations']:,} | "
                f"{r['mode_fractions']} | {r['mode_weight_error']:.3f}{extra} | "
                f"{r['seconds']:.0f} |"
            )
    if "eight_schools" in out:
        es = out["eight_schools"]
        print(
            f"\n(b) Eight schools (non-centred): RTK {es['rtk_samples']} draws, "
            f"{es['rtk_evaluations']:,} evaluations ({es['rtk_seconds']:.0f} s, "
            f"{es['rtk_divergences']} non-finite); NUTS reference "
            f"{es['nuts_reference_draws']} draws, {es['nuts_reference_evaluations']:,} "
            f"evaluations after warmup"
        )
        print(
            "| param | NUTS mean ± mcse | RTK mean ± mcse | z | NUTS sd | RTK sd | z(sd) |"
        )
        print("|---|---|---|---|---|---|---|")
        for r in es["rows"]:
            print(
                f"| {r['param']} | {r['nuts_mean']:.3f} ± {r['nuts_mcse']:.3f} | "
                f"{r['rtk_mean']:.3f} ± {r['rtk_mcse']:.3f} | {r['z_mean']:+.1f} | "
                f"{r['nuts_sd']:.3f} | {r['rtk_sd']:.3f} | {r['z_sd']:+.1f} |"
            )


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--only", choices=["multimodal", "eight_schools"])
    parser.add_argument("--dim", type=int, default=10)
    parser.add_argument(
        "--half-distance",
        type=float,
        default=6.0,
        help="modes at ±half_distance along the diagonal (12 apart by default)",
    )
    parser.add_argument("--num-samples", type=int, default=2000)
    parser.add_argument("--pilot-rounds", type=int, default=3)
    parser.add_argument("--pilot-particles", type=int, default=200)
    parser.add_argument("--nuts-chains", type=int, nargs="+", default=[4, 16])
    parser.add_argument("--nuts-warmup", type=int, default=500)
    parser.add_argument("--nuts-reference-samples", type=int, default=10000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", help="also write the results to this JSON file")
    args = parser.parse_args(argv)
    out = {"args": vars(args)}
    if args.only in (None, "multimodal"):
        out["multimodal"] = multimodal_table(args)
    if args.only in (None, "eight_schools"):
        out["eight_schools"] = eight_schools_table(args)
    print_tables(out)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(out, f, indent=1, default=float)
    return out


if __name__ == "__main__":
    main()
