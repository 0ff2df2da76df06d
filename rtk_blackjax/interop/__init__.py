"""Interoperability: results of this package in other libraries' formats.

* :func:`to_arviz` (:mod:`~rtk_blackjax.interop.arviz`): every result type of the
  package (``rb.sample``'s :class:`~rtk_blackjax.SampleResult`, the posterior
  samplers' :class:`~rtk_blackjax.posterior.PosteriorResult`,
  :func:`~rtk_blackjax.adapters.sample_model`'s ``ModelSamples``) as ArviZ data.
"""

from rtk_blackjax.interop.arviz import to_arviz

__all__ = ["to_arviz"]
