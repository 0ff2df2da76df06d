"""Run a reverse-diffusion sampler over all segments for many particles.

How a run is organised, and why
-------------------------------
* **Keys.** Particle ``i`` draws every random number from ``fold_in(rng_key, i)``
  (its start from ``fold_in(., 0)``, segment ``k`` from ``fold_in(fold_in(., 1),
  k)``), so what a particle does never depends on which other particles run next
  to it, in which chunk, on which device or on which host.
* **Chunks.** Particles run in chunks of ``chunk_size`` per device. Every chunk has
  the same shape (the last one is padded and the padding dropped), so one
  compiled program serves the whole run and device memory is bounded by the chunk.
* **Devices.** Inside a chunk the particle axis is split across devices; particles
  never talk to each other, so every device runs, asynchronously, the very program
  a single device would run on ``chunk_size`` particles (not one program
  partitioned across a mesh, which XLA would optimise, and round, differently).
* **Segments.** A chunk is one compiled call: the particles' initialisation and a
  ``lax.scan`` over all segments. With checkpoints it is a compiled ``init`` and
  compiled blocks of ``checkpoint_every`` segments (the segment index is traced),
  with the state saved in between. The same scan body runs in both cases, which is
  why resuming is bit-identical.

Bitwise reproducibility therefore holds whenever the per-device batch shape is the
same: XLA picks its kernels (dot products, vectorised loops) by shape, and
different kernels may round differently. See ``docs/reliability.md``.
"""

import hashlib
import json
import math
import os
import warnings
from collections import OrderedDict
from collections.abc import Callable, Sequence
from functools import partial
from pathlib import Path
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from rtk_blackjax.mcmc.rtk import DiffusionAlgorithm
from rtk_blackjax.types import Array, ArrayLikeTree, ArrayTree, PRNGKey

__all__ = [
    "SampleResult",
    "NonFiniteSamplesError",
    "CheckpointProgress",
    "sample",
    "NONFINITE_POLICIES",
]

NONFINITE_POLICIES = ("raise", "mask")
LOW_ACCEPTANCE = 0.1

_AXIS = "particles"
# fold_in takes the particle index as a uint32.
_MAX_INDEX = 2**32
_CHECKPOINT_FORMAT = 1
_META_FILE = "checkpoint.json"
# Compiled programs kept alive between calls (each holds its algorithm, so a
# cached id can never be reused by another object).
_PROGRAM_CACHE_SIZE = 8
_PROGRAMS: "OrderedDict[tuple, _Program]" = OrderedDict()
# The tqdm bar of the run in progress; the compiled programs are shared between
# calls, so their progress callback cannot close over one call's bar.
_ACTIVE_BARS: list = []


class NonFiniteSamplesError(FloatingPointError):
    """Raised when a sampler produced non-finite positions or scores."""


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


class CheckpointProgress(NamedTuple):
    """What :func:`sample` passes to ``checkpoint_callback`` after each save.

    directory
        The checkpoint directory.
    chunk, num_chunks
        Index of the chunk in progress and the number of chunks.
    segments_done, num_segments
        Segments of that chunk saved so far (``num_segments`` when the chunk is
        complete) and per chunk.
    """

    directory: str
    chunk: int
    num_chunks: int
    segments_done: int
    num_segments: int


# --------------------------------------------------------------------------
# Argument validation
# --------------------------------------------------------------------------


def _is_int(value: Any) -> bool:
    return not isinstance(value, (bool, np.bool_)) and isinstance(
        value, (int, np.integer)
    )


def _check_count(name: str, value: Any, minimum: int) -> int:
    if not _is_int(value):
        raise TypeError(f"{name} must be an integer >= {minimum}, got {value!r}")
    if value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value}")
    return int(value)


def _check_bool(name: str, value: Any) -> bool:
    if not isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{name} must be True or False, got {value!r}")
    return bool(value)


