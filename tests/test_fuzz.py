"""Fuzz the public entry points: bad input gets our ValueError/TypeError naming the
argument; accepted input gives outputs of the right shape.

Each example corrupts one argument of an otherwise valid call, so the error must
name that argument. Samplers are only run with a fixed chunk shape, so a whole
fuzz run compiles a handful of programs, not one per example.
"""

import re

import jax
import jax.numpy as jnp
import numpy as np
import numpyro.distributions as dist
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

import rtk_blackjax as rb
from rtk_blackjax import baselines, metrics

SETTINGS = settings(
    max_examples=30,
    deadline=None,
    derandomize=True,  # the same examples on every run (CI stability)
    database=None,  # nothing to remember between runs, no .hypothesis/ directory
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)

# Values that are wrong for most arguments, and some that happen to be right.
JUNK = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-5, 40),
    st.sampled_from([10**12, 2**40, -(10**12)]),
    st.floats(allow_nan=True, allow_infinity=True, width=64),
    st.complex_numbers(max_magnitude=10),
    st.text(max_size=3),
    st.lists(st.floats(-3, 3), max_size=3),
    st.sampled_from(
        [
            object(),
            {},
            np.zeros((2, 2)),
            np.array([1, 2]),
            np.array([1.0 + 2.0j]),
            np.array([np.nan, 1.0]),
            jnp.ones(3),
            jax.random.key(1),
        ]
    ),
)


def call(fn, name: str, *args, **kwargs):
    """``fn(*args, **kwargs)``, or ``None`` after our error naming ``name``.

    Any other exception type fails the test (hypothesis shows the example).
    """
    try:
        return fn(*args, **kwargs)
    except (ValueError, TypeError) as err:
        message = str(err).lower()
        names = (name,) if isinstance(name, str) else name
        # as a whole word: "x" (a metric's argument) is a letter of most messages
        assert any(
            re.search(rf"(?<![a-z0-9_]){re.escape(n.lower())}(?![a-z0-9_])", message)
            for n in names
        ), (names, str(err))
        return None


# --------------------------------------------------------------------------
# rtk_blackjax.sample
# --------------------------------------------------------------------------

_TARGET = rb.targets.gaussian(np.array([0.5, -1.0]), np.array([0.3, 0.1]))
_ALGORITHM = rb.ddpm(_TARGET, rb.geometric_grid(4))
_CHUNK = 4
_VALID_SAMPLE = dict(
    rng_key=jax.random.key(0),
    algorithm=_ALGORITHM,
    num_samples=5,
    dim=2,
    position_like=None,
    progress_bar=False,
    on_nonfinite="raise",
    chunk_size=_CHUNK,
    devices=None,
    start_index=0,
    return_info=True,
    checkpoint_every=1,
    checkpoint_callback=None,
)


@SETTINGS
@given(name=st.sampled_from(sorted(_VALID_SAMPLE)), value=JUNK)
def test_sample_rejects_bad_arguments_by_name(name, value):
    if name == "chunk_size" and isinstance(value, int) and 0 < value < 10**6:
        value = _CHUNK  # a valid chunk: keep the compiled shape
    if name == "num_samples" and isinstance(value, int) and value > 1000:
        assume(False)  # valid but needlessly large
    kwargs = dict(_VALID_SAMPLE, **{name: value})
    if name == "position_like":
        kwargs["dim"] = None
    expected = {"position_like": ("position_like", "dim")}.get(name, name)
    result = call(rb.sample, expected, **kwargs)
    if result is None:
        return
    n = kwargs["num_samples"]
    assert np.shape(result.samples) == (n, 2)
    assert np.shape(result.finite) == (n,)
    assert np.isfinite(np.asarray(result.samples)).all()
    if kwargs["return_info"]:
        assert result.info.time.shape == (_ALGORITHM.num_segments, n)


