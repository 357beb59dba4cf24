"""vilab's nutpie backend in a fresh process: the first run (cold) and the second (warm).

``run_cold_and_warm`` starts ``python -m benchmarks.cold`` in a new interpreter, which
imports vilab, runs ``run_nuts`` on eight schools twice in a row with the same
arguments, and pickles both :class:`~benchmarks.nuts.NutsRun` back. The first run pays
every one-off cost a process pays on its first NUTS call (capturing the potential's
graph, compiling it or tracing it, loading Inductor, nutpie's set-up, Pyro's first trace
of the model); the second pays only what every call pays. Each time runs from the call
to the return; the seconds the imports took are recorded as ``import_s`` and not
counted.

With ``empty_cache`` the process gets a new, empty Inductor cache directory
(``TORCHINDUCTOR_CACHE_DIR``): its first run pays what the first compilation on a new
machine pays. Otherwise it shares the machine's cache, which the benchmark's warm-up
filled with this graph (as any earlier run of the same model and data would have).
"""

import argparse
import os
import pickle
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TIMEOUT_S = 1800


def labels(compile: bool, empty_cache: bool = False) -> tuple[str, str]:
    """The cold and warm rows' labels."""
    how = "compiled" if compile else "traced"
    cache = ", empty Inductor cache" if empty_cache else ""
    return (
        f"vilab run_nuts (nutpie, {how}), cold: 1st call in a fresh process{cache}",
        f"vilab run_nuts (nutpie, {how}), warm: 2nd call in that process",
    )


def run_cold_and_warm(
    warmup_steps: int,
    num_samples: int,
    *,
    seed: int = 0,
    threads: int = 1,
    compile: bool = True,
    empty_cache: bool = False,
) -> list:
    """The cold and the warm :class:`~benchmarks.nuts.NutsRun`, from a new interpreter
    (only the cold one with ``empty_cache``)."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "runs.pkl"
        command = [
            sys.executable,
            "-m",
            "benchmarks.cold",
            str(out),
            f"--warmup={warmup_steps}",
            f"--samples={num_samples}",
            f"--seed={seed}",
            f"--threads={threads}",
            f"--compile={'on' if compile else 'off'}",
            *(["--empty-cache"] if empty_cache else []),
        ]
        env = dict(os.environ)
        if empty_cache:
            env["TORCHINDUCTOR_CACHE_DIR"] = str(Path(tmp) / "inductor")
        subprocess.run(command, cwd=ROOT, check=True, timeout=TIMEOUT_S, env=env)
        runs = pickle.loads(out.read_bytes())
        return runs[:1] if empty_cache else runs


def main(argv=None) -> int:
    begin = time.perf_counter()
    parser = argparse.ArgumentParser(prog="python -m benchmarks.cold")
    parser.add_argument("out", type=Path)
    parser.add_argument("--warmup", type=int, required=True)
    parser.add_argument("--samples", type=int, required=True)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--compile", choices=("on", "off"), default="on")
    parser.add_argument("--empty-cache", action="store_true", help="label only: the caller set it")
    args = parser.parse_args(argv)

    import warnings

    from benchmarks.cli import configure_threads

    configure_threads(args.threads)
    warnings.filterwarnings("ignore", message=".*torch.jit.trace.*", category=FutureWarning)
    from benchmarks.nuts import run_vilab_nuts

    import_s = time.perf_counter() - begin
    compile = args.compile == "on"
    runs = []
    for label in labels(compile, args.empty_cache):
        run = run_vilab_nuts(
            args.warmup, args.samples, seed=args.seed, method=label, compile=compile
        )
        run.details["import_s"] = import_s
        runs.append(run)
    args.out.write_bytes(pickle.dumps(runs))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
