"""The RTK prior block of split Gibbs: ``x | z`` as a reverse diffusion from ``t*(ρ)``.

``rho_to_time`` / ``time_to_rho`` map a coupling ``ρ`` to the OU time where
``s_t / a_t = ρ``; :class:`PriorBlock` (built by :func:`prior_block`) draws
``x | z ∝ p(x) N(z; x, ρ_k² I)`` by RTK segments on a master grid, shared by
:func:`~rtk_blackjax.posterior.split_gibbs_linear.split_gibbs_linear_gaussian` and
:func:`~rtk_blackjax.posterior.split_gibbs.split_gibbs`.
"""

from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np

from rtk_blackjax._checks import (
    check_int,
    check_positive,
)
from rtk_blackjax.diffusion import geometric_grid
from rtk_blackjax.mcmc import rtk as rtk_module
from rtk_blackjax.mcmc.inner import InnerKernel, mala_inner, score_mala_inner
from rtk_blackjax.run.loop import run_segments
from rtk_blackjax.targets.base import Target
from rtk_blackjax.types import Array, ArrayLike, PRNGKey

__all__ = ["rho_to_time", "time_to_rho", "PriorBlock", "prior_block"]


def rho_to_time(rho: ArrayLike) -> Array:
    """The OU time ``t* = ½ log(1 + ρ²)`` at which ``s_t / a_t = ρ``.

    Examples
    --------
    >>> round(float(rho_to_time(1.0)), 4)  # ½ log 2
    0.3466
    """
    return 0.5 * jnp.log1p(jnp.square(jnp.asarray(rho)))


def time_to_rho(t: ArrayLike) -> Array:
    """The coupling ``ρ = s_t / a_t = sqrt(e^{2t} - 1)`` matched by OU time ``t``.

    Examples
    --------
    >>> round(float(time_to_rho(rho_to_time(0.3))), 6)
    0.3
    """
    return jnp.sqrt(jnp.expm1(2.0 * jnp.asarray(t)))


class PriorBlock:
    """The prior block ``x | z ∝ p(x) N(z; x, ρ_k² I)`` on a master grid.

    Built by :func:`prior_block`. ``times`` is the master grid (horizon first,
    ``times[-2] = t*(rho_final)``, ``times[-1] = 0``); stage ``k`` uses
    ``ρ_k = time_to_rho(times[k])`` for ``k < num_segments``.

    ``sample(rng_key, z, k) -> (x, nfe, acceptance, finite)`` draws ``x | z`` for one
    chain by RTK from ``times[k]`` to 0 (``k`` may be traced);
    ``sample_prior(rng_key, dim) -> (x, nfe, acceptance, finite)`` draws from the
    prior itself (the whole grid from ``N(0, I)`` at the horizon). ``nfe`` counts every
    prior score/energy evaluation.
    """

    def __init__(
        self,
        target: Target,
        times: Array,
        kernel: Callable,
        inner: InnerKernel,
        inner_steps: np.ndarray,
    ):
        self.target = target
        self._inner = inner
        self.times = times
        self.kernel = kernel
        self.num_segments = int(times.shape[0]) - 1
        self.inner_steps = inner_steps

    def rho(self, k: ArrayLike) -> Array:
        return time_to_rho(self.times[k])

    def _run(self, rng_key: PRNGKey, position: Array, k0: ArrayLike):
        k0 = jnp.asarray(k0, jnp.int32)
        state = rtk_module.init(position, self.target, self.times, segment=k0)

        def step(key, carry, segment):
            # The RTK step, plus running acceptance and finiteness summaries.
            state, acc_sum, acc_count, finite = carry
            state, info = self.kernel(key, state, segment)
            ran = jnp.isfinite(info.acceptance_rate)
            acc_sum = acc_sum + jnp.where(ran, info.acceptance_rate, 0.0)
            return (state, acc_sum, acc_count + ran, finite & info.is_finite), None

        zero = jnp.zeros((), position.dtype)
        carry = (state, zero, jnp.zeros((), jnp.int32), jnp.asarray(True))
        (state, acc_sum, acc_count, finite), _ = run_segments(
            step, carry, rng_key, k0, self.num_segments - k0
        )
        acceptance = jnp.where(
            acc_count > 0, acc_sum / jnp.maximum(acc_count, 1), jnp.nan
        )
        return state.position, state.num_evaluations, acceptance, finite

    def sample(self, rng_key: PRNGKey, z: Array, k: ArrayLike):
        # p(x | x_t = a_t z) ∝ p(x) N(z; x, s_t²/a_t²) = p(x) N(z; x, ρ_k²).
        a = jnp.exp(-self.times[k])
        return self._run(rng_key, a * z, k)

    def sample_prior(self, rng_key: PRNGKey, dim: int):
        key_start, key_run = jax.random.split(rng_key)
        x_horizon = jax.random.normal(key_start, (dim,), jnp.result_type(float))
        return self._run(key_run, x_horizon, 0)

    def cost(self, k: int) -> int:
        """Prior evaluations of one ``sample`` from stage ``k`` (no tracing)."""
        return rtk_module.expected_nfe(self._inner, np.asarray(self.inner_steps)[k:])


def prior_block(
    prior: Target,
    *,
    rho_final: float,
    num_segments: int = 16,
    horizon: float = 5.0,
    inner: InnerKernel | None = None,
    inner_steps: int = 2,
) -> PriorBlock:
    """Build the RTK prior block on the master grid for ``rho_final``.

    Parameters
    ----------
    prior
        The diffusion prior (:class:`rtk_blackjax.targets.Target`).
    rho_final
        Smallest coupling; the grid's last positive time is ``t*(rho_final)``.
    num_segments
        Segments of the master grid (geometric from ``horizon`` to ``t*``, then 0).
    inner, inner_steps
        Inner kernel of every RTK segment (``mala_inner()`` when the prior has a log
        density, score-only Lobatto MALA otherwise) and its steps per segment.

    Examples
    --------
    >>> import jax, jax.numpy as jnp
    >>> import rtk_blackjax as rb
    >>> block = prior_block(rb.targets.gaussian(jnp.zeros(2), 1.0), rho_final=0.1,
    ...                     num_segments=6)
    >>> block.num_segments, block.cost(5)  # the last segment: 1 + (1 + 1 + 2)
    (6, 5)
    >>> x, nfe, acc, ok = block.sample(  # doctest: +SKIP
    ...     jax.random.key(0), jnp.ones(2), 5)
    """
    if not isinstance(prior, Target):
        raise TypeError(
            "prior must be an rtk_blackjax Target (rtk_blackjax.targets.*), got "
            f"{type(prior).__name__}"
        )
    rho_final = check_positive("rho_final", rho_final)
    num_segments = check_int("num_segments", num_segments, minimum=2)
    horizon = check_positive("horizon", horizon)
    inner_steps = check_int("inner_steps", inner_steps, minimum=0)
    t_min = float(rho_to_time(rho_final))
    if t_min >= horizon:
        raise ValueError(
            f"rho_final={rho_final} needs t*={t_min:.3g}, which must be below the "
            f"horizon={horizon}"
        )
    if inner is None:
        inner = (
            mala_inner()
            if prior.logdensity is not None
            else score_mala_inner(rule="lobatto", num_nodes=2)
        )
    times = geometric_grid(num_segments, horizon, t_min)
    schedule = np.full(num_segments, inner_steps, np.int32)
    kernel = rtk_module.build_kernel(prior, times, inner, schedule)
    return PriorBlock(prior, times, kernel, inner, schedule)
