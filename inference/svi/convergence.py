"""When to stop climbing a noisy ELBO.

The loss of SVI is a Monte Carlo estimate, so "the loss stopped changing" has to be
judged against its noise. :class:`Plateau` fits a straight line to the last
``2 * window`` losses and calls a plateau only when it is confident the loss has
stopped falling: the slope's upper bound (slope + 2 standard errors) projects a
decrease of less than ``tol`` nats over the next window. When the loss is too noisy
for that span to resolve ``tol`` (2 standard errors alone exceed it), the span doubles
(4, 8, ... windows, as far as the losses go) and, without a span that resolves it, there
is no verdict: a short noisy span would otherwise call a plateau whenever the noise
tilts it upwards, also on a curve that is still falling. A noisy loss therefore needs
more steps to be called converged; an exact one (a point mass, or a guide that
already matches a Gaussian posterior) stops as soon as it is flat.
"""

import numpy as np

Z = 2.0  # standard errors in the one-sided bound on the slope
# Nats per window. 0.05 per 100 steps bounds what more steps could still gain at about
# half a nat per thousand; 0.01 needed ~1900 flat steps to resolve on eight schools
# (loss noise ~1.2 nats per step), i.e. never stopped inside the default budget.
TOL = 0.05


class Plateau:
    """Detects a plateau of a noisy loss curve.

    Parameters
    ----------
    window : int
        Losses per window; a plateau is judged on the last two windows (more if noisy).
    tol : float
        Nats: a projected decrease over one window below this counts as flat.
    """

    def __init__(self, window: int = 100, tol: float = TOL):
        self.window = window
        self.tol = tol
        self._since_reset = 0

    def reset(self) -> None:
        """Start a fresh judgement (e.g. after the learning rate drops)."""
        self._since_reset = 0

    def update(self, losses: list[float]) -> bool:
        """Record one more loss (the last of ``losses``); True on a plateau."""
        self._since_reset += 1
        n = 2 * self.window
        if self._since_reset < n or self._since_reset % (self.window // 4 or 1):
            return False
        # Judge on the shortest span (2, 4, 8, ... windows) that resolves ``tol``.
        while n <= self._since_reset:
            slope, se = _trend(losses[-n:])
            if Z * se * self.window < self.tol:
                return bool((-slope + Z * se) * self.window < self.tol)
            n *= 2
        return False


def _trend(losses) -> tuple[float, float]:
    """Least-squares slope of ``losses`` against the step, and its standard error."""
    y = np.asarray(losses, dtype=float)
    n = len(y)
    t = np.arange(n, dtype=float)
    t -= t.mean()
    slope = (t @ (y - y.mean())) / (t @ t)
    resid = y - y.mean() - slope * t
    se = np.sqrt((resid @ resid) / (n - 2) / (t @ t))
    return float(slope), float(se)
