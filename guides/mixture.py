r"""Hand-written guides for :func:`models.mixture.model`: MAP ("variational EM") and
mean-field.

Both cover the globals only; the assignments ``z`` are summed out by
``elbo="enum"``, which makes the E-step exact: with point masses on the globals,
maximising the ELBO is EM on the posterior density (MAP-EM), one gradient step at a
time, on minibatches if the model is given them.

- :func:`map_guide`: ``Delta`` on ``weights``, ``locs``, ``variances`` (and
  ``corr_chol`` for ``covariance="full"``).
- :func:`meanfield_guide`: ``Dirichlet`` on the weights, ``Normal`` on each location
  coordinate, ``LogNormal`` on each variance (``covariance="diag"`` only).

Both start their locations at k-means++ centres (scikit-learn's ``kmeans_plusplus`` on
at most :data:`INIT_POINTS` rows, seeded from torch's generator, so a fit's ``seed``
fixes them), the variances at each dim's data variance and the weights uniform:
a mixture started with every component in one place never separates them.
"""

import numpy as np
import pyro
import pyro.distributions as dist
import torch
from pyro.distributions import constraints

__all__ = ["INIT_POINTS", "PARAM_PREFIX", "map_guide", "meanfield_guide"]

PARAM_PREFIX = "mixture."
INIT_POINTS = 10_000  # rows k-means++ sees; a larger data set is subsampled for the start


def _start(x, n_components: int) -> dict[str, np.ndarray]:
    """Initial ``locs`` (K, D) by k-means++ and ``variances`` (K, D), ``weights`` (K,)."""
    from sklearn.cluster import kmeans_plusplus

    seed = int(torch.randint(2**31 - 1, ()).item())
    rng = np.random.default_rng(seed)
    n = x.shape[0]
    rows = np.sort(rng.choice(n, INIT_POINTS, replace=False)) if n > INIT_POINTS else slice(None)
    sample = np.asarray(x[rows] if isinstance(x, np.ndarray) else x.cpu().numpy()[rows])
    sample = sample.reshape(len(sample), -1).astype(np.float64)
    if n_components > len(sample):
        raise ValueError(f"n_components ({n_components}) exceeds the number of points ({n})")
    centres, _ = kmeans_plusplus(sample, n_components, random_state=seed)
    variance = np.maximum(sample.var(0), 1e-6)
    return {
        "locs": centres,
        "variances": np.tile(variance, (n_components, 1)),
        "weights": np.full(n_components, 1.0 / n_components),
    }


def _param(name, start, key, dtype, constraint=constraints.real):
    return pyro.param(
        PARAM_PREFIX + name,
        lambda: torch.as_tensor(start()[key], dtype=dtype),
        constraint=constraint,
    )


class _LazyStart:
    """k-means++ once, on the first parameter that needs it."""

    def __init__(self, x, n_components):
        self.x, self.n_components, self.value = x, n_components, None

    def __call__(self):
        if self.value is None:
            self.value = _start(self.x, self.n_components)
        return self.value


def _dtype(x):
    return x.dtype if isinstance(x, torch.Tensor) and x.is_floating_point() else torch.float64


def map_guide(
    x, n_components=3, priors=None, covariance="diag", subsample_size=None, subsample=None
):
    """Point masses on the globals of :func:`models.mixture.model`; same signature.

    Params (prefix ``mixture.``): ``weights`` (simplex), ``locs``, ``variances``
    (positive) and, for ``covariance="full"``, ``corr_chol`` (correlation Cholesky,
    starting at the identity).
    """
    dtype, start = _dtype(x), _LazyStart(x, n_components)
    weights = _param("weights", start, "weights", dtype, constraints.simplex)
    locs = _param("locs", start, "locs", dtype)
    variances = _param("variances", start, "variances", dtype, constraints.positive)
    pyro.sample("weights", dist.Delta(weights, event_dim=1))
    with pyro.plate("component", n_components):
        pyro.sample("locs", dist.Delta(locs, event_dim=1))
        pyro.sample("variances", dist.Delta(variances, event_dim=1))
        if covariance == "full":
            d = locs.shape[-1]
            corr = pyro.param(
                PARAM_PREFIX + "corr_chol",
                lambda: torch.eye(d, dtype=dtype).expand(n_components, d, d).clone(),
                constraint=constraints.corr_cholesky,
            )
            pyro.sample("corr_chol", dist.Delta(corr, event_dim=2))


def meanfield_guide(
    x, n_components=3, priors=None, covariance="diag", subsample_size=None, subsample=None
):
    """Mean-field guide over the globals of :func:`models.mixture.model`; same signature.

    ``weights ~ Dirichlet(c)``, ``locs_kd ~ Normal(m_kd, s_kd)``,
    ``variances_kd ~ LogNormal(u_kd, v_kd)``; params (prefix ``mixture.``)
    ``weights_concentration``, ``locs_loc``, ``locs_scale``, ``variances_loc``,
    ``variances_scale``. The scales start small (a tenth of a data sd for the
    locations, 0.1 on the log variances) and the concentration at N / K, so the first
    steps act like EM's.
    """
    if covariance != "diag":
        raise ValueError("meanfield_guide covers covariance='diag' only; use map_guide")
    dtype, start = _dtype(x), _LazyStart(x, n_components)
    # A Dirichlet posterior's concentration is about N_k + alpha: start at N / K, where
    # its spread is the right size. From 10 Adam took 5000 steps to bring it to ~250 of
    # ~1000 on the gmm case (2026-12-03): the weights' sds stayed 2.4x too wide.
    concentration = pyro.param(
        PARAM_PREFIX + "weights_concentration",
        lambda: torch.full((n_components,), max(x.shape[0] / n_components, 1.0), dtype=dtype),
        constraint=constraints.positive,
    )
    locs_loc = _param("locs_loc", start, "locs", dtype)
    locs_scale = pyro.param(
        PARAM_PREFIX + "locs_scale",
        lambda: 0.1 * torch.as_tensor(start()["variances"], dtype=dtype).sqrt(),
        constraint=constraints.positive,
    )
    variances_loc = pyro.param(
        PARAM_PREFIX + "variances_loc",
        lambda: torch.as_tensor(start()["variances"], dtype=dtype).log(),
    )
    variances_scale = pyro.param(
        PARAM_PREFIX + "variances_scale",
        lambda: torch.full_like(variances_loc, 0.1),
        constraint=constraints.positive,
    )
    pyro.sample("weights", dist.Dirichlet(concentration))
    with pyro.plate("component", n_components):
        pyro.sample("locs", dist.Normal(locs_loc, locs_scale).to_event(1))
        pyro.sample("variances", dist.LogNormal(variances_loc, variances_scale).to_event(1))
