"""The twisted SMC for any prior access and any likelihood, and ``posterior.sample``.

Closed-form references: a Gaussian prior with observations Gaussian in ``x`` has a
Gaussian posterior; with an unknown noise scale ``σ`` its marginal is a 1-D
quadrature of closed-form evidences. Tolerances come from the Monte Carlo error of
a resampled particle cloud (comments); each statistical test also shows that the
obvious wrong answer (the prior, a wrong ``σ``) fails the same check.
"""

import math
import warnings

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist
import pytest
from instruments import Counter
from scipy import stats

import rtk_blackjax as rb
from rtk_blackjax.posterior.model import model_likelihood
from rtk_blackjax.posterior.twisted import (
    linear_gaussian_likelihood,
    tds,
    twisted_smc,
)

KEY = jax.random.key(0)
A = jnp.array([[1.0, 1.0, 0.0], [0.0, 1.0, -1.0]])
Y = jnp.array([1.5, -0.4])
SIGMA = 0.4
MEAN = jnp.array([0.5, -0.5, 0.0])
VAR = 0.8  # isotropic: the secant predictor is exact, so score access is exact too


def gaussian_posterior(mean, var, A, y, sigma):
    """Posterior of ``N(mean, diag(var))`` (``var`` scalar or per coordinate)."""
    C = np.diag(np.broadcast_to(np.asarray(var, float), (len(mean),)))
    S = A @ C @ A.T + sigma**2 * np.eye(A.shape[0])
    gain = C @ A.T @ np.linalg.inv(S)
    return mean + gain @ (y - A @ mean), C - gain @ A @ C


POST_MEAN, POST_COV = gaussian_posterior(
    np.asarray(MEAN), VAR, np.asarray(A), np.asarray(Y), SIGMA
)
POST_SD = np.sqrt(np.diag(POST_COV))


def moments_ok(x, mean, sd, n_eff):
    """Means within 4 SE (sd / sqrt(n_eff)), variances within 4 SE of a variance
    ratio (sqrt(2 / n_eff)); ``n_eff`` a conservative count of independent draws in
    a resampled cloud (a third of the particles)."""
    x = np.asarray(x)
    mean_ok = np.all(np.abs(x.mean(0) - mean) < 4 * sd / math.sqrt(n_eff))
    var_ok = np.all(np.abs(x.var(0) / sd**2 - 1) < 4 * math.sqrt(2 / n_eff))
    return bool(mean_ok and var_ok)


def gaussian_model(target, sigma_site=False):
    prior = rb.posterior.DiffusionPrior(target, dim=3)

    def model(y=None):
        x = numpyro.sample("x", prior)
        sigma = numpyro.sample("sigma", dist.HalfNormal(1.0)) if sigma_site else SIGMA
        numpyro.sample("y", dist.Normal(A @ x, sigma), obs=y)

    return model


@pytest.mark.parametrize("access", ["logdensity", "energy", "score"])
def test_smc_matches_the_closed_form_posterior(access):
    exact = rb.targets.gaussian(MEAN, VAR)
    target = {
        "logdensity": exact,
        "energy": rb.targets.from_energy(lambda x, t: exact.logdensity(x, t) + 3 * t),
        "score": rb.targets.score_only(exact),
    }[access]
    n = 2000
    res = rb.posterior.sample(
        KEY, gaussian_model(target), num_samples=n, prior_nfe=31, y=Y
    )
    assert res.access == access
    x = res.samples["x"]
    assert moments_ok(x, POST_MEAN, POST_SD, n / 3)
    # the same check refuses the prior (the untilted answer)
    prior_draws = MEAN + math.sqrt(VAR) * jax.random.normal(KEY, (n, 3))
    assert not moments_ok(prior_draws, POST_MEAN, POST_SD, n / 3)
    consistent = res.diagnostics["consistent_for"]
    assert (
        consistent
        == {
            "logdensity": "posterior",
            "energy": "posterior",
            "score": "predictor-chain prior",
        }[access]
    )


