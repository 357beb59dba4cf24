r"""The digits VAE in plain PyTorch: the reference and speed baseline for vilab's Pyro VAE.

An independent implementation (torch, numpy and scikit-learn only: no Pyro, no vilab
package) of the variational autoencoder vilab trains with ``TraceMeanField_ELBO``, so
that vilab's fit can be checked against it (the same test ELBO per image) and timed
against it (seconds per epoch).

.. math::

    z_n &\sim \mathcal{N}(0, I_L), \qquad
    x_{nd} \mid z_n \sim \mathrm{Bernoulli}\big(\sigma(f_\theta(z_n)_d)\big), \\
    q_\phi(z_n \mid x_n) &= \mathcal{N}\big(\mu_\phi(x_n), \mathrm{diag}\,\sigma_\phi(x_n)^2\big),
    \qquad \sigma_\phi = \mathrm{softplus}(\cdot) + 10^{-4}.

Data: scikit-learn's 8×8 digits thresholded at 8 (``x = data >= 8``), split 1437 / 360
with ``train_test_split(test_size=0.2, random_state=0, stratify=target)``. Decoder
``L → 256 → 64`` logits, encoder ``64 → 256 → 2L``, softplus between layers. The loss of
a minibatch B of n out of N images is the negative ELBO of the whole training set
estimated from it (one reparameterized draw per image, the KL in closed form):

.. math::

    \mathcal{L}_B = -\frac{N}{n} \sum_{i \in B} \Big(\log p_\theta(x_i \mid \mu_i + \sigma_i
    \odot \varepsilon_i) - \mathrm{KL}\big(q_\phi(z_i \mid x_i) \,\|\, \mathcal{N}(0, I)\big)\Big),

which is what Pyro's ``TraceMeanField_ELBO`` computes with a subsampled plate. Adam
(``lr=1e-3``, ``eps=1e-6``) on encoder and decoder together; each epoch a fresh
permutation cut into slices of ``batch_size`` (the last, shorter one kept). All ELBOs
here are in nats **per image**.

``python -m benchmarks.vae_torch --epochs 100 --seeds 3`` trains and prints one line per
seed, then the mean ± sd of the test ELBO per image. The module never changes torch's
thread count; ``main`` does, from ``--threads``.

References
----------
Kingma, D. P. and Welling, M. (2014). Auto-encoding variational Bayes. ICLR.
"""

import argparse
import time
from dataclasses import dataclass, field

import numpy as np
import torch
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split
from torch import nn
from torch.nn.functional import binary_cross_entropy_with_logits, softplus

MIN_SCALE = 1e-4  # added to the encoder's softplus scale, as in vilab's guide
THRESHOLD = 8  # a pixel (0..16) is on when it is at least this
TEST_SIZE = 0.2
SPLIT_SEED = 0
EVAL_SAMPLES = 100  # draws of z per image in the reported ELBOs
EVAL_CHUNK = 128  # images per evaluation pass (bounds the memory of K × chunk × hidden)


def load_data() -> tuple[torch.Tensor, torch.Tensor]:
    """Binarized digits ``(x_train, x_test)``, float32, shapes (1437, 64) and (360, 64)."""
    digits = load_digits()
    x = (digits.data >= THRESHOLD).astype(np.float32)
    x_train, x_test = train_test_split(
        x, test_size=TEST_SIZE, random_state=SPLIT_SEED, stratify=digits.target
    )
    return torch.from_numpy(x_train), torch.from_numpy(x_test)


def mlp(sizes: tuple[int, ...]) -> nn.Sequential:
    """Linear layers through ``sizes``, a softplus between each two (none after the last)."""
    layers = []
    for i, (n_in, n_out) in enumerate(zip(sizes[:-1], sizes[1:], strict=True)):
        if i:
            layers.append(nn.Softplus())
        layers.append(nn.Linear(n_in, n_out))
    return nn.Sequential(*layers)


class Encoder(nn.Module):
    """q(z | x): ``x_dim`` pixels to ``(loc, scale)`` of a diagonal Gaussian on ``z_dim``."""

    def __init__(self, z_dim: int = 8, hidden: tuple[int, ...] = (256,), x_dim: int = 64):
        super().__init__()
        self.z_dim = z_dim
        self.net = mlp((x_dim, *hidden, 2 * z_dim))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        out = self.net(x)
        return out[..., : self.z_dim], softplus(out[..., self.z_dim :]) + MIN_SCALE


class Decoder(nn.Module):
    """p(x | z): ``z_dim`` latent coordinates to ``x_dim`` Bernoulli logits."""

    def __init__(self, z_dim: int = 8, hidden: tuple[int, ...] = (256,), x_dim: int = 64):
        super().__init__()
        self.net = mlp((z_dim, *hidden, x_dim))

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.net(z)


