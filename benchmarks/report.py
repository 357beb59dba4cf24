"""Tables, ratios against NumPyro, the issue's goals, and results.json.

Everything here takes the flat records of :meth:`NutsRun.summary` and
:meth:`SviRun.summary` and returns data; :func:`markdown` turns a table into text.
"""

import json
import math
from pathlib import Path

import pandas as pd

from benchmarks.measures import MEAN_TOL, SD_TOL, WINDOW_STEPS

NUMPYRO_NUTS = "NumPyro NUTS, defaults (diag mass), incl. compile"  # eight schools' base
NUMPYRO_NUTS_PREFIX = "NumPyro NUTS"
NUMPYRO_COMPILED = "incl. compile"
GOAL_MODEL = "eight schools"  # the model the cold and warm NUTS goals are about
NUMPYRO_SVI_PREFIX = "NumPyro"
NUTS_GOAL = 0.5  # vilab's ESS/s at least half of NumPyro's (cold; 1x warm)
WORKLOAD_GOAL_S = 60.0  # the four-regression workload's NUTS, in all
SVI_GOAL = 1.0  # vilab's time to answer no more than NumPyro's
EM_SPEED_GOAL = 4.0  # vilab EM's iterations at least 4x as fast as scikit-learn's at 1e6
EM_GOAL_N = 10**6
MINIBATCH_FLAT_GOAL = 1.2  # minibatch SVI's step at 1e7 within 1.2x of its step at 1e4
FLAT_FROM, FLAT_TO = 10**4, 10**7


def _ratio(value: float, base: float | None) -> float:
    if base is None or not base or math.isnan(base):
        return float("nan")
    return value / base


def _numpyro_base(frame: pd.DataFrame, model: str, column: str) -> float | None:
    """``column`` of the model's first NumPyro run that counts its compilation."""
    rows = frame[
        (frame["model"] == model)
        & frame["method"].str.startswith(NUMPYRO_NUTS_PREFIX)
        & frame["method"].str.endswith(NUMPYRO_COMPILED)
    ]
    return float(rows[column].iloc[0]) if len(rows) else None


def nuts_table(records: list[dict]) -> pd.DataFrame:
    """One row per model and NUTS method, ESS/s and its ratios to NumPyro's.

    Each model's ratios divide by the first of its NumPyro runs that counts its
    compilation (eight schools: :data:`NUMPYRO_NUTS`; the mixture: the enumerated one
    when funsor is installed). ``ess_per_s_vs_numpyro`` is on wall-clock time (what
    the goal is about); ``ess_per_cpu_s_vs_numpyro`` on process CPU time, which other
    load on the machine disturbs less.
    """
    frame = pd.DataFrame(records)
    for column in ("ess_per_s", "ess_per_cpu_s"):
        bases = {m: _numpyro_base(frame, m, column) for m in frame["model"].unique()}
        frame[f"{column}_vs_numpyro"] = [
            _ratio(v, bases[m]) for v, m in zip(frame[column], frame["model"], strict=True)
        ]
    return frame


def svi_table(records: list[dict]) -> pd.DataFrame:
    """One row per SVI method, speed and time to answer with ratios to NumPyro's."""
    frame = pd.DataFrame(records)
    numpyro = frame[frame["method"].str.startswith(NUMPYRO_SVI_PREFIX)]
    speed = float(numpyro["steps_per_s"].iloc[0]) if len(numpyro) else None
    answer = float(numpyro["time_to_answer_s"].iloc[0]) if len(numpyro) else None
    frame["steps_per_s_vs_numpyro"] = [_ratio(v, speed) for v in frame["steps_per_s"]]
    frame["time_to_answer_vs_numpyro"] = [_ratio(v, answer) for v in frame["time_to_answer_s"]]
    return frame


