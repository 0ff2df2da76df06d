"""Driver at scale: chunks, determinism, start_index, return_info, checkpoints."""

import functools
import json

import jax
import numpy as np
import pytest

import rtk_blackjax as rb

# Short grids on purpose (fast compiles): some segments barely accept, which is fine.
pytestmark = pytest.mark.filterwarnings("ignore:inner-kernel acceptance:RuntimeWarning")


def _leaves(tree):
    return [np.asarray(v) for v in jax.tree.leaves(tree)]


def _assert_trees_equal(a, b):
    for x, y in zip(_leaves(a), _leaves(b), strict=True):
        np.testing.assert_array_equal(x, y)


@pytest.fixture(scope="module")
def mog_rtk():
    # A full-covariance mixture: its score has dot products, the operations whose
    # XLA kernels depend on the batch shape.
    target = rb.targets.random_mog(0, 3, num_components=3)
    return rb.rtk(target, rb.geometric_grid(5), num_inner_steps=1)


@pytest.fixture(scope="module")
def ddpm_2d():
    target = rb.targets.gaussian(np.array([0.5, -1.0]), np.array([0.3, 0.1]))
    return rb.ddpm(target, rb.geometric_grid(10, horizon=3.0, t_min=3e-2))


def test_chunked_run_matches_one_batch(mog_rtk):
    key = jax.random.key(3)
    one = rb.sample(key, mog_rtk, 10, dim=3)
    for chunk in (3, 4, 10):
        chunked = rb.sample(key, mog_rtk, 10, dim=3, chunk_size=chunk)
        assert chunked.samples.shape == (10, 3)
        # Same keys, same algorithm: equal up to the rounding of shape-dependent
        # XLA kernels (bitwise for the same chunk shape, see the next test).
        np.testing.assert_allclose(chunked.samples, one.samples, rtol=1e-4, atol=1e-5)
        assert chunked.num_evaluations == one.num_evaluations
        for name in one.info._fields:
            got, want = getattr(chunked.info, name), getattr(one.info, name)
            assert got.shape == want.shape == (mog_rtk.num_segments, 10), name
        np.testing.assert_array_equal(chunked.info.time, one.info.time)
        np.testing.assert_array_equal(
            chunked.info.num_evaluations, one.info.num_evaluations
        )
        np.testing.assert_array_equal(chunked.finite, one.finite)
        np.testing.assert_allclose(
            chunked.acceptance_per_segment(), one.acceptance_per_segment(), atol=1e-6
        )
    # The chunk that is the whole run is the one-batch program itself.
    _assert_trees_equal(rb.sample(key, mog_rtk, 10, dim=3, chunk_size=10), one)


def test_fixed_chunk_gives_bitwise_identical_sample_i(mog_rtk):
    key = jax.random.key(5)
    full = rb.sample(key, mog_rtk, 11, dim=3, chunk_size=4)
    for start, n in ((0, 5), (4, 7), (3, 2), (10, 1)):
        part = rb.sample(key, mog_rtk, n, dim=3, chunk_size=4, start_index=start)
        np.testing.assert_array_equal(part.samples, full.samples[start : start + n])
        for got, want in zip(_leaves(part.info), _leaves(full.info), strict=True):
            np.testing.assert_array_equal(got, want[:, start : start + n])
    lean = rb.sample(key, mog_rtk, 11, dim=3, chunk_size=4, return_info=False)
    assert lean.info is None
    np.testing.assert_array_equal(lean.samples, full.samples)
    np.testing.assert_allclose(
        lean.acceptance_per_segment(), full.acceptance_per_segment(), rtol=1e-6
    )


def test_many_chunks_bounded_memory_run(ddpm_2d):
    result = rb.sample(jax.random.key(0), ddpm_2d, 10_000, dim=2, chunk_size=1_000)
    samples = np.asarray(result.samples)
    assert isinstance(result.samples, np.ndarray)  # gathered in host memory
    assert samples.shape == (10_000, 2) and np.isfinite(samples).all()
    assert result.info.time.shape == (10, 10_000)
    assert result.first_nonfinite_segment.shape == (10_000,)
    assert result.num_evaluations == 10
    np.testing.assert_allclose(samples.mean(axis=0), [0.5, -1.0], atol=0.03)
    # DDPM with 10 segments is biased; this only checks that nothing is scrambled.
    np.testing.assert_allclose(samples.var(axis=0), [0.3, 0.1], rtol=0.2)
    one = rb.sample(jax.random.key(0), ddpm_2d, 10_000, dim=2)
    np.testing.assert_allclose(samples, one.samples, rtol=1e-4, atol=1e-5)
    np.testing.assert_array_equal(result.info.time, one.info.time)
    lean = rb.sample(
        jax.random.key(0), ddpm_2d, 10_000, dim=2, chunk_size=1_000, return_info=False
    )
    assert lean.info is None
    np.testing.assert_array_equal(lean.samples, samples)


def test_progress_bar_counts_every_chunk(ddpm_2d, monkeypatch):
    import tqdm.auto

    bars = []

    class Bar(tqdm.auto.tqdm):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, disable=True, **kwargs)
            self.ticks = 0
            bars.append(self)

        def update(self, n=1):
            self.ticks += n

    monkeypatch.setattr(tqdm.auto, "tqdm", Bar)
    rb.sample(jax.random.key(0), ddpm_2d, 7, dim=2, chunk_size=3, progress_bar=True)
    assert bars[0].total == 3 * ddpm_2d.num_segments
    assert bars[0].ticks == 3 * ddpm_2d.num_segments


class _Interrupt(Exception):
    pass


def _stop_after(calls: int):
    seen = []

    def callback(progress):
        seen.append(progress)
        if len(seen) == calls:
            raise _Interrupt

    return callback, seen


