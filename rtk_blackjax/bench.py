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
from rtk_blackjax.baselines import (
    ddim,
    ddpm,
    dpm_solver_pp,
    heun_pf_ode,
    predictor_corrector,
)
from rtk_blackjax.diffusion import (
    GRID_KINDS,
    geometric_grid,
    theory_segment_length,
    uniform_grid,
)
from rtk_blackjax.driver import sample
from rtk_blackjax.mcmc import rtk as rtk_module
from rtk_blackjax.mcmc.inner import mala_inner, score_mala_inner, uld_inner
from rtk_blackjax.targets import (
    Target,
    chessboard,
    mixture_variance,
    random_mog,
    sample_mixture,
    score_only,
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

RTK_METHODS = ("rtk-mala", "rtk-mala-score", "rtk-uld", "rtk-uld-adjusted")
BASELINE_METHODS = ("ddpm", "ddim", "dpm-solver++", "pf-ode", "pc")
METHODS = RTK_METHODS + BASELINE_METHODS
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
# Every method uses a geometric grid with horizon 5 unless told otherwise; t_min and
# the inner steps are chosen per budget. The tables below were picked from the
# measurements in docs/benchmarks.md ("Tuning"): chessboard d = 10 and d = 100,
# 5000 samples, `python -m rtk_blackjax bench --method M --nfe N --t-min T --json`.
#
# Baselines (one table per method: (max NFE, t_min)), each the argmin of
# |var_bias| + mode TV over t_min in {1e-3, 3e-4, 1e-4, 3e-5, 1e-5, 1e-6} from
# `python -m rtk_blackjax bench --tune --dim 100` (docs/benchmarks.md, "Tuning").
# DDPM with its final denoise balances the upward bias of the stiff range against
# the denoise's downward one (var_bias -0.031 / +0.025 / +0.002 at 25 / 105 / 505).
# The ODE solvers end with a Tweedie denoise, which shrinks the variance by about
# s_{t_min}^2 / var, so they want t_min 1e-5 ... 1e-6 (DESIGN.md §1).
_BASELINE_T_MIN = {
    "ddpm": ((25, 1e-3), (105, 1e-4), (10**9, 3e-5)),
    "ddim": ((25, 3e-5), (105, 1e-5), (10**9, 1e-6)),
    "dpm-solver++": ((25, 3e-5), (105, 1e-5), (10**9, 1e-5)),
    "pf-ode": ((25, 3e-4), (105, 3e-5), (10**9, 1e-5)),
    "pc": ((25, 1e-3), (105, 3e-4), (10**9, 3e-5)),
}
# RTK methods: geometric grid, Gaussian predictor, as many segments as the budget
# allows for the chosen inner steps (NFE = 1 + K (fixed + n)). (max NFE, t_min, n)
# per method, each the argmin of |var_bias| + mode TV over t_min in {1e-3, 3e-4,
# 1e-4} x n in {1, 2, 3} from `bench.tune(dim=100, methods=RTK_METHODS, ...)`
# (docs/data/tune_rtk_d100.md). At 25 NFE every method prefers n = 1 (more
# segments); differences between the runner-up settings at 105/505 NFE are within
# the mode-TV noise (~0.005).
_RTK_POLICY = {
    "rtk-mala": ((25, 1e-3, 1), (105, 3e-4, 1), (10**9, 3e-4, 2)),
    "rtk-mala-score": ((25, 1e-3, 1), (105, 1e-3, 1), (10**9, 1e-4, 3)),
    "rtk-uld": ((25, 1e-3, 1), (105, 1e-3, 1), (10**9, 1e-4, 1)),
    "rtk-uld-adjusted": ((25, 1e-3, 1), (105, 1e-3, 3), (10**9, 1e-4, 2)),
}
# Unadjusted ULD: h = 0.3 / sqrt(curvature). At d = 100, 103 NFE: step_scale 0.1 /
# 0.3 / 0.6 / 1.0 gave var_bias -0.0008 / +0.0001 / +0.014 / +0.079.
_ULD_STEP_SCALE = 0.3
# Score-only MALA: trapezoid (Gauss-Lobatto, 2 nodes) is free given the gradient and
# exact where q_k is near Gaussian; at d = 100 / 105 NFE it matched 3-node Lobatto
# (var_bias -0.002 vs +0.0004) with 26 instead of 17 segments.
_SCORE_RULE, _SCORE_NODES = "lobatto", 2


def _rtk_inner(method: str, step_scale: float):
    if method == "rtk-mala":
        return mala_inner(step_scale), "blackjax.mala"
    if method == "rtk-mala-score":
        inner = score_mala_inner(step_scale, rule=_SCORE_RULE, num_nodes=_SCORE_NODES)
        return inner, f"blackjax.mala + {_SCORE_RULE}-{_SCORE_NODES} energy"
    if method == "rtk-uld":
        return uld_inner(step_scale=_ULD_STEP_SCALE), "uld (unadjusted)"
    return uld_inner(adjusted=True), "uld (OBABO, adjusted)"


def _baseline(method: str, target: Target, times):
    if method == "ddpm":
        return ddpm(target, times)
    if method == "ddim":
        return ddim(target, times)
    if method == "dpm-solver++":
        return dpm_solver_pp(target, times)
    if method == "pf-ode":
        return heun_pf_ode(target, times)
    return predictor_corrector(target, times)


def _baseline_nfe(method: str, num_segments: int) -> int:
    """Score evaluations of a baseline on a grid (the segment to 0 costs one)."""
    if method in ("pf-ode", "pc"):
        return 2 * (num_segments - 1) + 1
    return num_segments


def _rtk_policy(method: str, nfe: int) -> tuple[float, int]:
    for limit, t_min, steps in _RTK_POLICY[method]:
        if nfe <= limit:
            return t_min, steps
    return _RTK_POLICY[method][-1][1:]


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
    if segments is not None and (int(segments) != segments or segments < 1):
        raise ValueError(f"segments must be a positive integer, got {segments!r}")
    grid = grid or "geometric"
    if grid not in GRID_KINDS:
        raise ValueError(f"grid must be one of {GRID_KINDS}, got {grid!r}")
    horizon = DEFAULT_HORIZON if horizon is None else float(horizon)
    target_l = _curvature_bound(target) if grid == "theory" else None
    budget = nfe if nfe is not None else 10**9

    if method not in RTK_METHODS:
        if inner_steps not in (None, 0):
            raise ValueError(f"inner_steps does not apply to {method}")
        if segments is None:
            # largest grid whose NFE fits the budget
            segments = (
                int(nfe) if method not in ("pf-ode", "pc") else (int(nfe) + 1) // 2
            )
        t_min = (
            t_min if t_min is not None else _by_budget(_BASELINE_T_MIN[method], budget)
        )
        times = _grid(grid, segments, t_min, horizon, target_l)
        num_segments = int(times.shape[0]) - 1
        expected = _baseline_nfe(method, num_segments)
        if expected > budget:
            raise ValueError(
                f"nfe={nfe} is too small for {method} on this grid: it needs "
                f"{expected} score evaluations"
            )
        config = {
            "segments": num_segments,
            "inner_steps": 0,
            "grid": grid,
            "t_min": t_min if grid == "geometric" else None,
            "horizon": horizon,
            "final_denoise": True,
            "expected_nfe": expected,
        }
        return BenchConfig(_baseline(method, target, times), config)

    inner, inner_name = _rtk_inner(method, step_scale)
    if method in ("rtk-mala-score", "rtk-uld"):
        target = score_only(target)  # honest: these must not touch the exact energy
    per_segment_fixed, per_step = rtk_module.segment_cost(inner)
    policy_t_min, policy_steps = _rtk_policy(method, budget)
    if inner_steps is None:
        inner_steps = policy_steps
    steps_list = None if np.ndim(inner_steps) == 0 else [int(s) for s in inner_steps]
    if segments is None:
        if grid == "theory":
            segments = len(_grid(grid, 1, 1.0, horizon, target_l)) - 1
        elif steps_list is not None:
            segments = len(steps_list)
        else:
            segments = (int(nfe) - 1) // (
                per_segment_fixed + per_step * int(inner_steps)
            )
        if segments < 1:
            raise ValueError(
                f"nfe={nfe} is too small for {method}: one segment with {inner_steps} "
                f"inner steps needs {1 + per_segment_fixed + per_step * inner_steps}"
            )
    t_min = t_min if t_min is not None else policy_t_min
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
    expected = rtk_module.expected_nfe(inner, schedule)
    if expected > budget:
        raise ValueError(
            f"nfe={nfe} is too small for {method} with {num_segments} segments and "
            f"inner_steps={schedule.tolist()}: that needs {expected} evaluations "
            f"(1 + segments x ({per_segment_fixed} + {per_step} x inner steps))"
        )
    algorithm = rtk_module.as_top_level_api(
        target, times, inner, schedule, predictor="gaussian"
    )
    uniform_steps = bool(np.all(schedule == schedule[0]))
    config = {
        "segments": num_segments,
        "inner_steps": int(schedule[0]) if uniform_steps else schedule.tolist(),
        "grid": grid,
        "t_min": t_min if grid == "geometric" else None,
        "horizon": horizon,
        "predictor": "gaussian",
        "inner_kernel": inner_name,
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
    sample_options: dict | None = None,
) -> dict:
    """Run one benchmark and return the JSON-ready result dictionary.

    ``sample_options`` are passed to :func:`rtk_blackjax.sample` (e.g.
    ``chunk_size``, ``checkpoint_dir``, ``checkpoint_every``, ``return_info``,
    ``start_index``); the metrics are the same whatever they are.
    """
    sample_options = dict(sample_options or {})
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
