"""Per-segment mixing diagnostics of the inner chains of RTK runs.

The ArviZ converter itself lives in :mod:`rtk_blackjax.interop.arviz`; this module
re-exports it as :func:`to_arviz` and adds the mixing checks.

Two questions, two tools:

* *What did the run produce?* :func:`to_arviz` (the package's one ArviZ converter,
  :mod:`rtk_blackjax.interop.arviz`, re-exported here) turns a
  :class:`~rtk_blackjax.run.SampleResult` (or any other result of the package)
  into ArviZ data: a ``posterior`` group ``(chain, draw, ...)`` and a
  ``sample_stats`` group with NFE, per-segment acceptance and non-finite flags.
  RTK particles are independent, so "chains" are
  just a grouping of them and ``az.summary`` should find R-hat ≈ 1 and ESS ≈ the
  number of samples: anything else means the particles are not i.i.d.
* *Did the inner chains mix?* Each RTK segment solves a sub-problem ``q_k`` with a
  few MCMC steps (:func:`rtk_blackjax.mcmc.rtk.segment_problem`).
  :func:`segment_diagnostics` rebuilds the exact ``q_k`` that some particles of a run
  met on every segment, runs several long chains of the *same* inner kernel with the
  *same* parameters on each from over-dispersed starts, and computes rank R-hat,
  bulk/tail ESS and MCSE with ArviZ. :func:`diagnose` turns that into a per-segment
  table and warns (:class:`MixingWarning`) about segments whose kernel does not mix;
  :func:`plot_segment_diagnostics` writes trace and rank plots to a PNG.

ArviZ versions: the diagnostics here build ``xarray.Dataset`` objects with dims
``("chain", "draw", ...)`` itself and only calls ``az.rhat``, ``az.ess`` and
``az.mcse`` (``method=`` keywords common to arviz 0.23 and 1.x). Plots use
matplotlib directly because ArviZ's plotting API differs between the two.
"""

import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NamedTuple

import arviz as az
import jax
import jax.numpy as jnp
import numpy as np
import xarray as xr
from jax.flatten_util import ravel_pytree

from rtk_blackjax._checks import (
    check_bool,
    check_int,
    check_key,
    check_positive,
)
from rtk_blackjax.diffusion import validate_grid
from rtk_blackjax.interop.arviz import to_arviz
from rtk_blackjax.mcmc import rtk as rtk_module
from rtk_blackjax.mcmc.inner import InnerKernel, mala_inner
from rtk_blackjax.run import chain_key as particle_chain_key
from rtk_blackjax.run import (
    init_particle,
    particle_key,
    run_segments,
    segment_key,
)
from rtk_blackjax.run.layout import position_template
from rtk_blackjax.segment import DEFAULT_CURVATURE, curvature_evaluations
from rtk_blackjax.targets.base import Target
from rtk_blackjax.types import ArrayLikeTree, PRNGKey

__all__ = [
    "MixingWarning",
    "SegmentDiagnostics",
    "to_arviz",
    "segment_diagnostics",
    "diagnostics_from_draws",
    "diagnose",
    "format_table",
    "plot_segment_diagnostics",
]


class MixingWarning(UserWarning):
    """An inner kernel does not mix on some segment targets (R-hat or ESS)."""


# --------------------------------------------------------------------------
# Per-segment mixing of the inner chains
# --------------------------------------------------------------------------


class SegmentDiagnostics(NamedTuple):
    """Mixing of the inner kernel on the segment targets ``q_k`` of a few particles.

    Arrays are NumPy; ``S`` segments examined, ``P`` particles, ``C`` chains,
    ``N`` kept draws, ``D`` coordinates of a flat position.

    segments, t_start, t_end, inner_steps
        ``(S,)``: which segments, their times, and the sampler's inner steps there.
    rhat
        ``(S, P, D)`` rank-normalised split R-hat (``az.rhat``, ``method="rank"``).
    ess_bulk, ess_tail
        ``(S, P, D)`` bulk and tail effective sample sizes over all ``C * N`` draws.
    mcse_mean, sd
        ``(S, P, D)`` Monte Carlo standard error of the mean and the posterior sd.
    acceptance
        ``(S, P)`` mean acceptance of the diagnostic chains after warm-up.
    finite
        ``(S, P)`` whether every draw (and the rebuilt problem) was finite.
    draws
        ``(S, P, C, N, D)`` the kept draws (for plots).
    num_chains, num_draws, num_warmup
        The design.
    num_evaluations
        NFE the diagnostics spent (replaying the particles and all chains).
    """

    segments: np.ndarray
    t_start: np.ndarray
    t_end: np.ndarray
    inner_steps: np.ndarray
    rhat: np.ndarray
    ess_bulk: np.ndarray
    ess_tail: np.ndarray
    mcse_mean: np.ndarray
    sd: np.ndarray
    acceptance: np.ndarray
    finite: np.ndarray
    draws: np.ndarray
    num_chains: int
    num_draws: int
    num_warmup: int
    num_evaluations: int


