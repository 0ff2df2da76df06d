"""The compiled programs of a run: particle initialisation and blocks of segments.

A run needs two device programs per setup, built here from one
:class:`~rtk_blackjax.mcmc.rtk.DiffusionAlgorithm` and a position template:

* ``run``: a whole chunk in one call, the particles' initialisation and a
  ``lax.scan`` over all segments (:func:`~rtk_blackjax.run.loop.run_segments`);
* ``init`` and ``advance(length)``: the same pieces apart, for checkpointed runs,
  which run blocks of ``length`` segments from a traced first segment and save
  the state in between. The scan body is the same in both cases, which is why
  resuming is bit-identical.

They are single-device programs: with several devices each one runs the same
program on its own slice of the chunk (see :mod:`rtk_blackjax.run.devices`).
Programs are kept in one bounded :class:`~rtk_blackjax._cache.ProgramCache` keyed
by the algorithm's functions (held, not their ids) and the static setup.
"""

import inspect
from collections.abc import Callable
from functools import partial
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from rtk_blackjax._cache import ProgramCache
from rtk_blackjax.mcmc.rtk import DiffusionAlgorithm
from rtk_blackjax.run.loop import chain_key, init_particle, particle_key, run_segments
from rtk_blackjax.types import Array, ArrayTree

__all__ = ["Program", "get_program", "trace_one_particle", "ACTIVE_BARS"]

# Compiled programs kept alive between calls.
PROGRAMS = ProgramCache(8)
# The tqdm bar of the run in progress; the compiled programs are shared between
# calls, so their progress callback cannot close over one call's bar.
ACTIVE_BARS: list = []


class Program(NamedTuple):
    """The compiled pieces of a run, shared between calls with the same setup.

    They are single-device programs: with several devices each one runs the same
    program on its own slice of the chunk (dispatched asynchronously, so they run
    concurrently). A program partitioned across a device mesh would be optimised
    differently by XLA (we measured different rounding of divisions by
    broadcasts), so sample ``i`` would depend on the device count.
    """

    algorithm: DiffusionAlgorithm
    run: Callable  # (key, indices, valid, reporter) -> (states, first_bad, out)
    init: Callable  # (key, indices) -> (states, first_bad)
    # advance(length) -> (key, indices, valid, states, first_bad, k0, reporter) -> ...
    advance: Callable
    state_shapes: ArrayTree  # one particle's state (ShapeDtypeStruct leaves)
    info_shapes: Any  # one particle's info of one segment


def _segment_is_finite(info: Any, states: Any) -> Array:
    finite = getattr(info, "is_finite", None)
    if finite is not None:
        return finite
    leaves = jax.tree.leaves(states.position)
    return jnp.all(
        jnp.stack(
            [jnp.all(jnp.isfinite(v), axis=tuple(range(1, v.ndim))) for v in leaves]
        ),
        axis=0,
    )


def _acceptance_summary(info: Any, valid: Array) -> tuple[Array, Array]:
    """Sum and count of the non-NaN acceptance rates of the real particles."""
    acc = getattr(info, "acceptance_rate", None)
    if acc is None:
        zero = jnp.zeros((), jnp.float32)
        return zero, zero
    used = valid & ~jnp.isnan(acc)
    return jnp.sum(jnp.where(used, acc, 0.0)), jnp.sum(used).astype(acc.dtype)


def _progress_tick(reporter) -> None:
    # Every device runs the scan; only the first one advances the bar.
    if bool(reporter) and ACTIVE_BARS:
        ACTIVE_BARS[-1].update(1)


def _check_step_signature(step: Callable) -> None:
    try:
        signature = inspect.signature(step)
    except (TypeError, ValueError):  # no signature to inspect (e.g. a builtin)
        return
    try:
        signature.bind(None, None, 0)
    except TypeError as err:
        raise TypeError(
            "algorithm.step must take the segment index as its third argument, "
            "step(rng_key, state, segment=None), as every sampler of this package "
            f"does; got a step with signature {signature}"
        ) from err


