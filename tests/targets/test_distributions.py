"""Tests for :mod:`rtk_blackjax.targets.distributions`."""

import re

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist
import pytest
import scipy.stats

from rtk_blackjax.targets import GaussianMixture, gaussian_mixture
from rtk_blackjax.targets.distributions import (
    from_distribution,
    mixture_from_distribution,
)

TIMES = (0.0, 0.3, 1.5)


def _spd(rng, dim, batch=()):
    a = rng.normal(size=batch + (dim, dim))
    return a @ np.swapaxes(a, -1, -2) / dim + 0.3 * np.eye(dim)


def _f32(x):
    return jnp.asarray(np.asarray(x, dtype=np.float32))


def _make_cases():
    # NumPyro validates arguments eagerly by default: slow, and not under test here.
    with numpyro.validation_enabled(False):
        return _build_cases()


def _build_cases():
    rng = np.random.default_rng(0)
    c3 = _spd(rng, 3)
    cases = {
        "normal_scalar": dist.Normal(0.3, 1.7),
        "normal_batch_broadcast": dist.Normal(
            _f32(rng.normal(size=(3,))), _f32(rng.uniform(0.5, 2.0, size=(2, 1)))
        ),
        "normal_expand_to_event": dist.Normal(0.5, 0.8).expand([4]).to_event(1),
        "independent_partial": dist.Independent(
            dist.Normal(_f32(rng.normal(size=(2, 3))), _f32(rng.uniform(0.3, 2, 3))),
            1,
        ),
        "independent_2": dist.Independent(
            dist.Normal(_f32(rng.normal(size=(2, 3))), 0.7), 2
        ),
        "mvn_covariance": dist.MultivariateNormal(
            _f32(rng.normal(size=3)), covariance_matrix=_f32(c3)
        ),
        "mvn_precision": dist.MultivariateNormal(
            _f32(rng.normal(size=3)), precision_matrix=_f32(np.linalg.inv(c3))
        ),
        "lowrank_mvn": dist.LowRankMultivariateNormal(
            _f32(rng.normal(size=3)),
            _f32(rng.normal(size=(3, 2))),
            _f32(rng.uniform(0.3, 1.0, 3)),
        ),
        "msf_mvn_probs": dist.MixtureSameFamily(
            dist.Categorical(probs=_f32([0.2, 0.5, 0.3])),
            dist.MultivariateNormal(
                _f32(2 * rng.normal(size=(3, 2))), _f32(_spd(rng, 2, (3,)))
            ),
        ),
        "msf_mvn_scale_tril_shared": dist.MixtureSameFamily(
            dist.Categorical(logits=_f32([0.1, -0.4])),
            dist.MultivariateNormal(
                _f32([[-1.0, 0.5, 0.0], [1.0, 0.0, 0.3]]),
                scale_tril=_f32(np.linalg.cholesky(c3)),
            ),
        ),
        "msf_normal_1d_logits": dist.MixtureSameFamily(
            dist.Categorical(logits=_f32([0.3, -1.0, 0.2])),
            dist.Normal(_f32([-2.0, 0.0, 1.5]), _f32([0.5, 1.0, 0.3])),
        ),
        "msf_independent_normal": dist.MixtureSameFamily(
            dist.Categorical(probs=_f32([0.6, 0.4])),
            dist.Normal(
                _f32(rng.normal(size=(2, 3))), _f32(rng.uniform(0.3, 1.5, (2, 3)))
            ).to_event(1),
        ),
        "mixture_general_mixed": dist.MixtureGeneral(
            dist.Categorical(probs=_f32([0.3, 0.3, 0.4])),
            [
                dist.MultivariateNormal(_f32([1.0, -1.0]), _f32(_spd(rng, 2))),
                dist.Normal(_f32([-1.0, 0.5]), _f32([0.4, 0.9])).to_event(1),
                dist.MultivariateNormal(
                    _f32([0.0, 2.0]), scale_tril=_f32([[0.8, 0.0], [0.3, 0.5]])
                ),
            ],
            support=dist.constraints.real_vector,
        ),
        "mixture_general_1d": dist.MixtureGeneral(
            dist.Categorical(probs=_f32([0.7, 0.3])),
            [dist.Normal(-1.0, 0.5), dist.Normal(2.0, 1.2)],
        ),
    }
    return cases


CASES = _make_cases()


def _shape(d):
    return tuple(d.batch_shape) + tuple(d.event_shape)


def _ref_logdensity(d):
    """``log p_0`` of flattened points, straight from NumPyro (summed over batch)."""
    return lambda x: jnp.sum(d.log_prob(x.reshape(_shape(d))))


def _points(dim, seed, num=4):
    return _f32(1.5 * np.random.default_rng(seed).normal(size=(num, dim)))


