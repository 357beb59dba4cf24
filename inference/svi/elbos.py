"""The ELBOs the engines build by name: ``trace``, ``meanfield``, ``enum``, eager or compiled."""

from pyro.infer import (
    ELBO,
    JitTrace_ELBO,
    JitTraceEnum_ELBO,
    JitTraceMeanField_ELBO,
    Trace_ELBO,
    TraceEnum_ELBO,
    TraceMeanField_ELBO,
)

ELBOS = ("trace", "meanfield", "enum")


class _JitMeanField(JitTraceMeanField_ELBO):
    """Pyro 1.9's ``JitTraceMeanField_ELBO`` compiled once, not at every call.

    Its ``differentiable_loss`` looks for ``_loss_and_surrogate_loss`` but stores the
    compiled loss as ``_differentiable_loss``, so it re-traces the model at every step
    (22 ms a step instead of 2 on the VAE's q* fits). Pointing the one at the other makes
    it reuse its compiled loss, as the other JIT ELBOs do.
    """

    def differentiable_loss(self, model, guide, *args, **kwargs):
        self._loss_and_surrogate_loss = getattr(self, "_differentiable_loss", None)
        return super().differentiable_loss(model, guide, *args, **kwargs)


_ELBO_CLASSES = {
    "trace": (Trace_ELBO, JitTrace_ELBO),
    "meanfield": (TraceMeanField_ELBO, _JitMeanField),
    "enum": (TraceEnum_ELBO, JitTraceEnum_ELBO),
}


def make_elbo(elbo, num_particles: int = 1, nesting: int | None = None, jit: bool = False) -> ELBO:
    """The ELBO called ``elbo`` (an instance is returned as it is): ``num_particles``
    vectorized particles, ``max_plate_nesting=nesting``, compiled by Pyro's JIT if ``jit``."""
    if isinstance(elbo, ELBO):
        return elbo
    opts = dict(num_particles=num_particles, vectorize_particles=num_particles > 1)
    if nesting is not None:  # else Pyro finds it on the first call
        opts["max_plate_nesting"] = nesting
    if jit:
        opts["ignore_jit_warnings"] = True
    return _ELBO_CLASSES[elbo][int(jit)](**opts)
