"""Evidence: the ELBO with its Monte Carlo error, and an importance-weighted bound.

For a guide ``q`` and model ``p(x, z)`` each particle ``z_s ~ q`` gives a log weight
``w_s = log p(x, z_s) - log q(z_s)``. Then

- ``ELBO = mean(w_s)``, with standard error ``sd(w_s) / sqrt(S)``;
- ``IWAE = logsumexp(w_s) - log S``, a tighter lower bound that tends to ``log p(x)``.

Both are in nats, for the whole data set (not per datum). When the exact log evidence
is known, ``log p(x) - ELBO = KL(q || p(z | x))``.

References
----------
Burda, Grosse & Salakhutdinov (2016). Importance Weighted Autoencoders. ICLR.
"""

import math
from dataclasses import dataclass

import pyro
import torch
from pyro import poutine

from inference.posterior.draws import DRAW_PLATE
from inference.sites import max_plate_nesting, trace_model


@dataclass(frozen=True)
class ElboEstimate:
    """An ELBO estimate in nats (whole data set).

    value: mean log weight. mcse: its Monte Carlo standard error. iwae: the
    importance-weighted bound from the same particles. num_particles: S.
    """

    value: float
    mcse: float
    iwae: float
    num_particles: int


def _per_particle(trace, nesting: int, num: int) -> torch.Tensor:
    total = torch.zeros(num)
    for site in trace.nodes.values():
        if site["type"] != "sample":
            continue
        lp = site["log_prob"].detach()
        if lp.dim() == nesting + 1:
            total = total + lp.reshape(lp.shape[0], -1).sum(-1).expand(num)
        else:
            total = total + lp.sum()
    return total


def log_weights(model, guide, args, kwargs, num_particles: int) -> torch.Tensor:
    """``log p(x, z_s) - log q(z_s)`` for ``num_particles`` draws ``z_s`` from the guide."""
    nesting = max_plate_nesting(trace_model(model, args, kwargs))
    try:
        with poutine.block(), pyro.plate(DRAW_PLATE, num_particles, dim=-nesting - 1):
            guide_trace = poutine.trace(guide).get_trace(*args, **kwargs)
            model_trace = poutine.trace(poutine.replay(model, trace=guide_trace)).get_trace(
                *args, **kwargs
            )
        guide_trace.compute_log_prob()
        model_trace.compute_log_prob()
        return _per_particle(model_trace, nesting, num_particles) - _per_particle(
            guide_trace, nesting, num_particles
        )
    except (RuntimeError, ValueError, IndexError):
        out = []
        for _ in range(num_particles):
            with poutine.block():
                guide_trace = poutine.trace(guide).get_trace(*args, **kwargs)
                model_trace = poutine.trace(poutine.replay(model, trace=guide_trace)).get_trace(
                    *args, **kwargs
                )
            out.append(model_trace.log_prob_sum() - guide_trace.log_prob_sum())
        return torch.stack(out).detach()


def estimate_elbo(model, guide, args, kwargs, num_particles: int) -> ElboEstimate:
    """The ELBO, its MCSE and the IWAE bound from ``num_particles`` guide draws."""
    w = log_weights(model, guide, args, kwargs, num_particles).double()
    iwae = torch.logsumexp(w, 0) - math.log(num_particles)
    return ElboEstimate(
        value=float(w.mean()),
        mcse=float(w.std() / math.sqrt(num_particles)),
        iwae=float(iwae),
        num_particles=num_particles,
    )
