"""Step-size adaptation shared by the samplers that tune a step between moves.

One rule, a Robbins–Monro step on the log step size towards a target acceptance::

    log ε ← log ε + rate · (acceptance − target)

used between the segments of :func:`rtk_blackjax.mcmc.logdensity.rtk_logdensity`
(on a step-size *factor*) and during the annealing of
:func:`rtk_blackjax.posterior.split_gibbs.split_gibbs` (on the log step sizes of its
MALA and NUTS blocks). Each caller keeps its own rate. BlackJAX's dual averaging
(``blackjax.adaptation.step_size``) is a warm-up scheme with its own state and
schedule; this is the one-line update these samplers apply once per segment or sweep.
"""

import jax.numpy as jnp

from rtk_blackjax.types import Array, ArrayLike

__all__ = ["MALA_TARGET_ACCEPTANCE", "adapt_step_size"]

# MALA's optimal acceptance (Roberts & Rosenthal 1998).
MALA_TARGET_ACCEPTANCE = 0.574


def adapt_step_size(
    step_size: ArrayLike,
    acceptance: ArrayLike,
    target: float,
    rate: float,
    *,
    log_scale: bool = False,
) -> Array:
    """One Robbins–Monro step of the log step size towards ``target`` acceptance.

    Parameters
    ----------
    step_size
        The step size ``ε`` (or ``log ε`` with ``log_scale=True``); any shape.
    acceptance
        Observed (mean) acceptance probability, broadcastable to ``step_size``.
    target
        Target acceptance probability.
    rate
        Learning rate of ``log ε``.
    log_scale
        Whether ``step_size`` holds ``log ε``: then ``log ε + rate (acceptance −
        target)`` is returned, otherwise ``ε · exp(rate (acceptance − target))``.
        A caller that carries ``log ε`` keeps it (no ``exp``/``log`` round trip).

    Returns
    -------
    Array
        The updated step size, in the scale it was given.

    Examples
    --------
    >>> round(float(adapt_step_size(0.1, 0.574, 0.574, 1.5)), 6)
    0.1
    >>> float(adapt_step_size(0.0, 0.75, 0.25, 0.5, log_scale=True))
    0.25
    """
    increment = rate * (acceptance - target)
    if log_scale:
        return step_size + increment
    return step_size * jnp.exp(increment)
