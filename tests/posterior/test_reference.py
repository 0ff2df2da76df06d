"""Exact references for nonlinear likelihoods with Gaussian-mixture priors.

Every random test is seeded. Tolerances come from the Monte Carlo standard errors
the reference reports itself (``component_weights_se``, ``log_evidence_se``, ESS):
4 standard errors (a two-sided 1e-4 event per comparison if the SE is right) plus a
small floor for float32 round-off and for the error of the independent answer
(closed form, or brute-force quadrature).
"""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import integrate

from rtk_blackjax.posterior import gmm
from rtk_blackjax.posterior.reference import (
    LIKELIHOODS,
    SigmaMarginal,
    assign_components,
    component_tv,
    ks_distance,
    linear_gaussian_likelihood,
    make_nonlinear_problem,
    phase_retrieval_likelihood,
    poisson_likelihood,
    reference_posterior,
    sigma_marginal_linear_gaussian,
    student_t_likelihood,
)
from rtk_blackjax.targets.analytic import mixture_from_arrays

# One configuration for every reference of this file, so that they share compilations.
FAST = dict(num_importance=4096, num_adapt=1024, num_rounds=6)
NUM_SAMPLES = 4000
NUM_SE = 4.0


def _half_normal(s):
    return 0.5 * math.log(2.0 / math.pi) - 0.5 * np.asarray(s) ** 2


def _assert_weights_match(weights, se, exact, *, floor=1e-3):
    """``|w - exact| <= 4 SE + floor`` for every component (the check itself)."""
    weights, se, exact = (np.asarray(a, np.float64) for a in (weights, se, exact))
    err = np.abs(weights - exact)
    bad = err > NUM_SE * se + floor
    assert not bad.any(), (
        f"component weights off by {err[bad]} (SE {se[bad]}), exact {exact[bad]}"
    )


def _assert_moments_match(samples, mean, var, ess, extra=0.0):
    """Sample mean/variance per coordinate against exact ones.

    The draws are resampled from importance samples: the error of their mean is
    about ``sd * sqrt(1/n + 1/ESS)``; that of the variance uses the fourth central
    moment of the draws. ``extra`` adds the spread due to component-weight errors.
    """
    x = np.asarray(samples, np.float64)
    n_eff = 1.0 / (1.0 / x.shape[0] + 1.0 / float(ess))
    sd = np.sqrt(var)
    assert np.all(np.abs(x.mean(0) - mean) <= NUM_SE * sd / np.sqrt(n_eff) + extra)
    centred = x - x.mean(0)
    m4 = np.mean(centred**4, 0)
    var_se = np.sqrt(np.maximum(m4 - x.var(0) ** 2, 0.0) / n_eff)
    assert np.all(np.abs(x.var(0) - var) <= NUM_SE * var_se + 2 * extra * sd + 1e-3)


# --------------------------------------------------------------------------------------
# Linear-Gaussian likelihood: the closed form of gmm.exact_posterior
# --------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def linear_case():
    problem = gmm.make_problem(4, dim=4, obs_dim=2, sigma=0.5)
    loglik = linear_gaussian_likelihood(problem.y, problem.sigma)
    ref = reference_posterior(
        jax.random.key(0),
        problem.prior,
        problem.obs_matrix,
        loglik,
        num_samples=NUM_SAMPLES,
        **FAST,
    )
    return problem, loglik, ref


def test_linear_gaussian_matches_closed_form(linear_case):
    problem, _, ref = linear_case
    post = problem.posterior
    assert np.sum(np.asarray(post.weights) > 0.02) >= 2  # a multimodal posterior
    _assert_weights_match(ref.component_weights, ref.component_weights_se, post.weights)
    assert abs(float(ref.log_evidence - post.log_evidence)) <= (
        NUM_SE * float(ref.log_evidence_se) + 2e-3
    )
    # tempering reached the posterior in every component that matters
    assert np.all(np.asarray(ref.beta)[np.asarray(post.weights) > 1e-4] == 1.0)
    # Closed-form mixture moments: S_i = v I - gain_i A v (diagonal only).
    w = np.asarray(post.weights, np.float64)
    means = np.asarray(post.means, np.float64)
    v = np.asarray(post.prior_variances, np.float64)
    gain, A = np.asarray(post.gain, np.float64), np.asarray(post.obs_matrix, np.float64)
    comp_var = v[:, None] - v[:, None] * np.einsum("cdk,kd->cd", gain, A)
    mean = w @ means
    var = w @ (comp_var + means**2) - mean**2
    ess = np.min(np.asarray(ref.ess)[w > 0.02])
    spread = np.sum(
        NUM_SE * np.asarray(ref.component_weights_se)[:, None] * np.abs(means - mean), 0
    )
    _assert_moments_match(ref.samples, mean, var, ess, extra=spread)


