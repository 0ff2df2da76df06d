"""Checkpoint files of a run, and the fingerprint that says which run they belong to.

With ``checkpoint_dir``, :func:`rtk_blackjax.sample` runs each chunk as a
compiled ``init`` and compiled blocks of ``checkpoint_every`` segments, and saves
after every block: ``checkpoint.json`` says which ``.npz`` files hold the
completed chunks, the in-progress chunk's state and its segment infos. Every file
is written then renamed, so an interruption never leaves a half-written one.

A checkpoint is resumed only by the very run that wrote it. Its fingerprint holds
the key, the grid, the sizes, the state's shapes, the platform and JAX version,
and a hash of the *algorithm itself*: the program text (StableHLO, constants
included) of one particle's ``init`` and of one segment's ``step``. So a run with
another target, inner kernel, step-size rule or any other parameter is refused,
while the same algorithm rebuilt from scratch (in a new process) resumes.
"""

import hashlib
import json
import os
from pathlib import Path
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from rtk_blackjax.mcmc.rtk import DiffusionAlgorithm
from rtk_blackjax.run.layout import ChunkOut
from rtk_blackjax.types import ArrayTree, PRNGKey

__all__ = ["CheckpointProgress", "Checkpoint", "fingerprint", "algorithm_hash"]

CHECKPOINT_FORMAT = 2  # 2: the fingerprint holds the algorithm's program hash
META_FILE = "checkpoint.json"


class CheckpointProgress(NamedTuple):
    """What :func:`~rtk_blackjax.sample` passes to ``checkpoint_callback`` after each save.

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


def _key_fingerprint(rng_key: PRNGKey) -> tuple[str, str]:
    if jax.dtypes.issubdtype(rng_key.dtype, jax.dtypes.prng_key):
        data = np.asarray(jax.random.key_data(rng_key))
        return data.tobytes().hex(), str(jax.random.key_impl(rng_key))
    return np.asarray(rng_key).tobytes().hex(), "raw"


def algorithm_hash(
    algorithm: DiffusionAlgorithm, template: ArrayTree, rng_key: PRNGKey
) -> str:
    """SHA-256 of the program text of one particle's ``init`` and one ``step``.

    The text is the lowered StableHLO (no source locations), whose constants are
    the values the functions close over: a target's parameters, the inner
    kernel's step-size rule, the grid, the inner-step schedule. The segment index
    is an argument (as in the run), so per-segment tables enter whole.
    """

    def one(key, position, segment):
        state = algorithm.init(position)
        return algorithm.step(key, state, segment)

    lowered = jax.jit(one).lower(
        rng_key,
        jax.tree.map(lambda s: jax.ShapeDtypeStruct(s.shape, s.dtype), template),
        jax.ShapeDtypeStruct((), jnp.int32),
    )
    return hashlib.sha256(lowered.as_text().encode()).hexdigest()


def fingerprint(
    rng_key, algorithm, template, program, layout, per_device, devices, return_info
) -> dict:
    """What must match for a checkpoint to be resumed bit-identically."""
    key_hex, key_impl = _key_fingerprint(rng_key)
    times = np.asarray(algorithm.times, np.float64)
    step = algorithm.step
    return {
        "format": CHECKPOINT_FORMAT,
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
        "algorithm_sha256": algorithm_hash(algorithm, template, rng_key),
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


def _difference(key: str, saved: Any, now: Any) -> str:
    if key == "algorithm_sha256":
        return (
            "the algorithm differs (another target, inner kernel, step-size rule, "
            "schedule or other parameter: its program hash was "
            f"{str(saved)[:12]}..., now {str(now)[:12]}...)"
        )
    return f"{key}: saved {saved!r}, now {now!r}"


class Checkpoint:
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
        meta_path = self.dir / META_FILE
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
                f"checkpoint_dir {str(self.dir)!r} has an unreadable {META_FILE}; "
                "delete the directory to start over"
            ) from err
        if saved != self.fingerprint:
            diffs = [
                _difference(k, saved.get(k), self.fingerprint.get(k))
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
        _atomic_write_json(self.dir / META_FILE, self._meta())
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

    def save_chunk(self, j: int, chunk: ChunkOut) -> None:
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

    def load_chunk(self, j: int, num_position: int, num_info: int) -> ChunkOut:
        with np.load(self.dir / f"chunk{j:06d}.npz") as z:
            return ChunkOut(
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