def _check_key(rng_key: Any) -> PRNGKey:
    """A single PRNG key: a typed ``jax.random.key`` or a raw ``PRNGKey``."""
    dtype = getattr(rng_key, "dtype", None)
    shape = getattr(rng_key, "shape", None)
    if dtype is not None and jax.dtypes.issubdtype(dtype, jax.dtypes.prng_key):
        if shape != ():
            raise ValueError(
                "rng_key must be a single PRNG key (shape ()), got a batch of keys "
                f"of shape {shape}; sample() derives one key per particle itself"
            )
        return rng_key
    raw_shape = jax.random.key_data(jax.random.key(0)).shape
    if isinstance(rng_key, (jax.Array, np.ndarray)) and dtype == np.uint32:
        if shape == raw_shape:
            return jnp.asarray(rng_key)
        raise ValueError(
            f"rng_key must be a single PRNG key: a raw key has shape {raw_shape}, "
            f"got shape {shape}"
        )
    raise TypeError(
        "rng_key must be a JAX PRNG key, e.g. jax.random.key(0) (or a legacy "
        f"jax.random.PRNGKey(0)), got {type(rng_key).__name__}"
    )


def _template(dim: Any, position_like: ArrayLikeTree | None) -> ArrayTree:
    """Shapes and dtypes of one position, as a pytree of ``ShapeDtypeStruct``."""
    if position_like is None:
        if dim is None:
            raise ValueError(
                "give dim (the dimension of a flat position) or position_like"
            )
        if not _is_int(dim) or dim < 1:
            raise ValueError(
                f"dim must be a positive integer (or pass position_like), got {dim!r}"
            )
        return jax.ShapeDtypeStruct((int(dim),), jnp.result_type(float))
    leaves, treedef = jax.tree.flatten(position_like)
    if not leaves:
        raise ValueError("position_like must contain at least one array leaf, got none")
    structs = []
    for leaf in leaves:
        try:
            dtype = np.dtype(jnp.result_type(leaf))
            shape = tuple(int(s) for s in np.shape(leaf))
        except (TypeError, ValueError) as err:
            raise TypeError(
                "position_like must be a pytree of arrays or numbers, got a leaf of "
                f"type {type(leaf).__name__}"
            ) from err
        if not jnp.issubdtype(dtype, jnp.floating):
            raise TypeError(
                "position_like must have real floating-point leaves (positions are "
                f"continuous), got dtype {dtype}"
            )
        structs.append(
            jax.ShapeDtypeStruct(shape, jax.dtypes.canonicalize_dtype(dtype))
        )
    size = sum(math.prod(s.shape) for s in structs)
    if size == 0:
        raise ValueError("position_like must have at least one coordinate, got size 0")
    if dim is not None and (not _is_int(dim) or dim != size):
        raise ValueError(
            f"dim={dim!r} does not match position_like, which has {size} coordinates; "
            "pass only one of them"
        )
    return jax.tree.unflatten(treedef, structs)


def _check_devices(devices: Any) -> tuple:
    if devices is None:
        return tuple(jax.local_devices())
    if isinstance(devices, jax.Device):
        devices = [devices]
    try:
        devices = tuple(devices)
    except TypeError as err:
        raise TypeError(
            f"devices must be a sequence of jax devices, got {type(devices).__name__}"
        ) from err
    if not devices:
        raise ValueError("devices must contain at least one jax device, got none")
    if not all(isinstance(d, jax.Device) for d in devices):
        bad = next(d for d in devices if not isinstance(d, jax.Device))
        raise TypeError(f"devices must be jax devices (jax.devices()), got {bad!r}")
    if len(set(devices)) != len(devices):
        raise ValueError(f"devices must not repeat a device, got {list(devices)}")
    if len({d.platform for d in devices}) > 1:
        raise ValueError(
            "devices must all be of one platform, got "
            f"{sorted({d.platform for d in devices})}"
        )
    if any(d.process_index != jax.process_index() for d in devices):
        raise ValueError(
            "devices must be local to this process (jax.local_devices()); on several "
            "hosts let each process sample its own indices with start_index"
        )
    return devices


# --------------------------------------------------------------------------
# Compiled programs
# --------------------------------------------------------------------------


