"""Named cases: the shipped models bound to the engines, with the answers to check against.

A :class:`Case` says what to fit (a model, its data and a hand-written guide), what the
answer is (a reference posterior summary; the exact log evidence where it is known) and
how hard to try (a :class:`Budget`, full or quick). :func:`run_method` runs one method of
a case and returns the engine's result; :func:`method_datatree` turns it into ArviZ data.

This module, the report and the CLI are the only parts of :mod:`inference` that import
:mod:`models` and :mod:`guides`.
"""

import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from functools import cache
from statistics import NormalDist

import pandas as pd
import xarray as xr

from guides import eight_schools as eight_schools_guides
from guides import gaussian_latent as gaussian_latent_guides
from inference.mcmc import NUTSResult, run_nuts
from inference.svi import SVIResult, fit_svi
from models import eight_schools, gaussian_latent

METHODS = ("nuts", "svi-normal", "svi-mvn", "svi-iaf", "svi-guide")
"""Every method a case can run: NUTS, three autoguides by name and the hand-written guide."""


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
QUICK = Budget(num_chains=2, warmup_steps=150, num_samples=150, num_steps=600, num_draws=500)


def _budgets() -> dict[str, Budget]:
    return {"full": FULL, "quick": QUICK}


@dataclass(frozen=True)
class Case:
    """A model with its data, guide, reference answer and budgets.

    name: what ``vilab compare`` calls it. description: one line for ``vilab list``.
    model, args: the Pyro model and the positional arguments it is fitted to.
    guide: the hand-written guide (method ``svi-guide``), same signature as the model.
    reference: posterior summary indexed by parameter label (``mu``, ``theta[Choate]``)
    with columns ``mean``, ``sd``, ``q05`` and ``q95``; None when no reference is known.
    log_evidence: the exact ``log p(x)`` in nats (whole data set), or None.
    methods: the methods the case runs by default, in order.
    budgets: ``"full"`` and ``"quick"`` :class:`Budget`.
    lr: initial learning rate of the autoguides. guide_lr: that of the hand-written guide.
    funnel: ``(scale_site, vector_site)`` of a hierarchical funnel whose NUTS draws are worth
    a pair plot (log scale against the first element), or None.
    target_accept: NUTS's target acceptance probability.
    """

    name: str
    description: str
    model: Callable
    args: tuple
    guide: Callable
    reference: pd.DataFrame | None
    log_evidence: float | None
    methods: tuple[str, ...] = METHODS
    budgets: Mapping[str, Budget] = field(default_factory=_budgets)
    lr: float = 1e-2
    guide_lr: float = 0.05
    funnel: tuple[str, str] | None = None
    target_accept: float = 0.8

    def budget(self, quick: bool) -> Budget:
        """The quick or the full budget."""
        return self.budgets["quick" if quick else "full"]


def _normal_case() -> Case:
    x = gaussian_latent.simulate(100, seed=0)
    mean, sd = gaussian_latent.exact_posterior(x)
    half_width = NORMAL_Q95 * sd
    return Case(
        name="normal",
        description="Gaussian latent mean, 100 simulated points: exact posterior and log p(x)",
        model=gaussian_latent.model,
        args=(x,),
        guide=gaussian_latent_guides.guide,
        reference=pd.DataFrame(
            {"mean": mean, "sd": sd, "q05": mean - half_width, "q95": mean + half_width},
            index=pd.Index(["z"], name="parameter"),
        ),
        log_evidence=gaussian_latent.exact_log_evidence(x),
        # The hand guide starts 3 prior sds (30 units) away on purpose: it needs big steps,
        # and Adam, slowed by the huge first gradients, needs them to the end.
        guide_lr=1.0,
    )


# NUTS on the centered funnel needs ~40 leapfrog steps a draw: a shorter quick run.
CENTERED_QUICK = Budget(
    num_chains=2, warmup_steps=100, num_samples=100, num_steps=600, num_draws=500
)


