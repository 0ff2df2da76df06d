"""Samplers for NumPyro models known only by their log density, on hard targets.

Every target is a NumPyro model with a known answer; every method sees only the
model (its flat unconstrained log density and gradient, through NumPyro or
:func:`rtk_blackjax.adapters.numpyro_model.model_density`).

Targets
-------
``funnel10``
    Neal's funnel, d = 10: ``v ~ N(0, 3)``, ``x_i | v ~ N(0, e^{v/2})``, i = 1..9.
    Exact: means 0, ``sd(v) = 3``, ``sd(x_i) = e^{9/4}`` (``Var x_i = E e^v =
    e^{9/2}``), and the 1% / 99% quantiles of ``v``, ``∓6.98``. The sample sd of
    ``x`` converges slowly (``E x^4 = 3 e^{18}``): the v quantiles say more.
``funnel10_reparam``
    The same model through ``numpyro.handlers.reparam`` with
    ``LocScaleReparam(centered=0)``, NumPyro's documented fix; ``v`` and the
    (deterministic) ``x`` sites are compared with the same truth.
``illcond100``
    A rotated Gaussian, d = 100: sds ``logspace(log10 0.7, log10 253)``, a random
    orthogonal basis (QR of a ``default_rng(0)`` normal matrix), mean
    ``3 N(0, I)``. Exact. Also the sd ratio along the eigen-directions
    (min / median / max), which per-coordinate sds hide.
``banana2``
    ``x1 ~ N(0, sqrt 10)``, ``x2 | x1 ~ N(0.03 (x1^2 - 10), 1)``. Exact:
    ``E x2 = 0``, ``Var x2 = 1 + 0.03^2 Var(x1^2) = 1.18``.
``eight_schools``
    Non-centred eight schools (sites ``mu``, ``tau``, ``theta``). Truth: a long
    NUTS run (``target_accept_prob = 0.95``), computed once per process; its
    largest MCSE of the mean (in sds) is reported as ``truth_mcse_sd``.
``gmm40``
    The 2-D, 40-mode mixture of the diffusion-sampler literature (FAB, DDS,
    PDDS): means uniform in ``[-40, 40]^2`` (``default_rng(0)``), identity
    covariances, equal weights. Exact mixture moments. Mode weights: samples are
    assigned to the nearest mean; the true cell probabilities (1/40 up to overlap
    of nearby modes) come from 10^6 exact draws.
``manywell``
    Many-well, d = 8 (4 pairs): ``log p(x1, x2) = -x1^4 + 6 x1^2 + 0.5 x1 -
    0.5 x2^2`` per pair, 16 modes. Truth: the 1-D ``x1`` marginal by quadrature
    (mean, sd, weight of ``x1 > 0``); ``x2 ~ N(0, 1)``. Mode weight error = TV
    over the 16 joint sign patterns; ``pair_weight_error`` = the ``x1 > 0``
    weight error averaged over pairs.
``label_switching``
    Means ``mu1, mu2 ~ N(0, 5)`` of a 1-D two-component mixture (sd 1, weights
    0.5) fitted to 30 points, 15 from ``N(-2, 1)`` and 15 from ``N(2, 1)``
    (``default_rng(0)``): two symmetric modes, weight 0.5 each exactly. Moments by
    2-D grid quadrature; mode weight error = ``|P(mu1 < mu2) - 0.5|``.
``logistic``
    Bayesian logistic regression on scikit-learn's breast-cancer data
    (standardised features and an intercept, weights ``N(0, 1)``), d = 31.
    Truth: a long NUTS run, as for eight schools.

Methods
-------
``rtk``
    :func:`rtk_blackjax.mcmc.logdensity.sample_model` with its defaults (nothing
    tuned per target). Evaluations = NFE per sample x samples + pilot
    evaluations. Its warnings (``ScaleWarning``, low acceptance), the pilot's
    per-round spread mismatch, whether it converged, and the final draws'
    mismatch are recorded.
``nuts4``, ``nuts16``
    NumPyro NUTS, 500 warmup iterations, 4 / 16 vectorized chains, ``N / chains``
    draws each. Evaluations counted from ``num_steps``, warmup included.
``smc``
    BlackJAX adaptive tempered SMC (``blackjax.smc.adaptive_tempered``: its
    ``build_kernel``, so that the move parameters can change per stage), target
    ESS 0.5, systematic resampling, ``N`` particles, HMC moves (10 moves of 5
    leapfrog steps per stage by default). NumPyro's joint density does not split
    into prior and likelihood in general, so the tempering starts from a *Gaussian
    reference* ``N(x_init, 5^2 I)`` around NumPyro's initial point in unconstrained
    space: "prior" = reference, "likelihood" = log density - reference. Per stage,
    the HMC inverse mass matrix is the particles' weighted variance and the step
    size (``d^{-1/4}`` at the start) is scaled by ``exp(2 (acc - 0.65))`` from the
    previous stage's mean acceptance. Evaluations per particle per stage: one
    likelihood evaluation in the ESS solver, one value-and-gradient at the
    moves' start, one gradient per leapfrog step, one for the new weights.

Metrics
-------
Per (target, method) row, on the flat vector of the compared sites (constrained,
site values flattened in a fixed order): ``mean_err_sd`` = max over coordinates of
``|mean - true| / true sd``; ``sd_ratio_min`` / ``sd_ratio_max`` = extremes of the
per-coordinate sd / true sd (``eig_sd_ratio`` along the eigen-directions for
``illcond100``); ``mode_weight_error`` (TV) where modes exist; ``evaluations``
(log-density/gradient evaluations, ``value_and_grad`` counted once),
``evaluations_per_draw``; ``evaluations_per_ess`` with ESS the *smallest* over
coordinates of ``arviz.ess`` on draws shaped ``(chains, draws)`` (RTK's
independent draws reshaped into 4 "chains"); for SMC, the Kish ESS
``1 / sum w_i^2`` of the final weights (an upper bound: it ignores the
correlation that resampling leaves among particles), and its moments are
weighted. ``seconds`` is wall time, compilation included. A row gets a ✓ when
``|sd ratio - 1| <= 0.05`` for every coordinate (and eigen-direction), the mean
error is at most 0.05 sd and the mode-weight error at most 0.03, each bar raised
to what exact independent draws would reach (below) where that is higher.

The mode-weight error has a noise floor: ``n`` exact independent draws give mode
fractions ``Multinomial(n, w) / n``, whose TV to ``w`` is about
``sum_k sqrt(w_k (1 - w_k) / (2 pi n))`` (0.039 for 40 equal modes and 4000
draws, above the 0.03 bar). ``mode_weight_floor`` is that TV's mean and
``mode_weight_floor_q95`` its 95 % quantile over 2000 simulated multinomials with
``n`` the row's ESS (at most its number of draws); an error up to the quantile is
what an exact sampler with that ESS shows one time in twenty, and passes. The
mean error has the same kind of floor: the largest of ``d`` standardised errors
``N(0, 1) / sqrt(n)`` (``mean_err_floor``, ``mean_err_floor_q95``; at d = 100 and
4000 draws 0.044 / 0.055, above the 0.05 bar).

Usage::

    python benchmarks/logdensity_suite.py --quick              # smoke run
    python benchmarks/logdensity_suite.py --targets banana2,gmm40 --methods rtk,smc
    python benchmarks/logdensity_suite.py --num-samples 4000 --json out.json

``--quick`` is a smoke test, not a benchmark: 200 draws, short warmups and
reference runs, and RTK's pilot cut to 2 rounds of 50 particles. It is bound by
compilation (each ``sample`` call and each NUTS warmup/run compiles anew): ~15 min
for all 36 rows on 2 busy CPU cores. With ``--json`` the file is rewritten after
every row, so an interrupted run keeps its finished rows.
"""