class _Program(NamedTuple):
    """The compiled pieces of a run, shared between calls with the same setup.

    They are single-device programs: with several devices each one runs the same
    program on its own slice of the chunk (dispatched asynchronously, so they run
    concurrently). A program partitioned across a device mesh would be optimised
    differently by XLA (we measured different rounding of divisions by
    broadcasts), so sample ``i`` would depend on the device count.
    """

    algorithm: DiffusionAlgorithm  # kept alive: the cache key holds its ids
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


def _has_segment_counter(state: Any) -> bool:
    """Whether a state carries its segment index as an integer ``step`` field.

    That is the convention of every state in this package (``RTKState``,
    ``DiffusionState``, ``DPMSolverState``): ``step`` is the index of the next
    segment, equal for all particles of a run.
    """
    fields = getattr(state, "_fields", ())
    if "step" not in fields:
        return False
    step = state.step
    return getattr(step, "shape", None) == () and jnp.issubdtype(
        step.dtype, jnp.integer
    )


def _progress_tick(reporter) -> None:
    # Every device runs the scan; only the first one advances the bar.
    if bool(reporter) and _ACTIVE_BARS:
        _ACTIVE_BARS[-1].update(1)


def _trace_one_particle(algorithm: DiffusionAlgorithm, template: ArrayTree):
    """Shapes of one particle's state and info; clear errors for a bad setup.

    Runs only abstractly (``jax.eval_shape``): a target of another dimension, or a
    step that changes the state's shapes, would otherwise fail deep inside the
    compiled scan with an error that names neither ``dim`` nor the target.
    """

    def one(key):
        position = jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), template)
        state = algorithm.init(position)
        new_state, info = algorithm.step(key, state)
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
) -> _Program:
    num_segments = algorithm.num_segments
    state_shapes, info_shapes = _trace_one_particle(algorithm, template)
    leaves, treedef = jax.tree.flatten(template)

    def init_one(particle_key):
        keys = jax.random.split(jax.random.fold_in(particle_key, 0), len(leaves))
        noise = [jax.random.normal(k, s.shape, s.dtype) for k, s in zip(keys, leaves)]
        return algorithm.init(jax.tree.unflatten(treedef, noise))

    def particle_keys(key, indices):
        return jax.vmap(jax.random.fold_in, (None, 0))(key, indices)

    def init(key, indices):
        states = jax.vmap(init_one)(particle_keys(key, indices))
        first_bad = jnp.full(indices.shape, num_segments, jnp.int32)
        return states, first_bad

    shared_step = _has_segment_counter(state_shapes)

    def step_all(seg_keys, states, k):
        if not shared_step:
            return jax.vmap(algorithm.step)(seg_keys, states)
        # Every particle is on segment k. Passing k unbatched (instead of each
        # particle's copy in state.step) keeps everything that depends only on the
        # segment unbatched: times[k], the transition coefficients, the target's
        # t-dependent terms (e.g. a mixture's diffused covariances and their log
        # determinants) are computed once per segment instead of once per particle,
        # and inner loops get a scalar trip count (a batched one turns every inner
        # step into a select over the whole carry).
        axes = type(states)(*(None if f == "step" else 0 for f in states._fields))
        return jax.vmap(algorithm.step, in_axes=(0, axes))(
            seg_keys, states._replace(step=k)
        )

    def advance(length, key, indices, valid, states, first_bad, k0, reporter):
        chain_keys = jax.vmap(jax.random.fold_in, (0, None))(
            particle_keys(key, indices), 1
        )

        def body(carry, k):
            states, first_bad = carry
            seg_keys = jax.vmap(jax.random.fold_in, (0, None))(chain_keys, k)
            states, info = step_all(seg_keys, states, k)
            bad = ~_segment_is_finite(info, states)
            first_bad = jnp.where((first_bad == num_segments) & bad, k, first_bad)
            if progress:
                jax.debug.callback(_progress_tick, reporter)
            out = info if return_info else _acceptance_summary(info, valid)
            return (states, first_bad), out

        steps = k0 + jnp.arange(length, dtype=jnp.int32)
        return jax.lax.scan(body, (states, first_bad), steps)

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
    return _Program(
        algorithm, jax.jit(run), jax.jit(init), advance_block, state_shapes, info_shapes
    )


