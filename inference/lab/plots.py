"""Figures that compare inference methods; each function computes, then returns a Figure.

Every method keeps one colour across figures (:func:`method_color`); the reference
posterior is black. ArviZ 1.x (``arviz_plots``, matplotlib backend) draws the densities
and the NUTS diagnostics; the ELBO curves, the forest of intervals and the funnel pair
plot are plain matplotlib. Nothing here prints or saves: the report does that.

Figures built with ``matplotlib.figure.Figure`` need no pyplot state; those from
``arviz_plots`` go through pyplot, so close them (``matplotlib.pyplot.close(fig)``)
when done.
"""

from collections.abc import Mapping, Sequence
from statistics import NormalDist

import arviz_plots
import numpy as np
import pandas as pd
import xarray as xr
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch

from inference.lab.catalog import METHODS
from inference.tables import as_datatree, flatten

KNOWN_METHODS = (*METHODS, "svi-lowrank", "em", "svi-map", "svi-meanfield", "sklearn-em")
PALETTE = ("C0", "C1", "C2", "C3", "C4", "C5", "C6", "C8", "C9", "#1b9e77", "#d95f02", "#7570b3")
REFERENCE_COLOR = "black"
NORMAL_Q95 = NormalDist().inv_cdf(0.95)
ARVIZ = {"backend": "matplotlib"}


def figure_kwargs(width: float, height: float) -> dict:
    return {"figsize": (width, height), "layout": "constrained"}


def method_color(method: str, methods: Sequence[str] = ()) -> str:
    """The colour of ``method``: fixed for known methods, else by position in ``methods``."""
    if method in KNOWN_METHODS:
        return PALETTE[KNOWN_METHODS.index(method)]
    others = [m for m in methods if m not in KNOWN_METHODS]
    position = others.index(method) if method in others else 0
    return PALETTE[(len(KNOWN_METHODS) + position) % len(PALETTE)]


def running_mean(values: np.ndarray, window: int) -> np.ndarray:
    """Trailing mean over up to ``window`` values (shorter at the start)."""
    values = np.asarray(values, dtype=float)
    cumsum = np.concatenate([[0.0], np.cumsum(values)])
    ends = np.arange(1, len(values) + 1)
    starts = np.maximum(ends - window, 0)
    return (cumsum[ends] - cumsum[starts]) / (ends - starts)


def reference_interval(reference: pd.DataFrame, label: str) -> tuple[float, float]:
    """The reference 90% interval: ``q05``/``q95`` if given, else mean -+ 1.645 sd."""
    row = reference.loc[label]
    if "q05" in reference.columns and "q95" in reference.columns:
        if pd.notna(row["q05"]) and pd.notna(row["q95"]):
            return float(row["q05"]), float(row["q95"])
    half = NORMAL_Q95 * float(row["sd"])
    return float(row["mean"]) - half, float(row["mean"]) + half


def choose_parameters(
    labels: Sequence[str], reference: pd.DataFrame | None = None, max_params: int = 10
) -> list[str]:
    """At most ``max_params`` labels: those with a reference first, in the reference's order."""
    chosen = []
    if reference is not None:
        chosen = [label for label in reference.index if label in labels]
    chosen += [label for label in labels if label not in chosen]
    return chosen[:max_params]


def elbo_curves(trees: Mapping, log_evidence: float | None = None, window: int = 50) -> Figure:
    """ELBO per step of every SVI fit (running mean of ``-loss``), nats, whole data set.

    ``trees`` maps a method to its DataTree; those without a ``losses`` group (NUTS) are
    skipped.
    The left panel shows the climb, the right one zooms on the second half of the steps.
    The exact log evidence, when known, is the dashed line every ELBO stays below.
    """
    curves = {m: running_mean(-losses, window) for m, losses in _losses(trees).items()}
    if not curves:
        raise ValueError("no SVI result to draw an ELBO curve for")
    fig = Figure(figsize=(9, 3.4), layout="constrained")
    ax_all, ax_end = fig.subplots(1, 2)
    half = max(len(c) for c in curves.values()) // 2
    for ax, start in ((ax_all, 0), (ax_end, half)):
        for method, curve in curves.items():
            steps = np.arange(1, len(curve) + 1)
            color = method_color(method, list(trees))
            ax.plot(steps[start:], curve[start:], color=color, lw=1.4, label=method)
        if log_evidence is not None:
            ax.axhline(log_evidence, color=REFERENCE_COLOR, ls="--", lw=1, label="exact log p(x)")
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
    ax_all.set_ylim(*_elbo_limits(curves, log_evidence, 0.2))
    ax_end.set_ylim(*_elbo_limits({m: c[half:] for m, c in curves.items()}, log_evidence, 0.0))
    ax_all.set_ylabel("ELBO (nats)")
    ax_all.set_title("the climb", fontsize=9)
    ax_end.set_title("second half, zoomed", fontsize=9)
    ax_end.legend(fontsize=7, loc="lower right")
    fig.suptitle(f"ELBO during SVI (running mean over {window} steps)", fontsize=10)
    return fig


