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
    "vae": "Variational autoencoder on scikit-learn's digits: amortized q vs per-image q* vs "
    "NUTS on the decoder",
}

METHODS = ("nuts", "nuts-pyro", "svi-normal", "svi-mvn", "svi-iaf", "svi-guide")
"""Every method a case can run: NUTS (nutpie; Pyro's own as ``nuts-pyro``), three
autoguides by name and the hand-written guide."""

MIXTURE_METHODS = ("em", "svi-map", "svi-meanfield", "nuts", "sklearn-em")
"""The mixture cases' methods: EM (MAP-EM with the model's priors), SVI with the MAP and
mean-field guides (assignments summed out), NUTS, and scikit-learn's EM as a check."""

VAE_METHODS = ("svi", "svi-refined", "nuts-latent")
"""The VAE case's methods, on the latent z of one test image per digit with the trained
decoder fixed: the encoder's amortized q, q* refined per image by SVI, and NUTS."""

OPTIONAL_METHODS = ("nuts-pyro",)
"""Methods run only when asked for: Pyro's NUTS cross-checks nutpie at 3-10x its cost."""
