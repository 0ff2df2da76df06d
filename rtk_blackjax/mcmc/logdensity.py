"""RTK for a target known only through ``logdensity_fn(x) = log p_0(x) + const``.

Score-based samplers need ``∇ log p_t`` of the OU-diffused target; for an
unnormalised log density (a NumPyro posterior, a BlackJAX ``logdensity_fn``) it has
no closed form. This module never estimates it. It samples the *augmented joint*
of the clean point ``x_0`` and the noisy point ``x_t`` instead.

The augmented joint
-------------------
With ``x_t = a_t x_0 + s_t ξ`` (``a_t = e^{-t}``, ``s_t^2 = 1 - e^{-2t}``), the RTK
segment target ``q_k(x | y) ∝ p_{t'}(x) N(y; a x, s^2)`` (``t' < t``, ``y ≈ x_t``) is
the ``x``-marginal of

    p_0(x_0) · N(x; a_{t'} x_0, s_{t'}^2 I) · N(y; a x, s^2 I),

in which

* ``x_0 | y`` is the *denoising posterior* ``π_y(x_0) ∝ p_0(x_0) N(x_0; y / a_t,
  τ_t^2 I)``, ``τ_t^2 = e^{2t} - 1``: an MCMC problem that needs only ``log p_0``
  and its gradient;
* ``x | x_0, y`` is an exact Gaussian (a Brownian-bridge draw): mean
  ``(a_{t'} s^2 x_0 + a s_{t'}^2 y) / s_t^2``, variance ``s_{t'}^2 s^2 / s_t^2``.

Each particle therefore carries its ``x_0`` (``state.denoised``) along with its
position. One segment ``t → t'``:

1. *i-SIR* (iterated sampling-importance-resampling, ``num_importance`` = ``M``):
   draw ``M`` candidates from ``N(y / a_t, τ_t^2 I)``, the Gaussian factor of
   ``π_y``, so each candidate's importance weight is just ``p_0``; pick one among
   them *and the current* ``x_0`` with probability ∝ ``p_0``. This is a
   ``π_y``-invariant Markov kernel for any ``M`` (the current point is a
   candidate), and its candidates cover every mode the Gaussian factor reaches:
   the only move here that can jump between modes.
2. ``num_inner_steps`` MALA steps (BlackJAX ``mala``) on ``π_y`` from there, in
   the reference's whitened coordinates, with a per-particle step size adapted
   between segments towards acceptance 0.574 (fixed within a segment, so each
   segment's kernel is ``π_y``-invariant).
3. the exact bridge draw of the new position; on the last segment (``t' = 0``) the
   new position *is* ``x_0``.

Why warm-starting from the previous ``x_0`` is right: if ``x_0 ~ π_y`` and the
bridge draws ``x``, then, by the Markov property of the forward process,
``x_0 | x ~ π_x``: the carried ``x_0`` is already a draw from the next segment's
denoising posterior, and the moves only have to *correct* it. Errors come only
from chains that have not mixed: the process starts with ``y ~ N(0, I)`` at the
horizon and ``x_0`` at ``initial_position``, and the carried ``x_0`` must be driven
to ``π_y`` before ``y`` localises.

Cost (NFE): ``M`` log-density evaluations for the candidates, one
log-density-and-gradient at the chosen one (when ``M > 0``; counted even when the
current point is kept, since under ``vmap`` both branches run), and one per MALA
step (``value_and_grad`` counted as one evaluation, as BlackJAX does), plus one at
``init``: ``1 + sum_k (M_k + [M_k > 0] + n_k)`` per sample.

What was measured (see ``docs/numpyro.md``)
-------------------------------------------
The design choice between score estimation (importance sampling of ``E[x_0 | x_t]``)
and the augmented joint, and the i-SIR/MALA schedule, are documented with numbers
in ``docs/numpyro.md``.
"""

import warnings
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import blackjax
import jax
import jax.numpy as jnp
import numpy as np
from blackjax.smc.ess import ess as effective_sample_size

from rtk_blackjax._checks import (
    check_bool,
    check_callable,
    check_int,
    check_key,
    check_nonnegative,
    check_positive,
)
from rtk_blackjax.diffusion import (
    geometric_grid,
    ou_mean_coef,
    ou_noise_to_signal,
    ou_variance,
    transition_coefs,
    validate_grid,
)
from rtk_blackjax.mcmc import adaptation
from rtk_blackjax.mcmc.rtk import DiffusionAlgorithm, check_position
from rtk_blackjax.types import Array, ArrayLike, PRNGKey

__all__ = [
    "LogDensityRTKState",
    "LogDensityRTKInfo",
    "init",
    "build_kernel",
    "as_top_level_api",
    "rtk_logdensity",
    "bridge_moments",
    "default_schedule",
    "GaussianReference",
    "gaussian_reference",
    "fit_reference",
    "PilotResult",
    "SegmentStats",
    "Schedule",
    "adapt_reference",
    "adapted_schedule",
    "SCALE_TOLERANCE",
    "ScaleWarning",
    "shrunk_covariance",
    "standardise",
    "unstandardise",
    "standardised_logdensity",
    "spread_mismatch",
    "SteinCheck",
    "stein_check",
    "DriftCheck",
    "drift_check",
    "MODEL_NUM_IMPORTANCE",
    "MODEL_NUM_INNER_STEPS",
    "model_schedule",
    "initial_step_factor",
    "ModelSamples",
    "sample_model",
    "LogDensitySamples",
    "sample_logdensity",
]

# MALA's optimal acceptance is the adaptation target.
TARGET_ACCEPTANCE = adaptation.MALA_TARGET_ACCEPTANCE
# Log step-size learning rate of the between-segment adaptation.
_ADAPT_RATE = 1.5
_MAX_PER_SEGMENT = 10**6


class LogDensityRTKState(NamedTuple):
    """State of one particle of :func:`rtk_logdensity`.

    position
        Current point, an approximate draw from ``p_t`` at ``t = times[step]``;
        after the last segment, the sample (at ``t = 0``).
    denoised
        The carried clean point ``x_0``: a draw from the denoising posterior
        ``p(x_0 | x_t = position)`` (exactly ``position`` once ``t = 0``).
    logdensity, logdensity_grad
        ``log p_0`` and its gradient at ``denoised``.
    step_size
        MALA step-size *factor*, adapted between segments. MALA runs in the
        reference's whitened coordinates (``x`` itself without a reference) with
        step ``step_size / (1 + λ_max / τ_t^2)``, ``λ_max`` the reference's
        largest variance (1 without one), ``τ_t^2 = e^{2t} - 1``.
    step
        Index of the next segment (``0`` at the horizon, ``K`` when done).
    num_evaluations
        Evaluations of ``logdensity_fn`` or its gradient so far.
    """

    position: Array
    denoised: Array
    logdensity: Array
    logdensity_grad: Array
    step_size: Array
    step: Array
    num_evaluations: Array


class LogDensityRTKInfo(NamedTuple):
    """Information about one segment of one particle.

    time
        End time of the segment (the time of the new position).
    acceptance_rate
        Mean MALA acceptance probability (NaN when no MALA step ran).
    importance_moved
        Whether i-SIR picked a new candidate (False when ``M = 0``).
    importance_ess
        Effective sample size of the i-SIR weights (current point included).
    num_evaluations
        Evaluations spent on this segment.
    is_finite
        Whether the new position, ``x_0``, its log density and gradient are finite.
    """

    time: Array
    acceptance_rate: Array
    importance_moved: Array
    importance_ess: Array
    num_evaluations: Array
    is_finite: Array


def bridge_moments(
    denoised: Array, conditioning: Array, t_start: ArrayLike, t_end: ArrayLike
) -> tuple[Array, Array]:
    """Mean and (isotropic) variance of ``x_{t_end} | x_0, x_{t_start}``.

    For the OU process, ``t_end < t_start``; at ``t_end = 0`` the variance is 0 and
    the mean is ``x_0``.

    Examples
    --------
    >>> import jax.numpy as jnp
    >>> mean, var = bridge_moments(jnp.ones(2), jnp.zeros(2), 1.0, 0.0)
    >>> mean.tolist(), float(var)
    ([1.0, 1.0], 0.0)
    """
    t_start, t_end = jnp.asarray(t_start), jnp.asarray(t_end)
    a_end = ou_mean_coef(t_end)
    a, s2 = transition_coefs(t_end, t_start)
    s2_end, s2_start = ou_variance(t_end), ou_variance(t_start)
    mean = (a_end * s2 * denoised + a * s2_end * conditioning) / s2_start
    return mean, s2_end * s2 / s2_start


class GaussianReference(NamedTuple):
    """A Gaussian ``N(mean, basis diag(variances) basis^T)`` approximating ``p_0``.

    Stored by its eigendecomposition so that its denoising posterior (its product
    with ``N(y / a_t, τ_t^2 I)``) is diagonal in ``basis`` at every ``t``.
    """

    mean: Array
    basis: Array
    variances: Array


def gaussian_reference(
    mean: ArrayLike, covariance: ArrayLike, inflation: float = 1.0
) -> GaussianReference:
    """The i-SIR reference ``N(mean, inflation^2 covariance)``.

    ``covariance`` is a ``(dim, dim)`` matrix, a ``(dim,)`` vector of variances or
    a scalar. Inflating (``inflation > 1``) keeps the importance weights bounded
    where ``p_0`` has heavier tails than its Gaussian fit.

    Examples
    --------
    >>> import jax.numpy as jnp
    >>> ref = gaussian_reference(jnp.zeros(2), jnp.array([[2.0, 0.0], [0.0, 1.0]]))
    >>> sorted(ref.variances.tolist())
    [1.0, 2.0]
    """
    mean = jnp.asarray(mean)
    if mean.ndim != 1 or not jnp.issubdtype(mean.dtype, jnp.floating):
        raise ValueError(
            f"mean must be a flat real 1-D array, got shape {mean.shape}, "
            f"dtype {mean.dtype}"
        )
    dim = mean.shape[0]
    cov = jnp.asarray(covariance, mean.dtype)
    if cov.ndim == 0:
        cov = jnp.full((dim,), cov)
    if cov.ndim == 1:
        cov = jnp.diag(cov)
    if cov.shape != (dim, dim):
        raise ValueError(
            f"covariance must be a scalar, ({dim},) or ({dim}, {dim}), got shape "
            f"{cov.shape}"
        )
    if not bool(jnp.all(jnp.isfinite(cov))) or not bool(jnp.all(jnp.isfinite(mean))):
        raise ValueError("mean and covariance must be finite, got NaN or inf")
    variances, basis = jnp.linalg.eigh(0.5 * (cov + cov.T))
    if not bool(jnp.all(variances > 0)):
        raise ValueError(
            "covariance must be positive definite, got eigenvalues "
            f"down to {float(variances.min()):.3g}"
        )
    inflation = check_positive("inflation", inflation)
    return GaussianReference(mean, basis, variances * inflation**2)