def test_reference_is_deterministic_and_labels_components(linear_case):
    problem, loglik, ref = linear_case
    again = reference_posterior(
        jax.random.key(0),
        problem.prior,
        problem.obs_matrix,
        loglik,
        num_samples=NUM_SAMPLES,
        **FAST,
    )
    np.testing.assert_array_equal(np.asarray(ref.samples), np.asarray(again.samples))
    np.testing.assert_array_equal(
        np.asarray(ref.component_weights), np.asarray(again.component_weights)
    )
    # every draw lies in the component it is labelled with
    labels = gmm.assign_modes(problem.posterior, ref.samples)
    assert np.mean(np.asarray(labels) == np.asarray(ref.components)) > 0.99
    prior_labels = assign_components(problem.prior, ref.samples)
    assert np.mean(np.asarray(prior_labels) == np.asarray(ref.components)) > 0.99
    # exact posterior draws score a small mode TV against the reference
    exact = gmm.sample_posterior(jax.random.key(5), problem.posterior, NUM_SAMPLES)
    floor = 0.5 * float(np.sum(ref.component_weights_se))
    assert component_tv(problem.prior, ref, exact) < 0.04 + NUM_SE * floor
    # and prior draws a large one
    from rtk_blackjax.targets.analytic import sample_mixture

    prior_draws = sample_mixture(jax.random.key(6), problem.prior, NUM_SAMPLES)
    assert component_tv(problem.prior, ref, prior_draws) > 0.5
    with pytest.raises(TypeError, match="reference"):
        component_tv(problem.prior, problem.posterior.means, exact)
    with pytest.raises(ValueError, match="x"):
        component_tv(problem.prior, ref, exact.at[0, 0].set(jnp.nan))
    with pytest.raises(ValueError, match="x"):
        assign_components(problem.prior, exact[:, :2])
    assert ref.importance_z.shape == (25, FAST["num_importance"], 2)
    summary = ref.summary()
    assert summary["num_importance"] == FAST["num_importance"]
    assert summary["min_ess"] > 0.3 * FAST["num_importance"]


# --------------------------------------------------------------------------------------
# Phase retrieval: brute-force quadrature over z (d_y = 2), full covariances
# --------------------------------------------------------------------------------------


def _phase_prior():
    rng = np.random.default_rng(3)
    means = np.array([[1.5, 0.0, 0.0], [-1.0, 1.0, 0.5], [0.0, -1.5, 1.0]])
    covs = []
    for scale in (0.5, 1.0, 2.0):
        Q = np.linalg.qr(rng.normal(size=(3, 3)))[0]
        covs.append(Q @ np.diag(scale * np.array([1.0, 0.5, 2.0])) @ Q.T)
    A = np.array([[1.0, 0.3, 0.0], [0.0, 1.0, -0.4]])
    A /= np.linalg.norm(A, axis=1, keepdims=True)
    prior = mixture_from_arrays(means, np.array(covs), np.array([0.5, 0.3, 0.2]))
    return prior, means, np.array(covs), A


