"""Split Gibbs for a linear-Gaussian likelihood ``y = A x + σ ε``.

:func:`split_gibbs_linear_gaussian` (exact Gaussian likelihood block, SMC
reweighting of the chains across the ρ schedule), the exact relaxed posterior of a
Gaussian prior (:func:`relaxed_gaussian_posterior`), the annealing plan shared with
the NumPyro sampler (:mod:`~rtk_blackjax.posterior.split_gibbs`), the cache of
compiled sweep programs and the validators of the observation model. The method is
described in :mod:`rtk_blackjax.posterior.split_gibbs`.
"""

import jax
import jax.numpy as jnp
import numpy as np
from blackjax.smc.ess import ess as effective_sample_size
from blackjax.smc.resampling import systematic

from rtk_blackjax._cache import ProgramCache, by_identity
from rtk_blackjax._checks import (
    check_bool,
    check_fraction,
    check_int,
    check_key,
    check_positive,
)
from rtk_blackjax.mcmc.inner import InnerKernel
from rtk_blackjax.posterior.base import PosteriorResult
from rtk_blackjax.posterior.prior_block import PriorBlock, prior_block
from rtk_blackjax.run.policy import NonFiniteSamplesError
from rtk_blackjax.targets.base import Target
from rtk_blackjax.types import ArrayLike, PRNGKey

__all__ = ["split_gibbs_linear_gaussian", "relaxed_gaussian_posterior"]


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