def _replay(
    rng_key: PRNGKey,
    algorithm: rtk_module.DiffusionAlgorithm,
    template: Any,
    num_particles: int,
):
    """States entering every segment, segment keys and NFE of particles 0..P-1.

    Runs the segment loop and key scheme of :func:`rtk_blackjax.sample`
    (:mod:`rtk_blackjax.run.loop`), so particle ``i`` here is sample ``i`` of
    ``rb.sample(rng_key, algorithm, ...)``.
    """
    num_segments = algorithm.num_segments

    def one(i):
        key = particle_key(rng_key, i)
        state = init_particle(algorithm.init, key, template)
        chain_key = particle_chain_key(key)
        final, after = run_segments(
            algorithm.step,
            state,
            chain_key,
            0,
            num_segments,
            transform=lambda state, info: state,
        )
        # The state entering segment k is the one leaving segment k - 1.
        states = jax.tree.map(
            lambda first, rest: jnp.concatenate([first[None], rest[:-1]]), state, after
        )
        seg_keys = jax.vmap(segment_key, (None, 0))(
            chain_key, jnp.arange(num_segments, dtype=jnp.int32)
        )
        return states, seg_keys, final.num_evaluations

    return jax.vmap(one)(jnp.arange(num_particles, dtype=jnp.uint32))


def _arviz_stats(draws: np.ndarray) -> dict[str, np.ndarray]:
    """R-hat, ESS, MCSE of ``draws`` ``(S, P, C, N, D)`` per ``(S, P, D)``."""
    values = np.moveaxis(draws, (2, 3), (0, 1))  # (C, N, S, P, D)
    dataset = xr.Dataset(
        {"x": (("chain", "draw", "segment", "particle", "coord"), values)}
    )
    out = {
        "rhat": az.rhat(dataset, method="rank"),
        "ess_bulk": az.ess(dataset, method="bulk"),
        "ess_tail": az.ess(dataset, method="tail"),
        "mcse_mean": az.mcse(dataset, method="mean"),
    }
    out = {
        name: np.asarray(ds["x"].transpose("segment", "particle", "coord").values)
        for name, ds in out.items()
    }
    out["sd"] = values.reshape((-1,) + values.shape[2:]).std(axis=0, ddof=1)
    return out


