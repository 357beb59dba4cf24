"""The Gaussian-mixture cases: EM, SVI with the MAP and mean-field guides, NUTS, and
scikit-learn's EM as an independent check.

- ``gmm``: 1,000 simulated 2-D points from three components with diagonal covariances
  (:func:`models.mixture.simulate`): the truth is known.
- ``iris``: scikit-learn's bundled iris measurements (4-D), three components; the
  species are the truth for the adjusted Rand index.
- ``gauss-mix-1d``: posteriordb's ``low_dim_gauss_mix``, two ordered components; its
  reference posterior is the answer.

On ``gmm`` and ``iris`` every method fits the same Bayesian model with diagonal
covariances: EM is MAP-EM with that model's priors, so ``em`` and ``svi-map`` climb the
same objective; ``sklearn-em`` is maximum likelihood (scikit-learn has no such prior),
so its log-likelihood per point sits a little above. Every tree is put in the truth's
component order (:func:`inference.relabel`, a Hungarian assignment per draw) so the
parameter rows line up; NUTS's draws are relabelled before any diagnostic and its
R-hat as sampled is kept (``max_r_hat_before_relabel``).
"""

import time
from dataclasses import dataclass
from functools import partial

import numpy as np
import torch
import xarray as xr
from scipy.optimize import linear_sum_assignment

from guides import mixture as mixture_guides
from inference.em import EMResult, log_likelihood, responsibilities, run_em
from inference.lab.cases.base import Budget, Case
from inference.lab.catalog import CASES, MIXTURE_METHODS
from inference.lab.mixture_plots import estimate
from inference.mcmc import NUTSResult, run_nuts
from inference.posterior.relabel import relabel
from inference.svi import SVIResult, fit_svi
from models import mixture

FULL = Budget(num_chains=4, warmup_steps=1000, num_samples=1000, num_steps=5000, num_draws=1000)
QUICK = Budget(num_chains=2, warmup_steps=200, num_samples=200, num_steps=1500, num_draws=300)
N_INIT = 5  # EM restarts (k-means++ starts), ours and scikit-learn's
EM_TOL = 1e-6  # nats per point


@dataclass(frozen=True)
class Setup:
    """What the mixture methods need beyond the case: the data ``x`` (N, D), ``k``
    components, the model's ``priors`` (None for the 1-D model, whose priors are its
    own), the true ``labels`` and component ``locs`` where known (the relabelling
    reference), whether it is the 1-D ordered model, and whether NUTS starts at MAP-EM's
    estimate (jittered by the sampler) rather than at its default (jittered 0,
    unconstrained). From the default start a chain can sit in a mode with an empty
    component for the whole run (2026-12-03: gmm, 4 chains x 1000, one chain so: R-hat
    1.53 after relabelling, min ESS 8; iris quick: R-hat 1.83, min ESS 3), so the D-dim
    cases start at MAP-EM; the ordered 1-D model samples well from the default."""

    x: torch.Tensor
    k: int
    priors: mixture.MixturePriors | None
    labels: np.ndarray | None
    locs: np.ndarray | None
    one_d: bool = False
    nuts_from_em: bool = True


def _case(name: str, setup: Setup, model, args, reference=None) -> Case:
    return Case(
        name=name,
        description=CASES[name],
        model=model,
        args=args,
        guide=None,
        reference=reference,
        log_evidence=None,
        methods=MIXTURE_METHODS,
        budgets={"full": FULL, "quick": QUICK},
        family="mixture",
        runner=partial(_run, setup),
        to_tree=partial(_to_tree, setup),
        metrics=partial(_metrics, setup),
    )


def gmm_case() -> Case:
    x, labels, truth = mixture.simulate(num_points=1000, seed=0)
    priors = mixture.MixturePriors.for_data(x)
    setup = Setup(x, 3, priors, labels, truth["locs"])
    return _case("gmm", setup, mixture.model, (x, 3, priors))


def iris_case() -> Case:
    x, species, _ = mixture.load_iris()
    priors = mixture.MixturePriors.for_data(x)
    means = np.stack([x.numpy()[species == s].mean(0) for s in range(3)])
    setup = Setup(x, 3, priors, species, means)
    return _case("iris", setup, mixture.model, (x, 3, priors))


def gauss_mix_1d_case() -> Case:
    y = mixture.gauss_mix_1d_data()
    ref = mixture.gauss_mix_1d_reference()
    locs = ref.loc[["mu[1]", "mu[2]"], "mean"].values[:, None]
    setup = Setup(y[:, None], 2, None, None, locs, one_d=True, nuts_from_em=False)
    return _case(
        "gauss-mix-1d", setup, mixture.gauss_mix_1d, (y,), ref[["mean", "sd", "q05", "q95"]]
    )


