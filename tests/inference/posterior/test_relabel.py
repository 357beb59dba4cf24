"""relabel: label switching undone on synthetic mixture draws around a known truth.

Draws are generated around three well-separated components, then their labels are
scrambled by recorded permutations; the tests check what relabel recovers against
those permutations and the truth.
"""

import itertools

import numpy as np
import pytest
import xarray as xr
from arviz_stats import rhat

from inference.posterior.relabel import relabel, relabel_permutations

WEIGHTS = np.array([0.2, 0.3, 0.5])
LOCS = np.array([[-5.0, 0.0], [0.0, 5.0], [5.0, -5.0]])
SCALES = np.array([[0.5, 1.0], [1.0, 1.5], [2.0, 0.7]])
K = len(WEIGHTS)
NUM_OBS = 7


def truth_draws(rng, num_chains, num_draws, weights=WEIGHTS, weight_concentration=300.0):
    """Draws (chain, draw, component[, feature]) scattered around the truth."""
    shape = (num_chains, num_draws)
    return {
        "weights": rng.dirichlet(weight_concentration * weights, size=shape),
        "locs": LOCS + 0.1 * rng.standard_normal(shape + LOCS.shape),
        "scales": SCALES * np.exp(0.05 * rng.standard_normal(shape + SCALES.shape)),
    }


def scramble(values, perms):
    """Each draw's components reordered: new label j holds old component perms[c, d, j]."""
    out = {}
    for name, value in values.items():
        index = perms.reshape(perms.shape + (1,) * (value.ndim - 3))
        out[name] = np.take_along_axis(value, index, axis=2)
    return out


def random_perms(rng, num_chains, num_draws):
    return rng.permuted(np.broadcast_to(np.arange(K), (num_chains, num_draws, K)), axis=-1)


def make_tree(rng, values):
    num_chains, num_draws = values["weights"].shape[:2]
    coords = {
        "chain": np.arange(num_chains),
        "draw": np.arange(num_draws),
        "component": np.arange(K),
        "feature": ["x", "y"],
    }
    posterior = xr.Dataset(
        {
            "weights": (("chain", "draw", "component"), values["weights"]),
            "locs": (("chain", "draw", "component", "feature"), values["locs"]),
            "scales": (("chain", "draw", "component", "feature"), values["scales"]),
            "sigma_noise": (("chain", "draw"), rng.gamma(2.0, size=(num_chains, num_draws))),
        },
        coords=coords,
        attrs={"inference_library": "pyro (via vilab)"},
    )
    sample_stats = xr.Dataset(
        {"diverging": (("chain", "draw"), rng.random((num_chains, num_draws)) < 0.01)},
        coords={"chain": coords["chain"], "draw": coords["draw"]},
    )
    log_likelihood = xr.Dataset(
        {"x": (("chain", "draw", "obs"), rng.normal(size=(num_chains, num_draws, NUM_OBS)))},
        coords={"chain": coords["chain"], "draw": coords["draw"]},
    )
    observed_data = xr.Dataset({"x": (("obs",), rng.normal(size=NUM_OBS))})
    return xr.DataTree.from_dict(
        {
            "posterior": posterior,
            "sample_stats": sample_stats,
            "log_likelihood": log_likelihood,
            "observed_data": observed_data,
        }
    )


def composed(scrambles, found):
    """Per draw, the original component that ends up with label j after relabelling."""
    return np.take_along_axis(scrambles, found, axis=-1)


def test_scrambled_draws_are_put_back_in_one_labelling():
    rng = np.random.default_rng(0)
    values = truth_draws(rng, 4, 500)
    scrambles = random_perms(rng, 4, 500)
    tree = make_tree(rng, scramble(values, scrambles))
    before = tree.copy(deep=True)

    out = relabel(tree, dim="component")
    found = relabel_permutations(tree, dim="component")

    # scramble then found is one global relabelling, the same in every draw
    global_perm = composed(scrambles, found)
    assert (global_perm == global_perm[0, 0]).all()
    g = global_perm[0, 0]
    # every variable took the same per-draw permutation: exactly the truth draws, relabelled
    for name in ("weights", "locs", "scales"):
        np.testing.assert_array_equal(out["posterior"][name].values, values[name][:, :, g])
    # per-component posterior means are the truth's (up to the global relabelling)
    np.testing.assert_allclose(
        out["posterior"]["weights"].mean(["chain", "draw"]), WEIGHTS[g], atol=2e-3
    )
    np.testing.assert_allclose(out["posterior"]["locs"].mean(["chain", "draw"]), LOCS[g], atol=0.02)
    np.testing.assert_allclose(
        out["posterior"]["scales"].mean(["chain", "draw"]), SCALES[g], rtol=0.01
    )
    # the attrs describe what happened
    attrs = out["posterior"].attrs
    assert attrs["relabelled_dim"] == "component"
    assert attrs["relabel_fraction_permuted"] == pytest.approx(
        np.mean(np.any(found != np.arange(K), axis=-1))
    )
    assert 0.7 < attrs["relabel_fraction_permuted"] < 0.9  # 5/6 of random perms move
    assert 2 <= attrs["relabel_iterations"] < 100
    assert attrs["relabel_converged"] == 1
    assert attrs["inference_library"] == "pyro (via vilab)"
    # variables without the dim and the other groups are untouched; the input too
    xr.testing.assert_identical(out["posterior"]["sigma_noise"], tree["posterior"]["sigma_noise"])
    for group in ("sample_stats", "log_likelihood", "observed_data"):
        xr.testing.assert_identical(out[group], tree[group])
    xr.testing.assert_identical(tree, before)
    assert "relabelled_dim" not in tree["posterior"].attrs
    # relabelling a relabelled tree changes nothing
    again = relabel(out, dim="component")
    assert again["posterior"].attrs["relabel_fraction_permuted"] == 0.0
    xr.testing.assert_identical(again["posterior"]["locs"], out["posterior"]["locs"])


