"""compare() and method_table() arithmetic, on small DataTrees whose numbers are known."""

import math

import numpy as np
import pandas as pd
import pytest
import xarray as xr

from inference import compare, fit_svi, method_table, run_nuts
from models import gaussian_latent as gl

BASE_COLUMNS = {"method", "parameter", "mean", "sd", "q05", "q95", "mcse_mean", "ess_bulk", "r_hat"}
REF_COLUMNS = {"ref_mean", "ref_sd", "z_mean", "sd_ratio"}


def fake_tree(seed=0, chains=2, draws=50, mcmc=True):
    """Posterior with a scalar ``a`` and a vector ``b`` over named schools."""
    rng = np.random.default_rng(seed)
    posterior = xr.Dataset(
        {
            "a": (("chain", "draw"), 1.0 + 2.0 * rng.standard_normal((chains, draws))),
            "b": (("chain", "draw", "school"), rng.standard_normal((chains, draws, 2))),
        },
        coords={"chain": np.arange(chains), "draw": np.arange(draws), "school": ["x", "y"]},
    )
    groups = {"posterior": posterior}
    if mcmc:
        groups["sample_stats"] = xr.Dataset(
            {"diverging": (("chain", "draw"), np.zeros((chains, draws), bool))},
            coords={"chain": np.arange(chains), "draw": np.arange(draws)},
        )
    return xr.DataTree.from_dict(groups)


def test_one_row_per_method_and_scalar_parameter_with_labels():
    table = compare({"m1": fake_tree(0), "m2": fake_tree(1)})
    assert BASE_COLUMNS <= set(table.columns)
    assert not REF_COLUMNS & set(table.columns)
    assert list(table["method"]) == ["m1"] * 3 + ["m2"] * 3
    assert list(table["parameter"]) == ["a", "b[x]", "b[y]"] * 2


def test_summaries_are_those_of_the_pooled_draws():
    tree = fake_tree(0)
    row = compare({"m": tree}).set_index("parameter").loc["b[y]"]
    values = tree.posterior["b"].sel(school="y").values.reshape(-1)
    assert row["mean"] == pytest.approx(values.mean(), rel=1e-12)
    assert row["sd"] == pytest.approx(values.std(ddof=1), rel=1e-12)
    assert row["q05"] == pytest.approx(np.quantile(values, 0.05), rel=1e-12)
    assert row["q95"] == pytest.approx(np.quantile(values, 0.95), rel=1e-12)


def test_mcmc_rows_carry_arviz_diagnostics():
    import arviz as az

    tree = fake_tree(0)
    row = compare({"m": tree}).set_index("parameter").loc["a"]
    da = tree.posterior["a"]
    assert row["ess_bulk"] == pytest.approx(float(az.ess(da, method="bulk")), rel=1e-12)
    assert row["r_hat"] == pytest.approx(float(az.rhat(da)), rel=1e-12)
    assert row["mcse_mean"] == pytest.approx(float(az.mcse(da, method="mean")), rel=1e-12)


def test_rows_without_sample_stats_treat_draws_as_independent():
    tree = fake_tree(0, chains=1, draws=400, mcmc=False)
    row = compare({"svi": tree}).set_index("parameter").loc["a"]
    assert row["ess_bulk"] == 400
    assert math.isnan(row["r_hat"])
    assert row["mcse_mean"] == pytest.approx(row["sd"] / math.sqrt(400), rel=1e-12)


REFERENCE = {"a": (0.5, 4.0), "b[y]": (-1.0, 0.5)}


@pytest.mark.parametrize("form", ["dict", "dataframe"])
def test_reference_gaps_are_z_mean_and_sd_ratio(form):
    reference = REFERENCE
    if form == "dataframe":
        reference = pd.DataFrame(
            {"mean": [0.5, -1.0], "sd": [4.0, 0.5], "other": [0, 0]}, index=["a", "b[y]"]
        )
    table = compare({"m": fake_tree(0)}, reference=reference).set_index("parameter")
    assert REF_COLUMNS <= set(table.columns)
    for label, (ref_mean, ref_sd) in REFERENCE.items():
        row = table.loc[label]
        assert row["ref_mean"] == ref_mean and row["ref_sd"] == ref_sd
        assert row["z_mean"] == pytest.approx((row["mean"] - ref_mean) / ref_sd, rel=1e-12)
        assert row["sd_ratio"] == pytest.approx(row["sd"] / ref_sd, rel=1e-12)
    # A parameter the reference does not know gets no gap.
    assert math.isnan(table.loc["b[x]", "z_mean"])