def _eight_schools_case(centered: bool) -> Case:
    data = eight_schools.load_data()
    reference = eight_schools.reference()[["mean", "sd", "q05", "q95"]]
    if centered:
        return Case(
            name="eight-schools-centered",
            description="Eight schools, centered: the funnel makes NUTS diverge (posteriordb ref)",
            model=eight_schools.centered,
            args=(data["y"], data["sigma"]),
            guide=eight_schools_guides.centered_guide,
            reference=reference,
            log_evidence=None,
            budgets={"full": FULL, "quick": CENTERED_QUICK},
            funnel=("tau", "theta"),
        )
    return Case(
        name="eight-schools",
        # As posteriordb's reference run (0.95): at 0.8 a few of 4000 draws diverge
        # (3 in the demo run), at 0.9 none, for the same cost (tests/inference).
        description="Eight schools, non-centered hierarchical model (posteriordb reference)",
        model=eight_schools.noncentered,
        args=(data["y"], data["sigma"]),
        guide=eight_schools_guides.noncentered_guide,
        reference=reference,
        log_evidence=None,
        funnel=("tau", "theta"),
        target_accept=0.9,
    )


_BUILDERS = {
    "normal": _normal_case,
    "eight-schools": lambda: _eight_schools_case(centered=False),
    "eight-schools-centered": lambda: _eight_schools_case(centered=True),
}


def case_names() -> tuple[str, ...]:
    """The names of the shipped cases, in listing order."""
    return tuple(_BUILDERS)


@cache
def get_case(name: str) -> Case:
    """The case called ``name``; ValueError naming the valid ones otherwise."""
    if name not in _BUILDERS:
        raise ValueError(f"unknown case {name!r}; choose one of: {', '.join(_BUILDERS)}")
    return _BUILDERS[name]()


def run_method(
    case: Case, method: str, quick: bool = False, seed: int = 0, progress_bar: bool = False
) -> NUTSResult | SVIResult:
    """Run one method of ``case`` and return the engine's result.

    Parameters
    ----------
    case : Case
    method : str
        One of :data:`METHODS`: ``nuts``, ``svi-<autoguide>`` or ``svi-guide``.
    quick : bool
        Use the quick budget (smoke tests, previews) instead of the full one.
    seed : int
        Seeds the run; the same seed gives the same numbers.
    progress_bar : bool
        Show the engine's progress bar.
    """
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; choose one of: {', '.join(METHODS)}")
    with warnings.catch_warnings():
        # torch.jit.trace is deprecated in favour of torch.compile; it is still the fastest
        # way to run Pyro's NUTS and ELBOs on small models, and it works.
        warnings.filterwarnings("ignore", message=".*torch.jit.trace", category=FutureWarning)
        return _run(case, method, case.budget(quick), seed, progress_bar)


def _run(case, method, budget, seed, progress_bar):
    if method == "nuts":
        return run_nuts(
            case.model,
            *case.args,
            num_samples=budget.num_samples,
            warmup_steps=budget.warmup_steps,
            num_chains=budget.num_chains,
            seed=seed,
            target_accept=case.target_accept,
            jit=True,
            progress_bar=progress_bar,
        )
    hand_written = method == "svi-guide"
    return fit_svi(
        case.model,
        case.guide if hand_written else method.removeprefix("svi-"),
        *case.args,
        num_steps=budget.num_steps,
        lr=case.guide_lr if hand_written else case.lr,
        seed=seed,
        progress_bar=progress_bar,
    )


def method_datatree(
    case: Case, result: NUTSResult | SVIResult, quick: bool = False, seed: int = 0
) -> xr.DataTree:
    """The DataTree of a result: NUTS draws as they are, ``num_draws`` draws from a guide."""
    if isinstance(result, SVIResult):
        return result.to_datatree(num_samples=case.budget(quick).num_draws, seed=seed)
    return result.to_datatree()