def fit_reference(samples: ArrayLike, inflation: float = 1.5) -> GaussianReference:
    """A :class:`GaussianReference` from the mean and covariance of ``samples``.

    ``samples`` is ``(n, dim)``, e.g. a pilot run; a small ridge keeps the
    covariance positive definite when ``n`` is small.

    Examples
    --------
    >>> import jax, jax.numpy as jnp
    >>> ref = fit_reference(3.0 * jax.random.normal(jax.random.key(0), (4000, 2)),
    ...                     inflation=1.0)
    >>> [round(float(v)) for v in ref.variances]
    [9, 9]
    """
    samples = jnp.asarray(samples)
    if samples.ndim != 2 or samples.shape[0] < 2:
        raise ValueError(
            f"samples must have shape (n >= 2, dim), got shape {samples.shape}"
        )
    finite = jnp.all(jnp.isfinite(samples), axis=1)
    if not bool(jnp.all(finite)):
        raise ValueError(
            f"samples must be finite, got {int((~finite).sum())} rows with NaN/inf"
        )
    mean = samples.mean(0)
    cov = jnp.atleast_2d(jnp.cov(samples, rowvar=False))
    ridge = 1e-6 * (jnp.trace(cov) / cov.shape[0] + 1.0)
    return gaussian_reference(mean, cov + ridge * jnp.eye(cov.shape[0]), inflation)


# A pilot round has converged when the draws' covariance, in the coordinates
# standardised by the previous round's fit, has no eigenvalue beyond this factor of
# 1 (either way) after Ledoit-Wolf shrinkage, widened by the Marchenko-Pastur
# edge (1 + sqrt(dim / n))^2 of the draws' own sampling noise.
SCALE_TOLERANCE = 2.0
# The i-SIR reference is the pilot's Gaussian fit with its sds times this: wider
# than the fit keeps the importance weights bounded where the target's tails are
# heavier than a Gaussian's.
REFERENCE_INFLATION = 1.5


class ScaleWarning(UserWarning):
    """The pilot's standardisation of a log-density target is not (yet) right.

    Raised when the pilot rounds stop before the fitted scale stops changing, or
    when the final draws' spread differs from the fitted one: the draws then
    under- or over-estimate the target's spread.
    """


def _check_draws(name: str, samples: Any) -> Array:
    """``samples`` as a finite real ``(n >= 2, dim)`` array, or a clear error."""
    try:
        x = jnp.asarray(samples)
    except TypeError as err:
        raise TypeError(
            f"{name} must be an (n, dim) array, got {type(samples)}"
        ) from err
    if not jnp.issubdtype(x.dtype, jnp.floating) and not jnp.issubdtype(
        x.dtype, jnp.integer
    ):
        raise TypeError(f"{name} must be a real (n, dim) array, got dtype {x.dtype}")
    if x.ndim != 2 or x.shape[0] < 2:
        raise ValueError(f"{name} must have shape (n >= 2, dim), got shape {x.shape}")
    if not bool(jnp.all(jnp.isfinite(x))):
        raise ValueError(f"{name} must be finite, got NaN or inf")
    return x.astype(jnp.result_type(float))


def _check_affine(affine: Any) -> GaussianReference:
    if not isinstance(affine, GaussianReference):
        raise TypeError(
            "affine must be a GaussianReference (e.g. PilotResult.standardisation), "
            f"got {type(affine).__name__}"
        )
    return affine


def _check_points(name: str, x: Any, affine: GaussianReference) -> Array:
    x = jnp.asarray(x)
    dim = affine.mean.shape[0]
    if x.ndim == 0 or x.shape[-1] != dim:
        raise ValueError(
            f"{name} must have last axis of size {dim} (the affine map's), got "
            f"shape {x.shape}"
        )
    return x


def shrunk_covariance(samples: ArrayLike) -> Array:
    """Ledoit-Wolf covariance of ``samples`` ``(n, dim)``, shrunk towards ``m I``.

    ``m`` is the mean sample variance. Shrinkage keeps the estimate's smallest
    eigenvalues away from 0 when ``n`` is not much larger than ``dim``: the
    pilot standardises by this estimate, and an underestimated direction would
    come back as a spurious ``1 / λ`` in the next round.

    Examples
    --------
    >>> import jax, jax.numpy as jnp
    >>> x = jax.random.normal(jax.random.key(0), (50, 40))
    >>> ev = jnp.linalg.eigvalsh(shrunk_covariance(x))
    >>> bool(ev.min() > 0.5), bool(ev.max() < 1.5)
    (True, True)
    """
    x = _check_draws("samples", samples)
    n, dim = x.shape
    xc = x - x.mean(0)
    cov = xc.T @ xc / n
    mu = jnp.trace(cov) / dim
    d2 = jnp.sum((cov - mu * jnp.eye(dim)) ** 2)
    norms2 = jnp.sum(xc**2, axis=1)
    b2 = (
        jnp.sum(norms2**2) - 2.0 * jnp.sum((xc @ cov) * xc) + n * jnp.sum(cov**2)
    ) / n**2
    rho = jnp.where(d2 > 0, jnp.clip(b2 / jnp.maximum(d2, 1e-300), 0.0, 1.0), 1.0)
    return rho * mu * jnp.eye(dim) + (1.0 - rho) * cov


def standardise(affine: GaussianReference, x: ArrayLike) -> Array:
    """``z = diag(λ)^{-1/2} B^T (x - m)``: ``x`` in ``affine``'s unit coordinates."""
    x = _check_points("x", x, _check_affine(affine))
    return ((x - affine.mean) @ affine.basis) / jnp.sqrt(affine.variances)


def unstandardise(affine: GaussianReference, z: ArrayLike) -> Array:
    """``x = m + B diag(λ)^{1/2} z``, the inverse of :func:`standardise`.

    Examples
    --------
    >>> import jax.numpy as jnp
    >>> aff = gaussian_reference(jnp.array([1.0, -1.0]), jnp.array([4.0, 0.25]))
    >>> z = standardise(aff, jnp.array([3.0, -0.5]))
    >>> [round(float(v), 3) for v in z], [round(float(v), 3) for v in unstandardise(aff, z)]
    ([1.0, 1.0], [3.0, -0.5])
    """
    z = _check_points("z", z, _check_affine(affine))
    return affine.mean + (z * jnp.sqrt(affine.variances)) @ affine.basis.T


def standardised_logdensity(
    logdensity_fn: Callable[[Array], Array], affine: GaussianReference
) -> Callable[[Array], Array]:
    """``z -> log p_0(unstandardise(affine, z))``, the target in unit coordinates.

    The Jacobian of the affine map is a constant and is dropped. Running the
    diffusion on this density instead of ``logdensity_fn`` is what makes the
    ``N(0, I)`` start at the horizon right whatever the target's scale.
    """
    check_callable("logdensity_fn", logdensity_fn, "x -> log density")
    _check_affine(affine)

    def logdensity_z(z):
        return logdensity_fn(unstandardise(affine, z))

    return logdensity_z


def spread_mismatch(z_samples: ArrayLike) -> float:
    """How far the spread of standardised draws is from the unit one.

    ``λ_max`` and ``1 / λ_min`` of the sample covariance of ``z_samples``
    (``(n, dim)``), each divided by the Marchenko-Pastur edge that sampling noise
    alone reaches (``(1 ± sqrt(dim / n))^2``): at most about 1 for draws of the
    standardised target, the variance factor by which some direction is off
    otherwise.

    Examples
    --------
    >>> import jax
    >>> z = jax.random.normal(jax.random.key(0), (400, 10))
    >>> round(spread_mismatch(z), 1) <= 1.0, spread_mismatch(5.0 * z) > 10
    (True, True)
    """
    z = np.asarray(_check_draws("z_samples", z_samples), dtype=np.float64)
    n, dim = z.shape
    # The plain sample covariance: the edges below are its noise's, and shrinkage
    # would hide a real but modest change of spread when n is near dim.
    ev = np.linalg.eigvalsh(np.atleast_2d(np.cov(z, rowvar=False, bias=True)))
    # Below n = dim the smallest sample eigenvalue is 0 whatever the truth (low
    # edge 0): only the too-wide side can be read.
    low, high = _noise_band(n, dim)
    too_wide = float(ev.max()) / high
    too_narrow = low / max(float(ev.min()), 1e-300)
    return float(max(too_wide, too_narrow))


def _noise_band(num_samples: int, dim: int) -> tuple[float, float]:
    """Marchenko-Pastur edges of a unit covariance's sample eigenvalues."""
    ratio = dim / num_samples
    low = (1.0 - np.sqrt(ratio)) ** 2 if ratio < 1 else 0.0
    return low, (1.0 + np.sqrt(ratio)) ** 2


# Stein's identity is flagged when some coordinate is off by more than this many
# of its standard errors and by more than STEIN_MIN_DEVIATION (so that a huge
# sample does not flag a harmless 1 % bias).
STEIN_Z_THRESHOLD = 4.0
STEIN_MIN_DEVIATION = 0.1


