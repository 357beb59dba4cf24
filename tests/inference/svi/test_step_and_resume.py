"""fit_svi as a loop over a step: callbacks, checkpoints and resume, budget independence.

A resume test has scikit-learn's warm-start shape: two half-runs equal one run, bit for
bit on the CPU, also when the first half is killed with SIGKILL.
"""

import os
import pickle
import subprocess
import sys
import textwrap

import numpy as np
import pyro
import pyro.distributions as dist
import pytest
import torch

from inference import fit_svi
from inference.svi import StepInfo
from models import gaussian_latent as gl

STEPS = 400


@pytest.fixture(scope="module")
def x():
    return gl.simulate(50, seed=1)


def _params(fit):
    return {k: v.numpy() for k, v in fit.params().items()}


def _same(a, b):
    np.testing.assert_array_equal(a.losses, b.losses)
    pa, pb = _params(a), _params(b)
    assert pa.keys() == pb.keys()
    for key in pa:
        np.testing.assert_array_equal(pa[key], pb[key])


def test_callback_sees_every_step_and_can_stop_the_fit(x):
    seen = []

    def callback(info):
        seen.append(info)
        return info.step == 99

    fit = fit_svi(gl.model, "mvn", x, num_steps=STEPS, callback=callback)
    assert fit.num_steps == 100 and not fit.converged
    assert all(isinstance(i, StepInfo) for i in seen)
    assert [i.step for i in seen] == list(range(100))
    np.testing.assert_array_equal([i.loss for i in seen], fit.losses)
    assert all(i.lr > 0 for i in seen)


def test_a_larger_budget_follows_the_same_path(x):
    # Nothing in the schedule depends on num_steps: the shorter fit is a prefix.
    short = fit_svi(gl.model, "normal", x, num_steps=150)
    long = fit_svi(gl.model, "normal", x, num_steps=300)
    np.testing.assert_array_equal(short.losses, long.losses[:150])


def test_two_half_runs_equal_one_run(x, tmp_path):
    path = tmp_path / "fit.pt"
    whole = fit_svi(gl.model, "mvn", x, num_steps=STEPS, seed=3)
    half = fit_svi(
        gl.model,
        "mvn",
        x,
        num_steps=STEPS,
        seed=3,
        checkpoint=path,
        callback=lambda info: info.step == 149,
    )
    assert half.num_steps == 150 and path.is_file()
    resumed = fit_svi(gl.model, "mvn", x, num_steps=STEPS, seed=3, checkpoint=path)
    _same(whole, resumed)
    assert resumed.converged == whole.converged


def test_a_fit_killed_midway_resumes_to_the_numbers_of_an_uninterrupted_fit(x, tmp_path):
    path = tmp_path / "fit.pt"
    script = textwrap.dedent(
        f"""
        import os, signal
        from inference import fit_svi
        from models import gaussian_latent as gl
        x = gl.simulate(50, seed=1)
        def die(info):
            if info.step == 230:
                os.kill(os.getpid(), signal.SIGKILL)
        fit_svi(gl.model, "mvn", x, num_steps={STEPS}, seed=3, checkpoint={str(path)!r},
                checkpoint_every=100, callback=die)
        """
    )
    env = dict(os.environ, PYTHONPATH=os.getcwd())
    done = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True)
    assert done.returncode == -9, done.stderr.decode()[-2000:]
    assert path.is_file()
    resumed = fit_svi(gl.model, "mvn", x, num_steps=STEPS, seed=3, checkpoint=path)
    whole = fit_svi(gl.model, "mvn", x, num_steps=STEPS, seed=3)
    _same(whole, resumed)


class _Exploit:
    def __reduce__(self):
        return (os.system, (f"touch {MARKER}",))


MARKER = "/tmp/vilab-checkpoint-exploit-ran"


def test_a_checkpoint_that_would_run_code_is_refused_without_running_it(x, tmp_path):
    if os.path.exists(MARKER):
        os.remove(MARKER)
    path = tmp_path / "evil.pt"
    path.write_bytes(pickle.dumps({"format": "vilab-svi-checkpoint", "x": _Exploit()}))
    with pytest.raises(ValueError, match="not a vilab checkpoint, or holds code"):
        fit_svi(gl.model, "mvn", x, num_steps=10, checkpoint=path)
    assert not os.path.exists(MARKER)


def test_a_checkpoint_of_another_fit_is_refused_saying_what_differs(x, tmp_path):
    path = tmp_path / "fit.pt"
    fit_svi(gl.model, "mvn", x, num_steps=20, checkpoint=path)
    with pytest.raises(ValueError, match="guide is 'mvn' there, 'normal' here"):
        fit_svi(gl.model, "normal", x, num_steps=20, checkpoint=path)
    with pytest.raises(ValueError, match=r"args is 'tensor\(50,\)"):
        fit_svi(gl.model, "mvn", x[:40], num_steps=20, checkpoint=path)


def test_a_guide_missing_a_latent_site_is_refused_naming_it():
    def model():
        a = pyro.sample("a", dist.Normal(0.0, 1.0))
        pyro.sample("b", dist.Normal(a, 1.0))

    def guide():
        pyro.sample("a", dist.Normal(pyro.param("m", torch.tensor(0.0)), 1.0))

    with pytest.raises(ValueError, match="the guide has no site 'b'"):
        fit_svi(model, guide, num_steps=10)


def test_device_cpu_is_the_default_and_cuda_is_refused_clearly_without_one(x):
    a = fit_svi(gl.model, "normal", x, num_steps=50)
    b = fit_svi(gl.model, "normal", x, num_steps=50, device="cpu")
    np.testing.assert_array_equal(a.losses, b.losses)
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="no CUDA device"):
            fit_svi(gl.model, "normal", x, num_steps=5, device="cuda")
    with pytest.raises(ValueError, match="device must be"):
        fit_svi(gl.model, "normal", x, num_steps=5, device="tpu-ish")
