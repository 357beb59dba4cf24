"""Undo label switching in the posterior draws of a mixture.

A mixture's likelihood and (exchangeable) prior are invariant to permuting the
component labels, so its posterior has K! symmetric modes. A sampler may visit
several of them: chains may settle in different labellings, and a chain may switch
labelling between draws. Per-component summaries (means, R-hat) are then
meaningless until every draw is put in one common labelling, which is what
:func:`relabel` does.
"""

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import xarray as xr
from scipy.optimize import linear_sum_assignment

SAMPLE_DIMS = ("chain", "draw")


@dataclass(frozen=True)
class _Relabelling:
    permutations: np.ndarray
    """(chain, draw, K) ints: ``permutations[c, d, j]`` is the component of draw
    (c, d) that gets label j."""
    iterations: int
    """Assignment passes made."""
    converged: bool
    """The last pass changed no draw's permutation."""


def relabel(
    tree: xr.DataTree,
    dim: str = "component",
    *,
    reference=None,
    max_iter: int = 100,
) -> xr.DataTree:
    r"""Undo label switching: permute every posterior variable with ``dim`` alike, per draw.

    Parameters
    ----------
    tree : xarray.DataTree
        Draws in the ArviZ 1.x layout; its ``posterior`` group has dims (chain, draw, ...).
    dim : str, default "component"
        The dim whose labels are exchangeable (a mixture's components). It may sit at any
        position of a variable; the variable's other dims (a location's ``feature``) are
        kept and move with it.
    reference : dict, xarray.Dataset or xarray.DataTree, optional
        The labelling to match. A dict maps variable names to arrays over the variable's
        non-sample dims, in the variable's own dim order (a ``DataArray`` is transposed
        by name), e.g. ``{"locs": true_locs}``; it may name only some of the variables
        with ``dim``, and those alone define the first assignment. A Dataset or a
        DataTree (its ``posterior`` group) gives its mean over chain and draw of every
        such variable it holds. Default: the per-component posterior mean of the first
        chain.
    max_iter : int, default 100
        The most assignment passes.

    Returns
    -------
    xarray.DataTree
        A new tree; the input is not changed. Its ``posterior`` holds every variable with
        ``dim`` relabelled and the others as they were, with attrs ``relabelled_dim``,
        ``relabel_fraction_permuted`` (the fraction of draws whose permutation is not the
        identity), ``relabel_iterations`` (assignment passes) and ``relabel_converged``
        (1 if the last pass changed nothing, else 0). Every other group is copied
        unchanged.

    Raises
    ------
    ValueError
        If the tree has no ``posterior`` group, no posterior variable has ``dim`` (the
        dims that exist are listed), ``dim`` is a sample dim, a variable with ``dim``
        lacks chain or draw, or ``reference`` names an unknown variable or has the wrong
        shape.
    TypeError
        If ``tree`` is not a DataTree or ``reference`` is of an unsupported type.

    See Also
    --------
    relabel_permutations : the permutations alone.

    Notes
    -----
    The iterative relabelling of Stephens (2000), with a squared distance on standardised
    parameters as the loss (the k-means-type choice that Jasra, Holmes & Stephens (2005)
    review) rather than Stephens' Kullback-Leibler loss on allocation probabilities,
    which a posterior over parameters alone does not hold.

    Let :math:`\theta^{(n)}_k \in \mathbb{R}^P` be draw n's component k: the values of
    all posterior variables with ``dim`` at position k, their other dims flattened, each
    scalar standardised by its mean and sd pooled over chains, draws *and components*
    (pooling over components makes the scale itself label-invariant, and puts locations,
    scales and weights on comparable scales). From a reference :math:`\mu_j`, each draw
    gets the permutation

    .. math:: \sigma_n = \arg\min_\sigma \sum_{j=1}^K
              \lVert \theta^{(n)}_{\sigma(j)} - \mu_j \rVert^2 ,

    a linear assignment problem solved exactly by the Hungarian method
    (:func:`scipy.optimize.linear_sum_assignment`) on the draw's K x K cost matrix. Then
    :math:`\mu_j` becomes the mean of the relabelled draws, and the two steps repeat
    until no draw's permutation changes (or ``max_iter``). Each pass lowers (or keeps)
    the total squared distance, as in k-means, so the loop ends.

    Because :math:`\lVert\theta_k\rVert^2` and :math:`\lVert\mu_j\rVert^2` each add the
    same total to every permutation, the cost matrix is just
    :math:`-\theta^{(n)}_k \cdot \mu_j`: one ``einsum`` over all draws gives the
    (draws, K, K) cost tensor, and a loop of ``linear_sum_assignment`` over draws makes a
    pass over 16 000 draws at K = 3 in about 30 ms, with no K! enumeration at any K.

    One permutation per draw is applied to every variable with ``dim``, so a draw's
    weight, location and scale of a component stay together even where one variable
    alone (e.g. near-equal weights) would suggest another labelling.

    References
    ----------
    .. [1] Stephens, M. (2000). Dealing with label switching in mixture models.
       *Journal of the Royal Statistical Society: Series B*, 62(4), 795-809.
    .. [2] Jasra, A., Holmes, C. C., & Stephens, D. A. (2005). Markov chain Monte Carlo
       methods and the label switching problem in Bayesian mixture modeling.
       *Statistical Science*, 20(1), 50-67.

    Examples
    --------
    >>> tree = relabel(mc.to_datatree(), dim="component")  # doctest: +SKIP
    >>> tree["posterior"].attrs["relabel_fraction_permuted"]  # doctest: +SKIP
    """
    posterior, names = _posterior_and_names(tree, dim)
    result = _relabelling(posterior, names, dim, reference, max_iter)
    perms = result.permutations
    identity = np.arange(perms.shape[-1])
    new_posterior = posterior.copy()
    for name in names:
        new_posterior[name] = _permute(posterior[name], dim, perms)
    new_posterior.attrs.update(
        relabelled_dim=dim,
        relabel_fraction_permuted=float(np.mean(np.any(perms != identity, axis=-1))),
        relabel_iterations=result.iterations,
        relabel_converged=int(result.converged),
    )
    out = tree.copy()
    out["posterior"].dataset = new_posterior
    return out


