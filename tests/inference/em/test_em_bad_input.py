"""run_em refuses bad input with one ValueError that names the problem.

(Named test_em_bad_input.py, not test_bad_input.py: test directories have no
``__init__.py``, and pytest cannot collect two test modules of the same basename;
tests/inference/test_bad_input.py exists.)
"""

import numpy as np
import pytest

from inference.em import run_em

K, D = 3, 2
GOOD_INIT = {
    "weights": np.full(K, 1 / K),
    "locs": np.array([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0]]),
    "covariances": np.stack([np.eye(D)] * K),
}
GOOD_PRIOR = {
    "concentration": 2.0,
    "loc_mean": [0.0, 0.0],
    "loc_scale": 1.0,
    "variance_shape": 2.0,
    "variance_rate": 1.0,
}


@pytest.fixture(scope="module")
def x():
    return np.random.default_rng(0).normal(0, 1, (100, D))


@pytest.mark.parametrize("n_components", [0, -1, 1.5, True])
def test_n_components_below_one_or_not_an_integer(x, n_components):
    with pytest.raises(ValueError, match="n_components must be an integer >= 1"):
        run_em(x, n_components)


def test_more_components_than_points(x):
    with pytest.raises(ValueError, match="n_components=6 exceeds the number of data points N=5"):
        run_em(x[:5], 6)


def test_nan_and_infinite_rows_are_counted(x):
    bad = x.copy()
    bad[[3, 7], 0] = np.nan
    bad[9, 1] = np.inf
    with pytest.raises(ValueError, match=r"x has 3 of 100 rows with NaN or infinite values"):
        run_em(bad, K)


def test_a_3d_array_says_the_expected_shape(x):
    with pytest.raises(ValueError, match=r"shape \(N, D\).*3-D array of shape \(2, 5, 20\)"):
        run_em(x.reshape(2, 5, 20), K)


@pytest.mark.parametrize("bad", [np.zeros((0, 2)), np.zeros((10, 0))])
def test_empty_data(bad):
    with pytest.raises(ValueError, match=r"N, D >= 1"):
        run_em(bad, 1)


def test_non_numeric_data():
    with pytest.raises(ValueError, match="x must be numeric"):
        run_em(np.array([["a", "b"], ["c", "d"]]), 1)


def test_unknown_covariance_type(x):
    with pytest.raises(ValueError, match=r"covariance must be one of .*'full'.*got 'tied'"):
        run_em(x, K, covariance="tied")


@pytest.mark.parametrize(
    "option, value, message",
    [
        ("n_init", 0, "n_init must be an integer >= 1"),
        ("max_iter", 0, "max_iter must be an integer >= 1"),
        ("tol", 0.0, "tol must be a positive finite number"),
        ("tol", -1e-3, "tol must be a positive finite number"),
        ("seed", -1, "seed must be between 0 and 2\\*\\*63"),
        ("reg_covar", -1e-6, "reg_covar must be a finite number >= 0"),
    ],
)
def test_options_out_of_range(x, option, value, message):
    with pytest.raises(ValueError, match=message):
        run_em(x, K, **{option: value})


def test_a_prior_needs_diagonal_covariances(x):
    with pytest.raises(ValueError, match='prior= needs covariance="diag"'):
        run_em(x, K, covariance="full", prior=GOOD_PRIOR)


@pytest.mark.parametrize(
    "change, message",
    [
        (
            {"loc_mean": [0.0, 0.0, 0.0]},
            r"prior\['loc_mean'\] .* shape \(D,\) = \(2,\), got shape \(3,\)",
        ),
        ({"loc_scale": np.ones((2, 2))}, r"prior\['loc_scale'\] .* got shape \(2, 2\)"),
        ({"concentration": [2.0, 2.0]}, r"prior\['concentration'\] .* \(K,\) = \(3,\)"),
        ({"concentration": 0.5}, r"prior\['concentration'\] must be >= 1"),
        ({"variance_rate": 0.0}, r"prior\['variance_rate'\] must be > 0"),
        ({"loc_sd": 1.0}, r"unknown keys \['loc_sd'\]"),
    ],
)
def test_bad_priors_are_named(x, change, message):
    with pytest.raises(ValueError, match=message):
        run_em(x, K, covariance="diag", prior={**GOOD_PRIOR, **change})


def test_a_prior_without_a_key_lists_it(x):
    prior = {key: value for key, value in GOOD_PRIOR.items() if key != "variance_shape"}
    with pytest.raises(ValueError, match=r"lacks keys \['variance_shape'\]"):
        run_em(x, K, covariance="diag", prior=prior)


def test_a_spherical_prior_takes_scalar_variance_hyperparameters(x):
    prior = {**GOOD_PRIOR, "variance_shape": [2.0, 2.0]}
    with pytest.raises(ValueError, match=r"prior\['variance_shape'\] must be a scalar"):
        run_em(x, K, covariance="spherical", prior=prior)


@pytest.mark.parametrize(
    "key, value, message",
    [
        ("weights", np.full(2, 0.5), r"init\['weights'\] must have shape \(K,\) = \(3,\), got"),
        (
            "locs",
            np.zeros(6),
            r"init\['locs'\] must have shape \(K, D\) = \(3, 2\), got shape \(6,\)",
        ),
        (
            "covariances",
            np.ones((3, 2)),
            r"init\['covariances'\] must have shape \(K, D, D\) = \(3, 2, 2\), got shape \(3, 2\)",
        ),
        ("weights", np.array([0.5, 0.3, 0.3]), r"init\['weights'\] must be positive and sum to 1"),
        ("locs", np.full((3, 2), np.nan), r"init\['locs'\] must be finite"),
    ],
)
def test_bad_init_dicts_name_the_key_and_the_shape(x, key, value, message):
    with pytest.raises(ValueError, match=message):
        run_em(x, K, init={**GOOD_INIT, key: value})


def test_an_init_covariance_that_is_not_positive_definite_is_named(x):
    covariances = GOOD_INIT["covariances"].copy()
    covariances[1] = [[1.0, 2.0], [2.0, 1.0]]
    with pytest.raises(ValueError, match=r"init\['covariances'\]\[1\] is not positive definite"):
        run_em(x, K, init={**GOOD_INIT, "covariances": covariances})


def test_a_diag_fit_refuses_non_diagonal_init_covariances(x):
    covariances = GOOD_INIT["covariances"].copy()
    covariances[0] = [[1.0, 0.5], [0.5, 1.0]]
    with pytest.raises(ValueError, match="must be diagonal matrices for covariance='diag'"):
        run_em(x, K, covariance="diag", init={**GOOD_INIT, "covariances": covariances})


def test_init_dict_keys(x):
    with pytest.raises(ValueError, match=r"unknown keys \['means'\] and lacks keys \['locs'\]"):
        init = {"weights": GOOD_INIT["weights"], "means": GOOD_INIT["locs"]}
        run_em(x, K, init={**init, "covariances": GOOD_INIT["covariances"]})


@pytest.mark.parametrize("init", ["kmeans", "random", 3])
def test_unknown_init(x, init):
    with pytest.raises(ValueError, match="init must be 'k-means\\+\\+' or a dict"):
        run_em(x, K, init=init)


def test_options_after_n_components_are_keyword_only(x):
    with pytest.raises(TypeError):
        run_em(x, K, "diag")
