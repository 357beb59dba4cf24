"""The ``vilab`` command line.

::

    vilab list
    vilab compare CASE|FILE.py [--methods M1,M2,...] [--quick] [--seed N] [--out DIR]
                               [--force] [--no-progress]
    vilab compare vae [--epochs N] [--batch-size N] [--latent-size N] [--hidden N,...]
                      [--elbo meanfield|trace] [--data-dir DIR] [--checkpoint PATH
                      [--resume]] [--device cpu|cuda] [--lightning [--processes N]]
    vilab report DIR
    vilab --version

``compare`` runs the case's methods one after the other, prints the methods table and a
compact parameter table, and writes ``methods.csv``, ``parameters.csv``, one
``<method>.nc`` per method, ``figures/*.png``, ``run.json`` and ``report.html`` into DIR.
A ``FILE.py`` instead of a case is a user's model file (see
:func:`inference.lab.cases.case_from_file`). ``report`` rebuilds the figures and
``report.html`` of a run from its saved files.

Exit codes: 0 done; 1 a method or the report failed (what finished is still written);
2 usage error; 130 interrupted (what finished is still written). Every error is one line
on stderr; ``VILAB_TRACEBACK=1`` shows the traceback of an unexpected error instead.
"""

import argparse
import contextlib
import datetime
import os
import shlex
import sys
import time
import warnings
from pathlib import Path

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130
# The shipped cases are small: torch's intra-op threads only add synchronisation there,
# and cost a factor of two or more on a busy machine.
TORCH_THREADS = 1


class UsageError(Exception):
    """A bad command line: reported as one line, exit code 2."""


class _Parser(argparse.ArgumentParser):
    def error(self, message):
        raise UsageError(f"{message} (see '{self.prog} --help')")


MAX_SEED = 2**32 - 1  # every seed vilab derives (chains: seed + k) stays within torch's range


def _seed(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = -1
    if not 0 <= value <= MAX_SEED:
        raise argparse.ArgumentTypeError(f"must be an integer from 0 to {MAX_SEED}, got {text!r}")
    return value


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text!r}")
    return value


def _sizes(text: str) -> tuple[int, ...]:
    return tuple(_positive(part) for part in text.split(","))


TRAINING_OPTIONS = (
    "epochs", "batch_size", "latent_size", "hidden", "elbo", "data_dir", "checkpoint",
    "resume", "device", "lightning", "processes",
)  # fmt: skip


def _case(args):
    """The case ``args`` name, with the VAE's training options applied."""
    from inference.lab.cases import CaseFileError, case_from_file, get_case

    given = [o for o in TRAINING_OPTIONS if getattr(args, o) not in (None, False)]
    if given and args.case != "vae":
        flag = "--" + given[0].replace("_", "-")
        raise UsageError(f"{flag} applies to the vae case only")
    try:
        if args.case.endswith(".py"):
            return case_from_file(args.case)
        if not given:
            return get_case(args.case)
        return _vae_case(args)
    except (CaseFileError, ValueError) as err:
        raise UsageError(str(err)) from None


def _vae_case(args):
    from dataclasses import replace

    from inference.isolation import resolve_device
    from inference.lab.cases import vae_case
    from inference.lab.vae_training import VAESettings

    if args.resume and not args.checkpoint:
        raise UsageError("--resume needs --checkpoint PATH")
    if args.checkpoint:
        exists = Path(args.checkpoint).exists()
        if exists and not args.resume:
            raise UsageError(
                f"checkpoint {args.checkpoint!r} exists: add --resume to continue from it, "
                "or remove it"
            )
        if args.resume and not exists:
            raise UsageError(f"--resume: no checkpoint at {args.checkpoint!r}")
    if args.processes and not args.lightning:
        raise UsageError("--processes applies to --lightning training")
    if args.lightning and args.checkpoint:
        raise UsageError("--checkpoint applies to vilab's own training, not --lightning")
    if args.device is not None:
        resolve_device(args.device)  # a bad or absent device is a usage error
    chosen = {
        "epochs": args.epochs,
        "batch_size": args.batch_size,
        "z_dim": args.latent_size,
        "hidden": args.hidden,
        "elbo": args.elbo,
        "device": args.device,
        "processes": (args.processes or 1) if args.lightning else None,
    }
    settings = replace(VAESettings(), **{k: v for k, v in chosen.items() if v is not None})
    return vae_case(settings, data_dir=args.data_dir, checkpoint=args.checkpoint)


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("vilab")
    except PackageNotFoundError:
        return "unknown (not installed)"


