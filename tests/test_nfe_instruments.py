"""Every reported NFE against an instrument that counts real evaluations.

The counter (:mod:`instruments`) records each score / log-density / VJP /
likelihood evaluation the compiled program executes. Reported counts are compared
with it, never with a formula built from the library's declared costs. One
particle (or chain) per run wherever a trip count could differ between particles
(see the instruments' docstring on ``vmap``).
"""

import blackjax
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from instruments import Counter

import rtk_blackjax as rb
from rtk_blackjax.adapters import rtk_logdensity
from rtk_blackjax.posterior import (
    DiffusionPrior,
    calibrate_grid,
    dps_linear_gaussian,
    nuts_linear_gaussian,
    smc_linear_gaussian,
    split_gibbs_linear_gaussian,
)

DIM = 3
BASE = rb.targets.chessboard(dim=DIM)


def test_counter_semantics():
    """What the instrument counts under jit / vmap / loops / autodiff."""
    counter = Counter()
    gaussian = rb.targets.gaussian(jnp.zeros(2), 1.0)
    target = counter.target(gaussian)
    with_vjp = counter.target(gaussian, vjp=True)

    def f(x):
        value, grad = jax.value_and_grad(lambda z: target.logdensity(z, 0.5))(x)
        return value + jnp.sum(target.score(x, 0.5)) + jnp.sum(grad)

    jax.jit(jax.vmap(f))(jnp.ones((5, 2)))
    # per vmap element: a value_and_grad (one logdensity call) and a score call
    # on the same traced x are one value-and-score evaluation
    assert counter.count("logdensity") == 5 and counter.count("score") == 5
    assert counter.nfe() == 5
    counter.reset()

    def recomputed(x):
        y = jax.lax.fori_loop(0, 2, lambda i, z: z + target.score(z, 0.5), x)
        return target.logdensity(y, 0.5) + jnp.sum(target.score(y * 1.0, 0.5))

    jax.jit(recomputed)(jnp.ones(2))
    # the score of a value equal to, but traced apart from, another: 2 + 2 calls
    assert counter.nfe() == 4
    counter.reset()
    # a score whose result is never used is dead code: not executed, not counted
    jax.jit(lambda x: (target.score(x, 0.3), x)[1])(jnp.ones(2))
    assert counter.nfe() == 0
    # the library's joint evaluation: value and score in one custom_jvp rule, with
    # the same traced (x, t), count as ONE
    x = jnp.ones(2)

    @jax.custom_jvp
    def joint(x):
        return target.logdensity(x, 0.5)

    @joint.defjvp
    def _(primals, tangents):
        (x,), (dx,) = primals, tangents
        return target.logdensity(x, 0.5), jnp.vdot(target.score(x, 0.5), dx)

    jax.jit(jax.value_and_grad(joint))(x)
    assert counter.count("logdensity") == 1 and counter.count("score") == 1
    assert counter.nfe() == 1
    counter.reset()

    def score_and_vjp(x):
        out, pullback = jax.vjp(lambda z: with_vjp.score(z, 0.1), x)
        return out, pullback(x)

    jax.jit(score_and_vjp)(jnp.ones(2))
    assert counter.count("score") == 1 and counter.count("vjp") == 1
    assert counter.nfe() == 2
    counter.reset()

    def loop(x):
        return jax.lax.fori_loop(0, 4, lambda i, z: target.score(z, 0.2) + z, x)

    jax.jit(loop)(jnp.ones(2))
    assert counter.nfe() == 4


def _sample_and_count(make_algorithm, base=BASE, hide_logdensity=False):
    counter = Counter()
    target = counter.target(base, hide_logdensity=hide_logdensity)
    result = rb.sample(jax.random.key(0), make_algorithm(target), 1, dim=DIM)
    per_segment = int(np.asarray(result.info.num_evaluations).sum())
    return result.num_evaluations, counter.nfe(), per_segment


