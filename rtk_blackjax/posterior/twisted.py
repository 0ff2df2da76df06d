"""Twisted SMC through the reverse diffusion for any prior access and any likelihood.

The engine behind ``rtk_blackjax.posterior.sample(method="smc")`` and its TDS peer
(``method="tds"``). The prior is a diffusion :class:`~rtk_blackjax.targets.Target`
of any :attr:`~rtk_blackjax.targets.Target.access`; the likelihood a
:class:`Likelihood`: Gaussian observations ``y ~ N(f(x, θ), diag σ²(θ))`` of any
(nonlinear) forward map ``f``, any other log-likelihood term (Poisson, Student-t,
``numpyro.factor``...), and further latent parameters ``θ`` (noise scales, operator
parameters) on an unconstrained space with their log prior. :mod:`~.model` builds
one from a NumPyro model.

Particles ``(x, θ)`` walk the reverse-time grid ``T = t_0 > ... > t_K = 0`` through
the twisted targets ``π_k(x, θ) ∝ p_{t_k}(x) p(θ) p̃_k(y | x, θ)`` with the twist

    p̃_k(y | x, θ) = N(y; f(x̂₀, θ), diag σ²(θ) + r_k² J Jᵀ) · L_other(y | x̂₀, θ),

``x̂₀`` Tweedie's estimate ``(x + s_t² score(x, t)) / a_t``, ``J = ∂f/∂x₀`` at ``x̂₀``
(the variance inflation linearises ``f``; ``J = A`` for a linear map) and ``r_t² =
V s_t² / (a_t² V + s_t²)`` the ``Var(x₀ | x_t)`` of a Gaussian prior of variance
``V``. At ``t_K = 0`` the twist is the likelihood itself, so ``π_K`` is the posterior.
Non-Gaussian terms are taken at ``x̂₀`` without inflation (as TDS does).

**Weights by access.**

* ``"logdensity"`` / ``"energy"``: each step is an SMC-sampler step on the pair
  ``(x_{k-1}, x_k)`` with the OU forward kernel as backward kernel, weight
  ``p_{t_k}(x_k) N(x_{k-1}; a x_k, s²) p̃_k / (p_{t_{k-1}}(x_{k-1}) p̃_{k-1} G)``:
  only differences of ``log p_t`` at one time enter the normalised weights, so a
  learned energy's unknown per-time constant cancels. The particle system is
  consistent for the **true posterior** ``p_0(x) p(θ) L(y | x, θ)``.
  A learned energy is not a density at ``t = 0`` (it is trained on noisy data,
  ``t >= t_min``; on the digits network MALA chains on ``E(·, 0)`` leave the data,
  and the last segment's exact weights collapsed to one particle of 64), and at
  small ``t`` its differences between particles interpolate between training
  points (on digits, exact weights on ``t ∈ [0.003, 0.2]`` fail simulation-based
  calibration). For a learned energy (``Target.t_min > 0``), segments ending
  below ``exact_until`` (default: where the OU noise reaches the prior's variance,
  ``s_t² = V``) therefore take the score-access weights below, and the default
  grid runs down to the network's ``t_min``: consistent for the posterior of the
  prior ``p_{exact_until}`` followed by the Gaussian reverse kernels from there.
* ``"score"``: ``log p_t`` is not available, so the prior is *defined* by its
  Gaussian reverse kernels, as in TDS: ``Q_k(x_k | x_{k-1}) = N(m_k, v_k I)`` with
  RTK's Tweedie mean and secant-curvature variance (:mod:`rtk_blackjax.segment`).
  Weight ``Q_k p̃_k / (p̃_{k-1} G)``. The system is consistent for
  ``p̂_0(x) p(θ) L(y | x, θ)`` where ``p̂_0`` is the law of the chain
  ``x_T ~ N(0, I), x_k ~ Q_k`` on this grid: the posterior of the prior that the
  predictor-only sampler draws from. Its distance to the true posterior is that
  sampler's discretisation error (measured in docs/posteriors.md).

**One step** ``k-1 → k``: (1) propose ``x_k`` from ``G``: the prior's Gaussian
reverse kernel tilted by the twist (Gaussian terms: ``f`` linearised at
``x̂₀(x_{k-1})`` and the Gaussian conditioned in closed form by Matheron's rule;
other terms: a gradient shift of the mean); (2) weight; (3) resample (BlackJAX's
systematic resampling) when the ESS drops below ``ess_threshold · N``; (4) move
``x_k`` with MALA on its conditional target (the exact or Gaussian reverse kernel
times the twist); (5) move ``θ`` by random-walk Metropolis on ``p(θ) p̃_k(y | x_k,
θ)`` (resample-move: invariant for ``π_k``, no prior evaluation since the score at
``x_k`` is cached), the proposal scaled by the particles' spread. MALA drifts along
a proxy gradient (the twist's gradient through ``x̂₀`` needs the score's Jacobian;
it is replaced by the slope ``β`` of the predictor's Tweedie map); the Metropolis
test uses the same proxy in both directions, so it is exact.

**TDS** (Wu et al. 2023) is the same engine with its own choices
(:func:`tds`): DDPM reverse kernels (the exponential integrator of the reverse SDE),
proposal ``N(μ + σ² ∇_x log p̃(y | x), σ² I)`` with the gradient through the score
by a VJP (counted as one prior evaluation), no variance inflation, no MCMC moves.

**Cost** per particle (prior evaluations, what :attr:`PosteriorResult.prior_nfe`
reports): ours ``1 + K (2 + num_inner_steps)`` (``1 + 2 K + num_inner_steps ·
mala_segments`` with MALA on the last segments only); TDS ``2 + 2 K``. The log density and
the score at one point count once (an energy network's value and gradient come
from one backward pass). Likelihood evaluations count forward-map or
log-likelihood calls; a Jacobian of ``f`` counts ``d_y`` more.
"""

import math
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from blackjax.smc.ess import ess as effective_sample_size
from blackjax.smc.resampling import systematic

from rtk_blackjax._cache import ProgramCache, by_identity
from rtk_blackjax._checks import (
    check_choice,
    check_fraction,
    check_int,
    check_key,
    check_nonnegative,
    check_positive,
)
from rtk_blackjax.diffusion import (
    ou_mean_coef,
    ou_variance,
    transition_coefs,
    validate_grid,
)
from rtk_blackjax.posterior.base import PosteriorResult, budget_grid
from rtk_blackjax.segment import CURVATURES, gaussian_approximation
from rtk_blackjax.targets.analytic import mixture_variance
from rtk_blackjax.targets.base import Target
from rtk_blackjax.types import Array, ArrayLike, PRNGKey

__all__ = [
    "GaussianObservation",
    "Likelihood",
    "TwistedSMCInfo",
    "linear_gaussian_likelihood",
    "twisted_smc",
    "tds",
    "collapse_warning",
    "lineage_warning",
    "lineages",
    "mid_time_index",
]

