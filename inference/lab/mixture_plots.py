"""Figures of a mixture run: clusters with each method's components, EM's ELBO beside
SVI's, and NUTS's component traces before and after relabelling.

Every figure is drawn from the run's DataTrees alone (so ``vilab report DIR`` redraws
it): a tree's component estimate is read by :func:`estimate`, the data from an
``observed_data`` group, the responsibilities from an ``assignments`` group.
"""

from collections.abc import Mapping

import numpy as np
import xarray as xr
from matplotlib.figure import Figure
from matplotlib.patches import Ellipse

from inference.lab.plots import figure_kwargs, method_color


def estimate(tree: xr.DataTree) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Posterior-mean ``(weights (K,), locs (K, D), covariances (K, D, D))`` of a tree.

    Reads a Gaussian mixture's sites (``weights``, ``locs``, and ``covariances``, or
    ``variances`` with ``corr_chol`` if any), or the 1-D two-component model's
    (``theta``, ``mu``, ``sigma``). Raises KeyError for a tree with neither.
    """
    post = tree.posterior
    mean = {name: post[name].mean(("chain", "draw")).values for name in post.data_vars}
    if "locs" in mean:
        weights, locs = mean["weights"], mean["locs"]
        if "covariances" in mean:
            return weights, locs, mean["covariances"]
        variances = post["variances"]
        if "corr_chol" in post:
            chol = post["corr_chol"].values
            tril = np.sqrt(variances.values)[..., :, None] * chol
            cov = (tril @ np.swapaxes(tril, -1, -2)).mean((0, 1))
            return weights, locs, cov
        return (
            weights,
            locs,
            np.stack([np.diag(v) for v in variances.mean(("chain", "draw")).values]),
        )
    if "mu" in mean:
        theta, mu, sigma = mean["theta"], mean["mu"], post["sigma"]
        var = (sigma.values**2).mean((0, 1))
        return np.array([theta, 1 - theta]), mu[:, None], var[:, None, None]
    raise KeyError("the tree holds no mixture sites (locs, or mu)")


def observed(trees: Mapping[str, xr.DataTree]) -> np.ndarray | None:
    """The data, ``(N, D)``, from the first tree with an ``observed_data`` group."""
    for tree in trees.values():
        if "observed_data" in tree.children:
            (values,) = list(tree["observed_data"].data_vars.values())[:1]
            x = np.asarray(values.values, dtype=float)
            return x.reshape(len(x), -1)
    return None


def _responsibilities(trees: Mapping[str, xr.DataTree]) -> np.ndarray | None:
    for name in ("em", *trees):
        tree = trees.get(name)
        if tree is not None and "assignments" in tree.children:
            return np.asarray(next(iter(tree["assignments"].data_vars.values())).values)
    return None


def _projection(x: np.ndarray) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """``(mean, P, axis labels)``: the data's first two principal axes (identity in 2-D)."""
    centre = x.mean(0)
    if x.shape[1] == 2:
        return centre, np.eye(2), ["x[0]", "x[1]"]
    _, _, vt = np.linalg.svd(x - centre, full_matrices=False)
    return centre, vt[:2].T, ["principal axis 1", "principal axis 2"]


def clusters(trees: Mapping[str, xr.DataTree]) -> Figure:
    """The data coloured by responsibility (EM's where run) with each method's components.

    In 2-D and more, each component is an ellipse of 2 sds (projected on the data's first
    two principal axes beyond 2-D), its centre marked; in 1-D, a histogram under each
    method's mixture density.
    """
    x = observed(trees)
    if x is None:
        raise ValueError("no tree holds the observed data")
    estimates = {}
    for method, tree in trees.items():
        try:
            estimates[method] = estimate(tree)
        except KeyError:
            continue
    if x.shape[1] == 1:
        return _histogram(x[:, 0], estimates)
    fig = Figure(**figure_kwargs(6.5, 5.2))
    ax = fig.add_subplot()
    centre, proj, labels = _projection(x)
    xy = (x - centre) @ proj
    resp = _responsibilities(trees)
    if resp is not None:
        palette = np.array([[0.12, 0.47, 0.71], [1.0, 0.5, 0.05], [0.17, 0.63, 0.17],
                            [0.84, 0.15, 0.16], [0.58, 0.4, 0.74], [0.55, 0.34, 0.29]])  # fmt: skip
        k = resp.shape[1]
        colours = resp @ palette[np.arange(k) % len(palette)]
        ax.scatter(xy[:, 0], xy[:, 1], c=np.clip(colours, 0, 1), s=6, alpha=0.6, linewidths=0)
    else:
        ax.scatter(xy[:, 0], xy[:, 1], c="0.6", s=6, alpha=0.6, linewidths=0)
    for method, (weights, locs, covs) in estimates.items():
        colour = method_color(method, list(trees))
        for k in range(len(weights)):
            m = (locs[k] - centre) @ proj
            c = proj.T @ covs[k] @ proj
            vals, vecs = np.linalg.eigh(c)
            angle = np.degrees(np.arctan2(vecs[1, 1], vecs[0, 1]))
            width, height = 4 * np.sqrt(np.maximum(vals[::-1], 0))
            ax.add_patch(Ellipse(m, width, height, angle=angle, fill=False, color=colour, lw=1.4))
            ax.plot(*m, marker="x", color=colour, ms=7, label=method if k == 0 else None)
    ax.set_xlabel(labels[0])
    ax.set_ylabel(labels[1])
    ax.legend(fontsize=8, loc="best")
    ax.set_title("Points coloured by responsibility; each method's components (2 sd)", fontsize=10)
    return fig


