"""Public API for underdamped Langevin (ULD) kernels.

Underdamped (kinetic) Langevin dynamics with unit mass targets the density
:math:`\\pi(z) \\propto \\exp(\\text{logdensity}(z))` by simulating

.. math::

    dz = v\\,dt, \\qquad
    dv = -\\gamma v\\,dt + \\nabla \\log \\pi(z)\\,dt + \\sqrt{2\\gamma}\\,dB_t,

whose invariant distribution is :math:`\\pi(z)\\,\\mathcal{N}(v; 0, I)`.

Two kernels are provided:

* ``build_kernel`` / ``as_top_level_api``: the *unadjusted* scheme of
  Cheng, Chatterji, Bartlett and Jordan (2018, "Underdamped Langevin MCMC: a non-asymptotic analysis"), which integrates the SDE exactly with the
  gradient frozen at the start of the step. It is biased (first order in the
  step size, see :func:`stationary_variance`) but uses a single gradient
  evaluation per step.
* ``build_adjusted_kernel`` / ``adjusted_as_top_level_api``: a
  Metropolis-adjusted OBABO scheme (exact half-step OU refresh, one leapfrog
  step, Metropolis-Hastings correction with momentum flip on rejection, exact
  half-step OU refresh). It leaves :math:`\\pi(z)\\,\\mathcal{N}(v; 0, I)`
  exactly invariant and also uses a single gradient evaluation per step.

"""

import math
from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp
from blackjax.base import SamplingAlgorithm, build_sampling_algorithm
from jax.flatten_util import ravel_pytree

from rtk_blackjax.types import Array, ArrayLikeTree, ArrayTree, PRNGKey

__all__ = [
    "ULDState",
    "ULDInfo",
    "init",
    "build_kernel",
    "as_top_level_api",
    "build_adjusted_kernel",
    "adjusted_as_top_level_api",
    "stationary_variance",
    "default_parameters",
]


class ULDState(NamedTuple):
    """State of the underdamped Langevin kernels.

    Underdamped Langevin dynamics is persistent in its momentum, hence the
    state carries the momentum along with the position. To make computations
    more efficient we also store the log-density and its gradient at the
    current position, so that each step needs a single new gradient
    evaluation.

    position
        Current position of the chain, a PyTree.
    momentum
        Current momentum (velocity, unit mass), a PyTree with the same
        structure as ``position``.
    logdensity
        Log-density of the target at ``position``.
    logdensity_grad
        Gradient of the log-density at ``position``, a PyTree with the same
        structure as ``position``.

    """

    position: ArrayTree
    momentum: ArrayTree
    logdensity: float
    logdensity_grad: ArrayTree


class ULDInfo(NamedTuple):
    """Additional information on an underdamped Langevin transition.

    acceptance_rate
        Metropolis-Hastings acceptance probability
        :math:`\\min(1, \\exp(-\\Delta H))` of the transition. Always 1 for
        the unadjusted kernel.
    is_accepted
        Whether the proposal was accepted. Always ``True`` for the unadjusted
        kernel.
    energy_change
        Change :math:`\\Delta H` of the Hamiltonian
        :math:`H = -\\log\\pi(z) + |v|^2/2` over the deterministic (leapfrog)
        part of the adjusted transition. Not computed, and set to 0, for the
        unadjusted kernel.

    """

    acceptance_rate: float
    is_accepted: bool
    energy_change: float


def init(
    position: ArrayLikeTree,
    logdensity_fn: Callable,
    rng_key: PRNGKey | None = None,
) -> ULDState:
    """Create the initial state of the underdamped Langevin kernels.

    Parameters
    ----------
    position
        Initial position of the chain, a PyTree of arrays.
    logdensity_fn
        The (unnormalized) log-density of the target.
    rng_key
        Optional PRNG key. When given, the momentum is drawn from its
        stationary distribution :math:`\\mathcal{N}(0, I)`; when ``None`` the
        momentum is initialized to zero.

    Returns
    -------
    The initial ``ULDState``.

    """
    logdensity, logdensity_grad = jax.value_and_grad(logdensity_fn)(position)
    flat_position, unravel_fn = ravel_pytree(position)
    if rng_key is None:
        flat_momentum = jnp.zeros_like(flat_position)
    else:
        flat_momentum = jax.random.normal(
            rng_key, flat_position.shape, flat_position.dtype
        )
    return ULDState(position, unravel_fn(flat_momentum), logdensity, logdensity_grad)