def _get_program(algorithm, template, return_info, progress) -> _Program:
    signature = (
        tuple((s.shape, str(s.dtype)) for s in jax.tree.leaves(template)),
        str(jax.tree.structure(template)),
    )
    key = (
        id(algorithm.init),
        id(algorithm.step),
        algorithm.num_segments,
        signature,
        return_info,
        progress,
        bool(jax.config.jax_enable_x64),
    )
    program = _PROGRAMS.get(key)
    if program is None:
        program = _build_program(algorithm, template, return_info, progress)
        _PROGRAMS[key] = program
        while len(_PROGRAMS) > _PROGRAM_CACHE_SIZE:
            _PROGRAMS.popitem(last=False)
    _PROGRAMS.move_to_end(key)
    return program


# --------------------------------------------------------------------------
# Host side: chunk layout, collecting outputs, checkpoints
# --------------------------------------------------------------------------


class _Layout(NamedTuple):
    num_samples: int
    start_index: int
    per_call: int  # particles per compiled call, all devices together
    num_chunks: int

    def chunk(self, j: int) -> tuple[np.ndarray, np.ndarray, int]:
        """Global indices (padded), the mask of real particles, and their count."""
        offset = j * self.per_call
        count = min(self.per_call, self.num_samples - offset)
        lanes = np.arange(self.per_call)
        # Padding lanes repeat the last real index: valid keys, results dropped.
        indices = self.start_index + offset + np.minimum(lanes, count - 1)
        return indices.astype(np.uint32), lanes < count, count


class _ChunkOut(NamedTuple):
    """One chunk's outputs on the host, padding removed."""

    position: list  # leaves, leading axis count
    nfe: np.ndarray
    first_bad: np.ndarray
    info: list | None  # leaves, shape (num_segments, count, ...)
    acc_sum: np.ndarray  # (num_segments,)
    acc_count: np.ndarray


def _acceptance_from_info(info_tree: Any) -> tuple[np.ndarray, np.ndarray]:
    acc = getattr(info_tree, "acceptance_rate", None)
    if acc is None:
        k = jax.tree.leaves(info_tree)[0].shape[0]
        return np.zeros(k), np.zeros(k)
    acc = np.asarray(acc, np.float64)
    used = ~np.isnan(acc)
    return np.where(used, acc, 0.0).sum(axis=1), used.sum(axis=1).astype(np.float64)


class _Collector:
    """Preallocated host arrays that chunks are copied into."""

    def __init__(self, num_samples: int):
        self.n = num_samples
        self.position = self.info = None
        self.nfe = np.zeros(num_samples, np.int64)
        self.first_bad = np.zeros(num_samples, np.int32)
        self.acc_sum = self.acc_count = 0.0

    def add(self, offset: int, chunk: _ChunkOut) -> None:
        count = chunk.nfe.shape[0]
        if self.position is None:
            self.position = [
                np.empty((self.n,) + v.shape[1:], v.dtype) for v in chunk.position
            ]
            if chunk.info is not None:
                self.info = [
                    np.empty((v.shape[0], self.n) + v.shape[2:], v.dtype)
                    for v in chunk.info
                ]
        for dst, src in zip(self.position, chunk.position):
            dst[offset : offset + count] = src
        if chunk.info is not None:
            for dst, src in zip(self.info, chunk.info):
                dst[:, offset : offset + count] = src
        self.nfe[offset : offset + count] = chunk.nfe
        self.first_bad[offset : offset + count] = chunk.first_bad
        self.acc_sum = self.acc_sum + chunk.acc_sum
        self.acc_count = self.acc_count + chunk.acc_count


def _key_fingerprint(rng_key: PRNGKey) -> tuple[str, str]:
    if jax.dtypes.issubdtype(rng_key.dtype, jax.dtypes.prng_key):
        data = np.asarray(jax.random.key_data(rng_key))
        return data.tobytes().hex(), str(jax.random.key_impl(rng_key))
    return np.asarray(rng_key).tobytes().hex(), "raw"


