"""A diffusion prior as a NumPyro distribution.

:class:`DiffusionPrior` wraps any :class:`~rtk_blackjax.targets.Target` (an analytic
mixture, a learned score) so that ordinary NumPyro models can use it::

    def model(y=None):
        x = numpyro.sample("x", DiffusionPrior(prior_target, dim=2))
        sigma = numpyro.sample("sigma", dist.HalfNormal(1.0))
        numpyro.sample("y", dist.Normal(A @ x, sigma), obs=y)

``sample`` runs the reverse diffusion (RTK-MALA by default), ``log_prob`` is
``target.logdensity(x, 0)`` when the target has one. Posterior inference for such
models: :func:`rtk_blackjax.posterior.split_gibbs.split_gibbs`, which never needs
``log_prob`` (only the prior's score along the reverse process).
"""

import math

import jax
import jax.numpy as jnp
import numpy as np
from numpyro.distributions import Distribution, constraints

from rtk_blackjax._checks import check_int
from rtk_blackjax.mcmc.rtk import DiffusionAlgorithm
from rtk_blackjax.policy import configure
from rtk_blackjax.run.loop import run_segments
from rtk_blackjax.run.policy import NonFiniteSamplesError
from rtk_blackjax.targets.base import Target
from rtk_blackjax.types import Array, ArrayLike, PRNGKey

__all__ = ["DiffusionPrior", "default_prior_sampler"]

# Default sampler: the measured RTK-MALA policy at this NFE budget
# (rtk_blackjax.policy.configure; chessboard d = 100: var_bias ≈ 0, mode TV at floor).
DEFAULT_PRIOR_NFE = 105


def default_prior_sampler(target: Target, nfe: int = DEFAULT_PRIOR_NFE):
    """RTK-MALA configured for ``nfe`` prior evaluations per sample.

    Uses the exact energy when the target has a log density, the score-only
    (quadrature) MALA otherwise; grid and inner steps from
    :func:`rtk_blackjax.policy.configure`.
    """
    if not isinstance(target, Target):
        raise TypeError(f"target must be an rtk_blackjax Target, got {target!r}")
    nfe = check_int("nfe", nfe, minimum=1)
    method = "rtk-mala" if target.logdensity is not None else "rtk-mala-score"
    return configure(method, target, nfe=nfe).algorithm


def _check_dim_fits(target: Target, dim: int) -> None:
    """Refuse a ``dim`` the target's score cannot take, at construction (not at the
    first sample): by the analytic mixture's dimension when there is one, else by
    tracing ``score`` on a ``(dim,)`` position (shapes only, nothing is computed)."""
    if target.mixture is not None:
        if dim != target.mixture.dim:
            raise ValueError(
                f"dim must be the target's dimension {target.mixture.dim}, got {dim}"
            )
        return
    x = jax.ShapeDtypeStruct((dim,), jnp.result_type(float))
    try:
        out = jax.eval_shape(target.score, x, 1.0)
    except Exception as err:  # noqa: BLE001 - any failure means "does not fit"
        raise ValueError(
            f"dim={dim} does not fit the target: its score fails on a position of "
            f"shape ({dim},): {err}"
        ) from err
    if jax.tree.structure(out) != jax.tree.structure(x) or out.shape != (dim,):
        raise ValueError(
            f"dim={dim} does not fit the target: its score maps a ({dim},) position "
            f"to {jax.tree.map(lambda leaf: leaf.shape, out)}"
        )