def relabel_permutations(
    tree: xr.DataTree,
    dim: str = "component",
    *,
    reference=None,
    max_iter: int = 100,
) -> np.ndarray:
    """The per-draw permutations that :func:`relabel` applies.

    Parameters are those of :func:`relabel`.

    Returns
    -------
    numpy.ndarray
        Ints of shape (chain, draw, K): ``perms[c, d, j]`` is the component of draw
        (c, d) that gets label j, so a variable relabelled along ``dim`` is
        ``numpy.take_along_axis(values, perms, axis=dim's axis)`` (with ``perms``
        broadcast over the other dims).
    """
    posterior, names = _posterior_and_names(tree, dim)
    return _relabelling(posterior, names, dim, reference, max_iter).permutations


def _posterior_and_names(tree, dim: str) -> tuple[xr.Dataset, list[str]]:
    """The posterior group (own data only) and its variables that have ``dim``."""
    if not isinstance(tree, xr.DataTree):
        raise TypeError(f"relabel expects an xarray.DataTree, got {type(tree).__name__}")
    if "posterior" not in tree.children:
        raise ValueError(
            f"the tree has no 'posterior' group; its groups are {sorted(tree.children)}"
        )
    if dim in SAMPLE_DIMS:
        raise ValueError(f"dim {dim!r} is a sample dim; name the mixture's component dim")
    posterior = tree["posterior"].to_dataset(inherit=False)
    names = [name for name, da in posterior.data_vars.items() if dim in da.dims]
    if not names:
        dims = {d for da in posterior.data_vars.values() for d in da.dims}
        dims = sorted(dims - set(SAMPLE_DIMS))
        raise ValueError(
            f"no posterior variable has dim {dim!r}; the posterior's other dims are {dims}"
        )
    for name in names:
        missing = [d for d in SAMPLE_DIMS if d not in posterior[name].dims]
        if missing:
            raise ValueError(f"posterior variable {name!r} has dim {dim!r} but no {missing}")
    return posterior, names


def _event_dims(da: xr.DataArray, dim: str) -> list[str]:
    """A variable's non-sample dims, ``dim`` first, the others in their order."""
    return [dim] + [d for d in da.dims if d not in SAMPLE_DIMS and d != dim]


def _standardised(posterior, names, dim):
    """Draws as (draws, K, P) standardised features, and each variable's (mean, sd)."""
    blocks, scales = [], {}
    for name in names:
        da = posterior[name].transpose(*SAMPLE_DIMS, *_event_dims(posterior[name], dim))
        values = np.asarray(da.values, dtype=float)
        values = values.reshape(values.shape[0] * values.shape[1], values.shape[2], -1)
        mean = values.mean(axis=(0, 1))
        sd = values.std(axis=(0, 1))
        sd = np.where(np.isfinite(sd) & (sd > 0), sd, 1.0)
        scales[name] = (mean, sd)
        blocks.append((values - mean) / sd)
    return np.concatenate(blocks, axis=-1), scales


