"""NUTS with the statistics ArviZ needs, dense mass matrices and SVI warm starts.

``run_nuts(model, *args, ...)`` runs Pyro's NUTS chain by chain (in this process by
default, in parallel processes with ``parallel=True``) and keeps, per draw, what
ArviZ's diagnostics read: ``diverging``, ``energy``, ``lp``, ``step_size``,
``tree_depth`` and ``acceptance_rate``.

Defaults that matter on real posteriors:

- A dense mass matrix is adapted when the latent dimension is at most
  ``DENSE_MASS_MAX_DIM``: correlated posteriors then cost a few leapfrog steps per draw.
- ``init_from=fit`` (an :class:`inference.svi.SVIResult` with a Gaussian autoguide)
  starts every chain at the guide's mean and the mass matrix at the guide's
  covariance, so warmup starts from a good answer instead of searching for it.

References
----------
Hoffman & Gelman (2014). The No-U-Turn Sampler. JMLR 15.
Betancourt (2016). Diagnosing suboptimal cotangent disintegrations in HMC (E-BFMI).
"""

import math
import multiprocessing
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass

import numpy as np
import torch
import xarray as xr
from pyro.distributions.transforms import biject_to
from pyro.infer import MCMC, NUTS

from inference.isolation import Room, check_seed, isolated, prepare, resolve_device
from inference.posterior.datatree import model_coords, to_datatree
from inference.posterior.draws import Draws, replay_samples
from inference.sites import feasible_value, max_plate_nesting, trace_model, unconstrained_sites
from inference.validation import check_positive_int, check_probability

DENSE_MASS_MAX_DIM = 200
STATS = ("diverging", "energy", "lp", "step_size", "tree_depth", "acceptance_rate")


class RecordingNUTS(NUTS):
    """Pyro's NUTS, recording per-transition statistics in ``self.records``.

    Pyro keeps tree depth and the acceptance probability as locals of ``sample``;
    this subclass reads them from the top-level calls of ``_build_tree``:

    - ``tree_depth``: number of doublings of the trajectory;
    - ``acceptance_rate``: mean Metropolis acceptance probability over the trajectory
      (the statistic Pyro's step-size adaptation uses);
    - ``energy``: the Hamiltonian at the *start* of the transition (fresh momentum at
      the previous point). Stan reports it at the chosen point; Pyro never exposes the
      chosen point's momentum, and for E-BFMI (the energy-transition distribution) the
      start value is the relevant one;
    - ``lp``: minus the potential energy at the chosen point, i.e. the log joint
      density in the *unconstrained* space (log-Jacobian included);
    - ``step_size``: the step size used by the transition;
    - ``diverging``: whether the trajectory diverged.

    ``inverse_mass_matrix`` (optional) replaces the identity the adaptation starts
    from, for the single dense block over all sites (sites in sorted name order).
    """

    def __init__(self, model, *, inverse_mass_matrix=None, **kwargs):
        super().__init__(model, **kwargs)
        self.records: list[tuple] = []
        self._nesting = 0
        self._start_inverse_mass = inverse_mass_matrix
        self._current = None

    def _initialize_adapter(self):
        super()._initialize_adapter()
        if self._start_inverse_mass is not None:
            key = tuple(sorted(self.initial_params))
            self.mass_matrix_adapter.inverse_mass_matrix = {key: self._start_inverse_mass}
            if self._adapter.adapt_step_size:
                self._adapter.reset_step_size_adaptation(self._initial_params)

    def _build_tree(self, z, r, z_grads, log_slice, direction, tree_depth, energy_current):
        top = self._nesting == 0
        self._nesting += 1
        try:
            tree = super()._build_tree(
                z, r, z_grads, log_slice, direction, tree_depth, energy_current
            )
        finally:
            self._nesting -= 1
        if top and self._current is not None:
            cur = self._current
            cur["tree_depth"] = tree_depth + 1
            cur["sum_accept"] += float(tree.sum_accept_probs)
            cur["num_proposals"] += int(tree.num_proposals)
            cur["energy"] = float(energy_current)
            cur["diverging"] = cur["diverging"] or bool(tree.diverging)
        return tree

    def sample(self, params):
        self._current = dict(
            tree_depth=0, sum_accept=0.0, num_proposals=0, energy=math.nan, diverging=False
        )
        step_size = float(self.step_size)
        z = super().sample(params)
        cur = self._current
        accept = cur["sum_accept"] / cur["num_proposals"] if cur["num_proposals"] else 1.0
        lp = -float(self._potential_energy_last)
        self.records.append(
            (cur["diverging"], cur["energy"], lp, step_size, cur["tree_depth"], accept)
        )
        self._current = None
        return z


