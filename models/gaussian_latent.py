"""The Gaussian latent-mean model: one unknown mean, everything in closed form.

The model is conjugate, so its posterior and its log-evidence are known exactly.
That makes it the yardstick for variational inference: an ELBO must lie below
:func:`exact_log_evidence`, and the gap is the KL divergence from the guide to
the posterior given by :func:`exact_posterior`.
"""

import math

import pyro
import pyro.distributions as dist
import torch

__all__ = ["exact_log_evidence", "exact_posterior", "model", "simulate"]


def _check_scales(s0, sigma):
    if not s0 > 0:
        raise ValueError(f"s0 (the prior sd of z) must be > 0, got {s0}")
    if not sigma > 0:
        raise ValueError(f"sigma (the sd of each x_i) must be > 0, got {sigma}")


def _check_x(x):
    if not isinstance(x, torch.Tensor):
        raise ValueError(f"x must be a 1-D torch.Tensor, got {type(x).__name__}")
    if x.dim() != 1:
        raise ValueError(f"x must be 1-D, got shape {tuple(x.shape)}")
    if x.numel() == 0:
        raise ValueError("x must hold at least one observation, got an empty tensor")
    return x if x.is_floating_point() else x.to(torch.get_default_dtype())


def _check_finite(x):
    bad = ~torch.isfinite(x)
    if bad.any():
        raise ValueError(
            f"x must be finite: found {int(bad.sum())} NaN/inf value(s), "
            f"the first at index {int(bad.nonzero()[0])}"
        )


def _checked(x, m0, s0, sigma):
    """Validated float64 data and float hyperparameters, for the closed forms."""
    x = _check_x(x)
    _check_finite(x)
    _check_scales(s0, sigma)
    return x.to(torch.float64), float(m0), float(s0), float(sigma)


def model(x, m0=0.0, s0=10.0, sigma=1.0, subsample_size=None):
    r"""Pyro model of N observations around one unknown mean.

    .. math::

        z &\sim \mathcal{N}(m_0, s_0^2) \\
        x_i \mid z &\sim \mathcal{N}(z, \sigma^2), \qquad i = 1, \dots, N

    Parameters
    ----------
    x : torch.Tensor
        Observations, shape ``(N,)``.
    m0, s0 : float
        Prior mean and prior standard deviation of ``z`` (``s0 > 0``).
    sigma : float
        Known noise standard deviation of each ``x_i`` (``> 0``).
    subsample_size : int, optional
        Minibatch size for the ``"data"`` plate; ``None`` uses all N points.
        With subsampling the likelihood is rescaled by ``N / subsample_size``.

    Raises
    ------
    ValueError
        If ``x`` is not a non-empty 1-D tensor, or a scale is not positive, or
        the observations that enter the likelihood (the whole of ``x``, or the
        current minibatch) hold NaN or inf. Checking only the minibatch keeps
        the cost of a step independent of N.

    Notes
    -----
    Sites: ``"z"`` (scalar, outside any plate) and ``"x"`` (observed, inside
    ``pyro.plate("data", N)``).
    """
    x = _check_x(x)
    _check_scales(s0, sigma)
    m0, s0, sigma = (torch.as_tensor(v, dtype=x.dtype) for v in (m0, s0, sigma))
    z = pyro.sample("z", dist.Normal(m0, s0))
    with pyro.plate("data", len(x), subsample_size=subsample_size) as idx:
        x_batch = x[idx]
        _check_finite(x_batch)
        pyro.sample("x", dist.Normal(z, sigma), obs=x_batch)


def exact_posterior(x, m0=0.0, s0=10.0, sigma=1.0):
    r"""Posterior mean and standard deviation of ``z``, by the conjugate update.

    .. math::

        z \mid x \sim \mathcal{N}(m_N, s_N^2), \quad
        \frac{1}{s_N^2} = \frac{1}{s_0^2} + \frac{N}{\sigma^2}, \quad
        m_N = s_N^2 \left(\frac{m_0}{s_0^2} + \frac{\sum_i x_i}{\sigma^2}\right)

    Parameters
    ----------
    x, m0, s0, sigma
        As in :func:`model`.

    Returns
    -------
    tuple of float
        ``(m_N, s_N)``.

    References
    ----------
    Gelman et al. (2013), *Bayesian Data Analysis*, 3rd ed., section 2.5.
    """
    x, m0, s0, sigma = _checked(x, m0, s0, sigma)
    precision = 1.0 / s0**2 + len(x) / sigma**2
    mean = (m0 / s0**2 + float(x.sum()) / sigma**2) / precision
    return mean, math.sqrt(1.0 / precision)


def exact_log_evidence(x, m0=0.0, s0=10.0, sigma=1.0):
    r"""Log marginal likelihood :math:`\log p(x)` in nats (total, not per datum).

    Integrating ``z`` out gives :math:`x \sim \mathcal{N}(m_0 \mathbf 1, \Sigma)`
    with :math:`\Sigma = \sigma^2 I + s_0^2 \mathbf 1 \mathbf 1^\top`. The matrix
    determinant lemma and the Sherman-Morrison formula give, in O(N),

    .. math::

        \log \det \Sigma &= 2N \log\sigma + \log\left(1 + N s_0^2 / \sigma^2\right) \\
        (x - m_0)^\top \Sigma^{-1} (x - m_0) &=
            \frac{\sum_i (x_i - \bar x)^2}{\sigma^2}
            + \frac{N (\bar x - m_0)^2}{\sigma^2 + N s_0^2}

    The quadratic form is split around the sample mean :math:`\bar x` so that no
    two large numbers are subtracted. Computed in float64.

    Parameters
    ----------
    x, m0, s0, sigma
        As in :func:`model`.

    Returns
    -------
    float
        :math:`\log p(x)`.
    """
    x, m0, s0, sigma = _checked(x, m0, s0, sigma)
    n = len(x)
    xbar = float(x.mean())
    sum_sq_dev = float(((x - xbar) ** 2).sum())
    log_det = 2 * n * math.log(sigma) + math.log1p(n * s0**2 / sigma**2)
    quad = sum_sq_dev / sigma**2 + n * (xbar - m0) ** 2 / (sigma**2 + n * s0**2)
    return -0.5 * (n * math.log(2 * math.pi) + log_det + quad)


def simulate(n, z_true=1.5, sigma=1.0, seed=0):
    r"""Draw ``n`` observations :math:`x_i \sim \mathcal{N}(z_{true}, \sigma^2)`.

    Parameters
    ----------
    n : int
        Number of observations (``>= 1``).
    z_true : float
        The fixed value of the latent mean.
    sigma : float
        Noise standard deviation (``> 0``).
    seed : int
        Seed of a private ``torch.Generator``; global RNG state is untouched.

    Returns
    -------
    torch.Tensor
        Shape ``(n,)``, dtype float64.
    """
    if int(n) != n or n < 1:
        raise ValueError(f"n must be a positive integer, got {n}")
    if not sigma > 0:
        raise ValueError(f"sigma must be > 0, got {sigma}")
    generator = torch.Generator().manual_seed(seed)
    noise = torch.randn(int(n), generator=generator, dtype=torch.float64)
    return z_true + sigma * noise
