"""Discrete latent sites summed out in every engine, checked against the closed form.

The model is a two-component mixture whose assignments ``z`` are enumerated; given the
weights and locations, everything about ``z`` has a closed form:
``log p(x, w, mu) = log p(w) + log p(mu) + sum_n logsumexp_k (log w_k + log N(x_n | mu_k, 1))``
and ``p(z_n = k | x, w, mu)`` is the softmax of the same terms. Written twice, as a user
following Pyro's tutorial would (``locs[z]``: replayed draw by draw) and broadcasting
over draws (``Vindex``: replayed in one pass); both must give the same numbers.
"""

import math
import warnings

import numpy as np
import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro.infer import config_enumerate
from pyro.ops.indexing import Vindex

from inference import fit_svi, run_nuts
from inference.evidence import estimate_elbo
from inference.posterior.replay import SlowReplayWarning, replay
from inference.sites import unconstrained_sites
from inference.svi.laplace import potential_fn

PRIOR_SCALE = 10.0


@config_enumerate
def tutorial_mixture(x):
    weights = pyro.sample("weights", dist.Dirichlet(torch.ones(2)))
    with pyro.plate("component", 2):
        locs = pyro.sample("locs", dist.Normal(0.0, PRIOR_SCALE))
    with pyro.plate("data", len(x)):
        z = pyro.sample("z", dist.Categorical(weights))
        pyro.sample("obs", dist.Normal(locs[z], 1.0), obs=x)


def unmarked_mixture(x, subsample_size=None):
    weights = pyro.sample("weights", dist.Dirichlet(torch.ones(2)))
    with pyro.plate("component", 2):
        locs = pyro.sample("locs", dist.Normal(0.0, PRIOR_SCALE))
    with pyro.plate("data", len(x), subsample_size=subsample_size) as index:
        z = pyro.sample("z", dist.Categorical(weights))
        loc = Vindex(locs.unsqueeze(-2))[..., z]
        pyro.sample("obs", dist.Normal(loc, 1.0), obs=x[index])


broadcasting_mixture = config_enumerate(unmarked_mixture)


def hand_guide(x, subsample_size=None):
    """Fixed (not fitted) Gaussian-ish guide over the globals; z is left to enumeration."""
    pyro.sample("weights", dist.Dirichlet(torch.tensor([40.0, 60.0])))
    with pyro.plate("component", 2):
        pyro.sample("locs", dist.Normal(torch.tensor([-2.8, 3.1]), 0.15))


def terms(x, weights, locs):
    """``log w_k + log N(x_n | mu_k, 1)``, shape (..., N, K), for draws (..., K)."""
    return torch.log(weights).unsqueeze(-2) + dist.Normal(locs.unsqueeze(-2), 1.0).log_prob(
        x.unsqueeze(-1)
    )


def log_joint(x, weights, locs):
    """The closed-form ``log p(x, w, mu)`` with z summed out, per draw."""
    prior = dist.Dirichlet(torch.ones(2)).log_prob(weights)
    prior = prior + dist.Normal(0.0, PRIOR_SCALE).log_prob(locs).sum(-1)
    return prior + torch.logsumexp(terms(x, weights, locs), -1).sum(-1)


@pytest.fixture(scope="module")
def data():
    g = torch.Generator().manual_seed(0)
    return torch.cat([torch.randn(60, generator=g) - 3.0, torch.randn(40, generator=g) + 3.0])


def draws(num, seed=1):
    g = torch.Generator().manual_seed(seed)
    weights = torch.distributions.Dirichlet(torch.ones(2)).sample((num,))
    locs = torch.randn(num, 2, generator=g) * 3.0
    return {"weights": weights, "locs": locs}


