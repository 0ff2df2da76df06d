"""Learned scores and energies: time-conditioned networks, a DSM trainer, targets.

A user-supplied ``score_fn(x, t)`` becomes a target with
:func:`rtk_blackjax.targets.from_score`; this module adds the missing piece for
models that only come as *samples* (a data set, or draws from a NumPyro model's
prior predictive): fit a network to them by denoising score matching (DSM) under
the package's OU forward process ``x_t = a_t x_0 + s_t ε``, ``a_t = e^{-t}``,
``s_t^2 = 1 - e^{-2t}``, then sample with any score-only sampler (RTK-MALA with
quadrature energies, RTK-ULD, DDPM, ...).

Two parametrisations, one trainer and one loss:

* :class:`ScoreNetwork` (:func:`train_score`): the network outputs the score;
  its target is score-only (``access == "score"``).
* :class:`EnergyNetwork` (:func:`train_energy`): the network outputs a scalar
  energy ``E(x, t) = log p_t(x) + c(t)``, its score is ``∇_x E`` by autodiff;
  its target (:func:`~rtk_blackjax.targets.from_energy`, ``access == "energy"``)
  also has log densities, so RTK-MALA can run exact Metropolis tests with them
  instead of quadratures of the score.

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
* **Energy networks: the same preconditioning, made a gradient.**
  ``E = log N_diag(x; a μ, s^2 + a^2 σ_d^2) + (a/s) <σ_d ⊙ G(u, c_noise), u>`` with
  ``u = c_in (x - a μ)`` and ``G`` an MLP with the score network's input and
  output shapes. Its score is the score network's form above with
  ``F = G + J_G^T (σ_d ⊙ u) / σ_d``: the same Gaussian baseline, ``1/s`` scaling
  and unit-scale input and output, so :func:`dsm_loss` trains both on one scale
  (their losses are equal at initialisation and comparable after). The ``G`` term
  gives it the score network's training signal. A scalar MLP head
  ``(a/s) σ̄ g(u)`` (tried first) learns only through the gradients of its hidden
  features, one polynomial order lower; on the symmetric 8-Gaussian ring, whose
  low moments the Gaussian baseline already matches, it never left the Gaussian
  start (DSM loss 1.00 after 10,000 steps, relative score error at ``t = 1e-3``
  still 0.99), where the inner-product form reached 0.804 / 0.30 and the score
  network 0.810 / 0.31 (``benchmarks/energy_vs_score.py`` compares the two kept
  parametrisations).
* **Cost.** One energy-network score (or energy and score, ``value_and_grad``)
  is a forward and a backward pass: it counts as one NFE, like one
  score-network call, and costs about 2-3 score-network calls (measured 2.4-2.9
  with a 2 x 64 MLP in 2-D and 10-D on CPU, ``benchmarks/energy_vs_score.py``).
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
from rtk_blackjax.targets.base import Target, from_energy, from_score
from rtk_blackjax.types import Array, ArrayLike, PRNGKey

__all__ = [
    "ScoreNetwork",
    "EnergyNetwork",
    "TrainedScore",
    "make_score_network",
    "make_energy_network",
    "dsm_loss",
    "train_score",
    "train_energy",
    "learned_target",
    "plot_loss",
    "save_trained",
    "load_trained",
    "prior_predictive_samples",
]

_MIN_SAMPLES = 16
# The training-config keys that describe a score network's architecture (the header
# of files written before save_trained recorded the architecture itself).
_ARCH_KEYS = ("dim", "hidden", "depth", "num_frequencies", "t_min")


# ---------------------------------------------------------------------------
# The network
# ---------------------------------------------------------------------------


def _time_embedding(c_noise: Array, num_frequencies: int) -> Array:
    # Fixed (not trained) octave frequencies over c_noise = log(σ)/4 ∈ [-2, 1.5].
    freqs = 0.5 * jnp.pi * 2.0 ** jnp.arange(num_frequencies, dtype=c_noise.dtype)
    angles = freqs * c_noise
    return jnp.concatenate([c_noise[None], jnp.sin(angles), jnp.cos(angles)])


class _Preconditioned(eqx.Module):
    """Fields and EDM scalings shared by :class:`ScoreNetwork` and :class:`EnergyNetwork`.

    Subclasses define ``_pieces(x, t) -> (a, s², μ, σ_d, total, F)``, ``F`` the
    unit-scale network correction (an MLP output, or the gradient of a scalar
    potential); the score, the denoiser and the DSM loss are written once, here and
    in :func:`dsm_loss`, in terms of it.
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

    def _features(self, x: Array, t: ArrayLike):
        """Scalings at ``max(t, t_min)``, the network input ``u = c_in (x - a μ)``
        and the time embedding."""
        t = jnp.maximum(jnp.asarray(t, x.dtype), self.t_min)
        a, s2 = ou_mean_coef(t), ou_variance(t)
        mu = jax.lax.stop_gradient(self.data_mean)
        sd = jax.lax.stop_gradient(self.data_std)
        total = s2 + (a * sd) ** 2  # variance of x_t for Gaussian data (μ, σ_d²)
        c_noise = 0.25 * 0.5 * (jnp.log(s2) - 2.0 * jnp.log(a))
        u = (x - a * mu) / jnp.sqrt(total)
        return a, s2, mu, sd, total, u, _time_embedding(c_noise, self.num_frequencies)

    def _pieces(self, x: Array, t: ArrayLike):
        raise NotImplementedError

    def score(self, x: ArrayLike, t: ArrayLike) -> Array:
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