def test_learned_energy_is_read_only_where_the_noise_reaches_the_data_scale():
    # A learned energy (t_min > 0) is not a density at t = 0 and its differences
    # between particles are not trusted at small t: by default its segments that
    # end below s_t² = V (t = 0.80 for V = 0.8) are weighted by the Gaussian
    # reverse kernel and the grid runs down to t_min. An energy spoiled below
    # t = 0.5 then gives the same draws; with exact_until=0 the spoiled energy
    # enters the weights and moves them.
    exact = rb.targets.gaussian(MEAN, VAR)

    def spoil(x, t):
        # the value only: the score (its gradient) stays exact
        bump = jax.lax.stop_gradient(30.0 * jnp.sum(jnp.sin(3.0 * x)))
        return jnp.where(t < 0.5, bump, 0.0)

    def learned(energy, **kw):
        return rb.targets.from_energy(energy, t_min=1e-3, **kw)

    clean = learned(lambda x, t: exact.logdensity(x, t) + 3 * t, variance=VAR)
    spoiled = learned(
        lambda x, t: exact.logdensity(x, t) + 3 * t + spoil(x, t), variance=VAR
    )
    lik = linear_gaussian_likelihood(A, Y, SIGMA)
    run = lambda target, **kw: twisted_smc(  # noqa: E731
        KEY, target, 3, lik, num_particles=1000, prior_nfe_budget=31, **kw
    )
    default_clean, default_spoiled = run(clean), run(spoiled)
    # equal up to float32 rounding (the two programs fuse differently)
    np.testing.assert_allclose(
        default_clean.samples, default_spoiled.samples, rtol=0, atol=1e-5
    )
    assert moments_ok(default_clean.samples[:, 0], POST_MEAN, POST_SD, 1000 / 3)
    assert not moments_ok(
        run(spoiled, exact_until=0.0).samples[:, 0], POST_MEAN, POST_SD, 1000 / 3
    )
    until = -0.5 * math.log(1.0 - VAR)
    assert default_clean.extras["consistent_for"] == (
        f"predictor-chain prior below t = {until:g}"
    )
    np.testing.assert_allclose(default_clean.extras["times"][-2], 1e-3, rtol=1e-6)
    # without a known scale below 1 (V = 1 here) the energy never enters
    unscaled = run(learned(lambda x, t: exact.logdensity(x, t)))
    assert unscaled.extras["consistent_for"] == "predictor-chain prior"
    assert run(clean, exact_until=0.0).extras["consistent_for"] == "posterior"
    # an analytic log density (t_min = 0) keeps the ring-tuned grid end 0.1
    np.testing.assert_allclose(run(exact).extras["times"][-2], 0.1, rtol=1e-6)
    with pytest.raises(ValueError, match="exact_until"):
        run(clean, exact_until=-1.0)
    with pytest.raises(ValueError, match="t_min"):
        rb.targets.from_energy(exact.logdensity, t_min=-1.0)


def test_mcgdiff_through_sample_matches_the_closed_form_posterior():
    # the score-only peer through the same entry (a linear-Gaussian model)
    target = rb.targets.score_only(rb.targets.gaussian(MEAN, VAR))
    n = 2000
    res = rb.posterior.sample(
        KEY, gaussian_model(target), num_samples=n, method="mcgdiff", y=Y
    )
    assert res.prior_nfe == 100.0 and res.num_chains == 2
    assert moments_ok(res.samples["x"], POST_MEAN, POST_SD, n / 3)


@pytest.mark.parametrize("method", ["dps", "daps"])
def test_guided_baselines_through_sample(method):
    # DPS and DAPS are biased baselines: through the one entry they move the prior
    # most of the way to the posterior mean (measured 0.03-0.2 left of a 1.0 gap)
    target = rb.targets.score_only(rb.targets.gaussian(MEAN, VAR))
    res = rb.posterior.sample(
        KEY,
        gaussian_model(target),
        num_samples=500,
        method=method,
        method_options={"zeta": 0.3} if method == "dps" else None,
        y=Y,
    )
    assert res.samples["x"].shape == (500, 3) and res.prior_nfe == 100.0
    gap = float(jnp.linalg.norm(POST_MEAN - MEAN))
    left = float(jnp.linalg.norm(res.samples["x"].mean(0) - POST_MEAN))
    assert left < 0.4 * gap, (left, gap)


