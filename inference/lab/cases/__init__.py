"""Named cases: the shipped models bound to the engines, with the answers to check against.

A :class:`Case` says what to fit (a model, its data and a hand-written guide), what the
answer is (a reference posterior summary; the exact log evidence where it is known) and
how hard to try (a :class:`Budget`, full or quick). :func:`run_method` runs one method of
a case and returns the engine's result; :func:`method_datatree` turns it into ArviZ data.
One module per model family (:mod:`~inference.lab.cases.gaussian`) builds its cases;
:mod:`~inference.lab.cases.user` builds one from a user's model file.

This package, the report and the CLI are the only parts of :mod:`inference` that import
:mod:`models` and :mod:`guides`.
"""

import warnings
from functools import cache

import xarray as xr

from inference.lab.cases.base import FULL, QUICK, Budget, Case
from inference.lab.cases.gaussian import eight_schools_case, normal_case
from inference.lab.cases.mixture import gauss_mix_1d_case, gmm_case, iris_case
from inference.lab.cases.user import CaseFileError, case_from_file
from inference.lab.cases.vae import vae_case
from inference.lab.catalog import CASES, METHODS
from inference.mcmc import NUTSResult, run_nuts
from inference.sites import latent_sites, trace_model
from inference.svi import SVIResult, fit_svi

__all__ = [
    "FULL",
    "QUICK",
    "Budget",
    "Case",
    "CaseFileError",
    "METHODS",
    "case_from_file",
    "case_names",
    "get_case",
    "method_datatree",
    "run_method",
    "vae_case",
]

_BUILDERS = {
    "normal": normal_case,
    "eight-schools": lambda: eight_schools_case(centered=False),
    "eight-schools-centered": lambda: eight_schools_case(centered=True),
    "gmm": gmm_case,
    "iris": iris_case,
    "gauss-mix-1d": gauss_mix_1d_case,
    "vae": vae_case,
}


def case_names() -> tuple[str, ...]:
    """The names of the shipped cases, in listing order."""
    return tuple(CASES)


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
    if method not in case.methods:
        raise ValueError(
            f"unknown method {method!r} for {case.name}; choose one of: {', '.join(case.methods)}"
        )
    with warnings.catch_warnings():
        # torch.jit.trace is deprecated in favour of torch.compile; it is still the fastest
        # way to run Pyro's NUTS and ELBOs on small models, and it works.
        warnings.filterwarnings("ignore", message=".*torch.jit.trace", category=FutureWarning)
        run = case.runner or _run
        return run(case, method, case.budget(quick), seed, progress_bar)


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
        elbo=_elbo_for(case),
        num_steps=budget.num_steps,
        lr=case.guide_lr if hand_written else case.lr,
        num_particles=case.guide_particles if hand_written else 1,
        seed=seed,
        progress_bar=progress_bar,
    )


def _elbo_for(case) -> str:
    """``"enum"`` for a model with discrete sites marked for enumeration (a user's
    mixture), else ``"trace"``: autoguides cover the continuous sites only."""
    prototype = trace_model(case.model, case.args, {})
    marked = [
        name
        for name in latent_sites(prototype)
        if prototype.nodes[name]["infer"].get("enumerate") == "parallel"
    ]
    return "enum" if marked else "trace"


def method_datatree(
    case: Case, method: str, result, quick: bool = False, seed: int = 0
) -> xr.DataTree:
    """The DataTree of a result: NUTS draws as they are, ``num_draws`` draws from a guide
    (or what the case's family makes of it, ``case.to_tree``)."""
    if case.to_tree is not None:
        return case.to_tree(case, method, result, case.budget(quick), seed)
    if isinstance(result, SVIResult):
        return result.to_datatree(num_samples=case.budget(quick).num_draws, seed=seed)
    return result.to_datatree()