import argparse
import functools
import json
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import arviz as az
import blackjax
import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist
from blackjax.smc import adaptive_tempered, resampling
from numpyro import handlers
from numpyro.infer import MCMC, NUTS
from numpyro.infer.reparam import LocScaleReparam

from rtk_blackjax.adapters.numpyro_model import model_density
from rtk_blackjax.mcmc.logdensity import sample_model

METHODS = ("rtk", "nuts4", "nuts16", "smc")
# The tolerances of the table's ✓.
SD_TOL, MEAN_TOL, MODE_TOL = 0.05, 0.05, 0.03


# ---------------------------------------------------------------------------
# Targets
# ---------------------------------------------------------------------------


@dataclass
class Truth:
    """What a target's draws are compared with.

    mean, sd
        Per coordinate of the flat vector of the target's compared sites.
    mode_labels
        ``(n, d) draws -> (n,) int`` mode index of each draw (``None``: no modes).
    mode_weights
        True probability of each mode index.
    extra
        Target-specific truth (eigenbasis, quantiles, reference MCSE, ...).
    """

    mean: np.ndarray
    sd: np.ndarray
    mode_labels: Callable[[np.ndarray], np.ndarray] | None = None
    mode_weights: np.ndarray | None = None
    extra: dict = field(default_factory=dict)


@dataclass
class Target:
    """A NumPyro model, the sites compared, and how to get its truth."""

    name: str
    model: Callable
    args: tuple
    sites: tuple[str, ...]
    truth: Callable[["Config"], Truth]


@dataclass
class Config:
    """Sizes of one run (the CLI's, or ``--quick``'s)."""

    num_samples: int = 4000
    seed: int = 0
    nuts_warmup: int = 500
    reference_draws: int = 20000  # per chain, 4 chains
    reference_warmup: int = 2000
    smc_steps: int = 10
    smc_leapfrog: int = 5
    smc_reference_sd: float = 5.0
    rtk_kwargs: dict = field(default_factory=dict)


def flatten_sites(samples: dict, sites: tuple[str, ...]) -> np.ndarray:
    """``(n, d)`` array of the given sites, each raveled per draw, in order."""
    cols = [np.asarray(samples[s]).reshape(len(samples[s]), -1) for s in sites]
    return np.concatenate(cols, axis=1).astype(np.float64)


