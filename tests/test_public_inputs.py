"""Every public callable refuses bad input by name, with the package's one rule.

The rule (:mod:`rtk_blackjax._checks`): a value of the wrong *kind* raises
``TypeError``, a value of the right kind but a wrong *value* raises ``ValueError``,
and the message names the argument (as a word, e.g. ``num_samples``).

:data:`CASES` holds, per public callable, one valid call and the bad variants of
each argument it validates; :data:`EXEMPT` lists the public callables with nothing
to check, each with the reason. ``test_every_public_callable_is_covered`` walks the
``__all__`` of every public module and fails on a name in neither table, so a new
public function has to be added here. No bad call gets as far as compiling a
sampler: the checks run at the top of each function.

The last section checks the late or unclear errors of issue 13 one by one.
"""

import importlib
import inspect
import pkgutil
import re
import types
import warnings
from typing import Any, NamedTuple

import blackjax
import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist
import pytest

import rtk_blackjax as rb
from rtk_blackjax.adapters import learned
from rtk_blackjax.posterior import gmm, reference

T, V = TypeError, ValueError
MISSING = object()  # a bad "value": the argument left out


# Modules whose public names are not walked here: they are being moved out of the
# library (benchmarks) or split (the driver); ``rtk_blackjax.sample`` is covered
# through its public name. ``__main__`` is the command line.
SKIPPED_MODULES = {
    # The pieces of rb.sample (rb.sample itself is walked below): each is called only
    # by sample() with arguments it has already checked.
    "rtk_blackjax.run.checkpoint": "internal piece of rb.sample (inputs checked there)",
    "rtk_blackjax.run.devices": "internal piece of rb.sample (inputs checked there)",
    "rtk_blackjax.run.layout": "internal piece of rb.sample (inputs checked there)",
    "rtk_blackjax.run.programs": "internal piece of rb.sample (inputs checked there)",
    "rtk_blackjax.run.memory": "internal piece of rb.sample (memory_budget checked there)",
    "rtk_blackjax.run.policy": "internal piece of rb.sample (inputs checked there)",
    "rtk_blackjax.__main__": "the command line, not an API",
    "rtk_blackjax.benchmarks.sampling": "benchmark scripts (CLI only), not the library",
    "rtk_blackjax.benchmarks.overhead": "benchmark scripts (CLI only), not the library",
    "rtk_blackjax.benchmarks.posterior": "benchmark scripts (CLI only), not the library",
    "rtk_blackjax.benchmarks.digits": "benchmark data, priors and metrics; its "
    "bad-input cases are in tests/test_digits.py",
    "rtk_blackjax.benchmarks.ring": "benchmark scenario (CLI and demo), not the library",
}

_TRACED = "array arithmetic called inside traced code, where values are unknown"
_BLACKJAX = (
    "a BlackJAX-style kernel (init / build_kernel / top-level API) whose "
    "parameters may be traced values, as in BlackJAX"
)
_ON_MIXTURE = (
    "takes a GaussianMixture, built and validated by mixture_from_arrays; the "
    "arithmetic runs inside traced code"
)
EXEMPT = {
    "rtk_blackjax.mcmc.logdensity.adapted_schedule": "reads the SegmentStats "
    "that adapt_reference measures (never built by hand)",
    "rtk_blackjax.uld": _BLACKJAX,
    "rtk_blackjax.uld_adjusted": _BLACKJAX,
    "rtk_blackjax.mcmc.uld.init": _BLACKJAX,
    "rtk_blackjax.mcmc.uld.build_kernel": _BLACKJAX + " (takes no argument)",
    "rtk_blackjax.mcmc.uld.build_adjusted_kernel": _BLACKJAX + " (no argument)",
    "rtk_blackjax.mcmc.uld.as_top_level_api": _BLACKJAX,
    "rtk_blackjax.mcmc.uld.adjusted_as_top_level_api": _BLACKJAX,
    "rtk_blackjax.mcmc.uld.stationary_variance": _TRACED,
    "rtk_blackjax.mcmc.uld.default_parameters": _TRACED,
    "rtk_blackjax.mcmc.inner.mala_step_size": _TRACED,
    "rtk_blackjax.mcmc.adaptation.adapt_step_size": _TRACED,
    "rtk_blackjax.diffusion.ou_noise_to_signal": _TRACED,
    # the segment loop and its key scheme run inside the compiled program
    **{
        f"rtk_blackjax.run{mod}.{name}": _TRACED
        for mod in ("", ".loop")
        for name in (
            "run_segments",
            "particle_key",
            "start_key",
            "chain_key",
            "segment_key",
            "start_position",
            "init_particle",
        )
    },
    # the segment target and its Gaussian predictor, built inside the RTK kernel
    **{
        f"rtk_blackjax.segment.{name}": _TRACED
        for name in (
            "tweedie_mean",
            "secant_curvature",
            "diagonal_curvature",
            "clipped_variance",
            "gaussian_approximation",
            "predict",
            "score_from_gradient",
        )
    },
    "rtk_blackjax.segment.logdensity_source": "called by the RTK kernel's builder "
    "with a target and inner kernel it has already checked",
    "rtk_blackjax.mcmc.rtk.segment_logdensity": _TRACED,
    "rtk_blackjax.diffusion.ou_mean_coef": _TRACED,
    "rtk_blackjax.diffusion.ou_variance": _TRACED,
    "rtk_blackjax.diffusion.transition_coefs": _TRACED,
    "rtk_blackjax.mcmc.logdensity.bridge_moments": _TRACED,
    "rtk_blackjax.adapters.learned.dsm_loss": _TRACED + " (the training loss)",
    "rtk_blackjax.posterior.prior_block.rho_to_time": _TRACED,
    "rtk_blackjax.posterior.prior_block.time_to_rho": _TRACED,
    "rtk_blackjax.posterior.relaxed_gaussian_posterior": (
        "closed-form reference for tests (plain linear algebra on its arrays)"
    ),
    "rtk_blackjax.posterior.gmm.posterior_logdensity": _TRACED,
    "rtk_blackjax.posterior.gmm.log_likelihood": _TRACED,
    "rtk_blackjax.targets.mixture_logdensity": _ON_MIXTURE,
    "rtk_blackjax.targets.mixture_score": _ON_MIXTURE,
    "rtk_blackjax.targets.mixture_mean": _ON_MIXTURE,
    "rtk_blackjax.targets.mixture_variance": _ON_MIXTURE,
    "rtk_blackjax.targets.mixture_covariance": _ON_MIXTURE,
    "rtk_blackjax.targets.mixture_target": _ON_MIXTURE,
    "rtk_blackjax.adapters.ScoreNetwork": (
        "an Equinox module built by make_score_network, which validates"
    ),
    "rtk_blackjax.adapters.learned.EnergyNetwork": (
        "an Equinox module built by make_energy_network, which validates"
    ),
    "rtk_blackjax.posterior.prior_block.PriorBlock": (
        "a container built by prior_block, which validates"
    ),
    "rtk_blackjax.adapters.load_trained": (
        "takes a path: open() raises the standard OSError for a missing file"
    ),
    "rtk_blackjax.types.Array": "a type alias",
    "rtk_blackjax.types.ArrayLike": "a type alias",
    "rtk_blackjax.types.ArrayLikeTree": "a type alias",
    "rtk_blackjax.types.ArrayTree": "a type alias",
}


def _is_data_type(obj) -> bool:
    """NamedTuples (states, infos, results) and exception classes: constructing
    them validates nothing, by design (they are built by the library)."""
    return isinstance(obj, type) and (
        issubclass(obj, tuple) or issubclass(obj, BaseException)
    )


# --------------------------------------------------------------------------
# Valid inputs the table builds on
# --------------------------------------------------------------------------

KEY = jax.random.key(0)
KEYS = jax.random.split(KEY, 2)  # a batch where one key is expected
TARGET = rb.targets.gaussian(np.zeros(2), 1.0)
TIMES = rb.uniform_grid(3)
A, Y, SIGMA = np.eye(1, 2), np.array([1.0]), 0.5
SAMPLES = np.random.default_rng(0).normal(size=(32, 2))
DRAWS = np.random.default_rng(1).normal(size=(2, 1, 2, 8, 1))
NOT_INCREASING = [1.0, 2.0, 0.0]  # a grid must decrease


