"""One entry point for posteriors with a diffusion prior: :func:`sample`.

A NumPyro model with one :class:`~rtk_blackjax.posterior.DiffusionPrior` site and
any observed sites is sampled by the method the user names; every method declares
the prior access it needs (:data:`METHODS`) and a method that cannot serve the
model says which can. The result (:class:`PosteriorSamples`) holds the constrained
sites, the evaluation counts, the sampler's diagnostics and the warnings it raised.
"""

import math
import warnings
from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from rtk_blackjax._checks import check_choice, check_fraction, check_int, check_key
from rtk_blackjax.posterior.base import PosteriorResult
from rtk_blackjax.posterior.daps import daps
from rtk_blackjax.posterior.dps import dps
from rtk_blackjax.posterior.mcgdiff import linear_gaussian_form, mcgdiff
from rtk_blackjax.posterior.model import inspect_model, model_likelihood
from rtk_blackjax.posterior.twisted import (
    collapse_warning,
    lineage_warning,
    tds,
    twisted_smc,
)
from rtk_blackjax.targets.base import ACCESS_LEVELS
from rtk_blackjax.types import PRNGKey

__all__ = [
    "METHODS",
    "PosteriorSamples",
    "PosteriorWarning",
    "sample",
    "mode_disagreement",
]


class MethodSpec(NamedTuple):
    """What a method needs: the least prior access, and whether it is exact."""

    access: str
    exact: str
    summary: str


#: Every method of :func:`sample`: the prior access it needs and what it is
#: consistent for.
METHODS = {
    "smc": MethodSpec(
        "score",
        "the posterior (log-density or energy access); with score access the "
        "posterior of the predictor chain's prior",
        "RTK-based twisted SMC (ours)",
    ),
    "tds": MethodSpec(
        "score",
        "the posterior of the DDPM chain's prior",
        "twisted diffusion sampler (Wu et al. 2023)",
    ),
    "mcgdiff": MethodSpec(
        "score",
        "the posterior of the DDPM chain's prior; linear-Gaussian likelihoods only",
        "Monte Carlo guided diffusion (Cardoso et al. 2024)",
    ),
    "dps": MethodSpec(
        "score",
        "nothing exactly: a guided reverse diffusion (the likelihood at Tweedie's "
        "estimate); a baseline",
        "diffusion posterior sampling (Chung et al. 2023)",
    ),
    "daps": MethodSpec(
        "score",
        "nothing exactly: decoupled noise annealing with Langevin on x0; a baseline",
        "decoupled annealing posterior sampling (Zhang et al. 2024)",
    ),
    "split-gibbs": MethodSpec(
        "score",
        "the relaxed posterior at rho_final (mode weights only as good as mixing)",
        "split Gibbs with RTK prior blocks",
    ),
    "nuts": MethodSpec(
        "energy",
        "the posterior (MCMC; no guarantee across separated modes)",
        "NUTS on the model's joint log density",
    ),
}


# The SMC methods: independent particle systems, run as replicas.
_PARTICLE_METHODS = ("smc", "tds", "mcgdiff")
_LINEAR_ONLY = ("mcgdiff",)


class PosteriorWarning(UserWarning):
    """A posterior sampler's result may be wrong (collapse, chains disagreeing)."""


class PosteriorSamples(NamedTuple):
    """What :func:`sample` returns.

    samples
        Constrained sites: ``{name: (num_samples, ...)}`` (chains flattened).
    method, access
        The method used and the prior access it used.
    num_chains
        Chains (MCMC methods) or replicas (SMC methods: each replica's particles
        after its final resampling form one "chain" of ``to_arviz``).
    prior_nfe, likelihood_evals
        Prior and likelihood evaluations per returned sample.
    diagnostics
        Method-specific statistics: for the SMC methods ``ess`` (relative ESS per
        segment), ``log_evidence``, ``resampled``, acceptance rates, ``times``,
        ``consistent_for``; for MCMC methods acceptance rates.
    warnings
        The messages of every :class:`PosteriorWarning` raised.
    raw
        The underlying :class:`~rtk_blackjax.posterior.PosteriorResult` (SMC
        methods: the first replica's).
    """

    samples: dict
    method: str
    access: str
    num_chains: int
    prior_nfe: float
    likelihood_evals: float
    diagnostics: dict
    warnings: list
    raw: PosteriorResult

    def to_arviz(self):
        """``arviz.InferenceData`` of the samples (``num_chains`` chains)."""
        import arviz as az

        def shaped(value):
            value = np.asarray(value)
            return value.reshape((self.num_chains, -1) + value.shape[1:])

        return az.from_dict(posterior={k: shaped(v) for k, v in self.samples.items()})


