"""A NumPyro model sampled by RTK, with ArviZ output and per-segment mixing checks.

The model is a Bayesian linear regression with known noise, so its posterior is
Gaussian and known exactly: that gives RTK the exact OU-diffused target
``p_t`` (``rb.targets.gaussian``) and the example something to check against. The
same model is also sampled from its log density alone
(:mod:`rtk_blackjax.mcmc.logdensity`), which is what a general NumPyro model
needs; both runs go to ArviZ the same way.
The NumPyro side (site names, flat unconstrained layout, constrained values) comes
from :func:`rtk_blackjax.adapters.numpyro_model.model_density`.

Run (about a minute on 2 CPU cores; ``--broken 0.001`` adds a mistuned kernel)::

    python examples/numpyro_model_diagnostics.py --out mixing.png

It prints the ArviZ summary of the RTK draws (chains = groups of independent
particles), the per-segment mixing table of the inner MALA chains, and writes
their trace/rank plots to ``--out``.
"""

import argparse
import time

import arviz as az
import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist

import rtk_blackjax as rb
from rtk_blackjax import diagnostics
from rtk_blackjax.adapters.numpyro_model import model_density
from rtk_blackjax.mcmc.logdensity import rtk_logdensity

NOISE = 0.5
PRIOR_SCALE_B, PRIOR_SCALE_W = 2.0, 1.0


def model(x, y=None):
    b = numpyro.sample("b", dist.Normal(0.0, PRIOR_SCALE_B))
    w = numpyro.sample(
        "w", dist.Normal(0.0, PRIOR_SCALE_W).expand([x.shape[1]]).to_event(1)
    )
    numpyro.sample("y", dist.Normal(b + x @ w, NOISE), obs=y)


def exact_posterior(x, y):
    """Conjugate Gaussian posterior of ``(b, w)`` in the flat order ``[b, w...]``."""
    design = np.column_stack([np.ones(len(x)), x])
    prior_prec = np.diag([PRIOR_SCALE_B**-2] + [PRIOR_SCALE_W**-2] * x.shape[1])
    prec = prior_prec + design.T @ design / NOISE**2
    cov = np.linalg.inv(prec)
    return cov @ design.T @ y / NOISE**2, cov


def main(out: str, num_samples: int, num_draws: int, broken: float | None) -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(40, 3))
    y = 0.7 + x @ np.array([1.0, -0.5, 0.25]) + NOISE * rng.normal(size=40)

    density = model_density(model, jnp.asarray(x), jnp.asarray(y))
    mean, cov = exact_posterior(x, y)
    # The flat layout is ravel_pytree's (sites sorted: b, then w): check that the
    # model's log density is this Gaussian up to a constant before trusting it.
    points = mean + rng.normal(size=(5, density.dim)) @ np.linalg.cholesky(cov).T
    model_ld = np.array([density.logdensity_fn(jnp.asarray(p)) for p in points])
    gauss_ld = -0.5 * np.einsum(
        "ni,ij,nj->n", points - mean, np.linalg.inv(cov), points - mean
    )
    assert np.allclose(model_ld - model_ld[0], gauss_ld - gauss_ld[0], atol=1e-3)

    target = rb.targets.gaussian(mean, cov)
    grid = rb.geometric_grid(20, horizon=5.0, t_min=1e-3)
    inner, num_inner_steps = rb.mala_inner(), 2
    sampler = rb.rtk(target, grid, inner, num_inner_steps=num_inner_steps)

    key = jax.random.key(0)
    start = time.perf_counter()
    result = rb.sample(key, sampler, num_samples, dim=density.dim)
    idata = diagnostics.to_arviz(
        result, num_chains=4, postprocess_fn=density.postprocess_fn
    )
    print(
        f"RTK-MALA: {num_samples} samples, NFE {result.num_evaluations} per sample "
        f"({time.perf_counter() - start:.1f} s)"
    )
    summary = az.summary(idata, var_names=["b", "w"], kind="all", round_to=4)
    summary["exact_mean"] = mean
    summary["exact_sd"] = np.sqrt(np.diag(cov))
    print(summary[["mean", "exact_mean", "sd", "exact_sd", "ess_bulk", "r_hat"]])
    acceptance = idata.sample_stats["acceptance_rate"].mean(("chain", "draw"))
    print("acceptance per segment:", np.round(acceptance.values, 2))

    # The same model from its log density alone (no diffused target needed):
    # RTK on the augmented joint, rtk_blackjax.mcmc.logdensity.
    start = time.perf_counter()
    # The posterior (sd ~ 0.1) is far narrower than the Gaussian factor of the
    # first denoising posteriors: start MALA's step small, it adapts from there.
    from_density = rtk_logdensity(
        density.logdensity_fn, grid, num_importance=16, step_size=0.002
    )
    result_ld = rb.sample(key, from_density, num_samples, dim=density.dim)
    idata_ld = diagnostics.to_arviz(
        result_ld, num_chains=4, postprocess_fn=density.postprocess_fn
    )
    print(
        f"\nRTK from the log density only: NFE {result_ld.num_evaluations} per "
        f"sample ({time.perf_counter() - start:.1f} s)"
    )
    summary = az.summary(idata_ld, var_names=["b", "w"], kind="all", round_to=4)
    summary["exact_mean"] = mean
    summary["exact_sd"] = np.sqrt(np.diag(cov))
    print(summary[["mean", "exact_mean", "sd", "exact_sd", "ess_bulk", "r_hat"]])

    start = time.perf_counter()
    diag = diagnostics.segment_diagnostics(
        key,
        target,
        grid,
        inner,
        num_inner_steps,
        num_particles=4,
        num_chains=4,
        num_draws=num_draws,
        num_warmup=100,
        dim=density.dim,
    )
    table = diagnostics.diagnose(diag)
    print(
        f"\ninner-chain mixing per segment ({diag.num_evaluations} NFE, "
        f"{time.perf_counter() - start:.1f} s):"
    )
    print(diagnostics.format_table(table))
    path = diagnostics.plot_segment_diagnostics(diag, out)
    print(f"trace and rank plots: {path}")

    if broken is not None:
        # The same sampler with a badly tuned inner kernel: the table flags it.
        diag = diagnostics.segment_diagnostics(
            key,
            target,
            grid,
            rb.mala_inner(step_scale=broken),
            num_inner_steps,
            num_particles=4,
            num_chains=4,
            num_draws=num_draws,
            num_warmup=100,
            segments=[0, 10, 19],
            dim=density.dim,
        )
        print(f"\nthe same with mala_inner(step_scale={broken}):")
        print(diagnostics.format_table(diagnostics.diagnose(diag)))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="numpyro_model_diagnostics.png")
    parser.add_argument("--num-samples", type=int, default=2000)
    parser.add_argument("--num-draws", type=int, default=1000)
    parser.add_argument(
        "--broken",
        type=float,
        default=None,
        metavar="STEP_SCALE",
        help="also diagnose a mistuned inner MALA (e.g. 0.001) on 3 segments",
    )
    args = parser.parse_args()
    main(args.out, args.num_samples, args.num_draws, args.broken)