def logdensity_fn(x):
    return -0.5 * jnp.sum(x**2)


def normal_model(y=None):
    mu = numpyro.sample("mu", dist.Normal(0.0, 1.0))
    numpyro.sample("y", dist.Normal(mu, 1.0), obs=y)


_PRIOR = rb.DiffusionPrior(TARGET, nfe=25)
_AFFINE = rb.adapters.gaussian_reference(np.zeros(2), 1.0)


def prior_model(y=None):
    x = numpyro.sample("x", _PRIOR)
    numpyro.sample("y", dist.Normal(x[0], 1.0), obs=y)


def hmc_rule(step_size):
    return lambda g: dict(
        step_size=step_size,
        inverse_mass_matrix=jnp.ones(g.dim),
        num_integration_steps=3,
    )


class Case(NamedTuple):
    """``call(**valid)`` is a valid call; ``bad`` rows are ``(argument, value,
    exception)`` or ``(argument, value, exception, name the message must hold)``."""

    valid: dict
    bad: list
    call: Any = None  # default: the callable at the table's key


def _positive(name, *, kind=True):
    rows = [(name, -1.0, V), (name, 0.0, V), (name, float("nan"), V)]
    return rows + ([(name, "a", T)] if kind else [])


def _count(name, minimum, *, maximum=None):
    rows = [(name, 1.5, T), (name, True, T), (name, minimum - 1, V)]
    return rows + ([(name, maximum + 1, V)] if maximum is not None else [])


def _key(name="rng_key"):
    return [(name, 0, T), (name, None, T), (name, np.zeros(2), T), (name, KEYS, V)]


def _target(name="target"):
    return [(name, "target", T), (name, lambda x, t: -x, T)]


_RTK_VALID = dict(target=TARGET, times=TIMES)
_RTK_BAD = [
    *_target(),
    ("times", NOT_INCREASING, V),
    ("times", ["a", "b"], T),
    ("inner", "mala", T),
    ("num_inner_steps", -1, V),
    ("num_inner_steps", [1, 1], V),
    ("predictor", "bogus", V),
    ("curvature", "bogus", V),
    *_positive("secant_scale"),
]
_LOGDENSITY_BAD = [
    ("logdensity_fn", 1, T),
    ("times", NOT_INCREASING, V),
    ("num_importance", -1, V),
    ("num_inner_steps", -1, V),
    ("adapt_step_size", 1, T),
    ("reference", "ref", T),
]
_LINEAR = dict(rng_key=KEY, prior=TARGET, A=A, y=Y, sigma=SIGMA)
_LINEAR_BAD = [
    *_key(),
    *_target("prior"),
    ("A", np.ones(3), V),
    ("y", np.ones(3), V),
    ("sigma", -1.0, V),
]

_LIKELIHOOD = rb.posterior.twisted.linear_gaussian_likelihood(A, Y, SIGMA)
_REF_PRIOR = gmm.grid_prior(2)
_REF_SIGMA = reference.sigma_marginal_linear_gaussian(
    _REF_PRIOR,
    np.eye(2),
    np.ones(2),
    lambda s: -0.5 * s**2,
    grid=np.linspace(1e-3, 8.0, 200),
)

_LAZY = {}  # valid inputs that cost a run (built once, when first needed)


def _sample_result():
    if "result" not in _LAZY:
        _LAZY["result"] = rb.sample(KEY, rb.ddpm(TARGET, rb.uniform_grid(2)), 4, dim=2)
    return _LAZY["result"]


def _to_arviz(**kwargs):
    if kwargs["result"] is MISSING:
        kwargs["result"] = _sample_result()
    return rb.diagnostics.to_arviz(**kwargs)


def _trained():
    from rtk_blackjax.adapters.learned import TrainedScore

    net = learned.make_score_network(KEY, SAMPLES, hidden=4, depth=1)
    return TrainedScore(net, np.ones(5), {})


def _mcmc_run(rng_key):
    # numpyro.infer.MCMC hands its key to the kernel's init.
    kernel = rb.RTKKernel(normal_model)
    mcmc = numpyro.infer.MCMC(kernel, num_warmup=0, num_samples=2, progress_bar=False)
    mcmc.run(rng_key, 1.0)


def _logdensity_step(rng_key):
    algorithm = rb.adapters.rtk_logdensity(
        logdensity_fn, TIMES, num_importance=2, num_inner_steps=1
    )
    algorithm.step(rng_key, algorithm.init(jnp.zeros(2)))


def _rtk_step(rng_key):
    algorithm = rb.rtk(TARGET, TIMES)
    algorithm.step(rng_key, algorithm.init(jnp.zeros(2)))


def _diagnose(**kwargs):
    return rb.diagnostics.diagnose(**kwargs)


_DIAG = rb.diagnostics.diagnostics_from_draws(DRAWS)

# rtk_blackjax.sbc: a trivial simulator, sampler and statistic
_SBC_SIM = lambda key: (0.0, 0.0)  # noqa: E731
_SBC_DRAWS = lambda key, y: np.arange(4.0)  # noqa: E731
_SBC_STATS = lambda theta: {"a": theta}  # noqa: E731
_SBC_RANKS = {"a": np.arange(20) % 20}

