"""What :func:`~inference.em.run_em` returns, and its DataTree."""

import json
from dataclasses import dataclass

import numpy as np
import xarray as xr


@dataclass(frozen=True)
class EMResult:
    r"""The product of :func:`run_em` (the best of its restarts). Arrays are numpy float64.

    Attributes
    ----------
    weights : ndarray, shape (K,)
        Mixture weights :math:`w_k`.
    locs : ndarray, shape (K, D)
        Component means :math:`\mu_k`.
    covariances : ndarray, shape (K, D, D)
        Component covariances :math:`\Sigma_k`, as full matrices for every covariance type.
    responsibilities : ndarray, shape (N, K)
        :math:`p(z_n = k \mid x_n, \theta)` at the returned parameters.
    log_likelihood : ndarray, shape (n_iter,)
        Entry ``i`` (0-based): the mean log-likelihood per point,
        :math:`\frac1N \sum_n \log p(x_n \mid \theta_i)`, at the parameters
        :math:`\theta_i` that iteration ``i`` starts from (:math:`\theta_0` is the start),
        computed in that iteration's E-step (nats). scikit-learn's ``lower_bounds_``.
    elbo : ndarray, shape (n_iter,)
        Entry ``i``: the ELBO per point at :math:`(q_{i+1}, \theta_i)`, just after the
        E-step set :math:`q_{i+1}(z_n) = p(z_n \mid x_n, \theta_i)`:
        :math:`\frac1N(\sum_{n,k} r_{nk} \log p(x_n, z_n{=}k \mid \theta_i)
        - \sum_{n,k} r_{nk} \log r_{nk} + \log p(\theta_i))`, computed from the
        responsibilities, not copied. The E-step closes the gap, so it equals
        ``log_likelihood[i]`` (plus :math:`\log p(\theta_i) / N` with a prior) up to
        round-off; it never decreases.
    elbo_after_m_step : ndarray, shape (n_iter,)
        Entry ``i``: the ELBO per point at :math:`(q_{i+1}, \theta_{i+1})`, after the
        M-step, same q (the prior term at :math:`\theta_{i+1}`). The M-step climbs:
        ``elbo[i] <= elbo_after_m_step[i] <= elbo[i + 1]``.
    lower_bound : float
        The objective per point at the returned parameters :math:`\theta_{n\_iter}`:
        the mean log-likelihood per point, or with a prior
        :math:`(\sum_n \log p(x_n \mid \theta) + \log p(\theta)) / N`, the log joint
        density of data and parameters (z summed out) per point. The restarts compete on
        it.
    n_iter : int
        Iterations (E-step + M-step) taken by the returned restart.
    converged : bool
        Whether the returned restart stopped because the objective per point changed by
        less than ``tol`` between two iterations (before ``max_iter``).
    elapsed_s : float
        Wall-clock seconds of the whole call: checks, every restart's start and EM.
    best_init : int
        Which restart was returned (0-based).
    init_lower_bounds : ndarray, shape (n_init,)
        ``lower_bound`` of every restart.
    init_seeds : tuple of int
        The seed of the ``numpy.random.RandomState`` each restart's k-means++ start used
        (empty with a dict ``init``).
    settings : dict
        The call's options: covariance, init ("k-means++" or "dict"), n_init, max_iter,
        tol, reg_covar, seed, prior (None or the dict as lists).

    Notes
    -----
    The model is :math:`z_n \sim \mathrm{Categorical}(w)`, :math:`x_n \mid z_n{=}k \sim
    \mathcal N(\mu_k, \Sigma_k)`. For any distribution :math:`q` over :math:`z`,
    :math:`\log p(x \mid \theta) = \mathrm{ELBO}(q, \theta) + \mathrm{KL}(q \,\|\,
    p(z \mid x, \theta))` with :math:`\mathrm{ELBO}(q, \theta) =
    \mathbb E_q[\log p(x, z \mid \theta)] - \mathbb E_q[\log q(z)]`. EM is coordinate
    ascent on the ELBO (Neal & Hinton 1998):

    - E-step: :math:`q(z_n{=}k) = r_{nk} = w_k \mathcal N(x_n \mid \mu_k, \Sigma_k) /
      \sum_j w_j \mathcal N(x_n \mid \mu_j, \Sigma_j)`, which makes the KL zero;
    - M-step: :math:`\theta \leftarrow \arg\max_\theta \mathbb E_q[\log p(x, z \mid
      \theta)]`: with :math:`N_k = \sum_n r_{nk}`, :math:`w_k = N_k / N`,
      :math:`\mu_k = \sum_n r_{nk} x_n / N_k`, :math:`\Sigma_k = \sum_n r_{nk}
      (x_n - \mu_k)(x_n - \mu_k)^\top / N_k + \epsilon I` (:math:`\epsilon` =
      ``reg_covar``; its diagonal for ``"diag"``, the mean of that for ``"spherical"``).

    With ``prior=`` the M-step maximises :math:`\mathbb E_q[\log p(x, z \mid \theta)]
    + \log p(\theta)` by conditional maximisation (ECM, Meng & Rubin 1993): weights,
    then means given the variances, then variances given the means (see
    :func:`~inference.em.steps.m_step`); this is the objective SVI with a Delta
    (MAP) guide climbs, :math:`\log p(x, \theta)`. No ``reg_covar`` is added then.

    References
    ----------
    Dempster, Laird & Rubin (1977). Maximum likelihood from incomplete data via the EM
    algorithm. JRSS B 39(1).
    Bishop (2006). Pattern Recognition and Machine Learning, ch. 9.
    Neal & Hinton (1998). A view of the EM algorithm that justifies incremental, sparse,
    and other variants. In Learning in Graphical Models.
    Meng & Rubin (1993). Maximum likelihood estimation via the ECM algorithm. Biometrika 80.
    """

    weights: np.ndarray
    locs: np.ndarray
    covariances: np.ndarray
    responsibilities: np.ndarray
    log_likelihood: np.ndarray
    elbo: np.ndarray
    elbo_after_m_step: np.ndarray
    lower_bound: float
    n_iter: int
    converged: bool
    elapsed_s: float
    best_init: int
    init_lower_bounds: np.ndarray
    init_seeds: tuple
    settings: dict

    def to_datatree(self, coords=None, method: str = "em") -> xr.DataTree:
        """The estimate as an ArviZ-layout DataTree, comparable with SVI and NUTS trees.

        Groups: ``posterior`` (chain=1, draw=1) with ``weights`` (component), ``locs``
        and ``variances`` (component, feature; the covariances' diagonals) and
        ``covariances`` (component, feature, feature_2); ``assignments`` with the
        responsibilities as ``z`` (data, z_value), as the Pyro engines name an
        enumerated site ``z``; ``em`` with the histories (dim ``iteration``).
        ``coords`` labels dims, as in ArviZ's converters.
        """
        coords = dict(coords or {})
        k, d = self.locs.shape
        names = {
            "component": np.arange(k),
            "feature": np.arange(d),
            "feature_2": np.arange(d),
            "data": np.arange(len(self.responsibilities)),
            "z_value": np.arange(k),
            "iteration": np.arange(self.n_iter),
        }
        for dim, labels in coords.items():
            if dim in names and len(labels) == len(names[dim]):
                names[dim] = list(labels)
        attrs = {
            "method": method,
            "inference": "em",
            "elapsed_s": self.elapsed_s,
            "n_iter": self.n_iter,
            "converged": int(self.converged),
            "lower_bound": self.lower_bound,
            "settings": json.dumps(self.settings),
        }
        one = (1, 1)
        variances = np.diagonal(self.covariances, axis1=-2, axis2=-1)
        posterior = xr.Dataset(
            {
                "weights": (("chain", "draw", "component"), self.weights.reshape(one + (k,))),
                "locs": (("chain", "draw", "component", "feature"), self.locs[None, None]),
                "variances": (("chain", "draw", "component", "feature"), variances[None, None]),
                "covariances": (
                    ("chain", "draw", "component", "feature", "feature_2"),
                    self.covariances[None, None],
                ),
            },
            coords={"chain": [0], "draw": [0]}
            | {n: names[n] for n in ("component", "feature")}
            | {"feature_2": names["feature_2"]},
            attrs=attrs,
        )
        assignments = xr.Dataset(
            {"z": (("data", "z_value"), self.responsibilities)},
            coords={"data": names["data"], "z_value": names["z_value"]},
            attrs=attrs,
        )
        history = xr.Dataset(
            {
                "log_likelihood": ("iteration", self.log_likelihood),
                "elbo": ("iteration", self.elbo),
                "elbo_after_m_step": ("iteration", self.elbo_after_m_step),
            },
            coords={"iteration": names["iteration"]},
            attrs=attrs,
        )
        return xr.DataTree.from_dict(
            {"posterior": posterior, "assignments": assignments, "em": history}
        )
