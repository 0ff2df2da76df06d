"""Public API for the Reverse Transition Kernel (RTK) outer kernel.

RTK (Huang, Zou, Dong, Ma, Zhang; arXiv 2405.16387) runs the OU noising process
backwards in a few segments ``T = t_0 > t_1 > ... > t_K = 0``. Given the current point
``y ≈ x_{t_k}``, one step draws the next point from the *segment target*

    q_k(x) ∝ p_{t_{k+1}}(x) · exp(-|y - a x|^2 / (2 s^2)),
    a = exp(-h),  s^2 = 1 - exp(-2h),  h = t_k - t_{k+1},

the posterior of a denoising problem, by running an inner MCMC kernel (BlackJAX MALA
by default) on it. Here segments are indexed in the order the reverse process visits
them: segment ``k`` goes from ``times[k]`` down to ``times[k + 1]``.

Every inner chain starts from a *predictor* (:mod:`rtk_blackjax.segment`, shared with
the SMC):

* ``"gaussian"`` (default): a draw from a Gaussian approximation of ``q_k``. Its mean
  is Tweedie's formula ``(y + s^2 score(y, t_k)) / a``, the exact mean of ``q_k``;
  its variance ``(s^2 / a^2)(1 - s^2 λ)`` is second-order Tweedie with ``λ`` the
  curvature of ``-log p_{t_k}`` at ``y``, estimated from one score call at ``y + u``:
  per coordinate ``λ_i = -(score(y + u) - score(y))_i / u_i`` along a random-sign
  ``u`` (``curvature="diagonal"``, the default), or isotropic
  ``-<score(y + u) - score(y), u> / |u|^2`` along a Gaussian ``u`` (``"secant"``).
  Inner kernels see one isotropic variance (the mean over coordinates).
  Where ``q_k`` is close to Gaussian (the stiff end of the process) this draw is
  already nearly exact and the Metropolis steps only have to correct it.
* ``"ddpm"``: the DDPM exponential-integrator step
  ``e^h y + 2(e^h - 1) score(y) + sqrt(e^{2h} - 1) ξ``. With zero inner steps RTK
  *is* DDPM.
* ``"tweedie"``: the Tweedie mean itself (deterministic).

The state carries the score at its position, so the predictor reuses the previous
segment's last gradient. NFE per segment: 1 (curvature, unless ``curvature="none"``)
+ ``inner.cost.at_init`` + what each of the ``n_k`` inner steps reports (``n_k *
inner.cost.per_step`` when that is fixed; +1 when the inner state does not cache its
gradient), plus 1 for the initial score at ``T``: :func:`expected_nfe`.
"""

from collections.abc import Callable, Sequence
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.flatten_util import ravel_pytree

from rtk_blackjax._checks import check_choice, check_key, check_positive
from rtk_blackjax.diffusion import validate_grid
from rtk_blackjax.mcmc.inner import InnerKernel, mala_inner
from rtk_blackjax.segment import (
    _MIN_VARIANCE_FACTOR,  # noqa: F401  (re-exported: the predictor's floor)
    CURVATURES,
    DEFAULT_CURVATURE,
    PREDICTORS,
    SegmentGeometry,
    curvature_evaluations,
    gaussian_approximation,
    logdensity_source,
    predict,
    score_from_gradient,
    segment_logdensity,
    target_logdensity_with_score,
)
from rtk_blackjax.targets.base import Target
from rtk_blackjax.types import Array, ArrayLike, ArrayLikeTree, ArrayTree, PRNGKey

__all__ = [
    "RTKState",
    "RTKInfo",
    "DiffusionAlgorithm",
    "PREDICTORS",
    "init",
    "build_kernel",
    "as_top_level_api",
    "segment_logdensity",
    "SegmentProblem",
    "segment_problem",
    "target_logdensity_with_score",
    "SegmentCost",
    "segment_cost",
    "expected_nfe",
]

# Inner steps per segment are counted in int32 (NFE too): keep far from overflow.
_MAX_INNER_STEPS = 10**6


