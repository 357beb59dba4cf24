"""The amortization study on a fully trained VAE: q (encoder) <= q* (per image) vs NUTS.

One module-scoped study: the default VAE (100 epochs, seed 0), the case's 10 study
images (the first test image of each digit), q* fitted twice (seeds 0 and 1: the second
only measures the optimiser's noise), NUTS with the default budget (4 chains x 1000
draws after 500 warmup) and the gap table. Timings on this machine (2 cores, shared):
training ~11 s (~20 s busy), the two q* fits ~4 s each, NUTS ~30 s (~50 s busy), the gap
table ~2 s; the tests themselves under a second. Every test is marked slow for the
shared setup.
"""

import copy
from dataclasses import dataclass

import numpy as np
import pandas as pd
import pytest
import torch
from arviz_stats.base import array_stats

from guides.vae import MIN_SCALE
from inference.evidence.psis import GOOD_BELOW, pareto_khat
from inference.lab.amortization import StudyBudget, amortized, gap_table, refine, sample_latent
from inference.lab.cases.vae import Session
from inference.lab.vae_training import VAESettings, train_vae
from models.images import load_digits

pytestmark = pytest.mark.slow

# The default budget's 3000 steps stop q* just short of the convergence rule (measured:
# it converges after 3400 steps); a larger budget follows the same path and converges.
BUDGET = StudyBudget(refine_steps=10_000)
K = 4.0  # two-sided 6.3e-5 per Gaussian comparison; <= 160 of them: <= 1% family-wise


@dataclass
class Study:
    training: object
    x: torch.Tensor
    labels: np.ndarray
    q: object
    q_star: object
    q_star_again: object  # seed 1: only for the optimiser's noise
    nuts: object
    table: pd.DataFrame


@pytest.fixture(scope="module")
def study():
    training = train_vae(load_digits(), VAESettings(epochs=100), seed=0)
    x, labels = Session(VAESettings()).study_images()
    q = amortized(training, x, seed=0)
    q_star = refine(training, x, BUDGET, seed=0)
    q_star_again = refine(training, x, BUDGET, seed=1)
    nuts = sample_latent(training, x, StudyBudget(), seed=0)
    table = gap_table(q, q_star, nuts, iwae_samples=StudyBudget().iwae_samples, seed=0)
    return Study(training, x, labels, q, q_star, q_star_again, nuts, table)


def _loc_scale(fit) -> tuple[np.ndarray, np.ndarray]:
    """q*'s per-image Gaussian (image, latent): its fitted parameters (``LocalGaussian``'s,
    registered as Pyro module ``local``)."""
    params = fit.params()
    loc = params["local$$$loc"].double().numpy()
    scale = torch.nn.functional.softplus(params["local$$$raw_scale"]).double().numpy() + MIN_SCALE
    return loc, scale


def _nuts_z(study) -> np.ndarray:
    return study.nuts.to_datatree().posterior["z"].values  # (chain, draw, image, latent)


def test_q_star_is_at_least_as_good_as_the_encoder_on_every_image(study):
    # Measured: gaps 0.13-0.58 nats, each 4.1-12 of its MCSE (0.03-0.05).
    table = study.table
    assert study.q_star.converged and study.q_star.num_steps < BUDGET.refine_steps
    assert len(table) == 10
    gap = table["elbo_q_star"] - table["elbo_q"]
    np.testing.assert_allclose(table["amortization_gap"], gap)
    assert np.all(gap >= -K * table["elbo_mcse"]), table[["amortization_gap", "elbo_mcse"]]


def test_the_gap_table(study):
    table = study.table
    columns = {
        "image", "elbo_q", "elbo_q_star", "log_px", "approximation_gap", "amortization_gap",
        "elbo_mcse", "mean_q", "sd_q", "mean_q_star", "sd_q_star", "mean_nuts", "sd_nuts",
        "max_z_q", "max_z_q_star", "mean_sd_ratio_q", "mean_sd_ratio_q_star",
    }  # fmt: skip
    assert columns <= set(table.columns), set(table.columns)
    assert np.isfinite(table.drop(columns="image").to_numpy()).all()
    # log p(x) is the larger IWAE bound, and an IWAE bound is never below the ELBO of the
    # same draws (log-mean-exp >= mean): log_px >= ELBO[q*] up to round-off, so the
    # approximation gap is >= 0, not only >= -4 MCSE. Measured: 0.12-0.27 nats.
    assert np.all(table["log_px"] >= table["elbo_q_star"] - 1e-9)
    assert np.all(table["log_px"] >= table["elbo_q"] - 1e-9)
    assert np.all(table["approximation_gap"] >= -K * table["elbo_mcse"])
    np.testing.assert_allclose(table["approximation_gap"], table["log_px"] - table["elbo_q_star"])
    # The NUTS columns are its draws' moments of the first latent coordinate.
    z = _nuts_z(study).reshape(-1, 10, 8)
    np.testing.assert_allclose(table["mean_nuts"], z[:, :, 0].mean(0))
    np.testing.assert_allclose(table["sd_nuts"], z[:, :, 0].std(0, ddof=1))
    # q* sits on the posterior, the encoder further off: measured max |z| over the 8
    # coordinates 0.02-0.08 for q* (2000 draws: a mean's error ~0.025 posterior sds, the
    # max of 8 ~0.06; 0.15 is ~6 of them), 0.26-0.71 for q.
    assert np.all(table["max_z_q_star"] < 0.15), table["max_z_q_star"]
    assert table["max_z_q"].mean() > 2 * table["max_z_q_star"].mean()
    assert gap_table(study.q, study.q_star, None, iwae_samples=10).filter(like="max_z").empty


