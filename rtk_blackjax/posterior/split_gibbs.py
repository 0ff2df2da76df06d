"""Split Gibbs posterior sampling with a diffusion prior, the prior block solved by RTK.

The posterior ``p(x | y) ∝ p(x) L(y | x)`` is relaxed by a copy ``z`` of ``x``
(plug-and-play split Gibbs, e.g. Xu & Chi 2024, Bouman & Buzzard 2023)::

    π_ρ(x, z) ∝ p(x) · N(z; x, ρ² I) · L(y | z)

and sampled by alternating two blocks:

* **likelihood block** ``z | x ∝ N(z; x, ρ² I) L(y | z)``: exact Gaussian when the
  likelihood is linear-Gaussian (:func:`split_gibbs_linear_gaussian`), otherwise
  BlackJAX MALA on the NumPyro model's log-likelihood plus the coupling
  (:func:`split_gibbs`); further latent sites of a NumPyro model (a noise scale...)
  get their own NUTS block on the unconstrained space.
* **prior block** ``x | z ∝ p(x) N(z; x, ρ² I)``. With the OU process
  ``x_t = a_t x + s_t ε`` the denoising posterior is
  ``p(x | x_t) ∝ p(x) N(x_t / a_t; x, s_t² / a_t²)``, so ``x | z`` *is*
  ``p(x | x_{t*} = a_{t*} z)`` at the time ``t* = ½ log(1 + ρ²)`` where
  ``s_{t*} / a_{t*} = ρ``: a reverse diffusion from ``t*`` to 0 started at
  ``a_{t*} z``, run here with RTK segments (exact up to the inner chains' error).

**ρ schedule.** All ρ live on one *master grid*: a geometric grid from the horizon
``T`` down to ``t_min = t*(rho_final)``, then 0. A sweep at stage ``k`` starts the
reverse diffusion at grid time ``t_k`` (``ρ_k = sqrt(e^{2 t_k} - 1)``) and runs the
grid's segments below it, so every stage shares one compiled RTK kernel and the prior
block at small ρ costs only the few segments below ``t*``. The chains start from
exact-in-law prior draws (the whole grid from ``T``) and are annealed through the grid
points with ``ρ_k <= rho_start`` down to ``rho_final``, where the draws are taken.

**Mode weights (reweighting).** With well separated prior modes a Gibbs chain stops
crossing between them once ρ is smaller than their distance, so plain annealing
freezes the mode weights of some intermediate ρ. For a linear-Gaussian likelihood the
x-marginal of ``π_ρ`` is known up to a constant, ``p(x) N(y; A x, σ² I + ρ² A Aᵀ)``,
and the chains are treated as an SMC population: before each stage every chain is
weighted by ``N(y; Ax, Σ_{ρ_new}) / N(y; Ax, Σ_{ρ_old})`` (no prior evaluation),
resampled when the effective sample size drops below ``ess_threshold``, and always
resampled before the draws. The Gibbs sweeps leave the x-marginal invariant, so this
is a valid SMC sampler and the chains enter the final stage with the right mode
weights; the draws are then an ordinary Gibbs chain at ``rho_final``.

**Residual bias of a finite ρ.** The x-marginal of ``π_ρ`` is the posterior under the
inflated likelihood ``N(y; A x, σ² I + ρ² A Aᵀ)``: ``rho_final`` must be small next to
``σ / ||A||``. For a Gaussian prior the bias is exact and measured in
``docs/posteriors.md``. Small ρ costs mixing: along directions the data do not see,
one sweep is an AR(1) move with coefficient ``≈ 1 / (1 + ρ² / v)`` (``v`` the prior
variance there), which is why the population is prepared by annealing rather than by
a long chain at ``rho_final``.
"""

from collections.abc import Callable

import blackjax
import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist
from blackjax.smc.ess import ess as effective_sample_size
from blackjax.smc.resampling import systematic
from jax.flatten_util import ravel_pytree
from numpyro.distributions import constraints
from numpyro.infer.util import initialize_model

from rtk_blackjax._cache import ProgramCache, by_identity
from rtk_blackjax._checks import (
    check_bool,
    check_callable,
    check_fraction,
    check_int,
    check_key,
    check_positive,
)
from rtk_blackjax.diffusion import geometric_grid
from rtk_blackjax.interop.arviz import to_arviz  # re-exported (one converter)
from rtk_blackjax.mcmc import rtk as rtk_module
from rtk_blackjax.mcmc.adaptation import MALA_TARGET_ACCEPTANCE, adapt_step_size
from rtk_blackjax.mcmc.inner import InnerKernel, mala_inner, score_mala_inner
from rtk_blackjax.posterior.base import PosteriorResult
from rtk_blackjax.posterior.prior import DiffusionPrior
from rtk_blackjax.run.loop import run_segments
from rtk_blackjax.run.policy import NonFiniteSamplesError
from rtk_blackjax.targets.base import Target
from rtk_blackjax.types import Array, ArrayLike, PRNGKey

__all__ = [
    "rho_to_time",
    "time_to_rho",
    "PriorBlock",
    "prior_block",
    "split_gibbs_linear_gaussian",
    "split_gibbs",
    "relaxed_gaussian_posterior",
    "to_arviz",
]


def rho_to_time(rho: ArrayLike) -> Array:
    """The OU time ``t* = ½ log(1 + ρ²)`` at which ``s_t / a_t = ρ``.

    Examples
    --------
    >>> round(float(rho_to_time(1.0)), 4)  # ½ log 2
    0.3466
    """
    return 0.5 * jnp.log1p(jnp.square(jnp.asarray(rho)))


