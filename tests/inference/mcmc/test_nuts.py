"""NUTS on the Gaussian latent model (exact posterior known), and its sampler statistics.

Each check runs on both backends (nutpie, the default, and Pyro's NUTS) unless it is
about one backend's own numbers.

Accuracy checks compare the posterior mean and sd of the draws with the exact values
within 4 Monte Carlo standard errors (ArviZ's ``mcse``, which accounts for
autocorrelation; method ``"sd"`` for the sd). For a Normal estimation error the chance
of a false failure is 6e-5 per comparison.
"""

import arviz as az
import numpy as np
import pyro
import pyro.distributions as dist
import pytest
import torch

from inference import fit_svi, run_nuts
from models import gaussian_latent as gl

K = 4  # MCSEs allowed


@pytest.fixture(scope="module")
def data():
    x = gl.simulate(100, z_true=1.5, seed=0)
    return (x, *gl.exact_posterior(x))


BACKENDS = ["nutpie", "pyro"]


@pytest.fixture(scope="module", params=BACKENDS)
def mc(request, data):
    return run_nuts(
        gl.model,
        data[0],
        num_samples=500,
        warmup_steps=300,
        num_chains=2,
        jit=True,
        backend=request.param,
    )


@pytest.fixture(scope="module")
def tree(mc):
    return mc.to_datatree()


def assert_matches_exact(posterior_z, mean, sd):
    """Mean and sd of the draws within K MCSE of the exact values."""
    mcse_mean = float(az.mcse(posterior_z, method="mean"))
    mcse_sd = float(az.mcse(posterior_z, method="sd"))
    draws = posterior_z.values.reshape(-1)
    assert abs(draws.mean() - mean) < K * mcse_mean
    assert abs(draws.std(ddof=1) - sd) < K * mcse_sd
    # The MCSEs must be of a sensible size for the test to mean anything: ESS of at
    # least 100 (mcse_mean <= sd / 10).
    assert mcse_mean < sd / 10


def test_nuts_mean_and_sd_match_the_exact_posterior(data, tree):
    _, mean, sd = data
    assert_matches_exact(tree.posterior["z"], mean, sd)


def test_sample_stats_have_arviz_names_dims_and_dtypes(mc, tree):
    stats = tree["sample_stats"].to_dataset()
    assert set(stats.data_vars) >= {
        "diverging",
        "energy",
        "lp",
        "step_size",
        "tree_depth",
        "acceptance_rate",
    }
    for name, da in stats.data_vars.items():
        assert da.dims == ("chain", "draw"), name
        assert da.shape == (2, 500), name
    assert stats["diverging"].dtype == bool
    assert np.issubdtype(stats["tree_depth"].dtype, np.integer)
    assert (stats["tree_depth"] >= 1).all()
    assert ((stats["acceptance_rate"] >= 0) & (stats["acceptance_rate"] <= 1)).all()
    assert (stats["step_size"] > 0).all()
    assert np.isfinite(stats["energy"]).all()
    assert np.isfinite(stats["lp"]).all()
    assert mc.num_divergences == int(stats["diverging"].sum()) == 0
    assert tree.posterior.attrs["backend"] == mc.backend


def test_step_size_is_fixed_after_warmup_up_to_nutpie_jitter(mc, tree):
    # Pyro keeps the adapted step; nutpie jitters it by up to 10% draw by draw
    # (its step_size_settings.jitter) around the adapted one.
    step = tree.sample_stats["step_size"]
    spread = step.max("draw") / step.min("draw")
    if mc.backend == "pyro":
        assert (spread == 1).all()
    else:
        assert ((spread > 1) & (spread < 1.1 / 0.9 + 1e-9)).all()


def test_lp_is_the_log_joint_density_at_each_draw(data, tree):
    # z is unconstrained, so lp (log density in the unconstrained space) is exactly
    # log N(z; 0, 10) + sum_i log N(x_i; z, 1) at the draw it is reported with.
    x = data[0]
    z = torch.as_tensor(tree.posterior["z"].values)
    prior = torch.distributions.Normal(torch.tensor(0.0, dtype=z.dtype), 10.0).log_prob(z)
    lik = torch.distributions.Normal(z[..., None], 1.0).log_prob(x).sum(-1)
    np.testing.assert_allclose(tree.sample_stats["lp"].values, (prior + lik).numpy(), rtol=1e-10)


def test_pyro_energy_is_at_least_the_potential_of_the_start_of_each_transition(data):
    # Pyro: energy = U(z_start) + kinetic >= U(z_start) = -lp of the previous draw.
    # (nutpie reports the energy at the chosen point with its metric's log-determinant
    # added, a constant per chain after warmup; E-BFMI, checked below, ignores it.)
    options = dict(num_samples=200, warmup_steps=100, num_chains=1, jit=True, backend="pyro")
    tree = run_nuts(gl.model, data[0], **options).to_datatree()
    energy = tree.sample_stats["energy"].values[:, 1:]
    previous_lp = tree.sample_stats["lp"].values[:, :-1]
    assert (energy >= -previous_lp - 1e-9).all()


