"""Pyro's own NUTS, recording the statistics ArviZ needs: the cross-check backend.

``sample`` runs chains one after another in this process, or in parallel processes
with ``parallel=True`` (the model must be picklable). A dense mass matrix is adapted
when asked for; an SVI warm start gives the initial point and inverse mass matrix.
"""

import math
import multiprocessing
from concurrent.futures import ProcessPoolExecutor

import numpy as np
import torch
from pyro.distributions.transforms import biject_to
from pyro.infer import MCMC, NUTS

from inference.isolation import Room, isolated
from inference.sites import zero_point

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


def _init_strategy(init_unconstrained, jitter, generator):
    def init(site):
        transform = biject_to(site["fn"].support)
        if init_unconstrained is not None and site["name"] in init_unconstrained:
            return transform(init_unconstrained[site["name"]])
        # The middle of the unconstrained support, as the nutpie backend (see nuts.py).
        u = transform.inv(zero_point(site["fn"]))
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


def sample(model, args, kwargs, opts, num_chains: int, parallel: bool):
    """Constrained draws ``{site: (chain, draw, ...)}`` and statistics ``{name: (chain, draw)}``."""
    if parallel and num_chains > 1:
        context = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(num_chains, mp_context=context) as pool:
            futures = [
                pool.submit(_run_chain, model, args, kwargs, c, opts) for c in range(num_chains)
            ]
            results = [f.result() for f in futures]
    else:
        results = [_run_chain(model, args, kwargs, c, opts) for c in range(num_chains)]
    samples = {k: torch.stack([r[0][k] for r in results]) for k in results[0][0]}
    records = np.stack([r[1] for r in results])  # (chain, draw, stat)
    stats = {name: records[..., i] for i, name in enumerate(STATS)}
    stats["diverging"] = stats["diverging"].astype(bool)
    stats["tree_depth"] = stats["tree_depth"].astype(int)
    return samples, stats
