"""Exact OU-diffused Gaussian and Gaussian-mixture targets.

If ``p_0 = sum_k w_k N(m_k, C_k)`` then ``p_t = sum_k w_k N(a_t m_k, a_t^2 C_k + s_t^2 I)``.
Each covariance is stored by its eigendecomposition ``C_k = U_k diag(lam_k) U_k^T``,
so the diffused covariance shares ``U_k`` and has eigenvalues ``a_t^2 lam_k + s_t^2``:
inverses and log-determinants at any ``t`` cost one rotation, no factorisation per
call. Diagonal covariances skip the rotation (``U_k = I`` is never materialised).
Log densities are combined with ``logsumexp``.
"""

import math
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from rtk_blackjax._checks import (
    check_bool,
    check_int,
    check_key,
    check_pair,
    check_positive,
)
from rtk_blackjax.diffusion import _real_array, ou_mean_coef, ou_variance
from rtk_blackjax.targets.base import Target
from rtk_blackjax.types import Array, ArrayLike, PRNGKey

__all__ = [
    "GaussianMixture",
    "gaussian",
    "gaussian_mixture",
    "mixture_from_arrays",
    "mixture_target",
    "mixture_logdensity",
    "mixture_score",
    "sample_mixture",
    "mixture_mean",
    "mixture_variance",
    "mixture_covariance",
    "chessboard_mixture",
    "random_mixture",
    "chessboard",
    "random_mog",
]


class GaussianMixture(NamedTuple):
    """Parameters of a Gaussian mixture ``p_0`` in ``d`` dimensions with ``c`` components.

    weights
        ``(c,)`` mixture weights, positive, summing to one.
    means
        ``(c, d)`` component means.
    cov_eigvals
        ``(c, d)`` eigenvalues of each component covariance (all positive).
    cov_eigvecs
        ``(c, d, d)`` orthonormal eigenvectors (columns), or ``None`` when every
        covariance is diagonal (then ``cov_eigvals`` are the diagonals).
    """

    weights: Array
    means: Array
    cov_eigvals: Array
    cov_eigvecs: Array | None = None

    @property
    def dim(self) -> int:
        return int(self.means.shape[-1])

    @property
    def num_components(self) -> int:
        return int(self.means.shape[0])


def mixture_from_arrays(
    means: ArrayLike,
    covariances: ArrayLike,
    weights: ArrayLike | None = None,
) -> GaussianMixture:
    """Validate arrays and build :class:`GaussianMixture` parameters.

    Parameters
    ----------
    means
        ``(c, d)`` component means.
    covariances
        Full ``(c, d, d)`` covariances, diagonal ``(c, d)`` variances, or isotropic
        ``(c,)`` / scalar variances.
    weights
        ``(c,)`` weights (normalised here); equal weights when ``None``.
    """
    means = _real_array(means, "means")
    if means.ndim != 2 or means.shape[0] < 1 or means.shape[1] < 1:
        raise ValueError(
            f"means must be a (num_components, dim) array, got shape {means.shape}"
        )
    if not np.all(np.isfinite(means)):
        raise ValueError("means must be finite")
    num_components, dim = means.shape

    if weights is None:
        weights = np.full(num_components, 1.0 / num_components)
    weights = _real_array(weights, "weights")
    if weights.shape != (num_components,):
        raise ValueError(
            f"weights must have shape ({num_components},) to match means, "
            f"got {weights.shape}"
        )
    if not np.all(np.isfinite(weights)) or np.any(weights <= 0):
        raise ValueError("weights must be positive and finite")
    weights = weights / weights.sum()

    cov = _real_array(covariances, "covariances")
    eigvecs = None
    if cov.ndim == 0:
        eigvals = np.full((num_components, dim), float(cov))
    elif cov.shape == (num_components,):
        eigvals = np.repeat(cov[:, None], dim, axis=1)
    elif cov.shape == (num_components, dim):
        eigvals = cov.copy()
    elif cov.shape == (num_components, dim, dim):
        if not np.all(np.isfinite(cov)):
            raise ValueError("covariances must be finite")
        if not np.allclose(cov, np.swapaxes(cov, -1, -2), rtol=1e-6, atol=1e-10):
            raise ValueError("covariances must be symmetric matrices")
        eigvals, eigvecs = np.linalg.eigh(cov)
    else:
        raise ValueError(
            "covariances must have shape (c, d, d), (c, d), (c,) or () with "
            f"c={num_components}, d={dim}; got {cov.shape}"
        )
    if not np.all(np.isfinite(eigvals)) or np.any(eigvals <= 0):
        raise ValueError("covariances must be positive definite (all eigenvalues > 0)")
    dtype = jnp.result_type(float)
    # In float32 (the default) very large or tiny values overflow to inf or flush
    # to 0, which would make every score NaN: refuse them here.
    finfo = np.finfo(dtype)
    if np.abs(means).max() > finfo.max or eigvals.max() > finfo.max:
        raise ValueError(
            f"means and covariances must fit in {np.dtype(dtype).name} (at most "
            f"{finfo.max:.3g}); enable jax_enable_x64 for larger values"
        )
    if eigvals.min() < finfo.tiny:
        raise ValueError(
            f"covariances must have eigenvalues of at least {finfo.tiny:.3g} in "
            f"{np.dtype(dtype).name}, got {eigvals.min():.3g}"
        )
    return GaussianMixture(
        weights=jnp.asarray(weights, dtype),
        means=jnp.asarray(means, dtype),
        cov_eigvals=jnp.asarray(eigvals, dtype),
        cov_eigvecs=None if eigvecs is None else jnp.asarray(eigvecs, dtype),
    )


