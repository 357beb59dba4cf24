import math

import pyro
import pytest
import torch
from torch.distributions import MultivariateNormal

from models import gaussian_latent as gl


@pytest.fixture(autouse=True)
def _fresh_pyro():
    pyro.clear_param_store()
    pyro.set_rng_seed(0)


def _log_joint_on_grid(x, m0, s0, sigma, grid):
    prior = torch.distributions.Normal(m0, s0).log_prob(grid)
    lik = torch.distributions.Normal(grid[:, None], sigma).log_prob(x).sum(-1)
    return prior + lik


@pytest.mark.parametrize("m0, s0, sigma", [(0.0, 10.0, 1.0), (-2.0, 0.5, 3.0)])
def test_exact_posterior_matches_grid_integration(m0, s0, sigma):
    x = gl.simulate(20, z_true=1.5, sigma=sigma, seed=1)
    grid = torch.linspace(-20.0, 20.0, 200_001, dtype=torch.float64)
    log_joint = _log_joint_on_grid(x, m0, s0, sigma, grid)
    weights = torch.softmax(log_joint, dim=0)
    grid_mean = float((weights * grid).sum())
    grid_sd = math.sqrt(float((weights * (grid - grid_mean) ** 2).sum()))
    mean, sd = gl.exact_posterior(x, m0, s0, sigma)
    assert mean == pytest.approx(grid_mean, abs=1e-6)
    assert sd == pytest.approx(grid_sd, rel=1e-5)


def test_exact_log_evidence_matches_grid_integration():
    x = gl.simulate(10, seed=2)
    grid = torch.linspace(-30.0, 30.0, 600_001, dtype=torch.float64)
    log_joint = _log_joint_on_grid(x, 0.0, 10.0, 1.0, grid)
    grid_log_evidence = float(torch.logsumexp(log_joint, 0)) + math.log(float(grid[1] - grid[0]))
    assert gl.exact_log_evidence(x) == pytest.approx(grid_log_evidence, abs=1e-6)


@pytest.mark.parametrize("n", [5, 50])
@pytest.mark.parametrize("m0, s0, sigma", [(0.0, 10.0, 1.0), (3.0, 0.3, 2.5)])
def test_exact_log_evidence_matches_multivariate_normal(n, m0, s0, sigma):
    x = gl.simulate(n, z_true=1.5, sigma=sigma, seed=n)
    ones = torch.ones(n, dtype=torch.float64)
    cov = sigma**2 * torch.eye(n, dtype=torch.float64) + s0**2 * torch.outer(ones, ones)
    expected = MultivariateNormal(m0 * ones, covariance_matrix=cov).log_prob(x)
    assert gl.exact_log_evidence(x, m0, s0, sigma) == pytest.approx(float(expected), abs=1e-9)


def test_exact_log_evidence_is_stable_for_large_offset_data():
    x = 1e6 + gl.simulate(100_000, z_true=0.0, seed=3)
    value = gl.exact_log_evidence(x, m0=1e6, s0=1.0, sigma=1.0)
    centred = gl.exact_log_evidence(x - 1e6, m0=0.0, s0=1.0, sigma=1.0)
    assert math.isfinite(value)
    assert value == pytest.approx(centred, rel=1e-9)


def test_simulate_is_seeded_float64_and_leaves_global_rng_alone():
    torch.manual_seed(123)
    before = torch.get_rng_state()
    a = gl.simulate(1000, z_true=1.5, sigma=2.0, seed=7)
    assert torch.equal(torch.get_rng_state(), before)
    assert torch.equal(a, gl.simulate(1000, z_true=1.5, sigma=2.0, seed=7))
    assert not torch.equal(a, gl.simulate(1000, z_true=1.5, sigma=2.0, seed=8))
    assert a.dtype == torch.float64 and a.shape == (1000,)
    # mean within 4 standard errors of the truth
    assert abs(float(a.mean()) - 1.5) < 4 * 2.0 / math.sqrt(1000)


def test_model_trace_full_data():
    x = gl.simulate(30)
    trace = pyro.poutine.trace(gl.model).get_trace(x)
    assert trace.nodes["z"]["value"].shape == ()
    assert trace.nodes["z"]["cond_indep_stack"] == ()
    assert trace.nodes["x"]["is_observed"]
    assert torch.equal(trace.nodes["x"]["value"], x)
    assert [f.name for f in trace.nodes["x"]["cond_indep_stack"]] == ["data"]


def test_model_trace_subsampled_uses_plate_indices_and_scales():
    x = gl.simulate(30)
    trace = pyro.poutine.trace(gl.model).get_trace(x, subsample_size=7)
    idx = trace.nodes["data"]["value"]
    assert idx.shape == (7,)
    assert torch.equal(trace.nodes["x"]["value"], x[idx])
    assert trace.nodes["x"]["scale"] == pytest.approx(30 / 7)
    assert trace.nodes["z"]["value"].shape == ()


@pytest.mark.parametrize(
    "x, kwargs, message",
    [
        (torch.tensor([0.0, float("nan"), 1.0]), {}, "finite"),
        (torch.tensor([0.0, float("inf")]), {}, "finite"),
        (torch.zeros(2, 3), {}, "1-D"),
        (torch.zeros(0), {}, "at least one"),
        (torch.zeros(3), {"sigma": 0.0}, "sigma"),
        (torch.zeros(3), {"sigma": -1.0}, "sigma"),
        (torch.zeros(3), {"s0": 0.0}, "s0"),
    ],
)
@pytest.mark.parametrize(
    "fn", [gl.model, gl.exact_posterior, gl.exact_log_evidence], ids=lambda f: f.__name__
)
def test_bad_input_raises_value_error(fn, x, kwargs, message):
    with pytest.raises(ValueError, match=message):
        fn(x, **kwargs)


def test_nan_message_names_the_first_bad_index():
    with pytest.raises(ValueError, match="index 2"):
        gl.exact_posterior(torch.tensor([0.0, 1.0, float("nan")]))
