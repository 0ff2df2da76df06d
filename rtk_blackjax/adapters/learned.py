"""Learned scores: a time-conditioned score network, a DSM trainer, and its target.

A user-supplied ``score_fn(x, t)`` becomes a target with
:func:`rtk_blackjax.targets.from_score`; this module adds the missing piece for
models that only come as *samples* (a data set, or draws from a NumPyro model's
prior predictive): fit a network to them by denoising score matching (DSM) under
the package's OU forward process ``x_t = a_t x_0 + s_t ε``, ``a_t = e^{-t}``,
``s_t^2 = 1 - e^{-2t}``, then sample with any score-only sampler (RTK-MALA with
quadrature energies, RTK-ULD, DDPM, ...).

Design choices
--------------
* **Equinox + Optax.** An Equinox module *is* a pytree of arrays: the trained
  network is called like a function, closes over nothing, and passes through
  ``jit`` / ``vmap`` / ``custom_jvp`` and into a :class:`~rtk_blackjax.targets.Target`
  closure with no ``params`` / ``apply`` split to thread through the samplers (with
  Flax the target would have to carry both and re-bind them at every call).
  Optax supplies AdamW, the learning-rate schedule and gradient clipping.
* **Parametrisation: a preconditioned denoiser.** With ``σ = s_t / a_t`` (the
  equivalent "variance-exploding" noise level) the network ``F`` gives a denoiser
  ``D = μ + c_skip (x/a - μ) + c_out F(c_in (x - a μ), c_noise)`` with EDM's (Karras
  et al. 2022) ``c_skip = σ_d^2/(σ^2+σ_d^2)``, ``c_out = σ σ_d / sqrt(σ^2+σ_d^2)``,
  ``c_in = 1/sqrt(s^2 + a^2 σ_d^2)``, ``c_noise = log(σ)/4``, per coordinate, with
  ``μ`` and ``σ_d`` the data's mean and standard deviation. The score
  ``(a D - x)/s^2`` then reads
  ``-(x - a μ)/(s^2 + a^2 σ_d^2) + a σ_d F / (s sqrt(s^2 + a^2 σ_d^2))``:
  the exact score of the diagonal Gaussian fitted to the data plus a network
  correction of the size of a noise prediction (``1/s``). The last layer starts at
  zero, so training starts from that Gaussian; the network's input and target have
  unit scale at every ``t``, which is what keeps small ``t`` (stiff, ``1/s``
  scores) trainable — a raw score output would have to span five orders of
  magnitude.
* **Loss and time weighting.** The unit-weighted loss on ``F`` is DSM with
  EDM's weight ``1/c_out^2`` on the denoiser error, i.e. about ``s^2 |score error|^2``
  (noise prediction) at small ``t``. Training times are drawn **log-uniformly** in
  ``[t_min, t_max]``: the samplers' geometric grids put their segments
  log-uniformly in ``t`` too, so the network is trained where it is queried.
* The samplers query ``t = 0`` (the last segment ends there); the learned score
  uses ``max(t, t_min)`` — it cannot know more than it was trained on.

The network works on flat positions ``(dim,)``; batch with ``jax.vmap``.
"""

import json
import math
import os
from collections.abc import Callable
from typing import Any, NamedTuple

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax

from rtk_blackjax._checks import (
    check_bool,
    check_callable,
    check_int,
    check_key,
    check_nonnegative,
    check_number,
    check_positive,
)
from rtk_blackjax.diffusion import ou_mean_coef, ou_variance
from rtk_blackjax.targets.base import Target, from_score
from rtk_blackjax.types import Array, ArrayLike, PRNGKey

__all__ = [
    "ScoreNetwork",
    "TrainedScore",
    "make_score_network",
    "dsm_loss",
    "train_score",
    "learned_target",
    "plot_loss",
    "save_trained",
    "load_trained",
    "prior_predictive_samples",
]

_MIN_SAMPLES = 16


# ---------------------------------------------------------------------------
# The network
# ---------------------------------------------------------------------------