def _log_weights(decoder, x: torch.Tensor, loc, scale, num_samples: int, seed: int):
    """log p(x, z) - log q*(z) for draws z ~ q*, per image: (num_samples, image)."""
    generator = torch.Generator().manual_seed(seed)
    loc, scale = torch.as_tensor(loc), torch.as_tensor(scale)
    eps = torch.randn(num_samples, *loc.shape, generator=generator, dtype=torch.float64)
    z = loc + scale * eps
    net = copy.deepcopy(decoder).double()
    with torch.no_grad():
        log_prior = torch.distributions.Normal(0.0, 1.0).log_prob(z).sum(-1)
        log_lik = torch.distributions.Bernoulli(logits=net(z)).log_prob(x).sum(-1)
        log_q = torch.distributions.Normal(loc, scale).log_prob(z).sum(-1)
    return (log_prior + log_lik - log_q).numpy()


def test_q_star_is_the_kl_optimal_diagonal_gaussian_where_the_posterior_is_gaussian(study):
    """For p(z | x) = N(m, S), the diagonal Gaussian minimising KL(q || p) has mean m and
    variances 1 / (S^-1)_ii (smaller than S_ii when the coordinates correlate)."""
    z = _nuts_z(study)  # (chain, draw, image, latent)
    n_images, n_latent = z.shape[2:]
    loc, scale = _loc_scale(study.q_star)
    loc_again, scale_again = _loc_scale(study.q_star_again)
    # The optimiser's noise in q*'s parameters, pooled over all 80 coordinates from two
    # fits with other seeds (measured: 0.0069 for a mean, 0.0060 for a sd, about the size
    # of NUTS's MCSEs, 0.008 and 0.009).
    noise_loc = np.sqrt(np.mean((loc - loc_again) ** 2) / 2)
    noise_scale = np.sqrt(np.mean((scale - scale_again) ** 2) / 2)
    # Near-Gaussian: the PSIS k-hat of q*'s importance weights below 0.5 (Yao et al. 2018:
    # q* then covers the posterior's mass well enough for the weights to have finite
    # variance). A posterior that is far from every Gaussian gives a large k-hat; k-hat is
    # conservative here, since a correlated Gaussian posterior also raises it (a diagonal
    # q* is narrower). Marginal skewness and kurtosis decide less: all 10 posteriors have
    # |skew| <= 0.31 and |excess kurtosis| <= 0.39 per coordinate (measured), and they
    # do not track where q* departs from the Gaussian theory.
    log_w = _log_weights(study.training.decoder, study.x, loc, scale, 16_000, seed=0)
    khat = np.array([pareto_khat(log_w[:, i]) for i in range(n_images)])
    gaussian = np.flatnonzero(khat < GOOD_BELOW)
    # Measured (16000 draws): k-hat 0.31-0.55, and 7 images qualify: 1, 3, 4, 5, 7, 8, 9
    # (digits 6, 2, 8, 9, 5, 1, 0). Every image's k-hat is near 0.5, and its own noise is
    # ~0.05 (other draws: 7-9 qualify); the 3 left out agree as well (largest |z| 3.2).
    assert len(gaussian) >= 3, khat
    worst, chi2_conditional, chi2_marginal = 0.0, 0.0, 0.0
    for i in gaussian:
        zi = z[:, :, i, :]
        flat = zi.reshape(-1, n_latent)
        mean = flat.mean(0)
        precision = np.linalg.inv(np.cov(flat.T))
        target_sd = 1 / np.sqrt(np.diag(precision))
        for d in range(n_latent):
            # 1 / (S^-1)_dd is the variance of z_d's residual on the other coordinates;
            # ArviZ's MCSE of that residual's sd is the MCSE of the target.
            rest = [k for k in range(n_latent) if k != d]
            beta = -precision[d, rest] / precision[d, d]
            residual = zi[..., d] - mean[d] - (zi[..., rest] - mean[rest]) @ beta
            mcse_mean = array_stats.mcse(zi[..., d], chain_axis=0, draw_axis=1)
            mcse_sd = array_stats.mcse(residual, chain_axis=0, draw_axis=1, method="sd")
            z_mean = (loc[i, d] - mean[d]) / np.hypot(mcse_mean, noise_loc)
            z_sd = (scale[i, d] - target_sd[d]) / np.hypot(mcse_sd, noise_scale)
            marginal_sd = flat[:, d].std(ddof=1)
            z_marginal = (scale[i, d] - marginal_sd) / np.hypot(mcse_sd, noise_scale)
            worst = max(worst, abs(z_mean), abs(z_sd))
            chi2_conditional += z_sd**2
            chi2_marginal += z_marginal**2
    # Measured: the largest |z| over the 7 images' 112 comparisons is 3.15. (q*'s sds run
    # ~1% below the target on average, up to 3% on some images: the posteriors are not
    # exactly Gaussian, which 4000 NUTS draws can nearly resolve.)
    assert worst < K, (worst, gaussian)
    # The conditional sds, not the marginal ones, are what q* matches: the sums of squared
    # z over the 56 sds are 80 and 413 (measured).
    assert chi2_conditional < chi2_marginal / 2, (chi2_conditional, chi2_marginal)
