"""DPM-Solver++(2M), Heun and predictor-corrector baselines: accuracy order on
Gaussian targets (against the exact probability-flow map), PC statistics, and exact
NFE accounting against an instrumented score."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.flatten_util import ravel_pytree

import rtk_blackjax as rb
from rtk_blackjax.baselines import (
    DPMSolverState,
    dpm_solver_pp,
    heun_pf_ode,
    predictor_corrector,
)


def _v(t, var):
    """Variance of p_t = N(a_t μ, v_t I) for p_0 = N(μ, var I)."""
    return np.exp(-2.0 * t) * var + 1.0 - np.exp(-2.0 * t)


def exact_flow(x_from, t_from, t_to, mean, var):
    """Exact probability-flow map of the OU process from ``t_from`` to ``t_to``.

    For p_0 = N(μ, σ² I): p_t = N(a_t μ, v_t I), v_t = a_t² σ² + s_t², and
    u = x - a_t μ solves du/dt = -u + u / v_t = (v_t' / 2 v_t) u, so
    x_{t_to} = a_{t_to} μ + sqrt(v_{t_to} / v_{t_from}) (x_{t_from} - a_{t_from} μ).
    """
    x_from, mean = np.asarray(x_from, np.float64), np.asarray(mean, np.float64)
    scale = np.sqrt(_v(t_to, var) / _v(t_from, var))
    return np.exp(-t_to) * mean + scale * (x_from - np.exp(-t_from) * mean)


def test_exact_flow_solves_the_probability_flow_ode():
    # d/dt x_t = -x_t - score(x_t, t) along the exact map (central differences, f64).
    mean, var = np.array([0.5, -1.0, 2.0]), 0.1
    x_T, T = np.array([1.3, -0.4, 0.8]), 1.5
    for t in (0.05, 0.3, 1.0):
        dt = 1e-5
        deriv = (
            exact_flow(x_T, T, t + dt, mean, var)
            - exact_flow(x_T, T, t - dt, mean, var)
        ) / (2 * dt)
        x = exact_flow(x_T, T, t, mean, var)
        score = -(x - np.exp(-t) * mean) / _v(t, var)
        np.testing.assert_allclose(deriv, -x - score, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(exact_flow(x_T, T, T, mean, var), x_T)


def _solve_to(builder, target, x_T, horizon, t_end, num_steps):
    """Run ``num_steps`` uniform segments from ``horizon`` to ``t_end`` (the grid
    continues to 0, which is never reached) and return the position at ``t_end``."""
    grid = np.concatenate([np.linspace(horizon, t_end, num_steps + 1), [0.0]])
    alg = builder(target, grid)

    @jax.jit
    def solve(x):
        def body(state, k):
            state, _ = alg.step(jax.random.key(0), state)
            return state, None

        state, _ = jax.lax.scan(body, alg.init(x), jnp.arange(num_steps))
        return state.position, state.step

    position, step = solve(jnp.asarray(x_T))
    assert int(step) == num_steps
    return np.asarray(position, np.float64)


@pytest.mark.parametrize(
    "builder, order",
    [(dpm_solver_pp, 2.0), (heun_pf_ode, 2.0), (rb.ddim, 1.0)],
    ids=["dpm_solver_pp", "heun", "ddim"],
)
@pytest.mark.parametrize(
    "mean, var, x_T",
    [
        ([-0.7], 0.1, [1.1]),
        ([0.5, -1.0, 2.0, 0.3], 0.1, [1.3, -0.4, 0.8, -1.7]),
    ],
    ids=["d1", "d4"],
)
def test_pf_ode_solvers_converge_at_their_order(builder, order, mean, var, x_T):
    target = rb.targets.gaussian(np.asarray(mean), var)
    horizon, t_end = 1.5, 0.1
    reference = exact_flow(x_T, horizon, t_end, mean, var)
    steps = np.array([16, 32, 64, 128])
    errors = np.array(
        [
            np.abs(_solve_to(builder, target, x_T, horizon, t_end, n) - reference).max()
            for n in steps
        ]
    )
    assert np.all(errors > 1e-5), errors  # well above float32 round-off
    slope = -np.polyfit(np.log(steps), np.log(errors), 1)[0]
    assert abs(slope - order) < 0.4, (slope, errors)
    assert errors[-1] < (2e-3 if order == 2.0 else 2e-2), errors


@pytest.mark.parametrize("builder", [dpm_solver_pp, heun_pf_ode], ids=["dpm", "heun"])
def test_last_segment_is_the_tweedie_denoise(builder):
    mean, var = np.array([0.5, -1.0]), 0.2
    target = rb.targets.gaussian(mean, var)
    alg = builder(target, rb.geometric_grid(30, horizon=3.0, t_min=1e-3))
    state = alg.init(jnp.array([0.7, 1.2]))
    step = jax.jit(alg.step)
    for _ in range(alg.num_segments - 1):
        state, _ = step(jax.random.key(0), state)
    t_min = float(alg.times[-2])
    y = np.asarray(state.position, np.float64)
    a, s2 = np.exp(-t_min), -np.expm1(-2.0 * t_min)
    tweedie = (y + s2 * np.asarray(target.score(state.position, t_min))) / a
    final, info = step(jax.random.key(0), state)
    np.testing.assert_allclose(np.asarray(final.position), tweedie, rtol=1e-5)
    assert int(info.num_evaluations) == 1 and float(info.time) == 0.0
    # ... and the whole solve lands on the exact flow map to t = 0.
    exact = exact_flow([0.7, 1.2], 3.0, 0.0, mean, var)
    np.testing.assert_allclose(np.asarray(final.position), exact, atol=5e-3)


def test_dpm_solver_first_step_is_ddim_and_later_steps_are_not():
    target = rb.targets.gaussian(np.array([0.4, -0.2]), 0.1)
    grid = rb.uniform_grid(6, horizon=2.0)
    dpm, ddim = dpm_solver_pp(target, grid), rb.ddim(target, grid)
    x = jnp.array([0.9, -1.3])
    s_dpm, s_ddim = dpm.init(x), ddim.init(x)
    assert isinstance(s_dpm, DPMSolverState)
    s_dpm, _ = dpm.step(jax.random.key(0), s_dpm)
    s_ddim, _ = ddim.step(jax.random.key(0), s_ddim)
    np.testing.assert_allclose(s_dpm.position, s_ddim.position, rtol=1e-6)
    assert float(s_dpm.prev_lambda_step) > 0.0
    s_dpm, _ = dpm.step(jax.random.key(0), s_dpm)
    s_ddim, _ = ddim.step(jax.random.key(0), s_ddim)
    assert np.abs(np.asarray(s_dpm.position - s_ddim.position)).max() > 1e-4


def test_ode_solvers_are_deterministic_and_pytree_safe():
    target = rb.targets.gaussian(np.array([0.5, -1.0, 2.0]), 0.2)
    tree = {"a": jnp.array([0.3, -0.8]), "b": jnp.array([1.1])}
    flat, unravel = ravel_pytree(tree)

    def tree_score(x, t):
        return unravel(target.score(ravel_pytree(x)[0], t))

    tree_target = rb.targets.from_score(tree_score)
    grid = rb.geometric_grid(8, horizon=2.0)
    for builder in (dpm_solver_pp, heun_pf_ode):
        results = []
        for tgt, x0, seed in (
            (target, flat, 0),
            (target, flat, 1),
            (tree_target, tree, 2),
        ):
            alg = builder(tgt, grid)
            state, step = alg.init(x0), jax.jit(alg.step)
            for k in range(alg.num_segments):
                state, _ = step(jax.random.key(seed + 10 * k), state)
            results.append(np.asarray(ravel_pytree(state.position)[0]))
        np.testing.assert_array_equal(results[0], results[1])
        np.testing.assert_allclose(results[0], results[2], rtol=1e-6)
    alg = predictor_corrector(tree_target, grid, corrector_steps=2)
    result = rb.sample(jax.random.key(0), alg, 4, position_like=tree)
    assert result.samples["a"].shape == (4, 2) and result.num_evaluations == 22


def _pc_variance_error(
    dim, var, num_steps, corrector_steps, num_samples, step_rule="snr"
):
    target = rb.targets.gaussian(0.3 * np.ones(dim), var)
    alg = predictor_corrector(
        target,
        rb.geometric_grid(num_steps, t_min=1e-4),
        corrector_steps,
        step_rule=step_rule,
    )
    x = np.asarray(rb.sample(jax.random.key(0), alg, num_samples, dim=dim).samples)
    assert abs(x.mean() - 0.3) < 0.01
    return x.var(0, ddof=1).mean() / var - 1.0


def _snr_fixed_point(dim, snr=0.16):
    # Stationary variance ratio of the per-particle SNR Langevin corrector on a
    # Gaussian: (1 + snr²)(d + 2)/(d - 2) (see predictor_corrector's docstring).
    return (1 + snr**2) * (dim + 2) / (dim - 2) - 1.0


def test_predictor_corrector_d20_converges_to_the_snr_rule_fixed_point():
    # d = 20: the coarse grid is far off (DDPM predictor), refining converges; with
    # correctors the limit is the per-particle SNR rule's documented bias.
    dim, var = 20, 0.1
    coarse = _pc_variance_error(dim, var, 16, 1, 2000)
    fine = _pc_variance_error(dim, var, 256, 1, 2000)
    more_correctors = _pc_variance_error(dim, var, 128, 3, 2000)
    limit = _snr_fixed_point(dim)  # ≈ 0.254
    assert abs(coarse - limit) > max(0.05, 2 * abs(fine - limit)), (coarse, fine)
    assert abs(fine - limit) < 0.03, (fine, limit)
    assert abs(more_correctors - limit) < 0.03, (more_correctors, limit)


def test_predictor_corrector_noise_rule_is_nearly_unbiased_in_low_dim():
    # The default, particle-independent step size has no O(4/d) bias: at d = 20 the
    # fine-grid error is within the Langevin discretisation bias (<= snr^2).
    dim, var = 20, 0.1
    coarse = _pc_variance_error(dim, var, 16, 1, 3000, step_rule="noise")
    fine = _pc_variance_error(dim, var, 256, 1, 3000, step_rule="noise")
    assert abs(fine) < 0.04 and abs(coarse) > abs(fine), (coarse, fine)


def test_predictor_corrector_high_dim_variance_is_small():
    dim, var = 200, 0.1
    errors = [_pc_variance_error(dim, var, n, 1, 400) for n in (16, 256)]
    assert abs(errors[0]) > 0.1 and abs(errors[1]) < 0.07, errors


def test_predictor_corrector_validates_arguments():
    target = rb.targets.gaussian(np.zeros(2), 0.5)
    for kwargs in (
        dict(corrector_steps=-1),
        dict(snr=0.0),
        dict(step_rule="batch"),
    ):
        with pytest.raises(ValueError):
            predictor_corrector(target, rb.uniform_grid(3), **kwargs)
    # a non-integer count is the wrong kind of value (rtk_blackjax._checks' rule)
    with pytest.raises(TypeError, match="corrector_steps"):
        predictor_corrector(target, rb.uniform_grid(3), corrector_steps=1.5)
    with pytest.raises(TypeError, match="target"):
        dpm_solver_pp(lambda x, t: -x, rb.uniform_grid(3))
    with pytest.raises(TypeError, match="target"):
        heun_pf_ode(lambda x, t: -x, rb.uniform_grid(3))


def _counting(target, calls):
    def score(x, t):
        jax.debug.callback(lambda t: calls.append(float(t)), t)
        return target.score(x, t)

    return rb.targets.Target(score, target.logdensity, target.mixture)


@pytest.mark.parametrize(
    "make, num_segments, expected",
    [
        (lambda tg, g: dpm_solver_pp(tg, g), 7, 7),
        (lambda tg, g: heun_pf_ode(tg, g), 7, 13),
        (lambda tg, g: heun_pf_ode(tg, g), 1, 1),
        (lambda tg, g: predictor_corrector(tg, g, corrector_steps=0), 7, 7),
        (lambda tg, g: predictor_corrector(tg, g), 7, 13),
        (lambda tg, g: predictor_corrector(tg, g, corrector_steps=3), 7, 25),
    ],
    ids=["dpm", "heun", "heun-1seg", "pc0", "pc1", "pc3"],
)
def test_reported_nfe_is_documented_and_instrumented(make, num_segments, expected):
    calls = []
    target = _counting(rb.targets.chessboard(dim=3), calls)
    result = rb.sample(
        jax.random.key(0), make(target, rb.geometric_grid(num_segments)), 1, dim=3
    )
    assert result.num_evaluations == expected == len(calls)
    per_segment = np.asarray(result.info.num_evaluations)[:, 0]
    assert per_segment.sum() == expected and per_segment[-1] == 1
    assert np.all(per_segment[:-1] == per_segment[0])
