"""Learned scores: DSM training on a known Gaussian, sampling from the learned score."""

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist
import pytest

import rtk_blackjax as rb
from rtk_blackjax.adapters.learned import (
    ScoreNetwork,
    TrainedScore,
    learned_target,
    load_trained,
    make_score_network,
    plot_loss,
    prior_predictive_samples,
    save_trained,
    train_score,
)

# A strongly correlated, anisotropic 2-D Gaussian (correlation 0.85): the network's
# built-in diagonal-Gaussian baseline is far from it, so it must learn the rest.
MEAN = np.array([1.0, -1.0])
COV = np.array([[1.0, 0.6], [0.6, 0.5]])
N_SAMPLES = 4000


def gaussian_model():
    numpyro.sample("x", dist.MultivariateNormal(jnp.asarray(MEAN), jnp.asarray(COV)))


@pytest.fixture(scope="module")
def trained() -> TrainedScore:
    # The NumPyro path: the model's prior predictive is the training data.
    data = prior_predictive_samples(jax.random.key(0), gaussian_model, 20_000)
    return train_score(
        jax.random.key(1),
        data,
        num_steps=6000,
        batch_size=256,
        hidden=64,
        depth=2,
        t_min=1e-3,
        chunk_size=1000,
        progress_bar=False,
    )


def _relative_score_error(score_fn, t: float) -> float:
    """sqrt(E|score_fn - score|^2 / E|score|^2) under x ~ p_t (exact draws)."""
    exact = rb.targets.gaussian(MEAN, COV)
    a, s = np.exp(-t), np.sqrt(1.0 - np.exp(-2.0 * t))
    x0 = jax.random.multivariate_normal(jax.random.key(2), MEAN, COV, (4000,))
    xt = a * x0 + s * jax.random.normal(jax.random.key(3), x0.shape)
    ref = jax.jit(jax.vmap(lambda x: exact.score(x, t)))(xt)
    got = jax.jit(jax.vmap(lambda x: score_fn(x, t)))(xt)
    return float(jnp.sqrt(jnp.sum((got - ref) ** 2) / jnp.sum(ref**2)))


# Measured errors at 6000 steps: 0.041 / 0.023 / 0.011 / 0.006; the diagonal-Gaussian
# start is at 0.82 / 0.64 / 0.25 / 0.08. A relative score error e at small t scales
# the learned Gaussian's precision by about (1 + e), i.e. its covariance by ~e:
# 10 % is the largest error that keeps the sampled covariance within the
# tolerances below, and it is far below what an untrained network gives.
SCORE_TOLERANCE = {0.01: 0.10, 0.1: 0.10, 0.5: 0.05, 1.0: 0.03}


@pytest.mark.slow
def test_learned_score_close_to_exact_gaussian_score(trained):
    data = jax.random.multivariate_normal(jax.random.key(0), MEAN, COV, (20_000,))
    untrained = make_score_network(jax.random.key(1), data, hidden=64, depth=2)
    for t, tol in SCORE_TOLERANCE.items():
        err = _relative_score_error(trained.model, t)
        assert err < tol, f"t={t}: relative score error {err:.3f} >= {tol}"
        # power check: the starting point (diagonal Gaussian fit) fails
        assert _relative_score_error(untrained, t) > tol
    # the loss went down from its starting value
    assert trained.loss_history[-500:].mean() < trained.loss_history[:50].mean()


def _check_moments(x: np.ndarray) -> None:
    """Mean and covariance of ``x`` vs the exact Gaussian.

    Tolerance: 5 Monte Carlo standard errors plus 0.05 standard deviations for
    the learned score's own bias (score error <= 10 % at small t, see above).
    Measured: every error <= 0.41 of its tolerance for the three samplers; the
    untrained (diagonal) score would miss the 0.6 covariance entry entirely.
    """
    n = len(x)
    sd = np.sqrt(np.diag(COV))
    mean_err = np.abs(x.mean(0) - MEAN)
    assert np.all(mean_err < 5 * sd / np.sqrt(n) + 0.05 * sd), mean_err
    cov_err = np.abs(np.cov(x.T) - COV)
    cov_se = np.sqrt((np.outer(np.diag(COV), np.diag(COV)) + COV**2) / n)
    assert np.all(cov_err < 5 * cov_se + 0.05 * np.outer(sd, sd)), cov_err


@pytest.mark.slow
@pytest.mark.parametrize("method", ["rtk-mala-score", "rtk-uld", "ddpm"])
def test_sampling_learned_score_recovers_mean_and_covariance(trained, method):
    target = learned_target(trained)
    grid = rb.geometric_grid(30, horizon=5.0, t_min=1e-3)
    if method == "rtk-mala-score":
        inner = rb.score_mala_inner(rule="lobatto", num_nodes=2)
        algorithm = rb.rtk(target, grid, inner, 1)
    elif method == "rtk-uld":
        algorithm = rb.rtk(target, grid, rb.uld_inner(step_scale=0.3), 1)
    else:
        algorithm = rb.ddpm(target, rb.geometric_grid(100, horizon=5.0, t_min=1e-3))
    result = rb.sample(jax.random.key(4), algorithm, N_SAMPLES, dim=2)
    _check_moments(np.asarray(result.samples))
    if method == "rtk-mala-score":
        acc = result.acceptance_per_segment()
        assert np.nanmean(acc) > 0.7


