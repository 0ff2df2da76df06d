"""Inner kernels: how a BlackJAX kernel is plugged into the RTK outer kernel.

Each RTK segment is a sampling problem ``q_k`` solved by a few steps of an MCMC
kernel. The contract (:class:`InnerKernel`) is BlackJAX's, the one SMC uses
(``mcmc_init_fn``, ``mcmc_step_fn``, ``mcmc_parameters``)::

    state = inner.init(rng_key, position, logdensity_fn)
    state, info = inner.step(rng_key, state, logdensity_fn, **params)
    params = inner.parameters(geometry)          # from the segment's SegmentGeometry

with one addition: ``info`` is an :class:`InnerInfo`, which says the step's
acceptance and its cost in score/energy evaluations (NFE), so the outer kernel
never needs to know which BlackJAX kernel runs. The rest is declared, not computed
by the outer kernel: the static cost (:class:`InnerCost`, for budgets), how to read
``∇ log q_k`` off a state (score recovery, :func:`rtk_blackjax.segment.score_from_gradient`
does the arithmetic) and what the kernel needs of ``log p_t`` (``log_p``; the segment
module builds ``log q_k`` from it, :func:`rtk_blackjax.segment.logdensity_source`).

The pieces compose like Optax transformations: :func:`counted` turns any kernel
with BlackJAX's contract into an :class:`InnerKernel` (cost accounting), and
:func:`rtk_blackjax.mcmc.score_energy.line_integral_energy` wraps one so that it
runs on score-only models. :func:`inner_kernel` does the first for any
``blackjax.<algorithm>``: its NFE per step comes from its info where BlackJAX
reports it (``blackjax.hmc``, ``blackjax.nuts``: ``num_integration_steps``), is
known for the one-evaluation kernels, and must be declared otherwise.

Only the parameters change from segment to segment; deriving them from the segment's
geometry is how step sizes are set automatically: users never tune a step size per
segment.
"""

from collections.abc import Callable
from typing import Any, NamedTuple

import blackjax
import blackjax.mcmc.barker
import blackjax.mcmc.dynamic_hmc
import blackjax.mcmc.hmc
import blackjax.mcmc.mala
import blackjax.mcmc.nuts
import blackjax.mcmc.random_walk
import jax
import jax.numpy as jnp
import numpy as np
from jax.flatten_util import ravel_pytree

from rtk_blackjax._checks import (
    check_bool,
    check_callable,
    check_choice,
    check_int,
    check_positive,
)
from rtk_blackjax.mcmc import score_energy, uld
from rtk_blackjax.segment import SegmentGeometry
from rtk_blackjax.types import Array, PRNGKey

__all__ = [
    "SegmentGeometry",
    "InnerKernel",
    "InnerInfo",
    "InnerCost",
    "LOG_P_NEEDS",
    "counted",
    "inner_kernel",
    "mala_inner",
    "score_mala_inner",
    "uld_inner",
    "independence_inner",
    "mala_step_size",
]

# Quadrature nodes of score-only MALA: more would be absurd (each is a score call).
_MAX_NODES = 64
# What an inner kernel needs of log p_t (or a callable that estimates it).
LOG_P_NEEDS = ("value", "gradient")


class InnerInfo(NamedTuple):
    """What one inner step reports to the outer kernel.

    acceptance_rate
        Acceptance probability of the step (1 for unadjusted kernels).
    num_evaluations
        Score/energy evaluations (NFE) the step cost.
    info
        The wrapped kernel's own info (e.g. ``blackjax.mala``'s ``MALAInfo``).
    """

    acceptance_rate: Array
    num_evaluations: Array
    info: Any


class InnerCost(NamedTuple):
    """The static NFE of an inner kernel, for budgets (:func:`rtk_blackjax.mcmc.rtk.expected_nfe`).

    at_init
        Evaluations of ``init``.
    per_step
        Evaluations of one ``step``; ``None`` when only the step's info knows it
        (e.g. NUTS, whose trajectory length varies).
    """

    at_init: int
    per_step: int | None