class RTKState(NamedTuple):
    """State of the RTK sampler for one particle.

    position
        Current point, an approximate draw from ``p_t`` at ``t = times[step]``.
    score
        ``score(position, times[step])``, cached so the next predictor is free.
    step
        Index of the next segment to run (``0`` at the horizon, ``K`` when done).
    num_evaluations
        Score/energy evaluations (NFE) spent on this particle so far.
    """

    position: ArrayTree
    score: ArrayTree
    step: Array
    num_evaluations: Array


class RTKInfo(NamedTuple):
    """Information about one RTK segment for one particle.

    time
        End time ``t_{k+1}`` of the segment (the time of the new position).
    acceptance_rate
        Mean acceptance probability of the inner steps (NaN when none were run).
    num_evaluations
        NFE spent on this segment.
    step_size
        The inner kernel's ``step_size`` parameter on this segment (NaN if it has
        none).
    curvature
        Estimate of the curvature of ``-log p`` at the segment's start (the mean
        over coordinates under ``curvature="diagonal"``).
    is_finite
        Whether the new position and its score are finite.
    """

    time: Array
    acceptance_rate: Array
    num_evaluations: Array
    step_size: Array
    curvature: Array
    is_finite: Array


class DiffusionAlgorithm(NamedTuple):
    """A reverse-diffusion sampler: BlackJAX's ``SamplingAlgorithm`` plus its grid.

    ``init(position, rng_key=None)`` and ``step(rng_key, state, segment=None)`` as
    in BlackJAX; one ``step`` runs one segment of ``times``: ``segment``, or the
    state's own ``step`` counter when ``None`` (so the manual loop
    ``state, info = alg.step(key, state)`` works). :func:`rtk_blackjax.sample` runs
    all of them for many particles, passing the segment index explicitly.
    """

    init: Callable
    step: Callable
    times: Array

    @property
    def num_segments(self) -> int:
        return int(self.times.shape[0]) - 1


def _all_finite(tree: ArrayTree) -> Array:
    return jnp.all(jnp.array([jnp.all(jnp.isfinite(v)) for v in jax.tree.leaves(tree)]))


def check_position(position: ArrayLikeTree) -> ArrayTree:
    """``position`` as a pytree of JAX arrays, refusing what no sampler can move.

    Integer, boolean or complex leaves raise ``TypeError`` (positions are real and
    continuous); NaN or inf raise ``ValueError`` when the values are known (not
    while tracing, where only dtypes are).
    """
    leaves, treedef = jax.tree.flatten(position)
    if not leaves:
        raise ValueError("position must contain at least one array, got none")
    arrays = []
    for leaf in leaves:
        try:
            arr = jnp.asarray(leaf)
        except TypeError as err:
            raise TypeError(
                f"position must be a pytree of real arrays, got a {type(leaf).__name__}"
            ) from err
        if not jnp.issubdtype(arr.dtype, jnp.floating):
            raise TypeError(
                f"position must have real floating-point leaves, got dtype {arr.dtype} "
                "(convert it, e.g. x.astype(float))"
            )
        if not isinstance(arr, jax.core.Tracer) and not bool(
            jnp.all(jnp.isfinite(arr))
        ):
            raise ValueError("position must be finite, got NaN or inf entries")
        arrays.append(arr)
    return jax.tree.unflatten(treedef, arrays)


def init(
    position: ArrayLikeTree, target: Target, times: Array, segment: ArrayLike = 0
) -> RTKState:
    """Start a particle at ``position`` at ``t = times[segment]``.

    ``segment = 0`` (default): at the horizon, ``position`` a draw from ``N(0, I)``;
    a later segment (may be traced) starts a chain part-way down the grid.
    """
    position = check_position(position)
    score = target.score(position, times[segment])
    return RTKState(
        position, score, jnp.asarray(segment, jnp.int32), jnp.asarray(1, jnp.int32)
    )


