"""NUTS on non-centered eight schools: vilab (jit off, jit on, SVI warm start) and Pyro.

Each runner returns a :class:`NutsRun` whose ``wall_s`` covers everything the method
needs to produce its draws, warmup included (and the SVI fit, for the warm start).
NumPyro's runner is in :mod:`benchmarks.numpyro_eight_schools`.
"""

from dataclasses import dataclass, field

import numpy as np
import pyro
import torch
from pyro.infer import MCMC, NUTS

from benchmarks.data import arrays, noncentered
from benchmarks.measures import Stopwatch, min_bulk_ess, theta_from
from inference import fit_svi, run_nuts


@dataclass(frozen=True)
class NutsRun:
    """One chain of NUTS on eight schools.

    method: label in the tables. wall_s / cpu_s: wall-clock and process CPU seconds of
    the whole method (warmup, compilation, and for warm starts the SVI fit).
    warmup_steps, num_samples: the chain's budget. draws: ``mu``, ``tau`` (chain, draw)
    and ``theta`` (chain, draw, school). divergences: after warmup.
    details: anything else worth recording (SVI time, step size, ...).
    """

    method: str
    wall_s: float
    cpu_s: float
    warmup_steps: int
    num_samples: int
    draws: dict[str, np.ndarray]
    divergences: int
    details: dict = field(default_factory=dict)

    def summary(self) -> dict:
        """A flat record: budget, times, min bulk ESS, ESS per wall-clock and CPU second."""
        ess, by_label = min_bulk_ess(self.draws)
        return {
            "method": self.method,
            "warmup_steps": self.warmup_steps,
            "num_samples": self.num_samples,
            "wall_s": self.wall_s,
            "cpu_s": self.cpu_s,
            "min_ess_bulk": ess,
            "ess_per_s": ess / self.wall_s,
            "ess_per_cpu_s": ess / self.cpu_s,
            "divergences": self.divergences,
            "ess_bulk": by_label,
            **self.details,
        }


def chain_draws(mu, tau, eta) -> dict[str, np.ndarray]:
    """One chain's draws with a chain dim; ``theta`` recomputed from ``eta`` for all alike."""
    mu, tau, eta = (np.asarray(x, dtype=float) for x in (mu, tau, eta))
    mu, tau = mu.reshape(1, -1), tau.reshape(1, -1)
    eta = eta.reshape(1, mu.shape[1], -1)
    return {"mu": mu, "tau": tau, "theta": theta_from(mu, tau, eta)}


def _vilab_run(method, mc, wall_s, cpu_s, details) -> NutsRun:
    s = {k: v.numpy() for k, v in mc.samples.items()}
    return NutsRun(
        method=method,
        wall_s=wall_s,
        cpu_s=cpu_s,
        warmup_steps=mc.warmup_steps,
        num_samples=mc.num_samples,
        draws=chain_draws(s["mu"], s["tau"], s["eta"]),
        divergences=mc.num_divergences,
        details={
            "dense_mass": mc.dense_mass,
            "mean_tree_depth": float(mc.stats["tree_depth"].mean()),
            "step_size": float(mc.stats["step_size"][0, 0]),
            **details,
        },
    )


def run_vilab_nuts(
    warmup_steps: int, num_samples: int, *, jit: bool, seed: int = 0, method: str | None = None
) -> NutsRun:
    """vilab's ``run_nuts`` with its defaults (dense mass for 10 latents), one chain."""
    y, sigma = arrays()
    clock = Stopwatch()
    mc = run_nuts(
        noncentered,
        y,
        sigma,
        num_samples=num_samples,
        warmup_steps=warmup_steps,
        num_chains=1,
        seed=seed,
        jit=jit,
    )
    wall_s, cpu_s = clock.read()
    label = method or f"vilab run_nuts, jit {'on' if jit else 'off'}"
    return _vilab_run(label, mc, wall_s, cpu_s, {"jit": jit})


def run_vilab_warm_nuts(
    warmup_steps: int,
    num_samples: int,
    *,
    jit: bool = True,
    svi_steps: int = 2000,
    seed: int = 0,
) -> NutsRun:
    """``fit_svi(model, "mvn")`` with its defaults, then ``run_nuts(init_from=fit)``.

    The wall time counts both: the SVI fit is part of what the warm start costs.
    """
    y, sigma = arrays()
    clock = Stopwatch()
    fit = fit_svi(noncentered, "mvn", y, sigma, num_steps=svi_steps, seed=seed)
    svi_wall_s, _ = clock.read()
    mc = run_nuts(
        noncentered,
        y,
        sigma,
        num_samples=num_samples,
        warmup_steps=warmup_steps,
        num_chains=1,
        seed=seed,
        jit=jit,
        init_from=fit,
    )
    wall_s, cpu_s = clock.read()
    details = {
        "jit": jit,
        "svi_s": svi_wall_s,
        "svi_steps": fit.num_steps,
        "svi_converged": fit.converged,
    }
    label = f"vilab SVI-mvn warm start + run_nuts, jit {'on' if jit else 'off'}"
    return _vilab_run(label, mc, wall_s, cpu_s, details)


def run_pyro_nuts(warmup_steps: int, num_samples: int, *, seed: int = 0) -> NutsRun:
    """Plain Pyro: ``MCMC(NUTS(model))`` with Pyro's defaults (diagonal mass, no JIT)."""
    y, sigma = arrays()
    pyro.set_rng_seed(seed)
    pyro.clear_param_store()
    clock = Stopwatch()
    kernel = NUTS(noncentered)
    mcmc = MCMC(kernel, num_samples=num_samples, warmup_steps=warmup_steps, disable_progbar=True)
    mcmc.run(y, sigma)
    samples = mcmc.get_samples()
    wall_s, cpu_s = clock.read()
    divergences = sum(len(v) for v in mcmc.diagnostics()["divergences"].values())
    with torch.no_grad():
        draws = chain_draws(samples["mu"], samples["tau"], samples["eta"])
    return NutsRun(
        method="Pyro NUTS, defaults (diag mass, jit off)",
        wall_s=wall_s,
        cpu_s=cpu_s,
        warmup_steps=warmup_steps,
        num_samples=num_samples,
        draws=draws,
        divergences=divergences,
        details={"step_size": float(kernel.step_size)},
    )
