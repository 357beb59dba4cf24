"""NumPyro's side of the badly scaled regression (:mod:`benchmarks.regression`)."""

import jax.numpy as jnp
import numpyro
import numpyro.distributions as dist

from benchmarks import regression as pyro_regression
from benchmarks.cases import REGRESSION
from benchmarks.numpyro_nuts import run_numpyro
from benchmarks.nuts import NutsRun

LABEL = "NumPyro NUTS, defaults (diag mass)"


def regression(x, y):
    """:func:`benchmarks.regression.regression` in NumPyro: the same priors."""
    prior_sd = pyro_regression.PRIOR_SD
    alpha = numpyro.sample("alpha", dist.Normal(0.0, prior_sd))
    beta = numpyro.sample("beta", dist.Normal(jnp.zeros(x.shape[1]), prior_sd).to_event(1))
    sigma = numpyro.sample("sigma", dist.HalfNormal(pyro_regression.SIGMA_PRIOR_SCALE))
    with numpyro.plate("data", x.shape[0]):
        numpyro.sample("y", dist.Normal(alpha + x @ beta, sigma), obs=y)


def run_numpyro_regression(warmup_steps: int, num_samples: int, *, seed: int = 0) -> NutsRun:
    """NumPyro NUTS (defaults, one chain, compilation counted) on the regression."""
    x, y = pyro_regression.data()
    return run_numpyro(
        regression,
        (jnp.asarray(x), jnp.asarray(y)),
        model_name=REGRESSION.name,
        to_draws=REGRESSION.draws,
        label=LABEL,
        warmup_steps=warmup_steps,
        num_samples=num_samples,
        seed=seed,
    )