def _inner_step_schedule(num_inner_steps, num_segments: int) -> np.ndarray:
    try:
        steps = np.asarray(num_inner_steps)
    except (TypeError, ValueError) as err:  # e.g. a ragged list
        raise ValueError(
            "num_inner_steps must be an int or a sequence of ints, one per segment"
        ) from err
    if steps.ndim == 0:
        steps = np.full(num_segments, steps)
    if steps.shape != (num_segments,):
        raise ValueError(
            "num_inner_steps must be an int or a sequence with one entry per segment "
            f"({num_segments}), got shape {steps.shape}"
        )
    if not np.issubdtype(steps.dtype, np.integer) or np.any(steps < 0):
        raise ValueError(
            f"num_inner_steps must be non-negative integers, got {steps.tolist()}"
        )
    if np.any(steps > _MAX_INNER_STEPS):
        raise ValueError(
            f"num_inner_steps must be at most {_MAX_INNER_STEPS} per segment, got "
            f"{int(steps.max())}"
        )
    return steps.astype(np.int32)


class SegmentProblem(NamedTuple):
    """The sub-problem that one RTK segment solves for one particle.

    Everything the inner chain of that segment needs, so that it can be rebuilt
    outside the sampler (e.g. to run several diagnostic chains on the very ``q_k``
    the sampler solved, :mod:`rtk_blackjax.diagnostics`).

    logdensity_fn
        ``x -> log q_k(x)`` up to a constant (its gradient is the target's score
        plus the quadratic factor's gradient).
    geometry
        The :class:`~rtk_blackjax.mcmc.inner.SegmentGeometry` of ``q_k``.
    params
        The inner kernel's parameters on this segment (``inner.parameters``).
    initial_position
        The predictor's draw, where the sampler starts its inner chain.
    num_evaluations
        NFE spent building the problem (the curvature's score call, if any; the
        inner chain's initialisation is not included).
    curvature
        Estimate of the curvature of ``-log p`` at the segment's start (0 with
        ``curvature="none"``; the mean over coordinates under ``"diagonal"``).
    """

    logdensity_fn: Callable
    geometry: SegmentGeometry
    params: dict
    initial_position: ArrayTree
    num_evaluations: Array
    curvature: Array


def _segment_problem(
    target: Target,
    times: Array,
    k: Array,
    position: ArrayTree,
    score: ArrayTree,
    rng_key: PRNGKey,
    inner: InnerKernel,
    log_p: Callable,
    predictor: str,
    curvature: str,
    secant_scale: float,
) -> SegmentProblem:
    t_start, t_end = times[k], times[k + 1]
    y, score_y = position, score
    # The kernel splits the same key the same way and keeps keys 2 and 3.
    key_secant, key_predictor, _, _ = jax.random.split(rng_key, 4)

    y_flat, unravel = ravel_pytree(y)
    score_y_flat, _ = ravel_pytree(score_y)
    approx = gaussian_approximation(
        key_secant,
        lambda x: ravel_pytree(target.score(unravel(x), t_start))[0],
        y_flat,
        score_y_flat,
        t_start,
        t_end,
        curvature=curvature,
        secant_scale=secant_scale,
    )
    x0_flat = predict(predictor, key_predictor, approx, y_flat, score_y_flat)
    a, s2 = approx.mean_coef, approx.noise_var
    geometry = SegmentGeometry(
        time=t_end,
        mean_coef=a,
        noise_var=s2,
        conditioning=y,
        gaussian_mean=unravel(approx.mean),
        # Inner kernels take one isotropic scale; the predictor above used the
        # per-coordinate variances.
        gaussian_variance=jnp.mean(approx.variance),
        dim=y_flat.shape[0],
    )
    logdensity_fn = segment_logdensity(log_p(geometry), y, a, s2)
    params = inner.parameters(geometry)
    return SegmentProblem(
        logdensity_fn,
        geometry,
        params,
        unravel(x0_flat),
        approx.num_evaluations,
        jnp.mean(approx.curvature),
    )


