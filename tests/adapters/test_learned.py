"""Learned scores: DSM training on a known Gaussian, sampling from the learned score.

Score networks (``train_score``) and energy networks (``train_energy``): the second
half of the file checks the energy parametrisation.
"""

import json

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist
import pytest

import rtk_blackjax as rb
from rtk_blackjax.adapters.learned import (
    EnergyNetwork,
    ScoreNetwork,
    TrainedScore,
    dsm_loss,
    learned_target,
    load_trained,
    make_energy_network,
    make_score_network,
    plot_loss,
    prior_predictive_samples,
    save_trained,
    train_energy,
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
    with pytest.raises(TypeError, match="TrainedScore, a ScoreNetwork or an Energy"):
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


# --------------------------------------------------------------------------
# Energy networks: E(x, t) = log p_t(x) + c(t), score by autodiff
# --------------------------------------------------------------------------


def _with_random_last_layer(net, key, scale=0.3):
    """``net`` with a random (non-zero) last layer: a non-trivial correction."""
    last = net.mlp.layers[-1]
    k_w, k_b = jax.random.split(key)
    return eqx.tree_at(
        lambda n: (n.mlp.layers[-1].weight, n.mlp.layers[-1].bias),
        net,
        (
            scale * jax.random.normal(k_w, last.weight.shape),
            scale * jax.random.normal(k_b, last.bias.shape),
        ),
    )


def _anisotropic_data(n=256, dim=3):
    scales = jnp.array([2.0, 0.5, 1.0])[:dim]
    return jax.random.normal(jax.random.key(0), (n, dim)) * scales + 1.0


def test_energy_network_score_is_the_gradient_of_its_energy():
    data = _anisotropic_data()
    net = make_energy_network(jax.random.key(1), data, hidden=16, depth=2, t_min=1e-3)
    net = _with_random_last_layer(net, jax.random.key(2))
    gaussian = rb.targets.gaussian(data.mean(0), data.var(0))
    target = learned_target(net)
    x = jnp.array([0.3, -1.2, 2.0])
    direction = jnp.array([0.6, -0.8, 0.0])
    h = 1e-2

    @jax.jit
    def at(t):  # one compilation for every t
        return dict(
            grad=jax.grad(net.energy)(x, t),
            score=net.score(x, t),
            target_score=target.score(x, t),
            call=net(x, t),
            energy=net.energy(x, t),
            gaussian=gaussian.score(x, t),
            plus=net.energy(x + h * direction, t),
            minus=net.energy(x - h * direction, t),
            denoised=net.denoise(x, t),
        )

    for t in (0.0, 1e-3, 0.05, 0.7, 4.0):
        q = jax.tree.map(np.asarray, at(t))
        np.testing.assert_allclose(q["score"], q["grad"], rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(q["target_score"], q["grad"], rtol=1e-5, atol=1e-6)
        assert q["call"].shape == () and q["call"] == q["energy"]
        # The network's correction is really there (not only the Gaussian part) ...
        correction = q["grad"] - q["gaussian"]
        assert np.linalg.norm(correction) > 0.01 * np.linalg.norm(q["grad"])
        # ... and the energy itself has that slope: a central difference along
        # `direction` (float32, h = 1e-2: error ~ h² x third derivative plus
        # 1e-7 |E| / h of rounding).
        slope = (q["plus"] - q["minus"]) / (2 * h)
        np.testing.assert_allclose(slope, q["grad"] @ direction, rtol=2e-2, atol=2e-2)
        # Tweedie consistency of its denoiser with its score (t clamped at t_min)
        tc = max(t, 1e-3)
        a, s2 = np.exp(-tc), 1 - np.exp(-2 * tc)
        np.testing.assert_allclose(
            q["denoised"], (x + s2 * q["score"]) / a, rtol=1e-4, atol=1e-4
        )


def test_untrained_energy_network_is_the_fitted_diagonal_gaussian():
    data = jax.random.normal(jax.random.key(0), (4000, 2)) * jnp.array([2.0, 0.5])
    energy_net = make_energy_network(jax.random.key(1), data, hidden=8, depth=1)
    score_net = make_score_network(jax.random.key(1), data, hidden=8, depth=1)
    exact = rb.targets.gaussian(data.mean(0), data.var(0))
    x = jnp.array([0.4, -0.2])

    @jax.jit
    def at(t):
        return (
            energy_net.score(x, t),
            score_net(x, t),
            exact.score(x, t),
            energy_net.energy(x, t),
            exact.logdensity(x, t),
        )

    for t in (1e-3, 0.3, 3.0):
        energy_score, score, exact_score, energy, exact_logdensity = at(t)
        np.testing.assert_allclose(energy_score, exact_score, rtol=1e-4, atol=1e-5)
        np.testing.assert_allclose(energy_score, score, rtol=1e-5, atol=1e-6)
        # the energy is the Gaussian's *normalised* log density
        np.testing.assert_allclose(energy, exact_logdensity, rtol=1e-5)
    # One DSM loss on one scale: at initialisation both networks' corrections are
    # zero and their losses on the same batch are equal.
    x0 = data[:64]
    t = jnp.exp(jax.random.uniform(jax.random.key(2), (64,), minval=-7.0, maxval=1.6))
    noise = jax.random.normal(jax.random.key(3), x0.shape)
    loss = eqx.filter_jit(dsm_loss)
    np.testing.assert_allclose(
        loss(energy_net.mlp, energy_net, x0, t, noise),
        loss(score_net.mlp, score_net, x0, t, noise),
        rtol=1e-6,
    )


def test_learned_target_of_an_energy_network_has_its_energies():
    data = _anisotropic_data()
    net = make_energy_network(jax.random.key(1), data, hidden=16, depth=2)
    net = _with_random_last_layer(net, jax.random.key(2))
    target = learned_target(net)
    assert target.access == "energy" and target.logdensity is not None
    assert learned_target(TrainedScore(net, np.ones(3), {})).access == "energy"
    x1, x2 = jnp.array([0.3, -1.2, 2.0]), jnp.array([1.5, 0.2, -0.4])
    for t in (1e-3, 0.2, 2.0):
        np.testing.assert_allclose(
            target.logdensity(x1, t) - target.logdensity(x2, t),
            net.energy(x1, t) - net.energy(x2, t),
            rtol=1e-6,
        )
    score_target = learned_target(make_score_network(jax.random.key(1), data))
    assert score_target.access == "score" and score_target.logdensity is None
    # both carry the training data's per-coordinate variance (the prior's scale)
    data_variance = float(np.mean(np.var(np.asarray(data), axis=0)))
    for tgt in (target, score_target):
        np.testing.assert_allclose(tgt.variance, data_variance, rtol=1e-5)
        assert tgt.t_min > 0  # the smallest training time


# A correlated 2-D Gaussian (correlation 0.6): the diagonal-Gaussian start misses
# the off-diagonal covariance, so passing needs training.
E_MEAN = np.array([1.0, -1.0])
E_COV = np.array([[1.0, 0.42], [0.42, 0.49]])
E_DRAWS = 2000


@pytest.fixture(scope="module")
def energy_data():
    return jax.random.multivariate_normal(jax.random.key(10), E_MEAN, E_COV, (8000,))


@pytest.fixture(scope="module")
def trained_energy(energy_data) -> TrainedScore:
    return train_energy(
        jax.random.key(11),
        energy_data,
        num_steps=600,
        batch_size=256,
        hidden=32,
        depth=2,
        t_min=1e-3,
        chunk_size=600,
        progress_bar=False,
    )


def _prior_draws(network) -> np.ndarray:
    """Prior draws through ``learned_target``: energy-based RTK-MALA (exact MH)."""
    target = learned_target(network)
    grid = rb.geometric_grid(20, horizon=5.0, t_min=1e-3)
    algorithm = rb.rtk(target, grid, rb.mala_inner(), 1)
    return np.asarray(rb.sample(jax.random.key(12), algorithm, E_DRAWS, dim=2).samples)


def _moment_z(x: np.ndarray, data: np.ndarray) -> dict:
    """Errors of the draws' mean and covariance vs the data's, in Monte Carlo SEs.

    The SE of each statistic is that of ``len(x)`` independent draws plus that of
    the data set's own statistic (the network was fitted to one finite sample);
    Gaussian formulas: var(mean_i) = C_ii / n, var(C_ij) = (C_ii C_jj + C_ij²) / n.
    """
    cov = np.cov(data.T)
    scale = 1.0 / len(x) + 1.0 / len(data)
    mean_se = np.sqrt(np.diag(cov) * scale)
    cov_se = np.sqrt((np.outer(np.diag(cov), np.diag(cov)) + cov**2) * scale)
    return {
        "mean": np.abs(x.mean(0) - data.mean(0)) / mean_se,
        "cov": np.abs(np.cov(x.T) - cov) / cov_se,
    }


# Tolerance: 4 Monte Carlo SEs (z-scores from _moment_z; a false alarm is a
# < 1e-4 event per statistic for unbiased draws), which also covers the learned
# energy's own bias. Measured after 600 steps: worst z 1.2 (mean) and 1.0
# (covariance); the untrained diagonal start is at z = 21 on the covariance, the
# wrong-mean control below at z = 20 on the mean.
Z_TOLERANCE = 4.0
# Relative error of energy differences at one t (below). Measured: 0.092 / 0.022
# at t = 0.01 / 0.3 after training, 0.56 / 0.27 for the untrained diagonal start.
ENERGY_DIFF_TOLERANCE = {0.01: 0.2, 0.3: 0.1}


@pytest.mark.slow
def test_trained_energy_network_recovers_the_data_moments(trained_energy, energy_data):
    data = np.asarray(energy_data)
    assert trained_energy.config["network"] == "energy"
    assert (
        trained_energy.loss_history[-60:].mean()
        < trained_energy.loss_history[:20].mean()
    )
    z = _moment_z(_prior_draws(trained_energy.model), data)
    assert np.all(z["mean"] < Z_TOLERANCE), z
    assert np.all(z["cov"] < Z_TOLERANCE), z
    # Energy differences at one t are log-density differences of p_t: against the
    # exact Gaussian's, between consecutive pairs of 400 exact draws of p_t.
    untrained = make_energy_network(jax.random.key(11), energy_data, hidden=32, depth=2)
    for t, tol in ENERGY_DIFF_TOLERANCE.items():
        assert _energy_difference_error(trained_energy.model, data, t) < tol, t
        # power check: the diagonal-Gaussian start fails it
        assert _energy_difference_error(untrained, data, t) > 2 * tol, t


def _energy_difference_error(network, data: np.ndarray, t: float) -> float:
    exact = rb.targets.gaussian(E_MEAN, E_COV)
    a, s = np.exp(-t), np.sqrt(1 - np.exp(-2 * t))
    noise = np.asarray(jax.random.normal(jax.random.key(13), (400, 2)))
    xt = a * data[:400] + s * noise
    learned = np.diff(np.asarray(jax.vmap(network.energy, (0, None))(xt, t)))
    true = np.diff(np.asarray(jax.vmap(exact.logdensity, (0, None))(xt, t)))
    return float(np.sqrt(np.mean((learned - true) ** 2) / np.mean(true**2)))


@pytest.mark.slow
def test_untrained_energy_network_with_a_wrong_mean_fails_the_moment_check(
    energy_data,
):
    # Negative control of the test above: the same draws and check, on an
    # untrained network whose Gaussian part is centred half a standard deviation
    # off. The mean check must catch it (and the diagonal start also misses the
    # covariance).
    data = np.asarray(energy_data)
    net = make_energy_network(jax.random.key(11), energy_data, hidden=32, depth=2)
    wrong = eqx.tree_at(lambda n: n.data_mean, net, net.data_mean + 0.5 * net.data_std)
    z = _moment_z(_prior_draws(wrong), data)
    assert np.all(z["mean"] > Z_TOLERANCE), z
    assert z["cov"][0, 1] > Z_TOLERANCE, z


@pytest.mark.parametrize("kind", ["score", "energy"])
def test_save_load_roundtrip_of_both_kinds(kind, tmp_path):
    data = _anisotropic_data(n=64, dim=2)
    trainer = train_score if kind == "score" else train_energy
    trained = trainer(
        jax.random.key(1),
        data,
        num_steps=10,
        batch_size=32,
        hidden=8,
        depth=2,
        num_frequencies=3,
        t_min=1e-3,
        chunk_size=10,
        progress_bar=False,
    )
    cls = ScoreNetwork if kind == "score" else EnergyNetwork
    assert type(trained.model) is cls and trained.config["network"] == kind
    path = tmp_path / "net.eqx"
    save_trained(trained, path)
    loaded = load_trained(path)
    assert type(loaded.model) is cls and loaded.config == trained.config
    np.testing.assert_allclose(loaded.loss_history, trained.loss_history, rtol=1e-6)
    # a network made by hand, with no training config: the header's architecture
    # comes from the model itself
    make = make_score_network if kind == "score" else make_energy_network
    net = _with_random_last_layer(
        make(jax.random.key(3), data, hidden=5, depth=1, num_frequencies=2, t_min=0.01),
        jax.random.key(4),
    )
    save_trained(TrainedScore(net, np.ones(3), {}), tmp_path / "hand.eqx")
    by_hand = load_trained(tmp_path / "hand.eqx")
    assert type(by_hand.model) is cls and by_hand.config == {}
    x = jnp.array([0.3, -0.7])
    times = jnp.array([0.0, 0.05, 2.0])

    @eqx.filter_jit
    def outputs(model):
        score = jax.vmap(model.score, (None, 0))(x, times)
        if isinstance(model, EnergyNetwork):
            return score, jax.vmap(model.energy, (None, 0))(x, times)
        return score

    for original, copy in ((trained.model, loaded.model), (net, by_hand.model)):
        assert copy.t_min == original.t_min
        for got, want in zip(
            jax.tree.leaves(outputs(copy)), jax.tree.leaves(outputs(original))
        ):
            np.testing.assert_array_equal(got, want)


def test_files_without_an_architecture_header_load_as_score_networks(tmp_path):
    # Files written before the header recorded the network's kind: a score network
    # described by its training config.
    data = _anisotropic_data(n=64, dim=2)
    net = make_score_network(jax.random.key(3), data, hidden=5, depth=1, t_min=0.01)
    net = _with_random_last_layer(net, jax.random.key(4))
    config = dict(dim=2, hidden=5, depth=1, num_frequencies=8, t_min=0.01)
    path = tmp_path / "old.eqx"
    with open(path, "wb") as f:
        f.write((json.dumps({**config, "num_losses": 2}) + "\n").encode())
        eqx.tree_serialise_leaves(f, (net, jnp.zeros(2, jnp.float32)))
    loaded = load_trained(path)
    assert type(loaded.model) is ScoreNetwork and loaded.config == config
    x = jnp.array([0.3, -0.7])
    np.testing.assert_array_equal(loaded.model(x, 0.1), net(x, 0.1))


@pytest.mark.parametrize(
    "samples, kwargs, error, match",
    [
        (np.zeros((100,)), {}, ValueError, "shape \\(n, dim\\)"),
        (np.zeros((4, 2)), {}, ValueError, "at least 16"),
        (np.full((32, 2), np.nan), {}, ValueError, "NaN or inf"),
        (np.zeros((32, 2)), {"num_steps": 0}, ValueError, "num_steps"),
        (np.zeros((32, 2)), {"learning_rate": 0.0}, ValueError, "learning_rate"),
        (np.zeros((32, 2)), {"t_min": 1.0, "t_max": 0.5}, ValueError, "t_max"),
        (np.zeros((32, 2)), {"ema": 1.0}, ValueError, "ema"),
        (np.zeros((32, 2)), {"hidden": 0}, ValueError, "hidden"),
        (np.zeros((32, 2)), {"depth": 1.5}, TypeError, "depth"),
        (np.zeros((32, 2)), {"progress_bar": 1}, TypeError, "progress_bar"),
    ],
)
def test_train_energy_rejects_bad_input(samples, kwargs, error, match):
    with pytest.raises(error, match=match):
        train_energy(jax.random.key(0), samples, progress_bar=False, **kwargs)


def test_energy_network_bad_inputs_are_named():
    data = np.ones((32, 2))
    with pytest.raises(TypeError, match="rng_key"):
        make_energy_network(0, data)
    with pytest.raises(TypeError, match="num_frequencies"):
        make_energy_network(jax.random.key(0), data, num_frequencies=2.0)
    with pytest.raises(ValueError, match="t_min"):
        make_energy_network(jax.random.key(0), data, t_min=0.0)
    net = make_energy_network(jax.random.key(0), data, hidden=4)
    assert isinstance(net, EnergyNetwork) and not isinstance(net, ScoreNetwork)
    for method in (net, net.energy, net.score, net.denoise):
        with pytest.raises(ValueError, match="shape \\(2,\\)"):
            method(jnp.zeros(3), 0.1)
    with pytest.raises(TypeError, match="TrainedScore, a ScoreNetwork or an Energy"):
        learned_target("net")
    with pytest.raises(TypeError, match="trained.model must be"):
        save_trained(TrainedScore(lambda x, t: x, np.ones(2), {}), "unused.eqx")
