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
    return f"{name}[{','.join(str(i) for i in index)}]"


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


def _diagnostics(values: np.ndarray) -> tuple[float, float, float]:
    da = xr.DataArray(values, dims=SAMPLE_DIMS)
    ess = float(az.ess(da, method="bulk"))
    rhat = float(az.rhat(da)) if values.shape[0] > 1 else np.nan
    mcse = float(az.mcse(da, method="mean"))
    return ess, rhat, mcse


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
    rows = []
    for method, result in results.items():
        tree = as_datatree(result)
        mcmc = _is_mcmc(tree)
        for label, values in flatten(tree.posterior.to_dataset()).items():
            flat = values.reshape(-1)
            row = {
                "method": method,
                "parameter": label,
                "mean": flat.mean(),
                "sd": flat.std(ddof=1),
                "q05": np.quantile(flat, 0.05),
                "q95": np.quantile(flat, 0.95),
            }
            if mcmc:
                row["ess_bulk"], row["r_hat"], row["mcse_mean"] = _diagnostics(values)
            else:  # independent draws from q: ESS = draws, MCSE = sd / sqrt(draws)
                row["ess_bulk"], row["r_hat"] = float(flat.size), np.nan
                row["mcse_mean"] = row["sd"] / np.sqrt(flat.size)
            if ref is not None and label in ref.index:
                row["ref_mean"] = float(ref.loc[label, "mean"])
                row["ref_sd"] = float(ref.loc[label, "sd"])
                row["z_mean"] = (row["mean"] - row["ref_mean"]) / row["ref_sd"]
                row["sd_ratio"] = row["sd"] / row["ref_sd"]
            rows.append(row)
    return pd.DataFrame(rows)


def method_table(
    results: Mapping,
    log_evidence: float | None = None,
    case: str | None = None,
    num_particles: int = 2000,
    parameters: pd.DataFrame | None = None,
) -> pd.DataFrame:
    """One row per method: time, ELBO (nats, whole data set), evidence gap, diagnostics.

    ``kl_gap = log_evidence - elbo`` is KL(q || p) when the exact log evidence is known.
    A point-mass (MAP) guide has no entropy, so its ELBO is not a bound and is left out.
    ``parameters`` (the output of :func:`compare`) saves recomputing diagnostics.
    """
    params = parameters if parameters is not None else compare(results)
    rows = []
    for method, result in results.items():
        row = {"case": case, "method": method, "elapsed_s": getattr(result, "elapsed_s", np.nan)}
        if hasattr(result, "elbo") and getattr(result, "guide_name", None) != "delta":
            est = result.elbo(num_particles=num_particles)
            row.update(elbo=est.value, elbo_mcse=est.mcse, iwae=est.iwae)
        if log_evidence is not None:
            row["log_evidence"] = log_evidence
            if "elbo" in row:
                row["kl_gap"] = log_evidence - row["elbo"]
        mine = params[params["method"] == method]
        if hasattr(result, "stats"):
            row["divergences"] = int(result.stats["diverging"].sum())
            row["min_ess_bulk"] = float(mine["ess_bulk"].min())
            row["max_r_hat"] = float(mine["r_hat"].max())
            row["ess_bulk_per_s"] = row["min_ess_bulk"] / row["elapsed_s"]
        if hasattr(result, "losses"):
            row["num_steps"] = result.num_steps
            row["converged"] = result.converged
        rows.append(row)
    return pd.DataFrame(rows)