@dataclass(frozen=True)
class NUTSResult:
    """The product of :func:`run_nuts`.

    samples: latent sites (constrained), each ``(chain, draw, *site_shape)``.
    stats: per-draw sampler statistics (see :class:`RecordingNUTS`), each (chain, draw).
    elapsed_s: wall-clock seconds of all chains, warmup included.
    dense_mass: whether a dense mass matrix was adapted.
    warm_start: whether chains started from an SVI fit.
    """

    model: object
    args: tuple
    kwargs: dict
    samples: dict[str, torch.Tensor]
    stats: dict[str, np.ndarray]
    elapsed_s: float
    num_chains: int
    num_samples: int
    warmup_steps: int
    dense_mass: bool
    warm_start: bool
    device: torch.device = torch.device("cpu")

    @property
    def num_divergences(self) -> int:
        """Divergent transitions after warmup, over all chains."""
        return int(self.stats["diverging"].sum())

    def draws(self) -> Draws:
        """The draws replayed through the model (deterministic sites, log-likelihood)."""
        flat = {k: v.reshape((-1,) + tuple(v.shape[2:])) for k, v in self.samples.items()}
        # Replay in the dtype the chains ran in: a prior that cannot be sampled
        # (ImproperUniform) gets its placeholder value in the default dtype.
        dtype = next(iter(flat.values())).dtype if flat else None
        with isolated(Room(0, dtype, self.device)):
            return replay_samples(self.model, flat, self.args, self.kwargs)

    def to_datatree(self, coords=None, dims=None) -> xr.DataTree:
        """ArviZ DataTree: posterior (chain, draw, ...), sample_stats, log_likelihood, observed.

        ``coords`` and ``dims`` as in ArviZ's converters; ``coords`` adds to (and
        overrides) a ``coords`` attribute of the model.
        """
        attrs = {"method": "nuts", "inference": "nuts", "elapsed_s": self.elapsed_s}
        coords = model_coords(self.model) | dict(coords or {})
        return to_datatree(self.draws(), self.num_chains, self.stats, coords, attrs, dims)


def _warm_start(fit, sites):
    """Initial values and inverse mass matrix (sorted-site order) from an SVI fit."""
    if not hasattr(fit, "gaussian"):
        raise ValueError(f"init_from must be an SVI fit, got {type(fit).__name__}")
    slices, loc, cov = fit.gaussian()
    shapes = dict(sites)
    if set(slices) != set(shapes):
        raise ValueError(
            "init_from is a fit of another model: its latent sites are "
            f"{sorted(slices)}, this model's {sorted(shapes)}"
        )
    for name, piece in slices.items():
        if piece.stop - piece.start != int(torch.Size(shapes[name]).numel()):
            raise ValueError(f"init_from is a fit of another model: site {name!r} differs in size")
    order = torch.cat([torch.arange(len(loc))[slices[name]] for name in sorted(slices)])
    init = {name: loc[slices[name]].reshape(shapes[name]) for name in slices}
    return init, cov[order][:, order]


def _init_strategy(init_unconstrained, jitter, generator):
    def init(site):
        transform = biject_to(site["fn"].support)
        if init_unconstrained is not None and site["name"] in init_unconstrained:
            return transform(init_unconstrained[site["name"]])
        u = transform.inv(feasible_value(site))
        noise = torch.rand(u.shape, generator=generator, dtype=u.dtype) * 2 - 1
        return transform(u + jitter * noise)

    return init


def _run_chain(model, args, kwargs, chain, opts):
    with isolated(Room(opts["seed"] + chain, opts["dtype"], opts["device"])):
        generator = torch.Generator().manual_seed(opts["seed"] + 1000 * chain)
        kernel = RecordingNUTS(
            model,
            target_accept_prob=opts["target_accept"],
            full_mass=opts["dense"],
            jit_compile=opts["jit"],
            ignore_jit_warnings=True,
            init_strategy=_init_strategy(opts["init"], 1.0, generator),
            inverse_mass_matrix=opts["inverse_mass"],
            max_tree_depth=opts["max_tree_depth"],
            # Given, so Pyro does not trace the model from its prior to guess it (which
            # fails for priors that cannot be sampled, such as ImproperUniform).
            max_plate_nesting=opts["max_plate_nesting"],
        )
        mcmc = MCMC(
            kernel,
            num_samples=opts["num_samples"],
            warmup_steps=opts["warmup_steps"],
            num_chains=1,
            disable_progbar=not opts["progress_bar"],
        )
        mcmc.run(*args, **kwargs)
        samples = {k: v.detach() for k, v in mcmc.get_samples().items()}
        records = np.array(kernel.records[opts["warmup_steps"] :], dtype=float)
    return samples, records


