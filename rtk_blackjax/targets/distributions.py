"""Exact OU-diffused targets from NumPyro distributions.

A NumPyro distribution describing ``p_0`` is converted to
:class:`~rtk_blackjax.targets.GaussianMixture` parameters, whose OU-diffused densities
``p_t`` are known in closed form (:func:`~rtk_blackjax.targets.mixture_target`).
Supported distributions (parameters must be concrete arrays, not tracers):

* ``Normal(loc, scale)`` with any batch shape; the batch is flattened into
  independent coordinates (``d = prod(batch_shape)``, ``d = 1`` for a scalar);
* ``Independent(Normal, k)`` (e.g. ``Normal(...).to_event(k)``), also flattened;
  ``Normal(...).expand(shape)`` is accepted wherever a ``Normal`` is;
* ``MultivariateNormal`` (any of ``covariance_matrix``, ``scale_tril``,
  ``precision_matrix``) and ``LowRankMultivariateNormal``, without batch shape;
* ``MixtureSameFamily(Categorical, component)`` with ``component`` a batched
  ``MultivariateNormal`` (batch ``(c,)``, event ``(d,)``), a ``Normal`` with batch
  ``(c,)`` (1-D components) or an ``Independent(Normal)`` with batch ``(c,)``;
* ``MixtureGeneral(Categorical, [components])`` whose components are unbatched
  Gaussians of the above kinds with the same (flattened) event size.

Points ``x`` passed to the target's ``score`` and ``logdensity`` are the flattened
``(d,)`` vectors: ``x.reshape(batch_shape + event_shape)`` is the distribution's
sample shape, and ``logdensity(x, 0)`` equals ``log_prob`` summed over any batch.
"""

from typing import NamedTuple

import jax
import numpy as np
import numpyro.distributions as dist
from numpyro.distributions import Distribution

from rtk_blackjax.targets.analytic import (
    GaussianMixture,
    mixture_from_arrays,
    mixture_target,
)
from rtk_blackjax.targets.base import Target

__all__ = ["from_distribution", "mixture_from_distribution"]

_SUPPORTED = (
    "supported: Normal (any batch shape, flattened into coordinates), "
    "Independent(Normal), Normal(...).expand(...), MultivariateNormal and "
    "LowRankMultivariateNormal (no batch shape), and MixtureSameFamily / "
    "MixtureGeneral of these Gaussians with a Categorical mixing distribution"
)


class _Gaussian(NamedTuple):
    """Float64 parameters of a (batched) Gaussian distribution.

    ``loc`` has shape ``batch_shape + event_shape``. When ``full`` is false the
    covariance is diagonal and ``cov`` holds the variances (same shape as ``loc``);
    otherwise ``event_shape == (d,)`` and ``cov`` has shape ``batch_shape + (d, d)``.
    """

    loc: np.ndarray
    cov: np.ndarray
    full: bool
    batch_shape: tuple[int, ...]
    event_shape: tuple[int, ...]


def _unsupported(obj: object, context: str = "") -> TypeError:
    name = type(obj).__name__
    where = f" {context}" if context else ""
    return TypeError(
        f"from_distribution cannot convert {name}{where} to an exact Gaussian-mixture "
        f"target; {_SUPPORTED}."
    )


def _as_gaussian(d: object, context: str = "") -> _Gaussian:
    """Float64 Gaussian parameters of ``d``, or ``TypeError`` if it is not Gaussian."""
    batch_shape = tuple(getattr(d, "batch_shape", ()))
    event_shape = tuple(getattr(d, "event_shape", ()))
    if isinstance(d, dist.Normal):
        loc = np.broadcast_to(np.asarray(d.loc, np.float64), batch_shape)
        var = np.broadcast_to(np.asarray(d.scale, np.float64) ** 2, batch_shape)
        return _Gaussian(loc, var, False, batch_shape, event_shape)
    if isinstance(d, dist.MultivariateNormal):
        # log_prob only ever uses scale_tril: rebuild the covariance from it.
        tril = np.asarray(d.scale_tril, np.float64)
        cov = tril @ np.swapaxes(tril, -1, -2)
    elif isinstance(d, dist.LowRankMultivariateNormal):
        factor = np.asarray(d.cov_factor, np.float64)
        cov = factor @ np.swapaxes(factor, -1, -2)
        diag = np.asarray(d.cov_diag, np.float64)
        cov = cov + diag[..., :, None] * np.eye(diag.shape[-1])
    elif isinstance(d, dist.Independent):
        base = _as_gaussian(d.base_dist, context)
        if base.full and d.reinterpreted_batch_ndims > 0:
            raise TypeError(
                f"from_distribution cannot convert Independent of a batched "
                f"{type(d.base_dist).__name__}{' ' + context if context else ''} "
                f"(block-diagonal covariances are not supported); {_SUPPORTED}."
            )
        return _Gaussian(base.loc, base.cov, base.full, batch_shape, event_shape)
    elif isinstance(d, dist.ExpandedDistribution):
        base = _as_gaussian(d.base_dist, context)
        loc = np.broadcast_to(base.loc, batch_shape + event_shape)
        cov_event = base.cov.shape[len(base.batch_shape) :]
        cov = np.broadcast_to(base.cov, batch_shape + cov_event)
        return _Gaussian(loc, cov, base.full, batch_shape, event_shape)
    else:
        raise _unsupported(d, context)
    # Full-covariance Gaussians (MultivariateNormal and LowRankMultivariateNormal).
    dim = event_shape[-1]
    cov = 0.5 * (cov + np.swapaxes(cov, -1, -2))
    loc = np.broadcast_to(np.asarray(d.loc, np.float64), batch_shape + (dim,))
    cov = np.broadcast_to(cov, batch_shape + (dim, dim))
    return _Gaussian(loc, cov, True, batch_shape, event_shape)