def _losses(trees: Mapping) -> dict[str, np.ndarray]:
    out = {}
    for method, tree in trees.items():
        if "losses" in tree.children and tree["losses"]["loss"].size:
            out[method] = np.asarray(tree["losses"]["loss"].values, dtype=float)
    return out


def _elbo_limits(curves: Mapping[str, np.ndarray], log_evidence: float | None, skip: float):
    """Y range from each curve's value at fraction ``skip`` of its steps to above the finish."""
    curves = {m: c for m, c in curves.items() if len(c)}
    finals = [c[-1] for c in curves.values()]
    top = max(finals + ([log_evidence] if log_evidence is not None else []))
    bottom = min(float(np.min(c[int(len(c) * skip) :])) for c in curves.values())
    span = max(top - bottom, 1e-3)
    return bottom - 0.05 * span, top + 0.1 * span


def _common_draws(tree: xr.DataTree, labels: Sequence[str], num_draws: int) -> xr.DataTree:
    """The scalar parameters ``labels`` as variables, thinned to exactly ``num_draws`` draws."""
    flat = flatten(tree.posterior.to_dataset())
    data = {}
    for label in labels:
        values = flat[label].reshape(-1)
        index = np.linspace(0, values.size - 1, num_draws).round().astype(int)
        data[label] = (("chain", "draw"), values[index][None, :])
    return xr.DataTree.from_dict({"posterior": xr.Dataset(data)})