def segment_diagnostics(
    rng_key: PRNGKey,
    target: Target,
    times: Any,
    inner: InnerKernel | None = None,
    num_inner_steps: int | Sequence[int] = 1,
    *,
    predictor: str = "gaussian",
    curvature: str = DEFAULT_CURVATURE,
    secant_scale: float = 1.0,
    num_particles: int = 4,
    num_chains: int = 4,
    num_draws: int = 2000,
    num_warmup: int = 200,
    dispersion: float = 2.0,
    segments: Sequence[int] | None = None,
    dim: int | None = None,
    position_like: ArrayLikeTree | None = None,
) -> SegmentDiagnostics:
    """Run long inner chains on the exact segment targets of an RTK run.

    The sampler runs ``num_inner_steps`` steps per segment from a predictor: too few
    to judge whether the kernel mixes. Here particles ``0 .. num_particles - 1`` of
    the run ``rb.sample(rng_key, rb.rtk(target, times, inner, num_inner_steps,
    ...), ...)`` are replayed; for every segment ``k`` the sub-problem ``q_k`` they
    met is rebuilt with :func:`rtk_blackjax.mcmc.rtk.segment_problem` (same target,
    same inner kernel, same per-particle parameters such as the step size), and
    ``num_chains`` chains of ``num_warmup + num_draws`` steps are run on it from
    over-dispersed starts: the Gaussian approximation of ``q_k`` with its standard
    deviation multiplied by ``dispersion``. R-hat near 1 then means the chains
    forgot their starts; the ESS gives the kernel's autocorrelation time on
    ``q_k``, which :func:`diagnose` compares to ``num_inner_steps``.

    Parameters
    ----------
    rng_key
        The key of the run to examine (diagnostic chains use keys derived from it).
    target, times, inner, num_inner_steps, predictor, curvature, secant_scale
        The RTK sampler, as given to :func:`rtk_blackjax.rtk`.
    num_particles, num_chains, num_draws, num_warmup
        The design: ``num_particles * num_chains`` chains per segment, each of
        ``num_warmup`` discarded and ``num_draws`` kept steps. Even for a kernel
        that mixes, split R-hat fluctuates by about ``tau / num_draws`` (``tau``
        the autocorrelation time), and :func:`diagnose` takes the worst of
        ``num_particles * dim`` of them: keep ``num_draws >= 400 tau`` or the
        1.01 threshold raises false alarms (measured: chessboard, d = 10,
        ``tau ≈ 5``, 16 chains: 13 of 34 segments at 1.010-1.018 with 1000 draws,
        none above 1.008 with 2000).
    dispersion
        Factor (>= 1 for over-dispersion) on the standard deviation of the starts.
    segments
        Segment indices to examine (default: all).
    dim, position_like
        Shape of a position, as in :func:`rtk_blackjax.sample`.

    Returns
    -------
    :class:`SegmentDiagnostics`; summarise it with :func:`diagnose`.

    Examples
    --------
    >>> import jax, jax.numpy as jnp
    >>> import rtk_blackjax as rb
    >>> target = rb.targets.gaussian(jnp.zeros(2), 0.5)
    >>> diag = segment_diagnostics(
    ...     jax.random.key(0), target, rb.geometric_grid(3), rb.mala_inner(), 2,
    ...     num_particles=2, num_chains=2, num_draws=100, num_warmup=10, dim=2,
    ... )
    >>> diag.rhat.shape, diag.draws.shape
    ((3, 2, 2), (3, 2, 2, 100, 2))
    """
    if not isinstance(target, Target):
        raise TypeError(
            "target must be an rtk_blackjax Target (rtk_blackjax.targets.*), got "
            f"{type(target).__name__}"
        )
    rng_key = check_key("rng_key", rng_key)
    times = validate_grid(times)
    inner = mala_inner() if inner is None else inner
    num_particles = check_int("num_particles", num_particles, minimum=1)
    num_chains = check_int("num_chains", num_chains, minimum=2)
    num_draws = check_int("num_draws", num_draws, minimum=4)
    num_warmup = check_int("num_warmup", num_warmup, minimum=0)
    dispersion = check_positive("dispersion", dispersion)
    # Builds (and validates) the very sampler whose run is examined.
    algorithm = rtk_module.as_top_level_api(
        target,
        times,
        inner,
        num_inner_steps,
        predictor=predictor,
        curvature=curvature,
        secant_scale=secant_scale,
    )
    num_segments = algorithm.num_segments
    steps_table = rtk_module._inner_step_schedule(num_inner_steps, num_segments)
    if segments is None:
        segments = list(range(num_segments))
    try:
        segments = [int(k) for k in segments]
    except (TypeError, ValueError) as err:
        raise TypeError(
            f"segments must be a sequence of segment indices, got {segments!r}"
        ) from err
    if not segments or any(not 0 <= k < num_segments for k in segments):
        raise ValueError(
            f"segments must be indices in [0, {num_segments - 1}], got {segments}"
        )
    # Same template rules as rb.sample (dim xor position_like).
    template = position_template(dim, position_like)

    num_steps = num_warmup + num_draws

    def one_problem(k, position, score, seg_key, chain_key):
        problem = rtk_module.segment_problem(
            target,
            times,
            k,
            position,
            score,
            seg_key,
            inner,
            predictor=predictor,
            curvature=curvature,
            secant_scale=secant_scale,
        )
        geometry = problem.geometry
        mean_flat, unravel = ravel_pytree(geometry.gaussian_mean)
        start_key, run_key = jax.random.split(chain_key)
        noise = jax.random.normal(
            start_key, (num_chains,) + mean_flat.shape, mean_flat.dtype
        )
        starts = mean_flat + dispersion * jnp.sqrt(geometry.gaussian_variance) * noise

        def one_chain(start, key):
            init_key, step_key = jax.random.split(key)
            state = inner.init(init_key, unravel(start), problem.logdensity_fn)

            def body(state, i):
                state, info = inner.step(
                    jax.random.fold_in(step_key, i),
                    state,
                    problem.logdensity_fn,
                    **problem.params,
                )
                flat, _ = ravel_pytree(state.position)
                return state, (flat, info.acceptance_rate)

            _, (draws, acceptance) = jax.lax.scan(body, state, jnp.arange(num_steps))
            return draws[num_warmup:], jnp.mean(acceptance[num_warmup:])

        draws, acceptance = jax.vmap(one_chain)(
            starts, jax.random.split(run_key, num_chains)
        )
        finite = (
            jnp.all(jnp.isfinite(draws))
            & jnp.all(jnp.isfinite(mean_flat))
            & jnp.isfinite(geometry.gaussian_variance)
        )
        return draws, acceptance, finite

    @jax.jit
    def run_all(rng_key):
        # One compiled program (replay + every segment's chains): compiling is
        # most of the cost of a small diagnostic run.
        states, seg_keys, replay_nfe = _replay(
            rng_key, algorithm, template, num_particles
        )
        chains_root = jax.random.split(rng_key)[1]  # not a particle's key

        def per_segment(k):
            positions = jax.tree.map(lambda v: v[:, k], states.position)
            scores = jax.tree.map(lambda v: v[:, k], states.score)
            chain_keys = jax.random.split(
                jax.random.fold_in(chains_root, k), num_particles
            )
            return jax.vmap(one_problem, (None, 0, 0, 0, 0))(
                k, positions, scores, seg_keys[:, k], chain_keys
            )

        # Segments one after the other (lax.map): memory stays one segment's.
        out = jax.lax.map(per_segment, jnp.asarray(segments, jnp.int32))
        return out, replay_nfe

    (draws, acceptance, finite), replay_nfe = run_all(rng_key)

    # Honest cost of the diagnostics: the replayed particles, plus per chain its
    # initialisation and every step (and one curvature estimate per rebuilt problem).
    replay_nfe = int(np.asarray(replay_nfe).sum())
    chain_nfe = inner.cost.at_init + num_steps * inner.cost.per_step
    per_problem = curvature_evaluations(curvature)
    diag_nfe = len(segments) * num_particles * (per_problem + num_chains * chain_nfe)
    segments_arr = np.asarray(segments)
    times_np = np.asarray(times)
    return diagnostics_from_draws(
        np.asarray(draws),
        segments=segments_arr,
        t_start=times_np[segments_arr],
        t_end=times_np[segments_arr + 1],
        inner_steps=steps_table[segments_arr],
        acceptance=np.asarray(acceptance).mean(axis=-1),
        finite=np.asarray(finite),
        num_warmup=num_warmup,
        num_evaluations=replay_nfe + diag_nfe,
    )


