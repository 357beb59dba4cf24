"""SVI on the Gaussian latent model, where posterior and evidence are exact.

Quality bars (from the project's issue): the fitted guide's mean within 0.05 posterior
sd of the exact posterior mean, its sd within 5% of the exact sd, and its ELBO below
the exact log evidence (allowing 3 MCSE for the estimate) and within 0.05 nats of it.
Every guide family here contains the exact posterior, so all of this is reachable.
"""

import math

import numpy as np
import pytest

from guides import gaussian_latent as hand
from inference import fit_svi
from models import gaussian_latent as gl

N = 100
MEAN_BAR, SD_BAR, ELBO_BAR = 0.05, 0.05, 0.05  # posterior sds, relative, nats
NUM_DRAWS = 40_000  # guide draws used to measure an autoguide's mean and sd


@pytest.fixture(scope="module")
def data():
    x = gl.simulate(N, z_true=1.5, seed=0)
    mean, sd = gl.exact_posterior(x)
    return x, mean, sd, gl.exact_log_evidence(x)


@pytest.fixture(scope="module", params=range(5))
def hand_fit(request, data):
    # The hand guide starts at m0 - 3 s0 = -30 with scale s0 = 10: 315 posterior sds
    # from the mean and 100x too wide, so its first gradients are ~1e4 times those near
    # the answer. lr 0.3 crosses that distance in ~100 steps; 16 particles keep the late
    # gradients informative. Checked for every seed in 0-4 (sklearn's habit): a single
    # lucky seed passed even when the engine left 4 seeds in 5 short of the bars.
    x = data[0]
    return fit_svi(
        gl.model, hand.guide, x, num_steps=3000, lr=0.3, num_particles=16, seed=request.param
    )


@pytest.fixture(scope="module", params=["normal", "mvn"])
def auto_fit(request, data):
    # Autoguides start at the Laplace fit, exact here, but the ELBO's gradient is noisy
    # even at the optimum, so Adam's iterates wander by ~sqrt(lr). At the default lr
    # 1e-2 seeds 0-9 gave means up to 0.067 sd off and sds up to 6.8% off; lr 3e-3 keeps
    # them within 0.025 sd and 4%.
    return request.param, fit_svi(gl.model, request.param, data[0], lr=3e-3)


def _kl_normal(m1, s1, m2, s2):
    return math.log(s2 / s1) + (s1**2 + (m1 - m2) ** 2) / (2 * s2**2) - 0.5


def test_hand_guide_reaches_the_exact_posterior(data, hand_fit):
    _, mean, sd, _ = data
    params = hand_fit.params()
    loc = float(params[hand.PARAM_PREFIX + "z_loc"])
    scale = float(params[hand.PARAM_PREFIX + "z_scale"])
    # The guide's own parameters: exact, no Monte Carlo error in the comparison.
    assert abs(loc - mean) < MEAN_BAR * sd
    assert abs(scale / sd - 1) < SD_BAR


def test_autoguides_reach_the_exact_posterior(data, auto_fit):
    _, mean, sd, _ = data
    name, fit = auto_fit
    z = fit.sample(NUM_DRAWS, seed=1).posterior["z"].values.reshape(-1)
    # Measured from independent guide draws: MCSE of their mean is sd_q / sqrt(n) and of
    # their sd about sd_q / sqrt(2 n) (Gaussian). Allowing 3 MCSE on top of each bar
    # (0.015 sd and 1.1%) keeps the measurement from failing a guide that meets it.
    mcse_mean = z.std() / math.sqrt(z.size)
    mcse_sd_rel = 1 / math.sqrt(2 * z.size)
    assert abs(z.mean() - mean) < MEAN_BAR * sd + 3 * mcse_mean, name
    assert abs(z.std(ddof=1) / sd - 1) < SD_BAR + 3 * mcse_sd_rel, name


def test_hand_guide_elbo_is_below_the_evidence_and_close_to_it(data, hand_fit):
    _, mean, sd, log_evidence = data
    est = hand_fit.elbo(num_particles=4000)
    assert est.value <= log_evidence + 3 * est.mcse
    assert log_evidence - est.value < ELBO_BAR
    # The gap is KL(q || p), known in closed form for this Normal guide: the estimate
    # must agree with it within 4 MCSE (false-failure rate ~6e-5 for a Normal error).
    params = hand_fit.params()
    kl = _kl_normal(
        float(params[hand.PARAM_PREFIX + "z_loc"]),
        float(params[hand.PARAM_PREFIX + "z_scale"]),
        mean,
        sd,
    )
    assert abs((log_evidence - est.value) - kl) < 4 * est.mcse + 1e-9
    assert est.iwae >= est.value


def test_autoguide_elbo_is_below_the_evidence_and_close_to_it(data, auto_fit):
    log_evidence = data[3]
    name, fit = auto_fit
    est = fit.elbo(num_particles=4000)
    assert est.num_particles == 4000
    assert est.value <= log_evidence + 3 * est.mcse, name
    assert log_evidence - est.value < ELBO_BAR, name


def test_elbo_of_a_poor_guide_shows_its_kl_gap(data):
    # A 100-step fit of the far-off hand guide is nowhere near: its ELBO is far below
    # the evidence, by KL(q || p) of its parameters (again within 4 MCSE).
    x, mean, sd, log_evidence = data
    fit = fit_svi(gl.model, hand.guide, x, num_steps=100, lr=0.1)
    params = fit.params()
    kl = _kl_normal(
        float(params[hand.PARAM_PREFIX + "z_loc"]),
        float(params[hand.PARAM_PREFIX + "z_scale"]),
        mean,
        sd,
    )
    est = fit.elbo(num_particles=4000)
    assert kl > 1.0
    assert abs((log_evidence - est.value) - kl) < 4 * est.mcse


def assert_losses_one_per_step(fit):
    assert isinstance(fit.losses, np.ndarray)
    assert fit.losses.ndim == 1
    assert len(fit.losses) == fit.num_steps
    assert np.isfinite(fit.losses).all()
    assert fit.elapsed_s > 0


def test_hand_guide_losses_are_one_per_step_taken(hand_fit):
    assert_losses_one_per_step(hand_fit)


def test_autoguide_losses_are_one_per_step_taken(auto_fit):
    assert_losses_one_per_step(auto_fit[1])


# converged=True means the plateau rule stopped the fit: both fits above reach the
# answer (tests above) and stop before their budgets (3000; 2000 is the default).


def test_hand_guide_fit_converged_before_its_budget(hand_fit):
    assert hand_fit.converged
    assert len(hand_fit.losses) < 3000


def test_autoguide_fit_converged_before_its_budget(auto_fit):
    assert auto_fit[1].converged
    assert len(auto_fit[1].losses) < 2000


def test_budget_too_small_to_judge_is_not_converged(data):
    # The plateau rule needs two windows of 100 losses before any verdict.
    fit = fit_svi(gl.model, "normal", data[0], num_steps=150)
    assert not fit.converged
    assert len(fit.losses) == 150


def test_a_fit_still_far_from_the_posterior_is_not_called_converged(data):
    # With lr 0.1 and one particle the hand guide is still ~3 posterior sds off after
    # 2000 steps and its noisy loss is still falling. The earlier one-span plateau rule
    # called this converged at step 1750 with the guide's sd 5.5x too large.
    x, mean, sd, _ = data
    fit = fit_svi(gl.model, hand.guide, x, num_steps=2000, lr=0.1)
    scale = float(fit.params()[hand.PARAM_PREFIX + "z_scale"])
    assert scale > 2 * sd  # still far: the premise of the test
    assert not fit.converged
    assert len(fit.losses) == 2000
