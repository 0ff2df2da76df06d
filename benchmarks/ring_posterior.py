"""The ring scenario of issue 12 from the command line (the scenario itself:
:mod:`rtk_blackjax.benchmarks.ring`).

Run: ``python benchmarks/ring_posterior.py [--access score|logdensity|learned-energy|learned-score]
[--methods smc,tds,split-gibbs,nuts] [--seeds 3] [--json]``.
"""

import argparse
import json

from rtk_blackjax.benchmarks.ring import ACCESS, format_rows, run


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--access", default="score", choices=ACCESS)
    parser.add_argument("--methods", default="smc,tds,split-gibbs")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--num-samples", type=int, default=2000)
    parser.add_argument("--prior-nfe", type=int, default=100)
    parser.add_argument(
        "--method-options",
        type=json.loads,
        default=None,
        help="JSON options for the method, e.g. '{\"num_inner_steps\": 0}'",
    )
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    rows = [
        run(
            m,
            args.access,
            s,
            args.num_samples,
            args.prior_nfe,
            method_options=args.method_options,
        )
        for m in args.methods.split(",")
        for s in range(args.seeds)
    ]
    if args.json:
        print(json.dumps(rows, indent=1))
        return
    print(format_rows(rows))


if __name__ == "__main__":
    main()
