"""Learned diffusion priors on real data: the 8x8 digits of scikit-learn.

The one real data set that ships inside a package here (``sklearn.datasets.
load_digits``: 1797 images of 8x8 pixels with values 0..16, 64-D; a copy ships in
``rtk_blackjax/benchmarks/data/digits.npz``) serves as the
data of a *learned* prior, score- or energy-parameterised
(:func:`rtk_blackjax.adapters.learned.train_score` / ``train_energy``), and a small
classifier trained on the same training digits scores generated digits:

* :func:`digits_data` — a deterministic train / held-out split in model units;
* :data:`CONFIGS`, :func:`train_digits_prior`, :func:`digits_prior` — the DSM
  training configurations and the trained priors (the ``"cpu"`` ones ship with the
  package, in ``rtk_blackjax/benchmarks/data/``; others are trained once and
  cached);
* :func:`digits_classifier` — an MLP classifier with penultimate-layer features;
* :func:`frechet_distance`, :func:`classifier_confidence`, :func:`digit_metrics`
  — Fréchet distance of classifier features (the FID recipe on a small scale),
  mean max softmax probability, and the package's sliced W2
  (:func:`rtk_blackjax.metrics.sliced_wasserstein`) to held-out digits.

Needs no scikit-learn (the data and the trained priors ship with the package).
Used by ``benchmarks/digits_prior.py`` (prior sampling quality against NFE).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import NamedTuple

import jax
import numpy as np

from rtk_blackjax._checks import check_choice, check_int, check_key
from rtk_blackjax.adapters.learned import (
    TrainedScore,
    load_trained,
    save_trained,
    train_energy,
    train_score,
)
from rtk_blackjax.types import ArrayLike, PRNGKey

__all__ = [
    "PIXEL_CENTRE",
    "PIXEL_SCALE",
    "KINDS",
    "CONFIGS",
    "DigitsData",
    "DigitsClassifier",
    "to_pixels",
    "to_model_units",
    "digits_data",
    "train_digits_prior",
    "digits_prior",
    "prior_path",
    "digits_classifier",
    "frechet_distance",
    "classifier_confidence",
    "digit_metrics",
]

# Pixels are 0..16; (p - 8) / 8 puts them in [-1, 1] (mean ≈ -0.4, sd ≈ 0.75 per
# pixel): unit scale for the network and the OU process, whose p_T is N(0, I).
PIXEL_CENTRE = 8.0
PIXEL_SCALE = 8.0
KINDS = ("energy", "score")
_DIM = 64
# Shipped weights (package data) and the cache's environment variable.
_DATA_DIR = Path(__file__).resolve().parent / "data"
CACHE_ENV = "RTK_BLACKJAX_CACHE"

# DSM training configurations (keyword arguments of train_score / train_energy).
# "cpu": picked by measurement on the 2-core development machine: 256 x 3 runs at
# ~60 (score) / ~40 (energy) steps/s there, its weights are 0.67 MB (small enough
# to ship), and 512 x 3 lowered the loss only a little for 2-2.5x the time.
# t_min = 1e-3: s_t ≈ 0.045 (a third of a pixel level), below which the data (17
# pixel levels) is singular and nothing more is learnt. "gpu": a wider, deeper
# network and 25x the steps, for an accelerator (not run by the tests).
CONFIGS: dict[str, dict] = {
    "cpu": dict(
        num_steps=6000,
        batch_size=512,
        learning_rate=2e-3,
        t_min=1e-3,
        t_max=5.0,
        hidden=256,
        depth=3,
    ),
    "gpu": dict(
        num_steps=150_000,
        batch_size=1024,
        learning_rate=1e-3,
        t_min=1e-3,
        t_max=5.0,
        hidden=1024,
        depth=4,
    ),
}


def to_pixels(x: ArrayLike) -> np.ndarray:
    """Model units back to pixel values (0..16 for real digits): ``8 x + 8``.

    Examples
    --------
    >>> to_pixels([-1.0, 0.0, 1.0]).tolist()
    [0.0, 8.0, 16.0]
    """
    return PIXEL_CENTRE + PIXEL_SCALE * np.asarray(x, dtype=np.float32)


def to_model_units(pixels: ArrayLike) -> np.ndarray:
    """Pixel values (0..16) to model units: ``(p - 8) / 8``.

    Examples
    --------
    >>> to_model_units([0, 8, 16]).tolist()
    [-1.0, 0.0, 1.0]
    """
    return (np.asarray(pixels, dtype=np.float32) - PIXEL_CENTRE) / PIXEL_SCALE


class DigitsData(NamedTuple):
    """The 8x8 digits split into training and held-out images.

    train, test
        ``float32`` arrays ``(n, 64)`` in model units (pixels ``p`` 0..16 mapped to
        ``(p - 8) / 8``, row-major 8x8 images).
    train_labels, test_labels
        Integer digit labels 0..9.
    to_pixels
        Model units back to pixels (:func:`to_pixels`).
    pixel_centre, pixel_scale
        The constants of the map: ``pixels = pixel_centre + pixel_scale * x``.
    seed
        The seed of the split.
    """

    train: np.ndarray
    test: np.ndarray
    train_labels: np.ndarray
    test_labels: np.ndarray
    to_pixels: Callable[[ArrayLike], np.ndarray] = to_pixels
    pixel_centre: float = PIXEL_CENTRE
    pixel_scale: float = PIXEL_SCALE
    seed: int = 0


def _load_digits():
    # A copy of scikit-learn's bundled digits (``load_digits()``: the UCI "Optical
    # Recognition of Handwritten Digits" test set, CC BY 4.0), as uint8 pixels and
    # labels: the benchmarks and their tests run without scikit-learn (the test
    # extra does not install it), and tests/test_digits.py checks that the copy
    # equals load_digits() where scikit-learn is installed.
    with np.load(_DATA_DIR / "digits.npz") as f:
        return f["images"].astype(np.float32), f["labels"].astype(np.int64)


def digits_data(seed: int = 0, num_test: int = 200) -> DigitsData:
    """The 1797 digits, a random permutation (``seed``) split into test and train.

    The first ``num_test`` images of ``numpy.random.default_rng(seed)``'s
    permutation are held out, the rest (1597 by default) are the training set —
    the split of ``examples/inpainting_digits.py``. Deterministic in ``seed``.

    Parameters
    ----------
    seed
        Seed of the permutation.
    num_test
        Number of held-out images, ``1 <= num_test <= 1781`` (at least 16 are
        left for training).

    Returns
    -------
    DigitsData

    Examples
    --------
    >>> data = digits_data()
    >>> data.train.shape, data.test.shape, data.train.dtype
    ((1597, 64), (200, 64), dtype('float32'))
    >>> float(data.train.min()), float(data.train.max())
    (-1.0, 1.0)
    >>> int(data.to_pixels(data.test[0]).max()) <= 16
    True
    """
    seed = check_int("seed", seed, minimum=0)
    images, labels = _load_digits()
    num_test = check_int("num_test", num_test, minimum=1, maximum=len(images) - 16)
    order = np.random.default_rng(seed).permutation(len(images))
    test, train = order[:num_test], order[num_test:]
    return DigitsData(
        train=to_model_units(images[train]),
        test=to_model_units(images[test]),
        train_labels=labels[train],
        test_labels=labels[test],
        seed=seed,
    )


# ---------------------------------------------------------------------------
# Priors
# ---------------------------------------------------------------------------


def train_digits_prior(
    rng_key: PRNGKey,
    kind: str = "energy",
    config: str = "cpu",
    data: DigitsData | None = None,
    *,
    progress_bar: bool = False,
) -> TrainedScore:
    """Train a digits prior by DSM with the named configuration.

    Parameters
    ----------
    rng_key
        Key of the initialisation and of the training batches.
    kind
        ``"energy"`` (:func:`~rtk_blackjax.adapters.learned.train_energy`: log
        densities up to a constant per time, exact Metropolis tests) or
        ``"score"`` (:func:`~rtk_blackjax.adapters.learned.train_score`).
    config
        A key of :data:`CONFIGS`.
    data
        The split to train on (its ``train`` images); default ``digits_data()``.
    progress_bar
        Show tqdm's bar.

    Returns
    -------
    TrainedScore
        ``config`` also records ``digits_config`` (the name) and ``digits_seed``
        (the split's seed).

    Examples
    --------
    >>> import jax
    >>> train_digits_prior(jax.random.key(0), kind="mlp")
    Traceback (most recent call last):
    ...
    ValueError: kind must be one of ('energy', 'score'), got 'mlp'
    """
    rng_key = check_key("rng_key", rng_key)
    kind = check_choice("kind", kind, KINDS)
    config = check_choice("config", config, tuple(CONFIGS))
    data = digits_data() if data is None else data
    if not isinstance(data, DigitsData):
        raise TypeError(f"data must be a DigitsData (digits_data()), got {type(data)}")
    trainer = train_energy if kind == "energy" else train_score
    trained = trainer(rng_key, data.train, progress_bar=progress_bar, **CONFIGS[config])
    trained.config.update(digits_config=config, digits_seed=int(data.seed))
    return trained


def _file_name(kind: str, config: str, seed: int) -> str:
    return f"digits_{kind}_{config}_seed{seed}.eqx"


def _default_cache_dir() -> Path:
    env = os.environ.get(CACHE_ENV)
    return Path(env) if env else Path.home() / ".cache" / "rtk_blackjax"


def prior_path(
    kind: str = "energy",
    config: str = "cpu",
    *,
    cache_dir: str | os.PathLike | None = None,
    seed: int = 0,
) -> Path:
    """Where :func:`digits_prior` finds (or would write) a prior.

    The shipped file when it exists (``rtk_blackjax/benchmarks/data/``), otherwise
    the file in ``cache_dir`` (default: ``$RTK_BLACKJAX_CACHE``, else
    ``~/.cache/rtk_blackjax``).

    Examples
    --------
    >>> prior_path("energy", "cpu").name
    'digits_energy_cpu_seed0.eqx'
    """
    kind = check_choice("kind", kind, KINDS)
    config = check_choice("config", config, tuple(CONFIGS))
    seed = check_int("seed", seed, minimum=0)
    name = _file_name(kind, config, seed)
    shipped = _DATA_DIR / name
    if shipped.exists():
        return shipped
    root = _default_cache_dir() if cache_dir is None else Path(cache_dir)
    return root / name


def digits_prior(
    kind: str = "energy",
    config: str = "cpu",
    *,
    cache_dir: str | os.PathLike | None = None,
    seed: int = 0,
    progress_bar: bool = True,
) -> TrainedScore:
    """A trained digits prior: shipped, cached, or trained now (and cached).

    Looks, in order, for the file shipped with the package
    (``rtk_blackjax/benchmarks/data/digits_{kind}_{config}_seed{seed}.eqx``), then
    for the same name in ``cache_dir`` (default: the environment variable
    ``RTK_BLACKJAX_CACHE``, else ``~/.cache/rtk_blackjax``); when neither exists it
    runs ``train_digits_prior(jax.random.key(seed), kind, config,
    digits_data(seed))`` and saves the result there
    (:func:`~rtk_blackjax.adapters.learned.save_trained`).

    The shipped files are the ``"cpu"`` configuration with ``seed=0``, for both
    kinds, produced by exactly that call::

        digits_prior("energy", "cpu", cache_dir="rtk_blackjax/benchmarks/data")
        digits_prior("score", "cpu", cache_dir="rtk_blackjax/benchmarks/data")

    (jax 0.10.2 on CPU, float32; 6000 steps: about 2.5 and 1.7 minutes on 2 CPU
    cores). They make everything downstream fast and reproducible.

    Parameters
    ----------
    kind
        ``"energy"`` or ``"score"`` (:func:`train_digits_prior`).
    config
        A key of :data:`CONFIGS`.
    cache_dir
        Directory of trained priors (created when a prior is saved).
    seed
        Seed of the data split and of the training.
    progress_bar
        Show tqdm's bar when it has to train.

    Returns
    -------
    TrainedScore
        Wrap it with :func:`rtk_blackjax.adapters.learned.learned_target`.

    Examples
    --------
    >>> import jax, jax.numpy as jnp
    >>> trained = digits_prior("energy")  # shipped: loads in well under a second
    >>> trained.config["network"], trained.config["hidden"]
    ('energy', 256)
    >>> trained.model.score(jnp.zeros(64), 0.1).shape
    (64,)
    """
    path = prior_path(kind, config, cache_dir=cache_dir, seed=seed)
    if path.exists():
        return load_trained(path)
    trained = train_digits_prior(
        jax.random.key(seed),
        kind,
        config,
        digits_data(seed),
        progress_bar=progress_bar,
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    # Write then rename: a concurrent reader never sees half a file.
    partial = path.with_name(path.name + f".{os.getpid()}.tmp")
    save_trained(trained, partial)
    os.replace(partial, path)
    return trained


# ---------------------------------------------------------------------------
# Classifier and metrics
# ---------------------------------------------------------------------------

# MLP 64 -> 128 -> 32 -> 10 (tanh: no dead units, so every feature varies and the
# feature covariance of the Fréchet distance is well conditioned). The 32-D
# penultimate layer keeps the Fréchet distance estimable from the 200 held-out
# digits (a 64-D or wider layer would need far more reference images).
_CLASSIFIER_HIDDEN = (128, 32)


class DigitsClassifier(NamedTuple):
    """A small MLP digit classifier (tanh units), see :func:`digits_classifier`.

    Works on model units ``(n, 64)`` (or one image ``(64,)``); NumPy in, NumPy out.

    weights, biases
        The layers' weight matrices ``(in, out)`` and biases, input to output.
    accuracy
        Fraction of the held-out digits it classifies correctly.
    """

    weights: tuple[np.ndarray, ...]
    biases: tuple[np.ndarray, ...]
    accuracy: float

    def features(self, x: ArrayLike) -> np.ndarray:
        """Penultimate-layer activations ``(n, 32)``: the Fréchet distance's space."""
        h = np.atleast_2d(np.asarray(x, dtype=np.float64))
        for w, b in zip(self.weights[:-1], self.biases[:-1]):
            h = np.tanh(h @ w + b)
        return h

    def logits(self, x: ArrayLike) -> np.ndarray:
        """Class logits ``(n, 10)``."""
        return self.features(x) @ self.weights[-1] + self.biases[-1]

    def probabilities(self, x: ArrayLike) -> np.ndarray:
        """Softmax class probabilities ``(n, 10)``."""
        z = self.logits(x)
        z = np.exp(z - z.max(axis=1, keepdims=True))
        return z / z.sum(axis=1, keepdims=True)

    def predict(self, x: ArrayLike) -> np.ndarray:
        """Most probable class ``(n,)``."""
        return np.argmax(self.logits(x), axis=1)


def _classifier_loss(params, x, labels, l2):
    h = x
    for w, b in params[:-1]:
        h = jax.numpy.tanh(h @ w + b)
    w, b = params[-1]
    logp = jax.nn.log_softmax(h @ w + b)
    nll = -jax.numpy.mean(jax.numpy.take_along_axis(logp, labels[:, None], 1))
    return nll + l2 * sum(jax.numpy.sum(w**2) for w, _ in params)


def digits_classifier(
    data: DigitsData | None = None, *, num_steps: int = 600
) -> DigitsClassifier:
    """Train the metric classifier on ``data.train`` (deterministic; ~2 s on CPU).

    A tanh MLP 64 -> 128 -> 32 -> 10, cross-entropy plus a small L2 penalty,
    full-batch Adam for ``num_steps`` steps from a fixed initialisation
    (``jax.random.key(0)``). Its ``accuracy`` is measured on ``data.test``.

    Examples
    --------
    >>> clf = digits_classifier(digits_data())
    >>> clf.accuracy > 0.95, clf.features(digits_data().test).shape
    (True, (200, 32))
    """
    import optax

    data = digits_data() if data is None else data
    if not isinstance(data, DigitsData):
        raise TypeError(f"data must be a DigitsData (digits_data()), got {type(data)}")
    num_steps = check_int("num_steps", num_steps, minimum=1)
    sizes = (_DIM, *_CLASSIFIER_HIDDEN, 10)
    keys = jax.random.split(jax.random.key(0), len(sizes) - 1)
    params = [
        (
            jax.random.normal(k, (m, n))
            * np.sqrt(1.0 / m),  # LeCun: tanh stays unsaturated
            jax.numpy.zeros(n),
        )
        for k, m, n in zip(keys, sizes[:-1], sizes[1:])
    ]
    x = jax.numpy.asarray(data.train)
    labels = jax.numpy.asarray(data.train_labels)
    optimizer = optax.adam(optax.cosine_decay_schedule(1e-2, num_steps))

    @jax.jit
    def fit(params):
        def step(carry, _):
            params, state = carry
            grads = jax.grad(_classifier_loss)(params, x, labels, 1e-4)
            updates, state = optimizer.update(grads, state, params)
            return (optax.apply_updates(params, updates), state), None

        (params, _), _ = jax.lax.scan(
            step, (params, optimizer.init(params)), None, length=num_steps
        )
        return params

    params = fit(params)
    clf = DigitsClassifier(
        tuple(np.asarray(w, np.float64) for w, _ in params),
        tuple(np.asarray(b, np.float64) for _, b in params),
        0.0,
    )
    accuracy = float(np.mean(clf.predict(data.test) == data.test_labels))
    return clf._replace(accuracy=accuracy)


def _as_features(a: ArrayLike, name: str) -> np.ndarray:
    arr = np.asarray(a, dtype=np.float64)
    if arr.ndim != 2 or arr.shape[0] < 2:
        raise ValueError(f"{name} must be an (n, k) array with n >= 2, got {arr.shape}")
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{name} has NaN or inf values")
    return arr


def _psd_sqrt(matrix: np.ndarray) -> np.ndarray:
    """Symmetric square root of a symmetric PSD matrix (eigenvalues clipped at 0)."""
    values, vectors = np.linalg.eigh(0.5 * (matrix + matrix.T))
    return (vectors * np.sqrt(np.clip(values, 0.0, None))) @ vectors.T


def frechet_distance(features_a: ArrayLike, features_b: ArrayLike) -> float:
    """Fréchet distance between the Gaussians fitted to two feature sets.

    ``|μ_a - μ_b|² + tr(Σ_a + Σ_b - 2 (Σ_a^{1/2} Σ_b Σ_a^{1/2})^{1/2})`` — the
    squared 2-Wasserstein distance between ``N(μ_a, Σ_a)`` and ``N(μ_b, Σ_b)``,
    the FID formula. The trace of the cross term is computed from the symmetric
    PSD matrix ``Σ_a^{1/2} Σ_b Σ_a^{1/2}`` by eigendecomposition (float64,
    negative rounding-error eigenvalues clipped), not from ``sqrtm(Σ_a Σ_b)``,
    whose general (non-symmetric) square root can turn complex on
    rank-deficient covariances.

    Parameters
    ----------
    features_a, features_b
        Arrays ``(n, k)`` and ``(m, k)``, ``n, m >= 2`` (e.g.
        :meth:`DigitsClassifier.features`).

    Returns
    -------
    float
        ``>= 0``; 0 for identical sets (up to rounding, ~1e-15). A finite-sample estimate is biased
        upwards: compare with the value for two real sets of the same sizes.

    Examples
    --------
    >>> import numpy as np
    >>> a = np.random.default_rng(0).normal(size=(500, 3))
    >>> round(frechet_distance(a, a), 9)
    0.0
    >>> round(frechet_distance(a, a + 2.0), 6)  # |shift|² = 3 x 2²
    12.0
    """
    a = _as_features(features_a, "features_a")
    b = _as_features(features_b, "features_b")
    if a.shape[1] != b.shape[1]:
        raise ValueError(
            f"features_a and features_b must have the same width, got {a.shape} "
            f"and {b.shape}"
        )
    mean = np.sum((a.mean(0) - b.mean(0)) ** 2)
    cov_a = np.atleast_2d(np.cov(a, rowvar=False))
    cov_b = np.atleast_2d(np.cov(b, rowvar=False))
    root_a = _psd_sqrt(cov_a)
    cross = np.linalg.eigvalsh(root_a @ cov_b @ root_a)
    trace = (
        np.trace(cov_a)
        + np.trace(cov_b)
        - 2.0 * np.sum(np.sqrt(np.clip(cross, 0, None)))
    )
    # Rounding can leave -1e-12 for identical inputs: the distance is >= 0.
    return float(max(mean + trace, 0.0))


def classifier_confidence(classifier: DigitsClassifier, x: ArrayLike) -> float:
    """Mean over images of the classifier's largest class probability.

    Near 1 for clean digits (about 0.97 for the held-out ones), lower for blurred
    or ambiguous images — the "Inception score" half that looks at single images.
    """
    return float(np.mean(np.max(classifier.probabilities(x), axis=1)))


def digit_metrics(
    samples: ArrayLike,
    reference: ArrayLike,
    classifier: DigitsClassifier,
    rng_key: PRNGKey,
    *,
    num_directions: int = 512,
) -> dict:
    """Sample quality of generated digits against reference (held-out) digits.

    Parameters
    ----------
    samples, reference
        Model-unit images ``(n, 64)`` and ``(m, 64)``.
    classifier
        :func:`digits_classifier`.
    rng_key
        Key of the sliced Wasserstein directions.
    num_directions
        Directions of the sliced W2.

    Returns
    -------
    dict
        ``fd`` (:func:`frechet_distance` of the classifier features),
        ``confidence`` (:func:`classifier_confidence` of ``samples``),
        ``class_tv`` (total variation between the predicted-class frequencies of
        the samples and of the reference: a missing or over-produced digit shows
        here), ``sliced_w2`` (:func:`rtk_blackjax.metrics.sliced_wasserstein`, model
        units), ``pixel_range`` (fraction of sample pixels outside the data's
        range [-1, 1] by more than half a pixel level, 1/16).
    """
    from rtk_blackjax.metrics import sliced_wasserstein

    x = np.asarray(samples, dtype=np.float32)
    y = np.asarray(reference, dtype=np.float32)
    if x.ndim != 2 or x.shape[1] != _DIM or y.ndim != 2 or y.shape[1] != _DIM:
        raise ValueError(
            f"samples and reference must be (n, {_DIM}) arrays, got {x.shape} and "
            f"{y.shape}"
        )
    if not np.all(np.isfinite(x)):
        raise ValueError("samples has NaN or inf values")
    classes_x = np.bincount(classifier.predict(x), minlength=10) / len(x)
    classes_y = np.bincount(classifier.predict(y), minlength=10) / len(y)
    return dict(
        fd=frechet_distance(classifier.features(x), classifier.features(y)),
        confidence=classifier_confidence(classifier, x),
        class_tv=float(0.5 * np.abs(classes_x - classes_y).sum()),
        sliced_w2=sliced_wasserstein(x, y, rng_key, num_directions=num_directions),
        pixel_range=float(np.mean(np.abs(x) > 1.0 + 1.0 / 16.0)),
    )