CASES = {
    # ---------------------------------------------------------------- samplers
    "rtk_blackjax.rtk": Case(_RTK_VALID, _RTK_BAD),
    "rtk_blackjax.mcmc.rtk.as_top_level_api": Case(_RTK_VALID, _RTK_BAD),
    "rtk_blackjax.mcmc.rtk.build_kernel": Case(_RTK_VALID, _RTK_BAD),
    "rtk_blackjax.mcmc.rtk.init": Case(
        dict(position=np.zeros(2), target=TARGET, times=TIMES),
        [
            ("position", np.zeros(2, np.int32), T),
            ("position", np.array([np.nan, 0.0]), V),
            ("position", [], V),
        ],
    ),
    "rtk_blackjax.mcmc.rtk.segment_problem": Case(
        dict(
            target=TARGET,
            times=TIMES,
            k=0,
            position=jnp.zeros(2),
            score=jnp.zeros(2),
            rng_key=KEY,
        ),
        [
            *_target(),
            ("times", NOT_INCREASING, V),
            ("k", 7, V),
            ("inner", "mala", T),
            ("predictor", "bogus", V),
            ("curvature", "bogus", V),
            *_positive("secant_scale"),
        ],
    ),
    "rtk_blackjax.mcmc.rtk.target_logdensity_with_score": Case(
        dict(target=TARGET),
        [*_target(), ("target", rb.targets.score_only(TARGET), V, "logdensity")],
    ),
    "rtk_blackjax.ddpm": Case(
        _RTK_VALID,
        [*_target(), ("times", NOT_INCREASING, V), ("final_denoise", 1, T)],
    ),
    **{
        f"rtk_blackjax.{name}": Case(
            _RTK_VALID, [*_target(), ("times", NOT_INCREASING, V)]
        )
        for name in ("ddim", "dpm_solver_pp", "heun_pf_ode")
    },
    "rtk_blackjax.predictor_corrector": Case(
        _RTK_VALID,
        [
            *_target(),
            ("times", NOT_INCREASING, V),
            *_count("corrector_steps", 0),
            *_positive("snr"),
            ("step_rule", "bogus", V),
        ],
    ),
    "rtk_blackjax.sample": Case(
        dict(rng_key=KEY, algorithm=rb.ddpm(TARGET, TIMES), num_samples=4, dim=2),
        [
            ("rng_key", 0, T),
            ("num_samples", 1.5, T),
            ("num_samples", 0, V),
            ("dim", 0, V),
            ("memory_budget", 1.5, T),
            ("memory_budget", 0, V),
        ],
    ),
    # ----------------------------------------------------------- inner kernels
    "rtk_blackjax.inner_kernel": Case(
        dict(algorithm=blackjax.hmc, parameters=hmc_rule(0.1)),
        [
            ("algorithm", "hmc", T),
            ("parameters", 1, T),
            ("parameters", hmc_rule(-0.1), V, "step_size"),
            ("parameters", hmc_rule(jnp.nan), V, "step_size"),
            ("parameters", lambda g: [0.1], T),
            ("init_needs_key", 1, T),
            *_count("evaluations_at_init", 0),
            *_count("evaluations_per_step", 0),
            ("gradient_of", 1, T),
            ("acceptance_of", 1, T),
            ("needs_logdensity", 1, T),
            ("energy", 1, T),
        ],
    ),
    "rtk_blackjax.mala_inner": Case({}, _positive("step_scale")),
    "rtk_blackjax.independence_inner": Case({}, _positive("variance_inflation")),
    "rtk_blackjax.score_mala_inner": Case(
        {},
        [
            *_positive("step_scale"),
            ("rule", "simpson", V),
            ("num_nodes", 2.5, T),
            ("num_nodes", 65, V),
            ("num_nodes", 1, V),
            *_positive("radius_scale"),
        ],
    ),
    "rtk_blackjax.uld_inner": Case({}, [("adjusted", 1, T), *_positive("step_scale")]),
    "rtk_blackjax.mcmc.score_energy.quadrature_rule": Case(
        dict(rule="lobatto", num_nodes=3),
        [("rule", "simpson", V), ("num_nodes", 2.5, T), ("num_nodes", 1, V)],
    ),
    "rtk_blackjax.mcmc.score_energy.extra_evaluations": Case(
        dict(rule="lobatto", num_nodes=3),
        [("rule", "simpson", V), ("num_nodes", 2.5, T), ("num_nodes", 1, V)],
    ),
    "rtk_blackjax.mcmc.score_energy.line_integral_logdensity": Case(
        dict(score_fn=TARGET.score, time=0.5, anchor=jnp.zeros(2)),
        [
            ("score_fn", 1, T),
            ("rule", "simpson", V),
            ("num_nodes", 2.5, T),
            ("anchor_score", MISSING, V),  # with rule="lobatto" (below)
        ],
    ),
    "rtk_blackjax.mcmc.score_energy.energy_difference": Case(
        dict(score_fn=TARGET.score, x=jnp.zeros(2), x_new=jnp.ones(2), time=0.5),
        [("score_fn", 1, T), ("rule", "simpson", V), ("num_nodes", 2.5, T)],
    ),
    # ------------------------------------------------------------------- grids
    "rtk_blackjax.uniform_grid": Case(
        dict(num_segments=3),
        [*_count("num_segments", 1, maximum=10**7), *_positive("horizon")],
    ),
    "rtk_blackjax.geometric_grid": Case(
        dict(num_segments=3),
        [
            *_count("num_segments", 1),
            *_positive("horizon"),
            *_positive("t_min"),
            ("t_min", 6.0, V),
        ],
    ),
    "rtk_blackjax.logsnr_grid": Case(
        dict(num_segments=3),
        [
            *_count("num_segments", 1),
            *_positive("horizon"),
            *_positive("t_min"),
            ("t_min", 6.0, V),
        ],
    ),
    "rtk_blackjax.theory_grid": Case(
        dict(smoothness=1.0), [*_positive("smoothness"), *_positive("horizon")]
    ),
    "rtk_blackjax.diffusion.theory_segment_length": Case(
        dict(smoothness=1.0), _positive("smoothness")
    ),
    "rtk_blackjax.make_grid": Case(
        dict(kind="uniform", num_segments=3),
        [
            ("kind", "bogus", V),
            ("num_segments", 1.5, T),
            ("num_segments", MISSING, V),
            *_positive("horizon"),
        ],
    ),
    "rtk_blackjax.validate_grid": Case(
        dict(times=TIMES),
        [
            ("times", NOT_INCREASING, V),
            ("times", [1.0], V),
            ("times", [1.0, np.nan, 0.0], V),
            ("times", ["a", "b"], T),
            ("times", [True, False], T),
        ],
    ),
    # -------------------------------------------------------------- numpyro side
    "rtk_blackjax.DiffusionPrior": Case(
        dict(target=TARGET),
        [
            *_target(),
            ("dim", 2.5, T),
            ("dim", 0, V),
            ("dim", 3, V),
            *_count("nfe", 1),
            ("algorithm", "rtk", T),
        ],
    ),
    "rtk_blackjax.posterior.prior.default_prior_sampler": Case(
        dict(target=TARGET), [*_target(), *_count("nfe", 1)]
    ),
    "rtk_blackjax.RTKKernel": Case(
        dict(model=normal_model),
        [
            ("model", 1, T),
            *_count("num_pilot_rounds", 0),
            *_count("pilot_particles", 2),
            ("reference", "ref", T),
            ("init_strategy", 1, T),
            ("standardise", "yes", T),
        ],
    ),
    "RTKKernel.init via MCMC.run": Case(
        dict(rng_key=KEY), [("rng_key", 0, T), ("rng_key", "key", T)], _mcmc_run
    ),
    # ---------------------------------------------------------------- adapters
    "rtk_blackjax.adapters.model_density": Case(
        dict(model=normal_model, y=1.0),
        [("model", 1, T), ("rng_key", 0, T), ("rng_key", KEYS, V)]
        + [("init_strategy", 1, T)],
    ),
    "rtk_blackjax.adapters.rtk_logdensity": Case(
        dict(logdensity_fn=logdensity_fn),
        [*_LOGDENSITY_BAD, *_positive("step_size"), *_positive("init_spread")[:1]],
    ),
    "rtk_logdensity(...).step": Case(dict(rng_key=KEY), _key(), _logdensity_step),
    "rtk(...).step": Case(dict(rng_key=KEY), _key(), _rtk_step),
    "rtk_blackjax.mcmc.logdensity.build_kernel": Case(
        dict(logdensity_fn=logdensity_fn, times=TIMES), _LOGDENSITY_BAD
    ),
    "rtk_blackjax.mcmc.logdensity.init": Case(
        dict(position=jnp.zeros(2), logdensity_fn=logdensity_fn),
        [
            ("position", np.zeros(2, np.int32), T),
            ("position", np.zeros((2, 2)), V),
            ("logdensity_fn", 1, T),
            *_positive("step_size"),
            ("init_spread", -1.0, V),
        ],
    ),
    "rtk_blackjax.mcmc.logdensity.default_schedule": Case(
        {},
        [
            *_count("num_segments", 1),
            *_positive("horizon"),
            *_count("num_importance", 0),
            *_count("num_inner_steps", 0),
        ],
    ),
    "rtk_blackjax.adapters.sample_model": Case(
        dict(rng_key=KEY, model=normal_model, num_samples=4, y=1.0),
        [
            *_key(),
            ("model", 1, T),
            *_count("num_samples", 1),
            *_count("num_pilot_rounds", 0),
            *_count("pilot_particles", 2),
            ("standardise", "yes", T),
        ],
    ),
    "rtk_blackjax.adapters.adapt_reference": Case(
        dict(rng_key=KEY, logdensity_fn=logdensity_fn, dim=2),
        [
            *_key(),
            *_count("num_rounds", 1),
            *_count("num_particles", 2),
            ("logdensity_fn", 1, T),
            ("standardise", "yes", T),
            *_positive("tolerance"),
        ],
    ),
    "rtk_blackjax.adapters.sample_logdensity": Case(
        dict(rng_key=KEY, logdensity_fn=logdensity_fn, dim=2, num_samples=4),
        [
            *_key(),
            ("logdensity_fn", 1, T),
            *_count("dim", 1),
            *_count("num_samples", 1),
            *_count("num_pilot_rounds", 0),
            *_count("pilot_particles", 2),
            ("standardise", "yes", T),
            ("check_draws", "yes", T),
            ("initial_position", np.zeros((2, 2)), V),
            ("times", NOT_INCREASING, V),
        ],
    ),
    "rtk_blackjax.mcmc.logdensity.model_schedule": Case(
        dict(),
        [
            ("times", NOT_INCREASING, V),
            ("num_importance", [1, 2], V, "num_importance"),
            ("num_inner_steps", -1, V),
        ],
    ),
    "rtk_blackjax.mcmc.logdensity.initial_step_factor": Case(
        dict(dim=2), _count("dim", 1)
    ),
    "rtk_blackjax.mcmc.logdensity.stein_check": Case(
        dict(logdensity_fn=logdensity_fn, samples=SAMPLES),
        [
            ("logdensity_fn", 1, T),
            ("samples", SAMPLES[0], V),
            ("samples", np.full((3, 2), np.nan), V),
        ],
    ),
    "rtk_blackjax.mcmc.logdensity.drift_check": Case(
        dict(rng_key=KEY, logdensity_fn=logdensity_fn, samples=SAMPLES),
        [
            ("rng_key", 0, T),
            ("logdensity_fn", 1, T),
            ("samples", SAMPLES[0], V),
            ("samples", np.full((3, 2), np.nan), V),
            ("num_steps", 0, V),
        ],
    ),
    "rtk_blackjax.mcmc.logdensity.shrunk_covariance": Case(
        dict(samples=SAMPLES),
        [
            ("samples", SAMPLES[0], V),
            ("samples", SAMPLES[:1], V),
            ("samples", np.full((3, 2), np.nan), V),
            ("samples", "abc", T),
        ],
    ),
    "rtk_blackjax.mcmc.logdensity.spread_mismatch": Case(
        dict(z_samples=SAMPLES),
        [("z_samples", SAMPLES[0], V), ("z_samples", np.full((3, 2), np.inf), V)],
    ),
    "rtk_blackjax.mcmc.logdensity.standardise": Case(
        dict(affine=_AFFINE, x=SAMPLES),
        [("affine", (0.0, 1.0), T), ("x", np.zeros((4, 3)), V)],
    ),
    "rtk_blackjax.mcmc.logdensity.unstandardise": Case(
        dict(affine=_AFFINE, z=SAMPLES),
        [("affine", "affine", T), ("z", np.zeros(3), V)],
    ),
    "rtk_blackjax.mcmc.logdensity.standardised_logdensity": Case(
        dict(logdensity_fn=logdensity_fn, affine=_AFFINE),
        [("logdensity_fn", 1, T), ("affine", None, T)],
    ),
    "rtk_blackjax.adapters.gaussian_reference": Case(
        dict(mean=jnp.zeros(2), covariance=1.0),
        [
            ("mean", np.zeros((2, 2)), V),
            ("covariance", np.ones(3), V),
            ("covariance", -1.0, V),
            *_positive("inflation"),
        ],
    ),
    "rtk_blackjax.adapters.fit_reference": Case(
        dict(samples=SAMPLES),
        [("samples", SAMPLES[:1], V), ("samples", SAMPLES[0], V)]
        + _positive("inflation"),
    ),
    "rtk_blackjax.adapters.train_score": Case(
        dict(rng_key=KEY, samples=SAMPLES, progress_bar=False),
        [
            *_key(),
            ("samples", SAMPLES[:1], V),
            ("samples", object(), T),
            *_count("num_steps", 1),
            *_count("batch_size", 2),
            *_positive("learning_rate"),
            *_positive("t_min"),
            ("t_max", 1e-5, V),
            *_count("hidden", 1),
            *_count("depth", 1),
            *_count("num_frequencies", 1),
            ("weight_decay", -1.0, V),
            ("weight_decay", "a", T),
            ("ema", 1.0, V),
            ("ema", "a", T),
            *_count("chunk_size", 1),
            ("progress_bar", 1, T),
        ],
    ),
    "rtk_blackjax.adapters.learned.make_score_network": Case(
        dict(rng_key=KEY, samples=SAMPLES),
        [
            *_key(),
            ("samples", SAMPLES[:1], V),
            *_count("hidden", 1),
            *_count("depth", 1),
            *_count("num_frequencies", 1),
            *_positive("t_min"),
        ],
    ),
    "rtk_blackjax.adapters.learned.train_energy": Case(
        # the trainer of train_score: the same checks
        dict(rng_key=KEY, samples=SAMPLES, progress_bar=False),
        [
            *_key(),
            ("samples", SAMPLES[:1], V),
            ("samples", object(), T),
            *_count("num_steps", 1),
            *_count("batch_size", 2),
            *_positive("learning_rate"),
            *_positive("t_min"),
            ("t_max", 1e-5, V),
            *_count("hidden", 1),
            *_count("depth", 1),
            *_count("num_frequencies", 1),
            ("weight_decay", -1.0, V),
            ("ema", 1.0, V),
            *_count("chunk_size", 1),
            ("progress_bar", 1, T),
        ],
    ),
    "rtk_blackjax.adapters.learned.make_energy_network": Case(
        dict(rng_key=KEY, samples=SAMPLES),
        [
            *_key(),
            ("samples", SAMPLES[:1], V),
            *_count("hidden", 1),
            *_count("depth", 1),
            *_count("num_frequencies", 1),
            *_positive("t_min"),
        ],
    ),
    "rtk_blackjax.adapters.learned_target": Case(
        dict(trained=MISSING), [("trained", lambda x, t: x, T)]
    ),
    "rtk_blackjax.adapters.save_trained": Case(
        dict(path="unused.eqx"), [("trained", "net", T)]
    ),
    "rtk_blackjax.adapters.plot_loss": Case(
        dict(path="unused.png"),
        [("trained", "net", T), *_count("window", 1)],
    ),
    "rtk_blackjax.adapters.prior_predictive_samples": Case(
        dict(rng_key=KEY, model=normal_model, num_samples=3),
        [*_key(), ("model", 1, T), *_count("num_samples", 1)],
    ),
    # ------------------------------------------------------------- diagnostics
    "rtk_blackjax.diagnostics.to_arviz": Case(
        dict(result=MISSING),
        [
            ("result", "result", T),
            *_count("num_chains", 1),
            ("num_chains", 3, V),  # does not divide 4 samples
            ("postprocess_fn", 1, T),
            ("var_name", 1, T),
            ("var_name", "", V),
        ],
        _to_arviz,
    ),
    "rtk_blackjax.diagnostics.segment_diagnostics": Case(
        dict(rng_key=KEY, target=TARGET, times=TIMES, dim=2),
        [
            *_key(),
            *_target(),
            ("times", NOT_INCREASING, V),
            *_count("num_particles", 1),
            *_count("num_chains", 2),
            *_count("num_draws", 4),
            *_count("num_warmup", 0),
            *_positive("dispersion"),
            ("segments", [7], V),
            ("segments", ["a"], T),
            ("inner", "mala", T),
        ],
    ),
    "rtk_blackjax.diagnostics.diagnostics_from_draws": Case(
        dict(draws=DRAWS),
        [
            ("draws", DRAWS[0], V),
            ("segments", [0], V),
            *_count("num_warmup", 0),
            *_count("num_evaluations", 0),
        ],
    ),
    "rtk_blackjax.diagnostics.diagnose": Case(
        dict(diagnostics=_DIAG, warn=False),
        [
            ("diagnostics", "diag", T),
            *_positive("max_rhat"),
            *_positive("min_ess"),
            ("warn", 1, T),
        ],
        _diagnose,
    ),
    "rtk_blackjax.diagnostics.format_table": Case(
        dict(table=MISSING), [("table", "table", T)]
    ),
    "rtk_blackjax.diagnostics.plot_segment_diagnostics": Case(
        dict(diagnostics=_DIAG, path="unused.png"),
        [
            ("diagnostics", "diag", T),
            ("path", "diag.txt", V),
            *_count("max_segments", 1),
            *_count("num_bins", 2),
        ],
    ),
    # ----------------------------------------------------------------- metrics
    "rtk_blackjax.metrics.marginal_accuracy": Case(
        dict(x=SAMPLES, y=SAMPLES),
        [
            ("x", SAMPLES[0], V),
            ("x", SAMPLES + 1j, T),
            ("x", [[1.0], [2.0, 3.0]], V),
            ("y", SAMPLES[:, :1], V),
            *_count("bins", 1),
            ("range_", (1.0, -1.0), V),
        ],
    ),
    "rtk_blackjax.metrics.mode_weight_tv": Case(
        dict(x=SAMPLES, means=np.zeros((1, 2)), weights=[1.0]),
        [
            ("x", SAMPLES[0], V),
            ("means", np.zeros((1, 3)), V),
            ("weights", [0.5], V),
            ("weights", [1.0, 0.0], V),
        ],
    ),
    **{
        f"rtk_blackjax.metrics.{name}": Case(
            dict(x=SAMPLES, exact_variance=np.ones(2)),
            [
                ("x", SAMPLES[0], V),
                ("x", SAMPLES[:1], V),
                ("exact_variance", np.ones(3), V),
                ("exact_variance", -np.ones(2), V),
            ],
        )
        for name in ("variance_errors", "var_rel_err", "var_bias")
    },
    "rtk_blackjax.metrics.sliced_wasserstein": Case(
        dict(x=SAMPLES, y=SAMPLES, rng_key=KEY, num_directions=4),
        [
            ("x", SAMPLES[0], V),
            ("y", SAMPLES[:, :1], V),
            *_key(),
            *_count("num_directions", 1),
            ("p", 0.5, V),
            ("p", "a", T),
        ],
    ),
    "rtk_blackjax.metrics.mmd_rbf": Case(
        dict(x=SAMPLES, y=SAMPLES),
        [
            ("x", SAMPLES[0], V),
            *_positive("bandwidth"),
            *_count("max_points", 2),
            ("rng_key", 0, T),
            ("rng_key", KEYS, V),
        ],
    ),
    "rtk_blackjax.metrics.evaluate": Case(
        dict(x=SAMPLES, reference=SAMPLES, rng_key=KEY),
        [
            ("x", SAMPLES[0], V),
            ("reference", SAMPLES[:, :1], V),
            ("weights", [1.0], V),  # given without means
            ("exact_variance", np.ones(3), V),
            *_key(),
        ],
    ),
    "rtk_blackjax.mcmc.rtk.expected_nfe": Case(
        dict(inner=rb.mala_inner(), steps_per_segment=[1, 2]),
        [
            ("inner", "mala", T),
            ("steps_per_segment", [1, -2], V),
            ("curvature", "bad", V),
        ],
    ),
    "rtk_blackjax.segment.curvature_evaluations": Case(
        dict(curvature="diagonal"), [("curvature", "bad", V), ("curvature", 1, V)]
    ),
    "rtk_blackjax.mcmc.rtk.segment_cost": Case(
        dict(inner=rb.mala_inner()),
        [("inner", "mala", T), ("curvature", "bad", V)],
    ),
    "rtk_blackjax.mcmc.inner.counted": Case(
        dict(
            init=lambda key, x, logdensity_fn: x,
            step=lambda key, state, logdensity_fn: (state, None),
            parameters=lambda geometry: {},
            evaluations_at_init=1,
            evaluations_per_step=1,
        ),
        [
            ("init", 1, T),
            ("step", 1, T),
            ("parameters", 1, T),
            ("evaluations_at_init", -1, V),
            ("evaluations_at_init", 1.5, T),
            ("evaluations_per_step", -1, V),
        ],
    ),
    "rtk_blackjax.mcmc.score_energy.line_integral_energy": Case(
        dict(inner=rb.mala_inner(), rule="lobatto", num_nodes=3),
        [
            ("inner", "mala", T),
            ("rule", "bad", V),
            ("num_nodes", 1.5, T),
        ],
    ),
    "rtk_blackjax.policy.configure": Case(
        dict(method="rtk-mala", target=TARGET, nfe=105),
        [
            ("method", "x", V),
            ("target", lambda x, t: -x, T),
            ("nfe", 2.5, T),
            ("nfe", 0, V),
            ("segments", 1.5, T),
            ("grid", "cosine", V),
            ("horizon", "5", T),
            ("times", NOT_INCREASING, V),
        ],
    ),
    "rtk_blackjax.metrics.noise_floors": Case(
        dict(reference_a=SAMPLES, reference_b=SAMPLES, rng_key=KEY),
        [
            # noise_floors is evaluate(reference_a, reference_b): its messages
            # name evaluate's x and reference (tests/test_metrics.py relies on it).
            ("reference_a", SAMPLES[0], V, "x"),
            ("reference_b", SAMPLES[:, :1], V, "reference"),
            *_key(),
        ],
    ),
    # --------------------------------------------------------------- posterior
    "rtk_blackjax.posterior.sample": Case(
        dict(rng_key=KEY, model=prior_model, num_samples=4, prior_nfe=7, y=1.0),
        [
            *_key(),
            ("model", 1, T),
            *_count("num_samples", 2),
            *_count("prior_nfe", 1),
            ("method", "bogus", V),
            *_count("num_chains", 1),
            *_count("num_replicas", 1),
            ("method_options", [1], T),
            ("y", MISSING, V, "model_kwargs"),
        ],
    ),
    "rtk_blackjax.posterior.twisted_smc": Case(
        dict(
            rng_key=KEY,
            prior=TARGET,
            dim=2,
            likelihood=_LIKELIHOOD,
            num_particles=4,
            prior_nfe_budget=7,
        ),
        [
            *_key(),
            *_target("prior"),
            *_count("dim", 1),
            ("likelihood", "likelihood", T),
            *_count("num_particles", 2),
            *_count("num_inner_steps", 0),
            *_count("num_param_steps", 0),
            *_positive("step_scale"),
            ("ess_threshold", 0.0, V),
            ("prior_nfe_budget", 2, V),
            ("prior_nfe_budget", MISSING, V),
            ("times", NOT_INCREASING, V),
            *_positive("prior_variance"),
            ("curvature", "hessian", V),
        ],
    ),
    "rtk_blackjax.posterior.tds": Case(
        dict(
            rng_key=KEY,
            prior=TARGET,
            dim=2,
            likelihood=_LIKELIHOOD,
            num_particles=4,
            prior_nfe_budget=7,
        ),
        [
            *_key(),
            *_target("prior"),
            ("likelihood", "likelihood", T),
            *_count("num_particles", 2),
            *_count("num_param_steps", 0),
            ("ess_threshold", 0.0, V),
            ("prior_nfe_budget", 2, V),
        ],
    ),
    "rtk_blackjax.posterior.mcgdiff": Case(
        dict(
            rng_key=KEY,
            prior=TARGET,
            dim=2,
            likelihood=_LIKELIHOOD,
            num_particles=4,
            prior_nfe_budget=7,
        ),
        [
            *_key(),
            *_target("prior"),
            *_count("dim", 1),
            ("likelihood", "likelihood", T),
            *_count("num_particles", 2),
            *_count("prior_nfe_budget", 1),
            ("prior_nfe_budget", MISSING, V),
            ("times", NOT_INCREASING, V),
        ],
    ),
    "rtk_blackjax.posterior.linear_gaussian_form": Case(
        dict(likelihood=_LIKELIHOOD, dim=2),
        [
            ("likelihood", "likelihood", T),
            *_count("dim", 1),
            ("likelihood", rb.posterior.Likelihood(other=lambda x, u: 0.0), V),
        ],
    ),
    "rtk_blackjax.posterior.twisted.linear_gaussian_likelihood": Case(
        dict(A=A, y=Y, sigma=SIGMA),
        [("A", np.ones(3), V), ("y", np.ones(3), V), *_positive("sigma")],
    ),
    "rtk_blackjax.posterior.twisted.collapse_warning": Case(
        dict(ess=np.ones(3), num_particles=10),
        [
            ("ess", np.full(3, np.nan), V),
            *_count("num_particles", 1),
            *_positive("floor"),
        ],
    ),
    "rtk_blackjax.posterior.twisted.lineages": Case(
        dict(parent=np.array([[0, 0, 2], [1, 1, 2], [0, 1, 1]])),
        [
            ("parent", np.zeros((2, 3)), T),
            ("parent", np.array(["a", "b"]), T),
            ("parent", np.zeros(3, int), V),
            ("parent", np.zeros((0, 3), int), V),
            ("parent", np.array([[0, 3, 1]]), V),
            ("parent", np.array([[0, -1, 1]]), V),
        ],
    ),
    "rtk_blackjax.posterior.twisted.lineage_warning": Case(
        dict(lineages=np.array([1, 3, 9, 20]), times=np.array([2.0, 0.4, 0.1, 0.0])),
        [
            ("lineages", np.ones(3), V),
            ("lineages", np.ones((2, 2, 4)), V),
            ("lineages", np.array(["a", "b", "c", "d"]), V),
            ("times", np.array([2.0, 0.4, np.nan, 0.0]), V),
            ("times", np.array([2.0, -0.4, 0.1, 0.0]), V),
            ("times", np.zeros(4), V),
            ("times", "abcd", T),
            *_positive("floor"),
        ],
    ),
    "rtk_blackjax.posterior.twisted.mid_time_index": Case(
        dict(times=np.array([8.0, 1.0, 0.4, 0.1, 0.0])),
        [
            ("times", np.zeros(3), V),
            ("times", np.ones((2, 2)), V),
            ("times", np.array([1.0, np.inf, 0.0]), V),
            ("times", ["a", "b"], T),
        ],
    ),
    "rtk_blackjax.posterior.reference.reference_posterior": Case(
        dict(
            rng_key=KEY,
            prior=_REF_PRIOR,
            obs_matrix=np.array([[1.0, 0.0]]),
            log_likelihood_z=reference.linear_gaussian_likelihood(np.ones(1), 1.0),
            num_samples=4,
            num_importance=64,
            num_rounds=1,
        ),
        [
            *_key(),
            ("prior", TARGET, T),
            ("obs_matrix", np.ones((1, 3)), V),
            ("log_likelihood_z", "f", T),
            *_count("num_samples", 1),
            *_count("num_importance", 2),
            *_count("num_terms", 1),
            *_positive("defensive"),
            ("memory", 1.0, V),
        ],
    ),
    "rtk_blackjax.posterior.reference.assign_components": Case(
        dict(prior=_REF_PRIOR, x=np.zeros((3, 2))),
        [("prior", TARGET, T), ("x", np.zeros((3, 4)), V)],
    ),
    "rtk_blackjax.posterior.reference.component_tv": Case(
        dict(
            prior=_REF_PRIOR,
            # anything with the prior's component weights serves as the reference
            reference=types.SimpleNamespace(component_weights=np.full(25, 0.04)),
            x=np.zeros((3, 2)),
        ),
        [("prior", TARGET, T), ("x", np.zeros((3, 4)), V)],
    ),
    "rtk_blackjax.posterior.reference.linear_gaussian_likelihood": Case(
        dict(y=np.ones(2), sigma=1.0),
        [("y", np.ones((2, 2)), V), ("y", "y", T), *_positive("sigma")],
    ),
    "rtk_blackjax.posterior.reference.phase_retrieval_likelihood": Case(
        dict(y=np.ones(2), sigma=1.0),
        [("y", np.full(2, np.nan), V), *_positive("sigma")],
    ),
    "rtk_blackjax.posterior.reference.student_t_likelihood": Case(
        dict(y=np.ones(2), sigma=1.0, df=3.0),
        [("y", np.ones((2, 2)), V), *_positive("sigma"), *_positive("df")],
    ),
    "rtk_blackjax.posterior.reference.poisson_likelihood": Case(
        dict(y=np.ones(2)),
        [("y", np.ones((2, 2)), V), *_positive("scale"), ("link", "relu", V)],
    ),
    "rtk_blackjax.posterior.reference.make_nonlinear_problem": Case(
        dict(seed=0, dim=4, obs_dim=2),
        [
            ("seed", 1.5, T),
            *_count("dim", 2),
            *_count("obs_dim", 1),
            ("obs_dim", 5, V),
            ("likelihood", "cubic", V),
        ],
    ),
    "rtk_blackjax.posterior.reference.sigma_marginal_linear_gaussian": Case(
        dict(
            prior=_REF_PRIOR,
            obs_matrix=np.eye(2),
            y=np.ones(2),
            sigma_log_prior=lambda s: -0.5 * s**2,
            grid=np.linspace(1e-3, 8.0, 200),
        ),
        [
            ("prior", TARGET, T),
            ("obs_matrix", np.ones((2, 3)), V),
            ("y", np.ones(3), V),
            ("grid", np.linspace(1.0, -1.0, 5), V),
        ],
    ),
    "rtk_blackjax.posterior.reference.ks_distance": Case(
        dict(samples=np.ones(5), reference=_REF_SIGMA),
        [("samples", np.ones((2, 2)), V), ("samples", np.full(3, np.nan), V)],
    ),
    "rtk_blackjax.posterior.mode_disagreement": Case(
        dict(chains=np.zeros((2, 5, 1))),
        [
            ("chains", np.zeros(3), V),
            *_count("max_clusters", 1),
            ("min_tv", 1.5, V),
            ("min_tv", "a", T),
        ],
    ),
    "rtk_blackjax.posterior.model.inspect_model": Case(
        dict(rng_key=KEY, model=prior_model, model_args=(), model_kwargs={"y": 1.0}),
        [*_key(), ("model", 1, T), ("model_kwargs", {}, V)],
    ),
    "rtk_blackjax.posterior.model.model_likelihood": Case(
        dict(rng_key=KEY, model=prior_model, model_args=(), model_kwargs={"y": 1.0}),
        [*_key(), ("model", 1, T), ("model_kwargs", {}, V)],
    ),
    "rtk_blackjax.posterior.split_gibbs": Case(
        dict(
            rng_key=KEY,
            model=prior_model,
            num_chains=2,
            num_draws=2,
            sweeps_per_stage=1,
            num_segments=4,
            y=1.0,
        ),
        [
            *_key(),
            ("model", 1, T),
            *_count("num_chains", 1),
            *_count("num_draws", 1),
            *_count("likelihood_steps", 1),
            *_positive("rho_start"),
            ("y", MISSING, V, "model_kwargs"),
            *_positive("rho_final"),
            *_count("num_segments", 2),
            *_count("inner_steps", 0),
            *_positive("horizon"),
            *_positive("prior_nfe_budget"),
            *_count("num_stages", 1),
            *_count("sweeps_per_stage", 1),
        ],
    ),
    "rtk_blackjax.posterior.split_gibbs_linear_gaussian": Case(
        dict(_LINEAR, num_chains=2, num_draws=2, prior_nfe_budget=400),
        [
            *_LINEAR_BAD,
            *_count("num_chains", 1),
            *_count("num_draws", 1),
            *_positive("prior_nfe_budget"),
            *_positive("rho_start"),
            ("ess_threshold", 0.0, V),
            ("ess_threshold", "a", T),
            ("reweight", 1, T),
        ],
    ),
    "rtk_blackjax.posterior.prior_block.prior_block": Case(
        dict(prior=TARGET, rho_final=0.1),
        [
            *_target("prior"),
            *_positive("rho_final"),
            ("rho_final", 1e6, V),
            *_count("num_segments", 2),
            *_positive("horizon"),
            *_count("inner_steps", 0),
        ],
    ),
    "rtk_blackjax.posterior.posterior_to_arviz": Case(
        dict(result=MISSING), [("result", "result", T), ("var_name", 1, T)]
    ),
    "rtk_blackjax.posterior.smc_linear_gaussian": Case(
        dict(_LINEAR, num_particles=4, prior_nfe_budget=31),
        [
            *_LINEAR_BAD,
            *_count("num_particles", 2),
            *_count("num_inner_steps", 0),
            *_positive("step_scale"),
            ("ess_threshold", 0.0, V),
            ("ess_threshold", "a", T),
            ("twist", "bogus", V),
            ("prior_nfe_budget", 2, V),
            ("prior_nfe_budget", MISSING, V),
            ("times", NOT_INCREASING, V),
            ("prior_covariance", -1.0, V),
        ],
    ),
    "rtk_blackjax.posterior.calibrate_grid": Case(
        dict(rng_key=KEY, prior=TARGET, dim=2, num_segments=8),
        [
            *_key(),
            *_count("dim", 1),
            *_count("num_segments", 2),
            *_count("pilot_segments", 2),
            *_count("num_particles", 2),
            ("uniform_fraction", 1.5, V),
            ("uniform_fraction", "a", T),
            ("signal", "bogus", V),
        ],
    ),
    "calibrate_grid(signal='weights')": Case(
        dict(rng_key=KEY, prior=TARGET, dim=2, num_segments=8, signal="weights"),
        [
            ("prior", rb.targets.score_only(TARGET), V, "logdensity"),
            *_count("num_particles", 2),
        ],
        call=rb.posterior.calibrate_grid,
    ),
    "rtk_blackjax.posterior.smc.segments_for_budget": Case(
        dict(nfe=31, num_inner_steps=1),
        [("nfe", 2, V, "prior_nfe_budget"), *_count("num_inner_steps", 0)],
    ),
    "rtk_blackjax.posterior.dps": Case(
        dict(
            rng_key=KEY,
            prior=TARGET,
            dim=2,
            likelihood=_LIKELIHOOD,
            num_samples=4,
            prior_nfe_budget=8,
        ),
        [
            *_key(),
            *_target("prior"),
            *_count("dim", 1),
            ("likelihood", "likelihood", T),
            *_count("num_samples", 1),
            ("zeta", -1.0, V),
            ("zeta", "a", T),
            *_positive("param_step"),
            ("prior_nfe_budget", 1, V),
            ("prior_nfe_budget", MISSING, V),
        ],
    ),
    "rtk_blackjax.posterior.daps": Case(
        dict(
            rng_key=KEY,
            prior=TARGET,
            dim=2,
            likelihood=_LIKELIHOOD,
            num_samples=4,
            prior_nfe_budget=8,
        ),
        [
            *_key(),
            *_target("prior"),
            *_count("dim", 1),
            ("likelihood", "likelihood", T),
            *_count("num_samples", 1),
            *_count("num_ode_steps", 1),
            *_count("num_langevin_steps", 0),
            *_positive("step_scale"),
            *_positive("sigma_max"),
            ("sigma_min", 1e3, V),
            ("ode_sigma_min", 0.5, V),
            ("prior_nfe_budget", MISSING, V),
        ],
    ),
    "rtk_blackjax.posterior.daps.annealing_levels": Case(
        dict(num_levels=3),
        [*_count("num_levels", 1), *_positive("sigma_max"), ("sigma_min", 1e3, V)],
    ),
    "rtk_blackjax.posterior.dps_linear_gaussian": Case(
        dict(_LINEAR, num_samples=4, prior_nfe_budget=40),
        [
            *_LINEAR_BAD,
            *_count("num_samples", 1),
            ("zeta", -1.0, V),
            ("zeta", "a", T),
            ("prior_nfe_budget", 1, V),
        ],
    ),
    "rtk_blackjax.posterior.nuts_linear_gaussian": Case(
        dict(_LINEAR, num_chains=2, num_draws=2),
        [
            *_LINEAR_BAD,
            ("prior", rb.targets.score_only(TARGET), V),
            *_count("num_chains", 1),
            *_count("num_draws", 1),
            *_count("num_warmup", 1),
            ("target_acceptance_rate", 1.5, V),
        ],
    ),
    "rtk_blackjax.posterior.base.check_linear_gaussian": Case(
        dict(prior=TARGET, A=A, y=Y, sigma=SIGMA),
        [r for r in _LINEAR_BAD if r[0] != "rng_key"],
    ),
    "rtk_blackjax.posterior.gmm.grid_prior": Case(
        dict(dim=2), [*_count("dim", 2), *_positive("spacing")]
    ),
    "rtk_blackjax.posterior.gmm.make_problem": Case(
        dict(seed=0, dim=4, obs_dim=1),
        [*_count("dim", 2), *_count("obs_dim", 1), ("obs_dim", 5, V)],
    ),
    "rtk_blackjax.posterior.gmm.exact_posterior": Case(
        dict(prior=gmm.grid_prior(2), obs_matrix=A, y=Y, sigma=SIGMA),
        [
            ("prior", TARGET, T),
            ("obs_matrix", np.ones((1, 3)), V),
            ("sigma", -1.0, V),
        ],
    ),
    "rtk_blackjax.posterior.gmm.sample_posterior": Case(
        dict(rng_key=KEY, posterior=MISSING, num_samples=3),
        [*_key(), *_count("num_samples", 1)],
    ),
    "rtk_blackjax.posterior.gmm.assign_modes": Case(
        dict(posterior=MISSING, x=np.zeros((3, 4))), [("x", np.zeros((3, 2)), V)]
    ),
    "rtk_blackjax.posterior.gmm.mode_tv": Case(
        dict(posterior=MISSING, x=np.zeros((3, 4))),
        [("x", np.full((3, 4), np.nan), V)],
    ),
    # ----------------------------------------------------------------- targets
    "rtk_blackjax.targets.from_score": Case(
        dict(score_fn=TARGET.score), [("score_fn", 1, T), ("logdensity_fn", 1, T)]
    ),
    "rtk_blackjax.targets.score_only": Case(dict(target=TARGET), _target()),
    "rtk_blackjax.targets.from_energy": Case(
        dict(energy_fn=TARGET.logdensity), [("energy_fn", 1, T)]
    ),
    "rtk_blackjax.targets.from_distribution": Case(
        dict(distribution=dist.Normal(0.0, 1.0)),
        [("distribution", 1, T), ("distribution", dist.Gamma(1.0, 1.0), T)],
    ),
    "rtk_blackjax.targets.mixture_from_distribution": Case(
        dict(distribution=dist.Normal(0.0, 1.0)), [("distribution", 1, T)]
    ),
    **{
        f"rtk_blackjax.targets.{name}": Case(
            {}, [*_count("dim", 2), *_positive("variance")]
        )
        for name in ("chessboard", "chessboard_mixture")
    },
    "rtk_blackjax.targets.gaussian": Case(
        dict(mean=np.zeros(2), covariance=1.0),
        [
            ("mean", np.zeros((2, 2)), V),
            ("mean", ["a"], T),
            ("covariance", np.ones((2, 2, 2)), V),
            ("covariance", -1.0, V),
        ],
    ),
    **{
        f"rtk_blackjax.targets.{name}": Case(
            dict(means=np.zeros((2, 2)), covariances=1.0),
            [
                ("means", np.zeros(2), V),
                ("means", [["a"]], T),
                ("covariances", -1.0, V),
                ("covariances", np.ones(3), V),
                ("weights", [-1.0, 1.0], V),
                ("weights", [1.0], V),
            ],
        )
        for name in ("gaussian_mixture", "mixture_from_arrays")
    },
    "rtk_blackjax.targets.random_mixture": Case(
        dict(seed=0, dim=2),
        [
            *_count("dim", 1),
            *_count("num_components", 1),
            ("diagonal", 1, T),
            ("variance_range", (0.0, 1.0), V),
            ("variance_range", (1.0, 0.1), V),
            ("variance_range", 0.5, V),
        ],
    ),
    "rtk_blackjax.targets.random_mog": Case(
        dict(seed=0, dim=2), [*_count("dim", 1), *_count("num_components", 1)]
    ),
    "rtk_blackjax.targets.sample_mixture": Case(
        dict(rng_key=KEY, params=TARGET.mixture, num_samples=3),
        [*_key(), *_count("num_samples", 0)],
    ),
    "rtk_blackjax.sbc.sbc_ranks": Case(
        dict(
            rng_key=KEY,
            simulate=_SBC_SIM,
            posterior_draws=_SBC_DRAWS,
            statistics=_SBC_STATS,
            num_replications=2,
        ),
        [
            *_key(),
            ("simulate", 1, T),
            ("posterior_draws", 1, T),
            ("statistics", 1, T),
            *_count("num_replications", 1),
            *_count("num_draws", 1),
            ("num_draws", 5, V),
        ],
    ),
    "rtk_blackjax.sbc.rank_statistics": Case(
        dict(rng_key=KEY, truth={"a": 0.5}, draws={"a": np.arange(4.0)}),
        [
            *_key(),
            ("truth", 1.0, T),
            ("truth", {}, V),
            ("truth", {"a": np.zeros(2)}, V),
            ("draws", 1.0, T),
            ("draws", {"b": np.zeros(3)}, V),
            *_count("num_draws", 1),
            ("num_draws", 5, V),
        ],
    ),
    "rtk_blackjax.sbc.rank_uniformity": Case(
        dict(ranks=_SBC_RANKS, num_draws=19),
        [
            ("ranks", 1, T),
            ("ranks", {}, V),
            ("ranks", {"a": np.array([20])}, V),
            *_count("num_draws", 1),
            *_count("num_bins", 2),
            ("num_bins", 7, V),
            ("level", 0.0, V),
            ("level", 1.5, V),
            ("level", "a", T),
        ],
    ),
    "rtk_blackjax.sbc.plot_rank_histograms": Case(
        dict(ranks=_SBC_RANKS, num_draws=19, path="ranks.png"),
        [
            ("ranks", 1, T),
            ("ranks", {"a": np.array([-1])}, V),
            *_count("num_draws", 1),
            ("num_bins", 7, V),
        ],
    ),
}