def _best(rows: pd.DataFrame, contains: str = "", excludes: str | None = None) -> float:
    """The best ESS/s ratio to NumPyro among vilab's nutpie rows whose label matches."""
    labels = rows["method"]
    keep = labels.str.startswith("vilab run_nuts (nutpie") & labels.str.contains(contains)
    if excludes:
        keep &= ~labels.str.contains(excludes)
    values = rows.loc[keep, "ess_per_s_vs_numpyro"]
    return float(values.max()) if len(values) else float("nan")


def nuts_goals(
    nuts: pd.DataFrame, workload_s: float | None = None, seeds: dict | None = None
) -> list[dict]:
    """The NUTS engine's goals: each a ``goal``, the measured ``value`` and ``met``.

    Eight schools, one chain: a fresh process with Inductor's cache holding the graph
    (as after any earlier run of the model) and with an empty cache (a new machine:
    every compilation counted) >= 0.5x NumPyro; a warm process >= 1x. The enumerated
    mixture >= 0.5x: on the medians over seeds (:mod:`benchmarks.mixture_seeds`) when
    measured, else on the one-seed rows. The four-regression workload
    (:mod:`benchmarks.workload`) <= 60 s.
    """
    by_model = {model: rows for model, rows in nuts.groupby("model", sort=False)}
    schools = by_model.get(GOAL_MODEL, nuts.iloc[:0])
    mixture = next((rows for model, rows in by_model.items() if "mixture" in model), None)
    out = [
        (
            "eight schools, cold process, Inductor cache holding the graph: ESS/s >= 0.5 x NumPyro",
            _best(schools, "cold", excludes="empty"),
            NUTS_GOAL,
            ">=",
        ),
        (
            "eight schools, cold process, empty Inductor cache (every compile counted): ESS/s "
            ">= 0.5 x NumPyro",
            _best(schools, "empty"),
            NUTS_GOAL,
            ">=",
        ),
        ("eight schools, warm process: ESS/s >= 1 x NumPyro", _best(schools, "warm"), 1.0, ">="),
        (
            "enumerated mixture: ESS/s >= 0.5 x NumPyro"
            + (f" (medians over seeds {seeds['seeds']})" if seeds else ""),
            seeds["vilab_vs_numpyro"]
            if seeds
            else (_best(mixture) if mixture is not None else float("nan")),
            NUTS_GOAL,
            ">=",
        ),
        (
            "four-regression workload: NUTS <= 60 s in all",
            float("nan") if workload_s is None else workload_s,
            WORKLOAD_GOAL_S,
            "<=",
        ),
    ]
    goals = []
    for goal, value, bound, sense in out:
        met = (
            None if math.isnan(value) else bool(value >= bound if sense == ">=" else value <= bound)
        )
        goals.append({"goal": goal, "value": value, "met": met, "status": _status(met, "not run")})
    return goals


def goals(
    nuts: pd.DataFrame, svi: pd.DataFrame, workload_s: float | None = None, seeds=None
) -> dict:
    """The issues' goals, read off the tables.

    ``*_goal_met`` is None when the comparison could not be made; ``*_status`` says
    why in words. An SVI run of vilab that never reached the answer fails the goal.
    ``nuts_goal_met`` is every NUTS goal at once (None if one could not be measured).
    """
    out = {"nuts_goals": nuts_goals(nuts, workload_s, seeds)}
    mets = [g["met"] for g in out["nuts_goals"]]
    out["nuts_goal_met"] = None if None in mets else all(mets)

    out["svi_goal"] = f"vilab SVI time to answer <= {SVI_GOAL:g} x NumPyro's"
    numpyro = svi[svi["method"].str.startswith(NUMPYRO_SVI_PREFIX)]
    vilab = svi[svi["method"].str.startswith("vilab")]
    ratio, returned, met, why = float("nan"), float("nan"), None, "no NumPyro run"
    if len(numpyro) and len(vilab):
        ratio = float(vilab["time_to_answer_vs_numpyro"].iloc[0])
        returned = _ratio(float(vilab["wall_s"].iloc[0]), float(numpyro["wall_s"].iloc[0]))
        if math.isnan(numpyro["time_to_answer_s"].iloc[0]):
            why = "NumPyro did not reach the answer in its budget"
        else:
            met = (not math.isnan(ratio)) and ratio <= SVI_GOAL
    out["svi_vilab_time_to_answer_vs_numpyro"] = ratio
    out["svi_vilab_returned_vs_numpyro_returned"] = returned
    out["svi_vilab_reached_answer"] = bool(len(vilab)) and vilab["answer_step"].notna().all()
    out["svi_goal_met"] = met
    out["svi_status"] = _status(met, why)
    return out


