"""The exact 25-mode GMM posterior benchmark: samplers against exact posterior draws.

Settings: ``d ∈ {8, 80, 800}``, ``d_y ∈ {1, 2, 4}``, random problems from
:func:`rtk_blackjax.posterior.gmm.make_problem` (seeds ``0 .. num_problems - 1``).
Metrics per problem, against as many exact posterior draws as the sampler returned:
sliced Wasserstein-2 (``10^4`` random directions) and mode-weight TV (samples
assigned to posterior components by exact responsibilities); the JSON reports
their means over problems and the per-problem values.

Methods, all at the same budget of prior evaluations per returned sample:

* ``smc``: :func:`rtk_blackjax.posterior.smc.smc_linear_gaussian` (RTK-based) on a
  grid from :func:`~rtk_blackjax.posterior.smc.calibrate_grid`, fitted once per
  ``(d, nfe)`` to the prior by a data-free pilot (its total prior evaluations,
  ~2·10^5, are reported as ``calibration_prior_nfe_total``; spread over the sweep's
  samples of that dimension, 1.6-2.5 per sample; not included in ``nfe``);
* ``split-gibbs``: :func:`rtk_blackjax.posterior.split_gibbs.split_gibbs_linear_gaussian`
  (RTK-based);
* ``dps``: :func:`rtk_blackjax.posterior.dps.dps_linear_gaussian`, its guidance scale
  ``ζ`` tuned per ``(d, d_y, nfe)`` on a held-out problem (seed 1000) over
  :data:`~rtk_blackjax.posterior.dps.ZETA_GRID` by sliced W;
* ``nuts``: :func:`rtk_blackjax.posterior.nuts.nuts_linear_gaussian` on the exact
  density; its NFE is whatever NUTS spends (reported, not budgeted);
* ``twisted``: :func:`rtk_blackjax.posterior.twisted_smc` (RTK-based, any prior access,
  any likelihood; its defaults, no per-problem tuning), ``tds`` (its TDS peer),
  ``mcgdiff`` (linear-Gaussian only), ``dps`` and ``daps`` (any likelihood): the
  methods that work from the score alone; ``twisted-calibrated`` is ``twisted`` on
  the grid :func:`~rtk_blackjax.posterior.smc.calibrate_grid` fits to the prior
  with the row's access (its data-free pilot reads the prior-only weights where the
  log density is known, the predictor's mismatch measured from scores with score
  access; its cost is reported as for ``smc``).

Every row says the prior access it ran with (``--prior-access``: ``logdensity``,
``energy`` = log density plus an unknown per-time constant, ``score`` = log density
hidden; :data:`METHOD_ACCESS` is what each method needs), the likelihood
(``--likelihood``: ``linear`` with the closed-form posterior, or ``phase``,
``student_t``, ``poisson`` of ``A x`` scored against
:mod:`rtk_blackjax.posterior.reference`, whose own error is in the row) and the
problem recipe (``--protocol``: ``gmm`` or Cardoso et al.'s ``mcgdiff``, see
:func:`~rtk_blackjax.posterior.gmm.make_problem`; its table cell is sliced W1 ± 1.96
SE over problems).

Command line (``python -m rtk_blackjax.benchmarks.posterior`` takes the same flags)::

    python -m rtk_blackjax bench-posterior --dim 8 --obs-dim 1 --method dps --nfe 100 --json
    python -m rtk_blackjax bench-posterior --sweep --dims 8,80 --obs-dims 1,2,4 \\
        --out docs/posterior_benchmark
    python -m rtk_blackjax bench-posterior --dim 8 --obs-dim 4 --method twisted \\
        --prior-access score --likelihood phase --num-problems 2
"""

import argparse
import json
import math
import time

import jax
import jax.numpy as jnp
import numpy as np

from rtk_blackjax._checks import check_choice, check_int
from rtk_blackjax.metrics import sliced_wasserstein
from rtk_blackjax.posterior import gmm, reference