def _phase_quadrature(means, covs, weights, A, y, sigma, n=601):
    """Weights, log evidence, and x-moments per component by quadrature over z.

    ``L(y | z)`` is negligible (``< e^-18``) unless ``|z_i|`` is within ``6 sigma`` of
    ``y_i``: a grid over ``|z_i| <= |y_i| + 6 sigma`` holds the posterior.
    """
    half = np.abs(y) + 6 * sigma
    axes = [np.linspace(-h, h, n) for h in half]
    z = np.stack(np.meshgrid(*axes, indexing="ij"), -1).reshape(-1, 2)
    cell = np.prod([a[1] - a[0] for a in axes])
    loglik = -0.5 * np.sum(((y - np.abs(z)) / sigma) ** 2, 1) - 2 * (
        math.log(sigma) + 0.5 * math.log(2 * math.pi)
    )
    log_z, x_mean, x_var = [], [], []
    for m, C in zip(means, covs):
        mu, S = A @ m, A @ C @ A.T
        r = z - mu
        log_prior = -0.5 * np.einsum("ni,ij,nj->n", r, np.linalg.inv(S), r)
        log_prior -= 0.5 * np.linalg.slogdet(2 * math.pi * S)[1]
        f = np.exp(log_prior + loglik)
        mass = f.sum() * cell
        ez = (f[:, None] * z).sum(0) * cell / mass
        cov_z = np.einsum("n,ni,nj->ij", f, z - ez, z - ez) * cell / mass
        # x | z is Gaussian with mean m + G (z - mu) and covariance C - G S G^T.
        G = C @ A.T @ np.linalg.inv(S)
        log_z.append(math.log(mass))
        x_mean.append(m + G @ (ez - mu))
        x_var.append(np.diag(C - G @ S @ G.T + G @ cov_z @ G.T))
    log_joint = np.log(weights) + np.array(log_z)
    log_evidence = np.logaddexp.reduce(log_joint)
    return (
        np.exp(log_joint - log_evidence),
        log_evidence,
        np.array(x_mean),
        np.array(x_var),
    )


@pytest.fixture(scope="module")
def phase_case():
    prior, means, covs, A = _phase_prior()
    y, sigma = np.array([1.0, 0.8]), 0.3
    loglik = phase_retrieval_likelihood(y, sigma)
    ref = reference_posterior(
        jax.random.key(1), prior, A, loglik, num_samples=NUM_SAMPLES, **FAST
    )
    exact = _phase_quadrature(
        means, covs, np.asarray(prior.weights, np.float64), A, y, sigma
    )
    return prior, loglik, ref, exact


def test_phase_retrieval_matches_quadrature(phase_case):
    prior, _, ref, (weights, log_evidence, x_mean, x_var) = phase_case
    assert weights.min() > 0.05  # three modes that matter
    _assert_weights_match(ref.component_weights, ref.component_weights_se, weights)
    assert abs(float(ref.log_evidence) - log_evidence) <= (
        NUM_SE * float(ref.log_evidence_se) + 2e-3
    )
    # draws of each component against its quadrature moments
    comps = np.asarray(ref.components)
    samples = np.asarray(ref.samples, np.float64)
    for j in range(3):
        _assert_moments_match(
            samples[comps == j], x_mean[j], x_var[j], float(ref.ess[j])
        )
    # and the whole mixture
    mean = weights @ x_mean
    var = weights @ (x_var + x_mean**2) - mean**2
    spread = np.sum(
        NUM_SE * np.asarray(ref.component_weights_se)[:, None] * np.abs(x_mean - mean),
        0,
    )
    _assert_moments_match(samples, mean, var, float(np.min(ref.ess)), extra=spread)


def test_negative_control_unweighted_draws_fail_the_check(phase_case):
    """Ignore the importance weights (treat the proposal draws as posterior draws,
    i.e. uniform weights): the component weights then come out as ``w_j`` times the
    mean likelihood over the draws, which is clearly wrong, and the same check as in
    :func:`test_phase_retrieval_matches_quadrature` fails."""
    prior, loglik, ref, (weights, _, _, _) = phase_case
    log_lik = np.asarray(jax.vmap(jax.vmap(loglik))(ref.importance_z), np.float64)
    log_joint = np.log(np.asarray(prior.weights, np.float64)) + (
        np.logaddexp.reduce(log_lik, axis=1) - math.log(log_lik.shape[1])
    )
    uniform = np.exp(log_joint - np.logaddexp.reduce(log_joint))
    assert np.max(np.abs(uniform - weights)) > 0.05  # clearly wrong
    with pytest.raises(AssertionError, match="component weights off"):
        _assert_weights_match(uniform, ref.component_weights_se, weights)
    # the weighted estimate from the very same draws passes
    _assert_weights_match(ref.component_weights, ref.component_weights_se, weights)


def test_reference_under_vmap_over_observations(phase_case):
    """The reference is traceable: vmapped over observations (a new ``y`` is a
    pytree leaf of the likelihood), each row still matches its quadrature."""
    prior, _, _, _ = phase_case
    _, means, covs, A = _phase_prior()
    ys = np.array([[0.4, 1.2], [1.5, 0.2]])

    def weights(y):
        ref = reference_posterior(
            jax.random.key(4),
            prior,
            A,
            phase_retrieval_likelihood(y, 0.3),
            num_samples=10,
            **FAST,
        )
        return ref.component_weights, ref.component_weights_se

    w, se = jax.jit(jax.vmap(weights))(jnp.asarray(ys))
    for row in range(2):
        exact = _phase_quadrature(
            means, covs, np.asarray(prior.weights, np.float64), A, ys[row], 0.3
        )[0]
        _assert_weights_match(w[row], se[row], exact)