def log_likelihood(logits: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """Bernoulli log p(x | logits), summed over pixels (the last dim)."""
    return -binary_cross_entropy_with_logits(logits, x.expand_as(logits), reduction="none").sum(-1)


def kl_standard_normal(loc: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """KL(N(loc, diag scale²) || N(0, I)) in closed form, summed over the last dim."""
    return (0.5 * (loc.square() + scale.square() - 1.0) - scale.log()).sum(-1)


def minibatch_loss(
    encoder: Encoder,
    decoder: Decoder,
    x: torch.Tensor,
    num_data: int,
    generator: torch.Generator,
) -> torch.Tensor:
    """The negative ELBO of all ``num_data`` images estimated from the batch ``x`` (nats).

    One reparameterized draw ``z = loc + scale * eps`` per image, the KL exact, the sum
    over the batch scaled by ``num_data / len(x)``.
    """
    loc, scale = encoder(x)
    eps = torch.randn(loc.shape, generator=generator, dtype=loc.dtype)
    elbo = log_likelihood(decoder(loc + scale * eps), x) - kl_standard_normal(loc, scale)
    return -(num_data / x.shape[0]) * elbo.sum()


def test_elbo_per_image(
    encoder: Encoder,
    decoder: Decoder,
    x: torch.Tensor,
    num_samples: int = EVAL_SAMPLES,
    seed: int = 0,
) -> float:
    """Mean over the images ``x`` of each one's ELBO (nats per image).

    Each image's ELBO is ``mean_k log p(x | z_k) - KL(q(z | x) || p(z))`` with
    ``num_samples`` draws ``z_k ~ q(z | x)`` and the KL exact. The draws come from a
    generator seeded by ``seed``, so the same networks, data and seed give the same number.
    """
    generator = torch.Generator().manual_seed(seed)
    total = 0.0
    with torch.no_grad():
        for chunk in x.split(EVAL_CHUNK):
            loc, scale = encoder(chunk)
            eps = torch.randn((num_samples, *loc.shape), generator=generator, dtype=loc.dtype)
            expected = log_likelihood(decoder(loc + scale * eps), chunk).mean(0)
            total += float((expected - kl_standard_normal(loc, scale)).double().sum())
    return total / x.shape[0]


def epoch_seed(seed: int, epoch: int) -> int:
    """The seed of epoch ``epoch``'s permutation, derived from ``(seed, epoch)``."""
    return int(np.random.SeedSequence([seed, epoch]).generate_state(1, np.uint64)[0] >> 1)


@dataclass(frozen=True)
class TorchVaeRun:
    """One training of the plain-PyTorch VAE. All ELBOs and losses in nats per image.

    test_elbo_per_image, train_elbo_per_image: the trained networks' ELBO, mean over the
    360 test / 1437 training images, :data:`EVAL_SAMPLES` draws per image plus the exact
    KL (:func:`test_elbo_per_image`, seeded by ``seed``). seconds_per_epoch: wall-clock
    training time (``time.perf_counter``; evaluation excluded) over the epochs.
    epoch_seconds: that time epoch by epoch. losses_per_image: each epoch's training loss
    (the minibatch negative ELBOs, one draw per image, summed over the epoch's batches
    weighted by batch size, divided by N: the epoch's mean negative ELBO per image).
    eval_epochs, test_elbo_trace: with ``eval_every``, the epochs (1-based) after which the
    test ELBO per image was measured and its values (empty otherwise). settings: the
    arguments of :func:`train`. encoder, decoder: the trained networks.
    """

    test_elbo_per_image: float
    train_elbo_per_image: float
    seconds_per_epoch: float
    epoch_seconds: np.ndarray
    losses_per_image: np.ndarray
    eval_epochs: np.ndarray
    test_elbo_trace: np.ndarray
    settings: dict = field(default_factory=dict)
    encoder: Encoder | None = None
    decoder: Decoder | None = None


def build_networks(
    z_dim: int, hidden: tuple[int, ...], seed: int, x_dim: int = 64
) -> tuple[Encoder, Decoder]:
    """Encoder and decoder with torch's default initialization drawn under ``seed``.

    The global RNG is forked, so building leaves the caller's RNG state as it was.
    """
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return Encoder(z_dim, hidden, x_dim), Decoder(z_dim, hidden, x_dim)


def train(
    epochs: int = 100,
    batch_size: int = 128,
    z_dim: int = 8,
    hidden: tuple[int, ...] = (256,),
    lr: float = 1e-3,
    seed: int = 0,
    eval_every: int | None = None,
) -> TorchVaeRun:
    """Train the VAE on the digits for ``epochs`` epochs of Adam on minibatches.

    ``seed`` fixes the networks' initialization, the permutation of every epoch (a
    generator seeded by ``(seed, epoch)``), the draws of ``eps`` and the evaluation draws.
    ``eval_every``: also measure the test ELBO per image after every that many epochs.
    """
    hidden = (hidden,) if isinstance(hidden, int) else tuple(hidden)
    x_train, x_test = load_data()
    num_data = x_train.shape[0]
    encoder, decoder = build_networks(z_dim, hidden, seed, x_train.shape[1])
    params = [*encoder.parameters(), *decoder.parameters()]
    optimizer = torch.optim.Adam(params, lr=lr, eps=1e-6)
    noise = torch.Generator().manual_seed(seed)
    epoch_seconds, losses, eval_epochs, trace = [], [], [], []
    for epoch in range(epochs):
        start = time.perf_counter()
        shuffle = torch.Generator().manual_seed(epoch_seed(seed, epoch))
        order = torch.randperm(num_data, generator=shuffle)
        epoch_loss = 0.0
        for index in order.split(batch_size):
            loss = minibatch_loss(encoder, decoder, x_train[index], num_data, noise)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            epoch_loss += loss.item() * len(index) / num_data
        epoch_seconds.append(time.perf_counter() - start)
        losses.append(epoch_loss / num_data)
        if eval_every and (epoch + 1) % eval_every == 0:
            eval_epochs.append(epoch + 1)
            trace.append(test_elbo_per_image(encoder, decoder, x_test, seed=seed))
    epoch_seconds = np.array(epoch_seconds)
    return TorchVaeRun(
        test_elbo_per_image=test_elbo_per_image(encoder, decoder, x_test, seed=seed),
        train_elbo_per_image=test_elbo_per_image(encoder, decoder, x_train, seed=seed),
        seconds_per_epoch=float(epoch_seconds.mean()) if epochs else float("nan"),
        epoch_seconds=epoch_seconds,
        losses_per_image=np.array(losses),
        eval_epochs=np.array(eval_epochs, dtype=int),
        test_elbo_trace=np.array(trace),
        settings={
            "epochs": epochs,
            "batch_size": batch_size,
            "z_dim": z_dim,
            "hidden": hidden,
            "lr": lr,
            "seed": seed,
            "eval_every": eval_every,
        },
        encoder=encoder,
        decoder=decoder,
    )


def format_run(run: TorchVaeRun) -> str:
    """One line: the seed, test and train ELBO per image, seconds per epoch and in all."""
    return (
        f"seed {run.settings['seed']}: test ELBO/image {run.test_elbo_per_image:.3f}, "
        f"train ELBO/image {run.train_elbo_per_image:.3f}, "
        f"{run.seconds_per_epoch * 1e3:.1f} ms/epoch, "
        f"{run.epoch_seconds.sum():.1f} s training"
    )


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.vae_torch",
        description="Train the digits VAE in plain PyTorch (vilab's reference and baseline).",
    )
    parser.add_argument("--epochs", type=int, default=100, help="epochs (default 100)")
    parser.add_argument("--batch-size", type=int, default=128, help="images per step (128)")
    parser.add_argument("--z-dim", type=int, default=8, help="latent size (default 8)")
    parser.add_argument("--seed", type=int, default=0, help="first seed (default 0)")
    parser.add_argument("--seeds", type=int, default=1, help="seeds seed, seed+1, ... (1)")
    parser.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch intra-op threads (default 1; 0 leaves torch's default)",
    )
    args = parser.parse_args(argv)
    for name in ("epochs", "batch_size", "z_dim", "seeds"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be >= 1")
    if args.threads < 0:
        parser.error("--threads must be >= 0")
    return args


def main(argv=None) -> None:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    print(
        f"plain-PyTorch VAE: {args.epochs} epochs, batch {args.batch_size}, "
        f"z_dim {args.z_dim}, {torch.get_num_threads()} thread(s)"
    )
    wall = time.perf_counter()
    elbos = []
    for seed in range(args.seed, args.seed + args.seeds):
        run = train(args.epochs, args.batch_size, args.z_dim, seed=seed)
        elbos.append(run.test_elbo_per_image)
        print(format_run(run), flush=True)
    sd = np.std(elbos, ddof=1) if len(elbos) > 1 else float("nan")
    print(
        f"test ELBO/image over {len(elbos)} seed(s): {np.mean(elbos):.3f} ± {sd:.3f} "
        f"(sd); {time.perf_counter() - wall:.1f} s in all"
    )


if __name__ == "__main__":
    main()