def test_reference_given_as_a_datatree_is_summarised_from_its_draws():
    reference = fake_tree(5, draws=200)
    table = compare({"m": fake_tree(0)}, reference=reference).set_index("parameter")
    values = reference.posterior["a"].values.reshape(-1)
    assert table.loc["a", "ref_mean"] == pytest.approx(values.mean(), rel=1e-12)
    assert table.loc["a", "ref_sd"] == pytest.approx(values.std(ddof=1), rel=1e-12)


def test_reference_given_as_a_result_is_summarised_from_its_draws():
    x = gl.simulate(20, seed=0)
    ref = fit_svi(gl.model, "normal", x, num_steps=50)
    mine = fit_svi(gl.model, "mvn", x, num_steps=50)
    table = compare({"mvn": mine}, reference=ref).set_index("parameter")
    ref_draws = ref.to_datatree().posterior["z"].values.reshape(-1)
    assert table.loc["z", "ref_mean"] == pytest.approx(ref_draws.mean(), rel=1e-12)
    assert table.loc["z", "ref_sd"] == pytest.approx(ref_draws.std(ddof=1), rel=1e-12)


def test_reference_table_without_mean_and_sd_is_refused():
    with pytest.raises(ValueError, match="sd"):
        compare({"m": fake_tree(0)}, reference=pd.DataFrame({"mean": [0.0]}, index=["a"]))


def test_compare_needs_results_it_can_read():
    with pytest.raises(ValueError, match="at least one"):
        compare({})
    with pytest.raises(TypeError, match="int"):
        compare({"m": 3})


@pytest.fixture(scope="module")
def gaussian_results():
    x = gl.simulate(50, seed=0)
    results = {
        "svi-normal": fit_svi(gl.model, "normal", x, num_steps=300),
        "svi-delta": fit_svi(gl.model, "delta", x, num_steps=50),
        "nuts": run_nuts(gl.model, x, num_samples=50, warmup_steps=50, num_chains=2),
    }
    return results, gl.exact_log_evidence(x)


def test_method_table_kl_gap_is_log_evidence_minus_elbo(gaussian_results):
    results, log_evidence = gaussian_results
    table = method_table(results, log_evidence=log_evidence, case="demo", num_particles=500)
    table = table.set_index("method")
    assert list(table.index) == list(results)
    assert (table["case"] == "demo").all()
    assert (table["log_evidence"] == log_evidence).all()
    svi = table.loc["svi-normal"]
    assert svi["kl_gap"] == log_evidence - svi["elbo"]
    est = results["svi-normal"].elbo(num_particles=500)
    assert svi["elbo"] == est.value and svi["elbo_mcse"] == est.mcse
    # A point mass has no entropy: its "ELBO" is no bound, so no ELBO and no gap.
    assert math.isnan(table.loc["svi-delta", "elbo"])
    assert math.isnan(table.loc["svi-delta", "kl_gap"])
    assert math.isnan(table.loc["nuts", "elbo"])


def test_method_table_sampler_and_optimiser_columns(gaussian_results):
    results, _ = gaussian_results
    table = method_table(results).set_index("method")
    nuts = results["nuts"]
    params = compare({"nuts": nuts})
    assert table.loc["nuts", "divergences"] == nuts.num_divergences
    assert table.loc["nuts", "min_ess_bulk"] == params["ess_bulk"].min()
    assert table.loc["nuts", "max_r_hat"] == params["r_hat"].max()
    assert table.loc["nuts", "ess_bulk_per_s"] == pytest.approx(
        params["ess_bulk"].min() / nuts.elapsed_s, rel=1e-12
    )
    assert table.loc["svi-normal", "num_steps"] == results["svi-normal"].num_steps
    assert table.loc["svi-normal", "converged"] == results["svi-normal"].converged
    assert (table["elapsed_s"] > 0).all()
