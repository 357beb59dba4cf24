r"""Per-datum evidence: each data point's ELBO and importance-weighted bound on log p(x_i).

For a model whose latent sites are all local to one data plate (a VAE: one ``z_i`` per
image) and a guide over the same plate, every datum has its own bound. With ``k`` draws
``z_{i1..ik} ~ q(z | x_i)`` and log weights ``w_ij = log p(x_i, z_ij) - log q(z_ij | x_i)``:

.. math::

    \mathrm{ELBO}_i = \frac1k \sum_j w_{ij}, \qquad
    \mathrm{IWAE}_i(k) = \log \frac1k \sum_j e^{w_{ij}}
    \;\le\; \log p(x_i),

and ``IWAE_i(k)`` grows with ``k`` towards ``log p(x_i)`` (Burda et al. 2016), so
``log p(x_i) - ELBO_i ≈ IWAE_i(k) - ELBO_i`` estimates KL(q(z | x_i) ‖ p(z | x_i)).

The data are visited in chunks of the plate (the plate is handed each chunk's indices as
its subsample, so no plate-sized permutation is drawn), the ``k`` draws of a chunk are
one vectorized pass (a plate of draws outside the model's plates), and log densities
are read per site without the plate's ``N / n`` scale.
"""

import math
from dataclasses import dataclass

import numpy as np
import pyro
import torch
from pyro import poutine
from pyro.poutine.util import site_is_subsample

from inference.isolation import Room, check_seed, isolated, prepare, resolve_device
from inference.sites import max_plate_nesting, plate_size, trace_model
from inference.subsample import FirstIndices, GivenSubsample
from inference.validation import check_positive_int

DRAWS = "_per_datum_draws"
# Draws × data points × widest site value per chunk. The intermediate values of a network
# are wider than its sites: the digits VAE at k = 1000 took 4.0 s for its 360 test images
# in chunks of 262 (2**24 here), 1.7 s in chunks of 16 (2**20; 2026-12-03).
WORK = 2**20


@dataclass(frozen=True)
class PerDatumBounds:
    """Per-datum bounds in nats, arrays of shape (N,).

    elbo: the mean log weight of each datum. elbo_mcse: its Monte Carlo standard error.
    iwae: the importance-weighted bound with ``num_samples`` draws. num_samples: k.
    """

    elbo: np.ndarray
    elbo_mcse: np.ndarray
    iwae: np.ndarray
    num_samples: int

    @property
    def gap(self) -> np.ndarray:
        """``iwae - elbo``: an estimate (from below) of KL(q(z | x_i) ‖ p(z | x_i))."""
        return self.iwae - self.elbo


