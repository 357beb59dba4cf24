"""The products of a case run: tables, figures, NetCDF files and a self-contained HTML report.

``case_tables`` computes the two tables of a run (per method x parameter, per method),
``case_figures`` draws its figures and ``write_report`` writes everything into a
directory::

    methods.csv  parameters.csv  <method>.nc ...  figures/<name>.png ...  report.html

``report.html`` embeds its figures as PNG data URIs, so it can be mailed or archived alone.
"""

import base64
import datetime
import html
import json
import math
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import xarray as xr
from matplotlib.figure import Figure

from inference.lab import mixture_plots, plots, vae_plots
from inference.posterior.netcdf import netcdf_safe
from inference.tables import as_datatree, compare, method_table, reference_frame

METHOD_COLUMNS = (
    "case",
    "method",
    "elapsed_s",
    "elbo",
    "log_evidence",
    "kl_gap",
    "khat",
    "divergences",
    "min_ess_bulk",
    "max_r_hat",
    "ess_bulk_per_s",
)
PARAMETER_COLUMNS = (
    "case",
    "method",
    "parameter",
    "mean",
    "sd",
    "q05",
    "q95",
    "ref_mean",
    "ref_sd",
    "z_mean",
    "sd_ratio",
)
FIGURE_DPI = 100
RUN_FILE = "run.json"  # what a rebuild needs besides the tables and trees


@dataclass(frozen=True)
class Subject:
    """What a report is about: a shipped case, or a user's model.

    name: a short name (the case, or the title). description: one line under it.
    reference: posterior summary indexed by parameter label (``mean``, ``sd``, optional
    ``q05``, ``q95``), or None. log_evidence: the exact log p(x) in nats, or None.
    funnel: ``(scale_site, vector_site)`` worth a NUTS pair plot, or None.
    family: a model family whose own figures are added (``"mixture"``), or None.
    metrics: ``metrics(method, tree) -> dict``, extra methods-table columns, or None.
    reference_method: a method whose draws are the reference when ``reference`` is None
    and that method ran, or None.
    """

    name: str
    description: str = ""
    reference: pd.DataFrame | None = None
    log_evidence: float | None = None
    funnel: tuple[str, str] | None = None
    family: str | None = None
    metrics: object = None
    reference_method: str | None = None

    def reference_for(self, trees: Mapping) -> pd.DataFrame | None:
        """The reference of a run: the given one, else the reference method's draws."""
        if self.reference is None and self.reference_method in trees:
            return reference_frame(trees[self.reference_method])
        return self.reference


