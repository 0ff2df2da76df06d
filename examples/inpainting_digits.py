"""Inpainting scikit-learn digits with a learned diffusion prior and split Gibbs.

A score network is fitted by denoising score matching to the 8x8 digits of
``sklearn.datasets.load_digits`` (64-D, the training images only), then serves
as a score-only diffusion prior in a linear-Gaussian inverse problem: the lower
half of each held-out image is hidden, the upper half observed with noise
``sigma``. Split Gibbs (:func:`rtk_blackjax.posterior.split_gibbs.split_gibbs_linear_gaussian`)
alternates the exact Gaussian likelihood block with RTK prior blocks
(score-only: underdamped Langevin inner steps, which need no energy), and the
figure shows, per test image, the truth, the observation, posterior draws, the
posterior mean and the pixel-wise posterior standard deviation.

Runs on the digits that ship with the package (no scikit-learn needed)::

    python examples/inpainting_digits.py                 # ~70 s on 2 CPU cores
    python examples/inpainting_digits.py --steps 1500    # quick look

Printed: the DSM loss, the per-image error of the posterior mean on the hidden
pixels (against the truth, in pixel units 0..16) next to the error of the prior
mean, and the coverage of the central 90 % posterior intervals of the hidden
pixels. A learned prior this small is blurry; the point is the plumbing (learned
score -> score-only RTK -> Bayesian posterior with uncertainty), with honest
numbers.
"""

import argparse
import json
import time

import jax
import jax.numpy as jnp
import numpy as np

import rtk_blackjax as rb
from rtk_blackjax.adapters.learned import learned_target, plot_loss, train_score
from rtk_blackjax.benchmarks.digits import digits_data
from rtk_blackjax.posterior.split_gibbs import split_gibbs_linear_gaussian

# Pixels are 0..16; centred and scaled to unit-ish variance for the network.
_CENTRE, _SCALE = 8.0, 8.0


def _load_digits(seed: int, num_test: int):
    # The digits ship with the package (rtk_blackjax.benchmarks.digits): the same
    # permutation split and (p - 8) / 8 units as before, no scikit-learn needed.
    data = digits_data(seed=seed, num_test=num_test)
    return np.asarray(data.train), np.asarray(data.test)


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--steps", type=int, default=4000, help="DSM training steps")
    p.add_argument("--hidden", type=int, default=256)
    p.add_argument("--depth", type=int, default=3)
    p.add_argument("--num-test", type=int, default=4, help="images to inpaint")
    p.add_argument("--sigma", type=float, default=0.1, help="noise (scaled units)")
    p.add_argument("--chains", type=int, default=64)
    p.add_argument("--draws", type=int, default=4)
    p.add_argument("--prior-nfe", type=int, default=400, help="per returned sample")
    p.add_argument("--out", default="inpainting_digits.png")
    p.add_argument("--loss-plot", default="inpainting_digits_loss.png")
    p.add_argument("--no-progress", action="store_true")
    args = p.parse_args(argv)

    train, test = _load_digits(args.seed, args.num_test)
    dim = train.shape[1]
    key = jax.random.key(args.seed)
    key_train, key_noise, key_post = jax.random.split(key, 3)

    start = time.perf_counter()
    trained = train_score(
        key_train,
        train,
        num_steps=args.steps,
        hidden=args.hidden,
        depth=args.depth,
        t_min=1e-3,
        progress_bar=not args.no_progress,
    )
    train_s = time.perf_counter() - start
    plot_loss(trained, args.loss_plot)
    prior = learned_target(trained)

    # Observe the upper half (rows 0-3 of the 8x8 image), hide the lower half.
    observed = np.arange(dim // 2)
    hidden = np.arange(dim // 2, dim)
    A = jnp.asarray(np.eye(dim, dtype=np.float32)[observed])
    score_only_uld = rb.uld_inner(step_scale=0.3)

    rows, panels = [], []
    for i, truth in enumerate(test):
        noise = args.sigma * jax.random.normal(
            jax.random.fold_in(key_noise, i), (len(observed),)
        )
        y = A @ truth + noise
        start = time.perf_counter()
        result = split_gibbs_linear_gaussian(
            jax.random.fold_in(key_post, i),
            prior,
            A,
            y,
            args.sigma,
            num_chains=args.chains,
            num_draws=args.draws,
            prior_nfe_budget=args.prior_nfe,
            inner=score_only_uld,
        )
        wall = time.perf_counter() - start
        draws = np.asarray(result.samples).reshape(-1, dim)
        mean, sd = draws.mean(0), draws.std(0)
        lo, hi = np.quantile(draws, [0.05, 0.95], axis=0)
        err = _SCALE * np.sqrt(np.mean((mean[hidden] - truth[hidden]) ** 2))
        prior_err = _SCALE * np.sqrt(
            np.mean((train.mean(0)[hidden] - truth[hidden]) ** 2)
        )
        covered = np.mean((lo[hidden] <= truth[hidden]) & (truth[hidden] <= hi[hidden]))
        rows.append(
            dict(
                image=i,
                rmse_hidden=round(float(err), 3),
                rmse_prior_mean=round(float(prior_err), 3),
                coverage90=round(float(covered), 3),
                prior_nfe=round(float(result.prior_nfe), 1),
                likelihood_evals=round(float(result.likelihood_evals), 1),
                wall_s=round(wall, 1),
            )
        )
        observation = np.full(dim, np.nan)
        observation[observed] = np.asarray(y)
        panels.append((truth, observation, draws[:3], mean, sd))

    _plot(panels, args.out)
    print(
        f"trained {args.steps} DSM steps in {train_s:.0f} s, final loss "
        f"{float(np.mean(trained.loss_history[-100:])):.4f}; wrote {args.loss_plot}"
    )
    print(
        "| image | RMSE hidden (posterior mean) | RMSE hidden (prior mean) | "
        "90% coverage | prior NFE/sample | likelihood evals | wall (s) |"
    )
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {r['image']} | {r['rmse_hidden']} | {r['rmse_prior_mean']} | "
            f"{r['coverage90']} | {r['prior_nfe']} | {r['likelihood_evals']} | "
            f"{r['wall_s']} |"
        )
    print(f"wrote {args.out}")
    summary = dict(
        steps=args.steps,
        train_s=round(train_s, 1),
        mean_rmse_hidden=round(float(np.mean([r["rmse_hidden"] for r in rows])), 3),
        mean_rmse_prior_mean=round(
            float(np.mean([r["rmse_prior_mean"] for r in rows])), 3
        ),
        mean_coverage90=round(float(np.mean([r["coverage90"] for r in rows])), 3),
    )
    print(json.dumps(summary))
    return summary


def _plot(panels, path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    columns = ["truth", "observed", "draw 1", "draw 2", "draw 3", "mean", "sd"]
    fig, axes = plt.subplots(
        len(panels), len(columns), figsize=(1.4 * len(columns), 1.5 * len(panels))
    )
    axes = np.atleast_2d(axes)
    for row, (truth, observation, draws, mean, sd) in zip(axes, panels):
        images = [truth, observation, *draws, mean]
        for ax, image in zip(row, images):
            ax.imshow(
                _CENTRE + _SCALE * image.reshape(8, 8), cmap="gray_r", vmin=0, vmax=16
            )
        row[-1].imshow(_SCALE * sd.reshape(8, 8), cmap="magma")
        for ax in row:
            ax.set_xticks([])
            ax.set_yticks([])
    for ax, name in zip(axes[0], columns):
        ax.set_title(name, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


if __name__ == "__main__":
    main()
