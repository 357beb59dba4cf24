"""The report for any model: ``report(...)`` from Python, ``vilab compare FILE.py``,
``vilab report DIR``, and the command line's edges."""

import json
import subprocess
import sys
import textwrap

import pandas as pd
import pyro
import pyro.distributions as dist
import pytest
import torch

from inference import fit_svi, report, run_nuts
from inference.lab import cli
from inference.lab.report import verdict_class

MODEL_FILE = textwrap.dedent(
    '''
    """A regression the package does not ship: a slope and an intercept."""
    import pyro, pyro.distributions as dist, torch

    def model(x, y):
        a = pyro.sample("a", dist.Normal(0.0, 10.0))
        b = pyro.sample("b", dist.Normal(0.0, 10.0))
        with pyro.plate("data", len(y)):
            pyro.sample("y", dist.Normal(a + b * x, 1.0), obs=y)

    def data():
        g = torch.Generator().manual_seed(0)
        x = torch.linspace(-1, 1, 40)
        return x, 0.5 + 2.0 * x + torch.randn(40, generator=g)

    reference = {"a": (0.0, 1.0)}
    '''
)


def _model(x, y):
    a = pyro.sample("a", dist.Normal(0.0, 10.0))
    with pyro.plate("data", len(y)):
        pyro.sample("y", dist.Normal(a + x, 1.0), obs=y)


def test_report_writes_every_file_for_a_users_model(tmp_path):
    x = torch.linspace(-1, 1, 30)
    y = x + 0.3 + torch.randn(30, generator=torch.Generator().manual_seed(1))
    fit = fit_svi(_model, "mvn", x, y, num_steps=300)
    mc = run_nuts(_model, x, y, num_chains=1, num_samples=100, warmup_steps=100)
    path = report(
        {"nuts": mc, "svi-mvn": fit},
        out=tmp_path,
        reference={"a": (0.3, 0.18)},
        title="my regression",
    )
    assert path == tmp_path / "report.html" and path.is_file()
    methods = pd.read_csv(tmp_path / "methods.csv")
    params = pd.read_csv(tmp_path / "parameters.csv")
    assert list(methods["method"]) == ["nuts", "svi-mvn"]
    assert methods.loc[1, "khat"] < 0.7  # a Gaussian posterior, fitted by a Gaussian
    assert {"ref_mean", "ref_sd", "z_mean", "sd_ratio"} <= set(params.columns)
    assert (tmp_path / "nuts.nc").is_file() and (tmp_path / "svi-mvn.nc").is_file()
    assert (tmp_path / "figures" / "elbo.png").is_file()
    page = path.read_text(encoding="utf-8")
    assert "my regression" in page and "class='good'" in page


def _write_model(tmp_path, text=MODEL_FILE):
    path = tmp_path / "mine.py"
    path.write_text(text)
    return path


@pytest.mark.slow
def test_compare_a_model_file_then_rebuild_its_report_from_the_files(tmp_path):
    model = _write_model(tmp_path)
    out = tmp_path / "run"
    argv = ["compare", str(model), "--quick", "--methods", "svi-mvn,svi-normal"]
    assert cli.main(argv + ["--out", str(out), "--no-progress"]) == 0
    methods = pd.read_csv(out / "methods.csv")
    params = pd.read_csv(out / "parameters.csv")
    assert set(methods["case"]) == {"mine"} and list(methods["method"]) == argv[4].split(",")
    assert params.set_index(["method", "parameter"]).loc[("svi-mvn", "a"), "ref_mean"] == 0.0
    before = (out / "report.html").read_text(encoding="utf-8")
    (out / "report.html").unlink()
    for png in (out / "figures").glob("*.png"):
        png.unlink()
    assert cli.main(["report", str(out)]) == 0
    after = (out / "report.html").read_text(encoding="utf-8")
    pd.testing.assert_frame_equal(pd.read_csv(out / "methods.csv"), methods)
    assert {"elbo.png", "forest.png", "marginals.png"} <= {
        p.name for p in (out / "figures").glob("*.png")
    }
    # Same tables in the page (the timestamp line differs).
    assert (
        before.split("<h2>Methods</h2>")[1].split("<h2>Figures")[0]
        == after.split("<h2>Methods</h2>")[1].split("<h2>Figures")[0]
    )


@pytest.mark.parametrize(
    "text, words",
    [
        (None, "no model file"),
        ("import nonexistent_module_xyz\n", "cannot be imported"),
        ("def model():\n    pass\n", "defines no data()"),
    ],
    ids=["missing", "import-error", "no-data"],
)
def test_a_bad_model_file_is_one_line_and_exit_2(tmp_path, capsys, text, words):
    path = tmp_path / "absent.py" if text is None else _write_model(tmp_path, text)
    assert cli.main(["compare", str(path), "--quick", "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert len(err.splitlines()) == 1 and words in err, err


def test_report_of_a_directory_that_is_not_a_run_is_a_usage_error(tmp_path, capsys):
    assert cli.main(["report", str(tmp_path)]) == 2
    assert "not the directory of a vilab run" in capsys.readouterr().err


@pytest.mark.parametrize("seed", ["99999999999999999999", str(2**32)])
def test_a_seed_out_of_range_is_a_usage_error(seed, capsys):
    assert cli.main(["compare", "normal", "--seed", seed]) == 2
    assert "must be an integer from 0 to 4294967295" in capsys.readouterr().err


def test_version_and_help_name_the_exit_codes(capsys):
    assert cli.main(["--version"]) == 0
    assert capsys.readouterr().out.startswith("vilab ")
    assert cli.main(["--help"]) == 0
    assert "130 interrupted" in " ".join(capsys.readouterr().out.split())


def test_list_imports_neither_torch_nor_pyro():
    code = (
        "import sys; from inference.lab import cli; cli.main(['list']); "
        "print(sorted(m for m in ('torch', 'pyro', 'arviz') if m in sys.modules))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().splitlines()[-1] == "[]"


@pytest.mark.slow
def test_force_replaces_only_what_vilab_writes(tmp_path):
    model = _write_model(tmp_path)
    out = tmp_path / "run"
    (out / "figures").mkdir(parents=True)
    (out / "figures" / "my_own_plot.png").write_bytes(b"mine")
    (out / "notes.txt").write_text("mine")
    argv = ["compare", str(model), "--quick", "--methods", "svi-normal", "--force"]
    assert cli.main(argv + ["--out", str(out), "--no-progress"]) == 0
    assert (out / "figures" / "my_own_plot.png").read_bytes() == b"mine"
    assert (out / "notes.txt").read_text() == "mine"
    assert json.loads((out / "run.json").read_text())["name"] == "mine"


@pytest.mark.parametrize(
    "column, value, expected",
    [("z_mean", 0.05, "good"), ("z_mean", -0.2, "ok"), ("z_mean", 0.5, "bad"),
     ("sd_ratio", 1.05, "good"), ("sd_ratio", 0.75, "ok"), ("sd_ratio", 0.5, "bad"),
     ("khat", 0.3, "good"), ("khat", 0.6, "ok"), ("khat", 0.9, "bad"),
     ("divergences", 0, "good"), ("divergences", 3, "bad"), ("min_ess_bulk", 50, "bad"),
     ("elbo", 1.0, ""), ("khat", float("nan"), "")],
)  # fmt: skip
def test_verdict_bands(column, value, expected):
    assert verdict_class(column, value) == expected
