"""Energy- vs score-parameterised networks: the same data, DSM loss and budget.

For each data set (a 2-D ring of 8 Gaussians and the 10-D chessboard mixture,
``rtk_blackjax.targets.chessboard_mixture``; both exact, so every error is measured
against the truth), trains a :class:`~rtk_blackjax.adapters.learned.ScoreNetwork`
(``train_score``) and an :class:`~rtk_blackjax.adapters.learned.EnergyNetwork`
(``train_energy``) with the same seed, data, architecture, steps and batch size,
and reports:

(1) Training: final DSM loss (mean of the last 10 % of the steps; both networks
    are trained on the same loss, on the same scale: ``dsm_loss`` on the unit-scale
    correction ``F``), training wall time, and the relative score error
    ``sqrt(E|s_θ - s|² / E|s|²)`` under exact draws of ``p_t`` at a few ``t``.
(2) Cost: wall time per score evaluation and particle (``jit(vmap)`` over 16384
    points, fastest of repeats) of the score network, of the energy network's
    energy alone (a forward pass) and of its energy with its gradient
    (``value_and_grad``, what MALA evaluates). One energy-and-gradient evaluation
    counts as **one NFE**, like one score-network call; the ratio column says what
    that NFE costs in forward passes.
(3) Sampling at a fixed NFE budget per sample (``rtk_blackjax.policy.configure``,
    one grid ``t_min`` for all): RTK-MALA with the exact energy of the true
    mixture (the sampler's own error), score-only RTK-MALA (quadrature energies)
    on the score network, and on the energy network both the energy-based RTK-MALA
    (exact Metropolis tests with the network's energies) and the score-only one.
    Sliced W2 and mode-weight TV against exact mixture draws, the variance bias,
    the mean acceptance and the wall time (compilation included). The last row is
    the metrics' noise floor (exact draws against exact draws).

Usage::

    python benchmarks/energy_vs_score.py           # about 3 minutes on 2 CPU cores
    python benchmarks/energy_vs_score.py --quick   # the 2-D ring only, about 1 minute
    python benchmarks/energy_vs_score.py --quick --only chessboard-10d
    python benchmarks/energy_vs_score.py --json energy_vs_score.json
"""

from __future__ import annotations

import argparse
import json
import os
import time

os.environ.setdefault("JAX_PLATFORMS", "cpu")

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

from rtk_blackjax import metrics, sample, targets  # noqa: E402
from rtk_blackjax.adapters.learned import (  # noqa: E402
    learned_target,
    train_energy,
    train_score,
)
from rtk_blackjax.policy import configure  # noqa: E402

ERROR_TIMES = (1e-3, 1e-2, 0.1, 0.5)
TRAINERS = {"score": train_score, "energy": train_energy}
# (network, method): the rows of the sampling table; "exact" is the true mixture.
SAMPLERS = (
    ("exact", "rtk-mala"),
    ("score", "rtk-mala-score"),
    ("energy", "rtk-mala"),
    ("energy", "rtk-mala-score"),
)


def ring_mixture(num_modes: int = 8, radius: float = 1.0, variance: float = 0.02):
    """``num_modes`` equal Gaussians on a circle: the classic 2-D "8 Gaussians"."""
    angles = 2.0 * np.pi * np.arange(num_modes) / num_modes
    means = radius * np.stack([np.cos(angles), np.sin(angles)], axis=1)
    return targets.mixture_from_arrays(means, variance)


DATASETS = {
    "ring-2d": ring_mixture,
    "chessboard-10d": lambda: targets.chessboard_mixture(dim=10),
}


def score_errors(score_fn, mixture, key, n: int = 4000) -> dict:
    """``sqrt(E|score_fn - score|² / E|score|²)`` under exact draws of ``p_t``, per
    ``t`` in :data:`ERROR_TIMES` (one compiled function, ``t`` traced)."""
    exact = targets.mixture_target(mixture)

    @jax.jit
    def error(xt, t):
        ref = jax.vmap(exact.score, (0, None))(xt, t)
        got = jax.vmap(score_fn, (0, None))(xt, t)
        return jnp.sqrt(jnp.sum((got - ref) ** 2) / jnp.sum(ref**2))

    return {
        str(t): float(error(targets.sample_mixture(key, mixture, n, t=t), t))
        for t in ERROR_TIMES
    }


