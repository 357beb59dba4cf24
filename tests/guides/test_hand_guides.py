import pyro
import pytest
import torch
from pyro.poutine.util import site_is_subsample

from guides import eight_schools as ges
from guides import gaussian_latent as ggl
from models import eight_schools as es
from models import gaussian_latent as gl


@pytest.fixture(autouse=True)
def _fresh_pyro():
    pyro.clear_param_store()
    pyro.set_rng_seed(0)


def _latent_sites(trace):
    return {
        name
        for name, node in trace.nodes.items()
        if node["type"] == "sample"
        and not site_is_subsample(node)
        and not node["is_observed"]
        and not node["infer"].get("_deterministic")
    }


def _cases():
    data = es.load_data()
    x = gl.simulate(40, seed=0)
    return [
        ("gaussian_latent", gl.model, ggl.guide, (x,)),
        ("centered", es.centered, ges.centered_guide, (data["y"], data["sigma"])),
        ("noncentered", es.noncentered, ges.noncentered_guide, (data["y"], data["sigma"])),
    ]


CASES = _cases()


def _value(store, name):
    return store[name].detach().item()


@pytest.mark.parametrize("name, model, guide, args", CASES, ids=[c[0] for c in CASES])
def test_guide_sites_match_model_latents(name, model, guide, args):
    guide_trace = pyro.poutine.trace(guide).get_trace(*args)
    model_trace = pyro.poutine.trace(model).get_trace(*args)
    assert _latent_sites(guide_trace) == _latent_sites(model_trace)
    for site in _latent_sites(guide_trace):
        guide_node, model_node = guide_trace.nodes[site], model_trace.nodes[site]
        assert guide_node["value"].shape == model_node["value"].shape
        assert guide_node["fn"].has_rsample
        assert [f.name for f in guide_node["cond_indep_stack"]] == [
            f.name for f in model_node["cond_indep_stack"]
        ]


@pytest.mark.parametrize("name, model, guide, args", CASES, ids=[c[0] for c in CASES])
def test_guide_replayed_model_gives_finite_elbo(name, model, guide, args):
    elbo = pyro.infer.Trace_ELBO(num_particles=3)
    loss = elbo.loss(model, guide, *args)
    assert torch.isfinite(torch.tensor(loss))


@pytest.mark.parametrize("name, model, guide, args", CASES, ids=[c[0] for c in CASES])
def test_guide_vectorizes_under_outer_plate(name, model, guide, args):
    with pyro.plate("draws", 7, dim=-2):
        trace = pyro.poutine.trace(guide).get_trace(*args)
    for site in _latent_sites(trace):
        value = trace.nodes[site]["value"]
        assert value.shape[0] == 7
        assert value.shape[-2] == 7
        assert not torch.allclose(value[0], value[1])


@pytest.mark.parametrize("name, model, guide, args", CASES[1:], ids=[c[0] for c in CASES[1:]])
def test_predictive_parallel_draws_match_shapes(name, model, guide, args):
    predictive = pyro.infer.Predictive(
        model, guide=guide, num_samples=11, parallel=True, return_sites=["mu", "tau", "theta"]
    )
    samples = predictive(*args)
    assert samples["theta"].shape == (11, 8)
    assert samples["mu"].shape[0] == samples["tau"].shape[0] == 11
    assert samples["mu"].numel() == 11


def test_gaussian_latent_guide_starts_far_from_posterior():
    x = gl.simulate(100, z_true=1.5, seed=0)
    pyro.poutine.trace(ggl.guide).get_trace(x)
    store = pyro.get_param_store()
    loc = _value(store, "gaussian_latent.z_loc")
    scale = _value(store, "gaussian_latent.z_scale")
    post_mean, post_sd = gl.exact_posterior(x)
    assert abs(loc - post_mean) > 10 * post_sd
    assert scale > 10 * post_sd


@pytest.mark.parametrize(
    "guide, prefix, school_site",
    [
        (ges.centered_guide, "eight_schools.centered.", "theta"),
        (ges.noncentered_guide, "eight_schools.noncentered.", "eta"),
    ],
)
def test_eight_schools_guides_start_away_from_reference(guide, prefix, school_site):
    data = es.load_data()
    pyro.poutine.trace(guide).get_trace(data["y"], data["sigma"])
    store = pyro.get_param_store()
    ref = es.reference()
    mu_ref_mean, mu_ref_sd = ref.loc["mu", ["mean", "sd"]]
    assert abs(_value(store, prefix + "mu_loc") - mu_ref_mean) > mu_ref_sd
    assert _value(store, prefix + "mu_scale") < mu_ref_sd / 10
    # q(tau)'s median exp(log_tau_loc) starts at 1, far below the reference median
    # (about 2.7), with a log-scale ten times narrower than the posterior's (about 1).
    tau_median = ref.loc["tau", "q50"]
    assert _value(store, prefix + "log_tau_loc") < torch.tensor(tau_median).log() - 0.9
    assert _value(store, prefix + "log_tau_scale") == pytest.approx(0.1)
    scales = store[prefix + school_site + "_scale"].detach()
    assert scales.shape == (8,)
    assert torch.allclose(scales, torch.full((8,), 0.1, dtype=scales.dtype))


def test_guides_use_distinct_param_names():
    data = es.load_data()
    x = gl.simulate(10)
    for guide, args in [
        (ggl.guide, (x,)),
        (ges.centered_guide, (data["y"], data["sigma"])),
        (ges.noncentered_guide, (data["y"], data["sigma"])),
    ]:
        pyro.poutine.trace(guide).get_trace(*args)
    names = set(pyro.get_param_store().keys())
    assert len(names) == 2 + 6 + 6
