"""run_em against scikit-learn, against a known truth, as VI (its ELBO), and as MAP-EM.

False-failure rates: the truth-recovery bounds are 5 standard errors (two-sided
probability ~6e-7 each for a Gaussian estimate; 27 bounds: < 2e-5 for the test). All
other assertions are deterministic at fixed seeds, with round-off tolerances.
"""

import warnings

import numpy as np
import pyro
import pyro.distributions as dist
import pytest
import torch
import xarray as xr
from pyro import poutine
from scipy.optimize import linear_sum_assignment
from sklearn.cluster import kmeans_plusplus
from sklearn.datasets import load_iris
from sklearn.mixture import GaussianMixture

import inference.em.run as em_run
from inference.em import (
    CovarianceFloorWarning,
    EMConvergenceWarning,
    m_step,
    responsibilities,
    run_em,
)

TRUE_WEIGHTS = np.array([0.5, 0.3, 0.2])
TRUE_LOCS = np.array([[0.0, 0.0], [3.0, 0.5], [0.5, 3.0]])
TRUE_SDS = np.array([[1.0, 0.8], [0.7, 0.7], [0.8, 0.6]])


def simulate(num_points: int, seed: int, locs=TRUE_LOCS, sds=TRUE_SDS, weights=TRUE_WEIGHTS):
    """Points from a diagonal-covariance mixture, and their components."""
    rng = np.random.default_rng(seed)
    z = rng.choice(len(weights), num_points, p=weights)
    return locs[z] + rng.normal(0, 1, (num_points, locs.shape[1])) * sds[z], z


@pytest.fixture(scope="module")
def grid():
    """Six unit blobs on a 3 x 2 grid: with K = 3, k-means++ starts end in different optima."""
    centres = np.array([[0, 0], [4, 0], [8, 0], [0, 4], [4, 4], [8, 4]], dtype=float)
    rng = np.random.default_rng(0)
    return centres[rng.integers(0, 6, 300)] + rng.normal(0, 1, (300, 2))


def matched(reference_locs, locs) -> np.ndarray:
    """The permutation of ``locs``'s components nearest ``reference_locs`` (Hungarian)."""
    cost = np.linalg.norm(reference_locs[:, None, :] - locs[None, :, :], axis=-1)
    return linear_sum_assignment(cost)[1]


def kmeans_plusplus_start(x, n_components, random_state, covariance="full"):
    """k-means++ centres, nearest-centre labels, one M-step: run_em's documented start."""
    centres, _ = kmeans_plusplus(x, n_components, random_state=random_state)
    labels = np.argmin(((x[:, None, :] - centres[None]) ** 2).sum(-1), axis=1)
    weights, locs, covariances = m_step(x, np.eye(n_components)[labels], covariance)
    return {"weights": weights.numpy(), "locs": locs.numpy(), "covariances": covariances.numpy()}


def sklearn_precisions(covariances: np.ndarray, covariance: str) -> np.ndarray:
    """Precisions in sklearn's compact form: (K, D, D), (K, D) or (K,)."""
    if covariance == "full":
        return np.linalg.inv(covariances)
    variances = np.diagonal(covariances, axis1=1, axis2=2)
    return 1 / (variances if covariance == "diag" else variances[:, 0])


def assert_agrees_with_sklearn(x, init: dict, covariance: str):
    k = len(init["weights"])
    em = run_em(x, k, covariance=covariance, init=init, tol=1e-6, max_iter=500)
    sk = GaussianMixture(
        k,
        covariance_type=covariance,
        weights_init=init["weights"],
        means_init=init["locs"],
        precisions_init=sklearn_precisions(init["covariances"], covariance),
        tol=1e-6,
        reg_covar=1e-6,
        max_iter=500,
    ).fit(x)
    # Same convergence rule as sklearn/mixture/_base.py (fit_predict): stop at the first
    # iteration whose E-step bound (mean log-likelihood at the parameters entering it)
    # moved by less than tol; so the iteration counts and the histories agree exactly.
    assert em.n_iter == sk.n_iter_ and em.converged and sk.converged_
    np.testing.assert_allclose(em.log_likelihood, sk.lower_bounds_, rtol=0, atol=1e-9)
    assert em.lower_bound == pytest.approx(sk.score(x), abs=1e-6)
    order = matched(sk.means_, em.locs)
    full = {
        "full": sk.covariances_,
        "diag": np.stack([np.diag(v) for v in np.atleast_2d(sk.covariances_)]),
        "spherical": sk.covariances_[:, None, None] * np.eye(x.shape[1]),
    }[covariance]
    np.testing.assert_allclose(em.weights[order], sk.weights_, atol=1e-4)
    np.testing.assert_allclose(em.locs[order], sk.means_, atol=1e-4)
    np.testing.assert_allclose(em.covariances[order], full, atol=1e-4)


