"""Tests for the underdamped Langevin kernels in ``rtk_blackjax.mcmc.uld``."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import integrate

from rtk_blackjax.mcmc import uld

# ---------------------------------------------------------------------------
# Helpers
# ---------------------------------------------------------------------------


def gaussian_logdensity(mean, precision):
    """Log-density of N(mean, diag(1 / precision)) on flat arrays."""

    def logdensity_fn(x):
        return -0.5 * jnp.sum(precision * (x - mean) ** 2)

    return logdensity_fn


def reference_step(h, gamma):
    """Frozen-gradient step coefficients by quadrature of the OU integrals.

    ``v(t) = e^{-gamma t} v + (1 - e^{-gamma t}) / gamma g + xi_v(t)`` and
    ``z(h) = z + int_0^h v(t) dt``; noise moments by the Ito isometry.
    """
    decay = np.exp(-gamma * h)
    grad_to_velocity = integrate.quad(lambda t: np.exp(-gamma * t), 0, h)[0]
    grad_to_position = integrate.quad(lambda t: (1 - np.exp(-gamma * t)) / gamma, 0, h)[
        0
    ]
    # kernels of xi_v and xi_z against dB_s, with u = h - s
    kv = lambda u: np.sqrt(2 * gamma) * np.exp(-gamma * u)
    kz = lambda u: np.sqrt(2 * gamma) * (1 - np.exp(-gamma * u)) / gamma
    opts = dict(epsabs=0, epsrel=1e-12)
    var_v = integrate.quad(lambda u: kv(u) ** 2, 0, h, **opts)[0]
    var_z = integrate.quad(lambda u: kz(u) ** 2, 0, h, **opts)[0]
    cov = integrate.quad(lambda u: kv(u) * kz(u), 0, h, **opts)[0]
    return dict(
        decay=decay,
        grad_to_velocity=grad_to_velocity,
        grad_to_position=grad_to_position,
        var_v=var_v,
        var_z=var_z,
        cov=cov,
    )


def run_chains(kernel, logdensity_fn, params, positions, rng_key, n_steps):
    """Run vmapped chains with jit; returns positions (n_steps, n_chains, ...)."""
    init_key, run_key = jax.random.split(rng_key)
    n_chains = jax.tree.leaves(positions)[0].shape[0]
    states = jax.vmap(lambda p, k: uld.init(p, logdensity_fn, k))(
        positions, jax.random.split(init_key, n_chains)
    )
    step = jax.vmap(
        lambda k, s: kernel(
            k, s, logdensity_fn, params["step_size"], params["friction"]
        )
    )

    def one_step(states, key):
        states, info = step(jax.random.split(key, n_chains), states)
        return states, (states.position, info.acceptance_rate)

    @jax.jit
    def run(states, key):
        return jax.lax.scan(one_step, states, jax.random.split(key, n_steps))

    _, (trace, acceptance) = run(states, run_key)
    return np.asarray(trace), np.asarray(acceptance)


def grouped_moments(trace, n_groups=20):
    """Mean and variance per coordinate, with standard errors from chain groups.

    ``trace`` has shape (n_steps, n_chains, dim); chains are independent, so
    the spread of the estimates across groups of chains gives honest standard
    errors despite the autocorrelation along each chain.
    """
    n_steps, n_chains, dim = trace.shape
    groups = trace.reshape(n_steps, n_groups, n_chains // n_groups, dim)
    group_mean = groups.mean(axis=(0, 2))
    group_var = groups.var(axis=(0, 2))
    mean, var = group_mean.mean(0), group_var.mean(0)
    mean_se = group_mean.std(0, ddof=1) / np.sqrt(n_groups)
    var_se = group_var.std(0, ddof=1) / np.sqrt(n_groups)
    return mean, mean_se, var, var_se


# ---------------------------------------------------------------------------
# Exact frozen-gradient step
# ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "h, gamma", [(1e-3, 1.0), (0.01, 0.5), (0.1, 2.0), (0.4, 1.0), (1.0, 3.0)]
)
def test_coefficients_match_ou_integrals(h, gamma):
    """Closed forms / series agree with quadrature of the OU integrals."""
    coef = uld._frozen_gradient_coefficients(h, gamma)
    ref = reference_step(h, gamma)
    rtol = 2e-5
    np.testing.assert_allclose(coef.velocity_decay, ref["decay"], rtol=rtol)
    np.testing.assert_allclose(
        coef.grad_to_velocity, ref["grad_to_velocity"], rtol=rtol
    )
    np.testing.assert_allclose(
        coef.velocity_to_position, ref["grad_to_velocity"], rtol=rtol
    )
    np.testing.assert_allclose(
        coef.grad_to_position, ref["grad_to_position"], rtol=rtol
    )
    np.testing.assert_allclose(coef.chol_vv**2, ref["var_v"], rtol=rtol)
    np.testing.assert_allclose(
        coef.chol_zv**2 + coef.chol_zz**2, ref["var_z"], rtol=rtol
    )
    np.testing.assert_allclose(coef.chol_zv * coef.chol_vv, ref["cov"], rtol=rtol)
    # ... and the closed forms quoted in the docstring.
    e = np.exp(-gamma * h)
    var_z = (2 / gamma) * (h - 2 * (1 - e) / gamma + (1 - e**2) / (2 * gamma))
    np.testing.assert_allclose(ref["var_z"], var_z, rtol=1e-6)
    np.testing.assert_allclose(ref["cov"], (1 - e) ** 2 / gamma, rtol=1e-9)
    np.testing.assert_allclose(ref["var_v"], 1 - e**2, rtol=1e-9)


def test_one_step_moments():
    """One kernel step from a fixed state has the right Gaussian law.

    Many independent coordinates in a single call play the role of samples.
    """
    n = 200_000
    h, gamma, precision = 0.7, 1.3, 2.0
    z0, v0 = 0.8, -0.5
    logdensity_fn = gaussian_logdensity(0.0, precision)
    state = uld.init(jnp.full((n,), z0), logdensity_fn)
    state = state._replace(momentum=jnp.full((n,), v0))
    kernel = uld.build_kernel()
    new_state, info = kernel(jax.random.key(0), state, logdensity_fn, h, gamma)

    ref = reference_step(h, gamma)
    g = -precision * z0
    mean_v = ref["decay"] * v0 + ref["grad_to_velocity"] * g
    mean_z = z0 + ref["grad_to_velocity"] * v0 + ref["grad_to_position"] * g
    z, v = np.asarray(new_state.position), np.asarray(new_state.momentum)
    cov = np.cov(np.stack([z, v]))
    assert abs(z.mean() - mean_z) < 5 * np.sqrt(ref["var_z"] / n)
    assert abs(v.mean() - mean_v) < 5 * np.sqrt(ref["var_v"] / n)
    np.testing.assert_allclose(cov[0, 0], ref["var_z"], rtol=0.015)
    np.testing.assert_allclose(cov[1, 1], ref["var_v"], rtol=0.015)
    np.testing.assert_allclose(cov[0, 1], ref["cov"], rtol=0.03)
    # The stored log-density and gradient are those of the new position.
    np.testing.assert_allclose(new_state.logdensity_grad, -precision * z, rtol=1e-6)
    np.testing.assert_allclose(
        new_state.logdensity, logdensity_fn(new_state.position), rtol=1e-5
    )
    assert info.acceptance_rate == 1.0 and bool(info.is_accepted)


# ---------------------------------------------------------------------------
# Stationary variance of the unadjusted scheme
# ---------------------------------------------------------------------------


def test_stationary_variance_matches_lyapunov_iteration():
    """The Delta-form solution agrees with iterating S <- A S A^T + Q."""
    for h, gamma, precision in [(0.3, 2.0, 1.5), (0.05, 0.7, 4.0), (1.0, 5.0, 1.0)]:
        ref = reference_step(h, gamma)
        c = ref["grad_to_velocity"]
        transition = np.array(
            [
                [1 - precision * ref["grad_to_position"], c],
                [-precision * c, ref["decay"]],
            ]
        )
        noise = np.array([[ref["var_z"], ref["cov"]], [ref["cov"], ref["var_v"]]])
        cov = np.zeros((2, 2))
        for _ in range(20_000):
            cov = transition @ cov @ transition.T + noise
        np.testing.assert_allclose(
            uld.stationary_variance(h, gamma, precision), cov[0, 0], rtol=1e-5
        )


def test_stationary_variance_limit_and_order():
    """Bias -> 0 as h -> 0 at first order, kappa h / (2 gamma) relative."""
    precision, gamma = 2.0, 1.5
    np.testing.assert_allclose(
        uld.stationary_variance(1e-5, gamma, precision), 1 / precision, rtol=1e-4
    )
    hs = np.array([0.005, 0.01, 0.02, 0.04, 0.08])
    bias = np.array(
        [uld.stationary_variance(h, gamma, precision) - 1 / precision for h in hs]
    )
    assert np.all(bias > 0)
    slope = np.polyfit(np.log(hs), np.log(bias), 1)[0]
    assert abs(slope - 1.0) < 0.3
    # Leading coefficient of the relative bias.
    np.testing.assert_allclose(
        bias[0] * precision, precision * hs[0] / (2 * gamma), rtol=0.02
    )
    # Unstable recursion (effective friction gamma - kappa h / 2 < 0).
    assert np.isinf(uld.stationary_variance(0.3, 0.1, 1.3))


def test_unadjusted_matches_stationary_variance():
    """Many chains on a 5-D Gaussian reproduce the (biased) theory."""
    dim, n_chains, n_steps, burn_in = 5, 1000, 300, 100
    mean = jnp.linspace(-1.0, 2.0, dim)
    sigma = 0.5
    precision = 1 / sigma**2
    # Large step on purpose: relative variance bias ~ 14%.
    params = {"step_size": 0.5 / np.sqrt(precision), "friction": 2 * np.sqrt(precision)}
    logdensity_fn = gaussian_logdensity(mean, precision)
    key_pos, key_run = jax.random.split(jax.random.key(1))
    positions = mean + sigma * jax.random.normal(key_pos, (n_chains, dim))

    trace, acceptance = run_chains(
        uld.build_kernel(), logdensity_fn, params, positions, key_run, n_steps
    )
    assert np.all(acceptance == 1.0)
    est_mean, mean_se, est_var, var_se = grouped_moments(trace[burn_in:])

    theory = float(uld.stationary_variance(**params, curvature=precision))
    assert theory / sigma**2 - 1 > 0.1
    assert np.all(np.abs(est_mean - np.asarray(mean)) < 4.5 * mean_se)
    assert np.all(np.abs(est_var - theory) < 4.5 * var_se)
    # The test discriminates: the exact variance is far off in MC units.
    assert np.all(np.abs(est_var - sigma**2) > 10 * var_se)


# ---------------------------------------------------------------------------
# Adjusted kernel
# ---------------------------------------------------------------------------


def test_adjusted_is_exact_on_anisotropic_gaussian():
    n_chains, n_steps, burn_in = 1000, 300, 100
    mean = jnp.array([1.0, -2.0, 0.5])
    sigma = jnp.array([0.5, 1.0, 2.0])
    precision = 1 / sigma**2
    kappa = float(precision.max())
    # Large step on purpose (unadjusted bias ~ 38% on the stiff coordinate).
    params = {"step_size": 1.2 / np.sqrt(kappa), "friction": 2 * np.sqrt(kappa)}
    logdensity_fn = gaussian_logdensity(mean, precision)
    key_pos, key_run = jax.random.split(jax.random.key(2))
    positions = mean + sigma * jax.random.normal(key_pos, (n_chains, 3))

    trace, acceptance = run_chains(
        uld.build_adjusted_kernel(), logdensity_fn, params, positions, key_run, n_steps
    )
    assert 0.3 < acceptance.mean() < 0.99
    assert np.all((acceptance >= 0) & (acceptance <= 1))
    est_mean, mean_se, est_var, var_se = grouped_moments(trace[burn_in:])
    assert np.all(np.abs(est_mean - np.asarray(mean)) < 4.5 * mean_se)
    assert np.all(np.abs(est_var - np.asarray(sigma**2)) < 4.5 * var_se)

    # Negative control: without the correction, the same harness detects the
    # bias of the stiff coordinate.
    trace, _ = run_chains(
        uld.build_kernel(), logdensity_fn, params, positions, key_run, n_steps
    )
    _, _, est_var, var_se = grouped_moments(trace[burn_in:])
    assert est_var[0] - sigma[0] ** 2 > 10 * var_se[0]


def test_adjusted_default_parameters_acceptance_d100():
    dim, n_chains, n_steps = 100, 100, 40
    sigma = 0.5
    precision = 1 / sigma**2
    params = uld.default_parameters(precision, dim, adjusted=True)
    np.testing.assert_allclose(params["friction"], 2 * np.sqrt(precision), rtol=1e-6)
    logdensity_fn = gaussian_logdensity(0.0, precision)
    key_pos, key_run = jax.random.split(jax.random.key(3))
    positions = sigma * jax.random.normal(key_pos, (n_chains, dim))
    _, acceptance = run_chains(
        uld.build_adjusted_kernel(), logdensity_fn, params, positions, key_run, n_steps
    )
    assert 0.8 < acceptance.mean() < 0.97  # predicted 2 Phi(-1/8) = 0.90


def test_default_parameters_unadjusted_bias():
    for precision in [0.01, 1.0, 400.0]:
        params = uld.default_parameters(precision)
        np.testing.assert_allclose(params["step_size"], 0.1 / np.sqrt(precision))
        np.testing.assert_allclose(params["friction"], 2 * np.sqrt(precision))
        rel_bias = uld.stationary_variance(**params, curvature=precision) * precision
        assert 0.02 < rel_bias - 1 < 0.03
        # Softer directions are less biased.
        softer = uld.stationary_variance(**params, curvature=precision / 10)
        assert 0 < softer * precision / 10 - 1 < 0.005


# ---------------------------------------------------------------------------
# API: init, pytrees, jit / vmap, gradient count
# ---------------------------------------------------------------------------


def test_init():
    logdensity_fn = gaussian_logdensity(1.0, 2.0)
    position = jnp.array([0.0, 1.0, 3.0])
    state = uld.init(position, logdensity_fn)
    np.testing.assert_array_equal(state.momentum, jnp.zeros(3))
    np.testing.assert_allclose(state.logdensity, -0.5 * 2.0 * 5.0)
    np.testing.assert_allclose(state.logdensity_grad, [2.0, 0.0, -4.0])
    state = uld.init(position, logdensity_fn, jax.random.key(0))
    assert np.all(np.asarray(state.momentum) != 0.0)


@pytest.mark.parametrize("adjusted", [False, True])
def test_pytree_matches_flat_and_top_level_api(adjusted):
    mean = jnp.array([0.5, -1.0, 2.0, 0.0, 1.0])
    precision = jnp.array([1.0, 2.0, 0.5, 4.0, 1.5])
    flat_logdensity = gaussian_logdensity(mean, precision)

    def tree_logdensity(x):
        return flat_logdensity(jnp.concatenate([x["a"], x["b"].ravel()]))

    flat_position = jnp.array([0.1, 0.2, 0.3, 0.4, 0.5])
    tree_position = {"a": flat_position[:1], "b": flat_position[1:].reshape(2, 2)}

    if adjusted:
        api, kernel = uld.adjusted_as_top_level_api, uld.build_adjusted_kernel()
    else:
        api, kernel = uld.as_top_level_api, uld.build_kernel()
    flat_sampler = api(flat_logdensity, 0.3, 1.0)
    tree_sampler = api(tree_logdensity, 0.3, 1.0)

    init_key = jax.random.key(4)
    flat_state = flat_sampler.init(flat_position, init_key)
    tree_state = tree_sampler.init(tree_position, init_key)
    tree_step = jax.jit(tree_sampler.step)
    for key in jax.random.split(jax.random.key(5), 3):
        previous = tree_state
        flat_state, flat_info = flat_sampler.step(key, flat_state)
        tree_state, tree_info = tree_step(key, tree_state)
        # The base kernel gives the same result as the top-level API, from the
        # same state (jitted vs not: equal up to float rounding).
        direct_state, _ = jax.jit(kernel, static_argnums=2)(
            key, previous, tree_logdensity, 0.3, 1.0
        )
        assert jax.tree.structure(direct_state) == jax.tree.structure(tree_state)
        for got, want in zip(
            jax.tree.leaves(direct_state), jax.tree.leaves(tree_state), strict=True
        ):
            np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)

    assert set(tree_state.position) == {"a", "b"}
    assert tree_state.momentum["b"].shape == (2, 2)
    for field in ("position", "momentum", "logdensity_grad"):
        leaves = getattr(tree_state, field)
        flat = jnp.concatenate([leaves["a"], leaves["b"].ravel()])
        np.testing.assert_allclose(flat, getattr(flat_state, field), rtol=1e-5)
    np.testing.assert_allclose(tree_state.logdensity, flat_state.logdensity, rtol=1e-5)
    np.testing.assert_allclose(
        tree_info.acceptance_rate, flat_info.acceptance_rate, rtol=1e-5
    )

    # vmap over chains of pytree states.
    keys = jax.random.split(jax.random.key(6), 4)
    states = jax.vmap(tree_sampler.init, in_axes=(None, 0))(tree_position, keys)
    states, infos = jax.jit(jax.vmap(tree_sampler.step))(keys, states)
    assert states.position["b"].shape == (4, 2, 2)
    assert infos.is_accepted.shape == (4,)


@pytest.mark.parametrize(
    "build", [uld.build_kernel, uld.build_adjusted_kernel], ids=["plain", "adjusted"]
)
def test_one_gradient_evaluation_per_step(build):
    calls = []

    def logdensity_fn(x):
        calls.append(1)
        return -0.5 * jnp.sum(x**2)

    state = uld.init(jnp.ones(3), logdensity_fn, jax.random.key(0))
    assert len(calls) == 1
    kernel = build()
    n_steps = 4
    for key in jax.random.split(jax.random.key(1), n_steps):
        state, _ = kernel(key, state, logdensity_fn, 0.2, 1.0)
    assert len(calls) == 1 + n_steps


def test_parameters_can_be_traced():
    """Step size and friction may be traced values (e.g. for adaptation)."""
    logdensity_fn = gaussian_logdensity(0.0, 1.0)
    state = uld.init(jnp.ones(2), logdensity_fn, jax.random.key(0))

    @functools.partial(jax.jit, static_argnums=0)
    def step(build, step_size, friction):
        return build()(jax.random.key(1), state, logdensity_fn, step_size, friction)

    for build in (uld.build_kernel, uld.build_adjusted_kernel):
        new_state, _ = step(build, 0.1, 2.0)
        assert np.all(np.isfinite(np.asarray(new_state.position)))
    variances = jax.jit(jax.vmap(uld.stationary_variance, in_axes=(0, None, None)))(
        jnp.array([0.01, 0.1]), 2.0, 1.0
    )
    assert variances.shape == (2,) and np.all(np.asarray(variances) > 1.0)
