"""The VAE figures on small synthetic trees of the ``vilab compare vae`` layout: each is
offered only when its inputs exist, and each draws what it says."""

import matplotlib.pyplot as plt
import numpy as np
import pytest
import xarray as xr
from matplotlib.patches import Ellipse, Rectangle

from inference.lab import vae_plots
from inference.posterior.netcdf import netcdf_safe

LATENT = 3
HEIGHT, WIDTH = 4, 3
PRIOR_SAMPLES = 16
ALL_FIGURES = {
    "vae_training",
    "vae_reconstructions",
    "vae_prior_samples",
    "vae_latent_2d",
    "vae_posteriors",
    "vae_gap",
}


def _posterior(rng, n_images, chains, draws, loc, scale) -> xr.Dataset:
    z = loc + scale * rng.standard_normal((chains, draws, n_images, LATENT))
    return xr.Dataset(
        {"z": (("chain", "draw", "image", "latent"), z)},
        coords={
            "chain": np.arange(chains),
            "draw": np.arange(draws),
            "image": np.arange(n_images),
            "latent": np.arange(LATENT),
        },  # fmt: skip
        attrs={"labels": [int(v) for v in _digits(n_images)]},
    )


def _digits(n_images: int) -> np.ndarray:
    return (7 - np.arange(n_images)) % 10


def _trees(n_images: int = 3, seed: int = 0) -> dict[str, xr.DataTree]:
    """Random numbers in exactly the layout the vae case writes."""
    rng = np.random.default_rng(seed)
    pixels, epochs, test_images = HEIGHT * WIDTH, 5, 40
    digits = _digits(n_images)
    x = rng.integers(0, 2, (n_images, pixels)).astype(float)
    prior_sample = rng.uniform(size=(PRIOR_SAMPLES, pixels))
    train_loss = 30 - np.log1p(np.arange(epochs)) - rng.uniform(0, 0.2, epochs)
    svi = xr.DataTree.from_dict(
        {
            "posterior": _posterior(rng, n_images, 1, 50, 0.0, 0.8),
            "training": xr.Dataset(
                {
                    "train_loss": ("epoch", train_loss),
                    "test_elbo": ("epoch", -train_loss - 0.3),
                },
                coords={"epoch": np.arange(1, epochs + 1)},
                attrs={"epochs": epochs, "z_dim": LATENT, "batch_size": 8, "hidden": "[16]"},
            ),
            "images": xr.Dataset(
                {
                    "x": (("image", "pixel"), x),
                    "reconstruction": (("image", "pixel"), rng.uniform(size=(n_images, pixels))),
                    "label": ("image", digits),
                    "prior_sample": (("sample", "pixel"), prior_sample),
                },
                attrs={"height": HEIGHT, "width": WIDTH},
            ),
            "latent_2d": xr.Dataset(
                {
                    "z": (("test_image", "axis"), rng.standard_normal((test_images, 2))),
                    "label": ("test_image", rng.integers(0, 10, test_images)),
                },
                attrs={"test_elbo": -23.5, "epochs": epochs},
            ),
        }
    )
    elbo_q = -20 + rng.standard_normal(n_images)
    approximation = rng.uniform(0.1, 0.5, n_images)
    amortization = rng.uniform(0.0, 0.4, n_images)
    gap = xr.Dataset(
        {
            "elbo_q": ("image", elbo_q),
            "elbo_q_star": ("image", elbo_q + amortization),
            "log_px": ("image", elbo_q + amortization + approximation),
            "approximation_gap": ("image", approximation),
            "amortization_gap": ("image", amortization),
            "elbo_mcse": ("image", np.full(n_images, 0.08)),
            "mean_q": ("image", rng.standard_normal(n_images)),
            "sd_q": ("image", rng.uniform(0.5, 1, n_images)),
        },
        coords={"image": np.arange(n_images)},
    )
    refined = xr.DataTree.from_dict(
        {
            "posterior": _posterior(rng, n_images, 1, 50, 0.1, 0.9),
            "amortization_gap": gap,
            "losses": xr.Dataset({"loss": ("step", rng.uniform(20, 30, 30))}),
        }
    )
    nuts = xr.DataTree.from_dict(
        {
            "posterior": _posterior(rng, n_images, 2, 40, 0.0, 1.0),
            "sample_stats": xr.Dataset(
                {"diverging": (("chain", "draw"), np.zeros((2, 40), dtype=bool))}
            ),
        }
    )
    return {"svi": svi, "svi-refined": refined, "nuts-latent": nuts}


def _without_group(tree: xr.DataTree, group: str) -> xr.DataTree:
    return xr.DataTree.from_dict(
        {node.path: node.to_dataset() for node in tree.subtree if node.name != group}
    )


def _draw(makers, name):
    fig = makers[name]()
    try:
        return fig, [ax for ax in fig.axes if ax.get_visible()]
    finally:
        plt.close(fig)


@pytest.mark.parametrize("n_images", [2, 4])
def test_every_figure_is_offered_and_draws(n_images):
    makers = vae_plots.figures(_trees(n_images))
    assert set(makers) == ALL_FIGURES
    expected_axes = {
        "vae_training": 1,
        "vae_reconstructions": 2 * n_images + 1,  # two rows and a colour bar
        "vae_prior_samples": PRIOR_SAMPLES + 1,  # 4 x 4 and a colour bar
        "vae_latent_2d": 1,
        "vae_posteriors": n_images,
        "vae_gap": 1,
    }
    for name, count in expected_axes.items():
        fig, axes = _draw(makers, name)
        assert len(axes) == count, name
        assert fig.get_layout_engine() is not None, name


