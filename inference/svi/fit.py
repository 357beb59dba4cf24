"""Stochastic variational inference with defaults that reach the posterior.

``fit_svi(model, guide, *args, ...)`` climbs the ELBO with Adam. What it adds to a
plain Pyro loop:

- Autoguides by name start at the MAP, in the basis of the Laplace approximation
  (see :mod:`guides.auto`), so badly scaled and correlated posteriors need no tuning.
  Where the Laplace approximation is a poor fit (its importance weights show more
  than ``POOR_START_NATS`` between IWAE and ELBO), they start from the prior median
  in the identity basis instead.
- The learning rate decays geometrically from ``lr`` to ``lr / 100`` over the step
  budget, and the fit stops early once the loss has confidently stopped falling
  (:mod:`inference.svi.convergence`, ``converged=True``), judged twice: the first plateau
  resets Adam's moments, in case it was a stall rather than the optimum; after the
  second the learning rate is annealed 100-fold over ``COOL_DOWN`` steps, then it stops.
- The returned parameters are an average of the last ~100 iterates, not the last one.
- Float64 by default: floating tensors in the model's arguments are cast.
- Each fit has its own param store and RNG stream (:mod:`inference.isolation`).
"""

import contextlib
import dataclasses
import math
import time
import warnings
from dataclasses import dataclass, field

import numpy as np
import pyro
import torch
import xarray as xr
from pyro import poutine
from pyro.infer import (
    ELBO,
    JitTrace_ELBO,
    JitTraceEnum_ELBO,
    JitTraceMeanField_ELBO,
    Trace_ELBO,
    TraceEnum_ELBO,
    TraceMeanField_ELBO,
)
from tqdm.auto import tqdm

from inference.evidence import ElboEstimate, estimate_elbo
from inference.isolation import cast, isolated
from inference.posterior.datatree import model_coords, to_datatree
from inference.posterior.draws import guide_draws
from inference.sites import max_plate_nesting, trace_model
from inference.svi.convergence import Plateau
from inference.svi.laplace import laplace as laplace_fit
from inference.validation import check_positive_float, check_positive_int

ELBOS = ("trace", "meanfield", "enum")
LR_DECAY = 0.01  # the learning rate at the end of the budget, as a fraction of lr
# Adam divides by sqrt(v) + eps: with eps at its 1e-8 default, round-off gradients of a
# guide that already matches the posterior turn into full-size steps.
ADAM_EPS = 1e-6
POOR_START_NATS = 1.0  # IWAE - ELBO of the Laplace start above which it is not used
AVERAGE_HORIZON = 100  # steps: time constant of the iterate average the fit returns
COOL_DOWN = 200  # steps of annealing after the final plateau


class FitError(RuntimeError):
    """A fit that cannot go on (a non-finite loss, a guide that does not fit the model)."""


class _CompileError(Exception):
    """The JIT-compiled loss failed on its first call; retry uncompiled."""


def _is_jit(loss_fn) -> bool:
    return isinstance(loss_fn, JitTrace_ELBO | JitTraceMeanField_ELBO | JitTraceEnum_ELBO)


