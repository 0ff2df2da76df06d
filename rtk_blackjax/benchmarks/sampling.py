"""Prior-sampling benchmark: every method on the same exact targets, several metrics, honest NFE.

``python -m rtk_blackjax bench ...`` (see ``rtk_blackjax.__main__``) is a thin shell
around :func:`run_bench` (build the sampler with :func:`rtk_blackjax.policy.configure`,
sample, time, score against exact reference samples), :func:`sweep` (methods x NFE
table and plot), :func:`tune` (the grid search behind the policy tables) and
:func:`report` (table and plot of saved sweep rows). The targets are the RTK
authors' ``chessboard``, random anisotropic mixtures ``mog`` and ``multiscale``, and
the 25-mode ``grid25`` (:func:`make_target`); ``benchmarks/prior_suite.py`` runs
them all.
"""

import json
import time
from typing import Any

import jax
import numpy as np

from rtk_blackjax import metrics, sample
from rtk_blackjax.diffusion import GRID_KINDS
from rtk_blackjax.policy import METHODS, RTK_METHODS, BenchConfig, configure
from rtk_blackjax.posterior.gmm import grid_prior
from rtk_blackjax.posterior.smc import calibrate_grid
from rtk_blackjax.targets import (
    Target,
    chessboard,
    mixture_target,
    mixture_variance,
    random_mixture,
    random_mog,
    sample_mixture,
    score_only,
)

__all__ = [
    "METHODS",
    "RTK_METHODS",
    "TARGETS",
    "SWEEP_NFE",
    "BENCH_GRIDS",
    "BenchConfig",
    "make_target",
    "configure",
    "run_bench",
    "sweep",
    "tune",
    "report",
    "format_table",
    "plot_sweep",
]

TARGETS = ("chessboard", "mog", "multiscale", "grid25")
SWEEP_NFE = (25, 105, 505)
# The ``multiscale`` mixture's component variances span three decades.
MULTISCALE_VARIANCE_RANGE = (1e-4, 1e-1)


def make_target(name: str, dim: int, *, components: int = 8, seed: int = 0) -> Target:
    """A benchmark target by name.

    * ``chessboard``: the RTK authors' 8 isotropic modes (seed-free).
    * ``mog``: :func:`~rtk_blackjax.targets.random_mixture` (anisotropic full
      covariances, unequal weights) with ``seed`` and ``components``.
    * ``multiscale``: the same recipe with component variances log-uniform over
      :data:`MULTISCALE_VARIANCE_RANGE` (a factor 1000).
    * ``grid25``: 25 unit-variance modes on a grid of spacing 8 in every pair of
      coordinates (:func:`rtk_blackjax.posterior.gmm.grid_prior`; seed-free),
      well separated and at a scale 20 times the others'.
    """
    if name == "chessboard":
        return chessboard(dim)
    if name == "mog":
        return random_mog(seed, dim, components)
    if name == "multiscale":
        mix = random_mixture(
            seed, dim, components, variance_range=MULTISCALE_VARIANCE_RANGE
        )
        return mixture_target(mix)
    if name == "grid25":
        return mixture_target(grid_prior(dim))
    raise ValueError(f"target must be one of {TARGETS}, got {name!r}")


def _summary(values: np.ndarray) -> dict:
    values = np.asarray(values, dtype=float)
    values = values[np.isfinite(values)]
    if values.size == 0:
        return None
    return {
        "min": float(values.min()),
        "median": float(np.median(values)),
        "max": float(values.max()),
    }


#: ``grid=CALIBRATED``: the policy's grid refitted to the target by
#: :func:`~rtk_blackjax.posterior.calibrate_grid` (same segments, horizon and
#: ``t_min``) from the score alone, with this fixed key.
CALIBRATED = "calibrated"
CALIBRATION_SEED = 20261208
#: Half of the calibrated grid's segments keep the geometric spacing, so that no
#: segment is longer than twice the policy's: at 25 NFE (8 segments) the pilot
#: sees nothing below the modes' separation and with the posterior's 0.2 it left
#: one segment from t ~ 1 to t_min (chessboard d = 10: mode TV 0.218, var_bias
#: +3.3, against 0.026 / -0.004 with 0.5).
CALIBRATED_UNIFORM_FRACTION = 0.5
#: Grid kinds a benchmark run takes.
BENCH_GRIDS = (*GRID_KINDS, CALIBRATED)


def _calibrated(method: str, target: Target, dim: int, t_min, options: dict):
    """The policy's configuration on a grid fitted to the target; the pilot's
    one-off cost is in ``config["calibration_prior_nfe_total"]`` (not in the
    per-sample NFE)."""
    base = configure(method, target, t_min=t_min, **options).config
    fitted = calibrate_grid(
        jax.random.key(CALIBRATION_SEED),
        score_only(target),
        dim,
        base["segments"],
        horizon=base["horizon"],
        t_min=base["t_min"],
        uniform_fraction=CALIBRATED_UNIFORM_FRACTION,
    )
    options = dict(options, segments=None, horizon=None)
    bench = configure(method, target, times=fitted.times, **options)
    bench.config.update(
        grid=CALIBRATED,
        t_min=base["t_min"],
        times=[round(float(t), 6) for t in fitted.times],
        calibration_prior_nfe_total=fitted.prior_nfe,
    )
    return bench


