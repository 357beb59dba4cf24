"""Fits are sealed: no leakage through Pyro's param store, torch's RNG or global settings."""

import numpy as np
import pyro
import pytest
import torch

from guides import eight_schools as es_guides
from guides import gaussian_latent as hand
from inference import fit_svi, run_nuts
from models import eight_schools as es
from models import gaussian_latent as gl

STEPS = 60


@pytest.fixture(scope="module")
def x():
    return gl.simulate(30, seed=0)


@pytest.fixture(scope="module")
def schools():
    d = es.load_data()
    return d["y"], d["sigma"]


def numbers(fit):
    """Everything a fit reports that depends on its randomness."""
    params = {k: v.numpy() for k, v in fit.params().items()}
    draws = fit.sample(50, seed=3).posterior
    return fit.losses, params, {k: v.values for k, v in draws.items()}


def assert_same(a, b):
    np.testing.assert_array_equal(a[0], b[0])
    assert a[1].keys() == b[1].keys()
    for k in a[1]:
        np.testing.assert_array_equal(a[1][k], b[1][k])
    assert a[2].keys() == b[2].keys()
    for k in a[2]:
        np.testing.assert_array_equal(a[2][k], b[2][k])


def test_hand_guide_fit_after_another_equals_the_fit_alone(x):
    # The hand guide's params have fixed names ("gaussian_latent.z_loc"): without a
    # private store, the second fit would start where the first one ended.
    other_data = x + 5.0
    alone = numbers(fit_svi(gl.model, hand.guide, x, num_steps=STEPS, lr=0.1))
    fit_svi(gl.model, hand.guide, other_data, num_steps=STEPS, lr=0.1)
    after = numbers(fit_svi(gl.model, hand.guide, x, num_steps=STEPS, lr=0.1))
    assert_same(alone, after)


def test_interleaved_fits_of_different_models_equal_each_alone(x, schools):
    first_alone = numbers(fit_svi(gl.model, "mvn", x, num_steps=STEPS))
    second_alone = numbers(
        fit_svi(es.noncentered, es_guides.noncentered_guide, *schools, num_steps=STEPS)
    )
    first = fit_svi(gl.model, "mvn", x, num_steps=STEPS)
    second = fit_svi(es.noncentered, es_guides.noncentered_guide, *schools, num_steps=STEPS)
    # Read both only after both ran: a result keeps its own parameters.
    assert_same(first_alone, numbers(first))
    assert_same(second_alone, numbers(second))


def test_same_seed_same_numbers_different_seed_different_numbers(x):
    a = numbers(fit_svi(gl.model, "normal", x, num_steps=STEPS, seed=7))
    b = numbers(fit_svi(gl.model, "normal", x, num_steps=STEPS, seed=7))
    c = numbers(fit_svi(gl.model, "normal", x, num_steps=STEPS, seed=8))
    assert_same(a, b)
    assert not np.array_equal(a[0], c[0])


def test_sample_and_elbo_seeds_are_their_own(x):
    fit = fit_svi(gl.model, "normal", x, num_steps=STEPS)
    z = [fit.sample(20, seed=s).posterior["z"].values for s in (0, 0, 1)]
    np.testing.assert_array_equal(z[0], z[1])
    assert not np.array_equal(z[0], z[2])
    e = [fit.elbo(num_particles=50, seed=s).value for s in (0, 0, 1)]
    assert e[0] == e[1] != e[2]


def test_nuts_same_seed_same_chain_different_seed_different_chain(x):
    def run(seed):
        return run_nuts(
            gl.model, x, num_samples=10, warmup_steps=10, num_chains=1, seed=seed
        ).samples["z"]

    a, b, c = run(0), run(0), run(1)
    assert torch.equal(a, b)
    assert not torch.equal(a, c)


def test_nuts_chains_differ_from_each_other(x):
    z = run_nuts(gl.model, x, num_samples=10, warmup_steps=10, num_chains=2).samples["z"]
    assert not torch.equal(z[0], z[1])


@pytest.mark.parametrize("engine", ["svi-hand", "svi-auto", "nuts"])
def test_global_state_is_untouched(engine, x):
    pyro.param("sentinel", torch.tensor(3.0))
    rng_before = torch.get_rng_state().clone()
    dtype_before = torch.get_default_dtype()
    threads_before = torch.get_num_threads()
    if engine == "svi-hand":
        result = fit_svi(gl.model, hand.guide, x, num_steps=STEPS)
        result.sample(5)
        result.elbo(num_particles=5)
    elif engine == "svi-auto":
        result = fit_svi(gl.model, "mvn", x, num_steps=STEPS)
        result.to_datatree(5)
    else:
        run_nuts(gl.model, x, num_samples=5, warmup_steps=5, num_chains=1).to_datatree()
    store = pyro.get_param_store()
    assert list(store.keys()) == ["sentinel"]
    assert store["sentinel"].item() == 3.0
    assert torch.equal(torch.get_rng_state(), rng_before)
    assert torch.get_default_dtype() == dtype_before == torch.float32
    assert torch.get_num_threads() == threads_before


def test_a_fit_does_not_start_from_params_in_the_global_store(x):
    alone = numbers(fit_svi(gl.model, hand.guide, x, num_steps=STEPS, lr=0.1))
    pyro.param(hand.PARAM_PREFIX + "z_loc", torch.tensor(100.0, dtype=torch.float64))
    pyro.param(hand.PARAM_PREFIX + "z_scale", torch.tensor(0.01, dtype=torch.float64))
    assert_same(alone, numbers(fit_svi(gl.model, hand.guide, x, num_steps=STEPS, lr=0.1)))
