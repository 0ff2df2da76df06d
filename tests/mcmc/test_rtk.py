"""Correctness of the RTK outer kernel on targets whose answer is known exactly."""

import blackjax
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import rtk_blackjax as rb
from rtk_blackjax.mcmc import rtk as rtk_module


def _moment_errors(samples, mean, cov):
    """Standardised errors of the sample mean and (diagonal) covariance."""
    n = samples.shape[0]
    mean_z = (samples.mean(0) - mean) / np.sqrt(np.diag(cov) / n)
    emp_cov = np.cov(samples, rowvar=False)
    var = np.diag(cov)
    # Var of a sample covariance entry: (S_ii S_jj + S_ij^2) / n
    cov_se = np.sqrt((np.outer(var, var) + cov**2) / n)
    cov_z = (emp_cov - cov) / cov_se
    return np.abs(mean_z).max(), np.abs(cov_z).max()


@pytest.mark.parametrize(
    "grid",
    [
        rb.uniform_grid(30, horizon=4.0),
        rb.geometric_grid(25, horizon=5.0, t_min=1e-2),
        rb.theory_grid(smoothness=4.0, horizon=3.0),
    ],
    ids=["uniform", "geometric", "theory"],
)
def test_rtk_gaussian_prior_is_exact(grid):
    # Every q_k is Gaussian, so RTK's output law is exactly N(mu, Sigma) (up to the
    # horizon's e^{-2T} mismatch) once the inner chains have converged. The
    # covariance is anisotropic (eigenvalues 0.25 ... 1.5, curvature bound L = 4), so
    # the isotropic Gaussian predictor is *not* exact and the MALA steps must fix it.
    mean = np.array([0.5, -1.0, 0.2])
    rotation = np.linalg.qr(np.random.default_rng(0).normal(size=(3, 3)))[0]
    cov = rotation @ np.diag([0.25, 0.6, 1.5]) @ rotation.T
    target = rb.targets.gaussian(mean, cov)
    sampler = rb.rtk(target, grid, num_inner_steps=8)
    result = rb.sample(jax.random.key(0), sampler, 4000, dim=3)
    mean_z, cov_z = _moment_errors(np.asarray(result.samples), mean, cov)
    assert mean_z < 4.5 and cov_z < 4.5, (mean_z, cov_z)
    assert result.acceptance_per_segment().min() > 0.3


def test_rtk_isotropic_gaussian_exact_without_inner_steps():
    # For an isotropic Gaussian the secant curvature is exact, so the Gaussian
    # predictor *is* q_k: RTK is exact even with zero Metropolis steps.
    dim = 20
    target = rb.targets.gaussian(0.3 * np.ones(dim), 0.05)
    sampler = rb.rtk(target, rb.geometric_grid(4, t_min=0.05), num_inner_steps=0)
    x = np.asarray(rb.sample(jax.random.key(1), sampler, 4000, dim=dim).samples)
    assert abs(x.mean() - 0.3) < 4 * np.sqrt(0.05 / x.size)
    ratio = x.var(0, ddof=1).mean() / 0.05
    assert abs(ratio - 1) < 4 * np.sqrt(2 / x.size)


@pytest.mark.parametrize("curvature", ["diagonal", "secant"])
def test_diagonal_curvature_makes_axis_aligned_gaussians_exact(curvature):
    # Variances over two decades, axis-aligned: the per-coordinate curvature is
    # exact (the score is linear, so the finite difference is the Hessian's
    # diagonal), so the predictor *is* q_k and zero Metropolis steps suffice. The
    # isotropic secant (the control) gives every coordinate one averaged variance.
    dim, n = 6, 4000
    var = np.geomspace(0.02, 2.0, dim)
    target = rb.targets.gaussian(0.3 * np.ones(dim), var)
    sampler = rb.rtk(
        target,
        rb.geometric_grid(4, t_min=0.05),
        num_inner_steps=0,
        curvature=curvature,
    )
    x = np.asarray(rb.sample(jax.random.key(1), sampler, n, dim=dim).samples)
    var_z = (x.var(0, ddof=1) / var - 1.0) / np.sqrt(2.0 / (n - 1))
    exact = bool(np.all(np.abs(var_z) < 4.5))
    assert exact == (curvature == "diagonal"), var_z.round(1)