def test_per_chain_labellings_make_rhat_large_and_relabel_brings_it_to_one():
    rng = np.random.default_rng(1)
    num_chains, num_draws = 4, 1000
    values = truth_draws(rng, num_chains, num_draws)
    # every component has another label in at least one chain
    chain_perms = np.array([[0, 1, 2], [1, 2, 0], [2, 0, 1], [0, 2, 1]])
    scrambles = np.broadcast_to(chain_perms[:, None, :], (num_chains, num_draws, K)).copy()
    tree = make_tree(rng, scramble(values, scrambles))

    out = relabel(tree)

    rhat_before = rhat(tree, var_names=["locs"])["locs"].values
    rhat_after = rhat(out, var_names=["locs"])["locs"].values
    assert (rhat_before > 1.5).all()
    assert (rhat_after < 1.01).all()
    # chain 0 is the default reference, so it keeps its labels; the others are undone
    found = relabel_permutations(tree)
    np.testing.assert_array_equal(
        composed(scrambles, found), np.broadcast_to(np.arange(K), found.shape)
    )
    assert out["posterior"].attrs["relabel_fraction_permuted"] == pytest.approx(0.75)


def test_draws_without_switching_come_back_identical():
    rng = np.random.default_rng(2)
    tree = make_tree(rng, truth_draws(rng, 3, 400))

    out = relabel(tree)

    xr.testing.assert_identical(
        out["posterior"].to_dataset().drop_attrs(), tree["posterior"].to_dataset().drop_attrs()
    )
    assert out["posterior"].attrs["relabel_fraction_permuted"] == 0.0
    assert out["posterior"].attrs["relabel_iterations"] == 2
    np.testing.assert_array_equal(
        relabel_permutations(tree), np.broadcast_to(np.arange(K), (3, 400, K))
    )


def test_component_dim_anywhere_in_a_variable():
    rng = np.random.default_rng(3)
    values = truth_draws(rng, 2, 300)
    tree = make_tree(rng, scramble(values, random_perms(rng, 2, 300)))
    posterior = tree["posterior"].to_dataset()
    moved = posterior.assign(
        locs=posterior["locs"].transpose("chain", "draw", "feature", "component"),
        scales=posterior["scales"].transpose("component", "feature", "draw", "chain"),
    )
    moved_tree = tree.copy()
    moved_tree["posterior"].dataset = moved

    out = relabel(tree)["posterior"]
    out_moved = relabel(moved_tree)["posterior"]

    assert out_moved["locs"].dims == ("chain", "draw", "feature", "component")
    assert out_moved["scales"].dims == ("component", "feature", "draw", "chain")
    for name in ("weights", "locs", "scales"):
        xr.testing.assert_identical(out_moved[name].transpose(*out[name].dims), out[name])
    assert out_moved.attrs["relabel_fraction_permuted"] > 0.5


def test_one_permutation_per_draw_for_all_variables_even_when_weights_disagree():
    rng = np.random.default_rng(4)
    num_chains, num_draws = 2, 500
    # near-equal, noisy weights: on their own they would order components at random
    values = truth_draws(
        rng, num_chains, num_draws, weights=np.array([0.32, 0.33, 0.35]), weight_concentration=30.0
    )
    scrambles = random_perms(rng, num_chains, num_draws)
    scrambled = scramble(values, scrambles)
    tree = make_tree(rng, scrambled)
    weights_only = tree.copy()
    weights_only["posterior"].dataset = tree["posterior"].to_dataset()[["weights"]]

    found = relabel_permutations(tree)
    found_by_weights = relabel_permutations(weights_only)
    out = relabel(tree)["posterior"]

    # the weights alone would relabel many draws differently ...
    assert np.mean(np.any(found_by_weights != found, axis=-1)) > 0.3
    # ... but the locations (and scales) decide, and all three move together
    global_perm = composed(scrambles, found)
    assert (global_perm == global_perm[0, 0]).all()
    for name in ("weights", "locs", "scales"):
        expected = np.take_along_axis(
            scrambled[name], found.reshape(found.shape + (1,) * (scrambled[name].ndim - 3)), axis=2
        )
        np.testing.assert_array_equal(out[name].values, expected)


