"""``python -m benchmarks``: NUTS and SVI, vilab against Pyro and NumPyro.

NUTS on non-centered eight schools, an enumerated Gaussian mixture and a badly scaled
regression (:mod:`benchmarks.cases`), and a workload of four regressions
(:mod:`benchmarks.workload`); SVI on eight schools; the mixture scaling study (EM,
scikit-learn, SVI and NUTS from N = 1e3 to 1e7: :mod:`benchmarks.mixture_scaling`); the
VAE's training per epoch against plain PyTorch (:mod:`benchmarks.vae`). Full
budgets by default (about 20 minutes on two cores); ``--quick`` for a check that the code
runs (a few minutes). Prints the tables and writes ``results.json``.
"""

import argparse
import importlib.util
import os
import sys
import time
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent


@dataclass(frozen=True)
class Budget:
    """Per-method budgets.

    warmup_steps, num_samples: every NUTS chain. warm_start_warmup: NUTS warmup after
    an SVI warm start. svi_steps: fixed steps of the Pyro and NumPyro SVI loops.
    vilab_svi_steps: ``fit_svi``'s ``num_steps`` (its most; it stops on convergence).
    """

    warmup_steps: int
    num_samples: int
    warm_start_warmup: int
    svi_steps: int
    vilab_svi_steps: int


FULL = Budget(
    warmup_steps=1000,
    num_samples=1000,
    warm_start_warmup=200,
    svi_steps=3000,
    vilab_svi_steps=2000,
)
QUICK = Budget(
    warmup_steps=100, num_samples=100, warm_start_warmup=50, svi_steps=300, vilab_svi_steps=300
)
TINY = Budget(warmup_steps=5, num_samples=5, warm_start_warmup=5, svi_steps=20, vilab_svi_steps=20)


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="small budgets (a few min)")
    parser.add_argument("--seed", type=int, default=0, help="seed of every run (default 0)")
    parser.add_argument(
        "--threads",
        type=int,
        default=1,
        help="intra-op threads for torch and XLA (default 1; 0 leaves the libraries' defaults)",
    )
    parser.add_argument("--no-numpyro", action="store_true", help="leave NumPyro out")
    parser.add_argument(
        "--no-scaling", action="store_true", help="leave the mixture scaling study out"
    )
    parser.add_argument("--no-vae", action="store_true", help="leave the VAE benchmark out")
    parser.add_argument(
        "--out",
        type=Path,
        default=None,
        help="results file (default benchmarks/results.json; results-quick.json with --quick)",
    )
    parser.add_argument(
        "--profile",
        action="store_true",
        help="only profile vilab run_nuts (jit off, 100 + 100) with cProfile and print it",
    )
    args = parser.parse_args(argv)
    if args.threads < 0:
        parser.error("--threads must be >= 0")
    return args


def configure_threads(threads: int) -> None:
    """Pin torch and XLA to ``threads`` intra-op threads (0: leave their defaults).

    On models this small, intra-op parallelism buys nothing and, on a busy machine,
    costs a lot: a second torch thread that is not scheduled stalls every op.
    """
    if threads == 0:
        return
    import torch

    torch.set_num_threads(threads)
    if threads == 1:  # read when JAX starts its CPU backend
        flags = os.environ.get("XLA_FLAGS", "")
        extra = "--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1"
        os.environ["XLA_FLAGS"] = f"{flags} {extra}".strip()


def numpyro_available() -> bool:
    return all(importlib.util.find_spec(name) is not None for name in ("numpyro", "jax"))


def _log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def warm_up(with_numpyro: bool, seed: int = 0) -> float:
    """Touch every library once, so that one-off start-up costs land on no method.

    Torch imports ``torch._dynamo`` (seconds) on an optimiser's first step; JAX starts
    its backend on first use and lowers each kind of operation once per process. Each
    engine (vilab SVI, vilab NUTS on both backends, NumPyro NUTS with and without
    funsor's enumeration, NumPyro SVI) runs once at a tiny size. The measured runs
    still build fresh kernels, potentials and guides, so their JIT tracing or XLA
    compilation of the model is counted. Returns the seconds it took.
    """
    from benchmarks import nuts, svi

    start = time.perf_counter()
    b = TINY
    svi.run_vilab_svi(b.vilab_svi_steps, seed=seed)
    # Compiled, so that Inductor's on-disk cache holds the eight-schools graph (it does
    # not depend on the budget) as after any earlier run of the model: the cold-process
    # row measures a new process, the empty-cache row a new machine.
    nuts.run_vilab_nuts(b.warmup_steps, b.num_samples, seed=seed, compile=True)
    nuts.run_vilab_nuts(b.warmup_steps, b.num_samples, backend="pyro", jit=True, seed=seed)
    if with_numpyro:
        from benchmarks import numpyro_eight_schools as npy
        from benchmarks import numpyro_mixture

        npy.run_numpyro_nuts(b.warmup_steps, b.num_samples, seed=seed)
        npy.run_numpyro_svi(b.svi_steps, seed=seed)
        if numpyro_mixture.funsor_available():
            numpyro_mixture.run_numpyro_mixture(b.warmup_steps, b.num_samples, seed=seed)
    return time.perf_counter() - start


