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
from benchmarks.optimum import mvn_optimum
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
    """One flat record per run, the time to answer judged by the posterior's moments.

    Each run's snapshot means and sds (on the unconstrained latents) are averaged over
    the trailing :data:`~benchmarks.measures.WINDOW_STEPS` steps. The target is the
    family's optimum (:func:`benchmarks.optimum.mvn_optimum`). ``answer_step`` and
    ``time_to_answer_s`` say when the averages came within
    :data:`~benchmarks.measures.MEAN_TOL` sds and :data:`~benchmarks.measures.SD_TOL`
    of it for good (None / NaN: never). ``worst_z`` and ``worst_sd_ratio``: the largest
    deviations of the guide the method returned (its last snapshot), and ``final_elbo``
    its ELBO.
    """
    y, sigma = arrays()
    ref_loc, ref_cov = (t.numpy() for t in mvn_optimum(y, sigma))
    target = (ref_loc, np.sqrt(ref_cov.diagonal()))
    out = []
    for run in runs:
        sd = np.sqrt((run.scale_tril**2).sum(-1))
        loc_avg = np.stack([running_mean(run.steps, c) for c in run.loc.T], -1)
        sd_avg = np.stack([running_mean(run.steps, c) for c in sd.T], -1)
        step, seconds = time_to_answer(run.steps, run.times, loc_avg, sd_avg, target)
        answer = {k: float(v[-1]) for k, v in moments(run.loc, run.scale_tril).items()}
        out.append(
            {
                "method": run.method,
                "num_steps": int(run.steps[-1]),
                "steps_per_s": run.steps_per_s,
                "final_elbo": float(run.elbos()[-1]),
                "worst_z": float(np.max(np.abs(run.loc[-1] - target[0]) / target[1])),
                "worst_sd_ratio": _worst_ratio(sd[-1] / target[1]),
                "answer_step": step,
                "time_to_answer_s": seconds,
                "wall_s": run.wall_s,
                "cpu_s": run.cpu_s,
                **answer,
                **run.details,
            }
        )
    return out


def _worst_ratio(ratios: np.ndarray) -> float:
    """The ratio farthest from 1."""
    return float(ratios[np.argmax(np.abs(ratios - 1))])


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
