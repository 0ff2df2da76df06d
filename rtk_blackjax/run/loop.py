"""The segment loop and the key scheme: how particles run through segments.

Everything in the package that runs particles through the segments of a
:class:`~rtk_blackjax.mcmc.rtk.DiffusionAlgorithm` uses these few functions:
:func:`rtk_blackjax.sample`, the segment diagnostics, ``DiffusionPrior``, the
split-Gibbs prior block and ``RTKKernel``.

Keys
----
Particle ``i`` of a run with key ``rng_key`` draws every random number from
:func:`particle_key` ``= fold_in(rng_key, i)``: its start noise from
:func:`start_key` ``= fold_in(., 0)``, segment ``k`` from
:func:`segment_key` ``(chain_key, k) = fold_in(chain_key, k)`` with
:func:`chain_key` ``= fold_in(., 1)``. So what a particle does never depends on
which other particles run next to it, in which chunk, on which device or host.
Callers with one key per chain (``DiffusionPrior``, ``RTKKernel``) pass their own
chain key to :func:`run_segments`; segment ``k`` still gets ``fold_in(chain_key, k)``.

Segments
--------
:func:`run_segments` is the one loop (in the spirit of
``blackjax.util.run_inference_algorithm``). It passes the segment index to the
step explicitly, ``step_fn(key, state, k)``, instead of letting the step read it
from ``state.step``: under ``vmap`` the index then stays unbatched, so everything
that depends only on the segment (``times[k]``, transition coefficients, a
mixture's diffused covariances, inner trip counts) is computed once per segment,
not once per particle.
"""

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp

from rtk_blackjax.types import ArrayTree, PRNGKey

__all__ = [
    "particle_key",
    "start_key",
    "chain_key",
    "segment_key",
    "start_position",
    "init_particle",
    "run_segments",
]


def particle_key(rng_key: PRNGKey, index: Any) -> PRNGKey:
    """Key of particle ``index`` of the run ``rng_key``: ``fold_in(rng_key, index)``."""
    return jax.random.fold_in(rng_key, index)


def start_key(particle_key: PRNGKey) -> PRNGKey:
    """Key of a particle's start noise: ``fold_in(particle_key, 0)``."""
    return jax.random.fold_in(particle_key, 0)


def chain_key(particle_key: PRNGKey) -> PRNGKey:
    """Key of a particle's chain through the segments: ``fold_in(particle_key, 1)``."""
    return jax.random.fold_in(particle_key, 1)


def _batch_ndim(key: Any) -> int:
    if jax.dtypes.issubdtype(key.dtype, jax.dtypes.prng_key):
        return key.ndim
    return key.ndim - 1  # a raw uint32 key has a trailing axis of its own


def segment_key(chain_key: PRNGKey, segment: Any) -> PRNGKey:
    """Key of segment ``segment``: ``fold_in(chain_key, segment)``.

    ``chain_key`` may also be a batch of keys (typed or raw): each is folded with
    the same ``segment``.
    """
    if _batch_ndim(chain_key) == 0:
        return jax.random.fold_in(chain_key, segment)
    return jax.vmap(segment_key, (0, None))(chain_key, segment)


def start_position(start_key: PRNGKey, template: ArrayTree) -> ArrayTree:
    """``N(0, I)`` noise shaped like ``template`` (``ShapeDtypeStruct`` leaves)."""
    leaves, treedef = jax.tree.flatten(template)
    keys = jax.random.split(start_key, len(leaves))
    noise = [jax.random.normal(k, s.shape, s.dtype) for k, s in zip(keys, leaves)]
    return jax.tree.unflatten(treedef, noise)


def init_particle(init_fn: Callable, particle_key: PRNGKey, template: ArrayTree):
    """A particle's state at the horizon: ``init_fn`` of its start noise."""
    return init_fn(start_position(start_key(particle_key), template))


def run_segments(
    step_fn: Callable,
    state: Any,
    chain_key: PRNGKey,
    first_segment: Any,
    num_segments: Any,
    *,
    transform: Callable | None = None,
) -> tuple[Any, Any]:
    """Run segments ``first_segment, ..., first_segment + num_segments - 1``.

    Segment ``k`` calls ``step_fn(segment_key(chain_key, k), state, k)``, which
    returns ``(state, info)``.

    Parameters
    ----------
    step_fn
        ``(rng_key, state, segment) -> (state, info)``; e.g. a
        ``DiffusionAlgorithm``'s ``step``, or a function that steps a batch of
        particles (``chain_key`` is then the batch of their chain keys) or carries
        running summaries next to the state.
    state
        The state entering ``first_segment``.
    chain_key
        Key (or batch of keys) the segment keys are folded from.
    first_segment
        Index of the first segment to run (an int or a traced integer).
    num_segments
        How many segments to run: a Python int when ``transform`` is given (the
        outputs are stacked); otherwise it may be traced.
    transform
        ``(state, info) -> output`` applied after every segment; the outputs are
        stacked along a leading segment axis (``lax.scan``). ``None``: no
        per-segment outputs (``lax.fori_loop``, whose bounds may be traced).

    Returns
    -------
    state, outputs
        The final state, and the stacked outputs (``None`` without ``transform``).

    Examples
    --------
    >>> import jax, jax.numpy as jnp
    >>> import rtk_blackjax as rb
    >>> alg = rb.ddpm(rb.targets.gaussian(jnp.zeros(2), 1.0), rb.geometric_grid(4))
    >>> state = alg.init(jnp.zeros(2))
    >>> state, times = run_segments(alg.step, state, jax.random.key(0), 0, 4,
    ...                             transform=lambda state, info: info.time)
    >>> int(state.step), times.shape
    (4, (4,))
    """

    def one_segment(segment, state):
        return step_fn(segment_key(chain_key, segment), state, segment)

    if transform is None:

        def fold(segment, state):
            return one_segment(segment, state)[0]

        last = first_segment + num_segments
        return jax.lax.fori_loop(first_segment, last, fold, state), None

    def body(state, segment):
        state, info = one_segment(segment, state)
        return state, transform(state, info)

    segments = first_segment + jnp.arange(num_segments, dtype=jnp.int32)
    return jax.lax.scan(body, state, segments)
