"""SVI as state + step: what carries from one step to the next, and one step.

:class:`SVIState` holds everything a fit carries forward (the optimiser, the iterate
average, the schedule, the convergence judges, the losses, the step count); the
parameters themselves live in the fit's private param store. :func:`svi_step` takes one
optimisation step and returns a :class:`StepInfo` describing it. ``fit_svi`` is a loop
over :func:`svi_step`; a callback, a checkpoint and a multi-process trainer are thin
callers of the same step. ``state_dict``/``load_state_dict`` make the state a plain dict
of tensors, numbers and strings, which a checkpoint stores without pickling code.

On a model with one subsampled plate the loss is fed its minibatch indices by an
:class:`~inference.svi.batches.EpochSampler` held in the state (its position is part of
the state dict), so a step costs O(batch) and a resumed fit sees the same minibatches.
"""

import contextlib
import math
import warnings
from dataclasses import dataclass, field

import numpy as np
import pyro
import torch
from pyro import poutine
from pyro.distributions.transforms import biject_to

from inference.posterior.replay import DRAW_PLATE
from inference.svi.batches import EpochSampler, Feed
from inference.svi.convergence import MomentDrift, Plateau
from inference.svi.schedule import COOL, DONE, Schedule

# Adam divides by sqrt(v) + eps: with eps at its 1e-8 default, round-off gradients of a
# guide that already matches the posterior turn into full-size steps.
ADAM_EPS = 1e-6
AVERAGE_HORIZON = 100  # steps: time constant of the iterate average the fit returns
MOMENT_DRAWS = 256  # guide draws (common random numbers) behind each moment snapshot
MOMENT_SEED = 12345


class FitError(RuntimeError):
    """A fit that cannot go on (a non-finite loss, a guide that does not fit the model)."""


class CompileError(Exception):
    """The JIT-compiled loss failed on its first call; the caller retries uncompiled."""


@dataclass(frozen=True)
class StepInfo:
    """What one step did.

    step: its index (0-based). loss: the negative ELBO estimate it climbed (nats, whole
    data set). lr: its learning rate. phase: the schedule's phase after it (``climb``,
    ``cool``, ``done``). drift: the latest moment drift (posterior sds over
    the judged span; inf until known). done: the fit has converged and stops here.
    epoch: passes over the data completed after it (fractional; on a model with a fed
    plate, ``steps × n / N``; otherwise the steps taken, each step seeing all the data).
    """

    step: int
    loss: float
    lr: float
    phase: str
    drift: float
    done: bool
    epoch: float = 0.0


@dataclass(frozen=True)
class Problem:
    """What a fit optimises: a loss on ``(model, guide)`` with the model's arguments.

    latent: the model's latent sites with the transform to their unconstrained space
    (for the moment snapshots). nesting: how many plates the model nests. feed: on a
    model with one subsampled plate, the model and guide that take the plate's indices
    as their last argument (:mod:`inference.svi.batches`); None otherwise.
    """

    loss_fn: object
    model: object
    guide: object
    args: tuple
    kwargs: dict
    latent: dict
    nesting: int
    jit: bool
    feed: Feed | None = None

    def loss(self, indices: torch.Tensor | None = None, loss_fn=None) -> torch.Tensor:
        """The differentiable loss; ``loss_fn`` in place of the fit's own (e.g. an
        uncompiled twin). With a fed plate, on the minibatch ``indices`` (None: ``n``
        indices drawn with replacement from the RNG stream, O(n), a random minibatch as
        Pyro's plate would draw)."""
        loss_fn = loss_fn or self.loss_fn
        feed = self.feed
        if feed is None:
            return loss_fn.differentiable_loss(self.model, self.guide, *self.args, **self.kwargs)
        if indices is None:
            indices = torch.randint(feed.size, (feed.batch,))
        return loss_fn.differentiable_loss(
            feed.model, feed.guide, *feed.args(indices), **self.kwargs
        )


