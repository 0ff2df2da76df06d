"""End-to-end accuracy of every sampler, each with a negative control.

Targets where the moves matter: an anisotropic Gaussian (variances 0.1 and 1 along
axes rotated by 45 degrees: RTK's per-coordinate curvature makes its predictor exact
on an axis-aligned Gaussian, so the rotation is what leaves the moves work to do)
and a two-mode mixture with unequal weights (0.25 / 0.75, within-mode variance
0.1), on a coarse grid (8 geometric segments), where RTK's Gaussian predictor alone
is visibly wrong. Every test asserts that its check PASSES for the real sampler
and FAILS for the same sampler with its moves switched off (zero inner steps,
predictor only, or a grid too coarse for a baseline), so the check is known to be
able to see the wrong answer.

Tolerances: ``Z`` Monte Carlo standard errors at the test's sample size (means:
``sqrt(v / n)``; variances: ``v sqrt(2 / (n - 1))``; mode weights:
``sqrt(w (1 - w) / n)``). Runs are seeded, so each result is deterministic; with
``Z = 4.5`` a correct sampler would fail a single check with probability ~7e-6.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import rtk_blackjax as rb

Z = 4.5
N = 1000
MEAN = np.array([1.0, -0.5])
# 45 degrees: the predictor-only covariance is then 4-6 standard errors off (at 30
# degrees only about 3, too close to the tolerance to be a control).
_ROTATION = np.array([[1.0, -1.0], [1.0, 1.0]]) / np.sqrt(2.0)
COV = _ROTATION @ np.diag([0.1, 1.0]) @ _ROTATION.T
GAUSS = rb.targets.gaussian(jnp.asarray(MEAN), jnp.asarray(COV))
MODES = np.array([[-1.5, 0.0], [1.5, 0.0]])
WEIGHTS = np.array([0.25, 0.75])
MODE_VAR = 0.1
MIXTURE = rb.targets.gaussian_mixture(
    jnp.asarray(MODES), MODE_VAR, jnp.asarray(WEIGHTS)
)
GRID = rb.geometric_grid(8)


def gaussian_ok(x, mean=MEAN, cov=COV) -> bool:
    """Every coordinate's mean and every covariance entry within ``Z`` standard errors.

    A covariance entry's standard error is ``sqrt((S_ii S_jj + S_ij^2) / (n - 1))``
    (``v sqrt(2 / (n - 1))`` on the diagonal).
    """
    x = np.asarray(x, np.float64)
    n = x.shape[0]
    var = np.diag(cov)
    mean_z = (x.mean(0) - mean) / np.sqrt(var / n)
    cov_se = np.sqrt((np.outer(var, var) + cov**2) / (n - 1))
    cov_z = (np.cov(x, rowvar=False) - cov) / cov_se
    return bool(np.all(np.abs(mean_z) < Z) and np.all(np.abs(cov_z) < Z))


def mixture_ok(x) -> bool:
    """Mode weights, and each mode's mean and per-coordinate variance."""
    x = np.asarray(x, np.float64)
    n = x.shape[0]
    right = x[:, 0] > 0  # modes 3 units apart, std 0.32: misassignment ~1e-6
    w = right.mean()
    if abs(w - WEIGHTS[1]) > Z * np.sqrt(WEIGHTS[0] * WEIGHTS[1] / n):
        return False
    for mask, centre in ((right, MODES[1]), (~right, MODES[0])):
        if mask.sum() < 10:
            return False
        if not gaussian_ok(x[mask], centre, MODE_VAR * np.eye(2)):
            return False
    return True


def _run(algorithm, key=1):
    return rb.sample(jax.random.key(key), algorithm, N, dim=2).samples


RTK = {
    "mala": (lambda t, n: rb.rtk(t, GRID, rb.mala_inner(), n), 25),
    "irmh": (lambda t, n: rb.rtk(t, GRID, rb.independence_inner(), n), 25),
    "uld-adjusted": (lambda t, n: rb.rtk(t, GRID, rb.uld_inner(adjusted=True), n), 25),
    "uld": (lambda t, n: rb.rtk(t, GRID, rb.uld_inner(), n), 25),
}
SCORE_ONLY = {
    "score-mala-lobatto": (
        lambda t, n: rb.rtk(t, GRID, rb.score_mala_inner(rule="lobatto"), n),
        25,
    ),
    "score-mala-projected": (
        lambda t, n: rb.rtk(
            t,
            GRID,
            rb.score_mala_inner(rule="legendre", num_nodes=4, radius_scale=2.0),
            n,
        ),
        25,
    ),
    "uld-score-only": (lambda t, n: rb.rtk(t, GRID, rb.uld_inner(), n), 25),
}


