"""Prior sampling over a target suite, with tuning and held-out seeds (issue 15).

The NFE policy (:mod:`rtk_blackjax.policy`) was tuned on the chessboard. This script
runs the same methods at the same NFE budgets on targets it was not tuned on and
says, per target and budget, whether the best RTK configuration is at least as good
as DDPM (and, at 505 NFE, as DPM-Solver++) within the noise floor.

Suite (:data:`SUITE`; targets from :func:`rtk_blackjax.benchmarks.sampling.make_target`)
------------------------------------------------------------------------------------------
``chessboard`` d = 10, 100
    The RTK authors' 8 isotropic modes; the policy's tuning target.
``mog`` d = 2, 10, 32, 100
    Random mixtures of 8 components with anisotropic full covariances and unequal
    weights (:func:`rtk_blackjax.targets.random_mixture`).
``multiscale`` d = 10
    The same recipe with component variances spread over three decades.
``grid25`` d = 10
    25 unit-variance modes on a grid of spacing 8: well separated, and at a scale
    about 20 times the others' (modes are decided at ``t`` near 2, not near 0.05).

Seeds: :data:`TUNE_SEEDS` may be used to tune a policy; :data:`HELD_OUT_SEEDS` are
reported separately and never tuned on. The chessboard and ``grid25`` have no random
recipe; their seed only changes the sampler's keys (they count as tuning cases).

Verdicts (:func:`verdicts`)
---------------------------
Every method runs as :func:`rtk_blackjax.policy.configure` configures it (its
policy's grid: log-SNR for DPM-Solver++, geometric for the others), or, with
``--grid K``, every method on grid kind ``K``, or with ``--rtk-grid K`` the RTK
methods on ``K`` (e.g. ``calibrated``: the policy's grid fitted to the target by
:func:`rtk_blackjax.posterior.calibrate_grid` from its score) and the baselines on
their policy grids; rows of every kind share ``--out`` and each verdict reads the
rows of its own setting.

For every (target, seed, NFE) the *best RTK configuration* is the RTK method with
the smallest ``mode_tv + |var_bias|``. It **matches DDPM** when its mode TV is at most
DDPM's plus the mode-TV noise floor, and its ``|var_bias|`` at most DDPM's plus the
variance noise floor. At 505 NFE it must also match DPM-Solver++ the same way. The
noise floors are the metrics of one set of exact draws against another of the same
size (``noise_floor`` of :func:`~rtk_blackjax.benchmarks.sampling.run_bench`); the
variance floor is at least ``sqrt(2 / (n d))``, the standard error of a variance
ratio averaged over ``d`` coordinates.

Usage
-----
``python benchmarks/prior_suite.py`` runs everything (about 40 minutes on 2 CPU cores)
and appends one JSON row per run to ``--out`` (default
``docs/data/prior_suite.jsonl``), skipping runs already there, then prints the
verdict table. ``--quick`` is the reduced mode (d <= 10, 25 and 105 NFE, 1000 draws,
a few minutes). ``--report`` only prints the table of the rows in ``--out``. The policy's
DPM-Solver++ grid was chosen from ``--grid logsnr --nfe 25,105`` against the
geometric rows (``rtk_blackjax/policy.py``).
"""

import argparse
import functools
import json
import math
import sys
from pathlib import Path
from typing import NamedTuple

from rtk_blackjax.benchmarks.sampling import BENCH_GRIDS, run_bench
from rtk_blackjax.policy import configure
from rtk_blackjax.targets import chessboard

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_OUT = ROOT / "docs" / "data" / "prior_suite.jsonl"

RTK = ("rtk-mala", "rtk-uld")
BASELINES = ("ddpm", "dpm-solver++")
METHODS = RTK + BASELINES
NFES = (25, 105, 505)
TUNE_SEEDS = (0,)
HELD_OUT_SEEDS = (1, 2)


class Case(NamedTuple):
    target: str
    dim: int
    seed: int
    held_out: bool


def _cases(target: str, dims, seeded: bool) -> list[Case]:
    if not seeded:
        return [Case(target, d, 0, False) for d in dims]
    return [Case(target, d, s, False) for d in dims for s in TUNE_SEEDS] + [
        Case(target, d, s, True) for d in dims for s in HELD_OUT_SEEDS
    ]


SUITE = (
    _cases("chessboard", (10, 100), seeded=False)
    + _cases("mog", (2, 10, 32, 100), seeded=True)
    + _cases("multiscale", (10,), seeded=True)
    + _cases("grid25", (10,), seeded=False)
)


def _key(row: dict) -> tuple:
    return (
        row["target"],
        row["dim"],
        row["seed"],
        row["method"],
        row["nfe_budget"],
        row["config"]["grid"],
    )


