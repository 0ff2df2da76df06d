"""What every posterior sampler with a diffusion prior returns."""

from typing import NamedTuple

from rtk_blackjax.types import Array

__all__ = ["PosteriorResult"]


class PosteriorResult(NamedTuple):
    """Draws of a posterior sampler, shaped for ArviZ (chains x draws).

    samples
        ``(num_chains, num_draws, dim)`` draws of ``x`` (for independent-particle
        samplers such as DPS or SMC: one chain per particle and one draw, or the
        resampled particle cloud reshaped the same way).
    prior_nfe
        Prior score/energy evaluations per returned sample (the cost unit the
        benchmarks compare on): total prior evaluations divided by the number
        of returned samples.
    likelihood_evals
        Likelihood (or likelihood-gradient) evaluations per returned sample.
    acceptance
        Per-block acceptance rates, e.g. ``{"prior": (chains, draws),
        "likelihood": (chains, draws)}``; empty for samplers without Metropolis
        steps.
    extras
        Other sampler-specific statistics (effective sample sizes, ``rho``
        schedule, other latent sites, ...).
    """

    samples: Array
    prior_nfe: float
    likelihood_evals: float
    acceptance: dict
    extras: dict