def per_datum_bounds(
    model,
    guide,
    *model_args,
    plate: str = "data",
    num_samples: int = 1000,
    seed: int = 0,
    model_kwargs: dict | None = None,
    chunk_size: int | None = None,
    dtype: torch.dtype | None = None,
    device=None,
) -> PerDatumBounds:
    """Each datum's ELBO and IWAE bound with ``num_samples`` draws from ``guide``.

    Parameters
    ----------
    model, guide, model_args, model_kwargs
        As for :func:`~inference.fit_svi`; every latent site of the model must be inside
        ``plate`` (a latent shared by the data has no per-datum bound).
    plate : str
        The data plate (its full size is the number of data points).
    num_samples : int
        k, draws per datum (vectorized).
    seed : int
        Seeds the draws; the caller's RNG state is left alone.
    chunk_size : int, optional
        Data points per pass (default: as many as keep a pass near ``WORK`` numbers; a
        plate with a ``subsample_size`` is visited that many points at a time).
    dtype, device
        As for :func:`~inference.fit_svi` (default: the arguments as given, on the CPU).
    """
    check_positive_int("num_samples", num_samples)
    room = Room(check_seed(seed), dtype, resolve_device(device), num_threads=None)
    args, kwargs = prepare(tuple(model_args), dict(model_kwargs or {}), room)
    with isolated(room):
        prototype = trace_model(FirstIndices()(model), args, kwargs)
        size, width = _plate_size(prototype, plate), _widest(prototype, plate)
        nesting = max_plate_nesting(prototype)
        fixed = prototype.nodes[plate]["fn"].subsample_size
        if fixed is not None and fixed < size:
            # The model fixes its minibatch size: Pyro takes no other number of indices.
            chunk_size = fixed
        elif chunk_size is None:
            chunk_size = max(1, min(size, WORK // (num_samples * width)))
        check_positive_int("chunk_size", chunk_size)
        parts = []
        with torch.no_grad():
            for start in range(0, size, chunk_size):
                indices = torch.arange(start, start + chunk_size, device=room.device)
                keep = min(size, start + chunk_size) - start
                # A last chunk short of a fixed size is filled from the start, then cut.
                parts.append(
                    _log_weights(
                        model, guide, args, kwargs, plate, indices % size, num_samples, nesting
                    )[:, :keep]
                )
    w = torch.cat(parts, dim=1).double()  # (k, N)
    k = num_samples
    mcse = w.std(0) / math.sqrt(k) if k > 1 else torch.full_like(w[0], float("nan"))
    return PerDatumBounds(
        elbo=w.mean(0).cpu().numpy(),
        elbo_mcse=mcse.cpu().numpy(),
        iwae=(torch.logsumexp(w, 0) - math.log(k)).cpu().numpy(),
        num_samples=k,
    )


def _plate_size(trace, plate: str) -> int:
    """The plate's size, after checking every latent site is inside it."""
    size = plate_size(trace, plate)
    outside = [
        name
        for name, s in trace.nodes.items()
        if s["type"] == "sample"
        and not s["is_observed"]
        and not site_is_subsample(s)
        and plate not in {f.name for f in s["cond_indep_stack"]}
    ]
    if outside:
        raise ValueError(
            f"latent site(s) {', '.join(outside)} are outside plate {plate!r}: a per-datum "
            "bound needs every latent site to belong to one datum"
        )
    return size


def _widest(trace, plate: str) -> int:
    """The most numbers one datum holds at any site (sets the chunk size)."""
    widths = [1]
    for s in trace.nodes.values():
        if s["type"] == "sample" and not site_is_subsample(s):
            value = s["value"]
            frames = [f for f in s["cond_indep_stack"] if f.name == plate]
            per_datum = value.numel() // max(1, frames[0].size if frames else 1)
            widths.append(per_datum)
    return max(widths)


def _log_weights(model, guide, args, kwargs, plate, indices, k, nesting) -> torch.Tensor:
    """(k, len(indices)) log weights of the data points ``indices``."""
    dim = -nesting - 1
    given = GivenSubsample(plate, indices)
    with pyro.plate(DRAWS, k, dim=dim), given:
        guide_trace = poutine.trace(guide).get_trace(*args, **kwargs)
        model_trace = poutine.trace(poutine.replay(model, trace=guide_trace)).get_trace(
            *args, **kwargs
        )
    return _per_datum(model_trace, plate, k, dim, len(indices)) - _per_datum(
        guide_trace, plate, k, dim, len(indices)
    )


def _per_datum(trace, plate: str, k: int, dim: int, n: int) -> torch.Tensor:
    """Sum of the sites' unscaled log densities, kept per draw and per datum: (k, n)."""
    total = torch.zeros(k, n)
    for name, site in trace.nodes.items():
        if site["type"] != "sample" or site_is_subsample(site) or name == DRAWS:
            continue
        log_prob = site["fn"].log_prob(site["value"])
        frames = {f.name: f.dim for f in site["cond_indep_stack"]}
        if plate not in frames:
            raise ValueError(f"site {name!r} is outside plate {plate!r}")
        data_dim = frames[plate]
        # Move the draws' dim and the data dim to the front; sum everything else.
        log_prob = log_prob.expand(torch.broadcast_shapes(log_prob.shape, (k,) + (1,) * (-dim - 1)))
        log_prob = log_prob.movedim((dim, data_dim), (0, 1))
        total = total.to(log_prob) + log_prob.reshape(k, log_prob.shape[1], -1).sum(-1)
    return total