class InnerKernel(NamedTuple):
    """A kernel with BlackJAX's contract plus the rule that sets its parameters.

    init
        ``init(rng_key, position, logdensity_fn) -> state``.
    step
        ``step(rng_key, state, logdensity_fn, **params) -> (state, InnerInfo)``.
    parameters
        ``parameters(geometry: SegmentGeometry) -> dict`` of keyword arguments of
        ``step`` (e.g. ``{"step_size": ...}``), fixed for the whole inner chain of one
        particle on one segment, so each inner step leaves ``q_k`` invariant.
    cost
        The declared :class:`InnerCost` (the per-step NFE actually spent is in
        each :class:`InnerInfo`).
    gradient_of
        ``state -> ∇ log q_k(position)`` when the state caches it (MALA does), so the
        outer kernel recovers the score at the segment's output without another
        evaluation; ``None`` costs one extra evaluation per segment.
    log_p
        What the kernel needs of ``log p_t``: ``"value"`` (Metropolis tests need
        log-density differences: the target's), ``"gradient"`` (only ``∇ log q_k``:
        runs on score-only targets) or ``(target, geometry) -> (x -> log p_t(x) +
        const)``, an estimate it brings (score-only models,
        :mod:`rtk_blackjax.mcmc.score_energy`).
    """

    init: Callable
    step: Callable
    parameters: Callable[[SegmentGeometry], dict]
    cost: InnerCost
    gradient_of: Callable | None = None
    log_p: str | Callable = "value"


def _acceptance_rate(info):
    return info.acceptance_rate


def counted(
    init: Callable,
    step: Callable,
    parameters: Callable[[SegmentGeometry], dict],
    *,
    evaluations_at_init: int,
    evaluations_per_step: int | Callable,
    acceptance_of: Callable = _acceptance_rate,
    gradient_of: Callable | None = None,
    log_p: str | Callable = "value",
) -> InnerKernel:
    """An :class:`InnerKernel` from a kernel with BlackJAX's contract: cost accounting.

    Parameters
    ----------
    init, step
        ``init(rng_key, position, logdensity_fn) -> state`` and ``step(rng_key,
        state, logdensity_fn, **params) -> (state, info)`` with the kernel's own
        ``info``.
    parameters
        The rule ``geometry -> dict`` of keyword arguments of ``step``.
    evaluations_at_init
        NFE of ``init``.
    evaluations_per_step
        NFE of one ``step``: an int, or ``info -> count`` when the kernel reports it.
    acceptance_of
        ``info -> acceptance rate`` of one step.
    gradient_of, log_p
        As in :class:`InnerKernel`.
    """
    check_callable("init", init, "(rng_key, position, logdensity_fn) -> state")
    check_callable("step", step, "(rng_key, state, logdensity_fn, **params)")
    check_callable("parameters", parameters, "geometry -> dict of kernel args")
    at_init = check_int("evaluations_at_init", evaluations_at_init, minimum=0)
    if callable(evaluations_per_step):
        per_step, evaluations_of = None, evaluations_per_step
    else:
        per_step = check_int("evaluations_per_step", evaluations_per_step, minimum=0)
        evaluations_of = lambda info: per_step  # noqa: E731
    check_callable("acceptance_of", acceptance_of, "info -> acceptance rate")
    if gradient_of is not None:
        check_callable("gradient_of", gradient_of, "state -> gradient of log q_k")
    if not callable(log_p) and log_p not in LOG_P_NEEDS:
        raise ValueError(
            f"log_p must be one of {LOG_P_NEEDS} or a callable, got {log_p!r}"
        )

    def counted_step(rng_key, state, logdensity_fn, **params):
        state, info = step(rng_key, state, logdensity_fn, **params)
        nfe = jnp.asarray(evaluations_of(info), jnp.int32)
        return state, InnerInfo(acceptance_of(info), nfe, info)

    return InnerKernel(
        init=init,
        step=counted_step,
        parameters=parameters,
        cost=InnerCost(at_init, per_step),
        gradient_of=gradient_of,
        log_p=log_p,
    )


def _integration_steps(info):
    return info.num_integration_steps


