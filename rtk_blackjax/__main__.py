"""Command line: ``python -m rtk_blackjax {demo,bench,bench-posterior} ...``.

``demo``   RTK-MALA vs DDPM on the 10-D chessboard: a table and a PNG; then a
           posterior with a score-only prior and a nonlinear likelihood, our
           twisted SMC vs TDS and split Gibbs: a table and a PNG.
``bench``  one method on one target (``--json`` for one JSON object), or
           ``--sweep``: methods x NFE {25, 105, 505}, Markdown table and PNG;
           ``--overhead``: sampler time vs the bare cost of its score calls.
``bench-posterior``  the exact 25-mode GMM posterior benchmark (split Gibbs, SMC,
           DPS, NUTS), see :mod:`rtk_blackjax.benchmarks.posterior`.

The benchmark code lives in :mod:`rtk_blackjax.benchmarks`; it is imported only when
a subcommand needs it (the library itself never imports it).
"""

import argparse
import json
import sys


def _int_list(text: str):
    parts = [p for p in text.replace(",", " ").split() if p]
    values = [int(p) for p in parts]
    return values[0] if len(values) == 1 else values


def _add_demo_arguments(demo: argparse.ArgumentParser) -> None:
    demo.add_argument("--dim", type=int, default=10)
    demo.add_argument("--nfe", type=int, default=105)
    demo.add_argument("--num-samples", type=int, default=5000)
    demo.add_argument("--seed", type=int, default=0)
    demo.add_argument("--out", default="rtk_demo.png", help="PNG path")
    demo.add_argument(
        "--posterior",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="then the posterior demo: a ring prior with score access only, a "
        "nonlinear likelihood with an unknown noise scale, ours vs the peers",
    )
    demo.add_argument(
        "--posterior-samples", type=int, default=1000, help="posterior draws"
    )
    demo.add_argument("--posterior-out", default="rtk_posterior_demo.png")


def _add_bench_arguments(bench: argparse.ArgumentParser) -> None:
    from rtk_blackjax.benchmarks.sampling import BENCH_GRIDS, TARGETS
    from rtk_blackjax.policy import METHODS

    bench.add_argument("--target", choices=TARGETS, default="chessboard")
    bench.add_argument("--dim", type=int, default=10)
    bench.add_argument("--components", type=int, default=8, help="mog components")
    bench.add_argument("--seed", type=int, default=0)
    bench.add_argument("--method", choices=METHODS, default="rtk-mala")
    bench.add_argument("--nfe", type=int, default=None, help="per-sample NFE budget")
    bench.add_argument("--num-samples", type=int, default=5000)
    bench.add_argument("--segments", type=int, default=None)
    bench.add_argument(
        "--inner-steps",
        type=_int_list,
        default=None,
        help="inner steps per segment: one int, or a comma-separated list",
    )
    bench.add_argument(
        "--grid",
        choices=BENCH_GRIDS,
        default=None,
        help="grid kind ('calibrated': the policy's, fitted to the target's score)",
    )
    bench.add_argument("--t-min", type=float, default=None)
    bench.add_argument("--horizon", type=float, default=None)
    bench.add_argument("--json", action="store_true", help="print one JSON object")
    bench.add_argument(
        "--sweep", action="store_true", help="all methods x NFE {25, 105, 505}"
    )
    bench.add_argument(
        "--tune",
        action="store_true",
        help="grid search of t_min (and inner steps) behind the NFE policy",
    )
    bench.add_argument(
        "--nfes", default=None, help="comma list of NFE for --sweep/--tune"
    )
    bench.add_argument("--methods", default=None, help="comma list for --sweep/--tune")
    bench.add_argument("--plot", default=None, help="PNG path for --sweep/--report")
    bench.add_argument("--title", default=None, help="plot title for --report")
    bench.add_argument("--jsonl", default=None, help="append sweep rows to this file")
    bench.add_argument(
        "--report",
        nargs="+",
        default=None,
        help="print the table (and --plot) of rows saved with --jsonl",
    )
    bench.add_argument(
        "--overhead",
        action="store_true",
        help="time --methods (default rtk-mala,rtk-uld,ddpm) against the bare cost "
        "of their score evaluations (random_mog target; --dim 100 and "
        "--num-samples 10000 give the documented table)",
    )
    bench.add_argument(
        "--repeats", type=int, default=5, help="timed runs per --overhead entry"
    )
    scale = bench.add_argument_group(
        "scale and reliability (passed to rtk_blackjax.sample)"
    )
    scale.add_argument(
        "--chunk-size",
        type=int,
        default=None,
        help="particles per device per compiled call (bounded memory, bit-identical "
        "samples whatever --num-samples or the device count)",
    )
    scale.add_argument(
        "--checkpoint-dir",
        default=None,
        help="save the sampler state after every --checkpoint-every segments; "
        "rerunning the same command resumes from it bit-identically",
    )
    scale.add_argument("--checkpoint-every", type=int, default=1)
    scale.add_argument(
        "--start-index",
        type=int,
        default=0,
        help="first particle index of the stream (split one run across hosts)",
    )
    scale.add_argument(
        "--no-info",
        action="store_true",
        help="do not keep per-segment info on the host (acceptance is kept)",
    )


