"""The mixture scaling study: what one iteration costs as N grows, and how long to the optimum.

EM and NUTS touch every point at every iteration; minibatch SVI touches ``n``. This
measures it on a Gaussian mixture (D = 2, K = 3, diagonal covariances) for
N = 1e3 ... 1e7, each method in a fresh process (:func:`run_worker`):

- ``vilab EM``: ``run_em(x, 3, covariance="diag", init=start, tol=1e-6)``, maximum
  likelihood, from a common start (k-means++ centres on 10,000 rows, uniform weights,
  each dim's variance: what ``guides.mixture.map_guide`` starts from).
- ``scikit-learn EM``: ``GaussianMixture(3, covariance_type="diag", tol=1e-6)`` from the
  same start (``weights_init``, ``means_init``, ``precisions_init``; ``init_params=
  "random_from_data"``, so that no k-means it would discard runs), one BLAS/OpenMP
  thread like torch. Above ``sklearn_converge_up_to`` it stops after as many iterations
  as vilab's EM took at that N (a full run takes over a minute at 1e7).
- ``SVI full batch`` and ``SVI minibatch``: ``fit_svi(models.mixture.model,
  guides.mixture.map_guide, x, elbo="enum", model_kwargs={"n_components": 3, "priors":
  priors[, "subsample_size": n]})`` (MAP with the assignments summed out: EM one gradient
  step at a time), the minibatch one fed by the epoch sampler of
  :mod:`inference.svi.batches`. ``SVI minibatch, memory map``: the same from a read-only
  ``numpy.memmap`` of the data file (the data are never loaded: each step reads its
  ``n`` rows), in the minibatch process after its in-memory fits.
- ``NUTS``: ``run_nuts(model, x, 3, priors, num_chains=1)`` with a small budget, N <= 1e4.

For every (method, N) it records the cost of one unit (an EM iteration, an SVI step, a
NUTS gradient), the units run, the time to come within :data:`TARGET_NATS` nats per
point of the EM optimum (mean log-likelihood per point, by
``inference.em.log_likelihood``) and the fit's peak memory above what the process held
before it (imports and data in; the data's own size is a column of its own).
``python -m benchmarks.mixture_scaling [--quick]`` runs the study alone, prints the
table, writes the figure and puts the study into ``results.json``; ``python -m
benchmarks`` runs it among the rest.
"""

import argparse
import gc
import json
import subprocess
import sys
import tempfile
import time
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
FIGURE = HERE / "mixture_scaling.png"
FIGURE_QUICK = HERE / "mixture_scaling-quick.png"
RESULTS = HERE / "results.json"
RESULTS_QUICK = HERE / "results-quick.json"

DATA_SEED = 20261203
NUM_COMPONENTS = 3
NUM_FEATURES = 2
TOL = 1e-6  # EM's and scikit-learn's stopping rule: the objective per point changed less
TARGET_NATS = 1e-3  # "at the optimum": mean log-likelihood per point within this of EM's
START_ROWS = 10_000  # rows k-means++ sees for the common start (as guides.mixture does)
PRIOR_ROWS = 100_000  # rows MixturePriors.for_data sees (the same priors for every method)
CHUNK_ROWS = 1_000_000  # rows simulated and written at a time
WORKER_TIMEOUT_S = 1800

EM, SKLEARN = "vilab EM", "scikit-learn EM"
SVI_FULL, SVI_MINI, SVI_MEMMAP = "SVI full batch", "SVI minibatch", "SVI minibatch, memory map"
NUTS = "NUTS"
METHODS = (EM, SKLEARN, SVI_FULL, SVI_MINI, SVI_MEMMAP, NUTS)


