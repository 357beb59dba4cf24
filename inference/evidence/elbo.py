"""Evidence: the ELBO with its Monte Carlo error, an importance-weighted bound and PSIS k̂.

For a guide ``q`` and model ``p(x, z)`` each particle ``z_s ~ q`` gives a log weight
``w_s = log p(x, z_s) - log q(z_s)``. Then

- ``ELBO = mean(w_s)``, with standard error ``sd(w_s) / sqrt(S)``;
- ``IWAE = logsumexp(w_s) - log S``, a tighter lower bound that tends to ``log p(x)``;
- ``khat``: PSIS k̂ of the same weights, the trust verdict of ``q``
  (:func:`inference.evidence.psis.verdict`).

All are in nats, for the whole data set (not per datum; a subsampled plate is
replayed on all its points). When the exact log evidence is known,
``log p(x) - ELBO = KL(q || p(z | x))``.

References
----------
Burda, Grosse & Salakhutdinov (2016). Importance Weighted Autoencoders. ICLR.
Yao, Vehtari, Simpson & Gelman (2018). Yes, but did it work?: Evaluating variational
inference. ICML.
"""

import math
from dataclasses import dataclass

import torch

from inference.evidence.psis import pareto_khat
from inference.posterior.replay import replay


@dataclass(frozen=True)
class ElboEstimate:
    """An ELBO estimate in nats (whole data set).

    value: mean log weight. mcse: its Monte Carlo standard error. iwae: the
    importance-weighted bound from the same particles. num_particles: S.
    khat: PSIS k̂ of the same log weights (see :mod:`inference.evidence.psis`;
    NaN for fewer than 25 particles).
    """

    value: float
    mcse: float
    iwae: float
    num_particles: int
    khat: float


def log_weights(model, guide, args, kwargs, num_particles: int) -> torch.Tensor:
    """``log p(x, z_s) - log q(z_s)`` for ``num_particles`` draws ``z_s`` from the guide.

    Whole data set: a subsampled plate is replayed on all its indices.
    """
    replayed = replay(model, args, kwargs, num_particles, guide=guide)
    return replayed.log_joint - replayed.log_guide


def estimate_elbo(model, guide, args, kwargs, num_particles: int) -> ElboEstimate:
    """The ELBO, its MCSE, the IWAE bound and PSIS k̂ from ``num_particles`` guide draws."""
    w = log_weights(model, guide, args, kwargs, num_particles).double()
    iwae = torch.logsumexp(w, 0) - math.log(num_particles)
    return ElboEstimate(
        value=float(w.mean()),
        mcse=float(w.std() / math.sqrt(num_particles)),
        iwae=float(iwae),
        num_particles=num_particles,
        khat=pareto_khat(w.cpu().numpy()),
    )
