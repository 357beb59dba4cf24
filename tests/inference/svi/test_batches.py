"""Minibatches by epoch: every index once per epoch, O(batch) per step, resumable.

The sampler (:mod:`inference.svi.batches`) is checked on its own (each epoch a
permutation, its state two integers, the same seed the same stream), inside ``fit_svi``
(no ``torch.randperm`` of the plate in any step, compiled or not; the same seed the same
numbers; two half-runs equal one run) and on the answer (a subsampled Gaussian-latent
fit reaches the exact posterior).
"""

import numpy as np
import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro import poutine
from pyro.distributions import constraints

from inference import fit_svi
from inference.sites import trace_model
from inference.svi.batches import EpochSampler, feedable_plate
from models import gaussian_latent as gl

N, BATCH = 1000, 100  # ten steps per epoch


def _stream(sampler, num_batches):
    batches = [sampler.next() for _ in range(num_batches)]
    assert all(b.shape == (sampler.batch,) and b.dtype == torch.int64 for b in batches)
    return torch.cat(batches)


def test_every_index_appears_once_per_epoch():
    size, batch = 1003, 100  # an epoch ends inside a batch: it is completed from the next
    sampler = EpochSampler(size, batch, seed=0)
    stream = _stream(sampler, 31)
    for epoch in range(3):
        block = stream[epoch * size : (epoch + 1) * size]
        assert torch.equal(block.sort().values, torch.arange(size))
    assert sampler.state_dict() == {"epoch": 3, "position": 31 * batch - 3 * size}
    assert not torch.equal(stream[:size], stream[size : 2 * size])  # a fresh order each epoch


def test_same_seed_same_indices_and_the_state_is_two_integers():
    first, second = EpochSampler(N, BATCH, seed=7), EpochSampler(N, BATCH, seed=7)
    assert torch.equal(_stream(first, 25), _stream(second, 25))
    assert not torch.equal(
        _stream(EpochSampler(N, BATCH, seed=8), 25), _stream(EpochSampler(N, BATCH, seed=7), 25)
    )
    state = first.state_dict()
    assert state == {"epoch": 2, "position": 500}
    resumed = EpochSampler(N, BATCH, seed=7)
    resumed.load_state_dict(state)
    assert torch.equal(_stream(resumed, 17), _stream(first, 17))


def subsampled(x):
    z = pyro.sample("z", dist.Normal(0.0, 10.0))
    with pyro.plate("data", len(x), subsample_size=BATCH) as idx:
        pyro.sample("x", dist.Normal(z, 1.0), obs=x[idx])


def guide(x):
    loc = pyro.param("loc", torch.tensor(0.0))
    scale = pyro.param("scale", torch.tensor(1.0), constraint=constraints.positive)
    pyro.sample("z", dist.Normal(loc, scale))


def _data(size=N):
    return torch.randn(size, generator=torch.Generator().manual_seed(0)) + 1.5


def test_the_plate_is_found_only_where_pyro_draws_its_indices():
    x = _data()
    assert feedable_plate(trace_model(subsampled, (x,), {})) == ("data", N, BATCH)
    assert feedable_plate(trace_model(gl.model, (x,), {})) is None

    def given(x):  # the model passes its own indices: they are left alone
        with pyro.plate("data", len(x), subsample=torch.arange(10)):
            pass

    assert feedable_plate(trace_model(given, (x,), {})) is None


def guide_with_plate(x):
    guide(x)
    with pyro.plate("data", len(x), subsample_size=BATCH):
        pass


