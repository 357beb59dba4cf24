r"""``run_em``: EM for a Gaussian mixture, maximum likelihood or MAP, read as VI.

One iteration is one pass over the data (:func:`~inference.em.steps.e_step`): the
responsibilities at the current parameters, the log-likelihood and the ELBO there, and
the statistics the M-step needs; then the M-step (:func:`~inference.em.steps.parameters`)
on those statistics.
"""

import math
import time
import warnings
from dataclasses import dataclass

import numpy as np
import torch
from sklearn.cluster import kmeans_plusplus
from tqdm.auto import tqdm

from inference.em.result import EMResult
from inference.em.steps import (
    COVARIANCE_TYPES,
    DTYPE,
    Statistics,
    accumulate,
    block_rows,
    blocks,
    e_step,
    empty_statistics,
    expected_log_joint,
    log_prior,
    make_prior,
    parameters,
    to_full,
)
from inference.isolation import check_seed
from inference.validation import check_keys, check_positive_float, check_positive_int

INIT_KEYS = ("weights", "locs", "covariances")


class EMConvergenceWarning(UserWarning):
    """The best restart of :func:`run_em` stopped at ``max_iter`` before converging."""


class CovarianceFloorWarning(UserWarning):
    """``reg_covar`` decided a covariance: without it, it would have been (near) singular."""


@dataclass
class _Restart:
    """One restart's outcome (torch parameters in compact form)."""

    params: tuple
    responsibilities: torch.Tensor
    log_likelihood: list
    elbo: list
    elbo_after_m_step: list
    lower_bound: float
    converged: bool
    last_change: float  # of the objective per point, between the last two iterations
    floored: dict  # component -> first iteration whose M-step floored it (0: the start)


