"""Smoke tests of the ``vilab`` command line, run as a user runs it: in a subprocess.

Every case runs once with ``--quick`` (all three at the same time: each run is
single-threaded) in a module-scoped fixture; the tests then read its outputs.
"""

import os
import subprocess
import sys
import time

import numpy as np
import pandas as pd
import pytest
import xarray as xr

from inference.lab import cli
from inference.lab.cases import METHODS, case_names, get_case
from inference.lab.catalog import MIXTURE_METHODS, VAE_METHODS
from inference.lab.report import METHOD_COLUMNS, PARAMETER_COLUMNS

TIMEOUT_S = 600


def vilab(*args, cwd=None, timeout=TIMEOUT_S) -> subprocess.CompletedProcess:
    """Run ``python -m inference ARGS`` and capture its output."""
    return subprocess.run(
        [sys.executable, "-m", "inference", *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        timeout=timeout,
    )


def error_lines(proc) -> list[str]:
    return [line for line in proc.stderr.splitlines() if "warning:" not in line]


def _run_all(commands: dict, deadline: float) -> dict:
    """Run the commands, as many at a time as there are cores; ``name -> (code, CPU s)``.

    ``os.wait4`` gives each child's own CPU time (user + system), which, unlike its wall
    time, does not grow when other work shares the cores; no more processes than cores
    run at once, so that they do not inflate each other's CPU time either.
    """
    waiting, running, done = dict(commands), {}, {}
    slots = os.cpu_count() or 1
    while waiting or running:
        while waiting and len(running) < slots:
            name, start = waiting.popitem()
            running[name] = start()
        for name, proc in list(running.items()):
            pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
            if pid:
                proc.returncode = os.waitstatus_to_exitcode(status)
                done[name] = (proc.returncode, usage.ru_utime + usage.ru_stime)
                del running[name]
        if time.monotonic() > deadline:
            for proc in running.values():
                proc.kill()
            raise TimeoutError(f"vilab compare did not finish in {TIMEOUT_S} s")
        time.sleep(0.2)
    return done


@pytest.fixture(scope="module")
def quick_runs(tmp_path_factory):
    """``vilab compare CASE --quick`` for every case, as many side by side as cores."""
    root = tmp_path_factory.mktemp("quick")
    commands, files = {}, {}

    def starter(case):
        out, stdout_path, stderr_path = files[case]

        def start():
            with open(stdout_path, "w") as stdout, open(stderr_path, "w") as stderr:
                return subprocess.Popen(
                    [sys.executable, "-m", "inference", "compare", case, "--quick"]
                    + ["--out", str(out), "--no-progress"],
                    stdout=stdout,
                    stderr=stderr,
                    cwd=root,
                )

        return start

    for case in case_names():
        files[case] = (root / case, root / f"{case}.stdout", root / f"{case}.stderr")
        commands[case] = starter(case)
    finished = _run_all(commands, time.monotonic() + TIMEOUT_S)
    return {
        case: dict(
            returncode=finished[case][0],
            cpu_s=finished[case][1],
            out=out,
            stdout=stdout.read_text(),
            stderr=stderr.read_text(),
        )
        for case, (out, stdout, stderr) in files.items()
    }


def test_list_names_every_case_with_a_description():
    proc = vilab("list")
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.strip().splitlines()
    assert [line.split()[0] for line in lines] == list(case_names())
    assert all(len(line.split(maxsplit=1)) == 2 for line in lines)


@pytest.mark.slow
@pytest.mark.parametrize("case", case_names())
def test_quick_compare_writes_every_output(quick_runs, case):
    run = quick_runs[case]
    assert run["returncode"] == 0, run["stderr"]
    assert "Traceback" not in run["stderr"]
    out = run["out"]
    methods = pd.read_csv(out / "methods.csv")
    params = pd.read_csv(out / "parameters.csv")
    assert list(methods.columns[: len(METHOD_COLUMNS)]) == list(METHOD_COLUMNS)
    assert list(params.columns[: len(PARAMETER_COLUMNS)]) == list(PARAMETER_COLUMNS)
    defaults = get_case(case).default_methods
    family = get_case(case).family
    family_methods = {"mixture": MIXTURE_METHODS, "vae": VAE_METHODS}.get(family, METHODS)
    assert (
        list(methods["method"]) == list(defaults) == [m for m in family_methods if m != "nuts-pyro"]
    )
    assert set(methods["case"]) == set(params["case"]) == {case}
    assert np.all(methods["elapsed_s"] > 0)
    for method in defaults:
        assert (out / f"{method}.nc").is_file()
        assert method in run["stdout"]
    figures = sorted(p.name for p in (out / "figures").glob("*.png"))
    page = (out / "report.html").read_text(encoding="utf-8")
    assert page.count('<img src="data:image/png;base64,') == len(figures)
    if family == "vae":
        names = ("training", "reconstructions", "prior_samples", "latent_2d", "posteriors", "gap")
        assert {f"vae_{name}.png" for name in names} == set(figures)
        assert "amortization_gap" in page and "sd_ratio" in page
        return
    assert {"elbo.png", "marginals.png", "forest.png", "nuts_energy.png"} <= set(figures)
    if family == "mixture":
        assert {"clusters.png", "em_svi.png"} <= set(figures)
        assert "mean_loglik" in page
    else:
        assert "kl_gap" in page and "sd_ratio" in page


@pytest.mark.slow
@pytest.mark.parametrize("case", case_names())
def test_quick_compare_fits_in_budget(quick_runs, case):
    # The contract is < 60 s of wall time on two idle cores. A quick run is one thread
    # (nutpie's two chains aside, for a few seconds), so there its wall time is at most
    # about its CPU time, which (unlike wall time) holds on a busy machine too.
    assert quick_runs[case]["cpu_s"] < 60, f"{case}: {quick_runs[case]['cpu_s']:.0f} s of CPU"


@pytest.mark.slow
def test_netcdf_holds_the_arviz_groups(quick_runs):
    out = quick_runs["eight-schools"]["out"]
    nuts = xr.open_datatree(out / "nuts.nc", engine="h5netcdf")
    assert {"posterior", "sample_stats", "log_likelihood", "observed_data"} <= set(nuts.children)
    assert {"diverging", "energy", "tree_depth"} <= set(nuts["sample_stats"].data_vars)
    assert nuts["posterior"]["theta"].dims == ("chain", "draw", "school")
    assert list(nuts["posterior"]["school"].values)[0] == "Choate"
    fit = xr.open_datatree(out / "svi-mvn.nc", engine="h5netcdf")
    assert "sample_stats" not in fit.children
    assert dict(fit["posterior"].sizes)["chain"] == 1
    assert dict(fit["posterior"].sizes)["draw"] == 500


@pytest.mark.slow
def test_quick_nuts_agrees_with_posteriordb(quick_runs):
    # Quick NUTS keeps 300 draws (bulk ESS ~100), so the MCSE of a mean is ~0.1 reference
    # sd: |z_mean| < 0.5 is about 5 MCSE. Each mean must also be within 5 of the run's own
    # MCSEs (plus the reference's), and a sd within 40% (sd's relative error ~1/sqrt(2 ESS)).
    params = pd.read_csv(quick_runs["eight-schools"]["out"] / "parameters.csv")
    nuts = params[params["method"] == "nuts"].set_index("parameter")
    for label in ("mu", "tau"):
        row = nuts.loc[label]
        assert abs(row["z_mean"]) < 0.5, (label, row["z_mean"])
        assert abs(row["mean"] - row["ref_mean"]) < 5 * np.hypot(row["mcse_mean"], 0.05)
        assert 0.6 < row["sd_ratio"] < 1.4, (label, row["sd_ratio"])
    methods = pd.read_csv(quick_runs["eight-schools"]["out"] / "methods.csv")
    nuts_row = methods.set_index("method").loc["nuts"]
    assert nuts_row["divergences"] == 0  # the non-centered model has no funnel
    assert nuts_row["max_r_hat"] < 1.1


@pytest.mark.slow
def test_quick_normal_elbos_lie_below_the_exact_evidence(quick_runs):
    out = quick_runs["normal"]["out"]
    methods = pd.read_csv(out / "methods.csv").set_index("method")
    svi = methods.drop(index="nuts")
    log_evidence = svi["log_evidence"].iloc[0]
    assert np.isfinite(log_evidence)
    assert np.all(svi["elbo"] <= log_evidence + 4 * svi["elbo_mcse"])
    np.testing.assert_allclose(svi["kl_gap"], log_evidence - svi["elbo"])
    params = pd.read_csv(out / "parameters.csv").set_index("method")
    # The Gaussian autoguides hold the exact posterior and start at it (Laplace = exact).
    for method in ("svi-normal", "svi-mvn"):
        assert abs(params.loc[method, "z_mean"]) < 0.2
        assert 0.85 < params.loc[method, "sd_ratio"] < 1.15


@pytest.mark.slow
def test_quick_gmm_rows_are_right(quick_runs):
    """The issue's bars, at the quick budget: EM, SVI-MAP and NUTS find the simulated
    partition (ARI >= 0.95); SVI-MAP reaches MAP-EM's objective (same model, same
    priors) within 1e-3 nats per point; NUTS's chains agree once relabelled."""
    out = quick_runs["gmm"]["out"]
    methods = pd.read_csv(out / "methods.csv").set_index("method")
    for method in ("em", "svi-map", "nuts", "sklearn-em"):
        assert methods.loc[method, "ari"] >= 0.95, method
    assert abs(methods.loc["svi-map", "mean_loglik"] - methods.loc["em", "mean_loglik"]) < 1e-3
    assert methods.loc["nuts", "max_r_hat"] < 1.1
    nuts = methods.loc["nuts"]
    assert nuts["max_r_hat_before_relabel"] >= nuts["max_r_hat"] - 1e-9
    assert (out / "figures" / "nuts_relabel.png").is_file()
    tree = xr.open_datatree(out / "nuts.nc", engine="h5netcdf")
    assert "before_relabel" in tree.children and "assignments" in tree.children


@pytest.mark.slow
def test_quick_gauss_mix_1d_nuts_agrees_with_posteriordb(quick_runs):
    # 2 chains x 200 draws (bulk ESS ~300): |z_mean| < 0.5 is over 5 MCSEs.
    params = pd.read_csv(quick_runs["gauss-mix-1d"]["out"] / "parameters.csv")
    nuts = params[params["method"] == "nuts"].set_index("parameter")
    assert set(nuts.index) == {"mu[1]", "mu[2]", "sigma[1]", "sigma[2]", "theta"}
    assert (nuts["z_mean"].abs() < 0.5).all(), nuts["z_mean"]
    assert ((nuts["sd_ratio"] > 0.7) & (nuts["sd_ratio"] < 1.3)).all(), nuts["sd_ratio"]


@pytest.mark.slow
def test_centered_case_draws_the_funnel(quick_runs):
    out = quick_runs["eight-schools-centered"]["out"]
    assert (out / "figures" / "nuts_funnel.png").is_file()


def test_unknown_case_is_a_usage_error():
    proc = vilab("compare", "no-such-case")
    assert proc.returncode == 2
    lines = error_lines(proc)
    assert len(lines) == 1
    assert all(name in lines[0] for name in case_names())
    assert "Traceback" not in proc.stderr


def test_unknown_method_is_a_usage_error(tmp_path):
    proc = vilab("compare", "normal", "--methods", "nuts,svi-magic", "--out", str(tmp_path / "o"))
    assert proc.returncode == 2
    lines = error_lines(proc)
    assert len(lines) == 1 and "svi-magic" in lines[0]
    assert all(m in lines[0] for m in METHODS)
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize(
    "args",
    [["--seed", "-3"], ["--seed", "x"], ["--methods", ","], ["--bogus"], []],
    ids=["negative-seed", "text-seed", "no-methods", "unknown-option", "no-case"],
)
def test_bad_options_are_one_line_usage_errors(args, capsys):
    # In process: the subprocess path of usage errors is covered above.
    status = cli.main(["compare", *(["normal"] if args else []), *args])
    assert status == 2
    err = capsys.readouterr().err
    assert len(err.splitlines()) == 1 and err.startswith("vilab: error: "), err


def test_non_empty_out_is_refused_without_force(tmp_path):
    (tmp_path / "keep.txt").write_text("precious")
    proc = vilab("compare", "normal", "--quick", "--out", str(tmp_path))
    assert proc.returncode == 2
    lines = error_lines(proc)
    assert len(lines) == 1 and "--force" in lines[0]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["keep.txt"]


@pytest.mark.slow
def test_force_and_a_methods_subset(tmp_path):
    (tmp_path / "keep.txt").write_text("precious")
    proc = vilab(
        "compare", "normal", "--quick", "--methods", "svi-mvn,svi-normal", "--force",
        "--out", str(tmp_path), "--no-progress",
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    methods = pd.read_csv(tmp_path / "methods.csv")
    assert list(methods["method"]) == ["svi-mvn", "svi-normal"]
    assert sorted(p.name for p in tmp_path.glob("*.nc")) == ["svi-mvn.nc", "svi-normal.nc"]
    assert not (tmp_path / "figures" / "nuts_energy.png").exists()
    assert (tmp_path / "keep.txt").read_text() == "precious"


@pytest.mark.slow
def test_pyros_nuts_on_request_cross_checks_nutpie(tmp_path):
    proc = vilab(
        "compare", "normal", "--quick", "--methods", "nuts,nuts-pyro",
        "--out", str(tmp_path), "--no-progress",
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    params = pd.read_csv(tmp_path / "parameters.csv").set_index("method")
    assert list(params.index) == ["nuts", "nuts-pyro"]
    # Both against the exact posterior: each mean within 4 of its own MCSEs.
    for method in params.index:
        row = params.loc[method]
        assert abs(row["z_mean"]) * row["ref_sd"] < 4 * row["mcse_mean"], (method, row)
    backends = {m: xr.open_datatree(tmp_path / f"{m}.nc").posterior.attrs["backend"]
                for m in params.index}  # fmt: skip
    assert backends == {"nuts": "nutpie", "nuts-pyro": "pyro"}


def _fake_run_method(fail: str, error: BaseException):
    from inference.lab import cases

    real = cases.run_method

    def run(case, method, *args, **kwargs):
        if method == fail:
            raise error
        return real(case, method, *args, **kwargs)

    return run


@pytest.mark.parametrize(
    "error, code, message",
    [(RuntimeError("boom\nsecond line"), 1, "svi-mvn"), (KeyboardInterrupt(), 130, "interrupt")],
    ids=["failure", "ctrl-c"],
)
def test_a_failed_or_interrupted_method_keeps_what_finished(
    tmp_path, monkeypatch, capsys, error, code, message
):
    from inference.lab import cases

    monkeypatch.setattr(cases, "run_method", _fake_run_method("svi-mvn", error))
    out = tmp_path / "run"
    argv = ["compare", "normal", "--quick", "--methods", "svi-normal,svi-mvn,svi-guide"]
    status = cli.main(argv + ["--out", str(out), "--no-progress"])
    assert status == code
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if "warning:" not in line]
    assert len(lines) == 1 and message in lines[0], err
    assert "Traceback" not in err
    written = sorted(p.name for p in out.glob("*.nc"))
    assert written == (["svi-guide.nc", "svi-normal.nc"] if code == 1 else ["svi-normal.nc"])
    assert (out / "report.html").is_file()


@pytest.mark.slow
@pytest.mark.parametrize("case", ["normal", "eight-schools"])
def test_quick_rows_are_answers_a_user_can_read_as_right(quick_runs, case):
    # The full run's bars: |z_mean| < 0.3 and sd_ratio 0.7-1.3 against the reference. On
    # eight schools the Gaussian families under-disperse tau by their nature (full runs
    # too: sd ratio ~0.7, the mean-field one 0.67), so its lower sd bar is 0.6.
    params = pd.read_csv(quick_runs[case]["out"] / "parameters.csv").dropna(subset=["z_mean"])
    low = 0.7 if case == "normal" else 0.6
    bad = params[(params["z_mean"].abs() >= 0.3) | ~params["sd_ratio"].between(low, 1.3)]
    assert bad.empty, bad[["method", "parameter", "z_mean", "sd_ratio"]].to_string()
