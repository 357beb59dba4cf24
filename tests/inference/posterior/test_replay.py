"""One replay of draws through the model: right for batch dims that are not plates,
vectorized where the model broadcasts, a loop (warned once) where it does not, and the
whole data set for subsampled plates."""

import math
import warnings

import numpy as np
import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro import poutine
from torch.distributions import constraints

from inference import fit_svi
from inference.evidence import estimate_elbo
from inference.isolation import Room, isolated
from inference.posterior.draws import guide_draws
from inference.posterior.replay import SlowReplayWarning, replay
from models import gaussian_latent as gl

K = 4  # tolerances in Monte Carlo standard errors
NUM_PARTICLES = 500


@pytest.fixture(scope="module")
def regression_data():
    g = torch.Generator().manual_seed(0)
    X = torch.randn(100, 3, generator=g, dtype=torch.float64)
    noise = torch.randn(100, generator=g, dtype=torch.float64)
    return X, X @ torch.tensor([1.0, -2.0, 0.5], dtype=torch.float64) + noise


def unsqueezed(X, y):
    """Its log density has a batch dim that is not a plate under a plate of draws."""
    beta = pyro.sample("beta", dist.Normal(0.0, 1.0).expand([3]).to_event(1))
    mu = (X * beta.unsqueeze(-2)).sum(-1)
    with pyro.plate("data", len(y)):
        pyro.sample("obs", dist.Normal(mu, 1.0), obs=y)


def matmul(X, y):
    """Does not broadcast over a plate of draws at all."""
    beta = pyro.sample("beta", dist.Normal(0.0, 1.0).expand([3]).to_event(1))
    with pyro.plate("data", len(y)):
        pyro.sample("obs", dist.Normal(X @ beta, 1.0), obs=y)


def broadcasting(X, y):
    beta = pyro.sample("beta", dist.Normal(0.0, 1.0).expand([3]).to_event(1))
    with pyro.plate("data", len(y)):
        pyro.sample("obs", dist.Normal((X * beta).sum(-1), 1.0), obs=y)


def fixed_guide(loc, scale):
    def guide(X, y):
        pyro.sample("beta", dist.Normal(loc, scale).to_event(1))

    return guide


GUIDE = fixed_guide(
    torch.tensor([0.9, -1.9, 0.6], dtype=torch.float64),
    torch.tensor([0.12, 0.1, 0.11], dtype=torch.float64),
)


def slow_log_weights(model, guide, args, num, seed):
    """The obviously correct ELBO particles: one guide run and one model replay each."""
    out = []
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        for _ in range(num):
            guide_trace = poutine.trace(guide).get_trace(*args)
            model_trace = poutine.trace(poutine.replay(model, trace=guide_trace)).get_trace(*args)
            out.append(float(model_trace.log_prob_sum() - guide_trace.log_prob_sum()))
    return np.array(out)


def assert_same_mean(est, w):
    se = w.std(ddof=1) / math.sqrt(len(w))
    assert abs(est.value - w.mean()) < K * math.hypot(est.mcse, se)


@pytest.mark.parametrize("model", [unsqueezed, matmul, broadcasting])
def test_elbo_equals_a_slow_per_draw_loop(model, regression_data):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SlowReplayWarning)
        with isolated(Room(1)):
            est = estimate_elbo(model, GUIDE, regression_data, {}, NUM_PARTICLES)
    w = slow_log_weights(model, GUIDE, regression_data, 250, seed=2)
    assert_same_mean(est, w)


def test_elbo_of_a_fit_with_a_non_plate_batch_dim_matches_its_losses(regression_data):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SlowReplayWarning)
        fit = fit_svi(unsqueezed, "normal", *regression_data, num_steps=500)
        est = fit.elbo(num_particles=NUM_PARTICLES)
    last = -fit.losses[-200:]
    assert abs(est.value - last.mean()) < K * math.hypot(est.mcse, last.std() / math.sqrt(200))


def test_a_model_that_does_not_broadcast_is_looped_and_warned_about_once(regression_data):
    def matmul_model(X, y):
        matmul(X, y)

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        fit = fit_svi(matmul_model, "normal", *regression_data, num_steps=50)
        fit.elbo(num_particles=50)
        fit.elbo(num_particles=50, seed=1)
        fit.sample(20)
    slow = [w for w in caught if issubclass(w.category, SlowReplayWarning)]
    assert len(slow) == 1
    assert "matmul_model" in str(slow[0].message)
    with isolated(Room(0)):
        replayed = replay(matmul_model, regression_data, {}, 10, guide=GUIDE)
    assert not replayed.vectorized


