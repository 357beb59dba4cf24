"""What the benchmarks measure, computed the same way for every method.

- :func:`min_bulk_ess`: ArviZ's rank-normalised bulk ESS of every scalar in a set of
  draws (``mu``, ``tau`` and every ``theta[j]`` on eight schools), and its minimum.
- :func:`gaussian_elbo`: the ELBO of a Gaussian guide on the unconstrained latents
  ``(mu, log tau, eta_1..eta_J)``, estimated with one fixed set of standard-normal
  draws (common random numbers), so that guides from different engines and steps are
  compared without the noise of independent estimates.
- :func:`running_mean` and :func:`time_to_answer`: the first snapshot of an SVI
  trajectory from which its ELBO, averaged over the trailing 100 steps, stays within
  ``tol`` nats of the best such average any engine reached.
- :func:`moments`: mean and sd of ``mu`` and ``tau`` under such a guide, in closed form.
"""

import math
import time

import arviz as az
import numpy as np
import xarray as xr

MEAN_TOL = 0.1  # posterior sds: the answer's means are this close to the optimum's
SD_TOL = 0.1  # and its sds within this fraction
WINDOW_STEPS = 100  # the ELBO of the iterates is averaged over this many trailing steps
ELBO_DRAWS = 4000
HALF_CAUCHY_SCALE = 5.0
MU_PRIOR_SD = 5.0


class Stopwatch:
    """Wall-clock and process CPU seconds since it was made."""

    def __init__(self):
        self._wall, self._cpu = time.perf_counter(), time.process_time()

    def read(self) -> tuple[float, float]:
        return time.perf_counter() - self._wall, time.process_time() - self._cpu


def theta_from(mu: np.ndarray, tau: np.ndarray, eta: np.ndarray) -> np.ndarray:
    """``theta = mu + tau * eta``, from draws shaped (chain, draw) and (chain, draw, school)."""
    return mu[..., None] + tau[..., None] * eta


def chain_draws(mu, tau, eta) -> dict[str, np.ndarray]:
    """Eight schools' draws of one chain with a chain dim; ``theta`` recomputed from ``eta``.

    So that every engine's ``theta`` is computed alike.
    """
    mu, tau, eta = (np.asarray(x, dtype=float) for x in (mu, tau, eta))
    mu, tau = mu.reshape(1, -1), tau.reshape(1, -1)
    eta = eta.reshape(1, mu.shape[1], -1)
    return {"mu": mu, "tau": tau, "theta": theta_from(mu, tau, eta)}


def min_bulk_ess(draws: dict[str, np.ndarray]) -> tuple[float, dict[str, float]]:
    """Bulk ESS of every scalar in ``draws``; returns ``(min, by label)``.

    ``draws`` maps a name to an array shaped (chain, draw, *shape); a scalar site is
    labelled by its name, each element of a vector site as ``name[j]`` (``mu``,
    ``tau``, ``theta[0]``, ... on eight schools).
    """
    variables = {}
    for name, value in draws.items():
        value = np.asarray(value, dtype=float)
        dims = ("chain", "draw")
        if value.ndim > 2:
            value = value.reshape(*value.shape[:2], -1)
            dims += (f"{name}_dim",)
        variables[name] = (dims, value)
    ess = az.ess(xr.Dataset(variables), method="bulk")
    by_label = {}
    for name in draws:
        values = np.asarray(ess[name].values)
        if values.ndim == 0:
            by_label[name] = float(values)
        else:
            by_label.update({f"{name}[{j}]": float(v) for j, v in enumerate(values)})
    return min(by_label.values()), by_label


def _normal_logpdf(x, loc, scale):
    return -0.5 * ((x - loc) / scale) ** 2 - np.log(scale) - 0.5 * math.log(2 * math.pi)


def log_joint(x: np.ndarray, y: np.ndarray, sigma: np.ndarray) -> np.ndarray:
    r"""Log density of non-centered eight schools at unconstrained points ``x``.

    ``x`` has shape (..., 2 + J): ``(mu, log tau, eta_1..eta_J)``. Includes the
    log-Jacobian ``log tau`` of ``tau = exp(log tau)``:

    .. math::

        \log N(\mu; 0, 5) + \log \mathrm{HalfCauchy}(\tau; 5) + \log\tau
        + \sum_j \log N(\eta_j; 0, 1) + \sum_j \log N(y_j; \mu + \tau\eta_j, \sigma_j)
    """
    mu, log_tau, eta = x[..., 0], x[..., 1], x[..., 2:]
    tau = np.exp(log_tau)
    scale = HALF_CAUCHY_SCALE
    log_prior_tau = math.log(2 / (math.pi * scale)) - np.log1p((tau / scale) ** 2)
    theta = mu[..., None] + tau[..., None] * eta
    return (
        _normal_logpdf(mu, 0.0, MU_PRIOR_SD)
        + log_prior_tau
        + log_tau
        + _normal_logpdf(eta, 0.0, 1.0).sum(-1)
        + _normal_logpdf(y, theta, sigma).sum(-1)
    )