@dataclass(frozen=True)
class SVIResult:
    """The product of :func:`fit_svi`.

    losses: negative ELBO estimate per step taken (nats, whole data set).
    converged: True when the plateau rule stopped the fit, False when the step budget did.
    elapsed_s: wall-clock seconds, including the MAP/Laplace start for autoguides.
    guide: the fitted guide (an autoguide object, or the user's callable).
    guide_name: the autoguide name, or None for a callable guide.
    laplace: the MAP/Laplace start used by an autoguide (None for callable guides).
    """

    model: object
    guide: object
    args: tuple
    kwargs: dict
    losses: np.ndarray
    converged: bool
    elapsed_s: float
    guide_name: str | None
    laplace: object
    seed: int
    dtype: torch.dtype | None
    _params: dict = field(repr=False)

    @property
    def num_steps(self) -> int:
        """Optimisation steps taken."""
        return len(self.losses)

    def params(self) -> dict[str, torch.Tensor]:
        """The fitted parameters (constrained), by name."""
        with isolated(self.seed, self.dtype, self._params):
            store = pyro.get_param_store()
            return {name: store[name].detach().clone() for name in store.keys()}

    def sample(self, num_samples: int = 1000, seed: int = 0):
        """Draws from the guide, replayed through the model (``Draws``)."""
        check_positive_int("num_samples", num_samples)
        with isolated(seed, self.dtype, self._params):
            return guide_draws(self.model, self.guide, num_samples, self.args, self.kwargs)

    def to_datatree(
        self, num_samples: int = 1000, seed: int = 0, coords=None, dims=None
    ) -> xr.DataTree:
        """Guide draws as an ArviZ DataTree: posterior dims (chain=1, draw=num_samples, ...).

        ``coords`` and ``dims`` as in ArviZ's converters; ``coords`` adds to (and
        overrides) a ``coords`` attribute of the model.
        """
        draws = self.sample(num_samples, seed)
        attrs = {"method": f"svi-{self.guide_name or 'guide'}", "elapsed_s": self.elapsed_s}
        coords = model_coords(self.model) | dict(coords or {})
        return to_datatree(draws, 1, coords=coords, attrs=attrs, dims=dims)

    def elbo(self, num_particles: int = 2000, seed: int = 0) -> ElboEstimate:
        """The ELBO (nats, whole data set) with its Monte Carlo standard error."""
        check_positive_int("num_particles", num_particles)
        with isolated(seed, self.dtype, self._params):
            return estimate_elbo(self.model, self.guide, self.args, self.kwargs, num_particles)


_ELBO_CLASSES = {
    "trace": (Trace_ELBO, JitTrace_ELBO),
    "meanfield": (TraceMeanField_ELBO, JitTraceMeanField_ELBO),
    "enum": (TraceEnum_ELBO, JitTraceEnum_ELBO),
}


def _make_elbo(elbo, num_particles: int, nesting: int, jit: bool) -> ELBO:
    if isinstance(elbo, ELBO):
        return elbo
    opts = dict(
        num_particles=num_particles,
        vectorize_particles=num_particles > 1,
        max_plate_nesting=nesting,
    )
    if jit:
        opts["ignore_jit_warnings"] = True
    return _ELBO_CLASSES[elbo][int(jit)](**opts)


def _can_jit(jit, elbo, kwargs) -> bool:
    """Compile the loss unless told not to, given an ELBO instance, or handed tensors
    in ``model_kwargs`` (Pyro's JIT takes tensors only through ``*args``)."""
    if jit is not None:
        return bool(jit) and not isinstance(elbo, ELBO)
    tensors_in_kwargs = any(isinstance(v, torch.Tensor) for v in kwargs.values())
    return not isinstance(elbo, ELBO) and not tensors_in_kwargs


def _resolve_guide(guide, model, args, kwargs):
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
        # The Laplace fit is far from the posterior (e.g. the MAP of a funnel sits where
        # little mass is): its basis would make Adam crawl. Start from the prior median
        # in the identity basis instead.
        start = dataclasses.replace(start, ok=False, message="Laplace start is a poor fit")
        return autoguide(guide, model, laplace=None), guide, start
    return autoguide(guide, model, laplace=start), guide, start


def _poor_start(model, guide, args, kwargs) -> bool:
    """True when importance weights of the initial guide show a gap of over
    ``POOR_START_NATS`` between the importance-weighted bound and the ELBO."""
    try:
        est = estimate_elbo(model, guide, args, kwargs, num_particles=256)
    except (RuntimeError, ValueError):
        return False
    return est.iwae - est.value > POOR_START_NATS