@pytest.mark.slow
def test_save_load_roundtrip(trained, tmp_path):
    path = tmp_path / "net.eqx"
    save_trained(trained, path)
    loaded = load_trained(path)
    x = jnp.array([0.3, -0.7])
    for t in (0.0, 0.05, 2.0):
        np.testing.assert_array_equal(loaded.model(x, t), trained.model(x, t))
    np.testing.assert_allclose(loaded.loss_history, trained.loss_history, rtol=1e-6)
    assert loaded.config == trained.config
    png = plot_loss(loaded, tmp_path / "loss.png")
    assert (tmp_path / "loss.png").stat().st_size > 1000 and png is not None


def test_score_below_t_min_is_score_at_t_min():
    data = jax.random.normal(jax.random.key(0), (64, 3))
    net = make_score_network(jax.random.key(1), data, hidden=8, depth=1, t_min=1e-3)
    x = jnp.array([0.1, 0.2, -0.3])
    np.testing.assert_array_equal(net(x, 0.0), net(x, 1e-3))
    assert np.all(np.isfinite(net(x, 0.0)))


def test_untrained_network_is_the_fitted_diagonal_gaussian():
    data = jax.random.normal(jax.random.key(0), (4000, 2)) * jnp.array([2.0, 0.5])
    net = make_score_network(jax.random.key(1), data, hidden=8, depth=1)
    exact = rb.targets.gaussian(data.mean(0), data.var(0))
    x = jnp.array([0.4, -0.2])
    for t in (1e-3, 0.3, 3.0):
        np.testing.assert_allclose(net(x, t), exact.score(x, t), rtol=1e-4, atol=1e-5)
    # Tweedie consistency of the denoiser with the score
    t = 0.3
    a, s2 = np.exp(-t), 1 - np.exp(-2 * t)
    np.testing.assert_allclose(
        net.denoise(x, t), (x + s2 * net(x, t)) / a, rtol=1e-5, atol=1e-6
    )


def test_prior_predictive_sites():
    def model():
        z = numpyro.sample("z", dist.Normal(0.0, 1.0))
        numpyro.sample("x", dist.Normal(z, 1.0).expand([2, 3]).to_event(2))

    key = jax.random.key(0)
    with pytest.raises(ValueError, match="site="):
        prior_predictive_samples(key, model, 5)
    assert prior_predictive_samples(key, model, 5, site="x").shape == (5, 6)
    with pytest.raises(ValueError, match="'y' not among"):
        prior_predictive_samples(key, model, 5, site="y")


@pytest.mark.parametrize(
    "samples, kwargs, match",
    [
        (np.zeros((100,)), {}, "shape \\(n, dim\\)"),
        (np.zeros((4, 2)), {}, "at least 16"),
        (np.full((32, 2), np.nan), {}, "NaN or inf"),
        (np.zeros((32, 2)), {"learning_rate": -1.0}, "learning_rate"),
        (np.zeros((32, 2)), {"num_steps": 0}, "num_steps"),
        (np.zeros((32, 2)), {"t_min": 1.0, "t_max": 0.5}, "t_max"),
        (np.zeros((32, 2)), {"ema": 1.0}, "ema"),
        (np.zeros((32, 2)), {"hidden": 0}, "hidden"),
    ],
)
def test_train_score_rejects_bad_input(samples, kwargs, match):
    with pytest.raises(ValueError, match=match):
        train_score(jax.random.key(0), samples, progress_bar=False, **kwargs)


def test_bad_key_and_types():
    with pytest.raises(TypeError, match="rng_key"):
        train_score(0, np.zeros((32, 2)), progress_bar=False)
    # A non-integer count is the wrong kind: TypeError (rtk_blackjax._checks).
    with pytest.raises(TypeError, match="batch_size"):
        train_score(
            jax.random.key(0), np.zeros((32, 2)), progress_bar=False, batch_size=1.5
        )
    with pytest.raises(TypeError, match="TrainedScore or a ScoreNetwork"):
        learned_target(lambda x, t: x)
    net = make_score_network(jax.random.key(0), np.ones((32, 2)), hidden=4)
    assert isinstance(net, ScoreNetwork)
    with pytest.raises(ValueError, match="shape \\(2,\\)"):
        net(jnp.zeros(3), 0.1)


@pytest.mark.slow
def test_nonfinite_loss_is_reported():
    # A learning rate of 1e30 blows the weights up within a few steps.
    data = jax.random.normal(jax.random.key(0), (64, 2))
    with pytest.raises(FloatingPointError, match="non-finite at step"):
        train_score(
            jax.random.key(1),
            data,
            num_steps=40,
            batch_size=16,
            hidden=8,
            depth=1,
            learning_rate=1e30,
            chunk_size=20,
            progress_bar=False,
        )


@pytest.mark.slow
def test_training_does_not_depend_on_chunk_size():
    data = jax.random.normal(jax.random.key(0), (64, 2))
    kwargs = dict(num_steps=6, batch_size=16, hidden=8, depth=1, progress_bar=False)
    a = train_score(jax.random.key(1), data, chunk_size=6, **kwargs)
    b = train_score(jax.random.key(1), data, chunk_size=3, **kwargs)
    np.testing.assert_allclose(a.loss_history, b.loss_history, rtol=1e-5)
    x = jnp.array([0.2, 0.1])
    np.testing.assert_allclose(a.model(x, 0.1), b.model(x, 0.1), rtol=1e-4, atol=1e-6)
