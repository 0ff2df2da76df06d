"""The digits priors, classifier and metrics (rtk_blackjax.benchmarks.digits)."""

from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scripts import load_benchmark_script

from rtk_blackjax.adapters.learned import EnergyNetwork, ScoreNetwork, save_trained
from rtk_blackjax.benchmarks import digits as dg
from rtk_blackjax.diffusion import ou_mean_coef, ou_variance

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def data():
    return dg.digits_data()


@pytest.fixture(scope="module")
def classifier(data):
    return dg.digits_classifier(data)


@pytest.fixture(scope="module")
def energy_prior():
    return dg.digits_prior("energy")


# ---------------------------------------------------------------------------
# Data
# ---------------------------------------------------------------------------


def test_split_is_deterministic_disjoint_and_in_model_units(data):
    again = dg.digits_data(0)
    other = dg.digits_data(1)
    assert data.train.shape == (1597, 64) and data.test.shape == (200, 64)
    assert data.train.dtype == np.float32
    assert data.train_labels.shape == (1597,) and data.test_labels.shape == (200,)
    np.testing.assert_array_equal(data.train, again.train)
    np.testing.assert_array_equal(data.test_labels, again.test_labels)
    assert not np.array_equal(data.test, other.test)  # the seed matters
    # Model units (p - 8) / 8 of integer pixels 0..16, and back.
    pixels = data.to_pixels(data.test)
    np.testing.assert_allclose(pixels, np.round(pixels))
    assert pixels.min() == 0 and pixels.max() == 16
    np.testing.assert_allclose(dg.to_model_units(pixels), data.test)
    # The split partitions the data set: every label count adds up.
    counts = np.bincount(data.train_labels, minlength=10) + np.bincount(
        data.test_labels, minlength=10
    )
    assert counts.sum() == 1797 and counts.min() >= 174
    # ... and no held-out image is a training image (row by row).
    train_rows = {row.tobytes() for row in data.train}
    duplicates_in_data = len(train_rows) < len(data.train)
    shared = sum(row.tobytes() in train_rows for row in data.test)
    assert shared <= (3 if duplicates_in_data else 0)
    assert dg.digits_data(num_test=50).test.shape == (50, 64)


def test_shipped_digits_equal_scikit_learns():
    datasets = pytest.importorskip("sklearn.datasets")
    bunch = datasets.load_digits()
    images, labels = dg._load_digits()
    np.testing.assert_array_equal(images, bunch.data)
    np.testing.assert_array_equal(labels, bunch.target)


# ---------------------------------------------------------------------------
# Priors
# ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "kind, cls", [("energy", EnergyNetwork), ("score", ScoreNetwork)]
)
def test_shipped_prior_loads_and_is_trained(kind, cls, data, tmp_path, monkeypatch):
    def no_training(*args, **kwargs):
        raise AssertionError("the shipped prior must load, not train")

    monkeypatch.setattr(dg, "train_digits_prior", no_training)
    path = dg.prior_path(kind)
    assert path.parent == ROOT / "rtk_blackjax" / "benchmarks" / "data"
    assert path.stat().st_size < 1_000_000
    trained = dg.digits_prior(kind, cache_dir=tmp_path)
    assert isinstance(trained.model, cls)
    assert trained.config["hidden"] == dg.CONFIGS["cpu"]["hidden"]
    assert trained.config["digits_config"] == "cpu"
    assert trained.config["digits_seed"] == 0
    # Trained, not the Gaussian start (DSM loss ~1 at initialisation).
    assert np.mean(trained.loss_history[-200:]) < 0.65
    x = jnp.asarray(data.test[:8])
    for t in (0.0, 1e-3, 0.1, 1.0, 5.0):
        score = jax.vmap(trained.model.score, (0, None))(x, t)
        assert score.shape == (8, 64) and bool(jnp.all(jnp.isfinite(score)))
    # At t = 5, p_t is N(0, I) to 1e-4: the score is -x.
    np.testing.assert_allclose(
        jax.vmap(trained.model.score, (0, None))(x, 5.0), -x, atol=0.02
    )


