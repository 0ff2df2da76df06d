"""Multi-device dispatch: one chunk split across the local devices.

Inside a chunk the particle axis is split across devices. Particles never talk to
each other, so every device runs, asynchronously, the very single-device program
one device would run on ``chunk_size`` particles; their outputs are concatenated
in device order. One program partitioned across a mesh (``shard_map`` /
``NamedSharding`` inside a single ``jit``) was the first version: XLA optimises a
partitioned module differently (a division by a broadcast rewritten as a
multiplication by its reciprocal in the one-device program only), and the samples
then differed in the last bits between one and several devices. The price of
per-device programs is one compilation per device (the same HLO each time).
"""

from typing import Any

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from rtk_blackjax.types import Array

__all__ = ["check_devices", "split", "concat", "join"]

_AXIS = "particles"


def check_devices(devices: Any) -> tuple:
    """``devices`` as a tuple of distinct local devices of one platform."""
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


def split(tree: Any, devices: tuple, per_device: int) -> list:
    """Host arrays with a leading ``per_call`` axis -> one slice per device."""
    p = per_device
    return [
        jax.tree.map(
            lambda v, r=r, d=d: jax.device_put(v[r * p : (r + 1) * p], d), tree
        )
        for r, d in enumerate(devices)
    ]


def concat(trees: list, axis: int) -> Any:
    """Host concatenation of per-device pytrees along the particle axis."""
    return jax.tree.map(
        lambda *xs: np.concatenate([np.asarray(x) for x in xs], axis=axis), *trees
    )


def join(arrays: list, devices: tuple, axis: int) -> Array:
    """Per-device arrays -> one array sharded along ``axis`` (no copies)."""
    if len(arrays) == 1:
        return arrays[0]
    mesh = Mesh(np.asarray(devices, dtype=object), (_AXIS,))
    spec = P(*([None] * axis), _AXIS)
    shape = list(arrays[0].shape)
    shape[axis] *= len(arrays)
    return jax.make_array_from_single_device_arrays(
        tuple(shape), NamedSharding(mesh, spec), arrays
    )