def run_bench(
    *,
    target: str = "chessboard",
    dim: int = 10,
    method: str = "rtk-mala",
    nfe: int | None = 105,
    num_samples: int = 5000,
    seed: int = 0,
    components: int = 8,
    segments: int | None = None,
    inner_steps: Any = None,
    grid: str | None = None,
    t_min: float | None = None,
    horizon: float | None = None,
    noise_floor: bool = True,
    sample_options: dict | None = None,
) -> dict:
    """Run one benchmark and return the JSON-ready result dictionary.

    ``sample_options`` are passed to :func:`rtk_blackjax.sample` (e.g.
    ``chunk_size``, ``checkpoint_dir``, ``checkpoint_every``, ``return_info``,
    ``start_index``); the metrics are the same whatever they are. ``grid`` is a
    grid kind of :func:`~rtk_blackjax.policy.configure` or ``"calibrated"``
    (:data:`CALIBRATED`).
    """
    sample_options = dict(sample_options or {})
    tgt = make_target(target, dim, components=components, seed=seed)
    options = dict(nfe=nfe, segments=segments, inner_steps=inner_steps, horizon=horizon)
    if grid == CALIBRATED:
        bench = _calibrated(method, tgt, dim, t_min, options)
    else:
        bench = configure(method, tgt, grid=grid, t_min=t_min, **options)
    key_sampler, key_ref, key_ref2, key_metric = jax.random.split(
        jax.random.key(seed), 4
    )
    start = time.perf_counter()
    result = sample(
        key_sampler, bench.algorithm, num_samples, dim=dim, **sample_options
    )
    samples = np.asarray(jax.block_until_ready(result.samples))
    wall = time.perf_counter() - start

    mix = tgt.mixture
    kwargs = dict(
        means=mix.means,
        weights=mix.weights,
        exact_variance=mixture_variance(mix),
        rng_key=key_metric,
    )
    reference = sample_mixture(key_ref, mix, num_samples)
    scores = metrics.evaluate(samples, reference, **kwargs)

    out = {
        "target": target,
        "dim": dim,
        "method": method,
        "seed": seed,
        "config": dict(bench.config),
        "nfe": int(result.num_evaluations),
        "num_samples": num_samples,
        **scores,
        "wall_s": round(wall, 3),
    }
    info = result.info
    acc = result.acceptance_per_segment()
    if np.isfinite(acc).any():
        out["acceptance"] = float(np.nanmean(acc))
        out["acceptance_per_segment"] = [
            None if not np.isfinite(a) else round(float(a), 3) for a in acc
        ]
    else:
        out["acceptance"] = None
    if hasattr(info, "step_size"):
        out["config"]["step_size"] = _summary(np.nanmedian(info.step_size, axis=1))
    if noise_floor:
        out["noise_floor"] = metrics.noise_floors(
            reference, sample_mixture(key_ref2, mix, num_samples), **kwargs
        )
    return out


def format_table(rows: list[dict], columns=None) -> str:
    """Markdown table of benchmark rows."""
    columns = columns or [
        ("method", "method"),
        ("nfe", "NFE"),
        ("marginal_accuracy", "marg. acc."),
        ("mode_tv", "mode TV"),
        ("var_bias", "var_bias"),
        ("var_rel_err", "var_rel_err"),
        ("sliced_w2", "sliced W2"),
        ("mmd", "MMD²"),
        ("acceptance", "accept."),
        ("wall_s", "wall s"),
    ]
    head = "| " + " | ".join(title for _, title in columns) + " |"
    sep = "|" + "|".join("---" for _ in columns) + "|"
    lines = [head, sep]
    for row in rows:
        cells = []
        for key, _ in columns:
            value = row.get(key)
            if value is None:
                cells.append("–")
            elif isinstance(value, float):
                cells.append(f"{value:.4g}" if abs(value) >= 1e-3 else f"{value:.2e}")
            else:
                cells.append(str(value))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _floor_row(floor: dict) -> dict:
    return {"method": "*exact (noise floor)*", "nfe": "–", **floor}


def sweep(
    *,
    target: str = "chessboard",
    dim: int = 10,
    methods=METHODS,
    nfes=SWEEP_NFE,
    num_samples: int = 5000,
    seed: int = 0,
    plot_path: str | None = None,
    jsonl_path: str | None = None,
    log=print,
) -> tuple[str, list[dict]]:
    """Methods x NFE table (Markdown) and a quality-vs-NFE plot."""
    rows = []
    floor = None
    problem = dict(target=target, dim=dim, num_samples=num_samples, seed=seed)
    for method in methods:
        for nfe in nfes:
            row = run_bench(
                **problem, method=method, nfe=nfe, noise_floor=floor is None
            )
            if jsonl_path:
                with open(jsonl_path, "a") as fh:
                    fh.write(json.dumps(row) + "\n")
            floor = floor or row.pop("noise_floor", None)
            row.pop("noise_floor", None)
            rows.append(row)
            log(
                f"{method:>10s} nfe={row['nfe']:4d} MA={row['marginal_accuracy']:.4f} "
                f"modeTV={row['mode_tv']:.4f} var_bias={row['var_bias']:+.4f} "
                f"({row['wall_s']:.1f}s)"
            )
    table = format_table(rows + ([_floor_row(floor)] if floor else []))
    if plot_path:
        plot_sweep(rows, floor, plot_path, title=f"{target}, d={dim}, n={num_samples}")
    return table, rows


