"""SVI on non-centered eight schools: vilab ``fit_svi`` against plain Pyro loops.

Every runner returns an :class:`SviRun`: snapshots, every ``every`` steps, of the
guide's Gaussian on the unconstrained latents ``(mu, log tau, eta_1..eta_8)`` with the
wall-clock time since the runner was called. :func:`summarise` scores the snapshots
with one ELBO estimator (:func:`benchmarks.measures.gaussian_elbo`) and reads off the
time to answer. NumPyro's runner is in :mod:`benchmarks.numpyro_eight_schools`.
"""

from dataclasses import dataclass, field

import numpy as np
import pyro
import torch
from pyro.infer import SVI, JitTrace_ELBO, Trace_ELBO
from pyro.infer.autoguide import AutoMultivariateNormal

from benchmarks.data import arrays, noncentered
from benchmarks.measures import (
    Stopwatch,
    gaussian_elbo,
    moments,
    running_mean,
    time_to_answer,
)
from inference import fit_svi

SNAPSHOT_EVERY = 10
SITES = ("mu", "tau", "eta")  # the order of the unconstrained latents in every snapshot


@dataclass(frozen=True)
class SviRun:
    """One SVI fit of a full-covariance Gaussian guide on eight schools.

    method: label in the tables. steps: step count at each snapshot. times: wall-clock
    seconds since the call began, at each snapshot (setup, MAP start and compilation
    included). loc (snapshot, 10) and scale_tril (snapshot, 10, 10): the guide's
    Gaussian on ``(mu, log tau, eta)``; the last snapshot is what the method returns.
    losses: the loss (negative ELBO estimate, nats) of every step taken.
    wall_s / cpu_s: wall-clock and process CPU seconds until the method returned.
    details: anything else worth recording.
    """

    method: str
    steps: np.ndarray
    times: np.ndarray
    loc: np.ndarray
    scale_tril: np.ndarray
    losses: np.ndarray
    wall_s: float
    cpu_s: float
    details: dict = field(default_factory=dict)

    @property
    def steps_per_s(self) -> float:
        """Steady-state speed: steps between the first and last snapshot per second."""
        if len(self.steps) < 2 or self.times[-1] <= self.times[0]:
            return float("nan")
        return float((self.steps[-1] - self.steps[0]) / (self.times[-1] - self.times[0]))

    def elbos(self) -> np.ndarray:
        """The ELBO of every snapshot (nats, common random numbers)."""
        y, sigma = (t.numpy() for t in arrays())
        return gaussian_elbo(self.loc, self.scale_tril, y, sigma)


def summarise(runs: list[SviRun]) -> list[dict]:
    """One flat record per run, the time to answer judged against the best of all runs.

    Each run's snapshot ELBOs are averaged over the trailing
    :data:`~benchmarks.measures.WINDOW_STEPS` steps (Adam's iterates jitter around the
    optimum by about 0.05 nats here, with dips of 0.15). ``best_elbo`` is the highest
    such average any run reached: the common target. ``answer_step`` and
    ``time_to_answer_s`` say when the run's average came within
    :data:`~benchmarks.measures.TOLERANCE_NATS` of it for good (None / NaN: never).
    ``final_elbo`` is the ELBO of the guide the method returned (its last snapshot).
    """
    elbos = [run.elbos() for run in runs]
    smooth = [running_mean(run.steps, e) for run, e in zip(runs, elbos, strict=True)]
    best = max(float(s.max()) for s in smooth)
    out = []
    for run, elbo, averaged in zip(runs, elbos, smooth, strict=True):
        step, seconds = time_to_answer(run.steps, run.times, averaged, best)
        answer = {k: float(v[-1]) for k, v in moments(run.loc, run.scale_tril).items()}
        out.append(
            {
                "method": run.method,
                "num_steps": int(run.steps[-1]),
                "steps_per_s": run.steps_per_s,
                "final_elbo": float(elbo[-1]),
                "best_elbo": best,
                "elbo_gap": best - float(averaged[-1]),
                "answer_step": step,
                "time_to_answer_s": seconds,
                "wall_s": run.wall_s,
                "cpu_s": run.cpu_s,
                **answer,
                **run.details,
            }
        )
    return out


