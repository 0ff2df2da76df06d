"""GPU throughput: samples/s and overhead ratio at 105 NFE, one JSON object.

What it measures (issue 15, item 6), each through :func:`rtk_blackjax.sample`
(jitted, chunked, ``return_info=False``, timed with ``block_until_ready``):

* **mixture**: ``random_mog(seed, 100)`` (the 8-component d = 100 mixture of
  ``bench --overhead``), methods rtk-mala, rtk-uld, ddpm, dpm-solver++ at an NFE
  budget of 105, at 10^4, 10^5 and 10^6 samples;
* **mlp**: an MLP score network (``make_score_network``, d = 64, width 512, depth
  3; random weights, the timing does not depend on training) in float32 and
  bfloat16, at 10^6 samples. The network is score-only, so "rtk-mala"
  runs as ``rtk-mala-score`` (energy differences by quadrature of the score; its
  ``sampler_method`` field says so). bfloat16 means: the network's parameters are
  cast to bfloat16, and so are its inputs ``x`` and ``t``; its output is cast back
  to the sampler's dtype (float32), so the sampler's state, Metropolis tests and
  random numbers stay float32. ``bfloat16-state`` also runs the sampler's state in
  bfloat16 (``position_like`` of that dtype); a sampler that fails so gets its
  error in its record instead of stopping the run (in jax 0.10 every sampler
  does: the float32 grid promotes the state);
* **scaling** (only with several devices): samples/s with
  ``devices=jax.devices()[:k]`` for k = 1, 2, 4, ... at the largest mixture size,
  for rtk-mala and ddpm.

Each record has the samples/s, the median and minimum sampler time over the timed
repeats, the first call's time and ``compile_s`` (first call minus the median: the
compilation and the first run's one-off costs), and the **overhead ratio**: the
sampler's time over the bare cost of the same number of batched score calls on the
same per-call batch (``rtk_blackjax.benchmarks.overhead.bare_score_loop``, the
lower bound behind ``bench --overhead``), times the number of chunks. The JSON's
``meta`` holds the device kind, platform, JAX / jaxlib versions, PRNG, dtypes,
chunk size and the host's load average.

Usage::

    python benchmarks/gpu_throughput.py --json out.json        # full: one GPU, < 5 min
    python benchmarks/gpu_throughput.py --quick                # CPU: 1-2 minutes
    python benchmarks/gpu_throughput.py --quick --prng rbg     # another PRNG

``--prng threefry|rbg|unsafe_rbg`` picks the PRNG implementation of every key
(threefry, JAX's default, is the reproducible one: its streams are the same on
every backend and under every sharding; ``rbg`` / ``unsafe_rbg`` use XLA's
RngBitGenerator, whose streams may change with the backend or XLA version).
``--max-seconds`` bounds the run: once spent, the remaining records are written
as ``skipped`` (the order is: mixture, then mlp float32 / bfloat16, then
scaling).
"""

from __future__ import annotations

import argparse
import functools
import json
import math
import os
import platform
import sys
import time
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path

try:
    import rtk_blackjax  # noqa: F401
except ImportError:  # run from a checkout that is not installed
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import equinox as eqx
import jax
import jax.numpy as jnp
import jaxlib
import numpy as np

import rtk_blackjax as rb
from rtk_blackjax.adapters.learned import make_score_network
from rtk_blackjax.benchmarks.overhead import bare_score_loop, median_time
from rtk_blackjax.policy import configure
from rtk_blackjax.targets import Target, from_score, random_mog

__all__ = [
    "METHODS",
    "DTYPES",
    "PRNG_IMPLS",
    "FULL",
    "QUICK",
    "run",
    "main",
]

METHODS = ("rtk-mala", "rtk-uld", "ddpm", "dpm-solver++")
DTYPES = ("float32", "bfloat16", "bfloat16-state")
# dtype name -> (network dtype, sampler state dtype)
_PRECISION = {
    "float32": ("float32", "float32"),
    "bfloat16": ("bfloat16", "float32"),
    "bfloat16-state": ("bfloat16", "bfloat16"),
}
# --prng name -> jax.random.key(..., impl=...)
PRNG_IMPLS = {"threefry": "threefry2x32", "rbg": "rbg", "unsafe_rbg": "unsafe_rbg"}
# On a score-only target the exact-energy RTK-MALA becomes its quadrature variant.
_SCORE_ONLY_METHOD = {"rtk-mala": "rtk-mala-score"}

