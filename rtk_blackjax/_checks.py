"""Argument checks shared by every public entry point.

One rule for every function of the package, so that the same mistake gets the
same exception wherever it is made:

* a value of the wrong *kind* (a float where an integer is expected, a string
  where a number is, ``True`` for a count, an array where a key is) raises
  ``TypeError``;
* a value of the right kind but outside its range (a negative step size, zero
  samples, an unknown option, a batch of keys where one is expected) raises
  ``ValueError``;
* every message names the argument, says what was expected and shows what was
  given: ``"num_samples must be an integer >= 1, got 0"``.

The checks run on concrete Python / NumPy values at the call, never inside traced
code (where values are unknown); each returns the value converted to the type the
caller goes on with.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

__all__ = [
    "is_int",
    "check_int",
    "check_number",
    "check_positive",
    "check_nonnegative",
    "check_fraction",
    "check_bool",
    "check_choice",
    "check_callable",
    "check_key",
    "check_pair",
]


def is_int(value: Any) -> bool:
    """Whether ``value`` is a Python or NumPy integer (``bool`` is not)."""
    return not isinstance(value, (bool, np.bool_)) and isinstance(
        value, (int, np.integer)
    )


def _range_text(minimum: float | None, maximum: float | None) -> str:
    if minimum is not None and maximum is not None:
        return f" in [{minimum:g}, {maximum:g}]"
    if minimum is not None:
        return f" >= {minimum:g}"
    if maximum is not None:
        return f" <= {maximum:g}"
    return ""


def check_int(
    name: str, value: Any, *, minimum: int | None = None, maximum: int | None = None
) -> int:
    """``value`` as an ``int``: ``TypeError`` unless an integer, ``ValueError`` out of range.

    Examples
    --------
    >>> check_int("num_samples", 10, minimum=1)
    10
    >>> check_int("num_samples", 0, minimum=1)
    Traceback (most recent call last):
    ...
    ValueError: num_samples must be an integer >= 1, got 0
    """
    expected = f"an integer{_range_text(minimum, maximum)}"
    if not is_int(value):
        raise TypeError(f"{name} must be {expected}, got {value!r}")
    value = int(value)
    if (minimum is not None and value < minimum) or (
        maximum is not None and value > maximum
    ):
        raise ValueError(f"{name} must be {expected}, got {value}")
    return value


def _as_float(name: str, value: Any, expected: str) -> float:
    if isinstance(value, (bool, np.bool_, str, bytes)):
        raise TypeError(f"{name} must be {expected}, got {value!r}")
    if np.ndim(value) != 0:
        raise TypeError(
            f"{name} must be {expected} (a scalar), got shape {np.shape(value)}"
        )
    try:
        number = float(value)
    except (TypeError, ValueError) as err:
        raise TypeError(f"{name} must be {expected}, got {value!r}") from err
    if not math.isfinite(number):
        raise ValueError(f"{name} must be {expected}, got {value!r}")
    return number


def check_number(
    name: str,
    value: Any,
    *,
    minimum: float | None = None,
    maximum: float | None = None,
) -> float:
    """``value`` as a finite ``float``, optionally within ``[minimum, maximum]``."""
    expected = f"a finite number{_range_text(minimum, maximum)}"
    number = _as_float(name, value, expected)
    if (minimum is not None and number < minimum) or (
        maximum is not None and number > maximum
    ):
        raise ValueError(f"{name} must be {expected}, got {value!r}")
    return number


def check_positive(name: str, value: Any, *, maximum: float | None = None) -> float:
    """``value`` as a finite ``float > 0`` (and ``<= maximum`` when given).

    Examples
    --------
    >>> check_positive("step_size", 0.1)
    0.1
    >>> check_positive("step_size", -1)
    Traceback (most recent call last):
    ...
    ValueError: step_size must be a positive finite number, got -1
    """
    expected = "a positive finite number" + (
        f" <= {maximum:g}" if maximum is not None else ""
    )
    number = _as_float(name, value, expected)
    if number <= 0.0 or (maximum is not None and number > maximum):
        raise ValueError(f"{name} must be {expected}, got {value!r}")
    return number


def check_nonnegative(name: str, value: Any) -> float:
    """``value`` as a finite ``float >= 0``."""
    expected = "a non-negative finite number"
    number = _as_float(name, value, expected)
    if number < 0.0:
        raise ValueError(f"{name} must be {expected}, got {value!r}")
    return number


def check_fraction(name: str, value: Any, *, allow_zero: bool = True) -> float:
    """``value`` as a ``float`` in ``[0, 1]`` (``(0, 1]`` with ``allow_zero=False``)."""
    expected = "a number in " + ("[0, 1]" if allow_zero else "(0, 1]")
    number = _as_float(name, value, expected)
    if number > 1.0 or number < 0.0 or (not allow_zero and number == 0.0):
        raise ValueError(f"{name} must be {expected}, got {value!r}")
    return number


def check_bool(name: str, value: Any) -> bool:
    """``value`` as a ``bool``; anything but ``True``/``False`` is a ``TypeError``."""
    if not isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{name} must be True or False, got {value!r}")
    return bool(value)


def check_choice(name: str, value: Any, choices: Sequence[str]) -> str:
    """``value`` if it is one of the strings ``choices`` (``ValueError`` otherwise)."""
    if not isinstance(value, str) or value not in choices:
        raise ValueError(f"{name} must be one of {tuple(choices)}, got {value!r}")
    return value


def check_callable(
    name: str, value: Any, signature: str = "", *, what: str | None = None
) -> Callable:
    """``value`` if it is callable; ``signature`` says what it is called with, or
    ``what`` says what it is (``"a NumPyro model (a callable)"``)."""
    if not callable(value):
        expected = what or ("callable" + (f" {signature}" if signature else ""))
        raise TypeError(f"{name} must be {expected}, got {value!r}")
    return value


def check_key(name: str, value: Any) -> jax.Array:
    """A single JAX PRNG key: a typed ``jax.random.key(...)`` or a raw ``PRNGKey``.

    An integer seed, a batch of keys or any other array is refused with a message
    that says how to make a key.

    Examples
    --------
    >>> _ = check_key("rng_key", jax.random.key(0))
    >>> check_key("rng_key", 0)
    Traceback (most recent call last):
    ...
    TypeError: rng_key must be a JAX PRNG key, e.g. jax.random.key(0), got int 0
    """
    dtype = getattr(value, "dtype", None)
    shape = getattr(value, "shape", None)
    if dtype is not None and jax.dtypes.issubdtype(dtype, jax.dtypes.prng_key):
        if shape != ():
            raise ValueError(
                f"{name} must be a single PRNG key (shape ()), got a batch of keys "
                f"of shape {shape}"
            )
        return value
    raw_shape = jax.random.key_data(jax.random.key(0)).shape
    if isinstance(value, (jax.Array, np.ndarray)) and dtype == np.uint32:
        if shape == raw_shape:
            return jnp.asarray(value)
        raise ValueError(
            f"{name} must be a single PRNG key: a raw key (jax.random.PRNGKey) has "
            f"shape {raw_shape}, got shape {shape}"
        )
    shown = (
        f"{type(value).__name__} {value!r}" if is_int(value) else type(value).__name__
    )
    raise TypeError(
        f"{name} must be a JAX PRNG key, e.g. jax.random.key(0), got {shown}"
    )


def check_pair(name: str, value: Any, expected: str) -> tuple[float, float]:
    """``value`` as two floats ``(lo, hi)``; ``expected`` describes them in the error."""
    try:
        lo, hi = (float(v) for v in value)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be {expected}, got {value!r}") from None
    return lo, hi
