"""MCGdiff against closed forms, its NFE by an instrument, and its refusals.

Tolerances come from the Monte Carlo error of a cloud resampled every step
(``n_eff`` a third of the particles, as in test_twisted.py) plus the DDPM chain's
discretisation (the chain's prior variance is ~5 % off at 100 steps, measured);
each statistical check also shows that a sampler ignoring ``y`` fails it.
"""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from instruments import Counter

import rtk_blackjax as rb
from rtk_blackjax.posterior import gmm
from rtk_blackjax.posterior.mcgdiff import linear_gaussian_form, mcgdiff
from rtk_blackjax.posterior.twisted import (
    GaussianObservation,
    Likelihood,
    linear_gaussian_likelihood,
)
from rtk_blackjax.targets.analytic import mixture_target

KEY = jax.random.key(0)
_RNG = np.random.default_rng(3)
D, DY, SIGMA, VAR = 3, 2, 0.5, 0.8
MEAN = np.array([1.0, -2.0, 0.5])
A = _RNG.normal(size=(DY, D))
# y from a point far from the prior mean, so the prior answer is far off
Y = A @ (MEAN + np.array([2.0, 1.5, -1.0])) + SIGMA * _RNG.normal(size=DY)


def gaussian_posterior(y):
    C = VAR * np.eye(D)
    S = A @ C @ A.T + SIGMA**2 * np.eye(DY)
    gain = C @ A.T @ np.linalg.inv(S)
    log_z = -0.5 * (
        (y - A @ MEAN) @ np.linalg.solve(S, y - A @ MEAN)
        + np.linalg.slogdet(S)[1]
        + DY * math.log(2 * math.pi)
    )
    return MEAN + gain @ (y - A @ MEAN), C - gain @ A @ C, log_z


def moments_ok(x, mean, cov, n_eff, cov_tol=0.15):
    """Means within 4 SE (``sd / sqrt(n_eff)``), covariance entries within
    ``cov_tol`` of the largest variance."""
    x = np.asarray(x)
    sd = np.sqrt(np.diag(cov))
    mean_ok = np.all(np.abs(x.mean(0) - mean) < 4 * sd / math.sqrt(n_eff))
    cov_err = np.max(np.abs(np.cov(x.T) - cov)) / np.max(np.diag(cov))
    return bool(mean_ok and cov_err < cov_tol)


PRIOR = rb.targets.score_only(rb.targets.gaussian(jnp.asarray(MEAN), VAR))


def test_gaussian_posterior_and_evidence_match_the_closed_form():
    n = 4000
    res = mcgdiff(
        KEY,
        PRIOR,
        D,
        linear_gaussian_likelihood(A, Y, SIGMA),
        num_particles=n,
        prior_nfe_budget=100,
    )
    x = np.asarray(res.samples[:, 0])
    mean, cov, log_z = gaussian_posterior(Y)
    # measured over keys 0-2: mean errors <= 1.8 SE(n/3), covariance error
    # 0.05-0.09 of the largest variance (tolerance 0.15)
    assert moments_ok(x, mean, cov, n / 3)
    # log p(y) within 0.3 (measured errors 0.00-0.25 over keys 0-2)
    assert abs(res.extras["log_evidence"] - log_z) < 0.3
    assert res.samples.shape == (n, 1, D) and res.acceptance == {}
    assert np.asarray(res.extras["ess"]).shape == (100,)
    assert np.all(np.asarray(res.extras["ess"]) > 0.05)  # measured min 0.12-0.34
    assert res.extras["consistent_for"] == "predictor-chain prior"
    # negative controls: the prior (a sampler ignoring y) fails the same check, and
    # so does the answer for another observation
    prior_draws = MEAN + math.sqrt(VAR) * np.asarray(jax.random.normal(KEY, (n, D)))
    assert not moments_ok(prior_draws, mean, cov, n / 3)
    wrong = mcgdiff(
        KEY,
        PRIOR,
        D,
        linear_gaussian_likelihood(A, Y + 1.0, SIGMA),
        num_particles=n,
        prior_nfe_budget=100,
    )
    assert not moments_ok(wrong.samples[:, 0], mean, cov, n / 3)


@pytest.mark.parametrize("sigma", [1e-3, 1e3])
def test_extreme_noise_levels_stay_finite_and_right(sigma):
    # tiny noise: pinned at t = 0, the last step carries the guidance; huge noise:
    # pinned at the horizon, the observation barely matters
    y = A @ MEAN + 0.3
    res = mcgdiff(
        KEY,
        PRIOR,
        D,
        linear_gaussian_likelihood(A, y, sigma),
        num_particles=2000,
        prior_nfe_budget=60,
    )
    x = np.asarray(res.samples[:, 0])
    assert np.all(np.isfinite(x)) and np.isfinite(res.extras["log_evidence"])
    # measured: sigma = 1e-3, |A x - y| ~ 8e-4 (but the last step keeps ~18 of 2000
    # effective particles); sigma = 1e3, mean within 0.03 of the prior's
    if sigma < 1:
        assert np.max(np.abs(x @ A.T - y).mean(0)) < 0.15
    else:  # the prior
        assert np.max(np.abs(x.mean(0) - MEAN)) < 0.15