def run_vilab(budget: Budget, seed: int, log=_log, threads: int = 1) -> tuple[list, list]:
    """The vilab and plain-Pyro runs (no NumPyro): NUTS runs, SVI runs.

    vilab's nutpie backend on eight schools runs in fresh processes
    (:mod:`benchmarks.cold`): its first call there (cold) and its second (warm), with the
    potential compiled (also once with an empty Inductor cache) and traced.
    """
    from benchmarks import cold, nuts, svi
    from benchmarks.cases import EIGHT_SCHOOLS, MIXTURE, REGRESSION

    b, w, n = budget, budget.warmup_steps, budget.num_samples
    pyro_jit = nuts.vilab_label("pyro", True)
    nuts_runs = [
        (
            EIGHT_SCHOOLS,
            f"vilab run_nuts (nutpie, {how}), cold and warm",
            lambda compile=compile, empty=empty: cold.run_cold_and_warm(
                w, n, seed=seed, threads=threads, compile=compile, empty_cache=empty
            ),
        )
        for how, compile, empty in (
            ("compiled, empty cache", True, True),
            ("compiled", True, False),
            ("traced", False, False),
        )
    ]
    nuts_runs += [
        (
            EIGHT_SCHOOLS,
            pyro_jit,
            lambda: nuts.run_vilab_nuts(w, n, backend="pyro", jit=True, seed=seed),
        ),
        (
            EIGHT_SCHOOLS,
            "vilab SVI-mvn warm start + run_nuts (nutpie)",
            lambda: nuts.run_vilab_warm_nuts(
                b.warm_start_warmup, n, svi_steps=b.vilab_svi_steps, seed=seed
            ),
        ),
        (EIGHT_SCHOOLS, "Pyro NUTS", lambda: nuts.run_pyro_nuts(w, n, seed=seed)),
    ]
    for case in (MIXTURE, REGRESSION):
        nuts_runs += [
            (
                case,
                nuts.vilab_label("nutpie", False, compile),
                lambda case=case, compile=compile: nuts.run_vilab_nuts(
                    w, n, case=case, seed=seed, compile=compile
                ),
            )
            for compile in (True, False)
        ]
        nuts_runs += [
            (
                case,
                pyro_jit,
                lambda case=case: nuts.run_vilab_nuts(
                    w, n, case=case, backend="pyro", jit=True, seed=seed
                ),
            ),
        ]
    svi_runs = [
        lambda: svi.run_vilab_svi(b.vilab_svi_steps, seed=seed),
        lambda: svi.run_pyro_svi(b.svi_steps, seed=seed),
        lambda: svi.run_pyro_svi(b.svi_steps, jit=True, seed=seed),
    ]
    return _run_nuts_all(nuts_runs, log), _run_all(svi_runs, log)


def run_numpyro(budget: Budget, seed: int, log=_log) -> tuple[list, list]:
    """The NumPyro runs: NUTS (eight schools cold, then compiled; the mixture enumerated
    when funsor is installed, and summed out by hand; the regression) and SVI."""
    from benchmarks import numpyro_eight_schools as npy
    from benchmarks import numpyro_mixture, numpyro_regression
    from benchmarks.cases import EIGHT_SCHOOLS, MIXTURE, REGRESSION

    w, n = budget.warmup_steps, budget.num_samples
    nuts_runs = [
        (EIGHT_SCHOOLS, "NumPyro NUTS", lambda: npy.run_numpyro_nuts(w, n, seed=seed)),
        (
            EIGHT_SCHOOLS,
            "NumPyro NUTS, compiled",
            lambda: npy.run_numpyro_nuts(w, n, seed=seed, repeat=True),
        ),
    ]
    if numpyro_mixture.funsor_available():
        nuts_runs.append(
            (
                MIXTURE,
                numpyro_mixture.ENUMERATED,
                lambda: numpyro_mixture.run_numpyro_mixture(w, n, seed=seed),
            )
        )
    else:
        log("  funsor is not installed: NumPyro's mixture runs with z summed out by hand only")
    nuts_runs += [
        (
            MIXTURE,
            numpyro_mixture.MARGINALISED,
            lambda: numpyro_mixture.run_numpyro_mixture(w, n, by_hand=True, seed=seed),
        ),
        (
            REGRESSION,
            numpyro_regression.LABEL,
            lambda: numpyro_regression.run_numpyro_regression(w, n, seed=seed),
        ),
    ]
    svi_runs = [lambda: npy.run_numpyro_svi(budget.svi_steps, seed=seed)]
    return _run_nuts_all(nuts_runs, log), _run_all(svi_runs, log)