@dataclass(frozen=True)
class Plan:
    """Sizes and budgets of one run of the study.

    sizes: the N of EM, scikit-learn and minibatch SVI. batch: SVI's minibatch size n.
    full_batch_up_to, nuts_up_to: the largest N of full-batch SVI and NUTS.
    target_up_to, full_target_up_to: the largest N at which minibatch and full-batch
    SVI's time to target is measured (full-batch steps cost O(N)).
    sklearn_converge_up_to: above it scikit-learn runs as many iterations as vilab's EM
    took. repeats, repeat_up_to: EM and scikit-learn fit this many times up to this N,
    their median time per iteration kept (one fit above); svi_repeats: the timed
    minibatch fits at each N (all sizes in turn, then again). memmap_sizes: the N of
    minibatch SVI from a memory map. timed_steps: the minibatch SVI steps a step's cost
    is read from; full batch: ``10**6 // N`` of them, at least ``full_timed_steps`` and
    at most ``timed_steps``. target_steps, eval_every: at most this many SVI steps
    towards the target, the log-likelihood read every ``eval_every``. nuts_warmup,
    nuts_samples: NUTS's budget. subprocess: each method in a fresh process.
    """

    sizes: tuple[int, ...]
    batch: int
    full_batch_up_to: int
    nuts_up_to: int
    target_up_to: int
    full_target_up_to: int
    sklearn_converge_up_to: int
    repeats: int
    repeat_up_to: int
    svi_repeats: int
    memmap_sizes: tuple[int, ...]
    timed_steps: int
    full_timed_steps: int
    target_steps: int
    eval_every: int
    nuts_warmup: int
    nuts_samples: int
    subprocess: bool = True


FULL = Plan(
    sizes=(10**3, 10**4, 10**5, 10**6, 10**7),
    batch=1000,
    full_batch_up_to=10**6,
    nuts_up_to=10**4,
    target_up_to=10**7,
    full_target_up_to=10**4,
    sklearn_converge_up_to=10**6,
    repeats=3,
    repeat_up_to=10**6,
    svi_repeats=3,
    memmap_sizes=(10**7,),
    timed_steps=500,
    full_timed_steps=3,
    target_steps=2000,
    eval_every=50,
    nuts_warmup=100,
    nuts_samples=100,
)
QUICK = Plan(
    sizes=(10**3, 10**4, 10**5),
    batch=1000,
    full_batch_up_to=10**5,
    nuts_up_to=10**3,
    target_up_to=10**3,
    full_target_up_to=0,
    sklearn_converge_up_to=10**5,
    repeats=1,
    repeat_up_to=0,
    svi_repeats=1,
    memmap_sizes=(10**5,),
    timed_steps=60,
    full_timed_steps=3,
    target_steps=400,
    eval_every=50,
    nuts_warmup=15,
    nuts_samples=15,
)
TINY = Plan(
    sizes=(300, 3000),
    batch=100,
    full_batch_up_to=3000,
    nuts_up_to=300,
    target_up_to=300,
    full_target_up_to=300,
    sklearn_converge_up_to=300,
    repeats=2,
    repeat_up_to=300,
    svi_repeats=2,
    memmap_sizes=(3000,),
    timed_steps=10,
    full_timed_steps=3,
    target_steps=40,
    eval_every=20,
    nuts_warmup=5,
    nuts_samples=5,
    subprocess=False,
)


# --- the data ------------------------------------------------------------------------


def truth() -> dict[str, np.ndarray]:
    """The mixture the data are drawn from: the ``gmm`` case's (``models.mixture.simulate``)."""
    from models.mixture import simulate

    return simulate(NUM_COMPONENTS, seed=0)[2]


def write_data(path: Path, num_points: int, seed: int = DATA_SEED) -> Path:
    """Draw ``num_points`` points (float64, (N, 2)) into the ``.npy`` file ``path``,
    ``CHUNK_ROWS`` at a time from one seeded stream, never all in memory; the first N
    rows are the data at size N (a prefix of an i.i.d. sample is one)."""
    mixture = truth()
    rng = np.random.default_rng(seed)
    out = np.lib.format.open_memmap(path, mode="w+", dtype=np.float64, shape=(num_points, 2))
    for start in range(0, num_points, CHUNK_ROWS):
        size = min(CHUNK_ROWS, num_points - start)
        labels = rng.choice(NUM_COMPONENTS, size=size, p=mixture["weights"])
        noise = rng.standard_normal((size, NUM_FEATURES))
        sd = np.sqrt(mixture["variances"][labels])
        out[start : start + size] = mixture["locs"][labels] + noise * sd
    out.flush()
    del out
    return path


def open_data(path, num_points: int, in_memory: bool) -> np.ndarray:
    """The first ``num_points`` rows: read into memory, or as a read-only memory map."""
    mapped = np.load(path, mmap_mode="r")[:num_points]
    return np.array(mapped) if in_memory else mapped


