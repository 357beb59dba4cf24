"""A two-component Gaussian mixture in 1-D, its assignments enumerated: data and Pyro model.

``N = 1000`` points drawn once with a fixed seed from weights 0.3 / 0.7, means -1 and 2
and a common scale 1 (the components overlap: about a tenth of the points could come
from either). Each point's component ``z_i ~ Categorical(weights)`` is a discrete
latent site in the data plate; ``@config_enumerate`` has Pyro (and so vilab's NUTS)
sum it out exactly, leaving ``weights``, ``locs`` and ``scale`` for NUTS.

The locations are ordered (``locs[0] < locs[1]``) so that the posterior has one mode,
not two with the labels swapped: a single chain cannot switch labels.
NumPyro's version is in :mod:`benchmarks.numpyro_mixture`.
"""

import numpy as np
import pyro
import pyro.distributions as dist
import torch
from pyro.distributions.transforms import OrderedTransform
from pyro.infer import config_enumerate

N = 1000
DATA_SEED = 20261202
WEIGHTS = (0.3, 0.7)
LOCS = (-1.0, 2.0)
SCALE = 1.0
LOC_PRIOR_SD = 5.0  # of the unconstrained (first location, log gap) pair; see ordered_locs
ESS_OVER = "weights, locs, scale"


def data() -> np.ndarray:
    """The ``N`` points (float64), the same on every call."""
    rng = np.random.default_rng(DATA_SEED)
    z = rng.choice(len(WEIGHTS), size=N, p=WEIGHTS)
    return rng.normal(np.asarray(LOCS)[z], SCALE)


def arrays() -> tuple[torch.Tensor]:
    """``(x,)``: the points as a float64 tensor of shape (N,)."""
    return (torch.as_tensor(data(), dtype=torch.float64),)


def ordered_locs(x: torch.Tensor):
    """Prior of the two ordered locations: ``OrderedTransform`` of ``N(0, 5^2)`` pairs.

    ``locs = (u_0, u_0 + exp(u_1))`` with ``u ~ N(0, 5^2 I)``: a proper density on
    ordered pairs; its unconstrained space is ``u`` itself.
    """
    base = dist.Normal(x.new_zeros(2), x.new_tensor(LOC_PRIOR_SD)).to_event(1)
    return dist.TransformedDistribution(base, [OrderedTransform()])


@config_enumerate
def mixture(x):
    r"""Two-component Gaussian mixture with enumerated assignments.

    .. math::

        w \sim \mathrm{Dirichlet}(1, 1), \quad \mu_{(0)} < \mu_{(1)}\ \text{(ordered)},
        \quad s \sim \mathrm{LogNormal}(0, 1), \quad
        z_i \sim \mathrm{Categorical}(w), \quad x_i \sim \mathcal{N}(\mu_{z_i}, s^2)
    """
    weights = pyro.sample("weights", dist.Dirichlet(x.new_ones(2)))
    locs = pyro.sample("locs", ordered_locs(x))
    scale = pyro.sample("scale", dist.LogNormal(x.new_tensor(0.0), x.new_tensor(1.0)))
    with pyro.plate("data", len(x)):
        z = pyro.sample("z", dist.Categorical(weights))
        pyro.sample("x", dist.Normal(locs[z], scale), obs=x)


def chain_draws(samples: dict) -> dict[str, np.ndarray]:
    """The draws whose ESS is measured, each (chain, draw, ...), from one chain's samples.

    ``samples`` holds ``weights`` and ``locs`` shaped (chain, draw, 2) or (draw, 2) and
    ``scale`` (chain, draw) or (draw,).
    """
    scale = np.asarray(samples["scale"], dtype=float).reshape(1, -1)
    n = scale.shape[1]
    return {
        "weights": np.asarray(samples["weights"], dtype=float).reshape(1, n, 2),
        "locs": np.asarray(samples["locs"], dtype=float).reshape(1, n, 2),
        "scale": scale,
    }