class ScoreNetwork(_Preconditioned):
    """Time-conditioned score ``score(x, t)`` of OU-diffused data (see module notes).

    ``net(x, t)`` and ``net.score(x, t)`` are the score, ``net.denoise(x, t)`` the
    Tweedie denoiser; one flat position ``x`` of shape ``(dim,)``.

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

    def _pieces(self, x: Array, t: ArrayLike):
        a, s2, mu, sd, total, u, embed = self._features(x, t)
        return a, s2, mu, sd, total, self.mlp(jnp.concatenate([u, embed]))

    def __call__(self, x: ArrayLike, t: ArrayLike) -> Array:
        """``∇_x log p_t(x)`` for one flat position ``x`` of shape ``(dim,)``."""
        return self.score(x, t)


class EnergyNetwork(_Preconditioned):
    """Time-conditioned energy ``E(x, t) = log p_t(x) + c(t)`` of OU-diffused data.

    ``net(x, t)`` and ``net.energy(x, t)`` are the scalar energy,
    ``net.score(x, t)`` its gradient ``∇_x E`` (autodiff: one forward and one
    backward pass of the MLP), ``net.denoise(x, t)`` the Tweedie denoiser; one flat
    position ``x`` of shape ``(dim,)``. The energy is (module notes)

    ``E = log N_diag(x; a μ, s² + a² σ_d²) + (a / s) <σ_d ⊙ G(u, c_noise), u>``,
    ``u = c_in (x - a μ)``,

    with ``G`` the MLP (vector output, like :class:`ScoreNetwork`'s ``F``). Its
    score is the fitted diagonal Gaussian's score plus
    ``a σ_d F / (s sqrt(s² + a² σ_d²))`` with
    ``F = G + J_G(u)^T (σ_d ⊙ u) / σ_d``: :class:`ScoreNetwork`'s form, with the
    score network's output ``G`` plus a Jacobian term that makes the field a
    gradient. Input ``u`` and output ``F`` have unit scale at every ``t``, and the
    same DSM loss (:func:`dsm_loss`, on ``F``) trains it at the same scale.

    Fields
    ------
    mlp
        ``eqx.nn.MLP`` mapping ``[u, embed(c_noise)]`` to ``G`` (shape ``(dim,)``).
    data_mean, data_std, t_min, num_frequencies
        As for :class:`ScoreNetwork`.

    Notes
    -----
    The Gaussian term includes its normaliser, so an untrained network (last
    layer zero: ``G = 0``) is the *normalised* log density of the fitted diagonal
    Gaussian at every ``t``; after training ``c(t)`` is unknown but cancels in
    every Metropolis test (differences at one ``t``).
    """

    def _potential(self, u: Array, embed: Array, sd: Array) -> Array:
        # h(u) = <σ_d ⊙ G(u), u>: ∇_u h / σ_d = G + J_G^T (σ_d ⊙ u) / σ_d.
        return jnp.sum(sd * self.mlp(jnp.concatenate([u, embed])) * u)

    def _pieces(self, x: Array, t: ArrayLike):
        a, s2, mu, sd, total, u, embed = self._features(x, t)
        grad_h = jax.grad(self._potential)(u, embed, sd)
        return a, s2, mu, sd, total, grad_h / sd

    def energy(self, x: ArrayLike, t: ArrayLike) -> Array:
        """``log p_t(x)`` up to a constant per ``t``: a scalar, ``x`` of shape ``(dim,)``."""
        x = jnp.asarray(x)
        self._check(x)
        a, s2, mu, sd, total, u, embed = self._features(x, t)
        gaussian = -0.5 * jnp.sum(u**2 + jnp.log(2.0 * jnp.pi * total))
        return gaussian + a / jnp.sqrt(s2) * self._potential(u, embed, sd)

    def __call__(self, x: ArrayLike, t: ArrayLike) -> Array:
        """The energy :meth:`energy` (a scalar)."""
        return self.energy(x, t)


def _make_mlp(rng_key: PRNGKey, in_size: int, out_size: int, hidden: int, depth: int):
    """An MLP whose last layer is zero (the network starts at the Gaussian fit)."""
    mlp = eqx.nn.MLP(
        in_size=in_size,
        out_size=out_size,
        width_size=hidden,
        depth=depth,
        activation=jax.nn.silu,
        key=rng_key,
    )
    last = mlp.layers[-1]
    return eqx.tree_at(
        lambda m: (m.layers[-1].weight, m.layers[-1].bias),
        mlp,
        (jnp.zeros_like(last.weight), jnp.zeros_like(last.bias)),
    )


def _make_network(
    kind: str,
    rng_key: PRNGKey,
    samples: ArrayLike,
    hidden: int,
    depth: int,
    num_frequencies: int,
    t_min: float,
) -> "ScoreNetwork | EnergyNetwork":
    rng_key = check_key("rng_key", rng_key)
    x = _check_samples(samples)
    check_int("hidden", hidden, minimum=1)
    check_int("depth", depth, minimum=1)
    check_int("num_frequencies", num_frequencies, minimum=1)
    t_min = check_positive("t_min", t_min)
    dim = x.shape[1]
    in_size = dim + 1 + 2 * num_frequencies
    mlp = _make_mlp(rng_key, in_size, dim, hidden, depth)
    std = jnp.std(x, axis=0)
    std = jnp.where(std > 0, std, 1.0)  # a constant coordinate: keep c_in finite
    cls = ScoreNetwork if kind == "score" else EnergyNetwork
    return cls(mlp, jnp.mean(x, axis=0), std, t_min, num_frequencies)


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
    return _make_network(
        "score", rng_key, samples, hidden, depth, num_frequencies, t_min
    )


def make_energy_network(
    rng_key: PRNGKey,
    samples: ArrayLike,
    *,
    hidden: int = 128,
    depth: int = 3,
    num_frequencies: int = 8,
    t_min: float = 1e-4,
) -> EnergyNetwork:
    """An untrained :class:`EnergyNetwork` standardised on ``samples`` ``(n, dim)``.

    Same arguments as :func:`make_score_network`. Its last layer is zero, so it
    starts as the (normalised) log density of the diagonal Gaussian fitted to
    ``samples``, and its score as that Gaussian's score.

    Examples
    --------
    >>> import jax, jax.numpy as jnp
    >>> data = jax.random.normal(jax.random.key(0), (100, 2)) * 2.0 + 1.0
    >>> net = make_energy_network(jax.random.key(1), data, hidden=8, depth=1)
    >>> net(jnp.zeros(2), 0.5).shape  # the energy: a scalar
    ()
    >>> net.score(jnp.zeros(2), 0.5).shape
    (2,)
    """
    return _make_network(
        "energy", rng_key, samples, hidden, depth, num_frequencies, t_min
    )


_MAKE = {"score": make_score_network, "energy": make_energy_network}
_KIND = {ScoreNetwork: "score", EnergyNetwork: "energy"}


# ---------------------------------------------------------------------------
# Denoising score matching
# ---------------------------------------------------------------------------


def dsm_loss(
    mlp: eqx.nn.MLP,
    network: "ScoreNetwork | EnergyNetwork",
    x0: Array,
    t: Array,
    noise: Array,
) -> Array:
    """Mean DSM loss of a batch, in the unit-scale output space of ``F``.

    ``x0``: ``(b, dim)`` data, ``t``: ``(b,)`` times, ``noise``: ``(b, dim)``
    standard normal. The regression target of ``F`` is
    ``(x_0 - μ - c_skip (x_t/a - μ)) / c_out``; its optimum is the exact score.
    ``F`` is the MLP's output for a :class:`ScoreNetwork` and ``∇_u h / σ_d``
    (autodiff) for an :class:`EnergyNetwork`: one loss, on the same scale, for
    both parametrisations.
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
    """Result of :func:`train_score` and :func:`train_energy`.

    model
        The trained :class:`ScoreNetwork` or :class:`EnergyNetwork` (the EMA of the
        weights when ``ema > 0``); ``model.score(x, t)`` is the score of either,
        :func:`learned_target` wraps it as a target.
    loss_history
        DSM loss of every training step, shape ``(num_steps,)`` (NumPy).
    config
        The hyperparameters it was trained with (JSON-ready); ``config["network"]``
        is ``"score"`` or ``"energy"``.
    """

    model: "ScoreNetwork | EnergyNetwork"
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
    return _train(
        "score",
        rng_key,
        samples,
        num_steps=num_steps,
        batch_size=batch_size,
        learning_rate=learning_rate,
        t_min=t_min,
        t_max=t_max,
        hidden=hidden,
        depth=depth,
        num_frequencies=num_frequencies,
        weight_decay=weight_decay,
        ema=ema,
        chunk_size=chunk_size,
        progress_bar=progress_bar,
    )


def train_energy(
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
    """Fit an :class:`EnergyNetwork` to ``samples`` by denoising score matching.

    The same trainer, arguments, loss and defaults as :func:`train_score`; the DSM
    loss is taken on the network's autodiff score (:func:`dsm_loss`), so the two
    loss histories are on one scale and comparable. A step costs more than a
    score-network step, since the loss differentiates a gradient (measured about
    1.5x on the 10-D chessboard with a 2 x 64 MLP). The result's
    :func:`learned_target` has a log density (``access == "energy"``): exact
    Metropolis tests (``rtk-mala``) and SMC weights become available.

    Returns
    -------
    TrainedScore
        With ``model`` an :class:`EnergyNetwork` and ``config["network"] ==
        "energy"``.

    Examples
    --------
    >>> import jax, jax.numpy as jnp
    >>> data = 0.5 * jax.random.normal(jax.random.key(0), (512, 2)) + 1.0
    >>> trained = train_energy(jax.random.key(1), data, num_steps=20, batch_size=64,
    ...                        hidden=8, depth=1, chunk_size=20, progress_bar=False)
    >>> trained.config["network"], trained.model(jnp.ones(2), 0.1).shape
    ('energy', ())
    """
    return _train(
        "energy",
        rng_key,
        samples,
        num_steps=num_steps,
        batch_size=batch_size,
        learning_rate=learning_rate,
        t_min=t_min,
        t_max=t_max,
        hidden=hidden,
        depth=depth,
        num_frequencies=num_frequencies,
        weight_decay=weight_decay,
        ema=ema,
        chunk_size=chunk_size,
        progress_bar=progress_bar,
    )


def _train(
    kind: str,
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
    """The trainer behind :func:`train_score` and :func:`train_energy`."""
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
        network=kind,
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
    network = _MAKE[kind](
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
    bar = _progress(num_steps, progress_bar, kind)
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


def learned_target(
    trained: "TrainedScore | ScoreNetwork | EnergyNetwork",
) -> Target:
    """The :class:`~rtk_blackjax.targets.Target` of a trained network.

    * A :class:`ScoreNetwork` gives a **score-only** target (``access ==
      "score"``, :func:`~rtk_blackjax.targets.from_score`): it plugs into every
      score-only sampler, ``rb.rtk(target, grid, rb.score_mala_inner(...), n)``
      (energy differences by quadrature of the score), ``rb.rtk(target, grid,
      rb.uld_inner(), n)``, ``rb.ddpm(target, grid)``, ...
    * An :class:`EnergyNetwork` gives an **energy** target (``access ==
      "energy"``, :func:`~rtk_blackjax.targets.from_energy`): ``logdensity`` is
      the network's energy (``log p_t`` up to a constant per ``t``), ``score`` its
      autodiff gradient, so the exact-Metropolis samplers (``rb.mala_inner``,
      ``configure("rtk-mala", ...)``) apply too. One score (or energy and score)
      evaluation counts as one NFE; it costs a forward and a backward pass.

    Examples
    --------
    >>> import jax, jax.numpy as jnp
    >>> data = jax.random.normal(jax.random.key(0), (64, 3))
    >>> net = make_score_network(jax.random.key(1), data, hidden=8, depth=1)
    >>> target = learned_target(net)
    >>> target.access, target.score(jnp.zeros(3), 0.0).shape
    ('score', (3,))
    >>> energy_net = make_energy_network(jax.random.key(1), data, hidden=8, depth=1)
    >>> target = learned_target(energy_net)
    >>> target.access, target.logdensity(jnp.zeros(3), 0.0).shape
    ('energy', ())
    """
    model = trained.model if isinstance(trained, TrainedScore) else trained
    if isinstance(model, (EnergyNetwork, ScoreNetwork)):
        # the training data's scale, for samplers that need the prior's (the
        # twisted SMC's twist inflation): the network stores it as its
        # input standardisation
        variance = float(np.mean(np.asarray(model.data_std) ** 2))
    if isinstance(model, EnergyNetwork):
        return from_energy(model.energy, t_min=model.t_min, variance=variance)
    if isinstance(model, ScoreNetwork):
        return from_score(model, t_min=model.t_min, variance=variance)
    raise TypeError(
        "trained must be a TrainedScore, a ScoreNetwork or an EnergyNetwork, got "
        f"{type(trained)!r}"
    )


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


def _architecture(model: "ScoreNetwork | EnergyNetwork") -> dict:
    """What :func:`load_trained` needs to rebuild ``model``'s skeleton."""
    return dict(
        kind=_KIND[type(model)],
        dim=model.dim,
        hidden=int(model.mlp.width_size),
        depth=int(model.mlp.depth),
        num_frequencies=int(model.num_frequencies),
        t_min=float(model.t_min),
    )


def save_trained(trained: TrainedScore, path: str | os.PathLike) -> None:
    """Write ``trained`` to ``path``: a JSON header line, then Equinox leaves.

    The header holds ``trained.config`` and the network's kind (score or energy)
    and architecture, read off the model itself: :func:`load_trained` rebuilds
    either kind, however it was made.
    """
    if not isinstance(trained, TrainedScore):
        raise TypeError(f"trained must be a TrainedScore, got {type(trained)!r}")
    if type(trained.model) not in _KIND:
        raise TypeError(
            "trained.model must be a ScoreNetwork or an EnergyNetwork, got "
            f"{type(trained.model)!r}"
        )
    header = dict(trained.config)
    header["num_losses"] = int(len(trained.loss_history))
    header["architecture"] = _architecture(trained.model)
    with open(path, "wb") as f:
        f.write((json.dumps(header) + "\n").encode())
        eqx.tree_serialise_leaves(
            f, (trained.model, jnp.asarray(trained.loss_history, jnp.float32))
        )


def load_trained(path: str | os.PathLike) -> TrainedScore:
    """Read a :class:`TrainedScore` written by :func:`save_trained` (either kind).

    Files written before the header recorded the architecture hold score
    networks; their architecture is read from the training config.
    """
    with open(path, "rb") as f:
        header = json.loads(f.readline().decode())
        arch = header.pop("architecture", None)
        if arch is None:  # an older file: a score network, described by its config
            arch = dict(kind="score", **{k: header[k] for k in _ARCH_KEYS})
        dummy = jnp.zeros((_MIN_SAMPLES, arch["dim"]))
        skeleton = _MAKE[arch["kind"]](
            jax.random.key(0),
            dummy,
            hidden=arch["hidden"],
            depth=arch["depth"],
            num_frequencies=arch["num_frequencies"],
            t_min=arch["t_min"],
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


def _progress(total: int, enabled: bool, kind: str) -> Any:
    if not enabled:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=f"DSM training ({kind} network)", unit="step")


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