def common_start(x: np.ndarray, seed: int) -> dict[str, np.ndarray]:
    """k-means++ centres on at most ``START_ROWS`` rows, uniform weights, each dim's
    variance on those rows: the recipe of ``guides.mixture.map_guide``'s start."""
    from sklearn.cluster import kmeans_plusplus

    rng = np.random.default_rng(seed)
    rows = np.sort(rng.choice(len(x), START_ROWS, replace=False)) if len(x) > START_ROWS else None
    sample = np.asarray(x if rows is None else x[rows])
    centres, _ = kmeans_plusplus(sample, NUM_COMPONENTS, random_state=seed)
    variance = np.maximum(sample.var(0), 1e-6)
    return {
        "weights": np.full(NUM_COMPONENTS, 1.0 / NUM_COMPONENTS),
        "locs": centres,
        "variances": np.tile(variance, (NUM_COMPONENTS, 1)),
    }


def priors_for(x):
    """``MixturePriors.for_data`` on the first ``PRIOR_ROWS`` rows (hashable tuples)."""
    from models.mixture import MixturePriors

    return MixturePriors.for_data(np.asarray(x[:PRIOR_ROWS]))


# --- memory --------------------------------------------------------------------------


def _status() -> dict[str, float]:
    """VmRSS, VmHWM (peak), RssAnon, RssFile of this process in MB (Linux; else {})."""
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            fields = dict(line.split(":", 1) for line in f if ":" in line)
    except OSError:
        return {}
    keys = ("VmRSS", "VmHWM", "RssAnon", "RssFile")
    return {k: int(fields[k].split()[0]) / 1024 for k in keys if k in fields}


def _trim() -> None:
    """Collect garbage and hand freed heap back to the OS, so the baseline is what is held."""
    gc.collect()
    try:
        import ctypes

        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


class PeakMemory:
    """The peak resident memory of a block above the process's resident memory before it.

    Linux's peak (VmHWM) is reset on entry by writing 5 to ``/proc/self/clear_refs``, so
    the peak is the block's own even after earlier, larger work in the process.
    ``sample()`` (e.g. from a callback) also tracks the peak of anonymous memory (heap:
    what cannot be paged out to a file), which VmHWM does not separate.
    """

    def __enter__(self):
        _trim()
        before = _status()
        self.baseline = before.get("VmRSS", float("nan"))
        self.anon_baseline = before.get("RssAnon", float("nan"))
        self.anon_peak = self.anon_baseline
        try:
            with open("/proc/self/clear_refs", "w", encoding="ascii") as f:
                f.write("5")
            self.reset = True
        except OSError:
            self.reset = False
        return self

    def sample(self) -> None:
        self.anon_peak = max(self.anon_peak, _status().get("RssAnon", float("nan")))

    def __exit__(self, *exc):
        self.sample()
        after = _status()
        peak = after.get("VmHWM", float("nan")) if self.reset else float("nan")
        self.peak_mb = peak - self.baseline
        self.anon_peak_mb = self.anon_peak - self.anon_baseline
        return False


def _record(method: str, n: int, unit: str, per_unit_s: float, **more) -> dict:
    row = {"method": method, "n": n, "unit": unit, "per_unit_s": per_unit_s}
    row.update(more)
    return row


def _repeats(n: int, plan: dict) -> int:
    return plan["repeats"] if n <= plan["repeat_up_to"] else 1


def _first_within(values, reference: float) -> int | None:
    """The first index whose value is within ``TARGET_NATS`` of ``reference``."""
    hits = np.flatnonzero(np.asarray(values) >= reference - TARGET_NATS)
    return int(hits[0]) if hits.size else None


# --- the methods (each runs in a worker process) --------------------------------------


