"""ArviZ 1.x DataTree layout of NUTS and SVI results: groups, dims, coords, values."""

import numpy as np
import pyro
import pyro.distributions as dist
import pytest
import torch
import xarray as xr

from guides import eight_schools as es_guides
from inference import NUTSResult, fit_svi, run_nuts
from models import eight_schools as es

GROUPS = {"posterior", "sample_stats", "log_likelihood", "observed_data"}


@pytest.fixture(scope="module")
def schools():
    return es.load_data()


@pytest.fixture(scope="module")
def nuts_tree(schools):
    data = schools["y"], schools["sigma"]
    mc = run_nuts(es.noncentered, *data, num_samples=20, warmup_steps=20, num_chains=2)
    return mc.to_datatree()


@pytest.fixture(scope="module")
def svi_tree(schools):
    fit = fit_svi(
        es.noncentered, es_guides.noncentered_guide, schools["y"], schools["sigma"], num_steps=50
    )
    return fit.to_datatree(num_samples=30, seed=1)


def test_nuts_tree_has_the_four_arviz_groups(nuts_tree):
    assert set(nuts_tree.children) == GROUPS


def test_svi_tree_has_no_sample_stats_and_one_chain(svi_tree):
    assert set(svi_tree.children) == GROUPS - {"sample_stats"} | {"losses"}
    assert svi_tree["losses"]["loss"].dims == ("step",)
    posterior = svi_tree.posterior
    assert posterior.sizes["chain"] == 1
    assert posterior.sizes["draw"] == 30
    assert svi_tree.log_likelihood.sizes["draw"] == 30


@pytest.mark.parametrize("which", ["nuts", "svi"])
def test_eight_schools_dims_and_school_names(which, nuts_tree, svi_tree):
    tree = nuts_tree if which == "nuts" else svi_tree
    chains = 2 if which == "nuts" else 1
    draws = 20 if which == "nuts" else 30
    post = tree.posterior
    assert set(post.data_vars) == {"mu", "tau", "eta", "theta"}
    assert post["mu"].dims == post["tau"].dims == ("chain", "draw")
    assert post["eta"].dims == post["theta"].dims == ("chain", "draw", "school")
    assert dict(post.sizes) == {"chain": chains, "draw": draws, "school": 8}
    assert list(post["school"].values) == list(es.SCHOOLS)
    assert tree.log_likelihood["y"].dims == ("chain", "draw", "school")
    assert list(tree.log_likelihood["school"].values) == list(es.SCHOOLS)
    assert tree.observed_data["y"].dims == ("school",)


def test_deterministic_theta_is_mu_plus_tau_eta(nuts_tree):
    post = nuts_tree.posterior
    np.testing.assert_allclose(
        post["theta"].values, (post["mu"] + post["tau"] * post["eta"]).values, rtol=1e-12
    )


def test_log_likelihood_is_pointwise_log_density_of_each_school(nuts_tree, schools):
    theta = torch.as_tensor(nuts_tree.posterior["theta"].values)
    expected = dist.Normal(theta, schools["sigma"]).log_prob(schools["y"]).numpy()
    np.testing.assert_allclose(nuts_tree.log_likelihood["y"].values, expected, rtol=1e-12)
    np.testing.assert_array_equal(nuts_tree.observed_data["y"].values, schools["y"].numpy())


def test_sample_stats_share_chain_and_draw_with_the_posterior(nuts_tree):
    stats = nuts_tree.sample_stats
    assert dict(stats.sizes) == {"chain": 2, "draw": 20}
    np.testing.assert_array_equal(stats["chain"].values, nuts_tree.posterior["chain"].values)
    np.testing.assert_array_equal(stats["draw"].values, nuts_tree.posterior["draw"].values)


def regression(X, y):
    """Coefficients outside any plate (a vector site), a matrix site, and a data plate."""
    beta = pyro.sample("beta", dist.Normal(torch.zeros(X.shape[1]), 10.0).to_event(1))
    pyro.sample("W", dist.Normal(torch.zeros(2, 3), 1.0).to_event(2))
    with pyro.plate("obs", len(y)):
        pyro.sample("y", dist.Normal(X @ beta, 1.0), obs=y)