def _refuse(method: str, access: str, why: str, exclude: tuple = ()):
    can = [
        m
        for m, spec in METHODS.items()
        if ACCESS_LEVELS.index(access) >= ACCESS_LEVELS.index(spec.access)
        and m not in exclude
    ]
    raise ValueError(
        f"method={method!r} cannot serve this model: {why}; use one of {can}"
    )


def sample(
    rng_key: PRNGKey,
    model: Callable,
    *model_args,
    num_samples: int,
    prior_nfe: int = 100,
    method: str = "smc",
    num_chains: int = 4,
    num_replicas: int = 2,
    check_modes: bool = True,
    method_options: dict | None = None,
    **model_kwargs,
) -> PosteriorSamples:
    """Posterior draws for a NumPyro model with one ``DiffusionPrior`` site.

    Parameters
    ----------
    rng_key
        JAX PRNG key.
    model, *model_args, **model_kwargs
        The NumPyro model and its arguments (observations included).
    num_samples
        Draws returned (SMC: ``num_replicas`` systems of
        ``ceil(num_samples / num_replicas)`` particles; MCMC: ``num_chains`` chains
        of ``ceil(num_samples / num_chains)`` draws).
    prior_nfe
        Prior evaluations per returned sample (the SMC methods' budget per
        particle; split Gibbs' budget; NUTS reports what it spent).
    method
        One of :data:`METHODS`.
    num_chains
        Chains of the MCMC methods (``"split-gibbs"``, ``"nuts"``).
    num_replicas
        Independent particle systems of the SMC methods (``"smc"``, ``"tds"``,
        ``"mcgdiff"``), ``ceil(num_samples / num_replicas)`` particles each, pooled
        with equal weights (each is consistent, so the pool is).
        Same cost as one system of ``num_samples`` particles; what it buys is a
        check a single system cannot make on itself: replicas that settle on
        different mode weights are reported like disagreeing chains. 1: one
        system, no check.
    check_modes
        Warn when chains or replicas occupy different modes
        (:func:`mode_disagreement`).
    method_options
        Keyword arguments for the method's sampler (e.g. ``{"zeta": 0.3}`` for
        ``"dps"``, ``{"num_inner_steps": 2}`` for ``"smc"``; see
        :func:`~rtk_blackjax.posterior.twisted_smc`, :func:`~.tds`,
        :func:`~.mcgdiff`, :func:`~.dps`, :func:`~.daps`,
        :func:`~.split_gibbs`).

    Returns
    -------
    PosteriorSamples

    Examples
    --------
    >>> import jax, jax.numpy as jnp, numpyro, numpyro.distributions as dist
    >>> import rtk_blackjax as rb
    >>> prior = rb.posterior.DiffusionPrior(
    ...     rb.targets.score_only(rb.targets.gaussian(jnp.zeros(2), 1.0)), dim=2)
    >>> def model(y=None):
    ...     x = numpyro.sample("x", prior)
    ...     numpyro.sample("y", dist.Normal(x[0] + x[1], 0.5), obs=y)
    >>> res = rb.posterior.sample(jax.random.key(0), model, num_samples=256,
    ...                           prior_nfe=31, y=1.0)
    >>> res.samples["x"].shape, res.access, res.prior_nfe
    ((256, 2), 'score', 31.0)
    """
    rng_key = check_key("rng_key", rng_key)
    method = check_choice("method", method, tuple(METHODS))
    num_samples = check_int("num_samples", num_samples, minimum=2)
    prior_nfe = check_int("prior_nfe", prior_nfe, minimum=1)
    num_chains = check_int("num_chains", num_chains, minimum=1)
    num_replicas = check_int("num_replicas", num_replicas, minimum=1)
    if method_options is None:
        method_options = {}
    if not isinstance(method_options, dict):
        raise TypeError(
            f"method_options must be a dict of keyword arguments, got {method_options!r}"
        )
    k_model, k_run = jax.random.split(rng_key)
    sites = inspect_model(k_model, model, model_args, model_kwargs)
    target, dim = sites.prior.target, sites.prior.dim
    access = target.access
    spec = METHODS[method]
    if ACCESS_LEVELS.index(access) < ACCESS_LEVELS.index(spec.access):
        _refuse(
            method,
            access,
            f"it needs the prior's {spec.access} access and the prior has {access} "
            "access only",
        )
    if method in _PARTICLE_METHODS:
        _, likelihood = model_likelihood(k_model, model, model_args, model_kwargs)
        if method == "mcgdiff":
            try:
                linear_gaussian_form(likelihood, dim)
            except ValueError as err:
                _refuse(method, access, str(err), exclude=_LINEAR_ONLY)
        runner = {"smc": twisted_smc, "tds": tds, "mcgdiff": mcgdiff}[method]
        per_replica = max(2, math.ceil(num_samples / num_replicas))
        replicas = [
            runner(
                key,
                target,
                dim,
                likelihood,
                num_particles=per_replica,
                prior_nfe_budget=prior_nfe,
                **method_options,
            )
            for key in jax.random.split(k_run, num_replicas)
        ]
        raw = replicas[0]
        by_replica = {sites.prior_name: [r.samples[:, 0] for r in replicas]}
        for name in raw.extras.get("sites", {}):
            by_replica[name] = [r.extras["sites"][name] for r in replicas]
        samples = {
            name: jnp.concatenate(parts)[: num_replicas * per_replica]
            for name, parts in by_replica.items()
        }
        chains = num_replicas
        diagnostics = _pooled_diagnostics(replicas)
        messages = [
            collapse_warning(np.min(diagnostics["ess"], 0), per_replica),
        ]
        if "lineages" in diagnostics:
            messages.append(
                lineage_warning(diagnostics["lineages"], diagnostics["times"])
            )
        if check_modes and num_replicas > 1:
            messages.append(
                mode_disagreement(
                    np.stack(by_replica[sites.prior_name]), unit="replica"
                )
            )
    elif method in ("dps", "daps"):
        _, likelihood = model_likelihood(k_model, model, model_args, model_kwargs)
        runner = dps if method == "dps" else daps
        raw = runner(
            k_run,
            target,
            dim,
            likelihood,
            num_samples=num_samples,
            prior_nfe_budget=prior_nfe,
            **method_options,
        )
        samples = {sites.prior_name: raw.samples[:, 0]}
        samples.update(raw.extras.get("sites", {}))
        chains = 1
        diagnostics = {k: v for k, v in raw.extras.items() if k != "sites"}
        messages = []
    else:
        draws = math.ceil(num_samples / num_chains)
        if method == "split-gibbs":
            from rtk_blackjax.posterior.split_gibbs import split_gibbs

            raw = split_gibbs(
                k_run,
                model,
                *model_args,
                num_chains=num_chains,
                num_draws=draws,
                prior_nfe_budget=prior_nfe,
                **method_options,
                **model_kwargs,
            )
        else:
            if method_options:
                raise ValueError(
                    f"method_options: method='nuts' takes none, got {method_options}"
                )
            raw = _nuts(
                k_run, model, model_args, model_kwargs, sites, num_chains, draws
            )
        by_chain = {sites.prior_name: raw.samples}
        by_chain.update(raw.extras.get("sites", {}))
        samples = {
            k: jnp.reshape(v, (-1,) + v.shape[2:])[: num_chains * draws]
            for k, v in by_chain.items()
        }
        chains = num_chains
        diagnostics = {"acceptance": raw.acceptance}
        messages = []
        if check_modes and num_chains > 1:
            messages.append(mode_disagreement(np.asarray(raw.samples)))
    messages = [m for m in messages if m]
    for message in messages:
        warnings.warn(
            f"posterior.sample(method={method!r}): {message}",
            PosteriorWarning,
            stacklevel=2,
        )
    for name, value in samples.items():
        if not bool(jnp.all(jnp.isfinite(value))):
            raise FloatingPointError(f"method={method!r} returned non-finite {name!r}")
    return PosteriorSamples(
        samples=samples,
        method=method,
        access=access,
        num_chains=chains,
        prior_nfe=float(raw.prior_nfe),
        likelihood_evals=float(raw.likelihood_evals),
        diagnostics=diagnostics,
        warnings=messages,
        raw=raw,
    )