def test_bfmi_reads_the_energy_of_the_datatree(tree):
    bfmi = az.bfmi(tree)["energy"].values
    energy = tree.sample_stats["energy"].values
    # E-BFMI per chain: sum of squared energy jumps over the energy's sum of squares.
    jumps = (np.diff(energy, axis=1) ** 2).sum(1)
    by_hand = jumps / ((energy - energy.mean(1, keepdims=True)) ** 2).sum(1)
    np.testing.assert_allclose(bfmi, by_hand, rtol=1e-10)
    # E-BFMI below 0.3 flags a sampler that cannot explore the energy distribution
    # (Betancourt 2016); a 1-D Gaussian posterior is far from that.
    assert (bfmi > 0.3).all()


@pytest.mark.parametrize("backend", BACKENDS)
def test_warm_start_from_an_svi_fit_gives_the_exact_posterior(data, backend):
    x, mean, sd = data
    fit = fit_svi(gl.model, "mvn", x)
    options = dict(num_samples=500, warmup_steps=100, num_chains=2, jit=True)
    mc = run_nuts(gl.model, x, **options, init_from=fit, backend=backend)
    assert mc.warm_start
    assert_matches_exact(mc.to_datatree().posterior["z"], mean, sd)


def test_warm_start_needs_a_gaussian_autoguide(data):
    from guides import gaussian_latent as hand

    fit = fit_svi(gl.model, hand.guide, data[0], num_steps=10)
    with pytest.raises(ValueError, match="has no Gaussian on the latents"):
        run_nuts(gl.model, data[0], init_from=fit, num_samples=5, warmup_steps=5)


def test_pyro_jit_and_python_potential_give_the_same_chain(data):
    options = dict(num_samples=30, warmup_steps=30, num_chains=1, backend="pyro")
    runs = [run_nuts(gl.model, data[0], **options, jit=jit) for jit in (False, True)]
    np.testing.assert_allclose(
        runs[0].samples["z"].numpy(), runs[1].samples["z"].numpy(), rtol=1e-8
    )


def _wide_model(dim):
    def model():
        pyro.sample("w", dist.Normal(torch.zeros(dim), 1.0).to_event(1))

    return model


@pytest.mark.parametrize(
    "dim, dense_mass, expected",
    [(3, None, True), (3, False, False), (3, True, True), (201, None, False)],
)
def test_pyro_dense_mass_is_the_default_up_to_200_latents(dim, dense_mass, expected):
    options = dict(num_samples=3, warmup_steps=3, num_chains=1, backend="pyro")
    mc = run_nuts(_wide_model(dim), **options, dense_mass=dense_mass)
    assert mc.dense_mass is expected
    assert mc.samples["w"].shape == (1, 3, dim)


@pytest.mark.parametrize(
    "dim, dense_mass, expected", [(3, None, True), (3, False, False), (201, None, False)]
)
def test_nutpie_metric_is_low_rank_up_to_200_latents(dim, dense_mass, expected):
    mc = run_nuts(_wide_model(dim), num_samples=20, warmup_steps=20, dense_mass=dense_mass)
    assert mc.dense_mass is expected
    assert mc.samples["w"].shape == (4, 20, dim)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("guide", ["normal", "mvn", "lowrank"])
def test_warm_start_from_every_gaussian_family(guide, backend, data):
    fit = fit_svi(gl.model, guide, data[0], num_steps=300)
    options = dict(num_samples=200, warmup_steps=100, num_chains=1, backend=backend)
    mc = run_nuts(gl.model, data[0], init_from=fit, **options)
    mean, sd = gl.exact_posterior(data[0])
    z = mc.samples["z"].reshape(-1)
    # 200 correlated draws: 5 Monte Carlo standard errors at an ESS of ~50.
    assert abs(float(z.mean()) - mean) < 5 * sd / 50**0.5


def test_warm_start_from_a_fit_of_another_model_is_refused(data):
    import pyro
    import pyro.distributions as dist

    def other(x):
        w = pyro.sample("w", dist.Normal(0.0, 1.0))
        with pyro.plate("data", len(x)):
            pyro.sample("x", dist.Normal(w, 1.0), obs=x)

    fit = fit_svi(other, "mvn", data[0], num_steps=20)
    with pytest.raises(ValueError, match="init_from is a fit of another model"):
        run_nuts(gl.model, data[0], init_from=fit, num_samples=5, warmup_steps=5)


def test_nutpie_same_seed_same_draws_and_runs_in_one_process_are_isolated(data):
    options = dict(num_samples=50, warmup_steps=50, num_chains=2)
    first = run_nuts(gl.model, data[0], **options, seed=5).samples["z"]
    # Another model in between, and a run of the same model with another seed.
    run_nuts(_wide_model(3), **options, seed=5)
    other = run_nuts(gl.model, data[0], **options, seed=6).samples["z"]
    again = run_nuts(gl.model, data[0], **options, seed=5).samples["z"]
    assert torch.equal(first, again)
    assert not torch.equal(first, other)
    # Chains differ from each other.
    assert not torch.equal(first[0], first[1])


def test_nutpie_progress_bar_shows_the_phase_and_divergences(data, capsys):
    run_nuts(gl.model, data[0], num_samples=20, warmup_steps=20, num_chains=1, progress_bar=True)
    err = capsys.readouterr().err
    assert "NUTS" in err and "divergences=" in err


def test_an_unknown_backend_is_refused(data):
    with pytest.raises(ValueError, match="backend must be one of"):
        run_nuts(gl.model, data[0], backend="stan")
