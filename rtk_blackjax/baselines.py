"""Baseline reverse-diffusion samplers on the same targets and grids as RTK.

Each is a :class:`rtk_blackjax.mcmc.rtk.DiffusionAlgorithm` (``init``, ``step``,
``times``), so :func:`rtk_blackjax.sample` runs them exactly like RTK and counts their
NFE the same way. One step = one grid segment = one score evaluation.

* :func:`ddpm` — the exponential integrator of the reverse SDE (DDPM / "DDPM with
  exponential integrator"): ``x = e^h y + 2(e^h - 1) score(y, t_k) + sqrt(e^{2h}-1) ξ``.
* :func:`ddim` — the exponential integrator of the probability-flow ODE in data
  prediction form (DDIM, equivalently DPM-Solver-1): with the Tweedie estimate
  ``x̂_0 = (y + s_k^2 score(y, t_k)) / a_k``, ``x = a_{k+1} x̂_0 + (s_{k+1}/s_k)(y -
  a_k x̂_0)``. A segment ending at ``t = 0`` returns ``x̂_0`` (the final denoise).
"""

from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp

from rtk_blackjax.diffusion import ou_mean_coef, ou_variance, validate_grid
from rtk_blackjax.mcmc.rtk import DiffusionAlgorithm, _all_finite
from rtk_blackjax.targets.base import Target
from rtk_blackjax.types import Array, ArrayLikeTree, ArrayTree, PRNGKey

__all__ = ["DiffusionState", "DiffusionInfo", "ddpm", "ddim"]


class DiffusionState(NamedTuple):
    """State of a baseline sampler for one particle.

    position
        Current point (an approximate draw from ``p_t``, ``t = times[step]``).
    step
        Index of the next segment.
    num_evaluations
        NFE spent so far.
    """

    position: ArrayTree
    step: Array
    num_evaluations: Array


class DiffusionInfo(NamedTuple):
    """Per-segment information of a baseline sampler (same fields as RTK's where
    they apply)."""

    time: Array
    num_evaluations: Array
    is_finite: Array


def _build(target: Target, times, update: Callable) -> DiffusionAlgorithm:
    if not isinstance(target, Target):
        raise TypeError(f"target must be an rtk_blackjax Target, got {target!r}")
    times = validate_grid(times)

    def init_fn(position: ArrayLikeTree, rng_key: PRNGKey | None = None):
        del rng_key
        position = jax.tree.map(jnp.asarray, position)
        return DiffusionState(
            position, jnp.asarray(0, jnp.int32), jnp.asarray(0, jnp.int32)
        )

    def step_fn(rng_key: PRNGKey, state: DiffusionState):
        k = state.step
        t_start, t_end = times[k], times[k + 1]
        score = target.score(state.position, t_start)
        position = update(rng_key, state.position, score, t_start, t_end)
        one = jnp.asarray(1, jnp.int32)
        return (
            DiffusionState(position, k + 1, state.num_evaluations + one),
            DiffusionInfo(t_end, one, _all_finite(position)),
        )

    return DiffusionAlgorithm(init_fn, step_fn, times)


def ddpm(target: Target, times, final_denoise: bool = True) -> DiffusionAlgorithm:
    """DDPM with the exponential integrator on the grid ``times``.

    With ``final_denoise`` (the score_sde default, "noise removal") the segment that
    ends at ``t = 0`` returns the Tweedie mean ``(y + s^2 score(y)) / a`` instead of
    a noisy step: the same single score evaluation, without adding the last step's
    noise ``sqrt(e^{2h} - 1) ξ`` that nothing is left to remove.

    Examples
    --------
    >>> import jax, jax.numpy as jnp
    >>> import rtk_blackjax as rb
    >>> target = rb.targets.gaussian(jnp.zeros(2), 0.5)
    >>> sampler = rb.ddpm(target, rb.geometric_grid(25))
    >>> rb.sample(jax.random.key(0), sampler, 10, dim=2).samples.shape
    (10, 2)
    """

    def update(rng_key, y, score, t_start, t_end):
        h = t_start - t_end
        growth = jnp.exp(h)
        noise_std = jnp.sqrt(jnp.expm1(2.0 * h))
        if final_denoise:
            noise_std = jnp.where(t_end == 0.0, 0.0, noise_std)
            # Tweedie: (y + s^2 score)/a with a = e^{-h}, s^2 = 1 - e^{-2h}.
            drift = jnp.where(
                t_end == 0.0, growth * -jnp.expm1(-2.0 * h), 2.0 * (growth - 1.0)
            )
        else:
            drift = 2.0 * (growth - 1.0)
        return jax.tree.map(
            lambda yi, si: (
                growth * yi
                + drift * si
                + noise_std * jax.random.normal(rng_key, yi.shape, yi.dtype)
            ),
            y,
            score,
        )

    return _build(target, times, update)


def ddim(target: Target, times) -> DiffusionAlgorithm:
    """DDIM: the exponential integrator of the probability-flow ODE (deterministic).

    Examples
    --------
    >>> import jax, jax.numpy as jnp
    >>> import rtk_blackjax as rb
    >>> target = rb.targets.gaussian(jnp.zeros(2), 0.5)
    >>> sampler = rb.ddim(target, rb.geometric_grid(25, t_min=1e-4))
    >>> rb.sample(jax.random.key(0), sampler, 10, dim=2).samples.shape
    (10, 2)
    """

    def update(rng_key, y, score, t_start, t_end):
        del rng_key
        a_start, s2_start = ou_mean_coef(t_start), ou_variance(t_start)
        a_end, s2_end = ou_mean_coef(t_end), ou_variance(t_end)
        ratio = jnp.sqrt(s2_end / s2_start)
        return jax.tree.map(
            lambda yi, si: (
                a_end * (yi + s2_start * si) / a_start
                + ratio * (yi - (yi + s2_start * si))
            ),
            y,
            score,
        )

    return _build(target, times, update)