def test_prior_denoises_held_out_digits(energy_prior, data):
    # Tweedie's denoiser of noised held-out digits at t = 0.1 (s_t ≈ 0.43, more
    # than 3 pixel levels) must beat the data mean and the rescaled noisy image:
    # a prior that learnt nothing digit-shaped (the Gaussian start) does not.
    t = 0.1
    x0 = jnp.asarray(data.test)
    noise = jax.random.normal(jax.random.key(0), x0.shape)
    xt = ou_mean_coef(t) * x0 + jnp.sqrt(ou_variance(t)) * noise
    denoised = jax.vmap(energy_prior.model.denoise, (0, None))(xt, t)
    err = float(jnp.sqrt(jnp.mean((denoised - x0) ** 2)))
    err_mean = float(np.sqrt(np.mean((data.train.mean(0) - data.test) ** 2)))
    err_noisy = float(jnp.sqrt(jnp.mean((xt / ou_mean_coef(t) - x0) ** 2)))
    assert err < 0.5 * err_noisy and err < 0.6 * err_mean, (err, err_noisy, err_mean)
    # The energy's gradient is its score (what exact Metropolis tests rely on).
    grad = jax.grad(energy_prior.model.energy)(xt[0], t)
    np.testing.assert_allclose(
        grad, energy_prior.model.score(xt[0], t), rtol=1e-4, atol=1e-4
    )


def test_digits_prior_reads_the_cache_and_the_environment(
    energy_prior, tmp_path, monkeypatch
):
    def no_training(*args, **kwargs):
        raise AssertionError("a cached prior must load, not train")

    monkeypatch.setattr(dg, "train_digits_prior", no_training)
    path = dg.prior_path("energy", seed=7, cache_dir=tmp_path)
    assert path == tmp_path / "digits_energy_cpu_seed7.eqx"
    monkeypatch.setenv(dg.CACHE_ENV, str(tmp_path / "env"))
    assert dg.prior_path("score", "gpu", seed=3).parent == tmp_path / "env"
    save_trained(energy_prior, path)
    loaded = dg.digits_prior("energy", seed=7, cache_dir=tmp_path)
    x = jnp.linspace(-1.0, 1.0, 64)
    np.testing.assert_array_equal(
        loaded.model.score(x, 0.3), energy_prior.model.score(x, 0.3)
    )


@pytest.mark.parametrize(
    "call, name",
    [
        (lambda: dg.train_digits_prior(jax.random.key(0), kind="mlp"), "kind"),
        (lambda: dg.train_digits_prior(jax.random.key(0), config="tpu"), "config"),
        (lambda: dg.digits_prior(kind="Energy"), "kind"),
        (lambda: dg.digits_prior(config="large"), "config"),
        (lambda: dg.digits_data(num_test=0), "num_test"),
    ],
)
def test_bad_arguments_are_named(call, name):
    with pytest.raises(ValueError, match=rf"^{name} must"):
        call()


def test_configs():
    assert {"cpu", "gpu"} <= set(dg.CONFIGS)
    assert dg.CONFIGS["gpu"]["hidden"] > dg.CONFIGS["cpu"]["hidden"]
    assert dg.CONFIGS["gpu"]["num_steps"] > dg.CONFIGS["cpu"]["num_steps"]


# ---------------------------------------------------------------------------
# Classifier and metrics
# ---------------------------------------------------------------------------


def test_classifier_is_accurate_deterministic_and_consistent(classifier, data):
    # Measured: 0.985 on the default split (0.97-0.985 on seeds 0-2).
    assert classifier.accuracy > 0.95
    np.testing.assert_allclose(
        classifier.accuracy, np.mean(classifier.predict(data.test) == data.test_labels)
    )
    again = dg.digits_classifier(data)
    for a, b in zip(classifier.weights, again.weights):
        np.testing.assert_array_equal(a, b)
    features = classifier.features(data.test)
    assert features.shape == (200, 32)
    # features are the penultimate layer: the logits are one affine map of them.
    np.testing.assert_allclose(
        classifier.logits(data.test),
        features @ classifier.weights[-1] + classifier.biases[-1],
    )
    np.testing.assert_allclose(classifier.probabilities(data.test).sum(1), 1.0)
    assert dg.classifier_confidence(classifier, data.test) > 0.95
    noise = np.random.default_rng(0).uniform(-1, 1, size=(200, 64))
    assert dg.classifier_confidence(classifier, noise) < 0.9


def _exact_moments(rng, mean, cov, n):
    """n points whose sample mean and covariance (ddof 1) are exactly mean, cov."""
    z = rng.normal(size=(n, len(mean)))
    z -= z.mean(0)
    z = z @ np.linalg.inv(np.linalg.cholesky(np.cov(z, rowvar=False))).T
    return mean + z @ np.linalg.cholesky(cov).T


