"""NUTS on the exact posterior density: the baseline when the prior density is analytic.

``log p(x | y) = log p_0(x) + log N(y; A x, σ² I) + const`` with ``log p_0`` the prior
target's log density at ``t = 0``. Each chain runs BlackJAX's window adaptation
(step size and diagonal mass matrix) and then NUTS. Chains start from prior draws
when the prior is an exact mixture (``prior.mixture``), otherwise from ``N(0, I)``:
NUTS does not cross between well separated modes, so its mode weights are those of
its starting points reweighted by nothing — the honest picture of a local sampler.

NFE: every leapfrog step is one gradient of ``log p_0`` (one prior evaluation) and
one likelihood gradient; the reported ``prior_nfe`` counts all of them, warm-up
included, divided by the number of returned draws.
"""

import blackjax
import jax
import jax.numpy as jnp

from rtk_blackjax._cache import ProgramCache, by_identity
from rtk_blackjax._checks import check_fraction, check_int, check_key
from rtk_blackjax.posterior.base import PosteriorResult, check_linear_gaussian
from rtk_blackjax.targets.analytic import sample_mixture
from rtk_blackjax.targets.base import Target
from rtk_blackjax.types import ArrayLike, PRNGKey

__all__ = ["nuts_linear_gaussian"]


_RUNS = ProgramCache(16)


def _get_run(prior, num_draws, num_warmup, target_acceptance_rate):
    """One compiled program per prior object and run length, reused across problems."""
    key = (by_identity(prior), num_draws, num_warmup, target_acceptance_rate)
    return _RUNS.get(
        key, lambda: _build_run(prior, num_draws, num_warmup, target_acceptance_rate)
    )


def _build_run(prior, num_draws, num_warmup, target_acceptance_rate):
    def one_chain(key, x0, A, y, sigma2):
        def logdensity(x):
            r = y - A @ x
            return prior.logdensity(x, 0.0) - 0.5 * jnp.dot(r, r) / sigma2

        k_warm, k_draw = jax.random.split(key)
        warmup = blackjax.window_adaptation(
            blackjax.nuts, logdensity, target_acceptance_rate=target_acceptance_rate
        )
        (state, params), adapt = warmup.run(k_warm, x0, num_steps=num_warmup)
        kernel = blackjax.nuts(logdensity, **params)

        def body(st, k):
            st, info = kernel.step(k, st)
            return st, (st.position, info.acceptance_rate, info.num_integration_steps)

        _, (xs, acc, steps) = jax.lax.scan(
            body, state, jax.random.split(k_draw, num_draws)
        )
        warm_steps = jnp.sum(adapt.info.num_integration_steps)
        # + 1: window adaptation evaluates the log density and its gradient at
        # the chain's initial position before the first integration step.
        return xs, acc, jnp.sum(steps) + warm_steps + 1, params["step_size"]

    return jax.jit(jax.vmap(one_chain, in_axes=(0, 0, None, None, None)))


def nuts_linear_gaussian(
    rng_key: PRNGKey,
    prior: Target,
    A: ArrayLike,
    y: ArrayLike,
    sigma: float,
    *,
    num_chains: int,
    num_draws: int,
    num_warmup: int = 200,
    target_acceptance_rate: float = 0.8,
) -> PosteriorResult:
    """NUTS with window adaptation on ``p_0(x) N(y; A x, σ² I)``, chains vmapped.

    Examples
    --------
    >>> import jax, jax.numpy as jnp
    >>> import rtk_blackjax as rb
    >>> prior = rb.targets.gaussian(jnp.zeros(2), 1.0)
    >>> res = nuts_linear_gaussian(
    ...     jax.random.key(0), prior, jnp.array([[1.0, 0.0]]), jnp.array([1.0]), 0.5,
    ...     num_chains=2, num_draws=20, num_warmup=20,
    ... )
    >>> res.samples.shape, res.acceptance["nuts"].shape
    ((2, 20, 2), (2, 20))
    """
    A, y, sigma2 = check_linear_gaussian(prior, A, y, sigma)
    if prior.logdensity is None:
        raise ValueError("NUTS needs the prior's log density (prior.logdensity)")
    rng_key = check_key("rng_key", rng_key)
    num_chains = check_int("num_chains", num_chains, minimum=1)
    num_draws = check_int("num_draws", num_draws, minimum=1)
    num_warmup = check_int("num_warmup", num_warmup, minimum=1)
    check_fraction("target_acceptance_rate", target_acceptance_rate, allow_zero=False)
    dim = A.shape[1]
    run = _get_run(prior, num_draws, num_warmup, float(target_acceptance_rate))
    k_init, k_run = jax.random.split(rng_key)
    if prior.mixture is not None:
        x0 = sample_mixture(k_init, prior.mixture, num_chains)
    else:
        x0 = jax.random.normal(k_init, (num_chains, dim), A.dtype)
    xs, acc, total_steps, step_sizes = run(
        jax.random.split(k_run, num_chains), x0, A, y, sigma2
    )
    if not bool(jnp.all(jnp.isfinite(xs))):
        raise FloatingPointError("NUTS produced non-finite draws")
    # each gradient evaluation costs one prior evaluation and one likelihood one
    nfe = float(jnp.sum(total_steps)) / (num_chains * num_draws)
    return PosteriorResult(
        samples=xs,
        prior_nfe=nfe,
        likelihood_evals=nfe,
        acceptance={"nuts": acc},
        extras={"step_size": step_sizes, "num_warmup": num_warmup},
    )