_LOG_2PI = math.log(2 * math.pi)


class GaussianObservation(NamedTuple):
    """Observations ``y ~ N(forward(x, θ), diag(variance(θ)))``.

    forward
        ``forward(x, u) -> (d_y,)``: the (possibly nonlinear) forward map of the flat
        ``x`` and the flat unconstrained parameters ``u``.
    y
        ``(d_y,)`` observed values.
    variance
        ``variance(x, u) -> (d_y,)`` noise variances (positive; may depend on ``x``,
        the twist then takes them at Tweedie's estimate).
    """

    forward: Callable
    y: Array
    variance: Callable


class Likelihood(NamedTuple):
    """``L(y | x, θ)`` and the latent parameters ``θ`` of a posterior problem.

    gaussian
        The Gaussian observations (variance-inflated in the twist), or ``None``.
    other
        ``other(x, u) -> scalar``: every other log-likelihood term, or ``None``.
    num_params
        Size of the flat unconstrained parameter vector ``u`` (0: none).
    log_prior
        ``log_prior(u)``: log density of ``u`` (the constrained prior and the
        transform's log-Jacobian); ``None`` when ``num_params == 0``.
    init_params
        ``init_params(key) -> u``: a draw of ``u`` from that prior.
    constrain
        ``constrain(u) -> dict`` of constrained sites (what results report).
    data
        The arrays the functions above read (a NumPyro model's array arguments:
        the observations...), or ``None``.
    bind
        ``bind(data) -> Likelihood``: this likelihood for other data of the same
        shapes, built with JAX operations only, or ``None``. The samplers key their
        compiled programs on ``bind`` and pass ``data`` as an argument, so one
        program serves every observation of a model
        (:func:`~rtk_blackjax.posterior.model.model_likelihood` sets both);
        without it a program is keyed on the likelihood object itself.
    """

    gaussian: GaussianObservation | None = None
    other: Callable | None = None
    num_params: int = 0
    log_prior: Callable | None = None
    init_params: Callable | None = None
    constrain: Callable | None = None
    data: Any = None
    bind: Callable | None = None

    def log_likelihood(self, x: Array, u: Array) -> Array:
        """The exact ``log L(y | x, θ)`` (the twist at ``t = 0``)."""
        total = jnp.zeros((), x.dtype)
        if self.gaussian is not None:
            g = self.gaussian
            var = g.variance(x, u)
            r = g.y - g.forward(x, u)
            total = total - 0.5 * jnp.sum(r**2 / var + jnp.log(var) + _LOG_2PI)
        if self.other is not None:
            total = total + self.other(x, u)
        return total

    @property
    def obs_dim(self) -> int:
        return 0 if self.gaussian is None else int(self.gaussian.y.shape[0])


def likelihood_program(
    cache: ProgramCache, key: tuple, likelihood: Likelihood, build: Callable
) -> tuple[Callable, Any]:
    """``(run, data)``: a sampler's compiled ``run(rng_key, data)`` for
    ``likelihood``, and the data to call it with.

    ``build(bind)`` compiles the program for the likelihood ``bind(data)``; it is
    cached under ``key`` (the sampler's static configuration) and the likelihood's
    structure: its :attr:`~Likelihood.bind` when it has one (one program for every
    observation of a model), else the likelihood object itself.
    """
    if likelihood.bind is None:
        return cache.get(
            (by_identity(likelihood), *key), lambda: build(lambda _: likelihood)
        ), None
    return cache.get(
        (by_identity(likelihood.bind), *key), lambda: build(likelihood.bind)
    ), likelihood.data


def linear_gaussian_likelihood(A: ArrayLike, y: ArrayLike, sigma: float) -> Likelihood:
    """``y = A x + σ ε`` as a :class:`Likelihood` (no latent parameters).

    Examples
    --------
    >>> import jax.numpy as jnp
    >>> lik = linear_gaussian_likelihood(jnp.eye(2), jnp.zeros(2), 1.0)
    >>> round(float(lik.log_likelihood(jnp.zeros(2), jnp.zeros(0))), 4)
    -1.8379
    """
    A = jnp.asarray(A, jnp.result_type(float))
    y = jnp.asarray(y, A.dtype)
    if A.ndim != 2 or y.shape != (A.shape[0],):
        raise ValueError(
            f"A must be (d_y, d) and y (d_y,), got shapes {A.shape} and {y.shape}"
        )
    sigma2 = check_positive("sigma", sigma) ** 2
    return Likelihood(
        gaussian=GaussianObservation(
            forward=lambda x, u: A @ x,
            y=y,
            variance=lambda x, u: jnp.full(y.shape, sigma2, A.dtype),
        )
    )


class TwistedSMCInfo(NamedTuple):
    """Per-segment statistics: relative ESS (before resampling), whether it
    resampled, mean MALA and parameter-move acceptance, log evidence increment,
    and each particle's parent index (the identity where it did not resample;
    :func:`lineages` traces them back from the draws)."""

    ess: Array
    resampled: Array
    acceptance_rate: Array
    param_acceptance_rate: Array
    log_evidence_increment: Array
    parent: Array


class _Config(NamedTuple):
    transition: str
    curvature: str
    tilt: str
    inflate: bool
    curvature_probes: int
    exact_weights: bool
    exact_until: float | None
    num_inner_steps: int
    mala_segments: int | None
    num_param_steps: int
    step_scale: float
    threshold: float
    prior_variance: float


def _check_likelihood(likelihood: Likelihood) -> Likelihood:
    if not isinstance(likelihood, Likelihood):
        raise TypeError(
            "likelihood must be an rtk_blackjax.posterior.twisted.Likelihood, got "
            f"{type(likelihood).__name__}"
        )
    if likelihood.gaussian is None and likelihood.other is None:
        raise ValueError("likelihood has neither Gaussian observations nor other terms")
    if likelihood.num_params > 0 and (
        likelihood.log_prior is None or likelihood.init_params is None
    ):
        raise ValueError(
            "likelihood has latent parameters (num_params > 0) but no log_prior / "
            "init_params"
        )
    return likelihood


def _default_variance(prior: Target, prior_variance) -> float:
    if prior_variance is not None:
        return check_positive("prior_variance", prior_variance)
    if prior.variance is not None:
        return float(prior.variance)
    if prior.mixture is not None:
        return float(np.mean(mixture_variance(prior.mixture)))
    return 1.0


def _default_exact_until(prior: Target, exact_until, variance: float) -> float:
    """Below which time the prior's log density leaves the weights.

    An analytic log density (``prior.t_min == 0``) is exact at every time: 0. A
    learned network (``t_min > 0``) enters them only where the diffusion has
    noised the data to at least its own variance, ``s_t² ≥ V`` (never when ``V
    ≥ 1``): below, its differences between particles interpolate between training
    points. Measured on the digits energy prior: its weights on ``t ∈ [0.003,
    0.2]`` fail SBC (corrected p down to 1e-15), the Gaussian kernels there pass.
    """
    if exact_until is not None:
        return float(exact_until)
    if prior.t_min == 0.0:
        return 0.0
    if variance >= 1.0:
        return math.inf
    return max(float(prior.t_min), -0.5 * math.log1p(-variance))


