"""One flat log density for any Pyro model: what a NUTS sampler outside Pyro needs.

:func:`flat_potential` turns ``model(*args, **kwargs)`` into a function of one flat
vector of the unconstrained continuous latent sites (in sorted name order), giving
``log p(x, z)`` with the log-Jacobians of the transforms and its gradient.

- **Pyro's own potential.** The density is Pyro's HMC/NUTS potential
  (``pyro.infer.mcmc.util.initialize_model``): the same transforms and, for discrete
  sites with finite support, the same exact enumeration (``config_enumerate`` and an
  einsum over the enumerated dims), so the two backends sample the same target.
- **One graph** of the density and its gradient (:mod:`inference.mcmc.graph`): Pyro's
  handlers and autograd run once, at capture time; the graph then runs ``"traced"``
  (TorchScript, ~0.15 ms a call on eight schools) or ``"compiled"`` (Inductor's C++,
  ~0.01 ms, a few seconds to build). A model whose control flow depends on its latent
  values cannot be captured: the graph is checked against the eager potential at random
  points, and a mismatch or a failure falls back to the eager potential (``"eager"``,
  ~1.2 ms) with one :class:`EagerPotentialWarning` saying why.
- **Whitened** (optional): given a Gaussian ``(mean, cov)`` from an SVI fit, the vector
  is ``u`` with ``z = mean + L u`` (``L L^T = cov``), so a sampler adapting a diagonal
  metric in ``u`` starts from the fit's dense covariance. The density reported is still
  that of ``z`` (the constant ``log |L|`` is left out).
"""

from dataclasses import dataclass, field

import numpy as np
import pyro
import torch
from pyro.infer.mcmc.util import initialize_model

from inference.enumeration import enumerated_sites
from inference.mcmc import graph as graphs
from inference.sites import trace_model, zero_point

CHECK_POINTS = 3  # random points at which a graph must agree with the eager potential
RUNNERS = (*graphs.RUNNERS, "eager")


class EagerPotentialWarning(UserWarning):
    """The model could not be captured as a graph; its potential runs eagerly (slower)."""