def _diffused(d, t):
    """The analytic OU-diffused law ``p_t`` as a NumPyro distribution (reference).

    ``x_t = a x_0 + s z``: ``N(m, C) -> N(a m, a^2 C + s^2 I)`` componentwise, with
    ``a = exp(-t)`` and ``s^2 = 1 - exp(-2 t)``.
    """
    a, s2 = np.exp(-t), 1.0 - np.exp(-2.0 * t)
    if isinstance(d, dist.Normal):
        return dist.Normal(a * d.loc, jnp.sqrt(a**2 * d.scale**2 + s2))
    if isinstance(d, dist.MultivariateNormal):
        eye = jnp.eye(d.event_shape[-1])
        return dist.MultivariateNormal(a * d.loc, a**2 * d.covariance_matrix + s2 * eye)
    if isinstance(d, dist.LowRankMultivariateNormal):
        return dist.LowRankMultivariateNormal(
            a * d.loc, a * d.cov_factor, a**2 * d.cov_diag + s2
        )
    if isinstance(d, dist.Independent):
        return dist.Independent(_diffused(d.base_dist, t), d.reinterpreted_batch_ndims)
    if isinstance(d, dist.ExpandedDistribution):
        return _diffused(d.base_dist, t).expand(d.batch_shape)
    if isinstance(d, dist.MixtureSameFamily):
        return dist.MixtureSameFamily(
            d.mixing_distribution, _diffused(d.component_distribution, t)
        )
    if isinstance(d, dist.MixtureGeneral):
        return dist.MixtureGeneral(
            d.mixing_distribution,
            [_diffused(c, t) for c in d.component_distributions],
            support=d.support,
        )
    raise AssertionError(type(d))


@pytest.mark.parametrize("name", sorted(CASES))
def test_matches_numpyro_log_prob_and_analytic_diffusion(name):
    """``t = 0``: NumPyro's own ``log_prob`` and its gradient; ``t > 0``: the analytic
    diffused law built independently with NumPyro (see :func:`_diffused`)."""
    d = CASES[name]
    target = from_distribution(d)
    dim = int(np.prod(_shape(d), dtype=int))
    assert target.mixture.dim == dim
    x = _points(dim, seed=1)

    @jax.jit
    @numpyro.validation_enabled(False)
    def compare(x):
        out = []
        for t in TIMES:
            ref = _ref_logdensity(d if t == 0.0 else _diffused(d, t))
            out.append(
                (
                    jax.vmap(target.logdensity, (0, None))(x, t),
                    jax.vmap(ref)(x),
                    jax.vmap(target.score, (0, None))(x, t),
                    jax.vmap(jax.grad(ref))(x),
                )
            )
        return out

    for t, (logp, ref_logp, score, ref_score) in zip(TIMES, compare(x), strict=True):
        assert score.shape == x.shape
        np.testing.assert_allclose(logp, ref_logp, rtol=1e-5, atol=1e-4, err_msg=t)
        np.testing.assert_allclose(score, ref_score, rtol=1e-4, atol=1e-4, err_msg=t)