def measure_em(spec: dict) -> list[dict]:
    """vilab's EM at every N: per iteration, iterations, time to the target, memory."""
    import torch

    from inference import run_em

    torch.set_num_threads(spec["threads"])
    imports_mb = _status().get("VmRSS", float("nan"))
    rows = []
    for n in spec["sizes"]:
        x = open_data(spec["path"], n, in_memory=True)
        clock = time.perf_counter()
        start = common_start(x, spec["seed"])
        start_s = time.perf_counter() - clock
        init = {"weights": start["weights"], "locs": start["locs"]}
        init["covariances"] = start["variances"]
        times, cpu_times = [], []
        for repeat in range(_repeats(n, spec["plan"])):
            with PeakMemory() as measured, warnings.catch_warnings():
                warnings.simplefilter("ignore")
                cpu = time.process_time()
                em = run_em(x, NUM_COMPONENTS, covariance="diag", init=init, tol=TOL)
                cpu = time.process_time() - cpu
            if repeat == 0:
                memory = measured  # the first fit's peak (the repeats hold the same)
            times.append(em.elapsed_s / em.n_iter)
            cpu_times.append(cpu / em.n_iter)
        per_iter = float(np.median(times))
        reached = _first_within(em.log_likelihood, em.lower_bound)
        reached = em.n_iter if reached is None else reached
        rows.append(
            _record(
                EM,
                n,
                "iteration",
                per_iter,
                units_run=em.n_iter,
                converged=bool(em.converged),
                units_to_target=reached,
                time_to_target_s=start_s + reached * per_iter,
                cpu_per_unit_s=float(np.median(cpu_times)),
                repeats=len(times),
                optimum=float(em.lower_bound),
                gap_nats=0.0,
                wall_s=em.elapsed_s,
                peak_mb=memory.peak_mb,
                imports_mb=imports_mb,
                data_mb=x.nbytes / 2**20,
            )
        )
        del x, em
    return rows


def measure_sklearn(spec: dict) -> list[dict]:
    """scikit-learn's GaussianMixture from the same start, one thread. torch is imported
    only after the last fit (for the log-likelihood at its estimate), so the import
    footprint is scikit-learn's own."""
    from sklearn.mixture import GaussianMixture
    from threadpoolctl import threadpool_limits

    imports_mb = _status().get("VmRSS", float("nan"))
    rows, estimates = [], []
    for n in spec["sizes"]:
        x = open_data(spec["path"], n, in_memory=True)
        clock = time.perf_counter()
        start = common_start(x, spec["seed"])
        start_s = time.perf_counter() - clock
        reference = spec["refs"][str(n)]
        capped = n > spec["plan"]["sklearn_converge_up_to"]
        max_iter = reference["units_run"] if capped else 500
        times, cpu_times = [], []
        for repeat in range(_repeats(n, spec["plan"])):
            gmm = GaussianMixture(
                NUM_COMPONENTS,
                covariance_type="diag",
                tol=TOL,
                max_iter=max_iter,
                init_params="random_from_data",
                weights_init=start["weights"],
                means_init=start["locs"],
                precisions_init=1.0 / start["variances"],
                random_state=spec["seed"],
            )
            with PeakMemory() as measured, threadpool_limits(spec["threads"] or None):
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")  # ConvergenceWarning when capped
                    clock, cpu = time.perf_counter(), time.process_time()
                    gmm.fit(x)
                    wall, cpu = time.perf_counter() - clock, time.process_time() - cpu
            if repeat == 0:
                memory = measured
            times.append(wall / gmm.n_iter_)
            cpu_times.append(cpu / gmm.n_iter_)
        per_iter = float(np.median(times))
        bounds = getattr(gmm, "lower_bounds_", [gmm.lower_bound_])
        reached = _first_within(bounds, reference["optimum"])
        rows.append(
            _record(
                SKLEARN,
                n,
                "iteration",
                per_iter,
                units_run=int(gmm.n_iter_),
                converged=bool(gmm.converged_),
                units_to_target=reached,
                time_to_target_s=None if reached is None else start_s + reached * per_iter,
                cpu_per_unit_s=float(np.median(cpu_times)),
                repeats=len(times),
                wall_s=wall,
                peak_mb=memory.peak_mb,
                imports_mb=imports_mb,
                data_mb=x.nbytes / 2**20,
                note=f"stopped after {max_iter} iterations (vilab EM's)" if capped else "",
            )
        )
        estimates.append((gmm.weights_, gmm.means_, gmm.covariances_))
        del x, gmm
    from inference.em import log_likelihood

    for row, params in zip(rows, estimates, strict=True):
        x = open_data(spec["path"], row["n"], in_memory=False)
        fitted = float(log_likelihood(x, *params).mean())
        row["gap_nats"] = spec["refs"][str(row["n"])]["optimum"] - fitted
    return rows


def _svi_call(x, priors, batch: int | None):
    """``fit_svi``'s model, guide, arguments and keyword arguments for the study."""
    import guides.mixture as guides
    import models.mixture as mixture

    kwargs = {"n_components": NUM_COMPONENTS, "priors": priors}
    if batch is not None and batch < len(x):
        kwargs["subsample_size"] = batch
    return mixture.model, guides.map_guide, (x,), kwargs