class SteinCheck(NamedTuple):
    """Stein's identity on a run's draws (:func:`stein_check`).

    ratio
        ``(dim,)``: ``-mean_i ∂_j log p(x_i) (x_ij - mean_j)``, 1 for every
        coordinate ``j`` when the draws come from ``p`` (for a Gaussian ``p``, the
        draws' variance over the target's, per coordinate).
    standard_error
        ``(dim,)`` its Monte Carlo standard error (from the draws).
    num_evaluations
        Gradient evaluations spent (one per draw).
    num_nonfinite
        Draws left out because the gradient there was not finite (a violation
        in itself: a draw of ``p`` has a finite score).
    """

    ratio: np.ndarray
    standard_error: np.ndarray
    num_evaluations: int
    num_nonfinite: int = 0

    @property
    def worst(self) -> int:
        """The coordinate furthest from 1, in standard errors."""
        return int(np.argmax(np.abs(self.ratio - 1.0) / self.standard_error))

    @property
    def violated(self) -> bool:
        """Some coordinate is off by more than the thresholds allow."""
        deviation = np.abs(self.ratio - 1.0)
        return self.num_nonfinite > 0 or bool(
            np.any(
                (deviation > STEIN_Z_THRESHOLD * self.standard_error)
                & (deviation > STEIN_MIN_DEVIATION)
            )
        )


def stein_check(
    logdensity_fn: Callable[[Array], Array], samples: ArrayLike
) -> SteinCheck:
    """Check the draws against Stein's identity ``E_p[∇log p(x) (x - μ)^T] = -I``.

    Integration by parts gives the identity for any smooth density whose tails
    vanish, unimodal or not and whatever its normalising constant: only
    ``∇ log p`` at the draws is needed. Draws that miss part of ``p`` break it:
    draws of a Gaussian with too small a spread along ``j`` give
    ``ratio_j`` = their variance over the target's; draws of Neal's funnel that
    miss its neck give about 0.6 on the scale coordinate. The diagonal is
    checked, in the coordinates given (for a standardised run, the fit's axes).
    What it cannot see: wrong weights of well-separated modes (the draws of
    each mode satisfy it on their own, the boundary term between modes being
    negligible).

    Examples
    --------
    >>> import jax, jax.numpy as jnp
    >>> logp = lambda x: -0.5 * jnp.sum(x**2)
    >>> good = jax.random.normal(jax.random.key(0), (4000, 3))
    >>> stein_check(logp, good).violated, stein_check(logp, 0.5 * good).violated
    (False, True)
    """
    check_callable("logdensity_fn", logdensity_fn, "x -> log density")
    x = _check_draws("samples", samples)
    grads = jax.vmap(jax.grad(logdensity_fn))(x)
    products = -np.asarray(grads * (x - x.mean(0)), dtype=np.float64)
    finite = np.all(np.isfinite(products), axis=1)
    if finite.sum() < 2:
        raise FloatingPointError(
            f"the log density's gradient is not finite at {int((~finite).sum())} "
            f"of {x.shape[0]} draws; check logdensity_fn (and its gradient)"
        )
    products = products[finite]
    se = products.std(0, ddof=1) / np.sqrt(products.shape[0])
    return SteinCheck(
        products.mean(0),
        np.maximum(se, 1e-12),
        int(x.shape[0]),
        int((~finite).sum()),
    )


def _warn_on_stein(check: SteinCheck) -> None:
    from rtk_blackjax.run.policy import caller_stacklevel

    if check.violated:
        j = check.worst
        warnings.warn(
            "the draws fail Stein's identity E[-∂_j log p(x) (x_j - mean_j)] = 1: "
            f"coordinate {j} gives {check.ratio[j]:.3g} ± "
            f"{check.standard_error[j]:.2g} (a run that misses part of the target, "
            "e.g. a funnel's neck or an under-estimated spread: below 1 is too "
            "narrow). Remedies: more num_pilot_rounds, a finer grid, or "
            "reparameterise the model (numpyro.infer.reparam.LocScaleReparam for "
            "a funnel)"
            + (
                f"; the gradient was not finite at {check.num_nonfinite} draws"
                if check.num_nonfinite
                else ""
            ),
            ScaleWarning,
            stacklevel=caller_stacklevel(),
        )


# A drift beyond this many standard errors flags the draws (one scalar test).
DRIFT_Z_THRESHOLD = 4.0
DRIFT_NUM_STEPS = 50
# The check's MALA step: the largest on a doubling ladder whose acceptance on a
# subset of the draws is at least this. Any step leaves p invariant (the test
# stays valid); a larger one moves the draws further, which is the test's power.
DRIFT_TARGET_ACCEPTANCE = 0.25
_DRIFT_STEP_LADDER = 1e-3 * 2.0 ** np.arange(13)  # 0.001 ... 4.1
_DRIFT_TUNING_DRAWS = 256
_DRIFT_TUNING_STEPS = 5


class DriftCheck(NamedTuple):
    """How far the draws' log density drifts under a ``p``-invariant kernel
    (:func:`drift_check`).

    z
        ``mean / se`` of ``Δ_i = log p(x_i after) - log p(x_i)``: about
        ``N(0, 1)`` when the draws come from ``p``; negative when they sit where
        ``p`` is higher than it should be (too narrow, e.g. a funnel's wide
        mouth missed), positive when lower (too wide).
    mean_change
        ``mean_i Δ_i``, in nats.
    step_size
        The MALA step used.
    acceptance
        Mean MALA acceptance over the check's steps.
    num_steps
        MALA steps run from each draw.
    num_evaluations
        Log-density-and-gradient evaluations spent (tuning included).
    num_nonfinite
        Draws whose log density (before or after) was not finite.
    """

    z: float
    mean_change: float
    step_size: float
    acceptance: float
    num_steps: int
    num_evaluations: int
    num_nonfinite: int = 0

    @property
    def violated(self) -> bool:
        """The drift is beyond :data:`DRIFT_Z_THRESHOLD` standard errors."""
        return self.num_nonfinite > 0 or abs(self.z) > DRIFT_Z_THRESHOLD


def _mala_drift(logdensity_fn: Callable, num_steps: int) -> Callable:
    """``(keys, x, step) -> (Δ log p, acceptance)`` per draw, ``num_steps`` MALA
    steps each (one compiled program for every step size)."""
    kernel = blackjax.mala.build_kernel()

    def chain(key, x0, step_size):
        start = blackjax.mala.init(x0, logdensity_fn)

        def one_step(state, k):
            state, info = kernel(k, state, logdensity_fn, step_size)
            return state, info.acceptance_rate

        end, acceptance = jax.lax.scan(
            one_step, start, jax.random.split(key, num_steps)
        )
        return end.logdensity - start.logdensity, jnp.mean(acceptance)

    return jax.jit(jax.vmap(chain, in_axes=(0, 0, None)))


def drift_check(
    rng_key: PRNGKey,
    logdensity_fn: Callable[[Array], Array],
    samples: ArrayLike,
    *,
    num_steps: int = DRIFT_NUM_STEPS,
) -> DriftCheck:
    """Run a ``p``-invariant MALA kernel from every draw and test its drift.

    If the draws are independent draws of ``p``, so are the draws after any
    number of steps of a kernel that leaves ``p`` invariant, whatever its step
    size: the change ``Δ_i`` of each draw's log density has mean exactly 0, and
    ``z = mean(Δ) / se(Δ)`` is about standard normal. Draws that miss part of
    ``p`` relax towards it and drift. Metropolis rejection bounds each move,
    so the test stays sharp where the density's gradient is heavy-tailed and
    :func:`stein_check`'s standard errors are large (Neal's funnel: Stein at
    3.6 standard errors, this check at -6.8 on the same draws). Like Stein's
    identity it cannot see wrong weights of well-separated modes: no chain
    crosses between them in ``num_steps`` steps.

    The step is the largest of a doubling ladder (0.001 to 4) whose acceptance
    over a few steps on a subset of the draws is at least
    :data:`DRIFT_TARGET_ACCEPTANCE`; it is meant for standardised coordinates
    (unit scale), as :func:`sample_logdensity` uses.

    Examples
    --------
    >>> import jax, jax.numpy as jnp
    >>> logp = lambda x: -0.5 * jnp.sum(x**2)
    >>> good = jax.random.normal(jax.random.key(0), (2000, 3))
    >>> key = jax.random.key(1)
    >>> drift_check(key, logp, good).violated, drift_check(key, logp, 0.8 * good).violated
    (False, True)
    """
    rng_key = check_key("rng_key", rng_key)
    check_callable("logdensity_fn", logdensity_fn, "x -> log density")
    x = _check_draws("samples", samples)
    num_steps = check_int("num_steps", num_steps, minimum=1)
    key_tune, key_run = jax.random.split(rng_key)
    num = x.shape[0]
    subset = x[: min(num, _DRIFT_TUNING_DRAWS)]
    tune = _mala_drift(logdensity_fn, _DRIFT_TUNING_STEPS)
    tune_keys = jax.random.split(key_tune, subset.shape[0])
    step_size = float(_DRIFT_STEP_LADDER[0])
    for h in _DRIFT_STEP_LADDER:
        _, acceptance = tune(tune_keys, subset, jnp.asarray(h, x.dtype))
        if float(jnp.mean(acceptance)) >= DRIFT_TARGET_ACCEPTANCE:
            step_size = float(h)
    delta, acceptance = _mala_drift(logdensity_fn, num_steps)(
        jax.random.split(key_run, num), x, jnp.asarray(step_size, x.dtype)
    )
    delta = np.asarray(delta, np.float64)
    finite = np.isfinite(delta)
    # one value and gradient at each start and per step, tuning included
    evaluations = num * (1 + num_steps) + len(_DRIFT_STEP_LADDER) * subset.shape[0] * (
        1 + _DRIFT_TUNING_STEPS
    )
    if finite.sum() < 2:
        raise FloatingPointError(
            f"the log density is not finite at {int((~finite).sum())} of {num} "
            "draws (or after MALA steps from them); check logdensity_fn"
        )
    kept = delta[finite]
    se = kept.std(ddof=1) / np.sqrt(kept.size)
    return DriftCheck(
        float(kept.mean() / se) if se > 0 else 0.0,
        float(kept.mean()),
        step_size,
        float(np.mean(np.asarray(acceptance))),
        num_steps,
        int(evaluations),
        int((~finite).sum()),
    )