# --------------------------------------------------------------------------------------
# Problems and likelihoods
# --------------------------------------------------------------------------------------


def test_make_nonlinear_problem_is_reproducible():
    for name in LIKELIHOODS:
        first = make_nonlinear_problem(5, dim=6, obs_dim=3, likelihood=name)
        second = make_nonlinear_problem(5, dim=6, obs_dim=3, likelihood=name)
        np.testing.assert_array_equal(np.asarray(first.y), np.asarray(second.y))
        assert first.obs_matrix.shape == (3, 6) and first.y.shape == (3,)
        np.testing.assert_allclose(
            np.linalg.norm(first.obs_matrix, axis=1), 1.0, rtol=1e-5
        )
        assert np.isfinite(float(first.log_likelihood(first.x_true)))
        assert first.likelihood == name
        assert (first.sigma is None) == (name == "poisson")
    counts = make_nonlinear_problem(5, dim=6, obs_dim=3, likelihood="poisson").y
    assert np.all(np.asarray(counts) == np.round(np.asarray(counts)))
    phase = make_nonlinear_problem(5, dim=6, obs_dim=3, sigma=0.2)
    assert phase.sigma == 0.2 and phase.likelihood == "phase"


def test_likelihood_helpers_closed_forms():
    y = jnp.array([1.0, -0.5])
    z = jnp.array([0.3, 0.2])
    np.testing.assert_allclose(
        float(linear_gaussian_likelihood(y, 0.7)(z)),
        np.sum(-0.5 * ((y - z) / 0.7) ** 2 - np.log(0.7 * np.sqrt(2 * np.pi))),
        rtol=1e-6,
    )
    np.testing.assert_allclose(
        float(phase_retrieval_likelihood(y, 0.7)(-z)),
        float(linear_gaussian_likelihood(y, 0.7)(jnp.abs(z))),
        rtol=1e-6,
    )
    from scipy import stats

    np.testing.assert_allclose(
        float(student_t_likelihood(y, 0.7, 3.0)(z)),
        np.sum(stats.t.logpdf(np.asarray(y - z), 3.0, scale=0.7)),
        rtol=1e-5,
    )
    counts = jnp.array([0.0, 3.0])
    rate = 2.0 * np.log1p(np.exp(np.asarray(z)))
    np.testing.assert_allclose(
        float(poisson_likelihood(counts, 2.0)(z)),
        np.sum(stats.poisson.logpmf(np.asarray(counts), rate)),
        rtol=1e-5,
    )


def test_student_t_reference_is_self_consistent():
    problem = make_nonlinear_problem(2, dim=4, obs_dim=2, likelihood="student_t")
    ref = problem.reference(jax.random.key(2), 200, **FAST)
    w = np.asarray(ref.component_weights)
    assert abs(w.sum() - 1.0) < 1e-5 and ref.samples.shape == (200, 4)
    big = w > 0.01
    assert np.all(np.asarray(ref.beta)[big] == 1.0)
    assert np.all(np.asarray(ref.ess)[big] > 0.3 * FAST["num_importance"])
    assert float(np.max(ref.component_weights_se)) < 0.02


# --------------------------------------------------------------------------------------
# Unknown noise scale: the posterior of sigma, and the KS helper
# --------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def sigma_case():
    prior = mixture_from_arrays(np.array([[0.5, -1.0]]), np.array([[0.8, 1.5]]))
    a = np.array([[0.6, 0.8]])
    y = np.array([2.5])
    grid = np.linspace(1e-3, 8.0, 4001)
    post = sigma_marginal_linear_gaussian(prior, a, y, _half_normal, grid=grid)
    return prior, a, y, post


