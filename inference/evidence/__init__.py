"""Evidence: ELBO and importance-weighted bounds, with their Monte Carlo error and PSIS k̂."""

from inference.evidence.elbo import ElboEstimate, estimate_elbo, log_weights
from inference.evidence.psis import Verdict, pareto_khat, smoothed_weights, verdict

__all__ = [
    "ElboEstimate",
    "Verdict",
    "estimate_elbo",
    "log_weights",
    "pareto_khat",
    "smoothed_weights",
    "verdict",
]
