"""The compiled mean-field ELBO is traced once (a Pyro 1.9 bug re-traced it every call),
and gives the uncompiled loss."""

import pyro
import pyro.distributions as dist
import pytest
import torch

from inference.svi.elbos import make_elbo


def model(x):
    z = pyro.sample("z", dist.Normal(0.0, 1.0))
    with pyro.plate("data", len(x)):
        pyro.sample("x", dist.Normal(z, 1.0), obs=x)


def guide(x):
    loc = pyro.param("loc", torch.tensor(0.3, dtype=torch.float64))
    pyro.sample("z", dist.Normal(loc, 1e-9))  # z = loc: the loss is deterministic


def test_meanfield_jit_compiles_once_and_matches_eager():
    x = torch.linspace(-1, 1, 5, dtype=torch.float64)
    compiled = make_elbo("meanfield", 1, 1, jit=True)
    eager = make_elbo("meanfield", 1, 1, jit=False)
    pyro.clear_param_store()
    values = [float(compiled.differentiable_loss(model, guide, x)) for _ in range(3)]
    assert len(compiled._differentiable_loss.compiled) == 1  # one trace, reused
    expected = float(eager.differentiable_loss(model, guide, x))
    assert values == pytest.approx([expected] * 3, rel=1e-9)
