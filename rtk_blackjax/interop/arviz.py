"""ArviZ data from every result type of the package: one converter, :func:`to_arviz`.

* :class:`~rtk_blackjax.run.SampleResult` (what :func:`rtk_blackjax.sample`
  returns): independent particles grouped into ``num_chains`` chains, with NFE,
  non-finite flags and every per-segment info field in ``sample_stats``;
* :class:`~rtk_blackjax.posterior.PosteriorResult` (split Gibbs, SMC, DPS, NUTS):
  already ``(chains, draws, dim)``, other latent sites from ``extras["sites"]``,
  per-block acceptance in ``sample_stats``;
* ``ModelSamples`` (:func:`rtk_blackjax.adapters.sample_model`): the constrained
  NumPyro sites as the posterior, its run's statistics as for a ``SampleResult``.

ArviZ versions: the groups are ``xarray.Dataset`` objects with dims ``("chain",
"draw", ...)`` built here; only the container differs between ArviZ 0.x
(``az.InferenceData``) and 1.x (which has no ``InferenceData`` and reads an
``xarray.DataTree`` whose children are the groups), chosen in one place,
:func:`_inference_data`. ArviZ and xarray are imported on the first conversion, not
with the package.
"""

import sys
import warnings
from collections.abc import Callable
from typing import Any

import jax
import numpy as np

from rtk_blackjax._checks import check_int
from rtk_blackjax.run.sampling import SampleResult

__all__ = ["to_arviz"]

# Major version of the installed ArviZ, read on the first conversion (None until
# then). arviz >= 1.0 replaced InferenceData by xarray.DataTree.
_ARVIZ_MAJOR: int | None = None
# Per-segment info fields renamed in sample_stats (others keep their names);
# ``time`` is the same for every particle and becomes the ``t_end`` coordinate.
_RENAMED_STATS = {"num_evaluations": "segment_nfe", "is_finite": "segment_is_finite"}
_SKIPPED_STATS = ("time",)


def _inference_data(groups: dict):
    """Assemble groups into the container of the installed ArviZ.

    arviz 0.x: ``az.InferenceData(posterior=..., sample_stats=...)``. arviz 1.x has
    no ``InferenceData`` class any more: its functions take an ``xarray.DataTree``
    whose children are the groups, which is what we build there.
    """
    global _ARVIZ_MAJOR
    import arviz as az
    import xarray as xr

    if _ARVIZ_MAJOR is None:
        _ARVIZ_MAJOR = int(az.__version__.split(".")[0])
    if _ARVIZ_MAJOR < 1 and hasattr(az, "InferenceData"):
        return az.InferenceData(**groups)
    return xr.DataTree.from_dict(groups)  # pragma: no cover - arviz 1.x only


def _model_samples_type() -> type | None:
    # ModelSamples lives in mcmc.logdensity; like every sampler module it is not
    # imported here: look it up only if it is loaded (no ModelSamples exists otherwise).
    module = sys.modules.get("rtk_blackjax.mcmc.logdensity")
    return None if module is None else module.ModelSamples


def _named_leaves(samples: Any, var_name: str) -> dict[str, np.ndarray]:
    """One array per variable: a single array is ``var_name``, pytrees by path."""
    if isinstance(samples, (np.ndarray, jax.Array)):
        return {var_name: np.asarray(samples)}
    with_path, _ = jax.tree_util.tree_flatten_with_path(samples)
    if not with_path:
        raise ValueError("result.samples must contain at least one array, got none")
    named = {}
    for path, leaf in with_path:
        name = ".".join(
            str(getattr(p, "key", getattr(p, "idx", getattr(p, "name", p))))
            for p in path
        )
        named[name or var_name] = np.asarray(leaf)
    return named


def _posterior_dataset(
    variables: dict[str, np.ndarray], num_chains: int, num_draws: int
):
    """``(chain, draw, <name>_dim_0, ...)`` variables from ``(chains * draws, ...)``."""
    import xarray as xr

    data_vars = {}
    for name, values in variables.items():
        values = np.asarray(values)
        shape = (num_chains, num_draws) + values.shape[1:]
        dims = ("chain", "draw") + tuple(
            f"{name}_dim_{i}" for i in range(values.ndim - 1)
        )
        data_vars[name] = (dims, values.reshape(shape))
    coords = {"chain": np.arange(num_chains), "draw": np.arange(num_draws)}
    return xr.Dataset(data_vars, coords=coords)


