"""RTK with the underdamped Langevin inner kernel."""

import jax
import numpy as np

import rtk_blackjax as rb


def test_rtk_uld_adjusted_is_exact_on_anisotropic_gaussian():
    mean = np.array([0.5, -1.0, 0.2])
    cov = np.diag([0.25, 0.6, 1.5])
    target = rb.targets.gaussian(mean, cov)
    sampler = rb.rtk(
        target, rb.geometric_grid(20, t_min=1e-2), rb.uld_inner(adjusted=True), 10
    )
    result = rb.sample(jax.random.key(0), sampler, 4000, dim=3)
    x = np.asarray(result.samples)
    z_mean = (x.mean(0) - mean) / np.sqrt(np.diag(cov) / len(x))
    z_var = (x.var(0, ddof=1) - np.diag(cov)) / (np.diag(cov) * np.sqrt(2 / len(x)))
    assert np.abs(z_mean).max() < 4.5 and np.abs(z_var).max() < 4.5
    acc = result.acceptance_per_segment()
    assert np.all((acc > 0.5) & (acc <= 1.0))


def test_rtk_uld_counts_one_evaluation_per_step():
    target = rb.targets.chessboard(dim=3)
    sampler = rb.rtk(target, rb.geometric_grid(5), rb.uld_inner(), num_inner_steps=3)
    result = rb.sample(jax.random.key(0), sampler, 2, dim=3)
    # 1 (initial score) + 5 segments x (secant + init + 3 steps)
    assert result.num_evaluations == 1 + 5 * 5
