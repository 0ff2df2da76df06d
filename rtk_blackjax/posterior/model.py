"""A NumPyro model with one :class:`DiffusionPrior` site, read as a posterior problem.

:func:`inspect_model` finds the diffusion-prior site, the other latent sites and the
observed sites; :func:`model_likelihood` turns the model into a
:class:`~rtk_blackjax.posterior.twisted.Likelihood` with NumPyro's handlers:

* the **observed** sites given ``x`` and the other latents: a ``Normal`` observation
  (possibly wrapped in ``Independent`` / ``expand``, with any ``loc`` and ``scale``
  computed from ``x`` and ``θ``) becomes a Gaussian term ``y ~ N(f(x, θ), σ²(x, θ))``
  whose forward map ``f`` the twist linearises; every other observed site
  (Poisson, Student-t, ``numpyro.factor``...) is an opaque log-likelihood term;
* the **other latent sites** ``θ`` (noise scales, operator parameters): flattened on
  their unconstrained space (``biject_to(support)``), with their log prior plus the
  transform's log-Jacobian, draws from that prior, and the map back to constrained
  values.

Assumption, checked: the priors of ``θ`` do not depend on ``x`` (the latent sites'
log prior is evaluated with two different ``x`` and must agree).
"""

from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist
from jax.flatten_util import ravel_pytree
from numpyro.distributions.transforms import biject_to

from rtk_blackjax._cache import ProgramCache, by_identity
from rtk_blackjax._checks import check_callable, check_key
from rtk_blackjax.posterior.prior import DiffusionPrior
from rtk_blackjax.posterior.twisted import GaussianObservation, Likelihood
from rtk_blackjax.types import PRNGKey

__all__ = ["ModelSites", "inspect_model", "model_likelihood"]


class ModelSites(NamedTuple):
    """What :func:`inspect_model` found.

    prior_name, prior
        The one latent :class:`DiffusionPrior` site and its distribution.
    latent
        Names of the other latent sites (continuous).
    observed
        Names of the observed sites.
    trace
        The inspection trace (the prior site set to zeros, the others drawn).
    """

    prior_name: str
    prior: DiffusionPrior
    latent: list
    observed: list
    trace: dict


def inspect_model(
    rng_key: PRNGKey, model: Callable, model_args: tuple, model_kwargs: dict
) -> ModelSites:
    """Find the one latent ``DiffusionPrior`` site, the other latents, the data.

    Raises a ``ValueError`` naming the sites when the model has no or several
    diffusion-prior sites, a discrete latent site, or no observed site (then the
    observations were almost surely not passed).
    """
    rng_key = check_key("rng_key", rng_key)
    check_callable("model", model, what="a NumPyro model (a callable)")

    def zeros_for_prior(site):
        if isinstance(site["fn"], DiffusionPrior):
            return jnp.zeros(site["fn"].event_shape)
        return None

    traced = numpyro.handlers.trace(
        numpyro.handlers.substitute(
            numpyro.handlers.seed(model, rng_key), substitute_fn=zeros_for_prior
        )
    ).get_trace(*model_args, **model_kwargs)
    prior_sites, others, observed = [], [], []
    for name, site in traced.items():
        if site["type"] == "sample" and site["is_observed"]:
            observed.append(name)
        if site["type"] != "sample" or site["is_observed"]:
            continue
        if isinstance(site["fn"], DiffusionPrior):
            prior_sites.append(name)
        else:
            if getattr(site["fn"], "has_enumerate_support", False) or not (
                jnp.issubdtype(jnp.asarray(site["value"]).dtype, jnp.floating)
            ):
                raise ValueError(
                    f"model site {name!r} is discrete; the diffusion-prior samplers "
                    "need every other latent site continuous"
                )
            others.append(name)
    if len(prior_sites) != 1:
        raise ValueError(
            "model must contain exactly one latent DiffusionPrior sample site, found "
            f"{len(prior_sites)} ({prior_sites})"
        )
    if not observed:
        raise ValueError(
            "model has no observed sample site: pass the observations as model "
            "arguments, e.g. sample(key, model, ..., y=y); got model_args="
            f"{len(model_args)} values, model_kwargs={sorted(model_kwargs)}, "
            f"latent sites {prior_sites + others}"
        )
    name = prior_sites[0]
    return ModelSites(name, traced[name]["fn"], others, observed, traced)


def _gaussian_base(fn):
    """The ``Normal`` inside ``Independent`` / ``expand`` wrappers, else ``None``."""
    while isinstance(fn, (dist.Independent, dist.ExpandedDistribution)):
        fn = fn.base_dist
    return fn if type(fn) is dist.Normal else None


