r"""The VAE's encoder: amortized variational inference for :mod:`models.vae`.

.. math::

    q_\phi(z_n \mid x_n) = \mathcal{N}(z_n;\ \mu_\phi(x_n),\ \mathrm{diag}\,\sigma_\phi(x_n)^2)

One network (:class:`Encoder`, default ``64 → 256 → 2 × 8``) maps every image to its
Gaussian, instead of one set of variational parameters per image: that is what
*amortized* means, and what the amortization gap measures (the ELBO lost because
μ_φ, σ_φ are not the best Gaussian for each image; :mod:`inference.lab.studies`).
"""

import pyro
import pyro.distributions as dist
import torch
from torch import nn
from torch.nn.functional import softplus

from models.vae import check_sizes, mlp

__all__ = ["Encoder", "LocalGaussian"]

MIN_SCALE = 1e-4  # keeps q's scale away from 0 (a softplus can underflow)


class Encoder(nn.Module):
    """q(z | x): ``x_dim`` pixels to the loc and scale of a diagonal Gaussian on ``z_dim``.

    Parameters as :class:`models.vae.Decoder`; ``hidden`` runs from x inwards.
    """

    def __init__(self, z_dim: int = 8, hidden=(256,), x_dim: int = 64):
        super().__init__()
        self.hidden = check_sizes(z_dim, hidden, x_dim)
        self.z_dim, self.x_dim = z_dim, x_dim
        self.net = mlp((x_dim, *self.hidden, 2 * z_dim))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(loc, scale)`` of q(z | x), each of shape ``x.shape[:-1] + (z_dim,)``."""
        out = self.net(x)
        loc, raw = out[..., : self.z_dim], out[..., self.z_dim :]
        return loc, softplus(raw) + MIN_SCALE

    def extra_repr(self) -> str:
        return f"z_dim={self.z_dim}, hidden={self.hidden}, x_dim={self.x_dim}"

    def guide(self, x: torch.Tensor, batch_size: int | None = None) -> None:
        """The amortized guide of :meth:`models.vae.Decoder.model` (same signature).

        ``z`` is drawn as ``loc + scale * eps`` (reparameterized), so the ELBO's gradient
        reaches the encoder's weights; ``TraceMeanField_ELBO`` takes KL(q || p(z)) in
        closed form, both being Gaussian.
        """
        pyro.module("encoder", self)
        with pyro.plate("data", x.shape[0], subsample_size=batch_size) as index:
            loc, scale = self(x[index])
            pyro.sample("z", dist.Normal(loc, scale).to_event(1))


class LocalGaussian(nn.Module):
    """One diagonal Gaussian per image, q(z_i) = N(loc_i, diag scale_i²): not amortized.

    The guide of :func:`models.vae.latent_model` (plate ``image``). Started at the
    encoder's ``(loc, scale)`` for the same images and fitted by SVI with the decoder
    fixed, it becomes q*, the best Gaussian of the family for each image; its ELBO minus
    the encoder's is the amortization gap (Cremer, Li & Duvenaud 2018).

    Parameters
    ----------
    loc, scale : torch.Tensor
        Initial values, shape (n, z_dim); copied, in their dtype.
    """

    def __init__(self, loc: torch.Tensor, scale: torch.Tensor):
        super().__init__()
        if loc.shape != scale.shape or loc.dim() != 2:
            raise ValueError(
                f"loc and scale must both be (n, z_dim), got {loc.shape}, {scale.shape}"
            )
        self.loc = nn.Parameter(loc.detach().clone())
        # scale = softplus(raw) + MIN_SCALE, as the encoder's
        self.raw_scale = nn.Parameter(_softplus_inverse(scale.detach() - MIN_SCALE))

    @property
    def scale(self) -> torch.Tensor:
        return softplus(self.raw_scale) + MIN_SCALE

    def guide(self, x: torch.Tensor) -> None:
        """q(z_i) for the images ``x`` (n, D), in plate ``image``."""
        pyro.module("local", self)
        with pyro.plate("image", x.shape[0]):
            pyro.sample("z", dist.Normal(self.loc, self.scale).to_event(1))


def _softplus_inverse(y: torch.Tensor) -> torch.Tensor:
    y = y.clamp_min(1e-12)
    return y + torch.log(-torch.expm1(-y))