# ---------------------------------------------------------------------------
# Coefficients of the exact frozen-gradient step.
#
# With a = friction * step_size, every coefficient is written as a power of
# ``step_size`` times one of the functions below, which are smooth at a = 0.
# Their closed forms suffer from cancellation for small ``a`` (the variance of
# the position noise behaves like a**3 / 3), so we switch to Taylor series
# below ``_SERIES_THRESHOLD``; the truncation error there is below 1e-9.
# ---------------------------------------------------------------------------

_SERIES_THRESHOLD = 0.5
_N_TERMS = 12
# phi1(a) = (1 - e^{-a}) / a
_PHI1_SERIES = tuple((-1) ** k / math.factorial(k + 1) for k in range(_N_TERMS))
# phi2(a) = (a - 1 + e^{-a}) / a^2
_PHI2_SERIES = tuple((-1) ** k / math.factorial(k + 2) for k in range(_N_TERMS))
# psi(a) = 2 (a - 2 (1 - e^{-a}) + (1 - e^{-2a}) / 2) / a^3
_PSI_SERIES = tuple(
    2.0 * (-1) ** (k + 1) * (2 ** (k - 1) - 2) / math.factorial(k)
    for k in range(3, 3 + _N_TERMS)
)


def _flatten_state(state: "ULDState") -> tuple[Array, Array, Array, Callable]:
    """Position, momentum and gradient as flat vectors, and the inverse map."""
    flat_position, unravel_fn = ravel_pytree(state.position)
    flat_momentum, _ = ravel_pytree(state.momentum)
    flat_grad, _ = ravel_pytree(state.logdensity_grad)
    return flat_position, flat_momentum, flat_grad, unravel_fn


def _power_series(coefficients: tuple, x: Array) -> Array:
    result = jnp.zeros_like(x)
    for coefficient in reversed(coefficients):
        result = result * x + coefficient
    return result


def _phi1(a: Array) -> Array:
    small = a < _SERIES_THRESHOLD
    a_safe = jnp.where(small, 1.0, a)
    return jnp.where(
        small, _power_series(_PHI1_SERIES, a), -jnp.expm1(-a_safe) / a_safe
    )


def _phi2(a: Array) -> Array:
    small = a < _SERIES_THRESHOLD
    a_safe = jnp.where(small, 1.0, a)
    closed_form = (a_safe + jnp.expm1(-a_safe)) / a_safe**2
    return jnp.where(small, _power_series(_PHI2_SERIES, a), closed_form)


def _psi(a: Array) -> Array:
    small = a < _SERIES_THRESHOLD
    a_safe = jnp.where(small, 1.0, a)
    m = -jnp.expm1(-a_safe)
    closed_form = 2.0 * (a_safe - m - 0.5 * m**2) / a_safe**3
    return jnp.where(small, _power_series(_PSI_SERIES, a), closed_form)


class _FrozenGradientCoefficients(NamedTuple):
    """Coefficients of one exact frozen-gradient ULD step (see ``build_kernel``).

    ``v' = velocity_decay v + grad_to_velocity g + chol_vv n1`` and
    ``z' = z + velocity_to_position v + grad_to_position g
    + chol_zv n1 + chol_zz n2`` with ``n1, n2`` independent standard normals.
    """

    velocity_decay: Array
    grad_to_velocity: Array
    velocity_to_position: Array
    grad_to_position: Array
    chol_vv: Array
    chol_zv: Array
    chol_zz: Array


