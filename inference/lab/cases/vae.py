"""The variational autoencoder case: amortized SVI, q* per image, and NUTS on the same decoder.

The VAE is trained once per run (:func:`~inference.lab.vae_training.train_vae`, on
scikit-learn's digits or the IDX files of ``data_dir``); then, for one test image of
each label (the first of each in the test set), the latent posterior p(z | x) with the
decoder fixed is approximated three ways (:mod:`inference.lab.amortization`):

- ``svi``: the encoder's q(z | x) (amortized);
- ``svi-refined``: q*, a Gaussian per image fitted by SVI, started at q;
- ``nuts-latent``: NUTS, the exact posterior and the reference of the parameter rows.

Trees carry what the figures need, so ``vilab report DIR`` redraws them from the files:
the ``svi`` tree holds the training history, the study images with their
reconstructions, samples from the prior and the test set's means in the latent space of a
second model with z = 2; the ``svi-refined`` tree holds the per-image gap table.
"""

from dataclasses import dataclass, field, replace
from functools import partial

import numpy as np
import torch
import xarray as xr

from inference.lab.amortization import (
    StudyBudget,
    amortized,
    gap_table,
    refine,
    sample_latent,
)
from inference.lab.cases.base import Budget, Case
from inference.lab.catalog import CASES, VAE_METHODS
from inference.lab.vae_training import VAESettings, train_vae
from models.images import ImageData, load_digits, load_idx_dir

# NUTS on the 10 images' z (80 coordinates): 4 x 500 draws give a bulk ESS near 1800 (4 x
# 1000 gave 3734 of 4000, 2026-12-03); num_steps is q*'s most SVI steps (converged ~3400).
FULL = Budget(num_chains=4, warmup_steps=500, num_samples=500, num_steps=5000, num_draws=1000)
QUICK = Budget(num_chains=2, warmup_steps=200, num_samples=300, num_steps=1000, num_draws=500)
QUICK_EPOCHS = 30  # 1437 digits: about 2 s, test ELBO ~ -21 nats/image (-19.2 at 100)
IWAE_SAMPLES = {"full": 1000, "quick": 200}
PRIOR_SAMPLES = 16


@dataclass
class Session:
    """One run's shared work: the data, and the trained models by (budget, seed)."""

    settings: VAESettings
    data_dir: str | None = None
    checkpoint: str | None = None
    trained: dict = field(default_factory=dict)
    _data: ImageData | None = None

    @property
    def data(self) -> ImageData:
        if self._data is None:
            self._data = load_digits() if self.data_dir is None else load_idx_dir(self.data_dir)
        return self._data

    def study_images(self) -> tuple[torch.Tensor, np.ndarray]:
        """The first test image of each label: ``(x, labels)``."""
        labels = self.data.y_test
        first = np.array(sorted(np.flatnonzero(labels == k)[0] for k in np.unique(labels)))
        return torch.as_tensor(self.data.x_test[first], dtype=torch.float64), labels[first]

    def training(self, quick: bool, seed: int, progress_bar: bool, z_dim=None):
        settings = self.settings
        if quick:
            settings = replace(settings, epochs=min(settings.epochs, QUICK_EPOCHS))
        if z_dim is not None:
            settings = replace(settings, z_dim=z_dim)
        key = (settings, seed)
        if key not in self.trained:
            main = z_dim is None
            self.trained[key] = train_vae(
                self.data,
                settings,
                seed=seed,
                checkpoint=self.checkpoint if main else None,
                progress_bar=progress_bar,
            )
        return self.trained[key]


def vae_case(settings: VAESettings | None = None, data_dir=None, checkpoint=None) -> Case:
    """The ``vae`` case; ``settings`` (epochs, sizes, ...), ``data_dir`` (IDX files instead
    of the digits) and ``checkpoint`` (the training's, to resume) as the CLI gives them."""
    session = Session(settings or VAESettings(), data_dir, checkpoint)
    # Read now: a bad directory or a batch larger than the data is the caller's error,
    # said once here rather than by every method.
    size = len(session.data.x_train)
    if session.settings.batch_size > size:
        raise ValueError(
            f"batch size {session.settings.batch_size} is larger than the {size} training images"
        )
    return Case(
        name="vae",
        description=CASES["vae"],
        model=_untrained_model,
        args=(),
        guide=None,
        reference=None,
        log_evidence=None,
        methods=VAE_METHODS,
        budgets={"full": FULL, "quick": QUICK},
        family="vae",
        runner=partial(_run, session),
        to_tree=partial(_to_tree, session),
        metrics=_metrics,
        reference_method="nuts-latent",
    )