COLUMN_NOTES = {
    "elapsed_s": "wall-clock seconds of the fit: all NUTS chains with warmup; SVI with its "
    "MAP/Laplace start.",
    "elbo": "evidence lower bound E_q[log p(x, z) - log q(z)], nats for the whole data set, "
    "estimated from 2,000 fresh draws of the fitted guide (elbo_mcse: its Monte Carlo "
    "standard error; iwae: the tighter importance-weighted bound from the same draws).",
    "log_evidence": "the exact log p(x), where the model has a closed form.",
    "khat": "PSIS k-hat of the guide's importance weights (Yao et al. 2018, by arviz_stats): "
    "below 0.5 the approximation can be trusted, 0.5-0.7 use it with care, above 0.7 do not "
    "trust it.",
    "kl_gap": "log p(x) - ELBO = KL(q || p(z | x)) >= 0: how far the guide is from the exact "
    "posterior, in nats.",
    "divergences": "NUTS transitions after warmup whose trajectory diverged: the sampler "
    "could not follow the posterior's curvature there (e.g. a funnel), so estimates may be "
    "biased.",
    "min_ess_bulk": "smallest bulk effective sample size over the parameters: how many "
    "independent draws the correlated NUTS draws are worth.",
    "max_r_hat": "largest rank-normalised split R-hat over the parameters; chains agree when "
    "it is below 1.01.",
    "ess_bulk_per_s": "min_ess_bulk / elapsed_s: independent draws per second.",
    "num_steps": "SVI optimisation steps taken (EM: iterations); converged: whether the "
    "plateau rule (EM: the tolerance) stopped the fit before the budget ran out.",
    "mean_loglik": "mean log-likelihood per point, log p(x_n | theta) averaged over the data, "
    "at the method's estimate (the posterior mean for draws), nats.",
    "ari": "adjusted Rand index of the most probable components against the true labels "
    "(1: the same partition, 0: chance).",
    "locs_error": "largest distance between a component's location and the truth's, after "
    "matching components (Hungarian assignment), in data units.",
    "max_r_hat_before_relabel": "NUTS's largest R-hat as sampled, before label switching was "
    "undone; max_r_hat is after.",
    "test_elbo_per_image": "the VAE's ELBO per test image after the last epoch, nats "
    "(10 draws of z per image); epochs and train_s: its training.",
    "elbo_q_per_image": "ELBO of the encoder's q(z | x) per study image, nats (decoder fixed; "
    "elbo_q_star_per_image: of q*, a Gaussian fitted to each image; log_px_per_image: the "
    "tighter importance-weighted bound of the two).",
    "amortization_gap": "ELBO[q*] - ELBO[q], mean per image: what one encoder for all images "
    "costs (Cremer et al. 2018 report about 1.3 nats on MNIST).",
    "approximation_gap": "log p(x) - ELBO[q*] = KL(q* || p(z | x)), mean per image: what a "
    "diagonal Gaussian cannot represent (about 1.4 nats on MNIST in Cremer et al. 2018).",
    "z_mean": "(mean - ref_mean) / ref_sd: the error of the posterior mean in reference sds; "
    "|z_mean| < 0.1 is close.",
    "sd_ratio": "sd / ref_sd: 1 is right, below 1 overconfident (typical of KL(q || p) "
    "fits), above 1 too wide.",
    "q05": "q05, q95: the 5% and 95% quantiles of the draws (a 90% interval).",
    "ess_bulk": "ess_bulk, r_hat, mcse_mean: per-parameter diagnostics; for SVI the draws are "
    "independent, so ess_bulk is their number and mcse_mean = sd / sqrt(draws).",
}


def _order(df: pd.DataFrame, first: tuple[str, ...]) -> pd.DataFrame:
    """``df`` with the ``first`` columns (added as empty when missing) ahead of the rest."""
    df = df.copy()
    for column in first:
        if column not in df.columns:
            df[column] = np.nan
    rest = [c for c in df.columns if c not in first]
    return df[list(first) + rest]


