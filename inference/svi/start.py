"""The guide a fit starts from: a callable as given, or an autoguide at the MAP/Laplace start.

Autoguides by name start at the MAP, in the basis of the Laplace approximation (see
:mod:`guides.auto`), so badly scaled and correlated posteriors need no tuning. Where
the Laplace approximation is a poor fit (its importance weights show more than
``POOR_START_NATS`` between IWAE and ELBO) they start from the prior median in the
identity basis instead.
"""

import dataclasses

import pyro
import torch

from inference.evidence import estimate_elbo
from inference.sites import unconstrained_sites
from inference.svi.laplace import laplace as laplace_fit

POOR_START_NATS = 1.0  # IWAE - ELBO of the Laplace start above which it is not used


def resolve_guide(guide, model, args, kwargs):
    """``(guide callable, autoguide name or None, Laplace start or None)``."""
    if callable(guide) and not isinstance(guide, str):
        return guide, None, None
    if not isinstance(guide, str):
        raise TypeError(
            f"guide must be a callable or an autoguide name, not {type(guide).__name__}"
        )
    # The one import of guides from the engines: names are resolved here so users can
    # write fit_svi(model, "mvn", ...). The factory is generic; no model is bound.
    from guides.auto import AUTOGUIDES, autoguide

    if guide not in AUTOGUIDES:
        raise ValueError(f"unknown guide {guide!r}; choose one of: {', '.join(AUTOGUIDES)}")
    start = laplace_fit(model, args, kwargs)
    # Judge the Laplace approximation itself (full covariance), not the family built
    # on it: a mean-field start on a correlated posterior has a large IWAE - ELBO gap
    # even where the Laplace fit is exact, and is then the mean-field optimum.
    probe = autoguide("mvn", model, laplace=start)
    poor = start.ok and guide != "delta" and _poor_start(model, probe, args, kwargs)
    pyro.get_param_store().clear()  # the probe's parameters are not the fit's
    if poor:
        # The Laplace fit is far from the posterior (e.g. the MAP of eight schools sits
        # where little mass is): its centre and correlations would mislead. Start from
        # the prior median, keeping only the Laplace marginal sds as the scale of each
        # direction: in the identity basis Adam at lr 0.01 needs thousands of steps to
        # move mu its 4.5 units (a 0.1 sd error after 2000), in this one a few hundred.
        _, median, _ = unconstrained_sites(model, args, kwargs)
        variance = torch.linalg.inv(start.precision).diagonal()
        scaled = dataclasses.replace(start, loc=median, precision=torch.diag(1 / variance))
        start = dataclasses.replace(start, ok=False, message="Laplace start is a poor fit")
        return autoguide(guide, model, laplace=scaled), guide, start
    return autoguide(guide, model, laplace=start), guide, start


def _poor_start(model, guide, args, kwargs) -> bool:
    """True when importance weights of the initial guide show a gap of over
    ``POOR_START_NATS`` between the importance-weighted bound and the ELBO."""
    try:
        est = estimate_elbo(model, guide, args, kwargs, num_particles=256)
    except (RuntimeError, ValueError):
        return False
    return est.iwae - est.value > POOR_START_NATS


def check_guide_covers(guide_trace, prototype, latent, enumerating: bool) -> None:
    """Refuse a guide that lacks one of the model's latent sites, naming the site.

    A discrete site the guide does not sample is summed out by the ELBO, which needs
    ``elbo="enum"`` (``enumerating``) and the site marked for enumeration
    (``config_enumerate``); a continuous one must be in the guide.
    """
    sampled = {n for n, s in guide_trace.nodes.items() if s["type"] == "sample"}
    for name in latent:
        site = prototype.nodes[name]
        if name in sampled:
            continue
        if not site["fn"].support.is_discrete:
            raise ValueError(
                f"the guide has no site {name!r}, a latent site of the model: "
                "every latent site needs a pyro.sample in the guide with the same name"
            )
        if not enumerating:
            raise ValueError(
                f"latent site {name!r} is discrete and the guide does not sample it: sum it "
                "out with elbo='enum' (the site marked by @pyro.infer.config_enumerate), or "
                "sample it in a guide of your own"
            )
        if site["infer"].get("enumerate") != "parallel":
            raise ValueError(
                f"latent site {name!r} is discrete and not marked for enumeration: decorate "
                "the model with @pyro.infer.config_enumerate (or pass "
                "infer={'enumerate': 'parallel'} to its pyro.sample) so elbo='enum' sums it out"
            )
