"""Training the VAE: the generic SVI engine by epochs, with an honest test ELBO each epoch.

:func:`train_vae` builds the decoder (:mod:`models.vae`) and encoder (:mod:`guides.vae`)
from a seed, and trains them with :func:`~inference.fit_svi` on minibatches of the
training images (``schedule="constant"``: Adam at ``lr`` for ``epochs`` passes; the
engine's epoch sampler gives O(batch) minibatches and keeps its place in a checkpoint).
After every epoch the test set's ELBO per image is measured (its own seed, outside
the fit's RNG stream, so measuring does not change the training). ``checkpoint=`` writes
the fit's state every ``checkpoint_every`` epochs and on Ctrl-C, and the measured
history beside it (``<checkpoint>.history.json``, after every epoch); running again
with the same path resumes and ends with the numbers of an uninterrupted run.
"""

import json
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from guides.vae import Encoder
from inference.evidence.per_datum import per_datum_bounds
from inference.svi import fit_svi
from inference.validation import check_positive_float, check_positive_int
from models.images import ImageData, check_images
from models.vae import Decoder

ELBOS = ("meanfield", "trace")
EVAL_SAMPLES = 10  # z draws per test image for the per-epoch test ELBO
EVAL_SEED = 2024


@dataclass(frozen=True)
class VAESettings:
    """How to build and train the VAE.

    epochs: passes over the training images. batch_size: images per step. z_dim, hidden:
    the networks' sizes (the encoder mirrors the decoder). lr: Adam's rate. elbo:
    ``meanfield`` (KL(q || p(z)) in closed form) or ``trace`` (all Monte Carlo).
    checkpoint_every: epochs between checkpoints. device: ``cpu`` or ``cuda``.
    processes: train with PyTorch Lightning in this many DDP processes (None: vilab's
    own engine, :func:`~inference.fit_svi`).
    """

    epochs: int = 100
    batch_size: int = 128
    z_dim: int = 8
    hidden: tuple[int, ...] = (256,)
    lr: float = 1e-3
    elbo: str = "meanfield"
    checkpoint_every: int = 10
    device: str = "cpu"
    processes: int | None = None

    def __post_init__(self):
        check_positive_int("epochs", self.epochs)
        check_positive_int("batch_size", self.batch_size)
        check_positive_int("checkpoint_every", self.checkpoint_every)
        check_positive_float("lr", self.lr)
        if self.elbo not in ELBOS:
            raise ValueError(f"unknown elbo {self.elbo!r}; choose one of: {', '.join(ELBOS)}")


@dataclass
class VAETraining:
    """A trained VAE and how it got there.

    decoder, encoder: the trained networks (CPU, float32). settings: the
    :class:`VAESettings`. epochs: 1..E. train_loss: each epoch's mean loss per training
    image (negative ELBO, nats). test_elbo: the test ELBO per image after each epoch.
    elapsed_s: training seconds (evaluations excluded). fit: the engine's result.
    epoch_seconds: each epoch's seconds in this call (evaluations excluded; the first also
    holds the fit's setup: compiling the loss), for timing; empty under Lightning.
    """

    decoder: Decoder
    encoder: Encoder
    settings: VAESettings
    epochs: np.ndarray
    train_loss: np.ndarray
    test_elbo: np.ndarray
    elapsed_s: float
    fit: object = field(repr=False, default=None)
    epoch_seconds: np.ndarray = field(repr=False, default_factory=lambda: np.zeros(0))

    def save(self, path) -> Path:
        """Write the networks' sizes and weights to ``path`` (plain tensors: read back by
        :func:`load_vae` with ``weights_only=True``, which never runs code)."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        payload = {
            "format": SAVED_FORMAT,
            "z_dim": self.decoder.z_dim,
            "hidden": list(self.decoder.hidden),
            "x_dim": self.decoder.x_dim,
            "decoder": self.decoder.state_dict(),
            "encoder": self.encoder.state_dict(),
        }
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        torch.save(payload, tmp)
        os.replace(tmp, path)
        return path


SAVED_FORMAT = "vilab-vae"


def load_vae(path) -> tuple[Decoder, Encoder]:
    """The decoder and encoder saved by :meth:`VAETraining.save` (CPU, float32)."""
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise
    except Exception as err:  # torch raises UnpicklingError, RuntimeError, EOFError, ...
        raise ValueError(f"{str(path)!r} is not a saved vilab VAE, or holds code (refused, not "
                         f"run): {type(err).__name__}") from None  # fmt: skip
    if not isinstance(payload, dict) or payload.get("format") != SAVED_FORMAT:
        raise ValueError(f"{str(path)!r} is not a saved vilab VAE")
    decoder = Decoder(payload["z_dim"], tuple(payload["hidden"]), payload["x_dim"])
    encoder = Encoder(payload["z_dim"], tuple(payload["hidden"]), payload["x_dim"])
    decoder.load_state_dict(payload["decoder"])
    encoder.load_state_dict(payload["encoder"])
    return decoder, encoder


def build_networks(z_dim: int, hidden, x_dim: int, seed: int) -> tuple[Decoder, Encoder]:
    """Decoder and encoder with torch's default initialisation drawn from ``seed`` only."""
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        return Decoder(z_dim, hidden, x_dim), Encoder(z_dim, hidden, x_dim)


