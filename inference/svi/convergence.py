"""When to stop climbing a noisy ELBO: the loss has stopped falling and the answer moving.

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

A flat loss is not enough: on eight schools an ELBO within 0.1 nats of the best hides
a posterior mean 0.5 sd away, because the ELBO is flat along that direction while the
optimiser still drifts. :class:`MomentDrift` therefore also watches what the user
reads, the guide's posterior means and sds (on the unconstrained latents), and calls
them settled only when no mean moved by more than ``tol`` sds, and no sd by more than a
fraction ``tol``, over the last ``span`` steps.
"""

import numpy as np
import torch

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

    def state_dict(self) -> dict:
        """What a checkpoint needs to resume the judgement."""
        return {"since_reset": self._since_reset}

    def load_state_dict(self, state: dict) -> None:
        """Resume from :meth:`state_dict`."""
        self._since_reset = int(state["since_reset"])

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


# Posterior sds per span: a mean still moving 0.02 sd per 200 steps on an exponential
# approach with a time constant of ~1000 steps is ~0.1 sd from where it is going.
MOMENT_TOL = 0.02
MOMENT_SPAN = 200  # steps between the two snapshots compared
MOMENT_EVERY = 50  # steps between snapshots


class MomentDrift:
    """Watches the guide's posterior moments and says when they have stopped moving.

    Parameters
    ----------
    tol : float
        Largest allowed change over ``span`` steps: of a mean, in posterior sds; of an
        sd, as a fraction of itself.
    span, every : int
        Steps between the snapshots compared, and between snapshots.
    """

    def __init__(self, tol: float = MOMENT_TOL, span: int = MOMENT_SPAN, every: int = MOMENT_EVERY):
        self.tol, self.span, self.every = tol, span, every
        self.history: list[tuple[int, np.ndarray, np.ndarray]] = []

    def due(self, step: int) -> bool:
        """Whether a snapshot is wanted after ``step`` (0-based) steps."""
        return (step + 1) % self.every == 0

    def record(self, step: int, mean: np.ndarray, sd: np.ndarray) -> None:
        """Keep the snapshot of ``mean`` and ``sd`` taken after ``step``."""
        self.history.append((step, np.asarray(mean, float), np.asarray(sd, float)))
        self.history = self.history[-(self.span // self.every + 1) :]

    def drift(self) -> float:
        """The largest change over the last ``span`` steps (inf until there are two)."""
        if len(self.history) < 2 or self.history[-1][0] - self.history[0][0] < self.span:
            return float("inf")
        (_, m0, s0), (_, m1, s1) = self.history[0], self.history[-1]
        spread = (s1 > 0) & (s0 > 0)  # a point mass (MAP) has no sd to measure the mean against
        moves = [np.zeros(1)]
        if spread.any():
            moves.append(np.abs(m1 - m0)[spread] / s1[spread])
            moves.append(np.abs(np.log(s1[spread] / s0[spread])))
        return float(max(m.max() for m in moves))

    def settled(self) -> bool:
        """True when the moments moved less than ``tol`` over the last span."""
        return self.drift() < self.tol

    def reset(self) -> None:
        """Forget the snapshots (after the optimiser was reset)."""
        self.history = []

    def state_dict(self) -> dict:
        """What a checkpoint needs to resume the judgement."""
        return {
            "steps": [h[0] for h in self.history],
            "means": [torch.as_tensor(h[1]) for h in self.history],
            "sds": [torch.as_tensor(h[2]) for h in self.history],
        }

    def load_state_dict(self, state: dict) -> None:
        """Resume from :meth:`state_dict`."""
        self.history = [
            (int(k), m.numpy(), s.numpy())
            for k, m, s in zip(state["steps"], state["means"], state["sds"], strict=True)
        ]