def test_sigma_marginal_matches_numerical_integration(sigma_case):
    prior, a, y, post = sigma_case
    # p(y | sigma) = N(y; a m, a C a^T + sigma^2) for one diagonal component
    mu = float(a[0] @ np.array([0.5, -1.0]))
    s0 = float(a[0] ** 2 @ np.array([0.8, 1.5]))

    def unnorm(s):
        var = s0 + s**2
        return np.exp(-0.5 * (y[0] - mu) ** 2 / var - 0.5 * np.log(2 * np.pi * var)) * (
            np.exp(_half_normal(s))
        )

    total = integrate.quad(unnorm, 0.0, np.inf)[0]
    mean = integrate.quad(lambda s: s * unnorm(s), 0.0, np.inf)[0] / total
    second = integrate.quad(lambda s: s**2 * unnorm(s), 0.0, np.inf)[0] / total
    np.testing.assert_allclose(
        post.density, unnorm(post.grid) / total, rtol=2e-3, atol=1e-6
    )
    assert abs(post.mean - mean) < 1e-3
    assert abs(post.sd - math.sqrt(second - mean**2)) < 1e-3
    assert abs(post.log_evidence - math.log(total)) < 1e-3
    half = integrate.quad(unnorm, 0.0, 1.0)[0] / total
    assert abs(np.interp(1.0, post.grid, post.cdf) - half) < 1e-3
    assert abs(post.cdf[-1] - 1.0) < 1e-12 and np.all(np.diff(post.cdf) >= 0)


def test_sigma_marginal_mixture_likelihood_is_the_closed_form_evidence():
    problem = gmm.make_problem(0, dim=4, obs_dim=2, sigma=0.5)
    grid = np.array([0.2, 0.5, 1.3])
    post = sigma_marginal_linear_gaussian(
        problem.prior,
        problem.obs_matrix,
        problem.y,
        _half_normal,
        grid=np.linspace(1e-4, 5.0, 500),
    )
    for s in grid:
        exact = gmm.exact_posterior(
            problem.prior, problem.obs_matrix, problem.y, float(s)
        )
        got = np.interp(s, post.grid, post.log_likelihood)
        assert abs(got - float(exact.log_evidence)) < 0.02  # grid interpolation


def test_ks_distance(sigma_case):
    *_, post = sigma_case
    n = 4000
    exact = post.sample(jax.random.key(3), n)
    # exact draws: below the 99.9 % point of the KS statistic (1.95 / sqrt(n))
    assert ks_distance(exact, post) < 1.95 / math.sqrt(n)
    shifted = np.asarray(exact) + 0.5 * post.sd
    assert ks_distance(shifted, post) > 0.1
    # the helper is the textbook statistic: scipy's on a uniform reference
    from scipy import stats

    uniform = SigmaMarginal(
        np.linspace(0, 1, 101), None, None, np.linspace(0, 1, 101), 0.5, 0.29, 0.0, None
    )
    draws = np.random.default_rng(0).uniform(size=500) ** 1.2
    assert (
        abs(ks_distance(draws, uniform) - stats.kstest(draws, "uniform").statistic)
        < 1e-9
    )


def test_sigma_marginal_warns_on_a_short_grid(sigma_case):
    prior, a, y, _ = sigma_case
    with pytest.warns(UserWarning, match="cut off"):
        sigma_marginal_linear_gaussian(
            prior, a, y, _half_normal, grid=np.linspace(0.01, 1.0, 50)
        )


# --------------------------------------------------------------------------------------
# Bad input
# --------------------------------------------------------------------------------------


def _ref_args():
    problem = gmm.make_problem(0, dim=4, obs_dim=2, sigma=0.5)
    loglik = linear_gaussian_likelihood(problem.y, problem.sigma)
    return problem, loglik