# (rtk_blackjax.posterior.dps is also the name of the function the package exports)
from rtk_blackjax.posterior.daps import daps
from rtk_blackjax.posterior.dps import ZETA_GRID, dps, dps_linear_gaussian
from rtk_blackjax.posterior.mcgdiff import mcgdiff
from rtk_blackjax.posterior.nuts import nuts_linear_gaussian
from rtk_blackjax.posterior.smc import (
    calibrate_grid,
    segments_for_budget,
    smc_linear_gaussian,
)
from rtk_blackjax.posterior.twisted import (
    GaussianObservation,
    Likelihood,
    linear_gaussian_likelihood,
    tds,
    twisted_smc,
)
from rtk_blackjax.targets.analytic import mixture_target, mixture_variance
from rtk_blackjax.targets.base import ACCESS_LEVELS, from_energy, score_only

__all__ = [
    "METHODS",
    "run_posterior_bench",
    "tune_dps",
    "sweep",
    "format_table",
    "plot_sweep",
    "report",
    "add_cli",
    "add_arguments",
    "main_from_args",
    "main",
]

METHODS = (
    "split-gibbs",
    "smc",
    "twisted",
    "twisted-calibrated",
    "tds",
    "mcgdiff",
    "dps",
    "daps",
    "nuts",
)
#: The least prior access each method needs (ACCESS_LEVELS order: logdensity >
#: energy > score); every row reports the access it ran with.
METHOD_ACCESS = {
    "split-gibbs": "score",
    "smc": "energy",
    "twisted": "score",
    "twisted-calibrated": "score",
    "tds": "score",
    "mcgdiff": "score",
    "dps": "score",
    "daps": "score",
    "nuts": "energy",
}
#: Observation models of ``A x``: ``linear`` (exact posterior in closed form) and
#: the nonlinear ones of :mod:`rtk_blackjax.posterior.reference` (exact reference
#: by importance sampling per component; only the Likelihood-based methods).
LIKELIHOODS = ("linear", "phase", "student_t", "poisson")
_LINEAR_ONLY = ("split-gibbs", "smc", "mcgdiff", "nuts")
_TWISTED_T_MIN = 0.1  # twisted_smc's default, for its calibrated grid
PROTOCOLS = gmm.PROTOCOLS
NUM_DIRECTIONS = 10_000
TUNING_SEED = 1000
# NUTS: chains start from prior draws; draws per chain fill num_samples.
_NUTS_CHAINS = 50
_NUTS_WARMUP = 200

# split Gibbs at small budgets (checked at d = 8, nfe = 100: 99 evaluations, TV 0.02)
_SPLIT_GIBBS_SMALL = (
    {"num_segments": 10, "inner_steps": 1, "num_stages": 4},
    {"num_segments": 6, "inner_steps": 1, "num_stages": 2},
)

_TARGETS: dict = {}
_ZETA: dict = {}
_GRIDS: dict = {}
_REFERENCES: dict = {}
# SMC: one MALA step per segment; the grid is fitted to the prior once per
# (dim, budget) by a data-free pilot run with its own fixed key.
_SMC_INNER_STEPS = 1
_CALIBRATION_SEED = 20261129


def _target(prior, access: str = "logdensity"):
    """The prior as a target of the given access, one per (mixture, access) so that
    compiled samplers are reused across problems with the same prior.

    ``"energy"`` adds the per-time constant ``3 t`` to the exact log density (a
    learned energy is known up to such a constant; every method must be blind to
    it); ``"score"`` hides the log density.
    """
    weights = np.asarray(prior.weights)
    key = (int(prior.dim), access, weights.tobytes())
    if key not in _TARGETS:
        exact = mixture_target(prior)
        if access == "energy":
            # the prior's scale, as a learned network knows it from its data
            # (score access reads it from the mixture that score_only keeps)
            _TARGETS[key] = from_energy(
                lambda x, t: exact.logdensity(x, t) + 3.0 * t,
                variance=float(np.mean(mixture_variance(prior))),
            )
        elif access == "score":
            _TARGETS[key] = score_only(exact)
        else:
            _TARGETS[key] = exact
    return _TARGETS[key]


def _problem(seed, dim, obs_dim, likelihood, protocol):
    if likelihood == "linear":
        return gmm.make_problem(seed, dim, obs_dim, protocol=protocol)
    return reference.make_nonlinear_problem(seed, dim, obs_dim, likelihood)


