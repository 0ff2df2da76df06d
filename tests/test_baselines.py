import jax
import numpy as np
import pytest

import rtk_blackjax as rb


@pytest.mark.parametrize("method", ["ddpm", "ddim"])
def test_baselines_converge_on_gaussian(method):
    # N(0.3, 0.02 I) in 40-D: the variance error shrinks as the grid is refined.
    dim, var = 40, 0.02
    target = rb.targets.gaussian(0.3 * np.ones(dim), var)
    builder = getattr(rb, method)
    errors = []
    for steps in (16, 64, 256):
        grid = rb.geometric_grid(steps, t_min=1e-5)
        x = np.asarray(
            rb.sample(jax.random.key(0), builder(target, grid), 3000, dim=dim).samples
        )
        errors.append(abs(x.var(0, ddof=1).mean() / var - 1))
        assert abs(x.mean() - 0.3) < 0.02
    assert errors[0] > errors[1] > errors[2], errors
    assert errors[-1] < 0.03, errors


def test_ddim_is_deterministic_given_the_start():
    target = rb.targets.chessboard(dim=3)
    alg = rb.ddim(target, rb.geometric_grid(10))
    state = alg.init(np.ones(3))
    s1, s2 = state, state
    for k in range(alg.num_segments):
        s1, _ = alg.step(jax.random.key(k), s1)
        s2, _ = alg.step(jax.random.key(100 + k), s2)
    np.testing.assert_array_equal(np.asarray(s1.position), np.asarray(s2.position))


def test_baselines_reject_non_targets():
    with pytest.raises(TypeError, match="target"):
        rb.ddpm(lambda x, t: -x, rb.uniform_grid(3))
