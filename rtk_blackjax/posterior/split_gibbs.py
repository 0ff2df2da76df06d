"""Split Gibbs posterior sampling with a diffusion prior, the prior block solved by RTK.

The posterior ``p(x | y) ∝ p(x) L(y | x)`` is relaxed by a copy ``z`` of ``x``
(plug-and-play split Gibbs, e.g. Xu & Chi 2024, Bouman & Buzzard 2023)::

    π_ρ(x, z) ∝ p(x) · N(z; x, ρ² I) · L(y | z)

and sampled by alternating two blocks:

* **likelihood block** ``z | x ∝ N(z; x, ρ² I) L(y | z)``: exact Gaussian when the
  likelihood is linear-Gaussian (:func:`split_gibbs_linear_gaussian`), otherwise
  BlackJAX MALA on the NumPyro model's log-likelihood plus the coupling
  (:func:`split_gibbs`); further latent sites of a NumPyro model (a noise scale...)
  get their own NUTS block on the unconstrained space.
* **prior block** ``x | z ∝ p(x) N(z; x, ρ² I)``. With the OU process
  ``x_t = a_t x + s_t ε`` the denoising posterior is
  ``p(x | x_t) ∝ p(x) N(x_t / a_t; x, s_t² / a_t²)``, so ``x | z`` *is*
  ``p(x | x_{t*} = a_{t*} z)`` at the time ``t* = ½ log(1 + ρ²)`` where
  ``s_{t*} / a_{t*} = ρ``: a reverse diffusion from ``t*`` to 0 started at
  ``a_{t*} z``, run here with RTK segments (exact up to the inner chains' error).

**ρ schedule.** All ρ live on one *master grid*: a geometric grid from the horizon
``T`` down to ``t_min = t*(rho_final)``, then 0. A sweep at stage ``k`` starts the
reverse diffusion at grid time ``t_k`` (``ρ_k = sqrt(e^{2 t_k} - 1)``) and runs the
grid's segments below it, so every stage shares one compiled RTK kernel and the prior
block at small ρ costs only the few segments below ``t*``. The chains start from
exact-in-law prior draws (the whole grid from ``T``) and are annealed through the grid
points with ``ρ_k <= rho_start`` down to ``rho_final``, where the draws are taken.

**Mode weights (reweighting).** With well separated prior modes a Gibbs chain stops
crossing between them once ρ is smaller than their distance, so plain annealing
freezes the mode weights of some intermediate ρ. For a linear-Gaussian likelihood the
x-marginal of ``π_ρ`` is known up to a constant, ``p(x) N(y; A x, σ² I + ρ² A Aᵀ)``,
and the chains are treated as an SMC population: before each stage every chain is
weighted by ``N(y; Ax, Σ_{ρ_new}) / N(y; Ax, Σ_{ρ_old})`` (no prior evaluation),
resampled when the effective sample size drops below ``ess_threshold``, and always
resampled before the draws. The Gibbs sweeps leave the x-marginal invariant, so this
is a valid SMC sampler and the chains enter the final stage with the right mode
weights; the draws are then an ordinary Gibbs chain at ``rho_final``.

**Residual bias of a finite ρ.** The x-marginal of ``π_ρ`` is the posterior under the
inflated likelihood ``N(y; A x, σ² I + ρ² A Aᵀ)``: ``rho_final`` must be small next to
``σ / ||A||``. For a Gaussian prior the bias is exact and measured in
``docs/posteriors.md``. Small ρ costs mixing: along directions the data do not see,
one sweep is an AR(1) move with coefficient ``≈ 1 / (1 + ρ² / v)`` (``v`` the prior
variance there), which is why the population is prepared by annealing rather than by
a long chain at ``rho_final``.

**Layout.** This module holds the NumPyro entry point :func:`split_gibbs` and
re-exports the rest: the RTK prior block (:mod:`~rtk_blackjax.posterior.prior_block`)
and the linear-Gaussian sampler with its annealing plan
(:mod:`~rtk_blackjax.posterior.split_gibbs_linear`).
"""

from collections.abc import Callable

import blackjax
import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist
from jax.flatten_util import ravel_pytree
from numpyro.distributions import constraints
from numpyro.infer.util import initialize_model

from rtk_blackjax._checks import (
    check_callable,
    check_int,
    check_key,
    check_positive,
)
from rtk_blackjax.interop.arviz import to_arviz  # re-exported (one converter)
from rtk_blackjax.mcmc.adaptation import MALA_TARGET_ACCEPTANCE, adapt_step_size
from rtk_blackjax.mcmc.inner import InnerKernel
from rtk_blackjax.posterior.base import PosteriorResult
from rtk_blackjax.posterior.model import inspect_model
from rtk_blackjax.posterior.prior import DiffusionPrior
from rtk_blackjax.posterior.prior_block import (
    PriorBlock,
    prior_block,
    rho_to_time,
    time_to_rho,
)
from rtk_blackjax.posterior.split_gibbs_linear import (
    _annealed_prior_block,
    _plan,
    _raise_if_nonfinite,
    relaxed_gaussian_posterior,
    split_gibbs_linear_gaussian,
)
from rtk_blackjax.types import PRNGKey

