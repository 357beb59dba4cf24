"""Stochastic variational inference with defaults that reach the posterior.

``fit_svi(model, guide, *args, ...)`` climbs the ELBO with Adam. What it adds to a
plain Pyro loop:

- Autoguides by name start at the MAP, in the basis of the Laplace approximation
  (:mod:`inference.svi.start`, :mod:`guides.auto`).
- The learning rate is ``lr`` until the fit has converged, then annealed for
  ``COOL_DOWN`` steps (:mod:`inference.svi.schedule`); convergence is judged on the
  loss *and* on the posterior's moments (:mod:`inference.svi.convergence`). Nothing
  depends on the step budget: ``num_steps`` is only the most steps to take.
- The returned parameters are an average of the last ~100 iterates, not the last one.
- ``schedule="constant"`` instead: ``lr`` throughout, the whole budget, the last iterate
  (how networks are trained: the VAE's encoder and decoder, by epochs).
- The fit is a loop over :func:`~inference.svi.state.svi_step`: ``callback=`` sees every
  step, ``checkpoint=`` writes the whole state and resumes from it.
- A model with one subsampled plate (``pyro.plate(name, N, subsample_size=n)``) gets
  its minibatches from an epoch sampler, O(n) per step instead of Pyro's ``randperm(N)``
  (:mod:`inference.svi.batches`); the loss takes the indices as an input, so it is
  still compiled, and a checkpoint holds the sampler's place.
- Float64 by default; every tensor argument is checked (finite) and moved to ``device``.
- Each fit has its own param store and RNG stream (:mod:`inference.isolation`).
"""

import contextlib
import signal
import threading
import time

import numpy as np
import torch
from pyro.infer import ELBO, TraceEnum_ELBO
from tqdm.auto import tqdm

from inference.enumeration import enumerated_sites
from inference.isolation import Room, check_seed, isolated, prepare, resolve_device
from inference.sites import latent_sites, max_plate_nesting, trace_model
from inference.subsample import FirstIndices
from inference.svi import checkpoint as ckpt
from inference.svi.batches import EpochSampler, Feed, feedable_plate
from inference.svi.elbos import ELBOS, make_elbo
from inference.svi.result import SVIResult
from inference.svi.schedule import SCHEDULES, Schedule
from inference.svi.start import check_guide_covers, resolve_guide
from inference.svi.state import (
    CompileError,
    Problem,
    SVIState,
    apply_average,
    compile_loss,
    discover_params,
    latent_transforms,
    svi_step,
)
from inference.validation import check_positive_float, check_positive_int