def time_to_rho(t: ArrayLike) -> Array:
    """The coupling ``ρ = s_t / a_t = sqrt(e^{2t} - 1)`` matched by OU time ``t``.

    Examples
    --------
    >>> round(float(time_to_rho(rho_to_time(0.3))), 6)
    0.3
    """
    return jnp.sqrt(jnp.expm1(2.0 * jnp.asarray(t)))


class PriorBlock:
    """The prior block ``x | z ∝ p(x) N(z; x, ρ_k² I)`` on a master grid.

    Built by :func:`prior_block`. ``times`` is the master grid (horizon first,
    ``times[-2] = t*(rho_final)``, ``times[-1] = 0``); stage ``k`` uses
    ``ρ_k = time_to_rho(times[k])`` for ``k < num_segments``.

    ``sample(rng_key, z, k) -> (x, nfe, acceptance, finite)`` draws ``x | z`` for one
    chain by RTK from ``times[k]`` to 0 (``k`` may be traced);
    ``sample_prior(rng_key, dim) -> (x, nfe, acceptance, finite)`` draws from the
    prior itself (the whole grid from ``N(0, I)`` at the horizon). ``nfe`` counts every
    prior score/energy evaluation.
    """

    def __init__(
        self,
        target: Target,
        times: Array,
        kernel: Callable,
        inner: InnerKernel,
        inner_steps: np.ndarray,
    ):
        self.target = target
        self._inner = inner
        self.times = times
        self.kernel = kernel
        self.num_segments = int(times.shape[0]) - 1
        self.inner_steps = inner_steps

    def rho(self, k: ArrayLike) -> Array:
        return time_to_rho(self.times[k])

    def _run(self, rng_key: PRNGKey, position: Array, k0: ArrayLike):
        k0 = jnp.asarray(k0, jnp.int32)
        state = rtk_module.init(position, self.target, self.times, segment=k0)

        def step(key, carry, segment):
            # The RTK step, plus running acceptance and finiteness summaries.
            state, acc_sum, acc_count, finite = carry
            state, info = self.kernel(key, state, segment)
            ran = jnp.isfinite(info.acceptance_rate)
            acc_sum = acc_sum + jnp.where(ran, info.acceptance_rate, 0.0)
            return (state, acc_sum, acc_count + ran, finite & info.is_finite), None

        zero = jnp.zeros((), position.dtype)
        carry = (state, zero, jnp.zeros((), jnp.int32), jnp.asarray(True))
        (state, acc_sum, acc_count, finite), _ = run_segments(
            step, carry, rng_key, k0, self.num_segments - k0
        )
        acceptance = jnp.where(
            acc_count > 0, acc_sum / jnp.maximum(acc_count, 1), jnp.nan
        )
        return state.position, state.num_evaluations, acceptance, finite

    def sample(self, rng_key: PRNGKey, z: Array, k: ArrayLike):
        # p(x | x_t = a_t z) ∝ p(x) N(z; x, s_t²/a_t²) = p(x) N(z; x, ρ_k²).
        a = jnp.exp(-self.times[k])
        return self._run(rng_key, a * z, k)

    def sample_prior(self, rng_key: PRNGKey, dim: int):
        key_start, key_run = jax.random.split(rng_key)
        x_horizon = jax.random.normal(key_start, (dim,), jnp.result_type(float))
        return self._run(key_run, x_horizon, 0)

    def cost(self, k: int) -> int:
        """Prior evaluations of one ``sample`` from stage ``k`` (no tracing)."""
        return rtk_module.expected_nfe(self._inner, np.asarray(self.inner_steps)[k:])


def prior_block(
    prior: Target,
    *,
    rho_final: float,
    num_segments: int = 16,
    horizon: float = 5.0,
    inner: InnerKernel | None = None,
    inner_steps: int = 2,
) -> PriorBlock:
    """Build the RTK prior block on the master grid for ``rho_final``.

    Parameters
    ----------
    prior
        The diffusion prior (:class:`rtk_blackjax.targets.Target`).
    rho_final
        Smallest coupling; the grid's last positive time is ``t*(rho_final)``.
    num_segments
        Segments of the master grid (geometric from ``horizon`` to ``t*``, then 0).
    inner, inner_steps
        Inner kernel of every RTK segment (``mala_inner()`` when the prior has a log
        density, score-only Lobatto MALA otherwise) and its steps per segment.

    Examples
    --------
    >>> import jax, jax.numpy as jnp
    >>> import rtk_blackjax as rb
    >>> block = prior_block(rb.targets.gaussian(jnp.zeros(2), 1.0), rho_final=0.1,
    ...                     num_segments=6)
    >>> block.num_segments, block.cost(5)  # the last segment: 1 + (1 + 1 + 2)
    (6, 5)
    >>> x, nfe, acc, ok = block.sample(  # doctest: +SKIP
    ...     jax.random.key(0), jnp.ones(2), 5)
    """
    if not isinstance(prior, Target):
        raise TypeError(
            "prior must be an rtk_blackjax Target (rtk_blackjax.targets.*), got "
            f"{type(prior).__name__}"
        )
    rho_final = check_positive("rho_final", rho_final)
    num_segments = check_int("num_segments", num_segments, minimum=2)
    horizon = check_positive("horizon", horizon)
    inner_steps = check_int("inner_steps", inner_steps, minimum=0)
    t_min = float(rho_to_time(rho_final))
    if t_min >= horizon:
        raise ValueError(
            f"rho_final={rho_final} needs t*={t_min:.3g}, which must be below the "
            f"horizon={horizon}"
        )
    if inner is None:
        inner = (
            mala_inner()
            if prior.logdensity is not None
            else score_mala_inner(rule="lobatto", num_nodes=2)
        )
    times = geometric_grid(num_segments, horizon, t_min)
    schedule = np.full(num_segments, inner_steps, np.int32)
    kernel = rtk_module.build_kernel(prior, times, inner, schedule)
    return PriorBlock(prior, times, kernel, inner, schedule)


