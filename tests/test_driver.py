"""Driver: NFE accounting against an instrumented target, determinism, NaN policy."""

import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import rtk_blackjax as rb
from rtk_blackjax import segment as segment_module


class CountingTarget:
    """Wrap a target so every score / log-density evaluation is recorded."""

    def __init__(self, target):
        self.base = target
        self.events = []

    def _record(self, kind, x, t):
        self.events.append((kind, np.asarray(x).tobytes(), float(t)))

    def target(self):
        def score(x, t):
            jax.debug.callback(lambda x, t: self._record("score", x, t), x, t)
            return self.base.score(x, t)

        def logdensity(x, t):
            jax.debug.callback(lambda x, t: self._record("logdensity", x, t), x, t)
            return self.base.logdensity(x, t)

        return rb.targets.Target(score, logdensity, self.base.mixture)

    def joint(self):
        """Instrumented ``target_logdensity_with_score``: one event per joint
        (value, score) evaluation, as an analytic target provides them together."""
        base = self.base

        def make(_target):
            @jax.custom_jvp
            def logdensity(x, t):
                jax.debug.callback(lambda x, t: self._record("joint", x, t), x, t)
                return base.logdensity(x, t)

            @logdensity.defjvp
            def _jvp(primals, tangents):
                x, t = primals
                jax.debug.callback(lambda x, t: self._record("joint", x, t), x, t)
                return base.logdensity(x, t), jnp.vdot(base.score(x, t), tangents[0])

            return logdensity

        return make

    def evaluations(self):
        return len(self.events)


@pytest.mark.parametrize(
    "make",
    [
        lambda t: rb.rtk(t, rb.geometric_grid(5), num_inner_steps=2),
        lambda t: rb.rtk(t, rb.geometric_grid(4), num_inner_steps=[0, 3, 1, 0]),
        lambda t: rb.rtk(t, rb.uniform_grid(3), predictor="ddpm", curvature="none"),
        lambda t: rb.rtk(t, rb.uniform_grid(3), rb.independence_inner(), 2),
        lambda t: rb.ddpm(t, rb.geometric_grid(7)),
        lambda t: rb.ddim(t, rb.geometric_grid(7)),
    ],
    ids=["rtk-mala", "rtk-schedule", "rtk-ddpm-nosecant", "rtk-irmh", "ddpm", "ddim"],
)
def test_reported_nfe_matches_instrumented_count(make, monkeypatch):
    counter = CountingTarget(rb.targets.chessboard(dim=3))
    monkeypatch.setattr(segment_module, "target_logdensity_with_score", counter.joint())
    result = rb.sample(jax.random.key(0), make(counter.target()), 1, dim=3)
    assert result.num_evaluations == counter.evaluations()
    per_segment = int(np.asarray(result.info.num_evaluations).sum())
    init_cost = result.num_evaluations - per_segment
    assert init_cost in (0, 1)


def test_sample_i_depends_only_on_key_and_index():
    target = rb.targets.chessboard(dim=4)
    alg = rb.rtk(target, rb.geometric_grid(6), num_inner_steps=1)
    # bitwise with equal chunk shapes (the promise); other batch shapes may round
    # differently and a single Metropolis flip would break any rtol
    small = rb.sample(jax.random.key(7), alg, 5, dim=4, chunk_size=4).samples
    large = rb.sample(jax.random.key(7), alg, 12, dim=4, chunk_size=4).samples
    np.testing.assert_array_equal(np.asarray(small), np.asarray(large[:5]))