def test_method_options_are_checked():
    model = gaussian_model(rb.targets.gaussian(MEAN, VAR))
    with pytest.raises(TypeError, match="method_options"):
        rb.posterior.sample(KEY, model, num_samples=8, method_options=[1], y=Y)
    with pytest.raises(ValueError, match="method_options"):
        rb.posterior.sample(
            KEY, model, num_samples=8, method="nuts", method_options={"a": 1}, y=Y
        )


def test_smc_log_evidence_matches_the_closed_form():
    prior = rb.targets.gaussian(MEAN, VAR)
    lik = linear_gaussian_likelihood(A, Y, SIGMA)
    res = twisted_smc(KEY, prior, 3, lik, num_particles=2000, prior_nfe_budget=31)
    S = VAR * A @ A.T + SIGMA**2 * jnp.eye(2)
    truth = float(jax.scipy.stats.multivariate_normal.logpdf(Y, A @ MEAN, S))
    # the log of an unbiased evidence estimate: SE ~ sqrt(var of weights / N) < 0.05
    assert abs(float(res.extras["log_evidence"]) - truth) < 0.1


AXIS_VARS = np.array([0.05, 0.5, 2.0])


@pytest.mark.parametrize(
    "access, curvature, exact",
    [
        ("energy", "diagonal", True),  # exact weights: tests the proposal density
        ("score", "diagonal", True),  # the predictor chain is this prior exactly
        ("score", "secant", False),  # ... and not with one isotropic variance
    ],
)
def test_smc_with_per_coordinate_curvature(access, curvature, exact):
    # An axis-aligned Gaussian prior with variances over two decades: the
    # per-coordinate curvature makes the prior's Gaussian reverse kernels exact, so
    # score access (weights by those kernels) is exact too; the isotropic secant's
    # predictor chain is a different prior, which the same check sees.
    truth = rb.targets.gaussian(MEAN, AXIS_VARS)
    prior = (
        rb.targets.from_energy(lambda x, t: truth.logdensity(x, t))
        if access == "energy"
        else rb.targets.score_only(truth)
    )
    lik = linear_gaussian_likelihood(A, Y, SIGMA)
    n = 3000
    res = twisted_smc(
        KEY, prior, 3, lik, num_particles=n, prior_nfe_budget=31, curvature=curvature
    )
    mean, cov = gaussian_posterior(
        np.asarray(MEAN), AXIS_VARS, np.asarray(A), np.asarray(Y), SIGMA
    )
    sd = np.sqrt(np.diag(cov))
    assert moments_ok(res.samples[:, 0], mean, sd, n / 3) == exact
    assert np.nanmean(res.extras["acceptance_per_segment"]) > 0.3


def test_smc_on_a_nonlinear_likelihood_matches_the_grid_reference():
    """``y = x0 x1 + x0² + σ ε`` on a standard normal prior (2-D grid reference).

    Checked: the mode-invariant moments ``E|x_i|`` and ``E x_i²`` (the posterior is
    symmetric under ``x -> -x``; the balance of its two mirror modes is set by the
    few effective particles of the segments where they separate, measured in
    ``benchmarks/ring_posterior.py``, not asserted here).
    """
    prior = rb.targets.gaussian(jnp.zeros(2), 1.0)
    forward = lambda x, u: jnp.array([x[0] * x[1] + x[0] ** 2])  # noqa: E731
    lik = rb.posterior.Likelihood(
        gaussian=rb.posterior.GaussianObservation(
            forward, jnp.array([2.0]), lambda x, u: jnp.array([0.25])
        )
    )
    grid = np.linspace(-5, 5, 801)
    xx, yy = np.meshgrid(grid, grid, indexing="ij")
    logp = -0.5 * (xx**2 + yy**2) - 0.5 * (2.0 - xx * yy - xx**2) ** 2 / 0.25
    w = np.exp(logp - logp.max())
    w /= w.sum()
    ref_abs = np.array([(w * np.abs(xx)).sum(), (w * np.abs(yy)).sum()])
    ref_sq = np.array([(w * xx**2).sum(), (w * yy**2).sum()])
    res = twisted_smc(KEY, prior, 2, lik, num_particles=4000, prior_nfe_budget=61)
    x = np.asarray(res.samples[:, 0])
    # SE of E|x_i| and E x_i² with sd(|x|) < 1, sd(x²) < 2 and n_eff >= 1000
    # independent draws: < 0.03 and < 0.06; tolerances at ~3 SE
    assert np.all(np.abs(np.abs(x).mean(0) - ref_abs) < 0.1)
    assert np.all(np.abs((x**2).mean(0) - ref_sq) < 0.2)
    # the same check refuses the prior
    z = np.asarray(jax.random.normal(KEY, (4000, 2)))
    assert not np.all(np.abs(np.abs(z).mean(0) - ref_abs) < 0.1)


