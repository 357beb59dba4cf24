"""The learning-rate schedule of :func:`~inference.svi.fit_svi`: decided by the fit, not the budget.

The learning rate starts at ``lr``. Each time the loss stops falling (a plateau,
:class:`~inference.svi.convergence.Plateau`) the schedule asks whether the posterior's
moments have stopped moving too (:class:`~inference.svi.convergence.MomentDrift`):

- if they have, the fit has converged: the learning rate is annealed 100-fold over
  ``COOL_DOWN`` steps, so the returned iterate average does not keep the jitter of a
  large step, and the fit stops;
- if not, the step is too large to let them settle (at a constant rate Adam's iterates
  wander by an amount that grows with it; on eight schools at 0.01 the running average
  of the mean still moves 0.1 posterior sd per 200 steps, for ever): the rate drops by
  ``STEP_DOWN`` (to at most ``MIN_FACTOR`` of ``lr``) and Adam's moments are reset (a
  plateau may also be a stall: after a start far from the posterior, Adam's second
  moments remember gradients 1e4x too large for thousands of steps).

Nothing here depends on ``num_steps``: the budget only says when to give up, so a fit
with a larger budget follows the same path as one with a smaller budget, and goes on.

``Schedule(lr, adaptive=False)`` is the other schedule: ``lr`` at every step, never a
plateau, never converged; the fit runs its budget and returns its last iterate. That is
how networks are trained (the VAE, by epochs): their loss is a minibatch estimate whose
plateau says little, and a network's "posterior moments" (its weights) are not a
posterior to settle.
"""

from dataclasses import dataclass

COOL_DOWN = 200  # steps of annealing after convergence
COOL_FACTOR = 0.01  # the learning rate at the end of the cool-down, as a fraction
STEP_DOWN = 0.3  # the learning rate's factor at each plateau with moments still moving
MIN_FACTOR = 1e-3  # the smallest learning rate before the cool-down, as a fraction of lr

CLIMB, COOL, DONE = "climb", "cool", "done"
SCHEDULES = ("adaptive", "constant")


@dataclass
class Schedule:
    """Phase and learning rate of a fit; ``lr`` is the initial rate.

    phase: ``climb`` → ``cool`` (annealing, once converged) → ``done``. factor: the
    current rate as a fraction of ``lr``. cooling_since: the first step of the cool-down.
    rate_since: the first step at the current rate. adaptive: False for the constant
    schedule (``lr`` throughout; :meth:`plateau` is never called).
    """

    lr: float
    adaptive: bool = True
    phase: str = CLIMB
    factor: float = 1.0
    cooling_since: int | None = None
    rate_since: int = 0

    def lr_at(self, step: int) -> float:
        """The learning rate of step ``step`` (0-based)."""
        rate = self.lr * self.factor
        if self.cooling_since is None:
            return rate
        return rate * COOL_FACTOR ** min(1.0, (step - self.cooling_since) / COOL_DOWN)

    def plateau(self, step: int, settled: bool) -> bool:
        """React to a plateau of the loss at ``step``; True when the rate dropped."""
        if settled:
            self.phase, self.cooling_since = COOL, step + 1
            return False
        if self.factor * STEP_DOWN < MIN_FACTOR * (1 - 1e-9):
            return False
        self.factor *= STEP_DOWN
        self.rate_since = step + 1
        return True

    def advance(self, step: int) -> str:
        """Mark the end of the cool-down after ``step``; returns the phase."""
        if self.phase == COOL and step + 1 - self.cooling_since >= COOL_DOWN:
            self.phase = DONE
        return self.phase

    def state_dict(self) -> dict:
        """What a checkpoint needs to resume the schedule."""
        return {
            "phase": self.phase,
            "factor": self.factor,
            "cooling_since": self.cooling_since,
            "rate_since": self.rate_since,
        }

    def load_state_dict(self, state: dict) -> None:
        """Resume from :meth:`state_dict`."""
        self.phase, self.cooling_since = state["phase"], state["cooling_since"]
        self.factor = float(state["factor"])
        self.rate_since = int(state["rate_since"])
