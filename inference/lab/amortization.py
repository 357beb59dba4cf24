r"""The amortization gap (Cremer, Li & Duvenaud 2018): what one encoder for all images costs.

For a trained VAE and a few test images ``x_i``, with the decoder held fixed
(:func:`models.vae.latent_model`):

- **q** — the encoder's Gaussian q(z | x_i) (amortized: one network for every image);
- **q\*** — the best Gaussian of the same family for that image alone: a
  :class:`guides.vae.LocalGaussian` started at q and fitted by :func:`~inference.fit_svi`
  (its ELBO can only be higher, up to Monte Carlo noise);
- **NUTS** — the exact posterior p(z | x_i), sampled by :func:`~inference.run_nuts`.

Per image, with ``log p(x_i)`` estimated by the tighter of the two importance-weighted
bounds (k draws from q and from q\*; both are lower bounds):

.. math::

    \underbrace{\log p(x) - \mathrm{ELBO}[q]}_{\text{inference gap}}
    = \underbrace{\log p(x) - \mathrm{ELBO}[q^*]}_{\text{approximation gap}}
    + \underbrace{\mathrm{ELBO}[q^*] - \mathrm{ELBO}[q]}_{\text{amortization gap}}

The approximation gap is KL(q* ‖ p(z | x)): what a diagonal Gaussian cannot represent.
The amortization gap is what the encoder loses by not being q* for this image.
"""

from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch

from guides.vae import LocalGaussian
from inference.evidence.per_datum import per_datum_bounds
from inference.mcmc import NUTSResult, run_nuts
from inference.svi import SVIResult, fit_svi
from inference.validation import check_positive_int
from models.vae import latent_model

PLATE = "image"
# q* is one small Gaussian per image. At this rate fit_svi's rule declares it converged
# after ~3400 steps (10 digits, 2026-12-03); its means are within 0.1 NUTS sds far sooner.
REFINE_LR = 0.02


@dataclass(frozen=True)
class StudyBudget:
    """How hard the study tries: ``refine_steps`` (most SVI steps for q*), NUTS's
    ``num_chains``/``warmup_steps``/``num_samples``, ``iwae_samples`` (k per image)."""

    refine_steps: int = 5000
    num_chains: int = 4
    warmup_steps: int = 500
    num_samples: int = 1000
    iwae_samples: int = 1000


def amortized(training, x: torch.Tensor, seed: int = 0) -> SVIResult:
    """The encoder's q(z | x_i) for the images ``x`` as a result over ``latent_model``:
    its draws, bounds and tables are those of the amortized guide; its losses and time
    are the training's."""
    decoder, encoder = training.decoder, training.encoder
    with torch.no_grad():
        loc, scale = encoder(x.to(torch.float32))
    local = LocalGaussian(loc.double(), scale.double())
    return SVIResult.from_guide(
        latent_model(decoder),
        local.guide,
        x,
        losses=training.fit.losses,
        elapsed_s=training.elapsed_s,
        settings={"guide": "encoder (amortized)", "epochs": training.settings.epochs},
        seed=seed,
    )


def refine(training, x: torch.Tensor, budget: StudyBudget, seed: int = 0, progress_bar=False):
    """q*: a Gaussian per image, started at the encoder's and fitted with the decoder fixed."""
    check_positive_int("refine_steps", budget.refine_steps)
    with torch.no_grad():
        loc, scale = training.encoder(x.to(torch.float32))
    local = LocalGaussian(loc.double(), scale.double())
    return fit_svi(
        latent_model(training.decoder),
        local.guide,
        x,
        num_steps=budget.refine_steps,
        lr=REFINE_LR,
        elbo="meanfield",
        seed=seed,
        progress_bar=progress_bar,
    )


def sample_latent(training, x, budget: StudyBudget, seed: int = 0, progress_bar=False):
    """NUTS on p(z | x_i) for every image at once (independent posteriors, one run)."""
    # compile=False: nutpie's chains on the Inductor-compiled potential of this network ran
    # 7-27x slower than on the traced one (2026-12-03: 197 s against 26 s for 4 x 1500);
    # the traced potential is the fast one here.
    return run_nuts(
        latent_model(training.decoder),
        x,
        compile=False,
        num_chains=budget.num_chains,
        warmup_steps=budget.warmup_steps,
        num_samples=budget.num_samples,
        seed=seed,
        progress_bar=progress_bar,
    )


def gap_table(
    q: SVIResult, q_star: SVIResult, nuts: NUTSResult | None, iwae_samples: int, seed: int = 0
) -> pd.DataFrame:
    """One row per image: ELBO[q], ELBO[q*], log p(x) (IWAE), the gaps, and the means and
    sds of z under q, q* and NUTS (first latent coordinate and the average over all)."""
    (x,) = q.args
    bounds = {}
    for name, fit in (("q", q), ("q_star", q_star)):
        bounds[name] = per_datum_bounds(
            fit.model, fit.guide, x, plate=PLATE, num_samples=iwae_samples, seed=seed
        )
    log_px = np.maximum(bounds["q"].iwae, bounds["q_star"].iwae)
    table = pd.DataFrame(
        {
            "image": np.arange(len(x)),
            "elbo_q": bounds["q"].elbo,
            "elbo_q_star": bounds["q_star"].elbo,
            "log_px": log_px,
            "approximation_gap": log_px - bounds["q_star"].elbo,
            "amortization_gap": bounds["q_star"].elbo - bounds["q"].elbo,
            "elbo_mcse": np.hypot(bounds["q"].elbo_mcse, bounds["q_star"].elbo_mcse),
        }
    )
    moments = {
        name: _moments(np.asarray(fit.sample(2000, seed=seed).posterior["z"].values))
        for name, fit in (("q", q), ("q_star", q_star))
    }
    if nuts is not None:
        z = nuts.to_datatree().posterior["z"].values  # (chain, draw, image, latent)
        moments["nuts"] = _moments(z.reshape(-1, *z.shape[2:]))
    for name, (mean, sd) in moments.items():
        table[f"mean_{name}"] = mean[:, 0]
        table[f"sd_{name}"] = sd[:, 0]
    if "nuts" in moments:
        mean_n, sd_n = moments["nuts"]
        for name in ("q", "q_star"):
            mean, sd = moments[name]
            table[f"max_z_{name}"] = np.abs((mean - mean_n) / sd_n).max(axis=1)
            table[f"mean_sd_ratio_{name}"] = (sd / sd_n).mean(axis=1)
    return table


def _moments(z: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Means and sds over draws of ``z`` (draws, image, latent): each (image, latent)."""
    return z.mean(axis=0), z.std(axis=0, ddof=1)