def _reference_arrays(reference, posterior, names, dim) -> dict[str, np.ndarray]:
    """``reference`` as arrays (K, ...) over each named variable's event dims, dim first."""
    if isinstance(reference, xr.DataTree):
        if "posterior" not in reference.children:
            raise ValueError("the reference tree has no 'posterior' group")
        reference = reference["posterior"].to_dataset()
    if isinstance(reference, xr.Dataset):
        found = {
            name: reference[name].mean([d for d in SAMPLE_DIMS if d in reference[name].dims])
            for name in names
            if name in reference.data_vars
        }
        if not found:
            raise ValueError(f"the reference holds none of the variables with dim {dim!r}: {names}")
        reference = found
    if not isinstance(reference, Mapping):
        raise TypeError(
            "reference must be a dict of arrays, an xarray.Dataset or an xarray.DataTree, "
            f"got {type(reference).__name__}"
        )
    if not reference:
        raise ValueError("the reference is empty")
    unknown = sorted(set(reference) - set(names))
    if unknown:
        raise ValueError(
            f"reference keys {unknown} are not posterior variables with dim {dim!r}: {names}"
        )
    arrays = {}
    for name, value in reference.items():
        da = posterior[name]
        event_dims = [d for d in da.dims if d not in SAMPLE_DIMS]
        expected = tuple(da.sizes[d] for d in event_dims)
        if isinstance(value, xr.DataArray):
            if set(value.dims) != set(event_dims):
                raise ValueError(
                    f"reference for {name!r} has dims {list(value.dims)}, expected {event_dims}"
                )
            value = value.transpose(*event_dims)
        value = np.asarray(value, dtype=float)
        if value.shape != expected:
            raise ValueError(
                f"reference for {name!r} has shape {value.shape}, expected {expected} "
                f"(dims {event_dims})"
            )
        arrays[name] = np.moveaxis(value, event_dims.index(dim), 0)
    return arrays


def _initial_reference(reference, features, posterior, names, dim, scales, num_draws):
    """The first reference (K, P) and the mask of feature columns it defines."""
    if reference is None:
        return features[:num_draws].mean(axis=0), np.ones(features.shape[-1], dtype=bool)
    arrays = _reference_arrays(reference, posterior, names, dim)
    num_components = features.shape[1]
    blocks, mask = [], []
    for name in names:
        mean, sd = scales[name]
        if name in arrays:
            blocks.append((arrays[name].reshape(num_components, -1) - mean) / sd)
            mask.append(np.ones(mean.size, dtype=bool))
        else:
            blocks.append(np.zeros((num_components, mean.size)))
            mask.append(np.zeros(mean.size, dtype=bool))
    return np.concatenate(blocks, axis=-1), np.concatenate(mask)


def _assign(features: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """Per draw, the permutation (draws, K) closest to ``reference`` in squared distance."""
    # |theta_k - mu_j|^2 = |theta_k|^2 + |mu_j|^2 - 2 theta_k . mu_j; the squared norms
    # add the same total to every permutation, so only the inner products matter.
    cost = -np.einsum("nkp,jp->nkj", features, reference)
    labels = np.array([linear_sum_assignment(matrix)[1] for matrix in cost])  # k -> label
    return np.argsort(labels, axis=1)  # label j -> component perms[n, j]


def _relabelling(posterior, names, dim, reference, max_iter) -> _Relabelling:
    if max_iter < 1:
        raise ValueError(f"max_iter must be at least 1, got {max_iter}")
    features, scales = _standardised(posterior, names, dim)
    num_chains, num_draws = (posterior[names[0]].sizes[d] for d in SAMPLE_DIMS)
    mu, columns = _initial_reference(reference, features, posterior, names, dim, scales, num_draws)
    previous, converged = None, False
    for iteration in range(max_iter):
        iterations = iteration + 1
        perms = _assign(features[..., columns], mu[:, columns])
        if previous is not None and np.array_equal(perms, previous):
            converged = True
            break
        previous = perms
        relabelled = np.take_along_axis(features, perms[..., None], axis=1)
        mu, columns = relabelled.mean(axis=0), np.ones(features.shape[-1], dtype=bool)
    return _Relabelling(perms.reshape(num_chains, num_draws, -1), iterations, converged)


def _permute(da: xr.DataArray, dim: str, perms: np.ndarray) -> xr.DataArray:
    """``da`` with its ``dim`` permuted per draw by ``perms`` (chain, draw, K)."""
    moved = da.transpose(*SAMPLE_DIMS, dim, ...)
    index = perms.reshape(perms.shape + (1,) * (moved.ndim - 3))
    return moved.copy(data=np.take_along_axis(moved.values, index, axis=2)).transpose(*da.dims)
