"""The ring scenario of issue 12: a nonlinear NumPyro likelihood with an unknown noise
scale on a 2-D ring prior, every method through one ``rb.posterior.sample`` call.

Prior: an analytic 48-component ring (radius 2, component variance 0.02), passed
with the access each method is allowed (``--access score`` hides its log density),
or a network trained on draws of it (``--access learned-energy``: an
energy-parameterised network, the grid reference then from its energy at
``t = 0``; ``learned-score``: a score network).
Model: ``sigma ~ HalfNormal(1)``, six observations ``y_i ~ Normal(x0 * x1, sigma)``.
The posterior has four modes (the four points of the ring where ``x0 x1 = c``),
of weight 1/4 each by symmetry; the grid reference (a 2-D grid for ``x`` times a
1-D grid for ``sigma``) gives their weights and ``sigma``'s posterior mean and sd.

Run: ``python benchmarks/ring_posterior.py [--access score|logdensity|learned-energy|learned-score]
[--methods smc,tds,split-gibbs,nuts] [--seeds 3] [--json]``; ``python -m rtk_blackjax
demo`` runs one seed of it after the prior-sampling table and draws it
(:func:`plot_ring`).
"""

import time
import warnings

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist

import rtk_blackjax as rb

__all__ = [
    "ACCESS",
    "ring_target",
    "make_model",
    "observations",
    "grid_reference",
    "run",
    "format_rows",
    "plot_ring",
]

RADIUS, COMPONENT_VARIANCE, NUM_COMPONENTS = 2.0, 0.02, 48
SIGMA_TRUE, NUM_OBS = 0.3, 6


ACCESS = ("score", "logdensity", "learned-energy", "learned-score")
TRAINING_DRAWS, TRAINING_STEPS = 20_000, 4000
_LEARNED: dict = {}


def analytic_ring() -> rb.targets.Target:
    angles = jnp.linspace(0.0, 2 * jnp.pi, NUM_COMPONENTS, endpoint=False)
    means = RADIUS * jnp.stack([jnp.cos(angles), jnp.sin(angles)], 1)
    return rb.targets.gaussian_mixture(means, COMPONENT_VARIANCE)


def ring_target(access: str) -> rb.targets.Target:
    """The prior with the access a run is allowed.

    ``learned-energy`` / ``learned-score``: a network trained (seed 0, once per
    process) on 20 000 draws of the analytic ring by
    :func:`~rtk_blackjax.adapters.learned.train_energy` / ``train_score`` (2 x 64
    MLP, 4000 steps, batch 256): what a user has.
    """
    target = analytic_ring()
    if access == "score":
        return rb.targets.score_only(target)
    if access == "logdensity":
        return target
    if access not in _LEARNED:
        from rtk_blackjax.adapters import learned

        trainer = (
            learned.train_energy
            if access == "learned-energy"
            else (learned.train_score)
        )
        k_data, k_train = jax.random.split(jax.random.key(0))
        data = rb.targets.sample_mixture(k_data, target.mixture, TRAINING_DRAWS)
        trained = trainer(
            k_train,
            data,
            num_steps=TRAINING_STEPS,
            batch_size=256,
            hidden=64,
            depth=2,
            t_min=1e-3,
            progress_bar=False,
        )
        _LEARNED[access] = learned.learned_target(trained)
    return _LEARNED[access]


def prior_logdensity(access: str):
    """``log p_0`` of the prior the model uses, up to a constant, for the grid
    reference: the learned energy at ``t = 0`` for ``learned-energy``; the analytic
    ring otherwise (for ``learned-score`` that is the ring the network was fitted
    to, not the network's own prior, which has no density to grid)."""
    if access == "learned-energy":
        target = ring_target(access)
        return lambda p: target.logdensity(p, 0.0)
    mixture = analytic_ring().mixture
    return lambda p: rb.targets.mixture_logdensity(mixture, p, 0.0)


def make_model(target):
    prior = rb.posterior.DiffusionPrior(target, dim=2)

    def model(y=None):
        x = numpyro.sample("x", prior)
        sigma = numpyro.sample("sigma", dist.HalfNormal(1.0))
        with numpyro.plate("obs", NUM_OBS):
            numpyro.sample("y", dist.Normal(x[0] * x[1], sigma), obs=y)

    return model