def test_diagonal_curvature_is_the_hessian_diagonal_and_refines_the_secant():
    from rtk_blackjax import segment

    rng = np.random.default_rng(0)
    q = np.linalg.qr(rng.normal(size=(5, 5)))[0]
    cov = q @ np.diag([0.05, 0.2, 0.5, 1.0, 3.0]) @ q.T
    t = 0.3
    target = rb.targets.gaussian(np.zeros(5), cov)
    # -log p_t is quadratic with Hessian (a_t^2 cov + s_t^2 I)^{-1}
    a2, s2 = np.exp(-2 * t), 1 - np.exp(-2 * t)
    hessian = np.linalg.inv(a2 * cov + s2 * np.eye(5))
    y = jnp.asarray(rng.normal(size=5))
    score_y = target.score(y, t)
    signs = jax.random.rademacher(jax.random.key(0), (5,), float)
    u = 0.3 * signs

    def score_fn(x):
        return target.score(x, t)

    lam = np.asarray(segment.diagonal_curvature(score_fn, y, score_y, u))
    # (H u)_i / u_i: the diagonal plus the off-diagonal terms the signs pick
    np.testing.assert_allclose(lam, hessian @ np.asarray(u) / np.asarray(u), rtol=1e-4)
    # Averaged over coordinates it is the isotropic secant along the same u.
    secant = segment.secant_curvature(score_fn, y, score_y, u)
    np.testing.assert_allclose(lam.mean(), float(secant), rtol=1e-4)
    # Unbiased for the diagonal: over many sign draws the mean converges to it.
    draws = jax.vmap(
        lambda k: segment.diagonal_curvature(
            score_fn, y, score_y, 0.3 * jax.random.rademacher(k, (5,), float)
        )
    )(jax.random.split(jax.random.key(1), 4000))
    np.testing.assert_allclose(np.asarray(draws).mean(0), np.diag(hessian), rtol=0.05)


def _gaussian_q_posterior(mean_t, cov_t, y, a, s2):
    """Exact q(x) ∝ N(x; mean_t, cov_t) N(y; a x, s2 I)."""
    prec = np.linalg.inv(cov_t) + (a**2 / s2) * np.eye(len(y))
    post_cov = np.linalg.inv(prec)
    post_mean = post_cov @ (np.linalg.solve(cov_t, mean_t) + a * y / s2)
    return post_mean, post_cov


@pytest.mark.parametrize("predictor", ["gaussian", "ddpm", "tweedie"])
def test_mala_on_one_segment_matches_analytic_posterior(predictor):
    mean0 = np.array([1.0, -0.5])
    cov0 = np.array([[0.3, 0.1], [0.1, 0.08]])
    target = rb.targets.gaussian(mean0, cov0)
    t_end, t_start = 0.2, 0.6
    times = jnp.array([t_start, t_end, 0.0])
    kernel = rtk_module.build_kernel(
        target, times, rb.mala_inner(), num_inner_steps=[60, 0], predictor=predictor
    )
    y = jnp.array([0.4, 0.2])
    state = rtk_module.init(y, target, times)
    keys = jax.random.split(jax.random.key(3), 4000)
    new_state, info = jax.jit(jax.vmap(kernel, (0, None)))(keys, state)
    a, s2 = np.exp(-(t_start - t_end)), 1 - np.exp(-2 * (t_start - t_end))
    a_t, s2_t = np.exp(-t_end), 1 - np.exp(-2 * t_end)
    post_mean, post_cov = _gaussian_q_posterior(
        a_t * mean0, a_t**2 * cov0 + s2_t * np.eye(2), np.asarray(y), a, s2
    )
    mean_z, cov_z = _moment_errors(np.asarray(new_state.position), post_mean, post_cov)
    assert mean_z < 4.5 and cov_z < 4.5, (mean_z, cov_z)
    # the cached score is the score at the new position
    np.testing.assert_allclose(
        np.asarray(new_state.score[0]),
        np.asarray(target.score(new_state.position[0], t_end)),
        rtol=1e-3,
        atol=1e-3,
    )
    assert np.all(np.asarray(info.num_evaluations) == 1 + 1 + 60)


