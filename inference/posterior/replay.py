"""One replay of S draws through a model, shared by the draws, the ELBO and IWAE.

``replay(model, args, kwargs, num_draws, guide=guide)`` draws ``num_draws`` times
from the guide and runs the model on each draw; ``samples=`` (e.g. MCMC draws, each
``(num_draws, *site_shape)``) replaces the guide. The result holds the model's traces
and, per draw, the log joint ``log p(x, z_s)`` and the guide's ``log q(z_s)``.

- **Vectorized** where the model broadcasts: one run under ``pyro.plate`` of draws,
  placed to the left of the model's own plates. A run counts as broadcasting only if
  every site keeps to those dimensions (a batch dimension that is not a plate, as in
  ``(X * beta.unsqueeze(-2)).sum(-1)``, would give a log density of draws x draws) and
  the first and last draws' log joints equal those of the model run on that draw
  alone. This is judged on a trial run of ``PROBE_DRAWS`` draws first, and again on
  the full run.
- **Discrete sites summed out**: a discrete latent site that neither the guide nor
  ``samples`` gives a value (e.g. a mixture's assignments under ``config_enumerate``)
  is enumerated (:mod:`inference.enumeration`), so the log joint is
  ``log p(x, theta_s)`` with it marginalised, exactly as ``TraceEnum_ELBO`` and NUTS
  see the model. ``discrete=True`` also draws it from ``p(z | x, theta_s)`` per draw
  (Pyro's ``infer_discrete``).
- **A loop** over draws otherwise (e.g. a model written with ``X @ beta``), which
  says why once per model function with a :class:`SlowReplayWarning`.
- **The whole data set**: a subsampled plate (``pyro.plate(name, N, subsample_size=n)``)
  is run on consecutive minibatches of ``n`` indices that together hold all ``N``
  (:class:`Cover`), each with likelihood scale 1 and repeats masked, so the draws'
  observed data and log-likelihood cover every point and the log joint is the
  whole-data one. Pyro's plate takes a given subsample only of its own size, hence
  minibatches rather than one run on all indices. Models with latent sites inside the
  subsampled plate, or with more than one subsampled plate, are replayed on their
  own minibatch (scaled, an unbiased estimate), with a warning.
"""

import dataclasses
import math
import warnings
import weakref
from dataclasses import dataclass

import pyro
import torch
from pyro import poutine
from pyro.infer import infer_discrete
from pyro.poutine.messenger import Messenger

from inference.enumeration import enumerate_model, enumerated_sites, log_density
from inference.sites import latent_sites, max_plate_nesting, subsampled_plates, trace_model

DRAW_PLATE = "_vilab_draws"
PROBE_DRAWS = 2  # draws of the vectorized trial run


class SlowReplayWarning(UserWarning):
    """A model that does not broadcast over a plate of draws is replayed draw by draw."""


class _NotBroadcast(ValueError):
    """A vectorized run whose shapes or values do not hold draw by draw."""


@dataclass(frozen=True)
class Cover:
    """Minibatches of one subsampled plate that together hold each index once.

    plate: the plate's name. size: its full size N. batch: its subsample size n.
    Minibatch k holds the indices ``k n, ..., (k + 1) n - 1`` (mod N); the repeats
    past N, in the last minibatch, are masked.
    """

    plate: str
    size: int
    batch: int

    @property
    def count(self) -> int:
        """Minibatches in the cover: ``ceil(N / n)``."""
        return math.ceil(self.size / self.batch)

    def minibatch(self, fn, k: int):
        """``fn`` run on minibatch ``k`` at whole-data scale."""
        positions = torch.arange(k * self.batch, (k + 1) * self.batch)
        conditioned = poutine.condition(fn, data={self.plate: positions % self.size})
        return _WholeDataScale(self, positions < self.size)(conditioned)


class _WholeDataScale(Messenger):
    """Inside ``cover.plate``: scale 1 instead of Pyro's ``N / n``, repeats masked."""

    def __init__(self, cover: Cover, keep: torch.Tensor):
        super().__init__()
        self.cover, self.keep = cover, keep

    def _pyro_sample(self, msg) -> None:
        frame = next((f for f in msg["cond_indep_stack"] if f.name == self.cover.plate), None)
        if frame is None:
            return
        keep = self.keep.reshape((-1,) + (1,) * (-frame.dim - 1))
        msg["scale"] = msg["scale"] * self.cover.batch / self.cover.size
        msg["mask"] = keep if msg["mask"] is None else msg["mask"] & keep


