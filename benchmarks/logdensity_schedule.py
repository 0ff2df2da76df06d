"""The adapted schedule against the fixed one on the log-density suite's targets.

``sample_model`` cuts its final run's per-segment i-SIR candidates and MALA steps
from the pilot's measurements (``adapted_schedule``) unless told otherwise. This
script runs the RTK row of ``benchmarks/logdensity_suite.py`` for each target
twice, with the adapted schedule (the default) and with ``adapt_schedule=False``
(``model_schedule``'s fixed 32 candidates and 16 MALA steps per segment), same
key, and prints one JSON line per run: evaluations per draw (pilot and checks
included), the suite's accuracy metrics and its warnings::

    python benchmarks/logdensity_schedule.py                       # 5 targets, ~25 min on 2 cores
    python benchmarks/logdensity_schedule.py --targets eight_schools --modes adapted

Rows: docs/logdensity_scale.md, "Cost".
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import jax

sys.path.insert(0, str(Path(__file__).resolve().parent))
import logdensity_suite as suite  # noqa: E402

MODES = {"adapted": True, "fixed": False}
KEPT = (
    "target",
    "evaluations_per_draw",
    "nfe_per_sample",
    "pilot_evaluations",
    "mean_err_sd",
    "sd_ratio_min",
    "sd_ratio_max",
    "eig_sd_ratio",
    "mode_weight_error",
    "ok",
    "seconds",
)


def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--targets", default="eight_schools,banana2,label_switching,gmm40,illcond100"
    )
    parser.add_argument("--modes", default="adapted,fixed")
    parser.add_argument("--num-samples", type=int, default=4000)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    rows = []
    for name in args.targets.split(","):
        if name not in suite.TARGETS:
            parser.error(
                f"unknown target {name!r}; choose from {', '.join(suite.TARGETS)}"
            )
        target = suite.TARGETS[name]()
        for mode in args.modes.split(","):
            if mode not in MODES:
                parser.error(f"unknown mode {mode!r}; choose from {', '.join(MODES)}")
            cfg = suite.Config(
                num_samples=args.num_samples,
                seed=args.seed,
                reference_draws=5000,
                reference_warmup=1000,
                rtk_kwargs={"adapt_schedule": MODES[mode]},
            )
            truth = target.truth(cfg)
            row = suite.run_row(target, truth, "rtk", jax.random.key(args.seed), cfg)
            out = {k: row.get(k) for k in KEPT}
            out["mode"] = mode
            out["warnings"] = [w["category"] for w in row["warnings"]]
            print(json.dumps(out, default=float), flush=True)
            rows.append(out)
    return rows


if __name__ == "__main__":
    main()
