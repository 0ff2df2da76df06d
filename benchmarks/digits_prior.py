"""Prior sampling quality on real data: a learned digits prior, RTK vs solvers.

The prior is the shipped energy network of :mod:`rtk_blackjax.benchmarks.digits`
(DSM on 1597 of scikit-learn's 8x8 digits, ``digits_prior("energy", "cpu")``). At
each NFE budget every method samples the *same* network
(``rtk_blackjax.policy.configure(method, target, nfe=N)``: geometric grids with the
policy's ``t_min`` and inner steps; the score-only methods see only its score):

* ``rtk-mala``: RTK with MALA inner steps and exact Metropolis tests on the
  network's energies;
* ``rtk-mala-score``: the score-only MALA variant (energy differences by a
  Lobatto quadrature of the score);
* ``rtk-uld``: unadjusted underdamped Langevin inner steps;
* ``ddpm`` (geometric grid, final Tweedie denoise), ``dpm-solver++`` (2M) and
  ``pf-ode`` (Heun on the probability-flow ODE).

``--prior score`` adds the score-only methods on the score network
(``digits_prior("score", "cpu")``). NFE is what :func:`rtk_blackjax.sample` reports
(every score / energy evaluation, the last denoise included), at most the budget.

Metrics against the 200 held-out digits (:func:`~rtk_blackjax.benchmarks.digits.digit_metrics`):
Fréchet distance of the metric classifier's 32-D penultimate features (``FD``),
the classifier's mean max probability (``conf.``), the TV between predicted-class
frequencies (``class TV``), sliced W2 in model units, the fraction of pixels
outside the data range. The last row is the noise floor: the held-out digits
against the training digits.

Usage::

    python benchmarks/digits_prior.py            # full: 2000 samples, NFE 10/25/50/105
    python benchmarks/digits_prior.py --quick    # 500 samples, NFE 10/105
    python benchmarks/digits_prior.py --json docs/data/digits_prior.json \\
        --figures docs/digits_prior

Figures (``--figures PREFIX``): ``PREFIX_grid.png`` (64 samples per method at the
largest NFE, and 64 held-out digits), ``PREFIX_nfe.png`` (16 samples per method and
NFE), ``PREFIX_metrics.png`` (the metrics against NFE, the noise floor dashed).
"""

from __future__ import annotations

import argparse
import json
import time

import jax
import numpy as np

import rtk_blackjax as rb
from rtk_blackjax.adapters.learned import learned_target
from rtk_blackjax.benchmarks.digits import (
    digit_metrics,
    digits_classifier,
    digits_data,
    digits_prior,
    to_pixels,
)
from rtk_blackjax.policy import configure

METHODS = ("rtk-mala", "rtk-mala-score", "rtk-uld", "ddpm", "dpm-solver++", "pf-ode")
# Methods that run on a score-only network (all but the energy-based RTK-MALA).
SCORE_METHODS = METHODS[1:]
NFES = (10, 25, 50, 105)
QUICK_NFES = (10, 105)


def run_one(rng_key, method: str, target, nfe: int, num_samples: int):
    """One method at one NFE budget: ``(samples (n, 64), row dict)``."""
    bench = configure(method, target, nfe=nfe)
    start = time.perf_counter()
    result = rb.sample(rng_key, bench.algorithm, num_samples, dim=64)
    samples = np.asarray(jax.block_until_ready(result.samples))
    wall = time.perf_counter() - start
    reported = int(result.num_evaluations)
    # The policy builds within the budget; a sampler that spends more than it was
    # given would make the comparison dishonest.
    if reported > nfe:
        raise RuntimeError(f"{method} reported NFE {reported} > budget {nfe}")
    acc = result.acceptance_per_segment()
    row = dict(
        method=method,
        nfe_budget=nfe,
        nfe=reported,
        segments=bench.config["segments"],
        inner_steps=bench.config["inner_steps"],
        t_min=bench.config["t_min"],
        acceptance=float(np.nanmean(acc)) if np.isfinite(acc).any() else None,
        wall_s=round(wall, 2),
    )
    return samples, row


