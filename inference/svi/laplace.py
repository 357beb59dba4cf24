"""MAP and Laplace approximation in the unconstrained space of a model's latents.

Used as the starting point and the whitening basis of SVI's Gaussian families: on
a badly scaled, correlated posterior the Laplace approximation is close to the
answer, and in the basis it defines the posterior looks like N(0, I).

References
----------
MacKay, D. J. C. (2003). Information Theory, Inference, and Learning Algorithms, ch. 27.
"""

import math
from dataclasses import dataclass

import torch
from pyro import poutine
from pyro.poutine.util import site_is_subsample

from inference.enumeration import enumerate_model, enumerated_sites, log_density
from inference.sites import max_plate_nesting, trace_model, unconstrained_sites

MAX_DENSE_DIM = 400  # above this, skip the Hessian: d backward passes get too dear


@dataclass(frozen=True)
class Laplace:
    """A Gaussian ``N(loc, precision^-1)`` over the packed unconstrained latents.

    sites: (name, unconstrained shape) in the model's order; the packed vector is their
    concatenation. ok: the MAP search converged and the Hessian is positive definite;
    otherwise ``loc`` is only a feasible starting point and ``precision`` the identity.
    """

    sites: tuple[tuple[str, tuple[int, ...]], ...]
    loc: torch.Tensor
    precision: torch.Tensor
    ok: bool
    message: str

    @property
    def scale_tril(self) -> torch.Tensor:
        """Cholesky factor of the covariance ``precision^-1``."""
        eye = torch.eye(len(self.loc), dtype=self.loc.dtype)
        cov = torch.cholesky_solve(eye, torch.linalg.cholesky(self.precision))
        return torch.linalg.cholesky((cov + cov.T) / 2)

    @property
    def meanfield_scale(self) -> torch.Tensor:
        """The mean-field optimum for a Gaussian posterior: ``1 / sqrt(diag(precision))``."""
        return self.precision.diagonal().rsqrt()


MAX_MINIBATCHES = 20  # minibatches that stand in for the full data in a subsampled model


def minibatch_plan(trace, generator: torch.Generator) -> list[dict[str, torch.Tensor]]:
    """Fixed subsample indices for each subsampled plate: a partition into minibatches.

    A model with ``pyro.plate(..., subsample_size=n)`` gives a different objective at each
    call. Averaging its (already rescaled) log density over a partition of the data into
    minibatches of size ``n`` gives the full-data log density, deterministically; more
    than ``MAX_MINIBATCHES`` minibatches are capped (then it is an unbiased estimate with
    fixed indices). Returns one ``{plate name: indices}`` per minibatch ([{}] if none).
    """
    plates = {
        name: (site["fn"].size, len(site["value"]))
        for name, site in trace.nodes.items()
        if site["type"] == "sample" and site_is_subsample(site)
    }
    plates = {k: v for k, v in plates.items() if v[1] < v[0]}
    if not plates:
        return [{}]
    count = max(math.ceil(size / n) for size, n in plates.values())
    count = min(count, MAX_MINIBATCHES)
    plan = [{} for _ in range(count)]
    for name, (size, n) in plates.items():
        order = torch.randperm(size, generator=generator)
        order = torch.cat([order, order[: n * count]])  # wrap so every batch has n
        for k in range(count):
            plan[k][name] = order[k * n : (k + 1) * n]
    return plan


def potential_fn(model, args, kwargs, sites, transforms, plan=({},)):
    """``U(x) = -log p(x_constrained, data) - log|J|`` for a packed unconstrained ``x``.

    ``plan`` fixes the subsample indices (see :func:`minibatch_plan`); U is averaged
    over its minibatches. Discrete latent sites are summed out (enumerated).
    """
    prototype = trace_model(model, args, kwargs)
    model = enumerate_model(model, enumerated_sites(prototype), -max_plate_nesting(prototype) - 1)

    def potential(x):
        values, log_jac, pos = {}, 0.0, 0
        for name, shape in sites:
            size = int(torch.Size(shape).numel())
            u = x[pos : pos + size].reshape(shape)
            pos += size
            v = transforms[name](u)
            values[name] = v
            log_jac = log_jac + transforms[name].log_abs_det_jacobian(u, v).sum()
        log_p = 0.0
        for indices in plan:
            with poutine.block():
                conditioned = poutine.condition(model, {**values, **indices})
                trace = poutine.trace(conditioned).get_trace(*args, **kwargs)
            log_p = log_p + log_density(trace)
        return -(log_p / len(plan) + log_jac)

    return potential


def laplace(model, args, kwargs, max_iter: int = 500) -> Laplace:
    """Find the MAP with L-BFGS and take the Hessian of ``U`` there.

    Falls back (``ok=False``) to the feasible start and an identity precision when the
    search does not converge (e.g. a funnel whose density is unbounded) or the Hessian
    is not positive definite.
    """
    sites, x0, transforms = unconstrained_sites(model, args, kwargs)
    plan = minibatch_plan(trace_model(model, args, kwargs), torch.Generator().manual_seed(0))
    potential = potential_fn(model, args, kwargs, sites, transforms, plan)
    eye = torch.eye(len(x0), dtype=x0.dtype)

    def fallback(message):
        return Laplace(sites, x0.detach(), eye, False, message)

    x = x0.clone().requires_grad_(True)
    opt = torch.optim.LBFGS(
        [x],
        lr=1.0,
        max_iter=max_iter,
        history_size=50,
        line_search_fn="strong_wolfe",
        tolerance_grad=1e-9,
        tolerance_change=1e-14,
    )

    def closure():
        opt.zero_grad()
        u = potential(x)
        u.backward()
        return u

    try:
        opt.step(closure)
        u = potential(x)
        (grad,) = torch.autograd.grad(u, x)
    except (RuntimeError, ValueError) as err:
        return fallback(f"MAP search failed: {err}")
    if not torch.isfinite(u) or not torch.isfinite(x).all():
        return fallback("MAP search left the finite region")
    if grad.abs().max() > 1e-3 * (1.0 + u.abs()):
        return fallback(f"MAP search did not converge (|grad| = {grad.abs().max():.3g})")
    x = x.detach()
    if len(x) > MAX_DENSE_DIM:
        return Laplace(sites, x, eye, False, "too many latents for a dense Hessian")
    hess = torch.autograd.functional.hessian(potential, x)
    hess = (hess + hess.T) / 2
    if not torch.isfinite(hess).all() or torch.linalg.eigvalsh(hess).min() <= 0:
        return Laplace(sites, x, eye, False, "Hessian at the MAP is not positive definite")
    return Laplace(sites, x, hess, True, "ok")
