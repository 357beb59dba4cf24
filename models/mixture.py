r"""The Bayesian Gaussian mixture: K components in D dimensions, assignments summed out.

.. math::

    w &\sim \mathrm{Dirichlet}(\alpha \mathbf{1}_K) \\
    \mu_{kd} &\sim \mathcal{N}(m_d, s_d^2) \\
    \sigma^2_{kd} &\sim \mathrm{InverseGamma}(a, b_d) \\
    z_n \mid w &\sim \mathrm{Categorical}(w), \qquad n = 1, \dots, N \\
    x_n \mid z_n = k &\sim \mathcal{N}(\mu_k, \Sigma_k)

with :math:`\Sigma_k = \mathrm{diag}(\sigma^2_k)` (``covariance="diag"``), or
:math:`\Sigma_k = \mathrm{diag}(\sigma_k)\, L_k L_k^\top \mathrm{diag}(\sigma_k)` with a
correlation Cholesky factor :math:`L_k \sim \mathrm{LKJCholesky}(D, \eta)`
(``covariance="full"``). The assignments are marked for enumeration, so every vilab
engine sums them out exactly. The priors are conjugate enough that EM with them
(:func:`inference.run_em` with ``prior=priors.as_em_prior()``) maximises the same
posterior density as SVI with a point-mass guide.

Also here: :func:`gauss_mix_1d`, posteriordb's ``low_dim_gauss_mix`` (two ordered
components in one dimension) with its data and reference posterior; the synthetic
data of the ``gmm`` case (:func:`simulate`) and scikit-learn's bundled iris
(:func:`load_iris`).
"""

import json
from dataclasses import asdict, dataclass
from importlib import resources

import numpy as np
import pandas as pd
import pyro
import pyro.distributions as dist
import torch
from pyro.distributions import constraints
from pyro.infer import config_enumerate
from pyro.ops.indexing import Vindex

__all__ = [
    "COVARIANCES",
    "MixturePriors",
    "gauss_mix_1d",
    "gauss_mix_1d_data",
    "gauss_mix_1d_reference",
    "load_iris",
    "model",
    "simulate",
]

COVARIANCES = ("diag", "full")


@dataclass(frozen=True)
class MixturePriors:
    """Hyperparameters of :func:`model`.

    concentration: Dirichlet's alpha (one value for every component; >= 1 keeps the
    MAP inside the simplex). loc_mean, loc_scale: the Normal prior of each location
    coordinate, one value or one per dim. variance_shape, variance_rate: the
    InverseGamma prior of each component's variance per dim (rate: one value or one
    per dim). lkj_concentration: eta of the LKJ prior on the correlations
    (``covariance="full"`` only). The defaults suit data on a unit scale;
    :meth:`for_data` scales them to a data set.
    """

    concentration: float = 1.0
    loc_mean: float | tuple = 0.0
    loc_scale: float | tuple = 10.0
    variance_shape: float = 1.0
    variance_rate: float | tuple = 0.1
    lkj_concentration: float = 1.0

    @classmethod
    def for_data(cls, x, **overrides) -> "MixturePriors":
        """Priors on the scale of ``x`` (N, D): locations centred on the data mean with
        10 data sds of spread, variances with mode a tenth of each dim's variance (an
        InverseGamma(1, b) has mode b / 2)."""
        x = np.asarray(x, dtype=np.float64)
        x = x.reshape(len(x), -1)
        mean, var = x.mean(0), x.var(0)
        scale = np.sqrt(np.where(var > 0, var, 1.0))
        values = dict(
            loc_mean=tuple(mean.tolist()),
            loc_scale=tuple((10 * scale).tolist()),
            variance_rate=tuple((0.2 * scale**2).tolist()),
        )
        return cls(**(values | overrides))

    def as_em_prior(self) -> dict:
        """The same priors as :func:`inference.run_em`'s ``prior=`` (diagonal covariances)."""
        out = asdict(self)
        out.pop("lkj_concentration")
        return out

    def tensors(self, dim: int, dtype) -> dict[str, torch.Tensor]:
        """Each hyperparameter as a tensor, the per-dim ones of shape ``(dim,)``."""
        out = {}
        for name, value in asdict(self).items():
            t = torch.as_tensor(value, dtype=dtype)
            if name in ("loc_mean", "loc_scale", "variance_rate"):
                if t.dim() == 0:
                    t = t.expand(dim)
                if t.shape != (dim,):
                    raise ValueError(
                        f"priors.{name} has {tuple(t.shape)[0]} values for data of dimension "
                        f"{dim}: give one value or {dim}"
                    )
            out[name] = t
        return out


