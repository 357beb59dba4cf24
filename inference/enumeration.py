"""Discrete latent sites summed out: which ones, the enumerated model, and exact
log densities and posterior marginals with them marginalised.

A discrete latent site with finite support that no guide samples (and no MCMC chain
holds) is summed out exactly: the model runs under :func:`pyro.poutine.enum`, each
such site taking all its values along a dim of its own to the left of the model's
plates, and the factors are contracted by Pyro's tensor-tree einsum
(:func:`pyro.ops.contract.contract_to_tensor`), as ``TraceEnum_ELBO`` and Pyro's NUTS
potential do. Every engine that needs ``log p(x, theta)`` with the discrete sites
summed out (the MAP/Laplace start, the replay of draws behind the ELBO, IWAE and the
DataTree) asks this module, so they agree with each other and with Pyro's NUTS.

Scales follow ``TraceEnum_ELBO``: factors that touch an enumerated dim enter the
contraction unscaled (observations masked inside the sum, the enumerated sites'
own priors unmasked so a masked point sums to 0) and the contraction is multiplied by
their common scale after; factors that touch none are summed scaled as usual.

References
----------
Obermeyer, Bingham, Jankowiak, Pradhan, Chiu, Rush & Goodman (2019). Tensor
variable elimination for plated factor graphs. ICML.
"""

from collections import OrderedDict

import torch
from pyro import poutine
from pyro.ops import packed
from pyro.ops.contract import contract_to_tensor
from pyro.poutine.util import site_is_subsample

from inference.sites import latent_sites


def enumerated_sites(trace, given=()) -> tuple[str, ...]:
    """The discrete latent sites of a model trace that are summed out: every latent
    site with discrete support that is not in ``given`` (sampled by a guide, or held
    by MCMC draws). Refuses one that cannot be enumerated, naming it."""
    names = []
    for name in latent_sites(trace):
        fn = trace.nodes[name]["fn"]
        if name in given or not fn.support.is_discrete:
            continue
        if not fn.has_enumerate_support:
            raise ValueError(
                f"latent site {name!r} is discrete with no finite support "
                f"({type(fn).__name__}): only discrete sites that can be enumerated "
                "(Categorical, Bernoulli, ...) are summed out; marginalise it in the model"
            )
        names.append(name)
    return tuple(names)


def enumerate_model(model, names, first_available_dim: int):
    """``model`` with the sites ``names`` enumerated in parallel, their dims allocated
    from ``first_available_dim`` leftwards (left of every plate, draw plate included)."""
    if not names:
        return model
    wanted = frozenset(names)

    def mark(site):
        return {"enumerate": "parallel"} if site["name"] in wanted else {}

    marked = poutine.infer_config(model, config_fn=mark)
    return poutine.enum(marked, first_available_dim=first_available_dim)


def _all_sites(name, site) -> bool:
    return True


class _Factors:
    """The log factors of an enumerated trace, split as ``TraceEnum_ELBO`` splits them."""

    def __init__(self, trace, site_filter=_all_sites):
        trace.compute_log_prob()
        trace.pack_tensors()
        self.trace = trace
        sites = [
            (name, site)
            for name, site in trace.nodes.items()
            if site["type"] == "sample" and not site_is_subsample(site) and site_filter(name, site)
        ]
        self.enum_symbols = {
            site["infer"]["_enumerate_symbol"]
            for _, site in sites
            if site["infer"].get("_enumerate_dim") is not None
        }
        self.plain = []  # (name, scaled masked log density) touching no enumerated dim
        self.tied = []  # (name, ordinal, unscaled log density) touching one
        scales = []
        for name, site in sites:
            lp = site["packed"]
            if site["infer"].get("_enumerate_dim") is not None:
                self.tied.append((name, self.ordinal(site), lp["unscaled_log_prob"]))
            elif self.enum_symbols.isdisjoint(lp["log_prob"]._pyro_dims):
                self.plain.append((name, lp["log_prob"]))
                continue
            else:
                masked = packed.scale_and_mask(lp["unscaled_log_prob"], mask=lp["mask"])
                self.tied.append((name, self.ordinal(site), masked))
            scales.append(site["scale"])
        self.scale = _common_scale(scales, [n for n, _, _ in self.tied])

    def ordinal(self, site) -> frozenset:
        """The plate symbols of a site's vectorized plates of size > 1 (a plate of one
        leaves no dim in a packed tensor, so the contraction must not ask for it)."""
        return frozenset(
            self.trace.plate_to_symbol[f.name]
            for f in site["cond_indep_stack"]
            if f.vectorized and f.size > 1
        )

    def contract(self, target_ordinal, target_dims=frozenset(), without=None):
        """The tied factors (all but ``without``) contracted to ``target_ordinal``."""
        tree = OrderedDict()
        for name, ordinal, value in self.tied:
            if name != without:
                tree.setdefault(ordinal, []).append(value)
        if not tree:
            return None
        return contract_to_tensor(
            tree, self.enum_symbols, target_ordinal=target_ordinal, target_dims=set(target_dims)
        )