def run_em(
    x,
    n_components,
    *,
    covariance="full",
    init="k-means++",
    n_init=1,
    max_iter=500,
    tol=1e-6,
    prior=None,
    seed=0,
    reg_covar=1e-6,
    progress_bar=False,
) -> EMResult:
    r"""Fit a Gaussian mixture by EM: maximum likelihood, or MAP with ``prior=``.

    Parameters
    ----------
    x : array_like or torch.Tensor, shape (N, D)
        The data; a 1-D array is one feature, ``(N,)`` -> ``(N, 1)``.
    n_components : int
        K, between 1 and N.
    covariance : {"full", "diag", "spherical"}
        The covariance type of every component.
    init : "k-means++" or dict
        ``"k-means++"``: centres chosen by scikit-learn's
        :func:`sklearn.cluster.kmeans_plusplus`, every point assigned to its nearest
        centre, and the parameters from one M-step on those hard assignments (scikit-learn's
        ``init_params="k-means++"`` instead puts each component on its centre point alone).
        A dict: the starting ``"weights"`` (K,), ``"locs"`` (K, D) and ``"covariances"``
        (K, D, D), used as given (also accepted: (K, D) for ``"diag"``, (K,) for
        ``"spherical"``; a (K, D, D) value must then be diagonal, resp. isotropic).
    n_init : int
        Restarts from k-means++ starts; the one with the highest ``lower_bound`` is
        returned. Restart ``i`` draws from ``numpy.random.RandomState(s_i)``, with
        ``s_i`` from ``numpy.random.SeedSequence(seed).spawn(n_init)[i]``, so restart 0 is
        the same for every ``n_init``. With a dict ``init`` all restarts would be the
        same and one is run.
    max_iter : int
        The most EM iterations per restart.
    tol : float
        Convergence: the objective per point (``lower_bound``'s quantity, at the
        parameters entering the iteration) changed by less than ``tol`` since the
        previous iteration; scikit-learn's rule, so ``n_iter`` matches its ``n_iter_``.
    prior : dict, optional
        MAP-EM with the Bayesian mixture's priors: ``"concentration"`` (Dirichlet on the
        weights; scalar or (K,), every entry >= 1), ``"loc_mean"`` and ``"loc_scale"``
        (``mu_kd ~ Normal(loc_mean_d, loc_scale_d)``; scalar or (D,)),
        ``"variance_shape"`` and ``"variance_rate"`` (each variance
        ``~ InverseGamma(shape, rate)``; scalar or (D,), scalar for ``"spherical"``).
        Needs covariance ``"diag"`` or ``"spherical"``.
    seed : int
        Seeds the k-means++ starts; the same seed gives the same numbers.
    reg_covar : float
        Covariance floor, added to every covariance's diagonal (maximum likelihood only);
        when it decides a covariance (an eigenvalue below it without it), a
        :class:`CovarianceFloorWarning` names the components, once per call.
    progress_bar : bool
        Show a tqdm bar per restart with the objective per point.

    Returns
    -------
    EMResult
        Warns :class:`EMConvergenceWarning` when the returned restart did not converge.
    """
    start_time = time.perf_counter()
    data = _check_data(x)
    num_points, num_features = data.shape
    num_components = check_positive_int("n_components", n_components)
    if num_components > num_points:
        raise ValueError(
            f"n_components={num_components} exceeds the number of data points N={num_points}"
        )
    if covariance not in COVARIANCE_TYPES:
        raise ValueError(f"covariance must be one of {COVARIANCE_TYPES}, got {covariance!r}")
    n_init = check_positive_int("n_init", n_init)
    max_iter = check_positive_int("max_iter", max_iter)
    tol = check_positive_float("tol", tol)
    seed = check_seed(seed)
    reg_covar = _check_reg_covar(reg_covar)
    prior_t = None if prior is None else make_prior(prior, num_components, num_features, covariance)
    start = _check_init(init, num_components, num_features, covariance)

    xt = torch.from_numpy(data).T.contiguous()
    if start is None:
        init_seeds = tuple(
            int(child.generate_state(1)[0]) for child in np.random.SeedSequence(seed).spawn(n_init)
        )
    else:
        init_seeds = ()
    num_restarts = max(1, len(init_seeds))
    best, bounds = None, []
    for restart in range(num_restarts):
        if start is None:
            random_state = np.random.RandomState(init_seeds[restart])
            params, floored = _kmeans_plusplus_start(
                data, xt, num_components, covariance, reg_covar, prior_t, random_state
            )
        else:
            params, floored = start, torch.zeros(num_components, dtype=torch.bool)
        bar = tqdm(
            total=max_iter,
            desc=f"em {restart + 1}/{num_restarts}",
            disable=not progress_bar,
            leave=False,
        )
        with bar:
            outcome = _climb(
                xt, params, floored, covariance, reg_covar, prior_t, max_iter, tol, bar
            )
        bounds.append(outcome.lower_bound)
        if best is None or outcome.lower_bound > best.lower_bound:
            best, best_init = outcome, restart
    _warn_about(best, reg_covar, max_iter, tol)
    weights, locs, covariances = best.params
    settings = {
        "covariance": covariance,
        "init": "k-means++" if start is None else "dict",
        "n_init": n_init,
        "max_iter": max_iter,
        "tol": tol,
        "reg_covar": reg_covar,
        "seed": seed,
        "prior": None if prior is None else {k: np.asarray(v).tolist() for k, v in prior.items()},
    }
    return EMResult(
        weights=_numpy_float64(weights),
        locs=_numpy_float64(locs),
        covariances=_numpy_float64(to_full(covariances, num_features)),
        responsibilities=_numpy_float64(best.responsibilities),
        log_likelihood=_numpy_float64(best.log_likelihood),
        elbo=_numpy_float64(best.elbo),
        elbo_after_m_step=_numpy_float64(best.elbo_after_m_step),
        lower_bound=best.lower_bound,
        n_iter=len(best.log_likelihood),
        converged=best.converged,
        elapsed_s=time.perf_counter() - start_time,
        best_init=best_init,
        init_lower_bounds=_numpy_float64(bounds),
        init_seeds=init_seeds,
        settings=settings,
    )