def run_tables(
    case: Subject, results: Mapping, trees: Mapping[str, xr.DataTree]
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """``(parameters, methods)`` tables of a run, columns as in DESIGN.md.

    ``results`` maps a method to its engine result (for ELBOs and sampler statistics),
    ``trees`` to its DataTree (for the posterior summaries).
    """
    parameters = compare(trees, case.reference_for(trees))
    parameters.insert(0, "case", case.name)
    methods = method_table(results, case.log_evidence, case.name, parameters=parameters)
    if case.metrics is not None:
        extra = pd.DataFrame([case.metrics(m, trees[m]) for m in methods["method"]])
        methods = pd.concat([methods, extra.set_index(methods.index)], axis=1)
    if "divergences" in methods:
        methods["divergences"] = methods["divergences"].astype("Int64")
    if "num_steps" in methods:
        methods["num_steps"] = methods["num_steps"].astype("Int64")
    return _order(parameters, PARAMETER_COLUMNS), _order(methods, METHOD_COLUMNS)


def _plotted_sites(tree: xr.DataTree, reference: pd.DataFrame | None) -> list[str]:
    """Posterior sites to trace: those the reference covers, else all."""
    names = list(tree.posterior.data_vars)
    if reference is None:
        return names
    covered = {label.split("[")[0] for label in reference.index}
    return [n for n in names if n in covered] or names


def run_figures(
    case: Subject, trees: Mapping[str, xr.DataTree], parameters: pd.DataFrame
) -> tuple[dict[str, Figure], dict[str, str]]:
    """The figures of a run, by file stem, and the figures that failed (name -> error).

    One figure that cannot be drawn does not stop the others.
    """
    makers = {}
    if case.family == "vae":  # its own figures: 80 latent coordinates are no marginals plot
        return _draw(vae_plots.figures(trees))
    if any("losses" in tree.children for tree in trees.values()):
        makers["elbo"] = lambda: plots.elbo_curves(trees, case.log_evidence)
    makers["marginals"] = lambda: plots.marginals(trees, case.reference)
    makers["forest"] = lambda: plots.forest(parameters, case.reference)
    if "nuts" in trees:
        nuts = trees["nuts"]
        sites = _plotted_sites(nuts, case.reference)
        makers["nuts_trace"] = lambda: plots.trace(nuts, sites)
        makers["nuts_rank"] = lambda: plots.rank(nuts, sites)
        makers["nuts_energy"] = lambda: plots.energy(nuts)
        if case.funnel is not None:
            makers["nuts_funnel"] = lambda: plots.funnel(nuts, *case.funnel)
        if "before_relabel" in nuts.children:
            makers["nuts_relabel"] = lambda: mixture_plots.relabelling(nuts)
    if case.family == "mixture":
        makers["clusters"] = lambda: mixture_plots.clusters(trees)
        makers["em_svi"] = lambda: mixture_plots.em_and_svi(trees)
    return _draw(makers)


def _draw(makers: Mapping) -> tuple[dict[str, Figure], dict[str, str]]:
    figures, failed = {}, {}
    for name, make in makers.items():
        try:
            figures[name] = make()
        except Exception as err:  # one figure that cannot be drawn must not sink the report
            failed[name] = f"{type(err).__name__}: {err}"
    return figures, failed


def _figure_png(fig: Figure) -> bytes:
    from io import BytesIO

    buffer = BytesIO()
    fig.savefig(buffer, format="png", dpi=FIGURE_DPI)
    return buffer.getvalue()


def write_report(
    out_dir,
    case: Subject,
    results: Mapping,
    parameters_df: pd.DataFrame,
    methods_df: pd.DataFrame,
    figures: Mapping[str, Figure],
    *,
    failed: Mapping[str, str] | None = None,
    settings: Mapping[str, object] | None = None,
) -> Path:
    """Write the tables, one NetCDF per method, the figures and ``report.html``.

    Parameters
    ----------
    out_dir : path
        Created if missing; files of the same names are overwritten.
    case : Subject
    results : mapping of str to DataTree or result
        Per method, what goes into ``<method>.nc`` (a result is converted with its
        ``to_datatree()`` defaults).
    parameters_df, methods_df : DataFrame
        The tables of :func:`run_tables`.
    figures : mapping of str to Figure
        Saved as ``figures/<name>.png`` and embedded in the report.
    failed : mapping of str to str, optional
        Methods (or figures) that failed, with their error, listed in the report.
    settings : mapping, optional
        Run settings shown in the report (budget, seed, command line).

    Returns
    -------
    Path
        The path of ``report.html``.
    """
    out = Path(out_dir)
    (out / "figures").mkdir(parents=True, exist_ok=True)
    methods_df.to_csv(out / "methods.csv", index=False)
    parameters_df.to_csv(out / "parameters.csv", index=False)
    for method, result in results.items():
        tree = netcdf_safe(as_datatree(result))
        tree.attrs.update(case=case.name, method=method)
        tree.to_netcdf(out / f"{method}.nc", engine="h5netcdf")
    images = {}
    for name, fig in figures.items():
        png = _figure_png(fig)
        (out / "figures" / f"{name}.png").write_bytes(png)
        images[name] = png
    run = {
        "name": case.name,
        "description": case.description,
        "log_evidence": case.log_evidence,
        "funnel": case.funnel,
        "family": case.family,
        "failed": dict(failed or {}),
        "settings": {k: str(v) for k, v in (settings or {}).items()},
    }
    (out / RUN_FILE).write_text(json.dumps(run, indent=1), encoding="utf-8")
    extra = _family_tables(case, results)
    page = _html(
        case, parameters_df, methods_df, images, dict(failed or {}), dict(settings or {}), extra
    )
    path = out / "report.html"
    path.write_text(page, encoding="utf-8")
    return path


def _family_tables(case, results: Mapping) -> dict[str, pd.DataFrame]:
    """Tables a model family adds to the report, by title (the VAE's per-image gaps)."""
    if case.family != "vae" or "svi-refined" not in results:
        return {}
    tree = as_datatree(results["svi-refined"])
    if "amortization_gap" not in tree.children:
        return {}
    table = tree["amortization_gap"].to_dataset().to_dataframe()
    return {"Amortization gap per study image (nats)": table.round(3)}


def stale_outputs(out_dir, keep_methods) -> list[Path]:
    """Outputs of an earlier vilab run in ``out_dir`` that this run will not overwrite.

    Only what vilab writes: the ``.nc`` files its ``methods.csv`` names and figures whose
    names vilab draws. A user's own files there are left alone.
    """
    out = Path(out_dir)
    stale = []
    if (out / "methods.csv").is_file():
        earlier = pd.read_csv(out / "methods.csv")["method"].astype(str)
        stale += [out / f"{m}.nc" for m in earlier if m not in keep_methods]
    stale += [out / "figures" / f"{name}.png" for name in FIGURE_CAPTIONS]
    return [p for p in stale if p.is_file()]


def report(
    results: Mapping,
    out="report",
    reference=None,
    log_evidence: float | None = None,
    title: str | None = None,
) -> Path:
    """Write the files of ``vilab compare`` for any model's results; returns ``report.html``.

    Parameters
    ----------
    results : mapping of str to result
        Method name to a :func:`~inference.fit_svi` or :func:`~inference.run_nuts`
        result, e.g. ``{"nuts": mc, "svi-mvn": fit}``.
    out : path
        The directory to write into (created if missing; vilab's own files replaced).
    reference : DataFrame or mapping, optional
        The answer to measure against: a table indexed by parameter label with ``mean``
        and ``sd`` (as ``parameters.csv``'s ref columns), or ``{label: (mean, sd)}``.
    log_evidence : float, optional
        The exact log p(x) in nats, where known: the methods table then has ``kl_gap``.
    title : str, optional
        The report's name (default ``"model"``).
    """
    if not results:
        raise ValueError("report needs at least one result")
    subject = Subject(
        name=title or "model",
        description="a model of the user's, through vilab's public API",
        reference=reference_frame(reference) if reference is not None else None,
        log_evidence=None if log_evidence is None else float(log_evidence),
    )
    trees = {method: as_datatree(result) for method, result in results.items()}
    return write_run(out, subject, results, trees, settings={"written by": "report(...)"})


def write_run(
    out, subject: Subject, results: Mapping, trees: Mapping, *, failed=None, settings=None
) -> Path:
    """Tables, figures and files of a run, from its results and their DataTrees."""
    import matplotlib.pyplot as plt

    parameters, methods = run_tables(subject, results, trees)
    figures, failed_figures = run_figures(subject, trees, parameters)
    notes = dict(failed or {}) | {f"figure {k}": v for k, v in failed_figures.items()}
    try:
        for path in stale_outputs(out, set(trees)):
            path.unlink()
        return write_report(
            out, subject, trees, parameters, methods, figures, failed=notes, settings=settings
        )
    finally:
        for fig in figures.values():
            plt.close(fig)


def is_run(out_dir) -> bool:
    """Whether ``out_dir`` holds the files of a vilab run."""
    out = Path(out_dir)
    return all((out / name).is_file() for name in ("methods.csv", "parameters.csv", RUN_FILE))


def rebuild(out_dir) -> Path:
    """Rebuild the figures and ``report.html`` of a run from its saved files alone.

    Reads ``methods.csv``, ``parameters.csv``, ``run.json`` and every ``<method>.nc``
    (with the SVI fits' loss histories); the tables are taken as saved.
    """
    import matplotlib.pyplot as plt

    out = Path(out_dir)
    if not is_run(out):
        raise ValueError(
            f"{str(out)!r} is not a vilab run (no methods.csv, parameters.csv, run.json)"
        )
    methods = pd.read_csv(out / "methods.csv")
    parameters = pd.read_csv(out / "parameters.csv")
    run = json.loads((out / RUN_FILE).read_text(encoding="utf-8"))
    trees = {}
    for method in methods["method"].astype(str):
        path = out / f"{method}.nc"
        if path.is_file():
            trees[method] = xr.open_datatree(path, engine="h5netcdf").load()
    subject = Subject(
        name=run["name"],
        description=run["description"],
        reference=_reference_rows(parameters)[["ref_mean", "ref_sd"]].rename(
            columns={"ref_mean": "mean", "ref_sd": "sd"}
        )
        if _reference_rows(parameters) is not None
        else None,
        log_evidence=run["log_evidence"],
        funnel=tuple(run["funnel"]) if run["funnel"] else None,
        family=run.get("family"),
    )
    figures, failed_figures = run_figures(subject, trees, parameters)
    notes = dict(run["failed"]) | {f"figure {k}": v for k, v in failed_figures.items()}
    try:
        images = {}
        (out / "figures").mkdir(exist_ok=True)
        for name, fig in figures.items():
            png = _figure_png(fig)
            (out / "figures" / f"{name}.png").write_bytes(png)
            images[name] = png
    finally:
        for fig in figures.values():
            plt.close(fig)
    extra = _family_tables(subject, trees)
    page = _html(subject, parameters, methods, images, notes, dict(run["settings"]), extra)
    path = out / "report.html"
    path.write_text(page, encoding="utf-8")
    return path


def compact_table(parameters: pd.DataFrame, max_params: int = 10) -> pd.DataFrame:
    """Parameters x methods: ``z_mean/sd_ratio`` against the reference, else ``mean±sd``."""
    labels = plots.choose_parameters(
        list(dict.fromkeys(parameters["parameter"])),
        _reference_rows(parameters),
        max_params,
    )
    has_ref = "z_mean" in parameters and parameters["z_mean"].notna().any()
    table = {}
    for _, row in parameters[parameters["parameter"].isin(labels)].iterrows():
        point = pd.isna(row["sd"])  # a point estimate (EM): one draw, no spread
        if has_ref and pd.notna(row["z_mean"]):
            ratio = "point" if point else f"{row['sd_ratio']:.2f}"
            cell = f"{row['z_mean']:+.2f}/{ratio}"
        else:
            cell = f"{row['mean']:.3g}" if point else f"{row['mean']:.3g}±{row['sd']:.2g}"
        table.setdefault(row["parameter"], {})[row["method"]] = cell
    frame = pd.DataFrame.from_dict(table, orient="index")
    frame = frame.reindex(index=labels, columns=list(dict.fromkeys(parameters["method"])))
    frame.index.name = "z_mean/sd_ratio" if has_ref else "mean±sd"
    return frame.fillna("")


def _reference_rows(parameters: pd.DataFrame) -> pd.DataFrame | None:
    if "ref_mean" not in parameters or parameters["ref_mean"].isna().all():
        return None
    rows = parameters.dropna(subset=["ref_mean"]).drop_duplicates("parameter")
    return rows.set_index("parameter")


def _fmt(value) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)) or value is pd.NA:
        return ""
    if isinstance(value, bool | np.bool_):
        return "yes" if value else "no"
    if isinstance(value, float | np.floating):
        return f"{value:.4g}"
    return html.escape(str(value))