def run(
    *,
    num_samples: int = 2000,
    nfes=NFES,
    methods=METHODS,
    score_prior: bool = False,
    seed: int = 0,
    energy=None,
    score=None,
    log=print,
) -> dict:
    """Every method at every NFE; returns the JSON-ready result with the samples.

    ``energy`` / ``score``: trained priors (default the shipped
    ``digits_prior("energy")`` / ``digits_prior("score")``). The returned dict has
    ``rows`` (one per prior, method and NFE), ``floor`` (held-out vs training
    digits), ``classifier_accuracy`` and, not for JSON, ``samples``:
    ``{(prior, method, nfe): array}``.
    """
    data = digits_data(seed)
    classifier = digits_classifier(data)
    metric_key = jax.random.key(1234)  # the same sliced-W2 directions for every row
    energy = digits_prior("energy") if energy is None else energy
    priors = [("energy", learned_target(energy), methods)]
    if score_prior:
        score = digits_prior("score") if score is None else score
        priors.append(
            ("score", learned_target(score), [m for m in methods if m != "rtk-mala"])
        )
    floor = digit_metrics(data.test, data.train, classifier, metric_key)
    rows, samples = [], {}
    for prior_name, target, prior_methods in priors:
        for nfe in nfes:
            # Common random numbers: every method starts from the same N(0, I)
            # draws at a given NFE, so differences are the samplers'.
            key = jax.random.fold_in(jax.random.key(seed), nfe)
            for method in prior_methods:
                x, row = run_one(key, method, target, nfe, num_samples)
                row = dict(
                    prior=prior_name,
                    **row,
                    **digit_metrics(x, data.test, classifier, metric_key),
                )
                rows.append(row)
                samples[(prior_name, method, nfe)] = x
                log(
                    f"{prior_name:6s} {method:14s} nfe={row['nfe']:4d} "
                    f"FD={row['fd']:.3f} conf={row['confidence']:.3f} "
                    f"classTV={row['class_tv']:.3f} SW2={row['sliced_w2']:.4f} "
                    f"out={row['pixel_range']:.3f} ({row['wall_s']:.1f}s)"
                )
    return dict(
        num_samples=num_samples,
        num_test=int(len(data.test)),
        num_train=int(len(data.train)),
        seed=seed,
        nfes=list(nfes),
        classifier_accuracy=classifier.accuracy,
        energy_prior=dict(energy.config),
        rows=rows,
        floor=floor,
        samples=samples,
        test=data.test,
    )


def format_table(result: dict) -> str:
    """Markdown table of the rows and the noise-floor row."""
    head = (
        "| prior | method | NFE | FD ↓ | conf. ↑ | class TV ↓ | sliced W2 ↓ | "
        "pixels out | accept. | wall s |"
    )
    lines = [head, "|" + "---|" * 10]
    for r in result["rows"]:
        acc = "–" if r["acceptance"] is None else f"{r['acceptance']:.2f}"
        lines.append(
            f"| {r['prior']} | {r['method']} | {r['nfe']} | {r['fd']:.3f} | "
            f"{r['confidence']:.3f} | {r['class_tv']:.3f} | {r['sliced_w2']:.4f} | "
            f"{r['pixel_range']:.3f} | {acc} | {r['wall_s']:.1f} |"
        )
    f = result["floor"]
    lines.append(
        f"| *held-out vs train (floor)* | | | {f['fd']:.3f} | {f['confidence']:.3f} | "
        f"{f['class_tv']:.3f} | {f['sliced_w2']:.4f} | {f['pixel_range']:.3f} | | |"
    )
    return "\n".join(lines)


def _mosaic(images: np.ndarray, rows: int, cols: int) -> np.ndarray:
    """``rows x cols`` 8x8 digits (model units) tiled with 1-pixel gaps, in pixels."""
    tile = np.full((rows * 9 - 1, cols * 9 - 1), np.nan)
    for i, image in enumerate(images[: rows * cols]):
        r, c = divmod(i, cols)
        tile[r * 9 : r * 9 + 8, c * 9 : c * 9 + 8] = to_pixels(image).reshape(8, 8)
    return tile