def _likelihood(problem) -> Likelihood:
    """The problem's observation model as a :class:`Likelihood` of ``x``."""
    A = problem.obs_matrix
    name = getattr(problem, "likelihood", "linear")
    if name == "linear" or name == "linear_gaussian":
        return linear_gaussian_likelihood(A, problem.y, problem.sigma)
    if name == "phase":
        sigma2 = float(problem.sigma) ** 2
        return Likelihood(
            gaussian=GaussianObservation(
                forward=lambda x, u: jnp.abs(A @ x),
                y=problem.y,
                variance=lambda x, u: jnp.full(problem.y.shape, sigma2, A.dtype),
            )
        )
    log_lik_z = problem.log_likelihood_z
    return Likelihood(other=lambda x, u: log_lik_z(A @ x))


def _smc_grid(prior, dim: int, nfe: int):
    """The prior-calibrated SMC grid for a budget, computed once per (dim, budget)."""
    if (id(prior), nfe) not in _GRIDS:
        _GRIDS[id(prior), nfe] = calibrate_grid(
            jax.random.key(_CALIBRATION_SEED),
            prior,
            dim,
            segments_for_budget(nfe, _SMC_INNER_STEPS),
            num_inner_steps=_SMC_INNER_STEPS,
        )
    return _GRIDS[id(prior), nfe]