def _unit_cost(records: list[dict], method: str, n: int, key: str = "per_unit_s") -> float:
    rows = [r for r in records if r["method"] == method and r["n"] == n]
    value = rows[0].get(key) if rows else None
    return float("nan") if value is None else float(value)


def scaling_goals(records: list[dict]) -> list[dict]:
    """The mixture scaling study's goals (:mod:`benchmarks.mixture_scaling`), each a
    ``goal``, the measured ``value``, ``met`` (None when a size was not run) and ``status``.

    vilab EM's time per iteration at N = 1e6 at most a quarter of scikit-learn's, with no
    more peak memory for the fit (the process's imports and the data not counted); minibatch
    SVI's time per step at N = 1e7 within 1.2x of its time at N = 1e4. The goals are on
    wall-clock time; ``cpu_value`` is the same ratio on process CPU time, which another
    process on the machine disturbs less.
    """
    from benchmarks.mixture_scaling import EM, SKLEARN, SVI_MINI

    def ratio(top, bottom, key="per_unit_s"):
        return _ratio(_unit_cost(records, *top, key), _unit_cost(records, *bottom, key))

    speed = (SKLEARN, EM_GOAL_N), (EM, EM_GOAL_N)
    flat = (SVI_MINI, FLAT_TO), (SVI_MINI, FLAT_FROM)
    out = [
        (
            f"vilab EM per iteration at N = 1e6: >= {EM_SPEED_GOAL:g} x faster than scikit-learn",
            ratio(*speed),
            ratio(*speed, key="cpu_per_unit_s"),
            EM_SPEED_GOAL,
            ">=",
        ),
        (
            "vilab EM's fit at N = 1e6: peak memory <= scikit-learn's (ratio)",
            ratio((EM, EM_GOAL_N), (SKLEARN, EM_GOAL_N), key="peak_mb"),
            float("nan"),
            1.0,
            "<=",
        ),
        (
            f"minibatch SVI per step at N = 1e7 within {MINIBATCH_FLAT_GOAL:g} x of N = 1e4",
            ratio(*flat),
            ratio(*flat, key="cpu_per_unit_s"),
            MINIBATCH_FLAT_GOAL,
            "<=",
        ),
    ]
    goals = []
    for goal, value, cpu_value, bound, sense in out:
        met = (
            None if math.isnan(value) else bool(value >= bound if sense == ">=" else value <= bound)
        )
        status = _status(met, "not run")
        goals.append(
            {"goal": goal, "value": value, "cpu_value": cpu_value, "met": met, "status": status}
        )
    return goals


SCALING_COLUMNS = {
    "method": "method",
    "n": "N",
    "unit": "unit",
    "per_unit_ms": "ms per unit",
    "cpu_per_unit_ms": "CPU ms per unit",
    "units_run": "units run",
    "converged": "converged",
    "units_to_target": "units to target",
    "time_to_target_s": "time to target s",
    "gap_nats": "gap nats/pt",
    "peak_mb": "fit peak MB",
    "anon_peak_mb": "heap in steps MB",
    "data_mb": "data MB",
    "imports_mb": "RSS after imports MB",
    "note": "note",
}


