"""Rubin's eight schools: a hierarchical normal model, centered and non-centered.

Eight schools ran a coaching programme for the SAT; each reports an estimated
effect ``y_j`` with a known standard error ``sigma_j``. The priors are those of
posteriordb's ``eight_schools`` posteriors, so :func:`reference` (Stan NUTS,
10,000 draws) is the ground truth for both parameterizations.

References
----------
Rubin, D. B. (1981). Estimation in parallel randomized experiments.
*Journal of Educational Statistics*, 6(4), 377-401.

Gelman, A. et al. (2013). *Bayesian Data Analysis*, 3rd ed., section 5.5.
"""

import json
from importlib import resources

import pandas as pd
import pyro
import pyro.distributions as dist
import torch

__all__ = ["SCHOOLS", "centered", "load_data", "noncentered", "reference"]

SCHOOLS = (
    "Choate",
    "Deerfield",
    "Phillips Andover",
    "Phillips Exeter",
    "Hotchkiss",
    "Lawrenceville",
    "St. Paul's",
    "Mt. Hermon",
)


def _check_data(y, sigma):
    y, sigma = torch.as_tensor(y), torch.as_tensor(sigma)
    if y.dim() != 1 or sigma.dim() != 1 or len(y) != len(sigma):
        raise ValueError(
            "y and sigma must be 1-D and of the same length, got shapes "
            f"y {tuple(y.shape)} and sigma {tuple(sigma.shape)}"
        )
    if len(y) == 0:
        raise ValueError("y and sigma must hold at least one school, got length 0")
    if not (torch.isfinite(y).all() and torch.isfinite(sigma).all()):
        raise ValueError("y and sigma must be finite (no NaN or inf)")
    if not (sigma > 0).all():
        raise ValueError(f"every sigma must be > 0, got {sigma.tolist()}")
    dtype = torch.promote_types(y.dtype, sigma.dtype)
    if not dtype.is_floating_point:
        dtype = torch.get_default_dtype()
    return y.to(dtype), sigma.to(dtype)


def _hyperpriors(y):
    mu = pyro.sample("mu", dist.Normal(y.new_tensor(0.0), y.new_tensor(5.0)))
    tau = pyro.sample("tau", dist.HalfCauchy(y.new_tensor(5.0)))
    return mu, tau


def centered(y, sigma):
    r"""Centered eight-schools model.

    .. math::

        \mu &\sim \mathcal{N}(0, 5^2) \\
        \tau &\sim \mathrm{HalfCauchy}(5) \\
        \theta_j \mid \mu, \tau &\sim \mathcal{N}(\mu, \tau^2), \qquad j = 1, \dots, J \\
        y_j \mid \theta_j &\sim \mathcal{N}(\theta_j, \sigma_j^2)

    Parameters
    ----------
    y : torch.Tensor
        Estimated effects, shape ``(J,)``.
    sigma : torch.Tensor
        Their known standard errors, shape ``(J,)``, all ``> 0``.

    Raises
    ------
    ValueError
        If ``y`` and ``sigma`` are not 1-D of one length, not finite, or
        some ``sigma_j <= 0``.

    Notes
    -----
    Sites: ``"mu"`` and ``"tau"`` (scalars, outside any plate), then ``"theta"``
    and the observed ``"y"`` inside ``pyro.plate("school", J)``. The funnel
    between ``tau`` and ``theta`` makes NUTS diverge here; see
    :func:`noncentered`. ``centered.coords`` labels the school dim for the
    shipped data (:data:`SCHOOLS`).
    """
    y, sigma = _check_data(y, sigma)
    mu, tau = _hyperpriors(y)
    with pyro.plate("school", len(y)):
        theta = pyro.sample("theta", dist.Normal(mu, tau))
        pyro.sample("y", dist.Normal(theta, sigma), obs=y)


def noncentered(y, sigma):
    r"""Non-centered eight-schools model: the same posterior, no funnel.

    .. math::

        \mu &\sim \mathcal{N}(0, 5^2) \\
        \tau &\sim \mathrm{HalfCauchy}(5) \\
        \eta_j &\sim \mathcal{N}(0, 1), \qquad j = 1, \dots, J \\
        \theta_j &= \mu + \tau \eta_j \\
        y_j \mid \theta_j &\sim \mathcal{N}(\theta_j, \sigma_j^2)

    Parameters
    ----------
    y, sigma
        As in :func:`centered`.

    Raises
    ------
    ValueError
        As in :func:`centered`.

    Notes
    -----
    Sites: ``"mu"``, ``"tau"`` (outside any plate), then ``"eta"``, the
    deterministic ``"theta"`` and the observed ``"y"`` inside
    ``pyro.plate("school", J)``.
    """
    y, sigma = _check_data(y, sigma)
    mu, tau = _hyperpriors(y)
    with pyro.plate("school", len(y)):
        eta = pyro.sample("eta", dist.Normal(y.new_tensor(0.0), y.new_tensor(1.0)))
        theta = pyro.deterministic("theta", mu + tau * eta)
        pyro.sample("y", dist.Normal(theta, sigma), obs=y)


centered.coords = {"school": list(SCHOOLS)}
noncentered.coords = {"school": list(SCHOOLS)}


def _data_file(name):
    return resources.files("models").joinpath("data", name)


def load_data():
    """The eight-schools data (Rubin 1981; BDA3 table 5.2).

    Returns
    -------
    dict
        ``"y"`` and ``"sigma"``: float64 tensors of shape ``(8,)``;
        ``"schools"``: the school names, in the order of ``y``.
    """
    raw = json.loads(_data_file("eight_schools.json").read_text(encoding="utf-8"))
    return {
        "y": torch.tensor(raw["y"], dtype=torch.float64),
        "sigma": torch.tensor(raw["sigma"], dtype=torch.float64),
        "schools": list(raw["schools"]),
    }


def reference():
    """posteriordb's reference posterior summary for eight schools.

    Returns
    -------
    pandas.DataFrame
        Indexed by ``parameter`` (``"mu"``, ``"tau"``, ``"theta[Choate]"``, ...)
        with columns ``posteriordb_name`` (``"theta[1]"``, ...), ``mean``,
        ``sd``, ``q05``, ``q50``, ``q95``, ``mcse_mean`` (Monte Carlo standard
        error of the mean) and ``n_draws``. Stan NUTS, 10 chains of 1,000
        draws, pooled; see ``models/data/README.md``.
    """
    with _data_file("eight_schools_reference.csv").open(encoding="utf-8") as f:
        return pd.read_csv(f, index_col="parameter")
