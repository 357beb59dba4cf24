"""Conversion of draws to ``xarray.DataTree`` in the ArviZ 1.x layout.

ArviZ 1.x has no Pyro converter; this is ours. Groups: ``posterior`` (chain, draw,
...), ``sample_stats`` (MCMC only), ``log_likelihood`` (chain, draw, ...) and
``observed_data``. A dimension is named after the plate it came from (``school``),
else ``<site>_dim_<k>``. Coordinate labels come from ``coords`` or from a ``coords``
attribute on the model function (``{"school": ["Choate", ...]}``) when lengths match.
"""

import numpy as np
import xarray as xr

from inference.posterior.draws import Draws, SiteDraws


def _coords_for(dims, shape, coords) -> dict:
    out = {}
    for dim, size in zip(dims, shape, strict=True):
        labels = coords.get(dim)
        if labels is not None and len(labels) == size:
            out[dim] = list(labels)
        else:
            out[dim] = np.arange(size)
    return out


def _dataset(group: dict[str, SiteDraws], num_chains: int | None, coords: dict) -> xr.Dataset:
    data_vars, all_coords = {}, {}
    for name, site in group.items():
        values = site.values
        if num_chains is None:
            dims = site.dims
        else:
            values = values.reshape((num_chains, -1) + values.shape[1:])
            dims = ("chain", "draw") + site.dims
        site_shape = site.values.shape if num_chains is None else site.values.shape[1:]
        site_coords = _coords_for(site.dims, site_shape, coords)
        for dim, labels in site_coords.items():
            if dim in all_coords and len(all_coords[dim]) != len(labels):
                raise ValueError(f"dimension {dim!r} has two lengths across sites")
            all_coords.setdefault(dim, labels)
        data_vars[name] = (dims, values)
    if num_chains is not None and group:
        draws = next(iter(data_vars.values()))[1].shape[1]
        all_coords["chain"] = np.arange(num_chains)
        all_coords["draw"] = np.arange(draws)
    return xr.Dataset(data_vars, coords=all_coords)


def to_datatree(
    draws: Draws,
    num_chains: int,
    sample_stats: dict[str, np.ndarray] | None = None,
    coords: dict | None = None,
    attrs: dict | None = None,
) -> xr.DataTree:
    """Build the DataTree of ``draws`` whose draw axis holds ``num_chains`` chains.

    ``sample_stats`` maps a statistic name to an array of shape (chain, draw).
    """
    coords = dict(coords or {})
    groups = {
        "posterior": _dataset(draws.posterior, num_chains, coords),
        "log_likelihood": _dataset(draws.log_likelihood, num_chains, coords),
        "observed_data": _dataset(draws.observed_data, None, coords),
    }
    if sample_stats:
        chains, length = next(iter(sample_stats.values())).shape
        groups["sample_stats"] = xr.Dataset(
            {k: (("chain", "draw"), np.asarray(v)) for k, v in sample_stats.items()},
            coords={"chain": np.arange(chains), "draw": np.arange(length)},
        )
    groups = {k: v for k, v in groups.items() if v.data_vars}
    for ds in groups.values():
        ds.attrs.update(attrs or {})
        ds.attrs.setdefault("inference_library", "pyro (via vilab)")
    return xr.DataTree.from_dict(groups)


def model_coords(model) -> dict:
    """The ``coords`` attribute of a model function, if any."""
    coords = getattr(model, "coords", None)
    return dict(coords) if isinstance(coords, dict) else {}