# Arguments that other valid arguments must accompany (row -> extra kwargs).
_WITH = {
    ("rtk_blackjax.mcmc.score_energy.line_integral_logdensity", "anchor_score"): dict(
        rule="lobatto"
    ),
}


def _fill_missing(path, kwargs):
    """Valid values that cost a run or a file, built on first use."""
    posterior = "rtk_blackjax.posterior.gmm."
    if path.startswith(posterior) and kwargs.get("posterior") is MISSING:
        kwargs["posterior"] = gmm.make_problem(0, 4, 1).posterior
    if path == "rtk_blackjax.adapters.learned_target" and kwargs["trained"] is MISSING:
        kwargs["trained"] = _trained()
    if path in (
        "rtk_blackjax.adapters.save_trained",
        "rtk_blackjax.adapters.plot_loss",
    ):
        kwargs.setdefault("trained", _trained())
    if path == "rtk_blackjax.diagnostics.format_table" and kwargs["table"] is MISSING:
        kwargs["table"] = rb.diagnostics.diagnose(_DIAG, warn=False)
    if path == "rtk_blackjax.posterior.posterior_to_arviz":
        if kwargs["result"] is MISSING:
            kwargs["result"] = rb.posterior.PosteriorResult(
                np.zeros((2, 3, 2)), 1.0, 1.0, {"prior": np.ones((2, 3))}, {}
            )
    return kwargs


