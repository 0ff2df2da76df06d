"""Golden samples: hashes of a fixed list of sampler calls, for refactoring safely.

A redesign that must not change behaviour records these before touching the code
(``--record``) and checks them after (``--check``): every array must be
bit-identical. The hashes depend on the platform, the JAX/XLA version and the
dtype, so ``golden_samples.json`` stores them with the versions it was recorded
with, and ``--check`` refuses to compare across versions.

Run (about two minutes on 2 CPU cores)::

    python benchmarks/golden.py --record   # writes benchmarks/golden_samples.json
    python benchmarks/golden.py --check    # exits 1 and lists every mismatch

Each entry hashes the samples (and, where a sampler reports them, its NFE and
acceptance) of one call; what a call does is in its ``_case_*`` function.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

os.environ.setdefault("JAX_PLATFORMS", "cpu")

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

GOLDEN_FILE = Path(__file__).with_name("golden_samples.json")
BENCH_METHODS = (
    "rtk-mala",
    "rtk-mala-score",
    "rtk-uld",
    "rtk-uld-adjusted",
    "ddpm",
    "ddim",
    "dpm-solver++",
    "pf-ode",
    "pc",
)


def _digest(tree) -> str:
    h = hashlib.sha256()
    for leaf in jax.tree.leaves(tree):
        arr = np.ascontiguousarray(np.asarray(leaf))
        h.update(str(arr.dtype).encode())
        h.update(str(arr.shape).encode())
        h.update(arr.tobytes())
    return h.hexdigest()[:20]


def _result_entry(result) -> dict:
    """Hashes of a SampleResult's samples, NFE and per-segment acceptance."""
    return {
        "samples": _digest(result.samples),
        "nfe": int(result.num_evaluations),
        "acceptance": _digest(np.asarray(result.acceptance_per_segment())),
    }


# --------------------------------------------------------------------------
# Cases
# --------------------------------------------------------------------------


def _case_bench() -> dict:
    from rtk_blackjax import sample, targets
    from rtk_blackjax.policy import configure

    target = targets.chessboard(dim=10)
    out = {}
    for method in BENCH_METHODS:
        for nfe in (25, 105) if method == "rtk-mala" else (105,):
            config = configure(method, target, nfe=nfe)
            result = sample(jax.random.key(0), config.algorithm, 300, dim=10)
            out[f"{method}@{nfe}"] = _result_entry(result)
    return out


def _small_rtk():
    import rtk_blackjax as rb

    target = rb.targets.random_mog(3, 4, 5)
    return rb.rtk(target, rb.geometric_grid(12), num_inner_steps=2)


def _case_inner_kernels() -> dict:
    import blackjax

    import rtk_blackjax as rb

    target = rb.targets.random_mog(1, 3, 4)
    times = rb.geometric_grid(10)
    inners = {
        "mala": rb.mala_inner(),
        "independence": rb.independence_inner(),
        "uld": rb.uld_inner(),
        "uld_adjusted": rb.uld_inner(adjusted=True),
        "score_mala_legendre": rb.score_mala_inner(rule="legendre", num_nodes=3),
        "score_mala_projected": rb.score_mala_inner(radius_scale=2.0),
        "hmc": rb.inner_kernel(
            blackjax.hmc,
            lambda g: dict(
                step_size=0.5 * jnp.sqrt(g.gaussian_variance),
                inverse_mass_matrix=jnp.ones(g.dim),
                num_integration_steps=3,
            ),
            evaluations_per_step=3,
        ),
    }
    out = {}
    for name, inner in inners.items():
        tgt = target
        if name.startswith("score_mala") or name == "uld":
            tgt = rb.targets.score_only(target)
        for predictor in ("gaussian", "ddpm") if name == "mala" else ("gaussian",):
            alg = rb.rtk(tgt, times, inner, num_inner_steps=2, predictor=predictor)
            result = rb.sample(jax.random.key(1), alg, 200, dim=3)
            out[f"{name}/{predictor}"] = _result_entry(result)
    alg = rb.rtk(target, times, num_inner_steps=[0, 1, 2, 3, 0, 1, 2, 3, 1, 1])
    out["mala/schedule"] = _result_entry(rb.sample(jax.random.key(2), alg, 200, dim=3))
    alg = rb.rtk(target, times, curvature="none", predictor="tweedie")
    out["mala/tweedie_nocurv"] = _result_entry(
        rb.sample(jax.random.key(3), alg, 200, dim=3)
    )
    # the plain BlackJAX-style loop, one particle, one segment at a time
    alg = rb.rtk(target, times, num_inner_steps=2)
    state = alg.init(jax.random.normal(jax.random.key(4), (3,)))
    for k in range(alg.num_segments):
        state, _ = alg.step(jax.random.key(100 + k), state)
    out["mala/manual_loop"] = {"samples": _digest(state.position)}
    return out


