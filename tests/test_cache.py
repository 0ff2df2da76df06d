"""The one program cache: bounded, least-recently-used, keyed by the objects."""

import numpy as np
import pytest

from rtk_blackjax._cache import ProgramCache, by_identity, by_value


def test_lru_bound_and_reuse():
    cache, built = ProgramCache(2), []

    def build(name):
        def make():
            built.append(name)
            return name

        return make

    assert cache.get("a", build("a")) == "a"
    assert cache.get("b", build("b")) == "b"
    assert cache.get("a", build("a")) == "a"  # hit: "a" is now the most recent
    cache.get("c", build("c"))  # evicts "b", the least recently used
    assert len(cache) == 2
    cache.get("a", build("a"))
    cache.get("b", build("b"))
    assert built == ["a", "b", "c", "b"]
    with pytest.raises(ValueError, match="maxsize"):
        ProgramCache(0)


def test_keys_hold_objects_not_ids():
    class Unhashable:
        __hash__ = None

    a, b = Unhashable(), Unhashable()
    key_a = by_identity(a)
    assert key_a == by_identity(a) and key_a != by_identity(b)
    del a  # the key keeps its object alive: its id cannot be reused meanwhile
    assert isinstance(key_a.obj, Unhashable)
    assert by_value(np.arange(3.0)) == by_value(np.arange(3.0))
    assert by_value(np.arange(3.0)) != by_value(np.arange(3, dtype=np.float32))