def _default_grid_end(prior: Target, t_min) -> float:
    """The budget grid's last positive time: a learned network's smallest training
    time (the last Gaussian kernel then spreads by ``s_t² ≈ 2 t_min``, negligible
    against the observation noise), else 0.1 (tuned on the ring scenario)."""
    if t_min is not None:
        return t_min
    trained_down_to = float(getattr(prior, "t_min", 0.0))  # non-Targets fail later
    return trained_down_to if trained_down_to > 0.0 else 0.1


def twisted_smc(
    rng_key: PRNGKey,
    prior: Target,
    dim: int,
    likelihood: Likelihood,
    *,
    num_particles: int,
    prior_nfe_budget: int | None = None,
    times: ArrayLike | None = None,
    num_inner_steps: int = 1,
    num_param_steps: int = 3,
    step_scale: float = 1.0,
    ess_threshold: float = 0.5,
    horizon: float = 8.0,
    t_min: float | None = None,
    prior_variance: float | None = None,
    curvature_probes: int = 8,
    exact_until: float | None = None,
    mala_segments: int | None = None,
    curvature: str = "secant",
) -> PosteriorResult:
    """RTK-based twisted SMC: any prior access, any :class:`Likelihood`.

    Parameters
    ----------
    rng_key
        JAX PRNG key.
    prior
        Diffusion prior; its :attr:`~rtk_blackjax.targets.Target.access` selects the
        weights (module docstring).
    dim
        Dimension of ``x``.
    likelihood
        The observation model and latent parameters (:class:`Likelihood`).
    num_particles
        Particles; the result holds them after a final resampling.
    prior_nfe_budget
        Prior evaluations per particle: ``K = (budget - 1) // (2 + num_inner_steps)``
        segments of a geometric grid. Ignored when ``times`` is given.
    times
        Explicit reverse-time grid (horizon first, ending at 0).
    num_inner_steps
        MALA steps on ``x`` per segment (0: predictor and weights only).
    mala_segments
        Run the MALA steps on the last ``mala_segments`` segments only (default:
        every segment). The budget then buys ``K = (budget - 1 -
        num_inner_steps · mala_segments) // 2`` segments: a finer grid, which
        is what the predictor chain's prior ``p̂₀`` (score access) gains from,
        for fewer moves (measured trade-off in docs/benchmarks.md).
    num_param_steps
        Random-walk Metropolis steps on ``θ`` per segment (no prior evaluation).
    step_scale
        MALA step ``step_scale · d^{-1/3} · v_min``, ``v_min`` the smallest variance
        of the tilted Gaussian proposal.
    ess_threshold
        Resample when ``ESS < ess_threshold · num_particles``.
    horizon, t_min
        The budget's grid: geometric from ``horizon`` to ``t_min``, then to 0 (as
        :func:`~rtk_blackjax.posterior.smc_linear_gaussian`). Default ``t_min``: a
        learned network's smallest training time
        (:attr:`~rtk_blackjax.targets.Target.t_min`), so that the last Gaussian
        kernel does not absorb the observation noise (on the digits prior with
        0.1, the noise scale's posterior came out 20 % small), else 0.1.
    prior_variance
        ``V`` of the twist's inflation: the prior's per-coordinate variance. Default
        the target's :attr:`~rtk_blackjax.targets.Target.variance` (a learned
        network's training data), else its mixture's mean variance, else 1.
    curvature_probes
        Fixed antithetic directions that add a nonlinear forward map's curvature to
        the twist's covariance (0: the linearisation only; no effect on a linear
        map). Each costs two forward-map evaluations per twist evaluation.
    exact_until
        Segments that end below this time are weighted with the prior's Gaussian
        reverse kernel (as with score access), those at or above it with its log
        density. Default: 0 for an analytic log density (exact throughout); for a
        learned energy (``Target.t_min > 0``) the time where the OU noise reaches
        the prior's variance, ``s_t² = V`` (never when ``V >= 1``): below it the
        network's energy differences between particles are not trusted (module
        docstring). No effect with score access.
    curvature
        The prior reverse kernel's curvature estimate
        (:func:`rtk_blackjax.segment.gaussian_approximation`): ``"secant"`` (one
        isotropic variance), ``"diagonal"`` (one variance per coordinate, from the
        same one score call; the MALA steps are then preconditioned with the
        tilted proposal's per-coordinate variances) or ``"none"``.

    Returns
    -------
    PosteriorResult
        ``samples`` ``(num_particles, 1, dim)``; ``extras``: ``params`` (flat ``u``,
        ``(num_particles, num_params)``), ``sites`` (constrained, when the likelihood
        has ``constrain``), ``ess``, ``resampled``, ``acceptance_per_segment``,
        ``param_acceptance_per_segment``, ``log_evidence``, ``times``,
        ``lineages`` (per grid time, the distinct particles the draws descend
        from: :func:`lineages`), ``consistent_for`` (``"posterior"``,
        ``"predictor-chain prior"``, or ``"predictor-chain prior below t = …"``
        with ``exact_until > 0``).

    Examples
    --------
    >>> import jax, jax.numpy as jnp
    >>> import rtk_blackjax as rb
    >>> prior = rb.targets.score_only(rb.targets.gaussian(jnp.zeros(2), 1.0))
    >>> lik = linear_gaussian_likelihood(jnp.array([[1.0, 0.0]]), jnp.array([1.0]), 0.5)
    >>> res = twisted_smc(jax.random.key(0), prior, 2, lik, num_particles=256,
    ...                   prior_nfe_budget=31)
    >>> res.samples.shape, res.prior_nfe, res.extras["consistent_for"]
    ((256, 1, 2), 31.0, 'predictor-chain prior')

    MALA on the last 4 segments only: 13 segments instead of 10 for the same budget.

    >>> res = twisted_smc(jax.random.key(0), prior, 2, lik, num_particles=256,
    ...                   prior_nfe_budget=31, mala_segments=4)
    >>> res.prior_nfe, res.extras["times"].shape[0] - 1
    (31.0, 13)
    """
    num_inner_steps = check_int("num_inner_steps", num_inner_steps, minimum=0)
    if mala_segments is not None:
        mala_segments = check_int("mala_segments", mala_segments, minimum=0)
    config = _Config(
        transition="rtk",
        curvature=check_choice("curvature", curvature, CURVATURES),
        tilt="linearised",
        inflate=True,
        curvature_probes=check_int("curvature_probes", curvature_probes, minimum=0),
        exact_weights=prior.access != "score" if isinstance(prior, Target) else False,
        exact_until=(
            None
            if exact_until is None
            else check_nonnegative("exact_until", exact_until)
        ),
        num_inner_steps=num_inner_steps,
        mala_segments=mala_segments,
        num_param_steps=check_int("num_param_steps", num_param_steps, minimum=0),
        step_scale=check_positive("step_scale", step_scale),
        threshold=check_fraction("ess_threshold", ess_threshold, allow_zero=False),
        prior_variance=0.0,
    )
    return _run(
        rng_key,
        prior,
        dim,
        likelihood,
        config,
        num_particles=num_particles,
        prior_nfe_budget=prior_nfe_budget,
        # MALA on every segment: its steps are part of each segment's cost; on the
        # last mala_segments only: a fixed cost, paid before the grid is cut
        cost_per_segment=2 + (num_inner_steps if mala_segments is None else 0),
        initial_cost=1 + num_inner_steps * (mala_segments or 0),
        times=times,
        horizon=horizon,
        t_min=_default_grid_end(prior, t_min),
        prior_variance=prior_variance,
    )