def _time_embedding(c_noise: Array, num_frequencies: int) -> Array:
    # Fixed (not trained) octave frequencies over c_noise = log(σ)/4 ∈ [-2, 1.5].
    freqs = 0.5 * jnp.pi * 2.0 ** jnp.arange(num_frequencies, dtype=c_noise.dtype)
    angles = freqs * c_noise
    return jnp.concatenate([c_noise[None], jnp.sin(angles), jnp.cos(angles)])


class ScoreNetwork(eqx.Module):
    """Time-conditioned score ``score(x, t)`` of OU-diffused data (see module notes).

    Fields
    ------
    mlp
        ``eqx.nn.MLP`` mapping ``[c_in (x - a μ), embed(c_noise)]`` to ``F``.
    data_mean, data_std
        Per-coordinate mean ``μ`` and standard deviation ``σ_d`` of the training
        data (not trained).
    t_min
        Smallest training time; the score at ``t < t_min`` is the score at
        ``t_min``.
    num_frequencies
        Number of sinusoidal frequencies of the time embedding.
    """

    mlp: eqx.nn.MLP
    data_mean: Array
    data_std: Array
    t_min: float = eqx.field(static=True)
    num_frequencies: int = eqx.field(static=True)

    @property
    def dim(self) -> int:
        return int(self.data_mean.shape[0])

    def _check(self, x: Array) -> None:
        if x.shape != (self.dim,):
            raise ValueError(
                f"x must be a flat position of shape ({self.dim},), got {x.shape}; "
                "use jax.vmap for batches"
            )

    def _pieces(self, x: Array, t: ArrayLike):
        t = jnp.maximum(jnp.asarray(t, x.dtype), self.t_min)
        a, s2 = ou_mean_coef(t), ou_variance(t)
        mu = jax.lax.stop_gradient(self.data_mean)
        sd = jax.lax.stop_gradient(self.data_std)
        total = s2 + (a * sd) ** 2  # variance of x_t for Gaussian data (μ, σ_d²)
        c_noise = 0.25 * 0.5 * (jnp.log(s2) - 2.0 * jnp.log(a))
        features = jnp.concatenate(
            [
                (x - a * mu) / jnp.sqrt(total),
                _time_embedding(c_noise, self.num_frequencies),
            ]
        )
        return a, s2, mu, sd, total, self.mlp(features)

    def __call__(self, x: ArrayLike, t: ArrayLike) -> Array:
        """``∇_x log p_t(x)`` for one flat position ``x`` of shape ``(dim,)``."""
        x = jnp.asarray(x)
        self._check(x)
        a, s2, mu, sd, total, f = self._pieces(x, t)
        return -(x - a * mu) / total + a * sd * f / jnp.sqrt(s2 * total)

    def denoise(self, x: ArrayLike, t: ArrayLike) -> Array:
        """Denoiser ``D(x, t) ≈ E[x_0 | x_t = x]`` (Tweedie), shape ``(dim,)``."""
        x = jnp.asarray(x)
        self._check(x)
        a, s2, mu, sd, total, f = self._pieces(x, t)
        # (a D - x)/s² = score  =>  D = (x + s² score)/a, written without 1/s².
        return (
            x + s2 * (-(x - a * mu) / total) + a * sd * f * jnp.sqrt(s2 / total)
        ) / a


def make_score_network(
    rng_key: PRNGKey,
    samples: ArrayLike,
    *,
    hidden: int = 128,
    depth: int = 3,
    num_frequencies: int = 8,
    t_min: float = 1e-4,
) -> ScoreNetwork:
    """An untrained :class:`ScoreNetwork` standardised on ``samples`` ``(n, dim)``.

    Its last layer is zero, so it starts as the exact score of the diagonal
    Gaussian fitted to ``samples``.

    Examples
    --------
    >>> import jax, jax.numpy as jnp
    >>> data = jax.random.normal(jax.random.key(0), (100, 2)) * 2.0 + 1.0
    >>> net = make_score_network(jax.random.key(1), data, hidden=8, depth=1)
    >>> net(jnp.zeros(2), 0.5).shape
    (2,)
    """
    rng_key = check_key("rng_key", rng_key)
    x = _check_samples(samples)
    check_int("hidden", hidden, minimum=1)
    check_int("depth", depth, minimum=1)
    check_int("num_frequencies", num_frequencies, minimum=1)
    check_positive("t_min", t_min)
    dim = x.shape[1]
    mlp = eqx.nn.MLP(
        in_size=dim + 1 + 2 * num_frequencies,
        out_size=dim,
        width_size=hidden,
        depth=depth,
        activation=jax.nn.silu,
        key=rng_key,
    )
    last = mlp.layers[-1]
    mlp = eqx.tree_at(
        lambda m: (m.layers[-1].weight, m.layers[-1].bias),
        mlp,
        (jnp.zeros_like(last.weight), jnp.zeros_like(last.bias)),
    )
    std = jnp.std(x, axis=0)
    std = jnp.where(std > 0, std, 1.0)  # a constant coordinate: keep c_in finite
    return ScoreNetwork(mlp, jnp.mean(x, axis=0), std, float(t_min), num_frequencies)