def model_likelihood(
    rng_key: PRNGKey, model: Callable, model_args: tuple, model_kwargs: dict
) -> tuple[ModelSites, Likelihood]:
    """The model's sites and its :class:`Likelihood` (observations and ``θ``).

    The model's array arguments (NumPy or JAX arrays: the observations, a design
    matrix...) are the likelihood's :attr:`~Likelihood.data`; everything else
    (Python scalars, strings, ``None``) is part of its structure. Two calls with the
    same model and structure, and data of the same shapes, return likelihoods with
    the same :attr:`~Likelihood.bind`, so a sampler compiles one program for all of
    them. Arrays the model *closes over* are compiled in: pass what changes between
    calls as an argument. A model that needs its array arguments' values while it
    is traced (``np.asarray(y)``, ``if y.sum() > 0``) still works: its likelihood
    has no ``bind`` and each call compiles its own program.

    Examples
    --------
    >>> import jax, jax.numpy as jnp, numpyro, numpyro.distributions as dist
    >>> import rtk_blackjax as rb
    >>> prior = DiffusionPrior(rb.targets.gaussian(jnp.zeros(2), 1.0), dim=2)
    >>> def model(y=None):
    ...     x = numpyro.sample("x", prior)
    ...     sigma = numpyro.sample("sigma", dist.HalfNormal(1.0))
    ...     numpyro.sample("y", dist.Normal(x[0] * x[1], sigma), obs=y)
    >>> sites, lik = model_likelihood(jax.random.key(0), model, (), {"y": 0.5})
    >>> sites.prior_name, sites.latent, lik.num_params, lik.obs_dim
    ('x', ['sigma'], 1, 1)

    A new observation of the same shape binds to the same structure:

    >>> _, a = model_likelihood(jax.random.key(0), model, (), {"y": jnp.array(0.5)})
    >>> _, b = model_likelihood(jax.random.key(0), model, (), {"y": jnp.array(2.0)})
    >>> a.bind is b.bind, float(b.gaussian.y[0])
    (True, 2.0)
    """
    sites = inspect_model(rng_key, model, model_args, model_kwargs)
    data, rebuild, structure = _split_arguments(model_args, model_kwargs)
    try:
        key = (by_identity(model), structure, sites.prior_name, tuple(sites.latent))
        hash(key)
    except TypeError:  # an unhashable static argument: no shared structure
        key = None
    if key is None:
        binder = _binder(model, sites, rebuild)
    else:
        binder = _BINDERS.get(key, lambda: _binder(model, sites, rebuild))
    likelihood = binder.bind(data)
    if sites.latent:
        _check_latent_prior_free_of_x(sites, lambda x: binder.latent_logp(data, x))
    if key is None or not binder.traceable(data):
        likelihood = likelihood._replace(bind=None, data=None)
    return sites, likelihood


# One binder per model structure (model, static arguments, data shapes): what lets
# the samplers' program caches recognise a new observation of the same model.
_BINDERS = ProgramCache(32)

_ARRAY_TYPES = (np.ndarray, np.generic, jax.Array)


def _split_arguments(model_args: tuple, model_kwargs: dict):
    """``(data, rebuild, structure)``: the array leaves of the model's arguments,
    ``rebuild(data) -> (model_args, model_kwargs)``, and a hashable description of
    everything else (tree structure, static leaves, the arrays' shapes and dtypes).
    """
    leaves, treedef = jax.tree.flatten((tuple(model_args), dict(model_kwargs)))
    is_data = tuple(isinstance(leaf, _ARRAY_TYPES) for leaf in leaves)
    data = tuple(leaf for leaf, d in zip(leaves, is_data) if d)
    static = tuple(None if d else leaf for leaf, d in zip(leaves, is_data))
    shapes = tuple((np.shape(a), str(a.dtype)) for a in data)

    def rebuild(values):
        values = iter(values)
        filled = [next(values) if d else leaf for leaf, d in zip(static, is_data)]
        args, kwargs = jax.tree.unflatten(treedef, filled)
        return args, kwargs

    return data, rebuild, (treedef, is_data, static, shapes)


class _Binder(NamedTuple):
    """What one model structure gives: see :func:`_binder`."""

    bind: Callable
    traceable: Callable
    latent_logp: Callable


