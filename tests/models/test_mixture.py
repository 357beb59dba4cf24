"""The mixture family: its densities against hand-written closed forms, its data, and
NUTS on posteriordb's ``low_dim_gauss_mix`` against the reference posterior."""

import math

import numpy as np
import pyro.distributions as dist
import pytest
import torch
from pyro import poutine

from inference import run_nuts
from inference.enumeration import enumerate_model, log_density
from models import mixture


def marginal_log_density(model, args, values, kwargs=None):
    """log p(x, theta) with z summed out, through vilab's enumeration (one point)."""
    conditioned = poutine.condition(model, data=values)
    enumerated = enumerate_model(conditioned, ("z",), -2)
    trace = poutine.trace(enumerated).get_trace(*args, **(kwargs or {}))
    return log_density(trace)


def gmm_closed_form(x, weights, locs, variances, priors, corr_chol=None):
    p = priors.tensors(x.shape[1], torch.float64)
    lp = dist.Dirichlet(p["concentration"].expand(len(weights))).log_prob(weights)
    lp = lp + dist.Normal(p["loc_mean"], p["loc_scale"]).log_prob(locs).sum()
    lp = lp + dist.InverseGamma(p["variance_shape"], p["variance_rate"]).log_prob(variances).sum()
    comps = []
    for k in range(len(weights)):
        if corr_chol is None:
            cov = torch.diag(variances[k])
        else:
            tril = variances[k].sqrt()[:, None] * corr_chol[k]
            cov = tril @ tril.T
            lp = lp + dist.LKJCholesky(x.shape[1], p["lkj_concentration"]).log_prob(corr_chol[k])
        comps.append(
            torch.log(weights[k])
            + dist.MultivariateNormal(locs[k], covariance_matrix=cov).log_prob(x)
        )
    return lp + torch.logsumexp(torch.stack(comps, -1), -1).sum()


@pytest.fixture(scope="module")
def gmm_data():
    x, labels, truth = mixture.simulate(num_points=200, seed=3)
    return x, labels, truth


def test_diag_model_density_is_the_mixture_marginal(gmm_data):
    x, _, truth = gmm_data
    priors = mixture.MixturePriors.for_data(x)
    values = {k: torch.as_tensor(v) for k, v in truth.items()}
    got = marginal_log_density(mixture.model, (x, 3, priors), values)
    expected = gmm_closed_form(x, values["weights"], values["locs"], values["variances"], priors)
    assert float(got) == pytest.approx(float(expected), rel=1e-10)


def test_full_model_density_is_the_mixture_marginal(gmm_data):
    x, _, truth = gmm_data
    priors = mixture.MixturePriors()
    corr = dist.LKJCholesky(2, 1.0).sample((3,))
    values = {k: torch.as_tensor(v) for k, v in truth.items()} | {"corr_chol": corr.double()}
    got = marginal_log_density(mixture.model, (x, 3, priors, "full"), values)
    expected = gmm_closed_form(
        x, values["weights"], values["locs"], values["variances"], priors, values["corr_chol"]
    )
    assert float(got) == pytest.approx(float(expected), rel=1e-10)


def test_minibatch_likelihood_is_scaled_to_the_whole_data(gmm_data):
    x, _, truth = gmm_data
    priors = mixture.MixturePriors()
    values = {k: torch.as_tensor(v) for k, v in truth.items()}
    full = marginal_log_density(mixture.model, (x, 3, priors), values)
    # Two halves, each scaled by N / n = 2: their mean is the whole-data density.
    halves = [
        marginal_log_density(
            mixture.model, (x, 3, priors), values, {"subsample": torch.arange(i, 200, 2)}
        )
        for i in (0, 1)
    ]
    assert float(sum(halves) / 2) == pytest.approx(float(full), rel=1e-10)


