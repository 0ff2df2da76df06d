"""One reverse-diffusion segment: its target ``q_k`` and the Gaussian predictor of it.

Going from ``y ≈ x_{t_start}`` to ``t_end < t_start`` means sampling the *segment
target* (the posterior of a denoising problem)

    q_k(x) ∝ p_{t_end}(x) · exp(-|y - a x|^2 / (2 s^2)),
    a = exp(-h),  s^2 = 1 - exp(-2h),  h = t_start - t_end.

This module holds what every sampler that walks such segments shares (the RTK outer
kernel, :mod:`rtk_blackjax.mcmc.rtk`, and the SMC proposal,
:mod:`rtk_blackjax.posterior.smc`):

* :class:`SegmentGeometry`, what an inner kernel may know about ``q_k``;
* the **Gaussian approximation** of ``q_k``: Tweedie's mean
  ``(y + s^2 score(y, t_start)) / a`` (the exact mean of ``q_k``) and the variance
  ``(s^2 / a^2)(1 - s^2 λ)`` of second-order Tweedie, with ``λ`` the curvature of
  ``-log p_{t_start}`` at ``y`` estimated from one extra score call at ``y + u``:
  per coordinate, ``λ_i = -(score(y + u) - score(y))_i / u_i`` along a random-sign
  ``u`` (``"diagonal"``, the RTK kernel's default), or one isotropic
  ``-<score(y + u) - score(y), u> / |u|^2`` along a Gaussian ``u`` (``"secant"``);
  clipped by the bound ``λ <= 1 / s_{t_start}^2`` that OU diffusion guarantees and
  floored at ``_MIN_VARIANCE_FACTOR``;
* the **predictors** that start an inner chain: a draw from that Gaussian
  (``"gaussian"``), the DDPM exponential-integrator step (``"ddpm"``) or the Tweedie
  mean itself (``"tweedie"``);
* ``log q_k`` itself, built in one place from the target (or from a log-density
  estimate an inner kernel brings, see :mod:`rtk_blackjax.mcmc.score_energy`), and the
  inverse map that turns ``∇ log q_k`` back into the target's score.

Vectors here are flat arrays (callers ravel pytrees); all functions are pure.
"""

from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp

from rtk_blackjax._checks import check_choice
from rtk_blackjax.diffusion import ou_variance, transition_coefs
from rtk_blackjax.targets.base import Target
from rtk_blackjax.types import Array, ArrayTree, PRNGKey

__all__ = [
    "PREDICTORS",
    "CURVATURES",
    "DEFAULT_CURVATURE",
    "curvature_evaluations",
    "SegmentGeometry",
    "GaussianApproximation",
    "tweedie_mean",
    "secant_curvature",
    "diagonal_curvature",
    "clipped_variance",
    "gaussian_approximation",
    "predict",
    "target_logdensity_with_score",
    "logdensity_source",
    "segment_logdensity",
    "score_from_gradient",
]

PREDICTORS = ("gaussian", "ddpm", "tweedie")
CURVATURES = ("diagonal", "secant", "none")
# Per-coordinate curvature costs the same single score call as the isotropic secant
# and, where a segment target is anisotropic along the axes (the chessboard's
# cells), draws the predictor at the right width per coordinate: at 25 NFE on the
# chessboard RTK-MALA's mode TV fell from 0.083 to 0.021 (d = 100) and from 0.049 to
# 0.020 (d = 10); on the rotated random mixtures it is neutral to slightly better
# (benchmarks/prior_suite.py, docs/benchmarks.md). It is the RTK kernel's default;
# the twisted SMC keeps "secant" unless asked (no gain measured on digits).
DEFAULT_CURVATURE = "diagonal"
# Floor of q_k's variance relative to s^2/a^2 (only binds on the segment to t = 0).
_MIN_VARIANCE_FACTOR = 1e-4


class SegmentGeometry(NamedTuple):
    """What the outer kernel knows about one segment target, for one particle.

    ``q_k(x) ∝ p_t(x) exp(-|y - a x|^2 / (2 s^2))`` with ``t = time``.

    time
        ``t_k``, the time of ``p_t`` in ``q_k`` (the segment's end).
    mean_coef, noise_var
        ``a`` and ``s^2`` of the OU transition over the segment.
    conditioning
        ``y``, the point the segment starts from.
    gaussian_mean
        Mean of the Gaussian approximation of ``q_k``: Tweedie's formula
        ``(y + s^2 score(y, t_{k+1})) / a``, which is the *exact* mean of ``q_k``.
    gaussian_variance
        Isotropic variance of the Gaussian approximation of ``q_k`` (second-order
        Tweedie with an estimate of the curvature of ``log p_{t_{k+1}}``; under the
        per-coordinate estimate, the mean of its per-coordinate variances). Inner
        kernels scale their steps with it.
    dim
        Number of scalar coordinates of a position (static).
    """

    time: Array
    mean_coef: Array
    noise_var: Array
    conditioning: ArrayTree
    gaussian_mean: ArrayTree
    gaussian_variance: Array
    dim: int