def _component_terms(params: GaussianMixture, x: Array, t: ArrayLike):
    """Per-component log N(x; a m_k, a^2 C_k + s^2 I) and the whitened residuals."""
    if x.shape != (params.dim,):  # static: also checked while tracing
        raise ValueError(
            f"x must be a flat position of shape ({params.dim},) for this "
            f"{params.dim}-dimensional mixture, got shape {x.shape}"
        )
    a, s2 = ou_mean_coef(t), ou_variance(t)
    eigvals = a**2 * params.cov_eigvals + s2  # (c, d)
    residual = x[None, :] - a * params.means  # (c, d)
    if params.cov_eigvecs is not None:
        residual = jnp.einsum("cji,cj->ci", params.cov_eigvecs, residual)
    quad = jnp.sum(residual**2 / eigvals, axis=-1)
    log_norm = -0.5 * jnp.sum(jnp.log(eigvals), axis=-1)
    log_norm = log_norm - 0.5 * params.dim * math.log(2 * math.pi)
    return jnp.log(params.weights) + log_norm - 0.5 * quad, residual, eigvals


def mixture_logdensity(params: GaussianMixture, x: ArrayLike, t: ArrayLike) -> Array:
    """Normalised ``log p_t(x)`` of the OU-diffused mixture, for one point ``x`` (d,)."""
    log_terms, _, _ = _component_terms(params, jnp.asarray(x), t)
    return jax.nn.logsumexp(log_terms)


def mixture_score(params: GaussianMixture, x: ArrayLike, t: ArrayLike) -> Array:
    """``∇ log p_t(x)`` in closed form: responsibilities times component scores."""
    log_terms, residual, eigvals = _component_terms(params, jnp.asarray(x), t)
    resp = jax.nn.softmax(log_terms)
    whitened = residual / eigvals  # C_k(t)^{-1} (x - a m_k) in the eigenbasis
    if params.cov_eigvecs is not None:
        whitened = jnp.einsum("cij,cj->ci", params.cov_eigvecs, whitened)
    return -jnp.sum(resp[:, None] * whitened, axis=0)


def mixture_target(params: GaussianMixture) -> Target:
    """The exact :class:`Target` (score and log density) of a Gaussian mixture."""

    def score(x, t):
        return mixture_score(params, x, t)

    def logdensity(x, t):
        return mixture_logdensity(params, x, t)

    return Target(score=score, logdensity=logdensity, mixture=params)


