"""The target abstraction: :class:`Target` and its constructors from a score.

:class:`Target` bundles ``score(x, t)``, an optional ``logdensity(x, t)`` and an
optional exact mixture description; :func:`from_score` builds one from score (and
log-density) functions, :func:`score_only` drops a target's log density.
"""

from collections.abc import Callable
from typing import NamedTuple

import jax

from rtk_blackjax.types import ArrayLike, ArrayTree

__all__ = ["Target", "from_score", "score_only"]


class Target(NamedTuple):
    """The family of OU-diffused densities ``p_t`` that a sampler walks backwards.

    Samplers only ever call these functions; they never care whether ``p_t`` is
    analytic, comes from a NumPyro distribution or from a learned network.

    score
        ``score(x, t) -> ∇_x log p_t(x)``, same pytree structure as ``x``.
    logdensity
        ``logdensity(x, t) -> log p_t(x)`` up to a constant that may depend on ``t``
        only, or ``None`` when the model has no energy (score-only models). When
        present it must be consistent with ``score`` (``score`` is its gradient):
        Metropolis tests take differences of it at a fixed ``t``.
    mixture
        Optional analytic description of ``p_0`` (a
        :class:`rtk_blackjax.targets.GaussianMixture`) that benchmarks use for exact
        reference samples and moments. Samplers ignore it.
    """

    score: Callable[[ArrayTree, ArrayLike], ArrayTree]
    logdensity: Callable[[ArrayTree, ArrayLike], jax.Array] | None = None
    mixture: object | None = None


def from_score(
    score_fn: Callable[[ArrayTree, ArrayLike], ArrayTree],
    logdensity_fn: Callable[[ArrayTree, ArrayLike], jax.Array] | None = None,
) -> Target:
    """Wrap a user-supplied (e.g. learned) ``score_fn(x, t)`` as a :class:`Target`.

    Examples
    --------
    >>> import jax.numpy as jnp
    >>> target = from_score(lambda x, t: -x)  # p_t = N(0, I) for every t
    >>> target.score(jnp.ones(2), 0.5).tolist()
    [-1.0, -1.0]
    """
    if not callable(score_fn):
        raise TypeError(f"score_fn must be callable (x, t) -> score, got {score_fn!r}")
    if logdensity_fn is not None and not callable(logdensity_fn):
        raise TypeError(
            f"logdensity_fn must be callable (x, t) -> scalar or None, got "
            f"{logdensity_fn!r}"
        )
    return Target(score=score_fn, logdensity=logdensity_fn)


def score_only(target: Target) -> Target:
    """The same target with its log density hidden (what a learned score model gives).

    Used to compare score-only samplers honestly with energy-based ones.
    """
    if not isinstance(target, Target):
        raise TypeError(f"target must be an rtk_blackjax Target, got {target!r}")
    return target._replace(logdensity=None)