def _resolve(path: str):
    module, _, name = path.rpartition(".")
    return getattr(importlib.import_module(module), name)


def _rows():
    for path, case in CASES.items():
        for row in case.bad:
            arg, value, error = row[:3]
            name = row[3] if len(row) > 3 else arg
            yield pytest.param(
                path, arg, value, error, name, id=f"{path.split('.')[-1]}-{arg}"
            )


def _word(name: str):
    return re.compile(rf"(?<![\w]){re.escape(name)}(?![\w])")


@pytest.mark.parametrize(("path", "arg", "value", "error", "name"), list(_rows()))
def test_bad_input_is_refused_by_name(path, arg, value, error, name, tmp_path):
    case = CASES[path]
    kwargs = dict(case.valid, **_WITH.get((path, arg), {}))
    if value is MISSING:
        kwargs.pop(arg, None)
    else:
        kwargs[arg] = value
    for key in ("path",):
        if key in kwargs and isinstance(kwargs[key], str):
            kwargs[key] = str(tmp_path / kwargs[key])
    kwargs = _fill_missing(path, kwargs)
    fn = case.call or _resolve(path)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(error) as info:
            fn(**kwargs)
    # Exactly the rule's type (not a subclass that happens to match, e.g. a
    # jax error deriving from TypeError) and the argument named as a word.
    assert type(info.value) in (TypeError, ValueError), repr(info.value)
    assert _word(name).search(str(info.value)), (name, str(info.value))


