"""Stochastic variational inference: :func:`fit_svi` and what it returns."""

from inference.svi.fit import FitError, SVIResult, fit_svi

__all__ = ["FitError", "SVIResult", "fit_svi"]
