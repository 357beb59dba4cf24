"""Smoke test of ``benchmarks/``: it imports without NumPyro and its vilab parts run small.

The benchmarks are measurements, not tests: nothing here checks a speed. It checks
that the code runs (every NUTS row of every model, the cold-process one included, at a
tiny budget), that the package does not need NumPyro to import, that the two measuring
instruments it adds (the eight-schools log density behind its ELBO estimator, and the
snapshots it reads out of ``fit_svi``) agree with vilab itself, and that the
benchmark-only models are what they claim (the mixture sums out its assignments, the
regression is badly scaled).
"""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyro
import pytest
import torch
from pyro import poutine

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:  # benchmarks/ is not an installed package
    sys.path.insert(0, str(ROOT))

from benchmarks import (  # noqa: E402
    cli,
    cold,
    measures,
    mixture,
    mixture_scaling,
    mixture_seeds,
    regression,
    report,
    svi,
    workload,
)
from benchmarks.cases import CASES, EIGHT_SCHOOLS  # noqa: E402
from benchmarks.data import arrays, noncentered  # noqa: E402
from inference import fit_svi  # noqa: E402


def test_imports_without_numpyro():
    code = (
        "import sys\n"
        "sys.modules['numpyro'] = None\n"  # makes `import numpyro` fail
        "sys.modules['jax'] = None\n"
        "import benchmarks, benchmarks.cli, benchmarks.nuts, benchmarks.svi, benchmarks.report\n"
        "import benchmarks.cases, benchmarks.cold, benchmarks.mixture, benchmarks.regression\n"
        "import benchmarks.workload, benchmarks.mixture_seeds, benchmarks.mixture_scaling\n"
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


def test_min_bulk_ess_labels_every_scalar():
    rng = np.random.default_rng(0)
    draws = {"a": rng.normal(size=(1, 50)), "b": rng.normal(size=(1, 50, 3))}
    low, by_label = measures.min_bulk_ess(draws)
    assert list(by_label) == ["a", "b[0]", "b[1]", "b[2]"]
    assert low == min(by_label.values()) > 0


def test_mixture_sums_out_the_assignments():
    """The enumerated Pyro model's density is the two-component mixture's, by hand."""
    (x,) = mixture.arrays()
    assert x.shape == (mixture.N,) and torch.equal(x, mixture.arrays()[0])  # fixed seed
    values = {
        "weights": torch.tensor([0.4, 0.6], dtype=torch.float64),
        "locs": torch.tensor([-0.5, 1.5], dtype=torch.float64),
        "scale": torch.tensor(1.2, dtype=torch.float64),
    }
    model = poutine.condition(mixture.mixture, values)
    trace = poutine.trace(poutine.enum(model, first_available_dim=-2)).get_trace(x)
    observed = trace.nodes["x"]["fn"].log_prob(x)  # (2, N): one row per component
    prior_z = trace.nodes["z"]["fn"].log_prob(trace.nodes["z"]["value"])
    by_enum = torch.logsumexp(observed + prior_z, dim=0).sum()
    components = torch.distributions.Normal(values["locs"], values["scale"])
    by_hand = torch.logsumexp(components.log_prob(x[:, None]) + values["weights"].log(), -1)
    torch.testing.assert_close(by_enum, by_hand.sum())


def test_regression_is_badly_scaled():
    x, y = regression.arrays()
    assert x.shape == (regression.N, regression.P) and y.shape == (regression.N,)
    scales = x.std(0)
    assert scales.max() / scales.min() > 1e3
    corr = np.corrcoef(x.numpy(), rowvar=False)
    assert corr[np.triu_indices(regression.P, 1)].min() > 0.8


def test_vilab_parts_run_and_report(tmp_path):
    pyro.clear_param_store()
    nuts_runs, svi_runs = cli.run_vilab(cli.TINY, seed=0, log=lambda message: None)
    nuts = report.nuts_table([run.summary() for run in nuts_runs])
    fits = report.svi_table(svi.summarise(svi_runs))
    assert "error" not in nuts.columns, nuts.get("error")
    # Eight schools: compiled with an empty cache (cold), compiled and traced (cold and
    # warm), the Pyro backend, the warm start, plain Pyro; the mixture and the regression:
    # compiled, traced, the Pyro backend.
    assert len(nuts) == 14 and len(fits) == 3
    assert set(nuts["model"]) == set(CASES)
    assert (nuts["min_ess_bulk"] > 0).all() and (nuts["wall_s"] > 0).all()
    assert (fits["num_steps"] <= cli.TINY.svi_steps).all()
    fresh = [*cold.labels(True, empty_cache=True)[:1], *cold.labels(True), *cold.labels(False)]
    processes = nuts[nuts["method"].isin(fresh)]
    assert len(processes) == 5 and (processes["import_s"] > 0).all()
    potentials = nuts.set_index("method")["potential"]
    assert potentials[cold.labels(True, empty_cache=True)[0]] == "compiled"
    assert potentials[cold.labels(False)[0]] == "traced"
    runs = workload.run_workload(num_samples=5, warmup_steps=5, num_chains=1)
    assert [r["regression"] for r in runs["runs"]] == ["kidiq", "earnings", "mesquite", "wells"]
    assert runs["total_s"] == pytest.approx(sum(r["wall_s"] for r in runs["runs"]))
    seeds = mixture_seeds.run_seeds(5, 5, with_numpyro=False, seeds=(0, 1))
    assert [r["seed"] for r in seeds["runs"]] == [0, 1] and np.isnan(seeds["vilab_vs_numpyro"])
    verdict = report.goals(nuts, fits, runs["total_s"], seeds)
    assert verdict["nuts_goal_met"] is None and verdict["svi_goal_met"] is None
    assert [g["met"] is None for g in verdict["nuts_goals"]] == [True] * 4 + [False]
    ess_over = {case.name: case.ess_over for case in CASES.values()}
    text = report.render(nuts, fits, verdict, ess_over, runs, seeds)
    assert "stayed in the merged mode" in text
    assert "vilab run_nuts, backend pyro, jit on" in text and "not measured" in text
    assert all(f"NUTS on {name}" in text for name in CASES) and "all four" in text
    out = tmp_path / "results.json"
    extra = {"workload": runs, "mixture_seeds": seeds}
    report.write_json(out, {"machine": "test"}, {"mode": "tiny"}, nuts, fits, verdict, extra)
    saved = json.loads(out.read_text())
    assert set(saved) == {
        "machine",
        "settings",
        "nuts",
        "svi",
        "workload",
        "mixture_seeds",
        "goals",
    }
    assert len(saved["nuts"]) == 14


def test_workload_regressions_are_fixed_and_shaped_as_described():
    first, second = workload.datasets(), workload.datasets()
    shapes = {name: tuple(x.shape) for name, (_, x, _) in first.items()}
    assert shapes == {
        "kidiq": (434, 2),
        "earnings": (1059, 1),
        "mesquite": (46, 6),
        "wells": (3020, 2),
    }
    for name, (_, x, y) in first.items():
        assert torch.equal(x, second[name][1]) and torch.equal(y, second[name][2])
    assert set(first["wells"][2].unique().tolist()) == {0.0, 1.0}


def test_ratios_are_per_model():
    records = [
        {"model": "m", "method": "vilab x", "ess_per_s": 2.0, "ess_per_cpu_s": 2.0},
        {
            "model": "m",
            "method": f"NumPyro NUTS, a, {report.NUMPYRO_COMPILED}",
            "ess_per_s": 4.0,
            "ess_per_cpu_s": 4.0,
        },
        {"model": "n", "method": "vilab x", "ess_per_s": 3.0, "ess_per_cpu_s": 3.0},
        {
            "model": "n",
            "method": f"NumPyro NUTS, b, {report.NUMPYRO_COMPILED}",
            "ess_per_s": 1.0,
            "ess_per_cpu_s": 1.0,
        },
    ]
    frame = report.nuts_table(records)
    assert frame["ess_per_s_vs_numpyro"].tolist() == [0.5, 1.0, 3.0, 1.0]


def test_a_failing_run_becomes_a_row():
    def broken():
        raise RuntimeError("no luck\nmore")

    runs = cli._run_nuts_all([(EIGHT_SCHOOLS, "broken", broken)], log=lambda message: None)
    frame = report.nuts_table([run.summary() for run in runs])
    assert frame["error"].tolist() == ["RuntimeError: no luck"]
    assert "no luck" in report.markdown(frame, report.NUTS_COLUMNS)


def test_mixture_scaling_runs_small_and_reports(tmp_path):
    """Every method of the scaling study at tiny sizes, in this process (the full study
    starts one process per method); the table, the goals, the figure and results.json."""
    figure = tmp_path / "scaling.png"
    study = mixture_scaling.run_study(mixture_scaling.TINY, figure=figure, log=lambda m: None)
    frame = report.scaling_table(study["records"])
    plan = mixture_scaling.TINY
    expected = {
        mixture_scaling.EM: len(plan.sizes),
        mixture_scaling.SKLEARN: len(plan.sizes),
        mixture_scaling.SVI_FULL: len(plan.sizes),
        mixture_scaling.SVI_MINI: len(plan.sizes),
        mixture_scaling.SVI_MEMMAP: len(plan.memmap_sizes),
        mixture_scaling.NUTS: 1,
    }
    assert frame["method"].value_counts().to_dict() == expected
    assert (frame["per_unit_s"] > 0).all() and figure.stat().st_size > 0
    em = frame[frame["method"] == mixture_scaling.EM]
    assert em["converged"].all() and (em["gap_nats"] == 0).all()
    sklearn = frame[frame["method"] == mixture_scaling.SKLEARN]
    assert (sklearn["gap_nats"].abs() < 1e-6).all()  # the same optimum from the same start
    fed = frame[frame["method"] == mixture_scaling.SVI_MINI]
    assert fed["batch"].tolist() == [plan.batch] * len(plan.sizes)
    assert [g["met"] for g in study["goals"]] == [None] * 3  # 1e4, 1e6, 1e7 not run
    text = report.render_scaling(study)
    assert "not measured" in text and mixture_scaling.SVI_MEMMAP in text
    out = tmp_path / "results.json"
    out.write_text(json.dumps({"nuts": []}))
    mixture_scaling.write_results(study, out, {"machine": "test"})
    saved = json.loads(out.read_text())
    assert saved["nuts"] == [] and len(saved["mixture_scaling"]["records"]) == len(frame)
    assert len(saved["goals"]["mixture_scaling_goals"]) == 3


def test_the_epoch_start_steps_are_those_that_draw_a_permutation(monkeypatch):
    """The steps the per-step mean leaves out are those whose minibatch draws an epoch."""
    from inference.svi.batches import EpochSampler

    size, batch = 1003, 100
    drawn, randperm = [], torch.randperm
    monkeypatch.setattr(torch, "randperm", lambda *a, **k: drawn.append(1) or randperm(*a, **k))
    sampler, drew = EpochSampler(size, batch, seed=0), []
    for _ in range(40):
        before = len(drawn)
        sampler.next()
        drew.append(len(drawn) > before)
    expected = mixture_scaling._epoch_starts(np.arange(1, 40), batch, size)
    assert drew[0] and np.array_equal(np.asarray(drew[1:]), expected)


def test_vae_benchmark_runs_small_and_reports():
    """Every trainer of the VAE benchmark for one epoch: rows, ratios, the IWAE timing."""
    from benchmarks import vae

    study = vae.run_study(vae.TINY)
    names = [r["trainer"] for r in study["rows"]]
    assert names[0] == "plain PyTorch" and len(names) == 4
    assert study["rows"][0]["ratio_to_plain"] == 1.0
    assert all(r["seconds_per_epoch"] > 0 for r in study["rows"])
    # One epoch of the same network, loss and data: far from trained, and alike.
    elbos = [r["test_elbo_per_image"] for r in study["rows"]]
    assert max(elbos) - min(elbos) < 3.0 and max(elbos) < -24
    assert (
        study["iwae"]["images"] == 360 and study["iwae"]["mean_iwae"] >= study["iwae"]["mean_elbo"]
    )
    assert "goal" in vae.render(study)
