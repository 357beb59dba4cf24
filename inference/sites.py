"""What a model declares: its trace from the prior, plates, latent sites and their supports.

Every engine asks these questions of a user's model before it runs; they live here so
that SVI, NUTS and the draws answer them the same way.
"""

import torch
from pyro import poutine
from pyro.distributions.transforms import biject_to
from pyro.infer.autoguide.initialization import InitMessenger
from pyro.poutine.util import site_is_subsample


def zero_point(fn) -> torch.Tensor:
    """The point of ``fn``'s support at 0 in the unconstrained space (no sampling needed)."""
    transform = biject_to(fn.support)
    return transform(torch.zeros(transform.inverse_shape(fn.batch_shape + fn.event_shape)))


def _prior_draw(site):
    """A draw from the site's prior; for a prior that cannot be sampled, its zero point."""
    try:
        return site["fn"].sample().detach()
    except NotImplementedError:  # e.g. ImproperUniform
        return zero_point(site["fn"])


def trace_model(model, args, kwargs):
    """One trace of ``model`` drawn from its prior, blocked from any outer handler.

    Latent sites whose prior cannot be sampled (``ImproperUniform``) get a feasible value.
    """
    with poutine.block():
        return poutine.trace(InitMessenger(_prior_draw)(model)).get_trace(*args, **kwargs)


def max_plate_nesting(trace) -> int:
    """How many plates a model trace nests (a draw plate goes to their left)."""
    dims = [
        f.dim
        for site in trace.nodes.values()
        if site["type"] == "sample"
        for f in site["cond_indep_stack"]
        if f.vectorized
    ]
    return -min(dims) if dims else 0


def latent_sites(trace) -> list[str]:
    """Names of the latent (sampled, not observed, not auxiliary) sites of a trace."""
    return [
        name
        for name, site in trace.nodes.items()
        if site["type"] == "sample"
        and not site["is_observed"]
        and not site_is_subsample(site)
        and not site["infer"].get("is_auxiliary")
    ]


def feasible_value(site) -> torch.Tensor:
    """A point inside the support: the prior median, or 0 unconstrained for improper priors."""
    fn = site["fn"]
    transform = biject_to(fn.support)
    try:
        draws = torch.stack([fn.sample() for _ in range(15)])
        value = draws.median(dim=0).values
        if torch.isfinite(transform.inv(value)).all():
            return value
    except (NotImplementedError, ValueError, RuntimeError):
        pass
    return zero_point(fn)


def unconstrained_sites(model, args, kwargs):
    """The continuous latent sites, their feasible starts (unconstrained) and transforms.

    Discrete sites are left out: the engines sum them out (enumeration).
    """
    trace = trace_model(model, args, kwargs)
    names = [n for n in latent_sites(trace) if not trace.nodes[n]["fn"].support.is_discrete]
    sites, starts, transforms = [], [], {}
    for name in names:
        site = trace.nodes[name]
        transform = biject_to(site["fn"].support)
        u = transform.inv(feasible_value(site))
        sites.append((name, tuple(u.shape)))
        starts.append(u.reshape(-1))
        transforms[name] = transform
    start = torch.cat(starts) if starts else torch.zeros(0)
    return tuple(sites), start, transforms


def subsampled_plates(trace) -> dict[str, tuple[int, int]]:
    """``{plate name: (size, subsample size)}`` for each plate of a trace that subsamples."""
    plates = {
        name: (site["fn"].size, len(site["value"]))
        for name, site in trace.nodes.items()
        if site["type"] == "sample" and site_is_subsample(site)
    }
    return {name: sizes for name, sizes in plates.items() if sizes[1] < sizes[0]}


def plate_size(trace, plate: str) -> int:
    """The full size of the plate ``plate`` of ``trace``; ValueError listing its plates."""
    site = trace.nodes.get(plate)
    if site is None or not site_is_subsample(site):
        plates = sorted(name for name, s in trace.nodes.items() if site_is_subsample(s))
        raise ValueError(
            f"the model has no plate {plate!r}; its plates: {', '.join(plates) or 'none'}"
        )
    return int(site["fn"].size)
