"""Comparison tables: per parameter against a reference, and per method.

``compare(results, reference)`` returns one row per method x scalar parameter:
``method, parameter, mean, sd, q05, q95, mcse_mean, ess_bulk, r_hat`` and, with a
reference, ``ref_mean, ref_sd, z_mean = (mean - ref_mean) / ref_sd`` and
``sd_ratio = sd / ref_sd``. ``method_table(results, ...)`` returns one row per
method with timing, ELBO, evidence and sampler diagnostics. Both return pandas
DataFrames; printing and plotting are elsewhere.
"""

from collections.abc import Mapping

import arviz as az
import numpy as np
import pandas as pd
import xarray as xr

from inference.em import EMResult
from inference.mcmc import NUTSResult
from inference.svi import SVIResult

SAMPLE_DIMS = ("chain", "draw")


def as_datatree(result) -> xr.DataTree:
    """A DataTree from a result (anything with ``to_datatree()``) or a DataTree."""
    if isinstance(result, xr.DataTree):
        return result
    if hasattr(result, "to_datatree"):
        return result.to_datatree()
    raise TypeError(f"cannot compare a {type(result).__name__}: need a result or a DataTree")


def _label(name, dims, index) -> str:
    if not dims:
        return name
    return f"{name}[{', '.join(str(i) for i in index)}]"  # as arviz_stats.summary labels


def flatten(posterior: xr.Dataset) -> dict[str, np.ndarray]:
    """Scalar parameters ``label -> (chain, draw)`` array, labels like ``theta[Choate]``."""
    out = {}
    for name, da in posterior.data_vars.items():
        dims = [d for d in da.dims if d not in SAMPLE_DIMS]
        if not dims:
            out[name] = da.transpose(*SAMPLE_DIMS).values
            continue
        stacked = da.stack(_param=dims).transpose(*SAMPLE_DIMS, "_param")
        for k, index in enumerate(stacked["_param"].values):
            index = index if isinstance(index, tuple) else (index,)
            out[_label(name, dims, index)] = stacked.values[..., k]
    return out


def _is_mcmc(tree: xr.DataTree) -> bool:
    return "sample_stats" in tree.children


def reference_frame(reference) -> pd.DataFrame:
    """A reference as a DataFrame indexed by parameter label with ``mean`` and ``sd``.

    Accepts such a DataFrame, a mapping ``label -> (mean, sd)``, a result or a DataTree
    (summarised from its posterior draws).
    """
    if isinstance(reference, pd.DataFrame):
        missing = {"mean", "sd"} - set(reference.columns)
        if missing:
            raise ValueError(f"reference table lacks columns {sorted(missing)}")
        return reference
    if isinstance(reference, Mapping) and not isinstance(reference, xr.DataTree):
        rows = {k: {"mean": float(v[0]), "sd": float(v[1])} for k, v in reference.items()}
        return pd.DataFrame.from_dict(rows, orient="index")
    flat = flatten(as_datatree(reference).posterior.to_dataset())
    rows = {k: {"mean": v.mean(), "sd": v.std(ddof=1)} for k, v in flat.items()}
    return pd.DataFrame.from_dict(rows, orient="index")


def compare(results: Mapping, reference=None) -> pd.DataFrame:
    """One row per method x parameter: posterior summaries, diagnostics, reference gaps.

    Parameters
    ----------
    results : mapping of str to result or DataTree
        E.g. ``{"nuts": run_nuts(...), "svi-mvn": fit_svi(...)}``.
    reference : DataFrame, mapping, result or DataTree, optional
        The answer to measure against (exact posterior, posteriordb, a long NUTS run).
    """
    if not results:
        raise ValueError("compare needs at least one result")
    ref = reference_frame(reference) if reference is not None else None
    frames = []
    for method, result in results.items():
        frame = _summary(as_datatree(result))
        frame.insert(0, "parameter", frame.index)
        frame.insert(0, "method", method)
        if ref is not None:
            frame["ref_mean"], frame["ref_sd"] = np.nan, np.nan
            known = frame["parameter"].isin(ref.index)
            frame.loc[known, "ref_mean"] = ref.loc[frame["parameter"][known], "mean"].values
            frame.loc[known, "ref_sd"] = ref.loc[frame["parameter"][known], "sd"].values
            frame["z_mean"] = (frame["mean"] - frame["ref_mean"]) / frame["ref_sd"]
            frame["sd_ratio"] = frame["sd"] / frame["ref_sd"]
        frames.append(frame.reset_index(drop=True))
    return pd.concat(frames, ignore_index=True)


