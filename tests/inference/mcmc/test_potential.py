"""The flat potential nutpie samples: checked against Pyro's own and against closed forms."""

import math

import numpy as np
import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro.infer import config_enumerate
from pyro.infer.mcmc.util import initialize_model

from inference import run_nuts
from inference.isolation import Room, isolated
from inference.mcmc.potential import EagerPotentialWarning, flat_potential
from models import eight_schools as es

ROOM = Room(0)


def _points(dim, n=5, seed=0):
    return np.random.default_rng(seed).uniform(-2, 2, size=(n, dim))


GRAPH_RUNNERS = ["compiled", "traced"]


@pytest.mark.parametrize("runner", GRAPH_RUNNERS)
def test_graph_potential_is_pyros_potential_with_its_gradient(runner):
    d = es.load_data()
    args = (torch.as_tensor(d["y"]), torch.as_tensor(d["sigma"]))
    with isolated(ROOM):
        potential = flat_potential(
            es.noncentered, args, {}, nesting=1, device=torch.device("cpu"), runner=runner
        )
        _, pyro_potential, _, _ = initialize_model(es.noncentered, args, {}, max_plate_nesting=1)
        assert potential.runner == runner and potential.names == ["eta", "mu", "tau"]
        for x in _points(potential.dim):
            value, grad = potential.logp_and_grad(x)
            z = torch.tensor(x, requires_grad=True)
            want = -pyro_potential(potential.unpack(z))
            (want_grad,) = torch.autograd.grad(want, z)
            assert value == pytest.approx(float(want), rel=1e-12)
            np.testing.assert_allclose(grad, want_grad.numpy(), rtol=1e-10, atol=1e-12)


@config_enumerate
def mixture(x):
    weights = pyro.sample("weights", dist.Dirichlet(torch.ones(2)))
    locs = pyro.sample("locs", dist.Normal(0.0, 5.0).expand([2]).to_event(1))
    scale = pyro.sample("scale", dist.LogNormal(0.0, 1.0))
    with pyro.plate("data", len(x)):
        z = pyro.sample("z", dist.Categorical(weights))
        pyro.sample("x", dist.Normal(locs[z], scale), obs=x)


def _mixture_log_density(flat, x):
    """log p(x, weights, locs, scale) in the unconstrained space, assignments summed out.

    Written independently of Pyro: stick-breaking for the simplex (torch's transform
    and its log-Jacobian), exp for the scale, and a log-sum-exp over components.
    """
    locs_u, scale_u, weights_u = flat[:2], flat[2], flat[3:]
    to_simplex = torch.distributions.transforms.StickBreakingTransform()
    weights = to_simplex(weights_u)
    scale = scale_u.exp()
    log_jac = to_simplex.log_abs_det_jacobian(weights_u, weights) + scale_u
    prior = (
        torch.distributions.Dirichlet(torch.ones(2)).log_prob(weights)
        + torch.distributions.Normal(0.0, 5.0).log_prob(locs_u).sum()
        + torch.distributions.LogNormal(0.0, 1.0).log_prob(scale)
    )
    per_point = torch.distributions.Normal(locs_u, scale).log_prob(x[:, None]) + weights.log()
    return prior + log_jac + torch.logsumexp(per_point, -1).sum()


@pytest.mark.parametrize("runner", [*GRAPH_RUNNERS, "eager"])
def test_enumerated_mixture_potential_is_the_marginal_likelihood_in_closed_form(runner):
    x = torch.cat([torch.randn(30, generator=torch.Generator().manual_seed(1)) - 2, torch.ones(20)])
    with isolated(ROOM):
        potential = flat_potential(
            mixture, (x,), {}, nesting=1, device=torch.device("cpu"), runner=runner
        )
        assert potential.runner == runner
        assert potential.names == ["locs", "scale", "weights"] and potential.dim == 4
        for point in _points(4):
            value, grad = potential.logp_and_grad(point)
            flat = torch.tensor(point, requires_grad=True)
            want = _mixture_log_density(flat, x)
            (want_grad,) = torch.autograd.grad(want, flat)
            assert value == pytest.approx(float(want), rel=1e-10)
            np.testing.assert_allclose(grad, want_grad.numpy(), rtol=1e-8, atol=1e-10)
        # Draws (chain, draw, dim) come back per site in their own constrained shapes.
        values = potential.constrain(_points(4, n=6).reshape(2, 3, 4))
    assert values["weights"].shape == (2, 3, 2) and values["locs"].shape == (2, 3, 2)
    np.testing.assert_allclose(values["weights"].sum(-1).numpy(), 1.0, rtol=1e-12)
    assert values["scale"].shape == (2, 3) and (values["scale"] > 0).all()


