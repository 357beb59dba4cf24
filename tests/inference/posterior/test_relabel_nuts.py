"""A user's own unordered mixture through run_nuts and relabel: label switching undone.

The model is written here, as a user would, with nothing from ``models``: three 2-D
components whose labels are exchangeable. Four chains from the sampler's default
(jittered) starts settle in different labellings — R-hat as sampled is far above 1 —
and after :func:`inference.relabel` every component parameter has R-hat < 1.01.
"""

import numpy as np
import pyro
import pyro.distributions as dist
import pytest
import torch
from arviz_stats import rhat
from pyro.infer import config_enumerate
from pyro.ops.indexing import Vindex

from inference import relabel, run_nuts


@config_enumerate
def unordered_mixture(x):
    weights = pyro.sample("weights", dist.Dirichlet(torch.ones(3, dtype=x.dtype)))
    with pyro.plate("component", 3):
        locs = pyro.sample("locs", dist.Normal(x.new_zeros(2), 5.0).to_event(1))
        scales = pyro.sample("scales", dist.HalfNormal(x.new_ones(2) * 2.0).to_event(1))
    with pyro.plate("data", len(x)):
        z = pyro.sample("z", dist.Categorical(weights))
        loc = Vindex(locs.unsqueeze(-3))[..., z, :]
        scale = Vindex(scales.unsqueeze(-3))[..., z, :]
        pyro.sample("x", dist.Normal(loc, scale).to_event(1), obs=x)


unordered_mixture.dims = {"weights": ["component"]}


def _max_rhat(posterior) -> float:
    values = rhat(posterior)
    return max(float(values[name].max()) for name in values.data_vars)


@pytest.mark.slow
def test_relabelled_chains_agree():
    rng = np.random.default_rng(0)
    centres = np.array([[-3.0, 0.0], [3.0, 0.0], [0.0, 4.0]])
    labels = rng.choice(3, size=300, p=[0.4, 0.35, 0.25])
    x = torch.tensor(centres[labels] + 0.7 * rng.standard_normal((300, 2)))
    mc = run_nuts(unordered_mixture, x, num_samples=500, warmup_steps=500, num_chains=4, seed=1)
    tree = mc.to_datatree()
    names = ["weights", "locs", "scales"]
    before = _max_rhat(tree.posterior.to_dataset()[names])
    assert before > 1.1, "the chains did not switch labels: nothing for relabel to undo"
    fixed = relabel(tree, "component")
    assert _max_rhat(fixed.posterior.to_dataset()[names]) < 1.01
    # The relabelled means are the truth's components, in some order.
    locs = fixed.posterior["locs"].mean(("chain", "draw")).values
    order = np.argsort(locs[:, 0] + 10 * locs[:, 1])
    np.testing.assert_allclose(
        locs[order], centres[np.argsort(centres[:, 0] + 10 * centres[:, 1])], atol=0.3
    )