def gaussian_elbo(
    loc: np.ndarray,
    scale_tril: np.ndarray,
    y: np.ndarray,
    sigma: np.ndarray,
    num_draws: int = ELBO_DRAWS,
    seed: int = 0,
) -> np.ndarray:
    """ELBO (nats, whole data set) of ``N(loc, L L^T)`` guides on the unconstrained latents.

    ``loc`` (..., d) and ``scale_tril`` (..., d, d) in the order ``(mu, log tau, eta)``.
    ``E_q[log p(x, y)]`` uses the same ``num_draws`` standard-normal draws (from
    ``seed``) for every guide; the entropy is exact.
    """
    loc, scale_tril = np.asarray(loc, dtype=float), np.asarray(scale_tril, dtype=float)
    d = loc.shape[-1]
    z = np.random.default_rng(seed).standard_normal((num_draws, d))
    x = loc[..., None, :] + np.einsum("...ij,sj->...si", scale_tril, z)
    diag = np.abs(np.diagonal(scale_tril, axis1=-2, axis2=-1))
    entropy = 0.5 * d * math.log(2 * math.pi * math.e) + np.log(diag).sum(-1)
    y, sigma = np.asarray(y, dtype=float), np.asarray(sigma, dtype=float)
    return log_joint(x, y, sigma).mean(-1) + entropy


def running_mean(steps: np.ndarray, values: np.ndarray, window: int = WINDOW_STEPS):
    """Mean of ``values`` over the snapshots in the trailing ``window`` steps of each."""
    steps, values = np.asarray(steps), np.asarray(values, dtype=float)
    first = np.searchsorted(steps, steps - window, side="right")
    total = np.concatenate([[0.0], np.cumsum(values)])
    index = np.arange(len(values))
    return (total[index + 1] - total[first]) / (index + 1 - first)


def time_to_answer(
    steps: np.ndarray,
    times: np.ndarray,
    loc: np.ndarray,
    sd: np.ndarray,
    target: tuple[np.ndarray, np.ndarray],
    mean_tol: float = MEAN_TOL,
    sd_tol: float = SD_TOL,
) -> tuple[int | None, float]:
    """Step and seconds from which the guide's moments stay at the answer for good.

    ``loc`` and ``sd`` (snapshot, d): the guide's means and sds on the unconstrained
    latents (already averaged over the trailing window); ``target``: those of the
    family's optimum. At the answer every mean is within ``mean_tol`` target sds and
    every sd within a fraction ``sd_tol`` of the target's. ``(None, nan)`` if the last
    snapshot is not there: it never got there. Judged by the posterior, not the ELBO:
    on this posterior 0.2 nats of ELBO hide a 0.6 sd error of the mean.
    """
    ref_loc, ref_sd = target
    z = np.abs(np.asarray(loc) - ref_loc) / ref_sd
    ratio = np.abs(np.asarray(sd) / ref_sd - 1)
    there = (z.max(-1) < mean_tol) & (ratio.max(-1) < sd_tol)
    outside = np.flatnonzero(~there)
    first = int(outside[-1]) + 1 if outside.size else 0
    if first >= len(steps):
        return None, float("nan")
    return int(steps[first]), float(times[first])


def moments(loc: np.ndarray, scale_tril: np.ndarray) -> dict[str, np.ndarray]:
    """Mean and sd of ``mu`` and ``tau`` under Gaussian guides over ``(mu, log tau, ...)``.

    ``mu`` is Gaussian; ``tau`` is log-normal: mean ``exp(m + v / 2)``, sd
    ``mean * sqrt(exp(v) - 1)``.
    """
    loc, scale_tril = np.asarray(loc, dtype=float), np.asarray(scale_tril, dtype=float)
    var = (scale_tril[..., :2, :] ** 2).sum(-1)  # diagonal of L L^T for mu, log tau
    m, v = loc[..., 1], var[..., 1]
    tau_mean = np.exp(m + v / 2)
    return {
        "mu_mean": loc[..., 0],
        "mu_sd": np.sqrt(var[..., 0]),
        "tau_mean": tau_mean,
        "tau_sd": tau_mean * np.sqrt(np.expm1(v)),
    }
