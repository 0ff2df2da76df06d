"""A NumPyro model as a flat log density on unconstrained space.

Samplers in this package move flat real vectors. A NumPyro model has named sites,
some of them constrained (a positive scale, a simplex). :func:`model_density`
turns the model into what a sampler needs, with the same conventions NumPyro's
own HMC/NUTS use (``numpyro.infer.util.initialize_model``):

* the log density lives on the *unconstrained* space (every constrained site is
  pushed through its bijection to ``R^n``) and includes the log-Jacobian of that
  map, i.e. it is ``-potential_fn``;
* the site dict is flattened to one vector with ``jax.flatten_util.ravel_pytree``
  (sites in sorted-name order, each site's array raveled in C order);
* ``postprocess_fn`` maps a flat vector back to the constrained, named values,
  deterministic sites included, as ``MCMC.get_samples()`` reports them.
"""

import warnings
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
from jax.flatten_util import ravel_pytree

from rtk_blackjax._checks import check_callable, check_key
from rtk_blackjax.types import Array, PRNGKey

__all__ = ["ModelDensity", "model_density"]


class ModelDensity(NamedTuple):
    """A NumPyro model seen as a density on flat unconstrained vectors.

    logdensity_fn
        ``x (dim,) -> log p(x)``: the model's log joint at the unconstrained point
        ``x`` (observed sites conditioned on), log-Jacobian of the constraining
        transforms included; equal to ``-potential_fn``. Unnormalised.
    dim
        Number of unconstrained coordinates.
    unravel_fn
        ``x (dim,) -> {site: unconstrained value}``.
    postprocess_fn
        ``x (dim,) -> {site: constrained value}``, deterministic sites included.
        Pure JAX, so it can be ``jax.vmap``-ed over a batch of samples.
    initial_position
        A flat point from NumPyro's init strategy (``init_to_uniform`` by default):
        finite log density and gradient.
    """

    logdensity_fn: Callable[[Array], Array]
    dim: int
    unravel_fn: Callable[[Array], dict]
    postprocess_fn: Callable[[Array], dict]
    initial_position: Array


def _check_latent_sites(model: Callable, model_args: tuple, model_kwargs: dict):
    """Refuse models a continuous sampler cannot handle, naming the offending site."""
    from numpyro import handlers

    with handlers.trace() as trace, handlers.seed(rng_seed=0):
        model(*model_args, **model_kwargs)
    latent = {
        name: site
        for name, site in trace.items()
        if site["type"] == "sample" and not site["is_observed"]
    }
    for name, site in latent.items():
        fn = site["fn"]
        support = getattr(fn, "support", None)
        if support is not None and support.is_discrete:
            raise ValueError(
                f"model has a discrete latent site {name!r} "
                f"({type(fn).__name__}); RTK samples continuous latent variables "
                "only: marginalise it out (e.g. write the mixture with "
                "numpyro.distributions.MixtureSameFamily) or observe it"
            )
    if not latent:
        raise ValueError(
            "model has no latent sample sites (every numpyro.sample site is observed "
            "or the model samples nothing): there is nothing to sample"
        )


def _nonfinite_sites(model: Callable, model_args: tuple, model_kwargs: dict) -> list:
    """Names of the sample sites whose log density is NaN or infinite on one draw
    of the model (observed sites at their data): what to tell a user when NumPyro
    finds no valid initial point."""
    from numpyro import handlers

    with warnings.catch_warnings():  # out-of-support warnings: we report them
        warnings.simplefilter("ignore")
        with handlers.trace() as trace, handlers.seed(rng_seed=0):
            model(*model_args, **model_kwargs)
        log_probs = {
            name: jnp.sum(site["fn"].log_prob(site["value"]))
            for name, site in trace.items()
            if site["type"] == "sample"
        }
    bad = []
    for name, log_prob in log_probs.items():
        if not bool(jnp.isfinite(log_prob)):
            bad.append(name)
    return bad


