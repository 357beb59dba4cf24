"""NUTS runners for vilab (nutpie and Pyro backends, SVI warm start) and plain Pyro.

Each runner returns a :class:`NutsRun` whose ``wall_s`` covers everything the method
needs to produce its draws, warmup included (and the SVI fit, for the warm start).
The model comes from a :class:`benchmarks.cases.Case` (eight schools by default).
NumPyro's runners are in the ``numpyro_*`` modules; the cold-process runs of vilab in
:mod:`benchmarks.cold`.
"""

from dataclasses import dataclass, field

import numpy as np
import pyro
import torch
from pyro.infer import MCMC, NUTS

from benchmarks.cases import EIGHT_SCHOOLS, Case
from benchmarks.measures import Stopwatch, chain_draws, min_bulk_ess
from inference import fit_svi, run_nuts

__all__ = [
    "FailedRun",
    "NutsRun",
    "chain_draws",
    "run_pyro_nuts",
    "run_vilab_nuts",
    "run_vilab_warm_nuts",
]


@dataclass(frozen=True)
class NutsRun:
    """One chain of NUTS on one model.

    method: label in the tables. wall_s / cpu_s: wall-clock and process CPU seconds of
    the whole method (warmup, compilation, and for warm starts the SVI fit).
    warmup_steps, num_samples: the chain's budget. draws: what the ESS runs over, each
    (chain, draw, ...) (on eight schools ``mu``, ``tau`` and ``theta``).
    divergences: after warmup. details: anything else worth recording (step size, ...).
    model: the :class:`~benchmarks.cases.Case` name.
    """

    method: str
    wall_s: float
    cpu_s: float
    warmup_steps: int
    num_samples: int
    draws: dict[str, np.ndarray]
    divergences: int
    details: dict = field(default_factory=dict)
    model: str = EIGHT_SCHOOLS.name

    def summary(self) -> dict:
        """A flat record: budget, times, min bulk ESS, ESS per wall-clock and CPU second."""
        ess, by_label = min_bulk_ess(self.draws)
        return {
            "model": self.model,
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


def vilab_label(backend: str, jit: bool, compile: bool | None = None) -> str:
    if backend == "nutpie":
        how = {None: "", True: ", compiled", False: ", traced"}[compile]
        return f"vilab run_nuts (nutpie{how})"
    return f"vilab run_nuts, backend pyro, jit {'on' if jit else 'off'}"


def _vilab_run(case, method, mc, wall_s, cpu_s, details) -> NutsRun:
    s = {k: v.numpy() for k, v in mc.samples.items()}
    extra = {}
    if "n_steps" in mc.stats:
        extra["mean_leapfrog_steps"] = float(mc.stats["n_steps"].mean())
    return NutsRun(
        method=method,
        wall_s=wall_s,
        cpu_s=cpu_s,
        warmup_steps=mc.warmup_steps,
        num_samples=mc.num_samples,
        draws=case.draws(s),
        divergences=mc.num_divergences,
        details={
            "backend": mc.backend,
            "potential": mc.potential,
            "dense_mass": mc.dense_mass,
            "mean_tree_depth": float(mc.stats["tree_depth"].mean()),
            "step_size": float(mc.stats["step_size"][0, 0]),
            "elapsed_s": mc.elapsed_s,
            **extra,
            **details,
        },
        model=case.name,
    )


def run_vilab_nuts(
    warmup_steps: int,
    num_samples: int,
    *,
    case: Case = EIGHT_SCHOOLS,
    backend: str = "nutpie",
    jit: bool = False,
    seed: int = 0,
    method: str | None = None,
    compile: bool | None = None,
) -> NutsRun:
    """vilab's ``run_nuts`` with its defaults on ``backend``, one chain.

    nutpie: low-rank metric adapted from draws and gradients, the potential captured as
    one graph and compiled by Inductor (``compile=True``, the default for these budgets)
    or run by TorchScript (``False``); ``jit`` is the Pyro backend's switch. Pyro: dense
    mass up to 200 latents, Pyro's potential JIT-compiled when ``jit``.
    """
    args = case.arrays()
    clock = Stopwatch()
    mc = run_nuts(
        case.model,
        *args,
        num_samples=num_samples,
        warmup_steps=warmup_steps,
        num_chains=1,
        seed=seed,
        jit=jit,
        backend=backend,
        compile=compile if backend == "nutpie" else None,
    )
    wall_s, cpu_s = clock.read()
    label = method or vilab_label(backend, jit, compile)
    return _vilab_run(case, label, mc, wall_s, cpu_s, {"jit": jit})


def run_vilab_warm_nuts(
    warmup_steps: int,
    num_samples: int,
    *,
    case: Case = EIGHT_SCHOOLS,
    backend: str = "nutpie",
    jit: bool = True,
    svi_steps: int = 2000,
    seed: int = 0,
) -> NutsRun:
    """``fit_svi(model, "mvn")`` with its defaults, then ``run_nuts(init_from=fit)``.

    The wall time counts both: the SVI fit is part of what the warm start costs.
    """
    args = case.arrays()
    clock = Stopwatch()
    fit = fit_svi(case.model, "mvn", *args, num_steps=svi_steps, seed=seed)
    svi_wall_s, _ = clock.read()
    mc = run_nuts(
        case.model,
        *args,
        num_samples=num_samples,
        warmup_steps=warmup_steps,
        num_chains=1,
        seed=seed,
        jit=jit,
        init_from=fit,
        backend=backend,
    )
    wall_s, cpu_s = clock.read()
    details = {
        "jit": jit,
        "svi_s": svi_wall_s,
        "svi_steps": fit.num_steps,
        "svi_converged": fit.converged,
    }
    label = f"vilab SVI-mvn warm start + {vilab_label(backend, jit).removeprefix('vilab ')}"
    return _vilab_run(case, label, mc, wall_s, cpu_s, details)


def run_pyro_nuts(
    warmup_steps: int, num_samples: int, *, case: Case = EIGHT_SCHOOLS, seed: int = 0
) -> NutsRun:
    """Plain Pyro: ``MCMC(NUTS(model))`` with Pyro's defaults (diagonal mass, no JIT)."""
    args = case.arrays()
    pyro.set_rng_seed(seed)
    pyro.clear_param_store()
    clock = Stopwatch()
    kernel = NUTS(case.model)
    mcmc = MCMC(kernel, num_samples=num_samples, warmup_steps=warmup_steps, disable_progbar=True)
    mcmc.run(*args)
    samples = mcmc.get_samples()
    wall_s, cpu_s = clock.read()
    divergences = sum(len(v) for v in mcmc.diagnostics()["divergences"].values())
    with torch.no_grad():
        draws = case.draws({k: v.numpy() for k, v in samples.items()})
    return NutsRun(
        method="Pyro NUTS, defaults (diag mass, jit off)",
        wall_s=wall_s,
        cpu_s=cpu_s,
        warmup_steps=warmup_steps,
        num_samples=num_samples,
        draws=draws,
        divergences=divergences,
        details={"step_size": float(kernel.step_size)},
        model=case.name,
    )


@dataclass(frozen=True)
class FailedRun:
    """A run that raised: its row says so (``error``) and has no numbers."""

    model: str
    method: str
    error: str

    def summary(self) -> dict:
        nan = float("nan")
        return {
            "model": self.model,
            "method": self.method,
            "wall_s": nan,
            "cpu_s": nan,
            "min_ess_bulk": nan,
            "ess_per_s": nan,
            "ess_per_cpu_s": nan,
            "error": self.error,
        }