def sigma_marginal(y, A_obs, prior_var, grid):
    """log p(σ | y) on ``grid``: HalfNormal(1) prior times N(y; 0, v A Aᵀ + σ² I)."""
    logp = []
    for s in grid:
        S = prior_var * A_obs @ A_obs.T + s**2 * np.eye(len(y))
        logp.append(
            stats.multivariate_normal.logpdf(y, np.zeros(len(y)), S) - 0.5 * s**2
        )
    logp = np.asarray(logp)
    w = np.exp(logp - logp.max())
    return w / np.trapezoid(w, grid)


def test_unknown_sigma_marginal_matches_quadrature():
    rng = np.random.default_rng(1)
    A_obs = rng.normal(size=(8, 2)) / 2
    y = A_obs @ rng.normal(size=2) + 0.5 * rng.normal(size=8)
    target = rb.targets.gaussian(jnp.zeros(2), 1.0)
    prior = rb.posterior.DiffusionPrior(target, dim=2)

    def model(y=None):
        x = numpyro.sample("x", prior)
        sigma = numpyro.sample("sigma", dist.HalfNormal(1.0))
        numpyro.sample("y", dist.Normal(jnp.asarray(A_obs) @ x, sigma), obs=y)

    n = 3000
    res = rb.posterior.sample(KEY, model, num_samples=n, prior_nfe=31, y=jnp.asarray(y))
    grid = np.linspace(1e-3, 3.0, 3000)
    dens = sigma_marginal(y, A_obs, 1.0, grid)
    cdf = np.cumsum(dens) * (grid[1] - grid[0])
    draws = np.sort(np.asarray(res.samples["sigma"]))
    ecdf = np.arange(1, n + 1) / n
    ks = np.max(np.abs(ecdf - np.interp(draws, grid, cdf)))
    # KS 1 % critical value at n_eff = n / 3 independent draws: 1.63 / sqrt(1000)
    assert ks < 1.63 / math.sqrt(n / 3)
    # the check refuses a sampler off by 20 % in sigma
    ks_wrong = np.max(np.abs(ecdf - np.interp(draws * 1.2, grid, cdf)))
    assert ks_wrong > 1.63 / math.sqrt(n / 3)
    # Resample-move: every particle's sigma moves after each resampling, so the
    # draws are (nearly) all distinct. Without the moves sigma keeps its prior
    # draws, which resampling duplicates (measured: 48 % distinct, and the KS
    # check above still passes: importance sampling of a 1-D site from its prior).
    assert len(np.unique(draws)) > 0.9 * n


def test_smc_weighs_the_modes_of_a_mixture_prior():
    # Where the twisted proposal alone is wrong: two prior modes of equal weight,
    # a weak observation of x0 favours the right one. Exact posterior weight
    # w_k N(y; A m_k, sigma^2 + A C A^T) normalised: 0.823. With the prior's log
    # density the weights are exact; the proposal without them gives 0.69
    # (measured: 0.68-0.69 over keys 0-2; the sampler 0.82-0.83).
    modes = np.array([[-2.0, 0.0], [2.0, 0.0]])
    prior = rb.posterior.DiffusionPrior(
        rb.targets.gaussian_mixture(jnp.asarray(modes), 0.3), dim=2
    )
    y, sigma = 0.5, 1.0
    log_w = -0.5 * (y - modes[:, 0]) ** 2 / (sigma**2 + 0.3)
    exact = float(np.exp(log_w[1] - np.logaddexp(*log_w)))

    def model(y=None):
        x = numpyro.sample("x", prior)
        numpyro.sample("y", dist.Normal(x[:1], sigma), obs=y)

    n = 2000
    # resampled draws: n / 3 as the effective size (as above); 4.5 se = 0.067
    tolerance = 4.5 * math.sqrt(exact * (1 - exact) / (n / 3))
    # With the default ESS threshold this problem never resamples before the
    # end; resampling at every segment (ess_threshold=1) makes the resampling's
    # indices matter too (uniform indices: 0.67).
    for options in ({}, {"ess_threshold": 1.0}):
        res = rb.posterior.sample(
            KEY, model, num_samples=n, prior_nfe=31, y=jnp.array([y]),
            method_options=options,
        )  # fmt: skip
        right = float((np.asarray(res.samples["x"])[:, 0] > 0).mean())
        assert abs(right - exact) < tolerance, (options, right)