RTK_CASES = {
    "mala": lambda t: rb.rtk(t, rb.geometric_grid(5), rb.mala_inner(), 3),
    "mala-schedule": lambda t: rb.rtk(
        t, rb.geometric_grid(4), rb.mala_inner(), [0, 3, 1, 0]
    ),
    "mala-ddpm-nosecant": lambda t: rb.rtk(
        t, rb.uniform_grid(3), rb.mala_inner(), 2, predictor="ddpm", curvature="none"
    ),
    "mala-tweedie": lambda t: rb.rtk(
        t, rb.uniform_grid(3), rb.mala_inner(), 2, predictor="tweedie"
    ),
    "irmh": lambda t: rb.rtk(t, rb.uniform_grid(3), rb.independence_inner(), 2),
    "uld": lambda t: rb.rtk(t, rb.geometric_grid(4), rb.uld_inner(), 4),
    "uld-adjusted": lambda t: rb.rtk(
        t, rb.geometric_grid(4), rb.uld_inner(adjusted=True), 4
    ),
}

SCORE_ONLY_CASES = {
    "score-mala-lobatto": lambda t: rb.rtk(
        t, rb.geometric_grid(4), rb.score_mala_inner(rule="lobatto", num_nodes=3), 3
    ),
    "score-mala-legendre": lambda t: rb.rtk(
        t, rb.geometric_grid(4), rb.score_mala_inner(rule="legendre", num_nodes=4), 2
    ),
    "score-mala-projected": lambda t: rb.rtk(
        t,
        rb.geometric_grid(4),
        rb.score_mala_inner(rule="legendre", num_nodes=2, radius_scale=1.5),
        2,
    ),
    "uld-score-only": lambda t: rb.rtk(t, rb.geometric_grid(4), rb.uld_inner(), 3),
    "mala-score-only-zero-steps": lambda t: rb.rtk(
        t, rb.geometric_grid(4), rb.mala_inner(), 0
    ),
}

BASELINE_CASES = {
    "ddpm": lambda t: rb.ddpm(t, rb.geometric_grid(7)),
    "ddpm-no-denoise": lambda t: rb.ddpm(t, rb.geometric_grid(7), final_denoise=False),
    "ddim": lambda t: rb.ddim(t, rb.geometric_grid(7)),
    "dpm_solver_pp": lambda t: rb.dpm_solver_pp(t, rb.geometric_grid(6)),
    "heun_pf_ode": lambda t: rb.heun_pf_ode(t, rb.geometric_grid(6)),
    "predictor_corrector": lambda t: rb.predictor_corrector(
        t, rb.geometric_grid(5), corrector_steps=2
    ),
}


@pytest.mark.parametrize("case", sorted(RTK_CASES))
def test_rtk_nfe_is_the_real_count(case):
    reported, counted, per_segment = _sample_and_count(RTK_CASES[case])
    assert reported == counted
    assert reported - per_segment == 1  # the score at the horizon


@pytest.mark.parametrize("case", sorted(SCORE_ONLY_CASES))
def test_score_only_rtk_nfe_is_the_real_count(case):
    reported, counted, per_segment = _sample_and_count(
        SCORE_ONLY_CASES[case], hide_logdensity=True
    )
    assert reported == counted
    assert reported - per_segment == 1


@pytest.mark.parametrize("case", sorted(BASELINE_CASES))
def test_baseline_nfe_is_the_real_count(case):
    reported, counted, per_segment = _sample_and_count(
        BASELINE_CASES[case], hide_logdensity=True
    )
    assert reported == counted
    assert reported - per_segment in (0, 1)


def _hmc_parameters(geometry):
    return dict(
        step_size=0.3 * jnp.sqrt(geometry.gaussian_variance),
        inverse_mass_matrix=jnp.ones(geometry.dim),
        num_integration_steps=5,
    )


def test_blackjax_hmc_with_declared_cost_is_the_real_count():
    inner = rb.inner_kernel(blackjax.hmc, _hmc_parameters, evaluations_per_step=5)
    reported, counted, _ = _sample_and_count(
        lambda t: rb.rtk(t, rb.geometric_grid(4), inner, 2)
    )
    assert reported == counted