# Bands of the columns that carry a verdict: (good while, ok while) on the measure.
VERDICTS = {
    "z_mean": (lambda v: abs(v), 0.1, 0.3),
    "sd_ratio": (lambda v: abs(v - 1), 0.1, 0.3),
    "khat": (lambda v: v, 0.5, 0.7),
    "max_r_hat": (lambda v: v, 1.01, 1.05),
    "divergences": (lambda v: v, 0.5, 0.5),
    "min_ess_bulk": (lambda v: -v, -400, -100),
}
LEGEND = (
    "<p class='legend'><span class='good'>good</span> <span class='ok'>use with care</span> "
    "<span class='bad'>do not trust</span>: |z_mean| &lt; 0.1 / 0.3; sd_ratio within 10% / "
    "30%; k&#770; &lt; 0.5 / 0.7; R-hat &lt; 1.01 / 1.05; no divergences; bulk ESS &ge; 400 "
    "/ 100.</p>"
)


def verdict_class(column: str, value) -> str:
    """``good``, ``ok``, ``bad`` for a cell of a verdict column, else ``""``."""
    if column not in VERDICTS or value is None or value is pd.NA:
        return ""
    try:
        value = float(value)
    except (TypeError, ValueError):
        return ""
    if math.isnan(value):
        return ""
    measure, good, ok = VERDICTS[column]
    m = measure(value)
    return "good" if m < good else "ok" if m < ok else "bad"


