"""Unknown noise scale on the 25-mode linear-Gaussian problem (issue 12).

Prior: the 25-mode grid mixture in ``d = 8`` (``gmm.grid_prior``), passed with the
access a run allows (``--access score`` hides its log density). Model:
``sigma ~ HalfNormal(1)``, ``y ~ Normal(A x, sigma)`` with ``A`` and ``y`` from
``gmm.make_problem(seed, 8, 2)``. Reference: ``sigma``'s exact marginal, a 1-D
integral of closed-form evidences
(:func:`rtk_blackjax.posterior.reference.sigma_marginal_linear_gaussian`); the score
is the KS distance of the sampler's ``sigma`` draws to it (``1.36 / sqrt(n)`` is the
95 % point under exact independent draws: 0.030 at n = 2000) and the relative
errors of its posterior mean and sd.

Run: ``python benchmarks/sigma_posterior.py [--access score|logdensity|energy]
[--methods smc,tds] [--seeds 3] [--dim 8] [--obs-dim 2] [--json]``.
"""

import argparse
import json
import math
import time
import warnings

import jax
import numpy as np
import numpyro
import numpyro.distributions as dist

import rtk_blackjax as rb
from rtk_blackjax.posterior import gmm, reference


def prior_target(dim: int, access: str) -> rb.targets.Target:
    exact = rb.targets.mixture_target(gmm.grid_prior(dim))
    if access == "score":
        return rb.targets.score_only(exact)
    if access == "energy":
        return rb.targets.from_energy(lambda x, t: exact.logdensity(x, t) + 3.0 * t)
    return exact


def make_model(target, dim: int, A):
    prior = rb.posterior.DiffusionPrior(target, dim=dim)

    def model(y=None):
        x = numpyro.sample("x", prior)
        sigma = numpyro.sample("sigma", dist.HalfNormal(1.0))
        numpyro.sample("y", dist.Normal(A @ x, sigma), obs=y)

    return model


def run(
    method, access, seed, dim, obs_dim, num_samples, prior_nfe, method_options=None
):
    problem = gmm.make_problem(seed, dim, obs_dim)
    half_normal = lambda s: 0.5 * math.log(2 / math.pi) - 0.5 * s**2  # noqa: E731
    ref = reference.sigma_marginal_linear_gaussian(
        problem.prior,
        problem.obs_matrix,
        problem.y,
        half_normal,
        grid=np.linspace(1e-5, 8.0, 8001),
    )
    model = make_model(prior_target(dim, access), dim, problem.obs_matrix)
    start = time.perf_counter()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        res = rb.posterior.sample(
            jax.random.key(seed),
            model,
            num_samples=num_samples,
            prior_nfe=prior_nfe,
            method=method,
            method_options=method_options,
            y=problem.y,
        )
    sigma = np.asarray(res.samples["sigma"])
    messages = [
        str(w.message)
        for w in caught
        if issubclass(w.category, rb.posterior.PosteriorWarning)
    ]
    return {
        "method": method,
        "access": access,
        "seed": seed,
        "dim": dim,
        "obs_dim": obs_dim,
        "sigma_true": float(problem.sigma),
        "ks": reference.ks_distance(sigma, ref),
        "ks_95": 1.36 / math.sqrt(sigma.size),
        "sigma_mean": float(sigma.mean()),
        "reference_mean": float(ref.mean),
        "sigma_sd": float(sigma.std()),
        "reference_sd": float(ref.sd),
        "prior_nfe": res.prior_nfe,
        "warnings": len(messages),
        "warning_messages": messages,
        "seconds": round(time.perf_counter() - start, 1),
    }


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--access", default="score", choices=rb.targets.ACCESS_LEVELS)
    parser.add_argument("--methods", default="smc,tds")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--dim", type=int, default=8)
    parser.add_argument("--obs-dim", type=int, default=2)
    parser.add_argument("--num-samples", type=int, default=2000)
    parser.add_argument("--prior-nfe", type=int, default=100)
    parser.add_argument(
        "--method-options",
        type=json.loads,
        default=None,
        help="JSON options for the method, e.g. '{\"num_inner_steps\": 0}'",
    )
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    rows = [
        run(
            m,
            args.access,
            s,
            args.dim,
            args.obs_dim,
            args.num_samples,
            args.prior_nfe,
            args.method_options,
        )
        for m in args.methods.split(",")
        for s in range(args.seeds)
    ]
    if args.json:
        print(json.dumps(rows, indent=1))
        return
    print(
        "method  access      seed  KS (95% pt)    sigma mean (ref)    sd (ref)  warn  s"
    )
    for r in rows:
        print(
            f"{r['method']:7s} {r['access']:10s} {r['seed']:4d}  {r['ks']:.3f} "
            f"({r['ks_95']:.3f})  {r['sigma_mean']:.3f} ({r['reference_mean']:.3f})  "
            f"{r['sigma_sd']:.3f} ({r['reference_sd']:.3f})  {r['warnings']}  "
            f"{r['seconds']}"
        )


if __name__ == "__main__":
    main()
