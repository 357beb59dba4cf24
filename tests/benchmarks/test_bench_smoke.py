"""Smoke test of ``benchmarks/``: it imports without NumPyro and its vilab parts run small.

The benchmarks are measurements, not tests: nothing here checks a speed. It checks
that the code runs, that the package does not need NumPyro to import, and that the
two measuring instruments it adds (the eight-schools log density behind its ELBO
estimator, and the snapshots it reads out of ``fit_svi``) agree with vilab itself.
"""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyro
import torch
from pyro import poutine

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:  # benchmarks/ is not an installed package
    sys.path.insert(0, str(ROOT))

from benchmarks import cli, measures, report, svi  # noqa: E402
from benchmarks.data import arrays, noncentered  # noqa: E402
from inference import fit_svi  # noqa: E402


def test_imports_without_numpyro():
    code = (
        "import sys\n"
        "sys.modules['numpyro'] = None\n"  # makes `import numpyro` fail
        "sys.modules['jax'] = None\n"
        "import benchmarks, benchmarks.cli, benchmarks.nuts, benchmarks.svi, benchmarks.report\n"
        "assert not benchmarks.cli.numpyro_available()\n"
    )
    subprocess.run([sys.executable, "-c", code], cwd=ROOT, check=True, timeout=120)


def test_log_joint_matches_pyro_model():
    y, sigma = arrays()
    x = np.random.default_rng(1).normal(size=(5, 10))
    expected = []
    for row in torch.as_tensor(x):
        values = {"mu": row[0], "tau": row[1].exp(), "eta": row[2:]}
        trace = poutine.trace(poutine.condition(noncentered, values)).get_trace(y, sigma)
        expected.append(float(trace.log_prob_sum()) + float(row[1]))  # + log|d tau / d log tau|
    found = measures.log_joint(x, y.numpy(), sigma.numpy())
    np.testing.assert_allclose(found, expected, rtol=1e-10)


def test_vilab_snapshots_match_fit():
    run = svi.run_vilab_svi(40, seed=3)
    y, sigma = arrays()
    fit = fit_svi(noncentered, "mvn", y, sigma, num_steps=40, seed=3)
    assert run.steps[-1] == fit.num_steps
    np.testing.assert_allclose(run.losses, fit.losses)
    mu = fit.to_datatree(num_samples=4000, seed=0).posterior["mu"].values
    tolerance = 5 * mu.std() / np.sqrt(mu.size)
    assert abs(mu.mean() - run.loc[-1, 0]) < tolerance
    cov = run.scale_tril[-1] @ run.scale_tril[-1].T
    assert abs(mu.std() - np.sqrt(cov[0, 0])) < 0.1 * np.sqrt(cov[0, 0])


def test_vilab_parts_run_and_report(tmp_path):
    pyro.clear_param_store()
    nuts_runs, svi_runs = cli.run_vilab(cli.TINY, seed=0, log=lambda message: None)
    nuts = report.nuts_table([run.summary() for run in nuts_runs])
    fits = report.svi_table(svi.summarise(svi_runs))
    assert len(nuts) == 4 and len(fits) == 3
    assert (nuts["min_ess_bulk"] > 0).all() and (nuts["wall_s"] > 0).all()
    assert (fits["num_steps"] <= cli.TINY.svi_steps).all()
    verdict = report.goals(nuts, fits)
    assert verdict["nuts_goal_met"] is None and verdict["svi_goal_met"] is None
    text = report.render(nuts, fits, verdict)
    assert "vilab run_nuts, jit on" in text and "not measured" in text
    out = tmp_path / "results.json"
    report.write_json(out, {"machine": "test"}, {"mode": "tiny"}, nuts, fits, verdict)
    saved = json.loads(out.read_text())
    assert set(saved) == {"machine", "settings", "nuts", "svi", "goals"}
    assert len(saved["nuts"]) == 4