def _common_scale(scales, names):
    if not scales:
        return 1.0
    first = torch.as_tensor(scales[0], dtype=torch.float64)
    for scale, name in zip(scales[1:], names[1:], strict=True):
        if not torch.allclose(torch.as_tensor(scale, dtype=torch.float64), first, rtol=1e-9):
            raise ValueError(
                f"site {name!r} has a different likelihood scale from {names[0]!r}, though both "
                "depend on an enumerated site: summing out needs one scale for them (a "
                "subsampled plate must hold every site that depends on its enumerated sites)"
            )
    return scales[0]


def _total(value, keep: str | None) -> torch.Tensor:
    """Sum a packed tensor over every dim but ``keep``'s: shape () or (size of keep,)."""
    dims = value._pyro_dims
    if keep is None or keep not in dims:
        return value.sum()
    index = dims.index(keep)
    other = [i for i in range(len(dims)) if i != index]
    return value.sum(other) if other else value


def log_density(trace, site_filter=_all_sites, keep_plate: str | None = None) -> torch.Tensor:
    """``log p`` of the sites of ``trace`` (passing ``site_filter``) with its enumerated
    sites summed out (nats).

    A scalar, or one value per index of the plate ``keep_plate`` (e.g. a plate of
    draws), shape ``(size,)`` — or ``()`` where nothing depends on that plate.
    """
    enumerated = any(
        site["type"] == "sample" and site["infer"].get("_enumerate_dim") is not None
        for site in trace.nodes.values()
    )
    if not enumerated and keep_plate is None:
        # No plates to read: Pyro's own sum, which also takes batch dims that are not plates.
        return torch.as_tensor(trace.log_prob_sum(site_filter))
    factors = _Factors(trace, site_filter)
    keep = trace.plate_to_symbol.get(keep_plate) if keep_plate is not None else None
    total = torch.zeros(())
    for _, value in factors.plain:
        total = total + _total(value, keep)
    # Contract to the kept plate where the tied factors have it (not a plate of one).
    tied_keep = any(keep in ordinal for _, ordinal, _ in factors.tied)
    target = frozenset({keep}) if keep is not None and tied_keep else frozenset()
    tied = factors.contract(target)
    if tied is not None:
        total = total + factors.scale * _total(tied, keep)
    return total


def _unpacked(value, trace, width: int) -> torch.Tensor:
    """A packed tensor unpacked to its dims, left-padded to ``width`` dims."""
    out = packed.unpack(value, trace.symbol_to_dim)
    return out.reshape((1,) * (width - out.dim()) + tuple(out.shape))


def observed_log_likelihood(trace, width: int, site_filter=_all_sites) -> dict:
    """Pointwise ``log p(x_i | theta)`` of each observed site that depends on an
    enumerated site, with the enumerated sites summed out.

    For an observed site ``x`` this is ``log Z(all factors) - log Z(all but x)``, both
    contracted to ``x``'s plates: for a mixture, ``log sum_k w_k p(x_i | theta_k)``.
    Each value is unpacked to ``width`` dims (the draw plate's and the model's).
    """
    factors = _Factors(trace, site_filter)
    out = {}
    for name, ordinal, _ in factors.tied:
        site = trace.nodes[name]
        if not site["is_observed"]:
            continue
        value = _unpacked(factors.contract(ordinal), trace, width)
        rest = factors.contract(ordinal, without=name)
        if rest is not None:
            value = value - _unpacked(rest, trace, width)
        out[name] = value
    return out


def assignment_probs(trace, width: int, site_filter=_all_sites) -> dict:
    """Posterior probabilities of each enumerated site's values, ``p(z_i = k | x, theta)``.

    Returns ``{site: tensor}`` with the site's values along the last dim (in the order
    of its distribution's ``enumerate_support``) and the plates to its left, unpacked
    to ``width`` dims before it.

    References
    ----------
    Pyro's ``TraceEnum_ELBO.compute_marginals``, which contracts the same way.
    """
    factors = _Factors(trace, site_filter)
    out = {}
    for name, ordinal, _ in factors.tied:
        site = trace.nodes[name]
        if site["infer"].get("_enumerate_dim") is None:
            continue
        symbol = site["infer"]["_enumerate_symbol"]
        logits = factors.contract(ordinal, target_dims={symbol})
        full = packed.unpack(logits, trace.symbol_to_dim)
        enum_dim = site["infer"]["_enumerate_dim"]
        full = full.reshape((1,) * (-enum_dim - full.dim()) + tuple(full.shape))
        moved = full.movedim(enum_dim, -1)  # values last, the plates before them
        moved = moved.reshape(tuple(moved.shape[-width - 1 :]))
        out[name] = torch.softmax(moved, dim=-1)
    return out