def _public_callables():
    """``(public path, object)`` for every callable in a public ``__all__``."""
    import rtk_blackjax

    names = ["rtk_blackjax"] + [
        m.name
        for m in pkgutil.walk_packages(rtk_blackjax.__path__, "rtk_blackjax.")
        if not any(part.startswith("_") for part in m.name.split(".")[1:])
    ]
    found = []
    for module_name in names:
        if module_name in SKIPPED_MODULES:
            continue
        module = importlib.import_module(module_name)
        for name in getattr(module, "__all__", ()):
            obj = getattr(module, name)
            if inspect.ismodule(obj) or not callable(obj) or _is_data_type(obj):
                continue
            found.append((f"{module_name}.{name}", obj))
    return found


def test_every_public_callable_is_covered():
    covered = {id(_resolve(path)) for path in CASES if path.startswith("rtk_blackjax")}
    exempt = {id(_resolve(path)) for path in EXEMPT}
    missing = sorted(
        path
        for path, obj in _public_callables()
        if id(obj) not in covered and id(obj) not in exempt
    )
    assert not missing, (
        "public callables with neither bad-input cases in CASES nor a reason in "
        f"EXEMPT: {missing}"
    )
    for path, reason in EXEMPT.items():
        assert reason and id(_resolve(path)) not in covered, path


