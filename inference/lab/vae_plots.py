"""Figures of the VAE case, drawn from the run's DataTrees alone (so ``vilab report``
redraws them from the saved files).

The ``svi`` tree (the encoder's amortized q) carries the training history (group
``training``), the study images with their reconstructions and prior samples (group
``images``) and a second model's 2-d latent space (group ``latent_2d``); the
``svi-refined`` tree (q*, one Gaussian per image) carries the per-image gap table (group
``amortization_gap``); the ``nuts-latent`` tree holds NUTS draws of the exact posterior
p(z | x) with the decoder fixed. A user may run any subset of the methods, so each
figure is offered only when the trees it reads exist.

q is drawn in the ``svi`` colour and q* in the ``svi-refined`` colour of
:func:`~inference.lab.plots.method_color` in every figure; NUTS, the reference, is grey.
"""

import json
from collections.abc import Callable, Mapping

import numpy as np
import xarray as xr
from matplotlib import colormaps
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Ellipse

from inference.lab.catalog import VAE_METHODS
from inference.lab.plots import figure_kwargs, method_color

MAX_POSTERIOR_PANELS = 4
IMAGE_CMAP = "gray_r"  # ink dark on white; 0 = white, 1 = black
DIGIT_CMAP = "tab10"
NUTS_COLOR = "0.45"
ENCODER_LABEL = "q (encoder)"
REFINED_LABEL = "q* (refined)"


def figures(trees: Mapping[str, xr.DataTree]) -> dict[str, Callable[[], Figure]]:
    """The figure makers the trees allow, by file stem.

    Parameters
    ----------
    trees : mapping of str to DataTree
        Per method (``svi``, ``svi-refined``, ``nuts-latent``), its tree; any may be
        missing.

    Returns
    -------
    dict of str to callable
        ``vae_training``, ``vae_reconstructions``, ``vae_prior_samples`` and
        ``vae_latent_2d`` need the ``svi`` tree's groups; ``vae_posteriors`` needs
        ``nuts-latent``; ``vae_gap`` needs ``svi-refined``'s gap table. Each maker takes
        no argument and returns a Figure.
    """
    makers = {}
    svi = trees.get("svi")
    if svi is not None and "training" in svi.children:
        makers["vae_training"] = lambda: training_curves(svi)
    if svi is not None and "images" in svi.children:
        images = svi["images"]
        if "x" in images and "reconstruction" in images:
            makers["vae_reconstructions"] = lambda: reconstructions(svi)
        if "prior_sample" in images:
            makers["vae_prior_samples"] = lambda: prior_samples(svi)
    if svi is not None and "latent_2d" in svi.children:
        makers["vae_latent_2d"] = lambda: latent_2d(svi)
    if _has_z(trees.get("nuts-latent")):
        makers["vae_posteriors"] = lambda: posteriors(trees)
    refined = trees.get("svi-refined")
    if refined is not None and "amortization_gap" in refined.children:
        makers["vae_gap"] = lambda: gaps(refined)
    return makers


def training_curves(tree: xr.DataTree) -> Figure:
    """Train and test ELBO per image (nats) by epoch, the final test ELBO annotated.

    The train ELBO is minus each epoch's mean training loss, averaged over the epoch's
    minibatches while the networks were still moving, so it lags the networks at the
    epoch's end, most of all in epoch 1 (left off the scale when far below the rest, its
    value then written top left). The test ELBO is estimated on the held-out images
    after each epoch. Both climb; a test curve still climbing at
    the end means more epochs would help, a train curve that keeps climbing while the
    test curve flattens or falls is overfitting.
    """
    training = tree["training"].to_dataset()
    epoch = training["epoch"].values
    train, test = -training["train_loss"].values, training["test_elbo"].values
    colour = method_color("svi", VAE_METHODS)
    fig = Figure(**figure_kwargs(6.5, 4))
    ax = fig.add_subplot()
    ax.plot(epoch, train, color="0.5", lw=1.4, label="train ELBO (mean over the epoch's steps)")
    # Lightning's training measures the test ELBO after the last epoch only (NaN before).
    measured = np.isfinite(test)
    ax.plot(epoch[measured], test[measured], "o-" if measured.sum() == 1 else "-",
            color=colour, lw=1.6, label="test ELBO (after the epoch)")  # fmt: skip
    ax.plot(epoch[-1], test[-1], "o", color=colour, ms=5)
    ax.annotate(f"final test ELBO\n{test[-1]:.2f} nats/image", xy=(epoch[-1], test[-1]),
                xytext=(-4, -52), textcoords="offset points", ha="right", fontsize=9,
                arrowprops={"arrowstyle": "->", "color": "0.3", "lw": 0.8})  # fmt: skip
    bottom, top = _training_limits(train, test)
    ax.set_ylim(bottom, top)
    if np.min(train) < bottom:
        ax.text(0.02, 0.97, f"train ELBO of epoch {epoch[np.argmin(train)]}: "
                f"{np.min(train):.2f} (off the scale)", transform=ax.transAxes, va="top",
                fontsize=8, color="0.4")  # fmt: skip
    ax.set_xlabel("epoch")
    ax.set_ylabel("ELBO per image (nats)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")
    attrs = training.attrs
    details = ", ".join(
        f"{key} {attrs[key]}" for key in ("z_dim", "hidden", "batch_size") if key in attrs
    )
    ax.set_title(f"VAE training: ELBO per image by epoch ({details})", fontsize=10)
    return fig


