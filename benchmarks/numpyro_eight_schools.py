"""NumPyro's side of the comparison: the same model, NUTS and SVI.

This module imports JAX and NumPyro at the top; the rest of the package imports it
only when NumPyro is asked for, so ``benchmarks`` imports without them. Importing it
switches JAX to float64 for the whole process (through :mod:`benchmarks.numpyro_nuts`),
so that every engine here computes in double precision as vilab does by default.
"""

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist
from numpyro.infer import SVI, Trace_ELBO
from numpyro.infer.autoguide import AutoMultivariateNormal

from benchmarks.cases import EIGHT_SCHOOLS
from benchmarks.data import arrays
from benchmarks.measures import Stopwatch
from benchmarks.numpyro_nuts import run_numpyro
from benchmarks.nuts import NutsRun
from benchmarks.svi import SNAPSHOT_EVERY, SviRun, canonical

LABEL = "NumPyro NUTS, defaults (diag mass)"


def noncentered(y, sigma):
    r"""Non-centered eight schools, as :func:`models.eight_schools.noncentered`.

    .. math::

        \mu \sim \mathcal{N}(0, 5^2), \quad \tau \sim \mathrm{HalfCauchy}(5), \quad
        \eta_j \sim \mathcal{N}(0, 1), \quad \theta_j = \mu + \tau \eta_j, \quad
        y_j \sim \mathcal{N}(\theta_j, \sigma_j^2)
    """
    mu = numpyro.sample("mu", dist.Normal(0.0, 5.0))
    tau = numpyro.sample("tau", dist.HalfCauchy(5.0))
    with numpyro.plate("school", y.shape[0]):
        eta = numpyro.sample("eta", dist.Normal(0.0, 1.0))
        theta = numpyro.deterministic("theta", mu + tau * eta)
        numpyro.sample("y", dist.Normal(theta, sigma), obs=y)


def jax_arrays():
    """``(y, sigma)`` as float64 JAX arrays (the data vilab ships)."""
    y, sigma = arrays()
    return jnp.asarray(y.numpy()), jnp.asarray(sigma.numpy())


def run_numpyro_nuts(
    warmup_steps: int, num_samples: int, *, seed: int = 0, repeat: bool = False
) -> NutsRun:
    """NumPyro ``MCMC(NUTS(model))`` with its defaults (diagonal mass), one chain.

    The wall time includes JIT compilation. With ``repeat=True`` the same ``MCMC``
    object runs a second time (new key, compiled code reused) and that run is returned.
    """
    return run_numpyro(
        noncentered,
        jax_arrays(),
        model_name=EIGHT_SCHOOLS.name,
        to_draws=EIGHT_SCHOOLS.draws,
        label=LABEL,
        warmup_steps=warmup_steps,
        num_samples=num_samples,
        seed=seed,
        repeat=repeat,
    )


def run_numpyro_svi(
    num_steps: int = 3000, *, lr: float = 1e-2, seed: int = 0, every: int = SNAPSHOT_EVERY
) -> SviRun:
    """NumPyro ``AutoMultivariateNormal`` + ``numpyro.optim.Adam(lr)`` + ``Trace_ELBO``.

    Steps run inside a compiled ``lax.scan`` of ``every`` steps (as ``SVI.run`` does),
    each chunk returning the guide's parameters; the time includes compilation.
    ``num_steps`` is rounded down to a multiple of ``every``.
    """
    y, sigma = jax_arrays()
    clock = Stopwatch()
    guide = AutoMultivariateNormal(noncentered)
    svi = SVI(noncentered, guide, numpyro.optim.Adam(lr), Trace_ELBO())
    state = svi.init(jax.random.PRNGKey(seed), y, sigma)

    def step(carry, _):
        return svi.update(carry, y, sigma)

    @jax.jit
    def chunk(carry):
        carry, losses = jax.lax.scan(step, carry, None, length=every)
        return carry, losses, svi.get_params(carry)

    losses, raw = [], []
    for done in range(every, num_steps + 1, every):
        state, chunk_losses, params = chunk(state)
        chunk_losses, params = jax.device_get((chunk_losses, params))
        losses.append(chunk_losses)
        raw.append((done, clock.read()[0], params["auto_loc"], params["auto_scale_tril"]))
    wall_s, cpu_s = clock.read()
    slices = _slices(guide)
    snapshots = [(s, t, *canonical(loc, tril, slices)) for s, t, loc, tril in raw]
    steps, times, locs, trils = (np.array(x) for x in zip(*snapshots, strict=True))
    label = f"NumPyro AutoMVN + Adam {lr:g} + Trace_ELBO"
    return SviRun(label, steps, times, locs, trils, np.concatenate(losses), wall_s, cpu_s)


def _slices(guide) -> dict[str, slice]:
    """Where each site sits in a NumPyro autoguide's packed latent vector."""
    positions = guide._unpack_latent(jnp.arange(guide.latent_dim))
    out = {}
    for name, index in positions.items():
        index = np.atleast_1d(np.asarray(index, dtype=int))
        out[name] = slice(int(index.min()), int(index.max()) + 1)
    return out
