#!/usr/bin/env bash
# Regenerate every number, table and plot in docs/benchmarks.md (about 40 minutes on
# 2 CPU cores). Usage: bash docs/regenerate.sh [methods]   (default: all methods)
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python}
METHODS=${1:-rtk-mala,rtk-mala-score,rtk-uld,rtk-uld-adjusted,ddpm,ddim,dpm-solver++,pf-ode,pc}
mkdir -p docs/data
for spec in "10 5000" "100 5000" "1000 2000"; do
    set -- $spec
    d=$1; n=$2
    out=docs/data/sweep_d${d}.jsonl
    rm -f "$out"
    $PY -m rtk_blackjax bench --sweep --dim "$d" --num-samples "$n" \
        --methods "$METHODS" --jsonl "$out" > /dev/null
    $PY -m rtk_blackjax bench --report "$out" --plot "docs/sweep_d${d}.png" \
        --title "chessboard d=$d, $n samples" > "docs/data/sweep_d${d}.md"
done
# the prior-sampling suite (docs/benchmarks.md, "the target suite"; ~50 minutes)
if [ "${SUITE:-0}" = 1 ]; then
    rm -f docs/data/prior_suite.jsonl
    $PY benchmarks/prior_suite.py > /dev/null
    $PY benchmarks/prior_suite.py --grid logsnr --nfe 25,105 > /dev/null
    $PY benchmarks/prior_suite.py --rtk-grid calibrated > /dev/null
fi
# the grid search behind the NFE-budget policy (rtk_blackjax/policy.py)
$PY -m rtk_blackjax bench --tune --dim 100 \
    --methods ddpm,ddim,dpm-solver++,pf-ode,pc > docs/data/tune_baselines_d100.md
$PY -c "
from rtk_blackjax.benchmarks import sampling
print(sampling.tune(dim=100, methods=sampling.RTK_METHODS, t_mins=(1e-3, 3e-4, 1e-4), log=lambda m: None)[0])
" > docs/data/tune_rtk_d100.md
# The posterior tables of docs/benchmarks.md (hours on 2 CPU cores): POSTERIORS=1
if [ "${POSTERIORS:-0}" = 1 ]; then
    BP="$PY -m rtk_blackjax bench-posterior --sweep --num-samples 2000"
    $BP --dims 8 --obs-dims 1,2,4 --num-problems 3 --prior-access score \
        --methods twisted,mcgdiff,tds,dps,daps --out docs/data/posterior_score_d8
    $BP --dims 80 --obs-dims 1,2,4 --num-problems 2 --prior-access score \
        --methods twisted,mcgdiff,tds,dps --out docs/data/posterior_score_d80
    $BP --dims 8 --obs-dims 1,2,4 --num-problems 3 --prior-access energy \
        --methods twisted --out docs/data/posterior_energy_d8
    $BP --dims 8 --obs-dims 1,2 --num-problems 5 --prior-access score \
        --protocol mcgdiff --methods twisted,mcgdiff --out docs/data/posterior_mcgdiff_d8
    $BP --dims 8 --obs-dims 4,8 --num-problems 2 --prior-access score \
        --likelihood phase --methods twisted,tds,dps,daps --out docs/data/posterior_phase_d8
    # twisted on a grid fitted to the prior (docs/benchmarks.md, "A grid fitted to
    # the prior"); the other rows of docs/data/posterior_tables_2026-12-08.jsonl
    for access in score energy; do
        $BP --dims 8,80 --obs-dims 1,2,4 --num-problems 10 --prior-access $access \
            --methods twisted-calibrated --out docs/data/posterior_calibrated_${access}
        $BP --dims 800 --obs-dims 1,2,4 --num-problems 2 --prior-access $access \
            --methods twisted-calibrated --out docs/data/posterior_calibrated_${access}_d800
    done
    $BP --dims 8,80 --obs-dims 4,8 --num-problems 2 --prior-access score --likelihood phase \
        --methods twisted,twisted-calibrated --out docs/data/posterior_calibrated_phase
    $PY benchmarks/ring_posterior.py --methods smc,tds --seeds 3
    $PY benchmarks/ring_posterior.py --access learned-energy --methods smc --seeds 3
    $PY benchmarks/sigma_posterior.py --methods smc --seeds 3
    $PY -c "
from rtk_blackjax.benchmarks import ring
rows = [ring.run(m, 'score', 0, 1000, 100, keep_samples=True) for m in ('smc', 'tds', 'split-gibbs')]
ring.plot_ring(rows, 'docs/posterior_demo.png')
"
fi