@pytest.mark.parametrize(
    "model", [tutorial_mixture, broadcasting_mixture], ids=["tutorial", "broadcasting"]
)
def test_replay_sums_out_the_assignments(model, data):
    samples = draws(5)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SlowReplayWarning)
        replayed = replay(model, (data,), {}, 5, samples=samples)
    assert replayed.enumerated == ("z",)
    assert replayed.vectorized == (model is broadcasting_mixture)
    expected = log_joint(data, samples["weights"], samples["locs"])
    torch.testing.assert_close(replayed.log_joint, expected, rtol=1e-5, atol=1e-4)


def test_replay_covers_every_minibatch_of_a_subsampled_enumerated_model(data):
    samples = draws(4)
    replayed = replay(broadcasting_mixture, (data, 30), {}, 4, samples=samples)
    assert replayed.cover is not None and replayed.cover.count == 4
    expected = log_joint(data, samples["weights"], samples["locs"])
    torch.testing.assert_close(replayed.log_joint, expected, rtol=1e-5, atol=1e-4)


def test_mcmc_tree_has_marginal_log_likelihood_and_assignment_probabilities(data):
    mc = run_nuts(broadcasting_mixture, data, num_samples=50, warmup_steps=50, num_chains=1)
    tree = mc.to_datatree()
    post = tree.posterior
    weights = torch.as_tensor(post["weights"].values[0])
    locs = torch.as_tensor(post["locs"].values[0])
    t = terms(data.double(), weights.double(), locs.double())
    loglik = tree.log_likelihood["obs"].values[0]
    np.testing.assert_allclose(loglik, torch.logsumexp(t, -1).numpy(), rtol=1e-5, atol=1e-5)
    probs = torch.softmax(t, -1).mean(0).numpy()
    np.testing.assert_allclose(tree["assignments"]["z"].values, probs, atol=1e-5)
    assert tree["assignments"]["z"].dims == ("data", "z_value")
    assert "z" not in post  # summed out, not drawn, unless asked


def test_delta_fit_gives_the_exact_responsibilities_and_draws_follow_them(data):
    fit = fit_svi(broadcasting_mixture, "delta", data, elbo="enum", num_steps=300)
    tree = fit.to_datatree(num_samples=2000, draw_discrete=True)
    weights = torch.as_tensor(tree.posterior["weights"].values[0, 0])
    locs = torch.as_tensor(tree.posterior["locs"].values[0, 0])
    probs = torch.softmax(terms(data.double(), weights, locs), -1).numpy()
    np.testing.assert_allclose(tree["assignments"]["z"].values, probs, atol=1e-9)
    # Draws of z: Bernoulli(p_n1) per point; 4.5 binomial standard errors.
    freq = tree.posterior["z"].values[0].mean(0)
    p = probs[:, 1]
    se = np.sqrt(np.maximum(p * (1 - p), 1e-12) / 2000)
    assert np.all(np.abs(freq - p) <= 4.5 * se + 1e-12)
    # A point mass: the ELBO is log p(x, theta-hat) exactly, and the loss says the same.
    elbo = fit.elbo(num_particles=10)
    exact = float(log_joint(data.double(), weights, locs))
    assert elbo.value == pytest.approx(exact, abs=1e-6)
    assert fit.losses[-1] == pytest.approx(-exact, abs=1e-3)


def test_elbo_of_a_hand_written_guide_matches_an_independent_estimate(data):
    est = estimate_elbo(broadcasting_mixture, hand_guide, (data,), {}, num_particles=4000)
    # Independent: draws from the guide's distributions, the closed-form marginal.
    g = torch.Generator().manual_seed(7)
    q_w = dist.Dirichlet(torch.tensor([40.0, 60.0]))
    gammas = torch._standard_gamma(torch.tensor([40.0, 60.0]).expand(4000, 2).contiguous())
    weights = gammas / gammas.sum(-1, keepdim=True)
    locs = torch.tensor([-2.8, 3.1]) + 0.15 * torch.randn(4000, 2, generator=g)
    log_q = q_w.log_prob(weights) + dist.Normal(torch.tensor([-2.8, 3.1]), 0.15).log_prob(locs).sum(
        -1
    )
    w = (log_joint(data, weights, locs) - log_q).double()
    se = math.sqrt(est.mcse**2 + float(w.var() / len(w)))
    assert abs(est.value - float(w.mean())) < 4 * se


