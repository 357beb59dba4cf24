"""vilab's public API: SVI, NUTS, EM, comparison tables, the report and relabelling.

``from inference import fit_svi, run_nuts, run_em, compare, method_table, report,
relabel``. The names are imported on first use, so ``vilab list`` and ``vilab --help``
answer without loading torch and Pyro.
"""

from importlib import import_module

_WHERE = {
    "EMResult": "inference.em",
    "ElboEstimate": "inference.evidence",
    "FitError": "inference.svi",
    "NUTSResult": "inference.mcmc",
    "SVIResult": "inference.svi",
    "StepInfo": "inference.svi",
    "compare": "inference.tables",
    "fit_svi": "inference.svi",
    "method_table": "inference.tables",
    "per_datum_bounds": "inference.evidence",
    "relabel": "inference.posterior.relabel",
    "report": "inference.lab.report",
    "run_em": "inference.em",
    "run_nuts": "inference.mcmc",
}

__all__ = sorted(_WHERE)


def __getattr__(name: str):
    if name not in _WHERE:
        raise AttributeError(f"module 'inference' has no attribute {name!r}")
    value = getattr(import_module(_WHERE[name]), name)
    globals()[name] = value
    return value


def __dir__():
    return __all__
