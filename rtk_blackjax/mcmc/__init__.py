"""MCMC kernels in BlackJAX anatomy: the outer kernels and their inner kernels.

* :mod:`~rtk_blackjax.mcmc.rtk`: the RTK outer kernel (one step = one segment);
* :mod:`~rtk_blackjax.mcmc.logdensity`: the log-density RTK outer kernel (diffusion
  Monte Carlo on the augmented joint, for targets known only by ``log p_0``);
* :mod:`~rtk_blackjax.mcmc.inner`: the inner-kernel contract and its factories
  (MALA, score-only MALA, IRMH, ULD, any BlackJAX kernel);
* :mod:`~rtk_blackjax.mcmc.uld`: the underdamped Langevin kernels;
* :mod:`~rtk_blackjax.mcmc.score_energy`: energy differences of score-only models
  by quadrature;
* :mod:`~rtk_blackjax.mcmc.adaptation`: the step-size adaptation rule.

Nothing is imported here: import the modules themselves.
"""
