"""The mixture's exact pieces against slow, obviously-correct code (scipy, explicit loops)."""

import numpy as np
import pytest
import torch
from scipy import stats
from scipy.special import logsumexp

from inference.em import steps
from inference.em.steps import (
    e_step,
    expected_log_joint,
    log_likelihood,
    log_prior,
    log_prob_components,
    m_step,
    make_prior,
    parameters,
    responsibilities,
    statistics,
)

K, D, N = 4, 3, 60
EPS10 = 10 * np.finfo(np.float64).eps


def random_parameters(covariance: str, seed: int):
    """Weights, means and compact covariances of type ``covariance`` (numpy)."""
    rng = np.random.default_rng(seed)
    weights = rng.dirichlet(np.full(K, 2.0))
    locs = rng.normal(0, 2, (K, D))
    if covariance == "full":
        factors = rng.normal(0, 1, (K, D, D))
        covariances = factors @ factors.transpose(0, 2, 1) + 0.5 * np.eye(D)
    elif covariance == "diag":
        covariances = rng.uniform(0.3, 3.0, (K, D))
    else:
        covariances = rng.uniform(0.3, 3.0, K)
    return weights, locs, covariances


def full_matrix(covariances: np.ndarray) -> np.ndarray:
    if covariances.ndim == 3:
        return covariances
    variances = covariances if covariances.ndim == 2 else np.repeat(covariances[:, None], D, 1)
    return np.stack([np.diag(v) for v in variances])


def scipy_log_joint(x, weights, locs, covariances) -> np.ndarray:
    """log w_k + log N(x_n | mu_k, Sigma_k), one scipy call per component."""
    matrices = full_matrix(covariances)
    return np.stack(
        [
            np.log(weights[k]) + stats.multivariate_normal(locs[k], matrices[k]).logpdf(x)
            for k in range(K)
        ],
        axis=1,
    )


@pytest.fixture(scope="module")
def x():
    return np.random.default_rng(1).normal(0, 2.5, (N, D))


@pytest.fixture(scope="module")
def resp():
    return np.random.default_rng(2).dirichlet(np.full(K, 0.7), N)


@pytest.mark.parametrize("covariance", steps.COVARIANCE_TYPES)
def test_component_log_densities_likelihood_and_responsibilities_match_scipy(x, covariance):
    params = random_parameters(covariance, seed=0)
    expected = scipy_log_joint(x, *params)
    np.testing.assert_allclose(log_prob_components(x, *params).numpy(), expected, rtol=1e-12)
    np.testing.assert_allclose(
        log_likelihood(x, *params).numpy(), logsumexp(expected, axis=1), rtol=1e-12
    )
    np.testing.assert_allclose(
        responsibilities(x, *params).numpy(),
        np.exp(expected - logsumexp(expected, axis=1, keepdims=True)),
        rtol=1e-10,
        atol=1e-300,
    )


def test_far_points_keep_finite_log_densities_and_responsibilities():
    # A point 1e3 sd away from every component: its densities underflow in linear space.
    params = random_parameters("full", seed=3)
    far = np.full((1, D), 1e3)
    log_joint = log_prob_components(far, *params)
    assert torch.isfinite(log_joint).all() and (log_joint < -1e4).all()
    np.testing.assert_allclose(responsibilities(far, *params).sum(1).numpy(), 1.0, rtol=1e-14)


def explicit_m_step(x, resp, covariance, reg_covar):
    """The textbook M-step with per-component loops (nk carries sklearn's 10 eps)."""
    nk = resp.sum(0) + EPS10
    weights = nk / nk.sum()
    locs = np.stack([(resp[:, k, None] * x).sum(0) / nk[k] for k in range(K)])
    scatter = np.stack(
        [
            sum(resp[n, k] * np.outer(x[n] - locs[k], x[n] - locs[k]) for n in range(N)) / nk[k]
            for k in range(K)
        ]
    )
    if covariance == "full":
        return weights, locs, scatter + reg_covar * np.eye(D)
    variances = np.diagonal(scatter, axis1=1, axis2=2)
    if covariance == "spherical":
        variances = variances.mean(1)
    return weights, locs, variances + reg_covar


@pytest.mark.parametrize("covariance", steps.COVARIANCE_TYPES)
def test_m_step_matches_the_explicit_formulas(x, resp, covariance):
    got = m_step(x, resp, covariance, reg_covar=1e-3)
    for value, expected in zip(got, explicit_m_step(x, resp, covariance, 1e-3), strict=True):
        np.testing.assert_allclose(value.numpy(), expected, rtol=1e-12, atol=1e-14)


PRIOR = {
    "concentration": [1.5, 2.0, 3.0, 1.0],
    "loc_mean": [0.5, -1.0, 0.0],
    "loc_scale": [0.7, 2.0, 1.0],
    "variance_shape": 2.5,
    "variance_rate": 1.5,
}


