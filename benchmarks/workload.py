"""Four regressions of the kind users bring from posteriordb, NUTS on each: the seconds in all.

Each is shaped after a posteriordb posterior (its predictors' scales, sizes and
likelihood), with data drawn once from a fixed seed (nothing is downloaded) and wide
proper priors where posteriordb's Stan programs leave them flat:

- ``kidiq``: a child's test score on the mother's high-school diploma and IQ (N = 434;
  IQ on a scale of 100, so intercept and slope are strongly correlated).
- ``earnings``: log earnings on height in inches (N = 1059; height around 66).
- ``mesquite``: log biomass of mesquite bushes on five log measurements and a group
  indicator (N = 46, seven coefficients).
- ``wells``: switching wells (Bernoulli, logit link) on distance in metres and arsenic
  level (N = 3020).

Each runs ``run_nuts(model, *data)`` with vilab's defaults (4 chains of 1000 warmup +
1000 draws, nutpie, the potential compiled) in one process, as a user's script would;
the first pays the process's one-off costs. The result is every run's seconds, its
minimum bulk ESS and divergences, and the sum.
"""

import time

import numpy as np
import pyro
import pyro.distributions as dist
import torch

SEED = 20261203
WIDE = 100.0  # prior sd of every coefficient


def _coefficients(k: int, x: torch.Tensor):
    return pyro.sample("beta", dist.Normal(x.new_zeros(k), WIDE).to_event(1))


def gaussian_regression(x, y):
    """``y ~ N(alpha + x @ beta, sigma)``, wide priors, ``sigma ~ HalfNormal(WIDE)``."""
    alpha = pyro.sample("alpha", dist.Normal(x.new_tensor(0.0), WIDE))
    beta = _coefficients(x.shape[-1], x)
    sigma = pyro.sample("sigma", dist.HalfNormal(x.new_tensor(WIDE)))
    with pyro.plate("data", len(y)):
        pyro.sample("y", dist.Normal(alpha + (x * beta).sum(-1), sigma), obs=y)


def logistic_regression(x, y):
    """``y ~ Bernoulli(logit = alpha + x @ beta)``, wide priors."""
    alpha = pyro.sample("alpha", dist.Normal(x.new_tensor(0.0), WIDE))
    beta = _coefficients(x.shape[-1], x)
    with pyro.plate("data", len(y)):
        pyro.sample("y", dist.Bernoulli(logits=alpha + (x * beta).sum(-1)), obs=y)


def datasets() -> dict[str, tuple]:
    """``{name: (model, x, y)}``, the same on every call (float64)."""
    rng = np.random.default_rng(SEED)
    out = {}
    n = 434
    hs = rng.binomial(1, 0.8, n).astype(float)
    iq = rng.normal(100, 15, n)
    out["kidiq"] = (
        gaussian_regression,
        np.c_[hs, iq],
        26 + 6 * hs + 0.56 * iq + rng.normal(0, 18, n),
    )
    n = 1059
    height = rng.normal(66.6, 3.8, n)
    out["earnings"] = (
        gaussian_regression,
        height[:, None],
        5.8 + 0.06 * height + rng.normal(0, 0.9, n),
    )
    n = 46
    logs = rng.normal([0.3, 0.1, 0.5, -0.2, 0.4], [0.5, 0.4, 0.6, 0.7, 0.5], (n, 5))
    group = rng.binomial(1, 0.5, n).astype(float)
    x = np.c_[logs, group]
    out["mesquite"] = (
        gaussian_regression,
        x,
        4.8 + x @ np.array([0.4, 1.1, 0.4, 0.2, 0.3, 0.6]) + rng.normal(0, 0.3, n),
    )
    n = 3020
    distance = rng.gamma(2.0, 24.0, n)
    arsenic = rng.gamma(2.2, 0.75, n)
    logit = 0.0 - 0.009 * distance + 0.46 * arsenic
    out["wells"] = (
        logistic_regression,
        np.c_[distance, arsenic],
        rng.binomial(1, 1 / (1 + np.exp(-logit))).astype(float),
    )
    return {
        name: (
            model,
            torch.as_tensor(x, dtype=torch.float64),
            torch.as_tensor(y, dtype=torch.float64),
        )
        for name, (model, x, y) in out.items()
    }


def run_workload(seed: int = 0, **options) -> dict:
    """NUTS with vilab's defaults (``options`` override) on each regression, one after another."""
    import arviz as az

    from inference import run_nuts

    rows, total = [], 0.0
    for name, (model, x, y) in datasets().items():
        begin = time.perf_counter()
        mc = run_nuts(model, x, y, seed=seed, **options)
        seconds = time.perf_counter() - begin
        total += seconds
        ess = az.ess(mc.to_datatree().posterior, method="bulk")
        rows.append(
            {
                "regression": name,
                "wall_s": seconds,
                "min_ess_bulk": float(min(float(ess[v].min()) for v in ess.data_vars)),
                "divergences": mc.num_divergences,
                "potential": mc.potential,
            }
        )
    return {"runs": rows, "total_s": total}