# NFE per step of the BlackJAX kernels whose cost is known, keyed by their
# ``build_kernel``: read from the info where BlackJAX reports it (one gradient per
# leapfrog step, the last one also giving the log density), else the one
# log-density (and gradient) evaluation at the proposal.
_KNOWN_COSTS = {
    blackjax.mcmc.hmc.build_kernel: _integration_steps,
    blackjax.mcmc.nuts.build_kernel: _integration_steps,
    blackjax.mcmc.dynamic_hmc.build_kernel: _integration_steps,
    blackjax.mcmc.mala.build_kernel: 1,
    blackjax.mcmc.barker.build_kernel: 1,
    blackjax.mcmc.random_walk.build_irmh: 1,
    blackjax.mcmc.random_walk.build_rmh: 1,
}


def inner_kernel(
    algorithm,
    parameters: Callable[[SegmentGeometry], dict],
    *,
    init_needs_key: bool = False,
    evaluations_at_init: int = 1,
    evaluations_per_step: int | Callable | None = None,
    gradient_of: Callable | None = None,
    acceptance_of: Callable | None = None,
    needs_logdensity: bool = True,
    energy: Callable | None = None,
) -> InnerKernel:
    """Plug any BlackJAX algorithm (``blackjax.mala``, ``blackjax.hmc``, ...) into RTK.

    Parameters
    ----------
    algorithm
        A BlackJAX top-level algorithm with ``.init`` and ``.build_kernel`` (what
        ``blackjax.<name>`` is), or any object with the same two attributes.
    parameters
        The rule ``geometry -> dict`` of keyword arguments for its kernel.
    init_needs_key
        Whether ``algorithm.init`` takes a trailing ``rng_key`` (e.g. ``ghmc``).
    evaluations_at_init
        NFE of ``algorithm.init`` (BlackJAX's evaluate the log density once).
    evaluations_per_step
        NFE of one step: an int, or ``info -> count``. Default: read from the info
        for ``blackjax.hmc``, ``blackjax.nuts`` and ``blackjax.dynamic_hmc``
        (``num_integration_steps``), 1 for ``mala``, ``barker_proposal``, ``rmh``
        and ``irmh``; any other algorithm must declare it. A declared value is used
        as declared.
    gradient_of
        ``state -> ∇ log q_k`` when the state caches it (e.g.
        ``lambda s: s.logdensity_grad``), to recover the score for free.
    acceptance_of
        ``info -> acceptance rate`` (default ``info.acceptance_rate``).
    needs_logdensity
        Whether the kernel uses the value of ``log q_k`` (Metropolis tests) or only
        its gradient.
    energy
        Optional ``(target, geometry) -> (x -> log p_t(x) + const)``, an estimate of
        ``log p_t`` the kernel brings (used instead of the target's).

    Examples
    --------
    >>> import blackjax
    >>> hmc = inner_kernel(
    ...     blackjax.hmc,
    ...     lambda g: dict(
    ...         step_size=0.5 * jnp.sqrt(g.gaussian_variance),
    ...         inverse_mass_matrix=jnp.ones(g.dim),
    ...         num_integration_steps=3,
    ...     ),
    ... )
    >>> hmc.cost.per_step is None  # each step's info says how many leapfrog steps
    True
    """
    if not (hasattr(algorithm, "init") and hasattr(algorithm, "build_kernel")):
        raise TypeError(
            "algorithm must be a BlackJAX algorithm with .init and .build_kernel "
            f"(e.g. blackjax.mala), got {algorithm!r}"
        )
    check_callable("parameters", parameters, "geometry -> dict of kernel args")
    init_needs_key = check_bool("init_needs_key", init_needs_key)
    evaluations_at_init = check_int(
        "evaluations_at_init", evaluations_at_init, minimum=0
    )
    if evaluations_per_step is None:
        evaluations_per_step = _KNOWN_COSTS.get(algorithm.build_kernel)
        if evaluations_per_step is None:
            raise ValueError(
                f"the cost of {algorithm!r} is unknown: declare "
                "evaluations_per_step (score/energy evaluations of one step: an int, "
                "or info -> count), so that NFE are not undercounted"
            )
    elif not callable(evaluations_per_step):
        evaluations_per_step = check_int(
            "evaluations_per_step", evaluations_per_step, minimum=0
        )
    for name, fn in (("gradient_of", gradient_of), ("acceptance_of", acceptance_of)):
        if fn is not None:
            check_callable(name, fn)
    needs_logdensity = check_bool("needs_logdensity", needs_logdensity)
    if energy is not None:
        check_callable("energy", energy, "(target, geometry) -> log density")
    _check_trial_parameters(parameters)
    kernel = algorithm.build_kernel()

    def init(rng_key, position, logdensity_fn):
        if init_needs_key:
            return algorithm.init(position, logdensity_fn, rng_key)
        return algorithm.init(position, logdensity_fn)

    def step(rng_key, state, logdensity_fn, **params):
        return kernel(rng_key, state, logdensity_fn, **params)

    if energy is not None:
        log_p = check_callable("energy", energy, "(target, geometry) -> log p_t")
    else:
        log_p = "value" if needs_logdensity else "gradient"
    return counted(
        init,
        step,
        parameters,
        evaluations_at_init=evaluations_at_init,
        evaluations_per_step=evaluations_per_step,
        acceptance_of=acceptance_of or _acceptance_rate,
        gradient_of=gradient_of,
        log_p=log_p,
    )