def tds(
    rng_key: PRNGKey,
    prior: Target,
    dim: int,
    likelihood: Likelihood,
    *,
    num_particles: int,
    prior_nfe_budget: int | None = None,
    times: ArrayLike | None = None,
    num_param_steps: int = 3,
    ess_threshold: float = 0.5,
    horizon: float = 5.0,
    t_min: float = 1e-3,
) -> PosteriorResult:
    """Twisted diffusion sampler (TDS, Wu et al. 2023): the score-only peer.

    DDPM reverse kernels (exponential integrator of the reverse SDE), proposal
    ``N(μ(x) + σ² ∇_x log p̃(y | x), σ² I)`` with the twist's gradient through
    Tweedie's estimate by a VJP of the score, twist ``L(y | x̂₀)`` without variance
    inflation, multinomial-free systematic resampling at ``ESS < ess_threshold N``,
    no MCMC moves on ``x`` (the latent parameters ``θ`` get the same resample-move
    steps as :func:`twisted_smc`, TDS has none). Never reads the prior's log
    density: consistent for the posterior of the DDPM chain's prior on this grid.
    Cost ``2 + 2 K`` prior evaluations per particle (a score and a VJP at the start
    and after every step; the last VJP is unused but runs);
    ``K = (budget - 2) // 2`` segments of a geometric grid from ``horizon = 5``
    down to ``t_min = 1e-3``, then 0: the grid :func:`rtk_blackjax.configure` tuned
    for DDPM at 25 NFE (1e-4 at 105).

    Examples
    --------
    >>> import jax, jax.numpy as jnp
    >>> import rtk_blackjax as rb
    >>> prior = rb.targets.score_only(rb.targets.gaussian(jnp.zeros(2), 1.0))
    >>> lik = linear_gaussian_likelihood(jnp.array([[1.0, 0.0]]), jnp.array([1.0]), 0.5)
    >>> res = tds(jax.random.key(0), prior, 2, lik, num_particles=128,
    ...           prior_nfe_budget=32)
    >>> res.samples.shape, res.prior_nfe
    ((128, 1, 2), 32.0)
    """
    config = _Config(
        transition="ddpm",
        curvature="none",
        tilt="gradient",
        inflate=False,
        curvature_probes=0,
        exact_weights=False,
        exact_until=0.0,
        num_inner_steps=0,
        mala_segments=None,
        num_param_steps=check_int("num_param_steps", num_param_steps, minimum=0),
        step_scale=1.0,
        threshold=check_fraction("ess_threshold", ess_threshold, allow_zero=False),
        prior_variance=0.0,
    )
    return _run(
        rng_key,
        prior,
        dim,
        likelihood,
        config,
        num_particles=num_particles,
        prior_nfe_budget=prior_nfe_budget,
        cost_per_segment=2,
        initial_cost=2,
        times=times,
        horizon=horizon,
        t_min=t_min,
        prior_variance=1.0,
    )


def collapse_warning(ess: ArrayLike, num_particles: int, *, floor: float = 10.0):
    """A message when the particle system collapsed on some segment, else ``None``.

    Collapse: fewer than ``floor`` effective particles after reweighting (the
    relative ESS times ``num_particles``); the draws then descend from a handful of
    ancestors and their spread understates the posterior's.
    """
    num_particles = check_int("num_particles", num_particles, minimum=1)
    floor = check_positive("floor", floor)
    ess = np.asarray(ess, np.float64)
    if not np.all(np.isfinite(ess)):
        raise ValueError("ess must be finite (relative effective sample sizes)")
    effective = ess * num_particles
    bad = np.flatnonzero(effective < floor)
    if bad.size == 0:
        return None
    worst = int(np.argmin(effective))
    return (
        f"the particle system collapsed on {bad.size} of {ess.size} segments (fewest "
        f"effective particles {effective[worst]:.1f} of {num_particles}, segment "
        f"{worst}): raise num_samples or prior_nfe, or the posterior may be "
        "misrepresented"
    )


#: Where :func:`lineage_warning` counts lineages: ``a_t² = 1/2``, the time at which
#: the OU process has kept half of the data's variance and added as much noise.
HALF_SIGNAL_TIME = 0.5 * math.log(2.0)


def mid_time_index(times: ArrayLike) -> int:
    """Index of the positive grid time nearest :data:`HALF_SIGNAL_TIME` in ``log t``.

    Examples
    --------
    >>> mid_time_index(np.array([8.0, 1.0, 0.4, 0.1, 0.0]))
    2
    """
    times = np.asarray(validate_grid(times), np.float64)
    positive = np.flatnonzero(times > 0)
    return int(positive[np.argmin(np.abs(np.log(times[positive] / HALF_SIGNAL_TIME)))])


def lineage_warning(
    lineages: ArrayLike, times: ArrayLike, *, floor: float = 10.0
) -> str | None:
    """A message when the draws descend from few particles at mid diffusion time,
    else ``None``.

    ``lineages``: :func:`lineages` of one system ``(K + 1,)`` or of replicas
    ``(R, K + 1)`` (the fewest counts), on the grid ``times``. The count is read at
    the grid time nearest :data:`HALF_SIGNAL_TIME` (in ``log t``). Draws with one
    ancestor there share what the reverse diffusion had decided by then (on digits,
    the digit's identity), so the system holds about that many independent draws
    for such features, and intervals from its draws are too narrow. Measured on
    the digits inpainting posterior (docs/posteriors.md): 64 particles per
    replica leave a median 3-6 lineages there (2-7 independent draws) and fail
    simulation-based calibration, 256 leave 10-20 (5-15) and pass.
    """
    floor = check_positive("floor", floor)
    counts = np.atleast_2d(np.asarray(lineages))
    if counts.ndim != 2 or not np.issubdtype(counts.dtype, np.number):
        raise ValueError(
            "lineages must be counts per grid time, (K + 1,) or (replicas, K + 1), "
            f"got {lineages!r}"
        )
    times = np.asarray(validate_grid(times), np.float64)
    if counts.shape[-1] != times.shape[0]:
        raise ValueError(
            f"lineages must have one count per grid time ({times.shape[0]}), got "
            f"shape {counts.shape}"
        )
    at = mid_time_index(times)
    fewest = int(counts[:, at].min())
    if fewest >= floor:
        return None
    return (
        f"the draws descend from only {fewest} distinct particles at t = "
        f"{times[at]:.2g}, mid diffusion (fewest over replicas): they hold about "
        f"{fewest} independent draws per replica for the features the diffusion "
        "decides by then, and their intervals are too narrow; raise num_samples "
        "(particles per replica)"
    )


