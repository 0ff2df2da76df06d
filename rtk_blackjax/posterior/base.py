"""What every posterior sampler with a diffusion prior returns, and its input check.

:class:`PosteriorResult` (the chains x draws result of every sampler in
:mod:`rtk_blackjax.posterior`) and :func:`check_linear_gaussian`, the validator of a
linear-Gaussian observation model ``y = A x + σ ε`` used by the DPS, twisted-SMC and
NUTS samplers. Generic argument checks are in :mod:`rtk_blackjax._checks`.
"""

import math
from typing import NamedTuple

import jax.numpy as jnp

from rtk_blackjax.targets import Target
from rtk_blackjax.types import Array, ArrayLike

__all__ = ["PosteriorResult", "check_linear_gaussian"]


class PosteriorResult(NamedTuple):
    """Draws of a posterior sampler, shaped for ArviZ (chains x draws).

    samples
        ``(num_chains, num_draws, dim)`` draws of ``x`` (for independent-particle
        samplers such as DPS or SMC: one chain per particle and one draw, or the
        resampled particle cloud reshaped the same way).
    prior_nfe
        Prior score/energy evaluations per returned sample (the cost unit the
        benchmarks compare on): total prior evaluations divided by the number
        of returned samples.
    likelihood_evals
        Likelihood (or likelihood-gradient) evaluations per returned sample.
    acceptance
        Per-block acceptance rates, e.g. ``{"prior": (chains, draws),
        "likelihood": (chains, draws)}``; empty for samplers without Metropolis
        steps.
    extras
        Other sampler-specific statistics (effective sample sizes, ``rho``
        schedule, other latent sites, ...).
    """

    samples: Array
    prior_nfe: float
    likelihood_evals: float
    acceptance: dict
    extras: dict


def check_linear_gaussian(
    prior: Target, A: ArrayLike, y: ArrayLike, sigma: float
) -> tuple[Array, Array, Array]:
    """Validate ``y = A x + σ ε`` with a diffusion prior; return ``(A, y, σ²)``.

    ``prior`` must be a :class:`~rtk_blackjax.targets.Target`, ``A`` a finite
    ``(obs_dim, dim)`` matrix, ``y`` finite of shape ``(obs_dim,)``, ``sigma`` a
    positive finite scalar; arrays come back in the default float dtype.
    """
    if not isinstance(prior, Target):
        raise TypeError(f"prior must be an rtk_blackjax Target, got {type(prior)!r}")
    A = jnp.asarray(A, jnp.result_type(float))
    y = jnp.asarray(y, A.dtype)
    if A.ndim != 2:
        raise ValueError(f"A must be a (obs_dim, dim) matrix, got shape {A.shape}")
    if y.shape != (A.shape[0],):
        raise ValueError(
            f"y must have shape (obs_dim,) = ({A.shape[0]},), got {y.shape}"
        )
    sigma_f = float(sigma)
    if not (math.isfinite(sigma_f) and sigma_f > 0):
        raise ValueError(f"sigma must be a positive finite number, got {sigma!r}")
    if not (bool(jnp.all(jnp.isfinite(A))) and bool(jnp.all(jnp.isfinite(y)))):
        raise ValueError("A and y must be finite")
    return A, y, jnp.asarray(sigma_f**2, A.dtype)
