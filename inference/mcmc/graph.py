"""A log density and its gradient as one ATen graph, run by TorchScript or compiled by Inductor.

:func:`capture` records ``x -> (d log p / dx, log p)`` of a Python density (Pyro's
handlers, the model's Python, autograd's backward) as one FX graph of ATen operations
(``make_fx``), with the model's data as constants. What does not depend on ``x`` is
folded into constants once (torch's ``const_fold``) and what nothing reads is dropped,
so a call runs only the arithmetic of the density and its gradient. Control flow is
recorded as it went at the capture point (like a trace): the caller checks the graph
against the eager density at other points.

The graph then runs in one of two ways (:func:`runner`):

- ``"traced"``: TorchScript's interpreter (``torch.jit.trace`` of the graph), ready in
  milliseconds.
- ``"compiled"``: TorchInductor's C++ code for the graph (``torch._inductor.compile``,
  Inductor's entry point for graphs captured without Dynamo; Dynamo's guards would cost
  more than the graph). A few seconds to build the first time on a machine, then
  served from Inductor's on-disk cache.

Measured here (2026-12-03, 2 cores, float64, one thread), value and gradient per call:

=========================  =======  =======  ========
model                      eager    traced   compiled
=========================  =======  =======  ========
eight schools (10 dims)    1.2 ms   0.15 ms  0.012 ms
regression (7 dims)        --       0.17 ms  0.018 ms
enumerated mixture N=1000  --       0.54 ms  0.17 ms
=========================  =======  =======  ========

Capturing takes ~0.2 s (~2 s the first time in a process: torch's imports). Compiling
takes 0.04 s when Inductor's on-disk cache holds the graph (~3 s the first time in a
process: Inductor's imports and set-up), 1-2.5 s when it does not, and ~15 s more the
first time on a machine.

(before this module the nutpie backend ran the eager density traced by TorchScript with
autograd's backward: 0.58 ms on eight schools).
"""

import logging
import warnings

import pyro
import torch
from torch.fx.experimental.const_fold import split_const_subgraphs
from torch.fx.experimental.proxy_tensor import make_fx

RUNNERS = ("compiled", "traced")


def capture(log_density, dim: int, device) -> torch.fx.GraphModule:
    """One graph of ``x -> (gradient, value)`` for ``log_density`` on flat vectors of ``dim``.

    Raises whatever the capture raises (an operation ``make_fx`` cannot record, a
    failure of the model at the capture point).
    """

    def value_and_grad(x):
        x = x.detach().requires_grad_(True)
        with torch.enable_grad():
            value = log_density(x)
            (grad,) = torch.autograd.grad(value, x)
        return grad, value.detach()

    example = torch.zeros(dim, dtype=torch.float64, device=device)
    # The model's own checks of its data (``if not (sigma > 0).all()``) read values of
    # constants while recording; they are kept as recorded (the data were validated up
    # front). Pyro's validation adds only such checks.
    with pyro.validation_enabled(False), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        graph = make_fx(value_and_grad, _error_on_data_dependent_ops=False)(example)
    return _simplified(graph)


def _simplified(graph: torch.fx.GraphModule) -> torch.fx.GraphModule:
    """Reads of values nothing uses dropped, then what does not depend on x folded."""
    for node in list(graph.graph.nodes):
        if node.target is torch.ops.aten._local_scalar_dense.default and not node.users:
            graph.graph.erase_node(node)
    graph.graph.eliminate_dead_code()
    graph.recompile()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # const_fold's notes on the attributes it moves
        folded = split_const_subgraphs(graph)
        folded.run_folding()
    return folded


def runner(graph: torch.fx.GraphModule, kind: str, dim: int, device):
    """A callable ``x -> (gradient, value)`` running ``graph`` the ``kind`` way."""
    example = torch.zeros(dim, dtype=torch.float64, device=device)
    if kind == "traced":
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # TorchScript's deprecation notice
            return torch.jit.trace(graph, example, check_trace=False)
    if kind == "compiled":
        # 1.5 s of imports: on use.
        from torch._inductor import compile as inductor_compile
        from torch._subclasses.fake_tensor import FakeTensorMode
        from torch.fx.experimental.symbolic_shapes import ShapeEnv

        # Inductor looks a graph up in its on-disk cache (keyed by the graph, its
        # constants' values and its inputs' shapes) only when the example comes with a
        # shape environment: 0.04 s for a graph compiled before against ~2.5 s.
        fake = FakeTensorMode(shape_env=ShapeEnv()).from_tensor(example)
        quiet = logging.getLogger("torch.utils.cpp_extension")  # "no CUDA runtime" on CPU
        level = quiet.level
        quiet.setLevel(logging.ERROR)
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                return inductor_compile(graph, [fake])
        finally:
            quiet.setLevel(level)
    raise ValueError(f"runner kind must be one of {RUNNERS}, got {kind!r}")
