"""Posterior draws from a model: read every site of its replay on the draws.

Both engines end here. SVI draws come from the guide and MCMC draws from the chains;
:func:`inference.posterior.replay.replay` runs the model on them (on the whole data
set, vectorized where the model broadcasts). The model's trace then gives, for each
draw, the latent sites (constrained), the ``pyro.deterministic`` sites and the
log-likelihood of every observation, with the plate each dimension came from, which
becomes the dimension's name.
"""

from dataclasses import dataclass, field

import numpy as np
import torch
from pyro.poutine.util import site_is_subsample

from inference.enumeration import assignment_probs, observed_log_likelihood
from inference.posterior.replay import Replay, replay


@dataclass(frozen=True)
class SiteDraws:
    """Draws of one site.

    values: shape ``(num_draws, *site_shape)`` (no draw dim for observed data).
    dims: a name per site dimension, the plate's name for a plate dimension and
    ``<site>_dim_<k>`` for any other.
    """

    values: np.ndarray
    dims: tuple[str, ...]


@dataclass(frozen=True)
class Draws:
    """What a model says about a set of draws, by group.

    posterior: latent and deterministic sites. log_likelihood: pointwise log density
    of each observed site, per draw (summed-out discrete sites marginalised).
    observed_data: the observed values. assignments: for each summed-out discrete
    site, per draw ``p(z_i = k | x, theta_s)`` with its values along the last dim
    (named ``<site>_value``); empty for a model without such sites.
    """

    posterior: dict[str, SiteDraws]
    log_likelihood: dict[str, SiteDraws]
    observed_data: dict[str, SiteDraws]
    assignments: dict[str, SiteDraws] = field(default_factory=dict)


def _plate_names(site) -> dict[int, str]:
    return {f.dim: f.name for f in site["cond_indep_stack"] if f.vectorized}


def _strip(value, name, site, nesting, num_draws, event_dim):
    """Turn a site value into ``(array with leading draw dim, dim names)``.

    ``num_draws=None`` means the value holds a single draw (no draw dim yet).
    """
    plates = _plate_names(site)
    dims, unnamed = [], 0
    if num_draws is None:
        batch_ndim = value.dim() - event_dim
        for i in range(value.dim()):
            d = i - batch_ndim
            if i < batch_ndim and d in plates:
                dims.append(plates[d])
            else:
                dims.append(f"{name}_dim_{unnamed}")
                unnamed += 1
        return value.unsqueeze(0), tuple(dims)
    batch_ndim = value.dim() - event_dim
    if batch_ndim > nesting + 1:
        raise ValueError(f"site {name!r} has batch dims that are not plates")
    value = value.reshape((1,) * (nesting + 1 - batch_ndim) + tuple(value.shape))
    value = value.expand((num_draws,) + tuple(value.shape[1:]))
    drop = []
    for j in range(1, nesting + 1):
        d = j - nesting - 1
        if d in plates:
            dims.append(plates[d])
        elif value.shape[j] != 1:
            dims.append(f"{name}_dim_{unnamed}")
            unnamed += 1
        else:
            drop.append(j)
    for _ in range(event_dim):
        dims.append(f"{name}_dim_{unnamed}")
        unnamed += 1
    for j in reversed(drop):
        value = value.squeeze(j)
    return value, tuple(dims)


def _event_dim(site, value, nesting, vectorized):
    if site["infer"].get("_deterministic"):
        # pyro.deterministic marks the whole value as event; the plates say otherwise.
        return max(0, value.dim() - (nesting + 1 if vectorized else nesting))
    return site["fn"].event_dim


def read_trace(trace, nesting, num_draws, latent, enumerated=()) -> Draws:
    """Read the groups of a model trace run on draws.

    ``num_draws`` is the size of the draw plate the trace ran under, or None for a
    trace of a single draw. ``enumerated``: the discrete sites summed out in it; their
    observations' log-likelihood is marginalised over them, and their posterior
    probabilities fill ``assignments``. Deterministic sites are not read from such a
    trace (they may hold every value of a summed-out site at once).
    """
    posterior, loglik, observed, assignments = {}, {}, {}, {}
    vectorized = num_draws is not None
    width = nesting + int(vectorized)
    marginal = observed_log_likelihood(trace, width) if enumerated else {}
    for name, site in trace.nodes.items():
        if site["type"] != "sample" or site_is_subsample(site):
            continue
        value = site["value"].detach()
        deterministic = site["infer"].get("_deterministic", False)
        if (deterministic and not enumerated) or name in latent:
            ev = _event_dim(site, value, nesting, vectorized)
            arr, dims = _strip(value, name, site, nesting, num_draws, ev)
            posterior[name] = SiteDraws(arr.cpu().numpy(), dims)
        elif site["is_observed"]:
            event_dim = site["fn"].event_dim
            lp = marginal.get(name)
            if lp is None:
                lp = site["fn"].log_prob(value).detach()
                lp = lp.expand(torch.broadcast_shapes(lp.shape, site["fn"].batch_shape))
            else:
                batch = value.shape[: value.dim() - event_dim]
                lp = lp.detach().expand(torch.broadcast_shapes(lp.shape, batch))
            arr, dims = _strip(lp, name, site, nesting, num_draws, 0)
            loglik[name] = SiteDraws(arr.cpu().numpy(), dims)
            obs, obs_dims = _strip(value, name, site, nesting, None, event_dim)
            observed[name] = SiteDraws(obs[0].cpu().numpy(), obs_dims)
    if enumerated:
        for name, probs in assignment_probs(trace, width).items():
            arr, dims = _strip(probs.detach(), name, trace.nodes[name], nesting, num_draws, 1)
            assignments[name] = SiteDraws(arr.cpu().numpy(), dims[:-1] + (f"{name}_value",))
    return Draws(posterior, loglik, observed, assignments)