def test_mvn_explicit_formula():
    """``MVN(m, C)`` diffuses to ``N(a m, a^2 C + s^2 I)`` (written out by hand)."""
    rng = np.random.default_rng(3)
    mean, cov = rng.normal(size=4), _spd(rng, 4)
    target = from_distribution(dist.MultivariateNormal(_f32(mean), _f32(cov)))
    x = _f32(rng.normal(size=(3, 4)))
    times = (0.0, 0.2, 1.0, 3.0)
    at_points = jax.vmap(lambda y, t: (target.logdensity(y, t), target.score(y, t)))
    logp, score = jax.jit(jax.vmap(at_points, (None, 0)))(
        x, jnp.repeat(jnp.array(times)[:, None], 3, axis=1)
    )
    for i, t in enumerate(times):
        a, s2 = np.exp(-t), 1.0 - np.exp(-2.0 * t)
        cov_t = a**2 * cov + s2 * np.eye(4)
        ref = scipy.stats.multivariate_normal(a * mean, cov_t)
        np.testing.assert_allclose(logp[i], ref.logpdf(x), rtol=1e-5, atol=1e-4)
        expected = -np.linalg.solve(cov_t, (x - a * mean).T).T
        np.testing.assert_allclose(score[i], expected, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("kind", ["full", "diagonal", "one_dim"])
def test_mixture_same_family_equals_raw_arrays(kind):
    rng = np.random.default_rng(4)
    weights = np.array([0.1, 0.25, 0.4, 0.25])
    dim = 1 if kind == "one_dim" else 3
    means = rng.normal(size=(4, dim))
    if kind == "full":
        covs = _spd(rng, dim, (4,))
        component = dist.MultivariateNormal(_f32(means), _f32(covs))
    elif kind == "diagonal":
        covs = rng.uniform(0.2, 1.5, size=(4, dim))
        component = dist.Normal(_f32(means), _f32(np.sqrt(covs))).to_event(1)
    else:
        covs = rng.uniform(0.2, 1.5, size=(4,))
        component = dist.Normal(_f32(means[:, 0]), _f32(np.sqrt(covs)))
    mixture = dist.MixtureSameFamily(dist.Categorical(probs=_f32(weights)), component)

    converted = from_distribution(mixture)
    raw = gaussian_mixture(means, covs, weights)
    np.testing.assert_allclose(converted.mixture.weights, raw.mixture.weights, 1e-6)
    np.testing.assert_allclose(converted.mixture.means, raw.mixture.means, 1e-6)
    x = _f32(rng.normal(size=(4, dim)) * 1.5)
    times = jnp.array([0.0, 0.1, 0.7, 2.5])

    def evaluate(target):
        def at(y, t):
            return target.logdensity(y, t), target.score(y, t)

        return jax.jit(jax.vmap(jax.vmap(at, (0, None)), (None, 0)))(x, times)

    for got, want in zip(evaluate(converted), evaluate(raw), strict=True):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


def test_parameter_layout():
    normal = mixture_from_distribution(dist.Normal(jnp.arange(6.0).reshape(2, 3), 2.0))
    assert isinstance(normal, GaussianMixture)
    assert normal.cov_eigvecs is None  # diagonal stays diagonal
    np.testing.assert_allclose(normal.means, np.arange(6.0)[None])
    np.testing.assert_allclose(normal.cov_eigvals, np.full((1, 6), 4.0))
    np.testing.assert_allclose(normal.weights, [1.0])

    scalar = mixture_from_distribution(dist.Normal(1.0, 3.0))
    assert scalar.means.shape == (1, 1)
    np.testing.assert_allclose(scalar.cov_eigvals, [[9.0]], rtol=1e-6)

    mvn = mixture_from_distribution(dist.MultivariateNormal(jnp.zeros(2), jnp.eye(2)))
    assert mvn.cov_eigvecs is not None and mvn.cov_eigvecs.shape == (1, 2, 2)


def test_logits_and_probs_give_same_weights_and_zero_weights_dropped():
    probs = np.array([0.2, 0.0, 0.8])
    component = dist.Normal(_f32([-1.0, 0.0, 1.0]), 0.5)
    with_zero = mixture_from_distribution(
        dist.MixtureSameFamily(dist.Categorical(probs=_f32(probs)), component)
    )
    assert with_zero.num_components == 2
    np.testing.assert_allclose(with_zero.weights, [0.2, 0.8], rtol=1e-6)
    np.testing.assert_allclose(with_zero.means[:, 0], [-1.0, 1.0])

    logits = np.log([0.2, 0.5, 0.3]) + 7.0
    by_logits = mixture_from_distribution(
        dist.MixtureSameFamily(dist.Categorical(logits=_f32(logits)), component)
    )
    np.testing.assert_allclose(by_logits.weights, [0.2, 0.5, 0.3], rtol=1e-5)


def test_invalid_parameters_raise_value_error():
    with pytest.raises(ValueError, match="positive"):
        from_distribution(
            dist.Normal(jnp.zeros(2), jnp.array([1.0, 0.0]), validate_args=False)
        )


_UNSUPPORTED = [
    ("StudentT", lambda: dist.StudentT(3.0)),
    ("Gamma", lambda: dist.Gamma(2.0, 1.0)),
    ("LogNormal", lambda: dist.LogNormal(0.0, 1.0)),
    ("StudentT", lambda: dist.StudentT(3.0, jnp.zeros(3)).to_event(1)),
    ("CategoricalProbs", lambda: dist.Categorical(probs=jnp.ones(3) / 3)),
    (
        "MultivariateNormal",
        lambda: dist.MultivariateNormal(jnp.zeros((2, 3)), jnp.eye(3)),
    ),
    (
        "MultivariateNormal",
        lambda: dist.MultivariateNormal(jnp.zeros((2, 3)), jnp.eye(3)).to_event(1),
    ),
    (
        "StudentT",
        lambda: dist.MixtureSameFamily(
            dist.Categorical(probs=jnp.ones(3) / 3), dist.StudentT(3.0, jnp.zeros(3))
        ),
    ),
    (
        "Laplace",
        lambda: dist.MixtureGeneral(
            dist.Categorical(probs=jnp.ones(2) / 2),
            [dist.Normal(0.0, 1.0), dist.Laplace(0.0, 1.0)],
        ),
    ),
    (
        "MixtureSameFamily",
        lambda: dist.MixtureSameFamily(
            dist.Categorical(probs=jnp.ones(3) / 3),
            dist.MultivariateNormal(jnp.zeros((2, 3, 4)), jnp.eye(4)),
        ),
    ),
]


@pytest.mark.parametrize(
    "name, make",
    _UNSUPPORTED,
    ids=[f"{n}-{i}" for i, (n, _) in enumerate(_UNSUPPORTED)],
)
def test_unsupported_distribution_raises_type_error(name, make):
    with pytest.raises(TypeError, match=name) as info:
        from_distribution(make())
    message = str(info.value)
    for supported in ("Normal", "MultivariateNormal", "MixtureSameFamily"):
        assert supported in message


@pytest.mark.parametrize("obj", [1.0, "Normal", None, np.zeros(3), lambda x: x])
def test_non_distribution_raises_type_error(obj):
    with pytest.raises(TypeError, match=re.escape(type(obj).__name__)):
        from_distribution(obj)
    with pytest.raises(TypeError, match="Distribution"):
        mixture_from_distribution(obj)
