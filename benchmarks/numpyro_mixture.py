"""NumPyro's side of the mixture (:mod:`benchmarks.mixture`): enumerated and by hand.

Two versions of the same model, on the same points:

- :func:`enumerated`: ``z ~ Categorical(weights)`` in the data plate, marked for
  parallel enumeration (``numpyro.contrib.funsor.config_enumerate``); NumPyro's NUTS
  sums it out with funsor, as Pyro's does with its einsum. It needs the ``funsor``
  package, which the ``bench`` extra does not list: without it this row is left out.
- :func:`marginalised`: the assignments summed out by hand (``MixtureSameFamily``, a
  logsumexp over the two components), which needs nothing beyond NumPyro.
"""

import importlib.util

import jax.numpy as jnp
import numpyro
import numpyro.distributions as dist
from numpyro.distributions.transforms import OrderedTransform

from benchmarks import mixture
from benchmarks.cases import MIXTURE
from benchmarks.numpyro_nuts import run_numpyro
from benchmarks.nuts import NutsRun

ENUMERATED = "NumPyro NUTS, defaults, z enumerated (funsor)"
MARGINALISED = "NumPyro NUTS, defaults, z summed out by hand"


def funsor_available() -> bool:
    return importlib.util.find_spec("funsor") is not None


def _priors(x):
    weights = numpyro.sample("weights", dist.Dirichlet(jnp.ones(2)))
    base = dist.Normal(jnp.zeros(2), mixture.LOC_PRIOR_SD).to_event(1)
    locs = numpyro.sample("locs", dist.TransformedDistribution(base, OrderedTransform()))
    scale = numpyro.sample("scale", dist.LogNormal(0.0, 1.0))
    return weights, locs, scale


def enumerated(x):
    """:func:`benchmarks.mixture.mixture` with ``z`` a site NumPyro enumerates."""
    weights, locs, scale = _priors(x)
    with numpyro.plate("data", x.shape[0]):
        z = numpyro.sample("z", dist.Categorical(weights), infer={"enumerate": "parallel"})
        numpyro.sample("x", dist.Normal(locs[z], scale), obs=x)


def marginalised(x):
    """The same density with ``z`` summed out in the model (``MixtureSameFamily``)."""
    weights, locs, scale = _priors(x)
    components = dist.Normal(locs, scale)
    with numpyro.plate("data", x.shape[0]):
        numpyro.sample("x", dist.MixtureSameFamily(dist.Categorical(weights), components), obs=x)


def run_numpyro_mixture(
    warmup_steps: int, num_samples: int, *, by_hand: bool = False, seed: int = 0
) -> NutsRun:
    """NumPyro NUTS (defaults, one chain, compilation counted) on the mixture."""
    if not by_hand:
        import numpyro.contrib.funsor  # noqa: F401 - NUTS enumerates through it
    return run_numpyro(
        marginalised if by_hand else enumerated,
        (jnp.asarray(mixture.data()),),
        model_name=MIXTURE.name,
        to_draws=MIXTURE.draws,
        label=MARGINALISED if by_hand else ENUMERATED,
        warmup_steps=warmup_steps,
        num_samples=num_samples,
        seed=seed,
    )