def _both(make, steps, score_only=False):
    results = {}
    for name, target, check in (
        ("gaussian", GAUSS, gaussian_ok),
        ("mixture", MIXTURE, mixture_ok),
    ):
        target = rb.targets.score_only(target) if score_only else target
        results[name] = (
            check(_run(make(target, steps))),
            check(_run(make(target, 0))),
        )
    return results


# slow under load (1-2.5 min each on a shared 2-core machine): ULD and the
# quadrature-based score-MALA; MALA, IRMH and score-only ULD stay in the fast set
_SLOW = {"uld", "uld-adjusted", "score-mala-lobatto", "score-mala-projected"}


def _params(cases):
    return [
        pytest.param(c, marks=pytest.mark.slow) if c in _SLOW else c
        for c in sorted(cases)
    ]


@pytest.mark.parametrize("case", _params(RTK))
def test_rtk_inner_kernels_are_accurate_and_needed(case):
    make, steps = RTK[case]
    results = _both(make, steps)
    for name, (real, control) in results.items():
        assert real, f"{case} on the {name} target"
        assert not control, f"{case} without inner steps passes on {name}"


@pytest.mark.parametrize("case", _params(SCORE_ONLY))
def test_score_only_rtk_is_accurate_and_needs_its_moves(case):
    make, steps = SCORE_ONLY[case]
    results = _both(make, steps, score_only=True)
    for name, (real, control) in results.items():
        assert real, f"{case} on the {name} target"
        assert not control, f"{case} without inner steps passes on {name}"


def test_rtk_with_blackjax_hmc_inner_kernel():
    def params(geometry):
        return dict(
            step_size=0.5 * jnp.sqrt(geometry.gaussian_variance),
            inverse_mass_matrix=jnp.ones(geometry.dim),
            num_integration_steps=3,
        )

    inner = rb.inner_kernel(blackjax_hmc(), params, evaluations_per_step=3)
    assert gaussian_ok(_run(rb.rtk(GAUSS, GRID, inner, 10)))
    assert not gaussian_ok(_run(rb.rtk(GAUSS, GRID, inner, 0)))


def blackjax_hmc():
    import blackjax

    return blackjax.hmc


@pytest.mark.parametrize(
    "make",
    [rb.ddpm, rb.ddim, rb.dpm_solver_pp, rb.heun_pf_ode],
    ids=["ddpm", "ddim", "dpm_solver_pp", "heun_pf_ode"],
)
def test_baselines_converge_and_a_coarse_grid_is_seen(make):
    assert gaussian_ok(_run(make(GAUSS, rb.geometric_grid(64))))
    assert not gaussian_ok(_run(make(GAUSS, rb.geometric_grid(3))))


def test_predictor_corrector_needs_its_corrector():
    grid = rb.geometric_grid(16)
    real = rb.predictor_corrector(GAUSS, grid, corrector_steps=10)
    control = rb.predictor_corrector(GAUSS, grid, corrector_steps=0)
    assert gaussian_ok(_run(real))
    assert not gaussian_ok(_run(control))


def test_diffusion_prior_samples_with_variances():
    from rtk_blackjax.posterior import DiffusionPrior

    real = DiffusionPrior(GAUSS, algorithm=rb.rtk(GAUSS, GRID, rb.mala_inner(), 25))
    control = DiffusionPrior(GAUSS, algorithm=rb.rtk(GAUSS, GRID, rb.mala_inner(), 0))
    assert gaussian_ok(real.sample(jax.random.key(3), (N,)))
    assert not gaussian_ok(control.sample(jax.random.key(3), (N,)))


@pytest.mark.slow
def test_log_density_path_weighs_the_modes_and_needs_its_importance_step():
    # sample_model (diffusion Monte Carlo on the augmented joint) knows the mixture
    # only through a NumPyro model's log density; with the documented defaults it
    # must weigh the two modes (0.25 / 0.75) and get each mode's variance. The i-SIR
    # step is its only inter-mode move: without it (num_importance=0) every draw
    # stays in the mode it started in (measured: right-mode fraction 0.0).
    import numpyro
    import numpyro.distributions as dist

    from rtk_blackjax.adapters import sample_model

    def model():
        mix = dist.MixtureSameFamily(
            dist.Categorical(probs=jnp.asarray(WEIGHTS)),
            dist.MultivariateNormal(jnp.asarray(MODES), MODE_VAR * jnp.eye(2)),
        )
        numpyro.sample("x", mix)

    def draws(**kwargs):
        out = sample_model(jax.random.key(0), model, num_samples=N, **kwargs)
        return out.samples["x"]

    assert mixture_ok(draws())
    assert not mixture_ok(draws(num_importance=0))
