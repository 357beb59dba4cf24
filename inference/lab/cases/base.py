"""What a case is: a model with its data, guide, reference answer and budgets."""

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from statistics import NormalDist

import pandas as pd

from inference.lab.catalog import METHODS, OPTIONAL_METHODS


@dataclass(frozen=True)
class Budget:
    """How hard each engine tries.

    num_chains, warmup_steps, num_samples: NUTS chains and, per chain, warmup and kept draws.
    num_steps: the most SVI optimisation steps (a fit may stop earlier on convergence).
    num_draws: guide draws kept in an SVI fit's DataTree.
    """

    num_chains: int
    warmup_steps: int
    num_samples: int
    num_steps: int
    num_draws: int


NORMAL_Q95 = NormalDist().inv_cdf(0.95)

FULL = Budget(num_chains=4, warmup_steps=1000, num_samples=1000, num_steps=5000, num_draws=1000)
# SVI's quick budget: 1500 steps, where the far-off hand guide and the eight-schools
# autoguides meet the full run's bars (|z| < 0.3, sd ratio 0.7-1.3); at 600 they did not.
QUICK = Budget(num_chains=2, warmup_steps=150, num_samples=150, num_steps=1500, num_draws=500)


def _budgets() -> dict[str, Budget]:
    return {"full": FULL, "quick": QUICK}


@dataclass(frozen=True)
class Case:
    """A model with its data, guide, reference answer and budgets.

    name: what ``vilab compare`` calls it. description: one line for ``vilab list``.
    model, args: the Pyro model and the positional arguments it is fitted to.
    guide: the hand-written guide (method ``svi-guide``), same signature as the model, or None.
    reference: posterior summary indexed by parameter label (``mu``, ``theta[Choate]``)
    with columns ``mean``, ``sd``, ``q05`` and ``q95``; None when no reference is known.
    log_evidence: the exact ``log p(x)`` in nats (whole data set), or None.
    methods: the methods the case runs by default, in order.
    budgets: ``"full"`` and ``"quick"`` :class:`Budget`.
    lr: initial learning rate of the autoguides. guide_lr, guide_particles: the learning
    rate and ELBO particles of the hand-written guide.
    funnel: ``(scale_site, vector_site)`` of a hierarchical funnel whose NUTS draws are worth
    a pair plot (log scale against the first element), or None.
    target_accept: NUTS's target acceptance probability.
    family: the model family whose figures the report adds (``"mixture"``), or None.
    runner: ``runner(case, method, budget, seed, progress_bar) -> result`` for a family's
    own methods (EM, scikit-learn), or None for the generic SVI and NUTS ones.
    to_tree: ``to_tree(case, method, result, budget, seed) -> DataTree`` where a family's
    trees need more than ``result.to_datatree()`` (relabelling, data), or None.
    metrics: ``metrics(method, tree) -> dict`` of extra methods-table columns, or None.
    reference_method: a method whose draws are the reference when ``reference`` is None
    (the VAE's ``nuts-latent``), or None.
    """

    name: str
    description: str
    model: Callable
    args: tuple
    guide: Callable | None
    reference: pd.DataFrame | None
    log_evidence: float | None
    methods: tuple[str, ...] = METHODS
    budgets: Mapping[str, Budget] = field(default_factory=_budgets)
    lr: float = 1e-2
    guide_lr: float = 0.05
    guide_particles: int = 1
    funnel: tuple[str, str] | None = None
    target_accept: float = 0.8
    family: str | None = None
    runner: Callable | None = None
    to_tree: Callable | None = None
    metrics: Callable | None = None
    reference_method: str | None = None

    @property
    def default_methods(self) -> tuple[str, ...]:
        """The methods run when none are named: all but the optional cross-checks."""
        return tuple(m for m in self.methods if m not in OPTIONAL_METHODS)

    @property
    def subject(self):
        """What the report says about the case (:class:`~inference.lab.report.Subject`)."""
        from inference.lab.report import Subject

        return Subject(
            self.name,
            self.description,
            self.reference,
            self.log_evidence,
            self.funnel,
            self.family,
            self.metrics,
            self.reference_method,
        )

    def budget(self, quick: bool) -> Budget:
        """The quick or the full budget."""
        return self.budgets["quick" if quick else "full"]