def _frozen_gradient_coefficients(
    step_size: float, friction: float, dtype=None
) -> _FrozenGradientCoefficients:
    """Compute the coefficients of the exact frozen-gradient step.

    With ``a = friction * step_size`` and ``e = exp(-a)``:

    * ``(1 - e) / friction = step_size * phi1(a)``,
    * ``step_size / friction - (1 - e) / friction**2 = step_size**2 * phi2(a)``,
    * ``Var xi_v = 1 - e**2 = 2 a phi1(2 a)``,
    * ``Var xi_z = step_size**2 * a * psi(a)``,
    * ``Cov(xi_z, xi_v) = (1 - e)**2 / friction = step_size * a * phi1(a)**2``.

    The Cholesky factor of the 2x2 covariance is then
    ``chol_vv = sqrt(2 a phi1(2a))``,
    ``chol_zv = step_size * sqrt(a) * phi1(a)**2 / sqrt(2 phi1(2a))`` and
    ``chol_zz = step_size * sqrt(a * (psi(a) - phi1(a)**3 / (1 + e)))``,
    all finite (and zero) at ``a = 0``.
    """
    if dtype is None:
        dtype = jnp.result_type(step_size, friction, float)
    step_size = jnp.asarray(step_size, dtype)
    friction = jnp.asarray(friction, dtype)
    a = friction * step_size
    decay = jnp.exp(-a)
    phi1 = _phi1(a)
    phi1_double = _phi1(2.0 * a)
    psi = _psi(a)
    conditional = jnp.maximum(psi - phi1**3 / (1.0 + decay), 0.0)
    return _FrozenGradientCoefficients(
        velocity_decay=decay,
        grad_to_velocity=step_size * phi1,
        velocity_to_position=step_size * phi1,
        grad_to_position=step_size**2 * _phi2(a),
        chol_vv=jnp.sqrt(2.0 * a * phi1_double),
        chol_zv=step_size * jnp.sqrt(a) * phi1**2 / jnp.sqrt(2.0 * phi1_double),
        chol_zz=step_size * jnp.sqrt(a * conditional),
    )


def build_kernel():
    """Build the unadjusted underdamped Langevin kernel.

    One step integrates the underdamped Langevin SDE exactly over a time
    ``step_size`` (:math:`h`) with the gradient :math:`g = \\nabla\\log\\pi(z)`
    frozen at the current position Cheng, Chatterji, Bartlett and Jordan (2018, "Underdamped Langevin MCMC: a non-asymptotic analysis"). Writing
    :math:`\\gamma` for the friction and :math:`e = \\exp(-\\gamma h)`:

    .. math::

        v' &= e\\,v + \\frac{1 - e}{\\gamma}\\,g + \\xi_v, \\\\
        z' &= z + \\frac{1 - e}{\\gamma}\\,v
              + \\Big(\\frac{h}{\\gamma} - \\frac{1 - e}{\\gamma^2}\\Big)\\,g
              + \\xi_z,

    where, independently for each coordinate, :math:`(\\xi_z, \\xi_v)` is a
    centered Gaussian pair with

    .. math::

        \\operatorname{Var}\\xi_v = 1 - e^2, \\quad
        \\operatorname{Var}\\xi_z = \\frac{2}{\\gamma}\\Big(h
            - \\frac{2(1 - e)}{\\gamma} + \\frac{1 - e^2}{2\\gamma}\\Big), \\quad
        \\operatorname{Cov}(\\xi_z, \\xi_v) = \\frac{(1 - e)^2}{\\gamma}.

    These follow from :math:`v(t) = e^{-\\gamma t} v
    + \\frac{1 - e^{-\\gamma t}}{\\gamma} g
    + \\sqrt{2\\gamma}\\int_0^t e^{-\\gamma(t - s)}\\,dB_s` and
    :math:`z(h) = z + \\int_0^h v(t)\\,dt`, so that
    :math:`\\xi_v = \\sqrt{2\\gamma}\\int_0^h e^{-\\gamma(h-s)} dB_s` and
    :math:`\\xi_z = \\sqrt{2\\gamma}\\int_0^h
    \\frac{1 - e^{-\\gamma(h-s)}}{\\gamma} dB_s`; the moments are then given by
    the Itô isometry. The pair is sampled through its 2x2 Cholesky factor,
    using series expansions for small :math:`\\gamma h` to avoid cancellation.

    The scheme is exact for constant gradients but biased in general: on a
    Gaussian target the stationary variance is inflated by a relative amount
    :math:`\\approx \\kappa h / (2\\gamma)` (see :func:`stationary_variance`).

    Returns
    -------
    A kernel that takes a rng_key, the current ``ULDState``, the log-density,
    the step size and the friction, and returns a new state of the chain
    along with information about the transition. Each call evaluates the
    log-density and its gradient exactly once (at the new position).

    """

    def kernel(
        rng_key: PRNGKey,
        state: ULDState,
        logdensity_fn: Callable,
        step_size: float,
        friction: float,
    ) -> tuple[ULDState, ULDInfo]:
        """Generate a new sample with the unadjusted underdamped Langevin kernel.

        Parameters
        ----------
        rng_key
            JAX's pseudo random number generating key.
        state
            Current state of the chain.
        logdensity_fn
            (Unnormalized) log-density of the target.
        step_size
            Integration time :math:`h` of one step.
        friction
            Friction (damping) coefficient :math:`\\gamma > 0`.

        """
        flat_position, flat_momentum, flat_grad, unravel_fn = _flatten_state(state)
        dtype = flat_position.dtype
        coef = _frozen_gradient_coefficients(step_size, friction, dtype)

        noise = jax.random.normal(rng_key, (2,) + flat_position.shape, dtype)
        new_momentum = (
            coef.velocity_decay * flat_momentum
            + coef.grad_to_velocity * flat_grad
            + coef.chol_vv * noise[0]
        )
        new_position = (
            flat_position
            + coef.velocity_to_position * flat_momentum
            + coef.grad_to_position * flat_grad
            + coef.chol_zv * noise[0]
            + coef.chol_zz * noise[1]
        )

        new_position = unravel_fn(new_position)
        logdensity, logdensity_grad = jax.value_and_grad(logdensity_fn)(new_position)
        new_state = ULDState(
            new_position, unravel_fn(new_momentum), logdensity, logdensity_grad
        )
        info = ULDInfo(
            acceptance_rate=jnp.ones((), dtype),
            is_accepted=jnp.ones((), bool),
            energy_change=jnp.zeros((), dtype),
        )
        return new_state, info

    return kernel


