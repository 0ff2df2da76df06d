"""Run a reverse-diffusion sampler over all segments for many particles."""

import warnings
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from rtk_blackjax.mcmc.rtk import DiffusionAlgorithm
from rtk_blackjax.types import Array, ArrayLikeTree, ArrayTree, PRNGKey

__all__ = ["SampleResult", "NonFiniteSamplesError", "sample", "NONFINITE_POLICIES"]

NONFINITE_POLICIES = ("raise", "mask")


class NonFiniteSamplesError(FloatingPointError):
    """Raised when a sampler produced non-finite positions or scores."""


class SampleResult(NamedTuple):
    """Output of :func:`sample`.

    samples
        Final positions at ``t = 0``, leading axis ``num_samples``.
    info
        Per-segment info of the algorithm, each field of shape
        ``(num_segments, num_samples, ...)``.
    num_evaluations
        NFE per sample (identical for every sample).
    times
        The grid that was run.
    finite
        Boolean mask ``(num_samples,)``: the sample and every intermediate
        position/score were finite.
    """

    samples: ArrayTree
    info: Any
    num_evaluations: int
    times: Array
    finite: Array

    def acceptance_per_segment(self) -> np.ndarray:
        """Mean acceptance rate over particles of each segment (NaN without MH)."""
        acc = getattr(self.info, "acceptance_rate", None)
        if acc is None:
            return np.full(self.times.shape[0] - 1, np.nan)
        return np.asarray(jnp.nanmean(acc, axis=1))


def _check_dim(dim, position_like):
    if position_like is not None:
        return jax.tree.map(
            lambda v: jnp.zeros(jnp.shape(v), jnp.result_type(v)), position_like
        )
    if isinstance(dim, bool) or not isinstance(dim, (int, np.integer)) or dim < 1:
        raise ValueError(
            f"dim must be a positive integer (or pass position_like), got {dim!r}"
        )
    return jnp.zeros((int(dim),), jnp.result_type(float))