def observations(seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    angle = rng.uniform(0.15, 0.35) * np.pi  # a point with x0 x1 well away from 0
    x = RADIUS * np.array([np.cos(angle), np.sin(angle)])
    return x[0] * x[1] + SIGMA_TRUE * rng.normal(size=NUM_OBS)


def mode_of(x: np.ndarray) -> np.ndarray:
    """Which of the four modes (for x0 x1 > 0): sign of x0, and |x0| > |x1|."""
    return 2 * (x[:, 0] > 0) + (np.abs(x[:, 0]) > np.abs(x[:, 1]))


def grid_reference(logdensity, y: np.ndarray, n: int = 500):
    grid = np.linspace(-2.8, 2.8, n)
    xx, yy = np.meshgrid(grid, grid, indexing="ij")
    pts = np.stack([xx.ravel(), yy.ravel()], 1)
    logp = np.asarray(jax.jit(jax.vmap(logdensity))(jnp.asarray(pts)))
    sigmas = np.linspace(0.02, 2.0, 400)
    prod = pts[:, 0] * pts[:, 1]
    resid2 = ((y[None, :] - prod[:, None]) ** 2).sum(1)  # (points,)
    loglik = (
        -0.5 * resid2[:, None] / sigmas[None] ** 2
        - NUM_OBS * np.log(sigmas)[None]
        - 0.5 * sigmas[None] ** 2  # HalfNormal(1)
    )
    joint = logp[:, None] + loglik
    joint -= joint.max()
    w = np.exp(joint)
    w /= w.sum()
    w_x, w_s = w.sum(1), w.sum(0)
    modes = np.bincount(mode_of(pts), weights=w_x, minlength=4)
    mean = float((w_s * sigmas).sum())
    sd = float(np.sqrt((w_s * (sigmas - mean) ** 2).sum()))
    return modes, mean, sd


def run(
    method: str,
    access: str,
    seed: int,
    num_samples: int,
    prior_nfe: int,
    *,
    keep_samples: bool = False,
    method_options: dict | None = None,
) -> dict:
    """One method on one seed: mode weights against the grid reference, ``sigma``'s
    mean and sd errors, warnings raised (``keep_samples``: the draws of ``x`` too;
    ``method_options``: passed to ``rb.posterior.sample``)."""
    y = observations(seed)
    ref_modes, ref_mean, ref_sd = grid_reference(prior_logdensity(access), y)
    model = make_model(ring_target(access))
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
            y=jnp.asarray(y),
        )
    elapsed = time.perf_counter() - start
    x = np.asarray(res.samples["x"])
    sigma = np.asarray(res.samples["sigma"])
    modes = np.bincount(mode_of(x), minlength=4) / len(x)
    # a learned energy's t = 0 value is the network's extrapolation below its
    # training times: also score against the ring it was trained on
    data_modes = (
        grid_reference(prior_logdensity("logdensity"), y)[0]
        if access == "learned-energy"
        else ref_modes
    )
    return {
        "method": method,
        "access": access,
        "seed": seed,
        "mode_weights": np.round(modes, 3).tolist(),
        "reference_mode_weights": np.round(ref_modes, 3).tolist(),
        "mode_tv": float(0.5 * np.abs(modes - ref_modes).sum()),
        "mode_tv_vs_data": float(0.5 * np.abs(modes - data_modes).sum()),
        "sigma_mean_rel_err": float(sigma.mean() / ref_mean - 1),
        "sigma_sd_rel_err": float(sigma.std() / ref_sd - 1),
        "prior_nfe": res.prior_nfe,
        "warnings": len(
            [w for w in caught if issubclass(w.category, rb.posterior.PosteriorWarning)]
        ),
        "seconds": round(elapsed, 1),
        **({"x": x} if keep_samples else {}),
    }


def format_rows(rows: list[dict]) -> str:
    """A text table of :func:`run` rows."""
    lines = [
        f"{'method':12s} {'access':14s} seed  mode weights (reference)          TV     "
        "TV-data  sigma mean/sd err  NFE   warnings  s"
    ]
    for r in rows:
        lines.append(
            f"{r['method']:12s} {r['access']:14s} {r['seed']:4d}  "
            f"{r['mode_weights']} ({r['reference_mode_weights']})  {r['mode_tv']:.3f}  "
            f"{r['mode_tv_vs_data']:.3f}  "
            f"{r['sigma_mean_rel_err']:+.3f}/{r['sigma_sd_rel_err']:+.3f}  "
            f"{r['prior_nfe']:5.0f}  {r['warnings']:8d}  {r['seconds']}"
        )
    return "\n".join(lines)


def plot_ring(rows: list[dict], path: str, seed: int = 0) -> None:
    """Scatter of each row's ``x`` draws over the exact posterior's density."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    y = observations(seed)
    grid = np.linspace(-2.8, 2.8, 300)
    xx, yy = np.meshgrid(grid, grid, indexing="ij")
    pts = np.stack([xx.ravel(), yy.ravel()], 1)
    logp = np.asarray(jax.jit(jax.vmap(prior_logdensity("logdensity")))(pts))
    sigmas = np.linspace(0.02, 2.0, 200)
    resid2 = ((y[None, :] - (pts[:, 0] * pts[:, 1])[:, None]) ** 2).sum(1)
    joint = logp[:, None] - 0.5 * resid2[:, None] / sigmas**2
    joint += -NUM_OBS * np.log(sigmas) - 0.5 * sigmas**2
    density = np.exp(joint - joint.max()).sum(1).reshape(xx.shape)
    fig, axes = plt.subplots(
        1, len(rows), figsize=(3.6 * len(rows), 3.8), sharex=True, sharey=True
    )
    for ax, r in zip(np.atleast_1d(axes), rows):
        # square root: the posterior is a thin arc, its tails would not show
        ax.contourf(xx, yy, np.sqrt(density), levels=10, cmap="Blues")
        ax.scatter(r["x"][:, 0], r["x"][:, 1], s=2, alpha=0.3, color="C3")
        ax.set_title(
            f"{r['method']} ({r['access']}): mode TV {r['mode_tv']:.2f}"
            + (" [warned]" if r["warnings"] else ""),
            fontsize=9,
        )
        ax.set_aspect("equal")
    fig.suptitle(
        f"ring prior, y ~ N(x0 x1, sigma), sigma ~ HalfNormal(1): "
        f"{rows[0]['prior_nfe']:.0f} prior NFE per sample",
        fontsize=10,
    )
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
