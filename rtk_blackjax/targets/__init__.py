"""Targets: where the diffused densities ``p_t`` come from."""

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
from rtk_blackjax.targets.base import Target, from_score, score_only
from rtk_blackjax.targets.distributions import (
    from_distribution,
    mixture_from_distribution,
)

__all__ = [
    "Target",
    "from_score",
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