def _warn_on_drift(check: DriftCheck) -> None:
    from rtk_blackjax.run.policy import caller_stacklevel

    if check.violated:
        if check.mean_change < 0:
            looks = (
                "too narrow: e.g. an under-estimated spread, a funnel's mouth missed"
            )
        else:
            looks = "too wide, or missing a high-density region"
        warnings.warn(
            f"the draws are not stationary under a p-invariant MALA kernel: their "
            f"log density drifts by {check.mean_change:+.3g} nats ({check.z:+.1f} "
            f"standard errors) in {check.num_steps} steps (the draws look {looks})."
            " Remedies: more num_pilot_rounds, a finer grid, or reparameterise the "
            "model (numpyro.infer.reparam.LocScaleReparam for a funnel)"
            + (
                f"; the log density was not finite at {check.num_nonfinite} draws"
                if check.num_nonfinite
                else ""
            ),
            ScaleWarning,
            stacklevel=caller_stacklevel(),
        )


def _refit(affine: GaussianReference, z_samples: Array) -> GaussianReference:
    """``affine`` composed with the Gaussian fit of its standardised draws.

    Eigenvalues of the draws' covariance inside the noise band of a unit
    covariance are read as 1 (no change): refitting them would feed the sample
    noise back (a direction underestimated by chance comes back ``1 / λ`` times
    too wide next round), while the directions outside it, those whose scale
    the previous fit had wrong, are refitted in full.
    """
    n, dim = z_samples.shape
    low, high = _noise_band(n, dim)
    zc = z_samples - z_samples.mean(0)
    values, vectors = jnp.linalg.eigh(zc.T @ zc / n)
    values = jnp.where((values >= low) & (values <= high), 1.0, values)
    lift = affine.basis * jnp.sqrt(affine.variances)  # x = m + lift @ z
    root = lift @ (vectors * jnp.sqrt(jnp.maximum(values, 1e-12)))
    mean = affine.mean + lift @ z_samples.mean(0)
    return gaussian_reference(mean, root @ root.T)


def _schedule(value, num_segments: int, name: str) -> np.ndarray:
    try:
        arr = np.asarray(value)
    except (TypeError, ValueError) as err:
        raise ValueError(
            f"{name} must be an int or a sequence of ints, one per segment"
        ) from err
    if arr.ndim == 0:
        arr = np.full(num_segments, arr)
    if arr.shape != (num_segments,):
        raise ValueError(
            f"{name} must be an int or have one entry per segment ({num_segments}), "
            f"got shape {arr.shape}"
        )
    if not np.issubdtype(arr.dtype, np.integer) or np.any(arr < 0):
        raise ValueError(f"{name} must be non-negative integers, got {arr.tolist()}")
    if np.any(arr > _MAX_PER_SEGMENT):
        raise ValueError(f"{name} must be at most {_MAX_PER_SEGMENT} per segment")
    return arr.astype(np.int32)


def default_schedule(
    num_segments: int = 16,
    horizon: float = 4.0,
    num_importance: int = 256,
    num_inner_steps: int = 4,
) -> tuple[Array, np.ndarray, np.ndarray]:
    """The default grid and per-segment i-SIR / MALA schedule.

    A geometric grid from ``horizon`` to ``1e-3`` then 0; i-SIR on every segment
    but the last (where ``π_y`` is a narrow Gaussian and candidates drawn from
    its Gaussian factor are nearly all rejected), MALA steps everywhere.

    Examples
    --------
    >>> times, m, n = default_schedule(4)
    >>> len(times), m.tolist(), n.tolist()
    (5, [256, 256, 256, 0], [4, 4, 4, 4])
    """
    num_importance = check_int("num_importance", num_importance, minimum=0)
    num_inner_steps = check_int("num_inner_steps", num_inner_steps, minimum=0)
    times = geometric_grid(num_segments, horizon=horizon)
    m = np.full(num_segments, num_importance, np.int32)
    m[-1] = 0
    n = np.full(num_segments, num_inner_steps, np.int32)
    return times, m, n


# sample_model's and RTKKernel's schedule when the caller gives none: on a
# standardised target, inner steps (which move every particle a bounded distance
# and are what grows an underestimated scale) do more per evaluation than
# i-SIR candidates; 32 candidates still jump between modes (measured in
# docs/numpyro.md).
MODEL_NUM_IMPORTANCE = 32
MODEL_NUM_INNER_STEPS = 16


def initial_step_factor(dim: int) -> float:
    """The MALA step-size factor :func:`sample_model` starts segment 0 with.

    ``rtk_logdensity``'s default 0.2 (the factor is adapted between segments),
    scaled like MALA's optimal step, ``dim^(-1/3)`` (Roberts & Rosenthal 1998),
    from ``dim = 10`` on: segment 0 runs before any adaptation, and with 0.2
    its acceptance fell to 0.03 at ``dim = 50`` on a standard Gaussian.

    Examples
    --------
    >>> initial_step_factor(2), round(initial_step_factor(80), 3)
    (0.2, 0.1)
    """
    dim = check_int("dim", dim, minimum=1)
    return 0.2 * min(1.0, (10.0 / dim) ** (1.0 / 3.0))


def model_schedule(
    times: ArrayLike | None = None,
    num_importance: int | Sequence[int] | None = None,
    num_inner_steps: int | Sequence[int] | None = None,
) -> dict:
    """The grid and schedule of :func:`sample_model` / ``RTKKernel``.

    :func:`default_schedule`'s grid and last-segment rule with
    :data:`MODEL_NUM_IMPORTANCE` candidates and :data:`MODEL_NUM_INNER_STEPS`
    MALA steps, each replaced where the caller gives one.

    Examples
    --------
    >>> kw = model_schedule()
    >>> len(kw["times"]), kw["num_importance"][:2].tolist(), kw["num_inner_steps"][0]
    (17, [32, 32], np.int32(16))
    """
    if times is not None:
        times = validate_grid(times)
    num_segments = 16 if times is None else int(times.shape[0]) - 1
    if num_importance is not None:
        num_importance = _schedule(num_importance, num_segments, "num_importance")
    if num_inner_steps is not None:
        num_inner_steps = _schedule(num_inner_steps, num_segments, "num_inner_steps")
    grid, m, n = default_schedule(
        num_segments,
        num_importance=MODEL_NUM_IMPORTANCE,
        num_inner_steps=MODEL_NUM_INNER_STEPS,
    )
    return dict(
        times=grid if times is None else times,
        num_importance=m if num_importance is None else num_importance,
        num_inner_steps=n if num_inner_steps is None else num_inner_steps,
    )


def init(
    position: ArrayLike,
    logdensity_fn: Callable[[Array], Array],
    initial_denoised: Array | None = None,
    step_size: float = 0.2,
    init_spread: float = 0.0,
) -> LogDensityRTKState:
    """Start a particle at ``position`` (a draw from ``N(0, I)`` at the horizon).

    ``initial_denoised`` is the starting ``x_0`` (zeros by default; for a NumPyro
    model, ``ModelDensity.initial_position``). With ``init_spread > 0`` each
    particle starts at ``initial_denoised + init_spread * position`` instead: the
    horizon draw ``position ~ N(0, I)`` doubles as a random start (``init`` gets no
    key), so that particles start in different basins (used to discover modes in
    the first pilot round).
    """
    check_callable("logdensity_fn", logdensity_fn, "x -> log density")
    check_positive("step_size", step_size)
    check_nonnegative("init_spread", init_spread)
    position = check_position(position)
    if not isinstance(position, jax.Array) or position.ndim != 1:
        raise ValueError(
            "position must be a flat 1-D array (ravel pytrees first, e.g. with "
            f"adapters.numpyro_model.model_density), got {jax.tree.structure(position)}"
        )
    if initial_denoised is None:
        denoised = jnp.zeros_like(position)
    else:
        denoised = jnp.broadcast_to(
            jnp.asarray(initial_denoised, position.dtype), position.shape
        )
    if init_spread:
        denoised = denoised + init_spread * position
    logdensity, grad = jax.value_and_grad(logdensity_fn)(denoised)
    return LogDensityRTKState(
        position=position,
        denoised=denoised,
        logdensity=logdensity,
        logdensity_grad=grad,
        step_size=jnp.asarray(step_size, position.dtype),
        step=jnp.asarray(0, jnp.int32),
        num_evaluations=jnp.asarray(1, jnp.int32),
    )


def _finite_or_neg_inf(logw: Array) -> Array:
    # A candidate whose log density is NaN/inf-above cannot be chosen: weight 0.
    return jnp.where(jnp.isnan(logw) | (logw == jnp.inf), -jnp.inf, logw)