def _check_x(x) -> tuple[int, int]:
    """``(N, D)`` of data ``x``; a clear error for anything else."""
    if not isinstance(x, (torch.Tensor, np.ndarray)):
        raise ValueError(f"x must be a torch.Tensor or numpy array, got {type(x).__name__}")
    if x.ndim != 2:
        raise ValueError(
            f"x must have shape (N, D), got shape {tuple(x.shape)}; reshape one feature "
            "with x.reshape(-1, 1)"
        )
    if x.shape[0] == 0:
        raise ValueError("x must hold at least one point, got N = 0")
    return int(x.shape[0]), int(x.shape[1])


def _rows(x, index, dtype) -> torch.Tensor:
    """The rows ``index`` of ``x`` as a tensor: only those are read from a memory map."""
    if isinstance(x, torch.Tensor):
        return x[index].to(dtype)
    return torch.as_tensor(np.asarray(x[index.cpu().numpy()]), dtype=dtype)


@config_enumerate
def model(
    x,
    n_components: int = 3,
    priors: MixturePriors | None = None,
    covariance: str = "diag",
    subsample_size: int | None = None,
    subsample=None,
):
    r"""Pyro model of the Bayesian Gaussian mixture (module docstring).

    Parameters
    ----------
    x : torch.Tensor or numpy.ndarray
        Data, shape ``(N, D)``; a numpy memory map is read one minibatch at a time.
    n_components : int
        K.
    priors : MixturePriors, optional
        Hyperparameters (default ``MixturePriors()``, for data on a unit scale).
    covariance : {"diag", "full"}
        Per-dim variances only, or with LKJ-distributed correlations.
    subsample_size : int, optional
        A minibatch size for Pyro's plate to draw (a permutation of N each call).
    subsample : torch.Tensor, optional
        The minibatch's indices, drawn by the caller (O(batch) per step); the
        likelihood is scaled by ``N / len(subsample)``.

    Notes
    -----
    Sites: ``"weights"`` (K,); in ``pyro.plate("component", K)``: ``"locs"`` (K, D),
    ``"variances"`` (K, D) and, for ``"full"``, ``"corr_chol"`` (K, D, D); in
    ``pyro.plate("data", N)``: ``"z"`` (enumerated) and the observed ``"x"``. Written to
    broadcast over a plate of draws to the left of its own, so draws replay in one pass.
    """
    n, d = _check_x(x)
    if n_components < 1:
        raise ValueError(f"n_components must be >= 1, got {n_components}")
    if covariance not in COVARIANCES:
        raise ValueError(f"covariance must be one of {COVARIANCES}, got {covariance!r}")
    dtype = x.dtype if isinstance(x, torch.Tensor) and x.is_floating_point() else torch.float64
    p = (priors or MixturePriors()).tensors(d, dtype)
    k = n_components
    weights = pyro.sample("weights", dist.Dirichlet(p["concentration"].expand(k)))
    with pyro.plate("component", k):
        locs = pyro.sample("locs", dist.Normal(p["loc_mean"], p["loc_scale"]).to_event(1))
        variances = pyro.sample(
            "variances",
            dist.InverseGamma(p["variance_shape"].expand(d), p["variance_rate"]).to_event(1),
        )
        if covariance == "full":
            corr_chol = pyro.sample("corr_chol", dist.LKJCholesky(d, p["lkj_concentration"]))
    with pyro.plate("data", n, subsample_size=subsample_size, subsample=subsample) as index:
        z = pyro.sample("z", dist.Categorical(weights))
        # The component axis moved left of the data axis, so a plate of draws (or the
        # enumeration) broadcasts against the data plate.
        loc = Vindex(locs.unsqueeze(-3))[..., z, :]
        if covariance == "diag":
            scale = Vindex(variances.sqrt().unsqueeze(-3))[..., z, :]
            pyro.sample("x", dist.Normal(loc, scale).to_event(1), obs=_rows(x, index, dtype))
        else:
            tril = variances.sqrt().unsqueeze(-1) * corr_chol
            tril = Vindex(tril.unsqueeze(-4))[..., z, :, :]
            pyro.sample(
                "x", dist.MultivariateNormal(loc, scale_tril=tril), obs=_rows(x, index, dtype)
            )


model.dims = {
    "weights": ["component"],
    "locs": ["component", "feature"],
    "variances": ["component", "feature"],
    "corr_chol": ["component", "feature", "feature_bis"],
}