def diagnostics_from_draws(
    draws: np.ndarray,
    *,
    segments: Sequence[int] | None = None,
    t_start: Sequence[float] | None = None,
    t_end: Sequence[float] | None = None,
    inner_steps: Sequence[int] | None = None,
    acceptance: np.ndarray | None = None,
    finite: np.ndarray | None = None,
    num_warmup: int = 0,
    num_evaluations: int = 0,
) -> SegmentDiagnostics:
    """R-hat, ESS and MCSE (ArviZ) of chains run on segment targets, by any means.

    What :func:`segment_diagnostics` uses on its own chains; call it directly to
    diagnose chains you ran yourself (e.g. another inner kernel).

    Parameters
    ----------
    draws
        ``(S, P, C, N, D)``: segments, particles, chains, draws, coordinates.
    segments, t_start, t_end, inner_steps
        ``(S,)`` labels of the segments (default ``0 .. S-1``, NaN times, 0 steps).
    acceptance, finite
        ``(S, P)`` mean acceptance (default NaN) and finiteness flags (default:
        whether the draws are finite).

    Examples
    --------
    >>> import numpy as np
    >>> draws = np.random.default_rng(0).normal(size=(2, 1, 4, 200, 3))
    >>> diag = diagnostics_from_draws(draws)
    >>> diag.rhat.shape, bool(diag.rhat.max() < 1.02)
    ((2, 1, 3), True)
    """
    num_warmup = check_int("num_warmup", num_warmup, minimum=0)
    num_evaluations = check_int("num_evaluations", num_evaluations, minimum=0)
    draws = np.asarray(draws)
    if draws.ndim != 5:
        raise ValueError(
            "draws must have shape (segments, particles, chains, draws, coords), got "
            f"shape {draws.shape}"
        )
    num_segments, num_particles, num_chains, num_draws, _ = draws.shape
    if num_chains < 2 or num_draws < 4:
        raise ValueError(
            f"draws must hold at least 2 chains of 4 draws, got shape {draws.shape}"
        )

    def labels(name, values, default):
        values = np.asarray(default if values is None else values)
        if values.shape != (num_segments,):
            raise ValueError(
                f"{name} must have one entry per segment ({num_segments}), got "
                f"shape {values.shape}"
            )
        return values

    segments = labels("segments", segments, np.arange(num_segments))
    t_start = labels("t_start", t_start, np.full(num_segments, np.nan))
    t_end = labels("t_end", t_end, np.full(num_segments, np.nan))
    inner_steps = labels("inner_steps", inner_steps, np.zeros(num_segments, int))
    draws_finite = np.isfinite(draws).all(axis=(2, 3, 4))
    finite = draws_finite if finite is None else np.asarray(finite) & draws_finite
    if acceptance is None:
        acceptance = np.full((num_segments, num_particles), np.nan)
    acceptance = np.asarray(acceptance)
    for name, values in (("acceptance", acceptance), ("finite", finite)):
        if values.shape != (num_segments, num_particles):
            raise ValueError(
                f"{name} must have shape {(num_segments, num_particles)}, got "
                f"{values.shape}"
            )
    with warnings.catch_warnings():
        # A chain that never moves has zero variance: ArviZ divides by it. That
        # is a finding (R-hat / ESS come out NaN or inf), not an error.
        warnings.simplefilter("ignore", RuntimeWarning)
        stats = _arviz_stats(draws)
    return SegmentDiagnostics(
        segments=segments,
        t_start=t_start,
        t_end=t_end,
        inner_steps=inner_steps,
        rhat=stats["rhat"],
        ess_bulk=stats["ess_bulk"],
        ess_tail=stats["ess_tail"],
        mcse_mean=stats["mcse_mean"],
        sd=stats["sd"],
        acceptance=acceptance,
        finite=finite,
        draws=draws,
        num_chains=num_chains,
        num_draws=num_draws,
        num_warmup=num_warmup,
        num_evaluations=num_evaluations,
    )