def model_density(
    model: Callable,
    *model_args: Any,
    rng_key: PRNGKey | None = None,
    init_strategy: Callable | None = None,
    **model_kwargs: Any,
) -> ModelDensity:
    """Build the flat unconstrained log density of a NumPyro model.

    Parameters
    ----------
    model
        A NumPyro model (a Python callable with ``numpyro.sample`` sites).
    *model_args, **model_kwargs
        Passed to the model (data, covariates, ...).
    rng_key
        Key for NumPyro's init strategy (``jax.random.key(0)`` by default).
    init_strategy
        A NumPyro init strategy (``numpyro.infer.init_to_median``, ...); the
        default is NumPyro's ``init_to_uniform``.

    Returns
    -------
    ModelDensity
        ``logdensity_fn``, ``dim``, ``unravel_fn``, ``postprocess_fn`` and
        ``initial_position``.

    Raises
    ------
    TypeError
        If ``model`` is not callable.
    ValueError
        If the model has a discrete latent site or no latent site at all.

    Examples
    --------
    >>> import jax, jax.numpy as jnp
    >>> import numpyro, numpyro.distributions as dist
    >>> def model(y):
    ...     mu = numpyro.sample("mu", dist.Normal(0.0, 1.0))
    ...     sigma = numpyro.sample("sigma", dist.HalfNormal(1.0))
    ...     numpyro.sample("y", dist.Normal(mu, sigma), obs=y)
    >>> md = model_density(model, jnp.array([0.5, -0.2, 0.1]))
    >>> md.dim
    2
    >>> bool(jnp.isfinite(md.logdensity_fn(md.initial_position)))
    True
    >>> sorted(md.postprocess_fn(jnp.array([0.3, 0.0])))
    ['mu', 'sigma']
    >>> float(md.postprocess_fn(jnp.array([0.3, 0.0]))["sigma"])  # exp(0)
    1.0
    """
    from numpyro.infer.util import initialize_model

    check_callable("model", model, what="a NumPyro model (a callable)")
    rng_key = jax.random.key(0) if rng_key is None else check_key("rng_key", rng_key)
    if init_strategy is not None:
        check_callable(
            "init_strategy", init_strategy, what="a NumPyro init strategy (a callable)"
        )
    _check_latent_sites(model, model_args, model_kwargs)
    kwargs = {} if init_strategy is None else {"init_strategy": init_strategy}
    try:
        info = initialize_model(
            rng_key,
            model,
            model_args=model_args,
            model_kwargs=model_kwargs,
            dynamic_args=False,
            **kwargs,
        )
    except RuntimeError as err:  # NumPyro's "Cannot find valid initial parameters"
        bad = _nonfinite_sites(model, model_args, model_kwargs)
        if not bad:
            raise
        raise ValueError(
            "model's log density is not finite at its initial point: the log "
            f"density of site(s) {bad} is NaN or infinite (check their parameters "
            "and the observed data for NaN or out-of-support values)"
        ) from err
    initial_position, unravel_fn = ravel_pytree(info.param_info.z)
    initial_position = jnp.asarray(initial_position)
    if not jnp.issubdtype(initial_position.dtype, jnp.floating):
        raise ValueError(
            "model's latent sites must be real-valued, got unconstrained values of "
            f"dtype {initial_position.dtype}"
        )
    potential_fn = info.potential_fn
    postprocess = info.postprocess_fn

    def logdensity_fn(x: Array) -> Array:
        return -potential_fn(unravel_fn(x))

    def postprocess_fn(x: Array) -> dict:
        return postprocess(unravel_fn(x))

    return ModelDensity(
        logdensity_fn=logdensity_fn,
        dim=int(initial_position.shape[0]),
        unravel_fn=unravel_fn,
        postprocess_fn=postprocess_fn,
        initial_position=initial_position,
    )