def _training_limits(train: np.ndarray, test: np.ndarray) -> tuple[float, float]:
    """Y range of both curves, without the first train value when it lies far below."""
    test = test[np.isfinite(test)]
    values = np.concatenate([test, train[1:]]) if len(train) > 1 else np.append(test, train)
    top, bottom = np.max(values), np.min(values)
    if train[0] > bottom - 0.5 * (top - bottom):  # near enough: keep it on the scale
        bottom = min(bottom, train[0])
    pad = 0.08 * max(top - bottom, 1.0)
    return bottom - pad, top + pad


def reconstructions(tree: xr.DataTree) -> Figure:
    """The study images (top row, 0/1 pixels) over their reconstructions (bottom row).

    A reconstruction is the decoder's pixel probabilities at the encoder's mean for that
    image, drawn in grey from white (0) to black (1): a good one is a sharp copy of the
    image above it, a blurred one is where the 8-d code has lost detail. Each column is
    titled with its digit.
    """
    images = tree["images"].to_dataset()
    x, recon = images["x"].values, images["reconstruction"].values
    shape = _image_shape(images, x.shape[-1])
    labels = _labels(images["label"].values if "label" in images else None, len(x))
    n = len(x)
    fig = Figure(**figure_kwargs(max(4.0, 0.85 * n + 1.2), 2.4))
    axes = fig.subplots(2, n, squeeze=False)
    for i in range(n):
        axes[0, i].imshow(x[i].reshape(shape), cmap=IMAGE_CMAP, vmin=0, vmax=1)
        shown = axes[1, i].imshow(recon[i].reshape(shape), cmap=IMAGE_CMAP, vmin=0, vmax=1)
        axes[0, i].set_title(labels[i], fontsize=10)
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
    axes[0, 0].set_ylabel("original", fontsize=9)
    axes[1, 0].set_ylabel("reconstruction", fontsize=9)
    fig.colorbar(shown, ax=axes[:, -1], shrink=0.8, label="p(pixel on)")
    fig.suptitle("Study images (top) and the decoder's mean at the encoder's mean (bottom)",
                 fontsize=10)  # fmt: skip
    return fig


def prior_samples(tree: xr.DataTree) -> Figure:
    """Decoder means at draws z ~ N(0, I) from the prior, in a grid (4 x 4 for 16).

    Each panel is the decoder's pixel probabilities (white 0, black 1) at one prior draw,
    not a binary sample from them. Recognisable digits mean the prior's mass lands where
    the decoder has learnt to draw; smudges and blends show the holes between the codes
    the encoder uses.
    """
    images = tree["images"].to_dataset()
    samples = images["prior_sample"].values
    shape = _image_shape(images, samples.shape[-1])
    n = len(samples)
    cols = int(np.ceil(np.sqrt(n)))
    rows = int(np.ceil(n / cols))
    fig = Figure(**figure_kwargs(1.1 * cols + 1.0, 1.1 * rows + 0.5))
    axes = fig.subplots(rows, cols, squeeze=False)
    for k, ax in enumerate(axes.flat):
        ax.set_xticks([])
        ax.set_yticks([])
        if k < n:
            shown = ax.imshow(samples[k].reshape(shape), cmap=IMAGE_CMAP, vmin=0, vmax=1)
        else:
            ax.set_visible(False)
    fig.colorbar(shown, ax=axes, shrink=0.6, label="p(pixel on)")
    fig.suptitle(f"Decoder means at {n} prior draws z ~ N(0, I)", fontsize=10)
    return fig