def test_gauss_mix_1d_is_stans_log_mix_up_to_a_constant():
    y = mixture.gauss_mix_1d_data()
    assert y.shape == (1000,)

    def stan(mu, sigma, theta):
        lp = dist.Normal(0.0, 2.0).log_prob(mu).sum() + dist.Normal(0.0, 2.0).log_prob(sigma).sum()
        lp = lp + dist.Beta(5.0, 5.0).log_prob(theta)
        a = math.log(theta) + dist.Normal(mu[0], sigma[0]).log_prob(y)
        b = math.log(1 - theta) + dist.Normal(mu[1], sigma[1]).log_prob(y)
        return lp + torch.logaddexp(a, b).sum()

    points = [
        (torch.tensor([-2.7, 2.9]), torch.tensor([1.0, 1.1]), torch.tensor(0.62)),
        (torch.tensor([-1.0, 0.5]), torch.tensor([2.0, 0.7]), torch.tensor(0.3)),
    ]
    ours = [
        marginal_log_density(
            mixture.gauss_mix_1d, (y,), {"mu": m.double(), "sigma": s.double(), "theta": t.double()}
        )
        for m, s, t in points
    ]
    theirs = [stan(m.double(), s.double(), t.double()) for m, s, t in points]
    assert float(ours[0] - ours[1]) == pytest.approx(float(theirs[0] - theirs[1]), rel=1e-10)


def test_shipped_reference_and_data():
    ref = mixture.gauss_mix_1d_reference()
    assert list(ref.index) == ["mu[1]", "mu[2]", "sigma[1]", "sigma[2]", "theta"]
    assert (ref["n_draws"] == 10000).all()
    x, species, names = mixture.load_iris()
    assert x.shape == (150, 4) and sorted(set(species.tolist())) == [0, 1, 2] and len(names) == 4
    a, la, truth = mixture.simulate(seed=1)
    b, lb, _ = mixture.simulate(seed=1)
    assert torch.equal(a, b) and np.array_equal(la, lb) and a.shape == (1000, 2)
    # The empirical weights are those of the truth within 4 binomial sds.
    freq = np.bincount(la, minlength=3) / len(la)
    assert np.all(np.abs(freq - truth["weights"]) < 4 * np.sqrt(truth["weights"] / len(la)))


@pytest.mark.parametrize(
    "args, match",
    [
        ((torch.zeros(10),), r"shape \(N, D\)"),
        ((torch.zeros(10, 2), 0), "n_components must be >= 1"),
        ((torch.zeros(10, 2), 2, None, "spherical"), "covariance must be one of"),
        ((torch.zeros(10, 2), 2, mixture.MixturePriors(loc_mean=(0.0, 1.0, 2.0))), "3 values"),
    ],
)
def test_bad_input_is_named(args, match):
    with pytest.raises(ValueError, match=match):
        poutine.trace(mixture.model).get_trace(*args)


@pytest.mark.slow
def test_nuts_on_gauss_mix_1d_matches_posteriordb():
    """Every mean within 4 combined MCSEs of posteriordb's, every sd within 4 sds of
    an sd estimate (sd / sqrt(2 ESS)) of the reference's."""
    y = mixture.gauss_mix_1d_data()
    mc = run_nuts(mixture.gauss_mix_1d, y, num_samples=1000, warmup_steps=1000, num_chains=4)
    from inference import compare

    table = compare({"nuts": mc}, reference=mixture.gauss_mix_1d_reference()).set_index("parameter")
    ref = mixture.gauss_mix_1d_reference()
    assert mc.num_divergences == 0
    for name, row in table.iterrows():
        se_mean = math.hypot(row["mcse_mean"], ref.loc[name, "mcse_mean"])
        assert abs(row["mean"] - row["ref_mean"]) < 4 * se_mean, name
        assert abs(row["sd_ratio"] - 1) < 4 / math.sqrt(2 * row["ess_bulk"]), name
        assert row["r_hat"] < 1.01, name