# --- linear-Gaussian likelihood ------------------------------------------------------


def _check_matrix(A, y, sigma):
    A = np.asarray(A, dtype=float) if not isinstance(A, jax.Array) else np.asarray(A)
    if A.ndim != 2 or A.shape[0] < 1 or A.shape[1] < 1:
        raise ValueError(f"A must be a 2-D (d_y, d) matrix, got shape {A.shape}")
    if not np.all(np.isfinite(A)):
        raise ValueError("A must be finite")
    y = np.asarray(y, dtype=float)
    if y.shape != (A.shape[0],):
        raise ValueError(f"y must have shape ({A.shape[0]},) to match A, got {y.shape}")
    if not np.all(np.isfinite(y)):
        raise ValueError("y must be finite")
    sigma = np.asarray(sigma, dtype=float)
    if sigma.ndim == 0:
        sigma = np.full(A.shape[0], float(sigma))
    if sigma.shape != (A.shape[0],) or not np.all(np.isfinite(sigma)):
        raise ValueError(
            f"sigma must be a positive scalar or a ({A.shape[0]},) array, got "
            f"shape {sigma.shape}"
        )
    if np.any(sigma <= 0):
        raise ValueError(f"sigma must be positive, got {sigma.tolist()}")
    dtype = jnp.result_type(float)
    return (
        jnp.asarray(A, dtype),
        jnp.asarray(y, dtype),
        jnp.asarray(sigma**2, dtype),
    )


def relaxed_gaussian_posterior(
    mean: ArrayLike, cov: ArrayLike, A: ArrayLike, y: ArrayLike, sigma, rho: float
) -> tuple[np.ndarray, np.ndarray]:
    """Mean and covariance of the x-marginal of ``π_ρ`` for a Gaussian prior.

    Prior ``N(mean, cov)``, ``y = A x + σ ε``: the x-marginal of the relaxed model
    is the posterior under the likelihood ``N(y; A x, σ² I + ρ² A Aᵀ)``; ``rho = 0``
    gives the true posterior.

    Examples
    --------
    >>> import numpy as np
    >>> m, c = relaxed_gaussian_posterior(np.zeros(1), np.eye(1), np.eye(1),
    ...                                   np.ones(1), 1.0, 0.0)
    >>> float(m[0]), float(c[0, 0])
    (0.5, 0.5)
    """
    mean = np.asarray(mean, float)
    cov = np.asarray(cov, float)
    A = np.asarray(A, float)
    y = np.asarray(y, float)
    sigma2 = np.broadcast_to(np.asarray(sigma, float) ** 2, y.shape)
    noise = np.diag(sigma2) + rho**2 * A @ A.T
    gain = cov @ A.T @ np.linalg.inv(A @ cov @ A.T + noise)
    post_mean = mean + gain @ (y - A @ mean)
    post_cov = cov - gain @ A @ cov
    return post_mean, 0.5 * (post_cov + post_cov.T)


def _annealed_prior_block(
    prior, rho_start, rho_final, num_segments, horizon, inner, inner_steps
) -> "PriorBlock":
    """The RTK prior block of an annealing run from ``rho_start`` to ``rho_final``."""
    block = prior_block(
        prior,
        rho_final=rho_final,
        num_segments=num_segments,
        horizon=horizon,
        inner=inner,
        inner_steps=inner_steps,
    )
    if rho_start < rho_final:
        raise ValueError(
            f"rho_start={rho_start} must be at least rho_final={rho_final}"
        )
    return block


def _raise_if_nonfinite(finite, where: str):
    finite = np.asarray(finite)
    if not finite.all():
        bad = int(np.argmin(finite.reshape(-1)))
        raise NonFiniteSamplesError(
            f"split Gibbs produced non-finite values in {where}: "
            f"{int((~finite).sum())} chain-steps affected (first at flat index {bad})"
        )