@SETTINGS
@given(n=st.integers(1, 9), start=st.integers(0, 2**32 - 10), lean=st.booleans())
def test_sample_output_shapes(n, start, lean):
    result = rb.sample(
        jax.random.key(0),
        _ALGORITHM,
        n,
        dim=2,
        chunk_size=_CHUNK,
        start_index=start,
        return_info=not lean,
    )
    assert np.shape(result.samples) == (n, 2)
    assert result.first_nonfinite_segment.shape == (n,)
    assert result.acceptance_per_segment().shape == (_ALGORITHM.num_segments,)
    assert (result.info is None) == lean


# --------------------------------------------------------------------------
# Grids
# --------------------------------------------------------------------------


def _assert_valid_grid(times, num_segments=None):
    times = np.asarray(times)
    assert times.ndim == 1 and times[-1] == 0.0 and times[0] > 0
    assert np.all(np.diff(times) < 0) and np.all(np.isfinite(times))
    if num_segments is not None:
        assert times.shape == (num_segments + 1,)


_GRID_ARGS = {
    "uniform_grid": (rb.uniform_grid, dict(num_segments=3, horizon=2.0)),
    "geometric_grid": (
        rb.geometric_grid,
        dict(num_segments=3, horizon=2.0, t_min=1e-3),
    ),
    "theory_grid": (rb.theory_grid, dict(smoothness=2.0, horizon=1.0)),
    "make_grid": (
        rb.make_grid,
        dict(
            kind="geometric", num_segments=3, horizon=2.0, t_min=1e-3, smoothness=None
        ),
    ),
}


@SETTINGS
@given(
    which=st.sampled_from(sorted(_GRID_ARGS)),
    data=st.data(),
    value=JUNK,
)
def test_grid_constructors(which, data, value):
    fn, valid = _GRID_ARGS[which]
    name = data.draw(st.sampled_from(sorted(valid)))
    kwargs = dict(valid, **{name: value})
    expected_name = {"kind": "grid kind"}.get(name, name)
    if which == "make_grid" and name == "smoothness":
        kwargs["kind"] = "theory"  # the only kind that reads it
    grid = call(fn, expected_name, **kwargs)
    if grid is not None:
        theory = which == "theory_grid" or kwargs.get("kind") == "theory"
        expected = None if theory else kwargs["num_segments"]
        _assert_valid_grid(grid, expected)


_FLOATS = st.floats(allow_nan=True, allow_infinity=True, width=32)


@SETTINGS
@given(
    times=st.one_of(
        st.lists(_FLOATS, max_size=6),
        st.lists(st.floats(0, 5, width=32), min_size=2, max_size=6).map(
            lambda v: sorted(v, reverse=True) + [0.0]
        ),
        st.lists(st.lists(st.floats(0, 2), max_size=3), max_size=3),
        st.lists(st.integers(0, 5), max_size=5),
        JUNK,
    )
)
def test_validate_grid(times):
    grid = call(rb.validate_grid, "times", times)
    if grid is not None:
        _assert_valid_grid(grid)
        np.testing.assert_allclose(grid, np.asarray(times, np.float64), rtol=1e-6)


# --------------------------------------------------------------------------
# Targets
# --------------------------------------------------------------------------

_ELEMENTS = st.one_of(
    st.floats(-2, 2), st.sampled_from([0.0, -1.0, np.nan, np.inf, 1e300, 1e-300])
)


def _array(shape_strategy):
    return shape_strategy.flatmap(
        lambda shape: st.lists(
            _ELEMENTS, min_size=int(np.prod(shape)), max_size=int(np.prod(shape))
        ).map(lambda v: np.asarray(v, np.float64).reshape(shape))
    )


