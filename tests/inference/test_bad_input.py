"""Bad arguments and bad data fail early with one clear error; a blow-up names its step."""

import math
import re

import numpy as np
import pyro
import pyro.distributions as dist
import pytest
import torch
from torch.distributions import constraints

from guides.auto import AUTOGUIDES
from inference import FitError, fit_svi, run_nuts
from models import eight_schools as es
from models import gaussian_latent as gl


@pytest.fixture(scope="module")
def x():
    return gl.simulate(20, seed=0)


@pytest.mark.parametrize("num_steps", [0, -5, 1.5, True, "10"])
def test_fit_svi_rejects_num_steps_below_one(x, num_steps):
    with pytest.raises(ValueError, match="num_steps"):
        fit_svi(gl.model, "normal", x, num_steps=num_steps)


@pytest.mark.parametrize("lr", [0.0, -1e-3, math.nan, math.inf, "0.01"])
def test_fit_svi_rejects_a_learning_rate_that_is_not_positive(x, lr):
    with pytest.raises(ValueError, match="lr"):
        fit_svi(gl.model, "normal", x, lr=lr)


def test_fit_svi_rejects_num_particles_below_one(x):
    with pytest.raises(ValueError, match="num_particles"):
        fit_svi(gl.model, "normal", x, num_particles=0)


@pytest.mark.parametrize(
    "option, value", [("num_chains", 0), ("num_samples", 0), ("warmup_steps", -1)]
)
def test_run_nuts_rejects_counts_below_their_minimum(x, option, value):
    with pytest.raises(ValueError, match=option):
        run_nuts(gl.model, x, **{option: value})


@pytest.mark.parametrize("target_accept", [0.0, 1.0, 1.5])
def test_run_nuts_rejects_target_accept_outside_zero_one(x, target_accept):
    with pytest.raises(ValueError, match="target_accept"):
        run_nuts(gl.model, x, target_accept=target_accept)


def test_unknown_guide_name_lists_the_valid_names(x):
    with pytest.raises(ValueError, match="unknown guide 'meanfield'") as info:
        fit_svi(gl.model, "meanfield", x)
    for name in AUTOGUIDES:
        assert name in str(info.value)


def test_guide_that_is_neither_callable_nor_a_name(x):
    with pytest.raises(TypeError, match="guide"):
        fit_svi(gl.model, 3, x)


def test_unknown_elbo_lists_the_valid_names(x):
    with pytest.raises(ValueError, match="unknown elbo 'renyi'") as info:
        fit_svi(gl.model, "normal", x, elbo="renyi")
    for name in ("trace", "meanfield", "enum"):
        assert name in str(info.value)


def test_nan_data_is_rejected_by_the_model_before_any_step(x):
    bad = x.clone()
    bad[3] = math.nan
    with pytest.raises(ValueError, match="finite"):
        fit_svi(gl.model, "normal", bad)
    with pytest.raises(ValueError, match="finite"):
        run_nuts(gl.model, bad, num_samples=5, warmup_steps=5)


@pytest.mark.parametrize("engine", ["svi", "nuts"])
def test_eight_schools_with_mismatched_lengths_is_rejected(engine):
    data = es.load_data()
    y, sigma = data["y"], data["sigma"][:7]
    with pytest.raises(ValueError, match="same length"):
        if engine == "svi":
            fit_svi(es.noncentered, "normal", y, sigma)
        else:
            run_nuts(es.noncentered, y, sigma, num_samples=5, warmup_steps=5)


@pytest.mark.parametrize("engine", ["svi", "nuts"])
def test_eight_schools_with_a_nonpositive_sigma_is_rejected(engine):
    data = es.load_data()
    sigma = data["sigma"].clone()
    sigma[2] = 0.0
    with pytest.raises(ValueError, match="sigma"):
        if engine == "svi":
            fit_svi(es.centered, "mvn", data["y"], sigma)
        else:
            run_nuts(es.centered, data["y"], sigma, num_samples=5, warmup_steps=5)