@dataclass
class SVIState:
    """What carries from one step to the next (the parameters are in the param store).

    step: steps taken. losses: the loss of each. params: the optimised (unconstrained)
    parameters by name, in the order the optimiser holds them. optimizer: Adam.
    average: the iterate average of each parameter (Polyak-Ruppert, horizon
    ``AVERAGE_HORIZON`` or half the steps at the current rate, whichever is longer).
    schedule, plateau, drift: the learning-rate schedule and the two convergence judges.
    batches: the minibatch sampler of a fed plate (None without one).
    """

    schedule: Schedule
    params: dict[str, torch.Tensor] = field(default_factory=dict)
    optimizer: torch.optim.Adam | None = None
    average: dict[str, torch.Tensor] = field(default_factory=dict)
    plateau: Plateau = field(default_factory=Plateau)
    drift: MomentDrift = field(default_factory=MomentDrift)
    losses: list[float] = field(default_factory=list)
    step: int = 0
    batches: EpochSampler | None = None

    @property
    def epochs(self) -> float:
        """Passes over the data so far (a fed plate's ``n / N`` per step; else one per step)."""
        if self.batches is None:
            return float(self.step)
        return self.step / self.batches.steps_per_epoch

    @property
    def converged(self) -> bool:
        """The schedule finished its cool-down: the convergence rule stopped the fit."""
        return self.schedule.phase == DONE

    def state_dict(self) -> dict:
        """Plain data (tensors, numbers, strings) from which :meth:`load_state_dict` resumes."""
        return {
            "step": self.step,
            "losses": torch.tensor(self.losses, dtype=torch.float64),
            "params": {k: v.detach().clone() for k, v in self.params.items()},
            "average": {k: v.clone() for k, v in self.average.items()},
            "optimizer": self.optimizer.state_dict() if self.optimizer else None,
            "schedule": self.schedule.state_dict(),
            "plateau": self.plateau.state_dict(),
            "drift": self.drift.state_dict(),
            "batches": self.batches.state_dict() if self.batches is not None else None,
        }

    @torch.no_grad()
    def load_state_dict(self, state: dict) -> None:
        """Resume from :meth:`state_dict`: parameters are copied into the live tensors."""
        for name, value in state["params"].items():
            self.params[name].copy_(value)
        self.average = {k: v.clone() for k, v in state["average"].items()}
        if state["optimizer"] is not None:
            self.optimizer.load_state_dict(state["optimizer"])
        self.schedule.load_state_dict(state["schedule"])
        self.plateau.load_state_dict(state["plateau"])
        self.drift.load_state_dict(state["drift"])
        if self.batches is not None and state.get("batches") is not None:
            self.batches.load_state_dict(state["batches"])
        self.losses = [float(x) for x in state["losses"]]
        self.step = int(state["step"])


def discover_params(problem: Problem, state: SVIState):
    """Run the guide, then the model on the guide's draws, once (without touching the RNG
    stream) to create their parameters (e.g. a network's weights, ``pyro.module``).

    The optimiser then holds every parameter from the first step, in name order, so a
    checkpoint's optimiser state maps onto a resumed fit's parameters. Returns the
    guide's trace (its sample sites say which latent sites it covers). With a fed plate
    both run on a fixed minibatch.
    """
    guide, model, args = problem.guide, problem.model, problem.args
    if problem.feed is not None:
        guide, model = problem.feed.guide, problem.feed.model
        args = problem.feed.args(problem.feed.fixed(0))
    with torch.random.fork_rng(devices=_cuda_devices()), poutine.block():
        trace = poutine.trace(guide).get_trace(*args, **problem.kwargs)
        _add_params(state, trace, state.schedule.lr)
        with poutine.trace(param_only=True) as capture, poutine.replay(trace=trace):
            model(*args, **problem.kwargs)
    _add_params(state, capture.trace, state.schedule.lr)
    return trace


def compile_loss(problem: Problem, eager_fn=None) -> None:
    """Run a JIT-compiled loss once, without touching the RNG stream.

    Tracing draws random numbers that later calls do not, so it must happen at the same
    point of a fresh and a resumed fit: here, before any step. Raises
    :class:`CompileError` when the model cannot be compiled (the caller retries
    uncompiled).

    With a fed plate the loss is traced on one fixed minibatch and must take the indices
    as an input, not as constants: a model that turns them into numbers or numpy indices
    would bake the first minibatch's data into the graph. So the compiled loss is then
    checked against ``eager_fn`` (the same ELBO uncompiled) on another minibatch, with
    the same random numbers; a mismatch raises :class:`CompileError` too.
    """
    if not problem.jit:
        return
    feed = problem.feed
    try:
        with torch.random.fork_rng(devices=_cuda_devices()), quiet_jit():
            problem.loss(feed.fixed(0) if feed is not None else None)
            if feed is not None and eager_fn is not None:
                _check_fed_compiled(problem, eager_fn)
    except (RuntimeError, TypeError, ValueError) as err:
        raise CompileError from err


FED_RTOL = 1e-6  # compiled and eager losses on the same minibatch and random numbers
FED_DRAWS = 16  # loss evaluations per side when the two draw different random numbers
FED_MAX_Z = 5.0  # their means may differ by this many standard errors


