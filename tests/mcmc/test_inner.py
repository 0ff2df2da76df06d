"""The inner-kernel contract: NFE taken from BlackJAX's info, declared, or refused."""

import blackjax
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import rtk_blackjax as rb
from rtk_blackjax import segment as segment_module
from rtk_blackjax.mcmc import rtk as rtk_module


class _Counter:
    """Counts score and joint (log density, score) evaluations at run time.

    ``jax.debug.callback`` fires once per evaluation that actually runs, inside jit
    and loops; the joint one replaces ``target_logdensity_with_score`` so that a
    ``value_and_grad`` (one evaluation of an analytic target) counts once.
    """

    def __init__(self, base):
        self.base = base
        self.count = 0

    def _hit(self, *_):
        self.count += 1

    def target(self):
        base = self.base

        def score(x, t):
            jax.debug.callback(self._hit, t)
            return base.score(x, t)

        return rb.targets.Target(score, base.logdensity, base.mixture)

    def joint(self):
        base = self.base

        def make(_target):
            @jax.custom_jvp
            def logdensity(x, t):
                jax.debug.callback(self._hit, t)
                return base.logdensity(x, t)

            @logdensity.defjvp
            def _jvp(primals, tangents):
                x, t = primals
                jax.debug.callback(self._hit, t)
                return base.logdensity(x, t), jnp.vdot(base.score(x, t), tangents[0])

            return logdensity

        return make


def _hmc_rule(g):
    return dict(
        step_size=0.3 * jnp.sqrt(g.gaussian_variance),
        inverse_mass_matrix=jnp.ones(g.dim),
        num_integration_steps=3,
    )


def _nuts_rule(g):
    return dict(
        step_size=0.3 * jnp.sqrt(g.gaussian_variance),
        inverse_mass_matrix=jnp.ones(g.dim),
    )


def _run_counted(inner, monkeypatch, num_inner_steps=2, num_segments=4):
    """One particle, unbatched: the reported NFE and the counted evaluations."""
    counter = _Counter(rb.targets.gaussian(jnp.array([0.5, -0.5]), 0.3))
    monkeypatch.setattr(segment_module, "target_logdensity_with_score", counter.joint())
    alg = rb.rtk(
        counter.target(), rb.geometric_grid(num_segments), inner, num_inner_steps
    )
    state = alg.init(jnp.array([0.3, -1.2]))
    step = jax.jit(alg.step)
    per_segment = []
    for k in range(alg.num_segments):
        state, info = step(jax.random.key(k), state)
        per_segment.append(int(info.num_evaluations))
    jax.effects_barrier()
    return int(state.num_evaluations), counter.count, per_segment


def test_hmc_inner_reports_its_integration_steps(monkeypatch):
    hmc = rb.inner_kernel(blackjax.hmc, _hmc_rule)
    reported, counted, per_segment = _run_counted(hmc, monkeypatch)
    assert reported == counted
    # secant + init + 2 steps x 3 leapfrog steps + the final score (no cached grad)
    assert per_segment == [1 + 1 + 2 * 3 + 1] * 4


def test_nuts_inner_reports_its_trajectory_lengths(monkeypatch):
    nuts = rb.inner_kernel(blackjax.nuts, _nuts_rule)
    reported, counted, per_segment = _run_counted(nuts, monkeypatch)
    assert reported == counted
    assert min(per_segment) >= 1 + 1 + 2 + 1
    with pytest.raises(ValueError, match="only known at run time"):
        rtk_module.expected_nfe(nuts, [2, 2, 2, 2])


def test_declared_cost_is_used_as_declared(monkeypatch):
    hmc = rb.inner_kernel(blackjax.hmc, _hmc_rule, evaluations_per_step=7)
    assert hmc.cost == rb.InnerCost(at_init=1, per_step=7)
    reported, _, per_segment = _run_counted(hmc, monkeypatch)
    assert per_segment == [1 + 1 + 2 * 7 + 1] * 4
    assert reported == 1 + sum(per_segment)
    assert rtk_module.expected_nfe(hmc, [2, 2, 2, 2]) == reported


def test_known_single_evaluation_kernels_need_no_declaration(monkeypatch):
    mala = rb.inner_kernel(
        blackjax.mala, lambda g: {"step_size": 0.1 * g.gaussian_variance}
    )
    assert mala.cost == rb.InnerCost(at_init=1, per_step=1)
    reported, counted, _ = _run_counted(mala, monkeypatch)
    assert reported == counted == rtk_module.expected_nfe(mala, [2, 2, 2, 2])


def test_unknown_algorithm_without_declared_cost_is_refused():
    with pytest.raises(ValueError, match="declare evaluations_per_step"):
        rb.inner_kernel(
            blackjax.ghmc,
            lambda g: {"step_size": 0.1},
            init_needs_key=True,
        )
    declared = rb.inner_kernel(
        blackjax.ghmc, lambda g: {}, init_needs_key=True, evaluations_per_step=1
    )
    assert declared.cost.per_step == 1


def test_expected_nfe_matches_a_run_of_the_factories():
    target = rb.targets.gaussian(jnp.zeros(2), 0.5)
    steps = [0, 2, 1, 3]
    for inner in (rb.mala_inner(), rb.independence_inner(), rb.uld_inner()):
        alg = rb.rtk(target, rb.geometric_grid(4), inner, steps)
        result = rb.sample(jax.random.key(0), alg, 2, dim=2, progress_bar=False)
        assert result.num_evaluations == rtk_module.expected_nfe(inner, steps)
    score_mala = rb.score_mala_inner(rule="legendre", num_nodes=2)
    alg = rb.rtk(rb.targets.score_only(target), rb.geometric_grid(4), score_mala, 2)
    result = rb.sample(jax.random.key(0), alg, 2, dim=2, progress_bar=False)
    assert result.num_evaluations == rtk_module.expected_nfe(score_mala, [2] * 4)
    assert np.all(np.asarray(result.info.num_evaluations) == 1 + 3 + 2 * 3)