def test_other_blackjax_kernels_plug_in():
    # Mild anisotropy: these kernels get the isotropic Gaussian approximation's
    # scale, which is what an untuned plug-in sees.
    target = rb.targets.gaussian(np.array([0.5, -0.5]), np.array([0.2, 0.12]))
    hmc = rb.inner_kernel(
        blackjax.hmc,
        lambda g: dict(
            step_size=0.3 * jnp.sqrt(g.gaussian_variance),
            inverse_mass_matrix=jnp.ones(g.dim),
            num_integration_steps=3,
        ),
        evaluations_per_step=3,
    )
    for inner in (hmc, rb.independence_inner()):
        sampler = rb.rtk(target, rb.uniform_grid(12, 3.0), inner, num_inner_steps=10)
        x = np.asarray(rb.sample(jax.random.key(5), sampler, 3000, dim=2).samples)
        mean_z, cov_z = _moment_errors(x, np.array([0.5, -0.5]), np.diag([0.2, 0.12]))
        assert mean_z < 4.5 and cov_z < 4.5


def test_pytree_positions_match_flat_positions():
    target_flat = rb.targets.gaussian(np.array([0.2, -0.1, 0.4]), 0.3)

    def score(x, t):
        flat = jnp.concatenate([x["a"], x["b"]])
        s = target_flat.score(flat, t)
        return {"a": s[:1], "b": s[1:]}

    def logdensity(x, t):
        return target_flat.logdensity(jnp.concatenate([x["a"], x["b"]]), t)

    target_tree = rb.targets.from_score(score, logdensity)
    grid = rb.geometric_grid(6, t_min=1e-2)
    alg_flat = rb.rtk(target_flat, grid, num_inner_steps=2)
    alg_tree = rb.rtk(target_tree, grid, num_inner_steps=2)
    state_f = alg_flat.init(jnp.array([0.1, 0.2, 0.3]))
    state_t = alg_tree.init({"a": jnp.array([0.1]), "b": jnp.array([0.2, 0.3])})
    for k in range(alg_flat.num_segments):
        key = jax.random.key(k)
        state_f, _ = alg_flat.step(key, state_f)
        state_t, _ = alg_tree.step(key, state_t)
    tree_flat = jnp.concatenate([state_t.position["a"], state_t.position["b"]])
    np.testing.assert_allclose(tree_flat, state_f.position, rtol=1e-5, atol=1e-6)
    result = rb.sample(
        jax.random.key(0),
        alg_tree,
        16,
        position_like={"a": jnp.zeros(1), "b": jnp.zeros(2)},
    )
    assert result.samples["b"].shape == (16, 2)


def test_rtk_kernel_validates_arguments():
    target = rb.targets.gaussian(np.zeros(2), 1.0)
    grid = rb.uniform_grid(3)
    with pytest.raises(ValueError, match="predictor"):
        rb.rtk(target, grid, predictor="euler")
    with pytest.raises(ValueError, match="num_inner_steps"):
        rb.rtk(target, grid, num_inner_steps=[1, 2])
    with pytest.raises(ValueError, match="num_inner_steps"):
        rb.rtk(target, grid, num_inner_steps=-1)
    with pytest.raises(TypeError, match="inner"):
        rb.rtk(target, grid, inner=blackjax.mala)
    with pytest.raises(ValueError, match="strictly decreasing"):
        rb.rtk(target, [1.0, 2.0, 0.0])
    with pytest.raises(ValueError, match="no logdensity"):
        rb.rtk(rb.targets.score_only(target), grid, num_inner_steps=1)
    with pytest.raises(ValueError, match="step_scale"):
        rb.mala_inner(step_scale=-1.0)
