"""The public entry point :func:`sample`: many particles through every segment.

How a run is organised, and why
-------------------------------
* **Keys.** Particle ``i`` draws every random number from ``fold_in(rng_key, i)``
  (its start from ``fold_in(., 0)``, segment ``k`` from ``fold_in(fold_in(., 1),
  k)``), so what a particle does never depends on which other particles run next
  to it, in which chunk, on which device or on which host
  (:mod:`rtk_blackjax.run.loop`).
* **Chunks.** Particles run in chunks of ``chunk_size`` per device. Every chunk has
  the same shape (the last one is padded and the padding dropped), so one
  compiled program serves the whole run and device memory is bounded by the chunk
  (:mod:`rtk_blackjax.run.layout`).
* **Devices.** Inside a chunk the particle axis is split across devices; particles
  never talk to each other, so every device runs, asynchronously, the very program
  a single device would run on ``chunk_size`` particles (not one program
  partitioned across a mesh, which XLA would optimise, and round, differently;
  :mod:`rtk_blackjax.run.devices`).
* **Segments.** A chunk is one compiled call: the particles' initialisation and a
  ``lax.scan`` over all segments. With checkpoints it is a compiled ``init`` and
  compiled blocks of ``checkpoint_every`` segments (the segment index is traced),
  with the state saved in between. The same scan body runs in both cases, which is
  why resuming is bit-identical (:mod:`rtk_blackjax.run.programs`,
  :mod:`rtk_blackjax.run.checkpoint`).
* **After the run.** Non-finite particles raise or are masked, stuck segments
  warn (:mod:`rtk_blackjax.run.policy`).

Bitwise reproducibility therefore holds whenever the per-device batch shape is the
same: XLA picks its kernels (dot products, vectorised loops) by shape, and
different kernels may round differently. See ``docs/reliability.md``.

This module holds :func:`sample`, its result :class:`SampleResult` and the host
loop over chunks; :class:`NonFiniteSamplesError` and :class:`CheckpointProgress`
are re-exported from :mod:`~rtk_blackjax.run.policy` and
:mod:`~rtk_blackjax.run.checkpoint`.
"""

import os
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from rtk_blackjax._checks import (
    check_bool,
    check_callable,
    check_choice,
    check_int,
    check_key,
)
from rtk_blackjax.mcmc.rtk import DiffusionAlgorithm
from rtk_blackjax.run.checkpoint import Checkpoint, CheckpointProgress, fingerprint
from rtk_blackjax.run.devices import check_devices, concat, join, split
from rtk_blackjax.run.layout import (
    ChunkOut,
    Collector,
    Layout,
    acceptance_from_info,
    mean_acceptance,
    nfe_of,
    position_template,
)
from rtk_blackjax.run.memory import auto_chunk_size, default_memory_budget, tree_bytes
from rtk_blackjax.run.policy import (
    NONFINITE_POLICIES,
    NonFiniteSamplesError,
    current_hint,
    raise_on_nonfinite,
    warn_on_low_acceptance,
)
from rtk_blackjax.run.programs import ACTIVE_BARS, get_program
from rtk_blackjax.types import Array, ArrayLikeTree, ArrayTree, PRNGKey

__all__ = [
    "SampleResult",
    "NonFiniteSamplesError",
    "CheckpointProgress",
    "sample",
    "NONFINITE_POLICIES",
]

# fold_in takes the particle index as a uint32.
_MAX_INDEX = 2**32