@config_enumerate
def gauss_mix_1d(y):
    r"""posteriordb's ``low_dim_gauss_mix``: two ordered components in one dimension.

    .. math::

        \mu &\sim \mathcal{N}(0, 2^2) \text{ on } \mu_1 < \mu_2 \\
        \sigma_k &\sim \mathcal{N}^+(0, 2^2) \\
        \theta &\sim \mathrm{Beta}(5, 5) \\
        y_n &\sim \theta\, \mathcal{N}(\mu_1, \sigma_1^2)
            + (1 - \theta)\, \mathcal{N}(\mu_2, \sigma_2^2)

    The Stan program's ``log_mix`` is the sum over an enumerated assignment ``z_n``
    (0 for the first component). Ordered locations cannot switch labels.

    Parameters
    ----------
    y : torch.Tensor
        Data, shape ``(N,)``.

    Notes
    -----
    Sites: ``"mu"`` (2,) with an improper uniform on the ordered vectors plus the
    Normal(0, 2) factor ``"mu_prior"`` (Stan's ``ordered[2] mu; mu ~ normal(0, 2)``, the
    same density up to a constant); ``"sigma"`` (2,) in ``pyro.plate("component", 2)``;
    ``"theta"``; ``"z"`` and the observed ``"y"`` in ``pyro.plate("data", N)``.
    """
    if not isinstance(y, torch.Tensor) or y.dim() != 1:
        shape = tuple(y.shape) if hasattr(y, "shape") else type(y).__name__
        raise ValueError(f"y must be a 1-D tensor of shape (N,), got {shape}")
    two = y.new_tensor(2.0)
    mu = pyro.sample("mu", dist.ImproperUniform(constraints.ordered_vector, (), (2,)))
    pyro.factor("mu_prior", dist.Normal(0.0, two).log_prob(mu).sum(-1))
    with pyro.plate("component", 2):
        sigma = pyro.sample("sigma", dist.HalfNormal(two))
    theta = pyro.sample("theta", dist.Beta(y.new_tensor(5.0), y.new_tensor(5.0)))
    with pyro.plate("data", len(y)):
        weights = torch.stack([theta, 1.0 - theta], -1)
        z = pyro.sample("z", dist.Categorical(weights))
        loc = Vindex(mu)[..., z]  # mu has no plate: its batch dims already broadcast
        scale = Vindex(sigma.unsqueeze(-2))[..., z]
        pyro.sample("y", dist.Normal(loc, scale), obs=y)


gauss_mix_1d.coords = {"component": [1, 2]}
gauss_mix_1d.dims = {"mu": ["component"]}


def _data_file(name):
    return resources.files("models").joinpath("data", name)


def gauss_mix_1d_data() -> torch.Tensor:
    """posteriordb's ``low_dim_gauss_mix`` data: 1,000 points, float64 (see data README)."""
    raw = json.loads(_data_file("low_dim_gauss_mix.json").read_text(encoding="utf-8"))
    return torch.tensor(raw["y"], dtype=torch.float64)


def gauss_mix_1d_reference() -> pd.DataFrame:
    """posteriordb's reference posterior of ``low_dim_gauss_mix``.

    Indexed by ``parameter`` (``mu[1]``, ``mu[2]``, ``sigma[1]``, ``sigma[2]``,
    ``theta``; vilab's labels are the same) with ``mean``, ``sd``, ``q05``, ``q50``,
    ``q95``, ``mcse_mean`` and ``n_draws``: Stan NUTS, 10 chains of 1,000 draws.
    """
    with _data_file("low_dim_gauss_mix_reference.csv").open(encoding="utf-8") as f:
        return pd.read_csv(f, index_col="parameter")


def simulate(num_points: int = 1000, seed: int = 0):
    """The ``gmm`` case's data: 2-D, three components with diagonal covariances.

    Returns
    -------
    x : torch.Tensor
        ``(num_points, 2)`` float64.
    labels : numpy.ndarray
        The true component of each point.
    truth : dict
        ``weights`` (3,), ``locs`` (3, 2), ``variances`` (3, 2) as numpy arrays.
    """
    truth = {
        "weights": np.array([0.5, 0.3, 0.2]),
        "locs": np.array([[-3.0, 0.0], [1.5, 3.0], [2.5, -2.5]]),
        "variances": np.array([[1.0, 0.5], [0.6, 0.6], [0.4, 1.2]]),
    }
    rng = np.random.default_rng(seed)
    labels = rng.choice(3, size=num_points, p=truth["weights"])
    noise = rng.standard_normal((num_points, 2)) * np.sqrt(truth["variances"][labels])
    x = truth["locs"][labels] + noise
    return torch.tensor(x, dtype=torch.float64), labels, truth


def load_iris():
    """scikit-learn's bundled iris measurements (no download).

    Returns
    -------
    x : torch.Tensor
        ``(150, 4)`` float64: sepal length, sepal width, petal length, petal width (cm).
    species : numpy.ndarray
        0, 1, 2 for setosa, versicolor, virginica — the truth for the adjusted Rand index.
    feature_names : list of str
    """
    from sklearn.datasets import load_iris as sklearn_iris

    bunch = sklearn_iris()
    return torch.tensor(bunch.data, dtype=torch.float64), bunch.target, list(bunch.feature_names)
