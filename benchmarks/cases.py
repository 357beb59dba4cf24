"""The models NUTS is measured on, each with its data and what its ESS runs over.

A :class:`Case` is what a runner needs from a model: the Pyro model, a function giving
its torch arguments, and a function turning one chain's samples (each ``(chain, draw,
...)`` or ``(draw, ...)``) into the draws whose min bulk ESS is taken. NumPyro's
versions of the models are in the ``numpyro_*`` modules.
"""

from collections.abc import Callable
from dataclasses import dataclass

from benchmarks import mixture, regression
from benchmarks.data import arrays, noncentered
from benchmarks.measures import chain_draws


@dataclass(frozen=True)
class Case:
    """name: the model's label in the tables. model: the Pyro model. arrays: its
    arguments (float64 tensors). draws: one chain's samples → draws for the ESS.
    ess_over: the sites the ESS minimum runs over, for the table headings."""

    name: str
    model: Callable
    arrays: Callable[[], tuple]
    draws: Callable[[dict], dict]
    ess_over: str


def _eight_schools_draws(samples: dict) -> dict:
    return chain_draws(samples["mu"], samples["tau"], samples["eta"])


EIGHT_SCHOOLS = Case("eight schools", noncentered, arrays, _eight_schools_draws, "mu, tau, theta")
MIXTURE = Case(
    "mixture (enumerated)", mixture.mixture, mixture.arrays, mixture.chain_draws, mixture.ESS_OVER
)
REGRESSION = Case(
    "badly scaled regression",
    regression.regression,
    regression.arrays,
    regression.chain_draws,
    regression.ESS_OVER,
)
CASES = {case.name: case for case in (EIGHT_SCHOOLS, MIXTURE, REGRESSION)}