def _summary(tree: xr.DataTree) -> pd.DataFrame:
    """One ``arviz_stats`` summary of a result's posterior, in vilab's column names.

    MCMC draws keep ArviZ's ESS, R-hat and MCSE. Draws from a guide are independent:
    their ESS is their number, MCSE = sd / sqrt(draws), and R-hat does not apply.
    """
    posterior = tree.posterior.to_dataset()
    table = az.summary(posterior, kind="all", round_to="none", ci_prob=0.9, ci_kind="eti")
    table = table.rename(columns={"eti90_lb": "q05", "eti90_ub": "q95"})
    table = table[["mean", "sd", "q05", "q95", "mcse_mean", "ess_bulk", "r_hat"]].astype(float)
    if not _is_mcmc(tree):
        draws = posterior.sizes["chain"] * posterior.sizes["draw"]
        table["ess_bulk"], table["r_hat"] = float(draws), np.nan
        table["mcse_mean"] = table["sd"] / np.sqrt(draws)
    return table


def method_table(
    results: Mapping,
    log_evidence: float | None = None,
    case: str | None = None,
    num_particles: int = 2000,
    parameters: pd.DataFrame | None = None,
) -> pd.DataFrame:
    """One row per method: time, ELBO (nats, whole data set), evidence gap, diagnostics.

    ``khat``: PSIS k-hat of the guide's importance weights (below 0.5 the guide can be
    trusted, 0.5-0.7 with care, above 0.7 not).

    ``kl_gap = log_evidence - elbo`` is KL(q || p) when the exact log evidence is known.
    A point-mass (MAP) guide has no entropy, so its ELBO is not a bound and is left out.
    For EM (:func:`~inference.run_em`) ``elbo`` is its ELBO over the assignments at the
    estimate, ``N x lower_bound`` (the log-likelihood, plus the log prior for MAP-EM), and
    ``num_steps`` its iterations.
    ``parameters`` (the output of :func:`compare`) saves recomputing diagnostics.
    """
    params = parameters if parameters is not None else compare(results)
    rows = []
    for method, result in results.items():
        if not isinstance(result, SVIResult | NUTSResult | EMResult):
            raise TypeError(
                f"method_table needs engine results (fit_svi, run_nuts, run_em), got "
                f"{type(result).__name__} for {method!r}"
            )
        row = {"case": case, "method": method, "elapsed_s": result.elapsed_s}
        if isinstance(result, EMResult):
            num_points = len(result.responsibilities)
            row.update(elbo=result.lower_bound * num_points, num_steps=result.n_iter)
            row["converged"] = result.converged
        if isinstance(result, SVIResult) and not result.point_mass:
            est = result.elbo(num_particles=num_particles)
            row.update(elbo=est.value, elbo_mcse=est.mcse, iwae=est.iwae, khat=est.khat)
        if log_evidence is not None:
            row["log_evidence"] = log_evidence
            if "elbo" in row:
                row["kl_gap"] = log_evidence - row["elbo"]
        mine = params[params["method"] == method]
        if isinstance(result, NUTSResult):
            row["divergences"] = int(result.stats["diverging"].sum())
            row["min_ess_bulk"] = float(mine["ess_bulk"].min())
            row["max_r_hat"] = float(mine["r_hat"].max())
            row["ess_bulk_per_s"] = row["min_ess_bulk"] / row["elapsed_s"]
        if isinstance(result, SVIResult):
            row["num_steps"] = result.num_steps
            row["converged"] = result.converged
        rows.append(row)
    return pd.DataFrame(rows)
