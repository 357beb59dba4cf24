"""Conversion of draws to ``xarray.DataTree`` in the ArviZ 1.x layout.

ArviZ 1.x has no Pyro converter; this is ours. Groups: ``posterior`` (chain, draw,
...), ``sample_stats`` (MCMC only), ``log_likelihood`` (chain, draw, ...) and
``observed_data``, and for a model with summed-out discrete sites ``assignments``:
per data point the posterior probability of each value of the site (dim
``<site>_value``), averaged over all chains and draws. A dimension is named by
``dims`` (``{"w": ["component"]}``), else after the plate it came from
(``school``), else ``<site>_dim_<k>``. Coordinate labels come from ``coords`` (the
engines default it to a ``coords`` attribute on the model function,
``{"school": ["Choate", ...]}``) when lengths match; ``dims`` likewise adds to a
``dims`` attribute on the model function.
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


def _site_dims(name: str, site: SiteDraws, dims: dict) -> tuple[str, ...]:
    """The names of a site's non-sample dims: ``dims[name]`` if given, else its own."""
    given = dims.get(name)
    if given is None:
        return site.dims
    given = [given] if isinstance(given, str) else list(given)
    if len(given) != len(site.dims):
        raise ValueError(
            f"dims for site {name!r} name {len(given)} dims {given}, but the site has "
            f"{len(site.dims)}: {list(site.dims)}"
        )
    return tuple(given)


def _dataset(
    group: dict[str, SiteDraws], num_chains: int | None, coords: dict, dims: dict
) -> xr.Dataset:
    data_vars, all_coords = {}, {}
    for name, site in group.items():
        values, names = site.values, _site_dims(name, site, dims)
        if num_chains is None:
            var_dims = names
        else:
            values = values.reshape((num_chains, -1) + values.shape[1:])
            var_dims = ("chain", "draw") + names
        site_shape = site.values.shape if num_chains is None else site.values.shape[1:]
        site_coords = _coords_for(names, site_shape, coords)
        for dim, labels in site_coords.items():
            if dim in all_coords and len(all_coords[dim]) != len(labels):
                raise ValueError(f"dimension {dim!r} has two lengths across sites")
            all_coords.setdefault(dim, labels)
        data_vars[name] = (var_dims, values)
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
    dims: dict | None = None,
) -> xr.DataTree:
    """Build the DataTree of ``draws`` whose draw axis holds ``num_chains`` chains.

    Parameters
    ----------
    draws : Draws
        The draws, ``num_chains`` chains one after the other along the draw axis.
    num_chains : int
        Chains in ``draws``.
    sample_stats : dict of str to numpy.ndarray, optional
        Sampler statistics, each of shape (chain, draw).
    coords : dict of str to sequence, optional
        Labels of a dim, by dim name, as in ArviZ's converters (``{"school": [...]}``).
    attrs : dict, optional
        Attributes of every group.
    dims : dict of str to list of str, optional
        Names of a site's non-sample dims, in order, by site name, as in ArviZ's
        converters (``{"w": ["component"]}``); for an observed site they name the
        dims of its observed data and of its log-likelihood.

    Raises
    ------
    ValueError
        If ``dims`` gives a site a number of names other than its number of dims.
    """
    coords, dims = dict(coords or {}), dict(dims or {})
    groups = {
        "posterior": _dataset(draws.posterior, num_chains, coords, dims),
        "log_likelihood": _dataset(draws.log_likelihood, num_chains, coords, dims),
        "observed_data": _dataset(draws.observed_data, None, coords, dims),
        "assignments": _dataset(_averaged(draws.assignments), None, coords, {}),
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


def _averaged(group: dict[str, SiteDraws]) -> dict[str, SiteDraws]:
    """Each site's values averaged over the draw axis."""
    return {k: SiteDraws(v.values.mean(0), v.dims) for k, v in group.items()}


def model_coords(model) -> dict:
    """The ``coords`` attribute of a model function, if any."""
    coords = getattr(model, "coords", None)
    return dict(coords) if isinstance(coords, dict) else {}


def model_dims(model) -> dict:
    """The ``dims`` attribute of a model function, if any (``{"locs": ["component",
    "feature"]}``): the names of its sites' dims, as ``dims=`` gives them."""
    dims = getattr(model, "dims", None)
    return dict(dims) if isinstance(dims, dict) else {}