def test_every_row_is_checked_against_a_valid_call():
    # A row only proves something if the same call without it is accepted: check
    # the cheap ones (no sampler compiled) are.
    cheap = [
        "rtk_blackjax.rtk",
        "rtk_blackjax.inner_kernel",
        "rtk_blackjax.score_mala_inner",
        "rtk_blackjax.geometric_grid",
        "rtk_blackjax.logsnr_grid",
        "rtk_blackjax.make_grid",
        "rtk_blackjax.DiffusionPrior",
        "rtk_blackjax.RTKKernel",
        "rtk_blackjax.adapters.rtk_logdensity",
        "rtk_blackjax.adapters.gaussian_reference",
        "rtk_blackjax.metrics.marginal_accuracy",
        "rtk_blackjax.posterior.prior_block.prior_block",
        "rtk_blackjax.posterior.gmm.make_problem",
        "rtk_blackjax.targets.gaussian_mixture",
        "rtk_blackjax.targets.random_mixture",
        "rtk_blackjax.diagnostics.diagnostics_from_draws",
    ]
    for path in cheap:
        _resolve(path)(**CASES[path].valid)


# --------------------------------------------------------------------------
# Issue 13's late or unclear errors, one by one
# --------------------------------------------------------------------------


def test_rtk_logdensity_refuses_a_negative_step_size():
    with pytest.raises(ValueError, match=r"step_size must be a positive"):
        rb.adapters.rtk_logdensity(logdensity_fn, step_size=-1)