def test_blackjax_hmc_without_declared_cost_is_the_real_count():
    inner = rb.inner_kernel(blackjax.hmc, _hmc_parameters)
    reported, counted, _ = _sample_and_count(
        lambda t: rb.rtk(t, rb.geometric_grid(4), inner, 2)
    )
    assert reported == counted


@pytest.mark.slow
def test_diffusion_prior_nfe_is_the_real_count():
    counter = Counter()
    prior = DiffusionPrior(counter.target(BASE), nfe=40)
    reported = prior.num_evaluations
    counter.reset()
    prior.sample(jax.random.key(1), (1,))
    assert reported == counter.nfe()
    counter.reset()
    # vmap over draws: the callback fires per draw
    prior.sample(jax.random.key(2), (3,))
    assert 3 * reported == counter.nfe()


@pytest.mark.parametrize(
    "num_importance",
    [
        [3, 3, 3],
        [4, 2, 0],
    ],
    ids=["uniform", "ragged"],
)
def test_rtk_logdensity_nfe_counts_logdensity_evaluations(num_importance):
    counter = Counter()
    base = rb.targets.gaussian(jnp.array([1.0, -1.0]), jnp.array([0.5, 2.0]))
    logdensity_fn = counter.function(lambda x: base.logdensity(x, 0.0))
    alg = rtk_logdensity(
        logdensity_fn,
        times=jnp.array([3.0, 1.0, 0.3, 0.0]),
        num_importance=num_importance,
        num_inner_steps=[1, 2, 3],
    )
    result = rb.sample(jax.random.key(0), alg, 1, dim=2)
    assert result.num_evaluations == counter.nfe()


LG_A = np.array([[1.0, 0.5, 0.0], [0.0, 1.0, -1.0]])
LG_Y = np.array([0.3, 1.2])
LG_SIGMA = 0.4
LG_PRIOR = rb.targets.gaussian(jnp.array([1.0, -1.0, 0.5]), 0.5)


def test_dps_prior_nfe_counts_scores_and_vjps():
    counter = Counter()
    prior = counter.target(LG_PRIOR, vjp=True)
    res = dps_linear_gaussian(
        jax.random.key(0),
        prior,
        LG_A,
        LG_Y,
        LG_SIGMA,
        num_samples=1,
        prior_nfe_budget=12,
    )
    assert res.prior_nfe == counter.nfe()
    assert counter.count("vjp") == counter.count("score")
    assert res.likelihood_evals == counter.count("vjp")


@pytest.mark.slow
def test_smc_prior_nfe_is_the_real_count():
    counter = Counter()
    prior = counter.target(LG_PRIOR)
    n = 4  # fixed trip counts: every particle costs the same, callbacks per particle
    res = smc_linear_gaussian(
        jax.random.key(0),
        prior,
        LG_A,
        LG_Y,
        LG_SIGMA,
        num_particles=n,
        prior_nfe_budget=13,
        num_inner_steps=2,
    )
    assert res.prior_nfe * n == counter.nfe()


@pytest.mark.slow
@pytest.mark.parametrize("score_only", [False, True], ids=["weights", "score-only"])
def test_calibrate_grid_prior_nfe_is_the_real_count(score_only):
    counter = Counter()
    prior = counter.target(LG_PRIOR, hide_logdensity=score_only)
    grid = calibrate_grid(
        jax.random.key(0), prior, 3, 4, num_particles=8, pilot_segments=6
    )
    assert grid.signal == ("kernel-mismatch" if score_only else "weights")
    assert grid.prior_nfe == counter.nfe()


@pytest.mark.slow
def test_split_gibbs_prior_nfe_is_the_real_count():
    counter = Counter()
    prior = counter.target(LG_PRIOR)
    num_chains, num_draws = 2, 3
    res = split_gibbs_linear_gaussian(
        jax.random.key(0),
        prior,
        LG_A,
        LG_Y,
        LG_SIGMA,
        num_chains=num_chains,
        num_draws=num_draws,
        prior_nfe_budget=300,
        num_segments=6,
    )
    assert res.prior_nfe * num_chains * num_draws == counter.nfe()


