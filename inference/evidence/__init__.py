"""Evidence: ELBO and importance-weighted bounds, with their Monte Carlo error."""

from inference.evidence.elbo import ElboEstimate, estimate_elbo, log_weights

__all__ = ["ElboEstimate", "estimate_elbo", "log_weights"]