# Full mode: sized for one H100 (a naive RTK-MALA prototype ran 2.9e6 samples/s on
# the d = 100 mixture at 105 NFE; the MLP at width 512 is ~1.2 MFLOP per score
# call, ~130 TFLOP per 10^6 samples). 2^18 particles per device and call keep a
# 10^6 run at four chunks and a few GB of working memory.
FULL = dict(
    mixture_dim=100,
    mixture_sizes=(10_000, 100_000, 1_000_000),
    mlp_dim=64,
    mlp_width=512,
    mlp_depth=3,
    mlp_sizes=(1_000_000,),
    dtypes=DTYPES,
    methods=METHODS,
    mlp_methods=METHODS,
    scaling_methods=("rtk-mala", "ddpm"),
    nfe=105,
    repeats=3,
    chunk_size=2**18,
    max_seconds=220.0,
)
# Quick mode: the same code on a CPU in a minute or two.
QUICK = dict(
    FULL,
    mixture_sizes=(1_000,),
    mlp_sizes=(256,),
    mlp_methods=("rtk-uld", "ddpm"),
    repeats=2,
    max_seconds=600.0,
)


def _check_names(name: str, values: Sequence[str], allowed: Sequence[str]) -> tuple:
    if isinstance(values, str):
        values = (values,)
    values = tuple(values)
    bad = [v for v in values if v not in allowed]
    if bad:
        raise ValueError(f"{name}: unknown {bad}; choose from {tuple(allowed)}")
    return values


def _check_sizes(name: str, values: Sequence[int]) -> tuple:
    values = tuple(values)
    if any(
        isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1
        for v in values
    ):
        raise ValueError(f"{name} must be positive integers, got {values}")
    return tuple(int(v) for v in values)


def _error_text(err: BaseException) -> str:
    text = " ".join(f"{type(err).__name__}: {err}".split())
    return text if len(text) <= 600 else text[:600] + " ..."


def _mlp_target(dim: int, width: int, depth: int, dtype: str, seed: int) -> Target:
    """The MLP score network as a score-only target (see the module notes)."""
    k_data, k_net, k_last = jax.random.split(jax.random.key(seed), 3)
    data = jax.random.normal(k_data, (256, dim))
    net = make_score_network(k_net, data, hidden=width, depth=depth)
    # make_score_network zeroes its last layer (an untrained network is the Gaussian
    # fit); give it small random weights so no matmul could be folded away.
    last = net.mlp.layers[-1]
    net = eqx.tree_at(
        lambda n: n.mlp.layers[-1].weight,
        net,
        1e-3 * jax.random.normal(k_last, last.weight.shape),
    )
    net_dtype = _PRECISION[dtype][0]
    if net_dtype == "float32":
        return from_score(net)
    low = jnp.dtype(net_dtype)
    net_low = jax.tree.map(
        lambda v: v.astype(low) if eqx.is_inexact_array(v) else v, net
    )

    def score(x, t):
        out = net_low(x.astype(low), jnp.asarray(t).astype(low))
        return out.astype(x.dtype)

    return from_score(score)


class _Timer:
    """Wraps ``fn`` to keep the wall time of every call (the first is the warm-up)."""

    def __init__(self, fn: Callable):
        self.fn = fn
        self.calls: list[float] = []

    def __call__(self):
        start = time.perf_counter()
        out = jax.block_until_ready(self.fn())
        self.calls.append(time.perf_counter() - start)
        return out


def _time(fn: Callable, repeats: int) -> dict:
    """``overhead.median_time`` of ``fn``, with the warm-up call and every repeat."""
    timer = _Timer(fn)
    median = median_time(timer, repeats)
    first, timed = timer.calls[0], timer.calls[1:]
    return {
        "median_s": median,
        "min_s": float(min(timed)),
        "times_s": [round(t, 6) for t in timed],
        "first_call_s": first,
        "compile_s": max(first - median, 0.0),
    }