def _trial_geometry() -> SegmentGeometry:
    """A segment geometry with concrete values (d = 2, t = 0.5, a 0.1-long segment,
    unit variance) on which :func:`inner_kernel` evaluates a parameter rule once, so
    that a rule giving a non-positive step size fails at construction rather than
    silently inside the traced sampler, where values are unknown. Built on demand:
    nothing touches a JAX device at import."""
    return SegmentGeometry(
        time=jnp.asarray(0.5),
        mean_coef=jnp.exp(jnp.asarray(-0.1)),
        noise_var=-jnp.expm1(jnp.asarray(-0.2)),
        conditioning=jnp.zeros(2),
        gaussian_mean=jnp.zeros(2),
        gaussian_variance=jnp.asarray(1.0),
        dim=2,
    )


def _check_trial_parameters(parameters: Callable) -> None:
    """Evaluate ``parameters`` on :func:`_trial_geometry` and refuse a step size
    that is not positive and finite, or a number of integration steps below 1.

    Only what can be judged is judged: a rule that cannot be evaluated on the trial
    geometry (it expects a pytree position, say) or gives traced values is left to
    run; other keys are the kernel's own business. A rule whose sign depends on the
    geometry is therefore only caught where the trial geometry shows it.
    """
    try:
        params = parameters(_trial_geometry())
    except Exception:  # noqa: BLE001 - the rule may need the real geometry
        return
    if not isinstance(params, dict):
        raise TypeError(
            "parameters must return a dict of kernel keyword arguments, got "
            f"{type(params).__name__}"
        )

    def concrete(value):
        try:
            return np.asarray(value)
        except (TypeError, jax.errors.ConcretizationTypeError):
            return None

    if "step_size" in params:
        step = concrete(params["step_size"])
        if step is not None and np.issubdtype(step.dtype, np.number):
            if not (np.all(np.isfinite(step)) and np.all(step > 0)):
                raise ValueError(
                    "parameters(geometry) must give a positive finite step_size, got "
                    f"step_size={step.tolist()} on a trial segment geometry "
                    "(gaussian_variance=1, dim=2)"
                )
    if "num_integration_steps" in params:
        steps = concrete(params["num_integration_steps"])
        if steps is not None and np.issubdtype(steps.dtype, np.number):
            if not np.all(steps >= 1):
                raise ValueError(
                    "parameters(geometry) must give num_integration_steps >= 1, got "
                    f"num_integration_steps={steps.tolist()}"
                )