def build_kernel(
    logdensity_fn: Callable[[Array], Array],
    times: ArrayLike,
    num_importance: int | Sequence[int] = 256,
    num_inner_steps: int | Sequence[int] = 4,
    adapt_step_size: bool = True,
    reference: GaussianReference | None = None,
) -> Callable:
    """Build ``kernel(rng_key, state, segment=None) -> (state, info)``: one segment.

    Parameters
    ----------
    logdensity_fn
        ``x (dim,) -> log p_0(x)`` up to a constant, differentiable by JAX.
    times
        Reverse-time grid, horizon first, ending at 0.
    num_importance
        i-SIR candidates per segment (int or one per segment; 0 skips i-SIR).
    num_inner_steps
        MALA steps per segment (int or one per segment).
    adapt_step_size
        Adapt the MALA step size between segments towards acceptance 0.574.
    reference
        Gaussian approximation of ``p_0`` that shapes the i-SIR proposal (see
        :func:`gaussian_reference`); ``None``: the flat reference, i.e. candidates
        from the Gaussian factor ``N(y / a_t, τ_t^2 I)`` alone.
    """
    check_callable("logdensity_fn", logdensity_fn, "x -> log density")
    adapt_step_size = check_bool("adapt_step_size", adapt_step_size)
    if reference is not None and not isinstance(reference, GaussianReference):
        raise TypeError(
            "reference must be a GaussianReference (gaussian_reference(...) or "
            f"fit_reference(...)), got {type(reference).__name__}"
        )
    times = validate_grid(times)
    num_segments = int(times.shape[0]) - 1
    m_table = _schedule(num_importance, num_segments, "num_importance")
    n_table = _schedule(num_inner_steps, num_segments, "num_inner_steps")
    max_m = int(m_table.max())
    m_table_j, n_table_j = jnp.asarray(m_table), jnp.asarray(n_table)
    mala = blackjax.mala.build_kernel()
    if reference is None:
        # Without a reference MALA runs in x itself (p_0 at the OU's unit scale).
        ref_max_variance = 1.0
        to_w = to_x = grad_to_w = grad_to_x = lambda v: v  # noqa: E731
    else:
        sqrt_lam = jnp.sqrt(reference.variances)
        basis, ref_mean = reference.basis, reference.mean
        ref_max_variance = jnp.max(reference.variances)

        def to_x(w):
            return ref_mean + basis @ (sqrt_lam * w)

        def to_w(x):
            return (basis.T @ (x - ref_mean)) / sqrt_lam

        def grad_to_w(g):  # B^T g
            return sqrt_lam * (basis.T @ g)

        def grad_to_x(g):  # B^{-T} g
            return basis @ (g / sqrt_lam)

    value_and_grad = jax.value_and_grad(logdensity_fn)

    def kernel(
        rng_key: PRNGKey, state: LogDensityRTKState, segment: ArrayLike | None = None
    ) -> tuple[LogDensityRTKState, LogDensityRTKInfo]:
        k = state.step if segment is None else jnp.asarray(segment, jnp.int32)
        t_start, t_end = times[k], times[k + 1]
        y, x0 = state.position, state.denoised
        dtype = y.dtype
        key_is, key_pick, key_mala, key_bridge = jax.random.split(rng_key, 4)
        a_t = ou_mean_coef(t_start)
        tau2 = ou_noise_to_signal(t_start)  # = s_t^2 / a_t^2
        center = y / a_t
        m_k, n_k = m_table_j[k], n_table_j[k]
        nfe = jnp.asarray(0, jnp.int32)

        # 1. i-SIR. The proposal is the denoising posterior of the Gaussian
        # reference N(m, V diag(λ) V^T): Gaussian, diagonal in the V basis, so that
        # for a Gaussian p_0 every weight is equal; the weight is p_0 / reference.
        if max_m > 0:
            noise = jax.random.normal(key_is, (max_m,) + y.shape, dtype)
            if reference is None:
                candidates = center + jnp.sqrt(tau2) * noise
                ref_logpdf = lambda x: jnp.zeros((), dtype)  # noqa: E731
            else:
                basis, lam, ref_mean = (
                    reference.basis,
                    reference.variances,
                    reference.mean,
                )
                var_q = 1.0 / (1.0 / lam + 1.0 / tau2)
                mean_q = basis @ (
                    var_q * (basis.T @ ref_mean / lam + basis.T @ center / tau2)
                )
                candidates = mean_q + (noise * jnp.sqrt(var_q)) @ basis.T

                def ref_logpdf(x):
                    z = basis.T @ (x - ref_mean)
                    return -0.5 * jnp.sum(z**2 / lam)

            # Only this segment's m_k candidates are evaluated (a loop whose trip
            # count is the segment's, the same for every particle); the slots
            # past m_k keep weight 0. The candidates' shape is the schedule's
            # largest (one compiled shape), their evaluations are not.
            def weigh(i, logw):
                x = candidates[i]
                return logw.at[i].set(logdensity_fn(x) - ref_logpdf(x))

            logw = _finite_or_neg_inf(
                jax.lax.fori_loop(0, m_k, weigh, jnp.full((max_m,), -jnp.inf, dtype))
            )
            current_logw = _finite_or_neg_inf(state.logdensity - ref_logpdf(x0))
            all_logw = jnp.concatenate([current_logw[None], logw])
            # One draw from the M + 1 weights (the current point included): a
            # categorical draw, not a population resampling.
            index = jax.random.categorical(key_pick, all_logw)
            ess = effective_sample_size(all_logw)
            moved = index > 0
            chosen = jnp.where(moved, candidates[jnp.maximum(index - 1, 0)], x0)
            # The gradient at a new point costs one more evaluation.
            new_logd, new_grad = jax.lax.cond(
                moved,
                value_and_grad,
                lambda _: (state.logdensity, state.logdensity_grad),
                chosen,
            )
            x0 = chosen
            # What runs, not what is used: the gradient at the chosen point is
            # evaluated under vmap even when the current point is kept (a batched
            # cond runs both branches), so it counts on every segment.
            nfe = nfe + m_k + 1
        else:
            moved = jnp.zeros((), bool)
            ess = jnp.ones((), dtype)
            new_logd, new_grad = state.logdensity, state.logdensity_grad

        # 2. MALA on π_y(x0) = log p_0(x0) - |x0 - y/a|^2 / (2 τ^2), run in the
        # reference's whitened coordinates x0 = m + B w (B = V diag(sqrt λ)), where
        # p_0 has roughly unit scale in every direction: a badly scaled posterior
        # (eight schools' tau next to its thetas) gets one sensible step size.
        def posterior_logdensity(x):
            return logdensity_fn(x) - 0.5 * jnp.sum((x - center) ** 2) / tau2

        def posterior_w(w):
            return posterior_logdensity(to_x(w))

        w0 = to_w(x0)
        prior_term = -0.5 * jnp.sum((x0 - center) ** 2) / tau2
        mala_state = blackjax.mala.init(w0, posterior_w)._replace(
            logdensity=new_logd + prior_term,
            logdensity_grad=grad_to_w(new_grad - (x0 - center) / tau2),
        )
        # The adapted quantity is relative to π_y's scale, which shrinks like τ_t^2
        # along a geometric grid faster than any between-segment adaptation could
        # follow: step = factor / (1 + λ_max / τ^2) in whitened coordinates.
        step_size = state.step_size / (1.0 + ref_max_variance / tau2)

        def one_step(i, carry):
            ms, acc = carry
            ms, info = mala(jax.random.fold_in(key_mala, i), ms, posterior_w, step_size)
            return ms, acc + info.acceptance_rate

        mala_state, acc_sum = jax.lax.fori_loop(
            0, n_k, one_step, (mala_state, jnp.zeros((), dtype))
        )
        acceptance = jnp.where(n_k > 0, acc_sum / jnp.maximum(n_k, 1), jnp.nan)
        nfe = nfe + n_k
        x0 = to_x(mala_state.position)
        logd = mala_state.logdensity + 0.5 * jnp.sum((x0 - center) ** 2) / tau2
        grad = grad_to_x(mala_state.logdensity_grad) + (x0 - center) / tau2
        step_factor = state.step_size
        if adapt_step_size:
            # Robbins–Monro on log(factor) with the segment's mean acceptance.
            step_factor = jnp.where(
                n_k > 0,
                adaptation.adapt_step_size(
                    step_factor, acceptance, TARGET_ACCEPTANCE, _ADAPT_RATE
                ),
                step_factor,
            )

        # 3. Exact bridge draw of the new position.
        mean, var = bridge_moments(x0, y, t_start, t_end)
        position = mean + jnp.sqrt(var) * jax.random.normal(key_bridge, y.shape, dtype)

        finite = (
            jnp.all(jnp.isfinite(position))
            & jnp.all(jnp.isfinite(x0))
            & jnp.isfinite(logd)
            & jnp.all(jnp.isfinite(grad))
        )
        new_state = LogDensityRTKState(
            position=position,
            denoised=x0,
            logdensity=logd,
            logdensity_grad=grad,
            step_size=step_factor,
            step=k + 1,
            num_evaluations=state.num_evaluations + nfe,
        )
        info = LogDensityRTKInfo(
            time=t_end,
            acceptance_rate=acceptance,
            importance_moved=moved,
            importance_ess=ess,
            num_evaluations=nfe,
            is_finite=finite,
        )
        return new_state, info

    return kernel


def _resolve_schedule(times, num_importance, num_inner_steps):
    """The grid and per-segment ``(M, n)`` a run uses, defaults filled in."""
    if times is None:
        times, m_default, n_default = default_schedule()
    else:
        times = validate_grid(times)
        _, m_default, n_default = default_schedule(int(times.shape[0]) - 1)
    num_segments = int(times.shape[0]) - 1
    m = m_default if num_importance is None else num_importance
    n = n_default if num_inner_steps is None else num_inner_steps
    return (
        times,
        _schedule(m, num_segments, "num_importance"),
        _schedule(n, num_segments, "num_inner_steps"),
    )