def run_nuts(
    model,
    *model_args,
    num_samples: int = 1000,
    warmup_steps: int = 1000,
    num_chains: int = 4,
    seed: int = 0,
    target_accept: float = 0.8,
    jit: bool = False,
    progress_bar: bool = False,
    model_kwargs: dict | None = None,
    dense_mass: bool | None = None,
    init_from=None,
    parallel: bool = False,
    max_tree_depth: int = 10,
    dtype: torch.dtype | None = torch.float64,
    device=None,
) -> NUTSResult:
    """Sample the posterior of ``model`` with NUTS.

    Parameters
    ----------
    model : callable
        A Pyro model; ``model_args``/``model_kwargs`` are passed to it.
    num_samples, warmup_steps : int
        Draws kept and warmup (adaptation) steps, per chain.
    num_chains : int
        Independent chains, seeded ``seed, seed + 1, ...``.
    target_accept : float
        Target acceptance probability of step-size adaptation.
    jit : bool
        Compile the potential energy with the PyTorch JIT (faster for fixed shapes).
    dense_mass : bool, optional
        Adapt a dense mass matrix; default: when the latent dimension is at most 200.
    init_from : SVIResult, optional
        Start chains at a Gaussian autoguide's mean, mass matrix at its covariance.
    parallel : bool
        Run chains in separate processes (the model must be picklable).
    device : str or torch.device, optional
        Where data and chains live (default CPU). A GPU rarely pays for a small model's
        NUTS: each leapfrog step is a handful of tiny kernels whose launch costs more
        than the arithmetic; it is there for models with large data.

    Returns
    -------
    NUTSResult
    """
    check_positive_int("num_samples", num_samples)
    check_positive_int("num_chains", num_chains)
    if isinstance(warmup_steps, bool) or not isinstance(warmup_steps, int) or warmup_steps < 0:
        raise ValueError(f"warmup_steps must be an integer >= 0, got {warmup_steps!r}")
    check_probability("target_accept", target_accept)
    room = Room(check_seed(seed), dtype, resolve_device(device))
    args, kwargs = prepare(tuple(model_args), dict(model_kwargs or {}), room)
    with isolated(room):
        sites, _, _ = unconstrained_sites(model, args, kwargs)
        nesting = max_plate_nesting(trace_model(model, args, kwargs))
    dim = sum(int(torch.Size(shape).numel()) for _, shape in sites)
    dense = dim <= DENSE_MASS_MAX_DIM if dense_mass is None else bool(dense_mass)
    init, inverse_mass = None, None
    if init_from is not None:
        init, inverse_mass = _warm_start(init_from, sites)
        if not dense:
            inverse_mass = None
    opts = dict(
        seed=seed,
        dtype=dtype,
        device=room.device,
        target_accept=target_accept,
        dense=dense,
        jit=jit,
        init=init,
        inverse_mass=inverse_mass,
        num_samples=num_samples,
        warmup_steps=warmup_steps,
        progress_bar=progress_bar,
        max_tree_depth=max_tree_depth,
        max_plate_nesting=nesting,
    )
    start = time.perf_counter()
    if parallel and num_chains > 1:
        context = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(num_chains, mp_context=context) as pool:
            futures = [
                pool.submit(_run_chain, model, args, kwargs, c, opts) for c in range(num_chains)
            ]
            results = [f.result() for f in futures]
    else:
        results = [_run_chain(model, args, kwargs, c, opts) for c in range(num_chains)]
    elapsed = time.perf_counter() - start
    samples = {k: torch.stack([r[0][k] for r in results]) for k in results[0][0]}
    records = np.stack([r[1] for r in results])  # (chain, draw, stat)
    stats = {name: records[..., i] for i, name in enumerate(STATS)}
    stats["diverging"] = stats["diverging"].astype(bool)
    stats["tree_depth"] = stats["tree_depth"].astype(int)
    return NUTSResult(
        model=model,
        args=args,
        kwargs=kwargs,
        samples=samples,
        stats=stats,
        elapsed_s=elapsed,
        num_chains=num_chains,
        num_samples=num_samples,
        warmup_steps=warmup_steps,
        dense_mass=dense,
        warm_start=init_from is not None,
        device=room.device,
    )
