"""NFE-budget policy: the sampler each method gets for a per-sample NFE budget.

:func:`configure` turns ``(method, target, nfe)`` into a ready sampler and the
configuration it was built from: the time grid (geometric to ``t_min`` by default,
log-SNR uniform for DPM-Solver++, uniform, or the theory grid), the number of
segments, the inner steps per segment and the inner kernel for the RTK methods (:data:`RTK_METHODS`), ``t_min`` and the
grid for the baselines (:data:`BASELINE_METHODS`). The tables behind it were set
from measurements (docs/benchmarks.md, "Tuning"). It is library code:
:class:`~rtk_blackjax.posterior.DiffusionPrior`'s default sampler is
``configure("rtk-mala", target, nfe=105)`` (``"rtk-mala-score"`` for a target without
a log density); the benchmarks (:mod:`rtk_blackjax.benchmarks`) use it too.
"""

from typing import Any, NamedTuple

import numpy as np

from rtk_blackjax._checks import check_choice, check_int, check_positive
from rtk_blackjax.baselines import (
    ddim,
    ddpm,
    dpm_solver_pp,
    heun_pf_ode,
    predictor_corrector,
)
from rtk_blackjax.diffusion import GRID_KINDS, make_grid, validate_grid
from rtk_blackjax.mcmc import rtk as rtk_module
from rtk_blackjax.mcmc.inner import mala_inner, score_mala_inner, uld_inner
from rtk_blackjax.targets import Target, score_only
from rtk_blackjax.types import ArrayLike

__all__ = [
    "RTK_METHODS",
    "BASELINE_METHODS",
    "METHODS",
    "DEFAULT_HORIZON",
    "BenchConfig",
    "configure",
]

RTK_METHODS = ("rtk-mala", "rtk-mala-score", "rtk-uld", "rtk-uld-adjusted")
BASELINE_METHODS = ("ddpm", "ddim", "dpm-solver++", "pf-ode", "pc")
METHODS = RTK_METHODS + BASELINE_METHODS
DEFAULT_HORIZON = 5.0


class BenchConfig(NamedTuple):
    """A sampler and the configuration it was built from.

    ``algorithm`` is what :func:`rtk_blackjax.sample` takes; ``config`` (segments,
    inner steps, grid, ``t_min``, horizon, expected NFE, ...) is what the benchmark
    JSON reports.
    """

    algorithm: Any
    config: dict


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
# s_{t_min}^2 / var, so they want t_min 1e-5 ... 1e-6.
_BASELINE_T_MIN = {
    "ddpm": ((25, 1e-3), (105, 1e-4), (10**9, 3e-5)),
    "ddim": ((25, 3e-5), (105, 1e-5), (10**9, 1e-6)),
    "dpm-solver++": ((25, 3e-5), (105, 1e-5), (10**9, 1e-5)),
    "pf-ode": ((25, 3e-4), (105, 3e-5), (10**9, 1e-5)),
    "pc": ((25, 1e-3), (105, 3e-4), (10**9, 3e-5)),
}
# Grid kind per baseline (default "geometric"). DPM-Solver++ takes the log-SNR
# grid its authors recommend: over the prior-sampling suite
# (`python benchmarks/prior_suite.py --grid logsnr --nfe 25,105` against the
# geometric rows, docs/data/prior_suite.jsonl) it lowered mode TV + |var_bias| in
# 14 of 18 cases at 25 NFE and at 105 NFE (median 0.036 -> 0.020 at 25; the 25-mode
# grid at spacing 8: mode TV 0.225 -> 0.037). DDPM and the RTK methods got worse
# with it (better in 3-10 of 18 cases), so they keep the geometric grid.
_BASELINE_GRID = {"dpm-solver++": "logsnr"}
# RTK methods: geometric grid, Gaussian predictor, as many segments as the budget
# allows for the chosen inner steps (NFE = 1 + K (fixed + n)). (max NFE, t_min, n)
# per method, each the argmin of |var_bias| + mode TV over t_min in {1e-3, 3e-4,
# 1e-4} x n in {1, 2, 3} from
# `rtk_blackjax.benchmarks.sampling.tune(dim=100, methods=RTK_METHODS, ...)`
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