def fastest_calls(fns: list, x, t, repeats: int) -> list:
    """Fastest of ``repeats`` timings of each compiled ``vmap(fn)`` over the batch
    ``x``. The functions are timed in turn within each repeat, so that load from
    other jobs falls on all of them alike; the minimum, since load only adds."""
    batched = [jax.jit(jax.vmap(lambda xi, fn=fn: fn(xi, t))) for fn in fns]
    for call in batched:
        jax.block_until_ready(call(x))  # compile
    best = [float("inf")] * len(fns)
    for _ in range(repeats):
        for i, call in enumerate(batched):
            start = time.perf_counter()
            jax.block_until_ready(call(x))
            best[i] = min(best[i], time.perf_counter() - start)
    return best


def cost_table(models: dict, dim: int, repeats: int, batch: int = 16384) -> list:
    x = jax.random.normal(jax.random.key(7), (batch, dim))
    score_net, energy_net = models["score"], models["energy"]
    rows = [
        ("score", "score (forward)", score_net.score),
        ("energy", "energy (forward)", energy_net.energy),
        ("energy", "score (forward + backward)", energy_net.score),
        (
            "energy",
            "energy and score (value_and_grad)",
            jax.value_and_grad(energy_net.energy),
        ),
    ]
    seconds = fastest_calls([fn for *_, fn in rows], x, 0.05, repeats)
    out = [
        dict(network=network, evaluation=evaluation, us_per_particle=1e6 * s / batch)
        for (network, evaluation, _), s in zip(rows, seconds)
    ]
    forward = out[1]["us_per_particle"]
    base = out[0]["us_per_particle"]
    for row in out:
        row["vs_score_network"] = row["us_per_particle"] / base
        row["forward_passes"] = row["us_per_particle"] / forward
    return out


def sampling_row(network, method, target, mixture, reference, args, key) -> dict:
    cfg = configure(method, target, nfe=args.nfe, t_min=args.grid_t_min)
    start = time.perf_counter()
    result = sample(key, cfg.algorithm, args.num_samples, dim=mixture.dim)
    x = np.asarray(jax.block_until_ready(result.samples))
    seconds = time.perf_counter() - start
    acc = result.acceptance_per_segment()
    return dict(
        network=network,
        method=method,
        nfe=int(result.num_evaluations),
        segments=cfg.config["segments"],
        sliced_w2=metrics.sliced_wasserstein(x, reference, jax.random.key(11)),
        mode_tv=metrics.mode_weight_tv(x, mixture.means, mixture.weights),
        var_bias=metrics.var_bias(x, targets.mixture_variance(mixture)),
        acceptance=float(np.nanmean(acc)) if np.any(np.isfinite(acc)) else None,
        seconds=seconds,
    )


