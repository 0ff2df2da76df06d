"""Instruments: count the evaluations a compiled sampler really makes.

A :class:`Counter` wraps a target's ``score`` / ``logdensity`` (or any function: a
likelihood, a flat log density) so that every evaluation *executed at run time*
is recorded. NFE tests compare a sampler's reported count with this record, never
with a formula built from the costs the library declares (a wrong declared cost
would then pass).

How it records: the wrapped function evaluates ``f(x + z)`` where ``z = 0`` is the
result of a ``jax.pure_callback`` that records the call. Because the callback is
*pure* and feeds the evaluation, it lives and dies with it: an evaluation whose
result the program never uses is removed by dead-code elimination together with
its record (as it would be without the instrument), and one that runs is counted.
(``jax.debug.callback`` would not do: it is a side effect, so it would keep, and
count, evaluations that the real program never executes.)

How it counts under JAX transformations (``test_counter_semantics`` keeps this
honest, measured on JAX 0.10):

* ``jit`` / ``scan`` / ``fori_loop`` with a static trip count: once per executed
  evaluation;
* ``vmap``: once **per batch element** (``vmap_method="sequential"``);
* a loop whose trip count differs between batch elements (a ``while_loop`` under
  ``vmap``: NUTS trees, per-particle schedules) runs every element until the last
  one is done, so masked elements are counted too; likewise both branches of a
  ``lax.cond`` with a batched predicate (both really run then). The tests
  therefore use **one particle / one chain** where a trip count may be data
  dependent, so that what is counted is what that particle cost;
* ``grad`` / ``value_and_grad`` / ``vjp``: once, in the forward pass (the backward
  pass of a score is recorded separately with ``vjp=True``, see :meth:`target`).

Counting rule (the library's and BlackJAX's NFE convention): one evaluation of
``log p_t`` and its score *in the same call* (the library evaluates both with the
same traced ``(x, t)`` inside one ``custom_jvp`` rule, what ``value_and_grad`` of an
analytic log density gives in one pass) is ONE evaluation; so are a log density
and a score of the very same traced ``x`` (e.g. ``vmap(logdensity)(x)`` next to
``vmap(score)(x)``), which one value-and-score oracle call would give. A second
call on another traced value equal to the first (a score recomputed after a loop)
is a second evaluation. Calls are grouped at trace time by the identity of their
underlying ``(x, t)`` tracers; :meth:`Counter.nfe` is the
sum over groups of the largest per-kind count, plus every recorded VJP.
"""

from collections import Counter as _Multiset

import jax
import jax.numpy as jnp
import numpy as np

import rtk_blackjax as rb


def _underlying(value):
    """The traced value a ``vmap`` / ``jvp`` tracer wraps (calls made on one ``x``
    in two separate ``vmap``s, or inside a JVP rule, see the same underlying value).
    """
    while isinstance(value, jax.core.Tracer):
        inner = getattr(value, "val", None)
        if inner is None:
            inner = getattr(value, "primal", None)
        if inner is None:
            break
        value = inner
    return value


class Counter:
    """Record every evaluation of wrapped functions at run time."""

    def __init__(self):
        self.events = []
        self._groups = []  # trace time: (kind, x leaf, t) of each call site
        self._alive = []  # keeps traced (x, t) alive so their ids stay unique

    def reset(self):
        self.events.clear()

    def _group(self, kind, x, t):
        """Call sites with the very same traced ``(x, t)`` but other kinds: one group."""
        leaf, t = _underlying(jax.tree.leaves(x)[0]), _underlying(t)
        for i, (other_kind, other_x, other_t) in enumerate(self._groups):
            if other_x is leaf and other_t is t and other_kind != kind:
                return i
        self._groups.append((kind, leaf, t))
        self._alive.append((leaf, t))
        return len(self._groups) - 1

    def _tap(self, kind, x, t=None):
        """``x`` plus a recorded zero: the record runs iff the evaluation does."""
        group = self._group(kind, x, t)
        leaves = jax.tree.leaves(x)
        dtype = jnp.result_type(*leaves)
        operand = jnp.stack([jnp.sum(v).astype(dtype) for v in leaves])

        def record(_):
            self.events.append((kind, group))
            return np.zeros((), dtype)

        @jax.custom_jvp
        def recorded_zero(operand):
            return jax.pure_callback(
                record,
                jax.ShapeDtypeStruct((), dtype),
                operand,
                vmap_method="sequential",
            )

        @recorded_zero.defjvp
        def _jvp(primals, tangents):
            # the record is not differentiable (its value is a constant 0)
            out = recorded_zero(primals[0])
            return out, jnp.zeros_like(out)

        zero = recorded_zero(operand)
        return jax.tree.map(lambda v: v + zero.astype(v.dtype), x)

    def count(self, kind):
        return sum(1 for e in self.events if e[0] == kind)

    def nfe(self):
        """Evaluations by the counting rule of the module docstring."""
        per_group = {}
        for kind, group in self.events:
            if kind != "vjp":
                per_group.setdefault(group, _Multiset())[kind] += 1
        return sum(max(c.values()) for c in per_group.values()) + self.count("vjp")

    def target(self, base, vjp=False, hide_logdensity=False):
        """``base`` with counted ``score`` and ``logdensity``.

        ``vjp=True`` also records each backward pass through the score (a
        ``jax.custom_vjp``; such a score can no longer be forward-differentiated,
        which no sampler does). ``hide_logdensity`` gives a score-only target.
        """

        def plain_score(x, t):
            return base.score(self._tap("score", x, t), t)

        if vjp:

            @jax.custom_vjp
            def score(x, t):
                return plain_score(x, t)

            def fwd(x, t):
                return base.score(self._tap("score", x, t), t), (x, t)

            def bwd(res, cotangent):
                x, t = res
                x = self._tap("vjp", x, t)
                _, pullback = jax.vjp(lambda z: base.score(z, t), x)
                return pullback(cotangent)[0], jnp.zeros_like(t)

            score.defvjp(fwd, bwd)
        else:
            score = plain_score

        logdensity = None
        if base.logdensity is not None and not hide_logdensity:

            def logdensity(x, t):
                return base.logdensity(self._tap("logdensity", x, t), t)

        return rb.targets.Target(score, logdensity, base.mixture)

    def function(self, fn, kind="logdensity"):
        """``fn(x)`` counted under ``kind`` (a flat log density, a likelihood)."""

        def counted(x, *args):
            return fn(self._tap(kind, x), *args)

        return counted
