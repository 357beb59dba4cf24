"""vilab's engines: SVI, NUTS, evidence, ArviZ conversion and comparison tables.

The engines are generic in ``(model, guide, *args)``; they bind no shipped model.
"""

from inference.evidence import ElboEstimate
from inference.mcmc import NUTSResult, run_nuts
from inference.svi import FitError, SVIResult, fit_svi
from inference.tables import compare, method_table

__all__ = [
    "ElboEstimate",
    "FitError",
    "NUTSResult",
    "SVIResult",
    "compare",
    "fit_svi",
    "method_table",
    "run_nuts",
]