def test_tds_is_exact_for_its_ddpm_chain_on_a_fine_grid():
    # With a fine grid the DDPM chain's prior is the Gaussian prior itself, so TDS
    # is consistent for the closed-form posterior. At sigma = 1 (at sigma = 0.4 its
    # uninflated twist over-concentrates the cloud: a bias of 0.3 posterior sd
    # at 2000 particles even at 1602 NFE, measured; not a test of the code).
    sigma = 1.0
    mean, cov = gaussian_posterior(
        np.asarray(MEAN), VAR, np.asarray(A), np.asarray(Y), sigma
    )
    prior = rb.targets.score_only(rb.targets.gaussian(MEAN, VAR))
    lik = linear_gaussian_likelihood(A, Y, sigma)
    n = 2000
    res = tds(KEY, prior, 3, lik, num_particles=n, prior_nfe_budget=402)
    sd = np.sqrt(np.diag(cov))
    assert moments_ok(res.samples[:, 0], mean, sd, n / 3)
    wrong = gaussian_posterior(np.asarray(MEAN), VAR, np.asarray(A), np.asarray(Y), 0.5)
    assert not moments_ok(
        res.samples[:, 0], wrong[0], np.sqrt(np.diag(wrong[1])), n / 3
    )


@pytest.mark.parametrize("mala_segments", [None, 2])
def test_smc_prior_nfe_is_the_real_count(mala_segments):
    counter = Counter()
    prior = counter.target(rb.targets.gaussian(MEAN, VAR))
    n = 4  # fixed trip counts: every particle costs the same
    res = twisted_smc(
        KEY,
        prior,
        3,
        linear_gaussian_likelihood(A, Y, SIGMA),
        num_particles=n,
        prior_nfe_budget=13,
        num_inner_steps=2,
        mala_segments=mala_segments,
    )
    assert res.prior_nfe * n == counter.nfe()
    # MALA on every segment: 3 segments of 2 + 2; on the last two: 4 segments of 2
    # and 2 x 2 MALA steps
    assert len(res.extras["times"]) - 1 == (3 if mala_segments is None else 4)


def test_smc_with_mala_on_the_last_segments_matches_the_closed_form():
    prior = rb.targets.score_only(rb.targets.gaussian(MEAN, VAR))
    lik = linear_gaussian_likelihood(A, Y, SIGMA)
    n = 2000
    res = twisted_smc(
        KEY, prior, 3, lik, num_particles=n, prior_nfe_budget=31, mala_segments=4
    )
    assert moments_ok(res.samples[:, 0], POST_MEAN, POST_SD, n / 3)
    acceptance = np.asarray(res.extras["acceptance_per_segment"])
    assert np.all(np.isnan(acceptance[:-4])) and np.all(acceptance[-4:] > 0.2)
    for bad in (-1, 3):  # negative; more than the grid's two segments
        with pytest.raises(ValueError, match="mala_segments"):
            twisted_smc(
                KEY,
                prior,
                3,
                lik,
                num_particles=8,
                times=[2.0, 1.0, 0.0],
                mala_segments=bad,
            )


def test_score_only_smc_prior_nfe_is_the_real_count():
    counter = Counter()
    prior = counter.target(rb.targets.gaussian(MEAN, VAR), hide_logdensity=True)
    n = 4
    res = twisted_smc(
        KEY,
        prior,
        3,
        linear_gaussian_likelihood(A, Y, SIGMA),
        num_particles=n,
        prior_nfe_budget=13,
        num_inner_steps=2,
    )
    assert counter.count("logdensity") == 0
    assert res.prior_nfe * n == counter.nfe()


