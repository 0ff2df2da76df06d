"""A 2-D posterior with a diffusion prior: prior, likelihood, exact posterior, samplers.

Prior: a 4-component Gaussian mixture (exact OU-diffused score, used as the diffusion
model). Observation: one noisy linear measurement ``y = a·x + σ ε``. The exact
posterior is again a Gaussian mixture (``rtk_blackjax.posterior.gmm``). The figure
shows the prior and likelihood densities, exact posterior draws and the draws of
split Gibbs (RTK prior block), plus the DPS and twisted-SMC baselines when their
modules are installed, each at the same budget of prior evaluations per sample.

Run: ``python examples/posterior_2d.py [--out posterior_2d.png]`` (under two minutes
on two CPU cores).
"""

import argparse
import time

import jax
import jax.numpy as jnp
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from rtk_blackjax.posterior import gmm  # noqa: E402
from rtk_blackjax.posterior.split_gibbs import split_gibbs_linear_gaussian  # noqa: E402
from rtk_blackjax.targets.analytic import (  # noqa: E402
    mixture_from_arrays,
    mixture_logdensity,
    mixture_target,
    sample_mixture,
)

NUM_SAMPLES = 2000
BUDGET = 200  # prior evaluations per returned sample, every method
LIM = 7.0  # half-width of the plotted square


def _optional_baselines():
    """DPS and SMC baselines, if their modules are present."""
    methods = {}
    try:
        from rtk_blackjax.posterior.dps import dps_linear_gaussian

        methods["DPS"] = lambda key, *args: dps_linear_gaussian(
            key, *args, num_samples=NUM_SAMPLES, prior_nfe_budget=BUDGET
        )
    except ImportError:
        pass
    try:
        from rtk_blackjax.posterior.smc import smc_linear_gaussian

        methods["SMC (twisted)"] = lambda key, *args: smc_linear_gaussian(
            key, *args, num_particles=NUM_SAMPLES, prior_nfe_budget=BUDGET
        )
    except ImportError:
        pass
    return methods


def main(out: str = "posterior_2d.png") -> dict:
    means = np.array([[-2.0, -2.0], [-2.0, 2.0], [2.0, -2.0], [2.0, 2.0]])
    params = mixture_from_arrays(means, 0.3, np.array([0.4, 0.2, 0.2, 0.2]))
    prior = mixture_target(params)
    A = jnp.array([[1.0, 1.0]]) / jnp.sqrt(2.0)
    y, sigma = jnp.array([0.3]), 0.4
    posterior = gmm.exact_posterior(params, A, y, sigma)

    key = jax.random.key(0)
    draws = {
        "prior": np.asarray(sample_mixture(key, params, NUM_SAMPLES)),
        "exact posterior": np.asarray(
            gmm.sample_posterior(jax.random.key(1), posterior, NUM_SAMPLES)
        ),
    }
    report = {}
    methods = {
        "split Gibbs (RTK)": lambda key, *args: split_gibbs_linear_gaussian(
            key, *args, num_chains=NUM_SAMPLES, num_draws=1, prior_nfe_budget=BUDGET
        ),
        **_optional_baselines(),
    }
    for name, run in methods.items():
        start = time.perf_counter()
        res = run(jax.random.key(2), prior, A, y, sigma)
        x = np.asarray(res.samples).reshape(-1, 2)
        draws[name] = x
        report[name] = {
            "prior_nfe": float(res.prior_nfe),
            "mode_tv": float(gmm.mode_tv(posterior, x)),
            "seconds": time.perf_counter() - start,
        }
        print(
            f"{name:20s} NFE/sample {res.prior_nfe:7.1f}  mode TV "
            f"{report[name]['mode_tv']:.3f}  ({report[name]['seconds']:.1f} s)"
        )
    report["exact posterior"] = {
        "mode_tv": float(gmm.mode_tv(posterior, draws["exact posterior"]))
    }
    print(
        f"{'exact (noise floor)':20s} mode TV {report['exact posterior']['mode_tv']:.3f}"
    )

    grid = np.linspace(-LIM, LIM, 200)
    xx, yy = np.meshgrid(grid, grid)
    points = jnp.asarray(np.stack([xx.ravel(), yy.ravel()], -1))
    log_prior = jax.vmap(lambda p: mixture_logdensity(params, p, 0.0))(points)
    log_lik = -0.5 * ((points @ A.T)[:, 0] - y[0]) ** 2 / sigma**2
    panels = [
        ("prior density", np.exp(log_prior)),
        ("likelihood", np.exp(log_lik)),
        ("posterior density", np.exp(log_prior + log_lik)),
    ]
    sample_panels = [k for k in draws if k != "prior"]
    ncols = len(panels) + len(sample_panels)
    fig, axes = plt.subplots(1, ncols, figsize=(3.2 * ncols, 3.4))
    for ax, (title, values) in zip(axes, panels):
        ax.contourf(xx, yy, values.reshape(xx.shape), levels=20, cmap="viridis")
        ax.set_title(title, fontsize=9)
    for ax, name in zip(axes[len(panels) :], sample_panels):
        post = np.exp(log_prior + log_lik).reshape(xx.shape)
        ax.contour(
            xx,
            yy,
            post,
            levels=post.max() * np.array([0.05, 0.3, 0.7]),
            colors="0.4",
            linewidths=0.6,
        )
        ax.scatter(*draws[name].T, s=1, alpha=0.3)
        outside = np.mean(np.any(np.abs(draws[name]) > LIM, axis=1))
        tv = report[name]["mode_tv"]
        ax.set_title(f"{name}\nmode TV {tv:.3f}, {outside:.0%} off-frame", fontsize=9)
    for ax in axes:
        ax.set_xlim(-LIM, LIM)
        ax.set_ylim(-LIM, LIM)
        ax.set_aspect("equal")
        ax.set_xticks([])
        ax.set_yticks([])
    fig.suptitle(
        f"y = a·x + σε (a = (1,1)/√2, y = {float(y[0]):.2g}, σ = {sigma}); "
        f"{NUM_SAMPLES} draws, {BUDGET} prior NFE/sample",
        fontsize=9,
    )
    fig.tight_layout()
    fig.savefig(out, dpi=120)
    print(f"wrote {out}")
    return report


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="posterior_2d.png")
    main(parser.parse_args().out)