def _table_html(df: pd.DataFrame, index: bool = False) -> str:
    head = ([html.escape(str(df.index.name or ""))] if index else []) + [
        html.escape(str(c)) for c in df.columns
    ]
    rows = []
    for label, row in df.iterrows():
        cells = ([f"<th>{html.escape(str(label))}</th>"] if index else []) + [
            f"<td class='{verdict_class(c, v)}'>{_fmt(v)}</td>" for c, v in row.items()
        ]
        rows.append("<tr>" + "".join(cells) + "</tr>")
    header = "<tr>" + "".join(f"<th>{h}</th>" for h in head) + "</tr>"
    return f"<table><thead>{header}</thead><tbody>{''.join(rows)}</tbody></table>"


FIGURE_CAPTIONS = {
    "elbo": "ELBO of each SVI fit per step (running mean). Every ELBO lies below log p(x); "
    "the dashed line is the exact log p(x) when known.",
    "marginals": "Marginal posterior densities by method over the reference (grey: its 90% "
    "interval, black: its mean).",
    "forest": "Posterior mean and 90% interval of each parameter by method; the reference "
    "in black.",
    "nuts_trace": "NUTS draws per chain: densities and traces; divergent draws are marked.",
    "nuts_rank": "NUTS rank plot: the ECDF of each chain's fractional ranks minus the "
    "uniform; chains that mix stay near zero.",
    "nuts_energy": "NUTS energy: marginal energy vs energy transitions; E-BFMI below 0.3 "
    "means the sampler explores the tails poorly.",
    "nuts_funnel": "log tau against the first school's effect, NUTS draws; divergences (red) "
    "gather at the neck of the funnel.",
    "nuts_relabel": "NUTS draws of the component locations per chain, as sampled and after "
    "relabelling (each draw's components matched to a reference by a Hungarian assignment): "
    "label switching undone before any diagnostic.",
    "clusters": "The data coloured by EM's responsibilities, with each method's components "
    "(2-sd ellipses, projected on the data's first two principal axes beyond 2-D).",
    "em_svi": "EM's ELBO per point by iteration beside each SVI fit's by step: EM's never "
    "decreases (it equals the log-likelihood after every E-step).",
    "vae_training": "The VAE's ELBO per image by epoch: on the training images (averaged over "
    "each epoch's minibatches) and on the test images (after each epoch).",
    "vae_reconstructions": "The study images (top) and the decoder's pixel probabilities at "
    "the encoder's mean (bottom).",
    "vae_prior_samples": "The decoder's pixel probabilities at draws z ~ N(0, I): what the "
    "model thinks digits look like.",
    "vae_latent_2d": "Encoder means of the test images under a second model with z = 2, "
    "coloured by digit; the dashed circle is 2 sds of the prior.",
    "vae_posteriors": "NUTS draws of p(z | x) for a few study images (grey) with the 2-sd "
    "ellipses of the encoder's q and the refined q* over them.",
    "vae_gap": "Per study image: the approximation gap log p(x) - ELBO[q*] (what a diagonal "
    "Gaussian cannot represent) and the amortization gap ELBO[q*] - ELBO[q] (what one encoder "
    "for all images costs), nats.",
}

CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Helvetica,Arial,sans-serif;margin:2rem auto;
max-width:1100px;padding:0 1rem;color:#222;line-height:1.45}
h1{font-size:1.5rem;margin-bottom:.2rem}h2{font-size:1.15rem;margin-top:2rem;
border-bottom:1px solid #ddd;padding-bottom:.2rem}
.sub{color:#666;margin-top:0}table{border-collapse:collapse;font-size:.82rem;margin:.6rem 0;
font-variant-numeric:tabular-nums}th,td{padding:.25rem .55rem;border-bottom:1px solid #eee;
text-align:right}th{background:#f6f6f6}td:first-child,th:first-child{text-align:left}
figure{margin:1rem 0}figure img{max-width:100%;border:1px solid #eee}
figcaption{font-size:.85rem;color:#555}dl{font-size:.88rem}dt{font-weight:600;margin-top:.4rem}
dd{margin-left:1.2rem}.fail{color:#a00}code{background:#f3f3f3;padding:0 .2rem}
details summary{cursor:pointer;color:#335}
.good{background:#e3f4e1}.ok{background:#fdf1d2}.bad{background:#f9dcdc}
.legend span{padding:0 .3rem}
"""


def _trust_lines(methods: pd.DataFrame) -> list[str]:
    """One verdict per variational method, from its k-hat."""
    if "khat" not in methods:
        return []
    words = {
        "good": "k&#770; below 0.5: the approximation can be trusted, and importance "
        "reweighting of its draws would correct what is left.",
        "ok": "k&#770; between 0.5 and 0.7: use with care; the tails may be wrong.",
        "bad": "k&#770; above 0.7: do not trust this approximation.",
    }
    lines = []
    for _, row in methods.iterrows():
        label = verdict_class("khat", row["khat"])
        if label:
            lines.append(
                f"<p class='{label}'><b>{html.escape(str(row['method']))}</b> "
                f"(k&#770; = {float(row['khat']):.2f}): {words[label]}</p>"
            )
    return lines


def _shown(df: pd.DataFrame) -> pd.DataFrame:
    """A table for reading: without the ``case`` column and columns that are all empty."""
    return df.drop(columns=["case"], errors="ignore").dropna(axis=1, how="all")


def _html(case, parameters, methods, images, failed, settings, extra=None) -> str:
    stamp = datetime.datetime.now().strftime("%Y-%m-%d %H:%M:%S")
    parts = [
        "<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>",
        f"<title>vilab: {html.escape(case.name)}</title><style>{CSS}</style></head><body>",
        f"<h1>vilab compare {html.escape(case.name)}</h1>",
        f"<p class='sub'>{html.escape(case.description)}</p>",
    ]
    facts = {"written": stamp, **settings}
    if case.log_evidence is not None:
        facts["exact log p(x)"] = f"{case.log_evidence:.4f} nats"
    parts.append(
        "<p>"
        + " &middot; ".join(f"{html.escape(k)}: <code>{_fmt(v)}</code>" for k, v in facts.items())
        + "</p>"
    )
    if failed:
        items = "".join(
            f"<li><b>{html.escape(k)}</b>: {html.escape(v)}</li>" for k, v in failed.items()
        )
        parts.append(f"<div class='fail'><p>Failed:</p><ul>{items}</ul></div>")
    parts += ["<h2>Methods</h2>", LEGEND, _table_html(_shown(methods))]
    parts += _trust_lines(methods)
    for title, table in (extra or {}).items():
        parts += [f"<h2>{html.escape(title)}</h2>", _table_html(table, index=True)]
    compact = compact_table(parameters)
    parts += ["<h2>Parameters</h2>", _table_html(compact, index=True)]
    parts.append(
        "<details><summary>All parameters</summary>"
        + _table_html(_shown(parameters))
        + "</details>"
    )
    parts.append("<h2>Columns</h2><dl>")
    for column, note in COLUMN_NOTES.items():
        parts.append(f"<dt>{html.escape(column)}</dt><dd>{html.escape(note)}</dd>")
    parts.append("</dl>")
    if images:
        parts.append("<h2>Figures</h2>")
    for name, png in images.items():
        data = base64.b64encode(png).decode("ascii")
        caption = html.escape(FIGURE_CAPTIONS.get(name, name))
        parts.append(
            f'<figure><img src="data:image/png;base64,{data}" alt="{html.escape(name)}">'
            f"<figcaption>{caption}</figcaption></figure>"
        )
    parts.append("</body></html>")
    return "\n".join(parts)