@pytest.mark.parametrize("sigma", [0.0, -1.0])
def test_gaussian_latent_with_a_nonpositive_noise_sd_is_rejected(x, sigma):
    with pytest.raises(ValueError, match="sigma"):
        fit_svi(gl.model, "normal", x, model_kwargs={"sigma": sigma})
    with pytest.raises(ValueError, match="sigma"):
        run_nuts(gl.model, x, 0.0, 10.0, sigma, num_samples=5, warmup_steps=5)


LR, BUDGET = 0.1, 1000


def _threshold_between_steps_30_and_31():
    # The guide below is a point mass whose loss has gradient -1 throughout, so each Adam
    # step moves it up by exactly the step's learning rate, lr (constant until a plateau).
    # After s steps it sits at the sum of the first s rates; a threshold halfway
    # between the positions after 30 and after 31 steps makes step 31 the first with a
    # NaN loss, with a margin of half a step (0.05) against round-off.
    position = np.cumsum(np.full(40, LR))
    return (position[29] + position[30]) / 2


def _blows_up(threshold):
    def model():
        z = pyro.sample("z", dist.ImproperUniform(constraints.real, (), ()))
        # Loss 1.2345 until z passes the threshold, then NaN; the gradient pushes z up.
        pyro.factor("f", torch.where(z > threshold, torch.nan, -1.2345) + (z - z.detach()))

    def guide():
        pyro.sample("z", dist.Delta(pyro.param("loc", torch.zeros(()))))

    return model, guide


@pytest.mark.parametrize("jit", [None, False])
def test_a_loss_that_becomes_nan_stops_with_the_step_and_last_finite_loss(jit):
    # Compiled (the default), the NaN reaches the loss; uncompiled, Pyro's validation
    # rejects the NaN factor first. Either way: FitError, with the step and the loss.
    model, guide = _blows_up(_threshold_between_steps_30_and_31())
    with pytest.raises(FitError) as info:
        fit_svi(model, guide, lr=LR, num_steps=BUDGET, jit=jit)
    message = str(info.value)
    assert re.search(r"\bat step 31\b", message), message
    assert f"last finite loss {1.2345:.4g}" in message, message


def test_the_blowing_up_model_is_fine_below_its_threshold():
    # The same fit with an unreachable threshold runs to its plateau: the FitError above
    # is the NaN's doing, not the model's.
    model, guide = _blows_up(math.inf)
    fit = fit_svi(model, guide, lr=LR, num_steps=BUDGET)
    assert np.allclose(fit.losses, 1.2345)


@pytest.mark.parametrize("bad", [math.inf, -math.inf, math.nan])
@pytest.mark.parametrize("engine", ["svi", "nuts"])
def test_non_finite_data_is_refused_up_front_naming_the_argument(bad, engine):
    def model(x):
        z = pyro.sample("z", dist.Normal(0.0, 10.0))
        with pyro.plate("data", len(x)):
            pyro.sample("x", dist.Normal(z, 1.0), obs=x)

    x = torch.zeros(10)
    x[4] = bad
    run = (
        (lambda: fit_svi(model, "normal", x, num_steps=5))
        if engine == "svi"
        else (lambda: run_nuts(model, x, num_samples=5, warmup_steps=5, num_chains=1))
    )
    with pytest.raises(ValueError, match=r"argument 1 holds 1 non-finite value.*index 4"):
        run()


def test_a_list_of_numbers_is_refused_and_a_numpy_array_is_converted():
    def model(x):
        z = pyro.sample("z", dist.Normal(0.0, 10.0))
        with pyro.plate("data", len(x)):
            pyro.sample("x", dist.Normal(z, 1.0), obs=x)

    with pytest.raises(ValueError, match=r"argument 1 is a list of numbers: pass torch.tensor"):
        run_nuts(model, [1.0, 2.0], num_samples=5, warmup_steps=5, num_chains=1)
    mc = run_nuts(model, np.array([1.0, 2.0]), num_samples=5, warmup_steps=5, num_chains=1)
    assert mc.samples["z"].shape == (1, 5)


@pytest.mark.parametrize("seed", [-1, 2**64, 1.5, True])
def test_a_seed_out_of_range_is_refused(seed, x):
    with pytest.raises(ValueError, match="seed must be"):
        fit_svi(gl.model, "normal", x, num_steps=5, seed=seed)