def _binder(model: Callable, sites: ModelSites, rebuild: Callable) -> _Binder:
    """The likelihood of one model structure as a function of the model's data.

    ``bind(data)`` builds the :class:`Likelihood` of the model called with
    ``rebuild(data)``; it only reads ``data`` through JAX operations, so it can run
    inside a compiled program with ``data`` as an argument. ``traceable(data)``
    says whether it can (checked once per structure, abstractly).
    ``latent_logp(data, x)``: the other latent sites' log prior at the inspection's
    draws, with the prior site at ``x``.
    """
    trace = sites.trace
    transforms = {n: biject_to(trace[n]["fn"].support) for n in sites.latent}
    dtype = jnp.result_type(float)
    # the inspection trace's latent draws, flat and unconstrained: a point at which
    # to probe and trace the likelihood, and the layout of ``u``
    u0, unravel = ravel_pytree(
        {n: transforms[n].inv(trace[n]["value"]) for n in sites.latent}
    )
    u0 = u0.astype(dtype)
    gaussian_sites = [n for n in sites.observed if _gaussian_base(trace[n]["fn"])]
    other_sites = [n for n in sites.observed if n not in gaussian_sites]
    if any(trace[n].get("scale") is not None for n in gaussian_sites):
        # a scaled (e.g. subsampled) Gaussian site is a likelihood term like any other
        scaled = [n for n in gaussian_sites if trace[n].get("scale") is not None]
        gaussian_sites = [n for n in gaussian_sites if n not in scaled]
        other_sites = other_sites + scaled
    zeros_x = jnp.zeros(sites.prior.dim, dtype)

    def constrain(u):
        tree = unravel(u)
        return {n: transforms[n](tree[n]) for n in sites.latent}

    def tracer(data):
        """``traced(x, u)``: the model's trace with the sites set, called on data."""
        model_args, model_kwargs = rebuild(data)

        def traced(x, u):
            values = {sites.prior_name: x, **constrain(u)}
            return numpyro.handlers.trace(
                numpyro.handlers.substitute(
                    numpyro.handlers.seed(model, jax.random.key(0)), data=values
                )
            ).get_trace(*model_args, **model_kwargs)

        return traced

    def latent_logp(data, x):
        tr = tracer(data)(x, u0)
        return sum(jnp.sum(tr[n]["fn"].log_prob(tr[n]["value"])) for n in sites.latent)

    def bind(data) -> Likelihood:
        model_args, model_kwargs = rebuild(data)
        traced = tracer(data)

        def observe(x, u):
            """(loc, variance) of the Gaussian sites and the other sites' log-likelihood."""
            tr = traced(x, u)
            locs, variances = [], []
            for n in gaussian_sites:
                base = _gaussian_base(tr[n]["fn"])
                shape = jnp.shape(tr[n]["value"])
                locs.append(jnp.ravel(jnp.broadcast_to(base.loc, shape)))
                variances.append(jnp.ravel(jnp.broadcast_to(base.scale, shape)) ** 2)
            rest = jnp.zeros((), dtype)
            for n in other_sites:
                site = tr[n]
                term = jnp.sum(site["fn"].log_prob(site["value"]))
                rest = rest + (
                    term if site.get("scale") is None else site["scale"] * term
                )
            if not gaussian_sites:
                return None, None, rest
            return jnp.concatenate(locs), jnp.concatenate(variances), rest

        def log_prior(u):
            tree = unravel(u)
            tr = traced(zeros_x, u)
            total = jnp.zeros((), dtype)
            for n in sites.latent:
                value = tr[n]["value"]
                total = total + jnp.sum(tr[n]["fn"].log_prob(value))
                total = total + jnp.sum(
                    transforms[n].log_abs_det_jacobian(tree[n], value)
                )
            return total

        def init_params(key):
            tr = numpyro.handlers.trace(
                numpyro.handlers.substitute(
                    numpyro.handlers.seed(model, key),
                    data={sites.prior_name: zeros_x},
                )
            ).get_trace(*model_args, **model_kwargs)
            tree = {n: transforms[n].inv(tr[n]["value"]) for n in sites.latent}
            return ravel_pytree(tree)[0].astype(dtype)

        gaussian = None
        if gaussian_sites:
            observed = traced(zeros_x, u0)
            gaussian = GaussianObservation(
                forward=lambda x, u: observe(x, u)[0],
                y=jnp.concatenate(
                    [
                        jnp.ravel(jnp.asarray(observed[n]["value"], dtype))
                        for n in gaussian_sites
                    ]
                ),
                variance=lambda x, u: observe(x, u)[1],
            )
        return Likelihood(
            gaussian=gaussian,
            other=(lambda x, u: observe(x, u)[2]) if other_sites else None,
            num_params=int(u0.shape[0]),
            log_prior=log_prior if sites.latent else None,
            init_params=init_params if sites.latent else None,
            constrain=constrain,
            data=data,
            bind=bind,
        )

    verdicts: dict = {}

    def traceable(data) -> bool:
        """Whether ``bind`` runs with ``data`` abstract (the model does not need its
        arrays' values), for this structure; checked once."""
        if "ok" not in verdicts:

            def probe(values):
                lik = bind(values)
                out = [lik.log_likelihood(zeros_x, u0)]
                if sites.latent:
                    out += [lik.log_prior(u0), lik.init_params(jax.random.key(0))]
                return out

            try:
                jax.eval_shape(probe, data)
                verdicts["ok"] = True
            except Exception:  # noqa: BLE001  (any failure: fall back to constants)
                verdicts["ok"] = False
        return verdicts["ok"]

    return _Binder(bind, traceable, latent_logp)


def _check_latent_prior_free_of_x(sites: ModelSites, latent_logp: Callable):
    """Refuse a model whose other latent sites' priors depend on ``x``
    (``latent_logp(x)``: their log prior with the prior site at ``x``)."""
    dtype = jnp.result_type(float)
    zero = jnp.zeros(sites.prior.dim, dtype)
    one = jnp.linspace(-1.0, 1.0, sites.prior.dim, dtype=dtype)
    if not bool(jnp.allclose(latent_logp(zero), latent_logp(one))):
        raise ValueError(
            f"the prior of the latent sites {sites.latent} depends on the diffusion-"
            f"prior site {sites.prior_name!r}: not supported (the samplers factor the "
            "model as p(x) p(θ) L(y | x, θ))"
        )