def marginals(
    results: Mapping,
    reference: pd.DataFrame | None = None,
    max_params: int = 10,
    num_draws: int = 500,
) -> Figure:
    """Posterior densities per parameter, one curve per method, over the reference.

    Densities are ArviZ KDEs of up to ``num_draws`` evenly thinned draws per method. The
    reference shows as a grey band (its 90% interval) and a black line (its mean), plus a
    dashed normal density where the reference is close to normal (symmetric interval).
    """
    trees = {m: as_datatree(r) for m, r in results.items()}
    labels = _shared_labels(trees)
    chosen = choose_parameters(labels, reference, max_params)
    available = [t.posterior.sizes["chain"] * t.posterior.sizes["draw"] for t in trees.values()]
    num_draws = min([num_draws, *available])
    data = {m: _common_draws(t, chosen, num_draws) for m, t in trees.items()}
    cols = min(len(chosen), 5)
    rows = -(-len(chosen) // cols)
    colors = [method_color(m, list(trees)) for m in trees]
    pc = arviz_plots.plot_dist(
        data,
        kind="kde",
        visuals={"credible_interval": False, "point_estimate": False, "point_estimate_text": False},
        figure_kwargs=figure_kwargs(max(5.5, 2.3 * cols + 0.4), 1.9 * rows + 0.9),
        col_wrap=cols,
        color=colors,
        **ARVIZ,
    )
    for label in chosen:
        ax = pc.get_viz("plot", label)
        ax.set_title(label, fontsize=9)
        ax.set_xlim(*_dist_limits(data, label, reference))
        if reference is not None and label in reference.index:
            lo, hi = reference_interval(reference, label)
            ax.axvspan(lo, hi, color="0.85", zorder=0)
            ax.axvline(float(reference.loc[label, "mean"]), color=REFERENCE_COLOR, lw=1)
            if _near_normal(reference, label):
                mean, sd = (float(reference.loc[label, k]) for k in ("mean", "sd"))
                x = np.linspace(*ax.get_xlim(), 200)
                pdf = np.exp(-0.5 * ((x - mean) / sd) ** 2) / (sd * np.sqrt(2 * np.pi))
                ax.plot(x, pdf, color=REFERENCE_COLOR, ls="--", lw=1.2)
    fig = pc.viz["figure"].item()
    handles = [Line2D([], [], color=c, lw=1.6, label=m) for m, c in zip(trees, colors, strict=True)]
    if reference is not None:
        handles.append(Patch(color="0.85", label="reference 90% interval"))
        handles.append(Line2D([], [], color=REFERENCE_COLOR, lw=1, label="reference mean"))
        handles.append(
            Line2D([], [], color=REFERENCE_COLOR, ls="--", lw=1.2, label="N(ref mean, ref sd)")
        )
    fig.legend(handles=handles, loc="outside lower center", ncol=min(len(handles), 4), fontsize=8)
    fig.suptitle("Marginal posteriors", fontsize=10)
    return fig


def _near_normal(reference: pd.DataFrame, label: str, tolerance: float = 0.1) -> bool:
    """Whether a normal curve fits the reference: its 90% interval is symmetric about the mean.

    A reference with only a mean and sd is taken as normal.
    """
    mean = float(reference.loc[label, "mean"])
    lo, hi = reference_interval(reference, label)
    return abs((hi - mean) - (mean - lo)) <= tolerance * (hi - lo)


def _shared_labels(trees: Mapping[str, xr.DataTree]) -> list[str]:
    per_method = [list(flatten(t.posterior.to_dataset())) for t in trees.values()]
    return [label for label in per_method[0] if all(label in p for p in per_method[1:])]


def _dist_limits(data, label, reference):
    """An x range from the middle 99% of each method's draws (median over methods)."""
    lows = [float(np.quantile(t.posterior[label].values, 0.005)) for t in data.values()]
    highs = [float(np.quantile(t.posterior[label].values, 0.995)) for t in data.values()]
    lo, hi = float(np.median(lows)), float(np.median(highs))
    if reference is not None and label in reference.index:
        ref_lo, ref_hi = reference_interval(reference, label)
        lo, hi = min(lo, ref_lo), max(hi, ref_hi)
    pad = 0.05 * max(hi - lo, 1e-9)
    return lo - pad, hi + pad


def forest(
    parameters: pd.DataFrame, reference: pd.DataFrame | None = None, max_params: int = 10
) -> Figure:
    """Mean and 90% interval (``q05``-``q95``) of each parameter by each method.

    ``parameters`` is the table of :func:`inference.tables.compare` (columns ``method``,
    ``parameter``, ``mean``, ``q05``, ``q95``). The reference, when given, is the black
    row on top of each parameter's group.
    """
    methods = list(dict.fromkeys(parameters["method"]))
    labels = choose_parameters(list(dict.fromkeys(parameters["parameter"])), reference, max_params)
    rows = [None] * (reference is not None) + methods
    height = 0.8 + 0.11 * len(rows) * len(labels)
    fig = Figure(figsize=(7, height), layout="constrained")
    ax = fig.add_subplot()
    offsets = np.linspace(0.35, -0.35, len(rows)) if len(rows) > 1 else np.zeros(1)
    for i, label in enumerate(labels):
        centre = len(labels) - 1 - i
        for offset, method in zip(offsets, rows, strict=True):
            interval = _forest_row(parameters, reference, method, label)
            if interval is None:
                continue
            mean, lo, hi = interval
            color = REFERENCE_COLOR if method is None else method_color(method, methods)
            ax.plot([lo, hi], [centre + offset] * 2, color=color, lw=2 if method is None else 1.5)
            ax.plot(mean, centre + offset, "D" if method is None else "o", color=color, ms=3.5)
        if i:
            ax.axhline(centre + 0.5, color="0.88", lw=0.8)
    ax.set_yticks(range(len(labels)), labels[::-1], fontsize=8)
    ax.set_ylim(-0.5, len(labels) - 0.5)
    ax.grid(axis="x", alpha=0.3)
    ax.set_title("Posterior means and 90% intervals", fontsize=10)
    handles = [
        Line2D([], [], color=method_color(m, methods), marker="o", ms=3.5, label=m) for m in methods
    ]
    if reference is not None:
        handles.insert(
            0, Line2D([], [], color=REFERENCE_COLOR, marker="D", ms=4, label="reference")
        )
    fig.legend(handles=handles, fontsize=7, loc="outside right upper")
    return fig


def _forest_row(parameters, reference, method, label):
    """``(mean, q05, q95)`` of one method (None: the reference), or None when missing."""
    if method is None:
        if label not in reference.index:
            return None
        lo, hi = reference_interval(reference, label)
        return float(reference.loc[label, "mean"]), lo, hi
    row = parameters[(parameters["method"] == method) & (parameters["parameter"] == label)]
    if row.empty:
        return None
    row = row.iloc[0]
    return float(row["mean"]), float(row["q05"]), float(row["q95"])


def trace(tree, var_names: Sequence[str] | None = None) -> Figure:
    """ArviZ trace plot of MCMC draws: densities per chain and traces (divergences marked)."""
    tree = as_datatree(tree)
    names = list(var_names) if var_names else list(tree.posterior.data_vars)
    pc = arviz_plots.plot_trace_dist(
        tree,
        var_names=names,
        compact=True,
        figure_kwargs=figure_kwargs(8, 1.5 * len(names) + 0.6),
        **ARVIZ,
    )
    fig = pc.viz["figure"].item()
    fig.suptitle("NUTS trace (one line style per chain)", fontsize=10)
    return fig


def rank(tree, var_names: Sequence[str] | None = None) -> Figure:
    """ArviZ rank plot (fractional-rank ECDF difference per chain) of the scalar sites.

    Vector sites are left out to keep the figure small, unless there is no scalar site.
    """
    tree = as_datatree(tree)
    posterior = tree.posterior
    names = [n for n in (var_names or posterior.data_vars) if n in posterior.data_vars]
    names = [n for n in names if not _param_dims(posterior[n])] or names
    count = sum(_size(posterior[n]) for n in names)
    cols = min(count, 4)
    rows = -(-count // cols)
    pc = arviz_plots.plot_rank(
        tree,
        var_names=names,
        figure_kwargs=figure_kwargs(2.6 * cols + 0.6, 2.0 * rows + 0.5),
        col_wrap=cols,
        **ARVIZ,
    )
    fig = pc.viz["figure"].item()
    fig.suptitle("NUTS rank ECDF difference per chain (p: test of uniform ranks)", fontsize=10)
    return fig


def _param_dims(da: xr.DataArray) -> list[str]:
    return [d for d in da.dims if d not in ("chain", "draw")]


def _size(da: xr.DataArray) -> int:
    """Scalar parameters in a site: the product of its non-sample dims."""
    return int(np.prod([da.sizes[d] for d in _param_dims(da)]))


def energy(tree) -> Figure:
    """ArviZ energy plot of NUTS draws: marginal vs transition energy, with E-BFMI per chain."""
    pc = arviz_plots.plot_energy(as_datatree(tree), figure_kwargs=figure_kwargs(8, 2.6), **ARVIZ)
    fig = pc.viz["figure"].item()
    fig.suptitle("NUTS energy (E-BFMI < 0.3 flags poor exploration)", fontsize=10)
    return fig


def funnel(tree, scale: str = "tau", site: str = "theta", index: int = 0) -> Figure:
    """Pair plot of ``log(scale)`` against ``site[index]``; divergent draws in red.

    The funnel of a centered hierarchical model shows as draws that thin out as
    ``log tau`` falls, with divergences piled up at its neck.
    """
    tree = as_datatree(tree)
    posterior = tree.posterior
    x = np.log(posterior[scale].values.reshape(-1))
    values = posterior[site]
    dims = _param_dims(values)
    if dims:
        values = values.isel({dims[0]: index})
        label = f"{site}[{posterior[site][dims[0]].values[index]}]"
    else:
        label = site
    y = values.values.reshape(-1)
    diverging = np.zeros_like(x, dtype=bool)
    if "sample_stats" in tree.children and "diverging" in tree.sample_stats:
        diverging = tree.sample_stats["diverging"].values.reshape(-1).astype(bool)
    fig = Figure(figsize=(4.6, 3.8), layout="constrained")
    ax = fig.add_subplot()
    ax.scatter(x[~diverging], y[~diverging], s=5, alpha=0.35, color="C0", label="draws")
    if diverging.any():
        ax.scatter(x[diverging], y[diverging], s=14, color="red", label="divergent")
    ax.set_xlabel(f"log {scale}")
    ax.set_ylabel(label)
    ax.set_title(f"NUTS draws: {int(diverging.sum())} divergent of {x.size}", fontsize=10)
    ax.legend(fontsize=8, loc="upper left")
    ax.grid(alpha=0.3)
    return fig