@SETTINGS
@given(
    c=st.integers(1, 3),
    d=st.integers(1, 3),
    data=st.data(),
    junk=st.one_of(st.none(), JUNK),
    which=st.sampled_from(["means", "covariances", "weights", None]),
)
def test_gaussian_mixture(c, d, data, junk, which):
    means = data.draw(_array(st.just((c, d))))
    cov_shape = data.draw(st.sampled_from([(), (c,), (c, d), (c, d, d)]))
    covariances = np.abs(data.draw(_array(st.just(cov_shape))))
    if cov_shape == (c, d, d):
        with np.errstate(all="ignore"):  # 1e300 squared: an inf covariance to refuse
            covariances = covariances @ np.swapaxes(covariances, -1, -2) + np.eye(d)
    weights = data.draw(st.one_of(st.none(), _array(st.just((c,)))))
    args = dict(means=means, covariances=covariances, weights=weights)
    if which is not None:
        args[which] = junk
    target = call(
        rb.targets.gaussian_mixture, ("means", "covariances", "weights"), **args
    )
    if target is None:
        return
    dim = target.mixture.dim
    assert target.mixture.means.shape[1] == dim
    for t in (0.0, 0.5):
        score = target.score(jnp.zeros(dim), t)
        assert score.shape == (dim,)
        assert target.logdensity(jnp.zeros(dim), t).shape == ()


@settings(SETTINGS, max_examples=15)  # numpyro constructors are slow-ish
@given(
    kind=st.sampled_from(
        ["normal", "mvn", "independent", "mixture", "gamma", "beta", "categorical"]
    ),
    loc=st.lists(st.floats(-3, 3), min_size=1, max_size=3),
    scale=st.floats(-1, 3),
)
def test_from_distribution(kind, loc, scale):
    loc = jnp.asarray(loc)
    d = loc.shape[0]
    try:  # numpyro validates its own parameters: only valid distributions go on
        distribution = {
            "normal": lambda: dist.Normal(loc, scale),
            "mvn": lambda: dist.MultivariateNormal(loc, scale * jnp.eye(d)),
            "independent": lambda: dist.Normal(loc, scale).to_event(1),
            "mixture": lambda: dist.MixtureSameFamily(
                dist.Categorical(probs=jnp.ones(2) / 2),
                dist.MultivariateNormal(
                    jnp.stack([loc, -loc]), scale * jnp.eye(d)[None].repeat(2, 0)
                ),
            ),
            "gamma": lambda: dist.Gamma(jnp.abs(loc) + 0.1, 1.0),
            "beta": lambda: dist.Beta(jnp.abs(loc) + 0.1, 1.0),
            "categorical": lambda: dist.Categorical(probs=jnp.ones(d) / d),
        }[kind]()
    except ValueError:
        assume(False)
    target = call(
        rb.targets.from_distribution,
        (type(distribution).__name__, "covariance", "positive"),
        distribution,
    )
    if target is None:
        assert kind in ("gamma", "beta", "categorical") or scale <= 1e-30
        return
    assert kind not in ("gamma", "beta", "categorical")
    assert target.score(jnp.zeros(d), 0.3).shape == (d,)


@SETTINGS
@given(position=JUNK)
def test_init_refuses_bad_positions(position):
    try:
        shape = np.shape(position)
    except ValueError:
        shape = None
    assume(shape == (2,))  # a position of another shape is the target's own error
    for algorithm in (rb.rtk(_TARGET, rb.uniform_grid(2)), _ALGORITHM):
        state = call(algorithm.init, "position", position)
        if state is not None:  # a list is a pytree position: check every leaf
            for leaf in jax.tree.leaves(state.position):
                assert jnp.issubdtype(leaf.dtype, jnp.floating)
                assert np.isfinite(np.asarray(leaf)).all()


@pytest.mark.parametrize(
    "position, error",
    [
        (jnp.zeros(2, jnp.int32), TypeError),
        (np.array([1.0 + 1j, 0.0]), TypeError),
        (np.array([np.nan, 0.0]), ValueError),
        (np.array([True, False]), TypeError),
    ],
)
def test_init_position_errors(position, error):
    for algorithm in (rb.rtk(_TARGET, rb.uniform_grid(2)), _ALGORITHM):
        with pytest.raises(error, match="position"):
            algorithm.init(position)


# --------------------------------------------------------------------------
# Samplers and inner kernels (construction only: nothing compiles)
# --------------------------------------------------------------------------