def steps_for(epochs: float, size: int, batch: int) -> int:
    """Optimisation steps for ``epochs`` passes over ``size`` points, ``batch`` a step."""
    return math.ceil(epochs * size / batch - 1e-9)


def elbo_per_image(decoder, encoder, x_test: torch.Tensor, num_samples=EVAL_SAMPLES) -> float:
    """Mean over the images ``x_test`` of each image's ELBO (nats), fixed seed; images
    of another size than the decoder's, or not binary, are refused."""
    x_test = torch.as_tensor(check_images(x_test, decoder.x_dim, what="images"))
    device = next(decoder.parameters()).device
    bounds = per_datum_bounds(
        decoder.model,
        encoder.guide,
        x_test,
        num_samples=num_samples,
        seed=EVAL_SEED,
        device=device,
    )
    return float(bounds.elbo.mean())


def train_vae(
    data: ImageData,
    settings: VAESettings = VAESettings(),
    *,
    seed: int = 0,
    checkpoint=None,
    progress_bar: bool = False,
) -> VAETraining:
    """Train the VAE on ``data.x_train``, measuring the test ELBO per image every epoch."""
    x_train = torch.as_tensor(check_images(data.x_train, what="training images"))
    x_test = torch.as_tensor(check_images(data.x_test, data.pixels, what="test images"))
    size, batch = x_train.shape[0], settings.batch_size
    if batch > size:
        raise ValueError(f"batch size {batch} is larger than the {size} training images")
    decoder, encoder = build_networks(settings.z_dim, settings.hidden, data.pixels, seed)
    if settings.device != "cpu" and settings.processes is None:
        decoder.to(settings.device)  # fit_svi moves the data; the networks are the model's
        encoder.to(settings.device)
    if settings.processes is not None:
        if checkpoint is not None:
            raise ValueError("checkpoints are vilab's own training's, not Lightning's")
        return _train_lightning(decoder, encoder, x_train, x_test, settings, seed, progress_bar)
    history = _History.load(checkpoint)
    bar = tqdm(total=settings.epochs, disable=not progress_bar, desc="vae", unit="epoch")
    evaluating = [0.0]
    recent: list[float] = []
    epoch_seconds: list[float] = []  # this call's epochs, evaluations excluded
    clock = [time.perf_counter()]

    def callback(info) -> None:
        if not recent:  # the first step of this call: a resumed run starts after the last
            history.keep_until(info.step, size, batch)
            bar.update(len(history.test_elbo))
        recent.append(info.loss)
        epoch = len(history.test_elbo) + 1
        if info.step + 1 != steps_for(epoch, size, batch):
            return
        start = time.perf_counter()
        epoch_seconds.append(start - clock[0])
        history.test_elbo.append(elbo_per_image(decoder, encoder, x_test))
        history.save(checkpoint)
        clock[0] = time.perf_counter()
        evaluating[0] += clock[0] - start
        bar.update()
        in_epoch = recent[-(info.step + 1 - steps_for(epoch - 1, size, batch)) :]
        bar.set_postfix(
            loss=f"{np.mean(in_epoch) / size:.3f}", test_elbo=f"{history.test_elbo[-1]:.3f}"
        )

    try:
        fit = fit_svi(
            decoder.model,
            encoder.guide,
            x_train,
            batch,
            num_steps=steps_for(settings.epochs, size, batch),
            lr=settings.lr,
            elbo=settings.elbo,
            seed=seed,
            dtype=torch.float32,
            schedule="constant",
            device=settings.device,
            callback=callback,
            checkpoint=checkpoint,
            checkpoint_every=max(1, math.floor(settings.checkpoint_every * size / batch)),
        )
    finally:
        bar.close()
    decoder.cpu()
    encoder.cpu()
    ends = [steps_for(e, size, batch) for e in range(settings.epochs + 1)]
    losses = np.asarray(fit.losses)
    train_loss = [losses[a:b].mean() / size for a, b in zip(ends[:-1], ends[1:], strict=True)]
    return VAETraining(
        decoder=decoder,
        encoder=encoder,
        settings=settings,
        epochs=np.arange(1, settings.epochs + 1),
        train_loss=np.asarray(train_loss),
        test_elbo=np.asarray(history.test_elbo),
        elapsed_s=fit.elapsed_s - evaluating[0],
        fit=fit,
        epoch_seconds=np.asarray(epoch_seconds),
    )


