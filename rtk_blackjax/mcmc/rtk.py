"""Public API for the Reverse Transition Kernel (RTK) outer kernel.

RTK (Huang, Zou, Dong, Ma, Zhang; arXiv 2405.16387) runs the OU noising process
backwards in a few segments ``T = t_0 > t_1 > ... > t_K = 0``. Given the current point
``y ≈ x_{t_k}``, one step draws the next point from the *segment target*

    q_k(x) ∝ p_{t_{k+1}}(x) · exp(-|y - a x|^2 / (2 s^2)),
    a = exp(-h),  s^2 = 1 - exp(-2h),  h = t_k - t_{k+1},

the posterior of a denoising problem, by running an inner MCMC kernel (BlackJAX MALA
by default) on it. Here segments are indexed in the order the reverse process visits
them: segment ``k`` goes from ``times[k]`` down to ``times[k + 1]``.

Every inner chain starts from a *predictor*:

* ``"gaussian"`` (default): a draw from a Gaussian approximation of ``q_k``. Its mean
  is Tweedie's formula ``(y + s^2 score(y, t_k)) / a``, the exact mean of ``q_k``;
  its isotropic variance ``(s^2 / a^2)(1 - s^2 λ)`` is second-order Tweedie with
  ``λ`` the curvature of ``-log p_{t_k}`` at ``y`` estimated by a secant
  ``-<score(y + u) - score(y), u> / |u|^2`` along a random ``u`` (one score call).
  Where ``q_k`` is close to Gaussian (the stiff end of the process) this draw is
  already nearly exact and the Metropolis steps only have to correct it.
* ``"ddpm"``: the DDPM exponential-integrator step
  ``e^h y + 2(e^h - 1) score(y) + sqrt(e^{2h} - 1) ξ``. With zero inner steps RTK
  *is* DDPM.
* ``"tweedie"``: the Tweedie mean itself (deterministic).

The state carries the score at its position, so the predictor reuses the previous
segment's last gradient. NFE per segment: 1 (secant, unless ``curvature="none"``)
+ ``inner.evaluations_at_init`` + ``n_k * inner.evaluations_per_step`` (+1 when the
inner state does not cache its gradient), plus 1 for the initial score at ``T``.
"""

from collections.abc import Callable, Sequence
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.flatten_util import ravel_pytree

from rtk_blackjax._checks import check_choice, check_key, check_positive
from rtk_blackjax.diffusion import ou_variance, transition_coefs, validate_grid
from rtk_blackjax.mcmc.inner import InnerKernel, SegmentGeometry, mala_inner
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
]

PREDICTORS = ("gaussian", "ddpm", "tweedie")
# Floor of q_k's variance relative to s^2/a^2 (only binds on the segment to t = 0).
_MIN_VARIANCE_FACTOR = 1e-4
CURVATURES = ("secant", "none")
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
        Secant estimate of the curvature of ``-log p`` at the segment's start.
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


def _vdot(a: ArrayTree, b: ArrayTree) -> Array:
    leaves = jax.tree.leaves(jax.tree.map(lambda u, v: jnp.sum(u * v), a, b))
    return sum(leaves[1:], leaves[0])


def _all_finite(tree: ArrayTree) -> Array:
    return jnp.all(jnp.array([jnp.all(jnp.isfinite(v)) for v in jax.tree.leaves(tree)]))


def target_logdensity_with_score(target: Target) -> Callable:
    """``log p_t`` as a function whose autodiff gradient *is* ``target.score``.

    BlackJAX kernels take gradients with ``jax.value_and_grad``; wrapping the log
    density in ``jax.custom_jvp`` makes that gradient the target's closed-form (or
    learned) score, and lets one evaluation produce both (counted as one NFE).
    """
    if not isinstance(target, Target):
        raise TypeError(f"target must be an rtk_blackjax Target, got {target!r}")
    if target.logdensity is None:
        raise ValueError(
            "target has no logdensity (score-only model); a Metropolis inner kernel "
            "needs log p_t differences: use an inner kernel that only needs the "
            "score, or give the target a logdensity"
        )

    @jax.custom_jvp
    def logdensity(x, t):
        return target.logdensity(x, t)

    @logdensity.defjvp
    def _logdensity_jvp(primals, tangents):
        x, t = primals
        dx, _ = tangents  # log p_t is only differentiated in x by the samplers
        return target.logdensity(x, t), _vdot(target.score(x, t), dx)

    return logdensity