_SAMPLERS = {
    "rtk": (
        rb.rtk,
        dict(
            target=_TARGET,
            times=rb.uniform_grid(3),
            inner=None,
            num_inner_steps=1,
            predictor="gaussian",
            curvature="secant",
            secant_scale=1.0,
        ),
    ),
    "ddpm": (rb.ddpm, dict(target=_TARGET, times=rb.uniform_grid(3))),
    "ddim": (rb.ddim, dict(target=_TARGET, times=rb.uniform_grid(3))),
    "dpm_solver_pp": (rb.dpm_solver_pp, dict(target=_TARGET, times=rb.uniform_grid(3))),
    "heun_pf_ode": (rb.heun_pf_ode, dict(target=_TARGET, times=rb.uniform_grid(3))),
    "predictor_corrector": (
        baselines.predictor_corrector,
        dict(
            target=_TARGET,
            times=rb.uniform_grid(3),
            corrector_steps=1,
            snr=0.16,
            step_rule="noise",
        ),
    ),
    "mala_inner": (rb.mala_inner, dict(step_scale=1.0)),
    "independence_inner": (rb.independence_inner, dict(variance_inflation=1.0)),
    "score_mala_inner": (
        rb.score_mala_inner,
        dict(step_scale=1.0, rule="lobatto", num_nodes=3, radius_scale=None),
    ),
    "uld_inner": (rb.uld_inner, dict(adjusted=False, step_scale=None)),
}


@SETTINGS
@given(which=st.sampled_from(sorted(_SAMPLERS)), data=st.data(), value=JUNK)
def test_sampler_constructors(which, data, value):
    fn, valid = _SAMPLERS[which]
    name = data.draw(st.sampled_from(sorted(valid)))
    kwargs = dict(valid, **{name: value})
    expected = {"times": ("times", "num_inner_steps")}.get(name, name)
    built = call(fn, expected, **kwargs)
    if built is None:
        return
    if "times" in kwargs:
        _assert_valid_grid(built.times)
        np.testing.assert_allclose(built.times, rb.validate_grid(kwargs["times"]))
    if which.endswith("_inner"):
        assert isinstance(built, rb.InnerKernel)


# --------------------------------------------------------------------------
# Metrics
# --------------------------------------------------------------------------

_SAMPLES = st.one_of(
    st.sampled_from([(6, 2), (1, 2), (6, 0), (6,), (6, 3)]).flatmap(
        lambda shape: st.lists(
            st.one_of(st.floats(-2, 2), st.sampled_from([np.nan, np.inf])),
            min_size=int(np.prod(shape)),
            max_size=int(np.prod(shape)),
        ).map(lambda v: np.asarray(v, np.float64).reshape(shape))
    ),
    JUNK,
)
_Y = np.random.default_rng(0).normal(size=(6, 2))
_METRICS = {
    "marginal_accuracy": lambda x: metrics.marginal_accuracy(x, _Y),
    "mode_weight_tv": lambda x: metrics.mode_weight_tv(x, np.zeros((1, 2)), [1.0]),
    "var_bias": lambda x: metrics.var_bias(x, np.ones(2)),
    "sliced_wasserstein": lambda x: metrics.sliced_wasserstein(
        x, _Y, rng_key=jax.random.key(0), num_directions=8
    ),
    "mmd_rbf": lambda x: metrics.mmd_rbf(x, _Y),
}


@SETTINGS
@given(which=st.sampled_from(sorted(_METRICS)), x=_SAMPLES)
def test_metrics(which, x):
    value = call(_METRICS[which], "x", x)
    if value is not None:
        assert isinstance(value, float) and np.isfinite(value)


@SETTINGS
@given(
    name=st.sampled_from(["exact_variance", "means", "weights", "rng_key"]),
    value=JUNK,
)
def test_evaluate_arguments(name, value):
    kwargs = dict(
        means=np.zeros((1, 2)),
        weights=np.ones(1),
        exact_variance=np.ones(2),
        rng_key=jax.random.key(0),
    )
    kwargs[name] = value
    if name in ("means", "weights") and value is None:
        kwargs["means"] = kwargs["weights"] = None  # they go together
    scores = call(metrics.evaluate, name, _Y, _Y + 0.1, **kwargs)
    if scores is not None:
        assert all(v is None or np.isfinite(v) for v in scores.values())
