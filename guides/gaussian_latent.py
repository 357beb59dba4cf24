"""Hand-written guide for :mod:`models.gaussian_latent`."""

import pyro
import pyro.distributions as dist
import torch
from torch.distributions import constraints

__all__ = ["PARAM_PREFIX", "guide"]

PARAM_PREFIX = "gaussian_latent."


def guide(x, m0=0.0, s0=10.0, sigma=1.0, subsample_size=None):
    r"""Normal guide for the latent mean ``z``; same signature as the model.

    .. math::

        q(z; \mu, s) = \mathcal{N}(z; \mu, s^2), \qquad
        z = \mu + s\,\varepsilon, \quad \varepsilon \sim \mathcal{N}(0, 1)

    Sampling ``dist.Normal(mu, s)`` with ``rsample`` draws ``z`` exactly through
    this reparameterization, so the ELBO's gradient flows into ``mu`` and ``s``.
    The family holds the exact posterior, so at the optimum the ELBO equals
    :func:`models.gaussian_latent.exact_log_evidence` and the KL gap is zero.

    Parameters
    ----------
    x, m0, s0, sigma, subsample_size
        As in :func:`models.gaussian_latent.model`; only ``x`` (for dtype),
        ``m0`` and ``s0`` (for the initial values) are used.

    Notes
    -----
    Params: ``"gaussian_latent.z_loc"`` (:math:`\mu`), initialised at
    :math:`m_0 - 3 s_0`, the prior's 3-sd point, and
    ``"gaussian_latent.z_scale"`` (:math:`s`, constrained positive),
    initialised at :math:`s_0`. Both start far from the posterior on purpose
    (the posterior mean is near the sample mean, the posterior sd near
    :math:`\sigma/\sqrt N`), so that a fit reaching the exact answer shows that
    the optimiser works, rather than that it started there.
    """
    dtype = x.dtype if x.is_floating_point() else torch.get_default_dtype()
    z_loc = pyro.param(PARAM_PREFIX + "z_loc", lambda: torch.as_tensor(m0 - 3 * s0, dtype=dtype))
    z_scale = pyro.param(
        PARAM_PREFIX + "z_scale",
        lambda: torch.as_tensor(s0, dtype=dtype),
        constraint=constraints.positive,
    )
    pyro.sample("z", dist.Normal(z_loc, z_scale))
