"""The 25-mode Gaussian-mixture posterior problem and its exact posterior.

The MCGdiff / TMPD setting: :func:`make_problem` draws a problem, :func:`exact_posterior`
gives its closed-form posterior mixture, :func:`sample_posterior`, :func:`mode_tv` and
friends score samplers against it. The benchmark runner is
:mod:`rtk_blackjax.benchmarks.posterior`.

Prior: ``p_0 = sum_i w_i N(m_i, I_d)`` with 25 means ``(8i, 8j, 8i, 8j, ...)`` for
``i, j in {-2, ..., 2}`` (the pair repeated across coordinates) and **uniform
weights** ``w_i = 1/25``. Observation: ``y = A x + sigma * eps`` with ``A`` of
``d_y`` rows. Because every prior component is Gaussian and the likelihood is
linear-Gaussian, the posterior is again a Gaussian mixture, in closed form. For a
component with isotropic covariance ``v_i I`` (``v_i = 1`` here):

* ``K_i = v_i A A^T + sigma^2 I``                     (covariance of ``y`` given the component)
* ``m_i' = m_i + v_i A^T K_i^{-1} (y - A m_i)``         (posterior mean)
* ``S_i = v_i I - v_i^2 A^T K_i^{-1} A``                (posterior covariance)
* ``w_i' ∝ w_i N(y; A m_i, K_i)``                      (posterior weight)

Only ``d_y x d_y`` matrices are ever factorised, so ``d = 800`` costs nothing, and
exact posterior draws use Matheron's rule (draw the prior component, then correct
it by the gain ``v_i A^T K_i^{-1}``) instead of a ``d x d`` square root.
"""

import math
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from rtk_blackjax._checks import check_choice, check_int, check_key, check_positive
from rtk_blackjax.targets.analytic import (
    GaussianMixture,
    mixture_from_arrays,
    mixture_logdensity,
)
from rtk_blackjax.types import Array, ArrayLike, PRNGKey

__all__ = [
    "GRID_SPACING",
    "SIGMA_RANGE",
    "PROTOCOLS",
    "PosteriorMixture",
    "LinearGaussianProblem",
    "grid_prior",
    "make_problem",
    "exact_posterior",
    "sample_posterior",
    "posterior_logdensity",
    "log_likelihood",
    "assign_modes",
    "mode_tv",
]

GRID_SPACING = 8.0
# Noise level of a random problem: log-uniform in this range (small sigma makes the
# posterior modes narrow along the observed directions, where DPS struggles).
SIGMA_RANGE = (0.1, 1.0)
# Problem recipes of make_problem: this package's, and Cardoso et al. (2024)'s.
PROTOCOLS = ("gmm", "mcgdiff")


class PosteriorMixture(NamedTuple):
    """The exact posterior ``sum_i w_i' N(m_i', S_i)`` of an isotropic-component mixture.

    weights
        ``(c,)`` posterior weights (sum to one).
    log_weights
        ``(c,)`` their logarithms (exact even where a weight underflows).
    means
        ``(c, d)`` posterior component means ``m_i'``.
    prior_means, prior_variances
        ``(c, d)`` prior means and ``(c,)`` isotropic prior variances ``v_i``.
    obs_matrix, sigma, y
        The observation model: ``A`` ``(d_y, d)``, noise std, observation ``(d_y,)``.
    gain
        ``(c, d, d_y)``: ``v_i A^T K_i^{-1}``.
    log_evidence
        ``log p(y)``.
    """

    weights: Array
    log_weights: Array
    means: Array
    prior_means: Array
    prior_variances: Array
    obs_matrix: Array
    sigma: Array
    y: Array
    gain: Array
    log_evidence: Array

    @property
    def dim(self) -> int:
        return int(self.means.shape[-1])


class LinearGaussianProblem(NamedTuple):
    """One random instance of the benchmark.

    prior
        The prior :class:`~rtk_blackjax.targets.GaussianMixture`.
    obs_matrix, sigma, y
        ``A`` ``(d_y, d)`` with unit-norm rows, the noise std and the observation.
    x_true
        The prior draw ``y`` was generated from.
    posterior
        The exact :class:`PosteriorMixture`.
    """

    prior: GaussianMixture
    obs_matrix: Array
    sigma: float
    y: Array
    x_true: Array
    posterior: PosteriorMixture