def _curvature_bound(target: Target) -> float:
    """L = sup_t ||Hess(-log p_t)|| bound for a mixture: 1 / smallest eigenvalue."""
    if target.mixture is None:
        raise ValueError("grid='theory' needs a target with a known curvature bound")
    return float(1.0 / np.min(np.asarray(target.mixture.cov_eigvals)))


def _grid(kind: str, num_segments, t_min, horizon: float, target_l):
    """The time grid of a configuration (``"theory"`` ignores ``num_segments``)."""
    options = {} if t_min is None else {"t_min": t_min}
    return make_grid(
        kind, num_segments, horizon=horizon, smoothness=target_l, **options
    )


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
    times: ArrayLike | None = None,
) -> BenchConfig:
    """Pick a configuration for ``method`` within a per-sample NFE budget ``nfe``.

    Explicit ``segments`` / ``inner_steps`` / ``grid`` / ``t_min`` override the
    policy; the resulting NFE must still fit ``nfe`` when both are given.

    Parameters
    ----------
    method
        One of :data:`METHODS`: an RTK method (:data:`RTK_METHODS`: MALA on the exact
        energy, score-only MALA, unadjusted or adjusted ULD; the score-only ones see
        ``score_only(target)``) or a baseline (:data:`BASELINE_METHODS`).
    target
        The :class:`~rtk_blackjax.targets.Target` to sample.
    nfe
        Per-sample budget of score / energy evaluations; ``None`` needs ``segments``.
    segments, inner_steps, grid, t_min, horizon
        Overrides of the policy: number of segments, inner steps per segment (one
        int, or one per segment; RTK only), grid kind (``"geometric"`` by default,
        ``"logsnr"`` by default for DPM-Solver++, ``"uniform"`` or ``"theory"``),
        the geometric or log-SNR grid's ``t_min``, the horizon
        (:data:`DEFAULT_HORIZON`).
    step_scale
        Step-size scale of the MALA inner kernels.
    times
        An explicit grid (horizon first, ending at 0), e.g. one fitted to the
        target by :func:`rtk_blackjax.posterior.calibrate_grid`: it replaces
        ``grid``, ``segments``, ``t_min`` and ``horizon`` (``config["grid"]`` is
        ``"explicit"``); the NFE must still fit ``nfe``.

    Returns
    -------
    BenchConfig
        ``(algorithm, config)``; ``config["expected_nfe"]`` is the NFE per sample
        that ``rtk_blackjax.sample`` will report.

    Examples
    --------
    >>> from rtk_blackjax import targets
    >>> cfg = configure("rtk-mala", targets.chessboard(dim=2), nfe=105)
    >>> cfg.config["segments"], cfg.config["inner_steps"], cfg.config["expected_nfe"]
    (34, 1, 103)
    """
    method = check_choice("method", method, METHODS)
    if not isinstance(target, Target):
        raise TypeError(
            "target must be an rtk_blackjax Target (rtk_blackjax.targets.*), got "
            f"{type(target).__name__}"
        )
    if nfe is None and segments is None and times is None:
        raise ValueError("give an NFE budget (nfe), the number of segments or times")
    if nfe is not None:
        nfe = check_int("nfe", nfe, minimum=1)
    if segments is not None:
        segments = check_int("segments", segments, minimum=1)
    default_grid = _BASELINE_GRID.get(method, "geometric")
    grid = check_choice("grid", grid or default_grid, GRID_KINDS)
    horizon = DEFAULT_HORIZON if horizon is None else check_positive("horizon", horizon)
    if times is not None:
        times = validate_grid(times)
        segments, horizon, grid = int(times.shape[0]) - 1, float(times[0]), "explicit"
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
        if times is None:
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
            "t_min": t_min if grid in ("geometric", "logsnr") else None,
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
            segments = len(_grid(grid, None, None, horizon, target_l)) - 1
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
    if times is None:
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
        "t_min": t_min if grid in ("geometric", "logsnr") else None,
        "horizon": horizon,
        "predictor": "gaussian",
        "inner_kernel": inner_name,
        "expected_nfe": expected,
    }
    return BenchConfig(algorithm, config)
