"""Shared pytest setup: every test starts with an empty Pyro param store and validation on.

Nothing here seeds a global RNG: tests that need random numbers pass explicit seeds
(the engines' ``seed=``, or a private ``torch.Generator``/``numpy`` generator).
"""

import pyro
import pytest


@pytest.fixture(autouse=True)
def _clean_pyro():
    pyro.clear_param_store()
    pyro.enable_validation(True)
    yield
    pyro.clear_param_store()