def _run(setup: Setup, case: Case, method: str, budget: Budget, seed: int, progress_bar: bool):
    if method == "em":
        prior = None if setup.one_d else setup.priors.as_em_prior()
        return run_em(
            setup.x, setup.k, covariance="diag", n_init=N_INIT, tol=EM_TOL, prior=prior,
            seed=seed, progress_bar=progress_bar,
        )  # fmt: skip
    if method == "sklearn-em":
        return sklearn_em(setup.x.numpy(), setup.k, seed)
    if method == "nuts":
        start = None
        if setup.nuts_from_em:
            em = run_em(setup.x, setup.k, covariance="diag", n_init=N_INIT, tol=EM_TOL,
                        prior=setup.priors.as_em_prior(), seed=seed)  # fmt: skip
            variances = np.diagonal(em.covariances, axis1=1, axis2=2)
            start = {"weights": em.weights, "locs": em.locs, "variances": variances}
        return run_nuts(
            case.model, *case.args, num_samples=budget.num_samples,
            warmup_steps=budget.warmup_steps, num_chains=budget.num_chains, seed=seed,
            progress_bar=progress_bar, init_from=start,
        )  # fmt: skip
    if setup.one_d:
        guide = "delta" if method == "svi-map" else "normal"
    else:
        guide = mixture_guides.map_guide if method == "svi-map" else mixture_guides.meanfield_guide
    return fit_svi(
        case.model, guide, *case.args, elbo="enum", num_steps=budget.num_steps, seed=seed,
        progress_bar=progress_bar,
    )  # fmt: skip


def sklearn_em(x: np.ndarray, k: int, seed: int) -> EMResult:
    """scikit-learn's ``GaussianMixture`` (diagonal, k-means++ starts, ``N_INIT`` restarts)
    as an :class:`EMResult`: its per-iteration log-likelihood is ``lower_bounds_``."""
    from sklearn.mixture import GaussianMixture

    start = time.perf_counter()
    gm = GaussianMixture(
        k, covariance_type="diag", n_init=N_INIT, init_params="k-means++", tol=EM_TOL,
        max_iter=500, random_state=seed,
    ).fit(x)  # fmt: skip
    elapsed = time.perf_counter() - start
    history = np.asarray(getattr(gm, "lower_bounds_", [gm.lower_bound_]), dtype=float)
    return EMResult(
        weights=gm.weights_,
        locs=gm.means_,
        covariances=np.stack([np.diag(v) for v in gm.covariances_]),
        responsibilities=gm.predict_proba(x),
        log_likelihood=history,
        elbo=history,
        elbo_after_m_step=history,
        lower_bound=float(gm.score(x)),
        n_iter=int(gm.n_iter_),
        converged=bool(gm.converged_),
        elapsed_s=elapsed,
        best_init=0,
        init_lower_bounds=np.array([gm.lower_bound_]),
        init_seeds=(),
        settings={"library": "scikit-learn", "covariance": "diag", "n_init": N_INIT},
    )


def _to_tree(setup: Setup, case: Case, method: str, result, budget: Budget, seed: int):
    if isinstance(result, EMResult):
        tree = result.to_datatree(method=method)
        data = setup.x.numpy()
        tree["observed_data"] = xr.DataTree(
            xr.Dataset({"x": (("data", "feature"), data)}, coords={"data": np.arange(len(data))})
        )
        if setup.one_d:
            return _as_1d(tree)
    elif isinstance(result, SVIResult):
        tree = result.to_datatree(num_samples=budget.num_draws, seed=seed)
    else:
        tree = result.to_datatree()
    if setup.one_d:
        return tree  # the ordered model does not switch labels
    before = None
    if isinstance(result, NUTSResult):
        posterior = tree.posterior.to_dataset()
        before = posterior[[v for v in posterior.data_vars if "component" in posterior[v].dims]]
    relabelled = relabel(tree, "component", reference={"locs": setup.locs})
    if before is not None:
        relabelled.posterior.attrs["max_r_hat_before_relabel"] = _max_rhat(before)
        relabelled["before_relabel"] = xr.DataTree(before)
    return relabelled


def _as_1d(tree: xr.DataTree) -> xr.DataTree:
    """An EM tree in the 1-D model's terms: ordered ``mu``, ``sigma``, ``theta``."""
    post = tree.posterior
    order = np.argsort(post["locs"].values[0, 0, :, 0])
    mu = post["locs"].values[..., order, 0]
    sigma = np.sqrt(post["variances"].values[..., order, 0])
    theta = post["weights"].values[..., order[0]]
    coords = {"chain": [0], "draw": [0], "component": [1, 2]}
    new = xr.Dataset(
        {
            "mu": (("chain", "draw", "component"), mu),
            "sigma": (("chain", "draw", "component"), sigma),
            "theta": (("chain", "draw"), theta),
        },
        coords=coords,
        attrs=post.attrs,
    )
    tree["posterior"] = xr.DataTree(new)
    return tree


def _max_rhat(posterior: xr.Dataset) -> float:
    from arviz_stats import rhat

    values = rhat(posterior)
    return float(max(float(values[v].max()) for v in values.data_vars))


def _metrics(setup: Setup, method: str, tree: xr.DataTree) -> dict:
    weights, locs, covs = estimate(tree)
    x = setup.x
    args = [torch.as_tensor(a, dtype=torch.float64) for a in (weights, locs, covs)]
    row = {"mean_loglik": float(log_likelihood(x, *args).mean())}
    if setup.labels is not None:
        from sklearn.metrics import adjusted_rand_score

        assigned = responsibilities(x, *args).argmax(1).numpy()
        row["ari"] = float(adjusted_rand_score(setup.labels, assigned))
    if setup.locs is not None and not setup.one_d:
        dist = np.linalg.norm(locs[:, None, :] - setup.locs[None, :, :], axis=-1)
        rows, cols = linear_sum_assignment(dist)
        row["locs_error"] = float(dist[rows, cols].max())
    rhat = tree.posterior.attrs.get("max_r_hat_before_relabel")
    if rhat is not None:
        row["max_r_hat_before_relabel"] = float(rhat)
    return row
