"""One flat log density for any Pyro model: what a NUTS sampler outside Pyro needs.

:func:`flat_potential` turns ``model(*args, **kwargs)`` into a function of one flat
vector of the unconstrained continuous latent sites (in sorted name order), giving
``log p(x, z)`` with the log-Jacobians of the transforms and its gradient.

- **Pyro's own potential.** The density is Pyro's HMC/NUTS potential
  (``pyro.infer.mcmc.util.initialize_model``): the same transforms and, for discrete
  sites with finite support, the same exact enumeration (``config_enumerate`` and an
  einsum over the enumerated dims), so the two backends sample the same target.
- **Traced** with ``torch.jit.trace`` where the model allows: Pyro's handlers run once,
  at trace time, and a call costs a few hundred microseconds instead of a few
  milliseconds. A model whose control flow depends on its latent values cannot be
  traced; the trace is checked against the eager potential at random points, and a
  mismatch or a failure falls back to the eager potential with one
  :class:`EagerPotentialWarning` saying why.
- **Whitened** (optional): given a Gaussian ``(mean, cov)`` from an SVI fit, the vector
  is ``u`` with ``z = mean + L u`` (``L L^T = cov``), so a sampler adapting a diagonal
  metric in ``u`` starts from the fit's dense covariance. The density reported is still
  that of ``z`` (the constant ``log |L|`` is left out).
"""

import warnings
from dataclasses import dataclass, field

import numpy as np
import torch
from pyro.infer.mcmc.util import initialize_model

from inference.sites import check_enumerable, trace_model, zero_point

CHECK_POINTS = 3  # random points at which a trace must agree with the eager potential


class EagerPotentialWarning(UserWarning):
    """The model could not be traced; its potential runs eagerly (slower, one chain at a time)."""


@dataclass
class FlatPotential:
    """``log p(x, z)`` and its gradient as functions of one flat float64 vector.

    names, shapes: the continuous latent sites, in sorted name order, and their
    unconstrained shapes. transforms: constrained → unconstrained, per site.
    traced: whether the density runs as a TorchScript trace (else eagerly; then it
    uses Pyro's global handler stack and must be called from one thread at a time).
    why_eager: why it could not be traced, when it was not.
    """

    names: list[str]
    shapes: dict[str, torch.Size]
    transforms: dict
    log_density: object
    traced: bool
    device: torch.device
    why_eager: str | None = None
    shift: torch.Tensor | None = None
    scale_tril: torch.Tensor | None = None
    errors: list[str] = field(default_factory=list)

    @property
    def dim(self) -> int:
        return sum(int(s.numel()) for s in self.shapes.values())

    @property
    def whitened(self) -> bool:
        return self.scale_tril is not None

    def to_z(self, flat: torch.Tensor) -> torch.Tensor:
        """The unconstrained latent vector of a (batch of) sampler vector(s)."""
        if self.scale_tril is None:
            return flat
        return self.shift + flat @ self.scale_tril.T

    def from_z(self, z: torch.Tensor) -> torch.Tensor:
        """The sampler vector of an unconstrained latent vector."""
        if self.scale_tril is None:
            return z
        solved = torch.linalg.solve_triangular(
            self.scale_tril, (z - self.shift)[:, None], upper=False
        )
        return solved[:, 0]

    def unpack(self, z: torch.Tensor) -> dict[str, torch.Tensor]:
        """Split a flat unconstrained vector ``(..., dim)`` into sites ``(..., *shape)``."""
        out, start = {}, 0
        for name in self.names:
            shape = self.shapes[name]
            size = int(shape.numel())
            out[name] = z[..., start : start + size].reshape(z.shape[:-1] + shape)
            start += size
        return out

    def constrain(self, draws: np.ndarray) -> dict[str, torch.Tensor]:
        """Constrained site values of sampler vectors ``(..., dim)``, each ``(..., *shape)``."""
        flat = torch.as_tensor(draws, dtype=torch.float64)
        batch = flat.shape[:-1]
        z = self.to_z(flat.reshape(-1, self.dim).to(self.device))
        values = {name: self.transforms[name].inv(u) for name, u in self.unpack(z).items()}
        # A constrained value may have another shape than its unconstrained one (a
        # simplex of K has K - 1 free coordinates).
        return {name: v.reshape(batch + v.shape[1:]).cpu() for name, v in values.items()}

    def logp_and_grad(self, x: np.ndarray) -> tuple[float, np.ndarray]:
        """``(log p, d log p / dx)`` at the sampler vector ``x``; ``-inf`` where it fails.

        A failure of the model's arithmetic (e.g. a Cholesky factor of a matrix that is
        not positive definite) is a point outside the posterior's support to the
        sampler, which treats it as a divergence; the first such message is kept in
        ``errors`` so that a model that always fails can say why.
        """
        flat = torch.from_numpy(np.asarray(x, dtype=np.float64)).to(self.device)
        flat.requires_grad_(True)
        try:
            value = self.log_density(self.to_z(flat))
            (grad,) = torch.autograd.grad(value, flat)
        except (RuntimeError, ValueError) as err:
            if not self.errors:
                self.errors.append(f"{type(err).__name__}: {err}")
            return -np.inf, np.zeros_like(x)
        value = float(value.detach())
        if not np.isfinite(value):
            return -np.inf, np.zeros_like(x)
        return value, grad.detach().cpu().numpy().astype(np.float64, copy=False)