def _check_fed_compiled(problem: Problem, eager_fn) -> None:
    """The compiled loss must follow the minibatch: checked on a minibatch it was not
    traced on, against the eager loss.

    With the same seed the two usually draw the same numbers and must agree to round-off.
    Not always: under the tracer torch draws normal variates by another routine
    (``torch.normal`` instead of ``normal_``), so a guide that samples gets other draws.
    Then the compiled loss must differ between two minibatches with the same random
    numbers (a graph with the indices baked in gives both the first one's loss), and the
    two losses' means over ``FED_DRAWS`` seeds must agree within ``FED_MAX_Z`` standard
    errors.
    """
    other = problem.feed.fixed(1)

    def losses(loss_fn, seeds, indices=other) -> list[float]:
        out = []
        for seed in seeds:
            torch.manual_seed(seed)
            with poutine.block():
                out.append(float(problem.loss(indices, loss_fn).detach()))
        return out

    (compiled,), (eager,) = losses(problem.loss_fn, [MOMENT_SEED]), losses(eager_fn, [MOMENT_SEED])
    if math.isclose(compiled, eager, rel_tol=FED_RTOL, abs_tol=FED_RTOL):
        return
    (first,) = losses(problem.loss_fn, [MOMENT_SEED], problem.feed.fixed(0))
    if first == compiled:
        raise ValueError(f"the compiled loss ignores the minibatch indices ({compiled} twice)")
    seeds = range(MOMENT_SEED, MOMENT_SEED + FED_DRAWS)
    compiled, eager = np.array(losses(problem.loss_fn, seeds)), np.array(losses(eager_fn, seeds))
    se = math.sqrt((compiled.var(ddof=1) + eager.var(ddof=1)) / FED_DRAWS)
    if not abs(compiled.mean() - eager.mean()) <= FED_MAX_Z * se:
        raise ValueError(
            f"the compiled loss ignores the minibatch indices "
            f"({compiled.mean():.6g} != {eager.mean():.6g} ± {se:.2g})"
        )


def _add_params(state: SVIState, trace, lr: float) -> None:
    new = {
        name: site["value"].unconstrained()
        for name, site in sorted(trace.nodes.items())
        if site["type"] == "param" and name not in state.params
    }
    new = {k: v for k, v in new.items() if v.requires_grad}
    if not new:
        return
    state.params.update(new)
    if state.optimizer is None:
        state.optimizer = torch.optim.Adam(list(new.values()), lr=lr, eps=ADAM_EPS)
    else:
        state.optimizer.add_param_group({"params": list(new.values()), "lr": lr})


def _cuda_devices() -> list:
    device = torch.get_default_device()
    return [device] if device.type == "cuda" else []


def svi_step(problem: Problem, state: SVIState, first_call: bool = False) -> StepInfo:
    """Take one step: estimate the loss, climb its gradient, judge convergence.

    ``first_call``: the first step of this call of the fit (an error then is the model's
    or guide's own, not a blow-up of the optimisation).
    """
    step = state.step
    lr = state.schedule.lr_at(step)
    indices = state.batches.next() if state.batches is not None else None
    if problem.jit and state.step > 0:
        # Pyro's compiled loss refuses parameters created after its first call, so there
        # is nothing new to look for (and the look costs ~10% of a small network's step).
        loss = _loss(problem, state, first_call, indices)
    else:
        with poutine.trace(param_only=True) as capture:
            loss = _loss(problem, state, first_call, indices)
        _add_params(state, capture.trace, lr)
    value = float(loss.detach())
    if not math.isfinite(value):
        raise blow_up(f"the loss became {value}", step, state.losses)
    if state.optimizer is not None:
        for group in state.optimizer.param_groups:
            group["lr"] = lr
        state.optimizer.zero_grad()
        loss.backward()
        state.optimizer.step()
    state.losses.append(value)
    state.step += 1
    if state.schedule.adaptive:
        _update_average(state)
        _judge(problem, state, step)
    return StepInfo(
        step=step,
        loss=value,
        lr=lr,
        phase=state.schedule.phase,
        drift=state.drift.drift(),
        done=state.schedule.phase == DONE,
        epoch=state.epochs,
    )


def _loss(problem: Problem, state: SVIState, first_call: bool, indices=None):
    try:
        with quiet_jit():
            return problem.loss(indices)
    except (RuntimeError, TypeError, ValueError) as err:
        if not first_call and not isinstance(err, TypeError):
            # E.g. Pyro's validation rejecting a NaN parameter: the fit blew up.
            first = (str(err).splitlines() or [""])[0][:200]
            what = f"the model or guide failed ({type(err).__name__}: {first})"
            raise blow_up(what, state.step, state.losses) from err
        raise


@torch.no_grad()
def _update_average(state: SVIState) -> None:
    # Tail averaging: the horizon grows to half the steps taken at the current rate, so
    # the longer a rate has run (its iterates wandering around the optimum), the more of
    # them the average pools; after a change of rate it starts again from 100 steps.
    # On eight schools at 2000 steps this halves the wander of the returned mean.
    at_rate = state.step - state.schedule.rate_since
    decay = 1.0 - 1.0 / max(AVERAGE_HORIZON, at_rate / 2)
    for name, p in state.params.items():
        avg = state.average.get(name)
        if avg is None:
            state.average[name] = p.detach().clone()
        else:
            avg.mul_(decay).add_(p.detach(), alpha=1.0 - decay)


