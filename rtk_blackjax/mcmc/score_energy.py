"""Log-density differences of score-only models, by quadrature along a line.

A learned score network gives ``∇ log p_t`` but not ``log p_t``. A Metropolis test
only needs differences, and for a conservative score

    log p_t(x) - log p_t(x_a) = ∫_0^1 <score(x_a + u (x - x_a), t), x - x_a> du,

which a quadrature rule on ``[0, 1]`` estimates from a few score evaluations (each one
counts as an NFE). Two rules:

* ``"legendre"`` — Gauss–Legendre with ``n`` interior nodes: exact when ``log p`` is
  a polynomial of degree ``2n`` along the line; costs ``n`` evaluations.
* ``"lobatto"`` — Gauss–Lobatto with ``n >= 2`` nodes including both ends (exact to
  degree ``2n - 2``). The end nodes are ``score(x_a)`` (computed once per anchor) and
  ``score(x)``, which a gradient-based kernel needs anyway, so it costs only ``n - 2``
  extra evaluations: the trapezoid rule (``n = 2``) is free and exact for a Gaussian.

In RTK, every segment fixes the anchor ``x_a`` at the mean of its Gaussian
approximation, so ``log p_t(x)`` is estimated *relative to one point* and BlackJAX's
MALA can use it unchanged (it only ever subtracts two values).
:func:`line_integral_energy` is that, as a wrapper of an inner kernel: it supplies
the kernel's ``log p_t`` and adds the quadrature's evaluations to its cost.
"""

from collections.abc import Callable
from functools import cache

import jax
import jax.numpy as jnp
import numpy as np
from jax.flatten_util import ravel_pytree

from rtk_blackjax._checks import check_callable, check_choice, check_int
from rtk_blackjax.types import Array, ArrayLikeTree

__all__ = [
    "QUADRATURE_RULES",
    "quadrature_rule",
    "extra_evaluations",
    "line_integral_logdensity",
    "energy_difference",
    "line_integral_energy",
]

QUADRATURE_RULES = ("legendre", "lobatto")


@cache
def quadrature_rule(rule: str, num_nodes: int) -> tuple[np.ndarray, np.ndarray]:
    """Nodes and weights on ``[0, 1]`` of a Gauss–Legendre or Gauss–Lobatto rule.

    Examples
    --------
    >>> nodes, weights = quadrature_rule("lobatto", 3)  # Simpson's rule
    >>> nodes.tolist(), weights.round(6).tolist()
    ([0.0, 0.5, 1.0], [0.166667, 0.666667, 0.166667])
    """
    check_choice("rule", rule, QUADRATURE_RULES)
    num_nodes = check_int("num_nodes", num_nodes)
    if rule == "legendre":
        if num_nodes < 1:
            raise ValueError(
                f"num_nodes must be >= 1 for Gauss–Legendre, got {num_nodes}"
            )
        x, w = np.polynomial.legendre.leggauss(int(num_nodes))
    else:
        if num_nodes < 2:
            raise ValueError(
                f"num_nodes must be >= 2 for Gauss–Lobatto, got {num_nodes}"
            )
        n = int(num_nodes)
        # Interior nodes: roots of P'_{n-1}; weights 2 / (n (n-1) P_{n-1}(x)^2).
        p_prev = np.polynomial.legendre.Legendre.basis(n - 1)
        interior = np.sort(np.real(p_prev.deriv().roots())) if n > 2 else np.array([])
        x = np.concatenate([[-1.0], interior, [1.0]])
        w = 2.0 / (n * (n - 1) * p_prev(x) ** 2)
    return 0.5 * (x + 1.0), 0.5 * w


def extra_evaluations(rule: str, num_nodes: int) -> int:
    """Score evaluations one log-density estimate costs beyond ``score(x)`` itself."""
    quadrature_rule(rule, num_nodes)  # validates
    return num_nodes if rule == "legendre" else num_nodes - 2