class DiffusionPrior(Distribution):
    """NumPyro distribution whose law is ``p_0`` of a diffusion model.

    Parameters
    ----------
    target
        The diffusion model (:class:`rtk_blackjax.targets.Target`): score and
        optional log density of the OU-diffused ``p_t``.
    dim
        Event size ``d``; read from ``target.mixture`` when omitted.
    algorithm
        Reverse-diffusion sampler used by :meth:`sample` (any
        :class:`~rtk_blackjax.mcmc.rtk.DiffusionAlgorithm`: ``rb.rtk``, ``rb.ddpm``,
        ...); default :func:`default_prior_sampler` at ``nfe`` evaluations.
    nfe
        Budget of the default sampler (ignored when ``algorithm`` is given).

    Notes
    -----
    ``sample`` is a pure JAX function (it runs under ``jit``, ``vmap`` and NumPyro's
    ``Predictive``). Outside tracing, non-finite draws raise
    :class:`~rtk_blackjax.NonFiniteSamplesError`; under tracing they come back as
    NaN (no exception can be raised there). ``log_prob`` is the target's
    ``logdensity(x, 0)``: normalised exactly when the target's is (analytic
    mixtures are).

    Examples
    --------
    >>> import jax, jax.numpy as jnp
    >>> import rtk_blackjax as rb
    >>> prior = DiffusionPrior(rb.targets.gaussian(jnp.zeros(2), 1.0), nfe=25)
    >>> prior.sample(jax.random.key(0), (3,)).shape
    (3, 2)
    >>> round(float(prior.log_prob(jnp.zeros(2))), 4)  # -log(2π)
    -1.8379
    """

    arg_constraints = {}
    support = constraints.real_vector
    reparametrized_params = []
    pytree_aux_fields = ("target", "_algorithm", "_nfe", "dim")

    def __init__(
        self,
        target: Target,
        dim: int | None = None,
        *,
        algorithm: DiffusionAlgorithm | None = None,
        nfe: int = DEFAULT_PRIOR_NFE,
        validate_args: bool | None = None,
    ):
        if not isinstance(target, Target):
            raise TypeError(
                "target must be an rtk_blackjax Target (rtk_blackjax.targets.*), got "
                f"{type(target).__name__}"
            )
        if dim is None:
            if target.mixture is None:
                raise ValueError(
                    "dim is required for a target without an analytic mixture "
                    "(e.g. a learned score): DiffusionPrior(target, dim=d)"
                )
            dim = target.mixture.dim
        dim = check_int("dim", dim, minimum=1)
        _check_dim_fits(target, dim)
        nfe = check_int("nfe", nfe, minimum=1)
        if algorithm is not None and not isinstance(algorithm, DiffusionAlgorithm):
            raise TypeError(
                "algorithm must be a DiffusionAlgorithm (rb.rtk(...), rb.ddpm(...)), "
                f"got {type(algorithm).__name__}"
            )
        self.target = target
        # Built on first use: a model constructs its distributions on every trace
        # (log densities, split Gibbs), where no sampler is needed.
        self._algorithm = algorithm
        self._nfe = nfe
        self.dim = dim
        super().__init__(
            batch_shape=(), event_shape=(dim,), validate_args=validate_args
        )

    @property
    def algorithm(self) -> DiffusionAlgorithm:
        """The reverse-diffusion sampler used by :meth:`sample`."""
        if self._algorithm is None:
            # Grids are validated with NumPy: build them with concrete values even
            # when the model is being traced (Predictive, jit).
            with jax.ensure_compile_time_eval():
                self._algorithm = default_prior_sampler(self.target, self._nfe)
        return self._algorithm

    def _sample_one(self, rng_key: PRNGKey) -> Array:
        key_start, key_run = jax.random.split(rng_key)
        x_horizon = jax.random.normal(key_start, (self.dim,), jnp.result_type(float))
        state = self.algorithm.init(x_horizon)
        state, _ = run_segments(
            self.algorithm.step, state, key_run, 0, self.algorithm.num_segments
        )
        return state.position

    def sample(self, key: PRNGKey, sample_shape: tuple = ()) -> Array:
        """Run the reverse diffusion for ``prod(sample_shape)`` independent draws."""
        shape = tuple(sample_shape) + self.batch_shape
        num = math.prod(shape)
        keys = jax.random.split(key, max(num, 1))[:num]
        # One compiled sampler per distribution object (jit caches per key count);
        # under an outer trace (Predictive, vmap) it simply inlines.
        sampler = self.__dict__.get("_jitted_sampler")
        if sampler is None:
            sampler = jax.jit(jax.vmap(self._sample_one))
            self.__dict__["_jitted_sampler"] = sampler
        draws = sampler(keys)
        if not isinstance(draws, jax.core.Tracer) and not bool(
            jnp.all(jnp.isfinite(draws))
        ):
            bad = int(np.sum(~np.all(np.isfinite(np.asarray(draws)), axis=-1)))
            raise NonFiniteSamplesError(
                f"DiffusionPrior.sample produced {bad} non-finite draws out of {num}"
            )
        return draws.reshape(shape + self.event_shape)

    @property
    def num_evaluations(self) -> int:
        """Prior evaluations (NFE) one :meth:`sample` draw costs (runs one draw)."""
        return int(jax.jit(self._count_one)(jax.random.key(0)))

    def _count_one(self, rng_key: PRNGKey) -> Array:
        state = self.algorithm.init(jnp.zeros(self.dim))
        state, _ = run_segments(
            self.algorithm.step, state, rng_key, 0, self.algorithm.num_segments
        )
        return state.num_evaluations

    def log_prob(self, value: ArrayLike) -> Array:
        """``target.logdensity(value, 0)`` over any batch of ``(…, dim)`` values.

        Raises
        ------
        NotImplementedError
            When the target has no ``logdensity`` (a score-only / learned model).
        """
        if self.target.logdensity is None:
            raise NotImplementedError(
                "DiffusionPrior.log_prob needs target.logdensity, but this target is "
                "score-only (e.g. a learned score network). Sample posteriors of "
                "models with this prior by split Gibbs "
                "(rtk_blackjax.posterior.split_gibbs.split_gibbs), which only uses "
                "the score, or build the target with a logdensity_fn"
            )
        value = jnp.asarray(value)
        if value.shape[-1:] != (self.dim,):
            raise ValueError(
                f"value must have a trailing dimension of size {self.dim}, got shape "
                f"{value.shape}"
            )
        flat = value.reshape((-1, self.dim))
        logp = jax.vmap(lambda x: self.target.logdensity(x, 0.0))(flat)
        return logp.reshape(value.shape[:-1])