def test_tds_prior_nfe_counts_scores_and_vjps():
    counter = Counter()
    prior = counter.target(
        rb.targets.gaussian(MEAN, VAR), vjp=True, hide_logdensity=True
    )
    n = 4
    res = tds(
        KEY,
        prior,
        3,
        linear_gaussian_likelihood(A, Y, SIGMA),
        num_particles=n,
        prior_nfe_budget=13,
    )
    assert res.prior_nfe * n == counter.nfe()
    assert counter.count("vjp") == counter.count("score")


# --- the NumPyro model as a likelihood ----------------------------------------------


def rich_model(y=None, counts=None):
    """Constrained hyperparameters, several observed sites of several kinds."""
    x = numpyro.sample(
        "x", rb.posterior.DiffusionPrior(rb.targets.gaussian(jnp.zeros(3), 1.0), dim=3)
    )
    sigma = numpyro.sample("sigma", dist.HalfNormal(1.0))
    gain = numpyro.sample("gain", dist.LogNormal(0.0, 0.5))
    scale = numpyro.sample("scale", dist.Uniform(0.5, 2.0))
    with numpyro.plate("obs", 2):
        numpyro.sample(
            "y", dist.Normal(gain * jnp.stack([x[0], x[1] * x[2]]), sigma), obs=y
        )
    numpyro.sample("counts", dist.Poisson(scale * jnp.exp(x)), obs=counts)
    numpyro.factor("penalty", -0.5 * jnp.sum(x**4) / 10)


RICH_DATA = {"y": jnp.array([0.3, -1.0]), "counts": jnp.array([1.0, 0.0, 3.0])}


def test_model_likelihood_matches_numpyro_log_density():
    from numpyro.infer.util import log_density

    sites, lik = model_likelihood(KEY, rich_model, (), RICH_DATA)
    assert sites.latent == ["sigma", "gain", "scale"]
    assert sites.observed == ["y", "counts", "penalty"]
    assert lik.num_params == 3 and lik.obs_dim == 2
    x = jnp.array([0.2, -0.7, 1.1])
    u = jnp.array([0.3, -0.2, 0.5])  # flattened in name order: gain, scale, sigma
    constrained = lik.constrain(u)
    assert float(constrained["gain"]) == pytest.approx(math.exp(0.3), rel=1e-6)
    assert float(constrained["sigma"]) == pytest.approx(math.exp(0.5), rel=1e-6)
    s = 1 / (1 + math.exp(0.2))  # Uniform(0.5, 2): 0.5 + 1.5 sigmoid(u)
    assert float(constrained["scale"]) == pytest.approx(0.5 + 1.5 * s, rel=1e-6)
    values = {"x": x, **constrained}
    joint, trace = log_density(rich_model, (), RICH_DATA, values)
    prior_x = float(rb.targets.gaussian(jnp.zeros(3), 1.0).logdensity(x, 0.0))
    observed = sum(
        float(jnp.sum(trace[n]["fn"].log_prob(trace[n]["value"])))
        for n in ("y", "counts", "penalty")
    )
    assert float(lik.log_likelihood(x, u)) == pytest.approx(observed, rel=1e-5)
    # log prior of u = the latent sites' log densities + the transforms' Jacobians
    latent = float(joint) - prior_x - observed
    jac = 0.3 + 0.5 + math.log(1.5 * s * (1 - s))  # exp: u; scaled sigmoid
    assert float(lik.log_prior(u)) == pytest.approx(latent + jac, rel=1e-5)
    # init_params draws from the prior (constrained support respected)
    draws = jax.vmap(lambda k: lik.constrain(lik.init_params(k)))(
        jax.random.split(KEY, 200)
    )
    assert bool(jnp.all(draws["sigma"] > 0)) and bool(jnp.all(draws["scale"] > 0.5))


def test_model_whose_latent_prior_depends_on_x_is_refused():
    def model(y=None):
        x = numpyro.sample(
            "x",
            rb.posterior.DiffusionPrior(rb.targets.gaussian(jnp.zeros(2), 1.0), dim=2),
        )
        sigma = numpyro.sample("sigma", dist.HalfNormal(jnp.exp(x[0])))
        numpyro.sample("y", dist.Normal(x[1], sigma), obs=y)

    with pytest.raises(ValueError, match="depends on the diffusion-prior site 'x'"):
        model_likelihood(KEY, model, (), {"y": 1.0})


# --- errors and warnings ----------------------------------------------------------------


