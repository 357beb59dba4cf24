"""What :func:`~inference.svi.fit_svi` returns: the fitted guide, its history and its settings."""

from dataclasses import dataclass, field

import numpy as np
import pyro
import pyro.distributions as dist
import torch
import xarray as xr
from pyro import poutine
from pyro.poutine.util import site_is_subsample

from inference.evidence import ElboEstimate, estimate_elbo, pareto_khat, smoothed_weights
from inference.evidence.psis import OK_UP_TO
from inference.isolation import Room, cast, isolated
from inference.posterior.datatree import model_coords, model_dims, to_datatree
from inference.posterior.draws import guide_draws, take_draws, weighted_guide_draws
from inference.validation import check_positive_int


@dataclass(frozen=True)
class SVIResult:
    """The product of :func:`~inference.svi.fit_svi`.

    model, guide: the model and the fitted guide (an autoguide object, or the user's
    callable). args, kwargs: the model's arguments, as the fit used them (cast, on its
    device). losses: negative ELBO estimate per step taken (nats, whole data set).
    converged: True when the convergence rule stopped the fit, False when the step
    budget did. elapsed_s: wall-clock seconds, including the MAP/Laplace start for
    autoguides (and, after a resume, the time of the earlier runs). guide_name: the
    autoguide name, or None for a callable guide. laplace: the MAP/Laplace start used by
    an autoguide (None for callable guides). settings: the options of the fit (lr,
    elbo, num_particles, seed, num_steps, device, dtype) as plain values. room: seed,
    dtype, device and threads every later computation on the fit runs in.
    """

    model: object
    guide: object
    args: tuple
    kwargs: dict
    losses: np.ndarray
    converged: bool
    elapsed_s: float
    guide_name: str | None
    laplace: object
    settings: dict
    room: Room
    _params: dict | None = field(repr=False)

    @classmethod
    def from_guide(
        cls,
        model,
        guide,
        *model_args,
        losses=(),
        elapsed_s: float = 0.0,
        settings: dict | None = None,
        seed: int = 0,
        dtype: torch.dtype | None = torch.float64,
    ) -> "SVIResult":
        """The result of a guide fitted elsewhere, for the tables, trees and bounds.

        E.g. a VAE's encoder (trained on other data) as the guide of one image's latent:
        ``guide`` holds its parameters itself (``pyro.module``), ``losses`` and
        ``elapsed_s`` are those of its training. Not converged by vilab's rule.
        """
        room = Room(seed, dtype)
        args = tuple(cast(a, dtype) for a in model_args)
        return cls(
            model=model,
            guide=guide,
            args=args,
            kwargs={},
            losses=np.asarray(losses, dtype=float),
            converged=False,
            elapsed_s=float(elapsed_s),
            guide_name=None,
            laplace=None,
            settings=dict(settings or {}),
            room=room,
            _params=None,  # the guide holds its parameters: each use gets a fresh store
        )

    @property
    def method(self) -> str:
        """``svi-<autoguide>``, or ``svi-guide`` for a hand-written guide."""
        return f"svi-{self.guide_name or 'guide'}"

    @property
    def point_mass(self) -> bool:
        """Whether the guide is a point mass (MAP): ``delta``, or a guide of Delta sites
        only. Its "ELBO" is then ``log p(x, theta)``, not a bound."""
        if self.guide_name is not None:
            return self.guide_name == "delta"
        with isolated(self.room, self._params):
            trace = poutine.trace(self.guide).get_trace(*self.args, **self.kwargs)
        sites = [
            s for s in trace.nodes.values() if s["type"] == "sample" and not site_is_subsample(s)
        ]
        return bool(sites) and all(isinstance(s["fn"], dist.Delta) for s in sites)

    @property
    def num_steps(self) -> int:
        """Optimisation steps taken."""
        return len(self.losses)

    def _room(self, seed: int) -> Room:
        return Room(seed, self.room.dtype, self.room.device, self.room.num_threads)

    def params(self) -> dict[str, torch.Tensor]:
        """The fitted parameters (constrained), by name."""
        with isolated(self.room, self._params):
            store = pyro.get_param_store()
            return {name: store[name].detach().clone() for name in store.keys()}

    def sample(self, num_samples: int = 1000, seed: int = 0, draw_discrete: bool = False):
        """Draws from the guide, replayed through the model (``Draws``); discrete sites
        the ELBO sums out are drawn from ``p(z | x, theta_s)`` if ``draw_discrete``."""
        check_positive_int("num_samples", num_samples)
        with isolated(self._room(seed), self._params):
            return guide_draws(
                self.model, self.guide, num_samples, self.args, self.kwargs, draw_discrete
            )

    def to_datatree(
        self,
        num_samples: int = 1000,
        seed: int = 0,
        coords=None,
        dims=None,
        draw_discrete: bool = False,
    ) -> xr.DataTree:
        """Guide draws as an ArviZ DataTree: posterior dims (chain=1, draw=num_samples, ...).

        ``coords`` and ``dims`` as in ArviZ's converters; ``coords`` adds to (and
        overrides) a ``coords`` attribute of the model. Besides the ArviZ groups, group
        ``losses`` holds the loss of every step (dim ``step``) and the posterior's
        attributes hold the fit's settings, so a saved tree carries its history.
        Discrete sites the ELBO sums out (``elbo="enum"``) give group ``assignments``
        (per data point, the posterior probability of each value, averaged over the
        draws) and, with ``draw_discrete=True``, posterior draws of their own, each
        drawn from ``p(z | x, theta_s)`` (Pyro's ``infer_discrete``).
        """
        draws = self.sample(num_samples, seed, draw_discrete)
        attrs = {
            "method": self.method,
            "inference": "svi",
            "elapsed_s": self.elapsed_s,
            "converged": int(self.converged),
            "num_steps_taken": self.num_steps,
            **self.settings,
        }
        coords = model_coords(self.model) | dict(coords or {})
        dims = model_dims(self.model) | dict(dims or {})
        tree = to_datatree(draws, 1, coords=coords, attrs=attrs, dims=dims)
        tree["losses"] = xr.DataTree(
            xr.Dataset({"loss": ("step", np.asarray(self.losses))}, attrs=attrs)
        )
        return tree

    def reweighted_datatree(
        self, num_samples: int = 1000, seed: int = 0, num_proposals: int | None = None
    ) -> xr.DataTree:
        """Importance-resampled draws: the guide corrected towards the posterior.

        ``num_proposals`` guide draws (default ``10 * num_samples``) get PSIS-smoothed
        importance weights (``arviz_stats``); ``num_samples`` of them are resampled in
        proportion. Worth it where k̂ < 0.7 (the DataTree's attribute ``khat`` says);
        above that the weights are too heavy-tailed to fix the guide, and this raises.

        References
        ----------
        Yao, Vehtari, Simpson & Gelman (2018). Yes, but did it work?: Evaluating
        variational inference. ICML.
        """
        check_positive_int("num_samples", num_samples)
        proposals = check_positive_int("num_proposals", num_proposals or 10 * num_samples)
        with isolated(self._room(seed), self._params):
            draws, log_weights = weighted_guide_draws(
                self.model, self.guide, proposals, self.args, self.kwargs
            )
        khat = pareto_khat(log_weights)
        if not khat <= OK_UP_TO:
            raise ValueError(
                f"PSIS k-hat is {khat:.2f} (> {OK_UP_TO}): importance weights this heavy-tailed "
                "cannot correct the guide; use a richer guide or NUTS"
            )
        rng = np.random.default_rng(seed)
        index = rng.choice(proposals, size=num_samples, p=smoothed_weights(log_weights))
        attrs = {"method": f"{self.method}-psis", "inference": "svi", "khat": khat}
        coords, dims = model_coords(self.model), model_dims(self.model)
        return to_datatree(take_draws(draws, index), 1, coords=coords, attrs=attrs, dims=dims)

    def gaussian(self) -> tuple[dict[str, slice], torch.Tensor, torch.Tensor]:
        """The guide as a Gaussian on the packed unconstrained latents.

        Returns ``(slices, mean, covariance)``: where each latent site sits in the packed
        vector, and the Gaussian's moments. Only the Gaussian autoguides (``normal``,
        ``mvn``, ``lowrank``) have one; others raise ValueError.
        """
        if self.guide_name not in ("normal", "mvn", "lowrank"):
            raise ValueError(
                f"a {self.method} fit has no Gaussian on the latents: use an SVI fit with "
                "guide 'normal', 'mvn' or 'lowrank'"
            )
        with isolated(self.room, self._params):
            mean = self.guide.get_posterior().mean.detach()
            return self.guide.site_slices(), mean, self.guide.covariance()

    def elbo(self, num_particles: int = 2000, seed: int = 0) -> ElboEstimate:
        """The ELBO (nats, whole data set) with its Monte Carlo standard error."""
        check_positive_int("num_particles", num_particles)
        with isolated(self._room(seed), self._params):
            return estimate_elbo(self.model, self.guide, self.args, self.kwargs, num_particles)