def as_top_level_api(
    logdensity_fn: Callable,
    step_size: float,
    friction: float,
) -> SamplingAlgorithm:
    """Implements the (basic) user interface for the unadjusted ULD kernel.

    The kernel integrates underdamped Langevin dynamics exactly with the
    gradient frozen over each step (see :func:`build_kernel`). It is biased;
    use :func:`default_parameters` for a step size with a small bias, or the
    Metropolis-adjusted variant :func:`adjusted_as_top_level_api`.

    Examples
    --------

    A new ULD kernel can be initialized and used with the following code:

    .. code::

        params = uld.default_parameters(curvature)
        sampler = uld.as_top_level_api(logdensity_fn, **params)
        state = sampler.init(position, init_key)
        new_state, info = sampler.step(rng_key, state)

    Kernels are not jit-compiled by default so you will need to do it manually:

    .. code::

       step = jax.jit(sampler.step)
       new_state, info = step(rng_key, state)

    Should you need to you can always use the base kernel directly:

    .. code::

       kernel = uld.build_kernel()
       state = uld.init(position, logdensity_fn, init_key)
       state, info = kernel(rng_key, state, logdensity_fn, step_size, friction)

    Parameters
    ----------
    logdensity_fn
        The log-density function we wish to draw samples from.
    step_size
        Integration time of one step.
    friction
        Friction (damping) coefficient of the dynamics.

    Returns
    -------
    A ``SamplingAlgorithm``. Its ``init`` takes ``(position, rng_key=None)``;
    pass a key to draw the initial momentum from :math:`\\mathcal{N}(0, I)`.

    """
    kernel = build_kernel()
    return build_sampling_algorithm(
        kernel,
        init,
        logdensity_fn,
        kernel_args=(step_size, friction),
        pass_rng_key_to_init=True,
    )


