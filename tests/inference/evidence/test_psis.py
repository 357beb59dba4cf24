"""PSIS k̂ on ELBO estimates: good where the guide holds the posterior, bad for a
mean-field guide on a strongly correlated posterior; the verdict's bands."""

import math

import pyro
import pyro.distributions as dist
import pytest
import torch
from torch.distributions import constraints

from guides import gaussian_latent as hand
from inference import fit_svi
from inference.evidence import estimate_elbo, pareto_khat, verdict
from inference.isolation import Room, isolated
from models import gaussian_latent as gl

SEEDS = range(3)


def hand_guide_elbo(x, scale_ratio: float, seed: int):
    """The hand guide with its parameters at the exact mean and ``scale_ratio`` x sd."""
    m, s = gl.exact_posterior(x)
    with isolated(Room(seed)):
        pyro.param(hand.PARAM_PREFIX + "z_loc", torch.tensor(m))
        pyro.param(
            hand.PARAM_PREFIX + "z_scale",
            torch.tensor(s * scale_ratio),
            constraint=constraints.positive,
        )
        return estimate_elbo(gl.model, hand.guide, (x,), {}, 4000)


@pytest.fixture(scope="module")
def x():
    return gl.simulate(50, seed=0)


@pytest.mark.parametrize("seed", SEEDS)
def test_khat_is_good_for_the_hand_guide_at_the_exact_posterior(x, seed):
    est = hand_guide_elbo(x, 1.0, seed)
    assert est.khat < 0.5
    assert verdict(est.khat).label == "good"


@pytest.mark.parametrize("seed", SEEDS)
def test_khat_of_a_narrow_normal_guide_is_its_closed_form(x, seed):
    """For q = N(m, (r s)^2) and p = N(m, s^2), w = p/q has a Pareto tail, k = 1 - r^2."""
    r = 0.9
    assert abs(hand_guide_elbo(x, r, seed).khat - (1 - r**2)) < 0.15


@pytest.mark.parametrize("seed", SEEDS)
def test_khat_of_a_wide_guide_is_negative(x, seed):
    assert hand_guide_elbo(x, 1.5, seed).khat < 0


def correlated_pairs():
    """Two independent pairs with correlation 0.995: the mean-field optimum has sd
    0.1 where the posterior's is 1 along each pair's diagonal."""
    cov = torch.tensor([[1.0, 0.995], [0.995, 1.0]])
    pyro.sample("x", dist.MultivariateNormal(torch.zeros(2), cov).expand([2]).to_event(1))


@pytest.fixture(scope="module")
def meanfield_fit():
    return fit_svi(correlated_pairs, "normal", num_steps=2000)


@pytest.mark.parametrize("seed", SEEDS)
def test_khat_is_bad_for_a_meanfield_guide_on_a_correlated_posterior(meanfield_fit, seed):
    est = meanfield_fit.elbo(num_particles=4000, seed=seed)
    assert est.khat > 0.7
    assert verdict(est.khat).label == "bad"


@pytest.mark.parametrize(
    ("khat", "label"),
    [
        (-math.inf, "good"),
        (0.3, "good"),
        (0.5, "ok"),
        (0.7, "ok"),
        (0.71, "bad"),
        (math.nan, "bad"),
    ],
)
def test_verdict_bands(khat, label):
    v = verdict(khat)
    assert v.label == label
    assert v.meaning


def test_khat_of_too_few_or_broken_weights_is_nan():
    assert math.isnan(pareto_khat(torch.randn(10, generator=torch.Generator().manual_seed(0))))
    assert math.isnan(pareto_khat([0.0] * 99 + [math.nan]))


def test_reweighted_draws_correct_a_guide_that_is_off():
    # q = N(mean + 0.3 sd, (0.8 sd)^2) against the exact N(mean, sd^2): k-hat is ~0.36 in
    # theory (1 - 0.8^2), so PSIS-resampling 4,000 of 40,000 draws should recover the
    # posterior: the mean to within 0.1 sd (it starts 0.3 off), the sd to within 10%
    # (it starts 20% low). MC error at this size is ~0.03 sd.
    import pyro
    import pyro.distributions as dist

    from inference import fit_svi
    from models import gaussian_latent as gl

    x = gl.simulate(100, seed=0)
    mean, sd = gl.exact_posterior(x)

    def off_guide(x):
        pyro.sample("z", dist.Normal(x.new_tensor(mean + 0.3 * sd), 0.8 * sd))

    fit = fit_svi(gl.model, off_guide, x, num_steps=1)
    tree = fit.reweighted_datatree(num_samples=4000, seed=0)
    z = tree.posterior["z"].values.reshape(-1)
    assert tree.posterior.attrs["khat"] < 0.5
    assert abs(z.mean() - mean) < 0.1 * sd
    assert abs(z.std() / sd - 1) < 0.1