def _fingerprint(
    rng_key, algorithm, template, program, layout, per_device, devices, return_info
) -> dict:
    """What must match for a checkpoint to be resumed bit-identically."""
    key_hex, key_impl = _key_fingerprint(rng_key)
    times = np.asarray(algorithm.times, np.float64)
    step = algorithm.step
    return {
        "format": _CHECKPOINT_FORMAT,
        "rng_key": key_hex,
        "key_impl": key_impl,
        "times_sha256": hashlib.sha256(times.tobytes()).hexdigest(),
        "num_segments": algorithm.num_segments,
        "num_samples": layout.num_samples,
        "start_index": layout.start_index,
        "chunk_size_per_device": per_device,
        "num_devices": len(devices),
        "platform": devices[0].platform,
        "position": str(jax.tree.map(lambda s: (s.shape, str(s.dtype)), template)),
        "state": str(
            jax.tree.map(lambda s: (s.shape, str(s.dtype)), program.state_shapes)
        ),
        "algorithm_step": f"{getattr(step, '__module__', '')}."
        f"{getattr(step, '__qualname__', type(step).__name__)}",
        "return_info": return_info,
        "jax_version": jax.__version__,
    }


def _atomic_savez(path: Path, arrays: dict) -> None:
    # Write then rename: an interruption never leaves a half-written file behind.
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as fh:
        np.savez(fh, **arrays)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def _atomic_write_json(path: Path, obj: dict) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w") as fh:
        json.dump(obj, fh, indent=1, sort_keys=True)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


class _Checkpoint:
    """A checkpoint directory: ``checkpoint.json`` says which ``.npz`` files hold
    the completed chunks, the in-progress chunk's state and its segment infos."""

    def __init__(self, directory: Path, fingerprint: dict, return_info: bool):
        self.dir = directory
        self.fingerprint = fingerprint
        self.return_info = return_info
        self.progress = {
            "chunks_done": 0,
            "segments_done": 0,
            "state_file": None,
            "block_files": [],
        }

    def load(self) -> None:
        meta_path = self.dir / _META_FILE
        if self.dir.exists() and not self.dir.is_dir():
            raise ValueError(f"checkpoint_dir {str(self.dir)!r} exists and is a file")
        self.dir.mkdir(parents=True, exist_ok=True)
        if not meta_path.exists():
            _atomic_write_json(meta_path, self._meta())
            return
        try:
            meta = json.loads(meta_path.read_text())
            saved, progress = meta["fingerprint"], meta["progress"]
        except (ValueError, KeyError, TypeError) as err:
            raise ValueError(
                f"checkpoint_dir {str(self.dir)!r} has an unreadable {_META_FILE}; "
                "delete the directory to start over"
            ) from err
        if saved != self.fingerprint:
            diffs = [
                f"{k}: saved {saved.get(k)!r}, now {self.fingerprint.get(k)!r}"
                for k in sorted(set(saved) | set(self.fingerprint))
                if saved.get(k) != self.fingerprint.get(k)
            ]
            raise ValueError(
                f"checkpoint_dir {str(self.dir)!r} holds a checkpoint of a different "
                f"run ({'; '.join(diffs)}); use another directory, or delete it to "
                "start over"
            )
        self.progress = progress

    def _meta(self) -> dict:
        return {"fingerprint": self.fingerprint, "progress": self.progress}

    def _commit(self, progress: dict) -> None:
        old = {self.progress.get("state_file")} | set(self.progress["block_files"])
        self.progress = progress
        _atomic_write_json(self.dir / _META_FILE, self._meta())
        keep = {progress.get("state_file")} | set(progress["block_files"])
        for name in old - keep:  # only once the new metadata is safely written
            if name:
                (self.dir / name).unlink(missing_ok=True)

    def save_block(self, j, k0, k1, states, first_bad, info, acc_sum, acc_count):
        block = f"chunk{j:06d}_segments{k0:06d}-{k1:06d}.npz"
        arrays = {"acc_sum": acc_sum, "acc_count": acc_count}
        for i, v in enumerate(info or []):
            arrays[f"info_{i}"] = v
        _atomic_savez(self.dir / block, arrays)
        state = f"chunk{j:06d}_state{k1:06d}.npz"
        arrays = {
            f"state_{i}": np.asarray(v) for i, v in enumerate(jax.tree.leaves(states))
        }
        arrays["first_bad"] = np.asarray(first_bad)
        _atomic_savez(self.dir / state, arrays)
        self._commit(
            {
                "chunks_done": j,
                "segments_done": k1,
                "state_file": state,
                "block_files": self.progress["block_files"] + [block],
            }
        )

    def save_chunk(self, j: int, chunk: _ChunkOut) -> None:
        name = f"chunk{j:06d}.npz"
        arrays = {
            "nfe": chunk.nfe,
            "first_bad": chunk.first_bad,
            "acc_sum": chunk.acc_sum,
            "acc_count": chunk.acc_count,
        }
        for i, v in enumerate(chunk.position):
            arrays[f"position_{i}"] = v
        for i, v in enumerate(chunk.info or []):
            arrays[f"info_{i}"] = v
        _atomic_savez(self.dir / name, arrays)
        self._commit(
            {
                "chunks_done": j + 1,
                "segments_done": 0,
                "state_file": None,
                "block_files": [],
            }
        )

    def load_chunk(self, j: int, num_position: int, num_info: int) -> _ChunkOut:
        with np.load(self.dir / f"chunk{j:06d}.npz") as z:
            return _ChunkOut(
                [z[f"position_{i}"] for i in range(num_position)],
                z["nfe"],
                z["first_bad"],
                [z[f"info_{i}"] for i in range(num_info)] if self.return_info else None,
                z["acc_sum"],
                z["acc_count"],
            )

    def load_state(self, num_state: int) -> tuple[list, np.ndarray]:
        with np.load(self.dir / self.progress["state_file"]) as z:
            return [z[f"state_{i}"] for i in range(num_state)], z["first_bad"]

    def load_blocks(self, num_info: int) -> list[tuple]:
        blocks = []
        for name in self.progress["block_files"]:
            with np.load(self.dir / name) as z:
                info = (
                    [z[f"info_{i}"] for i in range(num_info)]
                    if self.return_info
                    else None
                )
                blocks.append((info, z["acc_sum"], z["acc_count"]))
        return blocks