@pytest.mark.parametrize("runner", GRAPH_RUNNERS)
def test_whitened_potential_is_the_same_density_in_new_coordinates(runner):
    d = es.load_data()
    args = (torch.as_tensor(d["y"]), torch.as_tensor(d["sigma"]))
    mean = torch.linspace(-1, 1, 10, dtype=torch.float64)
    a = torch.randn(10, 10, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    cov = a @ a.T / 10 + torch.eye(10, dtype=torch.float64)
    device = torch.device("cpu")
    with isolated(ROOM):
        plain = flat_potential(es.noncentered, args, {}, nesting=1, device=device)
        white = flat_potential(
            es.noncentered, args, {}, nesting=1, device=device, gaussian=(mean, cov), runner=runner
        )
        assert white.runner == runner
        scale_tril = torch.linalg.cholesky(cov)
        for u in _points(10):
            z = (mean + scale_tril @ torch.as_tensor(u)).numpy()
            value, grad = white.logp_and_grad(u)
            want, want_grad = plain.logp_and_grad(z)
            assert value == pytest.approx(want, rel=1e-12)
            np.testing.assert_allclose(grad, scale_tril.T.numpy() @ want_grad, rtol=1e-9)
            np.testing.assert_allclose(white.from_z(torch.as_tensor(z)).numpy(), u, atol=1e-10)


def branchy(x):
    # The likelihood's scale depends on the latent's sign: a trace would keep one branch.
    z = pyro.sample("z", dist.Normal(0.0, 1.0))
    scale = 0.5 if float(z) > 0 else 2.0
    pyro.sample("x", dist.Normal(z, scale), obs=x)


def test_a_model_whose_control_flow_depends_on_a_latent_runs_eagerly_and_right():
    x = torch.tensor(0.3)
    with pytest.warns(EagerPotentialWarning, match="control flow depends on the latent"):
        mc = run_nuts(branchy, x, num_samples=800, warmup_steps=300, num_chains=2, seed=3)
    z = mc.samples["z"].reshape(-1).numpy()
    # The exact posterior on a fine grid (quadrature), independent of any sampler.
    grid = np.linspace(-8, 8, 160001)
    scale = np.where(grid > 0, 0.5, 2.0)
    log_post = -0.5 * grid**2 - np.log(scale) - 0.5 * ((0.3 - grid) / scale) ** 2
    weights = np.exp(log_post - log_post.max())
    weights /= weights.sum()
    mean = float((weights * grid).sum())
    sd = math.sqrt(float((weights * (grid - mean) ** 2).sum()))
    import arviz as az

    mcse = float(az.mcse(mc.to_datatree().posterior["z"], method="mean"))
    assert abs(z.mean() - mean) < 4 * mcse
    assert mcse < sd / 10


def poisson_latent(x):
    rate = pyro.sample("rate", dist.Poisson(3.0))
    pyro.sample("x", dist.Normal(rate.float(), 1.0), obs=x)


def test_a_discrete_site_without_finite_support_is_refused_by_name():
    with pytest.raises(ValueError, match="'rate' is discrete with no finite support"):
        run_nuts(poisson_latent, torch.tensor(2.0), num_samples=5, warmup_steps=5)


@pytest.mark.parametrize("runner", GRAPH_RUNNERS)
def test_a_failure_of_the_models_arithmetic_is_a_point_outside_the_support(runner):
    # [[1, z], [z, 1]] is a covariance only for |z| < 1: elsewhere the Cholesky factor
    # fails, which the sampler must see as log density -inf (a divergence), not a crash.
    def correlated(x):
        z = pyro.sample("z", dist.Normal(0.0, 0.2))
        one = torch.ones(())
        matrix = torch.stack([torch.stack([one, z]), torch.stack([z, one])])
        pyro.sample("x", dist.MultivariateNormal(torch.zeros(2), matrix), obs=x)

    x = torch.tensor([0.5, 0.4])
    with isolated(ROOM):
        potential = flat_potential(
            correlated, (x,), {}, nesting=0, device=torch.device("cpu"), runner=runner
        )
        assert potential.runner == runner
        inside, _ = potential.logp_and_grad(np.array([0.0]))
        outside, grad = potential.logp_and_grad(np.array([2.0]))  # z = 2
    assert np.isfinite(inside)
    assert outside == -np.inf and (grad == 0).all()
    assert potential.errors and "Error" in potential.errors[0]


def test_the_default_runs_the_potential_compiled_for_long_runs_and_traced_for_short_ones():
    # The rule is the number of transitions (COMPILE_MIN_TRANSITIONS = 2000), not timing,
    # so the same call always runs the same code and gives the same draws.
    x = torch.tensor([0.3, -0.1, 0.4])

    def normal(x):
        z = pyro.sample("z", dist.Normal(0.0, 1.0))
        with pyro.plate("data", len(x)):
            pyro.sample("x", dist.Normal(z, 1.0), obs=x)

    short = run_nuts(normal, x, num_samples=100, warmup_steps=100, num_chains=2)
    long = run_nuts(normal, x, num_samples=600, warmup_steps=400, num_chains=2)
    forced = run_nuts(normal, x, num_samples=100, warmup_steps=100, num_chains=2, compile=True)
    assert (short.potential, long.potential, forced.potential) == ("traced", "compiled", "compiled")
    assert long.to_datatree().posterior.attrs["potential"] == "compiled"
    # Same seed, same draws, on the compiled potential too.
    again = run_nuts(normal, x, num_samples=100, warmup_steps=100, num_chains=2, compile=True)
    assert torch.equal(forced.samples["z"], again.samples["z"])
    with pytest.raises(ValueError, match="compile must be True, False or None"):
        run_nuts(normal, x, num_samples=5, warmup_steps=5, compile="yes")


def test_a_model_that_fails_to_compile_runs_traced_and_says_so_when_compile_was_asked(
    monkeypatch,
):
    from inference.mcmc import graph

    real = graph.runner

    def broken(graph_module, kind, dim, device):
        if kind == "compiled":
            raise RuntimeError("no C++ compiler")
        return real(graph_module, kind, dim, device)

    monkeypatch.setattr(graph, "runner", broken)
    with pytest.warns(
        UserWarning, match="compile=True was asked for, but the potential runs traced"
    ):
        mc = run_nuts(
            branchy_free,
            torch.tensor(0.3),
            num_samples=50,
            warmup_steps=50,
            num_chains=1,
            compile=True,
        )
    assert mc.potential == "traced"


def branchy_free(x):
    z = pyro.sample("z", dist.Normal(0.0, 1.0))
    pyro.sample("x", dist.Normal(z, 1.0), obs=x)
