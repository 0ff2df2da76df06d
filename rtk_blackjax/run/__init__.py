"""Running particles through every segment: the run loop of the package.

* :mod:`~rtk_blackjax.run.loop`: the one segment loop and the key scheme.
* :mod:`~rtk_blackjax.run.sampling`: :func:`sample`, its result and the host loop
  over chunks.
* :mod:`~rtk_blackjax.run.programs`: the compiled programs and their cache.
* :mod:`~rtk_blackjax.run.layout`: the position template and the chunk layout.
* :mod:`~rtk_blackjax.run.devices`: splitting a chunk across devices.
* :mod:`~rtk_blackjax.run.checkpoint`: checkpoint files and their fingerprint.
* :mod:`~rtk_blackjax.run.policy`: non-finite particles and low acceptance.
"""

from rtk_blackjax.run.checkpoint import CheckpointProgress
from rtk_blackjax.run.loop import (
    chain_key,
    init_particle,
    particle_key,
    run_segments,
    segment_key,
    start_key,
    start_position,
)
from rtk_blackjax.run.policy import (
    LOW_ACCEPTANCE,
    NONFINITE_POLICIES,
    NonFiniteSamplesError,
)
from rtk_blackjax.run.sampling import SampleResult, sample

__all__ = [
    "sample",
    "SampleResult",
    "NonFiniteSamplesError",
    "CheckpointProgress",
    "NONFINITE_POLICIES",
    "LOW_ACCEPTANCE",
    "run_segments",
    "particle_key",
    "start_key",
    "chain_key",
    "segment_key",
    "start_position",
    "init_particle",
]