def lineages(parent: ArrayLike) -> np.ndarray:
    """How many distinct particles at each grid time the returned draws descend from.

    ``parent``: ``(K + 1, N)`` ancestor indices, row ``k`` the resampling of segment
    ``k`` (the identity where it did not resample), the last row the final
    resampling. Entry ``k`` of the result counts the distinct particles at
    ``times[k]`` with a descendant among the draws: ``N`` without resampling, one
    when every draw shares that ancestor. Draws that share an ancestor at a time
    share what the diffusion had decided by then (at mid times, a digit's
    identity), so the smallest counts bound how many independent draws the
    system holds for such features.

    Examples
    --------
    >>> lineages(np.array([[0, 0, 2], [1, 1, 2], [0, 1, 1]]))
    array([1, 1, 2])
    """
    parent = np.asarray(parent)
    if not np.issubdtype(parent.dtype, np.integer):
        raise TypeError(f"parent must hold integer particle indices, got {parent!r}")
    if parent.ndim != 2 or 0 in parent.shape:
        raise ValueError(
            f"parent must be a (K + 1, N) array of indices, got shape {parent.shape}"
        )
    if parent.min() < 0 or parent.max() >= parent.shape[1]:
        raise ValueError(
            f"parent must hold indices in [0, {parent.shape[1]}), got values from "
            f"{parent.min()} to {parent.max()}"
        )
    position = parent[-1]
    counts = [np.unique(position).size]
    for row in parent[-2::-1]:
        position = row[position]
        counts.append(np.unique(position).size)
    return np.asarray(counts[::-1])


def _run(
    rng_key,
    prior,
    dim,
    likelihood,
    config,
    *,
    num_particles,
    prior_nfe_budget,
    cost_per_segment,
    times,
    horizon,
    initial_cost=1,
    t_min,
    prior_variance,
):
    rng_key = check_key("rng_key", rng_key)
    if not isinstance(prior, Target):
        raise TypeError(f"prior must be an rtk_blackjax Target, got {type(prior)!r}")
    dim = check_int("dim", dim, minimum=1)
    likelihood = _check_likelihood(likelihood)
    num_particles = check_int("num_particles", num_particles, minimum=2)
    times = budget_grid(
        prior_nfe_budget,
        times,
        horizon=horizon,
        t_min=t_min,
        cost_per_step=cost_per_segment,
        initial_cost=initial_cost,
        step="segment",
    )
    num_segments = int(times.shape[0]) - 1
    if config.mala_segments is not None and config.mala_segments > num_segments:
        raise ValueError(
            f"mala_segments must be at most the grid's {num_segments} segments, got "
            f"{config.mala_segments}"
        )
    variance = _default_variance(prior, prior_variance)
    config = config._replace(
        prior_variance=variance,
        exact_until=_default_exact_until(prior, config.exact_until, variance),
    )
    # the grid is a program argument: every grid of K segments shares one program
    run, data = likelihood_program(
        _RUNS,
        (by_identity(prior), num_segments, dim, num_particles, config),
        likelihood,
        lambda bind: _build(prior, dim, bind, num_particles, config),
    )
    x, u, log_z, info, finite = run(rng_key, data, times)
    if not bool(finite):
        bad = np.flatnonzero(~np.isfinite(np.asarray(info.ess)))
        raise FloatingPointError(
            "twisted SMC produced non-finite particles or weights"
            + (f" (first bad segment {int(bad[0])})" if bad.size else "")
        )
    nfe = initial_cost + num_segments * cost_per_segment
    # one twist evaluation: the forward map (or log-likelihood), its Jacobian's
    # d_y rows and the curvature probes' forward maps
    # (TDS: no Jacobian, one gradient of the twist instead)
    jacobian = likelihood.obs_dim if config.inflate else 1
    per_twist = 1 + jacobian + 2 * config.curvature_probes
    # per segment: the twist at the proposal, one per MALA step, the tilt at the
    # previous particle and one per parameter move
    mala_steps = config.num_inner_steps * (
        num_segments if config.mala_segments is None else config.mala_segments
    )
    lik = per_twist * (1 + num_segments * (2 + config.num_param_steps) + mala_steps)
    extras = {
        "params": u,
        "ess": info.ess,
        "resampled": info.resampled,
        "acceptance_per_segment": info.acceptance_rate,
        "param_acceptance_per_segment": info.param_acceptance_rate,
        "log_evidence": log_z,
        "lineages": lineages(info.parent),
        "times": times,
        "consistent_for": (
            "predictor-chain prior"
            if not config.exact_weights or math.isinf(config.exact_until)
            else "posterior"
            if config.exact_until == 0.0
            else f"predictor-chain prior below t = {config.exact_until:g}"
        ),
    }
    if likelihood.constrain is not None:
        extras["sites"] = jax.vmap(likelihood.constrain)(u)
    return PosteriorResult(
        samples=x[:, None, :],
        prior_nfe=float(nfe),
        likelihood_evals=float(lik),
        acceptance={},
        extras=extras,
    )


_RUNS = ProgramCache(16)


def _sum_sq_over(r: Array, v: Array) -> Array:
    """``sum_i r_i^2 / v_i`` for a scalar or per-coordinate ``v``."""
    return jnp.dot(r, r) / v if jnp.ndim(v) == 0 else jnp.sum(r * r / v)


def _sum_log(v: Array, dim: int) -> Array:
    """``sum_i log v_i`` over ``dim`` coordinates, ``v`` scalar or per coordinate."""
    return dim * jnp.log(v) if jnp.ndim(v) == 0 else jnp.sum(jnp.log(v))


def _gaussian_logpdf(r: Array, v: Array, dim: int) -> Array:
    """``log N(r; 0, diag(v))`` (``v`` scalar or per coordinate)."""
    if jnp.ndim(v) == 0:
        return -0.5 * (jnp.dot(r, r) / v + dim * (jnp.log(v) + _LOG_2PI))
    return -0.5 * (jnp.sum(r * r / v) + jnp.sum(jnp.log(v)) + dim * _LOG_2PI)


