"""What every posterior sampler with a diffusion prior returns, and its input check.

:class:`PosteriorResult` (the chains x draws result of every sampler in
:mod:`rtk_blackjax.posterior`) and :func:`check_linear_gaussian`, the validator of a
linear-Gaussian observation model ``y = A x + σ ε`` used by the DPS, twisted-SMC and
NUTS samplers, and :func:`budget_grid` / :func:`steps_for_budget`, the one place a
per-sample prior-evaluation budget becomes a number of steps. Generic argument checks
are in :mod:`rtk_blackjax._checks`.
"""

import math
from typing import NamedTuple

import jax.numpy as jnp

from rtk_blackjax._checks import check_int
from rtk_blackjax.diffusion import geometric_grid, validate_grid
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


def steps_for_budget(
    prior_nfe_budget: int | None,
    *,
    cost_per_step: int,
    initial_cost: int = 0,
    step: str = "step",
    instead: str = "an explicit times grid",
) -> int:
    """The number of steps a budget of prior evaluations per sample pays for.

    ``(prior_nfe_budget - initial_cost) // cost_per_step``, with the errors every
    posterior sampler gives: no budget and nothing ``instead`` of it, or a budget that
    does not pay for one ``step``.

    Examples
    --------
    >>> steps_for_budget(31, cost_per_step=3, initial_cost=1)
    10
    >>> steps_for_budget(3, cost_per_step=3, initial_cost=1, step="segment")
    Traceback (most recent call last):
    ...
    ValueError: prior_nfe_budget=3 is too small: one segment needs 4 prior evaluations
    """
    if prior_nfe_budget is None:
        raise ValueError(f"give prior_nfe_budget or {instead}")
    budget = check_int("prior_nfe_budget", prior_nfe_budget, minimum=1)
    steps = (budget - initial_cost) // cost_per_step
    if steps < 1:
        raise ValueError(
            f"prior_nfe_budget={budget} is too small: one {step} needs "
            f"{initial_cost + cost_per_step} prior evaluations"
        )
    return steps


def budget_grid(
    prior_nfe_budget: int | None,
    times: ArrayLike | None,
    *,
    horizon: float,
    t_min: float,
    cost_per_step: int,
    initial_cost: int = 0,
    step: str = "step",
) -> Array:
    """The validated time grid: ``times`` if given, else a geometric grid on
    ``[t_min, horizon]`` with as many steps as the budget pays for
    (:func:`steps_for_budget`).

    Examples
    --------
    >>> budget_grid(8, None, horizon=4.0, t_min=1e-3, cost_per_step=2).shape
    (5,)
    """
    if times is None:
        num_steps = steps_for_budget(
            prior_nfe_budget,
            cost_per_step=cost_per_step,
            initial_cost=initial_cost,
            step=step,
        )
        times = geometric_grid(num_steps, horizon, t_min)
    return validate_grid(times)