def gaussian_mixture(
    means: ArrayLike, covariances: ArrayLike, weights: ArrayLike | None = None
) -> Target:
    """Exact OU-diffused Gaussian-mixture target from arrays.

    Examples
    --------
    >>> import jax.numpy as jnp
    >>> target = gaussian_mixture(jnp.array([[-1.0], [1.0]]), 0.1)
    >>> abs(float(target.score(jnp.array([0.0]), 0.0)[0]))  # symmetric: zero at 0
    0.0
    """
    return mixture_target(mixture_from_arrays(means, covariances, weights))


def gaussian(mean: ArrayLike, covariance: ArrayLike) -> Target:
    """Exact OU-diffused Gaussian ``N(mean, covariance)``; ``covariance`` full, diagonal
    or scalar.

    Examples
    --------
    >>> import jax.numpy as jnp
    >>> target = gaussian(jnp.zeros(3), 1.0)  # N(0, I) is stationary under OU
    >>> target.score(jnp.ones(3), 2.0).tolist()
    [-1.0, -1.0, -1.0]
    """
    mean = _real_array(mean, "mean")
    if mean.ndim != 1 or mean.shape[0] < 1:
        raise ValueError(f"mean must be a 1-D array (dim,), got shape {mean.shape}")
    cov = _real_array(covariance, "covariance")
    if cov.ndim > 2:
        raise ValueError(
            "covariance must be a scalar, a (dim,) diagonal or a (dim, dim) matrix, "
            f"got shape {cov.shape}"
        )
    if cov.ndim in (1, 2):
        cov = cov[None]
    try:
        return gaussian_mixture(mean[None], cov, None)
    except ValueError as err:  # its message names the mixture's arguments
        raise ValueError(
            f"mean and covariance must give a valid Gaussian: {err}"
        ) from err


def sample_mixture(
    rng_key: PRNGKey, params: GaussianMixture, num_samples: int, t: float = 0.0
) -> Array:
    """Exact draws from ``p_t`` (``t = 0``: the mixture itself), shape ``(n, d)``."""
    rng_key = check_key("rng_key", rng_key)
    num_samples = check_int("num_samples", num_samples, minimum=0)
    key_comp, key_noise = jax.random.split(rng_key)
    comps = jax.random.choice(
        key_comp, params.num_components, (num_samples,), p=params.weights
    )
    a, s2 = ou_mean_coef(t), ou_variance(t)
    std = jnp.sqrt(a**2 * params.cov_eigvals[comps] + s2)
    noise = std * jax.random.normal(key_noise, (num_samples, params.dim))
    if params.cov_eigvecs is not None:
        noise = jnp.einsum("nij,nj->ni", params.cov_eigvecs[comps], noise)
    return a * params.means[comps] + noise


def mixture_mean(params: GaussianMixture) -> Array:
    """Mean of ``p_0``."""
    return params.weights @ params.means


def mixture_variance(params: GaussianMixture) -> Array:
    """Per-coordinate variance of ``p_0`` (diagonal of its covariance)."""
    if params.cov_eigvecs is None:
        comp_var = params.cov_eigvals
    else:
        comp_var = jnp.einsum("cij,cj->ci", params.cov_eigvecs**2, params.cov_eigvals)
    second = params.weights @ (comp_var + params.means**2)
    return second - mixture_mean(params) ** 2


def mixture_covariance(params: GaussianMixture) -> Array:
    """Covariance matrix ``(d, d)`` of ``p_0``: ``Σ_c w_c (C_c + m_c m_cᵀ) - m̄ m̄ᵀ``.

    Examples
    --------
    >>> import jax.numpy as jnp
    >>> mix = mixture_from_arrays(jnp.array([[-1.0, 0.0], [1.0, 0.0]]), 0.5)
    >>> mixture_covariance(mix).tolist()
    [[1.5, 0.0], [0.0, 0.5]]
    """
    if params.cov_eigvecs is None:
        within = params.weights @ params.cov_eigvals
        within = jnp.diag(within)
    else:
        within = jnp.einsum(
            "c,cij,cj,ckj->ik",
            params.weights,
            params.cov_eigvecs,
            params.cov_eigvals,
            params.cov_eigvecs,
        )
    mean = mixture_mean(params)
    centred = params.means - mean
    between = jnp.einsum("c,ci,cj->ij", params.weights, centred, centred)
    return within + between