def flatten_chains(by_chain: dict, sites: tuple[str, ...]) -> np.ndarray:
    """``(chains, draws, d)`` from ``MCMC.get_samples(group_by_chain=True)``."""
    num_chains = len(next(iter(by_chain.values())))
    return np.stack(
        [
            flatten_sites({s: by_chain[s][c] for s in sites}, sites)
            for c in range(num_chains)
        ]
    )


def funnel(dim: int = 10) -> None:
    v = numpyro.sample("v", dist.Normal(0.0, 3.0))
    with numpyro.plate("i", dim - 1):
        numpyro.sample("x", dist.Normal(0.0, jnp.exp(v / 2)))


def funnel_reparam(dim: int = 10) -> None:
    # x = 0 + e^{v/2} x_decentered: the geometry NUTS and RTK see is N(0, I)-like.
    with handlers.reparam(config={"x": LocScaleReparam(centered=0)}):
        funnel(dim)


def funnel_truth(dim: int) -> Callable[[Config], Truth]:
    # Quantiles of v ~ N(0, 3): ±3 * 2.3263.
    q = 3.0 * 2.3263478740408408

    def truth(cfg: Config) -> Truth:
        sd = np.r_[3.0, np.full(dim - 1, np.exp(9 / 4))]
        return Truth(np.zeros(dim), sd, extra={"v_q01": -q, "v_q99": q})

    return truth


def gaussian_model(mean: jax.Array, scale_tril: jax.Array) -> None:
    numpyro.sample("x", dist.MultivariateNormal(mean, scale_tril=scale_tril))


def illcond_target(dim: int = 100) -> Target:
    rng = np.random.default_rng(0)
    sds = np.logspace(np.log10(0.7), np.log10(253.0), dim)
    basis, _ = np.linalg.qr(rng.normal(size=(dim, dim)))
    mean = 3.0 * rng.normal(size=dim)
    cov = (basis * sds**2) @ basis.T
    # Cholesky in float64: the variances span five orders of magnitude.
    tril = np.linalg.cholesky(cov)

    def truth(cfg: Config) -> Truth:
        return Truth(mean, np.sqrt(np.diag(cov)), extra={"basis": basis, "eig_sd": sds})

    args = (jnp.asarray(mean, jnp.float32), jnp.asarray(tril, jnp.float32))
    return Target("illcond100", gaussian_model, args, ("x",), truth)


BANANA_B = 0.03


def banana() -> None:
    x1 = numpyro.sample("x1", dist.Normal(0.0, 10.0**0.5))
    numpyro.sample("x2", dist.Normal(BANANA_B * (x1**2 - 10.0), 1.0))


def banana_truth(cfg: Config) -> Truth:
    # Var(x1^2) = 2 sigma^4 = 200 for sigma^2 = 10.
    sd = np.array([10.0**0.5, np.sqrt(1.0 + BANANA_B**2 * 200.0)])
    return Truth(np.zeros(2), sd)


J = 8
Y = np.array([28.0, 8.0, -3.0, 7.0, -1.0, 1.0, 18.0, 12.0])
SIGMA = np.array([15.0, 10.0, 16.0, 11.0, 9.0, 11.0, 10.0, 18.0])


def eight_schools(sigma, y=None) -> None:
    mu = numpyro.sample("mu", dist.Normal(0.0, 5.0))
    tau = numpyro.sample("tau", dist.HalfCauchy(5.0))
    with numpyro.plate("J", sigma.shape[0]):
        theta_tilde = numpyro.sample("theta_tilde", dist.Normal(0.0, 1.0))
        theta = numpyro.deterministic("theta", mu + tau * theta_tilde)
        numpyro.sample("obs", dist.Normal(theta, sigma), obs=y)


# Long-NUTS truths, computed at most once per (target, sizes, seed) in a run.
_REFERENCE_CACHE: dict[tuple, Truth] = {}


def nuts_reference(name: str, model: Callable, args: tuple, sites: tuple[str, ...]):
    """Truth from a long 4-chain NUTS run (``target_accept_prob = 0.95``)."""

    def truth(cfg: Config) -> Truth:
        key = (name, cfg.reference_draws, cfg.reference_warmup, cfg.seed)
        if key not in _REFERENCE_CACHE:
            mcmc = MCMC(
                NUTS(model, target_accept_prob=0.95),
                num_warmup=cfg.reference_warmup,
                num_samples=cfg.reference_draws,
                num_chains=4,
                chain_method="vectorized",
                progress_bar=False,
            )
            start = time.perf_counter()
            mcmc.run(jax.random.key(cfg.seed + 10_000), *args)
            seconds = time.perf_counter() - start
            by_chain = mcmc.get_samples(group_by_chain=True)
            x = flatten_chains(by_chain, sites)
            flat = x.reshape(-1, x.shape[-1])
            mean, sd = flat.mean(0), flat.std(0)
            mcse = np.array(
                [az.mcse(x[:, :, j], method="mean") for j in range(x.shape[2])]
            )
            _REFERENCE_CACHE[key] = Truth(
                mean,
                sd,
                extra={
                    "truth_mcse_sd": float(np.max(mcse / sd)),
                    "reference_draws": int(flat.shape[0]),
                    "reference_seconds": seconds,
                },
            )
        return _REFERENCE_CACHE[key]

    return truth