def segment_problem(
    target: Target,
    times: Array,
    k: int | Array,
    position: ArrayTree,
    score: ArrayTree,
    rng_key: PRNGKey,
    inner: InnerKernel | None = None,
    predictor: str = "gaussian",
    curvature: str = DEFAULT_CURVATURE,
    secant_scale: float = 1.0,
) -> SegmentProblem:
    """Rebuild the sub-problem ``q_k`` that the RTK kernel solves on segment ``k``.

    The kernel of :func:`build_kernel` calls exactly this (same keys, same
    arithmetic): given a particle's state (``position``, its ``score``) entering
    segment ``k`` and the key the kernel got for that segment, it returns the
    segment target, the inner kernel's parameters and the predictor's draw.

    Parameters
    ----------
    target, times, inner, predictor, curvature, secant_scale
        As in :func:`build_kernel`.
    k
        Segment index, ``0 <= k < len(times) - 1`` (from ``times[k]`` to
        ``times[k + 1]``).
    position, score
        The particle at ``times[k]`` and ``target.score(position, times[k])``
        (``RTKState.position`` and ``RTKState.score``).
    rng_key
        The key the kernel receives for this segment.

    Examples
    --------
    >>> import jax, jax.numpy as jnp
    >>> import rtk_blackjax as rb
    >>> target = rb.targets.gaussian(jnp.zeros(2), 0.5)
    >>> times = rb.geometric_grid(4)
    >>> y = jnp.ones(2)
    >>> problem = segment_problem(
    ...     target, times, 1, y, target.score(y, times[1]), jax.random.key(0)
    ... )
    >>> problem.initial_position.shape, int(problem.num_evaluations)
    ((2,), 1)
    """
    if not isinstance(target, Target):
        raise TypeError(
            "target must be an rtk_blackjax Target (rtk_blackjax.targets.*), got "
            f"{type(target).__name__}"
        )
    times = validate_grid(times)
    inner = mala_inner() if inner is None else inner
    if not isinstance(inner, InnerKernel):
        raise TypeError(
            f"inner must be an rtk_blackjax InnerKernel, got {type(inner).__name__}"
        )
    predictor = check_choice("predictor", predictor, PREDICTORS)
    curvature = check_choice("curvature", curvature, CURVATURES)
    secant_scale = check_positive("secant_scale", secant_scale)
    num_segments = int(times.shape[0]) - 1
    if isinstance(k, (int, np.integer)) and not 0 <= k < num_segments:
        raise ValueError(
            f"k must be a segment index in [0, {num_segments - 1}], got {k}"
        )
    log_p = logdensity_source(target, inner.log_p)
    return _segment_problem(
        target,
        times,
        jnp.asarray(k),
        position,
        score,
        rng_key,
        inner,
        log_p,
        predictor,
        curvature,
        secant_scale,
    )


