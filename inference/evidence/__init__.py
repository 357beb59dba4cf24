"""Evidence: ELBO and importance-weighted bounds, with their Monte Carlo error and PSIS k̂."""

from inference.evidence.elbo import ElboEstimate, estimate_elbo, log_weights
from inference.evidence.per_datum import PerDatumBounds, per_datum_bounds
from inference.evidence.psis import Verdict, pareto_khat, smoothed_weights, verdict

__all__ = [
    "ElboEstimate",
    "PerDatumBounds",
    "Verdict",
    "estimate_elbo",
    "log_weights",
    "pareto_khat",
    "per_datum_bounds",
    "smoothed_weights",
    "verdict",
]