def _case_driver() -> dict:
    import rtk_blackjax as rb

    alg = _small_rtk()
    out = {}
    full = rb.sample(jax.random.key(7), alg, 150, dim=4)
    out["whole"] = _result_entry(full)
    chunked = rb.sample(jax.random.key(7), alg, 150, dim=4, chunk_size=64)
    out["chunk64"] = _result_entry(chunked)
    out["chunk64_info"] = {"info": _digest(chunked.info)}
    part = rb.sample(jax.random.key(7), alg, 50, dim=4, chunk_size=64, start_index=100)
    out["chunk64_start100"] = _result_entry(part)
    noinfo = rb.sample(jax.random.key(7), alg, 150, dim=4, chunk_size=64,
                       return_info=False)  # fmt: skip
    out["chunk64_noinfo"] = _result_entry(noinfo)

    # pytree positions: p_t = N(0, 0.5 + 0.5 e^{-2t}) per leaf, score and density
    def var(t):
        return 0.5 + 0.5 * jnp.exp(-2.0 * t)

    tree_target = rb.targets.from_score(
        lambda x, t: jax.tree.map(lambda v: -v / var(t), x),
        lambda x, t: sum(-0.5 * jnp.sum(v**2) / var(t) for v in jax.tree.leaves(x)),
    )
    tree = rb.sample(
        jax.random.key(8),
        rb.rtk(tree_target, rb.geometric_grid(6)),
        40,
        position_like={"a": jnp.zeros(2), "b": jnp.zeros(1)},
    )
    out["pytree"] = _result_entry(tree)

    class Stop(Exception):
        pass

    def stop_after(n):
        seen = []

        def callback(progress):
            seen.append(progress)
            if len(seen) == n:
                raise Stop

        return callback

    with tempfile.TemporaryDirectory() as tmp:
        ckpt = os.path.join(tmp, "ckpt")
        kwargs = dict(chunk_size=64, checkpoint_dir=ckpt, checkpoint_every=5)
        try:
            rb.sample(jax.random.key(7), alg, 150, dim=4, **kwargs,
                      checkpoint_callback=stop_after(4))  # fmt: skip
        except Stop:
            pass
        resumed = rb.sample(jax.random.key(7), alg, 150, dim=4, **kwargs)
        out["checkpoint_resume"] = _result_entry(resumed)
        out["checkpoint_resume_info"] = {"info": _digest(resumed.info)}
    return out


_DEVICES_CODE = r"""
import json, jax
import rtk_blackjax as rb
target = rb.targets.random_mog(3, 4, 5)
alg = rb.rtk(target, rb.geometric_grid(12), num_inner_steps=2)
res = rb.sample(jax.random.key(7), alg, 150, dim=4, chunk_size=16)
res1 = rb.sample(jax.random.key(7), alg, 150, dim=4, chunk_size=16,
                 devices=jax.devices()[:1])
import numpy as np, hashlib
def d(x):
    return hashlib.sha256(np.ascontiguousarray(np.asarray(x)).tobytes()).hexdigest()[:20]
print("RESULT" + json.dumps({"ndev": len(jax.devices()), "four": d(res.samples),
                             "one": d(res1.samples)}))
"""