def as_top_level_api(
    logdensity_fn: Callable[[Array], Array],
    times: ArrayLike | None = None,
    *,
    num_importance: int | Sequence[int] | None = None,
    num_inner_steps: int | Sequence[int] | None = None,
    initial_position: ArrayLike | None = None,
    step_size: float = 0.2,
    adapt_step_size: bool = True,
    reference: GaussianReference | None = None,
    init_spread: float = 0.0,
) -> DiffusionAlgorithm:
    """RTK on the augmented joint ``(x_0, x_t)`` for a plain log density.

    Parameters
    ----------
    logdensity_fn
        ``x (dim,) -> log p_0(x)`` up to a constant (flat positions).
    times
        Reverse-time grid (default: :func:`default_schedule`'s, 16 segments).
    num_importance, num_inner_steps
        i-SIR candidates and MALA steps per segment (int or per segment); the
        defaults are :func:`default_schedule`'s.
    initial_position
        Starting ``x_0`` of every particle (the reference mean, or zeros).
    step_size
        Initial MALA step-size factor (relative to the denoising posterior's
        scale, see :class:`LogDensityRTKState`; adapted between segments).
    adapt_step_size
        Whether to adapt it.
    reference
        Gaussian approximation of ``p_0`` shaping the i-SIR proposal
        (:func:`gaussian_reference`, :func:`fit_reference`); ``None`` uses the
        Gaussian factor of the denoising posterior alone.
    init_spread
        Start each particle's ``x_0`` at ``initial_position + init_spread * z``,
        ``z`` its ``N(0, I)`` horizon draw (see :func:`init`).

    Examples
    --------
    A 1-D two-mode target with weights 0.7 / 0.3:

    >>> import jax, jax.numpy as jnp
    >>> import rtk_blackjax as rb
    >>> def logdensity_fn(x):
    ...     comps = jnp.stack([jnp.log(0.7) - 0.5 * jnp.sum((x - 2.0) ** 2),
    ...                        jnp.log(0.3) - 0.5 * jnp.sum((x + 2.0) ** 2)])
    ...     return jax.nn.logsumexp(comps)
    >>> alg = rtk_logdensity(logdensity_fn, rb.geometric_grid(6, horizon=4.0),
    ...                      num_importance=32, num_inner_steps=2)
    >>> result = rb.sample(jax.random.key(0), alg, 2000, dim=1)
    >>> round(float(jnp.mean(result.samples > 0)), 1)
    0.7
    """
    check_callable("logdensity_fn", logdensity_fn, "x -> log density")
    # Checked here, not only in init: a bad step size would otherwise surface as
    # NaN samples (init runs inside the sampler's traced program).
    check_positive("step_size", step_size)
    check_nonnegative("init_spread", init_spread)
    times, num_importance, num_inner_steps = _resolve_schedule(
        times, num_importance, num_inner_steps
    )
    kernel = build_kernel(
        logdensity_fn,
        times,
        num_importance=num_importance,
        num_inner_steps=num_inner_steps,
        adapt_step_size=adapt_step_size,
        reference=reference,
    )
    if initial_position is not None:
        initial_position = check_position(jnp.asarray(initial_position))
    elif reference is not None:
        initial_position = reference.mean

    def init_fn(position: ArrayLike, rng_key: PRNGKey | None = None):
        del rng_key
        return init(position, logdensity_fn, initial_position, step_size, init_spread)

    def step_fn(
        rng_key: PRNGKey, state: LogDensityRTKState, segment: ArrayLike | None = None
    ):
        # Dtype and shape only: works on traced keys too (the driver vmaps this).
        return kernel(check_key("rng_key", rng_key), state, segment)

    return DiffusionAlgorithm(init_fn, step_fn, times)


rtk_logdensity = as_top_level_api


class PilotResult(NamedTuple):
    """Output of :func:`adapt_reference`.

    reference
        The Gaussian reference fitted on the last pilot round (inflated): the
        i-SIR reference for a run in the target's own coordinates.
    num_evaluations
        Total log-density/gradient evaluations of all pilot rounds (all particles).
    samples
        The last round's samples ``(num_particles, dim)`` (target coordinates).
    standardisation
        With ``standardise=True``: the fitted affine map (a Gaussian fit, not
        inflated) that :func:`standardised_logdensity` uses to put the target in
        unit coordinates; ``None`` otherwise.
    mismatch
        :func:`spread_mismatch` of each standardised round's draws, in order: how
        much the spread still changed (1 or less: it did not).
    converged
        Whether the last standardised round's mismatch was within ``tolerance``
        (``None`` when no standardised round ran).
    segment_stats
        :class:`SegmentStats` of the last round (what :func:`adapted_schedule`
        reads).
    """

    reference: GaussianReference
    num_evaluations: int
    samples: Array
    standardisation: GaussianReference | None = None
    mismatch: tuple = ()
    converged: bool | None = None
    segment_stats: "SegmentStats | None" = None


class SegmentStats(NamedTuple):
    """Per-segment behaviour of one run's i-SIR and MALA, averaged over particles.

    ess_fraction
        Effective sample size of the i-SIR weights over the ``M + 1`` points
        (candidates and current point), divided by ``M + 1``; 1 where ``M = 0``.
    move_rate
        Fraction of particles whose i-SIR picked a new candidate.
    acceptance
        Mean MALA acceptance probability (NaN where no MALA step ran).
    num_importance, num_inner_steps
        The schedule the run used.
    """

    ess_fraction: np.ndarray
    move_rate: np.ndarray
    acceptance: np.ndarray
    num_importance: np.ndarray
    num_inner_steps: np.ndarray


def _segment_stats(info: LogDensityRTKInfo, finite: np.ndarray, m, n) -> SegmentStats:
    m, n = np.asarray(m, np.int32), np.asarray(n, np.int32)

    def mean(field):  # (segments, particles) -> (segments,), finite particles
        return np.asarray(field, np.float64)[:, finite].mean(axis=1)

    with warnings.catch_warnings():  # all-NaN acceptance where no MALA step ran
        warnings.simplefilter("ignore", RuntimeWarning)
        acceptance = np.nanmean(np.asarray(info.acceptance_rate)[:, finite], axis=1)
    return SegmentStats(
        ess_fraction=np.where(m > 0, mean(info.importance_ess) / (m + 1), 1.0),
        move_rate=mean(info.importance_moved),
        acceptance=acceptance,
        num_importance=m,
        num_inner_steps=n,
    )


def _pilot_round(
    rng_key: PRNGKey,
    logdensity_fn: Callable[[Array], Array],
    dim: int,
    num_particles: int,
    round_index: int,
    **algorithm_kwargs,
) -> tuple[Array, int, SegmentStats]:
    """One pilot run: its finite draws, its total evaluations, its segments' stats."""
    from rtk_blackjax.run import sample
    from rtk_blackjax.run.policy import low_acceptance_hint

    algorithm = as_top_level_api(logdensity_fn, **algorithm_kwargs)
    # A pilot round is not the user's run: its first rounds, before the
    # reference fits, may accept little, and that is what the rounds are for.
    with low_acceptance_hint(None):
        result = sample(
            rng_key,
            algorithm,
            num_particles,
            dim=dim,
            on_nonfinite="mask",
        )
    finite = np.asarray(result.finite)
    if finite.sum() < 2:
        raise FloatingPointError(
            f"pilot round {round_index}: {int((~finite).sum())} of {num_particles} "
            "particles went non-finite; check logdensity_fn (and its gradient)"
        )
    draws = jnp.asarray(np.asarray(result.samples)[finite])
    _, m, n = _resolve_schedule(
        algorithm_kwargs.get("times"),
        algorithm_kwargs.get("num_importance"),
        algorithm_kwargs.get("num_inner_steps"),
    )
    stats = _segment_stats(result.info, finite, m, n)
    return draws, int(result.num_evaluations) * num_particles, stats


def adapt_reference(
    rng_key: PRNGKey,
    logdensity_fn: Callable[[Array], Array],
    dim: int,
    *,
    num_rounds: int = 3,
    num_particles: int = 200,
    inflation: float = REFERENCE_INFLATION,
    initial_position: ArrayLike | None = None,
    reference: GaussianReference | None = None,
    init_spread: float = 2.0,
    standardise: bool = False,
    tolerance: float = SCALE_TOLERANCE,
    **algorithm_kwargs,
) -> PilotResult:
    """Fit the i-SIR reference by a few small pilot runs, each refitting the last.

    Round 0 uses ``reference`` (default: none, the Gaussian factor alone), with
    particles started at ``initial_position + init_spread * N(0, I)`` (multi-start,
    so that they fall into different basins); every round fits
    :func:`fit_reference` on its samples. Mode weights that the first
    round gets wrong are corrected by the next ones, as soon as every mode has
    been visited once: the fitted covariance then spans them all.

    With ``standardise=True`` every round after the first runs on the target
    *standardised* by the previous round's fit (:func:`standardised_logdensity`),
    so that the diffusion's ``N(0, I)`` start matches the target's scale, and the
    rounds stop as soon as the draws' spread stops changing
    (:func:`spread_mismatch` at most ``tolerance``): ``num_rounds`` is then the
    most rounds run. Each round can grow a badly underestimated scale only by a
    few times (the inner chains travel a bounded distance per run), so a target
    whose scale is off by orders of magnitude needs several rounds; if the last
    one still changed, ``converged`` is False.

    Examples
    --------
    >>> import jax, jax.numpy as jnp
    >>> pilot = adapt_reference(jax.random.key(0), lambda x: -0.5 * jnp.sum(x**2) / 4,
    ...                         2, num_rounds=1, num_particles=100, inflation=1.0,
    ...                         times=jnp.array([3.0, 0.5, 0.0]),
    ...                         num_importance=8, num_inner_steps=1)
    >>> pilot.reference.variances.shape, pilot.num_evaluations > 0
    ((2,), True)

    Standardised rounds find a scale 30 times the diffusion's:

    >>> wide = lambda x: -0.5 * jnp.sum(x**2) / 900.0
    >>> pilot = adapt_reference(jax.random.key(0), wide, 2, num_rounds=6,
    ...                         standardise=True, times=jnp.array([3.0, 0.5, 0.0]),
    ...                         num_importance=8, num_inner_steps=4)
    >>> pilot.converged, bool(jnp.all(pilot.standardisation.variances > 400))
    (True, True)
    """
    rng_key = check_key("rng_key", rng_key)
    num_rounds = check_int("num_rounds", num_rounds, minimum=1)
    num_particles = check_int("num_particles", num_particles, minimum=2)
    standardise = check_bool("standardise", standardise)
    tolerance = check_positive("tolerance", tolerance)
    total = 0
    samples = affine = None
    mismatch: list[float] = []
    for r in range(num_rounds):
        key = jax.random.fold_in(rng_key, r)
        if affine is None:
            samples, evaluations, stats = _pilot_round(
                key,
                logdensity_fn,
                dim,
                num_particles,
                r,
                reference=reference,
                initial_position=initial_position if reference is None else None,
                init_spread=init_spread if r == 0 else 0.0,
                **algorithm_kwargs,
            )
        else:
            # In unit coordinates: the reference is N(0, inflation^2 I), the
            # start its mean, the fitted location.
            z, evaluations, stats = _pilot_round(
                key,
                standardised_logdensity(logdensity_fn, affine),
                dim,
                num_particles,
                r,
                reference=gaussian_reference(jnp.zeros(dim), 1.0, inflation),
                **algorithm_kwargs,
            )
            samples = unstandardise(affine, z)
            mismatch.append(spread_mismatch(z))
            if mismatch[-1] > tolerance:
                # A round whose draws agree with its map keeps it: refitting
                # would only swap the map for one with this round's noise.
                affine = _refit(affine, z)
        total += evaluations
        reference = fit_reference(samples, inflation)
        if standardise and affine is None:
            affine = gaussian_reference(samples.mean(0), shrunk_covariance(samples))
        if mismatch and mismatch[-1] <= tolerance:
            break
    converged = bool(mismatch[-1] <= tolerance) if mismatch else None
    if standardise:
        # The reference of a run in target coordinates, consistent with the map.
        reference = GaussianReference(
            affine.mean, affine.basis, affine.variances * inflation**2
        )
    return PilotResult(
        reference, total, samples, affine, tuple(mismatch), converged, stats
    )


