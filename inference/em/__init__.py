"""EM for Gaussian mixtures: :func:`run_em`, what it returns, and the exact steps it runs.

Layering: DESIGN.md lists the mixture's E and M steps among ``models/`` (the exact facts
of a model), but engines must not import ``models`` and the import rule wins. So the
exact pieces (:mod:`inference.em.steps`: component log densities, responsibilities,
log-likelihood, M-step, log prior) live with the engine that runs them, and the lab and
evaluation code import them from ``inference.em``.
"""

from inference.em.result import EMResult
from inference.em.run import CovarianceFloorWarning, EMConvergenceWarning, run_em
from inference.em.steps import (
    log_likelihood,
    log_prior,
    log_prob_components,
    m_step,
    make_prior,
    responsibilities,
)

__all__ = [
    "CovarianceFloorWarning",
    "EMConvergenceWarning",
    "EMResult",
    "log_likelihood",
    "log_prior",
    "log_prob_components",
    "m_step",
    "make_prior",
    "responsibilities",
    "run_em",
]
