"""MCMC kernels in BlackJAX anatomy: the RTK outer kernel and its inner kernels."""