def _pooled_diagnostics(replicas: list) -> dict:
    """Diagnostics of independent SMC replicas: per-replica arrays stacked on a
    leading axis, and the pooled log evidence (the log of the replicas' mean
    evidence estimate, itself unbiased for the evidence)."""
    first = replicas[0].extras
    out = {}
    for key, value in first.items():
        if key in ("sites", "params"):
            continue
        if key in ("times", "consistent_for"):
            out[key] = value
            continue
        try:
            out[key] = np.stack([np.asarray(r.extras[key]) for r in replicas])
        except (TypeError, ValueError):
            out[key] = value
    if "log_evidence" in out:
        per = np.asarray(out["log_evidence"], np.float64)
        out["log_evidence_per_replica"] = per
        top = per.max()
        out["log_evidence"] = float(top + np.log(np.mean(np.exp(per - top))))
    return out


def _nuts(rng_key, model, model_args, model_kwargs, sites, num_chains, draws):
    """NumPyro NUTS on the whole model (the prior's ``log_prob`` at ``t = 0``)."""
    from numpyro.infer import MCMC, NUTS

    num_warmup = max(200, draws)
    mcmc = MCMC(
        NUTS(model),
        num_warmup=num_warmup,
        num_samples=draws,
        num_chains=num_chains,
        chain_method="vectorized",
        progress_bar=False,
    )
    k_warm, k_run = jax.random.split(rng_key)
    mcmc.warmup(
        k_warm,
        *model_args,
        extra_fields=("num_steps",),
        collect_warmup=True,
        **model_kwargs,
    )
    warm_steps = float(np.sum(mcmc.get_extra_fields()["num_steps"]))
    mcmc.run(
        k_run, *model_args, extra_fields=("num_steps", "accept_prob"), **model_kwargs
    )
    fields = mcmc.get_extra_fields(group_by_chain=True)
    # + one evaluation per chain at its start (NumPyro's initial potential and
    # gradient), which no step counts
    steps = float(np.sum(fields["num_steps"])) + warm_steps + num_chains
    draws_by_chain = mcmc.get_samples(group_by_chain=True)
    x = draws_by_chain.pop(sites.prior_name)
    others = {k: v for k, v in draws_by_chain.items() if k in sites.latent}
    # every integration step evaluates the prior's score (and log density) once
    nfe = steps / (num_chains * draws)
    return PosteriorResult(
        samples=x,
        prior_nfe=nfe,
        likelihood_evals=nfe,
        acceptance={"nuts": fields["accept_prob"]},
        extras={"sites": others, "num_warmup": num_warmup},
    )