class SampleResult(NamedTuple):
    """Output of :func:`sample`.

    samples
        Final positions at ``t = 0``, leading axis ``num_samples``.
    info
        Per-segment info of the algorithm, each field of shape
        ``(num_segments, num_samples, ...)``; ``None`` with ``return_info=False``.
    num_evaluations
        NFE per sample (identical for every sample).
    times
        The grid that was run.
    finite
        Boolean mask ``(num_samples,)``: the sample and every intermediate
        position/score were finite.
    first_nonfinite_segment
        ``(num_samples,)`` integers: the first segment after which the particle
        was non-finite, ``num_segments`` for finite particles.
    segment_acceptance
        ``(num_segments,)`` mean inner-kernel acceptance over the particles of each
        segment (NaN where no Metropolis step ran). Kept with ``return_info=False``.

    With one chunk the arrays stay on the device(s); when a run has several chunks
    or uses ``checkpoint_dir`` they are NumPy arrays in host memory, so device
    memory stays bounded by the chunk.
    """

    samples: ArrayTree
    info: Any
    num_evaluations: int
    times: Array
    finite: Array
    first_nonfinite_segment: Array | None = None
    segment_acceptance: np.ndarray | None = None

    def acceptance_per_segment(self) -> np.ndarray:
        """Mean acceptance rate over particles of each segment (NaN without MH)."""
        if self.segment_acceptance is not None:
            return np.asarray(self.segment_acceptance)
        acc = getattr(self.info, "acceptance_rate", None)
        if acc is None:
            return np.full(self.times.shape[0] - 1, np.nan)
        return np.asarray(jnp.nanmean(acc, axis=1))


def _warn_on_batch_dependent_prng(rng_key: PRNGKey) -> None:
    """Warn when the key's PRNG breaks the per-sample determinism promise.

    Under ``vmap`` JAX's ``rbg`` / ``unsafe_rbg`` keys draw a whole batch's random
    numbers from the batch's first key (measured: sample ``i`` then changes with
    ``chunk_size``, ``start_index`` and the devices), so only threefry keys give
    sample ``i`` from ``fold_in(rng_key, i)`` alone.
    """
    from rtk_blackjax.run.policy import caller_stacklevel

    impl = str(jax.random.key_impl(rng_key))
    if impl != "threefry2x32":
        warnings.warn(
            f"rng_key uses the {impl!r} PRNG: under vmap it draws a batch's random "
            "numbers from the batch's first key, so sample i depends on chunk_size, "
            "start_index and the devices (rb.sample's determinism holds for "
            "threefry2x32 keys, jax.random.key(seed)); faster on some accelerators",
            UserWarning,
            stacklevel=caller_stacklevel(),
        )