def _mixture_weights(mixing: Distribution) -> np.ndarray:
    """Float64 weights of a Categorical mixing distribution (normalised later)."""
    if isinstance(mixing, dist.CategoricalLogits):
        logits = np.asarray(mixing.logits, np.float64)
        return np.exp(logits - logits.max(axis=-1, keepdims=True))
    if isinstance(mixing, dist.CategoricalProbs):
        return np.asarray(mixing.probs, np.float64)
    raise _unsupported(mixing, "as a mixing distribution (expected a Categorical)")


def _check_unbatched(d: Distribution, what: str) -> None:
    if tuple(d.batch_shape) != ():
        raise TypeError(
            f"from_distribution cannot convert {what} {type(d).__name__} with batch "
            f"shape {tuple(d.batch_shape)}: it describes several independent "
            f"distributions, not one density p_0; {_SUPPORTED}."
        )


def _from_mixture_same_family(
    mixture: dist.MixtureSameFamily,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    _check_unbatched(mixture, "a mixture")
    weights = _mixture_weights(mixture.mixing_distribution)
    component = mixture.component_distribution
    g = _as_gaussian(component, "as a MixtureSameFamily component")
    num = weights.shape[-1]
    if g.batch_shape != (num,):
        raise TypeError(
            f"MixtureSameFamily component {type(component).__name__} must have batch "
            f"shape ({num},), got {g.batch_shape}; {_SUPPORTED}."
        )
    if g.full:
        return weights, g.loc, g.cov
    return weights, g.loc.reshape(num, -1), g.cov.reshape(num, -1)


def _from_mixture_general(
    mixture: dist.MixtureGeneral,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    _check_unbatched(mixture, "a mixture")
    weights = _mixture_weights(mixture.mixing_distribution)
    comps = []
    for component in mixture.component_distributions:
        g = _as_gaussian(component, "as a MixtureGeneral component")
        _check_unbatched(component, "a MixtureGeneral component")
        if g.full:
            comps.append((g.loc, g.cov, True))
        else:
            comps.append((g.loc.reshape(-1), g.cov.reshape(-1), False))
    dims = {loc.shape[0] for loc, _, _ in comps}
    if len(dims) != 1:
        raise ValueError(
            f"MixtureGeneral components must all have the same event size, got "
            f"{sorted(dims)}"
        )
    means = np.stack([loc for loc, _, _ in comps])
    if any(full for _, _, full in comps):
        covs = np.stack([cov if full else np.diag(cov) for _, cov, full in comps])
    else:
        covs = np.stack([cov for _, cov, _ in comps])
    return weights, means, covs


def mixture_from_distribution(distribution: Distribution) -> GaussianMixture:
    """:class:`~rtk_blackjax.targets.GaussianMixture` parameters of a NumPyro ``p_0``.

    Parameters
    ----------
    distribution
        A NumPyro Gaussian or Gaussian-mixture distribution with concrete parameters;
        see :mod:`rtk_blackjax.targets.distributions` for the supported kinds.
        Batched ``Normal`` / ``Independent(Normal)`` distributions are flattened
        into ``d = prod(batch_shape + event_shape)`` independent coordinates.
        Mixture components with weight exactly zero are dropped.

    Returns
    -------
    GaussianMixture
        ``(c,)`` weights, ``(c, d)`` means and the eigendecomposed covariances
        (diagonal, without eigenvectors, for ``Normal`` components).

    Raises
    ------
    TypeError
        If ``distribution`` is not a NumPyro distribution, not one of the supported
        Gaussian kinds, or has a batch shape that does not describe one density
        (a batched ``MultivariateNormal`` or mixture).
    ValueError
        If the parameters are invalid (e.g. non-positive variances).

    Examples
    --------
    >>> import jax.numpy as jnp
    >>> import numpyro.distributions as dist
    >>> params = mixture_from_distribution(dist.Normal(jnp.zeros((2, 3)), 2.0))
    >>> params.means.shape, params.cov_eigvals[0].tolist()
    ((1, 6), [4.0, 4.0, 4.0, 4.0, 4.0, 4.0])
    """
    if not isinstance(distribution, Distribution):
        raise TypeError(
            f"distribution must be a numpyro.distributions.Distribution, got "
            f"{type(distribution).__name__}; {_SUPPORTED}."
        )
    try:
        if isinstance(distribution, dist.MixtureSameFamily):
            weights, means, covs = _from_mixture_same_family(distribution)
        elif isinstance(distribution, dist.MixtureGeneral):
            weights, means, covs = _from_mixture_general(distribution)
        else:
            g = _as_gaussian(distribution)
            if g.full:
                _check_unbatched(distribution, "a")
                weights, means, covs = np.ones(1), g.loc[None], g.cov[None]
            else:
                weights = np.ones(1)
                means, covs = g.loc.reshape(1, -1), g.cov.reshape(1, -1)
    except jax.errors.TracerArrayConversionError as err:
        raise TypeError(
            "distribution parameters must be concrete arrays: from_distribution "
            "reads them on the host, so build the target outside jit/vmap/grad"
        ) from err
    keep = weights > 0
    if np.any(keep) and np.all(weights >= 0):  # drop exactly-zero weights
        weights, means, covs = weights[keep], means[keep], covs[keep]
    return mixture_from_arrays(means, covs, weights)


def from_distribution(distribution: Distribution) -> Target:
    """Exact OU-diffused :class:`~rtk_blackjax.targets.Target` of a NumPyro ``p_0``.

    If ``p_0 = sum_k w_k N(m_k, C_k)`` then
    ``p_t = sum_k w_k N(a_t m_k, a_t^2 C_k + s_t^2 I)`` with ``a_t = exp(-t)`` and
    ``s_t^2 = 1 - exp(-2t)``; score and log density are exact at every ``t``.

    Parameters
    ----------
    distribution
        A NumPyro ``Normal`` (any batch shape, flattened), ``Independent(Normal)``,
        unbatched ``MultivariateNormal`` / ``LowRankMultivariateNormal``, or a
        ``MixtureSameFamily`` / ``MixtureGeneral`` of these with a ``Categorical``
        mixing distribution. Parameters must be concrete (not traced).

    Returns
    -------
    Target
        ``score(x, t)`` and ``logdensity(x, t)`` for flattened points ``x`` of shape
        ``(d,)``; ``logdensity(x, 0)`` equals ``distribution.log_prob`` of
        ``x.reshape(batch_shape + event_shape)`` summed over the batch. ``mixture``
        holds the :class:`~rtk_blackjax.targets.GaussianMixture` parameters.

    Raises
    ------
    TypeError
        For unsupported distributions or non-distribution objects (the message names
        the offending class and lists what is supported).

    See Also
    --------
    mixture_from_distribution : the parameters alone.

    Examples
    --------
    >>> import jax.numpy as jnp
    >>> import numpyro.distributions as dist
    >>> target = from_distribution(dist.Normal(jnp.zeros(2), 1.0))
    >>> target.score(jnp.ones(2), 0.0).tolist()
    [-1.0, -1.0]
    >>> mix = dist.MixtureSameFamily(
    ...     dist.Categorical(probs=jnp.array([0.5, 0.5])),
    ...     dist.MultivariateNormal(jnp.array([[-1.0, 0.0], [1.0, 0.0]]), jnp.eye(2)),
    ... )
    >>> target = from_distribution(mix)
    >>> x = jnp.array([0.3, -0.2])
    >>> bool(jnp.allclose(target.logdensity(x, 0.0), mix.log_prob(x)))
    True
    >>> score = target.score(jnp.zeros(2), 0.7)  # symmetric modes: zero at 0
    >>> bool(jnp.allclose(score, 0.0))
    True
    """
    return mixture_target(mixture_from_distribution(distribution))