def _run_groups(
    result: SampleResult, num_chains: int, variables: dict[str, np.ndarray] | None,
    postprocess_fn: Callable | None, var_name: str,
) -> dict:  # fmt: skip
    """Groups of a :class:`SampleResult`; ``variables`` replace its samples if given."""
    import xarray as xr

    leaves = jax.tree.leaves(result.samples)
    if not leaves:
        raise ValueError("result.samples must contain at least one array, got none")
    num_samples = int(np.shape(leaves[0])[0])
    if num_samples % num_chains:
        raise ValueError(
            f"num_chains must divide the number of samples ({num_samples}), got "
            f"{num_chains}"
        )
    num_draws = num_samples // num_chains

    if variables is None and postprocess_fn is not None:
        if not callable(postprocess_fn):
            raise TypeError(
                f"postprocess_fn must be callable flat -> dict, got {postprocess_fn!r}"
            )
        sites = jax.vmap(postprocess_fn)(result.samples)
        if not isinstance(sites, dict):
            raise TypeError(
                "postprocess_fn must return a dict of named sites, got "
                f"{type(sites).__name__}"
            )
        variables = {str(k): np.asarray(v) for k, v in sites.items()}
    elif variables is None:
        variables = _named_leaves(result.samples, var_name)
    posterior = _posterior_dataset(variables, num_chains, num_draws)

    times = None if result.times is None else np.asarray(result.times)
    num_segments = None if times is None else times.shape[0] - 1
    finite = np.asarray(result.finite, bool).reshape(num_chains, num_draws)
    stats = {
        "nfe": (
            ("chain", "draw"),
            np.full((num_chains, num_draws), int(result.num_evaluations), np.int64),
        ),
        "is_finite": (("chain", "draw"), finite),
        "diverging": (("chain", "draw"), ~finite),
    }
    if result.first_nonfinite_segment is not None:
        first_bad = np.asarray(result.first_nonfinite_segment, np.int64)
        stats["first_nonfinite_segment"] = (
            ("chain", "draw"),
            first_bad.reshape(num_chains, num_draws),
        )
    coords = {"chain": np.arange(num_chains), "draw": np.arange(num_draws)}
    if result.info is not None and hasattr(result.info, "_fields"):
        for field in result.info._fields:
            values = getattr(result.info, field)
            if field in _SKIPPED_STATS or np.ndim(values) != 2:
                continue  # only (num_segments, num_samples) fields are per draw
            name = _RENAMED_STATS.get(field, field)
            values = np.asarray(values)  # (num_segments, num_samples)
            per_draw = values.T.reshape(num_chains, num_draws, values.shape[0])
            stats[name] = (("chain", "draw", "segment"), per_draw)
            num_segments = values.shape[0]
    if num_segments is not None:
        coords["segment"] = np.arange(num_segments)
        if times is not None:
            coords["t_start"] = ("segment", times[:-1])
            coords["t_end"] = ("segment", times[1:])
    sample_stats = xr.Dataset(stats, coords=coords)
    sample_stats.attrs["num_evaluations"] = int(result.num_evaluations)

    bad = int((~finite).sum())
    if bad:
        first = ""
        if "first_nonfinite_segment" in stats:
            first = (
                f"; first in segment {int(np.min(stats['first_nonfinite_segment'][1]))}"
            )
        warnings.warn(
            f"{bad} of {num_samples} samples are non-finite (marked in "
            f"sample_stats.diverging{first})",
            RuntimeWarning,
            stacklevel=3,  # the caller of to_arviz
        )
    return {"posterior": posterior, "sample_stats": sample_stats}


def _posterior_result_groups(result, var_name: str) -> dict:
    """Groups of a :class:`PosteriorResult` (already ``(chains, draws, dim)``)."""
    import xarray as xr

    samples = np.asarray(result.samples)
    if samples.ndim != 3:
        raise ValueError(
            f"result.samples must have shape (chains, draws, dim), got {samples.shape}"
        )
    chains, draws = samples.shape[:2]
    variables = {var_name: samples.reshape((chains * draws,) + samples.shape[2:])}
    for name, values in (result.extras.get("sites") or {}).items():
        values = np.asarray(values)
        variables[name] = values.reshape((chains * draws,) + values.shape[2:])
    posterior = _posterior_dataset(variables, chains, draws)
    stats = {}
    for block, values in result.acceptance.items():
        stats[f"acceptance_{block}"] = (("chain", "draw"), np.asarray(values))
    if "prior" in result.acceptance:
        stats["acceptance_rate"] = (
            ("chain", "draw"),
            np.asarray(result.acceptance["prior"]),
        )
    coords = {"chain": np.arange(chains), "draw": np.arange(draws)}
    sample_stats = xr.Dataset(stats, coords=coords)
    return {"posterior": posterior, "sample_stats": sample_stats}


