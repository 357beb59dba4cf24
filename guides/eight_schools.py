"""Mean-field guides for :mod:`models.eight_schools`, one per parameterization.

Both guides start every location at 0 and every scale at 0.1, i.e. narrow and
centred on the origin, as Pyro's autoguides do by default. That is away from the
answer: the reference posterior has mu about 4.4 (sd 3.3), tau's median about 2.7
and school effects with sd about 5, so every scale starts 10 to 50 times too
narrow and mu more than one posterior sd off.

The sample sites sit at plate dim -1 with scalar globals, so both guides also run
vectorized under an outer plate of draws (e.g. ``Predictive(parallel=True)``).
"""

import pyro
import pyro.distributions as dist
import torch
from torch.distributions import constraints

__all__ = ["INIT_LOC", "INIT_SCALE", "centered_guide", "noncentered_guide"]

INIT_LOC = 0.0
INIT_SCALE = 0.1


def _float_dtype(y):
    y = torch.as_tensor(y)
    return y.dtype if y.is_floating_point() else torch.get_default_dtype()


def _normal_params(name, shape, dtype):
    loc = pyro.param(f"{name}_loc", lambda: torch.full(shape, INIT_LOC, dtype=dtype))
    scale = pyro.param(
        f"{name}_scale",
        lambda: torch.full(shape, INIT_SCALE, dtype=dtype),
        constraint=constraints.positive,
    )
    return loc, scale


def _mean_field(prefix, school_site, y):
    dtype, num_schools = _float_dtype(y), len(y)
    mu_loc, mu_scale = _normal_params(prefix + "mu", (), dtype)
    pyro.sample("mu", dist.Normal(mu_loc, mu_scale))
    tau_loc, tau_scale = _normal_params(prefix + "log_tau", (), dtype)
    pyro.sample("tau", dist.LogNormal(tau_loc, tau_scale))
    loc, scale = _normal_params(prefix + school_site, (num_schools,), dtype)
    with pyro.plate("school", num_schools):
        pyro.sample(school_site, dist.Normal(loc, scale))


def centered_guide(y, sigma):
    r"""Mean-field guide for :func:`models.eight_schools.centered`.

    .. math::

        q(\mu, \tau, \theta) = \mathcal{N}(\mu; m_\mu, s_\mu^2)\,
            \mathrm{LogNormal}(\tau; m_\tau, s_\tau^2)
            \prod_{j=1}^{J} \mathcal{N}(\theta_j; m_j, s_j^2)

    Every draw is reparameterized: :math:`\mu = m_\mu + s_\mu \varepsilon`,
    :math:`\tau = \exp(m_\tau + s_\tau \varepsilon')`, and likewise for each
    :math:`\theta_j`, with independent standard normal :math:`\varepsilon`.

    Parameters
    ----------
    y, sigma
        As in the model; only ``y`` (for J and dtype) is used.

    Notes
    -----
    Params, prefixed ``"eight_schools.centered."``: ``mu_loc``, ``mu_scale``,
    ``log_tau_loc``, ``log_tau_scale`` (scalars) and ``theta_loc``,
    ``theta_scale`` (shape ``(J,)``); scales are constrained positive.
    """
    _mean_field("eight_schools.centered.", "theta", y)


def noncentered_guide(y, sigma):
    r"""Mean-field guide for :func:`models.eight_schools.noncentered`.

    .. math::

        q(\mu, \tau, \eta) = \mathcal{N}(\mu; m_\mu, s_\mu^2)\,
            \mathrm{LogNormal}(\tau; m_\tau, s_\tau^2)
            \prod_{j=1}^{J} \mathcal{N}(\eta_j; m_j, s_j^2)

    Reparameterized as in :func:`centered_guide`; the model computes
    :math:`\theta = \mu + \tau \eta` from the draws.

    Parameters
    ----------
    y, sigma
        As in the model; only ``y`` (for J and dtype) is used.

    Notes
    -----
    Params, prefixed ``"eight_schools.noncentered."``: ``mu_loc``, ``mu_scale``,
    ``log_tau_loc``, ``log_tau_scale`` (scalars) and ``eta_loc``, ``eta_scale``
    (shape ``(J,)``); scales are constrained positive.
    """
    _mean_field("eight_schools.noncentered.", "eta", y)
