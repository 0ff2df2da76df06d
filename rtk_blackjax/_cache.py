"""One bounded cache of compiled programs, keyed by static configuration.

Compiling a sampler costs far more than running a small one, so the run loop and
the posterior samplers keep the programs they built and reuse them for a call with
the same setup. :class:`ProgramCache` is that store: least-recently-used, bounded
(a long session does not accumulate programs), and keyed by what the program was
built from.

A key is a tuple of *static* values (sizes, flags, dtypes, option strings) and of
the objects the program closes over (targets, inner kernels, step functions).
The objects themselves are held in the key, not their ``id()``: while a program is
cached its objects stay alive, so no other object can ever be found under the
same key. Objects that cannot be hashed by value (a ``Target`` holding arrays) are
wrapped by :func:`by_identity`; NumPy arrays (e.g. a grid) by :func:`by_value`.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Hashable
from typing import Any

import numpy as np

__all__ = ["ProgramCache", "by_identity", "by_value"]


class _Identity:
    """Hashes and compares by identity, and keeps its object alive."""

    __slots__ = ("obj",)

    def __init__(self, obj: Any):
        self.obj = obj

    def __hash__(self) -> int:
        return id(self.obj)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, _Identity) and other.obj is self.obj

    def __repr__(self) -> str:
        return f"by_identity({type(self.obj).__name__} at {id(self.obj):#x})"


def by_identity(obj: Any) -> Hashable:
    """A key part equal only to the same ``obj`` (which it keeps alive)."""
    return _Identity(obj)


def by_value(array: Any) -> Hashable:
    """A key part equal for arrays of the same dtype, shape and values."""
    arr = np.ascontiguousarray(np.asarray(array))
    return (str(arr.dtype), arr.shape, arr.tobytes())


class ProgramCache:
    """Least-recently-used store of compiled programs, at most ``maxsize`` of them.

    Examples
    --------
    >>> cache = ProgramCache(2)
    >>> cache.get(("a", 1), lambda: "built a")
    'built a'
    >>> cache.get(("a", 1), lambda: "not called")
    'built a'
    >>> len(cache)
    1
    """

    def __init__(self, maxsize: int):
        if isinstance(maxsize, bool) or not isinstance(maxsize, int) or maxsize < 1:
            raise ValueError(f"maxsize must be an integer >= 1, got {maxsize!r}")
        self.maxsize = maxsize
        self._entries: OrderedDict[Hashable, Any] = OrderedDict()

    def get(self, key: Hashable, build: Callable[[], Any]) -> Any:
        """The program cached under ``key``; ``build()`` it (and cache it) if none."""
        try:
            value = self._entries[key]
        except KeyError:
            value = build()
            self._entries[key] = value
            while len(self._entries) > self.maxsize:
                self._entries.popitem(last=False)
        else:
            self._entries.move_to_end(key)
        return value

    def clear(self) -> None:
        self._entries.clear()

    def __len__(self) -> int:
        return len(self._entries)