def test_a_batch_dependent_prng_key_is_warned_about():
    # The same promise with an rbg key: JAX draws a vmap-ed batch's numbers from
    # the batch's first key, so sample 1 changes with the chunk it shares.
    target = rb.targets.chessboard(dim=2)
    alg = rb.ddpm(target, rb.geometric_grid(8))
    key = jax.random.key(7, impl="rbg")
    with pytest.warns(UserWarning, match="'rbg' PRNG.*chunk_size"):
        alone = rb.sample(key, alg, 2, dim=2, chunk_size=1).samples
    with pytest.warns(UserWarning, match="'rbg' PRNG"):
        shared = rb.sample(key, alg, 4, dim=2, chunk_size=4).samples
    assert not np.allclose(np.asarray(alone[1]), np.asarray(shared[1]))
    # threefry keys: no warning, and sample 1 is the same
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)
        a = rb.sample(jax.random.key(7), alg, 2, dim=2, chunk_size=1).samples
        b = rb.sample(jax.random.key(7), alg, 4, dim=2, chunk_size=4).samples
    np.testing.assert_allclose(np.asarray(a[1]), np.asarray(b[1]), rtol=1e-4)


def _nan_target():
    base = rb.targets.gaussian(np.zeros(2), 0.5)

    def score(x, t):
        s = base.score(x, t)
        return jnp.where(x[0] > 1.0, jnp.nan, s)

    return rb.targets.Target(score, base.logdensity)


def test_nonfinite_samples_raise_by_default_and_can_be_masked():
    alg = rb.ddpm(_nan_target(), rb.uniform_grid(5))
    with pytest.raises(rb.NonFiniteSamplesError, match="non-finite"):
        rb.sample(jax.random.key(0), alg, 200, dim=2)
    result = rb.sample(jax.random.key(0), alg, 200, dim=2, on_nonfinite="mask")
    finite = np.asarray(result.finite)
    assert 0 < finite.sum() < 200
    assert np.all(np.isfinite(np.asarray(result.samples)[finite]))


def test_progress_bar_runs(capsys):
    alg = rb.ddpm(rb.targets.chessboard(dim=2), rb.uniform_grid(4))
    result = rb.sample(jax.random.key(0), alg, 3, dim=2, progress_bar=True)
    drawn = capsys.readouterr().err
    assert f"{alg.num_segments}/{alg.num_segments}" in drawn, drawn
    plain = rb.sample(jax.random.key(0), alg, 3, dim=2, progress_bar=False)
    np.testing.assert_array_equal(np.asarray(result.samples), np.asarray(plain.samples))


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        (dict(num_samples=0, dim=2), ValueError, "num_samples"),
        (dict(num_samples=2.5, dim=2), TypeError, "num_samples"),
        (dict(num_samples=2, dim=0), ValueError, "dim"),
        (dict(num_samples=2, dim=2, on_nonfinite="skip"), ValueError, "on_nonfinite"),
    ],
)
def test_sample_validates_arguments(kwargs, error, match):
    alg = rb.ddpm(rb.targets.chessboard(dim=2), rb.uniform_grid(2))
    with pytest.raises(error, match=match):
        rb.sample(jax.random.key(0), alg, **kwargs)
    with pytest.raises(TypeError, match="algorithm"):
        rb.sample(jax.random.key(0), object(), 2, dim=2)


@pytest.mark.parametrize(
    "kwargs",
    [dict(), dict(chunk_size=64, return_info=False)],
    ids=["one-batch", "chunked-no-info"],
)
def test_nonfinite_report_names_count_segment_and_index(kwargs):
    alg = rb.ddpm(_nan_target(), rb.uniform_grid(5))
    masked = rb.sample(
        jax.random.key(0), alg, 200, dim=2, on_nonfinite="mask", **kwargs
    )
    first = np.asarray(masked.first_nonfinite_segment)
    bad = first < alg.num_segments
    np.testing.assert_array_equal(np.asarray(masked.finite), ~bad)
    k = int(first.min())
    index = int(np.argmax(first == k))
    with pytest.raises(rb.NonFiniteSamplesError) as err:
        rb.sample(jax.random.key(0), alg, 200, dim=2, **kwargs)
    message = str(err.value)
    assert f"{int(bad.sum())} of 200 particles" in message
    assert f"first in segment {k} " in message
    assert f"with {int((first == k).sum())} particles" in message
    assert f"sample index {index}" in message