@pytest.mark.parametrize("covariance", ["full", "diag", "spherical"])
def test_agrees_with_sklearn_from_the_same_start_on_simulated_data(covariance):
    x, _ = simulate(2000, seed=0)
    start = {
        "weights": np.full(3, 1 / 3),
        "locs": np.array([[1.0, 1.0], [2.0, -1.0], [-1.0, 2.0]]),
        "covariances": np.stack([np.eye(2)] * 3),
    }
    assert_agrees_with_sklearn(x, start, covariance)


def test_agrees_with_sklearn_on_iris_with_full_covariances():
    x = load_iris().data
    assert_agrees_with_sklearn(x, kmeans_plusplus_start(x, 3, np.random.RandomState(0)), "full")


@pytest.mark.parametrize("covariance", ["full", "diag", "diag-prior", "spherical-prior"])
@pytest.mark.parametrize("seed", range(5))
def test_elbo_never_decreases_and_the_e_step_closes_the_gap(grid, covariance, seed):
    covariance, _, with_prior = covariance.partition("-")
    prior = PRIOR if with_prior else None
    em = run_em(grid, 3, covariance=covariance, prior=prior, seed=seed, tol=1e-10, max_iter=2000)
    assert em.converged and em.n_iter > 10
    elbo, after = em.elbo, em.elbo_after_m_step
    round_off = 1e-12 * np.abs(elbo)
    assert (np.diff(elbo) >= -round_off[1:]).all()
    # E-step, M-step, E-step, ...: the M-step climbs from where the E-step left off.
    assert (after >= elbo - round_off).all()
    assert (elbo[1:] >= after[:-1] - round_off[1:]).all()
    if prior is None:
        np.testing.assert_allclose(elbo, em.log_likelihood, rtol=0, atol=1e-10)
    assert em.lower_bound >= elbo[-1] - round_off[-1]


def test_k_means_plus_plus_comes_from_sklearn_with_a_seed_per_restart(grid, monkeypatch):
    calls = []

    def recording(x, n_clusters, *, random_state):
        calls.append(random_state.get_state()[1][:4].copy())
        return kmeans_plusplus(x, n_clusters, random_state=random_state)

    monkeypatch.setattr(em_run, "kmeans_plusplus", recording)
    run_em(grid, 3, n_init=3, seed=0)
    assert len(calls) == 3
    assert not np.array_equal(calls[0], calls[1]) and not np.array_equal(calls[1], calls[2])


def test_n_init_returns_the_best_restart_and_each_restart_can_be_rerun_alone(grid):
    em = run_em(grid, 3, n_init=4, seed=0)
    assert np.ptp(em.init_lower_bounds) > 1e-3  # the restarts reach different optima
    assert em.best_init == int(np.argmax(em.init_lower_bounds))
    assert em.lower_bound == em.init_lower_bounds.max()
    for restart, seed in enumerate(em.init_seeds):
        start = kmeans_plusplus_start(grid, 3, np.random.RandomState(seed))
        alone = run_em(grid, 3, init=start)
        assert alone.lower_bound == pytest.approx(em.init_lower_bounds[restart], abs=1e-10)
    first = run_em(grid, 3, n_init=1, seed=0)
    assert first.lower_bound == em.init_lower_bounds[0]


