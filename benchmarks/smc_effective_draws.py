"""How many independent draws a twisted-SMC system holds, against its lineage count.

SMC draws are not independent: after many resamplings they descend from a few
particles of the middle of the diffusion, and share what it had decided there (on
digits, the digit's identity). This measures, on the digits task
``inpaint-random`` of ``benchmarks/digits_sbc.py`` (the shipped energy prior, half
of the 64 pixels observed, ``sigma ~ LogNormal(log 0.2, 0.4)``):

* **effective draws** of one system of ``--particles`` particles, per statistic of
  the SBC benchmark (three pixels, ``sigma``, the mean intensity, a classifier's
  logit): the variance of the statistic within one run divided by the variance of
  its mean across ``--runs`` independent runs on the same observation. For
  independent draws it is the particle count; an error of about ``sqrt(2 / runs)``
  relative;
* the **lineage count** at mid diffusion time (``lineage_warning``'s reading of
  ``res.diagnostics["lineages"]``): the distinct particles at ``t ≈ 0.35`` the
  draws descend from, per run (median and range).

The truth ``x`` of each observation comes from the learned prior (RTK-MALA at 1000
NFE per draw, as in the SBC benchmark), ``sigma = 0.2``.

``--weights`` instead measures where the weights degenerate, on observation 0: one
system of ``--particles`` particles resampling on every segment (``ess_threshold
= 1``, so each segment's relative ESS is its own), for the observation, for an
uninformative likelihood (``sigma = 100``) and for wider twists
(``prior_variance`` 1 and 3 instead of the data's variance): the sum of ``-log
ESS`` over the segments (about the total log-weight variance) and the lineage
count at mid time.

Run (2 cores; about 1.5 minutes per observation at 64 particles, 5 at 256)::

    python benchmarks/smc_effective_draws.py --particles 64
    python benchmarks/smc_effective_draws.py --particles 256
    python benchmarks/smc_effective_draws.py --particles 256 --weights

prints one JSON object per observation (per variant with ``--weights``).
"""

from __future__ import annotations

import argparse
import json
import time
import warnings

import jax
import jax.numpy as jnp
import numpy as np
from digits_sbc import (
    DIM,
    make_model,
    operator,
    rtk_truth_sampler,
    statistics_fn,
)

import rtk_blackjax as rb
from rtk_blackjax.adapters.learned import learned_target
from rtk_blackjax.benchmarks.digits import digits_classifier, digits_data, digits_prior
from rtk_blackjax.posterior.twisted import (
    linear_gaussian_likelihood,
    mid_time_index,
    twisted_smc,
)


def weight_degeneracy(target, A, y, particles, prior_nfe):
    """Per-variant total ``-log ESS`` with resampling on every segment."""
    variants = {
        "observation": (0.2, {}),
        "uninformative (sigma = 100)": (100.0, {}),
        "prior_variance = 1": (0.2, {"prior_variance": 1.0}),
        "prior_variance = 3": (0.2, {"prior_variance": 3.0}),
    }
    for name, (sigma, options) in variants.items():
        res = twisted_smc(
            jax.random.key(0),
            target,
            DIM,
            linear_gaussian_likelihood(jnp.asarray(A), y, sigma),
            num_particles=particles,
            prior_nfe_budget=prior_nfe,
            ess_threshold=1.0,
            **options,
        )
        ess = np.asarray(res.extras["ess"], np.float64)
        at = mid_time_index(res.extras["times"])
        print(
            json.dumps(
                {
                    "variant": name,
                    "particles": particles,
                    "segments": int(ess.size),
                    "sum_minus_log_ess": round(float(-np.log(ess).sum()), 1),
                    "lineages_at": round(float(res.extras["times"][at]), 3),
                    "lineages": int(res.extras["lineages"][at]),
                }
            ),
            flush=True,
        )


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--particles", type=int, default=64, help="of one system")
    p.add_argument("--runs", type=int, default=24, help="per observation")
    p.add_argument("--observations", type=int, default=3)
    p.add_argument("--prior-nfe", type=int, default=100)
    p.add_argument("--sigma", type=float, default=0.2)
    p.add_argument("--weights", action="store_true", help="where weights degenerate")
    p.add_argument(
        "--curvature",
        default="secant",
        choices=("secant", "diagonal"),
        help="twisted_smc's curvature estimate (per coordinate: diagonal)",
    )
    args = p.parse_args(argv)
    statistics = statistics_fn(digits_classifier(digits_data()))
    target = learned_target(digits_prior("energy"))
    A, _ = operator("inpaint-random")
    truth, _ = rtk_truth_sampler(target, 1000)
    model = make_model(rb.posterior.DiffusionPrior(target, dim=DIM, nfe=25), A)
    for obs in range(args.observations):
        start = time.perf_counter()
        key = jax.random.key(100 + obs)
        x = np.asarray(truth(key))
        noise = np.asarray(jax.random.normal(jax.random.fold_in(key, 1), (len(A),)))
        y = jnp.asarray(A @ x + args.sigma * noise, jnp.float32)
        if args.weights:
            weight_degeneracy(target, A, y, args.particles, args.prior_nfe)
            return
        means, within, counts = [], [], []
        for run in range(args.runs):
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                res = rb.posterior.sample(
                    jax.random.key(1000 * obs + run),
                    model,
                    num_samples=args.particles,
                    num_replicas=1,
                    prior_nfe=args.prior_nfe,
                    method_options={"curvature": args.curvature},
                    y=y,
                )
            draws = {"x": res.samples["x"], "sigma": res.samples["sigma"]}
            stats = statistics({k: np.asarray(v) for k, v in draws.items()})
            means.append({k: float(np.mean(v)) for k, v in stats.items()})
            within.append({k: float(np.var(v)) for k, v in stats.items()})
            times = np.asarray(res.diagnostics["times"], np.float64)
            at = mid_time_index(times)
            counts.append(int(np.asarray(res.diagnostics["lineages"])[0, at]))
        effective = {
            name: round(
                float(
                    np.mean([w[name] for w in within])
                    / max(np.var([m[name] for m in means], ddof=1), 1e-30)
                ),
                1,
            )
            for name in means[0]
        }
        print(
            json.dumps(
                {
                    "observation": obs,
                    "particles": args.particles,
                    "curvature": args.curvature,
                    "prior_nfe": args.prior_nfe,
                    "runs": args.runs,
                    "effective_draws": effective,
                    "lineages_at": round(float(times[at]), 3),
                    "lineages_median": float(np.median(counts)),
                    "lineages_range": [min(counts), max(counts)],
                    "wall_s": round(time.perf_counter() - start, 1),
                }
            ),
            flush=True,
        )


if __name__ == "__main__":
    main()