def _measure(
    *,
    key: jax.Array,
    target: Target,
    method: str,
    dim: int,
    num_samples: int,
    nfe: int,
    repeats: int,
    chunk_size: int,
    devices: Sequence,
    bare: bool,
    state_dtype: str = "float32",
) -> dict:
    """One record: the sampler's timings and (``bare``) its overhead ratio."""
    algorithm = configure(method, target, nfe=nfe).algorithm
    ndev = len(devices)
    per_device = min(chunk_size, -(-num_samples // ndev))
    num_chunks = -(-num_samples // (per_device * ndev))
    out: dict = {}
    if state_dtype == "float32":
        shape = {"dim": dim}
    else:
        shape = {"position_like": jnp.zeros((dim,), state_dtype)}

    def run_sampler():
        result = rb.sample(
            key,
            algorithm,
            num_samples,
            **shape,
            on_nonfinite="mask",
            chunk_size=per_device,
            devices=devices,
            return_info=False,
        )
        out["nfe"] = int(result.num_evaluations)
        out["finite_fraction"] = float(np.mean(np.asarray(result.finite)))
        return result.samples

    sampler = _time(run_sampler, repeats)
    record = {
        "nfe": out["nfe"],
        "num_devices": ndev,
        "chunk_size": per_device,
        "num_chunks": num_chunks,
        "sampler_s": sampler["median_s"],
        "sampler_min_s": sampler["min_s"],
        "sampler_times_s": sampler["times_s"],
        "first_call_s": sampler["first_call_s"],
        "compile_s": sampler["compile_s"],
        "samples_per_s": num_samples / sampler["median_s"],
        "samples_per_s_best": num_samples / sampler["min_s"],
        "samples_per_s_per_device": num_samples / sampler["median_s"] / ndev,
        "finite_fraction": out["finite_fraction"],
    }
    if bare:
        # The same score calls on the same per-call batch, on one device, once per
        # chunk (the sampler's runs are chunked the same way).
        batch = per_device
        x0 = jax.random.normal(jax.random.fold_in(key, 1), (batch, dim))
        x0 = x0.astype(state_dtype)
        loop = bare_score_loop(target, algorithm.times, out["nfe"])
        bare_t = _time(lambda: loop(x0), repeats)
        bare_s = bare_t["median_s"] * num_chunks
        record.update(
            bare_batch=batch,
            bare_s=bare_s,
            bare_min_s=bare_t["min_s"] * num_chunks,
            bare_compile_s=bare_t["compile_s"],
            bare_score_evals_per_s=num_samples * out["nfe"] / bare_s,
            overhead_ratio=sampler["median_s"] / bare_s,
            overhead_ratio_best=sampler["min_s"] / (bare_t["min_s"] * num_chunks),
        )
    return record


def run(
    *,
    mixture_dim: int = FULL["mixture_dim"],
    mixture_sizes: Sequence[int] = FULL["mixture_sizes"],
    mlp_dim: int = FULL["mlp_dim"],
    mlp_width: int = FULL["mlp_width"],
    mlp_depth: int = FULL["mlp_depth"],
    mlp_sizes: Sequence[int] = FULL["mlp_sizes"],
    dtypes: Sequence[str] = FULL["dtypes"],
    methods: Sequence[str] = FULL["methods"],
    mlp_methods: Sequence[str] = FULL["mlp_methods"],
    scaling_methods: Sequence[str] = FULL["scaling_methods"],
    nfe: int = FULL["nfe"],
    repeats: int = FULL["repeats"],
    chunk_size: int = FULL["chunk_size"],
    max_seconds: float = FULL["max_seconds"],
    prng: str = "threefry",
    seed: int = 0,
    devices: Sequence | None = None,
    log: Callable[[str], None] = lambda msg: print(msg, file=sys.stderr, flush=True),
) -> dict:
    """Run the benchmark; returns ``{"meta": {...}, "records": [...]}`` (JSON-ready).

    Every record has ``workload`` (``"mixture"``, ``"mlp"``, ``"scaling"``),
    ``method``, ``dtype``, ``dim``, ``num_samples`` and either the timings (see the
    module notes), ``error`` (the sampler raised: its type and message) or
    ``skipped`` (``max_seconds`` was spent). Empty ``mixture_sizes`` /
    ``mlp_sizes`` / ``scaling_methods`` skip that part; scaling runs only with
    more than one device.
    """
    for name, value in (("mixture_dim", mixture_dim), ("mlp_dim", mlp_dim)):
        _check_sizes(name, (value,))
    _check_sizes("mlp_width", (mlp_width,))
    _check_sizes("mlp_depth", (mlp_depth,))
    _check_sizes("nfe", (nfe,))
    _check_sizes("repeats", (repeats,))
    _check_sizes("chunk_size", (chunk_size,))
    mixture_sizes = _check_sizes("mixture_sizes", mixture_sizes)
    mlp_sizes = _check_sizes("mlp_sizes", mlp_sizes)
    dtypes = _check_names("dtypes", dtypes, DTYPES)
    methods = _check_names("methods", methods, METHODS)
    mlp_methods = _check_names("mlp_methods", mlp_methods, METHODS)
    scaling_methods = _check_names("scaling_methods", scaling_methods, METHODS)
    if prng not in PRNG_IMPLS:
        raise ValueError(f"prng: unknown {prng!r}; choose from {tuple(PRNG_IMPLS)}")
    if not max_seconds > 0:
        raise ValueError(f"max_seconds must be positive, got {max_seconds}")
    devices = tuple(jax.devices() if devices is None else devices)
    key = jax.random.key(seed, impl=PRNG_IMPLS[prng])
    start = time.perf_counter()
    dev = devices[0]
    meta = {
        "device_kind": dev.device_kind,
        "platform": dev.platform,
        "num_devices": len(devices),
        "jax_version": jax.__version__,
        "jaxlib_version": jaxlib.__version__,
        "rtk_blackjax_version": rb.__version__,
        "python": platform.python_version(),
        "prng": prng,
        "prng_impl": PRNG_IMPLS[prng],
        "sampler_dtype": "float32 (bfloat16 in the bfloat16-state records)",
        "nfe_budget": nfe,
        "repeats": repeats,
        "chunk_size_max": chunk_size,
        "mixture": f"random_mog({seed}, {mixture_dim}), 8 components",
        "mlp": f"make_score_network, dim {mlp_dim}, width {mlp_width}, depth "
        f"{mlp_depth}, random weights",
        "bfloat16": "network parameters and inputs in bfloat16, output cast back; "
        "sampler state float32",
        "bfloat16-state": "bfloat16 network and sampler state (position_like)",
        "overhead_ratio": "sampler time / bare cost of the same batched score calls "
        "(rtk_blackjax.benchmarks.overhead.bare_score_loop) on the same per-call "
        "batch, times the number of chunks",
        "matmul_precision": str(
            getattr(jax.config, "jax_default_matmul_precision", None)
        ),
        "xla_flags": os.environ.get("XLA_FLAGS"),
        "host_cpus": os.cpu_count(),
        "load_average_start": list(os.getloadavg())
        if hasattr(os, "getloadavg")
        else None,
        "started": time.strftime("%Y-%m-%d %H:%M:%S"),
    }
    records: list[dict] = []

    def one(base: dict, measure: Callable[[], dict]) -> None:
        elapsed = time.perf_counter() - start
        if elapsed > max_seconds:
            records.append({**base, "skipped": f"max_seconds={max_seconds} spent"})
            log(f"skip {base}")
            return
        try:
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                record = {**base, **measure()}
            texts = sorted({str(w.message).split(";")[0] for w in caught})
            if texts:
                record["warnings"] = texts
        except Exception as err:  # noqa: BLE001 -- a failed sampler is a result
            record = {**base, "error": _error_text(err)}
        records.append(record)
        shown = (
            record.get("error")
            or f"{record['samples_per_s']:.4g} samples/s"
            + (
                f", overhead {record['overhead_ratio']:.2f}x"
                if "overhead_ratio" in record
                else ""
            )
            + f", compile {record['compile_s']:.1f} s"
        )
        log(
            f"[{time.perf_counter() - start:6.1f} s] {base['workload']} "
            f"{base['method']} {base['dtype']} n={base['num_samples']} "
            f"k={base.get('num_devices', 1)}: {shown}"
        )

    one_device = devices[:1]

    def run_mixture(mixture, workload, method, n, run_devices, bare, **extra):
        """One mixture record: on one device (with the bare cost) or several."""
        base = dict(
            workload=workload,
            method=method,
            sampler_method=method,
            dtype="float32",
            dim=mixture_dim,
            num_samples=n,
            **extra,
        )
        one(
            base,
            functools.partial(
                _measure,
                key=key,
                target=mixture,
                method=method,
                dim=mixture_dim,
                num_samples=n,
                nfe=nfe,
                repeats=repeats,
                chunk_size=chunk_size,
                devices=run_devices,
                bare=bare,
            ),
        )

    if mixture_sizes:
        mixture = random_mog(seed, mixture_dim)
        for n in mixture_sizes:
            for method in methods:
                run_mixture(mixture, "mixture", method, n, one_device, True)
    if mlp_sizes and mlp_methods:
        targets = {}
        for dtype in dtypes:
            try:
                targets[dtype] = _mlp_target(mlp_dim, mlp_width, mlp_depth, dtype, seed)
            except Exception as err:  # noqa: BLE001 -- recorded like a failed run
                targets[dtype] = _error_text(err)
        # sizes outermost: with --max-seconds, both dtypes of a size before the next
        for n in mlp_sizes:
            for dtype in dtypes:
                for method in mlp_methods:
                    sampler_method = _SCORE_ONLY_METHOD.get(method, method)
                    base = dict(
                        workload="mlp",
                        method=method,
                        sampler_method=sampler_method,
                        dtype=dtype,
                        dim=mlp_dim,
                        num_samples=n,
                    )
                    if isinstance(targets[dtype], str):
                        records.append({**base, "error": targets[dtype]})
                        continue
                    one(
                        base,
                        functools.partial(
                            _measure,
                            key=key,
                            target=targets[dtype],
                            method=sampler_method,
                            dim=mlp_dim,
                            num_samples=n,
                            nfe=nfe,
                            repeats=repeats,
                            chunk_size=chunk_size,
                            devices=one_device,
                            bare=True,
                            state_dtype=_PRECISION[dtype][1],
                        ),
                    )
    if len(devices) > 1 and scaling_methods and mixture_sizes:
        mixture = random_mog(seed, mixture_dim)
        n = max(mixture_sizes)
        counts = [2**i for i in range(int(math.log2(len(devices))) + 1)]
        if counts[-1] != len(devices):
            counts.append(len(devices))
        for method in scaling_methods:
            for k in counts:
                run_mixture(
                    mixture, "scaling", method, n, devices[:k], False, num_devices=k
                )
        _add_speedups(records)
    meta["wall_s"] = time.perf_counter() - start
    try:
        stats = dev.memory_stats() or {}
    except Exception:  # noqa: BLE001 -- not every backend has memory statistics
        stats = {}
    meta["peak_bytes_in_use"] = stats.get("peak_bytes_in_use")
    meta["load_average_end"] = (
        list(os.getloadavg()) if hasattr(os, "getloadavg") else None
    )
    return {"meta": meta, "records": records}


def _add_speedups(records: list[dict]) -> None:
    """``speedup`` of each scaling record over its method's one-device record."""
    base = {
        r["method"]: r["samples_per_s"]
        for r in records
        if r["workload"] == "scaling"
        and r.get("num_devices") == 1
        and "samples_per_s" in r
    }
    for r in records:
        if r["workload"] == "scaling" and "samples_per_s" in r and r["method"] in base:
            r["speedup_vs_1_device"] = r["samples_per_s"] / base[r["method"]]


def format_summary(result: dict) -> str:
    """A Markdown table of the records (for the docs; the JSON is the result)."""
    meta = result["meta"]
    lines = [
        f"{meta['device_kind']} ({meta['platform']}, {meta['num_devices']} device(s)), "
        f"jax {meta['jax_version']}, prng {meta['prng']}, NFE budget "
        f"{meta['nfe_budget']}, median of {meta['repeats']}",
        "",
        "| workload | method | dtype | n | k | NFE | samples/s | overhead | compile (s) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in result["records"]:
        head = (
            f"| {r['workload']} | {r.get('sampler_method', r['method'])} | "
            f"{r['dtype']} | {r.get('num_samples', '')} | {r.get('num_devices', 1)} |"
        )
        if "error" in r or "skipped" in r:
            text = r.get("error") or r.get("skipped")
            short = text if len(text) <= 100 else text[:100] + " ..."
            lines.append(f"{head} | {short} | | | |")
            continue
        ratio = r.get("overhead_ratio")
        lines.append(
            f"{head} {r['nfe']} | {r['samples_per_s']:.4g} | "
            + (f"{ratio:.2f}x" if ratio is not None else "-")
            + f" | {r['compile_s']:.1f} |"
        )
    return "\n".join(lines)


def _parse_sizes(text: str) -> tuple:
    parts = [p for p in text.replace(",", " ").split() if p]
    try:
        return tuple(int(float(p)) for p in parts)
    except ValueError as err:
        raise argparse.ArgumentTypeError(f"not a list of integers: {text!r}") from err


def _parse_names(text: str) -> tuple:
    return tuple(p for p in text.replace(",", " ").split() if p)


def main(argv: Sequence[str] | None = None) -> dict:
    """Command line (``python benchmarks/gpu_throughput.py --help``)."""
    parser = argparse.ArgumentParser(
        description="samples/s and overhead ratio of rtk-mala, rtk-uld, ddpm, "
        "dpm-solver++ at 105 NFE (d=100 mixture, MLP score network in float32 and "
        "bfloat16, device scaling); prints one JSON object"
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="CPU-sized: 10^3 mixture samples, 256 MLP samples (rtk-uld, ddpm)",
    )
    parser.add_argument("--json", default=None, help="also write the JSON here")
    parser.add_argument("--prng", choices=tuple(PRNG_IMPLS), default="threefry")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--mixture-sizes", type=_parse_sizes, default=None)
    parser.add_argument("--mlp-sizes", type=_parse_sizes, default=None)
    parser.add_argument("--methods", type=_parse_names, default=None)
    parser.add_argument("--mlp-methods", type=_parse_names, default=None)
    parser.add_argument("--scaling-methods", type=_parse_names, default=None)
    parser.add_argument("--dtypes", type=_parse_names, default=None)
    parser.add_argument("--nfe", type=int, default=None)
    parser.add_argument("--repeats", type=int, default=None)
    parser.add_argument(
        "--chunk-size", type=int, default=None, help="largest particles per device"
    )
    parser.add_argument(
        "--max-seconds",
        type=float,
        default=None,
        help="after this many seconds the remaining records are skipped",
    )
    parser.add_argument(
        "--table", action="store_true", help="print a Markdown table to stderr"
    )
    args = parser.parse_args(argv)
    # Every key, the library's and ours, from the chosen generator.
    jax.config.update("jax_default_prng_impl", PRNG_IMPLS[args.prng])
    config = dict(QUICK if args.quick else FULL)
    for name in (
        "mixture_sizes",
        "mlp_sizes",
        "methods",
        "mlp_methods",
        "scaling_methods",
        "dtypes",
        "nfe",
        "repeats",
        "chunk_size",
        "max_seconds",
    ):
        value = getattr(args, name)
        if value is not None:
            config[name] = value
    result = run(**config, prng=args.prng, seed=args.seed)
    result["meta"]["mode"] = "quick" if args.quick else "full"
    result["meta"]["argv"] = list(sys.argv[1:] if argv is None else argv)
    text = json.dumps(result, indent=1)
    if args.json:
        Path(args.json).write_text(text + "\n")
    print(text)
    if args.table:
        print(format_summary(result), file=sys.stderr)
    return result


if __name__ == "__main__":
    try:
        main()
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)