def sample(
    rng_key: PRNGKey,
    algorithm: DiffusionAlgorithm,
    num_samples: int,
    dim: int | None = None,
    *,
    position_like: ArrayLikeTree | None = None,
    progress_bar: bool = False,
    on_nonfinite: str = "raise",
    chunk_size: int | None = None,
    devices: Sequence[jax.Device] | None = None,
    start_index: int = 0,
    return_info: bool = True,
    checkpoint_dir: str | os.PathLike | None = None,
    checkpoint_every: int = 1,
    checkpoint_callback: Callable[[CheckpointProgress], None] | None = None,
    memory_budget: int | None = None,
) -> SampleResult:
    """Draw ``num_samples`` samples by running every segment of ``algorithm``.

    Particles start from ``N(0, I)`` at the horizon and run through all segments
    of a ``lax.scan`` over ``vmap``-ed particles; segment times are traced values,
    so the sampler compiles once whatever the number of segments, and compiled
    programs are reused by later calls with the same algorithm and shapes. The
    segment index, equal for all particles, is passed to
    ``algorithm.step(key, state, segment)`` unbatched, so per-segment work is done
    once per segment, not per particle.

    **Determinism.** Sample ``i`` is particle ``start_index + i`` of the stream
    ``rng_key``: all its random numbers come from
    ``fold_in(rng_key, start_index + i)``, so changing ``num_samples``, the chunk
    size, the devices or the hosts does not change which sample it is. It is
    *bit-identical* whenever the per-device batch shape is the same, i.e. for the
    same ``chunk_size`` (and platform, JAX version and dtype): across
    ``num_samples``, ``start_index``, the number of devices and
    interruption/resume. Without ``chunk_size`` the batch is the whole run, and
    XLA may choose differently-rounding kernels for different sizes, so other
    ``num_samples`` or device counts agree to float rounding (see
    ``docs/reliability.md``).

    Parameters
    ----------
    rng_key
        A single JAX PRNG key (``jax.random.key(seed)``).
    algorithm
        A :class:`~rtk_blackjax.mcmc.rtk.DiffusionAlgorithm` (``rtk_blackjax.rtk``,
        ``rtk_blackjax.ddpm``, ...).
    num_samples
        Number of independent particles.
    dim
        Dimension of a flat position; or give ``position_like``, a pytree whose leaf
        shapes and (floating) dtypes are those of one position.
    progress_bar
        Show a ``tqdm`` bar over segments (updated from inside the compiled loop).
    on_nonfinite
        ``"raise"`` (default): raise :class:`NonFiniteSamplesError` saying how many
        particles went non-finite, in which segment first and the index of one.
        ``"mask"``: return the samples with ``result.finite`` marking the good ones.
    chunk_size
        Particles per device per compiled call. ``None`` (default): the whole run
        in one call if its working memory fits ``memory_budget``, else chunks
        chosen to fit it (a multiple of 1024 particles, see
        :mod:`rtk_blackjax.run.memory`; a checkpointed run keeps the whole run in
        one call unless given a chunk size). With a chunk size, a Python loop runs
        one compiled program on chunks of this fixed shape (the last chunk
        padded), so device memory is bounded by about two chunks and sample ``i``
        is bit-reproducible (see above): give one for bitwise reproducibility
        across machines, since the automatic choice depends on the memory free.
        Results are NumPy arrays in host memory when there are several chunks.
    devices
        Devices to split each chunk across (default: ``jax.local_devices()``).
        Each device runs ``chunk_size`` particles (``ceil(num_samples / ndev)``
        without a chunk size); padding is dropped.
    start_index
        Global index of the first particle: ``sample(key, alg, n, start_index=s)``
        returns samples ``s, ..., s + n - 1`` of the stream ``key``. On several
        hosts each process samples its own range (see ``docs/reliability.md``).
    return_info
        Keep the per-segment info (``num_segments x num_samples`` per field).
        ``False`` drops it, which matters in host memory for very large runs;
        ``result.segment_acceptance`` and the non-finite report remain.
    checkpoint_dir
        Save the run's progress there every ``checkpoint_every`` segments (the
        state of the chunk in progress, the outputs of completed chunks). Calling
        ``sample`` again with the same arguments resumes from the last save and
        gives bit-identical results; a different run (key, grid, sizes, state
        shapes, ...) in the same directory is refused with a ``ValueError``, and so
        is another algorithm (another target, inner kernel, step-size rule or
        parameter: the fingerprint holds a hash of its traced program).
    checkpoint_every
        Segments between checkpoints (compiles at most two segment-block lengths).
    checkpoint_callback
        Called with a :class:`CheckpointProgress` after every save (e.g. to log
        progress or stop a job at a wall-clock limit by raising).
    memory_budget
        Bytes per device that a call's working memory may take when
        ``chunk_size`` is ``None``. Default: half of the device's free memory
        (on CPUs, half of the host's available memory less what the results
        will occupy there, split between the devices).

    Returns
    -------
    SampleResult
        Samples, per-segment info, NFE per sample, the grid, the finite mask.

    Raises
    ------
    NonFiniteSamplesError
        With ``on_nonfinite="raise"`` if any particle became non-finite.
    TypeError, ValueError
        For invalid arguments, naming the argument.

    Examples
    --------
    >>> import jax, jax.numpy as jnp
    >>> import rtk_blackjax as rb
    >>> target = rb.targets.chessboard(dim=2)
    >>> sampler = rb.rtk(target, rb.geometric_grid(20), num_inner_steps=1)
    >>> result = rb.sample(jax.random.key(0), sampler, 500, dim=2)
    >>> result.samples.shape, result.num_evaluations
    ((500, 2), 61)

    Bounded memory and bitwise reproducibility: a fixed ``chunk_size`` gives the
    same sample ``i`` whatever the run it belongs to.

    >>> a = rb.sample(jax.random.key(0), sampler, 10, dim=2, chunk_size=4)
    >>> b = rb.sample(jax.random.key(0), sampler, 3, dim=2, chunk_size=4, start_index=7)
    >>> bool((a.samples[7:] == b.samples).all())
    True
    """
    if not isinstance(algorithm, DiffusionAlgorithm):
        raise TypeError(
            "algorithm must be a DiffusionAlgorithm (rtk_blackjax.rtk(...), "
            f"rtk_blackjax.ddpm(...), ...), got {type(algorithm).__name__}"
        )
    rng_key = check_key("rng_key", rng_key)
    _warn_on_batch_dependent_prng(rng_key)
    num_samples = check_int("num_samples", num_samples, minimum=1)
    on_nonfinite = check_choice("on_nonfinite", on_nonfinite, NONFINITE_POLICIES)
    progress_bar = check_bool("progress_bar", progress_bar)
    return_info = check_bool("return_info", return_info)
    start_index = check_int("start_index", start_index, minimum=0)
    if start_index + num_samples > _MAX_INDEX:
        raise ValueError(
            f"start_index + num_samples must be at most 2**32 (particle indices are "
            f"uint32), got {start_index} + {num_samples}"
        )
    if chunk_size is not None:
        chunk_size = check_int("chunk_size", chunk_size, minimum=1)
        if chunk_size > _MAX_INDEX:
            raise ValueError(
                f"chunk_size must be at most 2**32 (particle indices are uint32), got "
                f"{chunk_size}"
            )
    if memory_budget is not None:
        memory_budget = check_int("memory_budget", memory_budget, minimum=1)
    checkpoint_every = check_int("checkpoint_every", checkpoint_every, minimum=1)
    if checkpoint_dir is not None and not isinstance(
        checkpoint_dir, (str, os.PathLike)
    ):
        raise TypeError(
            f"checkpoint_dir must be a path (str or os.PathLike) or None, got "
            f"{type(checkpoint_dir).__name__}"
        )
    if checkpoint_callback is not None:
        check_callable(
            "checkpoint_callback", checkpoint_callback, "(CheckpointProgress) or None"
        )
    template = position_template(dim, position_like)
    devices = check_devices(devices)

    num_segments = algorithm.num_segments
    ndev = len(devices)
    program = get_program(algorithm, template, return_info, progress_bar)
    if chunk_size is None and checkpoint_dir is None:
        # Bounded working memory: chunks only where the whole run would not fit.
        if memory_budget is None:
            per_sample = tree_bytes(template)
            if return_info:
                per_sample += num_segments * tree_bytes(program.info_shapes)
            memory_budget = default_memory_budget(devices, num_samples * per_sample)
        chunk_size = auto_chunk_size(
            program, rng_key, -(-num_samples // ndev), memory_budget
        )
    per_device = chunk_size if chunk_size is not None else -(-num_samples // ndev)
    per_call = per_device * ndev
    layout = Layout(num_samples, start_index, per_call, -(-num_samples // per_call))

    checkpoint = None
    if checkpoint_dir is not None:
        saved_run = fingerprint(
            rng_key,
            algorithm,
            template,
            program,
            layout,
            per_device,
            devices,
            return_info,
        )
        checkpoint = Checkpoint(Path(checkpoint_dir), saved_run, return_info)
        checkpoint.load()

    bar = None
    if progress_bar:
        from tqdm.auto import tqdm

        done = 0
        if checkpoint is not None:
            done = num_segments * checkpoint.progress["chunks_done"]
            done += checkpoint.progress["segments_done"]
        bar = tqdm(
            total=num_segments * layout.num_chunks,
            initial=done,
            desc="segments",
            unit="seg",
        )
        ACTIVE_BARS.append(bar)
    try:
        run = _Run(
            rng_key, program, layout, devices, return_info, checkpoint, checkpoint_every
        )
        if checkpoint is None and layout.num_chunks == 1:
            result = run.single_chunk()
        else:
            result = run.chunks(checkpoint_callback)
    finally:
        if bar is not None:
            ACTIVE_BARS.remove(bar)
            bar.close()

    result = result._replace(times=algorithm.times)
    raise_on_nonfinite(result, on_nonfinite, start_index)
    warn_on_low_acceptance(
        result.acceptance_per_segment(), result.times, current_hint()
    )
    return result


class _Run:
    """One call of :func:`sample`: runs chunks and assembles the result.

    A chunk is split into one slice per device; every device runs the same
    compiled single-device program on its slice (asynchronously, so the devices
    work at the same time) and the outputs are concatenated in device order.
    """

    def __init__(
        self, rng_key, program, layout, devices, return_info, checkpoint, every
    ):
        self.program = program
        self.layout = layout
        self.devices = devices
        self.per_device = layout.per_call // len(devices)
        self.return_info = return_info
        self.checkpoint = checkpoint
        self.every = every
        self.num_segments = program.algorithm.num_segments
        self.keys = [jax.device_put(rng_key, d) for d in devices]
        # Only the first device's program advances the progress bar.
        self.reporters = [np.bool_(r == 0) for r in range(len(devices))]
        self.state_treedef = jax.tree.structure(program.state_shapes)
        self.info_treedef = jax.tree.structure(program.info_shapes)
        self.num_position = len(jax.tree.leaves(program.state_shapes.position))
        self.num_state = len(jax.tree.leaves(program.state_shapes))
        self.num_info = len(jax.tree.leaves(program.info_shapes))

    def _split(self, tree: Any) -> list:
        return split(tree, self.devices, self.per_device)

    def _launch(self, j: int) -> tuple[list, int]:
        """Dispatch chunk ``j`` on every device (asynchronously)."""
        indices, valid, count = self.layout.chunk(j)
        pieces = [
            self.program.run(key, i, v, reporter)
            for key, i, v, reporter in zip(
                self.keys, self._split(indices), self._split(valid), self.reporters
            )
        ]
        return pieces, count

    def _summary(self, outs: list, count: int) -> tuple:
        """Per-device ``advance`` outputs -> (info leaves or None, sums, counts)."""
        if self.return_info:
            info = concat(outs, axis=1)
            leaves = [v[:, :count] for v in jax.tree.leaves(info)]
            acc_sum, acc_count = acceptance_from_info(
                jax.tree.unflatten(self.info_treedef, leaves)
            )
            return leaves, acc_sum, acc_count
        acc_sum = sum(np.asarray(o[0], np.float64) for o in outs)
        acc_count = sum(np.asarray(o[1], np.float64) for o in outs)
        return None, acc_sum, acc_count

    def _to_host(self, pieces: list, count: int) -> ChunkOut:
        states = concat([piece[0] for piece in pieces], axis=0)
        first_bad = concat([piece[1] for piece in pieces], axis=0)
        info, acc_sum, acc_count = self._summary([piece[2] for piece in pieces], count)
        return ChunkOut(
            [v[:count] for v in jax.tree.leaves(states.position)],
            nfe_of(states, count),
            first_bad[:count],
            info,
            acc_sum,
            acc_count,
        )

    def single_chunk(self) -> SampleResult:
        """The whole run in one call: samples and info stay on the device(s)."""
        pieces, count = self._launch(0)
        padded = count < self.layout.per_call

        def combine(trees: list, axis: int) -> Any:
            joined = jax.tree.map(
                lambda *xs: join(list(xs), self.devices, axis), *trees
            )
            if not padded:
                return joined
            cut = (slice(None),) * axis + (slice(0, count),)
            return jax.tree.map(lambda v: v[cut], joined)

        states = [piece[0] for piece in pieces]
        first_bad = concat([piece[1] for piece in pieces], axis=0)[:count]
        if self.return_info:
            info = combine([piece[2] for piece in pieces], axis=1)
            acceptance = getattr(info, "acceptance_rate", None)
            if acceptance is None:
                seg_acc = np.full(self.num_segments, np.nan)
            else:
                seg_acc = np.asarray(jnp.nanmean(acceptance, axis=1), np.float64)
        else:
            info = None
            _, acc_sum, acc_count = self._summary([piece[2] for piece in pieces], count)
            seg_acc = mean_acceptance(acc_sum, acc_count)
        return SampleResult(
            samples=combine([s.position for s in states], axis=0),
            info=info,
            num_evaluations=int(nfe_of(concat(states, axis=0), count).max()),
            times=None,
            finite=jnp.asarray(first_bad == self.num_segments),
            first_nonfinite_segment=first_bad,
            segment_acceptance=seg_acc,
        )

    def _checkpointed_chunk(self, j: int, callback) -> ChunkOut:
        """Run chunk ``j`` in blocks of segments, saving after each block."""
        ckpt = self.checkpoint
        indices, valid, count = self.layout.chunk(j)
        indices, valid = self._split(indices), self._split(valid)
        k, blocks = 0, []
        if ckpt.progress["chunks_done"] == j and ckpt.progress["segments_done"] > 0:
            leaves, first_bad = ckpt.load_state(self.num_state)
            self._check_saved_state(leaves)
            states = jax.tree.unflatten(self.state_treedef, leaves)
            pieces = list(zip(self._split(states), self._split(first_bad)))
            k = ckpt.progress["segments_done"]
            blocks = ckpt.load_blocks(self.num_info)
        else:
            pieces = [self.program.init(key, i) for key, i in zip(self.keys, indices)]
        while k < self.num_segments:
            length = min(self.every, self.num_segments - k)
            advance = self.program.advance(length)
            results = [
                advance(key, i, v, states, first_bad, np.int32(k), reporter)
                for key, i, v, (states, first_bad), reporter in zip(
                    self.keys, indices, valid, pieces, self.reporters
                )
            ]
            pieces = [carry for carry, _ in results]
            blocks.append(self._summary([out for _, out in results], count))
            if k + length < self.num_segments:
                ckpt.save_block(
                    j,
                    k,
                    k + length,
                    concat([states for states, _ in pieces], axis=0),
                    concat([first_bad for _, first_bad in pieces], axis=0),
                    *blocks[-1],
                )
                self._notify(callback, j, k + length)
            k += length
        states = concat([states for states, _ in pieces], axis=0)
        info = None
        if self.return_info:
            info = [
                np.concatenate([b[0][i] for b in blocks], axis=0)
                for i in range(self.num_info)
            ]
        chunk = ChunkOut(
            [v[:count] for v in jax.tree.leaves(states.position)],
            nfe_of(states, count),
            concat([first_bad for _, first_bad in pieces], axis=0)[:count],
            info,
            np.concatenate([b[1] for b in blocks]),
            np.concatenate([b[2] for b in blocks]),
        )
        ckpt.save_chunk(j, chunk)
        self._notify(callback, j, self.num_segments)
        return chunk

    def _check_saved_state(self, leaves: list) -> None:
        expected = [
            ((self.layout.per_call,) + s.shape, np.dtype(s.dtype))
            for s in jax.tree.leaves(self.program.state_shapes)
        ]
        found = [(v.shape, v.dtype) for v in leaves]
        if found != expected:
            raise ValueError(
                f"checkpoint_dir {str(self.checkpoint.dir)!r}: the saved state has "
                f"shapes/dtypes {found}, this run needs {expected}; delete the "
                "directory to start over"
            )

    def _notify(self, callback, j: int, segments_done: int) -> None:
        if callback is not None:
            callback(
                CheckpointProgress(
                    str(self.checkpoint.dir),
                    j,
                    self.layout.num_chunks,
                    segments_done,
                    self.num_segments,
                )
            )

    def chunks(self, callback) -> SampleResult:
        """Several chunks (or checkpoints): outputs are gathered in host memory."""
        collector = Collector(self.layout.num_samples)
        ckpt = self.checkpoint
        pending = None
        for j in range(self.layout.num_chunks):
            offset = j * self.layout.per_call
            if ckpt is not None:
                if j < ckpt.progress["chunks_done"]:
                    chunk = ckpt.load_chunk(j, self.num_position, self.num_info)
                else:
                    chunk = self._checkpointed_chunk(j, callback)
                collector.add(offset, chunk)
                continue
            # Dispatch chunk j before copying chunk j - 1 back, so that the copy
            # overlaps with the computation; at most two chunks live on a device.
            launched = (offset, self._launch(j))
            if pending is not None:
                collector.add(pending[0], self._to_host(*pending[1]))
            pending = launched
        if pending is not None:
            collector.add(pending[0], self._to_host(*pending[1]))

        position_treedef = jax.tree.structure(self.program.state_shapes.position)
        info = None
        if self.return_info:
            info = jax.tree.unflatten(self.info_treedef, collector.info)
        return SampleResult(
            samples=jax.tree.unflatten(position_treedef, collector.position),
            info=info,
            num_evaluations=int(collector.nfe.max()),
            times=None,
            finite=collector.first_bad == self.num_segments,
            first_nonfinite_segment=collector.first_bad,
            segment_acceptance=mean_acceptance(collector.acc_sum, collector.acc_count),
        )