def _add_posterior_arguments(parser: argparse.ArgumentParser) -> None:
    from rtk_blackjax.benchmarks.posterior import add_arguments

    add_arguments(parser)


# name: (help, function that adds the flags). The flags of a subcommand are added
# only when it is the one asked for (or for the top-level --help, which needs none),
# so that `demo` and `bench` do not import the posterior benchmark and nothing
# imports rtk_blackjax.benchmarks before a subcommand needs it.
_COMMANDS = {
    "demo": ("RTK-MALA vs DDPM on the chessboard target", _add_demo_arguments),
    "bench": ("benchmark one method, or sweep them all", _add_bench_arguments),
    "bench-posterior": (
        "exact 25-mode GMM posterior benchmark",
        _add_posterior_arguments,
    ),
}


def _build_parser(commands=None) -> argparse.ArgumentParser:
    """The CLI parser, with the flags of the subcommands ``commands`` (all if ``None``)."""
    parser = argparse.ArgumentParser(prog="python -m rtk_blackjax")
    sub = parser.add_subparsers(dest="command", required=True)
    for name, (help_text, add_arguments) in _COMMANDS.items():
        subparser = sub.add_parser(name, help=help_text)
        if commands is None or name in commands:
            add_arguments(subparser)
    return parser


def _demo(args) -> int:
    import jax
    import numpy as np

    from rtk_blackjax import sample
    from rtk_blackjax.benchmarks.sampling import format_table, run_bench
    from rtk_blackjax.policy import configure
    from rtk_blackjax.targets import chessboard, sample_mixture

    rows = []
    for method in ("ddpm", "rtk-mala"):
        print(f"running {method} at {args.nfe} NFE ...", flush=True)
        rows.append(
            run_bench(
                dim=args.dim,
                method=method,
                nfe=args.nfe,
                num_samples=args.num_samples,
                seed=args.seed,
                noise_floor=method == "ddpm",
            )
        )
    floor = rows[0].pop("noise_floor")
    print()
    print(f"chessboard, d={args.dim}, {args.num_samples} samples, NFE <= {args.nfe}")
    print(format_table(rows + [{"method": "exact (noise floor)", **floor}]))

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    target = chessboard(args.dim)
    key = jax.random.key(args.seed)
    panels = [("exact", np.asarray(sample_mixture(key, target.mixture, 2000)))]
    for method in ("ddpm", "rtk-mala"):
        alg = configure(method, target, nfe=args.nfe).algorithm
        panels.append(
            (method, np.asarray(sample(key, alg, 2000, dim=args.dim).samples))
        )
    fig, axes = plt.subplots(1, 3, figsize=(12, 4), sharex=True, sharey=True)
    for ax, (name, x) in zip(axes, panels):
        ax.scatter(x[:, 0], x[:, 1], s=2, alpha=0.4)
        ax.set_title(name)
        ax.set_aspect("equal")
    fig.suptitle(f"chessboard d={args.dim}: first two coordinates, NFE {args.nfe}")
    fig.tight_layout()
    fig.savefig(args.out, dpi=110)
    plt.close(fig)
    print(f"\nwrote {args.out}")
    if args.posterior:
        _posterior_demo(args)
    return 0