def test_frechet_distance_closed_form():
    from scipy.linalg import sqrtm

    rng = np.random.default_rng(0)
    a = rng.normal(size=(300, 5))
    assert dg.frechet_distance(a, a) == pytest.approx(0.0, abs=1e-9)
    # Two Gaussians with non-commuting covariances: W2² in closed form.
    m1, m2 = np.arange(4.0), np.array([1.0, -1.0, 0.5, 2.0])
    b1, b2 = rng.normal(size=(4, 4)), rng.normal(size=(4, 4))
    s1, s2 = b1 @ b1.T + 0.1 * np.eye(4), b2 @ b2.T + 0.1 * np.eye(4)
    root1 = np.real(sqrtm(s1))
    exact = np.sum((m1 - m2) ** 2) + np.trace(
        s1 + s2 - 2 * np.real(sqrtm(root1 @ s2 @ root1))
    )
    x, y = _exact_moments(rng, m1, s1, 400), _exact_moments(rng, m2, s2, 300)
    assert dg.frechet_distance(x, y) == pytest.approx(exact, rel=1e-8)
    assert dg.frechet_distance(y, x) == pytest.approx(exact, rel=1e-8)
    # Same covariance, shifted means: exactly |shift|².
    assert dg.frechet_distance(x, x + 0.5) == pytest.approx(4 * 0.25, rel=1e-9)
    # A sample from another law is further than a fresh sample from the same one.
    same = dg.frechet_distance(rng.normal(size=(500, 4)), rng.normal(size=(500, 4)))
    shifted = dg.frechet_distance(
        rng.normal(size=(500, 4)), rng.normal(size=(500, 4)) + 0.3
    )
    assert same < 0.1 < shifted
    # Rank-deficient covariances (a dead feature) stay real and finite.
    dead = np.column_stack([a[:, :4], np.zeros(300)])
    assert np.isfinite(dg.frechet_distance(dead, a))
    with pytest.raises(ValueError, match="features_a and features_b"):
        dg.frechet_distance(a, a[:, :3])
    with pytest.raises(ValueError, match="features_b"):
        dg.frechet_distance(a, a[:1])


def test_digit_metrics_separate_real_from_blurred(classifier, data):
    key = jax.random.key(0)
    floor = dg.digit_metrics(data.test, data.train, classifier, key)
    # A blurred stand-in for a bad sampler: real digits averaged with their mean
    # plus noise.
    rng = np.random.default_rng(0)
    bad = 0.5 * data.train[:500] + 0.5 * data.train.mean(0)
    bad = bad + 0.3 * rng.normal(size=bad.shape).astype(np.float32)
    worse = dg.digit_metrics(bad, data.test, classifier, key)
    assert floor["fd"] < 0.5 and floor["pixel_range"] == 0.0
    assert worse["fd"] > 3 * floor["fd"]
    assert worse["confidence"] < floor["confidence"] - 0.05
    assert worse["sliced_w2"] > 2 * floor["sliced_w2"]
    assert worse["pixel_range"] > 0.01
    with pytest.raises(ValueError, match="samples"):
        dg.digit_metrics(data.test[:, :10], data.test, classifier, key)


# ---------------------------------------------------------------------------
# The benchmark script's quick path
# ---------------------------------------------------------------------------


def _load_script():
    return load_benchmark_script("digits_prior.py", "digits_prior_script")


@pytest.mark.slow  # compiles two samplers of the energy network: ~15 s unloaded
def test_benchmark_quick_path_runs(energy_prior, tmp_path):
    script = _load_script()
    result = script.run(
        num_samples=32,
        nfes=(10,),
        methods=("rtk-mala", "dpm-solver++"),
        energy=energy_prior,
        log=lambda *_: None,
    )
    assert [r["method"] for r in result["rows"]] == ["rtk-mala", "dpm-solver++"]
    for row in result["rows"]:
        assert row["nfe"] <= 10
        assert np.isfinite([row["fd"], row["confidence"], row["sliced_w2"]]).all()
    assert result["samples"][("energy", "rtk-mala", 10)].shape == (32, 64)
    table = script.format_table(result)
    assert "held-out vs train (floor)" in table and "| rtk-mala | 10 |" in table
    paths = script.plot(result, str(tmp_path / "fig"))
    assert all(Path(p).stat().st_size > 0 for p in paths)