# adapted_schedule's rule (docs/logdensity_scale.md, "Cost"): i-SIR candidates
# only where the pilot saw them move particles, as many as give about
# ADAPT_TARGET_ESS effective candidates; the full MALA steps only where i-SIR
# moved fewer than half of the particles (where it moves most, its fresh draw from
# a proposal that fits has done the segment's work).
ADAPT_MIN_MOVE_RATE = 0.02
ADAPT_TARGET_ESS = 4.0
ADAPT_MIN_IMPORTANCE = 4
ADAPT_MIN_INNER_STEPS = 4
ADAPT_MOVE_RATE_FOR_FEWER_STEPS = 0.5


def adapted_schedule(stats: SegmentStats) -> tuple[np.ndarray, np.ndarray]:
    """Per-segment i-SIR candidates and MALA steps cut from a pilot's measurements.

    Never more than the measured run's schedule (``stats.num_importance``,
    ``stats.num_inner_steps``); per segment:

    * no candidates where fewer than :data:`ADAPT_MIN_MOVE_RATE` of the
      particles moved (the proposal misses the segment's target: every
      candidate is evaluated and discarded, what a badly conditioned target in
      100 dimensions does on its first segments);
    * elsewhere ``ceil(ADAPT_TARGET_ESS / ess_fraction) - 1`` candidates, at
      least :data:`ADAPT_MIN_IMPORTANCE`: about four effective candidates, so a
      multimodal segment (low ESS fraction) keeps them all;
    * :data:`ADAPT_MIN_INNER_STEPS` MALA steps where i-SIR moved at least
      :data:`ADAPT_MOVE_RATE_FOR_FEWER_STEPS` of the particles, the full count
      elsewhere.

    Each segment's kernel stays invariant for its target whatever its counts:
    the rule changes how much of the segment's work is done, not what it
    converges to. Measured in docs/logdensity_scale.md ("Cost").

    Examples
    --------
    >>> import numpy as np
    >>> stats = SegmentStats(
    ...     ess_fraction=np.array([0.03, 0.1, 0.9, 1.0]),
    ...     move_rate=np.array([0.0, 0.6, 0.95, 0.0]),
    ...     acceptance=np.full(4, 0.6),
    ...     num_importance=np.array([32, 32, 32, 0]),
    ...     num_inner_steps=np.array([16, 16, 16, 16]))
    >>> m, n = adapted_schedule(stats)
    >>> m.tolist(), n.tolist()
    ([0, 32, 4, 0], [16, 4, 4, 16])
    """
    m_given = np.asarray(stats.num_importance, np.int64)
    n_given = np.asarray(stats.num_inner_steps, np.int64)
    ess = np.clip(np.asarray(stats.ess_fraction, np.float64), 1e-6, 1.0)
    move = np.asarray(stats.move_rate, np.float64)
    wanted = np.ceil(ADAPT_TARGET_ESS / ess).astype(np.int64) - 1
    m = np.minimum(m_given, np.maximum(wanted, ADAPT_MIN_IMPORTANCE))
    m = np.where(move < ADAPT_MIN_MOVE_RATE, 0, m)
    fewer = (m_given > 0) & (move >= ADAPT_MOVE_RATE_FOR_FEWER_STEPS)
    n = np.where(fewer, np.minimum(n_given, ADAPT_MIN_INNER_STEPS), n_given)
    return m.astype(np.int32), n.astype(np.int32)


def _warn_unconverged_pilot(pilot: PilotResult, num_rounds_name: str) -> None:
    """Warn (:class:`ScaleWarning`) when the pilot's spread was still changing."""
    from rtk_blackjax.run.policy import caller_stacklevel

    if pilot.converged is False:
        warnings.warn(
            f"the pilot's {len(pilot.mismatch) + 1} rounds did not settle the "
            "target's scale: its last round's draws were still off the fitted "
            f"spread by a variance factor of {pilot.mismatch[-1]:.3g} (tolerance "
            f"{SCALE_TOLERANCE}), so the draws may under-estimate the spread; "
            f"raise {num_rounds_name} (each round grows a scale by a few times)",
            ScaleWarning,
            stacklevel=caller_stacklevel(),
        )


def _final_algorithm(
    logdensity_fn: Callable[[Array], Array],
    dim: int,
    reference: GaussianReference | None,
    affine: GaussianReference | None,
    initial_position: Array | None = None,
    **algorithm_kwargs: Any,
) -> tuple[DiffusionAlgorithm, Callable[[Array], Array]]:
    """The run after a pilot, and the log density it samples.

    Without ``affine`` (no standardisation): :func:`rtk_logdensity` on
    ``logdensity_fn`` with the pilot's ``reference`` (started at
    ``initial_position`` when there is none). With it: on
    :func:`standardised_logdensity`, with the unit reference
    ``N(0, REFERENCE_INFLATION^2 I)``; its draws are in the unit coordinates
    (:func:`unstandardise` maps them back).
    """
    if affine is None:
        algorithm = as_top_level_api(
            logdensity_fn,
            reference=reference,
            initial_position=initial_position if reference is None else None,
            **algorithm_kwargs,
        )
        return algorithm, logdensity_fn
    logdensity_z = standardised_logdensity(logdensity_fn, affine)
    algorithm = as_top_level_api(
        logdensity_z,
        reference=gaussian_reference(jnp.zeros(dim), 1.0, REFERENCE_INFLATION),
        **algorithm_kwargs,
    )
    return algorithm, logdensity_z


class Schedule(NamedTuple):
    """Per-segment i-SIR candidates and MALA steps of a run."""

    num_importance: np.ndarray
    num_inner_steps: np.ndarray


class LogDensitySamples(NamedTuple):
    """Output of :func:`sample_logdensity`.

    samples
        ``(num_samples, dim)`` draws in the target's own coordinates.
    result
        The :class:`rtk_blackjax.SampleResult` of the final run, its ``samples``
        mapped back to the target's coordinates (per-segment info, NFE per
        sample).
    pilot
        The :class:`PilotResult` (``None`` without pilot rounds): its
        ``standardisation``, per-round ``mismatch``, ``converged`` and
        ``num_evaluations``.
    mismatch
        :func:`spread_mismatch` of the final draws in the standardised
        coordinates (``None`` when the run was not standardised).
    stein
        :class:`SteinCheck` of the final draws (``None`` with
        ``check_draws=False``).
    drift
        :class:`DriftCheck` of the final draws (``None`` with
        ``check_draws=False``).
    schedule
        The final run's per-segment :class:`Schedule`.
    """

    samples: Array
    result: Any
    pilot: PilotResult | None
    mismatch: float | None
    stein: SteinCheck | None = None
    drift: DriftCheck | None = None
    schedule: "Schedule | None" = None

    @property
    def pilot_evaluations(self) -> int:
        """Evaluations the pilot rounds spent (all particles together)."""
        return 0 if self.pilot is None else self.pilot.num_evaluations

    @property
    def check_evaluations(self) -> int:
        """Evaluations the checks of the final draws spent (Stein and drift)."""
        return _check_evaluations(self.stein, self.drift)


class ModelSamples(NamedTuple):
    """Output of :func:`sample_model`.

    samples
        Dict of constrained site values (deterministic sites included), each with
        leading axis ``num_samples``.
    result
        The :class:`rtk_blackjax.SampleResult` of the final run (flat
        unconstrained samples, per-segment info, NFE per sample).
    reference
        The pilot-fitted Gaussian reference (``None`` without pilot rounds).
    pilot_evaluations
        Total evaluations spent by the pilot runs.
    pilot
        The :class:`PilotResult` (``None`` without pilot rounds).
    mismatch
        :func:`spread_mismatch` of the final draws in the standardised
        coordinates (``None`` when the run was not standardised).
    stein
        :class:`SteinCheck` of the final draws (``None`` with
        ``check_draws=False``).
    drift
        :class:`DriftCheck` of the final draws (``None`` with
        ``check_draws=False``).
    schedule
        The final run's per-segment :class:`Schedule`.
    """

    samples: dict
    result: Any
    reference: GaussianReference | None
    pilot_evaluations: int
    pilot: PilotResult | None = None
    mismatch: float | None = None
    stein: SteinCheck | None = None
    drift: DriftCheck | None = None
    schedule: Schedule | None = None

    @property
    def check_evaluations(self) -> int:
        """Evaluations the checks of the final draws spent (Stein and drift)."""
        return _check_evaluations(self.stein, self.drift)


def _check_evaluations(stein: SteinCheck | None, drift: DriftCheck | None) -> int:
    return sum(c.num_evaluations for c in (stein, drift) if c is not None)