def trace_one_particle(algorithm: DiffusionAlgorithm, template: ArrayTree):
    """Shapes of one particle's state and info; clear errors for a bad setup.

    Runs only abstractly (``jax.eval_shape``): a target of another dimension, or a
    step that changes the state's shapes, would otherwise fail deep inside the
    compiled scan with an error that names neither ``dim`` nor the target.
    """
    _check_step_signature(algorithm.step)

    def one(key):
        position = jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), template)
        state = algorithm.init(position)
        new_state, info = algorithm.step(key, state, jnp.zeros((), jnp.int32))
        return state, new_state, info

    shapes = jax.tree.map(lambda s: (s.shape, str(s.dtype)), template)
    try:
        state, new_state, info = jax.eval_shape(one, jax.random.key(0))
    except Exception as err:  # any tracing error: re-raised with what to check
        raise ValueError(
            f"algorithm could not run on a position of shape/dtype {shapes}: "
            f"{type(err).__name__}: {err}. Check that dim / position_like matches "
            "the target's dimension."
        ) from err
    if not hasattr(state, "position"):
        raise TypeError(
            "algorithm.init must return a state with a .position field, got "
            f"{type(state).__name__}"
        )

    def signature(tree):
        return jax.tree.structure(tree), [
            (v.shape, v.dtype) for v in jax.tree.leaves(tree)
        ]

    if signature(state) != signature(new_state):
        raise ValueError(
            "algorithm.step must return a state with the same structure, shapes and "
            f"dtypes as algorithm.init; for positions {shapes} init gives "
            f"{signature(state)[1]} and step gives {signature(new_state)[1]}. Does "
            "the target's score return the shape of the position (check that dim / "
            "position_like matches the target's dimension)? Does the step promote "
            "a low-precision position (e.g. bfloat16) to the grid's float dtype?"
        )
    return state, info


def _build_program(
    algorithm: DiffusionAlgorithm,
    template: ArrayTree,
    return_info: bool,
    progress: bool,
) -> Program:
    num_segments = algorithm.num_segments
    state_shapes, info_shapes = trace_one_particle(algorithm, template)

    def particle_keys(key, indices):
        return jax.vmap(particle_key, (None, 0))(key, indices)

    def init(key, indices):
        states = jax.vmap(partial(init_particle, algorithm.init, template=template))(
            particle_keys(key, indices)
        )
        first_bad = jnp.full(indices.shape, num_segments, jnp.int32)
        return states, first_bad

    # Every particle is on segment k: it is passed unbatched (in_axes None), so
    # per-segment work is done once per segment, not once per particle.
    step_all = jax.vmap(algorithm.step, in_axes=(0, 0, None))

    def advance(length, key, indices, valid, states, first_bad, k0, reporter):
        chain_keys = jax.vmap(chain_key)(particle_keys(key, indices))

        def step(seg_keys, carry, k):
            states, first_bad = carry
            states, info = step_all(seg_keys, states, k)
            bad = ~_segment_is_finite(info, states)
            first_bad = jnp.where((first_bad == num_segments) & bad, k, first_bad)
            return (states, first_bad), info

        def transform(carry, info):
            if progress:
                jax.debug.callback(_progress_tick, reporter)
            return info if return_info else _acceptance_summary(info, valid)

        return run_segments(
            step, (states, first_bad), chain_keys, k0, length, transform=transform
        )

    def run(key, indices, valid, reporter):
        states, first_bad = init(key, indices)
        (states, first_bad), out = advance(
            num_segments, key, indices, valid, states, first_bad, 0, reporter
        )
        return states, first_bad, out

    advance_fns: dict[int, Callable] = {}

    def advance_block(length: int) -> Callable:
        if length not in advance_fns:
            # The states are consumed: let XLA reuse their buffers for the output.
            advance_fns[length] = jax.jit(
                partial(advance, length), donate_argnums=(3, 4)
            )
        return advance_fns[length]

    # Without checkpoints a chunk is one call (one compilation instead of two).
    return Program(
        algorithm, jax.jit(run), jax.jit(init), advance_block, state_shapes, info_shapes
    )


def get_program(
    algorithm: DiffusionAlgorithm,
    template: ArrayTree,
    return_info: bool,
    progress: bool,
) -> Program:
    """The (cached) compiled programs of ``algorithm`` on positions like ``template``."""
    key = (
        algorithm.init,  # the functions themselves: alive while cached
        algorithm.step,
        algorithm.num_segments,
        tuple((s.shape, str(s.dtype)) for s in jax.tree.leaves(template)),
        str(jax.tree.structure(template)),
        return_info,
        progress,
        bool(jax.config.jax_enable_x64),
    )
    return PROGRAMS.get(
        key, lambda: _build_program(algorithm, template, return_info, progress)
    )