def test_a_model_that_broadcasts_is_replayed_in_one_pass_without_a_warning(regression_data):
    with warnings.catch_warnings():
        warnings.simplefilter("error", SlowReplayWarning)
        with isolated(Room(0)):
            replayed = replay(broadcasting, regression_data, {}, 10, guide=GUIDE)
    assert replayed.vectorized


def test_draws_of_a_looped_model_hold_each_draws_log_likelihood(regression_data):
    X, y = regression_data
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SlowReplayWarning)
        with isolated(Room(0)):
            draws = guide_draws(unsqueezed, GUIDE, 30, regression_data, {})
    beta = torch.as_tensor(draws.posterior["beta"].values)
    assert beta.shape == (30, 3)
    expected = dist.Normal((X * beta.unsqueeze(-2)).sum(-1), 1.0).log_prob(y)
    np.testing.assert_allclose(draws.log_likelihood["obs"].values, expected.numpy(), rtol=1e-10)


# Subsampled plates: the example.


@pytest.fixture(scope="module")
def subsample_data():
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        return (torch.randn(200) + 1.5).double()


def subsampled(x):
    z = pyro.sample("z", dist.Normal(0.0, 10.0))
    with pyro.plate("data", len(x), subsample_size=20) as idx:
        pyro.sample("x", dist.Normal(z, 1.0), obs=x[idx])


def shipped_subsampled(x):
    gl.model(x, subsample_size=20)


def exact_guide(x, widen=1.0):
    m, s = gl.exact_posterior(x)
    pyro.sample("z", dist.Normal(torch.tensor(m), torch.tensor(s * widen)))


SUBSAMPLED = [subsampled, shipped_subsampled]


@pytest.mark.parametrize("model", SUBSAMPLED)
def test_datatree_of_a_subsampled_model_covers_the_whole_data_set(model, subsample_data):
    x = subsample_data
    tree = fit_svi(model, "normal", x, num_steps=200).to_datatree(num_samples=100)
    np.testing.assert_array_equal(tree.observed_data["x"].values, x.numpy())
    loglik = tree.log_likelihood["x"]
    assert loglik.dims == ("chain", "draw", "data") and loglik.shape == (1, 100, 200)
    z = torch.as_tensor(tree.posterior["z"].values)[..., None]
    expected = dist.Normal(z, 1.0).log_prob(x).numpy()
    np.testing.assert_allclose(loglik.values, expected, rtol=1e-12)


@pytest.mark.parametrize("model", SUBSAMPLED)
def test_elbo_of_the_exact_posterior_is_the_exact_log_evidence(model, subsample_data):
    x = subsample_data
    with isolated(Room(0)):
        est = estimate_elbo(model, exact_guide, (x,), {}, 2000)
    log_evidence = gl.exact_log_evidence(x)
    round_off = 1e-9 * abs(log_evidence)
    assert abs(est.value - log_evidence) <= K * est.mcse + round_off
    assert abs(est.iwae - log_evidence) <= round_off


@pytest.mark.parametrize("model", SUBSAMPLED)
def test_elbo_of_a_subsampled_model_is_the_whole_data_bound(model, subsample_data):
    x, widen = subsample_data, 1.5
    kl = -math.log(widen) + widen**2 / 2 - 0.5  # KL(N(m, (w s)^2) || N(m, s^2))
    with isolated(Room(0)):
        est = estimate_elbo(model, lambda x: exact_guide(x, widen), (x,), {}, 2000)
    assert abs(est.value - (gl.exact_log_evidence(x) - kl)) < K * est.mcse


def test_a_param_guide_at_the_exact_posterior_on_a_subsampled_model(subsample_data):
    """The same through fit.elbo(), with a guide whose parameters hold the answer."""
    x = subsample_data
    m, s = gl.exact_posterior(x)

    def guide(x):
        loc = pyro.param("loc", torch.tensor(m))
        scale = pyro.param("scale", torch.tensor(s), constraint=constraints.positive)
        pyro.sample("z", dist.Normal(loc, scale))

    fit = fit_svi(subsampled, guide, x, num_steps=1, lr=1e-12)
    est = fit.elbo()
    assert abs(est.value - gl.exact_log_evidence(x)) < 1e-6