@pytest.mark.parametrize("covariance", ["diag", "spherical"])
def test_map_m_step_matches_the_explicit_ecm_formulas(x, resp, covariance):
    previous = random_parameters(covariance, seed=4)[2]
    weights, locs, variances = m_step(x, resp, covariance, prior=PRIOR, previous=previous)
    alpha = np.asarray(PRIOR["concentration"])
    m, s2 = np.asarray(PRIOR["loc_mean"]), np.asarray(PRIOR["loc_scale"]) ** 2
    a, b = PRIOR["variance_shape"], PRIOR["variance_rate"]
    nk = resp.sum(0) + EPS10
    prev = previous[:, None] if covariance == "spherical" else previous
    sums = resp.T @ x
    expected_locs = (sums / prev + m / s2) / (nk[:, None] / prev + 1 / s2)
    square = np.stack([(resp[:, k, None] * (x - expected_locs[k]) ** 2).sum(0) for k in range(K)])
    if covariance == "diag":
        expected_variances = (b + square / 2) / (a + 1 + nk[:, None] / 2)
    else:
        expected_variances = (b + square.sum(1) / 2) / (a + 1 + nk * D / 2)
    np.testing.assert_allclose(weights.numpy(), (nk + alpha - 1) / (nk + alpha - 1).sum())
    np.testing.assert_allclose(locs.numpy(), expected_locs, rtol=1e-12)
    np.testing.assert_allclose(variances.numpy(), expected_variances, rtol=1e-12)


def test_log_prior_matches_scipy():
    weights, locs, variances = random_parameters("diag", seed=5)
    prior = make_prior(PRIOR, K, D, "diag")
    expected = (
        stats.dirichlet(PRIOR["concentration"]).logpdf(weights)
        + stats.norm(PRIOR["loc_mean"], PRIOR["loc_scale"]).logpdf(locs).sum()
        + stats.invgamma(PRIOR["variance_shape"], scale=PRIOR["variance_rate"])
        .logpdf(variances)
        .sum()
    )
    assert float(log_prior(weights, locs, variances, prior)) == pytest.approx(expected, rel=1e-12)


@pytest.mark.parametrize("covariance", ["full", "diag", "spherical", "diag-prior"])
def test_expected_log_joint_from_statistics_equals_the_sum_over_points(x, resp, covariance):
    # E_q[log p(x, z | theta)] at parameters other than the ones q came from, and about a
    # shift other than the weighted means: what elbo_after_m_step is made of.
    covariance, _, with_prior = covariance.partition("-")
    params = random_parameters(covariance, seed=6)
    shift = torch.as_tensor(np.random.default_rng(7).normal(0, 1, (K, D)))
    stats_ = statistics(x, resp, covariance, shift=shift)
    if with_prior:
        prior = make_prior(PRIOR, K, D, covariance)
        params = parameters(stats_, covariance, prior=prior, previous_covariances=params[2])[:3]
    expected = (resp * log_prob_components(x, *params).numpy()).sum()
    assert float(expected_log_joint(stats_, *params)) == pytest.approx(expected, rel=1e-12)


@pytest.mark.parametrize("covariance", steps.COVARIANCE_TYPES)
def test_blocked_e_step_equals_the_whole_data_computation(monkeypatch, covariance):
    # Blocks of 1024 points: 2500 points make three blocks, the last one short.
    monkeypatch.setattr(steps, "BLOCK_NUMBERS", 16)
    x = np.random.default_rng(8).normal(0, 2, (2500, D))
    params = random_parameters(covariance, seed=9)
    resp_out = torch.empty(2500, K, dtype=torch.float64)
    e = e_step(torch.as_tensor(x).T.contiguous(), *map(torch.as_tensor, params), resp_out=resp_out)
    log_joint = scipy_log_joint(x, *params)
    log_evidence = logsumexp(log_joint, axis=1)
    resp = np.exp(log_joint - log_evidence[:, None])
    np.testing.assert_allclose(resp_out.numpy(), resp, rtol=1e-10, atol=1e-300)
    assert e.log_likelihood == pytest.approx(log_evidence.sum(), rel=1e-12)
    assert e.expected_log_joint == pytest.approx((resp * log_joint).sum(), rel=1e-12)
    assert e.expected_log_q == pytest.approx((resp * np.log(resp)).sum(), rel=1e-10)
    np.testing.assert_allclose(e.statistics.count.numpy(), resp.sum(0), rtol=1e-12)
    # The M-step from the one-pass statistics (about the old means) equals the two-pass one.
    one_pass = parameters(e.statistics, covariance)[:3]
    for got, expected in zip(one_pass, m_step(x, resp, covariance), strict=True):
        np.testing.assert_allclose(got.numpy(), expected.numpy(), rtol=1e-10)


def test_a_covariance_that_is_not_positive_definite_is_named():
    weights, locs, covariances = random_parameters("full", seed=10)
    covariances[2] = -np.eye(D)
    with pytest.raises(ValueError, match="component 2 is not positive definite"):
        log_prob_components(np.zeros((3, D)), weights, locs, covariances)