def fit_svi(
    model,
    guide,
    *model_args,
    num_steps: int = 2000,
    lr: float = 1e-2,
    elbo="trace",
    num_particles: int = 1,
    seed: int = 0,
    progress_bar: bool = False,
    model_kwargs: dict | None = None,
    dtype: torch.dtype | None = torch.float64,
    jit: bool | None = None,
) -> SVIResult:
    """Fit ``guide`` to ``model`` by maximising the ELBO.

    Parameters
    ----------
    model : callable
        A Pyro model; ``model_args`` and ``model_kwargs`` are passed to it (and to the guide).
    guide : callable or str
        A guide with the model's signature, or an autoguide name: ``normal``, ``mvn``,
        ``lowrank``, ``delta``, ``iaf``.
    num_steps : int
        The most optimisation steps; the fit may stop earlier on convergence.
    lr : float
        Initial Adam learning rate; it decays to ``lr / 100`` over ``num_steps``.
    elbo : str or pyro.infer.ELBO
        ``trace``, ``meanfield`` (analytic KL where available), ``enum`` or an instance.
    num_particles : int
        Particles per ELBO estimate (vectorized).
    seed : int
        Seeds this fit only; the caller's RNG state is left alone.
    progress_bar : bool
        Show a tqdm bar with the running loss.
    dtype : torch.dtype or None
        Cast floating model arguments to this dtype and compute in it (None: leave as is).
    jit : bool, optional
        Compile the loss with the PyTorch JIT (about 5x more steps per second on small
        models). Default: on for ELBOs given by name when ``model_kwargs`` holds no
        tensors; if compilation fails the fit falls back to the uncompiled loss.

    Returns
    -------
    SVIResult

    Notes
    -----
    The loss is ``-ELBO``, with ``ELBO = E_q[log p(x, z) - log q(z)] <= log p(x)``;
    the gap is ``KL(q || p(z | x))``. Gradients use the reparameterization
    ``z = mu + sigma * eps`` where the guide allows it (Kingma & Welling 2014).
    """
    check_positive_int("num_steps", num_steps)
    check_positive_float("lr", lr)
    check_positive_int("num_particles", num_particles)
    if not isinstance(elbo, ELBO) and elbo not in ELBOS:
        raise ValueError(f"unknown elbo {elbo!r}; choose one of: {', '.join(ELBOS)}")
    args = cast(tuple(model_args), dtype)
    kwargs = cast(dict(model_kwargs or {}), dtype)
    start_time = time.perf_counter()
    with isolated(seed, dtype) as state:
        nesting = max_plate_nesting(trace_model(model, args, kwargs))
        guide_fn, guide_name, start = _resolve_guide(guide, model, args, kwargs)
        use_jit = _can_jit(jit, elbo, kwargs)
        loss_fn = _make_elbo(elbo, num_particles, nesting, use_jit)
        try:
            losses, converged = _optimise(
                loss_fn, model, guide_fn, args, kwargs, num_steps, lr, progress_bar
            )
        except _CompileError:
            loss_fn = _make_elbo(elbo, num_particles, nesting, jit=False)
            losses, converged = _optimise(
                loss_fn, model, guide_fn, args, kwargs, num_steps, lr, progress_bar
            )
    return SVIResult(
        model=model,
        guide=guide_fn,
        args=args,
        kwargs=kwargs,
        losses=np.asarray(losses),
        converged=converged,
        elapsed_s=time.perf_counter() - start_time,
        guide_name=guide_name,
        laplace=start,
        seed=seed,
        dtype=dtype,
        _params=state,
    )


class _IterateAverage:
    """Exponential moving average of the parameters (Polyak-Ruppert averaging).

    Adam's iterates jitter around the optimum by about one step size, and a noisy
    gradient keeps them jittering even where the guide is exact. The fit returns the
    average of the recent iterates (time constant ``horizon`` steps), which removes
    most of that jitter.

    References
    ----------
    Polyak & Juditsky (1992). Acceleration of stochastic approximation by averaging.
    """

    def __init__(self, horizon: int = AVERAGE_HORIZON):
        self.decay = 1.0 - 1.0 / horizon
        self.average: dict = {}

    @torch.no_grad()
    def update(self, params) -> None:
        for p in params:
            avg = self.average.get(p)
            if avg is None:
                self.average[p] = p.detach().clone()
            else:
                avg.mul_(self.decay).add_(p.detach(), alpha=1.0 - self.decay)

    @torch.no_grad()
    def apply(self) -> None:
        for p, avg in self.average.items():
            p.copy_(avg)