@pytest.mark.parametrize("jit", [True, False])
@pytest.mark.parametrize("which", [guide, guide_with_plate], ids=["global", "plate"])
def test_no_step_draws_a_permutation_of_the_plate(jit, which, monkeypatch):
    """In a whole fit, ``torch.randperm(N)`` runs once per epoch, the sampler's (with its
    private generator), and never Pyro's: not in a step, not in the setup's traces, not
    in a compiled loss (whose graph would hold it only if it had run while the loss was
    traced)."""
    calls, randperm = [], torch.randperm

    def counting(n, *args, **kwargs):
        if n == N:
            calls.append("sampler" if kwargs.get("generator") is not None else "pyro")
        return randperm(n, *args, **kwargs)

    monkeypatch.setattr(torch, "randperm", counting)
    poutine.trace(subsampled).get_trace(_data())
    assert calls == ["pyro"]  # the instrument sees Pyro's own draw
    calls.clear()
    steps = 120  # 12 epochs; moment snapshots after steps 49 and 99 included
    fit = fit_svi(subsampled, which, _data(), num_steps=steps, jit=jit)
    assert fit.num_steps == steps
    assert calls == ["sampler"] * (steps * BATCH // N)


def test_the_guide_sees_the_model_indices():
    """A guide with the plate (a local latent site in it) gets the model's minibatch."""
    seen = {"model": [], "guide": []}

    def model(x):
        z = pyro.sample("z", dist.Normal(0.0, 10.0))
        with pyro.plate("data", len(x), subsample_size=BATCH) as idx:
            seen["model"].append(idx.clone())
            u = pyro.sample("u", dist.Normal(z, 1.0))
            pyro.sample("x", dist.Normal(u, 1.0), obs=x[idx])

    def local_guide(x):
        guide(x)
        u_loc = pyro.param("u_loc", torch.zeros(len(x)))
        with pyro.plate("data", len(x), subsample_size=BATCH) as idx:
            seen["guide"].append(idx.clone())
            pyro.sample("u", dist.Normal(u_loc[idx], 1.0))

    marks = []  # after each step: how many calls so far; the step's own call is the last
    steps = 3
    fit_svi(
        model,
        local_guide,
        _data(),
        num_steps=steps,
        seed=5,
        jit=False,
        callback=lambda info: marks.append({k: len(v) for k, v in seen.items()}),
    )
    sampler = EpochSampler(N, BATCH, seed=5)
    for mark in marks:
        expected = sampler.next()
        assert torch.equal(seen["model"][mark["model"] - 1], expected)
        assert torch.equal(seen["guide"][mark["guide"] - 1], expected)


def test_same_seed_same_fit_numbers():
    x = _data()
    a, b = (fit_svi(subsampled, guide, x, num_steps=60, seed=3) for _ in range(2))
    np.testing.assert_array_equal(a.losses, b.losses)
    c = fit_svi(subsampled, guide, x, num_steps=60, seed=4)
    assert not np.array_equal(a.losses, c.losses)


def test_a_subsampled_fit_resumes_to_the_numbers_of_an_uninterrupted_one(tmp_path):
    x = gl.simulate(200, seed=1)
    kwargs = {"subsample_size": 20}  # ten steps per epoch
    path = tmp_path / "fit.pt"
    whole = fit_svi(gl.model, "mvn", x, num_steps=400, seed=3, model_kwargs=kwargs)
    half = fit_svi(
        gl.model,
        "mvn",
        x,
        num_steps=400,
        seed=3,
        model_kwargs=kwargs,
        checkpoint=path,
        callback=lambda info: info.step == 154,  # stops inside an epoch
    )
    assert half.num_steps == 155
    saved = torch.load(path, weights_only=True)
    assert saved["state"]["batches"] == {"epoch": 15, "position": 100}
    resumed = fit_svi(
        gl.model, "mvn", x, num_steps=400, seed=3, model_kwargs=kwargs, checkpoint=path
    )
    np.testing.assert_array_equal(whole.losses, resumed.losses)
    for key, value in whole.params().items():
        np.testing.assert_array_equal(value.numpy(), resumed.params()[key].numpy())


@pytest.mark.parametrize("seed", range(3))
def test_a_subsampled_gaussian_latent_fit_reaches_the_exact_posterior(seed):
    """The bars of test_subsample.py (mean within 0.25 posterior sd, sd within 20%, the
    guide's own parameters read, seeds 0-2) on a noisier minibatch: 50 of 2000 points,
    each minibatch's mean sqrt(N / n - 1) = 6.2 posterior sds from the data's (3 there),
    over 1000 steps (25 epochs). Every epoch's minibatches partition the data, so their
    noise sums to zero over each epoch. The MAP start sees 20 of the 40 minibatches and
    starts 0.38 sd off; after 1000 steps seeds 0-5 were within 0.19 sd and 10%."""
    x = _data(2000)
    mean, sd = gl.exact_posterior(x.double())
    fit = fit_svi(
        gl.model, "normal", x, num_steps=1000, seed=seed, model_kwargs={"subsample_size": 50}
    )
    _, loc, cov = fit.gaussian()
    assert abs(float(loc[0]) - mean) < 0.25 * sd
    assert abs(float(cov[0, 0]) ** 0.5 / sd - 1) < 0.2


def test_a_compiled_loss_that_would_bake_the_indices_in_is_not_used():
    """``x[idx.tolist()]`` makes the indices constants of a traced graph: the compiled
    loss is caught on a second minibatch and the fit runs uncompiled, with the numbers
    of ``jit=False``."""

    def baking(x):
        z = pyro.sample("z", dist.Normal(0.0, 10.0))
        with pyro.plate("data", len(x), subsample_size=BATCH) as idx:
            pyro.sample("x", dist.Normal(z, 1.0), obs=x[idx.tolist()])

    x = _data()
    compiled = fit_svi(baking, guide, x, num_steps=30, jit=True)
    eager = fit_svi(baking, guide, x, num_steps=30, jit=False)
    np.testing.assert_array_equal(compiled.losses, eager.losses)