def test_methods_that_cannot_serve_the_model_say_which_can():
    model = gaussian_model(rb.targets.score_only(rb.targets.gaussian(MEAN, VAR)))
    with pytest.raises(
        ValueError,
        match=r"method='nuts'.*score access.*\['smc', 'tds', 'mcgdiff', 'dps', 'daps', 'split-gibbs'\]",
    ):
        rb.posterior.sample(KEY, model, num_samples=10, method="nuts", y=Y)

    # MCGdiff serves linear-Gaussian likelihoods only; a nonlinear one is refused
    # with the reason and the methods that can serve it
    def nonlinear(y=None):
        x = numpyro.sample("x", rb.posterior.DiffusionPrior(model_prior, dim=3))
        numpyro.sample("y", dist.Normal(jnp.tanh(A @ x), SIGMA), obs=y)

    model_prior = rb.targets.score_only(rb.targets.gaussian(MEAN, VAR))
    with pytest.raises(
        ValueError, match=r"not linear.*\['smc', 'tds', 'dps', 'daps', 'split-gibbs'\]"
    ):
        rb.posterior.sample(KEY, nonlinear, num_samples=10, method="mcgdiff", y=Y)
    with pytest.raises(ValueError, match="method"):
        rb.posterior.sample(KEY, model, num_samples=10, method="mcmc", y=Y)
    with pytest.raises(ValueError, match="no observed sample site"):
        rb.posterior.sample(KEY, model, num_samples=10)
    with pytest.raises(TypeError, match="num_samples"):
        rb.posterior.sample(KEY, model, num_samples=10.5, y=Y)


def test_collapse_is_reported():
    message = rb.posterior.twisted.collapse_warning(np.array([0.9, 0.001, 0.5]), 1000)
    assert "collapsed on 1 of 3 segments" in message
    assert rb.posterior.twisted.collapse_warning(np.array([0.9, 0.5]), 1000) is None


def test_lineages_trace_the_ancestry():
    # Against a brute-force trace of each draw's ancestor, on random parent indices.
    rng = np.random.default_rng(0)
    parent = rng.integers(0, 12, (6, 12))
    parent[2] = np.arange(12)  # a segment that did not resample
    expected = []
    for k in range(6):
        ancestors = set()
        for j in range(12):  # draw j's ancestor at times[k]
            position = parent[5, j]
            for row in range(4, k - 1, -1):
                position = parent[row, position]
            ancestors.add(int(position))
        expected.append(len(ancestors))
    got = rb.posterior.twisted.lineages(parent)
    assert got.tolist() == expected
    assert got[2] == got[3]  # no resampling on segment 2: the same families


def test_smc_reports_its_lineages_and_warns_when_few_survive():
    # A three-mode prior, resampling on every segment (ess_threshold 1): the draws
    # descend from fewer particles the further back in time, the count changes only
    # on segments that resampled, and the last count is the number of distinct
    # draws. (A Gaussian prior would not do: there the proposal is exact, the
    # weights equal, and nothing is lost.)
    prior = rb.targets.gaussian_mixture(
        jnp.array([[-2.0, 0.0, 1.0], [2.0, 1.0, 0.0], [0.0, -2.0, -1.0]]), 0.5
    )
    lik = linear_gaussian_likelihood(A, Y, 0.1)
    res = twisted_smc(
        KEY, prior, 3, lik, num_particles=32, prior_nfe_budget=31, ess_threshold=1.0
    )
    count = np.asarray(res.extras["lineages"])
    resampled = np.asarray(res.extras["resampled"])
    assert count.shape == (res.extras["times"].shape[0],)
    assert np.all(np.diff(count) >= 0) and count[-1] <= 32
    assert np.all(count[:-1][~resampled] == count[1:][~resampled])
    assert count[-1] == np.unique(np.asarray(res.samples[:, 0]), axis=0).shape[0]
    assert count[0] < count[-1] / 1.5 and resampled.sum() >= 5
    # the entry point reads the count at mid diffusion time and warns below 10
    model = gaussian_model(prior)
    with pytest.warns(rb.posterior.PosteriorWarning, match="descend from only"):
        rb.posterior.sample(
            KEY, model, num_samples=12, prior_nfe=31, num_replicas=1,
            method_options={"ess_threshold": 1.0}, y=Y,
        )  # fmt: skip
    message = rb.posterior.twisted.lineage_warning(
        np.array([[1, 3, 9, 20], [2, 5, 12, 30]]), np.array([2.0, 0.4, 0.1, 0.0])
    )
    assert "only 3 distinct particles at t = 0.4" in message
    assert (
        rb.posterior.twisted.lineage_warning(
            np.array([1, 12, 20, 30]), np.array([2.0, 0.4, 0.1, 0.0])
        )
        is None
    )
    with pytest.raises(ValueError, match="one count per grid time"):
        rb.posterior.twisted.lineage_warning(np.ones(4), np.array([2.0, 0.4, 0.0]))