def _run_method(
    method,
    key,
    problem,
    nfe,
    num_samples,
    zeta,
    access="logdensity",
    twisted_options=None,
):
    prior = _target(problem.prior, access)
    dim = int(problem.prior.dim)
    if method == "twisted-calibrated":
        # the same sampler on a grid fitted to the prior by calibrate_grid's
        # data-free pilot, with the row's access (weights or kernel mismatch)
        key_grid = (id(prior), nfe, "twisted")
        if key_grid not in _GRIDS:
            _GRIDS[key_grid] = calibrate_grid(
                jax.random.key(_CALIBRATION_SEED),
                prior,
                dim,
                (nfe - 1) // (2 + _SMC_INNER_STEPS),
                num_inner_steps=_SMC_INNER_STEPS,
                t_min=_TWISTED_T_MIN,
            )
        grid = _GRIDS[key_grid]
        res = twisted_smc(
            key,
            prior,
            dim,
            _likelihood(problem),
            num_particles=num_samples,
            times=grid.times,
        )
        return res, {
            "ess_min": float(np.min(res.extras["ess"])),
            "grid": "calibrated",
            "calibration_signal": grid.signal,
            "calibration_prior_nfe_total": grid.prior_nfe,
        }
    if method in ("twisted", "tds", "mcgdiff"):
        runner = {"twisted": twisted_smc, "tds": tds, "mcgdiff": mcgdiff}[method]
        options = twisted_options if method == "twisted" else None
        res = runner(
            key,
            prior,
            dim,
            _likelihood(problem),
            num_particles=num_samples,
            prior_nfe_budget=nfe,
            **(options or {}),
        )
        return res, {"ess_min": float(np.min(res.extras["ess"])), **(options or {})}
    if method == "daps":
        res = daps(
            key,
            prior,
            dim,
            _likelihood(problem),
            num_samples=num_samples,
            prior_nfe_budget=nfe,
        )
        return res, {}
    if method == "dps" and not isinstance(problem, gmm.LinearGaussianProblem):
        return _dps(key, problem, nfe, num_samples, zeta, prior), {"zeta": zeta}
    args = (key, prior, problem.obs_matrix, problem.y, problem.sigma)
    if method == "smc":
        grid = _smc_grid(prior, dim, nfe)
        res = smc_linear_gaussian(
            *args,
            num_particles=num_samples,
            times=grid.times,
            num_inner_steps=_SMC_INNER_STEPS,
        )
        return res, {
            "twist": "tweedie",
            "inner_steps": _SMC_INNER_STEPS,
            "grid": "calibrated",
            "calibration_prior_nfe_total": grid.prior_nfe,
        }
    if method == "dps":
        # If the tuned ζ blows up on a problem (non-finite samples), fall back to
        # the next smaller ζ of the grid, and say so in the config.
        smaller = sorted(z for z in ZETA_GRID if z < zeta)[::-1]
        for z in [zeta, *smaller]:
            try:
                res = dps_linear_gaussian(
                    *args, num_samples=num_samples, prior_nfe_budget=nfe, zeta=z
                )
            except FloatingPointError:
                continue
            return res, {"zeta": z, "zeta_tuned": zeta}
        raise FloatingPointError(f"DPS blew up for every zeta <= {zeta}")
    if method == "nuts":
        chains = min(_NUTS_CHAINS, num_samples)
        draws = max(1, num_samples // chains)
        return nuts_linear_gaussian(
            *args, num_chains=chains, num_draws=draws, num_warmup=_NUTS_WARMUP
        ), {"chains": chains, "draws": draws, "warmup": _NUTS_WARMUP}
    from rtk_blackjax.posterior.split_gibbs import split_gibbs_linear_gaussian

    # The split-Gibbs defaults need ~500 prior evaluations per sample; below that,
    # the first configuration of _SPLIT_GIBBS_SMALL that fits the budget is used.
    last_error = None
    for options in ({}, *_SPLIT_GIBBS_SMALL):
        try:
            res = split_gibbs_linear_gaussian(
                *args,
                num_chains=num_samples,
                num_draws=1,
                prior_nfe_budget=nfe,
                **options,
            )
        except ValueError as err:
            if "too small" not in str(err):
                raise
            last_error = err
            continue
        return res, {"chains": num_samples, "draws": 1, **options}
    raise last_error


def _dps(key, problem, nfe, num_samples, zeta, prior):
    """DPS on a nonlinear problem (its Likelihood form), falling back to smaller
    ``ζ`` when the tuned one blows up, as on the linear problems."""
    smaller = sorted(z for z in ZETA_GRID if z < zeta)[::-1]
    for z in [zeta, *smaller]:
        try:
            return dps(
                key,
                prior,
                int(problem.prior.dim),
                _likelihood(problem),
                num_samples=num_samples,
                prior_nfe_budget=nfe,
                zeta=z,
            )
        except FloatingPointError:
            continue
    raise FloatingPointError(f"DPS blew up for every zeta <= {zeta}")


def _reference(problem, key, num_samples):
    """Exact draws and the mode-weight scorer of a problem.

    Linear problems: the closed-form posterior mixture. Nonlinear ones: the
    importance-sampling reference of :mod:`~rtk_blackjax.posterior.reference`
    (cached per problem), whose own mode-weight error ``sum_j SE_j / 2`` is
    returned too.
    """
    if isinstance(problem, gmm.LinearGaussianProblem):
        exact = gmm.sample_posterior(key, problem.posterior, num_samples)
        return exact, lambda x: gmm.mode_tv(problem.posterior, x), 0.0
    cache_key = (
        problem.likelihood,
        np.asarray(problem.y).tobytes(),
        np.asarray(problem.obs_matrix).tobytes(),
        num_samples,
    )
    if cache_key not in _REFERENCES:
        _REFERENCES[cache_key] = problem.reference(key, num_samples)
    ref = _REFERENCES[cache_key]
    error = 0.5 * float(np.sum(np.asarray(ref.component_weights_se)))
    return (
        np.asarray(ref.samples),
        lambda x: reference.component_tv(problem.prior, ref, x),
        error,
    )


def _metrics(problem, samples, key, num_directions):
    """Sliced W2 and W1 against exact draws, mode-weight TV, the reference's error."""
    x = np.asarray(samples).reshape(-1, problem.prior.dim)
    if not np.all(np.isfinite(x)):
        raise FloatingPointError("the sampler returned non-finite samples")
    exact, tv, ref_error = _reference(problem, key, x.shape[0])
    k_dirs = jax.random.fold_in(key, 1)
    sw2 = sliced_wasserstein(x, exact, k_dirs, num_directions=num_directions)
    sw1 = sliced_wasserstein(x, exact, k_dirs, num_directions=num_directions, p=1)
    return sw2, float(tv(x)), sw1, ref_error


def tune_dps(
    dim: int,
    obs_dim: int,
    nfe: int,
    num_samples: int = 1000,
    *,
    access: str = "logdensity",
    likelihood: str = "linear",
    protocol: str = "gmm",
) -> float:
    """Best ``ζ`` of :data:`~rtk_blackjax.posterior.dps.ZETA_GRID` by sliced W on the
    held-out problem of seed :data:`TUNING_SEED` of the same setting (cached)."""
    key = (dim, obs_dim, nfe, access, likelihood, protocol)
    if key not in _ZETA:
        problem = _problem(TUNING_SEED, dim, obs_dim, likelihood, protocol)
        scores = {}
        for zeta in ZETA_GRID:
            try:
                res, _ = _run_method(
                    "dps",
                    jax.random.key(TUNING_SEED),
                    problem,
                    nfe,
                    num_samples,
                    zeta,
                    access,
                )
                scores[zeta] = _metrics(problem, res.samples, jax.random.key(7), 1000)[
                    0
                ]
            except FloatingPointError:
                scores[zeta] = math.inf
        _ZETA[key] = min(scores, key=scores.get)
    return _ZETA[key]


def run_posterior_bench(
    dim: int,
    obs_dim: int,
    method: str,
    nfe: int,
    seed: int | None = None,
    num_samples: int = 2000,
    *,
    num_problems: int = 10,
    num_directions: int = NUM_DIRECTIONS,
    zeta: float | None = None,
    prior_access: str = "logdensity",
    likelihood: str = "linear",
    protocol: str = "gmm",
    twisted_options: dict | None = None,
) -> dict:
    """One method on one setting: metrics averaged over problems (or one ``seed``).

    ``prior_access`` is the access the method gets to the prior (``"score"``: the
    log density hidden; ``"energy"``: known up to a per-time constant);
    ``likelihood`` the observation model of ``A x`` (:data:`LIKELIHOODS`);
    ``protocol`` the problem recipe (:data:`PROTOCOLS`, see
    :func:`~rtk_blackjax.posterior.gmm.make_problem`); ``twisted_options``
    keyword arguments for :func:`~rtk_blackjax.posterior.twisted_smc`
    (``method="twisted"`` only; recorded in the row's ``config``).

    Returns the JSON row: ``method, dim, obs_dim, nfe`` (measured prior evaluations
    per sample), ``nfe_budget, likelihood_evals, sliced_w`` (sliced W2),
    ``sliced_w1`` with ``sliced_w1_se`` (its standard error over problems, for
    MCGdiff's "mean ± 1.96 SE"), ``mode_tv``, ``reference_error`` (the nonlinear
    reference's own mode-weight error; 0 for the closed form), ``wall_s`` (mean
    sampling time per problem, compilation included), ``prior_access``,
    ``likelihood``, ``protocol``, per-problem values, ``failures`` (problems where
    the method produced non-finite values: scored SW = inf, TV = 1) and the
    configuration.

    Examples
    --------
    >>> row = run_posterior_bench(8, 1, "dps", 20, seed=0, num_samples=200,
    ...                           num_directions=100, zeta=1.0)
    >>> row["method"], row["nfe"], row["prior_access"], row["failures"]
    ('dps', 20.0, 'logdensity', [])
    """
    method = check_choice("method", method, METHODS)
    prior_access = check_choice("prior_access", prior_access, ACCESS_LEVELS)
    likelihood = check_choice("likelihood", likelihood, LIKELIHOODS)
    protocol = check_choice("protocol", protocol, PROTOCOLS)
    if twisted_options is not None and (
        method != "twisted" or not isinstance(twisted_options, dict)
    ):
        raise ValueError(
            "twisted_options must be a dict of twisted_smc keyword arguments and "
            f"needs method='twisted', got {twisted_options!r} with method={method!r}"
        )
    needs = METHOD_ACCESS[method]
    if ACCESS_LEVELS.index(prior_access) < ACCESS_LEVELS.index(needs):
        raise ValueError(
            f"method={method!r} needs the prior's {needs} access; "
            f"prior_access={prior_access!r} gives less"
        )
    if likelihood != "linear" and method in _LINEAR_ONLY:
        raise ValueError(
            f"method={method!r} serves the linear-Gaussian likelihood only, "
            f"not likelihood={likelihood!r}"
        )
    if likelihood != "linear" and protocol != "gmm":
        raise ValueError(f"protocol={protocol!r} is defined for likelihood='linear'")
    dim = check_int("dim", dim, minimum=2)
    obs_dim = check_int("obs_dim", obs_dim, minimum=1)
    nfe = check_int("nfe", nfe, minimum=1)
    num_samples = check_int("num_samples", num_samples, minimum=2)
    num_directions = check_int("num_directions", num_directions, minimum=1)
    seeds = (
        [int(seed)]
        if seed is not None
        else list(range(check_int("num_problems", num_problems, minimum=1)))
    )
    if method == "dps" and zeta is None:
        zeta = tune_dps(
            dim,
            obs_dim,
            nfe,
            access=prior_access,
            likelihood=likelihood,
            protocol=protocol,
        )
    sws, sw1s, tvs, ref_errors, nfes, liks, walls = [], [], [], [], [], [], []
    failures: list = []
    config = {}
    for s in seeds:
        problem = _problem(s, dim, obs_dim, likelihood, protocol)
        start = time.perf_counter()
        try:
            res, config = _run_method(
                method,
                jax.random.key(s),
                problem,
                nfe,
                num_samples,
                zeta,
                prior_access,
                twisted_options,
            )
            jax.block_until_ready(res.samples)
        except FloatingPointError as err:
            # A method that blows up on a problem scores the worst: its row says
            # how many problems failed and why (the means include them).
            failures.append({"seed": s, "error": str(err)})
            walls.append(time.perf_counter() - start)
            sws.append(math.inf)
            sw1s.append(math.inf)
            tvs.append(1.0)
            ref_errors.append(0.0)
            continue
        walls.append(time.perf_counter() - start)
        sw, tv, sw1, ref_error = _metrics(
            problem, res.samples, jax.random.key(10_000 + s), num_directions
        )
        sws.append(sw)
        sw1s.append(sw1)
        tvs.append(tv)
        ref_errors.append(ref_error)
        nfes.append(res.prior_nfe)
        liks.append(res.likelihood_evals)
    return {
        "method": method,
        "dim": dim,
        "obs_dim": obs_dim,
        "nfe": float(np.mean(nfes)) if nfes else math.nan,
        "nfe_budget": nfe,
        "likelihood_evals": float(np.mean(liks)) if liks else math.nan,
        "sliced_w": float(np.mean(sws)),
        "mode_tv": float(np.mean(tvs)),
        "wall_s": float(np.mean(walls)),
        "prior_access": prior_access,
        "likelihood": likelihood,
        "protocol": protocol,
        "sliced_w1": float(np.mean(sw1s)),
        "sliced_w1_se": float(np.std(sw1s, ddof=1) / math.sqrt(len(sw1s)))
        if len(sw1s) > 1
        else 0.0,
        "reference_error": float(np.mean(ref_errors)),
        "num_problems": len(seeds),
        "seeds": seeds,
        "num_samples": num_samples,
        "num_directions": num_directions,
        "sliced_w_per_problem": [float(v) for v in sws],
        "sliced_w1_per_problem": [float(v) for v in sw1s],
        "mode_tv_per_problem": [float(v) for v in tvs],
        "failures": failures,
        "config": config,
    }


def _setting(row: dict) -> tuple:
    return (
        row.get("prior_access", "logdensity"),
        row.get("likelihood", "linear"),
        row.get("protocol", "gmm"),
        row["dim"],
        row["obs_dim"],
    )


def _sw_cell(row: dict) -> str:
    # MCGdiff's protocol reports sliced W1 as mean ± 1.96 SE over problems; ours
    # reports the mean sliced W2.
    if row.get("protocol", "gmm") == "mcgdiff":
        return f"{row['sliced_w1']:.3f} ± {1.96 * row['sliced_w1_se']:.3f}"
    return f"{row['sliced_w']:.3f}"


def format_table(rows: list[dict]) -> str:
    """Markdown table: one line per (access, likelihood, protocol, d, d_y), sliced W
    (W2; W1 ± 1.96 SE under MCGdiff's protocol) / mode TV / NFE per method."""
    methods = [m for m in METHODS if any(r["method"] == m for r in rows)]
    header = "| access | likelihood | protocol | d | d_y | " + " | ".join(
        f"{m} SW | {m} TV | {m} NFE" for m in methods
    )
    lines = [header + " |", "|" + "---|" * (5 + 3 * len(methods))]
    for setting in sorted({_setting(r) for r in rows}):
        cells = [str(v) for v in setting]
        for m in methods:
            match = [r for r in rows if _setting(r) == setting and r["method"] == m]
            if match:
                r = match[-1]
                failed = len(r.get("failures", []))
                mark = f" ({failed}/{r['num_problems']} failed)" if failed else ""
                cells += [_sw_cell(r) + mark, f"{r['mode_tv']:.3f}", f"{r['nfe']:.0f}"]
            else:
                cells += ["–", "–", "–"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def plot_sweep(rows: list[dict], path: str, title: str = "") -> None:
    """Grouped bars of sliced W and mode TV per setting and method (log scale)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    methods = [m for m in METHODS if any(r["method"] == m for r in rows)]
    settings = sorted({(r["dim"], r["obs_dim"]) for r in rows})
    fig, axes = plt.subplots(1, 2, figsize=(12, 4))
    width = 0.8 / max(len(methods), 1)
    for j, (metric, label) in enumerate(
        [("sliced_w", "sliced W2"), ("mode_tv", "mode-weight TV")]
    ):
        ax = axes[j]
        for i, m in enumerate(methods):
            vals = []
            for s in settings:
                match = [
                    r for r in rows if (r["dim"], r["obs_dim"], r["method"]) == (*s, m)
                ]
                vals.append(max(match[-1][metric], 1e-4) if match else np.nan)
            ax.bar(np.arange(len(settings)) + i * width, vals, width, label=m)
        ax.set_xticks(np.arange(len(settings)) + 0.4 - width / 2)
        ax.set_xticklabels([f"d={d}\nd_y={k}" for d, k in settings], fontsize=8)
        ax.set_yscale("log")
        ax.set_ylabel(label)
        if metric == "mode_tv":
            ax.axhline(0.05, color="k", ls="--", lw=0.8)
    axes[0].legend(fontsize=8)
    fig.suptitle(title or "25-mode GMM posterior, equal prior NFE")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def sweep(
    dims=(8, 80, 800),
    obs_dims=(1, 2, 4),
    methods=METHODS,
    nfe: int = 100,
    *,
    num_problems: int = 10,
    num_samples: int = 2000,
    num_directions: int = NUM_DIRECTIONS,
    out: str | None = None,
    problems_per_dim: dict | None = None,
    prior_access: str = "logdensity",
    likelihood: str = "linear",
    protocol: str = "gmm",
) -> list[dict]:
    """Run every (d, d_y, method); with ``out``, append ``out.jsonl`` row by row and
    write ``out.md`` (table) and ``out.png`` (plot). ``problems_per_dim`` overrides
    ``num_problems`` for some dimensions (e.g. ``{800: 3}``); the other options are
    :func:`run_posterior_bench`'s."""
    rows = []
    for dim in dims:
        n_prob = (problems_per_dim or {}).get(dim, num_problems)
        for obs in obs_dims:
            for m in methods:
                row = run_posterior_bench(
                    dim,
                    obs,
                    m,
                    nfe,
                    None,
                    num_samples,
                    num_problems=n_prob,
                    num_directions=num_directions,
                    prior_access=prior_access,
                    likelihood=likelihood,
                    protocol=protocol,
                )
                rows.append(row)
                print(json.dumps({k: row[k] for k in list(row)[:10]}), flush=True)
                if out:
                    with open(out + ".jsonl", "a") as fh:
                        fh.write(json.dumps(row) + "\n")
    if out:
        with open(out + ".md", "w") as fh:
            fh.write(format_table(rows) + "\n")
        plot_sweep(rows, out + ".png")
    return rows


def report(jsonl_paths, *, plot_path: str | None = None, title: str = "") -> str:
    """Table (and optional plot) of rows saved by :func:`sweep` in JSONL files."""
    rows = []
    for path in jsonl_paths:
        with open(path) as fh:
            rows += [json.loads(line) for line in fh if line.strip()]
    if plot_path:
        plot_sweep(rows, plot_path, title)
    return format_table(rows)


def _int_list(text: str) -> list[int]:
    return [int(p) for p in text.replace(",", " ").split() if p]


def add_cli(subparsers) -> argparse.ArgumentParser:
    """Add the ``bench-posterior`` subcommand to an argparse ``subparsers``."""
    p = subparsers.add_parser(
        "bench-posterior", help="exact 25-mode GMM posterior benchmark"
    )
    add_arguments(p)
    return p


def add_arguments(p: argparse.ArgumentParser) -> None:
    """Add the benchmark's flags to ``p`` (the subcommand's or a standalone parser)."""
    p.add_argument("--dim", type=int, default=8)
    p.add_argument("--obs-dim", type=int, default=1)
    p.add_argument("--method", choices=METHODS, default="smc")
    p.add_argument("--nfe", type=int, default=100, help="prior evaluations per sample")
    p.add_argument("--seed", type=int, default=None, help="one problem only")
    p.add_argument("--num-problems", type=int, default=10)
    p.add_argument("--num-samples", type=int, default=2000)
    p.add_argument("--num-directions", type=int, default=NUM_DIRECTIONS)
    p.add_argument(
        "--zeta", type=float, default=None, help="DPS scale (default: tuned)"
    )
    p.add_argument(
        "--prior-access",
        choices=ACCESS_LEVELS,
        default="logdensity",
        help="what the methods may read of the prior (score: log density hidden)",
    )
    p.add_argument(
        "--likelihood",
        choices=LIKELIHOODS,
        default="linear",
        help="observation model of A x (nonlinear: importance-sampling reference)",
    )
    p.add_argument(
        "--protocol",
        choices=PROTOCOLS,
        default="gmm",
        help="problem recipe: ours, or MCGdiff's (random weights, SVD-shaped A)",
    )
    p.add_argument(
        "--twisted-options",
        type=json.loads,
        default=None,
        help="JSON keyword arguments for twisted_smc, e.g. '{\"num_inner_steps\": 0}'",
    )
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument(
        "--sweep", action="store_true", help="all --dims x --obs-dims x --methods"
    )
    p.add_argument("--dims", type=_int_list, default=[8, 80, 800])
    p.add_argument("--obs-dims", type=_int_list, default=[1, 2, 4])
    p.add_argument("--methods", default=",".join(METHODS))
    p.add_argument(
        "--problems-800", type=int, default=None, help="fewer problems at d = 800"
    )
    p.add_argument("--out", default=None, help="sweep output prefix (.jsonl/.md/.png)")
    p.add_argument(
        "--report", nargs="+", default=None, help="table of saved JSONL rows"
    )
    p.add_argument("--plot", default=None, help="PNG path for --report")


def main_from_args(args: argparse.Namespace) -> int:
    """Run what ``args`` (from :func:`add_cli`'s parser) asks for; returns an exit code."""
    if args.report:
        print(report(args.report, plot_path=args.plot))
        return 0
    if args.sweep:
        if args.twisted_options is not None:
            raise SystemExit("--twisted-options: single runs only (--method twisted)")
        methods = [m for m in args.methods.split(",") if m]
        bad = [m for m in methods if m not in METHODS]
        if bad:
            raise SystemExit(f"--methods: unknown {bad}; choose from {METHODS}")
        extra = {800: args.problems_800} if args.problems_800 else None
        rows = sweep(
            args.dims,
            args.obs_dims,
            methods,
            args.nfe,
            num_problems=args.num_problems,
            num_samples=args.num_samples,
            num_directions=args.num_directions,
            out=args.out,
            problems_per_dim=extra,
            prior_access=args.prior_access,
            likelihood=args.likelihood,
            protocol=args.protocol,
        )
        print(format_table(rows))
        return 0
    row = run_posterior_bench(
        args.dim,
        args.obs_dim,
        args.method,
        args.nfe,
        args.seed,
        args.num_samples,
        num_problems=args.num_problems,
        num_directions=args.num_directions,
        zeta=args.zeta,
        prior_access=args.prior_access,
        likelihood=args.likelihood,
        protocol=args.protocol,
        twisted_options=args.twisted_options,
    )
    if args.json:
        print(json.dumps(row))
    else:
        print(format_table([row]))
    return 0


def main(argv=None) -> int:
    """``python -m rtk_blackjax.benchmarks.posterior ...`` (same flags as the subcommand)."""
    parser = argparse.ArgumentParser(prog="python -m rtk_blackjax.benchmarks.posterior")
    add_arguments(parser)
    return main_from_args(parser.parse_args(argv))


if __name__ == "__main__":
    raise SystemExit(main())
