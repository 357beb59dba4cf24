"""nutpie and Pyro's NUTS sample the same posteriors: shipped cases, closed forms, a mixture.

Two Monte Carlo estimates of one mean differ by a Normal error whose standard error is
the root sum of squares of their MCSEs (ArviZ's, autocorrelation included); at K = 4
of those a true agreement fails with probability 6e-5 per parameter. Against a closed
form only the sampler's MCSE counts.
"""

import math

import arviz as az
import numpy as np
import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro.distributions import constraints
from pyro.infer import config_enumerate

from inference import compare, run_nuts
from inference.lab.cases import get_case

K = 4
pytestmark = pytest.mark.slow


def _agree(first, second, min_ess=200):
    """Every parameter's mean agrees within K combined MCSEs; both runs are long enough."""
    a = compare({"a": first}).set_index("parameter")
    b = compare({"b": second}).set_index("parameter")
    assert list(a.index) == list(b.index)
    for label in a.index:
        se = math.hypot(a.loc[label, "mcse_mean"], b.loc[label, "mcse_mean"])
        gap = abs(a.loc[label, "mean"] - b.loc[label, "mean"])
        assert gap < K * se, (label, a.loc[label, "mean"], b.loc[label, "mean"], se)
    assert (a["ess_bulk"] > min_ess).all() and (b["ess_bulk"] > min_ess).all()


@pytest.mark.parametrize("name", ["normal", "eight-schools"])
def test_backends_agree_on_the_shipped_cases(name):
    case = get_case(name)
    # Pyro's NUTS is the slow side: two chains in two processes; nutpie, 10x faster,
    # takes four chains of the same length.
    options = dict(num_samples=1000, warmup_steps=500, seed=1, target_accept=case.target_accept)
    nutpie = run_nuts(case.model, *case.args, **options, num_chains=4)
    pyro_nuts = run_nuts(
        case.model, *case.args, **options, num_chains=2, jit=True, parallel=True, backend="pyro"
    )
    assert nutpie.num_divergences == 0 and pyro_nuts.num_divergences == 0
    _agree(nutpie, pyro_nuts)


def _design(n=200, seed=0):
    """Columns on scales 1e-2 ... 1e2 and pairwise correlation 0.9: a posterior whose
    sds span four orders of magnitude with strong correlations."""
    generator = torch.Generator().manual_seed(seed)
    p = 4
    corr = torch.full((p, p), 0.9, dtype=torch.float64) + 0.1 * torch.eye(p, dtype=torch.float64)
    raw = (
        torch.randn(n, p, generator=generator, dtype=torch.float64) @ torch.linalg.cholesky(corr).T
    )
    X = raw * torch.tensor([1e-2, 1.0, 10.0, 1e2], dtype=torch.float64)
    beta = torch.tensor([50.0, -1.0, 0.3, 0.02], dtype=torch.float64)
    y = X @ beta + torch.randn(n, generator=generator, dtype=torch.float64)
    return X, y


def flat_regression(X, y):
    beta = pyro.sample("beta", dist.ImproperUniform(constraints.real, (), (X.shape[-1],)))
    # Written to broadcast over draws: beta (..., 1, p) against X (n, p).
    with pyro.plate("data", len(y)):
        pyro.sample("y", dist.Normal((X * beta).sum(-1), 1.0), obs=y)


def test_badly_scaled_correlated_regression_with_a_flat_prior_matches_the_closed_form():
    # nutpie's diagonal metric against a posterior whose sds span four orders of
    # magnitude with correlations of 0.9 (Pyro's NUTS, dense metric, took 170 s here for
    # the same run: the cross-check is the closed form).
    X, y = _design()
    # Flat prior, unit noise: beta | y ~ N((X'X)^-1 X'y, (X'X)^-1).
    precision = X.T @ X
    mean = torch.linalg.solve(precision, X.T @ y).numpy()
    sd = torch.linalg.inv(precision).diagonal().sqrt().numpy()
    options = dict(num_samples=1000, warmup_steps=500, num_chains=2, seed=2)
    mc = run_nuts(flat_regression, X, y, **options)
    beta = mc.to_datatree().posterior["beta"]
    mcse_mean = az.mcse(beta, method="mean").values
    mcse_sd = az.mcse(beta, method="sd").values
    draws = beta.values.reshape(-1, 4)
    assert (np.abs(draws.mean(0) - mean) < K * mcse_mean).all(), (draws.mean(0), mean)
    assert (np.abs(draws.std(0, ddof=1) - sd) < K * mcse_sd).all(), (draws.std(0), sd)
    assert (mcse_mean < sd / 10).all()


@config_enumerate
def two_component_mixture(x):
    weights = pyro.sample("weights", dist.Dirichlet(torch.ones(2, dtype=x.dtype)))
    # Priors that tell the components apart, so no chain switches labels.
    locs = pyro.sample("locs", dist.Normal(x.new_tensor([-2.0, 2.0]), 1.0).to_event(1))
    scale = pyro.sample("scale", dist.LogNormal(x.new_tensor(0.0), 1.0))
    with pyro.plate("data", len(x)):
        z = pyro.sample("z", dist.Categorical(weights))
        pyro.sample("x", dist.Normal(locs[z], scale), obs=x)


def test_enumerated_mixture_nutpie_agrees_with_pyros_nuts():
    generator = torch.Generator().manual_seed(4)
    x = torch.cat(
        [
            torch.randn(70, generator=generator, dtype=torch.float64) - 2.0,
            torch.randn(130, generator=generator, dtype=torch.float64) * 1.0 + 1.5,
        ]
    )
    options = dict(num_samples=600, warmup_steps=400, num_chains=2, seed=0)
    nutpie = run_nuts(two_component_mixture, x, **options)
    # In this process: a config_enumerate-decorated function does not pickle.
    pyro_nuts = run_nuts(two_component_mixture, x, **options, jit=True, backend="pyro")
    # The assignments are summed out: only the continuous sites are sampled.
    assert set(nutpie.samples) == set(pyro_nuts.samples) == {"weights", "locs", "scale"}
    for name in ("locs", "scale", "weights"):
        a = az.from_dict({"posterior": {name: nutpie.samples[name].numpy()}})
        b = az.from_dict({"posterior": {name: pyro_nuts.samples[name].numpy()}})
        mean_a, mean_b = (t.posterior[name].mean(("chain", "draw")).values for t in (a, b))
        se = np.hypot(
            az.mcse(a.posterior[name], method="mean").values,
            az.mcse(b.posterior[name], method="mean").values,
        )
        assert (np.abs(mean_a - mean_b) < K * se).all(), (name, mean_a, mean_b, se)