def eight_schools_target() -> Target:
    args = (jnp.asarray(SIGMA), jnp.asarray(Y))
    sites = ("mu", "tau", "theta")
    truth = nuts_reference("eight_schools", eight_schools, args, sites)
    return Target("eight_schools", eight_schools, args, sites, truth)


def gmm_model(means: jax.Array) -> None:
    k = means.shape[0]
    numpyro.sample(
        "x",
        dist.MixtureSameFamily(
            dist.Categorical(probs=jnp.full(k, 1.0 / k)),
            dist.Normal(means, 1.0).to_event(1),
        ),
    )


def nearest(means: np.ndarray) -> Callable[[np.ndarray], np.ndarray]:
    def labels(x: np.ndarray) -> np.ndarray:
        d2 = ((x[:, None, :] - means[None]) ** 2).sum(-1)
        return np.argmin(d2, axis=1)

    return labels


def gmm_target(num_modes: int = 40, loc: float = 40.0) -> Target:
    means = np.random.default_rng(0).uniform(-loc, loc, size=(num_modes, 2))

    def truth(cfg: Config) -> Truth:
        # Nearby modes overlap, so the nearest-mean cells' probabilities are not
        # exactly 1/40: estimate them from exact draws (MC sd ~1.6e-4 per cell).
        rng = np.random.default_rng(1)
        exact = means[rng.integers(num_modes, size=10**6)] + rng.normal(size=(10**6, 2))
        labels = nearest(means)
        weights = np.bincount(labels(exact), minlength=num_modes) / len(exact)
        # Mixture moments: E x = mean of means, Var x = 1 + variance of the means.
        return Truth(
            means.mean(0),
            np.sqrt(1.0 + means.var(0)),
            mode_labels=labels,
            mode_weights=weights,
        )

    return Target("gmm40", gmm_model, (jnp.asarray(means, jnp.float32),), ("x",), truth)


def manywell_pair_logp(x1, x2):
    return -(x1**4) + 6.0 * x1**2 + 0.5 * x1 - 0.5 * x2**2


class ManyWell(dist.Distribution):
    """Unnormalised many-well density on ``R^{2 * num_pairs}`` (pairs ``(x1, x2)``).

    NumPyro's model checks sample every site once, so ``sample`` returns standard
    normals: a valid point, not a draw from this density (nothing here samples it).
    """

    support = dist.constraints.real_vector

    def __init__(self, num_pairs: int = 4):
        self.num_pairs = num_pairs
        super().__init__(batch_shape=(), event_shape=(2 * num_pairs,))

    def sample(self, key, sample_shape=()):
        return jax.random.normal(key, sample_shape + self.event_shape)

    def log_prob(self, value):
        pairs = value.reshape(value.shape[:-1] + (self.num_pairs, 2))
        return manywell_pair_logp(pairs[..., 0], pairs[..., 1]).sum(-1)


def manywell(num_pairs: int = 4) -> None:
    numpyro.sample("x", ManyWell(num_pairs))


def manywell_target(num_pairs: int = 4) -> Target:
    def truth(cfg: Config) -> Truth:
        # x1's marginal by quadrature: the density is ~e^{-160} of its peak by |x1|=4.
        grid = np.linspace(-5.0, 5.0, 200_001)
        logp = manywell_pair_logp(grid, 0.0)
        p = np.exp(logp - logp.max())
        p /= p.sum()
        m1 = float((grid * p).sum())
        sd1 = float(np.sqrt(((grid - m1) ** 2 * p).sum()))
        w_pos = float(p[grid > 0].sum())
        # Pairs are independent: a sign pattern's probability is a product.
        bits = (np.arange(2**num_pairs)[:, None] >> np.arange(num_pairs)) & 1
        weights = np.prod(np.where(bits == 1, w_pos, 1.0 - w_pos), axis=1)

        def labels(x: np.ndarray) -> np.ndarray:
            positive = x.reshape(len(x), num_pairs, 2)[:, :, 0] > 0
            return (positive * (1 << np.arange(num_pairs))).sum(1)

        return Truth(
            np.tile([m1, 0.0], num_pairs),
            np.tile([sd1, 1.0], num_pairs),
            mode_labels=labels,
            mode_weights=weights,
            extra={"pair_positive_weight": w_pos, "num_pairs": num_pairs},
        )

    return Target("manywell", manywell, (num_pairs,), ("x",), truth)


LS_PRIOR_SD = 5.0


def two_means(y: jax.Array) -> None:
    mu = numpyro.sample("mu", dist.Normal(0.0, LS_PRIOR_SD).expand([2]).to_event(1))
    mix = dist.MixtureSameFamily(
        dist.Categorical(probs=jnp.array([0.5, 0.5])), dist.Normal(mu, 1.0)
    )
    with numpyro.plate("data", y.shape[0]):
        numpyro.sample("y", mix, obs=y)