def _epoch_starts(steps, batch: int, size: int) -> np.ndarray:
    """Which steps (0-based) begin a new epoch's permutation (they draw it)."""
    k = np.asarray(steps)
    return (k * batch + batch - 1) // size != (k * batch - 1) // size


WARM_STEPS = 2  # steps after the first left out of the mean: TorchScript's profiling runs
BLOCK_STEPS = 50  # steps per block; a step's cost is the median of the blocks' means


def _block_means(durations: np.ndarray) -> np.ndarray:
    """The mean step of each block of ``BLOCK_STEPS`` consecutive steps (each holds one
    moment snapshot of the convergence judge, as every 50 steps of a fit do); the mean of
    all as one block when there are fewer than two. A step's cost is the median of the
    blocks of all repeats, so that a block in which the machine was slow does not count."""
    blocks = len(durations) // BLOCK_STEPS
    if blocks < 2:
        return np.asarray([np.mean(durations)])
    return durations[: blocks * BLOCK_STEPS].reshape(blocks, BLOCK_STEPS).mean(1)


def _timed_fit(x, priors, batch, steps: int, seed: int, memory=None) -> dict:
    """``1 + WARM_STEPS + steps`` SVI steps; the block means (:func:`_block_means`, wall
    and CPU) of the last ``steps`` (the first includes the setup; the next ones run the
    compiled loss's profiling passes).

    With minibatches the steps that draw an epoch's permutation are left out of the blocks
    and the permutation's cost is added back spread over its epoch (``spread``: ``n / N``
    of it per step), so every N is charged the same amortised cost whatever the window
    holds.
    """
    from inference import fit_svi
    from inference.svi.batches import EpochSampler

    model, guide, args, kwargs = _svi_call(x, priors, batch)
    stamps, cpu_stamps = [], []

    def stamp(info):
        stamps.append(time.perf_counter())
        cpu_stamps.append(time.process_time())
        if memory is not None and info.step % 25 == 0:
            memory.sample()

    clock = time.perf_counter()
    fit = fit_svi(
        model, guide, *args, elbo="enum", num_steps=1 + WARM_STEPS + steps, seed=seed,
        model_kwargs=kwargs, callback=stamp,
    )  # fmt: skip
    wall = time.perf_counter() - clock
    durations = np.diff(stamps)[WARM_STEPS:]  # durations[i]: step 1 + WARM_STEPS + i
    cpu_durations = np.diff(cpu_stamps)[WARM_STEPS:]
    out = {"wall_s": wall, "setup_s": stamps[0] - clock, "units_run": fit.num_steps}
    if "subsample_size" not in kwargs:
        blocks = {"blocks": _block_means(durations), "cpu_blocks": _block_means(cpu_durations)}
        return out | blocks | {"permutation_s": None, "spread": 0.0}
    sampler = EpochSampler(len(x), batch, seed)
    clock = time.perf_counter()
    sampler.permutation(0)
    permutation_s = time.perf_counter() - clock
    index = np.arange(len(durations)) + 1 + WARM_STEPS
    keep = ~_epoch_starts(index, batch, len(x))
    return out | {
        "blocks": _block_means(durations[keep]),
        "cpu_blocks": _block_means(cpu_durations[keep]),
        "permutation_s": permutation_s,
        "spread": permutation_s * batch / len(x),
    }


def _target_fit(x, priors, batch, plan: dict, seed: int, optimum: float) -> dict:
    """SVI until its parameters are within ``TARGET_NATS`` of EM's optimum per point.

    Every ``eval_every`` steps the callback reads the guide's parameters (the iterate
    the optimiser holds, not the fit's tail average) and evaluates the mean
    log-likelihood per point on the whole data; the seconds of that evaluation are
    taken off the clock. Time from the call (setup included) to the first step within.
    """
    import pyro

    from inference import fit_svi
    from inference.em import log_likelihood

    model, guide, args, kwargs = _svi_call(x, priors, batch)
    every, found = plan["eval_every"], {}
    paused = [0.0]

    def watch(info):
        if (info.step + 1) % every:
            return False
        pause = time.perf_counter()
        seconds = pause - clock - paused[0]
        store = pyro.get_param_store()  # the fit's own, inside its sealed room
        weights, locs, variances = (
            store[f"mixture.{k}"].detach().cpu().numpy() for k in ("weights", "locs", "variances")
        )
        gap = optimum - float(log_likelihood(x, weights, locs, variances).mean())
        paused[0] += time.perf_counter() - pause
        found["gap"] = gap
        if gap <= TARGET_NATS:
            found.update(steps=info.step + 1, seconds=seconds)
            return True
        return False

    clock = time.perf_counter()
    fit_svi(
        model, guide, *args, elbo="enum", num_steps=plan["target_steps"], seed=seed,
        model_kwargs=kwargs, callback=watch,
    )  # fmt: skip
    return {
        "units_to_target": found.get("steps"),
        "time_to_target_s": found.get("seconds"),
        "gap_nats": found.get("gap"),
    }


