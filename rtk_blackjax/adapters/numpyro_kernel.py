"""RTK as a ``numpyro.infer.mcmc.MCMCKernel``: ``MCMC(RTKKernel(model), ...)``.

Every call of :meth:`RTKKernel.sample` runs one *full* reverse diffusion per chain
(:func:`rtk_blackjax.mcmc.logdensity.rtk_logdensity` from ``N(0, I)`` at the
horizon down to ``t = 0``) and returns its end point. Successive draws of a
"chain" are therefore independent of each other: the chain is an *independence
sampler* whose draws are approximately (not exactly) from the posterior, and
NumPyro's ESS / R-hat measure how well the draws agree between chains, not
autocorrelation. Warmup draws are ordinary draws (and are discarded); the
adaptation RTK needs, a Gaussian reference of the posterior fitted by small
pilot runs (:func:`~rtk_blackjax.mcmc.logdensity.adapt_reference`), happens
once in :meth:`RTKKernel.init`, and its cost is in
``RTKKernel.pilot_evaluations``.

Per draw the state records (collect them with ``extra_fields``):

* ``num_evaluations``: evaluations of the model's log density or gradient spent
  on this draw (identical for every draw);
* ``acceptance_rate``: mean MALA acceptance over the draw's segments;
* ``diverging``: the diffusion went non-finite; the chain then keeps its previous
  draw, and ``print_summary`` counts it as a divergence.
"""

from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.flatten_util import ravel_pytree
from numpyro.infer.mcmc import MCMCKernel
from numpyro.util import is_prng_key

from rtk_blackjax._checks import check_bool, check_callable, check_int, check_key
from rtk_blackjax.adapters.numpyro_model import ModelDensity, model_density
from rtk_blackjax.mcmc.logdensity import (
    REFERENCE_INFLATION,
    GaussianReference,
    _final_algorithm,
    _warn_unconverged_pilot,
    adapt_reference,
    adapted_schedule,
    initial_step_factor,
    model_schedule,
    unstandardise,
)
from rtk_blackjax.run.loop import run_segments
from rtk_blackjax.types import Array, PRNGKey

__all__ = ["RTKKernelState", "RTKKernel"]


def _same_data(a: Any, b: Any) -> bool:
    """Whether two ``(model_args, model_kwargs)`` hold the same values."""
    if b is None:
        return False
    leaves_a, tree_a = jax.tree.flatten(a)
    leaves_b, tree_b = jax.tree.flatten(b)
    if tree_a != tree_b:
        return False
    try:
        return all(
            np.shape(x) == np.shape(y) and bool(np.all(np.asarray(x) == np.asarray(y)))
            for x, y in zip(leaves_a, leaves_b)
        )
    except (TypeError, jax.errors.ConcretizationTypeError):
        return False  # traced arguments: rebuild


class RTKKernelState(NamedTuple):
    """State of one chain of :class:`RTKKernel`.

    z
        The current draw: a dict of *unconstrained* site values.
    num_evaluations
        Log-density/gradient evaluations spent on this draw.
    acceptance_rate
        Mean MALA acceptance over the draw's segments.
    diverging
        Whether the draw's diffusion went non-finite (the previous ``z`` is kept).
    rng_key
        Key for the next draw.
    """

    z: dict
    num_evaluations: Array
    acceptance_rate: Array
    diverging: Array
    rng_key: PRNGKey