def scaling_table(records: list[dict]) -> pd.DataFrame:
    """One row per method and N, in the order methods and sizes were run."""
    frame = pd.DataFrame(records)
    frame["per_unit_ms"] = frame["per_unit_s"] * 1e3
    frame["cpu_per_unit_ms"] = frame["cpu_per_unit_s"] * 1e3
    frame["n"] = [f"{n:.0e}".replace("e+0", "e") for n in frame["n"]]
    for column in ("units_run", "units_to_target"):  # counts, with gaps where not measured
        if column in frame:
            frame[column] = pd.Series(
                [None if pd.isna(v) else int(v) for v in frame[column]], dtype=object
            )
    return frame


def _known(value) -> bool:
    return value is not None and not math.isnan(value)


def render_scaling(study: dict) -> str:
    """The study's table, its goals and how to read them."""
    frame = scaling_table(study["records"])
    goals = [
        f"goal: {g['goal']}: {g['status']} ({_cell(g['value'])}"
        + (f"; on CPU time {_cell(g['cpu_value'])})" if _known(g.get("cpu_value")) else ")")
        for g in study["goals"]
    ]
    return "\n".join(
        [
            "Mixture scaling (benchmarks/mixture_scaling.py; D = 2, K = 3; one process per "
            "method; unit: an EM iteration, an SVI step or a NUTS gradient; target: within "
            f"{study['target_nats']:g} nats per point of EM's optimum, time from the call; "
            "fit peak: resident memory above what the process held before the fit)",
            markdown(frame, SCALING_COLUMNS),
            "",
            *goals,
        ]
    )


def _status(met: bool | None, why: str) -> str:
    return f"not measured ({why})" if met is None else ("MET" if met else "NOT MET")


NUTS_COLUMNS = {
    "method": "method",
    "warmup_steps": "warmup",
    "num_samples": "draws",
    "wall_s": "wall s",
    "cpu_s": "CPU s",
    "min_ess_bulk": "min bulk ESS",
    "ess_per_s": "ESS/s",
    "ess_per_s_vs_numpyro": "ESS/s ÷ NumPyro",
    "ess_per_cpu_s_vs_numpyro": "ESS/CPU-s ÷ NumPyro",
    "divergences": "div.",
    "mean_leapfrog_steps": "grads/draw",
    "error": "failed",
}
SVI_COLUMNS = {
    "method": "method",
    "num_steps": "steps",
    "steps_per_s": "steps/s",
    "steps_per_s_vs_numpyro": "steps/s ÷ NumPyro",
    "final_elbo": "final ELBO",
    "worst_z": "worst |z| (avg)",
    "worst_sd_ratio": "worst sd ratio (avg)",
    "answer_step": "answer at step",
    "time_to_answer_s": "time to answer s",
    "time_to_answer_vs_numpyro": "÷ NumPyro",
    "wall_s": "returned s",
    "cpu_s": "CPU s",
    "converged": "stopped early",
    "mu_mean": "mu mean",
    "mu_sd": "mu sd",
    "tau_mean": "tau mean",
    "tau_sd": "tau sd",
}


def _cell(value) -> str:
    if value is None:
        return "–"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value):
            return "–"
        if abs(value) >= 100:
            return f"{value:,.0f}"
        return f"{value:.3g}" if abs(value) < 10 else f"{value:.1f}"
    return str(value)


def markdown(frame: pd.DataFrame, columns: dict[str, str]) -> str:
    """A GitHub-markdown table of ``columns`` (name -> header) of ``frame``."""
    names = [c for c in columns if c in frame.columns]
    lines = [
        "| " + " | ".join(columns[c] for c in names) + " |",
        "|" + "|".join("---" if c == "method" else "---:" for c in names) + "|",
    ]
    for _, row in frame.iterrows():
        cells = [_cell(row[c].item() if hasattr(row[c], "item") else row[c]) for c in names]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def nuts_sections(nuts: pd.DataFrame, ess_over: dict[str, str] | None = None) -> list[str]:
    """One heading and table per model; ``ess_over`` names each model's ESS sites."""
    ess_over = ess_over or {}
    lines = []
    for model, rows in nuts.groupby("model", sort=False):
        sites = ess_over.get(model, "all parameters")
        lines += [
            f"NUTS on {model}, one chain (ESS/s = min bulk ESS over {sites} / wall s, warmup in)",
            markdown(rows, NUTS_COLUMNS),
            "",
        ]
    return lines


