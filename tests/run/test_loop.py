"""The segment loop and its key scheme: one particle by hand = sample i of rb.sample."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import rtk_blackjax as rb
from rtk_blackjax.run import loop

pytestmark = pytest.mark.filterwarnings("ignore:inner-kernel acceptance:RuntimeWarning")


def _algorithm():
    return rb.rtk(rb.targets.random_mog(0, 2, 3), rb.geometric_grid(5), None, 1)


def test_particle_by_hand_is_sample_i():
    alg, key = _algorithm(), jax.random.key(3)
    template = jax.ShapeDtypeStruct((2,), jnp.float32)
    result = rb.sample(key, alg, 4, dim=2)

    def by_hand(i):
        particle = loop.particle_key(key, i)
        state = loop.init_particle(alg.init, particle, template)
        state, _ = loop.run_segments(
            alg.step, state, loop.chain_key(particle), 0, alg.num_segments
        )
        return state.position

    hand = jax.jit(jax.vmap(by_hand))(jnp.arange(4, dtype=jnp.uint32))
    np.testing.assert_allclose(hand, result.samples, rtol=1e-5, atol=1e-6)


def test_explicit_segment_equals_state_counter():
    alg = _algorithm()
    state = alg.init(jnp.ones(2))
    key = jax.random.key(1)
    for k in range(alg.num_segments):
        explicit, info_e = alg.step(key, state, k)
        implicit, info_i = alg.step(key, state)
        np.testing.assert_array_equal(explicit.position, implicit.position)
        assert int(explicit.step) == int(implicit.step) == k + 1
        state = implicit


def test_run_segments_folds_and_stacks_from_a_traced_first_segment():
    alg = rb.ddpm(rb.targets.gaussian(jnp.zeros(2), 1.0), rb.geometric_grid(6))
    key = jax.random.key(0)
    start = alg.init(jnp.ones(2))

    @jax.jit
    def two_halves(k0):
        state, _ = loop.run_segments(alg.step, start, key, 0, k0)  # traced bound
        return loop.run_segments(
            alg.step, state, key, k0, 3, transform=lambda s, info: info.time
        )

    state, times = two_halves(3)
    whole, _ = loop.run_segments(alg.step, start, key, 0, 6)
    np.testing.assert_array_equal(state.position, whole.position)
    np.testing.assert_array_equal(times, alg.times[4:])


def test_segment_key_of_a_batch_folds_each_key():
    keys = jax.random.split(jax.random.key(0), 3)
    batch = loop.segment_key(keys, 2)
    for i in range(3):
        np.testing.assert_array_equal(
            jax.random.key_data(batch[i]),
            jax.random.key_data(jax.random.fold_in(keys[i], 2)),
        )
    raw = jax.vmap(jax.random.PRNGKey)(jnp.arange(3))
    np.testing.assert_array_equal(
        loop.segment_key(raw, 2)[1], jax.random.fold_in(raw[1], 2)
    )


def test_a_step_without_segment_argument_is_refused_clearly():
    alg = _algorithm()
    legacy = alg._replace(step=lambda key, state: alg.step(key, state))
    with pytest.raises(TypeError, match="segment"):
        rb.sample(jax.random.key(0), legacy, 2, dim=2)