@pytest.mark.parametrize("every", [1, 3])
def test_checkpoint_resume_is_bitwise_identical(ddpm_2d, tmp_path, every):
    key, n, chunk = jax.random.key(1), 10, 4
    reference = rb.sample(key, ddpm_2d, n, dim=2, chunk_size=chunk)
    run = functools.partial(
        rb.sample,
        key,
        ddpm_2d,
        n,
        dim=2,
        chunk_size=chunk,
        checkpoint_dir=tmp_path,
        checkpoint_every=every,
    )
    callback, seen = _stop_after(5)
    with pytest.raises(_Interrupt):
        run(checkpoint_callback=callback)
    last = seen[-1]
    assert last.num_chunks == 3 and last.num_segments == ddpm_2d.num_segments
    meta = json.loads((tmp_path / "checkpoint.json").read_text())
    done = meta["progress"]["chunks_done"] * 10 + meta["progress"]["segments_done"]
    assert done == last.chunk * 10 + last.segments_done > 0

    callback, resumed_calls = _stop_after(10**6)
    resumed = run(checkpoint_callback=callback)
    assert resumed_calls[0].chunk == last.chunk  # it did not start over
    _assert_trees_equal(resumed.samples, reference.samples)
    _assert_trees_equal(resumed.info, reference.info)
    np.testing.assert_array_equal(resumed.finite, reference.finite)

    # A completed checkpoint is returned as is, without running anything.
    callback, again_calls = _stop_after(1)
    again = run(checkpoint_callback=callback)
    assert again_calls == []
    _assert_trees_equal(again.samples, reference.samples)


def test_checkpoint_resume_rtk_single_chunk(mog_rtk, tmp_path):
    key = jax.random.key(2)
    reference = rb.sample(key, mog_rtk, 6, dim=3, return_info=False)
    callback, _ = _stop_after(2)
    kwargs = dict(dim=3, return_info=False, checkpoint_dir=tmp_path)
    with pytest.raises(_Interrupt):
        rb.sample(key, mog_rtk, 6, checkpoint_callback=callback, **kwargs)
    resumed = rb.sample(key, mog_rtk, 6, **kwargs)
    np.testing.assert_array_equal(resumed.samples, reference.samples)
    assert resumed.num_evaluations == reference.num_evaluations


@pytest.mark.parametrize(
    "change, match",
    [
        (dict(rng_key=jax.random.key(9)), "rng_key"),
        (dict(num_samples=11), "num_samples"),
        (dict(chunk_size=5), "chunk_size"),
        (dict(start_index=2), "start_index"),
        (dict(return_info=False), "return_info"),
    ],
)
def test_checkpoint_refuses_a_different_run(ddpm_2d, tmp_path, change, match):
    args = dict(rng_key=jax.random.key(1), num_samples=10, chunk_size=4)
    callback, _ = _stop_after(2)
    with pytest.raises(_Interrupt):
        rb.sample(
            algorithm=ddpm_2d,
            dim=2,
            checkpoint_dir=tmp_path,
            checkpoint_callback=callback,
            **args,
        )
    with pytest.raises(ValueError, match=match):
        rb.sample(algorithm=ddpm_2d, dim=2, checkpoint_dir=tmp_path, **(args | change))
    other = rb.ddpm(rb.targets.gaussian(np.zeros(2), 1.0), rb.geometric_grid(11))
    with pytest.raises(ValueError, match="times"):
        rb.sample(algorithm=other, dim=2, checkpoint_dir=tmp_path, **args)


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        (dict(chunk_size=0), ValueError, "chunk_size"),
        (dict(chunk_size=2.0), TypeError, "chunk_size"),
        (dict(chunk_size=True), TypeError, "chunk_size"),
        (dict(start_index=-1), ValueError, "start_index"),
        (dict(start_index=2**32 - 1), ValueError, "start_index"),
        (dict(devices=[]), ValueError, "devices"),
        (dict(devices=["cpu"]), TypeError, "devices"),
        (dict(devices=3), TypeError, "devices"),
        (dict(return_info="no"), TypeError, "return_info"),
        (dict(progress_bar=None), TypeError, "progress_bar"),
        (dict(checkpoint_dir=3), TypeError, "checkpoint_dir"),
        (dict(checkpoint_every=0), ValueError, "checkpoint_every"),
        (dict(checkpoint_callback=3), TypeError, "checkpoint_callback"),
        (dict(rng_key=3), TypeError, "rng_key"),
        (dict(rng_key=jax.random.split(jax.random.key(0))), ValueError, "rng_key"),
        (dict(dim=3), ValueError, "dim"),
        (dict(dim=None, position_like=np.zeros(2, int)), TypeError, "position_like"),
        (dict(position_like=np.zeros(3)), ValueError, "dim"),
    ],
)
def test_sample_validates_scale_arguments(ddpm_2d, kwargs, error, match):
    args = dict(rng_key=jax.random.key(0), num_samples=4, dim=2) | kwargs
    with pytest.raises(error, match=match):
        rb.sample(algorithm=ddpm_2d, **args)


def test_overhead_table_smoke():
    from rtk_blackjax.benchmarks.overhead import format_overhead_table, overhead_table

    rows = overhead_table(dim=2, num_samples=8, repeats=1, methods=("ddpm",), nfe=6)
    (row,) = rows
    assert row.method == "ddpm" and row.nfe == 6
    assert row.bare_s > 0 and row.sampler_s > 0
    assert row.ratio == pytest.approx(row.sampler_s / row.bare_s)
    table = format_overhead_table(rows)
    assert table.splitlines()[2].startswith("| ddpm | 6 |")