def chessboard_mixture(dim: int = 10, variance: float = 0.007) -> GaussianMixture:
    """The RTK authors' "chessboard" mixture.

    8 equally weighted components at the black cells of a 4x4 board of cell length
    0.25 in the first two coordinates (cell centres in ``{-0.375, -0.125, 0.125,
    0.375}``, cells with even ``i + j``), all other coordinates mean 0, every
    covariance ``variance * I``.
    """
    dim = check_int("dim", dim, minimum=2)  # the board lives in the first two
    check_positive("variance", variance)
    centres = (np.arange(4) - 1.5) * 0.25
    cells = [(centres[i], centres[j]) for i in range(4) for j in range(4)]
    black = [cells[4 * i + j] for i in range(4) for j in range(4) if (i + j) % 2 == 0]
    means = np.zeros((len(black), dim))
    means[:, :2] = np.asarray(black)
    return mixture_from_arrays(means, variance)


def random_mixture(
    seed: int,
    dim: int,
    num_components: int = 8,
    *,
    diagonal: bool = False,
    variance_range: tuple[float, float] | None = None,
) -> GaussianMixture:
    """A reproducible random mixture (the benchmark's ``mog`` and ``multiscale``).

    Recipe (numpy ``default_rng(seed)``): means uniform in ``[-1, 1]^d``; weights
    ``Dirichlet(5 * 1)`` floored at ``0.3 / c`` and renormalised; covariances
    ``v_c`` times ``Q diag(e) Q^T`` with ``Q`` a random rotation and ``e``
    log-uniform in ``[0.5, 2]`` (diagonal ``e`` only when ``diagonal``). The
    component scale ``v_c`` is ``0.01 + 0.04 u`` by default, so every component is
    well inside the unit box and the modes are separated; with
    ``variance_range=(lo, hi)`` it is log-uniform in ``[lo, hi]`` (the same uniform
    draw ``u``, so the means, weights and rotations do not change), a mixture whose
    components differ in scale by ``hi / lo``.

    Examples
    --------
    >>> mix = random_mixture(0, 3, 4, variance_range=(1e-4, 1e-1))
    >>> v = mix.cov_eigvals.mean(axis=1)
    >>> bool(v.max() / v.min() > 30)
    True
    """
    dim = check_int("dim", dim, minimum=1)
    num_components = check_int("num_components", num_components, minimum=1)
    diagonal = check_bool("diagonal", diagonal)
    if variance_range is not None:
        lo, hi = _variance_range(variance_range)
    rng = np.random.default_rng(seed)
    means = rng.uniform(-1.0, 1.0, size=(num_components, dim))
    weights = rng.dirichlet(5.0 * np.ones(num_components))
    weights = np.maximum(weights, 0.3 / num_components)
    u = rng.uniform(size=num_components)
    if variance_range is None:
        scales = 0.01 + 0.04 * u
    else:
        scales = lo * (hi / lo) ** u
    eig = np.exp(rng.uniform(np.log(0.5), np.log(2.0), size=(num_components, dim)))
    eig = scales[:, None] * eig
    if diagonal:
        return mixture_from_arrays(means, eig, weights)
    rotations = np.linalg.qr(rng.normal(size=(num_components, dim, dim)))[0]
    covs = np.einsum("cij,cj,ckj->cik", rotations, eig, rotations)
    return mixture_from_arrays(means, 0.5 * (covs + np.swapaxes(covs, -1, -2)), weights)


def _variance_range(value) -> tuple[float, float]:
    lo, hi = check_pair("variance_range", value, "a pair (lo, hi) of numbers")
    if not (0.0 < lo <= hi < math.inf):
        raise ValueError(
            f"variance_range must satisfy 0 < lo <= hi < inf, got ({lo}, {hi})"
        )
    return lo, hi


def chessboard(dim: int = 10, variance: float = 0.007) -> Target:
    """Exact target of :func:`chessboard_mixture`."""
    return mixture_target(chessboard_mixture(dim, variance))


def random_mog(seed: int, dim: int, num_components: int = 8) -> Target:
    """Exact target of :func:`random_mixture`."""
    return mixture_target(random_mixture(seed, dim, num_components))