def test_same_seed_same_numbers_and_another_seed_another_start(grid):
    one, again = run_em(grid, 3, seed=7), run_em(grid, 3, seed=7)
    for name in ("weights", "locs", "covariances", "responsibilities", "elbo"):
        np.testing.assert_array_equal(getattr(one, name), getattr(again, name))
    others = [run_em(grid, 3, seed=seed).lower_bound for seed in range(5)]
    assert len({round(bound, 6) for bound in others}) > 1


def test_recovers_a_known_truth_within_five_standard_errors():
    num_points = 5000
    locs = np.array([[0.0, 0.0], [6.0, 0.0], [0.0, 6.0]])
    x, _ = simulate(num_points, seed=1, locs=locs)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no floor, no convergence warning on clean data
        em = run_em(x, 3, covariance="full")
    order = matched(locs, em.locs)
    counts = TRUE_WEIGHTS * num_points
    variances = TRUE_SDS**2
    weight_se = np.sqrt(TRUE_WEIGHTS * (1 - TRUE_WEIGHTS) / num_points)
    loc_se = TRUE_SDS / np.sqrt(counts[:, None])
    variance_se = variances * np.sqrt(2 / counts[:, None])  # Gaussian: var(s^2) = 2 sigma^4 / n
    correlation_se = 1 / np.sqrt(counts)  # true correlations are 0
    fitted = em.covariances[order]
    fitted_variances = np.diagonal(fitted, axis1=1, axis2=2)
    fitted_correlations = fitted[:, 0, 1] / np.sqrt(fitted_variances.prod(1))
    assert (np.abs(em.weights[order] - TRUE_WEIGHTS) < 5 * weight_se).all()
    assert (np.abs(em.locs[order] - locs) < 5 * loc_se).all()
    assert (np.abs(fitted_variances - variances) < 5 * variance_se).all()
    assert (np.abs(fitted_correlations) < 5 * correlation_se).all()


def test_duplicated_points_get_the_floor_with_one_warning():
    x, _ = simulate(200, seed=2)
    x = np.concatenate([x, np.tile([[10.0, -10.0]], (50, 1))])
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        em = run_em(x, 4, n_init=3, seed=0)
    floors = [w for w in caught if issubclass(w.category, CovarianceFloorWarning)]
    assert len(floors) == 1
    stuck = int(np.argmin(np.linalg.norm(em.locs - [10.0, -10.0], axis=1)))
    message = str(floors[0].message)
    assert f"component(s) {stuck} " in message and "reg_covar=1e-06" in message
    np.testing.assert_allclose(em.covariances[stuck], 1e-6 * np.eye(2), rtol=1e-6)
    for name in ("weights", "locs", "covariances", "responsibilities", "elbo"):
        assert np.isfinite(getattr(em, name)).all()
    assert em.weights[stuck] == pytest.approx(50 / 250)


def test_result_shapes_and_responsibilities_at_the_returned_parameters():
    x, _ = simulate(400, seed=3)
    em = run_em(x, 3, covariance="diag")
    assert em.weights.shape == (3,) and em.locs.shape == (3, 2)
    assert em.covariances.shape == (3, 2, 2) and em.responsibilities.shape == (400, 3)
    assert em.log_likelihood.shape == em.elbo.shape == (em.n_iter,)
    assert all(a.dtype == np.float64 for a in (em.weights, em.locs, em.covariances))
    variances = np.diagonal(em.covariances, axis1=1, axis2=2)
    expected = responsibilities(x, em.weights, em.locs, variances).numpy()
    np.testing.assert_allclose(em.responsibilities, expected, rtol=1e-12, atol=1e-300)
    assert em.elapsed_s > 0 and em.settings["covariance"] == "diag"


def test_a_1d_array_is_one_feature_and_a_tensor_is_read_like_an_array():
    x, _ = simulate(300, seed=4)
    one_feature = run_em(x[:, 0], 2)
    column = run_em(x[:, :1], 2)
    np.testing.assert_array_equal(one_feature.locs, column.locs)
    assert one_feature.covariances.shape == (2, 1, 1)
    from_tensor = run_em(torch.as_tensor(x, dtype=torch.float64), 2)
    np.testing.assert_array_equal(from_tensor.locs, run_em(x, 2).locs)


