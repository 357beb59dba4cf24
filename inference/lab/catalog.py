"""The names of the shipped cases and methods, and the cases' one-line descriptions.

``vilab list`` reads this alone, so it answers without importing torch or Pyro.
"""

CASES = {
    "normal": "Gaussian latent mean, 100 simulated points: exact posterior and log p(x)",
    "eight-schools": "Eight schools, non-centered hierarchical model (posteriordb reference)",
    "eight-schools-centered": "Eight schools, centered: the funnel makes NUTS diverge "
    "(posteriordb ref)",
}

METHODS = ("nuts", "nuts-pyro", "svi-normal", "svi-mvn", "svi-iaf", "svi-guide")
"""Every method a case can run: NUTS (nutpie; Pyro's own as ``nuts-pyro``), three
autoguides by name and the hand-written guide."""

OPTIONAL_METHODS = ("nuts-pyro",)
"""Methods run only when asked for: Pyro's NUTS cross-checks nutpie at 3-10x its cost."""
