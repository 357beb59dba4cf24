"""The names of the shipped cases and methods, and the cases' one-line descriptions.

``vilab list`` reads this alone, so it answers without importing torch or Pyro.
"""

CASES = {
    "normal": "Gaussian latent mean, 100 simulated points: exact posterior and log p(x)",
    "eight-schools": "Eight schools, non-centered hierarchical model (posteriordb reference)",
    "eight-schools-centered": "Eight schools, centered: the funnel makes NUTS diverge "
    "(posteriordb ref)",
    "gmm": "Gaussian mixture, 1000 simulated 2-D points, K=3: EM vs SVI vs NUTS, known truth",
    "iris": "Gaussian mixture on scikit-learn's iris (4-D, K=3), species as the truth",
    "gauss-mix-1d": "Two ordered 1-D components, posteriordb's low_dim_gauss_mix (reference)",
}

METHODS = ("nuts", "nuts-pyro", "svi-normal", "svi-mvn", "svi-iaf", "svi-guide")
"""Every method a case can run: NUTS (nutpie; Pyro's own as ``nuts-pyro``), three
autoguides by name and the hand-written guide."""

MIXTURE_METHODS = ("em", "svi-map", "svi-meanfield", "nuts", "sklearn-em")
"""The mixture cases' methods: EM (MAP-EM with the model's priors), SVI with the MAP and
mean-field guides (assignments summed out), NUTS, and scikit-learn's EM as a check."""

OPTIONAL_METHODS = ("nuts-pyro",)
"""Methods run only when asked for: Pyro's NUTS cross-checks nutpie at 3-10x its cost."""
