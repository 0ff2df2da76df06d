"""Wall time of ``rb.posterior.sample`` on successive observations of one model.

A user with many observations (a data set, simulation-based calibration) calls the
entry point once per observation. The model's array arguments are data of the
compiled program, so only the first call of a method that caches its programs
(``smc``, ``tds``, ``mcgdiff``, ``dps``, ``daps``) should pay the compilation. The
model is the digits task ``inpaint-random`` of ``benchmarks/digits_sbc.py``: the
shipped energy prior, half of the 64 pixels observed, ``sigma ~ LogNormal(log 0.2,
0.4)``; each call gets a new observation.

Run (2 cores: about a minute)::

    python benchmarks/posterior_repeat.py                 # smc, 4 calls
    python benchmarks/posterior_repeat.py --method daps --calls 6

prints one JSON object: the wall seconds of every call (the first one compiles).
"""

from __future__ import annotations

import argparse
import json
import math
import time
import warnings

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist

import rtk_blackjax as rb
from rtk_blackjax.adapters.learned import learned_target
from rtk_blackjax.benchmarks.digits import digits_prior

DIM = 64


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--method", default="smc", choices=tuple(rb.posterior.METHODS))
    p.add_argument("--calls", type=int, default=4)
    p.add_argument("--num-samples", type=int, default=128)
    p.add_argument("--prior-nfe", type=int, default=100)
    args = p.parse_args(argv)
    target = learned_target(digits_prior("energy"))
    prior = rb.posterior.DiffusionPrior(target, dim=DIM, nfe=25)
    observed = np.sort(np.random.default_rng(1).permutation(DIM)[: DIM // 2])
    A = jnp.asarray(np.eye(DIM, dtype=np.float32)[observed])

    def model(y=None):
        x = numpyro.sample("x", prior)
        sigma = numpyro.sample("sigma", dist.LogNormal(math.log(0.2), 0.4))
        numpyro.sample("y", dist.Normal(A @ x, sigma), obs=y)

    wall = []
    for i in range(args.calls):
        noise = np.random.default_rng(i).normal(size=DIM // 2).astype(np.float32)
        start = time.perf_counter()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            res = rb.posterior.sample(
                jax.random.key(i),
                model,
                num_samples=args.num_samples,
                prior_nfe=args.prior_nfe,
                method=args.method,
                y=jnp.asarray(0.5 * noise),
            )
        jax.block_until_ready(res.samples["x"])
        wall.append(round(time.perf_counter() - start, 2))
    print(json.dumps({"method": args.method, "wall_s": wall, **vars(args)}))


if __name__ == "__main__":
    main()