@pytest.mark.parametrize(
    "change, error, name",
    [
        (dict(rng_key=0), TypeError, "rng_key"),
        (dict(prior="grid"), TypeError, "prior"),
        (dict(obs_matrix=np.ones((2, 3))), ValueError, "obs_matrix"),
        (dict(obs_matrix=np.ones(4)), ValueError, "obs_matrix"),
        (dict(obs_matrix=np.ones((2, 4))), ValueError, "obs_matrix"),  # rank 1
        (dict(log_likelihood_z="phase"), TypeError, "log_likelihood_z"),
        (dict(log_likelihood_z=lambda z: z), ValueError, "log_likelihood_z"),
        (
            dict(log_likelihood_z=linear_gaussian_likelihood(np.ones(3), 1.0)),
            ValueError,
            "log_likelihood_z",
        ),
        (dict(num_samples=0), ValueError, "num_samples"),
        (dict(num_samples=10.0), TypeError, "num_samples"),
        (dict(num_importance=1), ValueError, "num_importance"),
        (dict(num_rounds=-1), ValueError, "num_rounds"),
        (dict(num_terms=0), ValueError, "num_terms"),
        (dict(defensive=0.0), ValueError, "defensive"),
        (dict(defensive=1.0), ValueError, "defensive"),
        (dict(ess_target=1.5), ValueError, "ess_target"),
        (dict(proposal_df=-2.0), ValueError, "proposal_df"),
        (dict(memory=1.0), ValueError, "memory"),
        (dict(num_adapt=0), ValueError, "num_adapt"),
    ],
)
def test_reference_posterior_bad_input(change, error, name):
    problem, loglik = _ref_args()
    args = dict(
        rng_key=jax.random.key(0),
        prior=problem.prior,
        obs_matrix=problem.obs_matrix,
        log_likelihood_z=loglik,
    )
    kwargs = dict(num_samples=10)
    for key, value in change.items():
        (args if key in args else kwargs)[key] = value
    with pytest.raises(error, match=name):
        reference_posterior(*args.values(), **kwargs)


@pytest.mark.parametrize(
    "call, error, name",
    [
        (lambda: phase_retrieval_likelihood(np.ones((2, 2)), 0.1), ValueError, "y"),
        (lambda: phase_retrieval_likelihood(np.array([np.nan]), 0.1), ValueError, "y"),
        (lambda: phase_retrieval_likelihood(np.ones(2), -0.1), ValueError, "sigma"),
        (lambda: linear_gaussian_likelihood("y", 0.1), TypeError, "y"),
        (lambda: student_t_likelihood(np.ones(2), 0.1, 0.0), ValueError, "df"),
        (lambda: poisson_likelihood(np.array([1.5]), 1.0), ValueError, "y"),
        (
            lambda: poisson_likelihood(np.array([1.0]), 1.0, link="log"),
            ValueError,
            "link",
        ),
        (
            lambda: make_nonlinear_problem(0, 4, 2, likelihood="gauss"),
            ValueError,
            "likelihood",
        ),
        (lambda: make_nonlinear_problem(0, 4, 5), ValueError, "obs_dim"),
        (lambda: make_nonlinear_problem(0, 4.0, 2), TypeError, "dim"),
        (lambda: make_nonlinear_problem(0, 4, 2, sigma=0.0), ValueError, "sigma"),
        (lambda: make_nonlinear_problem(0, 4, 2, "poisson", 0.5), ValueError, "sigma"),
        (lambda: make_nonlinear_problem("0", 4, 2), TypeError, "seed"),
    ],
)
def test_helpers_bad_input(call, error, name):
    with pytest.raises(error, match=name):
        call()


@pytest.mark.parametrize(
    "change, error, name",
    [
        (dict(prior=None), TypeError, "prior"),
        (dict(obs_matrix=np.ones((1, 3))), ValueError, "obs_matrix"),
        (dict(y=np.ones(2)), ValueError, "y"),
        (dict(sigma_log_prior=1.0), TypeError, "sigma_log_prior"),
        (dict(sigma_log_prior=lambda s: 0.0), ValueError, "sigma_log_prior"),
        (dict(grid=np.array([0.0, 1.0, 2.0])), ValueError, "grid"),
        (dict(grid=np.array([2.0, 1.0, 3.0])), ValueError, "grid"),
        (dict(grid=np.ones((3, 3))), ValueError, "grid"),
        (dict(grid="fine"), TypeError, "grid"),
    ],
)
def test_sigma_marginal_bad_input(sigma_case, change, error, name):
    prior, a, y, _ = sigma_case
    args = dict(prior=prior, obs_matrix=a, y=y, sigma_log_prior=_half_normal)
    grid = change.pop("grid", np.linspace(1e-3, 8.0, 100))
    args.update(change)
    with pytest.raises(error, match=name):
        sigma_marginal_linear_gaussian(*args.values(), grid=grid)


def test_ks_distance_bad_input(sigma_case):
    *_, post = sigma_case
    with pytest.raises(TypeError, match="reference"):
        ks_distance(np.ones(3), (post.grid, post.cdf))
    with pytest.raises(ValueError, match="samples"):
        ks_distance(np.ones((3, 2)), post)
    with pytest.raises(ValueError, match="samples"):
        ks_distance(np.array([np.inf]), post)
    with pytest.raises(TypeError, match="samples"):
        ks_distance("draws", post)