# ---------------------------------------------------------------------------
# Denoising score matching
# ---------------------------------------------------------------------------


def dsm_loss(
    mlp: eqx.nn.MLP,
    network: ScoreNetwork,
    x0: Array,
    t: Array,
    noise: Array,
) -> Array:
    """Mean DSM loss of a batch, in the unit-scale output space of ``F``.

    ``x0``: ``(b, dim)`` data, ``t``: ``(b,)`` times, ``noise``: ``(b, dim)``
    standard normal. The regression target of ``F`` is
    ``(x_0 - μ - c_skip (x_t/a - μ)) / c_out``; its optimum is the exact score.
    """
    net = eqx.tree_at(lambda n: n.mlp, network, mlp)

    def one(x0_i, t_i, eps_i):
        a, s2 = ou_mean_coef(t_i), ou_variance(t_i)
        xt = a * x0_i + jnp.sqrt(s2) * eps_i
        *_, mu, sd, total, f = net._pieces(xt, t_i)
        sigma2 = s2 / a**2
        c_skip = sd**2 / (sigma2 + sd**2)
        c_out = jnp.sqrt(sigma2) * sd / jnp.sqrt(sigma2 + sd**2)
        target = (x0_i - mu - c_skip * (xt / a - mu)) / c_out
        return jnp.sum((f - target) ** 2)

    return jnp.mean(jax.vmap(one)(x0, t, noise)) / x0.shape[1]


class TrainedScore(NamedTuple):
    """Result of :func:`train_score`.

    model
        The trained :class:`ScoreNetwork` (the EMA of the weights when ``ema > 0``);
        call it as ``model(x, t)`` or wrap it with :func:`learned_target`.
    loss_history
        DSM loss of every training step, shape ``(num_steps,)`` (NumPy).
    config
        The hyperparameters it was trained with (JSON-ready).
    """

    model: ScoreNetwork
    loss_history: np.ndarray
    config: dict


