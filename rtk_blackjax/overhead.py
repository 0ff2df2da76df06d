"""How much a sampler costs beyond its score evaluations.

A reverse-diffusion sampler with ``NFE`` score evaluations per sample can never be
cheaper than ``NFE`` batched score calls. :func:`overhead_table` times each method
through :func:`rtk_blackjax.sample` (jitted, warmed up, median of repeats) against
exactly that lower bound on the same batch, and reports the ratio. Where the ratio
comes from (Metropolis tests, random numbers, the secant, the driver) is discussed
in ``docs/reliability.md``.

``python -m rtk_blackjax.overhead`` prints the table.
"""

import argparse
import time
from collections.abc import Callable, Sequence
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from rtk_blackjax.bench import configure
from rtk_blackjax.run import sample
from rtk_blackjax.targets import Target, random_mog

__all__ = [
    "OverheadRow",
    "OVERHEAD_METHODS",
    "bare_score_loop",
    "median_time",
    "overhead_table",
    "format_overhead_table",
    "main",
]

OVERHEAD_METHODS = ("rtk-mala", "rtk-uld", "ddpm")
# Size of the step that makes each score call depend on the previous one, small
# enough that the points stay where the sampler's particles are.
_BARE_STEP = 1e-6


class OverheadRow(NamedTuple):
    """One method's timing: ``ratio = sampler_s / bare_s``."""

    method: str
    nfe: int
    bare_s: float
    sampler_s: float
    ratio: float


def bare_score_loop(target: Target, times: jax.Array, nfe: int) -> Callable:
    """A jitted ``x -> x'`` that makes ``nfe`` batched score calls and nothing else.

    Each call feeds the next (``x <- x + 1e-6 * score(x, t_k)``), so XLA can
    neither drop nor hoist any of them; ``t_k`` walks through the grid like the
    sampler does.
    """
    times = jnp.asarray(times)
    num_times = times.shape[0] - 1
    batched_score = jax.vmap(target.score, (0, None))

    def body(i, x):
        t = times[i % num_times]
        return x + _BARE_STEP * batched_score(x, t)

    return jax.jit(lambda x: jax.lax.fori_loop(0, nfe, body, x))


def median_time(fn: Callable[[], object], repeats: int) -> float:
    """Median wall time of ``fn()`` over ``repeats`` runs after one warm-up run.

    ``fn`` must return JAX arrays; they are waited for, so asynchronous dispatch
    does not hide the work.
    """
    jax.block_until_ready(fn())  # compile and warm up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        jax.block_until_ready(fn())
        times.append(time.perf_counter() - start)
    return float(np.median(times))


def overhead_table(
    dim: int = 100,
    num_samples: int = 10_000,
    repeats: int = 5,
    *,
    methods: Sequence[str] = OVERHEAD_METHODS,
    nfe: int = 105,
    seed: int = 0,
    chunk_size: int | None = None,
) -> list[OverheadRow]:
    """Time each method through the driver against its bare score evaluations.

    Parameters
    ----------
    dim
        Dimension of the target ``rtk_blackjax.targets.random_mog(seed, dim)``.
    num_samples
        Particles per run (the batch of the bare score loop too).
    repeats
        Timed runs per measurement (after one warm-up run); the median is kept.
    methods
        Benchmark method names (see :func:`rtk_blackjax.bench.configure`).
    nfe
        Per-sample NFE budget given to :func:`~rtk_blackjax.bench.configure`; the
        bare loop uses the NFE the sampler actually reports.
    seed
        Seed of the target and of the keys.
    chunk_size
        Passed to :func:`rtk_blackjax.sample`.

    Returns
    -------
    list of OverheadRow
        ``(method, nfe, bare_s, sampler_s, ratio)`` per method.
    """
    target = random_mog(seed, dim)
    key = jax.random.key(seed)
    x0 = jax.random.normal(jax.random.fold_in(key, 1), (num_samples, dim))
    rows = []
    for method in methods:
        algorithm = configure(method, target, nfe=nfe).algorithm
        result = sample(key, algorithm, num_samples, dim=dim, on_nonfinite="mask")
        method_nfe = int(result.num_evaluations)

        def run_sampler(algorithm=algorithm):
            out = sample(
                key,
                algorithm,
                num_samples,
                dim=dim,
                on_nonfinite="mask",
                chunk_size=chunk_size,
            )
            return out.samples

        bare = bare_score_loop(target, algorithm.times, method_nfe)
        bare_s = median_time(lambda bare=bare: bare(x0), repeats)
        sampler_s = median_time(run_sampler, repeats)
        rows.append(
            OverheadRow(method, method_nfe, bare_s, sampler_s, sampler_s / bare_s)
        )
    return rows


def format_overhead_table(rows: Sequence[OverheadRow]) -> str:
    """Markdown table of :func:`overhead_table` rows."""
    lines = [
        "| method | NFE | bare score calls (s) | sampler (s) | ratio |",
        "|---|---|---|---|---|",
    ]
    for row in rows:
        lines.append(
            f"| {row.method} | {row.nfe} | {row.bare_s:.3f} | {row.sampler_s:.3f} | "
            f"{row.ratio:.2f}x |"
        )
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> str:
    """Print the overhead table (``python -m rtk_blackjax.overhead --help``)."""
    parser = argparse.ArgumentParser(
        description="sampler time vs the bare cost of its score evaluations"
    )
    parser.add_argument("--dim", type=int, default=100)
    parser.add_argument("--num-samples", type=int, default=10_000)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--nfe", type=int, default=105)
    parser.add_argument("--methods", nargs="+", default=list(OVERHEAD_METHODS))
    parser.add_argument("--chunk-size", type=int, default=None)
    args = parser.parse_args(argv)
    rows = overhead_table(
        args.dim,
        args.num_samples,
        args.repeats,
        methods=args.methods,
        nfe=args.nfe,
        chunk_size=args.chunk_size,
    )
    table = format_overhead_table(rows)
    print(
        f"random_mog(0, {args.dim}), {args.num_samples} samples, median of "
        f"{args.repeats} ({jax.devices()[0].platform})\n"
    )
    print(table)
    return table


if __name__ == "__main__":
    main()