def mala_step_size(geometry: SegmentGeometry, step_scale: float = 1.0) -> Array:
    """The automatic MALA step size on a segment: ``step_scale * d^{-1/3} * v_q``.

    ``v_q`` is the variance of the Gaussian approximation of ``q_k`` (the inverse of
    its estimated curvature). For a Gaussian target of variance ``v`` in ``d``
    dimensions, MALA (proposal ``x + ε ∇log q + sqrt(2ε) ξ``) has its optimal scaling
    at ``ε ≈ 1.36 d^{-1/3} v`` (Roberts & Rosenthal 1998, ``ℓ ≈ 1.65``, acceptance
    0.574); ``step_scale = 1`` is a little more conservative because ``q_k`` is
    not exactly Gaussian where modes are being decided. Capped at ``v_q``.
    """
    dim_factor = geometry.dim ** (-1.0 / 3.0)
    return jnp.minimum(step_scale * dim_factor, 1.0) * geometry.gaussian_variance


def _mala_rule(step_scale: float) -> Callable:
    return lambda geometry: {"step_size": mala_step_size(geometry, step_scale)}


def _logdensity_grad(state):
    return state.logdensity_grad


def mala_inner(step_scale: float = 1.0) -> InnerKernel:
    """``blackjax.mala`` with the automatic step size :func:`mala_step_size`.

    The step size is derived per particle from its segment's estimated curvature and
    kept fixed along that particle's inner chain, so every MALA step is an exact
    Metropolis–Hastings move for ``q_k``.

    Examples
    --------
    >>> inner = mala_inner(step_scale=0.8)
    >>> inner.cost
    InnerCost(at_init=1, per_step=1)
    """
    step_scale = check_positive("step_scale", step_scale)
    return inner_kernel(
        blackjax.mala, _mala_rule(step_scale), gradient_of=_logdensity_grad
    )


def independence_inner(variance_inflation: float = 1.0) -> InnerKernel:
    """``blackjax.irmh`` proposing from the Gaussian approximation of ``q_k``.

    An independence Metropolis–Hastings sampler: exact for ``q_k``, and it accepts
    almost every proposal where ``q_k`` is close to Gaussian (the stiff end of the
    reverse process). ``variance_inflation > 1`` widens the proposal to make its
    tails safer.
    """
    variance_inflation = check_positive("variance_inflation", variance_inflation)

    def parameters(geometry: SegmentGeometry) -> dict:
        mean_flat, unravel = ravel_pytree(geometry.gaussian_mean)
        var = variance_inflation * geometry.gaussian_variance

        def proposal_distribution(rng_key: PRNGKey):
            noise = jax.random.normal(rng_key, mean_flat.shape, mean_flat.dtype)
            return unravel(mean_flat + jnp.sqrt(var) * noise)

        def proposal_logdensity_fn(new_state, prev_state):
            # BlackJAX's convention: the log density of proposing ``prev_state``
            # from ``new_state``; for an independence proposal that is g(prev).
            del new_state
            flat, _ = ravel_pytree(prev_state.position)
            return -0.5 * jnp.sum((flat - mean_flat) ** 2) / var

        return {
            "proposal_distribution": proposal_distribution,
            "proposal_logdensity_fn": proposal_logdensity_fn,
        }

    return inner_kernel(blackjax.irmh, parameters)


def _projected(kernel: Callable) -> Callable:
    """Reject any move longer than ``radius`` (the paper's projected MALA).

    The constraint ``|x' - x| <= r`` is symmetric in ``(x, x')``, so restricting the
    proposal to it keeps the Metropolis–Hastings kernel reversible for ``q_k``.
    """

    def step(rng_key, state, logdensity_fn, radius=None, **params):
        new_state, info = kernel(rng_key, state, logdensity_fn, **params)
        if radius is None:
            return new_state, info
        old_flat, _ = ravel_pytree(state.position)
        new_flat, _ = ravel_pytree(new_state.position)
        inside = jnp.linalg.norm(new_flat - old_flat) <= radius
        kept = jax.tree.map(
            lambda new, old: jnp.where(inside, new, old), new_state, state
        )
        info = info._replace(
            acceptance_rate=jnp.where(inside, info.acceptance_rate, 0.0),
            is_accepted=info.is_accepted & inside,
        )
        return kept, info

    return step