@dataclass
class FlatPotential:
    """``log p(x, z)`` and its gradient as functions of one flat float64 vector.

    names, shapes: the continuous latent sites, in sorted name order, and their
    unconstrained shapes. transforms: constrained → unconstrained, per site.
    density: the eager ``log p`` of a sampler vector (Pyro's handlers on every call;
    one thread at a time). runner: how :meth:`logp_and_grad` runs, ``"compiled"``,
    ``"traced"`` or ``"eager"``. why: why it runs slower than asked, when it does.
    asked_eager: whether a non-finite graph value has been explained by the eager
    density yet (it is asked once).
    """

    names: list[str]
    shapes: dict[str, torch.Size]
    transforms: dict
    density: object
    device: torch.device
    runner: str = "eager"
    why: str | None = None
    value_and_grad: object = None
    shift: torch.Tensor | None = None
    scale_tril: torch.Tensor | None = None
    errors: list[str] = field(default_factory=list)
    asked_eager: bool = False

    @property
    def dim(self) -> int:
        return sum(int(s.numel()) for s in self.shapes.values())

    @property
    def traced(self) -> bool:
        """Whether it runs as a graph (callable from several threads at once)."""
        return self.runner != "eager"

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

    def eager_value_and_grad(self, flat: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(gradient, value)`` of the eager density (autograd) at a sampler vector."""
        flat = flat.detach().requires_grad_(True)
        with torch.enable_grad():
            value = self.density(flat)
            (grad,) = torch.autograd.grad(value, flat)
        return grad, value.detach()

    def logp_and_grad(self, x: np.ndarray) -> tuple[float, np.ndarray]:
        """``(log p, d log p / dx)`` at the sampler vector ``x``; ``-inf`` where it fails.

        A failure of the model's arithmetic (e.g. a Cholesky factor of a matrix that is
        not positive definite) is a point outside the posterior's support to the
        sampler, which treats it as a divergence; the first such message is kept in
        ``errors`` so that a model that always fails can say why (a graph gives NaN
        where the eager density raises: the eager one is asked, once, for the message).
        """
        flat = torch.from_numpy(np.asarray(x, dtype=np.float64))
        if self.device.type != "cpu":
            flat = flat.to(self.device)
        run = self.value_and_grad or self.eager_value_and_grad
        try:
            grad, value = run(flat)
            value = float(value)
            if not np.isfinite(value) and self.value_and_grad is not None and not self.asked_eager:
                self.asked_eager = True  # once: it costs an eager call on the hot path
                self.eager_value_and_grad(flat)
        except (RuntimeError, ValueError) as err:
            if not self.errors:
                self.errors.append(f"{type(err).__name__}: {err}")
            return -np.inf, np.zeros_like(x)
        if not np.isfinite(value):
            return -np.inf, np.zeros_like(x)
        return value, grad.detach().cpu().numpy()


def _zero_init(site):
    return zero_point(site["fn"])


def flat_potential(
    model, args, kwargs, *, nesting: int, device, runner: str = "traced", gaussian=None
) -> FlatPotential:
    """Build the :class:`FlatPotential` of ``model(*args, **kwargs)``.

    Parameters
    ----------
    nesting : int
        The model's plate nesting (enumerated dims go to its left).
    device : torch.device
        Where the model's tensors live.
    runner : {"compiled", "traced", "eager"}
        How to run the density: a compiled graph, a traced one, or Pyro's handlers on
        every call. A graph that cannot be built or disagrees with the eager density
        falls back (compiled → traced → eager), saying why in ``why``.
    gaussian : tuple of (mean, cov), optional
        A Gaussian over the flat unconstrained vector (sorted site order) to whiten by.
    """
    if runner not in RUNNERS:
        raise ValueError(f"runner must be one of {RUNNERS}, got {runner!r}")
    trace = trace_model(model, args, kwargs)
    enumerated_sites(trace)  # refuses a discrete site it cannot sum out
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
    potential = FlatPotential(names, shapes, transforms, None, device)
    if gaussian is not None:
        mean, cov = gaussian
        potential.shift = torch.as_tensor(mean, dtype=torch.float64, device=device)
        potential.scale_tril = torch.linalg.cholesky(
            torch.as_tensor(cov, dtype=torch.float64, device=device)
        )
    potential.density = lambda flat: -potential_fn(potential.unpack(potential.to_z(flat)))
    if runner == "eager":
        potential.why = "the eager potential was asked for"
    elif potential.dim:
        _use_graph(potential, runner)
    return potential


def _use_graph(potential: FlatPotential, runner: str) -> None:
    """Run ``potential`` as a graph the ``runner`` way, or the next way that works."""
    try:
        graph = graphs.capture(potential.density, potential.dim, potential.device)
    except Exception as err:  # noqa: BLE001 - any capture failure means "run eagerly"
        potential.why = f"its graph could not be captured ({_first_line(err)})"
        return
    mismatch = _mismatch(potential, graph)
    if mismatch:
        potential.why = (
            f"its captured graph differs from the eager density at a random point ({mismatch}): "
            "its control flow depends on the latent values"
        )
        return
    kinds = graphs.RUNNERS[graphs.RUNNERS.index(runner) :]
    for kind in kinds:
        try:
            run = graphs.runner(graph, kind, potential.dim, potential.device)
            mismatch = _mismatch(potential, run)
        except Exception as err:  # noqa: BLE001 - a runner that fails is not used
            mismatch = _first_line(err)
        if not mismatch:
            potential.runner, potential.value_and_grad = kind, run
            return
        potential.why = f"its {kind} graph could not be used ({mismatch})"


def _mismatch(potential: FlatPotential, run) -> str | None:
    """Where ``run`` disagrees with the eager density and autograd, or None.

    The eager density runs with Pyro's validation off, as the graph was captured; where
    the model fails (e.g. a Cholesky factor of a matrix that is not positive definite),
    the graph must fail too or give a non-finite density.
    """
    generator = torch.Generator().manual_seed(0)
    for _ in range(CHECK_POINTS):
        point = torch.rand(potential.dim, generator=generator, dtype=torch.float64) * 4 - 2
        point = point.to(potential.device)
        with pyro.validation_enabled(False):
            want_grad, want = _outcome(potential.eager_value_and_grad, point)
        grad, got = _outcome(run, point)
        if not (_finite(want) or _finite(got)):
            continue
        same = (
            _finite(want)
            and _finite(got)
            and torch.isclose(got, want, rtol=1e-9, atol=1e-9)
            and torch.allclose(
                grad, want_grad, rtol=1e-7, atol=1e-9 * (1 + float(want_grad.abs().max()))
            )
        )
        if not same:
            return f"log density {_show(got)} vs {_show(want)}"
    return None


def _outcome(run, point):
    """``(gradient, value)`` of ``run`` at ``point``; ``(None, None)`` where it fails."""
    try:
        grad, value = run(point)
    except (RuntimeError, ValueError):
        return None, None
    return grad, value


def _finite(value) -> bool:
    return value is not None and bool(torch.isfinite(value))


def _show(value) -> str:
    return "a failure" if value is None else f"{float(value):.6g}"


def _first_line(err: Exception) -> str:
    return f"{type(err).__name__}: {str(err).splitlines()[0][:200] if str(err) else ''}"