def run_dataset(name: str, args) -> dict:
    mixture = DATASETS[name]()
    steps = args.steps if args.steps is not None else args.default_steps[name]
    k_data, k_ref, k_ref2, k_train, k_err, k_sample = jax.random.split(
        jax.random.key(args.seed), 6
    )
    data = targets.sample_mixture(k_data, mixture, args.num_data)
    reference = np.asarray(targets.sample_mixture(k_ref, mixture, args.num_samples))
    training, models = [], {}
    for kind, trainer in TRAINERS.items():
        start = time.perf_counter()
        trained = trainer(
            k_train,
            data,
            num_steps=steps,
            batch_size=args.batch_size,
            hidden=args.hidden,
            depth=args.depth,
            t_min=args.train_t_min,
            chunk_size=min(steps, 1000),
            progress_bar=False,
        )
        jax.block_until_ready(trained.model)
        seconds = time.perf_counter() - start
        models[kind] = trained.model
        loss = trained.loss_history
        training.append(
            dict(
                network=kind,
                steps=steps,
                final_loss=float(np.mean(loss[-max(1, steps // 10) :])),
                initial_loss=float(np.mean(loss[: max(1, steps // 100)])),
                seconds=seconds,
                score_error=score_errors(trained.model.score, mixture, k_err),
            )
        )
    cost = cost_table(models, mixture.dim, args.repeats)
    target_of = {
        "exact": targets.mixture_target(mixture),
        "score": learned_target(models["score"]),
        "energy": learned_target(models["energy"]),
    }
    rows = []
    samplers = SAMPLERS[1:] if args.quick else SAMPLERS
    for network, method in samplers:
        rows.append(
            sampling_row(
                network, method, target_of[network], mixture, reference, args, k_sample
            )
        )
    floor_x = np.asarray(targets.sample_mixture(k_ref2, mixture, args.num_samples))
    rows.append(
        dict(
            network="exact draws",
            method="(noise floor)",
            nfe=None,
            segments=None,
            sliced_w2=metrics.sliced_wasserstein(
                floor_x, reference, jax.random.key(11)
            ),
            mode_tv=metrics.mode_weight_tv(floor_x, mixture.means, mixture.weights),
            var_bias=metrics.var_bias(floor_x, targets.mixture_variance(mixture)),
            acceptance=None,
            seconds=None,
        )
    )
    return dict(
        dim=mixture.dim,
        num_components=mixture.num_components,
        training=training,
        cost=cost,
        sampling=rows,
    )


def _fmt(value, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def print_tables(out: dict) -> None:
    args = out["args"]
    print(
        f"\n(1) DSM training: {args['num_data']} draws, batch {args['batch_size']}, "
        f"MLP {args['depth']} x {args['hidden']}, t in [{args['train_t_min']:g}, 5]"
    )
    times = " | ".join(f"err t={t:g}" for t in ERROR_TIMES)
    print(f"| data | network | steps | final DSM loss | train s | {times} |")
    print("|---|---|---|---|---|" + "---|" * len(ERROR_TIMES))
    for name, res in out["datasets"].items():
        for r in res["training"]:
            errs = " | ".join(f"{r['score_error'][str(t)]:.3f}" for t in ERROR_TIMES)
            print(
                f"| {name} | {r['network']} | {r['steps']} | {r['final_loss']:.4f} | "
                f"{r['seconds']:.1f} | {errs} |"
            )
    print(
        "\n(2) Cost of one evaluation (jit(vmap) over 16384 particles, fastest of "
        f"{args['repeats']} runs); one "
        "energy-and-score evaluation is one NFE"
    )
    print("| data | network | evaluation | µs / particle | x score net | x forward |")
    print("|---|---|---|---|---|---|")
    for name, res in out["datasets"].items():
        for r in res["cost"]:
            print(
                f"| {name} | {r['network']} | {r['evaluation']} | "
                f"{r['us_per_particle']:.3f} | {r['vs_score_network']:.2f} | "
                f"{r['forward_passes']:.2f} |"
            )
    print(
        f"\n(3) Prior draws: {args['num_samples']} samples, NFE budget {args['nfe']}, "
        f"geometric grid to t_min={args['grid_t_min']:g}"
    )
    print(
        "| data | network | sampler | NFE | sliced W2 | mode TV | var bias | acc | s |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for name, res in out["datasets"].items():
        for r in res["sampling"]:
            print(
                f"| {name} | {r['network']} | {r['method']} | {_fmt(r['nfe'], 'd')} | "
                f"{r['sliced_w2']:.4f} | {r['mode_tv']:.3f} | {r['var_bias']:+.3f} | "
                f"{_fmt(r['acceptance'], '.3f')} | {_fmt(r['seconds'], '.1f')} |"
            )


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--quick",
        action="store_true",
        help="the 2-D ring only (unless --only), short trainings, fewer samples, "
        "no exact-energy row (about 1 minute)",
    )
    parser.add_argument("--only", choices=sorted(DATASETS))
    parser.add_argument(
        "--steps", type=int, help="training steps (default: per data set)"
    )
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--hidden", type=int, default=64)
    parser.add_argument("--depth", type=int, default=2)
    parser.add_argument("--num-data", type=int, default=20_000)
    parser.add_argument("--num-samples", type=int)
    parser.add_argument("--nfe", type=int, default=105)
    parser.add_argument("--train-t-min", type=float, default=1e-3)
    parser.add_argument("--grid-t-min", type=float, default=1e-3)
    parser.add_argument("--repeats", type=int, help="timing repeats (default 20)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", help="also write the results to this JSON file")
    args = parser.parse_args(argv)
    if args.num_samples is None:
        args.num_samples = 1000 if args.quick else 5000
    if args.repeats is None:
        args.repeats = 5 if args.quick else 20
    args.default_steps = (
        {"ring-2d": 1500, "chessboard-10d": 800}
        if args.quick
        else {"ring-2d": 8000, "chessboard-10d": 4000}
    )
    start = time.perf_counter()
    names = [args.only] if args.only else ["ring-2d"] if args.quick else list(DATASETS)
    out = {"args": vars(args), "datasets": {}}
    for name in names:
        out["datasets"][name] = run_dataset(name, args)
    out["total_seconds"] = time.perf_counter() - start
    out["jax_version"] = jax.__version__
    out["backend"] = jax.default_backend()
    print_tables(out)
    print(f"\ntotal {out['total_seconds']:.0f} s\n")
    text = json.dumps(out, indent=1, default=float)
    print(text)
    if args.json:
        with open(args.json, "w") as f:
            f.write(text + "\n")
    return out


if __name__ == "__main__":
    main()
