"""The Ornstein–Uhlenbeck noising process and the time grids that cut it into segments.

Forward process: ``dx = -x dt + sqrt(2) dB``, so ``x_t | x_0 ~ N(a_t x_0, s_t^2 I)``
with ``a_t = exp(-t)`` and ``s_t^2 = 1 - exp(-2 t)``.

A *time grid* is a 1-D array ``T = t_0 > t_1 > ... > t_K = 0`` in the order the reverse
process visits it: segment ``k`` goes from ``times[k]`` down to ``times[k + 1]``.
"""

import math
from collections.abc import Callable

import jax.numpy as jnp
import numpy as np

from rtk_blackjax._checks import check_int, check_positive
from rtk_blackjax.types import Array, ArrayLike

__all__ = [
    "ou_mean_coef",
    "ou_variance",
    "ou_noise_to_signal",
    "transition_coefs",
    "uniform_grid",
    "geometric_grid",
    "logsnr_grid",
    "theory_grid",
    "theory_segment_length",
    "validate_grid",
    "make_grid",
    "GRID_KINDS",
]

GRID_KINDS = ("uniform", "geometric", "logsnr", "theory")


def ou_mean_coef(t: ArrayLike) -> Array:
    """Mean coefficient ``a_t = exp(-t)`` of the OU transition from time 0 to ``t``."""
    return jnp.exp(-jnp.asarray(t))


def ou_variance(t: ArrayLike) -> Array:
    """Variance ``s_t^2 = 1 - exp(-2t)`` of the OU transition from time 0 to ``t``.

    Computed with ``expm1`` so that it stays accurate for tiny ``t``.
    """
    return -jnp.expm1(-2.0 * jnp.asarray(t))


def ou_noise_to_signal(t: ArrayLike) -> Array:
    """``σ_t^2 = s_t^2 / a_t^2 = e^{2t} - 1``, the variance of ``x_t / a_t`` given ``x_0``.

    Computed with ``expm1`` (accurate for tiny ``t``). Also the variance factor of the
    DDPM exponential-integrator step over a segment of length ``t``.
    """
    return jnp.expm1(2.0 * jnp.asarray(t))


def transition_coefs(t_from: ArrayLike, t_to: ArrayLike) -> tuple[Array, Array]:
    """Coefficients ``(a, s^2)`` of the forward transition ``x_{t_to} | x_{t_from}``.

    ``x_{t_to} = a x_{t_from} + s * noise`` with ``h = t_to - t_from > 0``.
    """
    h = jnp.asarray(t_to) - jnp.asarray(t_from)
    return jnp.exp(-h), -jnp.expm1(-2.0 * h)


# More segments than this is a mistake (and would not fit in memory).
MAX_SEGMENTS = 10**7
# Grid constructors refuse longer horizons: p_T is N(0, I) to float precision long
# before (the OU process forgets its start like e^{-T}), and huge times overflow.
MAX_HORIZON = 1e4


def _real_array(value, name: str) -> np.ndarray:
    """``value`` as a float64 NumPy array; ``TypeError`` naming ``name`` for
    non-numeric, boolean or complex input (which ``np.asarray(..., float)`` would
    silently convert or truncate)."""
    try:
        arr = np.asarray(value)
    except (TypeError, ValueError) as err:  # e.g. ragged nested lists
        raise ValueError(
            f"{name} must be a rectangular array of numbers: {err}"
        ) from err
    if arr.dtype == np.bool_ or not (
        np.issubdtype(arr.dtype, np.integer) or np.issubdtype(arr.dtype, np.floating)
    ):
        raise TypeError(
            f"{name} must be an array of real numbers, got dtype {arr.dtype}"
        )
    return arr.astype(np.float64)