def plot_sweep(rows: list[dict], floor: dict | None, path: str, title: str = ""):
    """Quality-vs-NFE panels: marginal accuracy, mode TV, |var_bias|, sliced W2."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = [
        ("marginal_accuracy", "marginal accuracy ↑", False),
        ("mode_tv", "mode-weight TV ↓", True),
        ("var_bias", "|var_bias| ↓", True),
        ("sliced_w2", "sliced W2 ↓", True),
    ]
    fig, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), 3.6))
    methods = list(dict.fromkeys(r["method"] for r in rows))
    for ax, (key, label, log_scale) in zip(axes, panels):
        for method in methods:
            pts = sorted((r["nfe"], r[key]) for r in rows if r["method"] == method)
            xs = [p[0] for p in pts]
            ys = [abs(p[1]) if key == "var_bias" else p[1] for p in pts]
            ax.plot(xs, ys, marker="o", label=method)
        if floor is not None and floor.get(key) is not None:
            value = abs(floor[key]) if key == "var_bias" else floor[key]
            ax.axhline(value, color="grey", ls="--", lw=1, label="noise floor")
        ax.set_xscale("log")
        if log_scale:
            ax.set_yscale("log")
        ax.set_xlabel("NFE per sample")
        ax.set_title(label)
    axes[0].legend(fontsize=8)
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def tune(
    *,
    target: str = "chessboard",
    dim: int = 100,
    methods=METHODS,
    nfes=SWEEP_NFE,
    t_mins=(1e-3, 3e-4, 1e-4, 3e-5, 1e-5, 1e-6),
    inner_steps=(1, 2, 3),
    num_samples: int = 5000,
    seed: int = 0,
    log=print,
) -> tuple[str, list[dict]]:
    """Grid search behind the NFE-budget policy: ``t_min`` (and inner steps for RTK).

    For every (method, NFE) it runs every candidate and marks the one with the
    smallest ``|var_bias| + mode_tv`` (both near their noise floors when a method is
    good; marginal accuracy is too coarse to choose by). The tables in this module
    were set from its output; see docs/benchmarks.md.
    """
    rows = []
    problem = dict(target=target, dim=dim, num_samples=num_samples, seed=seed)
    for method in methods:
        steps_options = inner_steps if method in RTK_METHODS else (None,)
        for nfe in nfes:
            candidates = []
            for t_min in t_mins:
                for steps in steps_options:
                    try:
                        row = run_bench(
                            **problem,
                            method=method,
                            nfe=nfe,
                            t_min=t_min,
                            inner_steps=steps,
                            noise_floor=False,
                        )
                    except ValueError as err:  # e.g. budget too small for the steps
                        log(
                            f"skip {method} nfe={nfe} t_min={t_min} steps={steps}: {err}"
                        )
                        continue
                    row["t_min"] = t_min
                    row["steps"] = row["config"]["inner_steps"]
                    row["segments"] = row["config"]["segments"]
                    row["score"] = abs(row["var_bias"]) + row["mode_tv"]
                    candidates.append(row)
                    log(
                        f"{method} nfe={row['nfe']} t_min={t_min:g} steps={steps} "
                        f"var_bias={row['var_bias']:+.4f} mode_tv={row['mode_tv']:.4f}"
                    )
            if candidates:
                best = min(candidates, key=lambda r: r["score"])
                for row in candidates:
                    row["best"] = "**best**" if row is best else ""
                rows.extend(candidates)
    columns = [
        ("method", "method"),
        ("nfe", "NFE"),
        ("t_min", "t_min"),
        ("segments", "K"),
        ("steps", "inner"),
        ("var_bias", "var_bias"),
        ("mode_tv", "mode TV"),
        ("marginal_accuracy", "marg. acc."),
        ("best", ""),
    ]
    return format_table(rows, columns), rows


def report(jsonl_paths, *, plot_path: str | None = None, title: str = "") -> str:
    """Markdown table (and optional plot) from rows saved by :func:`sweep`.

    Rows carrying a ``noise_floor`` contribute the floor row.
    """
    rows = []
    for path in jsonl_paths:
        with open(path) as fh:
            rows.extend(json.loads(line) for line in fh if line.strip())
    floor = next((r["noise_floor"] for r in rows if r.get("noise_floor")), None)
    order = {m: i for i, m in enumerate(METHODS)}
    rows.sort(key=lambda r: (order.get(r["method"], 99), r["nfe"]))
    if plot_path:
        plot_sweep(rows, floor, plot_path, title=title)
    return format_table(rows + ([_floor_row(floor)] if floor else []))