def latent_2d(tree: xr.DataTree) -> Figure:
    """The encoder means of every test image under a second VAE with a 2-d latent space,
    coloured by digit.

    Digits that form separate clusters are told apart by the code without ever seeing a
    label; overlapping clusters are digits the model finds alike (often 4/9, 3/5/8). The
    dashed circle is the prior's radius-2 contour (about 86% of N(0, I) lies inside): the
    KL term pulls the codes towards it. The title gives this model's test ELBO, which is
    lower than the main model's: two dimensions keep less of each image.
    """
    latent = tree["latent_2d"].to_dataset()
    z, label = latent["z"].values, latent["label"].values
    fig = Figure(**figure_kwargs(6.4, 5.4))
    ax = fig.add_subplot()
    cmap = colormaps[DIGIT_CMAP]
    for k, digit in enumerate(np.unique(label)):
        chosen = label == digit
        colour = cmap((int(digit) if np.issubdtype(label.dtype, np.integer) else k) % cmap.N)
        ax.scatter(z[chosen, 0], z[chosen, 1], s=9, color=colour, alpha=0.75, linewidths=0,
                   label=str(digit))  # fmt: skip
    theta = np.linspace(0, 2 * np.pi, 200)
    ax.plot(2 * np.cos(theta), 2 * np.sin(theta), ls="--", color="0.5", lw=0.8,
            label="prior, radius 2")  # fmt: skip
    ax.set_aspect("equal", adjustable="datalim")
    ax.set_xlabel("z[0] (encoder mean)")
    ax.set_ylabel("z[1] (encoder mean)")
    ax.legend(title="digit", fontsize=8, title_fontsize=8, loc="center left",
              bbox_to_anchor=(1.01, 0.5), markerscale=1.8)  # fmt: skip
    title = f"Encoder means of {len(z)} test images, VAE with a 2-d latent space"
    if "test_elbo" in latent.attrs:
        title += f"\n(this model's test ELBO {float(latent.attrs['test_elbo']):.2f} nats/image)"
    ax.set_title(title, fontsize=10)
    return fig


def posteriors(trees: Mapping[str, xr.DataTree]) -> Figure:
    """NUTS draws of two latent coordinates for the first study images, with q's and q*'s
    2-sd ellipses.

    Each panel is one image (titled with its digit). The grey points are NUTS draws of
    the exact posterior p(z | x) with the decoder fixed, projected on the two latent
    coordinates with the smallest NUTS sd for that image (the ones it pins down most).
    q (the encoder's amortized Gaussian) and q* (a Gaussian fitted to that image alone)
    are diagonal, so their marginals on any two coordinates are axis-aligned ellipses;
    each is drawn at 2 sds (about 86% of a 2-d Gaussian) from the mean and sd of that
    tree's draws. Where q* covers the points better than q, the encoder leaves
    ELBO on the table (the amortization gap); where neither can (a tilted or bent cloud),
    the Gaussian family itself is the limit (the approximation gap).
    """
    nuts = trees["nuts-latent"].posterior["z"]
    n = min(MAX_POSTERIOR_PANELS, nuts.sizes["image"])
    labels = _labels(_tree_labels(trees.get("nuts-latent"), trees.get("svi")), nuts.sizes["image"])
    fig = Figure(**figure_kwargs(3.0 * n + 0.4, 3.6))
    axes = fig.subplots(1, n, squeeze=False)[0]
    approximations = {
        method: trees[method].posterior["z"]
        for method in ("svi", "svi-refined")
        if _has_z(trees.get(method))
    }
    names = {"svi": ENCODER_LABEL, "svi-refined": REFINED_LABEL}
    for i, ax in enumerate(axes):
        image = nuts.isel(image=i).values.reshape(-1, nuts.sizes["latent"])
        # The two coordinates the image pins down most (smallest NUTS sd): the others
        # stay near the prior, N(0, 1), and show little.
        pair = sorted(np.argsort(image.std(axis=0))[:2])
        draws = image[:, pair]
        ax.scatter(draws[:, 0], draws[:, 1], s=3, color=NUTS_COLOR, alpha=0.45, linewidths=0)
        for method, z in approximations.items():
            mean, sd = _moments_2d(z.isel(image=i, latent=pair).values)
            colour = method_color(method, VAE_METHODS)
            ax.add_patch(Ellipse(mean, 4 * sd[0], 4 * sd[1], fill=False, color=colour, lw=1.8))
            ax.plot(*mean, marker="+", color=colour, ms=9, mew=1.6)
        ax.set_aspect("equal", adjustable="datalim")
        ax.autoscale_view()
        ax.set_xlabel(f"z[{pair[0]}]")
        ax.set_ylabel(f"z[{pair[1]}]")
        ax.set_title(f"image {i}: digit {labels[i]}", fontsize=10)
        ax.grid(alpha=0.3)
    nuts_handle = Line2D([], [], ls="", marker="o", ms=4, color=NUTS_COLOR,
                         label="NUTS draws (exact posterior)")  # fmt: skip
    handles = [nuts_handle] + [
        Line2D([], [], color=method_color(m, VAE_METHODS), lw=1.8, label=f"{names[m]}: 2 sd")
        for m in approximations
    ]
    fig.legend(handles=handles, loc="outside lower center", ncols=len(handles), fontsize=8)
    fig.suptitle("Latent posterior p(z | x), decoder fixed: the two best-pinned coordinates",
                 fontsize=10)  # fmt: skip
    return fig


