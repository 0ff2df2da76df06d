"""Checkpoints are resumed only by the run that wrote them, algorithm included."""

import jax
import numpy as np
import pytest

import rtk_blackjax as rb

# Short grids on purpose (fast compiles): some segments barely accept, which is fine.
pytestmark = pytest.mark.filterwarnings("ignore:inner-kernel acceptance:RuntimeWarning")

KEY, N, CHUNK, DIM = jax.random.key(4), 6, 4, 2
GRID = rb.geometric_grid(4)


def _target(mean=(0.5, -1.0)):
    return rb.targets.gaussian(np.asarray(mean), np.asarray([0.3, 0.1]))


def _rtk(target=None, inner=None):
    return rb.rtk(_target() if target is None else target, GRID, inner, 1)


class _Interrupt(Exception):
    pass


def _interrupted(algorithm, directory):
    """Start a checkpointed run of ``algorithm`` and stop it after two saves."""
    seen = []

    def callback(progress):
        seen.append(progress)
        if len(seen) == 2:
            raise _Interrupt

    with pytest.raises(_Interrupt):
        rb.sample(KEY, algorithm, N, dim=DIM, chunk_size=CHUNK,
                  checkpoint_dir=directory, checkpoint_callback=callback)  # fmt: skip


def _resume(algorithm, directory):
    return rb.sample(
        KEY, algorithm, N, dim=DIM, chunk_size=CHUNK, checkpoint_dir=directory
    )


@pytest.mark.parametrize(
    "other",
    [
        lambda: _rtk(target=_target(mean=(0.5, -1.2))),  # another target
        lambda: _rtk(inner=rb.independence_inner()),  # another inner kernel
        lambda: _rtk(inner=rb.mala_inner(step_scale=0.5)),  # another step-size rule
    ],
    ids=["target", "inner-kernel", "step-size-rule"],
)
def test_resume_with_another_algorithm_is_refused(tmp_path, other):
    _interrupted(_rtk(), tmp_path)
    with pytest.raises(ValueError, match="the algorithm differs"):
        _resume(other(), tmp_path)


def test_same_algorithm_rebuilt_from_scratch_resumes_bitwise(tmp_path):
    reference = rb.sample(KEY, _rtk(), N, dim=DIM, chunk_size=CHUNK)
    _interrupted(_rtk(), tmp_path)
    resumed = _resume(_rtk(), tmp_path)  # new objects, same parameters
    np.testing.assert_array_equal(resumed.samples, reference.samples)
    np.testing.assert_array_equal(resumed.info.acceptance_rate,
                                  reference.info.acceptance_rate)  # fmt: skip
