"""A learned score, trained and sampled: RTK with a DSM-trained network vs the exact score.

The target (default) is the benchmark's random 8-component Gaussian mixture
(``rb.targets.random_mog(seed, dim)``: full rotated covariances, component variances
0.005 ... 0.1, unequal weights); ``--target chessboard`` is the RTK authors' mixture
(component variance 0.007, much stiffer for a small network). The network only sees ``--train-samples`` draws of
it, is fitted by denoising score matching (:func:`train_score`, progress bar, loss
curve saved to ``--loss-plot``), and then replaces the exact score in score-only
RTK-MALA (quadrature energies) and RTK-ULD at the same NFE budget, configured by
the benchmark policy (``rtk_blackjax.bench.configure``). The table compares both
runs against exact reference draws; the last line is JSON.

    python examples/learned_score.py                # ~3-4 min on 2 CPU cores
    python examples/learned_score.py --steps 2000   # quick look
    python examples/learned_score.py --load mog.eqx # reuse a saved network
"""

import argparse
import json
import time

import jax
import numpy as np

from rtk_blackjax import metrics
from rtk_blackjax.adapters.learned import (
    learned_target,
    load_trained,
    plot_loss,
    save_trained,
    train_score,
)
from rtk_blackjax.bench import TARGETS, configure, make_target
from rtk_blackjax.run import sample
from rtk_blackjax.targets import mixture_variance, sample_mixture

METHODS = ("rtk-mala-score", "rtk-uld")


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--target", choices=TARGETS, default="mog")
    p.add_argument("--dim", type=int, default=4)
    p.add_argument("--seed", type=int, default=0, help="target and run seed")
    p.add_argument("--nfe", type=int, default=105)
    p.add_argument("--num-samples", type=int, default=5000)
    p.add_argument("--train-samples", type=int, default=50_000)
    p.add_argument("--steps", type=int, default=8000)
    p.add_argument("--batch-size", type=int, default=512)
    p.add_argument("--hidden", type=int, default=128)
    p.add_argument("--depth", type=int, default=3)
    p.add_argument("--learning-rate", type=float, default=2e-3)
    p.add_argument("--t-min", type=float, default=1e-4, help="smallest training time")
    p.add_argument("--loss-plot", default="learned_score_loss.png")
    p.add_argument("--save", default=None, help="write the trained network here")
    p.add_argument("--load", default=None, help="skip training, load this network")
    p.add_argument("--no-progress", action="store_true")
    args = p.parse_args(argv)

    exact = make_target(args.target, args.dim, seed=args.seed)
    mix = exact.mixture
    keys = jax.random.split(jax.random.key(args.seed), 6)

    start = time.perf_counter()
    if args.load:
        trained = load_trained(args.load)
    else:
        data = sample_mixture(keys[0], mix, args.train_samples)
        trained = train_score(
            keys[1],
            data,
            num_steps=args.steps,
            batch_size=args.batch_size,
            learning_rate=args.learning_rate,
            t_min=args.t_min,
            t_max=5.0,
            hidden=args.hidden,
            depth=args.depth,
            progress_bar=not args.no_progress,
        )
        if args.save:
            save_trained(trained, args.save)
    train_s = time.perf_counter() - start
    if args.loss_plot:
        plot_loss(trained, args.loss_plot)
    learned = learned_target(trained)

    reference = np.asarray(sample_mixture(keys[2], mix, args.num_samples))
    kwargs = dict(
        means=mix.means,
        weights=mix.weights,
        exact_variance=mixture_variance(mix),
        rng_key=keys[3],
    )
    floor = metrics.noise_floors(
        reference, sample_mixture(keys[4], mix, args.num_samples), **kwargs
    )
    rows = []
    for method in METHODS:
        for score_name, target in (("exact", exact), ("learned", learned)):
            bench = configure(method, target, nfe=args.nfe)
            start = time.perf_counter()
            result = sample(keys[5], bench.algorithm, args.num_samples, dim=args.dim)
            x = np.asarray(jax.block_until_ready(result.samples))
            wall = time.perf_counter() - start
            scores = metrics.evaluate(x, reference, **kwargs)
            rows.append(
                dict(
                    method=method,
                    score=score_name,
                    nfe=int(result.num_evaluations),
                    **{k: scores[k] for k in ("marginal_accuracy", "mode_tv")},
                    var_bias=scores["var_bias"],
                    sliced_w2=scores["sliced_w2"],
                    wall_s=round(wall, 2),
                )
            )

    print(
        f"\n{args.target}(seed={args.seed}, dim={args.dim}), {args.num_samples} samples; "
        f"network trained on {trained.config['num_samples']} draws, "
        f"{trained.config['num_steps']} steps ({train_s:.0f} s)"
    )
    print("| method | score | NFE | marg. acc. | mode TV | var_bias | sliced W2 |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {r['method']} | {r['score']} | {r['nfe']} | "
            f"{r['marginal_accuracy']:.4f} | {r['mode_tv']:.4f} | "
            f"{r['var_bias']:+.4f} | {r['sliced_w2']:.4f} |"
        )
    print(
        f"| noise floor | | | {floor['marginal_accuracy']:.4f} | "
        f"{floor['mode_tv']:.4f} | {floor['var_bias']:+.4f} | {floor['sliced_w2']:.4f} |"
    )
    gaps = {
        m: abs(
            next(r for r in rows if r["method"] == m and r["score"] == "exact")[
                "marginal_accuracy"
            ]
            - next(r for r in rows if r["method"] == m and r["score"] == "learned")[
                "marginal_accuracy"
            ]
        )
        for m in METHODS
    }
    for m, gap in gaps.items():
        verdict = "within" if gap <= 0.02 else "NOT within"
        print(f"{m}: learned vs exact marginal accuracy gap {gap:.4f} ({verdict} 0.02)")
    out = dict(
        example="learned_score",
        target=args.target,
        dim=args.dim,
        seed=args.seed,
        train=dict(trained.config, wall_s=round(train_s, 1)),
        final_loss=float(np.mean(trained.loss_history[-200:])),
        rows=rows,
        noise_floor=floor,
        marginal_accuracy_gap=gaps,
    )
    print(json.dumps(out))
    return out


if __name__ == "__main__":
    main()