def _can_jit(jit, elbo, kwargs, device) -> bool:
    """Compile the loss unless told not to, given an ELBO instance, handed tensors in
    ``model_kwargs`` (Pyro's JIT takes tensors only through ``*args``), or on a GPU
    (the traced graph's CPU constants would not follow the data there)."""
    if jit is not None:
        return bool(jit) and not isinstance(elbo, ELBO)
    tensors_in_kwargs = any(isinstance(v, torch.Tensor) for v in kwargs.values())
    return not isinstance(elbo, ELBO) and not tensors_in_kwargs and device.type == "cpu"


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
    device=None,
    callback=None,
    checkpoint=None,
    checkpoint_every: int = 500,
    dtype: torch.dtype | None = torch.float64,
    jit: bool | None = None,
    schedule: str = "adaptive",
) -> SVIResult:
    """Fit ``guide`` to ``model`` by maximising the ELBO.

    Parameters
    ----------
    model : callable
        A Pyro model; ``model_args`` and ``model_kwargs`` are passed to it (and to the guide).
    guide : callable or str
        A guide with the model's signature, or an autoguide name: ``normal``, ``mvn``,
        ``lowrank``, ``delta``, ``iaf``. A guide must have a site for every latent site
        of the model (discrete sites summed out by ``elbo="enum"`` excepted).
    num_steps : int
        The most optimisation steps; the fit stops earlier on convergence, and a larger
        budget follows the same path as a smaller one (it never gives a worse answer).
    lr : float
        Adam's learning rate while climbing; annealed 100-fold once converged.
    elbo : str or pyro.infer.ELBO
        ``trace``, ``meanfield`` (analytic KL where available), ``enum`` or an instance.
    num_particles : int
        Particles per ELBO estimate (vectorized).
    seed : int
        Seeds this fit only; the caller's RNG state is left alone.
    progress_bar : bool
        Show a tqdm bar with the running loss, the phase and the moment drift.
    device : str or torch.device, optional
        Where data, parameters and the RNG live (default CPU).
    callback : callable, optional
        ``callback(info)`` after every step, with that step's
        :class:`~inference.svi.state.StepInfo`; returning True stops the fit (not
        converged).
    checkpoint : path, optional
        The fit's whole state is written there atomically every ``checkpoint_every``
        steps, on interruption (Ctrl-C) and at the end. If the file exists, the fit
        resumes from it and ends with the numbers of an uninterrupted fit.
    dtype : torch.dtype or None
        Cast floating model arguments to this dtype and compute in it (None: leave as is).
    jit : bool, optional
        Compile the loss with the PyTorch JIT (about 5x more steps per second on small
        models). Default: on for ELBOs given by name, on the CPU, when ``model_kwargs``
        holds no tensors; if compilation fails the fit falls back to the uncompiled loss.
        On a subsampled plate the minibatch indices are an input of the compiled loss,
        checked against the uncompiled one on a second minibatch before the first step.
    schedule : str
        ``adaptive`` (default): the learning rate drops at plateaus, the fit stops on
        convergence and returns its iterate average (:mod:`inference.svi.schedule`).
        ``constant``: ``lr`` at every step for all ``num_steps`` steps, no convergence
        rule, the last iterate returned; for training networks (a VAE) by epochs, where
        ``num_steps = epochs × N / n`` and ``info.epoch`` tells the callback where it is.

    Returns
    -------
    SVIResult

    Notes
    -----
    The loss is ``-ELBO``, with ``ELBO = E_q[log p(x, z) - log q(z)] <= log p(x)``;
    the gap is ``KL(q || p(z | x))``. Gradients use the reparameterization
    ``z = mu + sigma * eps`` where the guide allows it (Kingma & Welling 2014).

    A model with exactly one subsampled plate (``pyro.plate(name, N, subsample_size=n)``)
    is fed its minibatches by the fit: epoch ``e`` is a random permutation of
    ``range(N)`` seeded from ``(seed, e)``, cut into consecutive slices of ``n`` (a slice
    that runs past an epoch's end is completed from the next epoch) and given to the
    plate, in the model and the guide, as the value of its subsample site. A step costs
    O(n), not Pyro's O(N) ``randperm``; the likelihood scale stays ``N / n``
    (:mod:`inference.svi.batches`).
    """
    check_positive_int("num_steps", num_steps)
    check_positive_float("lr", lr)
    check_positive_int("num_particles", num_particles)
    check_positive_int("checkpoint_every", checkpoint_every)
    if not isinstance(elbo, ELBO) and elbo not in ELBOS:
        raise ValueError(f"unknown elbo {elbo!r}; choose one of: {', '.join(ELBOS)}")
    if schedule not in SCHEDULES:
        raise ValueError(f"unknown schedule {schedule!r}; choose one of: {', '.join(SCHEDULES)}")
    if callback is not None and not callable(callback):
        raise ValueError(f"callback must be callable, got {type(callback).__name__}")
    room = Room(check_seed(seed), dtype, resolve_device(device))
    args, kwargs = prepare(tuple(model_args), dict(model_kwargs or {}), room)
    settings = {
        "guide": guide if isinstance(guide, str) else "guide",
        "lr": float(lr),
        "elbo": elbo if isinstance(elbo, str) else type(elbo).__name__,
        "num_particles": num_particles,
        "seed": room.seed,
        "num_steps": num_steps,
        "device": str(room.device),
        "dtype": str(dtype).removeprefix("torch."),
        "schedule": schedule,
    }
    run = _Run(model, guide, args, kwargs, elbo, num_particles, room, settings, jit)
    run.checkpoint, run.checkpoint_every = checkpoint, checkpoint_every
    return run.fit(num_steps, callback, progress_bar)