def validate_grid(times: ArrayLike) -> Array:
    """Check that ``times`` is a valid reverse-time grid and return it as an array.

    A valid grid is a finite 1-D array with at least two entries, strictly decreasing,
    starting at a positive horizon and ending exactly at 0.

    Raises
    ------
    ValueError
        Naming ``times`` and what is wrong with it.

    Examples
    --------
    >>> validate_grid([2.0, 1.0, 0.0]).tolist()
    [2.0, 1.0, 0.0]
    """
    arr = _real_array(times, "times")
    if arr.ndim != 1 or arr.shape[0] < 2:
        raise ValueError(
            "times must be a 1-D array with at least 2 entries (horizon, ..., 0), "
            f"got shape {arr.shape}"
        )
    if arr[-1] != 0.0:
        raise ValueError(f"times must end at 0, got times[-1] = {arr[-1]}")
    # Check the grid the samplers will see: in float32 (the default) huge times
    # overflow and nearby (or tiny) ones merge.
    dtype = np.dtype(jnp.result_type(float))
    with np.errstate(over="ignore"):
        arr = arr.astype(dtype)
    if not np.all(np.isfinite(arr)):
        raise ValueError(
            f"times must be finite (in {dtype.name}), got non-finite entries"
        )
    if arr[0] <= 0.0:
        raise ValueError(f"times[0] (the horizon) must be positive, got {arr[0]}")
    steps = np.diff(arr)
    if np.any(steps >= 0.0):
        bad = int(np.argmax(steps >= 0.0))
        raise ValueError(
            f"times must be strictly decreasing in {dtype.name} (reverse time, "
            f"horizon first), but times[{bad}] = {arr[bad]} <= times[{bad + 1}] = "
            f"{arr[bad + 1]}"
        )
    return jnp.asarray(arr, dtype=dtype)


def uniform_grid(num_segments: int, horizon: float = 5.0) -> Array:
    """``num_segments`` equal segments from ``horizon`` down to 0 (the paper's grid).

    Examples
    --------
    >>> uniform_grid(4, horizon=2.0).tolist()
    [2.0, 1.5, 1.0, 0.5, 0.0]
    """
    num_segments = check_int(
        "num_segments", num_segments, minimum=1, maximum=MAX_SEGMENTS
    )
    horizon = check_positive("horizon", horizon, maximum=MAX_HORIZON)
    return _grid_from(
        np.linspace(horizon, 0.0, num_segments + 1), num_segments, horizon
    )


def geometric_grid(
    num_segments: int, horizon: float = 5.0, t_min: float = 1e-3
) -> Array:
    """Geometric grid from ``horizon`` down to ``t_min``, then a last segment to 0.

    ``num_segments - 1`` segments are equally spaced in ``log t`` between ``horizon`` and
    ``t_min``; the last one jumps from ``t_min`` to 0. With one segment the grid is
    ``[horizon, 0]``. Log-spacing puts the small steps where the target is stiff
    (``t`` comparable to the data's smallest variance), which is where a uniform grid
    loses accuracy.

    Examples
    --------
    >>> [round(t, 3) for t in geometric_grid(3, horizon=1.0, t_min=0.01).tolist()]
    [1.0, 0.1, 0.01, 0.0]
    """
    return _grid_down_to_t_min(num_segments, horizon, t_min, np.geomspace)


def logsnr_grid(num_segments: int, horizon: float = 5.0, t_min: float = 1e-3) -> Array:
    """Grid uniform in log noise-to-signal ratio from ``horizon`` to ``t_min``, then 0.

    ``num_segments - 1`` segments are equally spaced in ``log σ_t`` with
    ``σ_t = s_t / a_t = sqrt(e^{2t} - 1)`` (uniform in log-SNR, DPM-Solver's
    recommended spacing); the last one jumps from ``t_min`` to 0. Near ``t = 0``
    (``σ_t ≈ sqrt(2t)``) it spaces like :func:`geometric_grid`; at large ``t``
    (``σ_t ≈ e^t``) it is nearly uniform in ``t``, so it puts more segments where
    the noise is comparable to a data scale of order 1–100, where a wide target's
    modes are decided (the suite's ``grid25``, docs/benchmarks.md).

    Examples
    --------
    >>> grid = logsnr_grid(3, horizon=2.0, t_min=0.01)
    >>> [round(t, 3) for t in grid.tolist()]
    [2.0, 0.357, 0.01, 0.0]
    """
    return _grid_down_to_t_min(num_segments, horizon, t_min, _logsnr_spaced)


def _logsnr_spaced(horizon: float, t_min: float, num: int) -> np.ndarray:
    """``num`` times from ``horizon`` to ``t_min`` equally spaced in ``log σ_t``."""
    log_sigma = np.linspace(
        _log_noise_to_signal(horizon), _log_noise_to_signal(t_min), num
    )
    times = 0.5 * np.logaddexp(0.0, 2.0 * log_sigma)  # t = ½ log(1 + σ²)
    times[0], times[-1] = horizon, t_min  # exact ends despite rounding
    return times


def _log_noise_to_signal(t: float) -> float:
    """``log σ_t = 0.5 log(e^{2t} - 1)``, stable for small and large ``t``."""
    return t + 0.5 * math.log(-math.expm1(-2.0 * t))