def _untrained_model(*args, **kwargs):
    raise RuntimeError("the vae case runs its methods through its own runner")


def _run(session: Session, case: Case, method: str, budget: Budget, seed: int, progress_bar):
    quick = budget is case.budgets["quick"]
    training = session.training(quick, seed, progress_bar)
    x, _ = session.study_images()
    study = _study_budget(budget)
    if method == "svi":
        return amortized(training, x, seed=seed)
    if method == "svi-refined":
        return refine(training, x, study, seed=seed, progress_bar=progress_bar)
    if method == "nuts-latent":
        return sample_latent(training, x, study, seed=seed, progress_bar=progress_bar)
    raise ValueError(f"unknown method {method!r} for vae")


def _study_budget(budget: Budget) -> StudyBudget:
    return StudyBudget(
        refine_steps=budget.num_steps,
        num_chains=budget.num_chains,
        warmup_steps=budget.warmup_steps,
        num_samples=budget.num_samples,
    )


def _to_tree(session: Session, case: Case, method: str, result, budget: Budget, seed: int):
    quick = budget is case.budgets["quick"]
    x, labels = session.study_images()
    training = session.training(quick, seed, progress_bar=False)
    dims = {"z": ["image", "latent"]}
    if method == "nuts-latent":
        tree = result.to_datatree(dims=dims)
    else:
        tree = result.to_datatree(num_samples=budget.num_draws, seed=seed, dims=dims)
    tree.posterior.attrs["labels"] = [int(v) for v in labels]
    if method == "svi":
        tree["training"] = xr.DataTree(_training_dataset(training))
        tree["images"] = xr.DataTree(_images_dataset(training, x, labels, session.data, seed))
        small = session.training(quick, seed, progress_bar=False, z_dim=2)
        tree["latent_2d"] = xr.DataTree(_latent_2d(small, session.data))
    if method == "svi-refined":
        q = amortized(training, x, seed=seed)
        iwae = IWAE_SAMPLES["quick" if quick else "full"]
        table = gap_table(q, result, None, iwae_samples=iwae, seed=seed)
        tree["amortization_gap"] = xr.DataTree(xr.Dataset.from_dataframe(table.set_index("image")))
    return tree


def _training_dataset(training) -> xr.Dataset:
    s = training.settings
    return xr.Dataset(
        {
            "train_loss": ("epoch", training.train_loss),
            "test_elbo": ("epoch", training.test_elbo),
        },
        coords={"epoch": training.epochs},
        attrs={
            "epochs": s.epochs,
            "batch_size": s.batch_size,
            "z_dim": s.z_dim,
            "hidden": str(list(s.hidden)),
            "lr": s.lr,
            "elbo": s.elbo,
            "train_s": training.elapsed_s,
        },
    )


def _images_dataset(training, x, labels, data: ImageData, seed: int) -> xr.Dataset:
    with torch.no_grad():
        loc, _ = training.encoder(x.to(torch.float32))
        reconstruction = training.decoder.decode(loc).double().numpy()
    prior = training.decoder.sample_images(PRIOR_SAMPLES, seed=seed).double().numpy()
    return xr.Dataset(
        {
            "x": (("image", "pixel"), x.numpy()),
            "reconstruction": (("image", "pixel"), reconstruction),
            "label": ("image", np.asarray(labels)),
            "prior_sample": (("sample", "pixel"), prior),
        },
        attrs={"height": data.shape[0], "width": data.shape[1]},
    )


def _latent_2d(training, data: ImageData) -> xr.Dataset:
    with torch.no_grad():
        loc, _ = training.encoder(torch.as_tensor(data.x_test))
    return xr.Dataset(
        {"z": (("test_image", "axis"), loc.double().numpy()), "label": ("test_image", data.y_test)},
        attrs={"test_elbo": float(training.test_elbo[-1]), "epochs": training.settings.epochs},
    )


def _metrics(method: str, tree: xr.DataTree) -> dict:
    row = {}
    if "training" in tree.children:
        training = tree["training"].to_dataset()
        row["test_elbo_per_image"] = float(training["test_elbo"].values[-1])
        row["epochs"] = int(training.attrs["epochs"])
        row["train_s"] = float(training.attrs["train_s"])
    if "amortization_gap" in tree.children:
        gap = tree["amortization_gap"].to_dataset()
        row["elbo_q_per_image"] = float(gap["elbo_q"].mean())
        row["elbo_q_star_per_image"] = float(gap["elbo_q_star"].mean())
        row["log_px_per_image"] = float(gap["log_px"].mean())
        row["amortization_gap"] = float(gap["amortization_gap"].mean())
        row["approximation_gap"] = float(gap["approximation_gap"].mean())
    return row