def full_batch_steps(n: int, plan: dict) -> int:
    """Timed full-batch steps at size ``n``: ``10**6 // n``, within the plan's bounds."""
    return max(plan["full_timed_steps"], min(plan["timed_steps"], 10**6 // n))


def measure_svi(spec: dict) -> list[dict]:
    """Full-batch SVI, or minibatch SVI from memory and then from a memory map, at every N.

    The memory-mapped runs share the minibatch runs' process (after them; each fit's
    peak is its own, see :class:`PeakMemory`).
    """
    import torch

    torch.set_num_threads(spec["threads"])
    import inference  # noqa: F401 - imports counted in imports_mb

    imports_mb = _status().get("VmRSS", float("nan"))
    plan, full = spec["plan"], spec["method"] == SVI_FULL
    jobs = [(spec["method"], n, True) for n in spec["sizes"]]
    if not full:
        jobs += [(SVI_MEMMAP, n, False) for n in plan["memmap_sizes"]]
    _warm_up(spec)
    timings = {}
    # Repeats go round all sizes in turn, so a slow spell of the machine hits them alike.
    for repeat in range(1 if full else plan["svi_repeats"]):
        for method, n, in_memory in jobs:
            batch = None if full else plan["batch"]
            steps = full_batch_steps(n, plan) if full else plan["timed_steps"]
            x = open_data(spec["path"], n, in_memory=in_memory)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # torch: a read-only memory map is not writable
                with PeakMemory() as memory:
                    timed = _timed_fit(x, _priors(spec, n), batch, steps, spec["seed"], memory)
            del x
            if repeat == 0:
                timed.update(peak_mb=memory.peak_mb, anon_peak_mb=memory.anon_peak_mb)
                timings[method, n] = timed
            else:
                for key in ("blocks", "cpu_blocks"):
                    timings[method, n][key] = np.concatenate([timings[method, n][key], timed[key]])
    rows = []
    for method, n, in_memory in jobs:
        batch = None if full else plan["batch"]
        timed = timings[method, n]
        target = {}
        if in_memory and n <= (plan["full_target_up_to"] if full else plan["target_up_to"]):
            x = open_data(spec["path"], n, in_memory=True)
            optimum = spec["refs"][str(n)]["optimum"]
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                target = _target_fit(x, _priors(spec, n), batch, plan, spec["seed"], optimum)
            del x
        spread, blocks, cpu_blocks = (timed.pop(k) for k in ("spread", "blocks", "cpu_blocks"))
        fed = batch is not None and batch < n
        rows.append(
            _record(
                method,
                n,
                "step",
                float(np.median(blocks)) + spread,
                cpu_per_unit_s=float(np.median(cpu_blocks)) + spread,
                blocks=len(blocks),
                **timed,
                **target,
                batch=batch if fed else n,
                imports_mb=imports_mb,
                data_mb=n * NUM_FEATURES * 8 / 2**20 if in_memory else 0.0,
                note="" if full or fed else "n >= N: the full batch",
            )
        )
    return rows


def _priors(spec: dict, n: int):
    """The priors at size ``n`` (from the first rows of the file, read through a map)."""
    return priors_for(open_data(spec["path"], min(n, PRIOR_ROWS), in_memory=False))


def _warm_up(spec: dict) -> None:
    """One tiny fit first: the process's one-off costs (torch._dynamo's import on the
    first optimiser step, Pyro's first trace) land on no measured fit."""
    x = open_data(spec["path"], min(spec["sizes"]), in_memory=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        _timed_fit(x, priors_for(x), max(2, len(x) // 4), 3, spec["seed"])


GRADIENT_CALLS = 200  # calls of the potential's value and gradient that are timed


def _gradient_cost(model, args, kwargs, runner: str) -> tuple[float, float]:
    """Seconds (wall, CPU) per call of the value and gradient of the flat potential NUTS
    ran on (the same graph: traced or compiled), at its zero point; medians of ten blocks."""
    import torch

    from inference.mcmc.potential import flat_potential
    from inference.sites import max_plate_nesting, trace_model

    nesting = max_plate_nesting(trace_model(model, args, kwargs))
    potential = flat_potential(
        model, args, kwargs, nesting=nesting, device=torch.device("cpu"), runner=runner
    )
    point = np.zeros(potential.dim)
    potential.logp_and_grad(point)
    calls, blocks = GRADIENT_CALLS // 10, []
    for _ in range(10):
        clock, cpu = time.perf_counter(), time.process_time()
        for _ in range(calls):
            potential.logp_and_grad(point)
        blocks.append(((time.perf_counter() - clock) / calls, (time.process_time() - cpu) / calls))
    wall, cpu = np.median(np.asarray(blocks), axis=0)
    return float(wall), float(cpu)


def measure_nuts(spec: dict) -> list[dict]:
    """One NUTS chain (nutpie; the potential as ``run_nuts`` picks for so short a run)
    per N: seconds per draw (warmup in), and per gradient of its potential."""
    import torch

    torch.set_num_threads(spec["threads"])
    import models.mixture as mixture
    from inference import run_nuts

    imports_mb = _status().get("VmRSS", float("nan"))
    plan, rows = spec["plan"], []
    for n in spec["sizes"]:
        x = open_data(spec["path"], n, in_memory=True)
        args = (torch.from_numpy(x), NUM_COMPONENTS, priors_for(x))
        transitions = plan["nuts_warmup"] + plan["nuts_samples"]
        with PeakMemory() as memory, warnings.catch_warnings():
            warnings.simplefilter("ignore")
            mc = run_nuts(
                mixture.model, *args, num_samples=plan["nuts_samples"],
                warmup_steps=plan["nuts_warmup"], num_chains=1, seed=spec["seed"],
            )  # fmt: skip
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            per_gradient, cpu_per_gradient = _gradient_cost(mixture.model, args, {}, mc.potential)
        rows.append(
            _record(
                NUTS,
                n,
                "gradient",
                per_gradient,
                cpu_per_unit_s=cpu_per_gradient,
                units_run=None,
                draws=transitions,
                per_draw_s=mc.elapsed_s / transitions,
                grads_per_draw=float(np.mean(mc.stats["n_steps"])),
                potential=mc.potential,
                divergences=mc.num_divergences,
                wall_s=mc.elapsed_s,
                peak_mb=memory.peak_mb,
                imports_mb=imports_mb,
                data_mb=x.nbytes / 2**20,
                note=f"{plan['nuts_warmup']} warmup + {plan['nuts_samples']} draws in "
                f"{mc.elapsed_s:.1f} s; {mc.potential} potential",
            )
        )
        del x, mc
    return rows


MEASURES = {
    EM: measure_em,
    SKLEARN: measure_sklearn,
    SVI_FULL: measure_svi,
    SVI_MINI: measure_svi,  # also SVI_MEMMAP, in the same worker
    NUTS: measure_nuts,
}


def sizes_of(method: str, plan: Plan) -> tuple[int, ...]:
    """The N each worker runs at (the minibatch worker adds ``plan.memmap_sizes``)."""
    if method == SVI_FULL:
        return tuple(n for n in plan.sizes if n <= plan.full_batch_up_to)
    if method == NUTS:
        return tuple(n for n in plan.sizes if n <= plan.nuts_up_to)
    return plan.sizes


# --- orchestration -------------------------------------------------------------------


def run_worker(spec: dict, directory: Path, in_process: bool) -> list[dict]:
    """One method at all its N, in a fresh interpreter unless ``in_process``."""
    if in_process:
        return MEASURES[spec["method"]](spec)
    name = spec["method"].replace(" ", "_").replace(",", "")
    spec_path, out_path = directory / f"{name}.json", directory / f"{name}-rows.json"
    spec_path.write_text(json.dumps(spec), encoding="utf-8")
    command = [sys.executable, "-m", "benchmarks.mixture_scaling", "--worker", str(spec_path)]
    command += ["--rows", str(out_path)]
    subprocess.run(command, cwd=ROOT, check=True, timeout=WORKER_TIMEOUT_S)
    return json.loads(out_path.read_text(encoding="utf-8"))


def _log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def run_study(
    plan: Plan = FULL,
    seed: int = 0,
    threads: int = 1,
    figure: Path | None = FIGURE,
    log=_log,
    methods: tuple[str, ...] = METHODS,
) -> dict:
    """Run every method at its sizes; returns the records, the goals and the settings.

    EM runs first: its optimum at each N is the target of the others.
    """
    from benchmarks.report import scaling_goals

    clock = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="vilab-scaling-") as tmp:
        directory = Path(tmp)
        path = write_data(directory / "x.npy", max(plan.sizes))
        log(f"  mixture scaling: data written ({max(plan.sizes):,} rows, {tmp})")
        refs, records = {}, []
        memmap = SVI_MEMMAP in methods
        workers = [m for m in MEASURES if m in (EM, *methods) or (m == SVI_MINI and memmap)]
        for method in workers:
            sizes = sizes_of(method, plan)
            if not sizes:
                continue
            spec = {
                "method": method,
                "path": str(path),
                "sizes": list(sizes),
                "plan": asdict(plan),
                "refs": refs,
                "seed": seed,
                "threads": threads,
            }
            started = time.perf_counter()
            rows = run_worker(spec, directory, in_process=not plan.subprocess)
            log(f"  mixture scaling: {method}: {time.perf_counter() - started:.1f} s")
            if method == EM:
                refs = {str(r["n"]): r for r in rows}
            records.extend(r for r in rows if r["method"] in methods)
    study = {
        "plan": asdict(plan),
        "seed": seed,
        "threads": threads,
        "target_nats": TARGET_NATS,
        "tol": TOL,
        "records": records,
        "elapsed_s": time.perf_counter() - clock,
    }
    study["goals"] = scaling_goals(records)
    if figure is not None:
        plot(records, figure)
        study["figure"] = str(figure.relative_to(ROOT) if figure.is_relative_to(ROOT) else figure)
    return study


def plot(records: list[dict], path: Path) -> Path:
    """Log-log: seconds per iteration / step / gradient against N, one line per method."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7.0, 4.6))
    markers = dict(zip(METHODS, "osD^vP", strict=True))
    for method in METHODS:
        rows = sorted((r for r in records if r["method"] == method), key=lambda r: r["n"])
        if not rows:
            continue
        unit = rows[0]["unit"]
        ax.plot(
            [r["n"] for r in rows],
            [r["per_unit_s"] for r in rows],
            marker=markers[method],
            linestyle="--" if method == SVI_MEMMAP else "-",
            label=f"{method} (per {unit})",
        )
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("N (data points)")
    ax.set_ylabel("seconds per iteration / step / gradient")
    ax.set_title("Gaussian mixture, D = 2, K = 3: cost of one iteration against N")
    ax.grid(True, which="major", alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def write_results(study: dict, path: Path, machine: dict) -> None:
    """Put the study into ``path`` (``results.json``) under ``mixture_scaling``, and its
    goals under ``goals.mixture_scaling_goals``, leaving the other benchmarks' entries."""
    from benchmarks.report import _plain

    payload = json.loads(path.read_text(encoding="utf-8")) if path.exists() else {}
    payload["mixture_scaling"] = _plain({"machine": machine, **study})
    payload.setdefault("goals", {})["mixture_scaling_goals"] = _plain(study["goals"])
    path.write_text(json.dumps(payload, indent=2) + "\n", encoding="utf-8")


def _worker_main(spec_path: str, rows_path: str) -> int:
    spec = json.loads(Path(spec_path).read_text(encoding="utf-8"))
    rows = MEASURES[spec["method"]](spec)
    Path(rows_path).write_text(json.dumps(rows), encoding="utf-8")
    return 0


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.mixture_scaling", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--quick", action="store_true", help="N up to 1e5, small budgets (< 1 min)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1, help="torch and BLAS threads (default 1)")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--rows", help=argparse.SUPPRESS)
    parser.add_argument("--no-write", action="store_true", help="print only (no results.json)")
    args = parser.parse_args(argv)
    if args.worker:
        return _worker_main(args.worker, args.rows)
    from benchmarks.machine import machine_info
    from benchmarks.report import render_scaling

    machine = machine_info()
    plan = QUICK if args.quick else FULL
    study = run_study(plan, args.seed, args.threads, FIGURE_QUICK if args.quick else FIGURE)
    print(render_scaling(study))
    if not args.no_write:
        write_results(study, RESULTS_QUICK if args.quick else RESULTS, machine)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