@pytest.mark.slow
def test_nuts_prior_nfe_is_the_real_count():
    counter = Counter()
    prior = counter.target(LG_PRIOR)
    res = nuts_linear_gaussian(
        jax.random.key(0),
        prior,
        LG_A,
        LG_Y,
        LG_SIGMA,
        num_chains=1,
        num_draws=10,
        num_warmup=10,
    )
    assert res.prior_nfe * 10 == counter.nfe()


def test_checks_of_the_draws_count_their_evaluations():
    # sample_logdensity's checks of the final draws: Stein's identity (one
    # gradient per draw) and the drift check (MALA from every draw, plus its
    # step tuning), each compared with what ran.
    from rtk_blackjax.mcmc.logdensity import drift_check, stein_check

    draws = jax.random.normal(jax.random.key(0), (5, 2))
    counter = Counter()
    logp = counter.function(lambda x: -0.5 * jnp.sum(x**2))
    assert stein_check(logp, draws).num_evaluations == counter.nfe()
    counter.reset()
    check = drift_check(jax.random.key(1), logp, draws, num_steps=3)
    assert check.num_evaluations == counter.nfe()


@pytest.mark.parametrize(
    "schedule",
    [
        dict(num_importance=[3, 2, 0], num_inner_steps=[1, 2, 1]),
        # none given: the final run's per-segment candidates and MALA steps are
        # cut from the pilot's measurements (adapted_schedule), so segments
        # evaluate different numbers of candidates; the count must follow
        {},
    ],
    ids=["given", "adapted"],
)
def test_sample_logdensity_reports_every_evaluation_it_spends(schedule):
    # The whole budget of sample_logdensity (pilot rounds, final run, checks of
    # the draws) against one instrument around the user's log density. The
    # library counts per particle; a run whose particles all start at the same
    # point (every standardised pilot round and the final run: the fit's mean)
    # evaluates that start once for all of them, so the instrument sees
    # particles - 1 fewer evaluations per such run than the per-particle sum.
    from rtk_blackjax.mcmc.logdensity import sample_logdensity

    counter = Counter()
    scales = jnp.array([4.0, 0.25])
    logp = counter.function(lambda x: -0.5 * jnp.sum((x - 1.0) ** 2 / scales))
    particles, draws = 4, 3
    out = sample_logdensity(
        jax.random.key(0),
        logp,
        2,
        num_samples=draws,
        num_pilot_rounds=2,
        pilot_particles=particles,
        times=jnp.array([3.0, 1.0, 0.3, 0.0]),
        **schedule,
    )
    if not schedule:
        m = out.schedule.num_importance
        assert m[-1] == 0 and 0 < m.max() < 32  # adapted, from 32 candidates
    reported = (
        out.pilot_evaluations
        + draws * out.result.num_evaluations
        + out.check_evaluations
    )
    standardised_rounds = len(out.pilot.mismatch)
    assert standardised_rounds == 1 and out.check_evaluations > 0
    shared_starts = standardised_rounds * (particles - 1) + (draws - 1)
    assert reported - shared_starts == counter.nfe()