def _histogram(y: np.ndarray, estimates) -> Figure:
    fig = Figure(**figure_kwargs(6.5, 4))
    ax = fig.add_subplot()
    ax.hist(y, bins=60, density=True, color="0.8")
    grid = np.linspace(y.min() - 1, y.max() + 1, 400)
    for method, (weights, locs, covs) in estimates.items():
        sd = np.sqrt(covs[:, 0, 0])
        dens = sum(
            w * np.exp(-0.5 * ((grid - m[0]) / s) ** 2) / (s * np.sqrt(2 * np.pi))
            for w, m, s in zip(weights, locs, sd, strict=True)
        )
        ax.plot(grid, dens, color=method_color(method), lw=1.4, label=method)
    ax.set_xlabel("y")
    ax.set_ylabel("density")
    ax.legend(fontsize=8)
    ax.set_title("Data and each method's mixture density", fontsize=10)
    return fig


def em_and_svi(trees: Mapping[str, xr.DataTree]) -> Figure:
    """Left: EM's ELBO per point by iteration — after each E-step (equal to the
    log-likelihood there) and after each M-step — never decreasing. Right: each SVI
    fit's ELBO estimate per point by step (the negative loss over N)."""
    fig = Figure(**figure_kwargs(10, 3.8))
    left, right = fig.subplots(1, 2)
    em = trees.get("em")
    if em is not None and "em" in em.children:
        history = em["em"]
        it = np.arange(1, history.sizes["iteration"] + 1)
        left.plot(it, history["elbo"].values, "o-", ms=3, color=method_color("em"),
                  label="after E-step (= log-lik)")  # fmt: skip
        left.plot(it, history["elbo_after_m_step"].values, "s--", ms=3, color="0.4",
                  label="after M-step")  # fmt: skip
        left.legend(fontsize=8)
    left.set_xlabel("EM iteration")
    left.set_ylabel("ELBO per point (nats)")
    left.set_title("EM climbs: the E-step closes the gap, the M-step climbs", fontsize=10)
    x = observed(trees)
    n = len(x) if x is not None else 1
    for method, tree in trees.items():
        if "losses" not in tree.children:
            continue
        loss = tree["losses"]["loss"].values
        right.plot(np.arange(1, len(loss) + 1), -loss / n, color=method_color(method),
                   lw=1, label=method)  # fmt: skip
    if em is not None and "em" in em.children:
        right.axhline(em["em"]["elbo"].values[-1], color=method_color("em"), ls="--", lw=1,
                      label="EM's optimum")  # fmt: skip
    right.set_xscale("log")
    right.set_xlabel("SVI step")
    right.set_ylabel("ELBO estimate per point (nats)")
    right.set_title("SVI: one gradient step at a time", fontsize=10)
    if right.get_legend_handles_labels()[0]:
        right.legend(fontsize=8)
        lows = [line.get_ydata()[-1] for line in right.get_lines()]
        top = max(lows)
        right.set_ylim(top - max(1.0, 3 * (top - min(lows))), top + 0.2)
    return fig


def relabelling(tree: xr.DataTree, name: str = "locs") -> Figure:
    """NUTS draws of one component site per chain, before and after :func:`relabel`.

    The tree holds the relabelled posterior and, in group ``before_relabel``, the draws
    as sampled.
    """
    before, after = tree["before_relabel"][name], tree.posterior[name]
    extra = [d for d in after.dims if d not in ("chain", "draw", "component")]
    if extra:
        before = before.isel({d: 0 for d in extra})
        after = after.isel({d: 0 for d in extra})
    fig = Figure(**figure_kwargs(10, 3.6))
    axes = fig.subplots(1, 2, sharey=True)
    styles = ["-", "--", ":", "-."]
    for ax, data, title in ((axes[0], before, "as sampled"), (axes[1], after, "relabelled")):
        for c in range(data.sizes["chain"]):
            for k in range(data.sizes["component"]):
                ax.plot(data.isel(chain=c, component=k).values, lw=0.6,
                        ls=styles[c % len(styles)], color=f"C{k}")  # fmt: skip
        ax.set_title(f"NUTS {name} ({', '.join(extra) or 'value'} 0), {title}", fontsize=10)
        ax.set_xlabel("draw (one line style per chain, one colour per label)")
    rhat = tree.posterior.attrs.get("max_r_hat_before_relabel")
    if rhat is not None:
        axes[0].text(0.02, 0.95, f"max R-hat {float(rhat):.2f}", transform=axes[0].transAxes,
                     va="top", fontsize=9)  # fmt: skip
    return fig
