r"""The Gaussian mixture's exact pieces: component log densities, E-step, M-step, log prior.

The mixture is :math:`p(x_n \mid \theta) = \sum_k w_k \, \mathcal N(x_n \mid \mu_k, \Sigma_k)`.
Every function here is pure torch in float64 and vectorized over points and components.

Covariances come in the compact form of their type (scikit-learn's convention), and the
functions that read them tell the type from the shape:

- ``"full"``: ``(K, D, D)`` matrices;
- ``"diag"``: ``(K, D)`` per-dimension variances;
- ``"spherical"``: ``(K,)`` one variance per component.

Log densities use the Cholesky factor ``L`` of each covariance (``Sigma = L L^T``):
the Mahalanobis distance is ``||L^{-1} (x - mu)||^2``, with ``L^{-1}`` computed once per
component by a triangular solve, never an explicit inverse of ``Sigma``. Points are
taken in blocks of columns of the transposed data ``(D, N)`` so that every temporary
(at most ``(K, D, block)``) stays in cache; no ``(N, K, D, D)`` tensor is ever formed.

The M-step reads the data only through expected sufficient statistics
(:class:`Statistics`): the responsibilities' column sums, and the first and second
moments of ``x - c_k`` about a shift ``c_k`` per component. About the component's own
weighted mean (:func:`m_step`) these are the two-pass formulas; :func:`run_em` shifts
by the previous iteration's means, which lets one pass over the data do the E-step and
gather the M-step's statistics, and loses no precision unless a mean moves by many
standard deviations in one iteration.
"""

import math
from dataclasses import dataclass

import numpy as np
import torch

from inference.validation import check_keys

COVARIANCE_TYPES = ("full", "diag", "spherical")
PRIOR_KEYS = ("concentration", "loc_mean", "loc_scale", "variance_shape", "variance_rate")
DTYPE = torch.float64
# Points per block: about 2**19 numbers in each (K, D, block) temporary (4 MiB), which
# stays in a core's L2 cache. Measured (2026-12-03, N = 1e6, D = 2, K = 3, 2 threads):
# one EM iteration takes 28 ms in blocks of 65,536 points, 34 ms in blocks of 16,384 and
# 91-220 ms on the whole data at once (every large temporary is a fresh page-faulted
# allocation).
BLOCK_NUMBERS = 2**19
# Added to the responsibilities' column sums before dividing, as scikit-learn does, so
# that an empty component keeps finite parameters.
EMPTY_COMPONENT_MASS = 10 * float(np.finfo(np.float64).eps)
LOG_2PI = math.log(2 * math.pi)


@dataclass(frozen=True)
class Statistics:
    """Expected sufficient statistics of the mixture under responsibilities ``r``.

    count: ``(K,)`` sums ``N_k = sum_n r_nk``. shift: ``(K, D)`` the point ``c_k`` the
    moments are taken about. first: ``(K, D)`` ``sum_n r_nk (x_n - c_k)``. second:
    ``sum_n r_nk (x_n - c_k)(x_n - c_k)^T`` as ``(K, D, D)`` for ``"full"``, only its
    diagonal ``(K, D)`` for ``"diag"`` and ``"spherical"``. num_points: ``N``.
    """

    count: torch.Tensor
    shift: torch.Tensor
    first: torch.Tensor
    second: torch.Tensor
    num_points: int


@dataclass(frozen=True)
class Prior:
    r"""The Bayesian mixture's priors as tensors that broadcast against the parameters.

    ``w ~ Dirichlet(concentration)``; ``mu_kd ~ Normal(loc_mean_d, loc_scale_d)``; each
    variance (``sigma^2_kd`` for ``"diag"``, ``sigma^2_k`` for ``"spherical"``)
    ``~ InverseGamma(variance_shape, variance_rate)``. Build one with :func:`make_prior`.
    """

    concentration: torch.Tensor
    loc_mean: torch.Tensor
    loc_scale: torch.Tensor
    variance_shape: torch.Tensor
    variance_rate: torch.Tensor


