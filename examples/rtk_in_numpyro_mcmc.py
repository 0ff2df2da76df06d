"""Eight schools (non-centred) with RTK inside ``numpyro.infer.MCMC``.

Each draw is one full reverse diffusion (an independence sampler, see
``rtk_blackjax.adapters.numpyro_kernel``); ``print_summary`` and ArviZ work as
with NUTS. Runs in about a minute on two CPU cores::

    python examples/rtk_in_numpyro_mcmc.py
"""

import arviz as az
import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist
from numpyro.infer import MCMC

from rtk_blackjax.adapters.numpyro_kernel import RTKKernel

Y = jnp.array([28.0, 8.0, -3.0, 7.0, -1.0, 1.0, 18.0, 12.0])
SIGMA = jnp.array([15.0, 10.0, 16.0, 11.0, 9.0, 11.0, 10.0, 18.0])


def eight_schools(sigma, y=None):
    mu = numpyro.sample("mu", dist.Normal(0.0, 5.0))
    tau = numpyro.sample("tau", dist.HalfCauchy(5.0))
    with numpyro.plate("J", sigma.shape[0]):
        theta_tilde = numpyro.sample("theta_tilde", dist.Normal(0.0, 1.0))
        numpyro.deterministic("theta", mu + tau * theta_tilde)
        numpyro.sample("obs", dist.Normal(mu + tau * theta_tilde, sigma), obs=y)


def main() -> None:
    kernel = RTKKernel(eight_schools, num_pilot_rounds=2, pilot_particles=200)
    mcmc = MCMC(
        kernel,
        num_warmup=0,  # RTK adapts in init (pilot runs), not during warmup
        num_samples=250,
        num_chains=4,
        chain_method="vectorized",
        progress_bar=False,
    )
    mcmc.run(
        jax.random.key(0),
        SIGMA,
        Y,
        extra_fields=("num_evaluations", "acceptance_rate", "diverging"),
    )
    mcmc.print_summary()
    extra = mcmc.get_extra_fields()
    print(
        f"evaluations per draw: {int(extra['num_evaluations'][0])}, pilot: "
        f"{kernel.pilot_evaluations}, mean MALA acceptance: "
        f"{float(np.mean(extra['acceptance_rate'])):.2f}"
    )
    idata = az.from_numpyro(mcmc)
    print(az.summary(idata, var_names=["mu", "tau", "theta"]))


if __name__ == "__main__":
    main()
