"""vilab's nutpie backend in a fresh process: the first run (cold) and the second (warm).

``run_cold_and_warm`` starts ``python -m benchmarks.cold`` in a new interpreter, which
imports vilab, runs ``run_nuts`` on eight schools twice in a row with the same
arguments, and pickles both :class:`~benchmarks.nuts.NutsRun` back. The first run pays
every one-off cost a process pays on its first NUTS call (tracing the potential and
TorchScript's first compilation, nutpie's set-up, Pyro's first trace of the model);
the second pays only what every call pays. Each time runs from the call to the return;
the seconds the imports took are recorded as ``import_s`` and not counted.
"""

import argparse
import pickle
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
COLD = "vilab run_nuts (nutpie), cold: 1st call in a fresh process"
WARM = "vilab run_nuts (nutpie), warm: 2nd call in that process"
TIMEOUT_S = 1800


def run_cold_and_warm(
    warmup_steps: int, num_samples: int, *, seed: int = 0, threads: int = 1
) -> list:
    """The cold and the warm :class:`~benchmarks.nuts.NutsRun`, from a new interpreter."""
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
        ]
        subprocess.run(command, cwd=ROOT, check=True, timeout=TIMEOUT_S)
        return pickle.loads(out.read_bytes())


def main(argv=None) -> int:
    begin = time.perf_counter()
    parser = argparse.ArgumentParser(prog="python -m benchmarks.cold")
    parser.add_argument("out", type=Path)
    parser.add_argument("--warmup", type=int, required=True)
    parser.add_argument("--samples", type=int, required=True)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)

    import warnings

    from benchmarks.cli import configure_threads

    configure_threads(args.threads)
    warnings.filterwarnings("ignore", message=".*torch.jit.trace.*", category=FutureWarning)
    from benchmarks.nuts import run_vilab_nuts

    import_s = time.perf_counter() - begin
    runs = []
    for label in (COLD, WARM):
        run = run_vilab_nuts(args.warmup, args.samples, seed=args.seed, method=label)
        run.details["import_s"] = import_s
        runs.append(run)
    args.out.write_bytes(pickle.dumps(runs))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
