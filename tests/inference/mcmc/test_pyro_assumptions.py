"""The Pyro internals the recording NUTS kernel stands on, checked loudly.

``RecordingNUTS`` (inference/mcmc/pyro_sampler.py) reads tree depth and acceptance from Pyro's
private ``_build_tree`` and ``_potential_energy_last``, and seeds the mass matrix through
``_initialize_adapter``. pyproject pins pyro-ppl to the minor version these were read
from; if a release moves them, this test names what moved instead of the sampler
recording wrong statistics silently.
"""

import inspect

import pyro
from pyro.infer import NUTS
from pyro.infer.mcmc.hmc import HMC
from pyro.infer.mcmc.nuts import _TreeInfo


def test_pyro_is_the_tested_minor_version():
    assert pyro.__version__.startswith("1.9."), pyro.__version__


def test_build_tree_has_the_signature_the_kernel_overrides():
    params = list(inspect.signature(NUTS._build_tree).parameters)
    assert params == [
        "self",
        "z",
        "r",
        "z_grads",
        "log_slice",
        "direction",
        "tree_depth",
        "energy_current",
    ]


def test_tree_info_carries_the_fields_the_kernel_reads():
    for name in ("sum_accept_probs", "num_proposals", "diverging"):
        assert name in _TreeInfo._fields, name


def test_hmc_keeps_the_attributes_the_kernel_reads():
    source = inspect.getsource(HMC)
    for name in ("_potential_energy_last", "mass_matrix_adapter", "_initialize_adapter"):
        assert name in source, name
    assert "reset_step_size_adaptation" in inspect.getsource(
        pyro.infer.mcmc.adaptation.WarmupAdapter
    )