# --------------------------------------------------------------------------
# The driver
# --------------------------------------------------------------------------


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
) -> SampleResult:
    """Draw ``num_samples`` samples by running every segment of ``algorithm``.

    Particles start from ``N(0, I)`` at the horizon and run through all segments
    of a ``lax.scan`` over ``vmap``-ed particles; segment times are traced values,
    so the sampler compiles once whatever the number of segments, and compiled
    programs are reused by later calls with the same algorithm and shapes. A state
    with an integer ``step`` field (every state of this package) has it read as the
    segment index, equal for all particles, and passed to ``algorithm.step``
    unbatched, so per-segment work is done once per segment, not per particle.

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
        in one call. With a chunk size, a Python loop runs one compiled program on
        chunks of this fixed shape (the last chunk padded), so device memory is
        bounded by about two chunks and sample ``i`` is bit-reproducible (see
        above). Results are NumPy arrays in host memory when there are several
        chunks.
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
        shapes, ...) in the same directory is refused with a ``ValueError``. The
        target's functions cannot be fingerprinted: do not change them between an
        interruption and its resume.
    checkpoint_every
        Segments between checkpoints (compiles at most two segment-block lengths).
    checkpoint_callback
        Called with a :class:`CheckpointProgress` after every save (e.g. to log
        progress or stop a job at a wall-clock limit by raising).

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
    rng_key = _check_key(rng_key)
    if isinstance(num_samples, (bool, np.bool_)) or not isinstance(
        num_samples, (int, np.integer)
    ):
        raise TypeError(f"num_samples must be a positive integer, got {num_samples!r}")
    if num_samples < 1:
        raise ValueError(f"num_samples must be a positive integer, got {num_samples}")
    num_samples = int(num_samples)
    if not isinstance(on_nonfinite, str) or on_nonfinite not in NONFINITE_POLICIES:
        raise ValueError(
            f"on_nonfinite must be one of {NONFINITE_POLICIES}, got {on_nonfinite!r}"
        )
    progress_bar = _check_bool("progress_bar", progress_bar)
    return_info = _check_bool("return_info", return_info)
    start_index = _check_count("start_index", start_index, 0)
    if start_index + num_samples > _MAX_INDEX:
        raise ValueError(
            f"start_index + num_samples must be at most 2**32 (particle indices are "
            f"uint32), got {start_index} + {num_samples}"
        )
    if chunk_size is not None:
        chunk_size = _check_count("chunk_size", chunk_size, 1)
        if chunk_size > _MAX_INDEX:
            raise ValueError(
                f"chunk_size must be at most 2**32 (particle indices are uint32), got "
                f"{chunk_size}"
            )
    checkpoint_every = _check_count("checkpoint_every", checkpoint_every, 1)
    if checkpoint_dir is not None and not isinstance(
        checkpoint_dir, (str, os.PathLike)
    ):
        raise TypeError(
            f"checkpoint_dir must be a path (str or os.PathLike) or None, got "
            f"{type(checkpoint_dir).__name__}"
        )
    if checkpoint_callback is not None and not callable(checkpoint_callback):
        raise TypeError(
            f"checkpoint_callback must be callable or None, got {checkpoint_callback!r}"
        )
    template = _template(dim, position_like)
    devices = _check_devices(devices)

    num_segments = algorithm.num_segments
    ndev = len(devices)
    per_device = chunk_size if chunk_size is not None else -(-num_samples // ndev)
    per_call = per_device * ndev
    layout = _Layout(num_samples, start_index, per_call, -(-num_samples // per_call))
    program = _get_program(algorithm, template, return_info, progress_bar)

    checkpoint = None
    if checkpoint_dir is not None:
        fingerprint = _fingerprint(
            rng_key,
            algorithm,
            template,
            program,
            layout,
            per_device,
            devices,
            return_info,
        )
        checkpoint = _Checkpoint(Path(checkpoint_dir), fingerprint, return_info)
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
        _ACTIVE_BARS.append(bar)
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
            _ACTIVE_BARS.remove(bar)
            bar.close()

    result = result._replace(times=algorithm.times)
    _raise_on_nonfinite(result, on_nonfinite, start_index)
    _warn_on_stuck_segments(result)
    return result


def _concat(trees: list, axis: int) -> Any:
    """Host concatenation of per-device pytrees along the particle axis."""
    return jax.tree.map(
        lambda *xs: np.concatenate([np.asarray(x) for x in xs], axis=axis), *trees
    )


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
        """Host arrays with a leading ``per_call`` axis -> one slice per device."""
        p = self.per_device
        return [
            jax.tree.map(
                lambda v, r=r, d=d: jax.device_put(v[r * p : (r + 1) * p], d), tree
            )
            for r, d in enumerate(self.devices)
        ]

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
            info = _concat(outs, axis=1)
            leaves = [v[:, :count] for v in jax.tree.leaves(info)]
            acc_sum, acc_count = _acceptance_from_info(
                jax.tree.unflatten(self.info_treedef, leaves)
            )
            return leaves, acc_sum, acc_count
        acc_sum = sum(np.asarray(o[0], np.float64) for o in outs)
        acc_count = sum(np.asarray(o[1], np.float64) for o in outs)
        return None, acc_sum, acc_count

    def _to_host(self, pieces: list, count: int) -> _ChunkOut:
        states = _concat([piece[0] for piece in pieces], axis=0)
        first_bad = _concat([piece[1] for piece in pieces], axis=0)
        info, acc_sum, acc_count = self._summary([piece[2] for piece in pieces], count)
        return _ChunkOut(
            [v[:count] for v in jax.tree.leaves(states.position)],
            _nfe(states, count),
            first_bad[:count],
            info,
            acc_sum,
            acc_count,
        )

    def _global(self, arrays: list, axis: int) -> Array:
        """Per-device arrays -> one array sharded along ``axis`` (no copies)."""
        if len(arrays) == 1:
            return arrays[0]
        mesh = Mesh(np.asarray(self.devices, dtype=object), (_AXIS,))
        spec = P(*([None] * axis), _AXIS)
        shape = list(arrays[0].shape)
        shape[axis] *= len(arrays)
        return jax.make_array_from_single_device_arrays(
            tuple(shape), NamedSharding(mesh, spec), arrays
        )

    def single_chunk(self) -> SampleResult:
        """The whole run in one call: samples and info stay on the device(s)."""
        pieces, count = self._launch(0)
        padded = count < self.layout.per_call

        def combine(trees: list, axis: int) -> Any:
            joined = jax.tree.map(lambda *xs: self._global(list(xs), axis), *trees)
            if not padded:
                return joined
            cut = (slice(None),) * axis + (slice(0, count),)
            return jax.tree.map(lambda v: v[cut], joined)

        states = [piece[0] for piece in pieces]
        first_bad = _concat([piece[1] for piece in pieces], axis=0)[:count]
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
            seg_acc = _mean_acceptance(acc_sum, acc_count)
        return SampleResult(
            samples=combine([s.position for s in states], axis=0),
            info=info,
            num_evaluations=int(_nfe(_concat(states, axis=0), count).max()),
            times=None,
            finite=jnp.asarray(first_bad == self.num_segments),
            first_nonfinite_segment=first_bad,
            segment_acceptance=seg_acc,
        )

    def _checkpointed_chunk(self, j: int, callback) -> _ChunkOut:
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
                    _concat([states for states, _ in pieces], axis=0),
                    _concat([first_bad for _, first_bad in pieces], axis=0),
                    *blocks[-1],
                )
                self._notify(callback, j, k + length)
            k += length
        states = _concat([states for states, _ in pieces], axis=0)
        info = None
        if self.return_info:
            info = [
                np.concatenate([b[0][i] for b in blocks], axis=0)
                for i in range(self.num_info)
            ]
        chunk = _ChunkOut(
            [v[:count] for v in jax.tree.leaves(states.position)],
            _nfe(states, count),
            _concat([first_bad for _, first_bad in pieces], axis=0)[:count],
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
        collector = _Collector(self.layout.num_samples)
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
            segment_acceptance=_mean_acceptance(collector.acc_sum, collector.acc_count),
        )


def _nfe(states: Any, count: int) -> np.ndarray:
    nfe = getattr(states, "num_evaluations", None)
    return np.asarray(nfe)[:count] if nfe is not None else np.zeros(count, np.int32)


def _mean_acceptance(acc_sum, acc_count) -> np.ndarray:
    acc_sum, acc_count = np.asarray(acc_sum), np.asarray(acc_count)
    return np.where(acc_count > 0, acc_sum / np.maximum(acc_count, 1), np.nan)


def _raise_on_nonfinite(result: SampleResult, policy: str, start_index: int) -> None:
    first_bad = np.asarray(result.first_nonfinite_segment)
    num_segments = int(result.times.shape[0]) - 1
    bad = first_bad < num_segments
    if policy != "raise" or not bad.any():
        return
    first = int(first_bad.min())
    in_first = first_bad == first
    example = start_index + int(np.argmax(in_first))
    raise NonFiniteSamplesError(
        f"{int(bad.sum())} of {first_bad.shape[0]} particles became non-finite; "
        f"first in segment {first} (t={float(result.times[first])} -> "
        f"{float(result.times[first + 1])}) with {int(in_first.sum())} particles "
        f"(e.g. sample index {example}). Pass on_nonfinite='mask' to get the finite "
        "samples and a mask."
    )


def _warn_on_stuck_segments(result: SampleResult) -> None:
    """Warn when an inner Metropolis chain barely moves on some segment."""
    acceptance = result.acceptance_per_segment()
    low = np.flatnonzero(np.isfinite(acceptance) & (acceptance < LOW_ACCEPTANCE))
    if low.size:
        k = int(low[0])
        warnings.warn(
            f"inner-kernel acceptance below {LOW_ACCEPTANCE} on {low.size} segment(s), "
            f"first segment {k} (t={float(result.times[k])} -> "
            f"{float(result.times[k + 1])}): {acceptance[k]:.3f}. The segment target is "
            "badly conditioned for the inner kernel's step size; use more (shorter) "
            "segments or a smaller inner step size (e.g. step_scale of the inner "
            "kernel factories, step_size of rtk_logdensity).",
            RuntimeWarning,
            stacklevel=3,
        )
