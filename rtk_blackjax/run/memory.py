"""How many particles a compiled call may hold: the chunk size from a memory budget.

Without a ``chunk_size``, :func:`~rtk_blackjax.run.sampling.sample` runs all its
particles in one call, and the call's working memory grows with them: at 10^6
particles in d = 1000 (float32) the states alone are 4-8 GB and XLA's
temporaries several times that, more than a 24 GB machine holds, although the
samples (4 GB) fit. This module bounds it:

* the **budget** is what the caller gives (``memory_budget``, bytes per device),
  or else half of what the device has free (``memory_stats``), or, on CPUs,
  half of the host's available memory less what the collected results will
  occupy there, split between the devices;
* a cheap bound (the particle state's bytes times a generous factor, plus the
  per-segment info a call returns) decides whether the whole run could come
  near the budget; only then is the run's program compiled for a probe batch
  and XLA's own accounting of its memory (arguments, outputs, temporaries)
  read, per particle;
* the chunk is the largest multiple of :data:`CHUNK_QUANTUM` particles whose
  memory, twice over (a chunk is dispatched while the previous one is copied
  out), fits the budget.

Small runs never reach the probe, so they run as before, in one call.
"""

import math
import os
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

__all__ = ["CHUNK_QUANTUM", "auto_chunk_size", "default_memory_budget", "tree_bytes"]

# Chunks are multiples of this many particles (a handful of distinct shapes, so
# programs are reused; XLA's kernels do not change with the size this coarsely).
CHUNK_QUANTUM = 1024
# Particles in the probe compilation that measures the memory per particle.
_PROBE_PARTICLES = 1024
# The cheap estimate: working memory of a call per byte of particle state (plus
# the per-segment info it returns). XLA's accounting over the state's bytes was
# 16-27 for DDPM and RTK (MALA, ULD) programs at d = 2 ... 1000 (the peak RSS of
# the d = 1000 run was about half the accounting); runs below the bound with
# this factor skip the probe.
_QUICK_FACTOR = 32.0
# When nothing says how much memory there is.
_FALLBACK_BYTES = 4 * 2**30


def _host_available_bytes() -> int | None:
    """The host's available memory (``MemAvailable``), or ``None`` if unknown."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def default_memory_budget(
    devices: Sequence[jax.Device], host_result_bytes: int = 0
) -> int:
    """Bytes each of ``devices`` may use for a run's working memory.

    Half of the first device's free memory (``bytes_limit - bytes_in_use`` of
    ``device.memory_stats()``); for devices without memory statistics (CPUs,
    which share the host's memory), half of the host's available memory less
    ``host_result_bytes`` (the results, collected in that same memory), split
    between the devices.

    Examples
    --------
    >>> import jax
    >>> default_memory_budget(jax.devices()) > 0
    True
    """
    stats = None
    try:
        stats = devices[0].memory_stats()
    except Exception:  # some backends raise instead of returning None
        stats = None
    if stats and "bytes_limit" in stats:
        free = int(stats["bytes_limit"]) - int(stats.get("bytes_in_use", 0))
        return max(free // 2, 1)
    available = _host_available_bytes()
    if available is None:
        available = _FALLBACK_BYTES
    return max((available - host_result_bytes) // (2 * len(devices)), 1)


def tree_bytes(shapes: Any) -> int:
    """Bytes of a pytree of arrays or ``ShapeDtypeStruct`` leaves.

    Examples
    --------
    >>> import jax.numpy as jnp
    >>> tree_bytes({"x": jnp.zeros((10, 3)), "n": jnp.zeros(4, jnp.int32)})
    136
    """
    return sum(
        math.prod(s.shape) * np.dtype(s.dtype).itemsize for s in jax.tree.leaves(shapes)
    )


def _measured_bytes_per_particle(program: Any, rng_key: jax.Array) -> float:
    """XLA's memory accounting of one call of ``program.run``, per particle."""
    indices = jax.ShapeDtypeStruct((_PROBE_PARTICLES,), jnp.uint32)
    valid = jax.ShapeDtypeStruct((_PROBE_PARTICLES,), jnp.bool_)
    reporter = jax.ShapeDtypeStruct((), jnp.bool_)
    compiled = program.run.lower(rng_key, indices, valid, reporter).compile()
    stats = compiled.memory_analysis()
    if stats is None:  # a backend without the accounting: the cheap estimate
        return _QUICK_FACTOR * tree_bytes(program.state_shapes)
    total = (
        stats.argument_size_in_bytes
        + stats.output_size_in_bytes
        + stats.temp_size_in_bytes
        - stats.alias_size_in_bytes
    )
    return max(total, 1) / _PROBE_PARTICLES


def auto_chunk_size(
    program: Any,
    rng_key: jax.Array,
    per_device: int,
    budget: int,
) -> int | None:
    """Particles per device per call so that a call's memory fits ``budget``.

    Parameters
    ----------
    program
        The run's :class:`~rtk_blackjax.run.programs.Program`.
    rng_key
        The run's key (the probe compilation needs its type, not its value).
    per_device
        Particles each device would hold in one call without chunks.
    budget
        Bytes per device for the run's working memory.

    Returns
    -------
    ``None`` when the whole run fits in one call (no chunks), else the chunk
    size: a multiple of :data:`CHUNK_QUANTUM`, at least one quantum.
    """
    quick = _QUICK_FACTOR * tree_bytes(program.state_shapes)
    if program.info_shapes is not None:
        quick += program.algorithm.num_segments * tree_bytes(program.info_shapes)
    if per_device * quick <= budget:
        return None
    per_particle = _measured_bytes_per_particle(program, rng_key)
    # Two chunks in flight: the next is dispatched while the last is copied out.
    fits = int(budget // (2 * per_particle))
    if fits >= per_device:
        return None
    return max(CHUNK_QUANTUM, fits // CHUNK_QUANTUM * CHUNK_QUANTUM)
