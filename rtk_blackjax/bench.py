"""Benchmarks: every method on the same exact targets, several metrics, honest NFE.

``python -m rtk_blackjax bench ...`` (see ``__main__``) is a thin shell around
:func:`configure` (NFE budget -> sampler and its configuration), :func:`run_bench`
(sample, time, score against exact reference samples) and :func:`sweep`
(methods x NFE table and plot).
"""

import json
import math
import time
from typing import Any, NamedTuple

import jax
import numpy as np

from rtk_blackjax import metrics
from rtk_blackjax.baselines import ddim, ddpm
from rtk_blackjax.diffusion import (
    GRID_KINDS,
    geometric_grid,
    theory_segment_length,
    uniform_grid,
)
from rtk_blackjax.driver import sample
from rtk_blackjax.mcmc import rtk as rtk_module
from rtk_blackjax.mcmc.inner import mala_inner
from rtk_blackjax.targets import (
    Target,
    chessboard,
    mixture_variance,
    random_mog,
    sample_mixture,
)

__all__ = [
    "METHODS",
    "TARGETS",
    "BenchConfig",
    "make_target",
    "configure",
    "run_bench",
    "sweep",
    "format_table",
]

METHODS = ("rtk-mala", "ddpm", "ddim")
TARGETS = ("chessboard", "mog")
SWEEP_NFE = (25, 105, 505)
DEFAULT_HORIZON = 5.0


class BenchConfig(NamedTuple):
    """A sampler and the configuration it was built from (reported in the JSON)."""

    algorithm: Any
    config: dict


def make_target(name: str, dim: int, *, components: int = 8, seed: int = 0) -> Target:
    """The benchmark targets: ``chessboard`` (the RTK authors') or a random ``mog``."""
    if name == "chessboard":
        return chessboard(dim)
    if name == "mog":
        return random_mog(seed, dim, components)
    raise ValueError(f"target must be one of {TARGETS}, got {name!r}")


# --- NFE-budget policy -------------------------------------------------------------
#
# DDPM: geometric grid, horizon 5, final Tweedie denoise, t_min by budget. Measured
# on chessboard (d=10 and d=100, 5000 samples, 3 reference sets) with
# /tmp-free sweeps recorded in docs/benchmarks.md ("Tuning the baselines"): t_min
# 1e-3 is best at 25 NFE (MA 0.986, var_bias -0.03), 3e-4 at 105 and 1e-4 at 505.
_DDPM_T_MIN = ((25, 1e-3), (105, 3e-4), (10**9, 1e-4))
# DDIM (deterministic, final denoise): t_min small so the denoise does not shrink
# the variance by ~s_{t_min}^2 / var.
_DDIM_T_MIN = ((25, 1e-3), (105, 3e-4), (10**9, 1e-4))
# RTK-MALA: geometric grid, Gaussian predictor, one MALA step per segment
# (NFE = 1 + K (2 + n)): at 105 NFE, K = 34, n = 1 gave MA 0.988, mode TV 0.007,
# var_bias +0.006 at d = 10 against K = 26, n = 2 (0.986 / 0.009 / -0.005) and
# K = 20, n = 3 (0.984 / 0.016 / +0.004).
_RTK_T_MIN = ((25, 1e-3), (105, 1e-3), (10**9, 3e-4))
_RTK_INNER_STEPS = 1


def _by_budget(table, nfe: int):
    for limit, value in table:
        if nfe <= limit:
            return value
    return table[-1][1]


def _grid(kind: str, num_segments: int, t_min: float, horizon: float, target_l):
    if kind == "uniform":
        return uniform_grid(num_segments, horizon)
    if kind == "geometric":
        return geometric_grid(num_segments, horizon, t_min)
    if kind == "theory":
        eta = theory_segment_length(target_l)
        return uniform_grid(max(1, math.ceil(horizon / eta)), horizon)
    raise ValueError(f"grid must be one of {GRID_KINDS}, got {kind!r}")


def _curvature_bound(target: Target) -> float:
    """L = sup_t ||Hess(-log p_t)|| bound for a mixture: 1 / smallest eigenvalue."""
    if target.mixture is None:
        raise ValueError("grid='theory' needs a target with a known curvature bound")
    return float(1.0 / np.min(np.asarray(target.mixture.cov_eigvals)))