def _posterior_demo(args) -> None:
    from rtk_blackjax.benchmarks import ring

    print(
        "\nposterior: 48-component ring prior with score access only, six "
        "observations y ~ Normal(x0 * x1, sigma), sigma ~ HalfNormal(1); four "
        "modes of weight 1/4 (grid reference); 100 prior NFE per sample",
        flush=True,
    )
    rows = []
    for method in ("smc", "tds", "split-gibbs"):
        print(f"running rb.posterior.sample(method={method!r}) ...", flush=True)
        rows.append(
            ring.run(
                method,
                "score",
                args.seed,
                args.posterior_samples,
                100,
                keep_samples=True,
            )
        )
    print(ring.format_rows(rows))
    ring.plot_ring(rows, args.posterior_out, seed=args.seed)
    print(f"\nwrote {args.posterior_out}")


def _bench(args) -> int:
    from rtk_blackjax.benchmarks.sampling import (
        METHODS,
        SWEEP_NFE,
        report,
        run_bench,
        sweep,
        tune,
    )

    methods = tuple(args.methods.split(",")) if args.methods else METHODS
    unknown = [m for m in methods if m not in METHODS]
    if unknown:
        raise ValueError(f"--methods: unknown {unknown}; choose from {METHODS}")
    nfes = tuple(int(n) for n in args.nfes.split(",")) if args.nfes else SWEEP_NFE
    log = lambda msg: print(msg, file=sys.stderr, flush=True)  # noqa: E731
    if args.report:
        print(report(args.report, plot_path=args.plot, title=args.title or ""))
        return 0
    if args.overhead:
        from rtk_blackjax.benchmarks.overhead import OVERHEAD_METHODS, overhead_table

        rows = overhead_table(
            args.dim,
            args.num_samples,
            args.repeats,
            methods=tuple(args.methods.split(","))
            if args.methods
            else OVERHEAD_METHODS,
            nfe=args.nfe or 105,
            seed=args.seed,
            chunk_size=args.chunk_size,
        )
        if args.json:
            print(json.dumps([row._asdict() for row in rows]))
        else:
            from rtk_blackjax.benchmarks.overhead import format_overhead_table

            print(format_overhead_table(rows))
        return 0
    grid_search = dict(
        target=args.target,
        dim=args.dim,
        methods=methods,
        nfes=nfes,
        num_samples=args.num_samples,
        seed=args.seed,
        log=log,
    )
    if args.tune:
        print(tune(**grid_search)[0])
        return 0
    if args.sweep:
        print(sweep(**grid_search, plot_path=args.plot, jsonl_path=args.jsonl)[0])
        return 0
    if args.nfe is None and args.segments is None:
        args.nfe = 105
    result = run_bench(
        target=args.target,
        dim=args.dim,
        method=args.method,
        nfe=args.nfe,
        num_samples=args.num_samples,
        seed=args.seed,
        components=args.components,
        segments=args.segments,
        inner_steps=args.inner_steps,
        grid=args.grid,
        t_min=args.t_min,
        horizon=args.horizon,
        sample_options=dict(
            chunk_size=args.chunk_size,
            checkpoint_dir=args.checkpoint_dir,
            checkpoint_every=args.checkpoint_every,
            start_index=args.start_index,
            return_info=not args.no_info,
        ),
    )
    if args.json:
        print(json.dumps(result))
    else:
        for key, value in result.items():
            print(f"{key}: {value}")
    return 0


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    # the subcommand is the first argument (the top level has no other options)
    args = _build_parser(argv[:1]).parse_args(argv)
    try:
        if args.command == "demo":
            return _demo(args)
        if args.command == "bench-posterior":
            from rtk_blackjax.benchmarks.posterior import main_from_args

            return main_from_args(args)
        return _bench(args)
    except (ValueError, TypeError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