def _case_devices() -> dict:
    env = dict(os.environ)
    env["XLA_FLAGS"] = "--xla_force_host_platform_device_count=4"
    env["JAX_PLATFORMS"] = "cpu"
    proc = subprocess.run(
        [sys.executable, "-c", _DEVICES_CODE],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    if proc.returncode != 0:
        raise RuntimeError(proc.stderr[-3000:])
    line = next(s for s in proc.stdout.splitlines() if s.startswith("RESULT"))
    return {"four_devices_chunk16": json.loads(line[len("RESULT") :])}


def _case_diffusion_prior() -> dict:
    import rtk_blackjax as rb
    from rtk_blackjax.posterior import DiffusionPrior

    target = rb.targets.random_mog(2, 3, 4)
    prior = DiffusionPrior(target, nfe=25)
    draws = prior.sample(jax.random.key(5), (64,))
    one = prior.sample(jax.random.key(6))
    jitted = jax.jit(lambda k: prior.sample(k, (8,)))(jax.random.key(9))
    ddpm = DiffusionPrior(target, algorithm=rb.ddpm(target, rb.geometric_grid(10)))
    return {
        "default_nfe25": {"samples": _digest(draws)},
        "single": {"samples": _digest(one)},
        "jitted": {"samples": _digest(jitted)},
        "ddpm": {"samples": _digest(ddpm.sample(jax.random.key(5), (32,)))},
    }


def _gaussian_problem():
    import rtk_blackjax as rb

    prior = rb.targets.gaussian(jnp.asarray([1.0, -1.0, 0.5]), 0.5)
    A = np.array([[1.0, 0.5, 0.0], [0.0, 1.0, -1.0]])
    y = np.array([0.3, 1.2])
    return prior, A, y, 0.4


def _posterior_entry(res) -> dict:
    entry = {
        "samples": _digest(res.samples),
        "prior_nfe": float(res.prior_nfe),
    }
    if getattr(res, "acceptance", None):
        entry["acceptance"] = _digest(res.acceptance)
    return entry


def _case_split_gibbs() -> dict:
    import numpyro
    import numpyro.distributions as dist

    from rtk_blackjax.posterior import DiffusionPrior
    from rtk_blackjax.posterior.split_gibbs import (
        split_gibbs,
        split_gibbs_linear_gaussian,
    )

    prior, A, y, sigma = _gaussian_problem()
    res = split_gibbs_linear_gaussian(
        jax.random.key(0), prior, A, y, sigma, num_chains=16, num_draws=4,
        prior_nfe_budget=200, num_segments=8,
    )  # fmt: skip
    out = {"linear_gaussian": _posterior_entry(res)}
    A_j = jnp.asarray(A)

    def model(y=None):
        x = numpyro.sample("x", DiffusionPrior(prior, nfe=25))
        s = numpyro.sample("sigma", dist.HalfNormal(1.0))
        numpyro.sample("y", dist.Normal(A_j @ x, s).to_event(1), obs=y)

    res = split_gibbs(
        jax.random.key(3), model, num_chains=4, num_draws=6,
        prior_nfe_budget=200, num_segments=3, y=jnp.asarray(y),
    )  # fmt: skip
    out["numpyro"] = _posterior_entry(res)
    out["numpyro_sigma"] = {"samples": _digest(res.extras["sites"]["sigma"])}
    return out


def _case_smc() -> dict:
    from rtk_blackjax.posterior import gmm
    from rtk_blackjax.posterior.smc import calibrate_grid, smc_linear_gaussian
    from rtk_blackjax.targets.analytic import mixture_target

    prior, A, y, sigma = _gaussian_problem()
    out = {}
    res = smc_linear_gaussian(
        jax.random.key(0), prior, A, y, sigma, num_particles=200,
        prior_nfe_budget=31,
    )  # fmt: skip
    out["gaussian"] = _posterior_entry(res)
    out["gaussian_log_evidence"] = {
        "samples": _digest(jnp.asarray(res.extras["log_evidence"]))
    }
    mix = gmm.grid_prior(4)
    target = mixture_target(mix)
    grid = calibrate_grid(jax.random.key(1), target, 4, 12, num_particles=128)
    out["calibrated_grid"] = {"samples": _digest(grid.times)}
    problem = gmm.make_problem(2, dim=4, obs_dim=1)
    res = smc_linear_gaussian(
        jax.random.key(3), target, problem.obs_matrix, problem.y, problem.sigma,
        num_particles=256, times=grid.times,
    )  # fmt: skip
    out["gmm_calibrated"] = _posterior_entry(res)
    return out


def _case_posterior_baselines() -> dict:
    from rtk_blackjax.posterior.dps import dps_linear_gaussian
    from rtk_blackjax.posterior.nuts import nuts_linear_gaussian

    prior, A, y, sigma = _gaussian_problem()
    dps = dps_linear_gaussian(
        jax.random.key(0), prior, A, y, sigma, num_samples=64, prior_nfe_budget=41
    )
    nuts = nuts_linear_gaussian(
        jax.random.key(0), prior, A, y, sigma, num_chains=2, num_draws=20,
        num_warmup=20,
    )  # fmt: skip
    return {"dps": _posterior_entry(dps), "nuts": _posterior_entry(nuts)}


def _conjugate_model(y):
    import numpyro
    import numpyro.distributions as dist

    mu = numpyro.sample("mu", dist.Normal(0.0, 2.0))
    tau = numpyro.sample("tau", dist.LogNormal(0.0, 0.5))
    numpyro.deterministic("mu_plus_tau", mu + tau)
    with numpyro.plate("data", y.shape[0]):
        numpyro.sample("y", dist.Normal(mu, 1.0), obs=y)


_SMALL_LOGDENSITY = dict(
    times=jnp.array([4.0, 1.5, 0.6, 0.25, 0.08, 0.0]),
    num_importance=[32, 32, 32, 32, 0],
    num_inner_steps=2,
    num_pilot_rounds=1,
    pilot_particles=100,
)


def _case_logdensity() -> dict:
    from numpyro.infer import MCMC

    from rtk_blackjax.adapters import RTKKernel, sample_model

    y = jnp.array([0.9, 2.1, 1.4, 0.3, 1.8])
    out = {}
    for method, chains in (("vectorized", 3), ("sequential", 2)):
        kernel = RTKKernel(_conjugate_model, **_SMALL_LOGDENSITY)
        mcmc = MCMC(kernel, num_warmup=0, num_samples=20, num_chains=chains,
                    chain_method=method, progress_bar=False)  # fmt: skip
        mcmc.run(jax.random.key(0), y, extra_fields=("num_evaluations",))
        out[f"rtkkernel_{method}"] = {
            "samples": _digest(mcmc.get_samples(group_by_chain=True)),
            "nfe": _digest(mcmc.get_extra_fields()["num_evaluations"]),
        }
    res = sample_model(
        jax.random.key(1), _conjugate_model, y, num_samples=64,
        num_pilot_rounds=1, pilot_particles=50, times=_SMALL_LOGDENSITY["times"],
        num_importance=16, num_inner_steps=1,
    )  # fmt: skip
    out["sample_model"] = {"samples": _digest(res.samples)}
    return out


def _case_diagnostics() -> dict:
    import rtk_blackjax as rb
    from rtk_blackjax.diagnostics import segment_diagnostics

    target = rb.targets.random_mog(1, 3, 4)
    diag = segment_diagnostics(
        jax.random.key(0), target, rb.geometric_grid(6), num_inner_steps=1,
        num_particles=2, num_chains=2, num_draws=50, num_warmup=10, dim=3,
    )  # fmt: skip
    return {"segment_diagnostics": {"samples": _digest(diag.draws)}}


CASES = {
    "bench": _case_bench,
    "inner_kernels": _case_inner_kernels,
    "driver": _case_driver,
    "devices": _case_devices,
    "diffusion_prior": _case_diffusion_prior,
    "split_gibbs": _case_split_gibbs,
    "smc": _case_smc,
    "posterior_baselines": _case_posterior_baselines,
    "logdensity": _case_logdensity,
    "diagnostics": _case_diagnostics,
}


def _versions() -> dict:
    import jaxlib

    return {
        "jax": jax.__version__,
        "jaxlib": jaxlib.__version__,
        "platform": jax.devices()[0].platform,
        "x64": bool(jax.config.jax_enable_x64),
    }


def compute(names) -> dict:
    out = {}
    for name in names:
        print(f"[golden] {name} ...", file=sys.stderr, flush=True)
        out[name] = CASES[name]()
    return out


def _compare(expected: dict, found: dict, prefix: str = "") -> list[str]:
    diffs = []
    for key in sorted(set(expected) | set(found)):
        e, f = expected.get(key), found.get(key)
        if isinstance(e, dict) and isinstance(f, dict):
            diffs += _compare(e, f, f"{prefix}{key}/")
        elif e != f:
            diffs.append(f"{prefix}{key}: recorded {e!r}, now {f!r}")
    return diffs


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    mode = parser.add_mutually_exclusive_group(required=True)
    mode.add_argument("--record", action="store_true")
    mode.add_argument("--check", action="store_true")
    parser.add_argument(
        "--cases", default=",".join(CASES), help=f"comma list of {list(CASES)}"
    )
    parser.add_argument("--file", default=str(GOLDEN_FILE))
    args = parser.parse_args(argv)
    names = [c for c in args.cases.split(",") if c]
    unknown = [c for c in names if c not in CASES]
    if unknown:
        parser.error(f"unknown cases {unknown}; choose from {list(CASES)}")
    path = Path(args.file)
    if args.record:
        data = json.loads(path.read_text()) if path.exists() else {}
        if data.get("versions", _versions()) != _versions():
            data = {}
        data["versions"] = _versions()
        for name in names:  # saved case by case: a failing case keeps the others
            data.setdefault("cases", {}).update(compute([name]))
            path.write_text(json.dumps(data, indent=1, sort_keys=True) + "\n")
        print(f"recorded {names} in {path}")
        return 0
    data = json.loads(path.read_text())
    if data["versions"] != _versions():
        print(
            f"golden samples were recorded with {data['versions']}, this is "
            f"{_versions()}: bitwise comparison is meaningless, re-record on main"
        )
        return 2
    found = compute(names)
    diffs = _compare({n: data["cases"][n] for n in names}, found)
    for line in diffs:
        print("MISMATCH", line)
    print(f"{len(diffs)} mismatches in {names}")
    return 1 if diffs else 0


if __name__ == "__main__":
    sys.exit(main())
