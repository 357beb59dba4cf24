"""NUTS for any Pyro model: nutpie's sampler on a traced potential, or Pyro's own.

``run_nuts(model, *args, ...)`` samples the posterior of the model's continuous latent
sites, with discrete sites of finite support summed out exactly, and keeps per draw
what ArviZ's diagnostics read: ``diverging``, ``energy``, ``lp``, ``step_size``,
``tree_depth`` and ``acceptance_rate``.

Backends (same arguments, same DataTree layout):

- ``"nutpie"`` (default): nutpie's NUTS (Rust) on one flat potential of the model
  (:mod:`inference.mcmc.potential`): its density and gradient captured as one graph,
  compiled by TorchInductor for long runs and run by TorchScript for short ones;
  chains run in nutpie's threads on the machine's cores. Its mass matrix adapts from
  draws and gradients, and it needs fewer warmup steps than Stan-style windows.
- ``"pyro"``: Pyro's NUTS (:mod:`inference.mcmc.pyro_sampler`), the cross-check, with a
  dense mass matrix adapted when the latent dimension is at most ``DENSE_MASS_MAX_DIM``.

``init_from=fit`` (an SVI fit with a Gaussian autoguide) starts every chain at the
fit's mean; nutpie samples in the fit's whitened coordinates (its covariance as the
starting metric), Pyro starts its dense mass matrix at the fit's covariance.

References
----------
Hoffman & Gelman (2014). The No-U-Turn Sampler. JMLR 15.
Betancourt (2016). Diagnosing suboptimal cotangent disintegrations in HMC (E-BFMI).
Seyboldt et al. nutpie, https://github.com/pymc-devs/nutpie (mass matrix adaptation
from draws and gradients).
"""

import time
import warnings
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import torch
import xarray as xr
from tqdm.auto import tqdm

from inference.enumeration import enumerated_sites
from inference.isolation import Room, check_seed, isolated, prepare, resolve_device
from inference.mcmc import nutpie_sampler, pyro_sampler
from inference.mcmc.potential import EagerPotentialWarning, flat_potential
from inference.posterior.datatree import model_coords, model_dims, to_datatree
from inference.posterior.draws import Draws, replay_samples
from inference.sites import max_plate_nesting, trace_model, unconstrained_sites
from inference.validation import check_positive_int, check_probability

DENSE_MASS_MAX_DIM = 200
# warmup_steps defaults to 1000 (DESIGN.md's contract). nutpie adapts faster than that:
# measured (2026-12-03, 4 chains x 1000 draws, seeds 0-2, compiled potential), 200, 500
# and 1000 warmup steps gave the same min bulk ESS (eight schools at target 0.95:
# 1868-2560, 1852-2201, 1979-2224; the badly scaled regression: 3618-4016, 3645-3930,
# 3330-3797), the same R-hat (<= 1.005) and no divergences, at ~5% more gradients a draw
# after 200 steps; the mixture's seed-0 chain stayed in its merged mode at every length.
# A user in a hurry can pass warmup_steps=200; the default stays where it is safe.

# The nutpie backend compiles the potential when the chains make at least this many
# transitions in all; below, the traced graph (ready at once) finishes first. Measured
# (2026-12-03, eight schools, one chain, ~6.5 gradients a transition): a gradient costs
# ~0.35 ms traced and ~0.03 ms compiled, all in, so compiling saves ~2 ms a transition;
# it costs ~2.5 s in a fresh process (Inductor's imports and its on-disk cache), ~0.3 s
# in a process that compiled before: it pays from ~1,300 transitions. The rule counts
# transitions, not seconds, so that the same call always runs the same code.
COMPILE_MIN_TRANSITIONS = 2000
BACKENDS = ("nutpie", "pyro")