def build_kernel(
    target: Target,
    times: Array,
    inner: InnerKernel | None = None,
    num_inner_steps: int | Sequence[int] = 1,
    predictor: str = "gaussian",
    curvature: str = DEFAULT_CURVATURE,
    secant_scale: float = 1.0,
) -> Callable:
    """Build the RTK kernel ``kernel(rng_key, state, segment=None) -> (state, info)``.

    One call runs one segment: ``segment`` (``None``: ``state.step``).

    Parameters
    ----------
    target
        Where ``p_t`` comes from (:class:`rtk_blackjax.targets.Target`).
    times
        The reverse-time grid, horizon first, ending at 0.
    inner
        The inner kernel (:func:`rtk_blackjax.mcmc.inner.mala_inner` by default).
    num_inner_steps
        Inner steps per segment: an int, or one int per segment.
    predictor
        ``"gaussian"``, ``"ddpm"`` or ``"tweedie"`` (see the module docstring).
    curvature
        ``"diagonal"`` (default: one score call per segment, one curvature per
        coordinate), ``"secant"`` (one score call, one isotropic curvature) or
        ``"none"`` (take ``λ = 0``: the Gaussian approximation then only knows the
        quadratic factor).
    secant_scale
        Length of the secant direction in units of ``s`` (per coordinate).
    """
    if not isinstance(target, Target):
        raise TypeError(
            "target must be an rtk_blackjax Target (rtk_blackjax.targets.*), got "
            f"{type(target).__name__}"
        )
    times = validate_grid(times)
    num_segments = int(times.shape[0]) - 1
    inner = mala_inner() if inner is None else inner
    if not isinstance(inner, InnerKernel):
        raise TypeError(
            "inner must be an rtk_blackjax.mcmc.inner.InnerKernel (e.g. mala_inner() "
            f"or inner_kernel(blackjax.mala, ...)), got {type(inner).__name__}"
        )
    predictor = check_choice("predictor", predictor, PREDICTORS)
    curvature = check_choice("curvature", curvature, CURVATURES)
    secant_scale = check_positive("secant_scale", secant_scale)
    steps_per_segment = _inner_step_schedule(num_inner_steps, num_segments)
    steps_table = jnp.asarray(steps_per_segment)
    # Without inner steps a Metropolis kernel never tests: a score-only target will do.
    log_p = logdensity_source(target, inner.log_p, steps_per_segment.max() > 0)

    def kernel(
        rng_key: PRNGKey, state: RTKState, segment: ArrayLike | None = None
    ) -> tuple[RTKState, RTKInfo]:
        k = state.step if segment is None else jnp.asarray(segment, jnp.int32)
        y = state.position
        problem = _segment_problem(
            target,
            times,
            k,
            y,
            state.score,
            rng_key,
            inner,
            log_p,
            predictor,
            curvature,
            secant_scale,
        )
        # The same split as in _segment_problem: keys 0 and 1 went to the secant
        # and the predictor, 2 and 3 are the inner chain's.
        _, _, key_init, key_chain = jax.random.split(rng_key, 4)
        geometry, params, logdensity_fn = (
            problem.geometry,
            problem.params,
            problem.logdensity_fn,
        )
        t_end = geometry.time
        dtype = ravel_pytree(y)[0].dtype
        nfe = problem.num_evaluations
        inner_state = inner.init(key_init, problem.initial_position, logdensity_fn)
        nfe = nfe + inner.cost.at_init

        num_steps = steps_table[k]

        def one_step(i, carry):
            chain_state, acceptance_sum, nfe_sum = carry
            step_key = jax.random.fold_in(key_chain, i)
            chain_state, info = inner.step(
                step_key, chain_state, logdensity_fn, **params
            )
            acceptance_sum = acceptance_sum + info.acceptance_rate
            return chain_state, acceptance_sum, nfe_sum + info.num_evaluations

        inner_state, acceptance_sum, chain_nfe = jax.lax.fori_loop(
            0,
            num_steps,
            one_step,
            (inner_state, jnp.zeros((), dtype), jnp.zeros((), jnp.int32)),
        )
        nfe = nfe + chain_nfe
        acceptance = jnp.where(
            num_steps > 0, acceptance_sum / jnp.maximum(num_steps, 1), jnp.nan
        )

        position = inner_state.position
        if inner.gradient_of is not None:
            # ∇log q_k = score(x) + a (y - a x) / s^2: recover the score for free.
            grad_q = inner.gradient_of(inner_state)
            new_score = score_from_gradient(grad_q, geometry, position)
        else:
            new_score = target.score(position, t_end)
            nfe = nfe + 1

        step_size = (
            params.get("step_size", jnp.nan) if isinstance(params, dict) else jnp.nan
        )
        new_state = RTKState(position, new_score, k + 1, state.num_evaluations + nfe)
        info = RTKInfo(
            time=t_end,
            acceptance_rate=acceptance,
            num_evaluations=nfe,
            step_size=jnp.asarray(step_size, dtype),
            curvature=problem.curvature,
            is_finite=_all_finite(position) & _all_finite(new_score),
        )
        return new_state, info

    return kernel