class GaussianApproximation(NamedTuple):
    """The Gaussian approximation ``N(mean, variance I)`` of one ``q_k`` (flat).

    mean_coef, noise_var
        ``a`` and ``s^2`` of the segment's OU transition.
    mean
        Tweedie's mean ``(y + s^2 score(y)) / a``.
    variance
        The clipped second-order Tweedie variance (:func:`clipped_variance`): a
        scalar, or one per coordinate under ``curvature="diagonal"``.
    curvature
        The clipped estimate ``λ`` (0 with ``curvature="none"``; per coordinate
        under ``"diagonal"``).
    num_evaluations
        Score evaluations spent (1 for a curvature estimate, else 0).
    """

    mean_coef: Array
    noise_var: Array
    mean: Array
    variance: Array
    curvature: Array
    num_evaluations: Array


def tweedie_mean(y: Array, score_y: Array, a: Array, s2: Array) -> Array:
    """``(y + s^2 score(y)) / a``: the exact mean of ``q_k`` (Tweedie's formula)."""
    return (y + s2 * score_y) / a


def secant_curvature(
    score_fn: Callable, y: Array, score_y: Array, direction: Array
) -> Array:
    """``-<score(y + u) - score(y), u> / |u|^2``: curvature of ``-log p`` along ``u``.

    ``score_fn`` maps a flat position to its flat score (one evaluation).
    """
    score_u = score_fn(y + direction)
    return -jnp.dot(score_u - score_y, direction) / jnp.dot(direction, direction)


def diagonal_curvature(
    score_fn: Callable, y: Array, score_y: Array, direction: Array
) -> Array:
    """``-(score(y + u) - score(y))_i / u_i``: per-coordinate curvature of ``-log p``.

    With ``u = c r``, ``r`` of independent random signs, this is ``H_ii + sum_{j≠i}
    H_ij r_i r_j`` for the Hessian ``H`` of ``-log p`` (to first order): unbiased
    for the diagonal, exact where ``H`` is diagonal (Bekas, Kokiopoulou & Saad
    2007). Its mean over ``i`` is :func:`secant_curvature` along the same ``u``, so
    it never knows less than the isotropic secant. ``score_fn`` maps a flat
    position to its flat score (one evaluation); ``direction`` must have no zero
    entry.
    """
    return -(score_fn(y + direction) - score_y) / direction


def curvature_evaluations(curvature: str) -> int:
    """Score evaluations one curvature estimate costs per segment and particle.

    Examples
    --------
    >>> curvature_evaluations("diagonal"), curvature_evaluations("none")
    (1, 0)
    """
    curvature = check_choice("curvature", curvature, CURVATURES)
    return 0 if curvature == "none" else 1


def clipped_variance(
    curvature: Array, a: Array, s2: Array, t_start: Array, t_end: Array
) -> tuple[Array, Array]:
    """Clip ``λ`` and return it with the variance ``(s^2/a^2)(1 - s^2 λ)`` of ``q_k``.

    Elementwise: ``curvature`` may hold one value per coordinate (the diagonal of
    the Hessian obeys the same bound as the whole matrix).

    An OU-diffused density has curvature ``<= 1 / s_t^2`` (``p_t`` is ``p_0``
    convolved with ``N(0, s_t^2)``), so ``λ <= 1 / s_{t_start}^2``, and then the
    variance is at least ``s^2 s_{t_end}^2 / s_{t_start}^2``. Clipping to that bound
    matters on long segments (``s^2 ≈ 1``, ``a`` tiny), where a secant error of
    1e-4 would otherwise flip the variance's sign or scale. The floor
    ``_MIN_VARIANCE_FACTOR`` only binds on the segment to ``t = 0``.
    """
    s2_start, s2_end = ou_variance(t_start), ou_variance(t_end)
    lam = jnp.minimum(curvature, 1.0 / s2_start)
    factor = jnp.maximum(1.0 - s2 * lam, a**2 * s2_end / s2_start)
    return lam, (s2 / a**2) * jnp.maximum(factor, _MIN_VARIANCE_FACTOR)