def _run_all(runs, log) -> list:
    out = []
    for run in runs:
        result = run()
        log(f"  {result.method}: {result.wall_s:.1f} s")
        out.append(result)
    return out


def _run_nuts_all(runs, log) -> list:
    """Each ``(case, label, run)`` in turn; a run may return one result or a list.

    A run that raises becomes a :class:`~benchmarks.nuts.FailedRun` row (and a line on
    stderr) instead of ending the benchmark.
    """
    from benchmarks.nuts import FailedRun

    out = []
    for case, label, run in runs:
        try:
            results = run()
        except Exception as err:  # noqa: BLE001 - one broken engine must not stop the rest
            message = f"{type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}"
            log(f"  {case.name} / {label}: FAILED ({message})")
            out.append(FailedRun(case.name, label, message[:200]))
            continue
        for result in results if isinstance(results, list) else [results]:
            log(f"  {result.model} / {result.method}: {result.wall_s:.1f} s")
            out.append(result)
    return out


def main(argv=None) -> int:
    args = parse_args(argv)
    configure_threads(args.threads)
    # Pyro's JIT (vilab jit=True, JitTrace_ELBO) calls torch.jit.trace, deprecated in torch 2.x
    warnings.filterwarnings("ignore", message=".*torch.jit.trace.*", category=FutureWarning)
    if args.profile:
        from benchmarks.hotspots import profile_run_nuts

        print(profile_run_nuts())
        return 0
    from benchmarks import report
    from benchmarks.cases import CASES
    from benchmarks.machine import machine_info
    from benchmarks.svi import summarise

    budget = QUICK if args.quick else FULL
    with_numpyro = not args.no_numpyro and numpyro_available()
    if not with_numpyro:
        _log("NumPyro is left out (not installed, or --no-numpyro): no ratios")
    machine = machine_info()
    _log("warming up (library start-up costs)")
    warm_up_s = warm_up(with_numpyro, args.seed)
    _log("measuring")
    start = time.perf_counter()
    nuts, svi = run_vilab(budget, args.seed, threads=args.threads)
    from benchmarks.workload import run_workload

    workload = run_workload(
        args.seed, num_samples=budget.num_samples, warmup_steps=budget.warmup_steps
    )
    _log(f"  four-regression workload: {workload['total_s']:.1f} s")
    from benchmarks.mixture_seeds import run_seeds

    seeds = run_seeds(budget.warmup_steps, budget.num_samples, with_numpyro=with_numpyro)
    _log(f"  mixture over seeds: {seeds['vilab_vs_numpyro']:.2f} x NumPyro (medians)")
    if with_numpyro:
        more_nuts, more_svi = run_numpyro(budget, args.seed)
        nuts, svi = nuts + more_nuts, svi + more_svi
    scaling = None
    if not args.no_scaling:
        from benchmarks import mixture_scaling as ms

        plan, figure = (ms.QUICK, ms.FIGURE_QUICK) if args.quick else (ms.FULL, ms.FIGURE)
        scaling = ms.run_study(plan, args.seed, args.threads, figure)
        _log(f"  mixture scaling study: {scaling['elapsed_s']:.1f} s")
    vae = None
    if not args.no_vae:
        from benchmarks import vae as vae_bench

        vae = vae_bench.run_study(vae_bench.QUICK if args.quick else vae_bench.FULL, args.seed)
        _log(vae_bench.render(vae))
    nuts_frame = report.nuts_table([run.summary() for run in nuts])
    svi_frame = report.svi_table(summarise(svi))
    verdict = report.goals(nuts_frame, svi_frame, workload["total_s"], seeds)
    if scaling is not None:
        verdict["mixture_scaling_goals"] = scaling["goals"]
    if vae is not None:
        verdict["vae_goals"] = vae["goals"]
    if args.quick:
        print("--quick: budgets too small for these numbers to mean anything; see README.md\n")
    ess_over = {case.name: case.ess_over for case in CASES.values()}
    print(report.render(nuts_frame, svi_frame, verdict, ess_over, workload, seeds, scaling))
    settings = {
        "mode": "quick" if args.quick else "full",
        "budget": asdict(budget),
        "seed": args.seed,
        "threads": args.threads,
        "numpyro": with_numpyro,
        "warm_up_s": warm_up_s,
        "measure_s": time.perf_counter() - start,
        "load_average_after": [round(x, 2) for x in os.getloadavg()],
    }
    out = args.out or HERE / ("results-quick.json" if args.quick else "results.json")
    extra = {"workload": workload, "mixture_seeds": seeds}
    if scaling is not None:
        extra["mixture_scaling"] = scaling
    if vae is not None:
        extra["vae"] = vae
    report.write_json(out, machine, settings, nuts_frame, svi_frame, verdict, extra)
    _log(f"wrote {out}")
    return 0