def as_top_level_api(
    target: Target,
    times: Array,
    inner: InnerKernel | None = None,
    num_inner_steps: int | Sequence[int] = 1,
    predictor: str = "gaussian",
    curvature: str = DEFAULT_CURVATURE,
    secant_scale: float = 1.0,
) -> DiffusionAlgorithm:
    """The RTK sampler as a BlackJAX-style algorithm.

    Examples
    --------
    One segment at a time, like any BlackJAX kernel:

    >>> import jax, jax.numpy as jnp
    >>> import rtk_blackjax as rb
    >>> target = rb.targets.gaussian(jnp.zeros(2), 0.5)
    >>> rtk = rb.rtk(target, rb.geometric_grid(8), num_inner_steps=2)
    >>> state = rtk.init(jax.random.normal(jax.random.key(0), (2,)))
    >>> for k in range(rtk.num_segments):
    ...     state, info = rtk.step(jax.random.key(k + 1), state)
    >>> state.position.shape
    (2,)

    Many particles at once, jitted, with per-segment info:

    >>> result = rb.sample(jax.random.key(0), rtk, 100, dim=2, progress_bar=False)
    >>> result.samples.shape
    (100, 2)
    """
    times = validate_grid(times)
    kernel = build_kernel(
        target,
        times,
        inner,
        num_inner_steps,
        predictor=predictor,
        curvature=curvature,
        secant_scale=secant_scale,
    )

    def init_fn(position: ArrayLikeTree, rng_key: PRNGKey | None = None) -> RTKState:
        del rng_key
        return init(position, target, times)

    def step_fn(
        rng_key: PRNGKey, state: RTKState, segment: ArrayLike | None = None
    ) -> tuple[RTKState, RTKInfo]:
        # Dtype and shape only: works on traced keys too (the driver vmaps this).
        return kernel(check_key("rng_key", rng_key), state, segment)

    return DiffusionAlgorithm(init_fn, step_fn, times)


class SegmentCost(NamedTuple):
    """NFE of one RTK segment: ``fixed + per_step * n_k`` for ``n_k`` inner steps."""

    fixed: int
    per_step: int


def segment_cost(inner: InnerKernel, curvature: str = DEFAULT_CURVATURE) -> SegmentCost:
    """The static cost of one segment with ``inner`` (see the module docstring).

    ``fixed`` is the curvature estimate (unless ``curvature="none"``), the inner
    chain's initialisation and, when the inner state does not cache its gradient,
    the score at the segment's output. Raises ``ValueError`` for an inner kernel whose
    per-step cost is only known at run time (e.g. NUTS).
    """
    if not isinstance(inner, InnerKernel):
        raise TypeError(
            f"inner must be an rtk_blackjax InnerKernel, got {type(inner).__name__}"
        )
    if inner.cost.per_step is None:
        raise ValueError(
            "this inner kernel's NFE per step is only known at run time (it is read "
            "from each step's info, e.g. NUTS); declare evaluations_per_step to "
            "budget it in advance"
        )
    fixed = (
        curvature_evaluations(curvature)
        + inner.cost.at_init
        + (inner.gradient_of is None)
    )
    return SegmentCost(int(fixed), int(inner.cost.per_step))


def expected_nfe(
    inner: InnerKernel,
    steps_per_segment: int | Sequence[int],
    curvature: str = DEFAULT_CURVATURE,
) -> int:
    """NFE of one RTK particle: ``1 + sum_k (fixed + per_step * n_k)``.

    ``steps_per_segment`` is the sequence of inner steps per segment (the ``1`` is
    the initial score at the horizon). Computed without tracing anything.

    Examples
    --------
    >>> from rtk_blackjax.mcmc.inner import mala_inner
    >>> expected_nfe(mala_inner(), [2, 2, 2])  # 1 + 3 x (secant + init + 2 steps)
    13
    """
    cost = segment_cost(inner, curvature)
    steps = np.asarray(steps_per_segment)
    if (
        steps.ndim > 1
        or not np.issubdtype(steps.dtype, np.integer)
        or np.any(steps < 0)
    ):
        raise ValueError(
            "steps_per_segment must be a non-negative int or a sequence of them, got "
            f"{steps_per_segment!r}"
        )
    return int(1 + np.sum(cost.fixed + cost.per_step * steps))