def mode_disagreement(
    chains: np.ndarray,
    *,
    max_clusters: int = 8,
    seed: int = 0,
    min_tv: float = 0.25,
    unit: str = "chain",
) -> str | None:
    """A message when chains occupy different posterior modes, else ``None``.

    R-hat compares means and variances and can pass when every chain is stuck in
    its own mode with similar moments. Here the pooled draws are clustered (k-means
    in the standardised space, ``k`` up to ``max_clusters`` chosen by the largest
    drop of the within-cluster sum of squares), each chain's occupancy of the
    clusters is tabulated, and the chains disagree when the occupancy of some
    chain differs from the pooled one by a total variation above ``min_tv`` and
    beyond what sampling explains (a chi-square test of homogeneity at level
    1e-3, with the chains' autocorrelation ignored: conservative only in the
    direction of warning).

    Parameters
    ----------
    chains
        ``(num_chains, num_draws, dim)`` draws.
    unit
        What a row of ``chains`` is, for the message (``"chain"`` or ``"replica"``:
        an independent SMC run's particles).

    Examples
    --------
    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> stuck = np.stack([rng.normal(m, 0.1, (200, 1)) for m in (-3, 3, 3, -3)])
    >>> mode_disagreement(stuck) is not None
    True
    >>> mixed = rng.choice([-3.0, 3.0], (4, 200, 1)) + rng.normal(0, 0.1, (4, 200, 1))
    >>> mode_disagreement(mixed) is None
    True
    """
    from scipy.stats import chi2

    max_clusters = check_int("max_clusters", max_clusters, minimum=1)
    min_tv = check_fraction("min_tv", min_tv)
    unit = check_choice("unit", unit, ("chain", "replica"))
    chains = np.asarray(chains, np.float64)
    if chains.ndim != 3:
        raise ValueError(
            f"chains must be (num_chains, num_draws, dim), got {chains.shape}"
        )
    num_chains, num_draws, dim = chains.shape
    if num_chains < 2:
        return None
    flat = chains.reshape(-1, dim)
    flat = (flat - flat.mean(0)) / np.maximum(flat.std(0), 1e-12)
    labels = _cluster(flat, max_clusters, np.random.default_rng(seed))
    k = int(labels.max()) + 1
    if k < 2:
        return None
    counts = np.zeros((num_chains, k))
    np.add.at(counts, (np.repeat(np.arange(num_chains), num_draws), labels), 1.0)
    pooled = counts.sum(0) / counts.sum()
    per_chain = counts / counts.sum(1, keepdims=True)
    tv = 0.5 * np.abs(per_chain - pooled).sum(1)
    expected = np.outer(counts.sum(1), pooled)
    stat = float(np.sum((counts - expected) ** 2 / np.maximum(expected, 1e-12)))
    p_value = float(chi2.sf(stat, (num_chains - 1) * (k - 1)))
    worst = int(np.argmax(tv))
    if tv[worst] < min_tv or p_value > 1e-3:
        return None
    occupancy = ", ".join(
        f"{unit} {c}: " + "/".join(f"{w:.2f}" for w in per_chain[c])
        for c in range(min(num_chains, 8))
    )
    advice = (
        "raise num_samples or prior_nfe"
        if unit == "replica"
        else "use method='smc' or more chains"
    )
    return (
        f"{unit}s occupy different posterior modes ({unit} {worst} differs from the "
        f"pooled mode weights by TV {tv[worst]:.2f}; chi-square p = {p_value:.1e}; "
        f"occupancy of {k} clusters: {occupancy}): the mode weights are not "
        f"converged even if R-hat passes; {advice}"
    )