def to_arviz(
    result: Any,
    var_name: str = "x",
    *,
    num_chains: int | None = None,
    postprocess_fn: Callable | None = None,
):
    """Convert any result of the package to ArviZ data (``posterior``, ``sample_stats``).

    * A :class:`~rtk_blackjax.run.SampleResult`: sample ``i`` becomes draw
      ``i % D`` of chain ``i // D`` with ``D = num_samples / num_chains``. RTK
      particles are independent, so the chains are only a grouping: R-hat ≈ 1 and
      ESS ≈ ``num_samples`` are what a correct run gives (a check on the driver,
      not on the inner kernels; for those see
      :func:`rtk_blackjax.diagnostics.segment_diagnostics`).
    * A :class:`~rtk_blackjax.posterior.PosteriorResult`: its ``(chains, draws,
      dim)`` samples as they are.
    * ``ModelSamples`` of :func:`rtk_blackjax.adapters.sample_model`: its
      constrained sites, grouped as for a ``SampleResult``.

    Parameters
    ----------
    result
        A ``SampleResult`` (with or without ``info``), a ``PosteriorResult`` or a
        ``ModelSamples``.
    var_name
        Name of the posterior variable holding the samples when they are a single
        array (pytree samples of a ``SampleResult`` are named by their paths;
        ``ModelSamples`` by their sites).
    num_chains
        ``SampleResult`` / ``ModelSamples``: number of chains to split the samples
        into; must divide ``num_samples`` (default 1). ``PosteriorResult``: its
        chains are fixed, so ``None`` or their number.
    postprocess_fn
        ``SampleResult`` only: an optional ``flat position -> dict of named
        sites`` (e.g. a NumPyro model's transform back to constrained values);
        each site becomes one posterior variable. It is ``jax.vmap``-ed over the
        samples.

    Returns
    -------
    ``arviz.InferenceData`` (arviz 0.x) or ``xarray.DataTree`` (arviz 1.x) with

    * ``posterior``: one variable per site, dims ``(chain, draw, <name>_dim_0, ...)``
      (a ``PosteriorResult`` adds every array of ``extras["sites"]``, other latent
      sites of a NumPyro model, constrained);
    * ``sample_stats`` of a ``SampleResult`` / ``ModelSamples``: ``nfe`` (per
      draw), ``is_finite``, ``diverging`` (= non-finite),
      ``first_nonfinite_segment`` (``num_segments`` if finite), and with ``info``:
      every per-segment field of it with dims ``(chain, draw, segment)`` (for RTK
      ``acceptance_rate``, ``segment_nfe``, ``step_size``, ``curvature``,
      ``segment_is_finite``); coordinates ``t_start`` / ``t_end`` along
      ``segment``;
    * ``sample_stats`` of a ``PosteriorResult``: ``acceptance_<block>`` for each
      block and ``acceptance_rate`` (the prior block's, ArviZ's usual name).

    Examples
    --------
    >>> import jax, jax.numpy as jnp
    >>> import rtk_blackjax as rb
    >>> target = rb.targets.gaussian(jnp.zeros(2), 0.5)
    >>> sampler = rb.ddpm(target, rb.geometric_grid(4))  # or rb.rtk(...)
    >>> result = rb.sample(jax.random.key(0), sampler, 40, dim=2)
    >>> idata = to_arviz(result, num_chains=4)
    >>> dict(idata.posterior["x"].sizes)
    {'chain': 4, 'draw': 10, 'x_dim_0': 2}
    >>> dict(idata.sample_stats["segment_nfe"].sizes)
    {'chain': 4, 'draw': 10, 'segment': 4}

    A :class:`~rtk_blackjax.posterior.PosteriorResult`:

    >>> import numpy as np, arviz as az
    >>> from rtk_blackjax.posterior import PosteriorResult
    >>> res = PosteriorResult(np.zeros((2, 5, 3)) + np.arange(5)[:, None], 1.0,
    ...                       1.0, {"prior": np.ones((2, 5))}, {})
    >>> az.summary(to_arviz(res), kind="diagnostics").shape[0]
    3
    """
    # Imported here: rtk_blackjax.posterior re-exports this function.
    from rtk_blackjax.posterior.base import PosteriorResult

    if not isinstance(var_name, str):
        raise TypeError(f"var_name must be a non-empty string, got {var_name!r}")
    if not var_name:
        raise ValueError("var_name must be a non-empty string, got ''")
    model_samples = _model_samples_type()
    if isinstance(result, PosteriorResult):
        chains = int(np.shape(result.samples)[0]) if np.ndim(result.samples) else 0
        if num_chains is not None and check_int("num_chains", num_chains) != chains:
            raise ValueError(
                f"num_chains must be None for a PosteriorResult (its samples have "
                f"{chains} chains), got {num_chains}"
            )
        if postprocess_fn is not None:
            raise ValueError(
                "postprocess_fn applies to a SampleResult only (a PosteriorResult "
                "holds its sites in extras['sites'])"
            )
        groups = _posterior_result_groups(result, var_name)
    elif isinstance(result, SampleResult) or (
        model_samples is not None and isinstance(result, model_samples)
    ):
        num_chains = 1 if num_chains is None else num_chains
        num_chains = check_int("num_chains", num_chains, minimum=1)
        variables = None
        if not isinstance(result, SampleResult):  # ModelSamples
            if postprocess_fn is not None:
                raise ValueError(
                    "postprocess_fn applies to a SampleResult only (the sites of "
                    "ModelSamples are already constrained)"
                )
            variables = {str(k): np.asarray(v) for k, v in result.samples.items()}
            result = result.result
        groups = _run_groups(result, num_chains, variables, postprocess_fn, var_name)
    else:
        raise TypeError(
            "result must be the SampleResult of rtk_blackjax.sample, the "
            "PosteriorResult of a posterior sampler or the ModelSamples of "
            f"adapters.sample_model, got {type(result).__name__}"
        )
    return _inference_data(groups)
