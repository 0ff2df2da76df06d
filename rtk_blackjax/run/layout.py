"""The shape of a run's work: one particle's position template, and the chunks.

Particles run in chunks of ``chunk_size`` per device. Every chunk has the same
shape (the last one is padded, its padding dropped), so one compiled program
serves the whole run and device memory is bounded by the chunk. This module says
which particles a chunk holds (:class:`Layout`) and gathers the chunks' outputs in
host memory (:class:`ChunkOut`, :class:`Collector`).
"""

import math
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from rtk_blackjax._checks import is_int
from rtk_blackjax.types import ArrayLikeTree, ArrayTree

__all__ = [
    "position_template",
    "Layout",
    "ChunkOut",
    "Collector",
    "acceptance_from_info",
    "mean_acceptance",
    "nfe_of",
]


def position_template(dim: Any, position_like: ArrayLikeTree | None) -> ArrayTree:
    """Shapes and dtypes of one position, as a pytree of ``ShapeDtypeStruct``."""
    if position_like is None:
        if dim is None:
            raise ValueError(
                "give dim (the dimension of a flat position) or position_like"
            )
        if not is_int(dim) or dim < 1:
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
    if dim is not None and (not is_int(dim) or dim != size):
        raise ValueError(
            f"dim={dim!r} does not match position_like, which has {size} coordinates; "
            "pass only one of them"
        )
    return jax.tree.unflatten(treedef, structs)


class Layout(NamedTuple):
    """Which particles each chunk of a run holds."""

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


class ChunkOut(NamedTuple):
    """One chunk's outputs on the host, padding removed."""

    position: list  # leaves, leading axis count
    nfe: np.ndarray
    first_bad: np.ndarray
    info: list | None  # leaves, shape (num_segments, count, ...)
    acc_sum: np.ndarray  # (num_segments,)
    acc_count: np.ndarray


def acceptance_from_info(info_tree: Any) -> tuple[np.ndarray, np.ndarray]:
    """Per-segment sum and count of the non-NaN acceptance rates in ``info``."""
    acc = getattr(info_tree, "acceptance_rate", None)
    if acc is None:
        k = jax.tree.leaves(info_tree)[0].shape[0]
        return np.zeros(k), np.zeros(k)
    acc = np.asarray(acc, np.float64)
    used = ~np.isnan(acc)
    return np.where(used, acc, 0.0).sum(axis=1), used.sum(axis=1).astype(np.float64)


def mean_acceptance(acc_sum, acc_count) -> np.ndarray:
    """Per-segment mean acceptance (NaN where no Metropolis step ran)."""
    acc_sum, acc_count = np.asarray(acc_sum), np.asarray(acc_count)
    return np.where(acc_count > 0, acc_sum / np.maximum(acc_count, 1), np.nan)


def nfe_of(states: Any, count: int) -> np.ndarray:
    """NFE of the first ``count`` particles (zeros if the state does not count)."""
    nfe = getattr(states, "num_evaluations", None)
    return np.asarray(nfe)[:count] if nfe is not None else np.zeros(count, np.int32)


class Collector:
    """Preallocated host arrays that chunks are copied into."""

    def __init__(self, num_samples: int):
        self.n = num_samples
        self.position = self.info = None
        self.nfe = np.zeros(num_samples, np.int64)
        self.first_bad = np.zeros(num_samples, np.int32)
        self.acc_sum = self.acc_count = 0.0

    def add(self, offset: int, chunk: ChunkOut) -> None:
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