def _zero_init(site):
    return zero_point(site["fn"])


def flat_potential(
    model, args, kwargs, *, nesting: int, device, jit: bool = True, gaussian=None
) -> FlatPotential:
    """Build the :class:`FlatPotential` of ``model(*args, **kwargs)``.

    Parameters
    ----------
    nesting : int
        The model's plate nesting (enumerated dims go to its left).
    device : torch.device
        Where the model's tensors live.
    jit : bool
        Try to trace the density (``False``: always eager).
    gaussian : tuple of (mean, cov), optional
        A Gaussian over the flat unconstrained vector (sorted site order) to whiten by.
    """
    trace = trace_model(model, args, kwargs)
    check_enumerable(trace)
    _, potential_fn, transforms, _ = initialize_model(
        model,
        args,
        kwargs,
        max_plate_nesting=nesting,
        # The prototype trace only gives shapes and transforms; the sampler finds its
        # own start, so Pyro's search for one (which stops at the first exception) is
        # skipped by giving initial parameters.
        init_strategy=_zero_init,
        initial_params={},
    )
    names = sorted(transforms)
    shapes = {name: transforms[name](trace.nodes[name]["value"].detach()).shape for name in names}
    potential = FlatPotential(names, shapes, transforms, None, False, device)

    def eager(z):
        return -potential_fn(potential.unpack(z))

    potential.log_density = eager
    if jit and potential.dim:
        traced, why = _trace(eager, potential.dim, device)
        if traced is not None:
            potential.log_density, potential.traced = traced, True
        else:
            potential.why_eager = why
    elif not jit:
        potential.why_eager = "jit=False was asked for"
    if gaussian is not None:
        mean, cov = gaussian
        potential.shift = torch.as_tensor(mean, dtype=torch.float64, device=device)
        potential.scale_tril = torch.linalg.cholesky(
            torch.as_tensor(cov, dtype=torch.float64, device=device)
        )
    return potential


def _trace(eager, dim: int, device):
    """A TorchScript trace of ``eager`` checked at random points, or ``(None, why)``."""
    generator = torch.Generator().manual_seed(0)
    example = torch.zeros(dim, dtype=torch.float64, device=device)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            traced = torch.jit.trace(eager, example, check_trace=False)
        for _ in range(CHECK_POINTS):
            point = (torch.rand(dim, generator=generator, dtype=torch.float64) * 4 - 2).to(device)
            want, got = eager(point), traced(point)
            same = torch.isclose(got, want, rtol=1e-9, atol=1e-9) or (
                not torch.isfinite(want) and not torch.isfinite(got)
            )
            if not same:
                return None, (
                    "its traced density differs from the eager one at a random point "
                    f"({float(got):.6g} vs {float(want):.6g}): its control flow depends "
                    "on the latent values"
                )
    except Exception as err:  # noqa: BLE001 - any tracing failure means "run eagerly"
        return None, f"tracing failed ({type(err).__name__}: {str(err).splitlines()[0][:200]})"
    return traced, None