def _optimise(loss_fn, model, guide, args, kwargs, num_steps, lr, progress_bar):
    losses: list[float] = []
    plateau = Plateau()
    optimizer = None
    params: set = set()
    average = _IterateAverage()
    restarted = False
    cooling_since = None  # the step after the final plateau
    bar = tqdm(total=num_steps, disable=not progress_bar, desc="svi", leave=False)
    try:
        for step in range(num_steps):
            step_lr = lr * LR_DECAY ** (step / num_steps)
            if cooling_since is not None:
                # After the final plateau, anneal before stopping: the lr falls 100-fold
                # over COOL_DOWN steps, so the returned average does not keep the jitter
                # of a large lr (a far-off hand guide plateaus at lr ~0.3: 0.4 sd off).
                cooled = (step - cooling_since) / COOL_DOWN
                if cooled >= 1:
                    break
                step_lr *= LR_DECAY**cooled
            with poutine.trace(param_only=True) as param_capture:
                try:
                    with _quiet_jit():
                        loss = loss_fn.differentiable_loss(model, guide, *args, **kwargs)
                except (RuntimeError, TypeError, ValueError) as err:
                    if step == 0 and _is_jit(loss_fn):
                        raise _CompileError from err
                    if step > 0 and not isinstance(err, TypeError):
                        # E.g. Pyro's validation rejecting a NaN parameter: the fit blew up.
                        first = (str(err).splitlines() or [""])[0][:200]
                        what = f"the model or guide failed ({type(err).__name__}: {first})"
                        raise _blow_up(what, step, losses) from err
                    raise
            new = {
                site["value"].unconstrained() for site in param_capture.trace.nodes.values()
            } - params
            if new:
                params |= new
                optimizer = _grow_optimizer(optimizer, new, step_lr)
            value = float(loss.detach())
            if not math.isfinite(value):
                raise _blow_up(f"the loss became {value}", step, losses)
            for group in optimizer.param_groups:
                group["lr"] = step_lr
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            average.update(params)
            losses.append(value)
            bar.update()
            if step % 50 == 0:
                bar.set_postfix(loss=f"{np.mean(losses[-50:]):.4g}", lr=f"{step_lr:.1e}")
            if cooling_since is None and plateau.update(losses):
                if restarted:
                    cooling_since = step + 1
                    continue
                # A plateau may be a stall: after a start far from the posterior, Adam's
                # second moments remember gradients 1e4x too large for thousands of
                # steps, and every step is tiny. Forget them and judge again: a true
                # optimum stays flat, a stall starts falling.
                optimizer.state.clear()
                plateau.reset()
                restarted = True
    finally:
        bar.close()
    average.apply()
    return losses, cooling_since is not None


@contextlib.contextmanager
def _quiet_jit():
    """Hide torch's deprecation notice for ``torch.jit.trace``, which Pyro's JIT ELBOs use;
    the user did not call it and cannot act on it."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*torch.jit.trace.*", category=FutureWarning)
        yield


def _blow_up(what: str, step: int, losses: list[float]) -> FitError:
    last = next((x for x in reversed(losses) if math.isfinite(x)), float("nan"))
    return FitError(
        f"{what} at step {step}; last finite loss {last:.4g}. "
        "Try a smaller lr or a guide that starts closer to the posterior."
    )


def _grow_optimizer(optimizer, new_params, lr):
    new_params = [p for p in new_params if p.requires_grad]
    if optimizer is None:
        return torch.optim.Adam(new_params, lr=lr, eps=ADAM_EPS)
    optimizer.add_param_group({"params": new_params, "lr": lr})
    return optimizer