def as_tensor(value) -> torch.Tensor:
    """``value`` (array_like or tensor) as a float64 CPU tensor; read-only arrays are copied."""
    if isinstance(value, torch.Tensor):
        return value.detach().to(device="cpu", dtype=DTYPE)
    array = np.asarray(value, dtype=np.float64)
    return torch.from_numpy(array if array.flags.writeable else array.copy())


def as_data(x) -> torch.Tensor:
    """``x`` as a float64 tensor of shape ``(N, D)``; a 1-D array is one feature."""
    x = as_tensor(x)
    return x.unsqueeze(-1) if x.dim() == 1 else x


def covariance_type(covariances: torch.Tensor) -> str:
    """``"full"``, ``"diag"`` or ``"spherical"``, read from the compact shape."""
    return {3: "full", 2: "diag", 1: "spherical"}[covariances.dim()]


def to_full(covariances, num_features: int) -> torch.Tensor:
    """Compact covariances of any type as ``(K, D, D)`` matrices."""
    covariances = as_tensor(covariances)
    kind = covariance_type(covariances)
    if kind == "full":
        return covariances
    variances = covariances.unsqueeze(-1) if kind == "spherical" else covariances
    return torch.diag_embed(variances.expand(-1, num_features))


def precision_factor(covariances: torch.Tensor, num_features: int):
    """``(W, log_det_W)`` with ``W Sigma_k W^T = I``, and ``log|W| = -log|Sigma_k| / 2``.

    ``W = L^{-1}`` ``(K, D, D)`` (lower triangular) for full covariances, the inverse
    standard deviations ``(K, D)`` for diagonal and spherical ones. A covariance that is
    not positive definite raises ValueError naming the component.
    """
    if covariance_type(covariances) == "full":
        chol, info = torch.linalg.cholesky_ex(covariances)
        bad = torch.nonzero((info > 0) | ~torch.isfinite(chol).all(-1).all(-1)).flatten()
        if bad.numel():
            raise ValueError(
                f"the covariance of component {int(bad[0])} is not positive definite: "
                "increase reg_covar or decrease n_components"
            )
        eye = torch.eye(num_features, dtype=DTYPE).expand_as(covariances)
        factor = torch.linalg.solve_triangular(chol, eye, upper=False)
        return factor, torch.diagonal(factor, dim1=-2, dim2=-1).log().sum(-1)
    bad = torch.nonzero(~((covariances > 0) & torch.isfinite(covariances))).flatten()
    if bad.numel():
        raise ValueError(
            f"the variance of component {int(bad[0])} is not positive: increase reg_covar "
            "or decrease n_components"
        )
    variances = covariances.unsqueeze(-1) if covariances.dim() == 1 else covariances
    factor = variances.rsqrt().expand(-1, num_features)
    return factor, factor.log().sum(-1)


