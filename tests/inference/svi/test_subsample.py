"""Minibatch SVI on a subsampled plate gives the full-data posterior.

The issue's case: ``pyro.plate("data", 200, subsample_size=20)``, exact posterior
1.477 ± 0.071. Before, 500 steps gave 2.95 ± 0.71 (the Laplace start was discarded by an
ELBO probe that scored one minibatch). The bars allow for the gradient noise of a
10x-rescaled minibatch at 500 steps: the mean within 0.25 posterior sd, the sd within 20%,
for seeds 0-2; the guide's own parameters are read, so no sampling error enters.
"""

import pyro
import pyro.distributions as dist
import pytest
import torch

from inference import fit_svi
from models import gaussian_latent as gl


def _data():
    return torch.randn(200, generator=torch.Generator().manual_seed(0)) + 1.5


def subsampled(x):
    z = pyro.sample("z", dist.Normal(0.0, 10.0))
    with pyro.plate("data", len(x), subsample_size=20) as idx:
        pyro.sample("x", dist.Normal(z, 1.0), obs=x[idx])


@pytest.mark.parametrize("seed", range(3))
@pytest.mark.parametrize("which", ["user", "shipped"])
def test_a_subsampled_model_fits_the_full_data_posterior(seed, which):
    x = _data()
    mean, sd = gl.exact_posterior(x.double())
    if which == "user":
        fit = fit_svi(subsampled, "normal", x, num_steps=500, seed=seed)
    else:
        fit = fit_svi(
            gl.model, "normal", x, num_steps=500, seed=seed, model_kwargs={"subsample_size": 20}
        )
    assert fit.laplace.ok, fit.laplace.message
    _, loc, cov = fit.gaussian()
    assert abs(float(loc[0]) - mean) < 0.25 * sd
    assert abs(float(cov[0, 0]) ** 0.5 / sd - 1) < 0.2