def configure(
    method: str,
    target: Target,
    *,
    nfe: int | None = None,
    segments: int | None = None,
    inner_steps: int | list[int] | None = None,
    grid: str | None = None,
    t_min: float | None = None,
    horizon: float | None = None,
    step_scale: float = 1.0,
) -> BenchConfig:
    """Pick a configuration for ``method`` within a per-sample NFE budget ``nfe``.

    Explicit ``segments`` / ``inner_steps`` / ``grid`` / ``t_min`` override the
    policy; the resulting NFE must still fit ``nfe`` when both are given.
    """
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    if nfe is None and segments is None:
        raise ValueError("give an NFE budget (nfe) or the number of segments")
    if nfe is not None and (isinstance(nfe, bool) or int(nfe) != nfe or nfe < 1):
        raise ValueError(f"nfe must be a positive integer, got {nfe!r}")
    grid = grid or "geometric"
    if grid not in GRID_KINDS:
        raise ValueError(f"grid must be one of {GRID_KINDS}, got {grid!r}")
    horizon = DEFAULT_HORIZON if horizon is None else float(horizon)
    target_l = _curvature_bound(target) if grid == "theory" else None
    budget = nfe if nfe is not None else 10**9

    if method in ("ddpm", "ddim"):
        if inner_steps not in (None, 0):
            raise ValueError(f"inner_steps does not apply to {method}")
        num_segments = segments if segments is not None else int(nfe)
        table = _DDPM_T_MIN if method == "ddpm" else _DDIM_T_MIN
        t_min = t_min if t_min is not None else _by_budget(table, budget)
        times = _grid(grid, num_segments, t_min, horizon, target_l)
        num_segments = int(times.shape[0]) - 1
        if num_segments > budget:
            raise ValueError(
                f"nfe={nfe} is too small for {method} on this grid: it needs "
                f"{num_segments} score evaluations (one per segment)"
            )
        builder = ddpm if method == "ddpm" else ddim
        config = {
            "segments": num_segments,
            "inner_steps": 0,
            "grid": grid,
            "t_min": t_min if grid == "geometric" else None,
            "horizon": horizon,
            "final_denoise": True,
            "expected_nfe": num_segments,
        }
        return BenchConfig(builder(target, times), config)

    # rtk-mala: NFE = 1 + sum_k (2 + n_k)
    per_segment_fixed = 2
    if inner_steps is None:
        inner_steps = _RTK_INNER_STEPS
    steps_list = None if np.ndim(inner_steps) == 0 else [int(s) for s in inner_steps]
    if segments is None:
        if grid == "theory":
            segments = len(_grid(grid, 1, 1.0, horizon, target_l)) - 1
        elif steps_list is not None:
            segments = len(steps_list)
        else:
            segments = (int(nfe) - 1) // (per_segment_fixed + int(inner_steps))
        if segments < 1:
            raise ValueError(
                f"nfe={nfe} is too small for rtk-mala: one segment with "
                f"{inner_steps} inner steps needs {1 + per_segment_fixed + inner_steps}"
            )
    t_min = t_min if t_min is not None else _by_budget(_RTK_T_MIN, budget)
    times = _grid(grid, segments, t_min, horizon, target_l)
    num_segments = int(times.shape[0]) - 1
    schedule = (
        np.asarray(steps_list)
        if steps_list is not None
        else np.full(num_segments, int(inner_steps))
    )
    if schedule.shape[0] != num_segments:
        raise ValueError(
            f"inner_steps has {schedule.shape[0]} entries but the grid has "
            f"{num_segments} segments"
        )
    expected = 1 + int(np.sum(per_segment_fixed + schedule))
    if expected > budget:
        raise ValueError(
            f"nfe={nfe} is too small for rtk-mala with {num_segments} segments and "
            f"inner_steps={schedule.tolist()}: that needs {expected} evaluations "
            f"(1 + segments x (2 + inner steps))"
        )
    algorithm = rtk_module.as_top_level_api(
        target, times, mala_inner(step_scale), schedule, predictor="gaussian"
    )
    config = {
        "segments": num_segments,
        "inner_steps": int(schedule[0])
        if np.all(schedule == schedule[0])
        else schedule.tolist(),
        "grid": grid,
        "t_min": t_min if grid == "geometric" else None,
        "horizon": horizon,
        "predictor": "gaussian",
        "inner_kernel": "blackjax.mala",
        "step_size_rule": f"{step_scale} * d^(-1/3) * v_q (v_q: Gaussian approx. of q_k)",
        "expected_nfe": expected,
    }
    return BenchConfig(algorithm, config)


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
) -> dict:
    """Run one benchmark and return the JSON-ready result dictionary."""
    tgt = make_target(target, dim, components=components, seed=seed)
    bench = configure(
        method,
        tgt,
        nfe=nfe,
        segments=segments,
        inner_steps=inner_steps,
        grid=grid,
        t_min=t_min,
        horizon=horizon,
    )
    key_sampler, key_ref, key_ref2, key_metric = jax.random.split(
        jax.random.key(seed), 4
    )
    start = time.perf_counter()
    result = sample(key_sampler, bench.algorithm, num_samples, dim=dim)
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
    if hasattr(info, "acceptance_rate"):
        acc = result.acceptance_per_segment()
        out["acceptance"] = float(np.nanmean(acc)) if np.isfinite(acc).any() else None
        out["acceptance_per_segment"] = [
            None if not np.isfinite(a) else round(float(a), 3) for a in acc
        ]
        out["config"]["step_size"] = _summary(np.nanmedian(info.step_size, axis=1))
    else:
        out["acceptance"] = None
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
    for method in methods:
        for nfe in nfes:
            row = run_bench(
                target=target,
                dim=dim,
                method=method,
                nfe=nfe,
                num_samples=num_samples,
                seed=seed,
                noise_floor=floor is None,
            )
            floor = floor or row.pop("noise_floor", None)
            row.pop("noise_floor", None)
            rows.append(row)
            if jsonl_path:
                with open(jsonl_path, "a") as fh:
                    fh.write(json.dumps(row) + "\n")
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
