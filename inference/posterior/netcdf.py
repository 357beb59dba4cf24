"""DataTrees to and from NetCDF files."""

import json

import numpy as np
import xarray as xr


def netcdf_safe(tree: xr.DataTree) -> xr.DataTree:
    """A copy of ``tree`` that NetCDF can store: plain attributes, no object arrays.

    Booleans in attributes become 0/1, None is dropped, other non-scalars become JSON
    strings; object-dtype variables and coordinates (e.g. Python strings) become unicode.
    """

    def clean_attrs(attrs):
        out = {}
        for key, value in attrs.items():
            if value is None:
                continue
            if isinstance(value, bool | np.bool_):
                out[key] = int(value)
            elif isinstance(value, str | int | float | np.integer | np.floating):
                out[key] = value
            elif isinstance(value, np.ndarray) and value.dtype.kind in "iuf":
                out[key] = value
            else:
                out[key] = json.dumps(value, default=str)
        return out

    def clean(ds: xr.Dataset) -> xr.Dataset:
        ds = ds.copy()
        for name in list(ds.variables):
            var = ds[name]
            if var.dtype == object:
                ds[name] = var.astype(str)
            ds[name].attrs = clean_attrs(ds[name].attrs)
        ds.attrs = clean_attrs(ds.attrs)
        return ds

    return xr.DataTree.from_dict({node.path: clean(node.to_dataset()) for node in tree.subtree})