def _plan_sweeps(block: PriorBlock, stages, num_draws: int, budget: float) -> int:
    """Annealing sweeps per stage that the per-sample budget buys (0: none).

    Per chain: one prior draw (whole grid), ``num_draws`` sweeps at the last stage,
    and ``s`` sweeps at every annealing stage; the per-sample budget is the total
    divided by ``num_draws``, so ``s`` fills what the draws leave.
    """
    fixed = block.cost(0) + num_draws * block.cost(block.num_segments - 1)
    per_round = sum(block.cost(k) for k in stages)
    return max(0, int((budget * num_draws - fixed) // per_round))


def _stage_subset(eligible: list[int], num: int) -> list[int]:
    """``num`` of the eligible grid indices, evenly spread, always the last one."""
    if num >= len(eligible):
        return list(eligible)
    picks = np.unique(np.round(np.linspace(len(eligible) - 1, 0, num)).astype(int))
    return [eligible[int(i)] for i in picks]


def _plan(block, rho_start, num_stages, num_draws, budget, sweeps_per_stage):
    """Stages and sweeps per stage: every grid point with ``ρ <= rho_start`` while
    the budget buys a sweep at each, otherwise fewer, evenly spread stages."""
    rhos = np.asarray(block.rho(jnp.arange(block.num_segments)))
    eligible = [k for k in range(block.num_segments) if rhos[k] <= rho_start * 1.0001]
    if num_stages is not None:
        num_stages = check_int("num_stages", num_stages, minimum=1)
        eligible = _stage_subset(eligible, num_stages)
    if sweeps_per_stage is not None:
        return eligible, check_int("sweeps_per_stage", sweeps_per_stage, minimum=1)
    for num in range(len(eligible), 0, -1):
        stages = _stage_subset(eligible, num)
        sweeps = _plan_sweeps(block, stages, num_draws, budget)
        if sweeps >= 1 or num_stages is not None:
            break
    if sweeps < 1:
        fixed = block.cost(0) + num_draws * block.cost(block.num_segments - 1)
        need = (fixed + sum(block.cost(k) for k in stages)) / num_draws
        raise ValueError(
            f"prior_nfe_budget={budget:g} is too small: the prior draw, one sweep per "
            f"annealing stage ({len(stages)} stages) and {num_draws} draws need "
            f"{need:.1f} prior evaluations per sample; raise the budget or lower "
            "num_segments / inner_steps"
        )
    return stages, sweeps


def split_gibbs_linear_gaussian(
    rng_key: PRNGKey,
    prior: Target,
    A: ArrayLike,
    y: ArrayLike,
    sigma: ArrayLike,
    *,
    num_chains: int,
    num_draws: int,
    prior_nfe_budget: int,
    rho_start: float = 10.0,
    rho_final: float = 0.05,
    num_segments: int = 32,
    num_stages: int | None = None,
    inner_steps: int = 2,
    sweeps_per_stage: int | None = None,
    reweight: bool = True,
    ess_threshold: float = 0.5,
    horizon: float = 5.0,
    inner: InnerKernel | None = None,
) -> PosteriorResult:
    """Split Gibbs for ``y = A x + σ ε`` with a diffusion prior ``x ~ prior``.

    Likelihood block: ``z | x`` exact (Matheron's rule, one ``d_y × d_y`` Cholesky
    per stage). Prior block: RTK from ``t*(ρ)`` (see the module docstring). The ρ
    schedule is the master grid's points between ``rho_start`` and ``rho_final``;
    with ``reweight`` the chains form an SMC population whose weights keep the
    mode weights right across the schedule.

    Parameters
    ----------
    rng_key
        JAX PRNG key.
    prior
        Diffusion prior target (score, optional log density).
    A, y, sigma
        ``(d_y, d)`` forward matrix, ``(d_y,)`` data, noise std (scalar or ``(d_y,)``).
    num_chains, num_draws
        Shape of the returned draws ``(num_chains, num_draws, d)``.
    prior_nfe_budget
        Prior evaluations per returned sample. It pays, per chain, for one prior
        draw, ``num_draws`` Gibbs sweeps at ``rho_final`` and as many annealing
        sweeps per stage as the rest allows (unless ``sweeps_per_stage`` is given).
        The reported ``prior_nfe`` is the measured count, at most the budget.
    rho_start, rho_final
        Coupling at the first annealing stage and at the draws.
    num_segments, num_stages, inner_steps, horizon, inner
        Master grid size, number of annealing stages (default: every grid point
        with ``ρ <= rho_start`` that the budget buys one sweep at, else fewer,
        evenly spread), RTK inner steps per segment and kernel. The defaults (32
        segments, 2 MALA steps) were picked on the 25-mode benchmark (d = 8,
        d_y = 2): 16 segments left the prior draws' mode weights off by TV 0.16.
    reweight, ess_threshold
        SMC reweighting across stages (see the module docstring) and the relative
        ESS below which the population is resampled.

    Returns
    -------
    PosteriorResult
        ``samples (num_chains, num_draws, d)``; acceptance ``{"prior": MALA
        acceptance of the prior block, "likelihood": 1 (exact)}`` per draw; extras
        with the ρ schedule, sweeps, ESS per stage and the master grid.

    Examples
    --------
    >>> import jax, jax.numpy as jnp
    >>> import rtk_blackjax as rb
    >>> prior = rb.targets.gaussian(jnp.zeros(2), 1.0)
    >>> res = split_gibbs_linear_gaussian(  # doctest: +SKIP
    ...     jax.random.key(0), prior, jnp.eye(1, 2), jnp.array([1.0]), 0.5,
    ...     num_chains=8, num_draws=4, prior_nfe_budget=400, num_segments=6)
    >>> res.samples.shape, res.prior_nfe <= 400  # doctest: +SKIP
    ((8, 4, 2), True)

    (Skipped by the doctest run for its compile time; the same call is in
    ``tests/posterior/test_split_gibbs.py``.)
    """
    rng_key = check_key("rng_key", rng_key)
    A, y, sigma2 = _check_matrix(A, y, sigma)
    num_chains = check_int("num_chains", num_chains, minimum=1)
    num_draws = check_int("num_draws", num_draws, minimum=1)
    budget = check_positive("prior_nfe_budget", prior_nfe_budget)
    rho_start = check_positive("rho_start", rho_start)
    check_fraction("ess_threshold", ess_threshold, allow_zero=False)
    reweight = check_bool("reweight", reweight)
    d_y, dim = A.shape
    block, run, log_lik_all = _linear_gaussian_programs(
        prior,
        (rho_start, rho_final, num_segments, horizon, inner, inner_steps),
        num_chains,
        d_y,
        dim,
        A.dtype,
    )
    stages, sweeps_per_stage = _plan(
        block, rho_start, num_stages, num_draws, budget, sweeps_per_stage
    )
    final_k = block.num_segments - 1
    x_template = jnp.zeros(dim, A.dtype)
    key_init, key_anneal, key_draw = jax.random.split(rng_key, 3)
    x0 = jnp.broadcast_to(x_template, (num_chains, dim))
    x, nfe0, _, ok = run(key_init, x0, 0, 1, True, A, y, sigma2)
    _raise_if_nonfinite(ok, "the initial prior draws")
    total_nfe = int(nfe0)
    likelihood_evals = 0
    log_w = jnp.zeros(num_chains)
    prev_loglik = jnp.zeros(num_chains)
    ess_trace, resampled = [], []
    for j, k in enumerate(stages):
        key_w, key_s = jax.random.split(jax.random.fold_in(key_anneal, j))
        if reweight:
            loglik = log_lik_all(x, k, A, y, sigma2)
            likelihood_evals += num_chains
            log_w = log_w + loglik - prev_loglik
            ess = float(effective_sample_size(log_w))
            do_resample = ess < ess_threshold * num_chains or k == final_k
            if do_resample:
                weights = jax.nn.softmax(log_w)
                idx = systematic(key_w, weights, num_chains)
                x, loglik = x[idx], loglik[idx]
                log_w = jnp.zeros(num_chains)
            ess_trace.append(ess / num_chains)
            resampled.append(bool(do_resample))
        x, nfe, _, ok = run(key_s, x, k, sweeps_per_stage, False, A, y, sigma2)
        _raise_if_nonfinite(ok, f"annealing stage {j} (rho={float(block.rho(k)):.3g})")
        total_nfe += int(nfe)
        likelihood_evals += num_chains * sweeps_per_stage
        if reweight:
            prev_loglik = log_lik_all(x, k, A, y, sigma2)
            likelihood_evals += num_chains

    draws, accs = [], []
    for i in range(num_draws):
        x, nfe, acc, ok = run(
            jax.random.fold_in(key_draw, i), x, final_k, 1, False, A, y, sigma2
        )
        _raise_if_nonfinite(ok, f"draw {i} at rho_final={rho_final}")
        total_nfe += int(nfe)
        draws.append(x)
        accs.append(acc)
    likelihood_evals += num_chains * num_draws
    num_samples = num_chains * num_draws
    draws, acc = jnp.stack(draws), jnp.stack(accs)
    samples = jnp.swapaxes(draws, 0, 1)
    acceptance = {
        "prior": jnp.swapaxes(acc, 0, 1),
        "likelihood": jnp.ones((num_chains, num_draws)),
    }
    extras = {
        "rho_schedule": np.asarray(block.rho(jnp.asarray(stages))),
        "rho_final": float(block.rho(final_k)),
        "sweeps_per_stage": sweeps_per_stage,
        "stage_ess": np.asarray(ess_trace),
        "resampled": np.asarray(resampled),
        "times": np.asarray(block.times),
        "inner_steps": inner_steps,
    }
    return PosteriorResult(
        samples=samples,
        prior_nfe=total_nfe / num_samples,
        likelihood_evals=likelihood_evals / num_samples,
        acceptance=acceptance,
        extras=extras,
    )


_PROGRAMS = ProgramCache(16)


def _linear_gaussian_programs(prior, block_args, num_chains, d_y, dim, dtype):
    """The prior block and the compiled sweep / likelihood programs of a setting.

    The observation model ``(A, y, σ²)`` is an argument of the programs, not a
    constant baked into them, so a benchmark over many problems of one shape
    compiles once (the cache key holds the prior and inner kernel themselves).
    """
    inner = block_args[4]
    key = (by_identity(prior), by_identity(inner), block_args[:4], block_args[5])
    key = key + (num_chains, d_y, dim, str(dtype))

    def build():
        block = _annealed_prior_block(prior, *block_args)
        return (block, *_build_linear_gaussian_programs(block, num_chains, d_y))

    return _PROGRAMS.get(key, build)


def _build_linear_gaussian_programs(block, num_chains, d_y):
    def noise_chol(A, sigma2, rho2):
        cov = rho2 * A @ A.T + jnp.diag(sigma2)
        return jnp.linalg.cholesky(cov)

    def marginal_loglik(x, chol, A, y):
        # log N(y; A x, σ² I + ρ² A Aᵀ) up to a ρ-free constant.
        white = jax.scipy.linalg.solve_triangular(chol, y - A @ x, lower=True)
        return -0.5 * jnp.sum(white**2) - jnp.sum(jnp.log(jnp.diag(chol)))

    def z_block(key, x, rho2, chol, A, y, sigma2):
        # Matheron's rule: z ~ N(x, ρ² I) conditioned on y = A z + σ ε, exactly.
        k1, k2 = jax.random.split(key)
        z0 = x + jnp.sqrt(rho2) * jax.random.normal(k1, x.shape, x.dtype)
        y0 = A @ z0 + jnp.sqrt(sigma2) * jax.random.normal(k2, (d_y,), x.dtype)
        correction = jax.scipy.linalg.cho_solve((chol, True), y - y0)
        return z0 + rho2 * (A.T @ correction)

    horizon_scale = jnp.exp(block.times[0])

    def sweep(key, x, k, chol, from_prior, A, y, sigma2):
        key_z, key_x = jax.random.split(key)
        z = z_block(key_z, x, block.rho(k) ** 2, chol, A, y, sigma2)
        # The very first sweep draws from the prior: x_T = a_T z ~ N(0, I) at k = 0.
        z_prior = horizon_scale * jax.random.normal(key_z, x.shape, x.dtype)
        return block.sample(key_x, jnp.where(from_prior, z_prior, z), k)

    sweep_chains = jax.vmap(sweep, in_axes=(0, 0) + (None,) * 6)

    # One compiled program for every stage, the prior draws and the draws: the
    # stage index, the sweep count and the prior flag are traced values.
    @jax.jit
    def run(key, x, k, num_sweeps, from_prior, A, y, sigma2):
        chol = noise_chol(A, sigma2, block.rho(k) ** 2)

        def body(i, carry):
            x, nfe, _, finite = carry
            keys = jax.random.split(jax.random.fold_in(key, i), num_chains)
            x, n, acc, ok = sweep_chains(keys, x, k, chol, from_prior, A, y, sigma2)
            return x, nfe + jnp.sum(n), acc, finite & jnp.all(ok)

        init = (
            x,
            jnp.zeros((), jnp.int32),
            jnp.zeros(num_chains, x.dtype),
            jnp.asarray(True),
        )
        return jax.lax.fori_loop(0, num_sweeps, body, init)

    @jax.jit
    def log_lik_all(x, k, A, y, sigma2):
        chol = noise_chol(A, sigma2, block.rho(k) ** 2)
        return jax.vmap(marginal_loglik, in_axes=(0, None, None, None))(x, chol, A, y)

    return run, log_lik_all


# --- NumPyro models ------------------------------------------------------------------

# Target acceptance of the adapted likelihood-block kernels (MALA's optimal 0.574,
# NUTS's usual 0.8); step sizes adapt only during annealing, never during the draws.
_MALA_TARGET, _NUTS_TARGET = MALA_TARGET_ACCEPTANCE, 0.8
# Learning rate of the log step sizes, once per annealing sweep.
_ADAPT_RATE = 0.5


class _FlatDiffusionPrior(numpyro.primitives.Messenger):
    """Replace every ``DiffusionPrior`` site's law by a flat one (log density 0).

    The relaxed model puts the prior on ``x`` and the likelihood on ``z``: the
    likelihood block needs the model's log density *without* the prior term.
    """

    def process_message(self, msg):
        if msg["type"] == "sample" and isinstance(msg["fn"], DiffusionPrior):
            msg["fn"] = dist.ImproperUniform(
                constraints.real_vector, (), msg["fn"].event_shape
            )


def _inspect_model(rng_key, model, model_args, model_kwargs):
    """Name and dimension of the one ``DiffusionPrior`` site, and the other latents."""

    def zeros_for_prior(site):
        if isinstance(site["fn"], DiffusionPrior):
            return jnp.zeros(site["fn"].event_shape)
        return None

    traced = numpyro.handlers.trace(
        numpyro.handlers.substitute(
            numpyro.handlers.seed(model, rng_key), substitute_fn=zeros_for_prior
        )
    ).get_trace(*model_args, **model_kwargs)
    prior_sites, others, observed = [], [], []
    for name, site in traced.items():
        if site["type"] == "sample" and site["is_observed"]:
            observed.append(name)
        if site["type"] != "sample" or site["is_observed"]:
            continue
        if isinstance(site["fn"], DiffusionPrior):
            prior_sites.append(name)
        else:
            if getattr(site["fn"], "has_enumerate_support", False) or not (
                jnp.issubdtype(jnp.asarray(site["value"]).dtype, jnp.floating)
            ):
                raise ValueError(
                    f"model site {name!r} is discrete; split_gibbs samples the other "
                    "latent sites with NUTS and needs them continuous"
                )
            others.append(name)
    if len(prior_sites) != 1:
        raise ValueError(
            "model must contain exactly one latent DiffusionPrior sample site, found "
            f"{len(prior_sites)} ({prior_sites})"
        )
    if not observed:
        # Without data every site is latent (an unobserved ``y`` would be sampled
        # from its prior): almost surely the observations were not passed.
        raise ValueError(
            "model has no observed sample site: pass the observations as model "
            "arguments, e.g. split_gibbs(key, model, ..., y=y); got model_args="
            f"{len(model_args)} values, model_kwargs={sorted(model_kwargs)}, "
            f"latent sites {prior_sites + others}"
        )
    name = prior_sites[0]
    return name, traced[name]["fn"], others


def split_gibbs(
    rng_key: PRNGKey,
    model: Callable,
    *model_args,
    num_chains: int,
    num_draws: int,
    prior_nfe_budget: float | None = None,
    rho_start: float = 2.0,
    rho_final: float = 0.1,
    num_segments: int = 12,
    num_stages: int | None = None,
    inner_steps: int = 2,
    sweeps_per_stage: int | None = None,
    likelihood_steps: int = 3,
    horizon: float = 5.0,
    inner: InnerKernel | None = None,
    **model_kwargs,
) -> PosteriorResult:
    """Split Gibbs for a NumPyro model with one :class:`DiffusionPrior` site.

    Per sweep, for each chain:

    1. **likelihood block** ``z | x, rest``: ``likelihood_steps`` BlackJAX MALA steps
       on ``log p(y, rest | x := z) - |z - x|² / (2ρ²)`` (the model's log density with
       the prior site replaced by a flat law, from ``numpyro.infer.util``);
    2. **latent block** ``rest | z`` (other latent sites, e.g. a noise scale): one
       NUTS step on their unconstrained space (Jacobians included);
    3. **prior block** ``x | z``: RTK from ``t*(ρ)``, exactly as in
       :func:`split_gibbs_linear_gaussian`.

    ρ is annealed over the master grid's points from ``rho_start`` to ``rho_final``
    (no reweighting here: the x-marginal of the relaxed model is not available for a
    general likelihood, so mode weights across well separated prior modes are only as
    good as the mixing at the larger ρ). MALA and NUTS step sizes adapt to their
    target acceptance per chain during annealing and are frozen for the draws.

    Parameters
    ----------
    rng_key
        JAX PRNG key.
    model, *model_args, **model_kwargs
        The NumPyro model and its arguments (observed data included).
    num_chains, num_draws
        Shape of the returned draws.
    prior_nfe_budget
        Prior evaluations per returned sample; buys ``sweeps_per_stage`` as in
        :func:`split_gibbs_linear_gaussian`. Default: ``sweeps_per_stage = 5``.
    rho_start, rho_final, num_segments, num_stages, inner_steps, horizon, inner
        ρ schedule and RTK prior block (see :func:`split_gibbs_linear_gaussian`).
    likelihood_steps
        MALA steps of the likelihood block per sweep.

    Returns
    -------
    PosteriorResult
        ``samples`` of the prior site ``(chains, draws, d)``;
        ``extras["sites"]`` the other latent sites, constrained, ``(chains,
        draws, ...)``; acceptance per block ``"prior"``, ``"likelihood"``,
        ``"latent"``; ``likelihood_evals`` counts log-likelihood gradient
        evaluations (MALA steps and NUTS integration steps).

    Examples
    --------
    >>> import jax, jax.numpy as jnp, numpyro, numpyro.distributions as dist
    >>> import rtk_blackjax as rb
    >>> from rtk_blackjax.posterior.prior import DiffusionPrior
    >>> prior = DiffusionPrior(rb.targets.gaussian(jnp.zeros(2), 1.0), nfe=25)
    >>> def model(y=None):
    ...     x = numpyro.sample("x", prior)
    ...     sigma = numpyro.sample("sigma", dist.HalfNormal(1.0))
    ...     numpyro.sample("y", dist.Normal(x[0], sigma), obs=y)
    >>> res = split_gibbs(jax.random.key(0), model, num_chains=4,  # doctest: +SKIP
    ...                   num_draws=3, sweeps_per_stage=1, num_segments=4,
    ...                   y=jnp.array(0.5))
    >>> res.samples.shape, bool((res.extras["sites"]["sigma"] > 0).all())  # doctest: +SKIP
    ((4, 3, 2), True)
    """
    rng_key = check_key("rng_key", rng_key)
    check_callable("model", model, what="a NumPyro model (a callable)")
    num_chains = check_int("num_chains", num_chains, minimum=1)
    num_draws = check_int("num_draws", num_draws, minimum=1)
    likelihood_steps = check_int("likelihood_steps", likelihood_steps, minimum=1)
    rho_start = check_positive("rho_start", rho_start)
    key_model, key_init, key_anneal, key_draw = jax.random.split(rng_key, 4)
    x_name, prior_dist, others = _inspect_model(
        key_model, model, model_args, model_kwargs
    )
    dim = prior_dist.dim
    block = _annealed_prior_block(
        prior_dist.target,
        rho_start,
        rho_final,
        num_segments,
        horizon,
        inner,
        inner_steps,
    )
    if sweeps_per_stage is None and prior_nfe_budget is None:
        sweeps_per_stage = 5
    budget = (
        None
        if prior_nfe_budget is None
        else check_positive("prior_nfe_budget", prior_nfe_budget)
    )
    stages, sweeps_per_stage = _plan(
        block, rho_start, num_stages, num_draws, budget, sweeps_per_stage
    )
    final_k = block.num_segments - 1

    flat_model = _FlatDiffusionPrior(model)
    info = initialize_model(
        key_init, flat_model, model_args=model_args, model_kwargs=model_kwargs
    )
    potential_fn, postprocess_fn = info.potential_fn, info.postprocess_fn
    init_params = info.param_info.z
    rest0 = {name: init_params[name] for name in others}
    u0, unravel_rest = ravel_pytree(rest0)
    has_rest = u0.shape[0] > 0
    mala_kernel = blackjax.mala.build_kernel()
    nuts_kernel = blackjax.nuts.build_kernel()
    dtype = jnp.result_type(float)

    horizon_scale = jnp.exp(block.times[0])

    def sweep(key, carry, k, adapt, from_prior):
        x, z, u, log_eps_z, log_eps_u = carry
        rho2 = block.rho(k) ** 2
        key_z, key_u, key_x = jax.random.split(key, 3)
        rest = unravel_rest(u)

        def logdensity_z(zz):
            params = {x_name: zz, **rest}
            return -potential_fn(params) - 0.5 * jnp.sum((zz - x) ** 2) / rho2

        state = blackjax.mala.init(z, logdensity_z)
        eps_z = jnp.exp(log_eps_z) * rho2

        def mala_step(i, carry):
            state, acc = carry
            state, step_info = mala_kernel(
                jax.random.fold_in(key_z, i), state, logdensity_z, eps_z
            )
            return state, acc + step_info.acceptance_rate

        state, acc_z = jax.lax.fori_loop(
            0, likelihood_steps, mala_step, (state, jnp.zeros((), dtype))
        )
        z = state.position
        acc_z = acc_z / likelihood_steps
        lik_evals = 1 + likelihood_steps
        acc_u = jnp.ones((), dtype)
        if has_rest:

            def logdensity_u(uu):
                return -potential_fn({x_name: z, **unravel_rest(uu)})

            state_u = blackjax.nuts.init(u, logdensity_u)
            state_u, nuts_info = nuts_kernel(
                key_u,
                state_u,
                logdensity_u,
                step_size=jnp.exp(log_eps_u),
                inverse_mass_matrix=jnp.ones_like(u),
            )
            u, acc_u = state_u.position, nuts_info.acceptance_rate
            lik_evals = lik_evals + 1 + nuts_info.num_integration_steps
        # The very first sweep draws x from the prior: x_T = a_T z ~ N(0, I), k = 0.
        z_prior = horizon_scale * jax.random.normal(key_x, z.shape, z.dtype)
        x, nfe, acc_x, ok = block.sample(
            jax.random.fold_in(key_x, 1), jnp.where(from_prior, z_prior, z), k
        )
        z = jnp.where(from_prior, x, z)
        # Robbins-Monro on the log step sizes, during annealing only.
        log_eps_z = jnp.where(
            adapt,
            adapt_step_size(
                log_eps_z, acc_z, _MALA_TARGET, _ADAPT_RATE, log_scale=True
            ),
            log_eps_z,
        )
        log_eps_u = jnp.where(
            adapt,
            adapt_step_size(
                log_eps_u, acc_u, _NUTS_TARGET, _ADAPT_RATE, log_scale=True
            ),
            log_eps_u,
        )
        ok = ok & jnp.all(jnp.isfinite(z)) & jnp.all(jnp.isfinite(u))
        carry = (x, z, u, log_eps_z, log_eps_u)
        return carry, (nfe, lik_evals, acc_x, acc_z, acc_u, ok)

    sweep_chains = jax.vmap(sweep, in_axes=(0, 0, None, None, None))

    # One compiled program for the prior draws, every stage and the draws.
    @jax.jit
    def run(key, carry, k, num_sweeps, adapt, from_prior):
        def body(i, loop):
            carry, nfe, lik, _, finite = loop
            keys = jax.random.split(jax.random.fold_in(key, i), num_chains)
            carry, (n, ln, acc_x, acc_z, acc_u, ok) = sweep_chains(
                keys, carry, k, adapt, from_prior
            )
            return (
                carry,
                nfe + jnp.sum(n),
                lik + jnp.sum(ln),
                (acc_x, acc_z, acc_u),
                finite & jnp.all(ok),
            )

        zero = jnp.zeros((), jnp.int32)
        accs = (jnp.zeros(num_chains, dtype),) * 3
        return jax.lax.fori_loop(
            0, num_sweeps, body, (carry, zero, zero, accs, jnp.asarray(True))
        )

    x0 = jnp.zeros((num_chains, dim), dtype)
    carry = (
        x0,
        x0,
        jnp.broadcast_to(u0, (num_chains,) + u0.shape),
        jnp.full(num_chains, -np.log(dim) / 3.0, dtype),
        jnp.full(num_chains, np.log(0.1), dtype),
    )
    carry, nfe0, _, _, ok = run(
        jax.random.fold_in(key_init, 1), carry, 0, 1, False, True
    )
    _raise_if_nonfinite(ok, "the initial prior draws")
    total_nfe, total_lik = int(nfe0), 0
    for j, k in enumerate(stages):
        carry, nfe, lik, _, ok = run(
            jax.random.fold_in(key_anneal, j), carry, k, sweeps_per_stage, True, False
        )
        _raise_if_nonfinite(ok, f"annealing stage {j} (rho={float(block.rho(k)):.3g})")
        total_nfe += int(nfe)
        total_lik += int(lik)
    xs, us, acc_x, acc_z, acc_u = [], [], [], [], []
    for i in range(num_draws):
        carry, nfe, lik, accs, ok = run(
            jax.random.fold_in(key_draw, i), carry, final_k, 1, False, False
        )
        _raise_if_nonfinite(ok, f"draw {i} at rho_final={rho_final}")
        total_nfe += int(nfe)
        total_lik += int(lik)
        xs.append(carry[0])
        us.append(carry[2])
        acc_x.append(accs[0])
        acc_z.append(accs[1])
        acc_u.append(accs[2])
    xs, us = jnp.stack(xs), jnp.stack(us)
    acc_x, acc_z, acc_u = jnp.stack(acc_x), jnp.stack(acc_z), jnp.stack(acc_u)

    sites = {}
    if others:
        flat_u = us.reshape((-1,) + us.shape[2:])

        def constrain(uu):
            values = postprocess_fn({x_name: jnp.zeros(dim, dtype), **unravel_rest(uu)})
            return {name: values[name] for name in others}

        constrained = jax.jit(jax.vmap(constrain))(flat_u)
        sites = {
            name: jnp.swapaxes(v.reshape((num_draws, num_chains) + v.shape[1:]), 0, 1)
            for name, v in constrained.items()
        }
    num_samples = num_chains * num_draws
    acceptance = {
        "prior": jnp.swapaxes(acc_x, 0, 1),
        "likelihood": jnp.swapaxes(acc_z, 0, 1),
    }
    if has_rest:
        acceptance["latent"] = jnp.swapaxes(acc_u, 0, 1)
    extras = {
        "site": x_name,
        "sites": sites,
        "rho_schedule": np.asarray(block.rho(jnp.asarray(stages))),
        "rho_final": float(block.rho(final_k)),
        "sweeps_per_stage": sweeps_per_stage,
        "times": np.asarray(block.times),
        "inner_steps": inner_steps,
        "likelihood_step_size": np.asarray(jnp.exp(carry[3]) * block.rho(final_k) ** 2),
        "latent_step_size": np.asarray(jnp.exp(carry[4])),
    }
    return PosteriorResult(
        samples=jnp.swapaxes(xs, 0, 1),
        prior_nfe=total_nfe / num_samples,
        likelihood_evals=total_lik / num_samples,
        acceptance=acceptance,
        extras=extras,
    )
