"""PSIS k̂: how far a variational approximation can be trusted, from its importance weights.

For draws ``z_s ~ q`` with log weights ``w_s = log p(x, z_s) - log q(z_s)``, Pareto
smoothed importance sampling fits a generalized Pareto distribution to the largest
weights; its shape k̂ estimates how heavy the weights' right tail is. With ``k < 1/2``
the weights have finite variance and importance sampling (and q itself) can be
trusted; above 0.7 the tail is so heavy that q misses mass the posterior has, and no
practical number of draws fixes that estimate.

The fit is ArviZ's (:mod:`arviz_stats`), not ours.

References
----------
Yao, Vehtari, Simpson & Gelman (2018). Yes, but did it work?: Evaluating variational
inference. ICML.
Vehtari, Simpson, Gelman, Yao & Gabry (2024). Pareto smoothed importance sampling.
JMLR 25.
"""

from typing import NamedTuple

import numpy as np
from arviz_stats.base import array_stats

GOOD_BELOW = 0.5
OK_UP_TO = 0.7


class Verdict(NamedTuple):
    """What a k̂ says: ``label`` is ``"good"``, ``"ok"`` or ``"bad"``; ``meaning`` a line."""

    label: str
    meaning: str


def pareto_khat(log_weights) -> float:
    """PSIS k̂ of a 1-D array of log importance weights (any additive constant).

    Weights that are equal up to round-off (q is the posterior) have no tail: k̂ is
    then ``-inf``. Too few draws for a tail fit (fewer than 25), or non-finite
    weights other than ``-inf``, give NaN.
    """
    w = np.asarray(log_weights, dtype=np.float64).reshape(-1)
    if w.size < 25 or np.isnan(w).any() or np.isposinf(w).any():
        return float("nan")
    finite = w[np.isfinite(w)]
    if finite.size and np.ptp(finite) <= 1e-9 * (1.0 + np.abs(finite).max()):
        return float("-inf") if finite.size == w.size else float("nan")
    # psislw takes the log-likelihood of LOO, whose weights are its negative exponent.
    _, khat = array_stats.psislw(-w, r_eff=1.0)
    return float(khat)


def smoothed_weights(log_weights) -> np.ndarray:
    """PSIS-smoothed, normalised importance weights (ArviZ's ``psislw``), summing to 1."""
    w = np.asarray(log_weights, dtype=np.float64).reshape(-1)
    # psislw takes the LOO log-likelihood (the negated log weights) and returns the
    # smoothed, normalised log weights.
    smoothed, _ = array_stats.psislw(-w, r_eff=1.0)
    weights = np.exp(np.asarray(smoothed, dtype=np.float64))
    return weights / weights.sum()


def verdict(khat: float) -> Verdict:
    """The trust verdict of a PSIS k̂ (Yao et al. 2018, section 3).

    ``good`` below 0.5, ``ok`` from 0.5 to 0.7, ``bad`` above 0.7 (and for NaN).
    """
    if khat < GOOD_BELOW:
        return Verdict("good", "the approximation can be trusted; importance reweighting helps")
    if khat <= OK_UP_TO:
        return Verdict("ok", "use with care: the approximation misses some posterior mass")
    return Verdict("bad", "do not trust it: the approximation misses much posterior mass")