def test_hitting_max_iter_warns_and_is_not_converged(grid):
    with pytest.warns(EMConvergenceWarning, match="did not converge in max_iter=3"):
        em = run_em(grid, 3, max_iter=3)
    assert em.n_iter == 3 and not em.converged


# MAP-EM -------------------------------------------------------------------------------

PRIOR = {
    "concentration": 2.0,
    "loc_mean": [4.0, 2.0],
    "loc_scale": 3.0,
    "variance_shape": 2.0,
    "variance_rate": 2.0,
}


def mixture_model(x, prior, num_components, spherical):
    """The Bayesian mixture MAP-EM maximises: priors on (w, mu, sigma^2), z enumerated."""
    num_points, num_features = x.shape
    as_tensor = torch.as_tensor
    weights = pyro.sample(
        "weights", dist.Dirichlet(as_tensor(prior["concentration"]).expand(num_components))
    )
    loc_prior = dist.Normal(
        as_tensor(prior["loc_mean"]).expand(num_features),
        as_tensor(prior["loc_scale"]).expand(num_features),
    ).to_event(1)
    variance_prior = dist.InverseGamma(
        as_tensor(prior["variance_shape"]), as_tensor(prior["variance_rate"])
    )
    if not spherical:
        variance_prior = variance_prior.expand([num_features]).to_event(1)
    with pyro.plate("component", num_components):
        locs = pyro.sample("locs", loc_prior)
        variances = pyro.sample("variances", variance_prior)
    scales = variances.sqrt().unsqueeze(-1).expand(-1, num_features) if spherical else None
    scales = variances.sqrt() if scales is None else scales
    with pyro.plate("data", num_points):
        z = pyro.sample("z", dist.Categorical(weights), infer={"enumerate": "parallel"})
        pyro.sample("x", dist.Normal(locs[z], scales[z]).to_event(1), obs=x)


def pyro_log_joint(x, weights, locs, variances, prior, spherical) -> float:
    """log p(x, theta) with z summed out, from the model's own log densities."""
    x = torch.as_tensor(x)
    theta = {
        "weights": torch.as_tensor(weights),
        "locs": torch.as_tensor(locs),
        "variances": torch.as_tensor(variances),
    }
    per_component = []
    for k in range(len(weights)):
        z = torch.full((x.shape[0],), k, dtype=torch.long)
        conditioned = poutine.condition(mixture_model, data={**theta, "z": z})
        trace = poutine.trace(conditioned).get_trace(x, prior, len(weights), spherical)
        trace.compute_log_prob()
        global_terms = sum(trace.nodes[name]["log_prob_sum"] for name in theta)
        per_component.append(trace.nodes["z"]["log_prob"] + trace.nodes["x"]["log_prob"])
    return float(global_terms + torch.logsumexp(torch.stack(per_component), dim=0).sum())


def compact_variances(em):
    variances = np.diagonal(em.covariances, axis1=1, axis2=2).copy()
    return variances[:, 0] if em.settings["covariance"] == "spherical" else variances


@pytest.mark.parametrize("covariance", ["diag", "spherical"])
def test_map_objective_is_the_pyro_models_log_joint_density_per_point(grid, covariance):
    em = run_em(grid, 3, covariance=covariance, prior=PRIOR, seed=1)
    spherical = covariance == "spherical"
    expected = pyro_log_joint(
        grid, em.weights, em.locs, compact_variances(em), PRIOR, spherical
    ) / len(grid)
    assert em.lower_bound == pytest.approx(expected, abs=1e-8)
    # ... and the per-iteration bound differs from the mean log-likelihood by the prior.
    assert (em.elbo != em.log_likelihood).all()