def label_switching_target() -> Target:
    rng = np.random.default_rng(0)
    y = np.r_[rng.normal(-2.0, 1.0, 15), rng.normal(2.0, 1.0, 15)]

    def truth(cfg: Config) -> Truth:
        # 2-D grid quadrature of the posterior (sd ~0.27 around each mode, so a
        # 0.01 grid over [-8, 8]^2 resolves it).
        g = np.linspace(-8.0, 8.0, 1601)
        m1, m2 = np.meshgrid(g, g, indexing="ij")
        logp = -0.5 * (m1**2 + m2**2) / LS_PRIOR_SD**2
        for yi in y:
            logp += np.logaddexp(-0.5 * (yi - m1) ** 2, -0.5 * (yi - m2) ** 2)
        p = np.exp(logp - logp.max())
        p /= p.sum()
        mean = np.array([(m1 * p).sum(), (m2 * p).sum()])
        sd = np.sqrt([((m1 - mean[0]) ** 2 * p).sum(), ((m2 - mean[1]) ** 2 * p).sum()])

        def labels(x: np.ndarray) -> np.ndarray:
            return (x[:, 0] < x[:, 1]).astype(int)

        # The posterior is symmetric under mu1 <-> mu2: weight exactly 0.5 each.
        return Truth(mean, sd, mode_labels=labels, mode_weights=np.array([0.5, 0.5]))

    args = (jnp.asarray(y, jnp.float32),)
    return Target("label_switching", two_means, args, ("mu",), truth)


def logistic_regression(features: jax.Array, labels: jax.Array | None = None) -> None:
    w = numpyro.sample(
        "w", dist.Normal(0.0, 1.0).expand([features.shape[1]]).to_event(1)
    )
    numpyro.sample("y", dist.Bernoulli(logits=features @ w), obs=labels)


def logistic_target() -> Target:
    from sklearn.datasets import load_breast_cancer

    data = load_breast_cancer()
    x = (data.data - data.data.mean(0)) / data.data.std(0)
    features = np.c_[np.ones(len(x)), x]
    args = (jnp.asarray(features, jnp.float32), jnp.asarray(data.target, jnp.float32))
    truth = nuts_reference("logistic", logistic_regression, args, ("w",))
    return Target("logistic", logistic_regression, args, ("w",), truth)


TARGETS: dict[str, Callable[[], Target]] = {
    "funnel10": lambda: Target("funnel10", funnel, (10,), ("v", "x"), funnel_truth(10)),
    "funnel10_reparam": lambda: Target(
        "funnel10_reparam", funnel_reparam, (10,), ("v", "x"), funnel_truth(10)
    ),
    "illcond100": illcond_target,
    "banana2": lambda: Target("banana2", banana, (), ("x1", "x2"), banana_truth),
    "eight_schools": eight_schools_target,
    "gmm40": gmm_target,
    "manywell": manywell_target,
    "label_switching": label_switching_target,
    "logistic": logistic_target,
}


# ---------------------------------------------------------------------------
# Methods: each returns flat draws (n, d), their weights, chains, evaluations
# ---------------------------------------------------------------------------


@dataclass
class Draws:
    """A method's output, before metrics."""

    x: np.ndarray  # (n, d), flattened compared sites
    weights: np.ndarray  # (n,), normalised
    ess: float
    evaluations: int
    info: dict = field(default_factory=dict)


def mode_weight_floor(
    weights: np.ndarray, n: int, reps: int = 2000, seed: int = 0
) -> tuple[float, float]:
    """Mean and 95 % quantile of the mode-weight TV of ``n`` exact independent draws.

    Examples
    --------
    >>> mean, q95 = mode_weight_floor(np.full(40, 1 / 40), 4000)
    >>> round(mean, 3), mean < q95
    (0.039, True)
    """
    w = np.asarray(weights, np.float64)
    w = w / w.sum()
    counts = np.random.default_rng(seed).multinomial(n, w, size=reps)
    tv = 0.5 * np.abs(counts / n - w).sum(axis=1)
    return float(tv.mean()), float(np.quantile(tv, 0.95))


def mean_error_floor(
    dim: int, n: int, reps: int = 2000, seed: int = 0
) -> tuple[float, float]:
    """Mean and 95 % quantile of ``mean_err_sd`` for ``n`` exact independent draws.

    Each coordinate's standardised mean error is ``N(0, 1) / sqrt(n)``; the row
    reports the largest of ``dim`` of them.

    Examples
    --------
    >>> mean, q95 = mean_error_floor(100, 4000)
    >>> 0.035 < mean < q95 < 0.06
    True
    """
    z = np.random.default_rng(seed).normal(size=(reps, dim))
    worst = np.abs(z).max(axis=1) / np.sqrt(n)
    return float(worst.mean()), float(np.quantile(worst, 0.95))


def min_ess(x_chains: np.ndarray) -> float:
    """Smallest bulk ESS over coordinates of draws shaped ``(chains, draws, d)``."""
    # arviz takes one scalar variable as a (chains, draws) array.
    return float(min(az.ess(x_chains[:, :, j]) for j in range(x_chains.shape[2])))