@dataclass(frozen=True)
class Replay:
    """Draws run through a model.

    model_traces: per run, one trace per minibatch of ``cover`` (one trace when the
    model is not subsampled). One run with a draw plate at dim ``-(nesting + 1)``
    when ``vectorized``, else one run per draw. log_joint: ``log p(x, z_s)`` per
    draw, shape ``(num_draws,)`` (nats, whole data set). log_guide: ``log q(z_s)``
    per draw, or None for given samples. latent: the names of the replayed latent
    sites. cover: the minibatches of a subsampled plate, or None. enumerated: the
    discrete latent sites summed out (their dims left of the draw plate in
    ``model_traces``). discrete_traces: with ``discrete=True``, per run the traces
    (one per minibatch) of the model with the enumerated sites drawn from their
    conditional posterior, else None.
    """

    model_traces: tuple
    log_joint: torch.Tensor
    log_guide: torch.Tensor | None
    num_draws: int
    nesting: int
    latent: frozenset
    vectorized: bool
    cover: Cover | None
    enumerated: tuple = ()
    discrete_traces: tuple | None = None


def replay(
    model, args, kwargs, num_draws: int, *, guide=None, samples=None, discrete: bool = False
) -> Replay:
    """Run ``model`` on ``num_draws`` draws from ``guide``, or on given ``samples``.

    Parameters
    ----------
    model : callable
        The Pyro model; ``args`` and ``kwargs`` go to it (and to the guide).
    num_draws : int
        S, the number of draws (the leading size of each of ``samples``).
    guide : callable, optional
        A guide with the model's signature.
    samples : dict of str to torch.Tensor, optional
        Latent values, each ``(num_draws, *site_shape)``; exactly one of ``guide``
        and ``samples`` is given.
    discrete : bool
        Also draw the summed-out discrete sites from ``p(z | x, theta_s)``.

    Returns
    -------
    Replay
    """
    if (guide is None) == (samples is None):
        raise ValueError("replay needs exactly one of guide= and samples=")
    prototype = trace_model(model, args, kwargs)
    given = frozenset(samples) if samples is not None else _guide_sites(guide, args, kwargs)
    enumerated = enumerated_sites(prototype, given)
    latent = frozenset(samples) if samples is not None else frozenset(latent_sites(prototype))
    latent = latent - frozenset(enumerated)
    runner = _Runner(
        model,
        guide,
        samples,
        args,
        kwargs,
        prototype,
        max_plate_nesting(prototype),
        num_draws,
        latent,
        _cover(model, prototype, latent, enumerated),
        enumerated,
        discrete,
    )
    with poutine.block(), torch.no_grad():
        try:
            # A model with a batch dim that is not a plate would fill S x S x N log
            # densities: judge it on a few draws before running all of them.
            runner.head(PROBE_DRAWS).vectorized()
            return runner.vectorized()
        except (RuntimeError, ValueError, IndexError) as err:
            _warn_once(model, _slow_message(model, num_draws, err), SlowReplayWarning)
        return runner.loop()


def _guide_sites(guide, args, kwargs) -> frozenset:
    """The sample sites of one run of ``guide``."""
    with poutine.block(), torch.no_grad():
        trace = poutine.trace(guide).get_trace(*args, **kwargs)
    return frozenset(n for n, s in trace.nodes.items() if s["type"] == "sample")


def _cover(model, prototype, latent, enumerated) -> Cover | None:
    """The cover of the model's subsampled plate; None (with a warning where the
    model is subsampled) when the replay stays on the model's own minibatch.

    Summed-out sites inside the plate are local to each minibatch and fine; one
    outside it ties the minibatches together, so the replay stays on one."""
    plates = subsampled_plates(prototype)
    if not plates:
        return None

    def inside(name):
        return any(f.name in plates for f in prototype.nodes[name]["cond_indep_stack"])

    local = [name for name in latent if inside(name)]
    tied = [name for name in enumerated if not inside(name)]
    if len(plates) == 1 and not local and not tied:
        ((plate, (size, batch)),) = plates.items()
        return Cover(plate, size, batch)
    if local:
        why = f"latent sites {sorted(local)} inside it"
    elif tied:
        why = f"summed-out sites {sorted(tied)} outside it"
    else:
        why = "more than one such plate"
    _warn_once(
        model,
        f"model {_name(model)!r} has subsampled plates {sorted(plates)} and {why}: its "
        "draws, log-likelihood and ELBO estimates cover one minibatch (scaled), not the "
        "whole data set",
        UserWarning,
    )
    return None