def test_reference_sets_the_labelling():
    rng = np.random.default_rng(5)
    values = truth_draws(rng, 2, 300)
    tree = make_tree(rng, scramble(values, random_perms(rng, 2, 300)))
    order = np.array([2, 0, 1])

    by_dict = relabel(tree, reference={"locs": LOCS[order]})
    by_dataarray = relabel(
        tree,
        reference={"locs": xr.DataArray(LOCS[order].T, dims=("feature", "component"))},
    )
    reference_tree = make_tree(rng, {k: v[:, :, order] for k, v in truth_draws(rng, 1, 50).items()})
    by_tree = relabel(tree, reference=reference_tree)

    for out in (by_dict, by_dataarray, by_tree):
        np.testing.assert_allclose(
            out["posterior"]["locs"].mean(["chain", "draw"]), LOCS[order], atol=0.02
        )
        np.testing.assert_allclose(
            out["posterior"]["weights"].mean(["chain", "draw"]), WEIGHTS[order], atol=2e-3
        )


def test_hungarian_assignment_matches_brute_force_over_all_permutations():
    # the fixed point: each draw's permutation minimises its squared distance, over all
    # K! orders, to the mean of the relabelled draws (standardised as relabel does)
    rng = np.random.default_rng(6)
    values = truth_draws(
        rng, 2, 200, weights=np.array([0.32, 0.33, 0.35]), weight_concentration=5.0
    )
    values["locs"] = LOCS + 3.0 * rng.standard_normal((2, 200) + LOCS.shape)  # overlapping
    tree = make_tree(rng, scramble(values, random_perms(rng, 2, 200)))

    found = relabel_permutations(tree).reshape(-1, K)

    blocks = []
    for name in ("weights", "locs", "scales"):
        v = tree["posterior"][name].values.reshape(-1, K, 1 if name == "weights" else 2)
        blocks.append((v - v.mean((0, 1))) / v.std((0, 1)))
    features = np.concatenate(blocks, axis=-1)
    mu = np.take_along_axis(features, found[..., None], axis=1).mean(0)
    all_perms = np.array(list(itertools.permutations(range(K))))
    totals = ((features[:, all_perms] - mu) ** 2).sum((-1, -2))  # (draws, K!)
    best = totals.min(axis=1)
    chosen = ((np.take_along_axis(features, found[..., None], axis=1) - mu) ** 2).sum((-1, -2))
    np.testing.assert_allclose(chosen, best, rtol=1e-12, atol=1e-12)
    assert (found != np.arange(K)).any(axis=-1).mean() > 0.3  # the check was not trivial


def test_bad_input_is_refused_with_a_clear_message():
    rng = np.random.default_rng(7)
    tree = make_tree(rng, truth_draws(rng, 2, 20))

    no_posterior = xr.DataTree.from_dict({"sample_stats": tree["sample_stats"].to_dataset()})
    with pytest.raises(ValueError, match="no 'posterior' group"):
        relabel(no_posterior)
    with pytest.raises(
        ValueError, match=r"no posterior variable has dim 'cluster'.*'component', 'feature'"
    ):
        relabel(tree, dim="cluster")
    with pytest.raises(ValueError, match="sample dim"):
        relabel(tree, dim="chain")
    with pytest.raises(ValueError, match=r"reference keys \['mu'\] are not posterior variables"):
        relabel(tree, reference={"mu": LOCS})
    with pytest.raises(
        ValueError, match=r"reference for 'locs' has shape \(2, 3\), expected \(3, 2\)"
    ):
        relabel(tree, reference={"locs": LOCS.T})
    with pytest.raises(ValueError, match="reference for 'locs' has dims"):
        relabel(tree, reference={"locs": xr.DataArray(LOCS, dims=("component", "dim_x"))})
    with pytest.raises(ValueError, match="reference is empty"):
        relabel(tree, reference={})
    with pytest.raises(ValueError, match="holds none of the variables"):
        relabel(tree, reference=tree["log_likelihood"].to_dataset())
    with pytest.raises(TypeError, match="reference must be"):
        relabel(tree, reference=LOCS)
    with pytest.raises(TypeError, match="expects an xarray.DataTree"):
        relabel(tree["posterior"].to_dataset())
    with pytest.raises(ValueError, match="max_iter must be at least 1"):
        relabel(tree, max_iter=0)