class RTKKernel(MCMCKernel):
    """Reverse-diffusion (RTK) independence sampler for NumPyro models.

    Parameters
    ----------
    model
        A NumPyro model with continuous latent sites.
    times
        Reverse-time grid (default
        :func:`~rtk_blackjax.mcmc.logdensity.model_schedule`'s, 16 segments).
    num_importance, num_inner_steps
        i-SIR candidates and MALA steps per segment (see
        :func:`~rtk_blackjax.mcmc.logdensity.rtk_logdensity`; defaults
        :func:`~rtk_blackjax.mcmc.logdensity.model_schedule`'s, 32 and 16).
    num_pilot_rounds, pilot_particles
        Most pilot runs that fit the Gaussian reference in :meth:`init` (0
        rounds: no reference unless ``reference`` is given); with
        ``standardise`` they stop once the fitted scale stops changing, and a
        :class:`~rtk_blackjax.mcmc.logdensity.ScaleWarning` says when it had not.
    reference
        A :class:`~rtk_blackjax.mcmc.logdensity.GaussianReference` to start
        from (skips nothing: pilot rounds refine it).
    init_strategy
        NumPyro init strategy for the starting point of the pilot.
    standardise
        Run the pilot rounds after the first and every draw in the unit
        coordinates of the pilot's Gaussian fit (see
        :func:`~rtk_blackjax.mcmc.logdensity.sample_model`); the fit is kept in
        ``RTKKernel.standardisation``.
    adapt_schedule
        With neither ``num_importance`` nor ``num_inner_steps`` given, draw with
        the per-segment schedule cut from the pilot's last round
        (:func:`~rtk_blackjax.mcmc.logdensity.adapted_schedule`), kept in
        ``RTKKernel.schedule``.

    Examples
    --------
    >>> import jax, jax.numpy as jnp
    >>> import numpyro, numpyro.distributions as dist
    >>> from numpyro.infer import MCMC
    >>> def model(y):
    ...     mu = numpyro.sample("mu", dist.Normal(0.0, 1.0))
    ...     numpyro.sample("y", dist.Normal(mu, 1.0), obs=y)
    >>> kernel = RTKKernel(model, times=jnp.array([3.0, 0.5, 0.0]),
    ...                    num_importance=8, num_inner_steps=1,
    ...                    num_pilot_rounds=1, pilot_particles=50)
    >>> mcmc = MCMC(kernel, num_warmup=0, num_samples=20, progress_bar=False)
    >>> mcmc.run(jax.random.key(0), jnp.array(1.0))
    >>> mcmc.get_samples()["mu"].shape
    (20,)
    """

    sample_field = "z"

    def __init__(
        self,
        model: Callable,
        *,
        times: Array | None = None,
        num_importance: int | Sequence[int] | None = None,
        num_inner_steps: int | Sequence[int] | None = None,
        num_pilot_rounds: int = 8,
        pilot_particles: int = 200,
        reference: GaussianReference | None = None,
        init_strategy: Callable | None = None,
        standardise: bool = True,
        adapt_schedule: bool = True,
    ):
        check_callable("model", model, what="a NumPyro model (a callable)")
        num_pilot_rounds = check_int("num_pilot_rounds", num_pilot_rounds, minimum=0)
        pilot_particles = check_int("pilot_particles", pilot_particles, minimum=2)
        if init_strategy is not None:
            check_callable(
                "init_strategy",
                init_strategy,
                what="a NumPyro init strategy (a callable)",
            )
        if reference is not None and not isinstance(reference, GaussianReference):
            raise TypeError(
                f"reference must be a GaussianReference, got {type(reference).__name__}"
            )
        self._model = model
        self._times = times
        self._num_importance = num_importance
        self._num_inner_steps = num_inner_steps
        self._num_pilot_rounds = num_pilot_rounds
        self._pilot_particles = pilot_particles
        self._init_reference = reference
        self._init_strategy = init_strategy
        self._standardise = check_bool("standardise", standardise)
        # A schedule the caller chose is run as given.
        self._adapt_schedule = (
            check_bool("adapt_schedule", adapt_schedule)
            and num_importance is None
            and num_inner_steps is None
        )
        self.schedule: tuple[np.ndarray, np.ndarray] | None = None
        self.standardisation: GaussianReference | None = None
        self.reference: GaussianReference | None = reference
        self.pilot_evaluations = 0
        self.model_density: ModelDensity | None = None
        self._draw_fn = None
        self._data = None

    @property
    def model(self) -> Callable:
        return self._model

    @property
    def default_fields(self) -> tuple[str, ...]:
        return ("z", "diverging")

    def get_diagnostics_str(self, state: RTKKernelState) -> str:
        return f"acc. prob={float(jnp.mean(state.acceptance_rate)):.2f}"

    # ----------------------------------------------------------------------

    def _algorithm_kwargs(self) -> dict:
        kwargs = model_schedule(
            self._times, self._num_importance, self._num_inner_steps
        )
        kwargs["step_size"] = initial_step_factor(self.model_density.dim)
        return kwargs

    def _draw_kwargs(self) -> dict:
        """The pilot's schedule, or the one cut from its measurements."""
        kwargs = self._algorithm_kwargs()
        if self.schedule is not None:
            kwargs["num_importance"], kwargs["num_inner_steps"] = self.schedule
        return kwargs

    def _build_draw(self, md: ModelDensity, reference: GaussianReference | None):
        affine = self.standardisation
        algorithm, _ = _final_algorithm(
            md.logdensity_fn,
            md.dim,
            reference,
            affine,
            md.initial_position,
            **self._draw_kwargs(),
        )
        if affine is None:
            to_target = lambda z: z  # noqa: E731
        else:
            to_target = lambda z: unstandardise(affine, z)  # noqa: E731
        num_segments = algorithm.num_segments
        dim = md.dim

        def draw(rng_key):
            key_start, key_chain = jax.random.split(rng_key)
            y = jax.random.normal(key_start, (dim,), md.initial_position.dtype)
            state = algorithm.init(y)
            state, (acc, finite) = run_segments(
                algorithm.step,
                state,
                key_chain,
                0,
                num_segments,
                transform=lambda state, info: (info.acceptance_rate, info.is_finite),
            )
            position = to_target(state.position)
            return position, state.num_evaluations, jnp.nanmean(acc), finite

        return draw

    def _prepare(self, rng_key: PRNGKey, model_args: tuple, model_kwargs: dict):
        key_model, key_pilot = jax.random.split(rng_key)
        kwargs = {}
        if self._init_strategy is not None:
            kwargs["init_strategy"] = self._init_strategy
        md = model_density(
            self._model, *model_args, rng_key=key_model, **kwargs, **model_kwargs
        )
        self.model_density = md
        reference = self._init_reference
        self.pilot_evaluations = 0
        self.schedule = None
        if self._num_pilot_rounds > 0:
            pilot = adapt_reference(
                key_pilot,
                md.logdensity_fn,
                md.dim,
                num_rounds=self._num_pilot_rounds,
                num_particles=self._pilot_particles,
                initial_position=md.initial_position,
                reference=reference,
                inflation=REFERENCE_INFLATION,
                standardise=self._standardise,
                **self._algorithm_kwargs(),
            )
            reference, self.pilot_evaluations = pilot.reference, pilot.num_evaluations
            self.standardisation = pilot.standardisation
            if self._adapt_schedule:
                self.schedule = adapted_schedule(pilot.segment_stats)
            _warn_unconverged_pilot(pilot, "num_pilot_rounds")
        else:
            self.standardisation = None
        self.reference = reference
        self._draw_fn = self._build_draw(md, reference)

    def init(
        self,
        rng_key: PRNGKey,
        num_warmup: int,
        init_params: Any,
        model_args: tuple,
        model_kwargs: dict,
    ) -> RTKKernelState:
        batched = not is_prng_key(rng_key)
        if batched:  # one key per chain, or not a key at all (MCMC.run(0))
            if not isinstance(rng_key, (jax.Array, np.ndarray)) or not np.ndim(rng_key):
                check_key("rng_key", rng_key)  # raises, naming what a key is
            check_key("rng_key", rng_key[0])
        first_key = rng_key[0] if batched else rng_key
        data = (model_args, model_kwargs or {})
        # chain_method="sequential" calls init once per chain: the model density
        # and the pilot-fitted reference are shared by all chains of a run.
        if self._draw_fn is None or not _same_data(data, self._data):
            self._prepare(first_key, model_args, model_kwargs or {})
            self._data = data
        md = self.model_density

        if init_params is not None:
            z0, _ = ravel_pytree(init_params)
            if batched and z0.shape[0] != md.dim:
                z0 = jnp.reshape(z0, (-1, md.dim))
        else:
            z0 = md.initial_position

        def one_state(key, z_flat):
            return RTKKernelState(
                z=md.unravel_fn(jnp.broadcast_to(z_flat, (md.dim,))),
                num_evaluations=jnp.asarray(0, jnp.int32),
                acceptance_rate=jnp.asarray(jnp.nan, z_flat.dtype),
                diverging=jnp.asarray(False),
                rng_key=key,
            )

        if batched:
            num_chains = rng_key.shape[0]
            z_batch = jnp.broadcast_to(z0, (num_chains, md.dim))
            return jax.vmap(one_state)(rng_key, z_batch)
        return one_state(rng_key, z0)

    def _sample_one(self, state: RTKKernelState) -> RTKKernelState:
        md = self.model_density
        rng_key, key_draw = jax.random.split(state.rng_key)
        position, nfe, acc, finite = self._draw_fn(key_draw)
        ok = jnp.all(finite) & jnp.all(jnp.isfinite(position))
        previous, _ = ravel_pytree(state.z)
        z = jnp.where(ok, position, previous)
        return RTKKernelState(md.unravel_fn(z), nfe, acc, ~ok, rng_key)

    def sample(
        self, state: RTKKernelState, model_args: tuple, model_kwargs: dict
    ) -> RTKKernelState:
        if self._draw_fn is None:
            raise RuntimeError("RTKKernel.sample called before RTKKernel.init")
        if is_prng_key(state.rng_key):
            return self._sample_one(state)
        # chain_method="vectorized": a batch of chains in one state.
        return jax.vmap(self._sample_one)(state)

    def postprocess_fn(self, model_args: tuple, model_kwargs: dict) -> Callable:
        md = self.model_density
        if md is None:
            md = model_density(self._model, *model_args, **(model_kwargs or {}))
            self.model_density = md

        def constrain(z: dict) -> dict:
            flat, _ = ravel_pytree(z)
            return md.postprocess_fn(flat)

        return constrain
