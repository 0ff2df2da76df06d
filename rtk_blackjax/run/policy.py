"""What a run does about bad particles and stuck segments, after it has run.

* **Non-finite particles.** ``on_nonfinite="raise"`` (the default of
  :func:`rtk_blackjax.sample`) raises :class:`NonFiniteSamplesError` saying how
  many particles went non-finite, in which segment first and the index of one;
  ``"mask"`` returns them with ``result.finite`` marking the good ones.
* **Low acceptance.** When an inner Metropolis chain barely moves on some segment
  (mean acceptance below :data:`LOW_ACCEPTANCE`), a ``RuntimeWarning`` says which
  segments and what to change. The message names the knobs of whoever called:
  :func:`rtk_blackjax.sample` users built the algorithm themselves,
  ``sample_model`` users pass a grid to ``sample_model``: a caller inside the
  package that runs :func:`~rtk_blackjax.sample` for its user says so with
  ``with low_acceptance_hint(text):``. Internal runs (pilot rounds fitting a
  reference) use ``low_acceptance_hint(None)`` and never warn: their segments
  are not the user's run. The warning points at the first frame outside this
  package, i.e. the user's line, however deep inside the package it was raised.
"""

import contextlib
import contextvars
import os
import sys
import warnings
from collections.abc import Iterator
from typing import Any

import numpy as np

__all__ = [
    "NonFiniteSamplesError",
    "NONFINITE_POLICIES",
    "LOW_ACCEPTANCE",
    "SAMPLE_HINT",
    "raise_on_nonfinite",
    "low_acceptance_hint",
    "current_hint",
    "caller_stacklevel",
    "warn_on_low_acceptance",
]

NONFINITE_POLICIES = ("raise", "mask")
LOW_ACCEPTANCE = 0.1
# What a caller of rtk_blackjax.sample can change: it built the algorithm itself.
SAMPLE_HINT = (
    "use more (shorter) segments (a finer grid) or a smaller inner step size when "
    "building the algorithm (e.g. step_scale of rb.mala_inner / rb.uld_inner, "
    "step_size of rb.rtk_logdensity)"
)

_HINT: contextvars.ContextVar = contextvars.ContextVar(
    "low_acceptance_hint", default=SAMPLE_HINT
)
_PACKAGE_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


class NonFiniteSamplesError(FloatingPointError):
    """Raised when a sampler produced non-finite positions or scores."""


def raise_on_nonfinite(result: Any, policy: str, start_index: int) -> None:
    """With ``policy="raise"``, raise if any particle of ``result`` went non-finite."""
    first_bad = np.asarray(result.first_nonfinite_segment)
    num_segments = int(result.times.shape[0]) - 1
    bad = first_bad < num_segments
    if policy != "raise" or not bad.any():
        return
    first = int(first_bad.min())
    in_first = first_bad == first
    example = start_index + int(np.argmax(in_first))
    raise NonFiniteSamplesError(
        f"{int(bad.sum())} of {first_bad.shape[0]} particles became non-finite; "
        f"first in segment {first} (t={float(result.times[first])} -> "
        f"{float(result.times[first + 1])}) with {int(in_first.sum())} particles "
        f"(e.g. sample index {example}). Pass on_nonfinite='mask' to get the finite "
        "samples and a mask."
    )


@contextlib.contextmanager
def low_acceptance_hint(hint: str | None) -> Iterator[None]:
    """Within the block, runs of :func:`~rtk_blackjax.sample` suggest ``hint``.

    ``None`` switches the low-acceptance warning off (internal pilot runs).
    """
    token = _HINT.set(hint)
    try:
        yield
    finally:
        _HINT.reset(token)


def current_hint() -> str | None:
    """The hint in force (:data:`SAMPLE_HINT` outside any ``low_acceptance_hint``)."""
    return _HINT.get()


def caller_stacklevel() -> int:
    """``stacklevel`` of the first frame outside this package (the user's line)."""
    frame, level = sys._getframe(1), 1
    while frame is not None and os.path.abspath(frame.f_code.co_filename).startswith(
        _PACKAGE_DIR + os.sep
    ):
        frame, level = frame.f_back, level + 1
    return level


def warn_on_low_acceptance(
    acceptance: np.ndarray, times: Any, hint: str | None
) -> None:
    """Warn when the mean inner acceptance of some segment is below LOW_ACCEPTANCE.

    Parameters
    ----------
    acceptance
        Mean acceptance per segment (NaN where no Metropolis step ran).
    times
        The grid that was run.
    hint
        What the caller can change, in its own terms (e.g. :data:`SAMPLE_HINT`);
        ``None`` for internal runs: no warning.
    """
    if hint is None:
        return
    acceptance = np.asarray(acceptance)
    low = np.flatnonzero(np.isfinite(acceptance) & (acceptance < LOW_ACCEPTANCE))
    if low.size:
        k = int(low[0])
        warnings.warn(
            f"inner-kernel acceptance below {LOW_ACCEPTANCE} on {low.size} segment(s), "
            f"first segment {k} (t={float(times[k])} -> {float(times[k + 1])}): "
            f"{acceptance[k]:.3f}. The segment target is badly conditioned for the "
            f"inner kernel's step size; {hint}.",
            RuntimeWarning,
            stacklevel=caller_stacklevel(),
        )
