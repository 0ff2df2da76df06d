"""Posterior sampling with diffusion priors (split Gibbs, SMC, DPS baselines)."""

from rtk_blackjax.posterior.base import PosteriorResult

__all__ = ["PosteriorResult"]
