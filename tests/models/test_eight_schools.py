import pyro
import pytest
import torch
from pyro.poutine.util import site_is_subsample

from models import eight_schools as es


@pytest.fixture(autouse=True)
def _fresh_pyro():
    pyro.clear_param_store()
    pyro.set_rng_seed(0)


def test_load_data():
    data = es.load_data()
    assert data["schools"] == list(es.SCHOOLS)
    assert len(data["schools"]) == 8
    assert data["y"].dtype == data["sigma"].dtype == torch.float64
    assert data["y"].tolist() == [28, 8, -3, 7, -1, 1, 18, 12]
    assert data["sigma"].tolist() == [15, 10, 16, 11, 9, 11, 10, 18]


def test_reference_labels_and_values():
    ref = es.reference()
    thetas = [f"theta[{school}]" for school in es.SCHOOLS]
    assert list(ref.index) == ["mu", "tau", *thetas]
    assert list(ref["posteriordb_name"][2:]) == [f"theta[{j}]" for j in range(1, 9)]
    assert {"mean", "sd", "q05", "q95", "mcse_mean"} <= set(ref.columns)
    assert ref.loc["mu", "mean"] == pytest.approx(4.410518337)
    assert ref.loc["tau", "sd"] == pytest.approx(3.198477671)
    assert ref.loc["theta[Choate]", "mean"] == pytest.approx(6.150502293)
    assert ref.loc["theta[Mt. Hermon]", "q95"] == pytest.approx(13.54959069)
    assert ref.loc["mu", "mcse_mean"] == pytest.approx(0.0330374705950917)
    assert (ref["q05"] < ref["mean"]).all() and (ref["mean"] < ref["q95"]).all()


def _sites(trace):
    return {
        name: node
        for name, node in trace.nodes.items()
        if node["type"] == "sample" and not node["is_observed"] and not site_is_subsample(node)
    }


def _plates(node):
    return [frame.name for frame in node["cond_indep_stack"]]


@pytest.mark.parametrize("model", [es.centered, es.noncentered], ids=lambda m: m.__name__)
def test_globals_outside_and_school_sites_inside_plate(model):
    data = es.load_data()
    trace = pyro.poutine.trace(model).get_trace(data["y"], data["sigma"])
    for name in ("mu", "tau"):
        assert trace.nodes[name]["value"].shape == ()
        assert trace.nodes[name]["cond_indep_stack"] == ()
    assert trace.nodes["tau"]["value"] > 0
    assert _plates(trace.nodes["y"]) == ["school"]
    assert trace.nodes["y"]["is_observed"]
    assert trace.nodes["theta"]["value"].shape == (8,)
    assert model.coords == {"school": list(es.SCHOOLS)}


def test_centered_latent_sites():
    data = es.load_data()
    trace = pyro.poutine.trace(es.centered).get_trace(data["y"], data["sigma"])
    assert set(_sites(trace)) == {"mu", "tau", "theta"}
    assert _plates(trace.nodes["theta"]) == ["school"]


def test_noncentered_has_deterministic_theta():
    data = es.load_data()
    trace = pyro.poutine.trace(es.noncentered).get_trace(data["y"], data["sigma"])
    assert set(_sites(trace)) == {"mu", "tau", "eta"}
    assert _plates(trace.nodes["eta"]) == ["school"]
    theta = trace.nodes["theta"]
    assert theta["infer"].get("_deterministic")
    expected = (
        trace.nodes["mu"]["value"] + trace.nodes["tau"]["value"] * trace.nodes["eta"]["value"]
    )
    assert torch.allclose(theta["value"], expected)


@pytest.mark.parametrize("model", [es.centered, es.noncentered], ids=lambda m: m.__name__)
def test_log_density_matches_hand_computation(model):
    data = es.load_data()
    y, sigma = data["y"], data["sigma"]
    trace = pyro.poutine.trace(model).get_trace(y, sigma)
    trace.compute_log_prob()
    mu, tau = trace.nodes["mu"]["value"], trace.nodes["tau"]["value"]
    theta = trace.nodes["theta"]["value"]
    zero, one, five = (torch.tensor(v, dtype=torch.float64) for v in (0.0, 1.0, 5.0))
    normal = torch.distributions.Normal
    expected = (
        normal(zero, five).log_prob(mu)
        + torch.distributions.HalfCauchy(five).log_prob(tau)
        + normal(theta, sigma).log_prob(y).sum()
    )
    if model is es.centered:
        expected = expected + normal(mu, tau).log_prob(theta).sum()
    else:
        expected = expected + normal(zero, one).log_prob(trace.nodes["eta"]["value"]).sum()
    assert float(trace.log_prob_sum()) == pytest.approx(float(expected), rel=1e-12)


@pytest.mark.parametrize("model", [es.centered, es.noncentered], ids=lambda m: m.__name__)
@pytest.mark.parametrize(
    "y, sigma, message",
    [
        (torch.zeros(8), torch.ones(7), r"same length.*\(8,\).*\(7,\)"),
        (torch.zeros(2, 4), torch.ones(2, 4), "1-D"),
        (torch.zeros(3), torch.tensor([1.0, 0.0, 1.0]), "sigma must be > 0"),
        (torch.tensor([0.0, float("nan")]), torch.ones(2), "finite"),
        (torch.zeros(2), torch.tensor([1.0, float("inf")]), "finite"),
    ],
)
def test_bad_input_raises_value_error(model, y, sigma, message):
    with pytest.raises(ValueError, match=message):
        model(y, sigma)
