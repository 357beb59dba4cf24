"""vilab's engines: SVI, NUTS, evidence, ArviZ conversion and comparison tables.

The engines are generic in ``(model, guide, *args)``; they bind no shipped model.
"""

from inference.compare import compare, method_table
from inference.evidence import ElboEstimate
from inference.nuts import NUTSResult, run_nuts
from inference.svi import FitError, SVIResult, fit_svi

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