@pytest.mark.parametrize("guide", ["delta", "normal"])
def test_the_pyro_tutorial_mixture_fits_with_autoguides(guide, data):
    """The issue's reproduction: each of these stopped with a transform error."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SlowReplayWarning)
        fit = fit_svi(tutorial_mixture, guide, data, elbo="enum", num_steps=400)
        tree = fit.to_datatree(num_samples=100)
        elbo = fit.elbo(num_particles=200)
    locs = np.sort(tree.posterior["locs"].values.mean((0, 1)))
    # 60 points around -3 and 40 around +3: each loc within 4 of its standard errors.
    assert abs(locs[0] + 3.0) < 4 / math.sqrt(60) + 0.2
    assert abs(locs[1] - 3.0) < 4 / math.sqrt(40) + 0.2
    probs = tree["assignments"]["z"].values
    first = int(np.argmin(tree.posterior["locs"].values.mean((0, 1))))
    assert probs[:60, first].mean() > 0.95 and probs[60:, first].mean() < 0.05
    # The loss estimates -ELBO of the same objective (a few sds of a one-particle loss).
    tail = fit.losses[-100:]
    assert abs(-tail.mean() - elbo.value) < 4 * (tail.std() / 10 + elbo.mcse) + 1.0


def test_laplace_potential_sums_out_the_assignments(data):
    sites, start, transforms = unconstrained_sites(broadcasting_mixture, (data,), {})
    potential = potential_fn(broadcasting_mixture, (data,), {}, sites, transforms)
    u = start + 0.3
    values, log_jac, pos = {}, 0.0, 0
    for name, shape in sites:
        size = int(torch.Size(shape).numel())
        piece = u[pos : pos + size].reshape(shape)
        values[name] = transforms[name](piece)
        log_jac = log_jac + transforms[name].log_abs_det_jacobian(piece, values[name]).sum()
        pos += size
    expected = -(log_joint(data, values["weights"], values["locs"]) + log_jac)
    torch.testing.assert_close(potential(u), expected, rtol=1e-6, atol=1e-4)


def test_a_discrete_site_needs_enum_and_a_mark(data):
    with pytest.raises(ValueError, match="'z' is discrete.*elbo='enum'"):
        fit_svi(broadcasting_mixture, "normal", data, num_steps=5)
    with pytest.raises(ValueError, match="'z' is discrete and not marked for enumeration"):
        fit_svi(unmarked_mixture, "normal", data, elbo="enum", num_steps=5)


def count_model(x):
    rate = pyro.sample("rate", dist.Gamma(2.0, 1.0))
    k = pyro.sample("k", dist.Poisson(rate))
    pyro.sample("obs", dist.Normal(k, 1.0).expand([len(x)]).to_event(1), obs=x)


@pytest.mark.parametrize("engine", ["svi", "nuts"])
def test_a_discrete_site_without_finite_support_is_refused_by_name(engine, data):
    with pytest.raises(ValueError, match="'k' is discrete with no finite support"):
        if engine == "svi":
            fit_svi(count_model, "normal", data, elbo="enum", num_steps=5)
        else:
            run_nuts(count_model, data, num_samples=5, warmup_steps=5, num_chains=1)


def test_a_single_draw_is_replayed_with_the_assignments_summed_out(data):
    """A plate of one draw leaves no dim in Pyro's packed tensors: the contraction must
    not ask for it (it raised a KeyError)."""
    samples = draws(1)
    replayed = replay(broadcasting_mixture, (data,), {}, 1, samples=samples, discrete=True)
    expected = log_joint(data, samples["weights"], samples["locs"])
    torch.testing.assert_close(replayed.log_joint, expected, rtol=1e-5, atol=1e-4)
    assert replayed.vectorized
