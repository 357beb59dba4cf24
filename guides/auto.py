"""Autoguides by name, in a whitened basis.

``autoguide(name, model, laplace=None)`` builds one of:

- ``normal``  — mean-field Gaussian (diagonal covariance),
- ``mvn``     — full-covariance Gaussian,
- ``lowrank`` — low-rank plus diagonal covariance,
- ``iaf``     — inverse autoregressive flow on a Gaussian base,
- ``delta``   — a point mass (MAP).

All but ``delta`` live on the packed unconstrained latent vector ``x`` and are written
as ``x = c + B u`` where ``u`` follows the family's distribution, which starts at
``N(0, I)``. The centre ``c`` and basis ``B`` are fixed; by default they come from a
Laplace approximation at the MAP (``c`` = MAP, ``B`` = Cholesky factor of the inverse
Hessian, or its diagonal for the diagonal families). In that basis a badly scaled,
strongly correlated posterior looks like a standard normal, so plain Adam with one
learning rate moves every direction at the right speed. Without a Laplace result the
basis is the identity and ``c`` a feasible point (the prior median).
"""

import pyro
import torch
from pyro import distributions as dist
from pyro import poutine
from pyro.distributions import constraints
from pyro.distributions.transforms import AffineTransform, affine_autoregressive, biject_to
from pyro.infer import autoguide as pyro_autoguide
from pyro.nn import PyroParam
from pyro.poutine.util import site_is_subsample
from torch import nn

AUTOGUIDES = ("normal", "mvn", "lowrank", "delta", "iaf")
GAUSSIAN = ("normal", "mvn", "lowrank")


class WhitenedAutoGuide(pyro_autoguide.AutoContinuous):
    """A variational family on ``x = c + B u`` (see module docstring).

    Parameters
    ----------
    model : callable
        The Pyro model.
    family : str
        One of ``normal``, ``mvn``, ``lowrank``, ``iaf``.
    laplace : inference.svi.laplace.Laplace, optional
        Centre and curvature at the MAP; its sites must match the model's latents.
    rank : int, optional
        Rank of the ``lowrank`` family (default ``ceil(sqrt(latent_dim))``).
    """

    def __init__(self, model, family: str, laplace=None, rank: int | None = None):
        if family not in ("normal", "mvn", "lowrank", "iaf"):
            raise ValueError(f"unknown family {family!r}")
        self.family = family
        self._laplace = laplace
        self._rank = rank
        super().__init__(model, init_loc_fn=init_to_median_or_zero)

    def _setup_prototype(self, *args, **kwargs):
        super()._setup_prototype(*args, **kwargs)
        d = self.latent_dim
        dtype = torch.get_default_dtype()
        lap = self._laplace
        if lap is not None:
            names = tuple(name for name, _ in lap.sites)
            mine = tuple(self._unconstrained_shapes)
            if names != mine:
                raise ValueError(f"Laplace sites {names} do not match the guide's {mine}")
            center = lap.loc.to(dtype)
            tril = lap.scale_tril.to(dtype) if lap.ok else torch.eye(d, dtype=dtype)
            diag = lap.meanfield_scale.to(dtype) if lap.ok else torch.ones(d, dtype=dtype)
        else:
            center = self._init_loc().detach().to(dtype)
            tril, diag = torch.eye(d, dtype=dtype), torch.ones(d, dtype=dtype)
        self.center = center
        self.u_loc = nn.Parameter(torch.zeros(d, dtype=dtype))
        if self.family == "normal":
            self.basis = diag
            self.u_scale = PyroParam(torch.ones(d, dtype=dtype), constraints.positive)
        elif self.family == "mvn":
            self.basis = tril
            self.u_scale_tril = PyroParam(torch.eye(d, dtype=dtype), constraints.lower_cholesky)
        elif self.family == "lowrank":
            self._setup_lowrank(tril, d, dtype)
        else:
            # The flows act on a standard normal; a learned affine map (u_loc, u_scale)
            # then places it in the whitened basis. The stable (gated) variant starts
            # close to the identity, so the family starts close to N(c, diag(B)^2).
            self.basis = (tril @ tril.T).diagonal().sqrt()
            self.u_scale = PyroParam(torch.ones(d, dtype=dtype), constraints.positive)
            flow = nn.ModuleList(
                [
                    affine_autoregressive(d, hidden_dims=[max(2 * d, 8)], stable=True)
                    for _ in range(2)
                ]
            )
            self.flow = flow

    def _setup_lowrank(self, tril, d, dtype):
        # Whiten by the marginal sds; start the factor at the top eigenvectors of the
        # Laplace correlation matrix, the diagonal at what they leave unexplained.
        cov = tril @ tril.T
        sd = cov.diagonal().sqrt()
        self.basis = sd
        rank = self._rank or max(1, int(d**0.5 + 0.999))
        corr = cov / sd[:, None] / sd[None, :]
        evals, evecs = torch.linalg.eigh(corr)
        top = evecs[:, -rank:] * evals[-rank:].clamp(min=1e-2).sqrt() * 0.9
        self.u_cov_factor = nn.Parameter(top.to(dtype))
        left = (1.0 - (top**2).sum(-1)).clamp(min=1e-2)
        self.u_cov_diag = PyroParam(left.to(dtype), constraints.positive)

    def get_posterior(self, *args, **kwargs):
        c, u_loc = self.center, self.u_loc
        if self.family == "normal":
            scale = self.basis * self.u_scale
            return dist.Normal(c + self.basis * u_loc, scale, validate_args=False).to_event(1)
        if self.family == "mvn":
            # Valid by construction (a product of lower-triangular factors with positive
            # diagonals): skip the argument check, which costs more than the step itself.
            return dist.MultivariateNormal(
                c + self.basis @ u_loc,
                scale_tril=self.basis @ self.u_scale_tril,
                validate_args=False,
            )
        if self.family == "lowrank":
            b = self.basis
            return dist.LowRankMultivariateNormal(
                c + b * u_loc,
                b[:, None] * self.u_cov_factor,
                b**2 * self.u_cov_diag,
                validate_args=False,
            )
        # Register the flow's weights as Pyro params (seen by the optimiser and the JIT).
        pyro.module(f"{self._pyro_name}.flow", self.flow)
        base = dist.Normal(torch.zeros_like(c), torch.ones_like(c)).to_event(1)
        shift = AffineTransform(c + self.basis * u_loc, self.basis * self.u_scale, event_dim=1)
        return dist.TransformedDistribution(base, list(self.flow) + [shift])

    def _loc_scale(self, *args, **kwargs):
        if self.family == "iaf":
            draws = self.get_posterior(*args, **kwargs).sample((1000,))
            return draws.mean(0), draws.std(0)
        posterior = self.get_posterior(*args, **kwargs)
        return posterior.mean, posterior.variance.sqrt()

    def covariance(self) -> torch.Tensor:
        """Covariance of the unconstrained latent vector (Gaussian families only)."""
        if self.family == "iaf":
            raise ValueError("the iaf family has no closed-form covariance")
        posterior = self.get_posterior()
        if self.family == "normal":
            return torch.diag(posterior.variance).detach()
        return posterior.covariance_matrix.detach()

    def site_slices(self) -> dict[str, slice]:
        """Where each latent site sits in the packed unconstrained vector."""
        out, pos = {}, 0
        for name, shape in self._unconstrained_shapes.items():
            size = int(torch.Size(shape).numel())
            out[name] = slice(pos, pos + size)
            pos += size
        return out