def gaussian_approximation(
    rng_key: PRNGKey,
    score_fn: Callable,
    y: Array,
    score_y: Array,
    t_start: Array,
    t_end: Array,
    *,
    curvature: str = "secant",
    secant_scale: float = 1.0,
    dtype=float,
) -> GaussianApproximation:
    """Tweedie's mean and the curvature-based variance of ``q_k`` for one particle.

    Parameters
    ----------
    rng_key
        Key of the secant direction ``u = secant_scale · s · ξ`` (``ξ`` standard
        normal for ``"secant"``, random signs for ``"diagonal"``).
    score_fn
        Flat position -> flat ``score(·, t_start)``.
    y, score_y
        The flat particle at ``t_start`` and its score there.
    t_start, t_end
        The segment, ``t_start > t_end``.
    curvature
        ``"secant"`` (one score call, one isotropic ``λ``), ``"diagonal"`` (one
        score call, one ``λ`` per coordinate: the variance is per coordinate) or
        ``"none"`` (``λ = 0``).
    secant_scale
        Length of the secant direction in units of ``s``.
    dtype
        dtype of the secant direction's draw (RTK draws it in the default float
        dtype, the SMC in the particle's).
    """
    a, s2 = transition_coefs(t_end, t_start)
    mean = tweedie_mean(y, score_y, a, s2)
    nfe = jnp.asarray(0, jnp.int32)
    if curvature == "secant":
        u = secant_scale * jnp.sqrt(s2) * jax.random.normal(rng_key, y.shape, dtype)
        lam = secant_curvature(score_fn, y, score_y, u)
        nfe = nfe + 1
    elif curvature == "diagonal":
        signs = jax.random.rademacher(rng_key, y.shape, dtype)
        lam = diagonal_curvature(
            score_fn, y, score_y, secant_scale * jnp.sqrt(s2) * signs
        )
        nfe = nfe + 1
    else:
        lam = jnp.zeros((), y.dtype)
    lam, variance = clipped_variance(lam, a, s2, t_start, t_end)
    return GaussianApproximation(a, s2, mean, variance, lam, nfe)


def predict(
    predictor: str,
    rng_key: PRNGKey,
    approximation: GaussianApproximation,
    y: Array,
    score_y: Array,
) -> Array:
    """Where an inner chain starts (flat): ``"gaussian"``, ``"ddpm"`` or ``"tweedie"``.

    ``"gaussian"`` draws from the Gaussian approximation; ``"ddpm"`` is the
    exponential integrator of the reverse SDE ``e^h y + 2(e^h - 1) score(y) +
    sqrt(e^{2h} - 1) ξ`` (with ``e^h = 1/a``); ``"tweedie"`` is the mean itself.
    """
    a = approximation.mean_coef
    noise = jax.random.normal(rng_key, y.shape, y.dtype)
    if predictor == "gaussian":
        return approximation.mean + jnp.sqrt(approximation.variance) * noise
    if predictor == "ddpm":
        return (
            y / a + 2.0 * (1.0 / a - 1.0) * score_y + jnp.sqrt(1.0 / a**2 - 1.0) * noise
        )
    return approximation.mean


# --------------------------------------------------------------------------
# log q_k
# --------------------------------------------------------------------------


def _vdot(a: ArrayTree, b: ArrayTree) -> Array:
    leaves = jax.tree.leaves(jax.tree.map(lambda u, v: jnp.sum(u * v), a, b))
    return sum(leaves[1:], leaves[0])


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


def logdensity_source(
    target: Target, log_p: str | Callable, needs_value: bool = True
) -> Callable[[SegmentGeometry], Callable]:
    """``geometry -> (x -> log p_t(x) + const)``: where ``q_k``'s ``log p_t`` comes from.

    Parameters
    ----------
    target
        The diffusion target.
    log_p
        The inner kernel's need (:attr:`rtk_blackjax.mcmc.inner.InnerKernel.log_p`):
        ``"value"`` (Metropolis tests: the target's log density, whose gradient is
        its score), ``"gradient"`` (only the gradient is used: a zero stand-in
        when the target has no log density) or a callable
        ``(target, geometry) -> (x -> log p_t(x) + const)`` (an estimate, e.g.
        :func:`rtk_blackjax.mcmc.score_energy.line_integral_energy`).
    needs_value
        ``False`` when no inner step runs, so a ``"value"`` kernel is also happy
        with the stand-in on a score-only target.
    """
    if callable(log_p):
        return lambda geometry: log_p(target, geometry)
    if target.logdensity is None and (log_p == "gradient" or not needs_value):
        # The inner chain only ever uses the gradient of log q_k.
        logdensity_t = _zero_logdensity_with_score(target)
    else:
        logdensity_t = target_logdensity_with_score(target)
    return lambda geometry: lambda x: logdensity_t(x, geometry.time)


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


def score_from_gradient(
    grad_q: ArrayTree, geometry: SegmentGeometry, position: ArrayTree
) -> ArrayTree:
    """The target's score from ``∇ log q_k = score(x) + a (y - a x) / s^2`` (free)."""
    a, s2 = geometry.mean_coef, geometry.noise_var
    return jax.tree.map(
        lambda g, yi, xi: g - a * (yi - a * xi) / s2,
        grad_q,
        geometry.conditioning,
        position,
    )