def gaps(tree: xr.DataTree) -> Figure:
    """Per study image, the approximation gap and the amortization gap (nats), stacked.

    log p(x) - ELBO[q] = (log p(x) - ELBO[q*]) + (ELBO[q*] - ELBO[q]): the lower bar, the
    approximation gap, is what the best diagonal Gaussian q* loses to the exact posterior;
    the upper bar, the amortization gap, is what the encoder's q loses to q* by sharing
    one network across images. The whole stack is the encoder's total gap. log p(x) is an
    importance-weighted (IWAE) estimate, itself a lower bound, so the approximation gap is
    if anything understated. The error bars are the Monte Carlo standard error of the
    ELBO difference (``elbo_mcse``): an amortization gap within about two of them of zero
    is not resolved. A negative bar (noise) hangs below the top of the bar under it.

    Cremer et al. (2018) report about 1.4 nats of approximation gap and 1.3 nats of
    amortization gap on MNIST with a factorised Gaussian q; those are 28 x 28 images and a
    larger network, so they set the scale, not a target for the 8 x 8 digits here.

    References
    ----------
    Cremer, C., Li, X. and Duvenaud, D. (2018). Inference suboptimality in variational
    autoencoders. ICML.
    """
    table = tree["amortization_gap"].to_dataset()
    approximation = table["approximation_gap"].values
    amortization = table["amortization_gap"].values
    n = len(approximation)
    labels = _labels(_tree_labels(tree), n)
    position = np.arange(n)
    fig = Figure(**figure_kwargs(max(5.0, 0.55 * n + 2.5), 4))
    ax = fig.add_subplot()
    ax.bar(position, approximation, color=method_color("svi-refined", VAE_METHODS), alpha=0.8,
           label="approximation gap: log p(x) - ELBO[q*]")  # fmt: skip
    ax.bar(position, amortization, bottom=approximation, alpha=0.8,
           color=method_color("svi", VAE_METHODS),
           label="amortization gap: ELBO[q*] - ELBO[q]")  # fmt: skip
    if "elbo_mcse" in table:
        ax.errorbar(position, approximation + amortization, yerr=table["elbo_mcse"].values,
                    fmt="none", ecolor="0.2", capsize=3, lw=1,
                    label="± MCSE of the ELBO difference")  # fmt: skip
    ax.axhline(0, color="0.3", lw=0.8)
    ax.set_xticks(position, [f"{i}\n({labels[i]})" for i in range(n)])
    ax.set_xlabel("study image (digit)")
    ax.set_ylabel("gap (nats)")
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=8, loc="upper left")
    top = np.max(np.maximum(approximation, 0) + np.maximum(amortization, 0))
    ax.set_ylim(top=1.35 * top if top > 0 else None)
    ax.set_title(f"Inference gaps per image; means: approximation {np.mean(approximation):.2f}, "
                 f"amortization {np.mean(amortization):.2f} nats", fontsize=10)  # fmt: skip
    return fig


def _has_z(tree: xr.DataTree | None) -> bool:
    return tree is not None and "posterior" in tree.children and "z" in tree.posterior


def _moments_2d(z: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean and sd, each (2,), of draws ``z`` (chain, draw, 2)."""
    flat = z.reshape(-1, 2)
    return flat.mean(axis=0), flat.std(axis=0, ddof=1)


def _image_shape(images: xr.Dataset, pixels: int) -> tuple[int, int]:
    """``(height, width)`` from the group's attrs, else a square."""
    if "height" in images.attrs and "width" in images.attrs:
        return int(images.attrs["height"]), int(images.attrs["width"])
    side = int(round(np.sqrt(pixels)))
    return side, pixels // side


def _tree_labels(*trees: xr.DataTree | None):
    """The study images' digits from the first tree that has them: the posterior's
    ``labels`` attr (a JSON string once saved to NetCDF), or the ``images`` group."""
    for tree in trees:
        if tree is None:
            continue
        if "posterior" in tree.children and "labels" in tree.posterior.attrs:
            labels = tree.posterior.attrs["labels"]
            return json.loads(labels) if isinstance(labels, str) else labels
        if "images" in tree.children and "label" in tree["images"]:
            return tree["images"]["label"].values
    return None


def _labels(labels, n: int) -> list[str]:
    """``n`` digit labels as text; ``?`` where none is known."""
    labels = [] if labels is None else [str(v) for v in np.asarray(labels).ravel()]
    return (labels + ["?"] * n)[:n]
