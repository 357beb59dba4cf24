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
from inference.lab.catalog import CASES, METHODS, OPTIONAL_METHODS
from inference.mcmc import NUTSResult, run_nuts
from inference.svi import SVIResult, fit_svi
from models import eight_schools, gaussian_latent


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

    @property
    def default_methods(self) -> tuple[str, ...]:
        """The methods run when none are named: all but the optional cross-checks."""
        return tuple(m for m in self.methods if m not in OPTIONAL_METHODS)

    @property
    def subject(self):
        """What the report says about the case (:class:`~inference.lab.report.Subject`)."""
        from inference.lab.report import Subject

        return Subject(self.name, self.description, self.reference, self.log_evidence, self.funnel)

    def budget(self, quick: bool) -> Budget:
        """The quick or the full budget."""
        return self.budgets["quick" if quick else "full"]


def _normal_case() -> Case:
    x = gaussian_latent.simulate(100, seed=0)
    mean, sd = gaussian_latent.exact_posterior(x)
    half_width = NORMAL_Q95 * sd
    return Case(
        name="normal",
        description=CASES["normal"],
        model=gaussian_latent.model,
        args=(x,),
        guide=gaussian_latent_guides.guide,
        reference=pd.DataFrame(
            {"mean": mean, "sd": sd, "q05": mean - half_width, "q95": mean + half_width},
            index=pd.Index(["z"], name="parameter"),
        ),
        log_evidence=gaussian_latent.exact_log_evidence(x),
        # The hand guide starts 3 prior sds (30 units) away on purpose: it needs big steps
        # to arrive, then quiet gradients to settle (lr 0.3 and 16 particles: within 0.02 sd
        # and 1.6% of the exact answer in 1500 steps, seeds 0-2; lr 1.0 with one particle
        # was 0.87 sd off at the quick budget).
        guide_lr=0.3,
        guide_particles=16,
    )


# The centered quick run holds the funnel for NUTS to show; its SVI rows are off at any
# budget (the Gaussian families cannot follow the funnel; the report colours them), so
# they get 1000 steps, which keeps the whole quick run under 60 s (51 s at 1500 steps).
CENTERED_QUICK = Budget(
    num_chains=2, warmup_steps=100, num_samples=100, num_steps=1000, num_draws=500
)


def _eight_schools_case(centered: bool) -> Case:
    data = eight_schools.load_data()
    name = "eight-schools-centered" if centered else "eight-schools"
    # Non-centered: NUTS at 0.95 as posteriordb's reference run: at 0.9 nutpie on the
    # compiled potential diverged once in 4000 draws for 2 of seeds 0-5, at 0.95 never
    # (2026-12-03; ~11.5 instead of ~7.3 gradients a draw, 0.3 s more on 4 chains). Centered:
    # the funnel's divergences are the point, and a shorter quick run (~40 leapfrog
    # steps a draw).
    return Case(
        name=name,
        description=CASES[name],
        model=eight_schools.centered if centered else eight_schools.noncentered,
        args=(data["y"], data["sigma"]),
        guide=(
            eight_schools_guides.centered_guide
            if centered
            else eight_schools_guides.noncentered_guide
        ),
        reference=eight_schools.reference()[["mean", "sd", "q05", "q95"]],
        log_evidence=None,
        budgets={"full": FULL, "quick": CENTERED_QUICK if centered else QUICK},
        funnel=("tau", "theta"),
        target_accept=0.8 if centered else 0.95,
    )


_BUILDERS = {
    "normal": _normal_case,
    "eight-schools": lambda: _eight_schools_case(centered=False),
    "eight-schools-centered": lambda: _eight_schools_case(centered=True),
}


def case_names() -> tuple[str, ...]:
    """The names of the shipped cases, in listing order."""
    return tuple(CASES)


class CaseFileError(ValueError):
    """A model file that cannot be a case: missing, unimportable, or lacking model/data."""


def case_from_file(path) -> Case:
    """A case from a user's model file (``vilab compare FILE.py``).

    The file defines ``model`` and ``data()`` (returning the model's positional
    arguments, a tuple or a single value), and optionally ``guide`` (method
    ``svi-guide``), ``reference`` (a table indexed by parameter label with ``mean`` and
    ``sd``, or ``{label: (mean, sd)}``) and ``log_evidence`` (nats). The case is named
    after the file; its description is the first line of the file's docstring.
    """
    import importlib.util
    from pathlib import Path

    from inference.tables import reference_frame

    path = Path(path)
    if not path.is_file():
        raise CaseFileError(f"no model file {str(path)!r}")
    spec = importlib.util.spec_from_file_location(f"vilab_user_{path.stem}", path)
    module = importlib.util.module_from_spec(spec)
    try:
        spec.loader.exec_module(module)
    except Exception as err:
        raise CaseFileError(f"{path} cannot be imported: {type(err).__name__}: {err}") from None
    missing = [name for name in ("model", "data") if not callable(getattr(module, name, None))]
    if missing:
        raise CaseFileError(
            f"{path} defines no {' and no '.join(missing)}(): a model file needs "
            "a Pyro `model` and a `data()` returning its arguments"
        )
    try:
        args = module.data()
    except Exception as err:
        raise CaseFileError(f"{path}: data() failed: {type(err).__name__}: {err}") from None
    args = args if isinstance(args, tuple) else (args,)
    guide = getattr(module, "guide", None)
    reference = getattr(module, "reference", None)
    try:
        reference = reference_frame(reference) if reference is not None else None
    except (TypeError, ValueError) as err:
        raise CaseFileError(f"{path}: reference is not a table of mean and sd: {err}") from None
    doc = (module.__doc__ or "").strip().splitlines()
    methods = tuple(m for m in METHODS if m != "svi-guide" or callable(guide))
    return Case(
        name=path.stem,
        description=doc[0] if doc else f"the model in {path}",
        model=module.model,
        args=args,
        guide=guide if callable(guide) else None,
        reference=reference,
        log_evidence=getattr(module, "log_evidence", None),
        methods=methods,
    )


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
        One of :data:`METHODS`: ``nuts`` (nutpie), ``nuts-pyro`` (Pyro's NUTS),
        ``svi-<autoguide>`` or ``svi-guide``.
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
    if method in ("nuts", "nuts-pyro"):
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
            backend="pyro" if method == "nuts-pyro" else "nutpie",
        )
    hand_written = method == "svi-guide"
    return fit_svi(
        case.model,
        case.guide if hand_written else method.removeprefix("svi-"),
        *case.args,
        num_steps=budget.num_steps,
        lr=case.guide_lr if hand_written else case.lr,
        num_particles=case.guide_particles if hand_written else 1,
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
