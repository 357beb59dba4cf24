"""NUTS MCMC: :func:`run_nuts` and what it returns."""

from inference.mcmc.nuts import NUTSResult, run_nuts

__all__ = ["NUTSResult", "run_nuts"]