def test_rtk_numpyro_kernel_reports_every_evaluation_it_spends():
    # RTKKernel's pilot (kernel.pilot_evaluations) and its per-draw count (the
    # num_evaluations field) against one instrument inside the NumPyro model: the
    # likelihood's mean reads mu through the counter, so every evaluation of the
    # model's log density (and of its gradient, which needs that value) runs one
    # recorded callback.
    import numpyro
    import numpyro.distributions as dist

    from rtk_blackjax.adapters.numpyro_kernel import RTKKernel
    from rtk_blackjax.adapters.numpyro_model import model_density

    counter = Counter()
    identity = counter.function(lambda z: z)
    y = jnp.array([0.9, 2.1, 1.4, 0.3, 1.8])

    def model(y):
        mu = numpyro.sample("mu", dist.Normal(0.0, 2.0))
        with numpyro.plate("data", y.shape[0]):
            numpyro.sample("y", dist.Normal(identity(mu), 1.0), obs=y)

    settings = dict(
        times=jnp.array([3.0, 1.0, 0.3, 0.0]),
        num_importance=[3, 2, 0],
        num_inner_steps=[1, 2, 1],
        pilot_particles=4,
    )
    key = jax.random.key(0)
    key_model, _ = jax.random.split(key)
    # What building the model density costs (initial position search): the same
    # calls RTKKernel makes before its pilot, measured on their own.
    model_density(model, y, rng_key=key_model)
    setup = counter.nfe()
    counter.reset()

    kernel = RTKKernel(model, num_pilot_rounds=1, **settings)
    state = kernel.init(key, 0, None, (y,), {})
    assert kernel.pilot_evaluations > 0
    assert kernel.pilot_evaluations == counter.nfe() - setup

    # Per draw, with two chains in one batch (chain_method="vectorized", how
    # MCMC runs chains by default here): the declared count is what runs. Under
    # vmap the i-SIR's "gradient at the chosen point" cond has a batched
    # predicate, so it runs on every segment whether or not the draw moved.
    # As in sample_logdensity's runs, every chain starts its draw's x_0 at the
    # same point (the standardised mean), which the batch evaluates once for all
    # chains: the library counts it per chain (chains - 1 more per draw).
    keys = jax.random.split(jax.random.key(1), 2)
    batched = kernel.init(keys, 0, None, (y,), {})
    counter.reset()
    reported = 0
    for _ in range(3):
        batched = kernel.sample(batched, (y,), {})
        reported += int(jnp.sum(batched.num_evaluations))
    shared_starts = 3 * (2 - 1)
    assert reported - shared_starts == counter.nfe()

    # One chain unbatched (chain_method="sequential"): that cond then runs only
    # when the i-SIR moves, so the declared count is an upper bound, by at most
    # one evaluation per segment with candidates.
    segments_with_candidates = 2
    counter.reset()
    reported = 0
    for _ in range(3):
        state = kernel.sample(state, (y,), {})
        reported += int(state.num_evaluations)
    assert 0 <= reported - counter.nfe() <= 3 * segments_with_candidates


def _counted_model(counter, vjp=False):
    """A NumPyro model with a counted diffusion prior and an unknown sigma."""
    import numpyro
    import numpyro.distributions as dist

    prior = DiffusionPrior(counter.target(LG_PRIOR, vjp=vjp), nfe=25)
    a = jnp.asarray(LG_A)

    def model(y=None):
        x = numpyro.sample("x", prior)
        sigma = numpyro.sample("sigma", dist.HalfNormal(1.0))
        numpyro.sample("y", dist.Normal(a @ x, sigma).to_event(1), obs=y)

    return model


@pytest.mark.slow
def test_split_gibbs_for_numpyro_models_prior_nfe_is_the_real_count():
    from rtk_blackjax.posterior.split_gibbs import split_gibbs

    counter = Counter()
    num_chains, num_draws = 2, 3
    res = split_gibbs(
        jax.random.key(0),
        _counted_model(counter),
        num_chains=num_chains,
        num_draws=num_draws,
        prior_nfe_budget=200,
        num_segments=3,
        y=jnp.asarray(LG_Y),
    )
    assert res.prior_nfe * num_chains * num_draws == counter.nfe()


@pytest.mark.slow
def test_entry_point_nuts_prior_nfe_is_the_real_count():
    # NUTS through rb.posterior.sample: one chain (data-dependent trees), the
    # reported figure spreads the warmup's and the draws' steps over the draws.
    counter = Counter()
    num_samples = 10
    res = rb.posterior.sample(
        jax.random.key(0),
        _counted_model(counter),
        num_samples=num_samples,
        method="nuts",
        num_chains=1,
        y=jnp.asarray(LG_Y),
    )
    assert res.prior_nfe * num_samples == counter.nfe()