def sample(
    rng_key: PRNGKey,
    algorithm: DiffusionAlgorithm,
    num_samples: int,
    dim: int | None = None,
    *,
    position_like: ArrayLikeTree | None = None,
    progress_bar: bool = False,
    on_nonfinite: str = "raise",
) -> SampleResult:
    """Draw ``num_samples`` samples by running every segment of ``algorithm``.

    Particles start from ``N(0, I)`` at the horizon; all segments run inside one
    jitted ``lax.scan`` over ``vmap``-ed particles, so the sampler compiles once
    whatever the number of segments (segment times are traced values).

    Sample ``i`` depends only on ``(rng_key, i)``: its keys are
    ``fold_in(rng_key, i)``, so changing ``num_samples`` does not change the first
    samples.

    Parameters
    ----------
    rng_key
        A JAX PRNG key.
    algorithm
        A :class:`~rtk_blackjax.mcmc.rtk.DiffusionAlgorithm` (``rtk_blackjax.rtk``,
        ``rtk_blackjax.ddpm``, ...).
    num_samples
        Number of independent particles.
    dim
        Dimension of a flat position; or give ``position_like``, a pytree whose leaf
        shapes and dtypes are those of one position.
    progress_bar
        Show a ``tqdm`` bar over segments (updated from inside the compiled loop).
    on_nonfinite
        ``"raise"`` (default): raise :class:`NonFiniteSamplesError` saying how many
        particles went non-finite and in which segment first. ``"mask"``: return
        the samples with ``result.finite`` marking the good ones.

    Examples
    --------
    >>> import jax, jax.numpy as jnp
    >>> import rtk_blackjax as rb
    >>> target = rb.targets.chessboard(dim=2)
    >>> sampler = rb.rtk(target, rb.geometric_grid(20), num_inner_steps=1)
    >>> result = rb.sample(jax.random.key(0), sampler, 500, dim=2)
    >>> result.samples.shape, result.num_evaluations
    ((500, 2), 61)
    """
    if not isinstance(algorithm, DiffusionAlgorithm):
        raise TypeError(
            "algorithm must be a DiffusionAlgorithm (rtk_blackjax.rtk(...), "
            f"rtk_blackjax.ddpm(...), ...), got {type(algorithm).__name__}"
        )
    if isinstance(num_samples, bool) or not isinstance(num_samples, (int, np.integer)):
        raise TypeError(f"num_samples must be a positive integer, got {num_samples!r}")
    if num_samples < 1:
        raise ValueError(f"num_samples must be a positive integer, got {num_samples}")
    if on_nonfinite not in NONFINITE_POLICIES:
        raise ValueError(
            f"on_nonfinite must be one of {NONFINITE_POLICIES}, got {on_nonfinite!r}"
        )
    template = _check_dim(dim, position_like)
    num_segments = algorithm.num_segments

    bar = None
    if progress_bar:
        from tqdm.auto import tqdm

        bar = tqdm(total=num_segments, desc="segments", unit="seg")

        def _advance(_):
            bar.update(1)

    def run(key):
        particle_keys = jax.vmap(jax.random.fold_in, (None, 0))(
            key, jnp.arange(num_samples)
        )

        def init_one(pkey):
            leaves, treedef = jax.tree.flatten(template)
            init_keys = jax.random.split(jax.random.fold_in(pkey, 0), len(leaves))
            noise = [
                jax.random.normal(k, jnp.shape(v), jnp.result_type(v))
                for k, v in zip(init_keys, leaves)
            ]
            return algorithm.init(jax.tree.unflatten(treedef, noise))

        states = jax.vmap(init_one)(particle_keys)
        chain_keys = jax.vmap(jax.random.fold_in, (0, None))(particle_keys, 1)

        def body(states, k):
            seg_keys = jax.vmap(jax.random.fold_in, (0, None))(chain_keys, k)
            states, info = jax.vmap(algorithm.step)(seg_keys, states)
            if bar is not None:
                jax.debug.callback(_advance, k)
            return states, info

        return jax.lax.scan(body, states, jnp.arange(num_segments))

    try:
        states, info = jax.jit(run)(rng_key)
        jax.block_until_ready(states)
    finally:
        if bar is not None:
            bar.close()

    seg_finite = np.asarray(info.is_finite)  # (K, n)
    finite = np.all(seg_finite, axis=0)
    if not finite.all() and on_nonfinite == "raise":
        bad_per_segment = (~seg_finite).sum(axis=1)
        first = int(np.argmax(bad_per_segment > 0))
        raise NonFiniteSamplesError(
            f"{int((~finite).sum())} of {num_samples} particles became non-finite; "
            f"first in segment {first} (t={float(algorithm.times[first])} -> "
            f"{float(algorithm.times[first + 1])}) with {int(bad_per_segment[first])} "
            "particles. Pass on_nonfinite='mask' to get the finite samples and a mask."
        )
    nfe = np.asarray(states.num_evaluations)
    result = SampleResult(
        samples=states.position,
        info=info,
        num_evaluations=int(nfe.max()) if nfe.size else 0,
        times=algorithm.times,
        finite=jnp.asarray(finite),
    )
    _warn_on_stuck_segments(result)
    return result


LOW_ACCEPTANCE = 0.1


def _warn_on_stuck_segments(result: SampleResult) -> None:
    """Warn when an inner Metropolis chain barely moves on some segment."""
    acceptance = result.acceptance_per_segment()
    low = np.flatnonzero(np.isfinite(acceptance) & (acceptance < LOW_ACCEPTANCE))
    if low.size:
        k = int(low[0])
        warnings.warn(
            f"inner-kernel acceptance below {LOW_ACCEPTANCE} on {low.size} segment(s), "
            f"first segment {k} (t={float(result.times[k])} -> "
            f"{float(result.times[k + 1])}): {acceptance[k]:.3f}. The segment target is "
            "badly conditioned for the automatic step size; use more (shorter) "
            "segments or a smaller step_scale.",
            RuntimeWarning,
            stacklevel=3,
        )