def _climb(xt, params, floored, covariance, reg_covar, prior, max_iter, tol, bar) -> _Restart:
    """EM iterations from ``params`` until the objective per point settles, then a last E-step."""
    num_points = xt.shape[1]
    floors = {int(k): 0 for k in torch.nonzero(floored).flatten()}
    log_p_theta = 0.0 if prior is None else float(log_prior(*params, prior))
    log_likelihood, elbo, elbo_after_m_step = [], [], []
    previous, change, converged = -math.inf, math.inf, False
    for iteration in range(1, max_iter + 1):
        e = e_step(xt, *params)
        bound = (e.log_likelihood + log_p_theta) / num_points
        log_likelihood.append(e.log_likelihood / num_points)
        elbo.append((e.elbo + log_p_theta) / num_points)
        *params, floored = parameters(e.statistics, covariance, reg_covar, prior, params[2])
        for k in torch.nonzero(floored).flatten().tolist():
            floors.setdefault(k, iteration)
        log_p_theta = 0.0 if prior is None else float(log_prior(*params, prior))
        after = expected_log_joint(e.statistics, *params) - e.expected_log_q + log_p_theta
        elbo_after_m_step.append(float(after) / num_points)
        bar.update()
        bar.set_postfix(lower_bound=f"{bound:.6g}", refresh=False)
        # scikit-learn's rule (sklearn/mixture/_base.py, fit_predict): the bound at the
        # parameters entering this iteration against the previous one, |change| < tol.
        change, previous = abs(bound - previous), bound
        if change < tol:
            converged = True
            break
    resp = torch.empty(num_points, params[0].shape[0], dtype=DTYPE)
    final = e_step(xt, *params, statistics=False, resp_out=resp)
    return _Restart(
        params=tuple(params),
        responsibilities=resp,
        log_likelihood=log_likelihood,
        elbo=elbo,
        elbo_after_m_step=elbo_after_m_step,
        lower_bound=(final.log_likelihood + log_p_theta) / num_points,
        converged=converged,
        last_change=change,
        floored=floors,
    )


def _kmeans_plusplus_start(data, xt, num_components, covariance, reg_covar, prior, random_state):
    """Parameters from one M-step on hard assignments to k-means++ centres (and floors)."""
    centres, _ = kmeans_plusplus(data, num_components, random_state=random_state)
    centres = torch.from_numpy(np.ascontiguousarray(centres, dtype=np.float64))
    num_features, num_points = xt.shape
    stats = empty_statistics(num_components, num_features, covariance)
    labels = torch.arange(num_components).unsqueeze(-1)
    for rows in blocks(num_points, block_rows(num_components, num_features)):
        diff = xt[:, rows].unsqueeze(0) - centres.unsqueeze(-1)
        nearest = diff.square().sum(1).argmin(0)
        accumulate(stats, diff, (labels == nearest).to(DTYPE), covariance)
    stats = Statistics(shift=centres, num_points=num_points, **stats)
    *params, floored = parameters(stats, covariance, reg_covar, prior)
    return tuple(params), floored


def _warn_about(best: _Restart, reg_covar: float, max_iter: int, tol: float) -> None:
    if best.floored:
        where = ", ".join(
            f"{k} (from {'the start' if it == 0 else f'iteration {it}'})"
            for k, it in sorted(best.floored.items())
        )
        warnings.warn(
            f"run_em applied the covariance floor reg_covar={reg_covar:g} to component(s) "
            f"{where}: without it their covariance had an eigenvalue (a variance) below "
            "reg_covar, as duplicated or collinear points give; such a covariance is the "
            "data's scatter + reg_covar * I",
            CovarianceFloorWarning,
            stacklevel=3,
        )
    if not best.converged:
        warnings.warn(
            f"run_em did not converge in max_iter={max_iter} iterations (last change of the "
            f"objective per point {best.last_change:.3g}, tol={tol:g}): increase max_iter "
            "or tol",
            EMConvergenceWarning,
            stacklevel=3,
        )


def _numpy_float64(value) -> np.ndarray:
    array = value.numpy() if isinstance(value, torch.Tensor) else value
    return np.asarray(array, dtype=np.float64)


def _numpy(value, what: str) -> np.ndarray:
    if isinstance(value, torch.Tensor):
        value = value.detach().cpu().numpy()
    array = np.asarray(value)
    if array.dtype.kind not in "biuf":
        raise ValueError(f"{what} must be numeric, got dtype {array.dtype}")
    return array.astype(np.float64, copy=False)


