"""The best full-covariance Gaussian for non-centered eight schools, found independently.

The target of the SVI benchmark's time to answer, and of the tests of fit_svi's defaults.

``q = N(loc, L L^T)`` on the unconstrained latents ``(mu, log tau, eta_1..8)``. The ELBO
is estimated with one fixed set of standard-normal draws (common random numbers), which
makes it a smooth deterministic function of ``(loc, L)``: L-BFGS then finds its maximum
without any of ``fit_svi``'s machinery. The draws' own error in the optimum is far below
the tolerances it is used with (0.1 posterior sd, 10% of an sd): 16,384 draws.
"""

import math

import torch

NUM_DRAWS = 16384


def _log_joint(x, y, sigma):
    mu, log_tau, eta = x[..., 0], x[..., 1], x[..., 2:]
    tau = log_tau.exp()
    lp = torch.distributions.Normal(0.0, 5.0).log_prob(mu)
    lp = lp + torch.distributions.HalfCauchy(5.0).log_prob(tau) + log_tau  # |d tau / d log tau|
    lp = lp + torch.distributions.Normal(0.0, 1.0).log_prob(eta).sum(-1)
    theta = mu[..., None] + tau[..., None] * eta
    return lp + torch.distributions.Normal(theta, sigma).log_prob(y).sum(-1)


def mvn_optimum(y, sigma, seed: int = 0):
    """``(loc, cov)`` of the ELBO-optimal Gaussian on ``(mu, log tau, eta)``, float64."""
    y, sigma = y.double(), sigma.double()
    d = 2 + len(y)
    eps = torch.randn(NUM_DRAWS, d, generator=torch.Generator().manual_seed(seed), dtype=y.dtype)
    loc = torch.zeros(d, dtype=y.dtype, requires_grad=True)
    raw = torch.zeros(d, d, dtype=y.dtype, requires_grad=True)
    tril = torch.ones(d, d, dtype=torch.bool).tril(-1)

    def scale_tril():
        return raw * tril + torch.diag(torch.nn.functional.softplus(raw.diagonal()) + 1e-6)

    def negative_elbo():
        scale = scale_tril()
        x = loc + eps @ scale.T
        entropy = 0.5 * d * math.log(2 * math.pi * math.e) + scale.diagonal().log().sum()
        return -(_log_joint(x, y, sigma).mean() + entropy)

    opt = torch.optim.LBFGS(
        [loc, raw],
        max_iter=2000,
        line_search_fn="strong_wolfe",
        tolerance_grad=1e-10,
        tolerance_change=1e-14,
        history_size=50,
    )

    def closure():
        opt.zero_grad()
        value = negative_elbo()
        value.backward()
        return value

    opt.step(closure)
    scale = scale_tril().detach()
    return loc.detach(), scale @ scale.T