def score_mala_inner(
    step_scale: float = 1.0,
    *,
    rule: str = "lobatto",
    num_nodes: int = 3,
    radius_scale: float | None = None,
) -> InnerKernel:
    """MALA for score-only models: energy differences by quadrature of the score.

    ``log p_t`` is replaced by the line integral of the score from the segment's
    Gaussian mean (:func:`rtk_blackjax.mcmc.score_energy.line_integral_energy`,
    which wraps :func:`mala_inner`), so ``blackjax.mala`` runs unchanged. Cost per
    MALA step: ``1`` (the score at the proposal) plus
    :func:`~rtk_blackjax.mcmc.score_energy.extra_evaluations`; the Lobatto rule also
    spends one evaluation per segment on the anchor's score.

    ``radius_scale`` turns on the paper's projected variant: moves longer than
    ``radius_scale * sqrt(2 * step_size * d)`` (that many typical proposal lengths)
    are rejected.

    Examples
    --------
    >>> inner = score_mala_inner(rule="lobatto", num_nodes=3)
    >>> inner.cost.per_step, inner.cost.at_init
    (2, 3)
    """
    rule = check_choice("rule", rule, score_energy.QUADRATURE_RULES)
    # Each node costs a score call per step: more than _MAX_NODES would be absurd.
    num_nodes = check_int("num_nodes", num_nodes, maximum=_MAX_NODES)
    score_energy.extra_evaluations(rule, num_nodes)  # validates the node count
    if radius_scale is not None:
        radius_scale = check_positive("radius_scale", radius_scale)
    step_scale = check_positive("step_scale", step_scale)
    mala_rule = _mala_rule(step_scale)

    def parameters(geometry: SegmentGeometry) -> dict:
        params = mala_rule(geometry)
        if radius_scale is not None:
            params["radius"] = radius_scale * jnp.sqrt(
                2.0 * params["step_size"] * geometry.dim
            )
        return params

    mala = blackjax.mala.build_kernel()
    base = counted(
        lambda rng_key, position, logdensity_fn: blackjax.mala.init(
            position, logdensity_fn
        ),
        _projected(mala),
        parameters,
        evaluations_at_init=1,
        evaluations_per_step=1,
        gradient_of=_logdensity_grad,
    )
    return score_energy.line_integral_energy(base, rule=rule, num_nodes=num_nodes)


def uld_inner(adjusted: bool = False, step_scale: float | None = None) -> InnerKernel:
    """Underdamped Langevin (:mod:`rtk_blackjax.mcmc.uld`) on each segment target.

    Curvature ``κ = 1 / v_q`` from the segment's Gaussian approximation; friction
    ``γ = 2 sqrt(κ)`` (critical damping) and step ``h = step_scale / sqrt(κ)``.
    Momentum is drawn afresh from ``N(0, I)`` at the start of every segment (the
    paper's RTK-ULD). Defaults: ``step_scale`` from
    :func:`rtk_blackjax.mcmc.uld.default_parameters` (``0.1`` unadjusted,
    ``d^{-1/6}`` adjusted). The unadjusted kernel uses only the score, so it runs on
    score-only models; the adjusted one (OBABO + Metropolis) needs ``log p_t``.

    Examples
    --------
    >>> uld_inner().log_p, uld_inner(adjusted=True).log_p
    ('gradient', 'value')
    """
    adjusted = check_bool("adjusted", adjusted)
    if step_scale is not None:
        step_scale = check_positive("step_scale", step_scale)
    kernel = uld.build_adjusted_kernel() if adjusted else uld.build_kernel()

    def init(rng_key, position, logdensity_fn):
        return uld.init(position, logdensity_fn, rng_key)

    def step(rng_key, state, logdensity_fn, **params):
        return kernel(rng_key, state, logdensity_fn, **params)

    def parameters(geometry: SegmentGeometry) -> dict:
        curvature = 1.0 / geometry.gaussian_variance
        params = uld.default_parameters(curvature, geometry.dim, adjusted=adjusted)
        if step_scale is not None:
            params["step_size"] = step_scale / jnp.sqrt(curvature)
        return params

    # One gradient per step (frozen-gradient integrator; OBABO reuses it).
    return counted(
        init,
        step,
        parameters,
        evaluations_at_init=1,
        evaluations_per_step=1,
        gradient_of=_logdensity_grad,
        log_p="value" if adjusted else "gradient",
    )