def _check_data(x) -> np.ndarray:
    data = _numpy(x, "x")
    if data.ndim == 1:
        data = data[:, None]
    if data.ndim != 2:
        raise ValueError(
            f"x must have shape (N, D) (a 1-D array is one feature), got a {data.ndim}-D "
            f"array of shape {data.shape}"
        )
    if data.shape[0] == 0 or data.shape[1] == 0:
        raise ValueError(f"x must have shape (N, D) with N, D >= 1, got shape {data.shape}")
    bad = ~np.isfinite(data).all(axis=1)
    if bad.any():
        raise ValueError(
            f"x has {int(bad.sum())} of {data.shape[0]} rows with NaN or infinite values "
            f"(the first is row {int(np.argmax(bad))}): remove or impute them"
        )
    return np.ascontiguousarray(data)


def _check_reg_covar(reg_covar) -> float:
    if isinstance(reg_covar, bool) or not isinstance(reg_covar, int | float):
        raise ValueError(f"reg_covar must be a number >= 0, got {reg_covar!r}")
    if not (math.isfinite(reg_covar) and reg_covar >= 0):
        raise ValueError(f"reg_covar must be a finite number >= 0, got {reg_covar!r}")
    return float(reg_covar)


def _check_init(init, num_components: int, num_features: int, covariance: str):
    """None for "k-means++"; the dict's parameters (compact torch tensors) otherwise."""
    if isinstance(init, str):
        if init != "k-means++":
            raise ValueError(f"init must be 'k-means++' or a dict of {INIT_KEYS}, got {init!r}")
        return None
    if not isinstance(init, dict):
        raise ValueError(f"init must be 'k-means++' or a dict of {INIT_KEYS}, got {type(init)}")
    check_keys("init", init, INIT_KEYS)
    k, d = num_components, num_features
    weights = _init_array(init, "weights", [(k,)], "(K,)")
    locs = _init_array(init, "locs", [(k, d)], "(K, D)")
    compact = {"full": [], "diag": [(k, d)], "spherical": [(k,)]}[covariance]
    covariances = _init_array(init, "covariances", [(k, d, d), *compact], "(K, D, D)")
    if (weights <= 0).any() or abs(weights.sum() - 1) > 1e-8:
        raise ValueError(
            f"init['weights'] must be positive and sum to 1, got {weights.tolist()} "
            f"(sum {weights.sum():.12g})"
        )
    if covariances.ndim == 3:
        covariances = _compact_covariances(covariances, covariance)
    return (
        torch.from_numpy(weights),
        torch.from_numpy(locs),
        _positive_definite(torch.from_numpy(covariances)),
    )


def _init_array(init: dict, key: str, shapes: list, expected: str) -> np.ndarray:
    array = _numpy(init[key], f"init[{key!r}]")
    if array.shape not in shapes:
        raise ValueError(
            f"init[{key!r}] must have shape {expected} = {shapes[0]}, got shape {array.shape}"
        )
    if not np.isfinite(array).all():
        raise ValueError(f"init[{key!r}] must be finite")
    return np.ascontiguousarray(array)


def _compact_covariances(matrices: np.ndarray, covariance: str) -> np.ndarray:
    if covariance == "full":
        if not np.allclose(matrices, matrices.transpose(0, 2, 1), rtol=1e-12, atol=0):
            raise ValueError("init['covariances'] must be symmetric matrices")
        return matrices
    diagonal = np.diagonal(matrices, axis1=1, axis2=2)
    if np.count_nonzero(matrices - np.apply_along_axis(np.diag, 1, diagonal)):
        raise ValueError(
            f"init['covariances'] must be diagonal matrices for covariance={covariance!r}"
        )
    if covariance == "diag":
        return np.ascontiguousarray(diagonal)
    if not np.allclose(diagonal, diagonal[:, :1], rtol=1e-12, atol=0):
        raise ValueError(
            "init['covariances'] must be multiples of the identity for covariance='spherical'"
        )
    return np.ascontiguousarray(diagonal[:, 0])


def _positive_definite(covariances: torch.Tensor) -> torch.Tensor:
    if covariances.dim() == 3:
        bad = torch.nonzero(torch.linalg.cholesky_ex(covariances).info > 0).flatten()
    else:
        bad = torch.nonzero(~(covariances > 0).reshape(covariances.shape[0], -1).all(-1))
        bad = bad.flatten()
    if bad.numel():
        raise ValueError(f"init['covariances'][{int(bad[0])}] is not positive definite")
    return covariances