def block_rows(num_components: int, num_features: int) -> int:
    """Points per block, so that a ``(K, D, block)`` temporary holds ~BLOCK_NUMBERS."""
    return max(1024, BLOCK_NUMBERS // (num_components * num_features))


def blocks(num_points: int, rows: int):
    """Slices of consecutive points, ``rows`` at a time."""
    for start in range(0, num_points, rows):
        yield slice(start, min(start + rows, num_points))


@dataclass(frozen=True)
class _Mixture:
    """What the component log densities need, computed once per parameter value."""

    log_const: torch.Tensor  # (K,) log w_k - D/2 log 2 pi - log|Sigma_k| / 2
    locs: torch.Tensor  # (K, D)
    factor: torch.Tensor  # (K, D, D) or (K, D)

    @classmethod
    def of(cls, weights, locs, covariances) -> "_Mixture":
        weights = as_tensor(weights)
        locs = as_tensor(locs)
        covariances = as_tensor(covariances)
        num_features = locs.shape[-1]
        factor, log_det = precision_factor(covariances, num_features)
        log_const = weights.log() + log_det - 0.5 * num_features * LOG_2PI
        return cls(log_const, locs, factor)

    def log_joint(self, xt: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(log w_k + log N(x_n | mu_k, Sigma_k)  (K, B),  x_n - mu_k  (K, D, B))``."""
        diff = xt.unsqueeze(0) - self.locs.unsqueeze(-1)
        if self.factor.dim() == 3:
            white = torch.bmm(self.factor, diff)
        else:
            white = diff * self.factor.unsqueeze(-1)
        log_joint = white.square_().sum(1).mul_(-0.5).add_(self.log_const.unsqueeze(-1))
        return log_joint, diff


def _posterior(log_joint: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Responsibilities ``(K, B)`` and ``log p(x_n)`` ``(B,)`` by a stable log-sum-exp."""
    top = log_joint.amax(0)
    scaled = (log_joint - top).exp_()
    total = scaled.sum(0)
    return scaled.div_(total), total.log_().add_(top)


def log_prob_components(x, weights, locs, covariances) -> torch.Tensor:
    """``log w_k + log N(x_n | mu_k, Sigma_k)`` for every point and component, ``(N, K)``.

    Parameters
    ----------
    x : array_like, shape (N, D) (or (N,) for one feature)
    weights : array_like, shape (K,)
    locs : array_like, shape (K, D)
    covariances : array_like, shape (K, D, D), (K, D) or (K,)
        Full matrices, diagonal variances or one variance per component.
    """
    x = as_data(x)
    mixture = _Mixture.of(weights, locs, covariances)
    out = torch.empty(x.shape[0], mixture.locs.shape[0], dtype=DTYPE)
    xt = x.T.contiguous()
    for rows in blocks(x.shape[0], block_rows(*mixture.locs.shape)):
        out[rows] = mixture.log_joint(xt[:, rows])[0].T
    return out


def log_likelihood(x, weights, locs, covariances) -> torch.Tensor:
    """Per-point log-likelihood ``log p(x_n | theta)``, ``(N,)`` (nats)."""
    return torch.logsumexp(log_prob_components(x, weights, locs, covariances), dim=1)


def responsibilities(x, weights, locs, covariances) -> torch.Tensor:
    """The E-step: ``p(z_n = k | x_n, theta)``, ``(N, K)``; each row sums to 1."""
    return torch.softmax(log_prob_components(x, weights, locs, covariances), dim=1)


def accumulate(stats: dict, diff: torch.Tensor, resp: torch.Tensor, covariance: str) -> None:
    """Add one block's statistics to ``stats`` (keys count, first, second), in place.

    ``diff`` is ``x - shift`` as ``(K, D, B)``, ``resp`` the responsibilities ``(K, B)``.
    """
    weighted = diff * resp.unsqueeze(1)
    stats["count"] += resp.sum(1)
    stats["first"] += weighted.sum(2)
    if covariance == "full":
        stats["second"] += torch.bmm(weighted, diff.mT)
    else:
        stats["second"] += weighted.mul_(diff).sum(2)


def empty_statistics(num_components: int, num_features: int, covariance: str) -> dict:
    """Zeroed accumulators for :func:`accumulate`."""
    second = (num_components, num_features) + ((num_features,) if covariance == "full" else ())
    return {
        "count": torch.zeros(num_components, dtype=DTYPE),
        "first": torch.zeros(num_components, num_features, dtype=DTYPE),
        "second": torch.zeros(second, dtype=DTYPE),
    }


def statistics(x, resp, covariance: str, shift=None) -> Statistics:
    """Expected sufficient statistics of ``x`` ``(N, D)`` under ``resp`` ``(N, K)``.

    ``shift`` defaults to each component's weighted mean (the two-pass formulas).
    """
    x, resp = as_data(x), as_tensor(resp)
    xt, resp_t = x.T.contiguous(), resp.T.contiguous()
    if shift is None:
        shift = (resp_t @ x) / (resp_t.sum(1) + EMPTY_COMPONENT_MASS).unsqueeze(-1)
    num_components, num_features = shift.shape
    stats = empty_statistics(num_components, num_features, covariance)
    for rows in blocks(x.shape[0], block_rows(num_components, num_features)):
        diff = xt[:, rows].unsqueeze(0) - shift.unsqueeze(-1)
        accumulate(stats, diff, resp_t[:, rows], covariance)
    return Statistics(shift=shift, num_points=x.shape[0], **stats)


@dataclass(frozen=True)
class EStep:
    """One pass of the E-step over the data, at parameters ``theta`` (sums over points, nats).

    log_likelihood: ``sum_n log p(x_n | theta)``. expected_log_joint:
    ``sum_n sum_k r_nk log(w_k N(x_n | mu_k, Sigma_k))``. expected_log_q:
    ``sum_n sum_k r_nk log r_nk`` (minus the entropy of q). statistics: the M-step's
    :class:`Statistics` about ``shift = mu`` (None when not asked for).
    """

    log_likelihood: float
    expected_log_joint: float
    expected_log_q: float
    statistics: Statistics | None

    @property
    def elbo(self) -> float:
        """``E_q[log p(x, z | theta)] - E_q[log q(z)]`` with ``q = r``, summed over points."""
        return self.expected_log_joint - self.expected_log_q


def e_step(xt, weights, locs, covariances, *, statistics=True, resp_out=None) -> EStep:
    """The E-step in one pass over ``xt`` ``(D, N)``, block by block.

    Computes ``r_nk = p(z_n = k | x_n, theta)`` and from it the log-likelihood, the two
    expectations of the ELBO, and (``statistics=True``) the M-step's statistics about
    the current means; the responsibilities are written into ``resp_out`` ``(N, K)``
    when given, else dropped block by block.
    """
    mixture = _Mixture.of(weights, locs, covariances)
    num_features, num_points = xt.shape
    num_components = mixture.locs.shape[0]
    kind = covariance_type(as_tensor(covariances))
    stats = empty_statistics(num_components, num_features, kind) if statistics else None
    sums = torch.zeros(3, dtype=DTYPE)
    for rows in blocks(num_points, block_rows(num_components, num_features)):
        log_joint, diff = mixture.log_joint(xt[:, rows])
        resp, log_evidence = _posterior(log_joint)
        log_resp = log_joint - log_evidence
        sums[0] += log_evidence.sum()
        sums[1] += torch.dot(resp.view(-1), log_joint.view(-1))
        sums[2] += torch.dot(resp.view(-1), log_resp.view(-1))
        if stats is not None:
            accumulate(stats, diff, resp, kind)
        if resp_out is not None:
            resp_out[rows] = resp.T
    if stats is not None:
        stats = Statistics(shift=mixture.locs, num_points=num_points, **stats)
    log_likelihood, expected_log_joint, expected_log_q = sums.tolist()
    return EStep(log_likelihood, expected_log_joint, expected_log_q, stats)


def _scatter(stats: Statistics, locs: torch.Tensor) -> torch.Tensor:
    """``sum_n r_nk (x_n - mu_k)(x_n - mu_k)^T`` (or its diagonal) from the statistics."""
    delta = locs - stats.shift
    count = stats.count
    if stats.second.dim() == 3:
        cross = stats.first.unsqueeze(-1) * delta.unsqueeze(-2)
        outer = delta.unsqueeze(-1) * delta.unsqueeze(-2)
        return stats.second - cross - cross.mT + count[:, None, None] * outer
    return stats.second - 2 * delta * stats.first + count.unsqueeze(-1) * delta.square()


def parameters(
    stats: Statistics,
    covariance: str,
    reg_covar: float = 1e-6,
    prior: Prior | None = None,
    previous_covariances: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """The M-step from statistics: ``(weights, locs, covariances, floored)``.

    ``floored`` is a ``(K,)`` bool tensor: the components whose covariance had an
    eigenvalue (a variance) below ``reg_covar`` before the floor was added. With a
    prior no floor is added (the inverse-gamma prior keeps variances positive) and
    ``floored`` is all False. See :func:`m_step` for the formulas.
    """
    count = stats.count + EMPTY_COMPONENT_MASS
    num_features = stats.shift.shape[-1]
    if prior is None:
        weights = count / count.sum()
        locs = stats.shift + stats.first / count.unsqueeze(-1)
        raw = _scatter(stats, locs)
        raw = raw / (count[:, None, None] if covariance == "full" else count.unsqueeze(-1))
        if covariance == "full":
            floored = torch.linalg.eigvalsh(raw).amin(-1) < reg_covar
            covariances = raw + reg_covar * torch.eye(num_features, dtype=DTYPE)
        else:
            raw = raw if covariance == "diag" else raw.mean(-1)
            floored = raw < reg_covar if covariance == "spherical" else (raw < reg_covar).any(-1)
            covariances = raw + reg_covar
        return weights, locs, covariances, floored
    if covariance == "full":
        raise ValueError('prior= needs covariance="diag" (or "spherical"), not "full"')
    excess = count + prior.concentration - 1
    weights = excess / excess.sum()
    if previous_covariances is None:
        locs = stats.shift + stats.first / count.unsqueeze(-1)
    else:
        variances = as_tensor(previous_covariances)
        variances = variances.unsqueeze(-1) if covariance == "spherical" else variances
        data_precision = count.unsqueeze(-1) / variances
        prior_precision = prior.loc_scale.square().reciprocal()
        pull = stats.first / variances + (prior.loc_mean - stats.shift) * prior_precision
        locs = stats.shift + pull / (data_precision + prior_precision)
    scatter = _scatter(stats, locs)
    if covariance == "diag":
        half_count = count.unsqueeze(-1) / 2
    else:
        scatter, half_count = scatter.sum(-1), count * num_features / 2
    covariances = (prior.variance_rate + scatter / 2) / (prior.variance_shape + 1 + half_count)
    return weights, locs, covariances, torch.zeros(count.shape, dtype=torch.bool)


def m_step(x, resp, covariance: str, reg_covar: float = 1e-6, prior=None, *, previous=None):
    r"""The M-step: the parameters that maximise the expected complete log-likelihood.

    Parameters
    ----------
    x : array_like, shape (N, D)
    resp : array_like, shape (N, K)
        Responsibilities ``r_nk`` (rows sum to 1).
    covariance : {"full", "diag", "spherical"}
    reg_covar : float
        Added to the diagonal of every covariance (maximum likelihood only).
    prior : dict or Prior, optional
        MAP M-step with the Bayesian model's priors (``"diag"`` or ``"spherical"``).
    previous : array_like, optional
        With a prior, the previous covariances (compact): the means are updated given
        them (ECM). Without, the means are the weighted data means.

    Returns
    -------
    weights : torch.Tensor, shape (K,)
    locs : torch.Tensor, shape (K, D)
    covariances : torch.Tensor, shape (K, D, D), (K, D) or (K,)
        The compact form of ``covariance``.

    Notes
    -----
    With :math:`N_k = \sum_n r_{nk}` and :math:`\bar x_k = \sum_n r_{nk} x_n / N_k`,
    maximum likelihood gives :math:`w_k = N_k / N`, :math:`\mu_k = \bar x_k` and
    :math:`\Sigma_k = \sum_n r_{nk}(x_n - \mu_k)(x_n - \mu_k)^\top / N_k + \epsilon I`
    (``reg_covar`` :math:`= \epsilon`; the diagonal of it for ``"diag"``, the mean of the
    diagonal for ``"spherical"``). With a prior (ECM, Meng & Rubin 1993):
    :math:`w_k \propto N_k + \alpha_k - 1`; then, given the previous variances,
    :math:`\mu_{kd} = (N_k \bar x_{kd} / \sigma^2_{kd} + m_d / s_d^2) /
    (N_k / \sigma^2_{kd} + 1 / s_d^2)`; then, given the new means,
    :math:`\sigma^2_{kd} = (b + S_{kd}/2) / (a + 1 + N_k/2)` with
    :math:`S_{kd} = \sum_n r_{nk}(x_{nd} - \mu_{kd})^2` (for ``"spherical"``, :math:`S_k`
    summed over dimensions and :math:`N_k D / 2`). :math:`N_k` carries ``10 * eps``
    so that an empty component keeps finite parameters, as in scikit-learn.
    """
    x = as_data(x)
    if covariance not in COVARIANCE_TYPES:
        raise ValueError(f"covariance must be one of {COVARIANCE_TYPES}, got {covariance!r}")
    resp = as_tensor(resp)
    if prior is not None and not isinstance(prior, Prior):
        prior = make_prior(prior, resp.shape[1], x.shape[1], covariance)
    if previous is not None:
        previous = as_tensor(previous)
    stats = statistics(x, resp, covariance)
    return parameters(stats, covariance, reg_covar, prior, previous)[:3]


def expected_log_joint(stats: Statistics, weights, locs, covariances) -> torch.Tensor:
    r"""``sum_n sum_k r_nk log(w_k N(x_n | mu_k, Sigma_k))`` from the statistics (nats).

    The expected complete-data log-likelihood at any parameters under the
    responsibilities the statistics were gathered with: :math:`\sum_k N_k(\log w_k -
    \tfrac D2 \log 2\pi - \tfrac12 \log|\Sigma_k|) - \tfrac12 \sum_k
    \mathrm{tr}(\Sigma_k^{-1} C_k)`, :math:`C_k = \sum_n r_{nk}(x_n-\mu_k)(x_n-\mu_k)^\top`.
    """
    mixture = _Mixture.of(weights, locs, covariances)
    scatter = _scatter(stats, mixture.locs)
    if mixture.factor.dim() == 3:
        quadratic = (mixture.factor @ scatter @ mixture.factor.mT).diagonal(dim1=-2, dim2=-1)
    else:
        if scatter.dim() == 3:
            scatter = scatter.diagonal(dim1=-2, dim2=-1)
        quadratic = scatter * mixture.factor.square()
    return (stats.count * mixture.log_const).sum() - 0.5 * quadratic.sum()


def _vector(prior: dict, key: str, size: int, what: str, scalar_only: bool) -> torch.Tensor:
    value = as_tensor(prior[key])
    allowed = "a scalar" if scalar_only else f"a scalar or have shape ({what},) = ({size},)"
    if value.dim() > 1 or (value.dim() == 1 and (scalar_only or value.shape[0] != size)):
        raise ValueError(f"prior[{key!r}] must be {allowed}, got shape {tuple(value.shape)}")
    if not bool(torch.isfinite(value).all()):
        raise ValueError(f"prior[{key!r}] must be finite, got {prior[key]!r}")
    return value.expand(size) if value.dim() == 0 and not scalar_only else value


def make_prior(prior: dict, num_components: int, num_features: int, covariance: str) -> Prior:
    """Check a ``prior=`` dict (keys: :data:`PRIOR_KEYS`) and turn it into a :class:`Prior`."""
    if covariance == "full":
        raise ValueError(
            'prior= needs covariance="diag" (or "spherical"): the conjugate per-dimension '
            'inverse-gamma prior has no full-covariance form here; got covariance="full"'
        )
    if not isinstance(prior, dict):
        raise ValueError(f"prior must be a dict with keys {PRIOR_KEYS}, got {type(prior)}")
    check_keys("prior", prior, PRIOR_KEYS)
    spherical = covariance == "spherical"
    concentration = _vector(prior, "concentration", num_components, "K", False)
    if not bool((concentration >= 1).all()):
        raise ValueError(
            "prior['concentration'] must be >= 1 (a MAP estimate of the weights needs "
            f"alpha_k >= 1), got {prior['concentration']!r}"
        )
    out = {"concentration": concentration}
    for key in PRIOR_KEYS[1:]:
        out[key] = _vector(prior, key, num_features, "D", spherical and key.startswith("var"))
        if key != "loc_mean" and not bool((out[key] > 0).all()):
            raise ValueError(f"prior[{key!r}] must be > 0, got {prior[key]!r}")
    return Prior(**out)


def log_prior(weights, locs, covariances, prior: Prior) -> torch.Tensor:
    """``log p(theta)`` under :class:`Prior` (nats); covariances diag ``(K, D)`` or ``(K,)``."""
    weights, locs = as_tensor(weights), as_tensor(locs)
    variances = as_tensor(covariances)
    alpha = prior.concentration
    log_dirichlet = (
        torch.lgamma(alpha.sum())
        - torch.lgamma(alpha).sum()
        + torch.xlogy(alpha - 1, weights).sum()
    )
    scale = prior.loc_scale
    z = (locs - prior.loc_mean) / scale
    log_normal = (-0.5 * z.square() - scale.log() - 0.5 * LOG_2PI).sum()
    shape, rate = prior.variance_shape, prior.variance_rate
    log_inverse_gamma = (
        shape * rate.log() - torch.lgamma(shape) - (shape + 1) * variances.log() - rate / variances
    ).sum()
    return log_dirichlet + log_normal + log_inverse_gamma