__all__ = [
    "rho_to_time",
    "time_to_rho",
    "PriorBlock",
    "prior_block",
    "split_gibbs_linear_gaussian",
    "split_gibbs",
    "relaxed_gaussian_posterior",
    "to_arviz",
]


# --- NumPyro models ------------------------------------------------------------------

# Target acceptance of the adapted likelihood-block kernels (MALA's optimal 0.574,
# NUTS's usual 0.8); step sizes adapt only during annealing, never during the draws.
_MALA_TARGET, _NUTS_TARGET = MALA_TARGET_ACCEPTANCE, 0.8
# Learning rate of the log step sizes, once per annealing sweep.
_ADAPT_RATE = 0.5


class _FlatDiffusionPrior(numpyro.primitives.Messenger):
    """Replace every ``DiffusionPrior`` site's law by a flat one (log density 0).

    The relaxed model puts the prior on ``x`` and the likelihood on ``z``: the
    likelihood block needs the model's log density *without* the prior term.
    """

    def process_message(self, msg):
        if msg["type"] == "sample" and isinstance(msg["fn"], DiffusionPrior):
            msg["fn"] = dist.ImproperUniform(
                constraints.real_vector, (), msg["fn"].event_shape
            )


def split_gibbs(
    rng_key: PRNGKey,
    model: Callable,
    *model_args,
    num_chains: int,
    num_draws: int,
    prior_nfe_budget: float | None = None,
    rho_start: float = 2.0,
    rho_final: float = 0.1,
    num_segments: int = 12,
    num_stages: int | None = None,
    inner_steps: int = 2,
    sweeps_per_stage: int | None = None,
    likelihood_steps: int = 3,
    horizon: float = 5.0,
    inner: InnerKernel | None = None,
    **model_kwargs,
) -> PosteriorResult:
    """Split Gibbs for a NumPyro model with one :class:`DiffusionPrior` site.

    Per sweep, for each chain:

    1. **likelihood block** ``z | x, rest``: ``likelihood_steps`` BlackJAX MALA steps
       on ``log p(y, rest | x := z) - |z - x|² / (2ρ²)`` (the model's log density with
       the prior site replaced by a flat law, from ``numpyro.infer.util``);
    2. **latent block** ``rest | z`` (other latent sites, e.g. a noise scale): one
       NUTS step on their unconstrained space (Jacobians included);
    3. **prior block** ``x | z``: RTK from ``t*(ρ)``, exactly as in
       :func:`split_gibbs_linear_gaussian`.

    ρ is annealed over the master grid's points from ``rho_start`` to ``rho_final``
    (no reweighting here: the x-marginal of the relaxed model is not available for a
    general likelihood, so mode weights across well separated prior modes are only as
    good as the mixing at the larger ρ). MALA and NUTS step sizes adapt to their
    target acceptance per chain during annealing and are frozen for the draws.

    Parameters
    ----------
    rng_key
        JAX PRNG key.
    model, *model_args, **model_kwargs
        The NumPyro model and its arguments (observed data included).
    num_chains, num_draws
        Shape of the returned draws.
    prior_nfe_budget
        Prior evaluations per returned sample; buys ``sweeps_per_stage`` as in
        :func:`split_gibbs_linear_gaussian`. Default: ``sweeps_per_stage = 5``.
    rho_start, rho_final, num_segments, num_stages, inner_steps, horizon, inner
        ρ schedule and RTK prior block (see :func:`split_gibbs_linear_gaussian`).
    likelihood_steps
        MALA steps of the likelihood block per sweep.

    Returns
    -------
    PosteriorResult
        ``samples`` of the prior site ``(chains, draws, d)``;
        ``extras["sites"]`` the other latent sites, constrained, ``(chains,
        draws, ...)``; acceptance per block ``"prior"``, ``"likelihood"``,
        ``"latent"``; ``likelihood_evals`` counts log-likelihood gradient
        evaluations (MALA steps and NUTS integration steps).

    Examples
    --------
    >>> import jax, jax.numpy as jnp, numpyro, numpyro.distributions as dist
    >>> import rtk_blackjax as rb
    >>> from rtk_blackjax.posterior.prior import DiffusionPrior
    >>> prior = DiffusionPrior(rb.targets.gaussian(jnp.zeros(2), 1.0), nfe=25)
    >>> def model(y=None):
    ...     x = numpyro.sample("x", prior)
    ...     sigma = numpyro.sample("sigma", dist.HalfNormal(1.0))
    ...     numpyro.sample("y", dist.Normal(x[0], sigma), obs=y)
    >>> res = split_gibbs(jax.random.key(0), model, num_chains=4,  # doctest: +SKIP
    ...                   num_draws=3, sweeps_per_stage=1, num_segments=4,
    ...                   y=jnp.array(0.5))
    >>> res.samples.shape, bool((res.extras["sites"]["sigma"] > 0).all())  # doctest: +SKIP
    ((4, 3, 2), True)
    """
    rng_key = check_key("rng_key", rng_key)
    check_callable("model", model, what="a NumPyro model (a callable)")
    num_chains = check_int("num_chains", num_chains, minimum=1)
    num_draws = check_int("num_draws", num_draws, minimum=1)
    likelihood_steps = check_int("likelihood_steps", likelihood_steps, minimum=1)
    rho_start = check_positive("rho_start", rho_start)
    key_model, key_init, key_anneal, key_draw = jax.random.split(rng_key, 4)
    sites = inspect_model(key_model, model, model_args, model_kwargs)
    x_name, prior_dist, others = sites.prior_name, sites.prior, sites.latent
    dim = prior_dist.dim
    block = _annealed_prior_block(
        prior_dist.target,
        rho_start,
        rho_final,
        num_segments,
        horizon,
        inner,
        inner_steps,
    )
    if sweeps_per_stage is None and prior_nfe_budget is None:
        sweeps_per_stage = 5
    budget = (
        None
        if prior_nfe_budget is None
        else check_positive("prior_nfe_budget", prior_nfe_budget)
    )
    stages, sweeps_per_stage = _plan(
        block, rho_start, num_stages, num_draws, budget, sweeps_per_stage
    )
    final_k = block.num_segments - 1

    flat_model = _FlatDiffusionPrior(model)
    info = initialize_model(
        key_init, flat_model, model_args=model_args, model_kwargs=model_kwargs
    )
    potential_fn, postprocess_fn = info.potential_fn, info.postprocess_fn
    init_params = info.param_info.z
    rest0 = {name: init_params[name] for name in others}
    u0, unravel_rest = ravel_pytree(rest0)
    has_rest = u0.shape[0] > 0
    mala_kernel = blackjax.mala.build_kernel()
    nuts_kernel = blackjax.nuts.build_kernel()
    dtype = jnp.result_type(float)

    horizon_scale = jnp.exp(block.times[0])

    def sweep(key, carry, k, adapt, from_prior):
        x, z, u, log_eps_z, log_eps_u = carry
        rho2 = block.rho(k) ** 2
        key_z, key_u, key_x = jax.random.split(key, 3)
        rest = unravel_rest(u)

        def logdensity_z(zz):
            params = {x_name: zz, **rest}
            return -potential_fn(params) - 0.5 * jnp.sum((zz - x) ** 2) / rho2

        state = blackjax.mala.init(z, logdensity_z)
        eps_z = jnp.exp(log_eps_z) * rho2

        def mala_step(i, carry):
            state, acc = carry
            state, step_info = mala_kernel(
                jax.random.fold_in(key_z, i), state, logdensity_z, eps_z
            )
            return state, acc + step_info.acceptance_rate

        state, acc_z = jax.lax.fori_loop(
            0, likelihood_steps, mala_step, (state, jnp.zeros((), dtype))
        )
        z = state.position
        acc_z = acc_z / likelihood_steps
        lik_evals = 1 + likelihood_steps
        acc_u = jnp.ones((), dtype)
        if has_rest:

            def logdensity_u(uu):
                return -potential_fn({x_name: z, **unravel_rest(uu)})

            state_u = blackjax.nuts.init(u, logdensity_u)
            state_u, nuts_info = nuts_kernel(
                key_u,
                state_u,
                logdensity_u,
                step_size=jnp.exp(log_eps_u),
                inverse_mass_matrix=jnp.ones_like(u),
            )
            u, acc_u = state_u.position, nuts_info.acceptance_rate
            lik_evals = lik_evals + 1 + nuts_info.num_integration_steps
        # The very first sweep draws x from the prior: x_T = a_T z ~ N(0, I), k = 0.
        z_prior = horizon_scale * jax.random.normal(key_x, z.shape, z.dtype)
        x, nfe, acc_x, ok = block.sample(
            jax.random.fold_in(key_x, 1), jnp.where(from_prior, z_prior, z), k
        )
        z = jnp.where(from_prior, x, z)
        # Robbins-Monro on the log step sizes, during annealing only.
        log_eps_z = jnp.where(
            adapt,
            adapt_step_size(
                log_eps_z, acc_z, _MALA_TARGET, _ADAPT_RATE, log_scale=True
            ),
            log_eps_z,
        )
        log_eps_u = jnp.where(
            adapt,
            adapt_step_size(
                log_eps_u, acc_u, _NUTS_TARGET, _ADAPT_RATE, log_scale=True
            ),
            log_eps_u,
        )
        ok = ok & jnp.all(jnp.isfinite(z)) & jnp.all(jnp.isfinite(u))
        carry = (x, z, u, log_eps_z, log_eps_u)
        return carry, (nfe, lik_evals, acc_x, acc_z, acc_u, ok)

    sweep_chains = jax.vmap(sweep, in_axes=(0, 0, None, None, None))

    # One compiled program for the prior draws, every stage and the draws.
    @jax.jit
    def run(key, carry, k, num_sweeps, adapt, from_prior):
        def body(i, loop):
            carry, nfe, lik, _, finite = loop
            keys = jax.random.split(jax.random.fold_in(key, i), num_chains)
            carry, (n, ln, acc_x, acc_z, acc_u, ok) = sweep_chains(
                keys, carry, k, adapt, from_prior
            )
            return (
                carry,
                nfe + jnp.sum(n),
                lik + jnp.sum(ln),
                (acc_x, acc_z, acc_u),
                finite & jnp.all(ok),
            )

        zero = jnp.zeros((), jnp.int32)
        accs = (jnp.zeros(num_chains, dtype),) * 3
        return jax.lax.fori_loop(
            0, num_sweeps, body, (carry, zero, zero, accs, jnp.asarray(True))
        )

    x0 = jnp.zeros((num_chains, dim), dtype)
    carry = (
        x0,
        x0,
        jnp.broadcast_to(u0, (num_chains,) + u0.shape),
        jnp.full(num_chains, -np.log(dim) / 3.0, dtype),
        jnp.full(num_chains, np.log(0.1), dtype),
    )
    carry, nfe0, _, _, ok = run(
        jax.random.fold_in(key_init, 1), carry, 0, 1, False, True
    )
    _raise_if_nonfinite(ok, "the initial prior draws")
    total_nfe, total_lik = int(nfe0), 0
    for j, k in enumerate(stages):
        carry, nfe, lik, _, ok = run(
            jax.random.fold_in(key_anneal, j), carry, k, sweeps_per_stage, True, False
        )
        _raise_if_nonfinite(ok, f"annealing stage {j} (rho={float(block.rho(k)):.3g})")
        total_nfe += int(nfe)
        total_lik += int(lik)
    xs, us, acc_x, acc_z, acc_u = [], [], [], [], []
    for i in range(num_draws):
        carry, nfe, lik, accs, ok = run(
            jax.random.fold_in(key_draw, i), carry, final_k, 1, False, False
        )
        _raise_if_nonfinite(ok, f"draw {i} at rho_final={rho_final}")
        total_nfe += int(nfe)
        total_lik += int(lik)
        xs.append(carry[0])
        us.append(carry[2])
        acc_x.append(accs[0])
        acc_z.append(accs[1])
        acc_u.append(accs[2])
    xs, us = jnp.stack(xs), jnp.stack(us)
    acc_x, acc_z, acc_u = jnp.stack(acc_x), jnp.stack(acc_z), jnp.stack(acc_u)

    sites = {}
    if others:
        flat_u = us.reshape((-1,) + us.shape[2:])

        def constrain(uu):
            values = postprocess_fn({x_name: jnp.zeros(dim, dtype), **unravel_rest(uu)})
            return {name: values[name] for name in others}

        constrained = jax.jit(jax.vmap(constrain))(flat_u)
        sites = {
            name: jnp.swapaxes(v.reshape((num_draws, num_chains) + v.shape[1:]), 0, 1)
            for name, v in constrained.items()
        }
    num_samples = num_chains * num_draws
    acceptance = {
        "prior": jnp.swapaxes(acc_x, 0, 1),
        "likelihood": jnp.swapaxes(acc_z, 0, 1),
    }
    if has_rest:
        acceptance["latent"] = jnp.swapaxes(acc_u, 0, 1)
    extras = {
        "site": x_name,
        "sites": sites,
        "rho_schedule": np.asarray(block.rho(jnp.asarray(stages))),
        "rho_final": float(block.rho(final_k)),
        "sweeps_per_stage": sweeps_per_stage,
        "times": np.asarray(block.times),
        "inner_steps": inner_steps,
        "likelihood_step_size": np.asarray(jnp.exp(carry[3]) * block.rho(final_k) ** 2),
        "latent_step_size": np.asarray(jnp.exp(carry[4])),
    }
    return PosteriorResult(
        samples=jnp.swapaxes(xs, 0, 1),
        prior_nfe=total_nfe / num_samples,
        likelihood_evals=total_lik / num_samples,
        acceptance=acceptance,
        extras=extras,
    )