def _mala_step(key, position, value, grad, aux, fn, step_size):
    """One MALA step with a proxy gradient that also carries auxiliary values.

    ``fn(z) -> (log density, proxy gradient, aux)``. The proposal
    ``z + ε g(z) + sqrt(2ε) ξ`` and its reverse use the same ``g``, so the
    Metropolis test is exact for the log density whatever ``g`` is. ``ε`` may be
    per coordinate (a diagonally preconditioned MALA).
    """
    k_prop, k_acc = jax.random.split(key)
    noise = jax.random.normal(k_prop, position.shape, position.dtype)
    proposal = position + step_size * grad + jnp.sqrt(2.0 * step_size) * noise
    value_p, grad_p, aux_p = fn(proposal)

    def log_q(to, frm, grad_frm):
        r = to - frm - step_size * grad_frm
        return -0.25 * _sum_sq_over(r, step_size)

    log_ratio = (
        value_p
        - value
        + log_q(position, proposal, grad_p)
        - log_q(proposal, position, grad)
    )
    accept_prob = jnp.clip(
        jnp.exp(jnp.where(jnp.isnan(log_ratio), -jnp.inf, log_ratio)), 0, 1
    )
    accept = jax.random.uniform(k_acc) < accept_prob
    pick = lambda new, old: jnp.where(accept, new, old)  # noqa: E731
    return (
        pick(proposal, position),
        pick(value_p, value),
        pick(grad_p, grad),
        jax.tree.map(pick, aux_p, aux),
        accept_prob,
    )


# --- small dense linear algebra in plain JAX ops ---------------------------------------
# The twist's d_y x d_y factorisations run once per particle inside vmapped MALA
# steps. With LAPACK's batched custom calls there, XLA's CPU runtime deadlocked on
# 2 cores from about 2000 particles (jax 0.10.2; fine on one core, and with
# d_y = 1); these loops of vector operations have no custom call.


def _cholesky(a: Array) -> Array:
    """Lower Cholesky factor by ``n`` rank-one updates (``a`` symmetric p.d.)."""
    n = a.shape[-1]

    def column(j, carry):
        low, rest = carry
        pivot = jnp.sqrt(rest[j, j])
        col = jnp.where(jnp.arange(n) >= j, rest[:, j] / pivot, 0.0)
        return low.at[:, j].set(col), rest - jnp.outer(col, col)

    low, _ = jax.lax.fori_loop(0, n, column, (jnp.zeros_like(a), a))
    return low


def _solve_lower(low: Array, b: Array) -> Array:
    """``low⁻¹ b`` by forward substitution (``b`` a vector or a matrix)."""
    n = low.shape[-1]

    def row(i, x):
        value = (b[i] - low[i] @ x) / low[i, i]
        return x.at[i].set(value)

    return jax.lax.fori_loop(0, n, row, jnp.zeros_like(b))


def _cho_solve(low: Array, b: Array) -> Array:
    """``(L Lᵀ)⁻¹ b``."""
    n = low.shape[-1]
    w = _solve_lower(low, b)

    def row(k, x):
        i = n - 1 - k
        return x.at[i].set((w[i] - low[:, i] @ x) / low[i, i])

    return jax.lax.fori_loop(0, n, row, jnp.zeros_like(w))


def _build(prior, dim, bind, n, config):
    """The compiled ``run(rng_key, data, times)`` of one configuration, the
    likelihood ``bind(data)``, on the grid ``times``."""

    @jax.jit
    def run(rng_key, data, times):
        return _particle_system(prior, dim, bind(data), times, n, config)(rng_key)

    return run