class _Run:
    """One call of :func:`fit_svi`: set up in a sealed room, loop, return the result."""

    def __init__(self, model, guide, args, kwargs, elbo, num_particles, room, settings, jit):
        self.model, self.guide, self.args, self.kwargs = model, guide, args, kwargs
        self.elbo, self.num_particles, self.room = elbo, num_particles, room
        self.settings, self.jit = settings, jit
        self.checkpoint, self.checkpoint_every = None, 500

    def fit(self, num_steps, callback, progress_bar) -> SVIResult:
        use_jit = _can_jit(self.jit, self.elbo, self.kwargs, self.room.device)
        try:
            return self._fit(num_steps, callback, progress_bar, use_jit)
        except CompileError:
            return self._fit(num_steps, callback, progress_bar, jit=False)

    def _fingerprint(self) -> dict:
        return ckpt.fingerprint(self.model, self.guide, self.args, self.kwargs, self.settings)

    def _fit(self, num_steps, callback, progress_bar, jit) -> SVIResult:
        start_time = time.perf_counter()
        earlier_s = 0.0
        print_ = self._fingerprint() if self.checkpoint is not None else None
        saved = ckpt.load(self.checkpoint, print_) if self.checkpoint is not None else None
        with isolated(self.room) as store:
            problem, state, guide_name, start = self._setup(jit)
            if saved is not None:
                state.load_state_dict(saved["state"])
                ckpt.set_rng_state(saved["rng"])
                earlier_s = saved["elapsed_s"]

            def save():
                elapsed = earlier_s + time.perf_counter() - start_time
                ckpt.save(self.checkpoint, state.state_dict(), ckpt.rng_state(), elapsed, print_)

            self._loop(problem, state, num_steps, callback, progress_bar, save)
            if self.checkpoint is not None:
                save()
            apply_average(problem, state)
        return SVIResult(
            model=self.model,
            guide=problem.guide,
            args=self.args,
            kwargs=self.kwargs,
            losses=np.asarray(state.losses),
            converged=state.converged,
            elapsed_s=earlier_s + time.perf_counter() - start_time,
            guide_name=guide_name,
            laplace=start,
            settings=self.settings,
            room=self.room,
            _params=store,
        )

    def _setup(self, jit):
        # The structure only: a subsampled plate takes its first indices, not randperm(N).
        prototype = trace_model(FirstIndices()(self.model), self.args, self.kwargs)
        nesting = max_plate_nesting(prototype)
        names = latent_sites(prototype)
        guide_fn, guide_name, start = resolve_guide(self.guide, self.model, self.args, self.kwargs)
        plate = feedable_plate(prototype)
        feed = None if plate is None else Feed.of(plate, self.model, guide_fn, self.args)
        problem = Problem(
            loss_fn=make_elbo(self.elbo, self.num_particles, nesting, jit),
            model=self.model,
            guide=guide_fn,
            args=self.args,
            kwargs=self.kwargs,
            latent=latent_transforms(prototype, names),
            nesting=nesting,
            jit=jit,
            feed=feed,
        )
        adaptive = self.settings["schedule"] == "adaptive"
        state = SVIState(schedule=Schedule(self.settings["lr"], adaptive=adaptive))
        if feed is not None:
            state.batches = EpochSampler(feed.size, feed.batch, self.room.seed, self.room.device)
        guide_trace = discover_params(problem, state)
        enumerating = isinstance(problem.loss_fn, TraceEnum_ELBO)
        enumerated_sites(prototype)  # a discrete site with no finite support is refused
        check_guide_covers(guide_trace, prototype, names, enumerating)
        eager = make_elbo(self.elbo, self.num_particles, nesting, False) if jit else None
        compile_loss(problem, eager)
        return problem, state, guide_name, start

    def _loop(self, problem, state, num_steps, callback, progress_bar, save) -> None:
        bar = tqdm(
            total=num_steps, initial=state.step, disable=not progress_bar, desc="svi", leave=False
        )
        first = True
        try:
            with _interrupt_between_steps(self.checkpoint is not None) as check_interrupt:
                while state.step < num_steps and not state.converged:
                    info = svi_step(problem, state, first_call=first)
                    first = False
                    bar.update()
                    if info.step % 50 == 0:
                        bar.set_postfix(
                            loss=f"{np.mean(state.losses[-50:]):.4g}",
                            phase=info.phase,
                            drift=f"{info.drift:.2g}",
                        )
                    # The callback first: what it records of a step is on disk before the
                    # checkpoint that holds the step (a resumed caller finds it there).
                    stop = callback is not None and callback(info) is True
                    if self.checkpoint is not None and state.step % self.checkpoint_every == 0:
                        save()
                    # A Ctrl-C during the step or its callback lands here: every step in
                    # the checkpoint the interruption writes has had its callback.
                    check_interrupt()
                    if stop:
                        break
        except KeyboardInterrupt:
            if self.checkpoint is not None and not first:
                save()
            raise
        finally:
            bar.close()


@contextlib.contextmanager
def _interrupt_between_steps(enabled: bool):
    """Defer Ctrl-C to the end of the current step, so a checkpoint never holds half a step.

    Only where Python delivers signals (the main thread); elsewhere a no-op.
    """
    if not enabled or threading.current_thread() is not threading.main_thread():
        yield lambda: None
        return
    pending = []
    previous = signal.signal(signal.SIGINT, lambda *_: pending.append(True))

    def check():
        if pending:
            raise KeyboardInterrupt

    try:
        yield check
    finally:
        signal.signal(signal.SIGINT, previous)
