import jax
import jax.numpy as jnp
import numpy as np
import pytest

import rtk_blackjax as rb
from rtk_blackjax.mcmc import score_energy


@pytest.mark.parametrize("rule", ["legendre", "lobatto"])
def test_quadrature_rules_integrate_polynomials_exactly(rule):
    for n in range(2, 6):
        nodes, weights = score_energy.quadrature_rule(rule, n)
        degree = 2 * n - 1 if rule == "legendre" else 2 * n - 3
        for p in range(degree + 1):
            assert np.dot(weights, nodes**p) == pytest.approx(1 / (p + 1), rel=1e-10)


@pytest.mark.parametrize("rule", ["legendre", "lobatto"])
def test_energy_difference_error_shrinks_with_nodes_on_mog(rule):
    target = rb.targets.random_mog(3, dim=4, num_components=5)
    keys = jax.random.split(jax.random.key(0), 20)
    points = [jax.random.normal(k, (2, 4)) * 0.4 for k in keys]
    t = 0.05
    errors = []
    nodes_list = [1, 2, 4, 8] if rule == "legendre" else [2, 3, 5, 9]
    for n in nodes_list:
        err = [
            abs(
                float(
                    score_energy.energy_difference(
                        target.score, x, x_new, t, rule=rule, num_nodes=n
                    )
                )
                - float(target.logdensity(x_new, t) - target.logdensity(x, t))
            )
            for x, x_new in points
        ]
        errors.append(np.mean(err))
    assert errors[0] > errors[1] > errors[2], errors
    assert errors[-1] < 1e-3 * max(1.0, errors[0]), errors


def test_line_integral_gradient_is_the_score():
    target = rb.targets.chessboard(dim=3)
    anchor = jnp.array([0.1, -0.2, 0.0])
    logp = score_energy.line_integral_logdensity(
        target.score,
        0.1,
        anchor,
        target.score(anchor, 0.1),
        rule="lobatto",
        num_nodes=3,
    )
    x = jnp.array([0.3, 0.2, -0.1])
    value, grad = jax.value_and_grad(logp)(x)
    np.testing.assert_allclose(grad, target.score(x, 0.1), rtol=1e-6)
    exact = target.logdensity(x, 0.1) - target.logdensity(anchor, 0.1)
    assert float(value) == pytest.approx(
        float(exact), abs=0.05 * abs(float(exact)) + 1e-3
    )


def test_bad_rules_raise():
    with pytest.raises(ValueError, match="rule"):
        score_energy.quadrature_rule("simpson", 3)
    with pytest.raises(ValueError, match="num_nodes"):
        score_energy.quadrature_rule("lobatto", 1)
    with pytest.raises(ValueError, match="anchor_score"):
        score_energy.line_integral_logdensity(
            lambda x, t: -x, 0.0, jnp.zeros(2), rule="lobatto"
        )


@pytest.mark.parametrize(
    "inner",
    [
        rb.score_mala_inner(rule="legendre", num_nodes=2),
        rb.score_mala_inner(rule="lobatto", num_nodes=3, radius_scale=3.0),
        rb.uld_inner(step_scale=0.3),
    ],
    ids=["score-mala-legendre", "score-mala-projected", "uld"],
)
def test_score_only_rtk_recovers_gaussian(inner):
    mean = np.array([0.4, -0.3, 0.1, 0.0])
    cov = np.diag([0.3, 0.15, 0.2, 0.25])
    target = rb.targets.score_only(rb.targets.gaussian(mean, cov))
    sampler = rb.rtk(
        target, rb.geometric_grid(16, t_min=1e-2), inner, num_inner_steps=4
    )
    result = rb.sample(jax.random.key(4), sampler, 4000, dim=4)
    x = np.asarray(result.samples)
    z_mean = (x.mean(0) - mean) / np.sqrt(np.diag(cov) / len(x))
    ratio = x.var(0, ddof=1) / np.diag(cov)
    assert np.abs(z_mean).max() < 4.5
    # unadjusted ULD has its small known step-size bias; MALA is exact
    assert np.abs(ratio - 1).max() < 0.08