def _particle_system(prior, dim, likelihood, times, n, config):
    """``run(rng_key) -> (x, u, log_z, info, finite)``, traced inside :func:`_build`."""
    gauss, other = likelihood.gaussian, likelihood.other
    num_segments = int(times.shape[0]) - 1
    exact = config.exact_weights
    V = config.prior_variance

    def exact_segment(t_new):
        """Whether the segment ending at ``t_new`` takes the prior's log density
        (below ``exact_until`` its Gaussian reverse kernel defines the prior)."""
        return jnp.asarray(exact) & (t_new >= config.exact_until)

    def prior_eval(z, t):
        """Score (and log density with exact weights) at one point: one NFE."""
        if exact:
            return prior.logdensity(z, t), prior.score(z, t)
        return jnp.zeros((), z.dtype), prior.score(z, t)

    def point_eval(z, u, t):
        """Prior evaluation at a new point: (log p, score, twist gradient).

        The twist's exact gradient through Tweedie's map (TDS's proposal) costs a VJP
        of the score, taken here together with the score (one forward pass and one
        backward pass); the other tilts do not need it (zeros).
        """
        if config.tilt != "gradient":
            logp, score = prior_eval(z, t)
            return logp, score, jnp.zeros_like(z)
        score, vjp = jax.vjp(lambda q: prior.score(q, t), z)
        _, g0 = twist_at(tweedie(z, score, t), u, t)
        a, s2 = ou_mean_coef(t), ou_variance(t)
        return jnp.zeros((), z.dtype), score, (g0 + s2 * vjp(g0)[0]) / a

    def tweedie(z, score, t):
        a, s2 = ou_mean_coef(t), ou_variance(t)
        return (z + s2 * score) / a

    def inflation(t):
        a, s2 = ou_mean_coef(t), ou_variance(t)
        if not config.inflate:
            return jnp.zeros_like(s2)
        return V * s2 / (a**2 * V + s2)

    probes = jax.random.normal(
        jax.random.key(20261201), (config.curvature_probes, dim), jnp.result_type(float)
    )

    def observation_moments(x0, u, t):
        """``f(x̂₀)``, the twist's covariance and ``J = ∂f/∂x₀`` at ``x0``.

        Covariance: the noise, ``r_t² J Jᵀ`` (``f`` linearised), and for a nonlinear
        ``f`` the second moment of its even part ``(f(x0 + r ε) + f(x0 - r ε)) / 2
        - f(x0)`` over ``curvature_probes`` fixed directions ``ε`` (zero for a linear
        map, ``r² εᵀ H ε / 2`` for a quadratic one): where ``J`` vanishes (``x0 x1``
        near the origin) the linearisation alone would make the twist far too
        sharp. The probes are drawn once, so the twist is one fixed function.
        """
        f = gauss.forward(x0, u)
        var = gauss.variance(x0, u)
        r2 = inflation(t)
        jac = jax.lax.stop_gradient(jax.jacrev(gauss.forward)(x0, u))
        spread = r2 * (jac @ jac.T)
        if config.curvature_probes:
            r = jnp.sqrt(r2)
            up = jax.vmap(lambda e: gauss.forward(x0 + r * e, u))(probes)
            down = jax.vmap(lambda e: gauss.forward(x0 - r * e, u))(probes)
            even = jax.lax.stop_gradient(0.5 * (up + down) - f)
            spread = spread + even.T @ even / config.curvature_probes
        # A low-rank spread far above a tiny noise variance (a particle's sigma
        # near 0) is not positive definite in float32: a jitter of 1e-6 of the
        # spread keeps the twist defined. It vanishes at t = 0 (no spread), where
        # the twist is the exact likelihood.
        jitter = 1e-6 * jnp.max(jnp.diag(spread))
        cov = jnp.diag(var + jitter) + spread
        return f, cov, jac

    def twist_at(x0, u, t):
        """log p̃(y | x̂₀ = x0) and its gradient in ``x0`` (inflation held fixed)."""

        def value(x0_):
            total = jnp.zeros((), x0_.dtype)
            if gauss is not None:
                f, cov, _ = observation_moments(x0_, u, t)
                chol = _cholesky(cov)
                white = _solve_lower(chol, gauss.y - f)
                logdet = 2.0 * jnp.sum(jnp.log(jnp.diag(chol)))
                total = total - 0.5 * (
                    jnp.sum(white**2) + logdet + gauss.y.shape[0] * _LOG_2PI
                )
            if other is not None:
                total = total + other(x0_, u)
            return total

        return jax.value_and_grad(value)(x0)

    def twist_value(z, score, u, t):
        return twist_at(tweedie(z, score, t), u, t)[0]

    def init_one(key):
        k_x, k_u = jax.random.split(key)
        t0 = times[0]
        x = jax.random.normal(k_x, (dim,), jnp.result_type(float))
        if likelihood.num_params:
            u = likelihood.init_params(k_u)
        else:
            u = jnp.zeros((0,), x.dtype)
        logp, score, tilt_grad = point_eval(x, u, t0)
        tw = twist_value(x, score, u, t0)
        ref = -0.5 * jnp.sum(x**2) - 0.5 * dim * _LOG_2PI
        logw = tw + (logp - ref if exact else 0.0)
        return x, score, tilt_grad, logp, u, tw, logw

    def kernel_mean_var(key, x, score, t_prev, t_new):
        """The prior's Gaussian reverse kernel: (mean, variance, Tweedie slope β)."""
        a_new, s2_new = ou_mean_coef(t_new), ou_variance(t_new)
        if config.transition == "rtk":
            q = gaussian_approximation(
                key,
                lambda z: prior.score(z, t_prev),
                x,
                score,
                t_prev,
                t_new,
                curvature=config.curvature,
                dtype=x.dtype,
            )
            beta = jnp.clip((1.0 - s2_new * q.curvature) / a_new, 0.0, 1.0 / a_new)
            return q.mean, q.variance, beta
        a, _ = transition_coefs(t_new, t_prev)
        mean = x / a + 2.0 * (1.0 / a - 1.0) * score
        return mean, 1.0 / a**2 - 1.0, 1.0 / a_new

    def propose(key, x, score, tilt_grad, u, t_prev, t_new):
        k_q, k_z, k_e = jax.random.split(key, 3)
        mean, v, beta = kernel_mean_var(k_q, x, score, t_prev, t_new)
        if config.tilt == "gradient":
            # TDS: the twist's gradient at x through Tweedie's map, computed with the
            # score at x by one VJP when x was reached (carried as tilt_grad)
            shifted = mean + v * tilt_grad
            x_new = shifted + jnp.sqrt(v) * jax.random.normal(k_z, x.shape, x.dtype)
            r = x_new - shifted
            log_g = _gaussian_logpdf(r, v, dim)
            seg = (mean, v, beta, jnp.zeros((0, dim), x.dtype), jnp.zeros(0, x.dtype))
            return x_new, log_g, v, seg
        x0_prev = tweedie(x, score, t_prev)
        _, g0 = twist_at(x0_prev, u, t_new)
        if gauss is None:
            shifted = mean + v * beta * g0
            x_new = shifted + jnp.sqrt(v) * jax.random.normal(k_z, x.shape, x.dtype)
            r = x_new - shifted
            log_g = _gaussian_logpdf(r, v, dim)
            seg = (mean, v, beta, jnp.zeros((0, dim), x.dtype), jnp.zeros(0, x.dtype))
            return x_new, log_g, v, seg
        # Gaussian observations: linearise f(x̂₀(x')) ≈ f(x̂₀_prev) + β J (x' - mean),
        # condition the reverse kernel N(mean, v I) on y in closed form (Matheron);
        # the non-Gaussian terms enter through g0 minus the Gaussian part's gradient.
        f0, gamma, jac = observation_moments(x0_prev, u, t_new)
        chol_g = _cholesky(gamma)
        B = beta * jac
        gauss_grad = jac.T @ _cho_solve(chol_g, gauss.y - f0)
        shifted = mean + v * beta * (g0 - gauss_grad)
        y_eff = gauss.y - f0 + B @ mean
        M = (B * v) @ B.T + gamma if jnp.ndim(v) else v * (B @ B.T) + gamma
        chol_m = _cholesky(M)
        x_prior = shifted + jnp.sqrt(v) * jax.random.normal(k_z, x.shape, x.dtype)
        eta = chol_g @ jax.random.normal(k_e, gauss.y.shape, x.dtype)
        # v Bᵀ M⁻¹ w, with v a scalar or a diagonal (per coordinate)
        v_bt = v * B.T if jnp.ndim(v) == 0 else v[:, None] * B.T
        gain = lambda w: v_bt @ _cho_solve(chol_m, w)  # noqa: E731
        x_new = x_prior + gain(y_eff - B @ x_prior - eta)
        post_mean = shifted + gain(y_eff - B @ shifted)
        r = x_new - post_mean
        white = _solve_lower(chol_g, B @ r)
        quad = _sum_sq_over(r, v) + jnp.sum(white**2)
        logdet_m = 2.0 * jnp.sum(jnp.log(jnp.diag(chol_m)))
        logdet_g = 2.0 * jnp.sum(jnp.log(jnp.diag(chol_g)))
        log_g = -0.5 * (quad + _sum_log(v, dim) - logdet_m + logdet_g + dim * _LOG_2PI)
        g_white = _solve_lower(chol_g, B)
        # the tilted Gaussian's smallest variance, bounded below with the trace of
        # Bᵀ Γ⁻¹ B for its largest eigenvalue (exact for d_y = 1; no eigensolver)
        v_min = 1.0 / (1.0 / v + jnp.sum(g_white**2))
        seg = (mean, v, beta, B, y_eff)
        return x_new, log_g, v_min, seg

    def segment_target(z, x_prev, u, seg, t_prev, t_new):
        """log of the conditional target of ``x_k`` given ``x_{k-1}``, its proxy
        gradient, and (score, log p, twist) at ``z`` for reuse."""
        mean, v, beta, _, _ = seg
        logp, score, tilt_grad = point_eval(z, u, t_new)
        x0 = tweedie(z, score, t_new)
        tw, g0 = twist_at(x0, u, t_new)
        r = z - mean
        base = _gaussian_logpdf(r, v, dim)
        base_grad = -r / v
        if exact:
            a, s2 = transition_coefs(t_new, t_prev)
            r = x_prev - a * z
            exact_base = (
                logp - 0.5 * jnp.dot(r, r) / s2 - 0.5 * dim * (_LOG_2PI + jnp.log(s2))
            )
            use = exact_segment(t_new)
            base = jnp.where(use, exact_base, base)
            base_grad = jnp.where(use, score + a * r / s2, base_grad)
        return base + tw, base_grad + beta * g0, (score, logp, tw, tilt_grad)

    def param_moves(key, z, score, u, tw, scale, t):
        """Random-walk Metropolis on u for p(u) p̃_k(y | z, u) (z, score fixed)."""
        x0 = tweedie(z, score, t)

        def logpost(uu):
            return likelihood.log_prior(uu) + twist_at(x0, uu, t)[0]

        def body(i, c):
            uu, lp, tw_, acc = c
            k1, k2 = jax.random.split(jax.random.fold_in(key, i))
            prop = uu + scale * jax.random.normal(k1, uu.shape, uu.dtype)
            lp_p = logpost(prop)
            ratio = jnp.where(jnp.isnan(lp_p), -jnp.inf, lp_p - lp)
            ok = jnp.log(jax.random.uniform(k2)) < ratio
            tw_p = lp_p - likelihood.log_prior(prop)
            return (
                jnp.where(ok, prop, uu),
                jnp.where(ok, lp_p, lp),
                jnp.where(ok, tw_p, tw_),
                acc + ok,
            )

        lp0 = likelihood.log_prior(u) + tw
        u, _, tw, acc = jax.lax.fori_loop(
            0, config.num_param_steps, body, (u, lp0, tw, jnp.zeros((), z.dtype))
        )
        return u, tw, acc / max(config.num_param_steps, 1)

    def step(carry, k):
        key, x, score, tgrad, logp, u, tw, logw, log_z = carry
        key, k_prop, k_res, k_mala, k_par = jax.random.split(key, 5)
        t_prev, t_new = times[k], times[k + 1]
        x_new, log_g, v_min, seg = jax.vmap(
            lambda kk, xi, si, gi, ui: propose(kk, xi, si, gi, ui, t_prev, t_new)
        )(jax.random.split(k_prop, n), x, score, tgrad, u)
        value, grad, (score_n, logp_n, tw_n, tgrad_n) = jax.vmap(
            lambda z, xp, ui, sg: segment_target(z, xp, ui, sg, t_prev, t_new)
        )(x_new, x, u, seg)
        incr = value - log_g - tw - jnp.where(exact_segment(t_new), logp, 0.0)
        logw_new = logw + incr
        log_incr = jax.nn.logsumexp(logw_new) - jax.nn.logsumexp(logw)
        ess = effective_sample_size(logw_new) / n
        do_resample = ess < config.threshold
        idx = jnp.where(
            do_resample, systematic(k_res, jax.nn.softmax(logw_new), n), jnp.arange(n)
        )
        take = lambda a: jax.tree.map(lambda leaf: leaf[idx], a)  # noqa: E731
        x_prev, u = take(x), take(u)
        z, value, grad, score_n, logp_n, tw_n, tgrad_n, seg, v_min = take(
            (x_new, value, grad, score_n, logp_n, tw_n, tgrad_n, seg, v_min)
        )
        logw_new = jnp.where(do_resample, jnp.zeros_like(logw_new), logw_new[idx])

        # (4) MALA on x given x_prev (and u)
        step_size = config.step_scale * dim ** (-1.0 / 3.0) * v_min

        def move_x(key_i, zi, val, gr, aux, xp, ui, sg, eps):
            fn = lambda q: segment_target(q, xp, ui, sg, t_prev, t_new)  # noqa: E731

            def body(i, c):
                zz, vv, gg, aux, acc = c
                zz, vv, gg, aux, a = _mala_step(
                    jax.random.fold_in(key_i, i), zz, vv, gg, aux, fn, eps
                )
                return zz, vv, gg, aux, acc + a

            zz, _, _, aux, acc = jax.lax.fori_loop(
                0,
                steps_here,
                body,
                (zi, val, gr, aux, jnp.zeros((), zi.dtype)),
            )
            return zz, aux, acc / jnp.maximum(steps_here, 1)

        # MALA on the last ``mala_segments`` segments only (all by default)
        steps_here = (
            config.num_inner_steps
            if config.mala_segments is None
            else jnp.where(
                k >= num_segments - config.mala_segments, config.num_inner_steps, 0
            )
        )

        if config.num_inner_steps:
            z, (score_n, logp_n, tw_n, tgrad_n), acc = jax.vmap(move_x)(
                jax.random.split(k_mala, n),
                z,
                value,
                grad,
                (score_n, logp_n, tw_n, tgrad_n),
                x_prev,
                u,
                seg,
                step_size,
            )
            mala_rate = jnp.mean(acc)
            if config.mala_segments is not None:
                mala_rate = jnp.where(steps_here > 0, mala_rate, jnp.nan)
        else:
            mala_rate = jnp.asarray(jnp.nan, x.dtype)

        # (5) resample-move on the latent parameters
        if likelihood.num_params and config.num_param_steps:
            w = jax.nn.softmax(logw_new)
            mean_u = w @ u
            sd_u = jnp.sqrt(jnp.maximum(w @ (u - mean_u) ** 2, 1e-12))
            scale = 2.38 / math.sqrt(likelihood.num_params) * sd_u
            u, tw_n, pacc = jax.vmap(
                lambda kk, zi, si, ui, ti: param_moves(kk, zi, si, ui, ti, scale, t_new)
            )(jax.random.split(k_par, n), z, score_n, u, tw_n)
            param_rate = jnp.mean(pacc)
        else:
            param_rate = jnp.asarray(jnp.nan, x.dtype)

        info = TwistedSMCInfo(ess, do_resample, mala_rate, param_rate, log_incr, idx)
        carry = (key, z, score_n, tgrad_n, logp_n, u, tw_n, logw_new, log_z + log_incr)
        return carry, info

    def run(rng_key):
        k_init, k_loop, k_final = jax.random.split(rng_key, 3)
        init = jax.vmap(init_one)(jax.random.split(k_init, n))
        logw = init[-1]
        log_z = jax.nn.logsumexp(logw) - jnp.log(n)
        carry, info = jax.lax.scan(
            step, (k_loop, *init, log_z), jnp.arange(times.shape[0] - 1)
        )
        _, x, _, _, _, u, _, logw, log_z = carry
        idx = systematic(k_final, jax.nn.softmax(logw), n)
        finite = (
            jnp.all(jnp.isfinite(x))
            & jnp.all(jnp.isfinite(u))
            & jnp.all(jnp.isfinite(logw))
            & jnp.isfinite(log_z)
        )
        return (
            x[idx],
            u[idx],
            log_z,
            info._replace(parent=jnp.concatenate([info.parent, idx[None]])),
            finite,
        )

    return run