def _check_final_spread(z_samples: Array, finite: Array) -> float:
    """:func:`spread_mismatch` of a standardised run's draws; warns beyond tolerance."""
    from rtk_blackjax.run.policy import caller_stacklevel

    z = np.asarray(z_samples)[np.asarray(finite)]
    if z.shape[0] < 2:
        return float("nan")
    mismatch = spread_mismatch(z)
    if mismatch > SCALE_TOLERANCE:
        warnings.warn(
            "the draws' spread differs from the pilot's fitted spread by a variance "
            f"factor of {mismatch:.3g} (tolerance {SCALE_TOLERANCE}) in some "
            "direction: the pilot had not found the target's scale (raise "
            "num_pilot_rounds), or the scale changes with position (a funnel: "
            "reparameterise the model, e.g. numpyro.infer.reparam.LocScaleReparam)",
            ScaleWarning,
            stacklevel=caller_stacklevel(),
        )
    return mismatch


def sample_logdensity(
    rng_key: PRNGKey,
    logdensity_fn: Callable[[Array], Array],
    dim: int,
    *,
    num_samples: int,
    num_pilot_rounds: int = 8,
    pilot_particles: int = 200,
    standardise: bool = True,
    initial_position: ArrayLike | None = None,
    times: ArrayLike | None = None,
    num_importance: int | Sequence[int] | None = None,
    num_inner_steps: int | Sequence[int] | None = None,
    check_draws: bool = True,
    adapt_schedule: bool = True,
) -> LogDensitySamples:
    """Sample ``p_0 ∝ exp(logdensity_fn)`` with pilot, standardisation and checks.

    Fits the reference with at most ``num_pilot_rounds`` pilot runs of
    ``pilot_particles`` (:func:`adapt_reference`), then draws ``num_samples``
    independent samples with :func:`rtk_logdensity` and the
    :func:`model_schedule` (unless ``times`` / ``num_importance`` /
    ``num_inner_steps`` are given).

    With ``standardise=True`` (the default) the pilot rounds after the first
    and the final run sample the target in the unit coordinates of the pilot's
    Gaussian fit (:func:`standardised_logdensity`), and the pilot stops once
    that fit stops changing. A :class:`ScaleWarning` says when the pilot ran out
    of rounds first or when the final draws' spread disagrees with the fit
    (:func:`spread_mismatch`): the signs of a run that under-estimates the
    target's spread (``docs/logdensity_scale.md``). With ``check_draws`` (the
    default) the final draws are also checked against Stein's identity
    (:func:`stein_check`, one gradient per draw, counted in
    ``stein.num_evaluations``) and for stationarity under a ``p``-invariant MALA
    kernel (:func:`drift_check`, about 50 evaluations per draw, counted in
    ``drift.num_evaluations``), which catch what the spread check cannot (a
    funnel's missed neck: Stein; its missed mouth: drift) and warn likewise.

    With ``adapt_schedule=True`` (the default) and neither ``num_importance``
    nor ``num_inner_steps`` given, the final run's per-segment candidates and
    MALA steps are cut from what the pilot's last round measured
    (:func:`adapted_schedule`): candidates where they move particles, full MALA
    steps where i-SIR does not do the work. ``out.schedule`` is what ran.

    Examples
    --------
    >>> import jax, jax.numpy as jnp
    >>> out = sample_logdensity(jax.random.key(0),
    ...                         lambda x: -0.5 * jnp.sum(x**2) / 9.0, 2,
    ...                         num_samples=200, num_pilot_rounds=3,
    ...                         pilot_particles=100, times=jnp.array([3.0, 0.5, 0.0]))
    >>> out.samples.shape, out.pilot.converged
    ((200, 2), True)
    """
    from rtk_blackjax.run import sample
    from rtk_blackjax.run.policy import low_acceptance_hint, warn_on_low_acceptance

    rng_key = check_key("rng_key", rng_key)
    check_callable("logdensity_fn", logdensity_fn, "x -> log density")
    dim = check_int("dim", dim, minimum=1)
    num_samples = check_int("num_samples", num_samples, minimum=1)
    num_pilot_rounds = check_int("num_pilot_rounds", num_pilot_rounds, minimum=0)
    if num_pilot_rounds > 0:
        pilot_particles = check_int("pilot_particles", pilot_particles, minimum=2)
    standardise = check_bool("standardise", standardise)
    check_draws = check_bool("check_draws", check_draws)
    adapt_schedule = check_bool("adapt_schedule", adapt_schedule)
    # A schedule the caller chose is run as given.
    adapt_schedule = (
        adapt_schedule and num_importance is None and num_inner_steps is None
    )
    if initial_position is not None:
        initial_position = jnp.asarray(initial_position)
        if initial_position.shape != (dim,) or not bool(
            jnp.all(jnp.isfinite(initial_position))
        ):
            raise ValueError(
                f"initial_position must be a finite array of shape ({dim},), got "
                f"shape {initial_position.shape}"
            )
    key_pilot, key_run = jax.random.split(rng_key)
    kwargs = model_schedule(times, num_importance, num_inner_steps)
    kwargs["step_size"] = initial_step_factor(dim)
    reference, pilot = None, None
    if num_pilot_rounds > 0:
        pilot = adapt_reference(
            key_pilot,
            logdensity_fn,
            dim,
            num_rounds=num_pilot_rounds,
            num_particles=pilot_particles,
            initial_position=initial_position,
            inflation=REFERENCE_INFLATION,
            standardise=standardise,
            **kwargs,
        )
        reference = pilot.reference
        _warn_unconverged_pilot(pilot, "num_pilot_rounds")
    affine = pilot.standardisation if pilot is not None else None
    if adapt_schedule and pilot is not None:
        kwargs["num_importance"], kwargs["num_inner_steps"] = adapted_schedule(
            pilot.segment_stats
        )
    schedule = Schedule(
        *_resolve_schedule(
            kwargs.get("times"), kwargs["num_importance"], kwargs["num_inner_steps"]
        )[1:]
    )
    algorithm, algorithm_logdensity = _final_algorithm(
        logdensity_fn, dim, reference, affine, initial_position, **kwargs
    )
    with low_acceptance_hint(None):
        result = sample(key_run, algorithm, num_samples, dim=dim)
    # Segment 0 runs with the initial step factor, before any adaptation: its
    # acceptance says how good that first guess was (on a multimodal target,
    # standardised by the spread of all its modes, the guess is too large for
    # each mode), not whether the run is healthy; the later segments say that.
    acceptance = np.array(result.acceptance_per_segment(), dtype=float)
    acceptance[0] = np.nan
    # The knobs the caller has: the grid.
    warn_on_low_acceptance(
        acceptance,
        result.times,
        "pass a finer grid (times with more, shorter segments)",
    )
    mismatch, stein, drift = None, None, None
    if affine is not None:
        mismatch = _check_final_spread(result.samples, result.finite)
    finite = np.asarray(result.finite)
    if check_draws and finite.sum() >= 2:
        # In the coordinates the run used: for a standardised run the fit's
        # axes, where each coordinate is one of its principal directions (and
        # the scale is about one, what the drift check's step ladder assumes).
        draws = jnp.asarray(np.asarray(result.samples)[finite])
        stein = stein_check(algorithm_logdensity, draws)
        _warn_on_stein(stein)
        # its own key: the run's draws do not depend on whether it is checked
        drift = drift_check(jax.random.fold_in(rng_key, 3), algorithm_logdensity, draws)
        _warn_on_drift(drift)
    if affine is not None:
        result = result._replace(samples=unstandardise(affine, result.samples))
    return LogDensitySamples(
        result.samples, result, pilot, mismatch, stein, drift, schedule
    )


def sample_model(
    rng_key: PRNGKey,
    model: Callable,
    *model_args: Any,
    num_samples: int,
    num_pilot_rounds: int = 8,
    pilot_particles: int = 200,
    standardise: bool = True,
    times: ArrayLike | None = None,
    num_importance: int | Sequence[int] | None = None,
    num_inner_steps: int | Sequence[int] | None = None,
    check_draws: bool = True,
    adapt_schedule: bool = True,
    **model_kwargs: Any,
) -> ModelSamples:
    """Sample a NumPyro model's posterior with :func:`sample_logdensity`.

    Builds the model's flat unconstrained density
    (:func:`rtk_blackjax.adapters.numpyro_model.model_density`), samples it with
    :func:`sample_logdensity` (pilot, standardisation, :class:`ScaleWarning`;
    the arguments are its) and maps the draws to constrained, named sites.

    Examples
    --------
    >>> import jax, jax.numpy as jnp
    >>> import numpyro, numpyro.distributions as dist
    >>> def model():
    ...     numpyro.sample("scale", dist.LogNormal(0.0, 0.5))
    >>> out = sample_model(jax.random.key(0), model, num_samples=100,
    ...                    num_pilot_rounds=2, pilot_particles=50,
    ...                    times=jnp.array([3.0, 0.5, 0.0]), num_importance=8,
    ...                    num_inner_steps=1)
    >>> out.samples["scale"].shape, bool(jnp.all(out.samples["scale"] > 0))
    ((100,), True)
    """
    from rtk_blackjax.adapters.numpyro_model import model_density

    rng_key = check_key("rng_key", rng_key)
    key_model, key_run = jax.random.split(rng_key)
    md = model_density(model, *model_args, rng_key=key_model, **model_kwargs)
    out = sample_logdensity(
        key_run,
        md.logdensity_fn,
        md.dim,
        num_samples=num_samples,
        num_pilot_rounds=num_pilot_rounds,
        pilot_particles=pilot_particles,
        standardise=standardise,
        initial_position=md.initial_position,
        times=times,
        num_importance=num_importance,
        num_inner_steps=num_inner_steps,
        check_draws=check_draws,
        adapt_schedule=adapt_schedule,
    )
    samples = jax.vmap(md.postprocess_fn)(out.samples)
    reference = None if out.pilot is None else out.pilot.reference
    return ModelSamples(
        samples,
        out.result,
        reference,
        out.pilot_evaluations,
        out.pilot,
        out.mismatch,
        out.stein,
        out.drift,
        out.schedule,
    )