def diagnose(
    diagnostics: SegmentDiagnostics,
    *,
    max_rhat: float = 1.01,
    min_ess: float | None = None,
    warn: bool = True,
):
    """Summarise :func:`segment_diagnostics` per segment; warn about bad segments.

    Parameters
    ----------
    diagnostics
        What :func:`segment_diagnostics` returned.
    max_rhat
        A segment is flagged when any R-hat (over particles and coordinates)
        exceeds it (1.01, Vehtari et al. 2021).
    min_ess
        ... or when any bulk or tail ESS is below it (default ``100 * num_chains``,
        Vehtari et al.'s 400 for four chains).
    warn
        Emit a :class:`MixingWarning` naming the flagged segments.

    Returns
    -------
    A ``pandas.DataFrame``, one row per segment, columns:

    ``segment``, ``t_start``, ``t_end``, ``inner_steps`` (the sampler's)
    ``max_rhat``, ``min_ess_bulk``, ``min_ess_tail``
        Worst values over particles and coordinates.
    ``max_mcse_sd``
        Worst MCSE of the mean relative to the posterior sd.
    ``acceptance``
        Mean acceptance of the diagnostic chains.
    ``tau``
        Integrated autocorrelation time in inner steps,
        ``num_chains * num_draws / ess_bulk``, worst over particles/coordinates.
    ``steps_per_tau``
        ``inner_steps / tau``: roughly how many independent moves the sampler's own
        inner chain makes on ``q_k``. Below 1 the sampler relies on its predictor
        being close to ``q_k``.
    ``ok``, ``problem``
        Whether the segment passed, and why not (``"rhat"``, ``"ess"``,
        ``"nonfinite"``).

    Examples
    --------
    Chains that never leave their (different) starts are flagged:

    >>> import numpy as np, warnings
    >>> rng = np.random.default_rng(0)
    >>> mixed = rng.normal(size=(1, 1, 4, 200, 2))
    >>> stuck = np.arange(4.0)[:, None, None] + 0.01 * mixed  # chain c sits at c
    >>> diag = diagnostics_from_draws(np.concatenate([mixed, stuck]))
    >>> with warnings.catch_warnings(record=True) as caught:
    ...     warnings.simplefilter("always")
    ...     table = diagnose(diag)
    >>> table["problem"].tolist(), caught[0].category.__name__
    (['', 'rhat,ess'], 'MixingWarning')
    """
    import pandas as pd  # ArviZ's dependency; imported here to keep import light

    if not isinstance(diagnostics, SegmentDiagnostics):
        raise TypeError(
            "diagnostics must be what segment_diagnostics returned, got "
            f"{type(diagnostics).__name__}"
        )
    max_rhat = check_positive("max_rhat", max_rhat)
    warn = check_bool("warn", warn)
    if min_ess is None:
        min_ess = 100.0 * diagnostics.num_chains
    min_ess = check_positive("min_ess", min_ess)

    def worst(values, reduce):
        flat = values.reshape(values.shape[0], -1)
        # NaN (a non-finite chain) must not hide behind nanmax/nanmin.
        return np.where(np.isnan(flat).any(axis=1), np.nan, reduce(flat, axis=1))

    total = diagnostics.num_chains * diagnostics.num_draws
    finite = diagnostics.finite.all(axis=1)
    max_r = worst(diagnostics.rhat, np.max)
    ess_b = worst(diagnostics.ess_bulk, np.min)
    ess_t = worst(diagnostics.ess_tail, np.min)
    with np.errstate(divide="ignore", invalid="ignore"):
        tau = total / ess_b
        steps_per_tau = diagnostics.inner_steps / tau
        mcse_sd = worst(diagnostics.mcse_mean / diagnostics.sd, np.max)
    problems = []
    for i in range(len(diagnostics.segments)):
        why = []
        if not finite[i]:
            why.append("nonfinite")
        else:
            # Written so that NaN (e.g. chains that never move) fails the test.
            if not max_r[i] <= max_rhat:
                why.append("rhat")
            if not min(ess_b[i], ess_t[i]) >= min_ess:
                why.append("ess")
        problems.append(",".join(why))
    table = pd.DataFrame(
        {
            "segment": diagnostics.segments,
            "t_start": diagnostics.t_start,
            "t_end": diagnostics.t_end,
            "inner_steps": diagnostics.inner_steps,
            "max_rhat": max_r,
            "min_ess_bulk": ess_b,
            "min_ess_tail": ess_t,
            "max_mcse_sd": mcse_sd,
            "acceptance": diagnostics.acceptance.mean(axis=1),
            "tau": tau,
            "steps_per_tau": steps_per_tau,
            "ok": [not p for p in problems],
            "problem": problems,
        }
    )
    bad = table[~table["ok"]]
    if warn and len(bad):
        listed = ", ".join(
            f"{int(row.segment)} (t={row.t_start:.3g}->{row.t_end:.3g}: "
            f"R-hat {row.max_rhat:.3f}, ESS {min(row.min_ess_bulk, row.min_ess_tail):.0f})"
            for row in bad.itertuples()
        )
        warnings.warn(
            f"inner kernel does not mix on {len(bad)} of {len(table)} segments "
            f"(R-hat > {max_rhat} or ESS < {min_ess:.0f}): segments {listed}. Use "
            "a better-tuned inner kernel (step size), more inner steps, or shorter "
            "segments there.",
            MixingWarning,
            stacklevel=2,
        )
    return table