def run_case(
    case: Case, method: str, nfe: int, num_samples: int, grid: str | None = None
) -> dict:
    """One benchmark run as a JSON row (``nfe_budget`` is the requested budget).

    ``grid`` overrides the policy's grid kind (``None``: the policy's).
    """
    row = run_bench(
        target=case.target,
        dim=case.dim,
        method=method,
        nfe=nfe,
        num_samples=num_samples,
        seed=case.seed,
        grid=grid,
    )
    row["nfe_budget"] = nfe
    row["held_out"] = case.held_out
    return row


def _variance_floor(row: dict) -> float:
    floor = abs(row["noise_floor"]["var_bias"])
    return max(floor, math.sqrt(2.0 / (row["num_samples"] * row["dim"])))


def _score(row: dict) -> float:
    return row["mode_tv"] + abs(row["var_bias"])


def _matches(rtk: dict, other: dict) -> tuple[bool, float, float]:
    """(match?, mode-TV excess, |var_bias| excess) of ``rtk`` over ``other``."""
    tv_excess = rtk["mode_tv"] - other["mode_tv"]
    vb_excess = abs(rtk["var_bias"]) - abs(other["var_bias"])
    ok = tv_excess <= rtk["noise_floor"]["mode_tv"] and vb_excess <= _variance_floor(
        rtk
    )
    return ok, tv_excess, vb_excess


@functools.cache
def policy_grid(method: str) -> str:
    """The grid kind :func:`rtk_blackjax.policy.configure` gives ``method``."""
    return configure(method, chessboard(2), nfe=105).config["grid"]


def _grid_of(method: str, grid: str | None, rtk_grid: str | None) -> str:
    """The grid kind ``method`` runs on: ``rtk_grid`` for the RTK methods where
    given, else ``grid``, else the policy's (:func:`policy_grid`)."""
    if rtk_grid and method in RTK:
        return rtk_grid
    return grid or policy_grid(method)


def verdicts(
    rows: list[dict], grid: str | None = None, rtk_grid: str | None = None
) -> list[dict]:
    """One verdict per (target, dim, seed, NFE budget).

    Each method's row is the one on its grid (:func:`_grid_of`); rows on other
    grids are ignored.
    """
    groups: dict[tuple, dict] = {}
    for row in rows:
        if row["config"]["grid"] != _grid_of(row["method"], grid, rtk_grid):
            continue
        group = (row["target"], row["dim"], row["seed"], row["nfe_budget"])
        groups.setdefault(group, {})[row["method"]] = row
    out = []
    for (target, dim, seed, nfe), by_method in sorted(groups.items()):
        rtk_rows = [by_method[m] for m in RTK if m in by_method]
        if not rtk_rows or "ddpm" not in by_method:
            continue
        best = min(rtk_rows, key=_score)
        ok_ddpm, tv_x, vb_x = _matches(best, by_method["ddpm"])
        verdict = {
            "target": target,
            "dim": dim,
            "seed": seed,
            "held_out": best["held_out"],
            "nfe": nfe,
            "grid": (grid or "policy") + (f", rtk {rtk_grid}" if rtk_grid else ""),
            "best_rtk": best["method"],
            "mode_tv": {m: r["mode_tv"] for m, r in by_method.items()},
            "var_bias": {m: r["var_bias"] for m, r in by_method.items()},
            "floor_mode_tv": best["noise_floor"]["mode_tv"],
            "floor_var": _variance_floor(best),
            "matches_ddpm": ok_ddpm,
            "excess_over_ddpm": (tv_x, vb_x),
        }
        if nfe >= 505 and "dpm-solver++" in by_method:
            ok, tv_x, vb_x = _matches(best, by_method["dpm-solver++"])
            verdict["matches_dpm_solver"] = ok
            verdict["excess_over_dpm_solver"] = (tv_x, vb_x)
        out.append(verdict)
    return out


def format_verdicts(items: list[dict]) -> str:
    """A Markdown table: mode TV and var_bias per method, the verdicts."""
    head = (
        "| target | d | seed | grid | NFE | mode TV: rtk-mala / rtk-uld / ddpm / dpm++ "
        "| var_bias: rtk-mala / rtk-uld / ddpm / dpm++ | floor (TV / var) "
        "| best RTK vs DDPM | vs DPM-Solver++ (505) |"
    )
    lines = [head, "|" + "---|" * 10]
    for v in items:
        tv = " / ".join(_fmt(v["mode_tv"].get(m), "{:.3f}") for m in METHODS)
        vb = " / ".join(_fmt(v["var_bias"].get(m), "{:+.3f}") for m in METHODS)
        seed = f"{v['seed']}{' (held out)' if v['held_out'] else ''}"
        vs_ddpm = _verdict_cell(v["best_rtk"], v["matches_ddpm"], v["excess_over_ddpm"])
        vs_dpm = (
            _verdict_cell(
                v["best_rtk"], v["matches_dpm_solver"], v["excess_over_dpm_solver"]
            )
            if "matches_dpm_solver" in v
            else ""
        )
        lines.append(
            f"| {v['target']} | {v['dim']} | {seed} | {v['grid']} | {v['nfe']} "
            f"| {tv} | {vb} "
            f"| {v['floor_mode_tv']:.3f} / {v['floor_var']:.3f} | {vs_ddpm} | {vs_dpm} |"
        )
    return "\n".join(lines)