def _cluster(x: np.ndarray, max_clusters: int, rng) -> np.ndarray:
    """k-means labels, ``k`` by the largest relative drop of the inertia."""
    n = x.shape[0]
    take = x if n <= 4000 else x[rng.choice(n, 4000, replace=False)]
    best, inertias = {}, []
    for k in range(1, max_clusters + 1):
        centres = _kmeans(take, k, rng)
        d2 = ((take[:, None, :] - centres[None]) ** 2).sum(-1)
        inertias.append(float(d2.min(1).sum()))
        best[k] = centres
    inertias = np.asarray(inertias)
    # a real multimodal split removes most of the spread at once
    drops = inertias[1:] / np.maximum(inertias[:-1], 1e-12)
    k = int(np.argmin(drops)) + 2 if drops.min() < 0.5 else 1
    centres = best[k]
    return ((x[:, None, :] - centres[None]) ** 2).sum(-1).argmin(1)


def _kmeans(x, k, rng, iterations: int = 50):
    centres = [x[rng.integers(x.shape[0])]]
    for _ in range(1, k):  # k-means++ seeding
        d2 = np.min(((x[:, None, :] - np.asarray(centres)[None]) ** 2).sum(-1), 1)
        centres.append(
            x[rng.choice(x.shape[0], p=d2 / d2.sum())] if d2.sum() > 0 else x[0]
        )
    centres = np.asarray(centres)
    for _ in range(iterations):
        labels = ((x[:, None, :] - centres[None]) ** 2).sum(-1).argmin(1)
        new = np.array(
            [
                x[labels == j].mean(0) if np.any(labels == j) else centres[j]
                for j in range(k)
            ]
        )
        if np.allclose(new, centres):
            break
        centres = new
    return centres