@pytest.fixture(scope="module")
def regression_data():
    g = torch.Generator().manual_seed(0)
    X = torch.randn(12, 3, generator=g, dtype=torch.float64)
    return X, X @ torch.tensor([1.0, -2.0, 0.5], dtype=torch.float64)


@pytest.mark.parametrize("which", ["nuts", "svi"])
def test_sites_outside_plates_get_site_dim_names(which, regression_data):
    if which == "nuts":
        tree = run_nuts(
            regression, *regression_data, num_samples=10, warmup_steps=10, num_chains=1
        ).to_datatree()
    else:
        tree = fit_svi(regression, "normal", *regression_data, num_steps=20).to_datatree(10)
    post = tree.posterior
    assert post["beta"].dims == ("chain", "draw", "beta_dim_0")
    assert post["W"].dims == ("chain", "draw", "W_dim_0", "W_dim_1")
    assert post.sizes["beta_dim_0"] == 3
    assert (post.sizes["W_dim_0"], post.sizes["W_dim_1"]) == (2, 3)
    np.testing.assert_array_equal(post["beta_dim_0"].values, np.arange(3))
    assert tree.log_likelihood["y"].dims == ("chain", "draw", "obs")
    assert tree.observed_data["y"].dims == ("obs",)


def test_netcdf_round_trip_keeps_every_group(nuts_tree, tmp_path):
    path = tmp_path / "nuts.nc"
    nuts_tree.to_netcdf(path, engine="h5netcdf")
    with xr.open_datatree(path, engine="h5netcdf") as back:
        back = back.load()
    assert set(back.children) == GROUPS
    for group in GROUPS:
        xr.testing.assert_identical(back[group].to_dataset(), nuts_tree[group].to_dataset())
    assert back.sample_stats["diverging"].dtype == bool
    assert list(back.posterior["school"].values) == list(es.SCHOOLS)


@pytest.fixture(scope="module")
def regression_results(regression_data):
    nuts = run_nuts(regression, *regression_data, num_samples=10, warmup_steps=10, num_chains=1)
    svi = fit_svi(regression, "normal", *regression_data, num_steps=20)
    return {"nuts": nuts, "svi": svi}


def tree_of(result, **kwargs):
    if isinstance(result, NUTSResult):
        return result.to_datatree(**kwargs)
    return result.to_datatree(num_samples=10, **kwargs)


@pytest.mark.parametrize("which", ["nuts", "svi"])
def test_dims_and_coords_name_and_label_a_sites_dims(which, regression_results):
    dims = {"beta": ["coef"], "W": ["row", "col"], "y": ["case"]}
    coords = {"coef": ["a", "b", "c"], "row": ["r0", "r1"]}
    tree = tree_of(regression_results[which], dims=dims, coords=coords)
    post = tree.posterior
    assert post["beta"].dims == ("chain", "draw", "coef")
    assert post["W"].dims == ("chain", "draw", "row", "col")
    assert list(post["coef"].values) == ["a", "b", "c"]
    assert list(post["row"].values) == ["r0", "r1"]
    np.testing.assert_array_equal(post["col"].values, np.arange(3))
    assert tree.log_likelihood["y"].dims == ("chain", "draw", "case")
    assert tree.observed_data["y"].dims == ("case",)


@pytest.mark.parametrize("which", ["nuts", "svi"])
def test_dims_of_the_wrong_length_are_refused_naming_the_site(which, regression_results):
    with pytest.raises(ValueError, match="'W'"):
        tree_of(regression_results[which], dims={"W": ["row"]})


def test_coords_add_to_and_override_the_models_own(schools):
    fit = fit_svi(
        es.noncentered, es_guides.noncentered_guide, schools["y"], schools["sigma"], num_steps=5
    )
    labels = [f"s{i}" for i in range(8)]
    tree = fit.to_datatree(num_samples=5, coords={"school": labels})
    assert list(tree.posterior["school"].values) == labels
    assert list(fit.to_datatree(num_samples=5).posterior["school"].values) == list(es.SCHOOLS)
