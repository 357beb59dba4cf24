"""The names of the shipped cases and methods, and the cases' one-line descriptions.

``vilab list`` reads this alone, so it answers without importing torch or Pyro.
"""

CASES = {
    "normal": "Gaussian latent mean, 100 simulated points: exact posterior and log p(x)",
    "eight-schools": "Eight schools, non-centered hierarchical model (posteriordb reference)",
    "eight-schools-centered": "Eight schools, centered: the funnel makes NUTS diverge "
    "(posteriordb ref)",
}

METHODS = ("nuts", "svi-normal", "svi-mvn", "svi-iaf", "svi-guide")
"""Every method a case can run: NUTS, three autoguides by name and the hand-written guide."""