def run_rtk(target: Target, key: jax.Array, cfg: Config) -> Draws:
    n = cfg.num_samples
    out = sample_model(key, target.model, *target.args, num_samples=n, **cfg.rtk_kwargs)
    x = flatten_sites(out.samples, target.sites)
    # Independent draws: 4 "chains" only to give arviz its input shape.
    m = len(x) // 4 * 4
    pilot = out.pilot
    return Draws(
        x,
        np.full(len(x), 1.0 / len(x)),
        min_ess(x[:m].reshape(4, m // 4, -1)),
        # Pilot and the checks of the draws (Stein, drift) included.
        int(out.result.num_evaluations) * n
        + int(out.pilot_evaluations)
        + out.check_evaluations,
        info={
            "pilot_mismatch": None if pilot is None else list(pilot.mismatch),
            "pilot_converged": None if pilot is None else pilot.converged,
            "final_mismatch": out.mismatch,
            "stein_ratio_range": None
            if out.stein is None
            else [float(out.stein.ratio.min()), float(out.stein.ratio.max())],
            "stein_violated": None if out.stein is None else out.stein.violated,
            "drift_z": None if out.drift is None else out.drift.z,
            "drift_violated": None if out.drift is None else out.drift.violated,
            "pilot_evaluations": int(out.pilot_evaluations),
            "nfe_per_sample": int(out.result.num_evaluations),
        },
    )


def run_nuts(target: Target, key: jax.Array, cfg: Config, num_chains: int) -> Draws:
    mcmc = MCMC(
        NUTS(target.model),
        num_warmup=cfg.nuts_warmup,
        num_samples=max(1, cfg.num_samples // num_chains),
        num_chains=num_chains,
        chain_method="vectorized",
        progress_bar=False,
    )
    # Warmup separately so that its leapfrog steps are counted too.
    mcmc.warmup(key, *target.args, collect_warmup=True, extra_fields=("num_steps",))
    warm_steps = int(np.asarray(mcmc.get_extra_fields()["num_steps"]).sum())
    mcmc.run(
        jax.random.fold_in(key, 1),
        *target.args,
        extra_fields=("num_steps", "diverging"),
    )
    extra = mcmc.get_extra_fields()
    steps = warm_steps + int(np.asarray(extra["num_steps"]).sum())
    by_chain = mcmc.get_samples(group_by_chain=True)
    xc = flatten_chains(by_chain, target.sites)
    x = xc.reshape(-1, xc.shape[-1])
    return Draws(
        x,
        np.full(len(x), 1.0 / len(x)),
        min_ess(xc),
        steps,
        info={
            "warmup_evaluations": warm_steps,
            "divergences": int(np.asarray(extra["diverging"]).sum()),
        },
    )


def run_smc(target: Target, key: jax.Array, cfg: Config) -> Draws:
    key_model, key_init, key_run = jax.random.split(key, 3)
    md = model_density(target.model, *target.args, rng_key=key_model)
    dim, center, ref_sd = md.dim, md.initial_position, cfg.smc_reference_sd
    n, steps, leapfrog = cfg.num_samples, cfg.smc_steps, cfg.smc_leapfrog

    def logprior(x):
        return -0.5 * jnp.sum(((x - center) / ref_sd) ** 2)

    def loglik(x):
        return md.logdensity_fn(x) - logprior(x)

    hmc_step = functools.partial(
        blackjax.hmc.build_kernel(), num_integration_steps=leapfrog
    )
    kernel = adaptive_tempered.build_kernel(
        logprior,
        loglik,
        hmc_step,
        blackjax.hmc.init,
        resampling.systematic,
        target_ess=0.5,
    )

    @jax.jit
    def stage(rng_key, state, step_size):
        # The move's metric from the particles (weighted: they are resampled
        # with these weights just before moving).
        w = state.weights[:, None]
        mean = jnp.sum(w * state.particles, 0)
        var = jnp.sum(w * (state.particles - mean) ** 2, 0)
        params = {
            "step_size": jnp.reshape(step_size, (1,)),
            "inverse_mass_matrix": jnp.maximum(var, 1e-12)[None],
        }
        new_state, info = kernel(rng_key, state, steps, params)
        return new_state, jnp.mean(info.update_info.acceptance_rate)

    particles = center + ref_sd * jax.random.normal(key_init, (n, dim))
    state = adaptive_tempered.init(particles)
    step_size, num_stages, acceptance = dim**-0.25, 0, []
    while float(state.tempering_param) < 1.0 - 1e-6:
        if num_stages >= 1000 or not np.isfinite(float(state.tempering_param)):
            raise RuntimeError(
                f"SMC stuck at tempering parameter {float(state.tempering_param)} "
                f"after {num_stages} stages"
            )
        state, acc = stage(jax.random.fold_in(key_run, num_stages), state, step_size)
        acc = float(acc)
        acceptance.append(acc)
        # Towards HMC's 0.65 acceptance for the next, slightly hotter stage.
        step_size = float(np.clip(step_size * np.exp(2.0 * (acc - 0.65)), 1e-4, 10))
        num_stages += 1
    samples = jax.vmap(md.postprocess_fn)(state.particles)
    x = flatten_sites(samples, target.sites)
    w = np.asarray(state.weights, np.float64)
    w = np.where(np.isfinite(w), w, 0.0)
    w /= w.sum()
    return Draws(
        x,
        w,
        float(1.0 / np.sum(w**2)),
        num_stages * n * (3 + steps * leapfrog),
        info={
            "num_stages": num_stages,
            "mean_acceptance": float(np.mean(acceptance)) if acceptance else None,
            "final_step_size": step_size,
        },
    )


def run_method(method: str, target: Target, key: jax.Array, cfg: Config) -> Draws:
    if method == "rtk":
        return run_rtk(target, key, cfg)
    if method.startswith("nuts"):
        return run_nuts(target, key, cfg, int(method[4:]))
    if method == "smc":
        return run_smc(target, key, cfg)
    raise ValueError(f"unknown method {method!r}; choose from {METHODS}")


# ---------------------------------------------------------------------------
# Metrics
# ---------------------------------------------------------------------------


def weighted_moments(x: np.ndarray, w: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    mean = w @ x
    return mean, np.sqrt(w @ (x - mean) ** 2)


def weighted_quantile(x: np.ndarray, w: np.ndarray, q: float) -> float:
    order = np.argsort(x)
    cdf = np.cumsum(w[order])
    return float(x[order][min(np.searchsorted(cdf, q), len(x) - 1)])


def evaluate(target: Target, truth: Truth, draws: Draws) -> dict:
    """The row's metrics (see the module docstring)."""
    finite = np.all(np.isfinite(draws.x), axis=1)
    x, w = draws.x[finite], draws.weights[finite]
    w = w / w.sum()
    mean, sd = weighted_moments(x, w)
    ratio = sd / truth.sd
    row: dict[str, Any] = {
        "draws": int(len(draws.x)),
        "nonfinite": int((~finite).sum()),
        "mean_err_sd": float(np.max(np.abs(mean - truth.mean) / truth.sd)),
        "sd_ratio_min": float(ratio.min()),
        "sd_ratio_max": float(ratio.max()),
        "evaluations": int(draws.evaluations),
        "evaluations_per_draw": draws.evaluations / len(draws.x),
        "ess": draws.ess,
        "evaluations_per_ess": draws.evaluations / max(draws.ess, 1e-12),
    }
    # The floors' sample size: the ESS, at most the draws (all draws if unknown).
    ess = draws.ess if np.isfinite(draws.ess) else len(x)
    n_eff = int(max(1, min(len(x), round(ess))))
    floor, floor_q95 = mean_error_floor(len(mean), n_eff)
    row["mean_err_floor"], row["mean_err_floor_q95"] = floor, floor_q95
    ok = bool(
        np.all(np.abs(ratio - 1) <= SD_TOL)
        and row["mean_err_sd"] <= max(MEAN_TOL, floor_q95)
    )
    if truth.mode_labels is not None:
        k = len(truth.mode_weights)
        frac = np.bincount(truth.mode_labels(x), weights=w, minlength=k)
        row["mode_weight_error"] = 0.5 * float(np.abs(frac - truth.mode_weights).sum())
        row["modes_visited"] = int((frac > 0).sum())
        floor, floor_q95 = mode_weight_floor(truth.mode_weights, n_eff)
        row["mode_weight_floor"], row["mode_weight_floor_q95"] = floor, floor_q95
        ok = ok and row["mode_weight_error"] <= max(MODE_TOL, floor_q95)
    if "basis" in truth.extra:
        proj = (x - truth.mean) @ truth.extra["basis"]
        eig = np.sqrt(w @ proj**2) / truth.extra["eig_sd"]
        row["eig_sd_ratio"] = [
            float(eig.min()),
            float(np.median(eig)),
            float(eig.max()),
        ]
        ok = ok and bool(np.all(np.abs(eig - 1) <= SD_TOL))
    if "v_q01" in truth.extra:  # funnels: v is the first coordinate
        row["v_q01"] = weighted_quantile(x[:, 0], w, 0.01)
        row["v_q99"] = weighted_quantile(x[:, 0], w, 0.99)
    if "pair_positive_weight" in truth.extra:
        pairs = x.reshape(len(x), truth.extra["num_pairs"], 2)[:, :, 0] > 0
        row["pair_weight_error"] = float(
            np.mean(np.abs(w @ pairs - truth.extra["pair_positive_weight"]))
        )
    if "truth_mcse_sd" in truth.extra:
        row["truth_mcse_sd"] = truth.extra["truth_mcse_sd"]
    row["ok"] = ok
    return row


# ---------------------------------------------------------------------------
# Driver
# ---------------------------------------------------------------------------


def run_row(target: Target, truth: Truth, method: str, key, cfg: Config) -> dict:
    row: dict[str, Any] = {"target": target.name, "method": method}
    start = time.perf_counter()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            draws = run_method(method, target, key, cfg)
        except Exception as err:  # a failed method is a result too: keep going
            draws = None
            row["error"] = f"{type(err).__name__}: {str(err)[:300]}"
    row["seconds"] = time.perf_counter() - start
    if draws is not None:
        row.update(evaluate(target, truth, draws))
        row.update(draws.info)
    else:
        row["ok"] = False
    row["warnings"] = [
        {"category": w.category.__name__, "message": str(w.message)[:150]}
        for w in caught
    ]
    return row


def _fmt(v: float | None, spec: str = ".3f") -> str:
    return "—" if v is None else format(v, spec)


def print_table(rows: list[dict]) -> None:
    print(
        "\n| target | method | evals | evals/draw | evals/ESS | mean err (sd) | "
        "sd ratio min–max | mode err | extra | s | ✓ |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        if "error" in r:
            print(
                f"| {r['target']} | {r['method']} | failed: {r['error'][:80]} "
                f"| | | | | | | {r['seconds']:.0f} | |"
            )
            continue
        extra = []
        if "eig_sd_ratio" in r:
            extra.append("eig " + "/".join(f"{v:.2f}" for v in r["eig_sd_ratio"]))
        if "v_q01" in r:
            extra.append(f"v q01/q99 {r['v_q01']:.2f}/{r['v_q99']:.2f} (∓6.98)")
        if "pair_weight_error" in r:
            extra.append(f"pair err {r['pair_weight_error']:.3f}")
        if "truth_mcse_sd" in r:
            extra.append(f"truth mcse {r['truth_mcse_sd']:.3f} sd")
        if r.get("method") == "rtk":
            extra.append(
                f"pilot {r.get('pilot_converged')}, final mismatch "
                f"{_fmt(r.get('final_mismatch'), '.2f')}"
            )
        if r.get("divergences"):
            extra.append(f"{r['divergences']} div")
        if r["warnings"]:
            cats = sorted({w["category"] for w in r["warnings"]})
            extra.append(f"{len(r['warnings'])} warn ({', '.join(cats)})")
        print(
            f"| {r['target']} | {r['method']} | {r['evaluations']:,} | "
            f"{r['evaluations_per_draw']:.0f} | {r['evaluations_per_ess']:.0f} | "
            f"{r['mean_err_sd']:.3f} | {r['sd_ratio_min']:.2f}–{r['sd_ratio_max']:.2f} "
            f"| {_fmt(r.get('mode_weight_error'))} | {'; '.join(extra)} | "
            f"{r['seconds']:.0f} | {'✓' if r['ok'] else ''} |"
        )


def _jsonable(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {k: _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, np.ndarray | jax.Array):
        return np.asarray(obj).tolist()
    if isinstance(obj, np.generic):
        return obj.item()
    return obj


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--targets", default=",".join(TARGETS))
    parser.add_argument("--methods", default=",".join(METHODS))
    parser.add_argument("--num-samples", type=int, default=4000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", help="also write the results to this JSON file")
    parser.add_argument(
        "--quick", action="store_true", help="tiny sizes: a smoke run, not a benchmark"
    )
    parser.add_argument("--smc-steps", type=int, default=10, help="HMC moves/stage")
    parser.add_argument("--smc-leapfrog", type=int, default=5)
    parser.add_argument("--smc-reference-sd", type=float, default=5.0)
    parser.add_argument(
        "--reference-draws", type=int, default=20000, help="long-NUTS truth, per chain"
    )
    args = parser.parse_args(argv)
    targets = [t for t in args.targets.split(",") if t]
    methods = [m for m in args.methods.split(",") if m]
    for t in targets:
        if t not in TARGETS:
            parser.error(f"unknown target {t!r}; choose from {', '.join(TARGETS)}")
    for m in methods:
        if m not in METHODS:
            parser.error(f"unknown method {m!r}; choose from {', '.join(METHODS)}")
    cfg = Config(
        num_samples=args.num_samples,
        seed=args.seed,
        smc_steps=args.smc_steps,
        smc_leapfrog=args.smc_leapfrog,
        smc_reference_sd=args.smc_reference_sd,
        reference_draws=args.reference_draws,
    )
    if args.quick:
        cfg.num_samples, cfg.nuts_warmup = 200, 100
        cfg.reference_draws, cfg.reference_warmup = 1000, 300
        cfg.smc_steps = 3
        cfg.rtk_kwargs = {"num_pilot_rounds": 2, "pilot_particles": 50}
    key = jax.random.key(cfg.seed)
    rows, truths, out = [], {}, {}
    total = time.perf_counter()
    for ti, name in enumerate(targets):
        target = TARGETS[name]()
        start = time.perf_counter()
        truth = target.truth(cfg)
        truths[name] = {
            "mean": truth.mean,
            "sd": truth.sd,
            "mode_weights": truth.mode_weights,
            "seconds": time.perf_counter() - start,
            **{k: v for k, v in truth.extra.items() if k != "basis"},
        }
        for mi, method in enumerate(methods):
            row = run_row(
                target, truth, method, jax.random.fold_in(key, 16 * ti + mi), cfg
            )
            rows.append(row)
            status = row.get("error", "ok" if row["ok"] else "")
            print(f"{name:>17s} {method:>6s} {row['seconds']:7.1f} s  {status}")
            out = {
                "args": vars(args),
                "config": vars(cfg),
                "seconds": time.perf_counter() - total,
                "truth": truths,
                "rows": rows,
            }
            if args.json:  # after every row: a long run keeps what it finished
                with open(args.json, "w") as f:
                    json.dump(_jsonable(out), f, indent=1, default=float)
    print_table(rows)
    return out


if __name__ == "__main__":
    main()