@dataclass(frozen=True)
class NUTSResult:
    """The product of :func:`run_nuts`.

    samples: latent sites (constrained), each ``(chain, draw, *site_shape)``.
    stats: per-draw sampler statistics, each (chain, draw): ``diverging``, ``energy``,
        ``lp`` (log density in the unconstrained space), ``step_size``, ``tree_depth``,
        ``acceptance_rate``; nutpie adds ``n_steps``, ``energy_error``, ``maxdepth_reached``.
    elapsed_s: wall-clock seconds of all chains, warmup included.
    dense_mass: whether a mass matrix beyond the diagonal was adapted (dense for Pyro,
        low-rank for nutpie).
    backend: ``"nutpie"`` or ``"pyro"``.
    potential: how nutpie's potential ran: ``"compiled"``, ``"traced"`` or ``"eager"``.
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
    backend: str = "nutpie"
    potential: str | None = None

    @property
    def num_divergences(self) -> int:
        """Divergent transitions after warmup, over all chains."""
        return int(self.stats["diverging"].sum())

    def draws(self, draw_discrete: bool = False) -> Draws:
        """The draws replayed through the model (deterministic sites, log-likelihood);
        ``draw_discrete``: also draw the summed-out discrete sites (``infer_discrete``)."""
        flat = {k: v.reshape((-1,) + tuple(v.shape[2:])) for k, v in self.samples.items()}
        # Replay in the dtype the chains ran in: a prior that cannot be sampled
        # (ImproperUniform) gets its placeholder value in the default dtype.
        dtype = next(iter(flat.values())).dtype if flat else None
        with isolated(Room(0, dtype, self.device)):
            return replay_samples(self.model, flat, self.args, self.kwargs, draw_discrete)

    def to_datatree(self, coords=None, dims=None, draw_discrete: bool = False) -> xr.DataTree:
        """ArviZ DataTree: posterior (chain, draw, ...), sample_stats, log_likelihood, observed.

        ``coords`` and ``dims`` as in ArviZ's converters; ``coords`` adds to (and
        overrides) a ``coords`` attribute of the model. Discrete sites the chains summed
        out give group ``assignments`` (per data point, the posterior probability of
        each value, averaged over draws) and, with ``draw_discrete=True``, posterior
        draws of their own: each draw's values drawn from ``p(z | x, theta_s)``
        (Pyro's ``infer_discrete``).
        """
        attrs = {
            "method": "nuts",
            "inference": "nuts",
            "elapsed_s": self.elapsed_s,
            "backend": self.backend,
        }
        if self.potential is not None:
            attrs["potential"] = self.potential
        coords = model_coords(self.model) | dict(coords or {})
        dims = model_dims(self.model) | dict(dims or {})
        draws = self.draws(draw_discrete)
        return to_datatree(draws, self.num_chains, self.stats, coords, attrs, dims)


def _point_start(values, sites, transforms) -> dict[str, torch.Tensor]:
    """``{site: unconstrained value}`` of a point given as constrained values."""
    names = [name for name, _ in sites]
    missing = [n for n in names if n not in values]
    unknown = [n for n in values if n not in names]
    if missing or unknown:
        raise ValueError(
            f"init_from as values needs exactly the continuous latent sites {names}; "
            f"missing {missing}, unknown {unknown}"
        )
    out = {}
    for name, shape in sites:
        value = torch.as_tensor(values[name], dtype=torch.float64)
        u = transforms[name].inv(value)
        if tuple(u.shape) != tuple(shape) or not torch.isfinite(u).all():
            raise ValueError(
                f"init_from[{name!r}] is not a point of the site's support with its shape "
                f"(unconstrained shape {tuple(u.shape)}, expected {tuple(shape)})"
            )
        out[name] = u
    return out


def _warm_start(fit, sites):
    """From an SVI fit: mean and covariance (sorted-site order), Pyro's initial values
    (by site) and inverse mass matrix."""
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
    return loc[order], cov[order][:, order], init, cov[order][:, order]


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
    backend: str = "nutpie",
    compile: bool | None = None,
) -> NUTSResult:
    """Sample the posterior of ``model`` with NUTS.

    Parameters
    ----------
    model : callable
        A Pyro model; ``model_args``/``model_kwargs`` are passed to it. Discrete latent
        sites with finite support are summed out (enumerated), as Pyro's NUTS does.
    num_samples, warmup_steps : int
        Draws kept and warmup (adaptation) steps, per chain.
    num_chains : int
        Independent chains; the same ``seed`` gives the same draws.
    target_accept : float
        Target acceptance probability of step-size adaptation.
    jit : bool
        Pyro backend: compile Pyro's potential with the PyTorch JIT. The nutpie backend
        always traces the potential where the model allows (checked at random points;
        otherwise it runs eagerly and says so once with an ``EagerPotentialWarning``).
    dense_mass : bool, optional
        Adapt a mass matrix beyond the diagonal (default: when the latent dimension is at
        most 200): dense for Pyro, nutpie's low-rank update of its diagonal metric
        (adapted from draws and gradients) for nutpie.
    init_from : SVIResult or dict, optional
        Start chains at a Gaussian autoguide's mean, with its covariance as the metric; or
        at a point, ``{site: constrained value}`` for every continuous latent site (e.g.
        EM's estimate of a mixture: chains then start in one labelling, past the
        merged-components modes a mixture's chains can sit in), jittered by the sampler.
    parallel : bool
        Pyro backend: run chains in separate processes (the model must be picklable).
        nutpie always runs chains in parallel threads.
    device : str or torch.device, optional
        Where data and the potential live (default CPU). A GPU rarely pays for a small
        model's NUTS: each gradient is a handful of tiny kernels whose launch costs more
        than the arithmetic, and nutpie's sampler itself runs on the CPU; it is there for
        models with large data.
    backend : {"nutpie", "pyro"}
        ``"nutpie"``: nutpie's NUTS on the model's potential captured as one graph
        (fast). ``"pyro"``: Pyro's own NUTS, the cross-check.
    compile : bool, optional
        nutpie backend: compile the potential's graph with TorchInductor (``True``) or
        run it by TorchScript (``False``). Default: compile when the chains make at
        least ``COMPILE_MIN_TRANSITIONS`` transitions in all, where it pays. The first
        compilation on a machine takes ~15 s more (Inductor fills its on-disk cache).
        A model whose control flow depends on its latent values runs eagerly either
        way (``EagerPotentialWarning``).

    Returns
    -------
    NUTSResult
    """
    check_positive_int("num_samples", num_samples)
    check_positive_int("num_chains", num_chains)
    check_positive_int("max_tree_depth", max_tree_depth)
    if isinstance(warmup_steps, bool) or not isinstance(warmup_steps, int) or warmup_steps < 0:
        raise ValueError(f"warmup_steps must be an integer >= 0, got {warmup_steps!r}")
    check_probability("target_accept", target_accept)
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    if compile is not None and not isinstance(compile, bool):
        raise ValueError(f"compile must be True, False or None, got {compile!r}")
    asked_compile = compile
    if compile is None:
        compile = num_chains * (warmup_steps + num_samples) >= COMPILE_MIN_TRANSITIONS
    room = Room(check_seed(seed), dtype, resolve_device(device))
    args, kwargs = prepare(tuple(model_args), dict(model_kwargs or {}), room)
    with isolated(room):
        trace = trace_model(model, args, kwargs)
        enumerated_sites(trace)  # refuses a discrete site it cannot sum out
        nesting = max_plate_nesting(trace)
        sites, _, transforms = unconstrained_sites(model, args, kwargs)
    dim = sum(int(torch.Size(shape).numel()) for _, shape in sites)
    if dim == 0:
        raise ValueError("the model has no continuous latent site: there is nothing for NUTS")
    point = _point_start(init_from, sites, transforms) if isinstance(init_from, Mapping) else None
    warm = init_from is not None and point is None
    gaussian = _warm_start(init_from, sites) if warm else None
    # Measured (2026-12-02, 4 chains x 1000 draws): nutpie's low-rank metric gave 11x the
    # ESS per gradient of its diagonal one on a badly scaled regression with
    # correlations of 0.9 (555 vs 48 per 1000 gradients), and the same on eight schools;
    # Pyro's dense metric likewise. Both up to DENSE_MASS_MAX_DIM latent dimensions.
    dense = dim <= DENSE_MASS_MAX_DIM if dense_mass is None else bool(dense_mass)
    begin = time.perf_counter()
    if backend == "nutpie":
        samples, stats, runner = _run_nutpie(
            model,
            args,
            kwargs,
            room,
            nesting,
            gaussian,
            dense,
            num_chains=num_chains,
            warmup_steps=warmup_steps,
            num_samples=num_samples,
            seed=seed,
            target_accept=target_accept,
            max_tree_depth=max_tree_depth,
            progress_bar=progress_bar,
            compile=compile,
            start=None
            if point is None
            else torch.cat([point[n].reshape(-1) for n in sorted(point)]),
        )
        if asked_compile and runner != "compiled":
            warnings.warn(
                f"compile=True was asked for, but the potential runs {runner}", stacklevel=2
            )
    else:
        runner = None
        init, inverse_mass = (point, None) if gaussian is None else gaussian[2:]
        opts = dict(
            seed=seed,
            dtype=dtype,
            device=room.device,
            target_accept=target_accept,
            dense=dense,
            jit=jit,
            init=init,
            inverse_mass=inverse_mass if dense else None,
            num_samples=num_samples,
            warmup_steps=warmup_steps,
            progress_bar=progress_bar,
            max_tree_depth=max_tree_depth,
            max_plate_nesting=nesting,
        )
        samples, stats = pyro_sampler.sample(model, args, kwargs, opts, num_chains, parallel)
    return NUTSResult(
        model=model,
        args=args,
        kwargs=kwargs,
        samples=samples,
        stats=stats,
        elapsed_s=time.perf_counter() - begin,
        num_chains=num_chains,
        num_samples=num_samples,
        warmup_steps=warmup_steps,
        dense_mass=dense,
        warm_start=init_from is not None,
        device=room.device,
        backend=backend,
        potential=runner,
    )


def _run_nutpie(model, args, kwargs, room, nesting, gaussian, low_rank, compile, start, **opts):
    """nutpie on the model's flat potential: constrained draws and statistics."""
    # The first compilation on a machine takes ~15 s: a progress bar says what it waits for.
    status = tqdm(
        total=1,
        desc=f"NUTS: {'compiling' if compile else 'tracing'} the model's potential",
        bar_format="{desc} ({elapsed})",
        disable=not opts["progress_bar"],
    )
    with isolated(room):
        with status:
            potential = flat_potential(
                model,
                args,
                kwargs,
                nesting=nesting,
                device=room.device,
                runner="compiled" if compile else "traced",
                gaussian=None if gaussian is None else gaussian[:2],
            )
            status.update()
        if not potential.traced:
            warnings.warn(
                f"the model's potential runs eagerly, one chain at a time: {potential.why}",
                EagerPotentialWarning,
                stacklevel=3,
            )
        # Chains start at 0 in the sampler's space, jittered: the fit's mean when
        # whitened, else the middle of each unconstrained support, as Pyro's and
        # NumPyro's defaults do. Measured on an enumerated two-component mixture with
        # ordered locations (benchmarks/mixture.py, 2026-12-02): started at the prior
        # median, 12 of 24 chains stayed in the merged-components mode; from 0, 1 of 24.
        start = np.zeros(potential.dim) if start is None else start.double().cpu().numpy()
        try:
            draws, stats = nutpie_sampler.sample(
                potential, start, adaptation="low_rank" if low_rank else "diag", **opts
            )
        except Exception as err:
            if potential.errors:
                raise RuntimeError(
                    f"NUTS could not sample: the model's log density failed ({potential.errors[0]})"
                ) from err
            raise
        samples = potential.constrain(draws)
    return samples, stats, potential.runner