def test_chains_in_different_modes_warn():
    rng = np.random.default_rng(0)
    stuck = np.concatenate(
        [rng.normal(-3, 0.3, (2, 300, 2)), rng.normal(3, 0.3, (2, 300, 2))]
    )
    assert "different posterior modes" in rb.posterior.mode_disagreement(stuck)
    mixed = rng.choice([-3.0, 3.0], (4, 300, 1)) + rng.normal(0, 0.3, (4, 300, 2))
    assert rb.posterior.mode_disagreement(mixed) is None
    unimodal = rng.normal(0, 1, (4, 300, 2))
    assert rb.posterior.mode_disagreement(unimodal) is None


def test_result_converts_to_arviz():
    model = gaussian_model(rb.targets.gaussian(MEAN, VAR), sigma_site=True)
    res = rb.posterior.sample(KEY, model, num_samples=64, prior_nfe=13, y=Y)
    idata = res.to_arviz()
    # two replicas of 32 particles (the default), one ArviZ chain each
    assert idata.posterior["x"].shape == (2, 32, 3)
    assert idata.posterior["sigma"].shape == (2, 32)
    assert res.likelihood_evals > 0 and res.prior_nfe == 13.0
    assert res.diagnostics["ess"].shape[0] == 2
    per = res.diagnostics["log_evidence_per_replica"]
    assert min(per) <= res.diagnostics["log_evidence"] <= max(per)


def test_smc_replicas_in_different_modes_warn(monkeypatch):
    # The replica check itself: replicas that end in different modes (forced here)
    # raise the warning; one replica cannot.
    from rtk_blackjax.posterior import entry

    real = entry.twisted_smc
    calls = []

    def split_modes(*args, **kwargs):
        res = real(*args, **kwargs)
        shift = 6.0 if len(calls) % 2 else -6.0
        calls.append(shift)
        return res._replace(samples=res.samples + shift)

    monkeypatch.setattr(entry, "twisted_smc", split_modes)
    model = gaussian_model(rb.targets.gaussian(MEAN, VAR))
    with pytest.warns(rb.posterior.PosteriorWarning, match="replicas occupy"):
        rb.posterior.sample(KEY, model, num_samples=200, prior_nfe=31, y=Y)
    with warnings.catch_warnings():
        warnings.simplefilter("error", rb.posterior.PosteriorWarning)
        rb.posterior.sample(
            KEY, model, num_samples=200, prior_nfe=31, num_replicas=1, y=Y
        )


def test_the_target_variance_is_the_twist_inflation_default():
    # Target.variance (a learned network's data variance) is the V of the twist's
    # inflation unless prior_variance is given: the same draws as passing it, and
    # other draws than the fallback V = 1 of a target without a scale.
    exact = rb.targets.gaussian(MEAN, VAR)
    energy = lambda x, t: exact.logdensity(x, t)  # noqa: E731
    lik = linear_gaussian_likelihood(A, Y, SIGMA)

    def run(target, **kw):
        return twisted_smc(
            KEY, target, 3, lik, num_particles=200, prior_nfe_budget=31, **kw
        ).samples

    scaled = run(rb.targets.from_energy(energy, variance=9.0))
    np.testing.assert_array_equal(
        scaled, run(rb.targets.from_energy(energy), prior_variance=9.0)
    )
    assert not np.allclose(scaled, run(rb.targets.from_energy(energy)))
    with pytest.raises(ValueError, match="variance"):
        rb.targets.from_energy(energy, variance=0.0)
    with pytest.raises(ValueError, match="variance"):
        rb.targets.from_score(exact.score, variance=-1.0)