def format_table(table) -> str:
    """The :func:`diagnose` table as fixed-width text (for logs and reports).

    Examples
    --------
    >>> import pandas as pd
    >>> print(format_table(pd.DataFrame({"segment": [0], "max_rhat": [1.0012]})))
     segment  max_rhat
           0     1.001
    """
    if not hasattr(table, "to_string"):
        raise TypeError(
            "table must be the pandas DataFrame that diagnose returned, got "
            f"{type(table).__name__}"
        )
    return table.to_string(index=False, float_format=lambda v: f"{v:.4g}")


def _ranks(draws: np.ndarray) -> np.ndarray:
    """Ranks (0 .. C*N-1) of draws ``(C, N)`` in the pooled sample."""
    order = np.argsort(draws.ravel(), kind="stable")
    ranks = np.empty(order.size, np.int64)
    ranks[order] = np.arange(order.size)
    return ranks.reshape(draws.shape)


def plot_segment_diagnostics(
    diagnostics: SegmentDiagnostics,
    path: str | Path,
    *,
    segments: Sequence[int] | None = None,
    max_segments: int = 4,
    num_bins: int = 20,
) -> Path:
    """Write trace and rank plots of the diagnostic chains to a PNG file.

    One row per segment: the trace of every chain and the histogram of each chain's
    ranks in the pooled draws (flat when the chains mix, Vehtari et al. 2021), for
    the worst coordinate and particle of that segment (largest R-hat).

    Parameters
    ----------
    diagnostics
        What :func:`segment_diagnostics` returned.
    path
        Output PNG file.
    segments
        Segment indices to plot (default: the ``max_segments`` with the largest
        R-hat).
    num_bins
        Bins of the rank histograms.

    Examples
    --------
    >>> import os, tempfile, numpy as np
    >>> diag = diagnostics_from_draws(np.random.default_rng(0).normal(size=(2, 1, 4, 50, 2)))
    >>> out = plot_segment_diagnostics(diag, os.path.join(tempfile.mkdtemp(), "d.png"))
    >>> out.exists()
    True
    """
    # A bare Figure (no pyplot): no global backend switch, nothing left open.
    from matplotlib.figure import Figure

    if not isinstance(diagnostics, SegmentDiagnostics):
        raise TypeError(
            "diagnostics must be what segment_diagnostics returned, got "
            f"{type(diagnostics).__name__}"
        )
    num_bins = check_int("num_bins", num_bins, minimum=2)
    max_segments = check_int("max_segments", max_segments, minimum=1)
    path = Path(path)
    if path.suffix.lower() != ".png":
        raise ValueError(f"path must name a .png file, got {str(path)!r}")
    examined = [int(k) for k in diagnostics.segments]
    if segments is None:
        worst = np.nan_to_num(
            diagnostics.rhat.reshape(len(examined), -1).max(axis=1), nan=np.inf
        )
        rows = list(np.argsort(-worst, kind="stable")[:max_segments])
    else:
        missing = [k for k in segments if k not in examined]
        if missing:
            raise ValueError(
                f"segments {missing} were not examined; examined segments: {examined}"
            )
        rows = [examined.index(int(k)) for k in segments]

    num_chains = diagnostics.num_chains
    fig = Figure(figsize=(10, 2.4 * len(rows)))
    axes = fig.subplots(len(rows), 2, squeeze=False)
    for row, i in enumerate(rows):
        rhat = np.nan_to_num(diagnostics.rhat[i], nan=np.inf)
        p, d = np.unravel_index(np.argmax(rhat), rhat.shape)
        draws = diagnostics.draws[i, p, :, :, d]  # (C, N)
        ax_trace, ax_rank = axes[row]
        t0, t1 = diagnostics.t_start[i], diagnostics.t_end[i]
        times = f" (t={t0:.3g}->{t1:.3g})" if np.isfinite([t0, t1]).all() else ""
        for c in range(num_chains):
            ax_trace.plot(draws[c], lw=0.6, alpha=0.8)
        ax_trace.set_title(
            f"segment {examined[i]}{times}, particle {p}, coord {d}: "
            f"R-hat {diagnostics.rhat[i, p, d]:.3f}, ESS "
            f"{diagnostics.ess_bulk[i, p, d]:.0f}",
            fontsize=8,
        )
        ax_trace.set_xlabel("inner step (after warm-up)", fontsize=8)
        if np.all(np.isfinite(draws)):
            ranks = _ranks(draws)
            edges = np.linspace(0, ranks.size, num_bins + 1)
            for c in range(num_chains):
                counts, _ = np.histogram(ranks[c], bins=edges)
                ax_rank.stairs(counts, edges, alpha=0.8)
            ax_rank.axhline(draws.shape[1] / num_bins, color="k", ls="--", lw=0.8)
        ax_rank.set_title("rank histogram per chain (flat = mixed)", fontsize=8)
        ax_rank.set_xlabel("rank in pooled draws", fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=90)
    return path