def build_adjusted_kernel():
    """Build the Metropolis-adjusted underdamped Langevin (OBABO) kernel.

    One step with step size :math:`h` and friction :math:`\\gamma` is

    1. O: exact OU half-step of the momentum,
       :math:`v \\leftarrow e^{-\\gamma h/2} v + \\sqrt{1 - e^{-\\gamma h}}\\,\\eta`;
    2. BAB: one leapfrog step of length :math:`h` for
       :math:`H(z, v) = -\\log\\pi(z) + |v|^2/2`, proposing :math:`(z', v')`;
    3. accept :math:`(z', v')` with probability
       :math:`\\min(1, \\exp(-\\Delta H))`, otherwise keep :math:`z` and flip
       the momentum, :math:`v \\leftarrow -v`;
    4. O: a second exact OU half-step of the momentum.

    The O steps leave :math:`\\mathcal{N}(v; 0, I)` invariant, and steps 2-3
    form a Metropolis-Hastings step whose proposal (leapfrog followed by a
    momentum flip) is a volume-preserving involution, followed by a momentum
    flip; both leave :math:`\\pi(z)\\mathcal{N}(v; 0, I)` exactly invariant.
    The gradient at the current position is carried in the state, so each
    step evaluates the log-density and its gradient exactly once.

    Returns
    -------
    A kernel with signature
    ``(rng_key, state, logdensity_fn, step_size, friction) -> (state, info)``.

    """

    def kernel(
        rng_key: PRNGKey,
        state: ULDState,
        logdensity_fn: Callable,
        step_size: float,
        friction: float,
    ) -> tuple[ULDState, ULDInfo]:
        """Generate a new sample with the adjusted underdamped Langevin kernel.

        Same arguments as the unadjusted kernel of :func:`build_kernel`, except that
        ``step_size`` is the leapfrog step (also the time of the two O half-steps
        combined) and ``friction`` may be 0.
        """
        flat_position, flat_momentum, flat_grad, unravel_fn = _flatten_state(state)
        dtype = flat_position.dtype
        step_size = jnp.asarray(step_size, dtype)
        a = jnp.asarray(friction, dtype) * step_size
        decay = jnp.exp(-0.5 * a)
        refresh = jnp.sqrt(-jnp.expm1(-a))

        key_o1, key_mh, key_o2 = jax.random.split(rng_key, 3)

        # O: first half-step of the momentum refresh.
        momentum = decay * flat_momentum + refresh * jax.random.normal(
            key_o1, flat_momentum.shape, dtype
        )

        # BAB: one leapfrog step.
        half_momentum = momentum + 0.5 * step_size * flat_grad
        proposed_flat_position = flat_position + step_size * half_momentum
        proposed_position = unravel_fn(proposed_flat_position)
        proposed_logdensity, proposed_grad = jax.value_and_grad(logdensity_fn)(
            proposed_position
        )
        flat_proposed_grad, _ = ravel_pytree(proposed_grad)
        proposed_momentum = half_momentum + 0.5 * step_size * flat_proposed_grad

        # Metropolis-Hastings correction.
        energy = -state.logdensity + 0.5 * jnp.sum(momentum**2)
        proposed_energy = -proposed_logdensity + 0.5 * jnp.sum(proposed_momentum**2)
        energy_change = proposed_energy - energy
        energy_change = jnp.where(jnp.isnan(energy_change), jnp.inf, energy_change)
        log_p_accept = jnp.minimum(0.0, -energy_change)
        log_uniform = jnp.log(jax.random.uniform(key_mh, (), dtype))
        is_accepted = log_uniform < log_p_accept

        def select(new, old):
            return jax.tree.map(lambda x, y: jnp.where(is_accepted, x, y), new, old)

        position = select(proposed_position, state.position)
        logdensity = select(proposed_logdensity, state.logdensity)
        logdensity_grad = select(proposed_grad, state.logdensity_grad)
        momentum = jnp.where(is_accepted, proposed_momentum, -momentum)

        # O: second half-step of the momentum refresh.
        momentum = decay * momentum + refresh * jax.random.normal(
            key_o2, momentum.shape, dtype
        )

        new_state = ULDState(
            position, unravel_fn(momentum), logdensity, logdensity_grad
        )
        info = ULDInfo(
            acceptance_rate=jnp.exp(log_p_accept),
            is_accepted=is_accepted,
            energy_change=energy_change,
        )
        return new_state, info

    return kernel


