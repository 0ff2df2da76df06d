"""Posterior sampling with diffusion priors.

* :func:`sample`: the one entry point for a NumPyro model with a
  :class:`DiffusionPrior` site, any likelihood and further latent sites; its methods
  (:data:`METHODS`) declare the prior access they need;
* :func:`twisted_smc` (RTK-based twisted SMC, any prior access and any
  :class:`Likelihood`) and its peers :func:`tds` and :func:`mcgdiff` (MCGdiff,
  linear-Gaussian likelihoods; :func:`linear_gaussian_form`);

* :class:`DiffusionPrior`: a diffusion model (any :class:`~rtk_blackjax.targets.Target`)
  as a NumPyro distribution;
* :func:`split_gibbs` (NumPyro models) and :func:`split_gibbs_linear_gaussian`:
  split Gibbs with RTK prior blocks;
* :func:`smc_linear_gaussian`: twisted SMC through the reverse diffusion, on a grid
  fitted to the prior by :func:`calibrate_grid`;
* peers :func:`dps` (DPS, any :class:`Likelihood`) and :func:`daps` (DAPS), score
  access only;
* baselines :func:`dps_linear_gaussian` (DPS) and :func:`nuts_linear_gaussian` (NUTS
  on the exact posterior);
* :mod:`~rtk_blackjax.posterior.reference`: exact references (with their Monte
  Carlo error) for nonlinear likelihoods of ``A x`` under Gaussian-mixture priors;
* :mod:`~rtk_blackjax.posterior.gmm`: the exact 25-mode mixture problem (its runner
  is :mod:`rtk_blackjax.benchmarks.posterior`, ``python -m rtk_blackjax bench-posterior``).

Every sampler returns a :class:`PosteriorResult` (chains x draws); convert it with
:func:`rtk_blackjax.diagnostics.to_arviz`, the package's one ArviZ converter (also
importable here as ``to_arviz`` and, under its former name, ``posterior_to_arviz``).
"""

from rtk_blackjax.interop.arviz import to_arviz
from rtk_blackjax.posterior.base import PosteriorResult
from rtk_blackjax.posterior.daps import daps
from rtk_blackjax.posterior.dps import dps, dps_linear_gaussian
from rtk_blackjax.posterior.entry import (
    METHODS,
    PosteriorSamples,
    PosteriorWarning,
    mode_disagreement,
    sample,
)
from rtk_blackjax.posterior.mcgdiff import linear_gaussian_form, mcgdiff
from rtk_blackjax.posterior.nuts import nuts_linear_gaussian
from rtk_blackjax.posterior.prior import DiffusionPrior
from rtk_blackjax.posterior.smc import calibrate_grid, smc_linear_gaussian
from rtk_blackjax.posterior.split_gibbs import (
    relaxed_gaussian_posterior,
    split_gibbs,
    split_gibbs_linear_gaussian,
)
from rtk_blackjax.posterior.twisted import (
    GaussianObservation,
    Likelihood,
    tds,
    twisted_smc,
)

# The package's one ArviZ converter, under the name this subpackage has always
# exported (rtk_blackjax.diagnostics.to_arviz is the same function).
posterior_to_arviz = to_arviz

__all__ = [
    "sample",
    "METHODS",
    "PosteriorSamples",
    "PosteriorWarning",
    "mode_disagreement",
    "twisted_smc",
    "tds",
    "mcgdiff",
    "linear_gaussian_form",
    "Likelihood",
    "GaussianObservation",
    "PosteriorResult",
    "DiffusionPrior",
    "split_gibbs",
    "split_gibbs_linear_gaussian",
    "smc_linear_gaussian",
    "calibrate_grid",
    "dps",
    "daps",
    "dps_linear_gaussian",
    "nuts_linear_gaussian",
    "relaxed_gaussian_posterior",
    "to_arviz",
    "posterior_to_arviz",
]