def read_draws(replayed: Replay) -> Draws:
    """The posterior, log-likelihood and observed data of a :class:`Replay`."""
    num_draws = replayed.num_draws if replayed.vectorized else None
    nesting, enumerated = replayed.nesting, replayed.enumerated
    runs = [
        _join_minibatches(
            [read_trace(t, nesting, num_draws, replayed.latent, enumerated) for t in traces],
            replayed.cover,
        )
        for traces in replayed.model_traces
    ]
    draws = runs[0] if replayed.vectorized else stack_draws(runs)
    if replayed.discrete_traces is None:
        return draws
    drawn = [
        _join_minibatches(
            [read_trace(t, nesting, num_draws, frozenset(enumerated)) for t in traces],
            replayed.cover,
        )
        for traces in replayed.discrete_traces
    ]
    drawn = drawn[0] if replayed.vectorized else stack_draws(drawn)
    return Draws(
        {**draws.posterior, **drawn.posterior},
        draws.log_likelihood,
        draws.observed_data,
        draws.assignments,
    )


def _join_minibatches(parts: list[Draws], cover) -> Draws:
    """Concatenate the minibatches of ``cover`` along its plate's dim, cut to its size;
    sites outside the plate are read from the first minibatch."""
    if cover is None:
        return parts[0]

    def join(group, draw_axis):
        out = {}
        for name, site in getattr(parts[0], group).items():
            if cover.plate not in site.dims:
                out[name] = site
                continue
            axis = site.dims.index(cover.plate) + draw_axis
            values = np.concatenate([getattr(p, group)[name].values for p in parts], axis)
            out[name] = SiteDraws(np.take(values, np.arange(cover.size), axis), site.dims)
        return out

    return Draws(
        join("posterior", 1),
        join("log_likelihood", 1),
        join("observed_data", 0),
        join("assignments", 1),
    )


def replay_samples(
    model, samples: dict[str, torch.Tensor], args, kwargs, discrete: bool = False
) -> Draws:
    """Run ``model`` on MCMC ``samples`` (each ``(num_draws, *site_shape)``);
    ``discrete``: also draw the summed-out discrete sites, per draw."""
    num_draws = next(iter(samples.values())).shape[0]
    return read_draws(replay(model, args, kwargs, num_draws, samples=samples, discrete=discrete))


def guide_draws(model, guide, num_draws: int, args, kwargs, discrete: bool = False) -> Draws:
    """Draw ``num_draws`` times from ``guide`` and replay ``model`` on each draw;
    ``discrete``: also draw the summed-out discrete sites, per draw."""
    return read_draws(replay(model, args, kwargs, num_draws, guide=guide, discrete=discrete))


def weighted_guide_draws(model, guide, num_draws: int, args, kwargs):
    """``(draws, log weights)``: guide draws replayed through the model, and their
    ``log p(x, z_s) - log q(z_s)`` (nats), from the same replay."""
    replayed = replay(model, args, kwargs, num_draws, guide=guide)
    log_weights = (replayed.log_joint - replayed.log_guide).double().cpu().numpy()
    return read_draws(replayed), log_weights


def take_draws(draws: Draws, index: np.ndarray) -> Draws:
    """The draws at ``index`` (along the draw axis), e.g. an importance resample."""

    def pick(group):
        return {k: SiteDraws(v.values[index], v.dims) for k, v in group.items()}

    return Draws(
        pick(draws.posterior),
        pick(draws.log_likelihood),
        draws.observed_data,
        pick(draws.assignments),
    )


def stack_draws(parts: list[Draws]) -> Draws:
    """Concatenate single-draw results along the draw dimension."""

    def cat(group):
        first = getattr(parts[0], group)
        return {
            k: SiteDraws(np.concatenate([getattr(p, group)[k].values for p in parts]), v.dims)
            for k, v in first.items()
        }

    return Draws(
        cat("posterior"), cat("log_likelihood"), parts[0].observed_data, cat("assignments")
    )
