"""Targets: where the diffused densities ``p_t`` come from.

* :mod:`~rtk_blackjax.targets.base`: :class:`Target`, :func:`from_score`,
  :func:`from_energy`, :func:`score_only` (and a target's access: ``"logdensity"``,
  ``"energy"`` or ``"score"``);
* :mod:`~rtk_blackjax.targets.analytic`: exact Gaussian and Gaussian-mixture
  targets (closed-form ``p_t``, scores and draws), including the benchmark targets
  :func:`chessboard` and :func:`random_mog`;
* :mod:`~rtk_blackjax.targets.distributions`: NumPyro distributions as targets
  (:func:`from_distribution`, :func:`mixture_from_distribution`).

Learned (score-network) targets are in :mod:`rtk_blackjax.adapters.learned`.
"""

from rtk_blackjax.targets.analytic import (
    GaussianMixture,
    chessboard,
    chessboard_mixture,
    gaussian,
    gaussian_mixture,
    mixture_covariance,
    mixture_from_arrays,
    mixture_logdensity,
    mixture_mean,
    mixture_score,
    mixture_target,
    mixture_variance,
    random_mixture,
    random_mog,
    sample_mixture,
)
from rtk_blackjax.targets.base import (
    ACCESS_LEVELS,
    Target,
    from_energy,
    from_score,
    score_only,
)
from rtk_blackjax.targets.distributions import (
    from_distribution,
    mixture_from_distribution,
)

__all__ = [
    "Target",
    "ACCESS_LEVELS",
    "from_score",
    "from_energy",
    "score_only",
    "from_distribution",
    "mixture_from_distribution",
    "GaussianMixture",
    "chessboard",
    "chessboard_mixture",
    "gaussian",
    "gaussian_mixture",
    "mixture_from_arrays",
    "mixture_logdensity",
    "mixture_mean",
    "mixture_score",
    "mixture_target",
    "mixture_variance",
    "mixture_covariance",
    "random_mixture",
    "random_mog",
    "sample_mixture",
]