EPILOG = (
    "exit codes: 0 done; 1 a method or the report failed (what finished is still written); "
    "2 usage error (unknown case or method, bad option, a model file without model or data); "
    "130 interrupted (what finished is still written)"
)


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``vilab``."""
    parser = _Parser(prog="vilab", description="Variational inference lab on Pyro.", epilog=EPILOG)
    parser.add_argument("--version", action="version", version=f"vilab {_version()}")
    commands = parser.add_subparsers(dest="command", metavar="{list,compare,report}")
    commands.required = True
    commands.add_parser("list", help="list the cases with a one-line description")
    run = commands.add_parser(
        "compare",
        help="run a case's methods and write tables, figures and a report",
        description="Run a case's methods, print the methods table, write a report.",
    )
    run.add_argument(
        "case", metavar="CASE|FILE.py", help="a case name (see 'vilab list') or a model file"
    )
    run.add_argument(
        "--methods",
        metavar="M1,M2,...",
        help="comma-separated methods (default: all of the case's but nuts-pyro): "
        "nuts, nuts-pyro, svi-normal, svi-mvn, svi-iaf, svi-guide",
    )
    run.add_argument("--quick", action="store_true", help="small budgets (< 60 s per case)")
    run.add_argument("--seed", type=_seed, default=0, metavar="N", help="seed (default 0)")
    run.add_argument(
        "--out", metavar="DIR", help="output directory (default runs/<case>-<timestamp>)"
    )
    run.add_argument("--force", action="store_true", help="write into a non-empty DIR")
    run.add_argument("--no-progress", action="store_true", help="no progress bars")
    vae = run.add_argument_group("training (case vae)")
    vae.add_argument("--epochs", type=_positive, metavar="N", help="epochs (default 100)")
    vae.add_argument("--batch-size", type=_positive, metavar="N", help="images a step (128)")
    vae.add_argument("--latent-size", type=_positive, metavar="N", help="z's size (default 8)")
    vae.add_argument(
        "--hidden", type=_sizes, metavar="N[,N...]", help="hidden layer widths (default 256)"
    )
    vae.add_argument("--elbo", choices=("meanfield", "trace"), help="the loss (meanfield)")
    vae.add_argument("--data-dir", metavar="DIR", help="MNIST-style IDX files instead of digits")
    vae.add_argument("--checkpoint", metavar="PATH", help="write the training's checkpoints here")
    vae.add_argument("--resume", action="store_true", help="continue from --checkpoint")
    vae.add_argument("--device", metavar="cpu|cuda", help="train on this device (default cpu)")
    vae.add_argument("--lightning", action="store_true", help="train with PyTorch Lightning")
    vae.add_argument(
        "--processes", type=_positive, metavar="N", help="Lightning DDP processes (default 1)"
    )
    rebuild = commands.add_parser(
        "report",
        help="rebuild the figures and report.html of a run from its saved files",
        epilog=EPILOG,
    )
    rebuild.add_argument("dir", metavar="DIR", help="the directory of a 'vilab compare' run")
    return parser


def _say(message: str) -> None:
    print(f"vilab: {message}", file=sys.stderr, flush=True)


def _one_line(err: BaseException) -> str:
    text = " ".join(str(err).split()) or "(no message)"
    return f"{type(err).__name__}: {text}"


def _methods(text: str | None, case) -> tuple[str, ...]:
    if text is None:
        return case.default_methods
    valid = ", ".join(case.methods)
    chosen = [m.strip() for m in text.split(",") if m.strip()]
    if not chosen:
        raise UsageError(f"--methods is empty; choose from: {valid}")
    unknown = [m for m in chosen if m not in case.methods]
    if unknown:
        raise UsageError(f"unknown method {unknown[0]!r} for {case.name}; choose from: {valid}")
    return tuple(dict.fromkeys(chosen))


def _out_dir(text: str | None, case_name: str, force: bool) -> Path:
    if text is None:
        stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
        out = Path("runs") / f"{case_name}-{stamp}"
    else:
        out = Path(text)
    if out.exists() and not out.is_dir():
        raise UsageError(f"--out {str(out)!r} exists and is not a directory")
    if out.is_dir() and any(out.iterdir()) and not force:
        raise UsageError(f"--out {str(out)!r} exists and is not empty; add --force to write there")
    try:  # fail now, not after the runs
        out.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise UsageError(f"cannot create --out {str(out)!r}: {err.strerror}") from None
    return out


def _command_list() -> int:
    from inference.lab.catalog import CASES

    width = max(len(n) for n in CASES)
    for name, description in CASES.items():
        print(f"{name:<{width}}  {description}")
    return EXIT_OK


def _command_report(args) -> int:
    import matplotlib

    matplotlib.use("Agg")
    from inference.lab.report import is_run, rebuild

    if not is_run(args.dir):
        raise UsageError(f"{args.dir!r} is not the directory of a vilab run")
    print(f"wrote {rebuild(args.dir)}")
    return EXIT_OK


@contextlib.contextmanager
def _quiet_warnings():
    """Show each warning as one line on stderr, once per place it comes from."""
    original = warnings.showwarning

    def show(message, category, filename, lineno, file=None, line=None):
        _say(f"warning: {category.__name__}: {' '.join(str(message).split())}")

    with warnings.catch_warnings():
        warnings.simplefilter("default")
        warnings.filterwarnings("ignore", message=".*torch.jit.trace", category=FutureWarning)
        warnings.showwarning = show
        try:
            yield
        finally:
            warnings.showwarning = original


def _run_methods(case, methods, args, progress: bool):
    """Run each method; returns (results, trees, failed, interrupted)."""
    from inference.lab.cases import method_datatree, run_method

    results, trees, failed = {}, {}, {}
    for i, method in enumerate(methods, 1):
        if progress:
            _say(f"[{i}/{len(methods)}] {method}")
        start = time.perf_counter()
        try:
            result = run_method(case, method, args.quick, args.seed, progress)
            trees[method] = method_datatree(case, method, result, args.quick, args.seed)
            results[method] = result
        except KeyboardInterrupt:
            return results, trees, failed, True
        except Exception as err:
            failed[method] = _one_line(err)
            _say(f"method {method} failed: {failed[method]}")
            continue
        if progress:
            _say(f"[{i}/{len(methods)}] {method} done in {time.perf_counter() - start:.1f} s")
    return results, trees, failed, False


METHOD_FORMATS = {
    "elapsed_s": "{:.1f}",
    "elbo": "{:.3f}",
    "kl_gap": "{:.3g}",
    "khat": "{:.2f}",
    "divergences": "{:d}",
    "min_ess_bulk": "{:.0f}",
    "max_r_hat": "{:.3f}",
    "ess_bulk_per_s": "{:.3g}",
    "num_steps": "{:d}",
    "test_elbo_per_image": "{:.3f}",
    "approximation_gap": "{:.3f}",
    "amortization_gap": "{:.3f}",
}


def _print_tables(methods_df, parameters_df) -> None:
    from inference.lab.report import compact_table

    shown = ["method"] + [
        c for c in (*METHOD_FORMATS, "converged") if c in methods_df and methods_df[c].notna().any()
    ]
    table = methods_df[shown].astype(object)
    for column, fmt in METHOD_FORMATS.items():
        if column in table:
            table[column] = [
                "-" if _missing(v) else fmt.format(int(v) if "d" in fmt else v)
                for v in table[column]
            ]
    if "converged" in table:
        table["converged"] = ["-" if _missing(v) else str(bool(v)) for v in table["converged"]]
    print(table.to_string(index=False))
    print()
    print(compact_table(parameters_df).to_string())


def _missing(value) -> bool:
    import pandas as pd

    return value is None or bool(pd.isna(value))


def _write(case, out, results, trees, failed, settings) -> bool:
    """Write every output and print the tables; False when a figure could not be drawn."""
    from inference.lab.report import write_run

    write_run(out, case.subject, results, trees, failed=failed, settings=settings)
    import pandas as pd

    methods_df, parameters_df = (
        pd.read_csv(out / "methods.csv"),
        pd.read_csv(out / "parameters.csv"),
    )
    _print_tables(methods_df, parameters_df)
    figures_failed = {k: v for k, v in json_failed(out).items() if k.startswith("figure ")}
    for name, error in figures_failed.items():
        _say(f"{name} failed: {error}")
    return not figures_failed


def json_failed(out) -> dict:
    """The failures a run recorded in its ``run.json``."""
    import json

    from inference.lab.report import RUN_FILE

    return json.loads((out / RUN_FILE).read_text(encoding="utf-8"))["failed"]


def _command_compare(args) -> int:
    case = _case(args)
    methods = _methods(args.methods, case)
    out = _out_dir(args.out, case.name, args.force)
    progress = not args.no_progress and sys.stderr.isatty()

    import matplotlib

    matplotlib.use("Agg")
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(TORCH_THREADS)
    try:
        results, trees, failed, interrupted = _run_methods(case, methods, args, progress)
        if not results:
            with contextlib.suppress(OSError):
                out.rmdir()  # only if still empty
            if interrupted:
                _say("interrupted before any method finished; nothing written")
                return EXIT_INTERRUPTED
            _say("every method failed; nothing written")
            return EXIT_FAILED
        settings = {
            "budget": "quick" if args.quick else "full",
            "seed": args.seed,
            "methods": ", ".join(trees),
            "command": args.command_line,
        }
        if interrupted:
            settings["interrupted"] = "yes: only the methods above finished"
        try:
            figures_ok = _write(case, out, results, trees, failed, settings)
        except KeyboardInterrupt:
            _say(f"interrupted while writing {out}; its contents may be incomplete")
            return EXIT_INTERRUPTED
        except Exception as err:
            _say(f"writing the report to {out} failed: {_one_line(err)}")
            return EXIT_FAILED
    finally:
        torch.set_num_threads(threads)
    print(f"\nwrote {out}/report.html")
    if interrupted:
        _say(f"interrupted; wrote what finished ({', '.join(trees)}) to {out}")
        return EXIT_INTERRUPTED
    return EXIT_FAILED if failed or not figures_ok else EXIT_OK


def main(argv: list[str] | None = None) -> int:
    """Run ``vilab`` with ``argv`` (default: ``sys.argv[1:]``); returns the exit code."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
        args.command_line = shlex.join(["vilab", *(sys.argv[1:] if argv is None else argv)])
        with _quiet_warnings():
            if args.command == "list":
                return _command_list()
            if args.command == "report":
                return _command_report(args)
            return _command_compare(args)
    except UsageError as err:
        _say(f"error: {err}")
        return EXIT_USAGE
    except SystemExit as done:  # --help
        return done.code if isinstance(done.code, int) else EXIT_OK
    except KeyboardInterrupt:
        _say("interrupted")
        return EXIT_INTERRUPTED
    except Exception as err:
        if os.environ.get("VILAB_TRACEBACK"):
            raise
        _say(f"internal error: {_one_line(err)} (VILAB_TRACEBACK=1 shows where)")
        return EXIT_FAILED


if __name__ == "__main__":
    sys.exit(main())