def grid_prior(dim: int, spacing: float = GRID_SPACING) -> GaussianMixture:
    """The 25-component prior: means ``spacing * (i, j, i, j, ...)``, ``I_d``, weights 1/25.

    Examples
    --------
    >>> prior = grid_prior(4)
    >>> prior.means.shape, prior.means[0].tolist(), round(float(prior.weights[0]), 6)
    ((25, 4), [-16.0, -16.0, -16.0, -16.0], 0.04)
    """
    dim = check_int("dim", dim, minimum=2)
    check_positive("spacing", spacing)
    offsets = np.arange(-2, 3, dtype=np.float64)
    pairs = np.array([(i, j) for i in offsets for j in offsets])  # (25, 2)
    means = spacing * np.tile(pairs, (1, (dim + 1) // 2))[:, :dim]
    return mixture_from_arrays(means, 1.0)


def _isotropic_variances(prior: GaussianMixture) -> Array:
    eig = np.asarray(prior.cov_eigvals)
    # Equal eigenvalues make v_i I whatever the eigenvectors are.
    if not np.allclose(eig, eig[:, :1], rtol=1e-5):
        raise ValueError(
            "prior components must have isotropic covariances v_i I (the closed-form "
            "posterior here uses that structure), got unequal eigenvalues"
        )
    return jnp.asarray(eig[:, 0])


def _check_observation(dim: int, obs_matrix, y, sigma):
    obs_matrix = jnp.asarray(obs_matrix, jnp.result_type(float))
    y = jnp.asarray(y, obs_matrix.dtype)
    if obs_matrix.ndim != 2 or obs_matrix.shape[1] != dim:
        raise ValueError(
            f"obs_matrix must have shape (obs_dim, {dim}), got {obs_matrix.shape}"
        )
    if y.shape != (obs_matrix.shape[0],):
        raise ValueError(f"y must have shape ({obs_matrix.shape[0]},), got {y.shape}")
    if not (np.isfinite(sigma) and float(sigma) > 0):
        raise ValueError(f"sigma must be a positive finite number, got {sigma!r}")
    if not (bool(jnp.all(jnp.isfinite(obs_matrix))) and bool(jnp.all(jnp.isfinite(y)))):
        raise ValueError("obs_matrix and y must be finite")
    return obs_matrix, y, jnp.asarray(float(sigma), obs_matrix.dtype)


def exact_posterior(
    prior: GaussianMixture, obs_matrix: ArrayLike, y: ArrayLike, sigma: float
) -> PosteriorMixture:
    """Closed-form posterior of an isotropic-component mixture under ``y = A x + σ ε``.

    Examples
    --------
    One component: the textbook Gaussian posterior.

    >>> import jax.numpy as jnp
    >>> from rtk_blackjax.targets.analytic import mixture_from_arrays
    >>> prior = mixture_from_arrays(jnp.zeros((1, 2)), 1.0)
    >>> post = exact_posterior(prior, jnp.array([[1.0, 0.0]]), jnp.array([2.0]), 1.0)
    >>> post.means[0].tolist()  # shrinks y = 2 halfway towards the prior mean
    [1.0, 0.0]
    """
    if not isinstance(prior, GaussianMixture):
        raise TypeError(f"prior must be a GaussianMixture, got {type(prior).__name__}")
    A, y, sigma = _check_observation(prior.dim, obs_matrix, y, sigma)
    v = _isotropic_variances(prior)
    obs_dim = A.shape[0]
    eye = jnp.eye(obs_dim, dtype=A.dtype)
    gram = A @ A.T
    cov_y = v[:, None, None] * gram[None] + sigma**2 * eye[None]  # (c, dy, dy)
    chol = jnp.linalg.cholesky(cov_y)
    resid = y[None, :] - prior.means @ A.T  # (c, dy)
    white = jax.scipy.linalg.solve_triangular(chol, resid[..., None], lower=True)[
        ..., 0
    ]
    logdet = 2.0 * jnp.sum(jnp.log(jnp.diagonal(chol, axis1=1, axis2=2)), axis=1)
    log_marg = -0.5 * (
        jnp.sum(white**2, axis=1) + logdet + obs_dim * math.log(2 * math.pi)
    )
    log_joint = jnp.log(prior.weights) + log_marg
    log_evidence = jax.nn.logsumexp(log_joint)
    log_weights = log_joint - log_evidence
    cov_inv = jnp.linalg.inv(cov_y)
    gain = v[:, None, None] * jnp.einsum("jd,cjk->cdk", A, cov_inv)  # (c, d, dy)
    means = prior.means + jnp.einsum("cdk,ck->cd", gain, resid)
    return PosteriorMixture(
        weights=jnp.exp(log_weights),
        log_weights=log_weights,
        means=means,
        prior_means=prior.means,
        prior_variances=v,
        obs_matrix=A,
        sigma=sigma,
        y=y,
        gain=gain,
        log_evidence=log_evidence,
    )


def make_problem(
    seed: int,
    dim: int,
    obs_dim: int,
    *,
    sigma: float | None = None,
    protocol: str = "gmm",
) -> LinearGaussianProblem:
    """A reproducible random problem of the benchmark.

    Recipe ``protocol="gmm"`` (numpy ``default_rng(seed)``): the prior is
    :func:`grid_prior` (equal weights); ``A`` has i.i.d. Gaussian entries with each
    row scaled to unit norm (so ``A x`` has the scale of one coordinate of ``x``);
    ``sigma`` is log-uniform in :data:`SIGMA_RANGE` unless given; ``x_true`` is a
    prior draw and ``y = A x_true + sigma * eps``.

    ``protocol="mcgdiff"`` follows Cardoso et al. (2024)'s Gaussian-mixture
    experiment: the grid prior's weights are random (uniform draws, normalised),
    ``A = U diag(s) V`` with ``U`` a random ``d_y x d_y`` rotation, ``V`` ``d_y``
    random orthonormal rows and ``s`` sorted uniform ``(0, 1)`` singular values, and
    ``sigma = u · max(s)`` with ``u`` uniform ``(0, 1)`` unless given.

    Examples
    --------
    >>> problem = make_problem(0, dim=8, obs_dim=2)
    >>> problem.obs_matrix.shape, problem.y.shape, problem.posterior.means.shape
    ((2, 8), (2,), (25, 8))
    """
    dim = check_int("dim", dim, minimum=2)
    obs_dim = check_int("obs_dim", obs_dim, minimum=1)
    if obs_dim > dim:
        raise ValueError(f"obs_dim must be at most dim={dim}, got {obs_dim}")
    protocol = check_choice("protocol", protocol, PROTOCOLS)
    rng = np.random.default_rng(seed)
    prior = grid_prior(dim)
    if protocol == "gmm":
        A = rng.normal(size=(obs_dim, dim))
        A /= np.linalg.norm(A, axis=1, keepdims=True)
        if sigma is None:
            sigma = float(np.exp(rng.uniform(*np.log(SIGMA_RANGE))))
    else:
        weights = rng.uniform(size=prior.num_components)
        prior = mixture_from_arrays(prior.means, 1.0, weights / weights.sum())
        rotation, _ = np.linalg.qr(rng.normal(size=(obs_dim, obs_dim)))
        rows, _ = np.linalg.qr(rng.normal(size=(dim, obs_dim)))
        singular = np.sort(rng.uniform(size=obs_dim))[::-1]
        A = rotation @ np.diag(singular) @ rows.T
        if sigma is None:
            sigma = float(rng.uniform() * singular.max())
    weights = np.asarray(prior.weights, np.float64)
    comp = rng.choice(prior.num_components, p=weights / weights.sum())
    x_true = np.asarray(prior.means[comp]) + rng.normal(size=dim)
    y = A @ x_true + sigma * rng.normal(size=obs_dim)
    posterior = exact_posterior(prior, A, y, sigma)
    dtype = prior.means.dtype
    return LinearGaussianProblem(
        prior=prior,
        obs_matrix=jnp.asarray(A, dtype),
        sigma=sigma,
        y=jnp.asarray(y, dtype),
        x_true=jnp.asarray(x_true, dtype),
        posterior=posterior,
    )


def sample_posterior(
    rng_key: PRNGKey, posterior: PosteriorMixture, num_samples: int
) -> Array:
    """Exact posterior draws ``(n, d)`` by Matheron's rule (no ``d x d`` factor)."""
    rng_key = check_key("rng_key", rng_key)
    num_samples = check_int("num_samples", num_samples, minimum=1)
    key_c, key_x, key_e = jax.random.split(rng_key, 3)
    comps = jax.random.categorical(key_c, posterior.log_weights, shape=(num_samples,))
    dim, obs_dim = posterior.dim, posterior.y.shape[0]
    x = posterior.prior_means[comps] + jnp.sqrt(posterior.prior_variances[comps])[
        :, None
    ] * jax.random.normal(key_x, (num_samples, dim))
    eps = posterior.sigma * jax.random.normal(key_e, (num_samples, obs_dim))
    innovation = posterior.y[None] - x @ posterior.obs_matrix.T - eps
    return x + jnp.einsum("ndk,nk->nd", posterior.gain[comps], innovation)


def log_likelihood(posterior: PosteriorMixture, x: ArrayLike) -> Array:
    """``log N(y; A x, σ² I)`` for one point ``x`` (d,)."""
    resid = posterior.y - posterior.obs_matrix @ x
    obs_dim = posterior.y.shape[0]
    return -0.5 * jnp.sum(resid**2) / posterior.sigma**2 - obs_dim * (
        jnp.log(posterior.sigma) + 0.5 * math.log(2 * math.pi)
    )


def posterior_logdensity(
    prior: GaussianMixture, posterior: PosteriorMixture, x: ArrayLike
) -> Array:
    """Normalised ``log p(x | y) = log p_0(x) + log p(y | x) - log p(y)`` at one point."""
    x = jnp.asarray(x)
    return (
        mixture_logdensity(prior, x, 0.0)
        + log_likelihood(posterior, x)
        - posterior.log_evidence
    )


@jax.jit
def _component_logpdfs(posterior: PosteriorMixture, x: Array) -> Array:
    """``log w_i' + log N(x; m_i', S_i)`` for all components, ``x`` of shape (n, d)."""
    A, s2, v = posterior.obs_matrix, posterior.sigma**2, posterior.prior_variances
    mu = posterior.means
    hi = jax.lax.Precision.HIGHEST
    # S_i^{-1} = I / v_i + A^T A / sigma^2 (precisions add); expand the squares so
    # that no (n, c, d) array is formed.
    sq = (
        jnp.sum(x**2, 1)[:, None]
        - 2.0 * jnp.matmul(x, mu.T, precision=hi)
        + jnp.sum(mu**2, 1)[None]
    )
    ax, amu = jnp.matmul(x, A.T, precision=hi), jnp.matmul(mu, A.T, precision=hi)
    sq_obs = jnp.sum((ax[:, None, :] - amu[None]) ** 2, -1)
    quad = sq / v[None] + sq_obs / s2
    obs_dim = A.shape[0]
    inner = jnp.eye(obs_dim) + v[:, None, None] * (A @ A.T)[None] / s2
    logdet_prec = -posterior.dim * jnp.log(v) + jnp.linalg.slogdet(inner)[1]
    return posterior.log_weights[None] - 0.5 * quad + 0.5 * logdet_prec[None]


def assign_modes(posterior: PosteriorMixture, x: ArrayLike) -> Array:
    """The posterior component each row of ``x`` (n, d) most probably came from."""
    x = jnp.asarray(x)
    if x.ndim != 2 or x.shape[1] != posterior.dim:
        raise ValueError(f"x must have shape (n, {posterior.dim}), got {x.shape}")
    return jnp.argmax(_component_logpdfs(posterior, x), axis=1)


def mode_tv(posterior: PosteriorMixture, x: ArrayLike) -> float:
    """Total variation between the fractions of ``x`` per posterior mode and ``w'``.

    Samples are assigned by the exact posterior responsibilities
    (:func:`assign_modes`). Raises on non-finite samples.

    Examples
    --------
    >>> import jax
    >>> problem = make_problem(1, dim=8, obs_dim=1)
    >>> x = sample_posterior(jax.random.key(0), problem.posterior, 20000)
    >>> mode_tv(problem.posterior, x) < 0.03
    True
    """
    x = jnp.asarray(x)
    if not bool(jnp.all(jnp.isfinite(x))):
        raise ValueError("x contains NaN or inf: mode_tv needs finite samples")
    labels = assign_modes(posterior, x)
    counts = jnp.bincount(labels, length=posterior.weights.shape[0])
    fractions = np.asarray(counts, np.float64) / x.shape[0]
    return float(0.5 * np.sum(np.abs(fractions - np.asarray(posterior.weights))))
