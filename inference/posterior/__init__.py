"""Posterior data: draws read from a model's trace and their ArviZ DataTree."""
