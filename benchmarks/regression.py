"""A badly scaled linear regression with correlated predictors: data and Pyro model.

``N = 200`` rows, ``P = 5`` predictors. The predictors share one factor (correlation
0.9 between any two) and have column scales ``1e-2, 1e-1, 1, 1e1, 1e2`` and means
equal to their scales, so the coefficients' posterior sds span four orders of magnitude
and the intercept and coefficients are strongly correlated. The priors are flat-ish
(sd 1000 on the intercept and coefficients), so the data decide. A diagonal mass
matrix can fix the scales, not the correlations. NumPyro's version is in
:mod:`benchmarks.numpyro_regression`.
"""

import numpy as np
import pyro
import pyro.distributions as dist
import torch

N = 200
P = 5
DATA_SEED = 20261203
CORRELATION = 0.9
SCALES = tuple(float(s) for s in np.logspace(-2, 2, P))
EFFECTS = (1.0, -0.5, 0.8, -1.0, 0.3)  # coefficient x column scale
INTERCEPT = 1.0
NOISE_SD = 1.0
PRIOR_SD = 1000.0
SIGMA_PRIOR_SCALE = 10.0
ESS_OVER = "alpha, beta, sigma"


def data() -> tuple[np.ndarray, np.ndarray]:
    """``(X, y)``, shapes (N, P) and (N,), float64, the same on every call."""
    rng = np.random.default_rng(DATA_SEED)
    factor = rng.standard_normal((N, 1))
    z = np.sqrt(CORRELATION) * factor + np.sqrt(1 - CORRELATION) * rng.standard_normal((N, P))
    scales = np.asarray(SCALES)
    x = (z + 1.0) * scales
    beta = np.asarray(EFFECTS) / scales
    y = INTERCEPT + x @ beta + NOISE_SD * rng.standard_normal(N)
    return x, y


def arrays() -> tuple[torch.Tensor, torch.Tensor]:
    """``(X, y)`` as float64 tensors."""
    x, y = data()
    return torch.as_tensor(x, dtype=torch.float64), torch.as_tensor(y, dtype=torch.float64)


def regression(x, y):
    r"""Linear regression with flat-ish priors.

    .. math::

        \alpha \sim \mathcal{N}(0, 1000^2), \quad
        \beta_j \sim \mathcal{N}(0, 1000^2), \quad \sigma \sim \mathrm{HalfNormal}(10),
        \quad y_i \sim \mathcal{N}(\alpha + x_i^\top \beta, \sigma^2)
    """
    alpha = pyro.sample("alpha", dist.Normal(x.new_tensor(0.0), x.new_tensor(PRIOR_SD)))
    beta = pyro.sample(
        "beta", dist.Normal(x.new_zeros(x.shape[1]), x.new_tensor(PRIOR_SD)).to_event(1)
    )
    sigma = pyro.sample("sigma", dist.HalfNormal(x.new_tensor(SIGMA_PRIOR_SCALE)))
    with pyro.plate("data", x.shape[0]):
        pyro.sample("y", dist.Normal(alpha + x @ beta, sigma), obs=y)


def chain_draws(samples: dict) -> dict[str, np.ndarray]:
    """The draws whose ESS is measured, each (chain, draw, ...), from one chain's samples."""
    sigma = np.asarray(samples["sigma"], dtype=float).reshape(1, -1)
    n = sigma.shape[1]
    return {
        "alpha": np.asarray(samples["alpha"], dtype=float).reshape(1, n),
        "beta": np.asarray(samples["beta"], dtype=float).reshape(1, n, P),
        "sigma": sigma,
    }
