"""Adapters: where targets come from outside this package.

* :func:`model_density`: a NumPyro model as a flat unconstrained log density;
* :func:`rtk_logdensity` / :func:`sample_logdensity` / :func:`sample_model` (and
  the Gaussian reference:
  :func:`adapt_reference`, :func:`gaussian_reference`, :func:`fit_reference`):
  RTK for targets known only by their log density at ``t = 0``, re-exported from
  the outer kernel in :mod:`rtk_blackjax.mcmc.logdensity`;
* :class:`RTKKernel`: RTK as a ``numpyro.infer.MCMC`` kernel;
* :func:`train_score` / :func:`train_energy` / :func:`learned_target`: a DSM-trained
  Equinox score network (score-only target) or energy network (target with
  energies, ``access == "energy"``) (:mod:`~rtk_blackjax.adapters.learned`).
"""

from rtk_blackjax.adapters.learned import (
    EnergyNetwork,
    ScoreNetwork,
    TrainedScore,
    learned_target,
    load_trained,
    plot_loss,
    prior_predictive_samples,
    save_trained,
    train_energy,
    train_score,
)
from rtk_blackjax.adapters.numpyro_kernel import RTKKernel
from rtk_blackjax.adapters.numpyro_model import ModelDensity, model_density
from rtk_blackjax.mcmc.logdensity import (
    GaussianReference,
    ScaleWarning,
    adapt_reference,
    fit_reference,
    gaussian_reference,
    rtk_logdensity,
    sample_logdensity,
    sample_model,
)

__all__ = [
    "ModelDensity",
    "model_density",
    "rtk_logdensity",
    "sample_model",
    "sample_logdensity",
    "ScaleWarning",
    "adapt_reference",
    "GaussianReference",
    "gaussian_reference",
    "fit_reference",
    "RTKKernel",
    "ScoreNetwork",
    "EnergyNetwork",
    "TrainedScore",
    "train_score",
    "train_energy",
    "learned_target",
    "prior_predictive_samples",
    "save_trained",
    "load_trained",
    "plot_loss",
]