def _judge(problem: Problem, state: SVIState, step: int) -> None:
    schedule = state.schedule
    if schedule.phase == COOL:
        schedule.advance(step)
        return
    if state.drift.due(step):
        with averaged(state):
            moments = guide_moments(problem)
        if moments is not None:
            state.drift.record(step, *moments)
    if not state.plateau.update(state.losses):
        return
    settled = state.drift.settled() or not state.drift.history
    if schedule.plateau(step, settled):
        if state.optimizer is not None:
            state.optimizer.state.clear()
        state.drift.reset()
    state.plateau.reset()


@contextlib.contextmanager
@torch.no_grad()
def averaged(state: SVIState):
    """Swap the iterate average into the parameters for the duration of the block."""
    saved = {k: p.detach().clone() for k, p in state.params.items()}
    with torch.no_grad():
        for name, p in state.params.items():
            p.copy_(state.average[name])
    try:
        yield
    finally:
        for name, p in state.params.items():
            p.copy_(saved[name])


def apply_average(problem: Problem, state: SVIState) -> None:
    """Leave in the parameters what the fit returns: the iterate average.

    Averaging pools the noise of a stochastic loss. A deterministic loss (a point-mass
    guide on the whole data: two evaluations agree exactly) has none, and there the
    average only drags in the climb (on the gmm case's MAP fit, 3.7 nats below the last
    iterate): the better of the two is returned.
    """
    if not state.average:
        return
    with quiet_jit():
        last = float(_loss(problem, state, False).detach())
        deterministic = last == float(_loss(problem, state, False).detach())
        if deterministic:
            with averaged(state):
                if float(_loss(problem, state, False).detach()) >= last:
                    return
    with torch.no_grad():
        for name, p in state.params.items():
            p.copy_(state.average[name])


_UNMEASURABLE: set = set()


def guide_moments(problem: Problem) -> tuple[np.ndarray, np.ndarray] | None:
    """Means and sds of the guide's draws of every latent site, unconstrained and flattened.

    The same draws (``MOMENT_SEED``) every time, so two snapshots differ by what the
    parameters did, not by sampling noise; the fit's RNG stream is left alone. None for
    a guide that does not broadcast over a plate of draws (then the loss alone judges).
    With a fed plate the guide runs on one fixed minibatch (the same points every time,
    and no permutation of the whole plate).
    """
    key = id(problem.guide)
    if key in _UNMEASURABLE:
        return None
    guide, args = problem.guide, problem.args
    if problem.feed is not None:
        guide, args = problem.feed.guide, problem.feed.args(problem.feed.fixed(0))
    try:
        with torch.random.fork_rng(devices=_cuda_devices()), poutine.block():
            torch.manual_seed(MOMENT_SEED)
            with pyro.plate(DRAW_PLATE, MOMENT_DRAWS, dim=-problem.nesting - 1):
                trace = poutine.trace(guide).get_trace(*args, **problem.kwargs)
        columns = []
        for name, transform in problem.latent.items():
            value = transform.inv(trace.nodes[name]["value"].detach())
            columns.append(value.reshape(MOMENT_DRAWS, -1))
        draws = torch.cat(columns, dim=1).double()
    except (KeyError, RuntimeError, ValueError, IndexError):
        _UNMEASURABLE.add(key)
        return None
    if draws.shape[0] != MOMENT_DRAWS or not torch.isfinite(draws).all():
        return None
    return draws.mean(0).cpu().numpy(), draws.std(0).cpu().numpy()


def latent_transforms(trace, names) -> dict:
    """``{site: transform to its unconstrained space}`` for the continuous latent ``names``."""
    out = {}
    for name in names:
        fn = trace.nodes[name]["fn"]
        if fn.support.is_discrete:
            continue
        out[name] = biject_to(fn.support)
    return out


@contextlib.contextmanager
def quiet_jit():
    """Hide torch's deprecation notice for ``torch.jit.trace``, which Pyro's JIT ELBOs use;
    the user did not call it and cannot act on it."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*torch.jit.trace.*", category=FutureWarning)
        yield


def blow_up(what: str, step: int, losses: list[float]) -> FitError:
    """The error of a fit that cannot go on, with the step and the last finite loss."""
    last = next((x for x in reversed(losses) if math.isfinite(x)), float("nan"))
    return FitError(
        f"{what} at step {step}; last finite loss {last:.4g}. "
        "Try a smaller lr or a guide that starts closer to the posterior."
    )