def line_integral_logdensity(
    score_fn: Callable,
    time: Array,
    anchor: ArrayLikeTree,
    anchor_score: ArrayLikeTree | None = None,
    *,
    rule: str = "legendre",
    num_nodes: int = 2,
) -> Callable:
    """``x -> log p_t(x) - log p_t(anchor)`` estimated by quadrature, differentiable.

    The returned function is a ``jax.custom_jvp`` whose gradient is ``score(x, t)``
    itself (not the derivative of the quadrature), so a BlackJAX kernel calling
    ``jax.value_and_grad`` on it gets the value estimate and the exact model score
    from one pass; with the Lobatto rule the two share ``score(x)``.

    ``anchor_score`` (``score(anchor, t)``) is required by the Lobatto rule.
    """
    check_callable("score_fn", score_fn, "(x, t) -> score")
    nodes, weights = quadrature_rule(rule, num_nodes)
    anchor_flat, unravel = ravel_pytree(anchor)
    if rule == "lobatto":
        if anchor_score is None:
            raise ValueError("the lobatto rule needs anchor_score = score(anchor, t)")
        anchor_score_flat, _ = ravel_pytree(anchor_score)
        interior_nodes, interior_weights = nodes[1:-1], weights[1:-1]
    else:
        interior_nodes, interior_weights = nodes, weights

    def flat_score(x_flat):
        return ravel_pytree(score_fn(unravel(x_flat), time))[0]

    def value_from(x_flat, score_x_flat):
        delta = x_flat - anchor_flat
        total = jnp.zeros((), x_flat.dtype)
        for u, w in zip(interior_nodes, interior_weights):
            total = total + w * jnp.dot(flat_score(anchor_flat + u * delta), delta)
        if rule == "lobatto":
            total = total + weights[0] * jnp.dot(anchor_score_flat, delta)
            total = total + weights[-1] * jnp.dot(score_x_flat, delta)
        return total

    @jax.custom_jvp
    def logdensity(x):
        x_flat, _ = ravel_pytree(x)
        score_x = flat_score(x_flat) if rule == "lobatto" else None
        return value_from(x_flat, score_x)

    @logdensity.defjvp
    def _jvp(primals, tangents):
        (x,), (dx,) = primals, tangents
        x_flat, _ = ravel_pytree(x)
        dx_flat, _ = ravel_pytree(dx)
        score_x = flat_score(x_flat)
        return value_from(x_flat, score_x), jnp.dot(score_x, dx_flat)

    return logdensity


def energy_difference(
    score_fn: Callable,
    x: ArrayLikeTree,
    x_new: ArrayLikeTree,
    time: Array,
    *,
    rule: str = "legendre",
    num_nodes: int = 3,
) -> Array:
    """Estimate ``log p_t(x_new) - log p_t(x)`` from the score alone.

    Examples
    --------
    >>> import jax.numpy as jnp
    >>> score = lambda x, t: -x  # log p = -|x|^2 / 2 + c
    >>> float(energy_difference(score, jnp.zeros(2), jnp.ones(2), 0.0, num_nodes=1))
    -1.0
    """
    check_callable("score_fn", score_fn, "(x, t) -> score")
    quadrature_rule(rule, num_nodes)  # validates rule and num_nodes first
    anchor_score = score_fn(x, time) if rule == "lobatto" else None
    estimate = line_integral_logdensity(
        score_fn, time, x, anchor_score, rule=rule, num_nodes=num_nodes
    )
    return estimate(x_new)


def line_integral_energy(inner, *, rule: str = "lobatto", num_nodes: int = 3):
    """``inner`` on score-only models: ``log p_t`` by quadrature of the score.

    Wraps an :class:`~rtk_blackjax.mcmc.inner.InnerKernel`: on each segment its
    ``log p_t`` is :func:`line_integral_logdensity` anchored at the segment's
    Gaussian mean, and its cost grows by the quadrature's evaluations: each
    evaluation of the log density and its gradient costs ``1 +``
    :func:`extra_evaluations` instead of 1, and the Lobatto rule spends the
    anchor's score once per segment.

    Examples
    --------
    >>> from rtk_blackjax.mcmc.inner import mala_inner
    >>> line_integral_energy(mala_inner(), rule="legendre", num_nodes=2).cost
    InnerCost(at_init=3, per_step=3)
    """
    from rtk_blackjax.mcmc.inner import InnerKernel  # inner imports this module

    if not isinstance(inner, InnerKernel):
        raise TypeError(
            f"inner must be an rtk_blackjax InnerKernel, got {type(inner).__name__}"
        )
    extra = extra_evaluations(rule, num_nodes)
    anchor = 1 if rule == "lobatto" else 0
    each = 1 + extra  # score(x) itself and the interior nodes

    def log_p(target, geometry):
        anchor_score = (
            target.score(geometry.gaussian_mean, geometry.time)
            if rule == "lobatto"
            else None
        )
        return line_integral_logdensity(
            target.score,
            geometry.time,
            geometry.gaussian_mean,
            anchor_score,
            rule=rule,
            num_nodes=num_nodes,
        )

    def step(rng_key, state, logdensity_fn, **params):
        state, info = inner.step(rng_key, state, logdensity_fn, **params)
        return state, info._replace(num_evaluations=info.num_evaluations * each)

    cost = inner.cost
    return inner._replace(
        step=step,
        cost=cost._replace(
            at_init=cost.at_init * each + anchor,
            per_step=None if cost.per_step is None else cost.per_step * each,
        ),
        log_p=log_p,
    )
