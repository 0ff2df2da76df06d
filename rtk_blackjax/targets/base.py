"""The target abstraction: :class:`Target` and its constructors from a score.

:class:`Target` bundles ``score(x, t)``, an optional ``logdensity(x, t)`` and an
optional exact mixture description; :func:`from_score` builds one from score (and
log-density) functions, :func:`from_energy` from a (learned) energy ``log p_t`` up to
a per-time constant, :func:`score_only` drops a target's log density.

A target's **access** (:attr:`Target.access`) says what a sampler may read:

* ``"logdensity"``: ``log p_t`` and its score in closed form (analytic targets);
* ``"energy"``: a learned energy-parameterised network, ``log p_t`` up to an
  additive constant per time, its score by autodiff — enough for every exact
  Metropolis test and SMC weight, since those take differences at a fixed ``t``;
* ``"score"``: the score (or a denoiser) only, what a score network gives.

Posterior methods declare the access they need
(:data:`rtk_blackjax.posterior.METHODS`) and refuse a target that has less.
"""

from collections.abc import Callable
from typing import NamedTuple

import jax

from rtk_blackjax._checks import check_nonnegative, check_positive
from rtk_blackjax.types import ArrayLike, ArrayTree

__all__ = ["Target", "ACCESS_LEVELS", "from_score", "from_energy", "score_only"]

#: What a sampler may read of a target, least first (:attr:`Target.access`).
ACCESS_LEVELS = ("score", "energy", "logdensity")


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
    energy_based
        ``True`` when ``logdensity`` is a learned energy (built by
        :func:`from_energy`): see :attr:`access`.
    t_min
        A learned network's smallest training time (its score and energy below
        are extrapolations), 0 for analytic targets. Samplers that weight by
        ``log p_t`` across times (the twisted SMC's exact weights) do not read it
        below ``t_min``, and the twisted SMC's default grid ends there.
    variance
        Per-coordinate variance of ``p_0`` averaged over coordinates, when known
        (a learned network's training data, set by
        :func:`~rtk_blackjax.adapters.learned.learned_target`), else ``None``.
        Posterior samplers that need the prior's scale read it (the twisted SMC's
        twist inflation); an analytic mixture's comes from :attr:`mixture`.
    """

    score: Callable[[ArrayTree, ArrayLike], ArrayTree]
    logdensity: Callable[[ArrayTree, ArrayLike], jax.Array] | None = None
    mixture: object | None = None
    energy_based: bool = False
    t_min: float = 0.0
    variance: float | None = None

    @property
    def access(self) -> str:
        """``"logdensity"``, ``"energy"`` or ``"score"`` (module docstring)."""
        if self.logdensity is None:
            return "score"
        return "energy" if self.energy_based else "logdensity"


def from_score(
    score_fn: Callable[[ArrayTree, ArrayLike], ArrayTree],
    logdensity_fn: Callable[[ArrayTree, ArrayLike], jax.Array] | None = None,
    *,
    t_min: float = 0.0,
    variance: float | None = None,
) -> Target:
    """Wrap a user-supplied (e.g. learned) ``score_fn(x, t)`` as a :class:`Target`.

    ``t_min``: a learned network's smallest training time, :attr:`Target.t_min`;
    ``variance``: the per-coordinate variance of ``p_0`` when known (e.g. of the
    training data), :attr:`Target.variance`.

    Examples
    --------
    >>> import jax.numpy as jnp
    >>> target = from_score(lambda x, t: -x)  # p_t = N(0, I) for every t
    >>> target.score(jnp.ones(2), 0.5).tolist()
    [-1.0, -1.0]
    >>> learned = from_score(lambda x, t: -x, t_min=1e-3, variance=1.0)
    >>> learned.t_min, learned.variance
    (0.001, 1.0)
    """
    if not callable(score_fn):
        raise TypeError(f"score_fn must be callable (x, t) -> score, got {score_fn!r}")
    if logdensity_fn is not None and not callable(logdensity_fn):
        raise TypeError(
            f"logdensity_fn must be callable (x, t) -> scalar or None, got "
            f"{logdensity_fn!r}"
        )
    return Target(
        score=score_fn,
        logdensity=logdensity_fn,
        t_min=check_nonnegative("t_min", t_min),
        variance=_variance(variance),
    )


def from_energy(
    energy_fn: Callable[[ArrayTree, ArrayLike], jax.Array],
    *,
    t_min: float = 0.0,
    variance: float | None = None,
) -> Target:
    """A :class:`Target` from an energy ``energy_fn(x, t) = log p_t(x) + c(t)``.

    The score is ``∇_x energy_fn`` by autodiff; the log density is ``energy_fn``
    itself (the unknown per-time constant ``c(t)`` cancels in every Metropolis
    test and SMC weight, which compare values at one ``t``). The target's
    :attr:`~Target.access` is ``"energy"``. Learned energy networks:
    :func:`rtk_blackjax.adapters.learned.train_energy` (``t_min``: the smallest
    training time, :attr:`Target.t_min`; ``variance``: the training data's
    per-coordinate variance, :attr:`Target.variance`).

    Examples
    --------
    >>> import jax.numpy as jnp
    >>> target = from_energy(lambda x, t: -0.5 * jnp.sum(x**2) + 3.0 * t)
    >>> target.access, target.score(jnp.ones(2), 0.5).tolist()
    ('energy', [-1.0, -1.0])
    >>> from_energy(lambda x, t: -0.5 * jnp.sum(x**2), t_min=1e-3).t_min
    0.001
    >>> from_energy(lambda x, t: -0.5 * jnp.sum(x**2), variance=0.3).variance
    0.3
    """
    if not callable(energy_fn):
        raise TypeError(
            f"energy_fn must be callable (x, t) -> scalar, got {energy_fn!r}"
        )
    return Target(
        score=jax.grad(energy_fn),
        logdensity=energy_fn,
        energy_based=True,
        t_min=check_nonnegative("t_min", t_min),
        variance=_variance(variance),
    )


def _variance(variance: float | None) -> float | None:
    return None if variance is None else check_positive("variance", variance)


def score_only(target: Target) -> Target:
    """The same target with its log density hidden (what a learned score model gives).

    Used to compare score-only samplers honestly with energy-based ones.
    """
    if not isinstance(target, Target):
        raise TypeError(f"target must be an rtk_blackjax Target, got {target!r}")
    return target._replace(logdensity=None, energy_based=False)
