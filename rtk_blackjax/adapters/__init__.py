"""Adapters: where targets come from outside this package.

NumPyro models and log densities (Monte Carlo estimates of the diffused
densities), learned score networks, and RTK as a ``numpyro.infer`` kernel.
"""
