"""Benchmarks of the samplers; the library never imports this package.

* :mod:`~rtk_blackjax.benchmarks.sampling`: prior sampling on exact mixtures
  (every method at one NFE budget, sweeps, the ``t_min`` / inner-steps grid search
  behind :mod:`rtk_blackjax.policy`), ``python -m rtk_blackjax bench``;
* :mod:`~rtk_blackjax.benchmarks.overhead`: sampler time against the bare cost of its
  score evaluations, ``python -m rtk_blackjax bench --overhead``;
* :mod:`~rtk_blackjax.benchmarks.posterior`: the exact 25-mode GMM posterior benchmark
  (split Gibbs, SMC, DPS, NUTS), ``python -m rtk_blackjax bench-posterior``.

Only the command line (:mod:`rtk_blackjax.__main__`, which imports these modules when
a subcommand runs), the scripts in ``examples/`` and ``benchmarks/`` and the tests
import them; ``tests/test_layout.py`` checks that no library module does.
"""