@dataclass(frozen=True)
class _Runner:
    model: object
    guide: object
    samples: dict | None
    args: tuple
    kwargs: dict
    prototype: object
    nesting: int
    num_draws: int
    latent: frozenset
    cover: Cover | None
    enumerated: tuple
    discrete: bool

    def head(self, num_draws: int) -> "_Runner":
        """The same replay on the first ``num_draws`` draws only."""
        num_draws = min(num_draws, self.num_draws)
        samples = self.samples
        if samples is not None:
            samples = {k: v[:num_draws] for k, v in samples.items()}
        return dataclasses.replace(self, samples=samples, num_draws=num_draws)

    def minibatches(self, fn) -> list:
        """``fn`` on each minibatch of the cover (``[fn]`` without one)."""
        if self.cover is None:
            return [fn]
        return [self.cover.minibatch(fn, k) for k in range(self.cover.count)]

    def first_enum_dim(self, vectorized: bool) -> int:
        """The first dim free for enumeration: left of the plates (and the draw plate)."""
        return -self.nesting - 1 - int(vectorized)

    def traces(self, model, vectorized: bool, wrap=None) -> tuple:
        """Traces of ``model`` with the discrete sites summed out, one per minibatch;
        ``wrap`` (e.g. ``infer_discrete``) instead of enumeration when given."""
        first = self.first_enum_dim(vectorized)
        if wrap is None:
            model = enumerate_model(model, self.enumerated, first)
        else:
            model = wrap(model, first)
        return tuple(
            poutine.trace(fn).get_trace(*self.args, **self.kwargs) for fn in self.minibatches(model)
        )

    def run(self, draw):
        """Model traces (one per minibatch) and the guide trace (None for samples) of
        one run; ``draw`` picks the samples' draw (None: all, shaped for the plate)."""
        guide_trace, model = None, self.model
        if self.samples is None:
            guide_fn = self.minibatches(self.guide)[0]
            guide_trace = poutine.trace(guide_fn).get_trace(*self.args, **self.kwargs)
            model = poutine.replay(model, trace=guide_trace)
        else:
            model = poutine.condition(model, data=self._samples(draw))
        return self.traces(model, draw is None), guide_trace

    def discrete_draws(self, model_traces, vectorized: bool):
        """Traces of the model with the summed-out sites drawn from ``p(z | x, theta)``,
        the other latents held at their values in ``model_traces``."""
        if not (self.discrete and self.enumerated):
            return None
        values = {name: model_traces[0].nodes[name]["value"] for name in self.latent}
        held = poutine.condition(self.model, data=values)
        if vectorized:
            # infer_discrete blocks outer handlers: the draw plate goes inside it.
            held = _in_draw_plate(held, self.num_draws, -self.nesting - 1)

        def sample(fn, first):
            marked = enumerate_model(fn, self.enumerated, first)
            return infer_discrete(marked, first_available_dim=first)

        return self.traces(held, vectorized, wrap=sample)

    def total(self, vectorized: bool):
        """``total(trace, site_filter)``: a trace's log joint, per draw if vectorized."""
        if self.enumerated:
            keep = DRAW_PLATE if vectorized else None
            return lambda trace, f: log_density(trace, f, keep_plate=keep).detach()
        if vectorized:
            return lambda trace, f: _per_draw(trace, self.nesting, f)
        return _log_prob_sum

    def _samples(self, draw):
        if draw is not None:
            return {k: v[draw] for k, v in self.samples.items()}
        shaped = {}
        for name, value in self.samples.items():
            site = self.prototype.nodes[name]
            shape = site["value"].shape
            pad = max(self.nesting - (len(shape) - site["fn"].event_dim), 0)
            shaped[name] = value.reshape((self.num_draws,) + (1,) * pad + tuple(shape))
        return shaped

    def vectorized(self) -> Replay:
        with pyro.plate(DRAW_PLATE, self.num_draws, dim=-self.nesting - 1):
            model_traces, guide_trace = self.run(None)
        discrete = self.discrete_draws(model_traces, True)
        log_joint = self._log_joint(model_traces, self.total(True))
        log_joint = log_joint.expand(self.num_draws)
        log_guide = None
        if guide_trace is not None:
            log_guide = _per_draw(guide_trace, self.nesting, _all_sites).expand(self.num_draws)
        self._check(model_traces[0], log_joint)
        discrete = None if discrete is None else (discrete,)
        return self._result((model_traces,), log_joint, log_guide, True, discrete)

    def loop(self) -> Replay:
        runs, log_joint, log_guide, discrete = [], [], [], []
        for draw in range(self.num_draws):
            model_traces, guide_trace = self.run(draw)
            runs.append(model_traces)
            log_joint.append(self._log_joint(model_traces, self.total(False)))
            discrete.append(self.discrete_draws(model_traces, False))
            if guide_trace is not None:
                log_guide.append(guide_trace.log_prob_sum().detach())
        log_guide = torch.stack(log_guide) if log_guide else None
        discrete = tuple(discrete) if discrete and discrete[0] is not None else None
        return self._result(tuple(runs), torch.stack(log_joint), log_guide, False, discrete)

    def _result(self, runs, log_joint, log_guide, vectorized, discrete) -> Replay:
        return Replay(
            runs,
            log_joint,
            log_guide,
            self.num_draws,
            self.nesting,
            self.latent,
            vectorized,
            self.cover,
            self.enumerated,
            discrete,
        )

    def _log_joint(self, model_traces, total):
        """Sum ``total(trace, site_filter)`` over minibatches: the sites of the
        subsampled plate from each, every other site from the first only."""
        in_plate = _all_sites
        if self.cover is not None:
            plate = self.cover.plate

            def in_plate(name, site):
                return any(f.name == plate for f in site["cond_indep_stack"])

        first, *rest = model_traces
        return sum((total(t, in_plate) for t in rest), total(first, _all_sites))

    def _check(self, model_trace, log_joint) -> None:
        """Raise ``_NotBroadcast`` unless draws first and last have the log joint the
        model gives them alone (a model may mix draws without a shape error)."""
        for draw in sorted({0, self.num_draws - 1}):
            values = {name: self._one(model_trace, name, draw) for name in self.latent}
            alone = poutine.condition(self.model, data=values)
            expected = self._log_joint(self.traces(alone, False), self.total(False))
            got = log_joint[draw]
            tol = math.sqrt(torch.finfo(got.dtype).eps) * (1.0 + float(expected.abs()))
            if not torch.isclose(got, expected.to(got.dtype), rtol=0.0, atol=tol, equal_nan=True):
                raise _NotBroadcast(
                    f"draw {draw}: log density {float(got):.6g} under the draw plate, "
                    f"{float(expected):.6g} alone"
                )

    def _one(self, model_trace, name, draw) -> torch.Tensor:
        """Site ``name``'s value at ``draw``, in the shape the model gives it alone."""
        value = model_trace.nodes[name]["value"]
        shape = self.prototype.nodes[name]["value"].shape
        return value[draw if value.shape[0] > 1 else 0].reshape(shape)


