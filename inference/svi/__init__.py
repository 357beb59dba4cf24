"""Stochastic variational inference: :func:`fit_svi`, its state and step, and its result."""

from inference.svi.fit import fit_svi
from inference.svi.result import SVIResult
from inference.svi.state import FitError, StepInfo

__all__ = ["FitError", "SVIResult", "StepInfo", "fit_svi"]