def canonical(loc, scale_tril, slices: dict[str, slice]) -> tuple[np.ndarray, np.ndarray]:
    """``loc`` and a Cholesky factor of the covariance, latents put in :data:`SITES` order.

    ``slices`` says where each site sits in the engine's packed latent vector.
    """
    loc, scale_tril = np.asarray(loc, dtype=float), np.asarray(scale_tril, dtype=float)
    order = np.concatenate([np.arange(len(loc))[slices[name]] for name in SITES])
    cov = (scale_tril @ scale_tril.T)[np.ix_(order, order)]
    return loc[order].copy(), np.linalg.cholesky(cov)


def _pack(snapshots):
    steps, times, locs, trils = zip(*snapshots, strict=True)
    return np.array(steps), np.array(times), np.stack(locs), np.stack(trils)


def run_vilab_svi(num_steps: int = 2000, *, seed: int = 0, every: int = SNAPSHOT_EVERY):
    """vilab ``fit_svi(model, "mvn")`` with its defaults, observed every ``every`` steps.

    The snapshots are taken by ``fit_svi``'s ``callback``, which runs inside the fit
    (its param store is the fit's): it copies the guide's whitened parameters ``u_loc``
    and ``u_scale_tril``. After the fit they are mapped back with the guide's fixed
    centre ``c`` and basis ``B``: ``loc = c + B u_loc``, ``L = B u_scale_tril``. The
    last snapshot is the fitted guide as returned (``fit.params()``).
    """
    raw = []

    def record(info):
        if (info.step + 1) % every == 0:
            store = pyro.get_param_store()
            params = {name.rsplit(".", 1)[-1]: store[name] for name in store.keys()}
            u_loc, u_tril = params["u_loc"], params["u_scale_tril"]
            raw.append(
                (info.step + 1, clock.read()[0], u_loc.detach().clone(), u_tril.detach().clone())
            )

    y, sigma = arrays()
    clock = Stopwatch()
    fit = fit_svi(noncentered, "mvn", y, sigma, num_steps=num_steps, seed=seed, callback=record)
    wall_s, cpu_s = clock.read()
    params = {name.rsplit(".", 1)[-1]: value for name, value in fit.params().items()}
    raw = [r for r in raw if r[0] < fit.num_steps]
    raw.append((fit.num_steps, wall_s, params["u_loc"], params["u_scale_tril"]))
    guide, slices = fit.guide, fit.guide.site_slices()
    snapshots = []
    for step, seconds, u_loc, u_tril in raw:
        loc, tril = canonical(guide.center + guide.basis @ u_loc, guide.basis @ u_tril, slices)
        snapshots.append((step, seconds, loc, tril))
    details = {"converged": fit.converged, "laplace_ok": bool(fit.laplace.ok)}
    return SviRun(
        "vilab fit_svi mvn (defaults)", *_pack(snapshots), fit.losses, wall_s, cpu_s, details
    )


def _pyro_slices(guide):
    """Where each site sits in a Pyro ``AutoContinuous`` guide's packed latent vector."""
    slices, start = {}, 0
    for name, shape in guide._unconstrained_shapes.items():
        size = int(np.prod(shape, dtype=int))
        slices[name] = slice(start, start + size)
        start += size
    return slices


def run_pyro_svi(
    num_steps: int = 3000,
    *,
    jit: bool = False,
    lr: float = 1e-2,
    seed: int = 0,
    every: int = SNAPSHOT_EVERY,
) -> SviRun:
    """Plain Pyro: ``AutoMultivariateNormal`` + ``Adam(lr)`` + (Jit)Trace_ELBO, fixed steps."""
    y, sigma = arrays()
    pyro.set_rng_seed(seed)
    pyro.clear_param_store()
    clock = Stopwatch()
    guide = AutoMultivariateNormal(noncentered)
    elbo = JitTrace_ELBO(ignore_jit_warnings=True) if jit else Trace_ELBO()
    svi = SVI(noncentered, guide, pyro.optim.Adam({"lr": lr}), elbo)
    losses, raw = [], []
    for step in range(1, num_steps + 1):
        losses.append(svi.step(y, sigma))
        if step % every == 0 or step == num_steps:
            with torch.no_grad():
                posterior = guide.get_posterior()
                raw.append(
                    (step, clock.read()[0], posterior.loc.clone(), posterior.scale_tril.clone())
                )
    wall_s, cpu_s = clock.read()
    slices = _pyro_slices(guide)
    pyro.clear_param_store()
    snapshots = [(s, t, *canonical(loc, tril, slices)) for s, t, loc, tril in raw]
    label = f"Pyro AutoMVN + Adam {lr:g} + {'JitTrace_ELBO' if jit else 'Trace_ELBO'}"
    return SviRun(label, *_pack(snapshots), np.asarray(losses), wall_s, cpu_s)