WORKLOAD_COLUMNS = {
    "regression": "regression",
    "wall_s": "wall s",
    "min_ess_bulk": "min bulk ESS",
    "divergences": "div.",
    "potential": "potential",
}


SEED_COLUMNS = {
    "engine": "method",
    "seed": "seed",
    "wall_s": "wall s",
    "min_ess_bulk": "min bulk ESS",
    "ess_per_s": "ESS/s",
    "divergences": "div.",
    "merged_mode": "stayed in the merged mode",
}


def render(
    nuts: pd.DataFrame,
    svi: pd.DataFrame,
    verdict: dict,
    ess_over=None,
    workload=None,
    seeds=None,
    scaling=None,
) -> str:
    """The text ``python -m benchmarks`` prints: the tables and the goals (and the mixture
    scaling study's, when ``scaling`` holds it)."""
    seed_lines = []
    if seeds:
        medians = "; ".join(f"{k}: {_cell(v)}" for k, v in seeds["median_ess_per_s"].items())
        seed_lines = [
            "NUTS on the enumerated mixture, one chain per seed (benchmarks/mixture_seeds.py); "
            f"median ESS/s: {medians}",
            markdown(pd.DataFrame(seeds["runs"]), SEED_COLUMNS),
            "",
        ]
    if workload:
        frame = pd.DataFrame(workload["runs"])
        total = pd.DataFrame([{"regression": "all four", "wall_s": workload["total_s"]}])
        workload_lines = [
            "NUTS on four regressions of posteriordb's kind, vilab's defaults (4 chains, "
            "one process, one after another: benchmarks/workload.py)",
            markdown(pd.concat([frame, total], ignore_index=True), WORKLOAD_COLUMNS),
            "",
        ]
    else:
        workload_lines = []
    reached = "" if verdict["svi_vilab_reached_answer"] else "; vilab never reached the answer"
    nuts_lines = [
        f"goal: {g['goal']}: {g['status']} ({_cell(g['value'])})" for g in verdict["nuts_goals"]
    ]
    return "\n".join(
        [
            *nuts_sections(nuts, ess_over),
            *seed_lines,
            *workload_lines,
            "SVI, full-covariance Gaussian guide (answer: the guide's means and sds on the "
            f"10 unconstrained latents, averaged over the last {WINDOW_STEPS} steps, for good "
            f"within {MEAN_TOL:g} sd and {SD_TOL:.0%} of the family's optimum, found by "
            "L-BFGS on a common-random-number ELBO: benchmarks/optimum.py)",
            markdown(svi, SVI_COLUMNS),
            "",
            *nuts_lines,
            f"goal: {verdict['svi_goal']}: {verdict['svi_status']} "
            f"({_cell(verdict['svi_vilab_time_to_answer_vs_numpyro'])} x{reached}; "
            "until fit_svi returns, against NumPyro's fixed budget: "
            f"{_cell(verdict['svi_vilab_returned_vs_numpyro_returned'])} x)",
            *(["", render_scaling(scaling)] if scaling else []),
        ]
    )


def _plain(value):
    """JSON-safe: NaN becomes None, numpy scalars become Python ones."""
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if hasattr(value, "item"):
        value = value.item()
    if isinstance(value, float) and math.isnan(value):
        return None
    return value


def write_json(path: Path, machine: dict, settings: dict, nuts, svi, verdict, extra=None) -> None:
    """Write everything measured to ``path``: machine, settings, both tables, the goals,
    and ``extra`` (e.g. the workload and the mixture over seeds) under its own keys."""
    payload = {
        "machine": machine,
        "settings": settings,
        "nuts": nuts.to_dict(orient="records"),
        "svi": svi.to_dict(orient="records"),
        **(extra or {}),
        "goals": verdict,
    }
    path.write_text(json.dumps(_plain(payload), indent=2) + "\n", encoding="utf-8")