def _in_draw_plate(fn, num_draws: int, dim: int):
    """``fn`` run inside the plate of draws."""

    def in_plate(*args, **kwargs):
        with pyro.plate(DRAW_PLATE, num_draws, dim=dim):
            return fn(*args, **kwargs)

    return in_plate


def _all_sites(name, site) -> bool:
    return True


def _log_prob_sum(trace, site_filter) -> torch.Tensor:
    return torch.as_tensor(trace.log_prob_sum(site_filter)).detach()


def _per_draw(trace, nesting: int, site_filter) -> torch.Tensor:
    """Sum each site's log density over every dim but the draw dim: shape (S,) or ()."""
    trace.compute_log_prob()
    total = torch.zeros(())
    for name, site in trace.nodes.items():
        if site["type"] != "sample" or not site_filter(name, site):
            continue
        lp = site["log_prob"].detach()
        if lp.dim() > nesting + 1:
            raise _NotBroadcast(
                f"site {name!r} has log density of shape {tuple(lp.shape)}: "
                f"batch dims that are not plates"
            )
        if lp.dim() == nesting + 1:
            lp = lp.reshape(lp.shape[0], -1).sum(-1)
        else:
            lp = lp.sum()
        total = total + lp
    return total


# The warnings each model function has had, so that each is said once.
_WARNED: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()


def _name(model) -> str:
    return getattr(model, "__qualname__", type(model).__name__)


def _slow_message(model, num_draws: int, err: Exception) -> str:
    reason = (str(err).splitlines() or [""])[0][:200]
    return (
        f"model {_name(model)!r} does not broadcast over a plate of draws "
        f"({type(err).__name__}: {reason}); replaying its {num_draws} draws one at a time, "
        "which is slow. A model that broadcasts over dims to the left of its plates "
        "(e.g. `(X * beta).sum(-1)` rather than `X @ beta`) is replayed in one pass."
    )


def _warn_once(model, message: str, category: type[Warning]) -> None:
    """Warn ``message`` unless ``model`` (its function, for a bound method) already had
    a warning of ``category``."""
    key = getattr(model, "__func__", model)
    try:
        seen = _WARNED.setdefault(key, set())
    except TypeError:  # not weakly referable: warn every time
        seen = set()
    if category in seen:
        return
    seen.add(category)
    warnings.warn(message, category, stacklevel=4)