def _grid_down_to_t_min(
    num_segments, horizon, t_min, spaced: Callable[[float, float, int], np.ndarray]
) -> Array:
    """A grid of ``num_segments - 1`` segments from ``horizon`` to ``t_min``, spaced
    by ``spaced(horizon, t_min, num_segments)`` (called with the checked
    arguments), and a last one to 0; one segment is ``[horizon, 0]``."""
    num_segments = check_int(
        "num_segments", num_segments, minimum=1, maximum=MAX_SEGMENTS
    )
    horizon = check_positive("horizon", horizon, maximum=MAX_HORIZON)
    t_min = check_positive("t_min", t_min, maximum=MAX_HORIZON)
    if num_segments == 1:
        return validate_grid([horizon, 0.0])
    if t_min >= horizon:
        raise ValueError(f"t_min must be smaller than horizon={horizon}, got {t_min}")
    times = np.concatenate([spaced(horizon, t_min, num_segments), [0.0]])
    return _grid_from(times, num_segments, horizon, t_min=t_min)


def _grid_from(times: np.ndarray, num_segments: int, horizon: float, **more) -> Array:
    """``validate_grid(times)`` with an error naming the constructor's arguments
    (e.g. segments too short to stay distinct in float32)."""
    try:
        return validate_grid(times)
    except ValueError as err:
        args = ", ".join(
            f"{k}={v!r}"
            for k, v in dict(num_segments=num_segments, horizon=horizon, **more).items()
        )
        raise ValueError(f"{args} do not give a valid grid: {err}") from err


def theory_segment_length(smoothness: float) -> float:
    """Segment length ``eta = 0.5 log(1 + 1 / (2 L))`` from the RTK paper.

    With it every segment target ``q_k`` is ``L``-strongly log-concave and
    ``3L``-smooth when ``L`` bounds the curvature of ``-log p_t`` for all ``t``.
    """
    smoothness = check_positive("smoothness", smoothness)
    return 0.5 * math.log1p(1.0 / (2.0 * smoothness))


def theory_grid(smoothness: float, horizon: float = 5.0) -> Array:
    """Uniform grid whose segment length is the paper's ``eta`` for curvature bound L.

    The horizon is covered by ``ceil(horizon / eta)`` equal segments (so each is at most
    ``eta`` long).

    Examples
    --------
    >>> grid = theory_grid(smoothness=1.0, horizon=1.0)
    >>> int(grid.shape[0]) - 1  # eta = 0.5 log 1.5 ≈ 0.203 -> 5 segments
    5
    """
    eta = theory_segment_length(smoothness)
    horizon = check_positive("horizon", horizon, maximum=MAX_HORIZON)
    num_segments = max(1, math.ceil(horizon / eta - 1e-12))
    if num_segments > MAX_SEGMENTS:
        raise ValueError(
            f"smoothness={smoothness} and horizon={horizon} need {num_segments:.3g} "
            f"segments, more than {MAX_SEGMENTS}; the curvature bound is too large"
        )
    return uniform_grid(num_segments, horizon)


def make_grid(
    kind: str,
    num_segments: int | None = None,
    *,
    horizon: float = 5.0,
    t_min: float = 1e-3,
    smoothness: float | None = None,
) -> Array:
    """Build a grid by name: ``"uniform"``, ``"geometric"``, ``"logsnr"``, ``"theory"``.

    ``"theory"`` needs ``smoothness`` (the curvature bound L) and ignores
    ``num_segments``; the others need ``num_segments``.
    """
    if not isinstance(kind, str) or kind not in GRID_KINDS:
        raise ValueError(f"grid kind must be one of {GRID_KINDS}, got {kind!r}")
    if kind == "uniform":
        return uniform_grid(_required("num_segments", num_segments, kind), horizon)
    if kind == "geometric":
        return geometric_grid(
            _required("num_segments", num_segments, kind), horizon, t_min
        )
    if kind == "logsnr":
        return logsnr_grid(
            _required("num_segments", num_segments, kind), horizon, t_min
        )
    if kind == "theory":
        return theory_grid(_required("smoothness", smoothness, kind), horizon)
    raise ValueError(f"grid kind must be one of {GRID_KINDS}, got {kind!r}")


def _required(name, value, kind):
    if value is None:
        raise ValueError(f"{name} is required for a {kind!r} grid")
    return value
