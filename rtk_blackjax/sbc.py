"""Simulation-based calibration (SBC) of posterior samplers.

On real data there is no exact posterior to compare a sampler with, but there is
an exact statement about the *model* (Talts et al. 2018, arXiv 1804.06788): draw
``θ ~ p(θ)``, simulate ``y ~ p(y | θ)``, draw ``L`` posterior samples
``θ_1 .. θ_L ~ p(θ | y)``; then for every scalar statistic ``f`` the rank of
``f(θ)`` among ``f(θ_1) .. f(θ_L)`` is uniform on ``{0, …, L}``. A sampler whose
draws are too narrow piles the ranks at both ends (a U), too wide in the middle
(a hump), biased at one end. The check is exact with respect to whatever prior
``θ`` is drawn from: with a learned diffusion prior, draw the truths from the
learned model (a long, converged sampler), not from real data.

Three pure functions:

* :func:`sbc_ranks` runs the loop (``simulate``, ``posterior_draws``,
  ``statistics`` are the user's callables; explicit keys throughout);
* :func:`rank_statistics` ranks given truths among given draws (the loop's
  inner step, for callers that run their own loop);
* :func:`rank_uniformity` tests the ranks (chi-square per statistic, Bonferroni
  across statistics); :func:`plot_rank_histograms` draws them with the 99 %
  binomial band of a uniform histogram.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from typing import Any, NamedTuple

import jax
import numpy as np

from rtk_blackjax._checks import check_callable, check_fraction, check_int, check_key
from rtk_blackjax.types import PRNGKey

__all__ = [
    "SBCRanks",
    "RankUniformity",
    "sbc_ranks",
    "rank_statistics",
    "rank_uniformity",
    "plot_rank_histograms",
]


class SBCRanks(NamedTuple):
    """Result of :func:`sbc_ranks`.

    ranks
        ``{statistic: (num_replications,) int array}``, each rank in
        ``0 .. num_draws``.
    num_draws
        ``L``, the posterior draws each truth was ranked among.
    truths
        ``{statistic: (num_replications,)}``: the statistic of each simulated truth.
    """

    ranks: dict[str, np.ndarray]
    num_draws: int
    truths: dict[str, np.ndarray]


class RankUniformity(NamedTuple):
    """Result of :func:`rank_uniformity`.

    p_values
        ``{statistic: p}``: chi-square goodness of fit of the rank histogram to
        the uniform one.
    corrected
        ``{statistic: min(1, p * num_statistics)}`` (Bonferroni).
    passed
        ``True`` when every corrected p-value is ``>= level``.
    level
        The level of the test (of the family of statistics, by Bonferroni).
    counts
        ``{statistic: (num_bins,) counts}``: the rank histograms tested.
    num_bins, num_draws
        The bins (each holding ``(num_draws + 1) / num_bins`` rank values) and ``L``.
    """

    p_values: dict[str, float]
    corrected: dict[str, float]
    passed: bool
    level: float
    counts: dict[str, np.ndarray]
    num_bins: int
    num_draws: int


def _check_statistics(name: str, value: Any) -> dict[str, np.ndarray]:
    # the package's rule (rtk_blackjax._checks): wrong kind TypeError, wrong value
    # ValueError, the argument named
    if not isinstance(value, Mapping):
        raise TypeError(f"{name} must be a dict {{name: values}}, got {value!r}")
    if not value:
        raise ValueError(f"{name} must be a non-empty dict {{name: values}}, got {{}}")
    return {str(k): np.asarray(v, np.float64) for k, v in value.items()}


def _thin(draws: np.ndarray, num_draws: int | None) -> np.ndarray:
    """``num_draws`` evenly spaced draws of the leading axis (all when ``None``)."""
    if num_draws is None or draws.shape[0] == num_draws:
        return draws
    keep = np.linspace(0, draws.shape[0] - 1, num_draws).round().astype(int)
    return draws[keep]


def rank_statistics(
    rng_key: PRNGKey,
    truth: Mapping[str, Any],
    draws: Mapping[str, Any],
    *,
    num_draws: int | None = None,
) -> dict[str, int]:
    """Rank of each true statistic among its posterior draws, ties at random.

    Parameters
    ----------
    rng_key
        JAX PRNG key (breaks ties).
    truth
        ``{statistic: scalar}``: the statistic of the true parameter.
    draws
        ``{statistic: (M,) values}``: the same statistics of ``M`` posterior draws,
        in the sampler's order (chain order for MCMC).
    num_draws
        ``L``: keep ``L`` evenly spaced draws of the ``M`` (``L <= M``); default all.
        SBC assumes independent draws: correlated draws (an MCMC chain, SMC
        particles sharing ancestors) make the rank histogram look too narrow
        or too wide although the sampler is right, so thin correlated draws to
        about their effective sample size. Evenly spaced thinning does that for
        a chain; for exchangeable particles it is a plain subsample.

    Returns
    -------
    dict
        ``{statistic: rank}``, ``rank = #{draws < truth} + U`` with ``U`` uniform on
        ``0 .. #{draws == truth}`` (a discrete statistic's ties would otherwise bias
        the ranks down).

    Examples
    --------
    >>> import jax, numpy as np
    >>> rank_statistics(jax.random.key(0), {"m": 0.5}, {"m": np.arange(4.0)})
    {'m': 1}
    """
    rng_key = check_key("rng_key", rng_key)
    truth = _check_statistics("truth", truth)
    draws = _check_statistics("draws", draws)
    if set(truth) != set(draws):
        raise ValueError(
            f"draws must have the statistics of truth {sorted(truth)}, got {sorted(draws)}"
        )
    out = {}
    for i, name in enumerate(sorted(truth)):
        value = truth[name]
        if value.size != 1:
            raise ValueError(
                f"truth[{name!r}] must be a scalar statistic, got shape {value.shape}"
            )
        sample = np.ravel(draws[name])
        if num_draws is not None:
            num_draws = check_int("num_draws", num_draws, minimum=1)
            if num_draws > sample.size:
                raise ValueError(
                    f"num_draws must be <= the {sample.size} draws of {name!r}, "
                    f"got {num_draws}"
                )
        sample = _thin(sample, num_draws)
        if not (np.all(np.isfinite(sample)) and np.isfinite(value)):
            raise ValueError(f"statistic {name!r} is not finite")
        below = int(np.sum(sample < value))
        ties = int(np.sum(sample == value))
        u = int(jax.random.randint(jax.random.fold_in(rng_key, i), (), 0, ties + 1))
        out[name] = below + u
    return out


def sbc_ranks(
    rng_key: PRNGKey,
    simulate: Callable[[PRNGKey], tuple[Any, Any]],
    posterior_draws: Callable[[PRNGKey, Any], Any],
    statistics: Callable[[Any], Mapping[str, Any]],
    num_replications: int,
    *,
    num_draws: int | None = None,
) -> SBCRanks:
    """SBC ranks: simulate, sample the posterior, rank the truth, repeat.

    Parameters
    ----------
    rng_key
        JAX PRNG key; replication ``i`` uses ``fold_in(rng_key, i)`` (so runs with
        the same key see the same simulations, whatever the sampler).
    simulate
        ``simulate(key) -> (truth, observation)``: ``truth ~ p(θ)`` (a pytree),
        ``observation ~ p(y | truth)``.
    posterior_draws
        ``posterior_draws(key, observation) -> draws``: ``M`` posterior draws, a
        pytree with a leading axis of size ``M`` in the sampler's order.
    statistics
        ``statistics(theta) -> {name: value}``, with ``theta`` either one truth
        (scalar values) or a batch of draws (``(M,)`` values).
    num_replications
        Simulations ``N``; the rank histograms have ``N`` entries.
    num_draws
        ``L``: thin each replication's draws to ``L`` evenly spaced ones (see
        :func:`rank_statistics` on why correlated draws must be thinned);
        default all (then every replication must return the same ``M``).

    Returns
    -------
    SBCRanks

    Examples
    --------
    A conjugate model, ``θ ~ N(0, 1)``, ``y | θ ~ N(θ, 0.5²)``, and its exact
    posterior pass the check:

    >>> import jax, jax.numpy as jnp
    >>> def simulate(key):
    ...     k1, k2 = jax.random.split(key)
    ...     theta = jax.random.normal(k1)
    ...     return theta, theta + 0.5 * jax.random.normal(k2)
    >>> def posterior_draws(key, y):  # N(y / 1.25, 0.2)
    ...     return y / 1.25 + jnp.sqrt(0.2) * jax.random.normal(key, (99,))
    >>> out = sbc_ranks(jax.random.key(0), simulate, posterior_draws,
    ...                 lambda th: {"theta": th}, 200)
    >>> out.ranks["theta"].shape, out.num_draws
    ((200,), 99)
    >>> rank_uniformity(out.ranks, out.num_draws, num_bins=10).passed
    True
    """
    rng_key = check_key("rng_key", rng_key)
    simulate = check_callable("simulate", simulate)
    posterior_draws = check_callable("posterior_draws", posterior_draws)
    statistics = check_callable("statistics", statistics)
    num_replications = check_int("num_replications", num_replications, minimum=1)
    if num_draws is not None:
        num_draws = check_int("num_draws", num_draws, minimum=1)
    ranks: dict[str, list[int]] = {}
    truths: dict[str, list[float]] = {}
    sizes = set()
    for i in range(num_replications):
        k_sim, k_post, k_tie = jax.random.split(jax.random.fold_in(rng_key, i), 3)
        truth, observation = simulate(k_sim)
        draws = posterior_draws(k_post, observation)
        truth_stats = _check_statistics("statistics", statistics(truth))
        draw_stats = _check_statistics("statistics", statistics(draws))
        sizes.update(np.size(v) for v in draw_stats.values())
        row = rank_statistics(k_tie, truth_stats, draw_stats, num_draws=num_draws)
        for name, rank in row.items():
            ranks.setdefault(name, []).append(rank)
            truths.setdefault(name, []).append(float(truth_stats[name]))
    if num_draws is None:
        if len(sizes) != 1:
            raise ValueError(
                "posterior_draws returned different numbers of draws "
                f"{sorted(sizes)}: pass num_draws to thin them to a common L"
            )
        num_draws = sizes.pop()
    return SBCRanks(
        ranks={k: np.asarray(v, np.int64) for k, v in ranks.items()},
        num_draws=int(num_draws),
        truths={k: np.asarray(v) for k, v in truths.items()},
    )


def _check_ranks(ranks: Any, num_draws: int) -> dict[str, np.ndarray]:
    if not isinstance(ranks, Mapping):
        raise TypeError(f"ranks must be a dict {{name: ranks}}, got {ranks!r}")
    if not ranks:
        raise ValueError("ranks must be a non-empty dict {name: ranks}, got {}")
    out = {}
    for name, value in ranks.items():
        value = np.asarray(value)
        if value.ndim != 1 or value.size < 1:
            raise ValueError(
                f"ranks[{name!r}] must be a 1-D array of ranks, got shape {value.shape}"
            )
        if not np.issubdtype(value.dtype, np.integer):
            if not np.all(value == np.round(value)):
                raise ValueError(f"ranks[{name!r}] must be integers, got {value[:5]}")
            value = value.astype(np.int64)
        if value.min() < 0 or value.max() > num_draws:
            raise ValueError(
                f"ranks[{name!r}] must lie in 0 .. num_draws={num_draws}, got "
                f"[{value.min()}, {value.max()}]"
            )
        out[str(name)] = value
    return out


def _bin_counts(ranks: np.ndarray, num_draws: int, num_bins: int) -> np.ndarray:
    # rank r of L + 1 equally likely values goes to bin floor(r * B / (L + 1)):
    # with (L + 1) divisible by B every bin holds the same number of rank values
    return np.bincount(ranks * num_bins // (num_draws + 1), minlength=num_bins)


def rank_uniformity(
    ranks: Mapping[str, Any],
    num_draws: int,
    *,
    num_bins: int = 20,
    level: float = 0.01,
) -> RankUniformity:
    """Chi-square test of uniform ranks per statistic, Bonferroni across them.

    Parameters
    ----------
    ranks
        ``{statistic: (N,) ranks in 0 .. num_draws}`` (:attr:`SBCRanks.ranks`).
    num_draws
        ``L``: each rank takes ``L + 1`` equally likely values when the sampler is
        exact.
    num_bins
        Histogram bins ``B``; ``(L + 1)`` must be a multiple of ``B`` so that every
        bin is equally likely (choose ``L = k B - 1``: 99, 199, 39 draws with 20
        bins; 19, 99 with 10 or 20). Keep ``N / B`` at 5 or more (the chi-square
        approximation).
    level
        The check fails when some Bonferroni-corrected p-value is below ``level``
        (0.01: a right sampler fails 1 % of the time or less, whatever the number of
        statistics).

    Returns
    -------
    RankUniformity

    Examples
    --------
    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> good = {"a": rng.integers(0, 100, 400), "b": rng.integers(0, 100, 400)}
    >>> rank_uniformity(good, 99).passed
    True
    >>> narrow = {"a": np.r_[rng.integers(0, 10, 200), rng.integers(90, 100, 200)]}
    >>> rank_uniformity(narrow, 99).passed
    False
    """
    from scipy.stats import chi2

    num_draws = check_int("num_draws", num_draws, minimum=1)
    num_bins = check_int("num_bins", num_bins, minimum=2)
    level = check_fraction("level", level, allow_zero=False)
    if (num_draws + 1) % num_bins:
        raise ValueError(
            f"num_bins must divide num_draws + 1 = {num_draws + 1} (equally likely "
            f"bins), got {num_bins}"
        )
    ranks = _check_ranks(ranks, num_draws)
    counts, p_values = {}, {}
    for name, value in ranks.items():
        count = _bin_counts(value, num_draws, num_bins)
        expected = value.size / num_bins
        stat = float(np.sum((count - expected) ** 2) / expected)
        counts[name] = count
        p_values[name] = float(chi2.sf(stat, num_bins - 1))
    corrected = {k: min(1.0, p * len(p_values)) for k, p in p_values.items()}
    return RankUniformity(
        p_values=p_values,
        corrected=corrected,
        passed=bool(min(corrected.values()) >= level),
        level=level,
        counts=counts,
        num_bins=num_bins,
        num_draws=num_draws,
    )


def plot_rank_histograms(
    ranks: Mapping[str, Any],
    num_draws: int,
    path: str | os.PathLike,
    *,
    num_bins: int = 20,
    title: str | None = None,
) -> None:
    """Rank histograms, one panel per statistic, with the 99 % band of a uniform one.

    The grey band is the central 99 % interval of one bin's count,
    ``Binomial(N, 1 / num_bins)``, under exact sampling; each panel's title has
    its Bonferroni-corrected p-value (:func:`rank_uniformity`).

    Parameters
    ----------
    ranks, num_draws, num_bins
        As in :func:`rank_uniformity`.
    path
        Where to write the figure (PNG by the suffix).
    title
        Figure title.

    Examples
    --------
    >>> import numpy as np, os, tempfile
    >>> ranks = {"x": np.random.default_rng(0).integers(0, 100, 200)}
    >>> path = os.path.join(tempfile.mkdtemp(), "ranks.png")
    >>> plot_rank_histograms(ranks, 99, path, num_bins=10)
    >>> os.path.exists(path)
    True
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from scipy.stats import binom

    test = rank_uniformity(ranks, num_draws, num_bins=num_bins)
    names = sorted(test.counts)
    n = next(iter(test.counts.values())).sum()
    lo, hi = binom.ppf([0.005, 0.995], n, 1.0 / num_bins)
    cols = min(len(names), 4)
    rows = -(-len(names) // cols)
    fig, axes = plt.subplots(
        rows, cols, figsize=(2.6 * cols, 2.0 * rows), squeeze=False
    )
    for ax, name in zip(axes.ravel(), names):
        ax.axhspan(lo, hi, color="0.85", zorder=0)
        ax.axhline(n / num_bins, color="0.5", lw=0.8, zorder=1)
        ax.bar(np.arange(num_bins), test.counts[name], width=1.0, color="C0", zorder=2)
        ax.set_title(f"{name}  p_corr={test.corrected[name]:.2g}", fontsize=8)
        ax.set_xticks([])
        ax.tick_params(labelsize=7)
    for ax in axes.ravel()[len(names) :]:
        ax.axis("off")
    if title:
        fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
