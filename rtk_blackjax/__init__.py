"""rtk_blackjax: Reverse Transition Kernel diffusion samplers as a BlackJAX extension.

The top-level names follow BlackJAX: ``rtk_blackjax.rtk(...)`` builds a sampler,
``rtk_blackjax.rtk.init`` / ``.build_kernel`` are the low-level pieces. Exported here:

* samplers: ``rtk`` (:mod:`rtk_blackjax.mcmc.rtk`), ``uld`` / ``uld_adjusted``
  (:mod:`rtk_blackjax.mcmc.uld`), the baselines ``ddpm``, ``ddim``, ``dpm_solver_pp``,
  ``heun_pf_ode``, ``predictor_corrector`` (:mod:`rtk_blackjax.baselines`);
* running them: ``sample``, ``SampleResult``, ``NonFiniteSamplesError``
  (:mod:`rtk_blackjax.run`); ``SegmentGeometry`` (:mod:`rtk_blackjax.segment`);
* inner kernels: ``InnerKernel``, ``InnerCost``, ``InnerInfo`` and the factories
  ``inner_kernel``, ``mala_inner``, ``score_mala_inner``, ``independence_inner``,
  ``uld_inner`` (:mod:`rtk_blackjax.mcmc.inner`);
* time grids: ``uniform_grid``, ``geometric_grid``, ``logsnr_grid``, ``theory_grid``,
  ``make_grid``, ``validate_grid`` (:mod:`rtk_blackjax.diffusion`);
* the subpackages ``diffusion``, ``metrics``, ``targets``, and, imported on first
  use, ``adapters``, ``diagnostics``, ``posterior``, ``policy`` with the shortcuts
  ``DiffusionPrior`` (:mod:`rtk_blackjax.posterior`) and ``RTKKernel``
  (:mod:`rtk_blackjax.adapters`).
"""

from blackjax import GenerateSamplingAPI, generate_top_level_api_from

from rtk_blackjax import diffusion, metrics, targets
from rtk_blackjax.baselines import (
    ddim,
    ddpm,
    dpm_solver_pp,
    heun_pf_ode,
    predictor_corrector,
)
from rtk_blackjax.diffusion import (
    geometric_grid,
    logsnr_grid,
    make_grid,
    theory_grid,
    uniform_grid,
    validate_grid,
)
from rtk_blackjax.mcmc import rtk as _rtk
from rtk_blackjax.mcmc import uld as _uld
from rtk_blackjax.mcmc.inner import (
    InnerCost,
    InnerInfo,
    InnerKernel,
    independence_inner,
    inner_kernel,
    mala_inner,
    score_mala_inner,
    uld_inner,
)
from rtk_blackjax.run import NonFiniteSamplesError, SampleResult, sample
from rtk_blackjax.segment import SegmentGeometry

rtk = generate_top_level_api_from(_rtk)
uld = generate_top_level_api_from(_uld)
uld_adjusted = GenerateSamplingAPI(
    _uld.adjusted_as_top_level_api, _uld.init, _uld.build_adjusted_kernel
)

__version__ = "0.1.0"

# Imported on first use: ArviZ (diagnostics) and Equinox/Optax (learned scores)
# add seconds to `import rtk_blackjax` that samplers never need; the NFE policy is
# cheap but, like them, not needed to build a sampler.
_LAZY_MODULES = ("adapters", "diagnostics", "posterior", "policy", "sbc")
_LAZY_NAMES = {
    "DiffusionPrior": "rtk_blackjax.posterior",
    "RTKKernel": "rtk_blackjax.adapters",
}


def __getattr__(name: str):
    import importlib

    if name in _LAZY_MODULES:
        return importlib.import_module(f"rtk_blackjax.{name}")
    if name in _LAZY_NAMES:
        return getattr(importlib.import_module(_LAZY_NAMES[name]), name)
    raise AttributeError(f"module 'rtk_blackjax' has no attribute {name!r}")


def __dir__():
    return sorted(list(globals()) + list(_LAZY_MODULES) + list(_LAZY_NAMES))


__all__ = [
    "rtk",
    "uld",
    "uld_adjusted",
    "ddpm",
    "ddim",
    "dpm_solver_pp",
    "heun_pf_ode",
    "predictor_corrector",
    "sample",
    "SampleResult",
    "NonFiniteSamplesError",
    "InnerKernel",
    "InnerCost",
    "InnerInfo",
    "SegmentGeometry",
    "inner_kernel",
    "mala_inner",
    "independence_inner",
    "score_mala_inner",
    "uld_inner",
    "diffusion",
    "metrics",
    "targets",
    "uniform_grid",
    "geometric_grid",
    "logsnr_grid",
    "theory_grid",
    "make_grid",
    "validate_grid",
    "adapters",
    "diagnostics",
    "posterior",
    "policy",
    "DiffusionPrior",
    "RTKKernel",
]