def _train_lightning(decoder, encoder, x_train, x_test, settings, seed, progress_bar):
    """The same training under PyTorch Lightning (DDP in ``settings.processes`` processes);
    the test ELBO is measured once, after the last epoch (the others are NaN)."""
    from inference.svi.lightning import fit_svi_lightning

    # The model takes the whole plate (batch_size None): Lightning hands it each
    # process's indices, whose number is the global batch over the processes.
    fit = fit_svi_lightning(
        decoder.model,
        encoder.guide,
        x_train,
        num_epochs=settings.epochs,
        batch_size=settings.batch_size,
        lr=settings.lr,
        elbo=settings.elbo,
        seed=seed,
        num_processes=settings.processes,
        accelerator="gpu" if settings.device.startswith("cuda") else "cpu",
        progress_bar=progress_bar,
    )
    decoder.cpu()
    encoder.cpu()
    test_elbo = np.full(settings.epochs, np.nan)
    test_elbo[-1] = elbo_per_image(decoder, encoder, x_test)
    return VAETraining(
        decoder=decoder,
        encoder=encoder,
        settings=settings,
        epochs=np.arange(1, settings.epochs + 1),
        train_loss=np.asarray(fit.losses),
        test_elbo=test_elbo,
        elapsed_s=fit.elapsed_s,
        fit=fit,
    )


@dataclass
class _History:
    """The test ELBO per image after each epoch, kept beside the run's checkpoint.

    Written after every epoch, before the engine's checkpoint of the same step (the
    engine calls back first), so a resumed run finds every epoch its checkpoint has
    passed; epochs past the checkpoint (measured after it was written, then lost) are
    dropped and measured again, to the same numbers (the measurement has its own seed).
    """

    checkpoint: Path | None = None
    test_elbo: list[float] = field(default_factory=list)

    @property
    def path(self) -> Path:
        return self.checkpoint.with_name(self.checkpoint.name + ".history.json")

    @classmethod
    def load(cls, checkpoint) -> "_History":
        if checkpoint is None:
            return cls()
        history = cls(Path(checkpoint))
        if history.checkpoint.exists() and history.path.exists():
            history.test_elbo = list(json.loads(history.path.read_text())["test_elbo"])
        return history

    def keep_until(self, step: int, size: int, batch: int) -> None:
        """Keep the epochs that ended at or before ``step`` steps."""
        while self.test_elbo and steps_for(len(self.test_elbo), size, batch) > step:
            self.test_elbo.pop()

    def save(self, checkpoint) -> None:
        if checkpoint is None:
            return
        path = self.path
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps({"test_elbo": self.test_elbo}))
        os.replace(tmp, path)