def plot(result: dict, prefix: str) -> list[str]:
    """The three figures; returns their paths."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cmap = plt.get_cmap("gray_r").with_extremes(bad="white")
    samples, nfes = result["samples"], result["nfes"]
    keys = list(dict.fromkeys((p, m) for p, m, _ in samples))
    label = lambda p, m: m if p == "energy" else f"{m} (score net)"
    paths = []

    top = max(nfes)
    panels = [(label(p, m) + f", NFE≤{top}", samples[(p, m, top)]) for p, m in keys]
    panels.append(("held-out digits", result["test"]))
    cols = 4
    rows = -(-len(panels) // cols)
    fig, axes = plt.subplots(
        rows, cols, figsize=(3.2 * cols, 3.4 * rows), squeeze=False
    )
    for ax in np.ravel(axes):
        ax.axis("off")
    for ax, (title, x) in zip(np.ravel(axes), panels):
        ax.imshow(_mosaic(x, 8, 8), cmap=cmap, vmin=0, vmax=16)
        ax.set_title(title, fontsize=9)
    fig.tight_layout()
    paths.append(f"{prefix}_grid.png")
    fig.savefig(paths[-1], dpi=100)
    plt.close(fig)

    fig, axes = plt.subplots(
        len(keys),
        len(nfes),
        figsize=(1.9 * len(nfes) + 1.2, 1.9 * len(keys)),
        squeeze=False,
    )
    for i, (p, m) in enumerate(keys):
        for j, nfe in enumerate(nfes):
            ax = axes[i, j]
            ax.imshow(_mosaic(samples[(p, m, nfe)], 4, 4), cmap=cmap, vmin=0, vmax=16)
            ax.set_xticks([])
            ax.set_yticks([])
            if i == 0:
                ax.set_title(f"NFE ≤ {nfe}", fontsize=9)
            if j == 0:
                ax.set_ylabel(label(p, m), fontsize=8)
    fig.tight_layout()
    paths.append(f"{prefix}_nfe.png")
    fig.savefig(paths[-1], dpi=100)
    plt.close(fig)

    panels = [
        ("fd", "Fréchet distance (classifier features) ↓", True),
        ("confidence", "classifier confidence ↑", False),
        ("sliced_w2", "sliced W2 to held-out ↓", True),
    ]
    fig, axes = plt.subplots(1, len(panels), figsize=(4.4 * len(panels), 3.6))
    for ax, (name, title, log_scale) in zip(axes, panels):
        for p, m in keys:
            pts = sorted(
                (r["nfe"], r[name])
                for r in result["rows"]
                if r["prior"] == p and r["method"] == m
            )
            ax.plot(*zip(*pts), marker="o", label=label(p, m))
        ax.axhline(result["floor"][name], color="grey", ls="--", lw=1, label="floor")
        ax.set_xscale("log")
        if log_scale:
            ax.set_yscale("log")
        ax.set_xlabel("NFE per sample")
        ax.set_title(title, fontsize=10)
    axes[0].legend(fontsize=7)
    fig.tight_layout()
    paths.append(f"{prefix}_metrics.png")
    fig.savefig(paths[-1], dpi=100)
    plt.close(fig)
    return paths


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="500 samples, NFE 10 and 105")
    p.add_argument("--num-samples", type=int, default=None)
    p.add_argument("--nfe", type=int, nargs="+", default=None)
    p.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS)
    p.add_argument(
        "--prior",
        choices=("energy", "both"),
        default="energy",
        help="'both' adds the score-only methods on the score network",
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", default=None, help="write the result here")
    p.add_argument("--figures", default=None, help="figure path prefix")
    args = p.parse_args(argv)
    num_samples = args.num_samples or (500 if args.quick else 2000)
    nfes = tuple(args.nfe or (QUICK_NFES if args.quick else NFES))
    start = time.perf_counter()
    result = run(
        num_samples=num_samples,
        nfes=nfes,
        methods=tuple(args.methods),
        score_prior=args.prior == "both",
        seed=args.seed,
    )
    result["total_wall_s"] = round(time.perf_counter() - start, 1)
    print(format_table(result))
    print(
        f"classifier held-out accuracy {result['classifier_accuracy']:.3f}; "
        f"{num_samples} samples per row; total {result['total_wall_s']:.0f} s"
    )
    if args.figures:
        for path in plot(result, args.figures):
            print(f"wrote {path}")
    if args.json:
        out = {k: v for k, v in result.items() if k not in ("samples", "test")}
        with open(args.json, "w") as fh:
            json.dump(out, fh, indent=1)
        print(f"wrote {args.json}")
    return result


if __name__ == "__main__":
    main()
