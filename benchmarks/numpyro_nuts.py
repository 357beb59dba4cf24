"""NumPyro's NUTS on any model, timed as the other engines are: :func:`run_numpyro`.

This module imports JAX and NumPyro at the top, and the ``numpyro_*`` modules import
it; the rest of the package imports them only when NumPyro is asked for. Importing it
switches JAX to float64 for the whole process, so that every engine here computes in
double precision as vilab does by default.
"""

import jax
import numpy as np
from numpyro.infer import MCMC, NUTS

from benchmarks.measures import Stopwatch
from benchmarks.nuts import NutsRun

jax.config.update("jax_enable_x64", True)

COMPILED = "incl. compile"


def run_numpyro(
    model,
    args: tuple,
    *,
    model_name: str,
    to_draws,
    label: str,
    warmup_steps: int,
    num_samples: int,
    seed: int = 0,
    repeat: bool = False,
) -> NutsRun:
    """``MCMC(NUTS(model))`` with NumPyro's defaults (diagonal mass), one chain.

    The wall time includes JIT compilation; the method is ``f"{label}, incl. compile"``.
    With ``repeat=True`` the same ``MCMC`` object runs a second time (new key, compiled
    code reused) and that run is returned, as ``f"{label}, already compiled"``.
    ``to_draws`` turns the samples (each (draw, ...)) into the draws for the ESS.
    """
    clock = Stopwatch()
    mcmc = MCMC(
        NUTS(model),
        num_warmup=warmup_steps,
        num_samples=num_samples,
        num_chains=1,
        progress_bar=False,
    )
    key = jax.random.PRNGKey(seed)
    fields = ("diverging", "num_steps")
    mcmc.run(key, *args, extra_fields=fields)
    samples = jax.block_until_ready(mcmc.get_samples())
    method = f"{label}, {COMPILED}"
    if repeat:
        clock = Stopwatch()
        mcmc.run(jax.random.fold_in(key, 1), *args, extra_fields=fields)
        samples = jax.block_until_ready(mcmc.get_samples())
        method = f"{label}, already compiled"
    wall_s, cpu_s = clock.read()
    extra = mcmc.get_extra_fields()
    s = {k: np.asarray(v) for k, v in samples.items()}
    return NutsRun(
        method=method,
        wall_s=wall_s,
        cpu_s=cpu_s,
        warmup_steps=warmup_steps,
        num_samples=num_samples,
        draws=to_draws(s),
        divergences=int(np.sum(extra["diverging"])),
        details={"mean_leapfrog_steps": float(np.mean(extra["num_steps"]))},
        model=model_name,
    )