def _fmt(value, spec: str) -> str:
    return "–" if value is None else spec.format(value)


def _verdict_cell(best: str, ok: bool, excess) -> str:
    if ok:
        return f"match ({best})"
    tv_x, vb_x = excess
    return f"**miss** ({best}: TV {tv_x:+.3f}, abs var_bias {vb_x:+.3f})"


def summary(items: list[dict]) -> dict:
    """Counts of matches, split by grid, tuning / held-out cases and NFE."""
    out = {}
    for grid in sorted({v["grid"] for v in items}):
        for held_out in (False, True):
            for nfe in sorted({v["nfe"] for v in items}):
                _count_into(out, items, grid, held_out, nfe)
    return out


def _count_into(out: dict, items: list[dict], grid: str, held_out: bool, nfe: int):
    chosen = [
        v
        for v in items
        if v["grid"] == grid and v["held_out"] == held_out and v["nfe"] == nfe
    ]
    if chosen:
        key = f"{grid}/{'held_out' if held_out else 'tuning'}@{nfe}"
        out[key] = {
            "cases": len(chosen),
            "matches_ddpm": sum(v["matches_ddpm"] for v in chosen),
        }
        if nfe >= 505:
            out[key]["matches_dpm_solver"] = sum(
                v.get("matches_dpm_solver", False) for v in chosen
            )


def read_rows(path: Path) -> list[dict]:
    if not path.exists():
        return []
    with path.open() as f:
        return [json.loads(line) for line in f if line.strip()]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    parser.add_argument("--num-samples", type=int, default=5000)
    parser.add_argument("--quick", action="store_true", help="reduced mode")
    parser.add_argument("--report", action="store_true", help="only print the table")
    parser.add_argument(
        "--grid",
        choices=BENCH_GRIDS,
        default=None,
        help="grid kind for every method (default: the policy's)",
    )
    parser.add_argument(
        "--rtk-grid",
        choices=BENCH_GRIDS,
        default=None,
        help="grid kind for the RTK methods only (the baselines keep --grid's)",
    )
    parser.add_argument(
        "--nfe", default=None, help="comma-separated NFE budgets (default 25,105,505)"
    )
    parser.add_argument(
        "--targets", default=None, help="comma-separated subset of the suite's targets"
    )
    args = parser.parse_args(argv)
    if args.num_samples < 100:
        parser.error(f"--num-samples must be at least 100, got {args.num_samples}")
    cases, nfes, num_samples = SUITE, NFES, args.num_samples
    if args.quick:
        cases = [c for c in SUITE if c.dim <= 10]
        nfes, num_samples = (25, 105), min(num_samples, 1000)
    if args.targets:
        wanted = set(args.targets.split(","))
        unknown = wanted - {c.target for c in SUITE}
        if unknown:
            parser.error(f"--targets: unknown {sorted(unknown)}")
        cases = [c for c in cases if c.target in wanted]

    if args.nfe:
        nfes = tuple(int(n) for n in args.nfe.split(","))
    rows = read_rows(args.out)
    if not args.report:
        done = {_key(r) for r in rows if r["num_samples"] == num_samples}
        args.out.parent.mkdir(parents=True, exist_ok=True)
        for case in cases:
            for nfe in nfes:
                for method in METHODS:
                    grid = _grid_of(method, args.grid, args.rtk_grid)
                    key = (case.target, case.dim, case.seed, method, nfe, grid)
                    if key in done:
                        continue
                    override = (
                        args.rtk_grid if method in RTK and args.rtk_grid else None
                    )
                    row = run_case(
                        case, method, nfe, num_samples, override or args.grid
                    )
                    rows.append(row)
                    with args.out.open("a") as f:
                        f.write(json.dumps(row) + "\n")
                    print(
                        f"{case.target} d={case.dim} seed={case.seed} {method} "
                        f"@{nfe}: mode_tv {row['mode_tv']:.3f} "
                        f"var_bias {row['var_bias']:+.4f} ({row['wall_s']:.1f} s)",
                        file=sys.stderr,
                        flush=True,
                    )
    selected = {(c.target, c.dim, c.seed) for c in cases}
    rows = [
        r
        for r in rows
        if (r["target"], r["dim"], r["seed"]) in selected
        and r["num_samples"] == num_samples
    ]
    items = verdicts(rows, args.grid, args.rtk_grid)
    print(format_verdicts(items))
    print(json.dumps(summary(items), indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