def adjusted_as_top_level_api(
    logdensity_fn: Callable,
    step_size: float,
    friction: float,
) -> SamplingAlgorithm:
    """Implements the (basic) user interface for the adjusted ULD kernel.

    The kernel is an OBABO splitting of underdamped Langevin dynamics with a
    Metropolis-Hastings correction (see :func:`build_adjusted_kernel`); it is
    exact (unbiased) for any step size.

    Examples
    --------

    .. code::

        params = uld.default_parameters(curvature, dim, adjusted=True)
        sampler = uld.adjusted_as_top_level_api(logdensity_fn, **params)
        state = sampler.init(position, init_key)
        step = jax.jit(sampler.step)
        new_state, info = step(rng_key, state)

    Parameters
    ----------
    logdensity_fn
        The log-density function we wish to draw samples from.
    step_size
        Leapfrog step size.
    friction
        Friction (damping) coefficient of the dynamics.

    Returns
    -------
    A ``SamplingAlgorithm``. Its ``init`` takes ``(position, rng_key=None)``;
    pass a key to draw the initial momentum from :math:`\\mathcal{N}(0, I)`.

    """
    kernel = build_adjusted_kernel()
    return build_sampling_algorithm(
        kernel,
        init,
        logdensity_fn,
        kernel_args=(step_size, friction),
        pass_rng_key_to_init=True,
    )


def stationary_variance(step_size: float, friction: float, curvature: float) -> Array:
    """Exact stationary position variance of the unadjusted kernel on a Gaussian.

    On the one-dimensional target :math:`\\mathcal{N}(m, 1/\\kappa)` the
    gradient is :math:`g = -\\kappa(z - m)` and one step of
    :func:`build_kernel` is the linear recursion
    :math:`x' = A x + \\xi` in :math:`x = (z - m, v)` with

    .. math::

        A = \\begin{pmatrix} 1 - \\kappa b_z & c \\\\ -\\kappa b_v & e
            \\end{pmatrix}, \\qquad
        b = (b_z, b_v) = \\Big(\\frac{h}{\\gamma} - \\frac{1 - e}{\\gamma^2},
            \\frac{1 - e}{\\gamma}\\Big),\\quad c = \\frac{1 - e}{\\gamma},

    and :math:`\\xi` the Gaussian noise of :func:`build_kernel` (covariance
    :math:`Q`). The mean of the chain converges to :math:`m` exactly; the
    stationary covariance solves the discrete Lyapunov equation
    :math:`S = A S A^\\top + Q`. Writing :math:`S = S_0 + \\Delta` with
    :math:`S_0 = \\operatorname{diag}(1/\\kappa, 1)` (the exact answer), the
    identities of the exact OU flow give :math:`A S_0 A^\\top + Q - S_0 =
    \\kappa\\, b b^\\top`, so that

    .. math::

        \\Delta - A \\Delta A^\\top = \\kappa\\, b b^\\top, \\qquad
        \\Delta = \\kappa \\sum_{k \\geq 0} A^k b b^\\top (A^\\top)^k
        \\succeq 0,

    which we solve as a 4x4 linear system. This form avoids the
    cancellation of solving for :math:`S` directly. For small :math:`h`,
    :math:`b \\approx (h^2/2, h)` and the equation becomes the continuous
    Lyapunov equation of an OU process with extra noise intensity
    :math:`\\kappa h`, hence :math:`\\Delta \\approx \\frac{\\kappa h}{2\\gamma}
    S_0`: the relative variance bias is **first order** in the step size,
    :math:`\\kappa S_{zz} - 1 \\approx \\kappa h / (2\\gamma)`.

    Parameters
    ----------
    step_size
        Step size :math:`h` of the unadjusted kernel.
    friction
        Friction :math:`\\gamma`.
    curvature
        Precision :math:`\\kappa` of the Gaussian target.

    Returns
    -------
    The stationary variance :math:`S_{zz}` of the position (the exact value
    being :math:`1/\\kappa`), or ``inf`` when the recursion is unstable
    (its transition matrix has an eigenvalue outside the unit disk; at first
    order this happens when :math:`\\kappa h / 2 > \\gamma`).

    """
    coef = _frozen_gradient_coefficients(step_size, friction)
    curvature = jnp.asarray(curvature, coef.velocity_decay.dtype)
    transition = jnp.array(
        [
            [1.0 - curvature * coef.grad_to_position, coef.velocity_to_position],
            [-curvature * coef.grad_to_velocity, coef.velocity_decay],
        ]
    )
    b = jnp.stack([coef.grad_to_position, coef.grad_to_velocity])
    rhs = curvature * jnp.outer(b, b)
    system = jnp.eye(4, dtype=rhs.dtype) - jnp.kron(transition, transition)
    delta = jnp.linalg.solve(system, rhs.reshape(-1)).reshape(2, 2)
    # Jury criterion for the eigenvalues of the 2x2 matrix to lie in the unit
    # disk: |det| < 1 and |trace| < 1 + det. ``1 - det`` is written out to
    # avoid cancellation for small steps, and ``1 + det - trace`` =
    # ``curvature h^2 (phi1^2 + a phi1 phi2) > 0`` always holds.
    dtype = coef.velocity_decay.dtype
    a = jnp.asarray(friction, dtype) * jnp.asarray(step_size, dtype)
    one_minus_det = -jnp.expm1(-a) + curvature * (
        coef.velocity_decay * coef.grad_to_position
        - coef.grad_to_velocity * coef.velocity_to_position
    )
    trace = jnp.trace(transition)
    is_stable = (
        (one_minus_det > 0.0) & (one_minus_det < 2.0) & (2.0 - one_minus_det > -trace)
    )
    return jnp.where(is_stable, 1.0 / curvature + delta[0, 0], jnp.inf)