def test_posteriors_show_at_most_four_images():
    _, axes = _draw(vae_plots.figures(_trees(6)), "vae_posteriors")
    assert len(axes) == 4
    assert [ax.get_title() for ax in axes] == [
        f"image {i}: digit {d}" for i, d in enumerate(_digits(4))
    ]


def test_posterior_ellipses_are_two_sds_of_each_trees_draws():
    trees = _trees(2)
    fig, axes = _draw(vae_plots.figures(trees), "vae_posteriors")
    for i, ax in enumerate(axes):
        ellipses = [p for p in ax.patches if isinstance(p, Ellipse)]
        assert len(ellipses) == 2
        # The panel shows the two coordinates with the smallest NUTS sd, in index order.
        nuts = trees["nuts-latent"].posterior["z"].isel(image=i).values.reshape(-1, LATENT)
        pair = sorted(np.argsort(nuts.std(axis=0))[:2])
        assert ax.get_xlabel() == f"z[{pair[0]}]" and ax.get_ylabel() == f"z[{pair[1]}]"
        for ellipse, method in zip(ellipses, ("svi", "svi-refined"), strict=True):
            z = trees[method].posterior["z"].isel(image=i).values.reshape(-1, LATENT)[:, pair]
            np.testing.assert_allclose(ellipse.center, z.mean(0))
            np.testing.assert_allclose(
                [ellipse.width, ellipse.height], 4 * z.std(0, ddof=1), rtol=1e-12
            )
    assert len(fig.legends[0].get_texts()) == 3


def test_posteriors_draw_the_ellipses_that_exist():
    trees = _trees(3)
    del trees["svi-refined"]
    fig, axes = _draw(vae_plots.figures(trees), "vae_posteriors")
    assert all(sum(isinstance(p, Ellipse) for p in ax.patches) == 1 for ax in axes)
    assert [t.get_text() for t in fig.legends[0].get_texts()][1].startswith("q (encoder)")


@pytest.mark.parametrize(
    ("missing", "expected"),
    [
        ("svi", {"vae_posteriors", "vae_gap"}),
        ("svi-refined", ALL_FIGURES - {"vae_gap"}),
        ("nuts-latent", ALL_FIGURES - {"vae_posteriors"}),
    ],
)
def test_figures_need_their_tree(missing, expected):
    trees = _trees(2)
    del trees[missing]
    assert set(vae_plots.figures(trees)) == expected


@pytest.mark.parametrize(
    ("method", "group", "lost"),
    [
        ("svi", "training", {"vae_training"}),
        ("svi", "images", {"vae_reconstructions", "vae_prior_samples"}),
        ("svi", "latent_2d", {"vae_latent_2d"}),
        ("svi-refined", "amortization_gap", {"vae_gap"}),
        ("nuts-latent", "posterior", {"vae_posteriors"}),
    ],
)
def test_figures_need_their_group(method, group, lost):
    trees = _trees(2)
    trees[method] = _without_group(trees[method], group)
    assert set(vae_plots.figures(trees)) == ALL_FIGURES - lost


def test_no_trees_no_figures():
    assert vae_plots.figures({}) == {}


def test_gap_bars_stack_amortization_on_approximation():
    trees = _trees(3)
    table = trees["svi-refined"]["amortization_gap"]
    _, (ax,) = _draw(vae_plots.figures(trees), "vae_gap")
    bars = [p for p in ax.patches if isinstance(p, Rectangle)]
    approximation, amortization = bars[:3], bars[3:6]
    np.testing.assert_allclose([b.get_height() for b in approximation],
                               table["approximation_gap"].values)  # fmt: skip
    np.testing.assert_allclose([b.get_height() for b in amortization],
                               table["amortization_gap"].values)  # fmt: skip
    np.testing.assert_allclose([b.get_y() for b in amortization],
                               table["approximation_gap"].values)  # fmt: skip
    assert f"{float(table['amortization_gap'].mean()):.2f}" in ax.get_title()
    assert f"{float(table['approximation_gap'].mean()):.2f}" in ax.get_title()


def test_training_annotates_the_final_test_elbo():
    trees = _trees(2)
    final = float(trees["svi"]["training"]["test_elbo"].values[-1])
    _, (ax,) = _draw(vae_plots.figures(trees), "vae_training")
    assert any(f"{final:.2f}" in t.get_text() for t in ax.texts)


def test_latent_2d_has_one_legend_entry_per_digit_and_the_test_elbo():
    trees = _trees(2)
    digits = np.unique(trees["svi"]["latent_2d"]["label"].values)
    _, (ax,) = _draw(vae_plots.figures(trees), "vae_latent_2d")
    labels = [t.get_text() for t in ax.get_legend().get_texts()]
    assert labels[: len(digits)] == [str(d) for d in digits]
    assert "-23.50" in ax.get_title()


def test_digits_survive_a_netcdf_round_trip(tmp_path):
    """Saved attrs turn the labels list into a JSON string; titles still show digits."""
    trees = {}
    for method, tree in _trees(3).items():
        path = tmp_path / f"{method}.nc"
        netcdf_safe(tree).to_netcdf(path, engine="h5netcdf")
        trees[method] = xr.open_datatree(path, engine="h5netcdf").load()
    makers = vae_plots.figures(trees)
    _, axes = _draw(makers, "vae_posteriors")
    assert [ax.get_title() for ax in axes] == [
        f"image {i}: digit {d}" for i, d in enumerate(_digits(3))
    ]
    _, (ax,) = _draw(makers, "vae_gap")
    assert [t.get_text() for t in ax.get_xticklabels()] == [
        f"{i}\n({d})" for i, d in enumerate(_digits(3))
    ]