def init_to_median_or_zero(site):
    """Pyro's ``init_to_median``, or 0 unconstrained for a prior that cannot be sampled.

    Pyro's own fallback (``init_to_feasible``) samples too, so an ``ImproperUniform``
    prior needs this one.
    """
    try:
        return pyro_autoguide.init_to_median(site)
    except NotImplementedError:
        fn = site["fn"]
        transform = biject_to(fn.support)
        return transform(torch.zeros(transform.inverse_shape(fn.batch_shape + fn.event_shape)))


def _is_discrete_latent(msg) -> bool:
    return (
        msg["type"] == "sample"
        and not msg["is_observed"]
        and not site_is_subsample(msg)
        and msg["fn"].support.is_discrete
    )


def autoguide(name: str, model, laplace=None):
    """Build the autoguide ``name`` (one of :data:`AUTOGUIDES`) around ``model``.

    The guide covers the continuous latent sites only: discrete ones are hidden from
    it, left to the ELBO to sum out (``TraceEnum_ELBO``).
    """
    if name not in AUTOGUIDES:
        raise ValueError(f"unknown guide {name!r}; choose one of: {', '.join(AUTOGUIDES)}")
    model = poutine.block(model, hide_fn=_is_discrete_latent)
    if name == "delta":
        if laplace is None:
            return pyro_autoguide.AutoDelta(model, init_loc_fn=init_to_median_or_zero)
        return pyro_autoguide.AutoDelta(model, init_loc_fn=_init_to_laplace(laplace))
    return WhitenedAutoGuide(model, name, laplace=laplace)


def _init_to_laplace(laplace):
    values, pos = {}, 0
    for name, shape in laplace.sites:
        size = int(torch.Size(shape).numel())
        values[name] = laplace.loc[pos : pos + size].reshape(shape)
        pos += size

    def init(site):
        u = values.get(site["name"])
        if u is None:
            return init_to_median_or_zero(site)
        return biject_to(site["fn"].support)(u)

    return init