def train_score(
    rng_key: PRNGKey,
    samples: ArrayLike,
    *,
    num_steps: int = 5000,
    batch_size: int = 512,
    learning_rate: float = 2e-3,
    t_min: float = 1e-4,
    t_max: float = 5.0,
    hidden: int = 128,
    depth: int = 3,
    num_frequencies: int = 8,
    weight_decay: float = 1e-5,
    ema: float = 0.999,
    chunk_size: int = 250,
    progress_bar: bool = True,
) -> TrainedScore:
    """Fit a :class:`ScoreNetwork` to ``samples`` by denoising score matching.

    Each step draws ``batch_size // 2`` data points (with replacement), log-uniform
    times in ``[t_min, t_max]`` and Gaussian noise ``ε``, uses each pair with
    ``+ε`` and ``-ε`` (antithetic: removes most of the gradient noise at small
    ``t``), and takes one AdamW step (warm-up then
    cosine decay of the learning rate, gradient norm clipped at 1). Steps run as a
    jitted ``lax.scan`` over chunks of ``chunk_size`` steps; the progress bar and
    the NaN check run between chunks.

    Parameters
    ----------
    rng_key
        PRNG key (initialisation and every batch).
    samples
        Training data, a finite array of shape ``(n, dim)`` with ``n >= 16``.
    num_steps, batch_size
        Optimisation steps and batch size.
    learning_rate, weight_decay
        Peak AdamW learning rate and decoupled weight decay.
    t_min, t_max
        Range of training times; the score is accurate on this range only (for
        ``t < t_min`` the model returns the score at ``t_min``). Use ``t_max`` at
        least the sampler's horizon and ``t_min`` at most its smallest non-zero
        grid time.
    hidden, depth, num_frequencies
        Width and number of hidden layers of the MLP; frequencies of the
        sinusoidal time embedding.
    ema
        Decay of the exponential moving average of the weights that is returned
        (warmed up as ``min(ema, (1 + i)/(10 + i))`` at step ``i``; ``0`` returns
        the last iterate).
    chunk_size
        Steps per compiled call (and per progress-bar update).
    progress_bar
        Show a ``tqdm`` bar with the running loss.

    Returns
    -------
    TrainedScore

    Raises
    ------
    FloatingPointError
        If the loss becomes non-finite (names the chunk of steps).

    Examples
    --------
    >>> import jax, jax.numpy as jnp
    >>> data = 0.5 * jax.random.normal(jax.random.key(0), (512, 2)) + 1.0
    >>> trained = train_score(jax.random.key(1), data, num_steps=20, batch_size=64,
    ...                       hidden=8, depth=1, chunk_size=20, progress_bar=False)
    >>> trained.loss_history.shape
    (20,)
    >>> trained.model(jnp.ones(2), 0.1).shape
    (2,)
    """
    rng_key = check_key("rng_key", rng_key)
    x = _check_samples(samples)
    num_steps = check_int("num_steps", num_steps, minimum=1)
    batch_size = check_int("batch_size", batch_size, minimum=2)
    chunk_size = check_int("chunk_size", chunk_size, minimum=1)
    learning_rate = check_positive("learning_rate", learning_rate)
    t_min = check_positive("t_min", t_min)
    t_max = check_positive("t_max", t_max)
    if t_max <= t_min:
        raise ValueError(f"t_max must be larger than t_min={t_min}, got {t_max!r}")
    check_nonnegative("weight_decay", weight_decay)
    if check_number("ema", ema, minimum=0.0) >= 1.0:
        raise ValueError(f"ema must be a number in [0, 1), got {ema!r}")
    progress_bar = check_bool("progress_bar", progress_bar)
    config = dict(
        num_samples=int(x.shape[0]),
        dim=int(x.shape[1]),
        num_steps=num_steps,
        batch_size=batch_size,
        learning_rate=learning_rate,
        t_min=t_min,
        t_max=t_max,
        hidden=hidden,
        depth=depth,
        num_frequencies=num_frequencies,
        weight_decay=float(weight_decay),
        ema=float(ema),
        time_sampling="log-uniform",
    )

    init_key, train_key = jax.random.split(rng_key)
    network = make_score_network(
        init_key,
        x,
        hidden=hidden,
        depth=depth,
        num_frequencies=num_frequencies,
        t_min=t_min,
    )
    schedule = optax.warmup_cosine_decay_schedule(
        0.0,
        learning_rate,
        warmup_steps=max(1, min(200, num_steps // 10)),
        decay_steps=num_steps,
        end_value=0.01 * learning_rate,
    )
    optimizer = optax.chain(
        optax.clip_by_global_norm(1.0),
        optax.adamw(schedule, weight_decay=weight_decay),
    )
    # Only the MLP's arrays are carried through the scan; its activation functions
    # are static.
    params, static = eqx.partition(network.mlp, eqx.is_inexact_array)
    opt_state = optimizer.init(params)
    log_t_min, log_t_max = math.log(t_min), math.log(t_max)
    n, dim = x.shape
    half = max(1, batch_size // 2)

    def step(carry, i):
        params, ema_params, opt_state = carry
        # Keys from the step index: the run does not depend on chunk_size.
        k_idx, k_t, k_eps = jax.random.split(jax.random.fold_in(train_key, i), 3)
        batch = x[jax.random.randint(k_idx, (half,), 0, n)]
        t = jnp.exp(
            jax.random.uniform(
                k_t, (half,), x.dtype, minval=log_t_min, maxval=log_t_max
            )
        )
        noise = jax.random.normal(k_eps, (half, dim), x.dtype)
        # Antithetic pairs (x0, t, ±ε): at small t the regression target is
        # mostly the noise itself, and its first-order contribution to the
        # gradient cancels between the two members of a pair.
        batch = jnp.concatenate([batch, batch])
        t = jnp.concatenate([t, t])
        noise = jnp.concatenate([noise, -noise])
        loss, grads = jax.value_and_grad(
            lambda p: dsm_loss(eqx.combine(p, static), network, batch, t, noise)
        )(params)
        updates, opt_state = optimizer.update(grads, opt_state, params)
        params = optax.apply_updates(params, updates)
        # EMA warm-up (decay (1+i)/(10+i) until it reaches ema): short runs are
        # not dragged back towards the initialisation.
        decay = jnp.minimum(ema, (1.0 + i) / (10.0 + i))
        ema_params = jax.tree.map(
            lambda e, p: decay * e + (1.0 - decay) * p, ema_params, params
        )
        return (params, ema_params, opt_state), loss

    @jax.jit
    def run_chunk(carry, steps):
        return jax.lax.scan(step, carry, steps)

    carry = (params, params, opt_state)
    losses = []
    bar = _progress(num_steps, progress_bar)
    done = 0
    try:
        while done < num_steps:
            length = min(chunk_size, num_steps - done)
            carry, chunk_losses = run_chunk(carry, jnp.arange(done, done + length))
            chunk_losses = np.asarray(chunk_losses)
            if not np.all(np.isfinite(chunk_losses)):
                bad = done + int(np.argmin(np.isfinite(chunk_losses)))
                raise FloatingPointError(
                    f"DSM loss became non-finite at step {bad} (steps {done}.."
                    f"{done + length - 1}); lower learning_rate or raise t_min"
                )
            losses.append(chunk_losses)
            done += length
            if bar is not None:
                bar.update(length)
                bar.set_postfix(loss=f"{chunk_losses.mean():.4f}")
    finally:
        if bar is not None:
            bar.close()
    params, ema_params, _ = carry
    final = ema_params if ema > 0 else params
    model = eqx.tree_at(lambda m: m.mlp, network, eqx.combine(final, static))
    return TrainedScore(model, np.concatenate(losses), config)


# ---------------------------------------------------------------------------
# Target, plotting, persistence
# ---------------------------------------------------------------------------


def learned_target(trained: "TrainedScore | ScoreNetwork") -> Target:
    """Score-only :class:`~rtk_blackjax.targets.Target` of a trained network.

    Plugs into every score-only sampler: ``rb.rtk(target, grid,
    rb.score_mala_inner(...), n)`` (energy differences by quadrature of the score),
    ``rb.rtk(target, grid, rb.uld_inner(), n)``, ``rb.ddpm(target, grid)``, ...

    Examples
    --------
    >>> import jax, jax.numpy as jnp
    >>> data = jax.random.normal(jax.random.key(0), (64, 3))
    >>> net = make_score_network(jax.random.key(1), data, hidden=8, depth=1)
    >>> target = learned_target(net)
    >>> target.logdensity is None
    True
    >>> target.score(jnp.zeros(3), 0.0).shape
    (3,)
    """
    model = trained.model if isinstance(trained, TrainedScore) else trained
    if not isinstance(model, ScoreNetwork):
        raise TypeError(
            f"trained must be a TrainedScore or a ScoreNetwork, got {type(trained)!r}"
        )
    return from_score(model)


def plot_loss(trained: TrainedScore, path: str | os.PathLike, *, window: int = 100):
    """Save the loss curve of ``trained`` (per step and moving average) to ``path``.

    Returns the path. Uses matplotlib's non-interactive ``Agg`` backend.
    """
    if not isinstance(trained, TrainedScore):
        raise TypeError(f"trained must be a TrainedScore, got {type(trained)!r}")
    window = check_int("window", window, minimum=1)
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    loss = np.asarray(trained.loss_history, dtype=float)
    if loss.ndim != 1 or loss.size == 0:
        raise ValueError("trained.loss_history must be a non-empty 1-D array")
    window = max(1, min(int(window), loss.size))
    smooth = np.convolve(loss, np.ones(window) / window, mode="valid")
    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.plot(np.arange(loss.size), loss, lw=0.5, alpha=0.35, label="per step")
    ax.plot(np.arange(window - 1, loss.size), smooth, lw=1.5, label=f"mean of {window}")
    ax.set_yscale("log")
    ax.set_xlabel("step")
    ax.set_ylabel("DSM loss (per coordinate)")
    ax.set_title("denoising score matching")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def save_trained(trained: TrainedScore, path: str | os.PathLike) -> None:
    """Write ``trained`` to ``path``: a JSON header line, then Equinox leaves."""
    if not isinstance(trained, TrainedScore):
        raise TypeError(f"trained must be a TrainedScore, got {type(trained)!r}")
    header = dict(trained.config)
    header["num_losses"] = int(len(trained.loss_history))
    with open(path, "wb") as f:
        f.write((json.dumps(header) + "\n").encode())
        eqx.tree_serialise_leaves(
            f, (trained.model, jnp.asarray(trained.loss_history, jnp.float32))
        )


def load_trained(path: str | os.PathLike) -> TrainedScore:
    """Read a :class:`TrainedScore` written by :func:`save_trained`."""
    with open(path, "rb") as f:
        header = json.loads(f.readline().decode())
        dummy = jnp.zeros((_MIN_SAMPLES, header["dim"]))
        skeleton = make_score_network(
            jax.random.key(0),
            dummy,
            hidden=header["hidden"],
            depth=header["depth"],
            num_frequencies=header["num_frequencies"],
            t_min=header["t_min"],
        )
        like = (skeleton, jnp.zeros(header.pop("num_losses"), jnp.float32))
        model, losses = eqx.tree_deserialise_leaves(f, like)
    return TrainedScore(model, np.asarray(losses), header)


def prior_predictive_samples(
    rng_key: PRNGKey,
    model: Callable,
    num_samples: int,
    *,
    site: str | None = None,
    model_args: tuple = (),
    model_kwargs: dict | None = None,
) -> Array:
    """Draws of one site of a NumPyro model's prior predictive, flattened to ``(n, d)``.

    This is how a NumPyro model supplies a learned score: train
    :func:`train_score` on these draws. ``site=None`` picks the model's only
    sample site, and is an error when there are several.

    Examples
    --------
    >>> import jax, numpyro, numpyro.distributions as dist
    >>> def model():
    ...     numpyro.sample("x", dist.Normal(0.0, 1.0).expand([3]).to_event(1))
    >>> prior_predictive_samples(jax.random.key(0), model, 10).shape
    (10, 3)
    """
    from numpyro.infer import Predictive

    rng_key = check_key("rng_key", rng_key)
    check_callable("model", model, what="a NumPyro model (a callable)")
    num_samples = check_int("num_samples", num_samples, minimum=1)
    draws = Predictive(model, num_samples=num_samples)(
        rng_key, *model_args, **(model_kwargs or {})
    )
    if site is None:
        if len(draws) != 1:
            raise ValueError(
                f"the model has sample sites {sorted(draws)}; choose one with site="
            )
        site = next(iter(draws))
    if site not in draws:
        raise ValueError(f"site {site!r} not among the model's sites {sorted(draws)}")
    values = jnp.reshape(draws[site], (num_samples, -1))
    if not bool(jnp.all(jnp.isfinite(values))):
        raise FloatingPointError(
            f"prior predictive draws of site {site!r} are not finite"
        )
    return values


# ---------------------------------------------------------------------------
# Validation helpers
# ---------------------------------------------------------------------------


def _progress(total: int, enabled: bool) -> Any:
    if not enabled:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, desc="DSM training", unit="step")


def _check_samples(samples: Any) -> Array:
    try:
        x = jnp.asarray(samples)
    except TypeError as err:
        raise TypeError(f"samples must be an array (n, dim), got {samples!r}") from err
    if not jnp.issubdtype(x.dtype, jnp.floating):
        x = x.astype(jnp.result_type(float))
    if x.ndim != 2:
        raise ValueError(f"samples must have shape (n, dim), got shape {x.shape}")
    if x.shape[0] < _MIN_SAMPLES or x.shape[1] < 1:
        raise ValueError(
            f"samples must hold at least {_MIN_SAMPLES} points of dimension >= 1, got "
            f"shape {x.shape}"
        )
    bad = int(jnp.sum(~jnp.all(jnp.isfinite(x), axis=1)))
    if bad:
        raise ValueError(f"samples has {bad} rows with NaN or inf values")
    return x