def test_a_very_weak_prior_gives_nearly_the_maximum_likelihood_fit():
    x, _ = simulate(3000, seed=5, locs=np.array([[0.0, 0.0], [6.0, 0.0], [0.0, 6.0]]))
    weak = {
        "concentration": 1.0,
        "loc_mean": 0.0,
        "loc_scale": 1e6,
        "variance_shape": 1e-6,
        "variance_rate": 1e-6,
    }
    start = kmeans_plusplus_start(x, 3, np.random.RandomState(0), "diag")
    ml = run_em(x, 3, covariance="diag", init=start, tol=1e-10)
    em = run_em(x, 3, covariance="diag", init=start, prior=weak, tol=1e-10)
    counts = em.weights * len(x)
    # The responsibilities move a little with the variances (below), so the weights and
    # means by ~1e-5 of their scale (sd ~ 1).
    np.testing.assert_allclose(em.weights, ml.weights, atol=1e-5)
    np.testing.assert_allclose(em.locs, ml.locs, atol=1e-4)
    # The inverse-gamma posterior's mode: sigma^2 = S / (N_k + 2) against S / N_k, a
    # difference of 1e-3 to 3e-3 here, which the tolerance resolves.
    expected = np.diagonal(ml.covariances, axis1=1, axis2=2) * (counts / (counts + 2))[:, None]
    np.testing.assert_allclose(np.diagonal(em.covariances, axis1=1, axis2=2), expected, rtol=3e-4)


def test_map_em_ends_at_a_local_maximum_of_the_log_joint_density():
    x, _ = simulate(200, seed=6, locs=np.array([[0.0, 0.0], [6.0, 0.0], [0.0, 6.0]]))
    prior = {**PRIOR, "concentration": [2.0, 3.0, 5.0], "loc_scale": 1.0}
    start = kmeans_plusplus_start(x, 3, np.random.RandomState(0), "diag")
    em = run_em(x, 3, covariance="diag", init=start, prior=prior, tol=1e-13, max_iter=5000)
    ml = run_em(x, 3, covariance="diag", init=start, tol=1e-13, max_iter=5000)
    theta = [em.weights, em.locs, compact_variances(em)]

    def objective(weights, locs, variances):
        return pyro_log_joint(x, weights, locs, variances, prior, spherical=False)

    best = objective(*theta)
    assert best > objective(ml.weights, ml.locs, compact_variances(ml)) + 1e-3
    step = 1e-3
    for j in range(3):  # weights: move mass between two components, staying on the simplex
        for k in range(3):
            if j != k:
                weights = theta[0].copy()
                weights[j] += step * weights[j]
                weights[k] -= step * theta[0][j]
                assert objective(weights, *theta[1:]) < best
    for index in np.ndindex(theta[1].shape):
        for sign in (-1, 1):
            locs, variances = theta[1].copy(), theta[2].copy()
            locs[index] += sign * step * np.sqrt(theta[2][index])
            variances[index] *= 1 + sign * step
            assert objective(theta[0], locs, theta[2]) < best
            assert objective(theta[0], theta[1], variances) < best


def test_datatree_holds_the_estimate_responsibilities_and_history(tmp_path):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(300, 2)) + np.repeat([[0.0, 0.0], [5.0, 5.0]], 150, axis=0)
    em = run_em(x, 2, covariance="diag")
    tree = em.to_datatree(coords={"component": ["a", "b"]})
    post = tree.posterior
    np.testing.assert_array_equal(post["weights"].values[0, 0], em.weights)
    np.testing.assert_array_equal(post["locs"].values[0, 0], em.locs)
    np.testing.assert_array_equal(post["covariances"].values[0, 0], em.covariances)
    np.testing.assert_array_equal(
        post["variances"].values[0, 0], np.diagonal(em.covariances, axis1=1, axis2=2)
    )
    assert list(post["component"].values) == ["a", "b"]
    np.testing.assert_array_equal(tree["assignments"]["z"].values, em.responsibilities)
    np.testing.assert_array_equal(tree["em"]["elbo"].values, em.elbo)
    assert post.attrs["n_iter"] == em.n_iter and post.attrs["method"] == "em"
    path = tmp_path / "em.nc"
    tree.to_netcdf(path, engine="h5netcdf")
    again = xr.open_datatree(path, engine="h5netcdf")
    np.testing.assert_array_equal(again["em"]["log_likelihood"].values, em.log_likelihood)
