"""Memory-bounded defaults: without a chunk size, rb.sample chunks a run that would
not fit its memory budget, and runs a small one in one call as before."""

import types

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import rtk_blackjax as rb
from rtk_blackjax.run.layout import position_template
from rtk_blackjax.run.memory import (
    CHUNK_QUANTUM,
    auto_chunk_size,
    default_memory_budget,
    tree_bytes,
)
from rtk_blackjax.run.programs import get_program

TARGET = rb.targets.gaussian(jnp.array([0.5, -1.0]), jnp.array([0.3, 0.1]))
DDPM = rb.ddpm(TARGET, rb.geometric_grid(10, t_min=1e-3))
N = 20_000


def _program(algorithm, dim):
    return get_program(algorithm, position_template(dim, None), True, False)


def test_chunk_follows_the_budget():
    program, key = _program(DDPM, 2), jax.random.key(0)
    # Plenty of memory: no chunks (the run is as before).
    assert auto_chunk_size(program, key, N, 10**9) is None
    small = auto_chunk_size(program, key, N, 10**6)
    larger = auto_chunk_size(program, key, N, 4 * 10**6)
    assert small % CHUNK_QUANTUM == 0 and larger % CHUNK_QUANTUM == 0
    assert CHUNK_QUANTUM <= small < larger < N
    # Below one quantum's worth the chunk stays one quantum (never zero).
    assert auto_chunk_size(program, key, N, 1) == CHUNK_QUANTUM


def test_measured_memory_grows_with_the_dimension():
    # The probe reads XLA's accounting: 50 times the dimension, several times
    # the memory per particle, so a fixed budget holds several times fewer.
    key, budget = jax.random.key(0), 10**7
    wide = rb.ddpm(rb.targets.gaussian(jnp.zeros(100), 0.5), DDPM.times)
    narrow_chunk = auto_chunk_size(_program(DDPM, 2), key, 10**6, budget)
    wide_chunk = auto_chunk_size(_program(wide, 100), key, 10**6, budget)
    assert wide_chunk * 5 <= narrow_chunk


def test_sample_with_a_small_budget_runs_the_chunks_it_picked():
    key = jax.random.key(1)
    budget = 10**6
    chunked = rb.sample(key, DDPM, N, dim=2, memory_budget=budget)
    chunk = auto_chunk_size(_program(DDPM, 2), key, N, budget)
    explicit = rb.sample(key, DDPM, N, dim=2, chunk_size=chunk)
    # the same chunks: bit-identical, gathered on the host
    assert isinstance(chunked.samples, np.ndarray)
    np.testing.assert_array_equal(chunked.samples, explicit.samples)
    np.testing.assert_array_equal(chunked.info.time, explicit.info.time)
    # and the same particles as one call, up to XLA's rounding at another shape
    whole = rb.sample(key, DDPM, N, dim=2, memory_budget=10**9)
    assert isinstance(whole.samples, jax.Array)
    np.testing.assert_allclose(chunked.samples, whole.samples, rtol=1e-4, atol=1e-5)


def test_a_small_run_is_one_call_by_default():
    key = jax.random.key(2)
    default = rb.sample(key, DDPM, 500, dim=2)
    one_call = rb.sample(key, DDPM, 500, dim=2, memory_budget=10**12)
    assert isinstance(default.samples, jax.Array)
    np.testing.assert_array_equal(default.samples, one_call.samples)


def test_default_budget_reads_the_device_or_the_host():
    gpu_like = types.SimpleNamespace(
        memory_stats=lambda: {"bytes_limit": 10_000, "bytes_in_use": 2_000}
    )
    assert default_memory_budget([gpu_like]) == 4_000
    cpu = jax.devices("cpu")[0]
    # On a CPU the results share the host memory: they come off the budget, and
    # CPU devices split what is left.
    # (Two reads of the host's available memory differ a little: no equalities.)
    assert default_memory_budget([cpu], host_result_bytes=10**15) == 1
    whole, split = default_memory_budget([cpu]), default_memory_budget([cpu, cpu])
    assert 0.3 < split / whole < 0.7
    assert tree_bytes(jax.ShapeDtypeStruct((3, 4), jnp.float32)) == 48


@pytest.mark.parametrize(
    "value, error",
    [("1e9", TypeError), (1.5, TypeError), (0, ValueError), (-5, ValueError)],
)
def test_memory_budget_bad_input(value, error):
    with pytest.raises(error, match="memory_budget"):
        rb.sample(jax.random.key(0), DDPM, 10, dim=2, memory_budget=value)