def segment_logdensity(
    logdensity_p: Callable, conditioning: ArrayTree, a: Array, s2: Array
) -> Callable:
    """``log q_k(x) = log p_t(x) - |y - a x|^2 / (2 s^2)`` up to a constant.

    ``logdensity_p(x)`` is ``log p_t`` at the segment's time (up to a constant).
    """

    def logdensity_fn(x):
        residual = jax.tree.map(lambda yi, xi: yi - a * xi, conditioning, x)
        return logdensity_p(x) - 0.5 * _vdot(residual, residual) / s2

    return logdensity_fn


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
        NFE spent building the problem (the secant score call, if any; the inner
        chain's initialisation is not included).
    curvature
        Secant estimate of the curvature of ``-log p`` at the segment's start
        (0 with ``curvature="none"``).
    """

    logdensity_fn: Callable
    geometry: SegmentGeometry
    params: dict
    initial_position: ArrayTree
    num_evaluations: Array
    curvature: Array


def _log_p_for(target: Target, inner: InnerKernel, needs_energy: bool):
    """``log p_t`` in the form the inner kernel needs (``None``: it brings its own)."""
    if inner.energy is not None:
        return None  # the inner kernel estimates log p_t itself
    if target.logdensity is None and not needs_energy:
        # The inner chain only ever uses the gradient of log q_k.
        return _zero_logdensity_with_score(target)
    return target_logdensity_with_score(target)


def _segment_problem(
    target: Target,
    times: Array,
    k: Array,
    position: ArrayTree,
    score: ArrayTree,
    rng_key: PRNGKey,
    inner: InnerKernel,
    logdensity_t: Callable | None,
    predictor: str,
    curvature: str,
    secant_scale: float,
) -> SegmentProblem:
    t_start, t_end = times[k], times[k + 1]
    a, s2 = transition_coefs(t_end, t_start)
    y, score_y = position, score
    # The kernel splits the same key the same way and keeps keys 2 and 3.
    key_secant, key_predictor, _, _ = jax.random.split(rng_key, 4)

    y_flat, unravel = ravel_pytree(y)
    score_y_flat, _ = ravel_pytree(score_y)
    dim = y_flat.shape[0]
    tweedie_flat = (y_flat + s2 * score_y_flat) / a

    nfe = jnp.asarray(0, jnp.int32)
    if curvature == "secant":
        u = secant_scale * jnp.sqrt(s2) * jax.random.normal(key_secant, (dim,))
        score_u, _ = ravel_pytree(target.score(unravel(y_flat + u), t_start))
        lam = -jnp.dot(score_u - score_y_flat, u) / jnp.dot(u, u)
        nfe = nfe + 1
    else:
        lam = jnp.zeros((), y_flat.dtype)
    # An OU-diffused density has curvature <= 1 / s_t^2 (p_t is p_0 convolved
    # with N(0, s_t^2)), so λ <= 1 / s_{t_start}^2, and then q_k's variance
    # (s^2/a^2)(1 - s^2 λ) is at least s^2 s_{t_end}^2 / s_{t_start}^2. Clipping
    # to that bound matters on long segments (s^2 ≈ 1, a tiny), where a secant
    # error of 1e-4 would otherwise flip the variance's sign or scale.
    s2_start, s2_end = ou_variance(t_start), ou_variance(t_end)
    lam = jnp.minimum(lam, 1.0 / s2_start)
    factor = jnp.maximum(1.0 - s2 * lam, a**2 * s2_end / s2_start)
    gaussian_var = (s2 / a**2) * jnp.maximum(factor, _MIN_VARIANCE_FACTOR)

    noise = jax.random.normal(key_predictor, (dim,), y_flat.dtype)
    if predictor == "gaussian":
        x0_flat = tweedie_flat + jnp.sqrt(gaussian_var) * noise
    elif predictor == "ddpm":
        # e^h = 1/a; the exponential integrator of the reverse SDE.
        x0_flat = (
            y_flat / a
            + 2.0 * (1.0 / a - 1.0) * score_y_flat
            + jnp.sqrt(1.0 / a**2 - 1.0) * noise
        )
    else:
        x0_flat = tweedie_flat

    geometry = SegmentGeometry(
        time=t_end,
        mean_coef=a,
        noise_var=s2,
        conditioning=y,
        gaussian_mean=unravel(tweedie_flat),
        gaussian_variance=gaussian_var,
        dim=dim,
    )
    if inner.energy is not None:
        logdensity_p = inner.energy(target, geometry)
    else:
        logdensity_p = lambda x: logdensity_t(x, t_end)  # noqa: E731
    logdensity_fn = segment_logdensity(logdensity_p, y, a, s2)
    params = inner.parameters(geometry)
    return SegmentProblem(logdensity_fn, geometry, params, unravel(x0_flat), nfe, lam)


def segment_problem(
    target: Target,
    times: Array,
    k: int | Array,
    position: ArrayTree,
    score: ArrayTree,
    rng_key: PRNGKey,
    inner: InnerKernel | None = None,
    predictor: str = "gaussian",
    curvature: str = "secant",
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
    logdensity_t = _log_p_for(target, inner, inner.needs_logdensity)
    return _segment_problem(
        target,
        times,
        jnp.asarray(k),
        position,
        score,
        rng_key,
        inner,
        logdensity_t,
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
    curvature: str = "secant",
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
        ``"secant"`` (one score call per segment) or ``"none"`` (take ``λ = 0``:
        the Gaussian approximation then only knows the quadratic factor).
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
    needs_energy = inner.needs_logdensity and steps_per_segment.max() > 0
    logdensity_t = _log_p_for(target, inner, needs_energy)

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
            logdensity_t,
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
        t_end, a, s2 = geometry.time, geometry.mean_coef, geometry.noise_var
        dtype = ravel_pytree(y)[0].dtype
        nfe = problem.num_evaluations
        inner_state = inner.init(key_init, problem.initial_position, logdensity_fn)
        nfe = nfe + inner.evaluations_at_init

        num_steps = steps_table[k]

        def one_step(i, carry):
            chain_state, acceptance_sum = carry
            step_key = jax.random.fold_in(key_chain, i)
            chain_state, info = inner.step(
                step_key, chain_state, logdensity_fn, **params
            )
            return chain_state, acceptance_sum + inner.acceptance_of(info)

        inner_state, acceptance_sum = jax.lax.fori_loop(
            0, num_steps, one_step, (inner_state, jnp.zeros((), dtype))
        )
        nfe = nfe + num_steps * inner.evaluations_per_step
        acceptance = jnp.where(
            num_steps > 0, acceptance_sum / jnp.maximum(num_steps, 1), jnp.nan
        )

        position = inner_state.position
        if inner.gradient_of is not None:
            # ∇log q_k = score(x) + a (y - a x) / s^2: recover the score for free.
            grad_q = inner.gradient_of(inner_state)
            new_score = jax.tree.map(
                lambda g, yi, xi: g - a * (yi - a * xi) / s2, grad_q, y, position
            )
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


def _zero_logdensity_with_score(target: Target) -> Callable:
    """A stand-in log density whose gradient is the score (for gradient-only use)."""

    @jax.custom_jvp
    def logdensity(x, t):
        return jnp.zeros((), jnp.result_type(float))

    @logdensity.defjvp
    def _jvp(primals, tangents):
        x, t = primals
        dx, _ = tangents
        return jnp.zeros((), jnp.result_type(float)), _vdot(target.score(x, t), dx)

    return logdensity


def as_top_level_api(
    target: Target,
    times: Array,
    inner: InnerKernel | None = None,
    num_inner_steps: int | Sequence[int] = 1,
    predictor: str = "gaussian",
    curvature: str = "secant",
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
