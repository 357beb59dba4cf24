r"""The variational autoencoder's generative story: a decoder network and its Pyro model.

.. math::

    z_n &\sim \mathcal{N}(0, I_L), \qquad n = 1, \dots, N \\
    x_{nd} \mid z_n &\sim \mathrm{Bernoulli}\big(\sigma(f_\theta(z_n)_d)\big),
    \qquad d = 1, \dots, D

with :math:`f_\theta` a multilayer perceptron (:class:`Decoder`; default
``8 → 256 → 64`` for scikit-learn's 8×8 digits) giving the pixels' logits. The images
sit in the plate ``data`` of size ``N``; ``batch_size=n`` subsamples it (the likelihood
is scaled by ``N / n``), which is how SVI trains on minibatches. The decoder's weights
are registered with ``pyro.module("decoder", ...)``, so SVI learns them with the guide's
(``guides.vae``): maximum likelihood for θ, variational inference for z.

:func:`latent_model` is the same story for given images with the decoder held fixed: a
model over their ``z`` alone, which NUTS samples exactly (the reference for the
amortization gap).
"""

import copy

import pyro
import pyro.distributions as dist
import torch
from torch import nn

__all__ = ["Decoder", "check_sizes", "latent_model", "mlp"]


def mlp(sizes: tuple[int, ...]) -> nn.Sequential:
    """Linear layers through ``sizes`` with a softplus between them (none after the last).

    Softplus rather than ReLU: the decoder is then smooth in z, which NUTS on ``z`` needs.
    """
    layers = []
    for i, (n_in, n_out) in enumerate(zip(sizes[:-1], sizes[1:], strict=True)):
        if i:
            layers.append(nn.Softplus())
        layers.append(nn.Linear(n_in, n_out))
    return nn.Sequential(*layers)


def check_sizes(z_dim: int, hidden, x_dim: int) -> tuple[int, ...]:
    """``hidden`` as a tuple, after checking every size is a positive integer."""
    if isinstance(hidden, int | str) or not hasattr(hidden, "__iter__"):
        hidden = (hidden,)
    hidden = tuple(hidden)
    for name, value in (("z_dim", z_dim), ("x_dim", x_dim), *(("hidden", h) for h in hidden)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return hidden


class Decoder(nn.Module):
    """p(x | z): ``z_dim`` latent coordinates to ``x_dim`` Bernoulli logits.

    Parameters
    ----------
    z_dim : int
        Latent size L (default 8).
    hidden : int or tuple of int
        Hidden layer widths, from z outwards (default ``(256,)``).
    x_dim : int
        Pixels per image D (default 64: 8×8 digits).
    """

    def __init__(self, z_dim: int = 8, hidden=(256,), x_dim: int = 64):
        super().__init__()
        self.hidden = check_sizes(z_dim, hidden, x_dim)
        self.z_dim, self.x_dim = z_dim, x_dim
        self.net = mlp((z_dim, *self.hidden, x_dim))

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        """Logits of the pixels, shape ``z.shape[:-1] + (x_dim,)``."""
        return self.net(z)

    def extra_repr(self) -> str:
        return f"z_dim={self.z_dim}, hidden={self.hidden}, x_dim={self.x_dim}"

    def model(self, x: torch.Tensor, batch_size: int | None = None) -> None:
        """The Pyro model of images ``x`` (N, D), pixels in {0, 1}.

        ``batch_size``: the plate's subsample size (None: every image each call). Sites:
        ``z`` (latent, event dim L) and ``x`` (observed, event dim D), both in plate
        ``data``. Broadcasts over leading batch dims of the draws (vectorized particles).
        """
        pyro.module("decoder", self)
        zeros = x.new_zeros(self.z_dim)
        with pyro.plate("data", x.shape[0], subsample_size=batch_size) as index:
            z = pyro.sample("z", dist.Normal(zeros, 1.0).to_event(1))
            pyro.sample("x", dist.Bernoulli(logits=self(z)).to_event(1), obs=x[index])

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """Pixel probabilities (the Bernoulli means) for latent points ``z``."""
        with torch.no_grad():
            return torch.sigmoid(self(z))

    def sample_images(self, n: int, seed: int = 0) -> torch.Tensor:
        """Pixel probabilities of ``n`` images with z drawn from the prior."""
        generator = torch.Generator().manual_seed(seed)
        weight = self.net[0].weight
        z = torch.randn(n, self.z_dim, generator=generator).to(weight)
        return self.decode(z)


def latent_model(decoder: Decoder, dtype: torch.dtype = torch.float64):
    """A Pyro model of the latent ``z`` of given images, the decoder held fixed.

    Returns ``model(x)`` with ``x`` images (n, D), in plate ``image``: ``z_i ~ N(0, I)``,
    ``x_i | z_i ~ Bernoulli(σ(f(z_i)))``. The model holds a frozen copy of the decoder in
    ``dtype`` (its weights are constants: not registered with Pyro, no gradient; the
    decoder given is left as it is), so ``run_nuts(latent_model(decoder), x)`` samples
    every p(z_i | x_i) exactly (they are independent) and SVI on it fits a Gaussian to
    each image's posterior (the refined q* of the amortization gap).
    """
    frozen = copy.deepcopy(decoder).to(dtype).requires_grad_(False)

    def model(x: torch.Tensor) -> None:
        zeros = x.new_zeros(frozen.z_dim)
        with pyro.plate("image", x.shape[0]):
            z = pyro.sample("z", dist.Normal(zeros, 1.0).to_event(1))
            pyro.sample("x", dist.Bernoulli(logits=frozen(z)).to_event(1), obs=x)

    model.decoder = frozen
    return model