def test_mode_weights_of_a_25_mode_problem():
    # d = 8, d_y = 2, posterior weights 0.53 / 0.18 / 0.17 / 0.10 (seed 5)
    problem = gmm.make_problem(5, dim=8, obs_dim=2)
    prior = rb.targets.score_only(mixture_target(problem.prior))
    lik = linear_gaussian_likelihood(problem.obs_matrix, problem.y, problem.sigma)
    res = mcgdiff(KEY, prior, 8, lik, num_particles=2000, prior_nfe_budget=100)
    tv = gmm.mode_tv(problem.posterior, res.samples[:, 0])
    assert tv < 0.15, tv  # measured 0.055 / 0.105 / 0.085 for keys 0 / 1 / 2
    # a sampler ignoring y lands on the prior's uniform mode weights (TV 0.84)
    prior_draws = rb.targets.analytic.sample_mixture(KEY, problem.prior, 2000)
    assert gmm.mode_tv(problem.posterior, prior_draws) > 0.3


def test_prior_nfe_is_the_real_count():
    counter = Counter()
    prior = counter.target(rb.targets.gaussian(MEAN, VAR), hide_logdensity=True)
    n = 4
    res = mcgdiff(
        KEY,
        prior,
        D,
        linear_gaussian_likelihood(A, Y, SIGMA),
        num_particles=n,
        prior_nfe_budget=13,
    )
    assert counter.count("logdensity") == 0
    assert res.prior_nfe == 13.0
    assert res.prior_nfe * n == counter.nfe()


def _lik(forward, variance=None, **kw):
    variance = variance or (lambda x, u: jnp.full(2, 0.25))
    return Likelihood(
        gaussian=GaussianObservation(forward, jnp.zeros(2), variance), **kw
    )


def test_linear_gaussian_form_recovers_and_refuses():
    b = jnp.array([0.5, -1.0])
    lik = _lik(lambda x, u: jnp.asarray(A, jnp.float32) @ x + b)
    A_hat, resid, s2 = linear_gaussian_form(lik, D)
    np.testing.assert_allclose(A_hat, A, rtol=1e-6)
    np.testing.assert_allclose(resid, -b)
    assert s2 == pytest.approx(0.25)
    # per-coordinate variances are whitened
    whitened = _lik(lambda x, u: x[:2], lambda x, u: jnp.array([4.0, 0.25]))
    A_w, _, s2_w = linear_gaussian_form(whitened, D)
    np.testing.assert_allclose(A_w, [[0.5, 0, 0], [0, 2.0, 0]])
    assert s2_w == 1.0
    msg = "mcgdiff needs a linear-Gaussian likelihood with one noise variance"
    bad = {
        "not linear": _lik(lambda x, u: jnp.stack([x[0] ** 2, x[1]])),
        "other": _lik(lambda x, u: x[:2], other=lambda x, u: -jnp.sum(x**2)),
        "latent parameters": _lik(
            lambda x, u: x[:2],
            num_params=1,
            log_prior=lambda u: 0.0,
            init_params=lambda k: jnp.zeros(1),
        ),
        "depends on x": _lik(lambda x, u: x[:2], lambda x, u: 1.0 + x[:2] ** 2),
        "no Gaussian": Likelihood(other=lambda x, u: 0.0),
    }
    for why, likelihood in bad.items():
        with pytest.raises(ValueError, match=msg) as info:
            linear_gaussian_form(likelihood, D)
        assert why in str(info.value)
        with pytest.raises(ValueError, match=msg):
            mcgdiff(KEY, PRIOR, D, likelihood, num_particles=4, prior_nfe_budget=3)


def test_bad_inputs_are_refused_by_name():
    lik = linear_gaussian_likelihood(A, Y, SIGMA)
    ok = dict(
        rng_key=KEY,
        prior=PRIOR,
        dim=D,
        likelihood=lik,
        num_particles=4,
        prior_nfe_budget=3,
    )
    rows = [
        ("rng_key", 0, TypeError),
        ("prior", "prior", TypeError),
        ("dim", 0, ValueError),
        ("dim", 2.5, TypeError),
        ("likelihood", "lik", TypeError),
        ("num_particles", 1, ValueError),
        ("prior_nfe_budget", 0, ValueError),
        ("prior_nfe_budget", None, ValueError),
        ("times", [1.0, 2.0, 0.0], ValueError),
        ("horizon", -1.0, ValueError),
        ("t_min", 10.0, ValueError),
    ]
    for name, value, error in rows:
        with pytest.raises(error, match=name):
            mcgdiff(**{**ok, name: value})
    # dim must match the forward map
    with pytest.raises(ValueError, match="mcgdiff needs"):
        mcgdiff(**{**ok, "dim": 4})


def test_one_compiled_run_serves_every_observation(monkeypatch):
    # The observation, operator and grid are data of the compiled run: a new y
    # (same shapes) reuses it and gives the right posterior for that y.
    import sys

    # (the package's `mcgdiff` attribute is the function; the module is here)
    module = sys.modules["rtk_blackjax.posterior.mcgdiff"]

    builds = []
    real_build = module._build
    monkeypatch.setattr(
        module, "_build", lambda *args: builds.append(args) or real_build(*args)
    )
    prior = rb.targets.score_only(rb.targets.gaussian(jnp.asarray(MEAN), VAR))
    n = 4000
    for y in (Y, Y + 3.0):
        lik = linear_gaussian_likelihood(A, y, SIGMA)
        res = mcgdiff(KEY, prior, D, lik, num_particles=n, prior_nfe_budget=40)
        mean, cov, _ = gaussian_posterior(y)
        assert moments_ok(res.samples[:, 0], mean, cov, n_eff=n / 4)
    assert len(builds) == 1