# Unadjusted rule: h = _UNADJUSTED_STEP_FACTOR / sqrt(curvature).
_UNADJUSTED_STEP_FACTOR = 0.1


def default_parameters(
    curvature: float, dim: int | None = None, *, adjusted: bool = False
) -> dict:
    """Default step size and friction from a curvature estimate.

    ``curvature`` (:math:`\\kappa`) is an estimate of the largest eigenvalue
    of the Hessian of :math:`-\\log\\pi` (for :math:`\\mathcal{N}(m,
    \\sigma^2 I)`, :math:`\\kappa = 1/\\sigma^2`). Both rules use critical
    damping of the stiffest direction, :math:`\\gamma = 2\\sqrt{\\kappa}`,
    which makes that direction relax fastest without oscillating; softer
    directions are then over-damped.

    Unadjusted kernel (``adjusted=False``)
        :math:`h = 0.1/\\sqrt{\\kappa}`. The stationary variance bias of the
        frozen-gradient scheme on a Gaussian direction of precision
        :math:`\\kappa_i` is :math:`\\approx \\kappa_i h / (2\\gamma)` (see
        :func:`stationary_variance`), i.e. :math:`c/4` for the stiffest
        direction with :math:`h = c/\\sqrt{\\kappa}`; the exact value at
        :math:`c = 0.1` is 2.56% and softer directions have proportionally
        less. The bias is per coordinate, so ``dim`` is not used.
    Adjusted kernel (``adjusted=True``)
        :math:`h = d^{-1/6}/\\sqrt{\\kappa}` with ``d = dim`` (``d = 1``
        when ``dim`` is None; pass ``dim``). For one leapfrog step on a
        Gaussian with stationary :math:`(z, v)`, the mean energy error is
        exactly :math:`\\omega^6/32` per coordinate, :math:`\\omega =
        h\\sqrt{\\kappa}`, so in high dimension :math:`\\Delta H \\approx
        \\mathcal{N}(\\mu, 2\\mu)` with :math:`\\mu = d\\omega^6/32` and the
        acceptance rate is :math:`2\\Phi(-\\omega^3\\sqrt{d}/8)`. The rule
        gives :math:`2\\Phi(-1/8) \\approx 0.90` for ``d`` coordinates of
        curvature :math:`\\kappa` (and more when most directions are softer).

    Parameters
    ----------
    curvature
        Largest curvature (precision) of the target, :math:`\\kappa > 0`.
    dim
        Dimension of the target; used by the adjusted rule only.
    adjusted
        Whether to return parameters for the adjusted (OBABO) kernel.

    Returns
    -------
    A dict with keys ``step_size`` and ``friction``, suitable for
    ``as_top_level_api(logdensity_fn, **params)``.

    """
    sqrt_curvature = jnp.sqrt(jnp.asarray(curvature, jnp.result_type(float)))
    if adjusted:
        d = 1 if dim is None else dim
        step_factor = d ** (-1.0 / 6.0)
    else:
        step_factor = _UNADJUSTED_STEP_FACTOR
    return {
        "step_size": step_factor / sqrt_curvature,
        "friction": 2.0 * sqrt_curvature,
    }