def test_hmc_inner_kernel_with_a_negative_step_is_refused_at_construction():
    with pytest.raises(ValueError, match=r"parameters\(geometry\).*step_size"):
        rb.inner_kernel(blackjax.hmc, hmc_rule(-0.1), evaluations_per_step=3)
    # A rule that only works on the real geometry is left alone.
    rb.inner_kernel(blackjax.mala, lambda g: {"step_size": g.gaussian_mean["x"]})


def test_diffusion_prior_checks_dim_at_construction():
    with pytest.raises(ValueError, match=r"\bdim\b.*2, got 3"):
        rb.DiffusionPrior(TARGET, dim=3)
    score_only = rb.targets.from_score(TARGET.score)  # no mixture: traced shapes
    with pytest.raises(ValueError, match=r"dim=3 does not fit"):
        rb.DiffusionPrior(score_only, dim=3)
    assert rb.DiffusionPrior(score_only, dim=2).dim == 2


@pytest.mark.parametrize("call", [_logdensity_step, _rtk_step, _mcmc_run])
def test_integer_seeds_are_refused_with_how_to_make_a_key(call):
    with pytest.raises(TypeError, match=r"rng_key must be a JAX PRNG key.*random\.key"):
        call(0)


def test_sample_model_refuses_an_integer_seed():
    with pytest.raises(TypeError, match=r"rng_key must be a JAX PRNG key"):
        rb.adapters.sample_model(0, normal_model, num_samples=4, y=1.0)


def test_nan_log_density_names_the_site():
    def model(y=None):
        mu = numpyro.sample("mu", dist.Normal(0.0, 1.0))
        numpyro.sample("y", dist.Normal(mu, 1.0), obs=y)

    with pytest.raises(ValueError, match=r"site\(s\) \['y'\] is NaN"):
        rb.adapters.model_density(model, y=jnp.nan)

    def factor_model():
        mu = numpyro.sample("mu", dist.Normal(0.0, 1.0))
        numpyro.factor("bad", jnp.nan * mu)

    with pytest.raises(ValueError, match=r"\['bad'\]"):
        rb.adapters.model_density(factor_model)


def test_split_gibbs_without_observations_says_so():
    with pytest.raises(ValueError, match=r"no observed sample site.*y=y"):
        rb.posterior.split_gibbs(
            KEY, prior_model, num_chains=2, num_draws=2, sweeps_per_stage=1
        )


def test_split_gibbs_refuses_a_float_array_as_key():
    # It used to accept any shape-(2,) array.
    with pytest.raises(TypeError, match="rng_key"):
        rb.posterior.split_gibbs(
            jnp.zeros(2), prior_model, num_chains=2, num_draws=2, y=1.0
        )
