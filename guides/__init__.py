"""Variational families for vilab: hand-written guides paired with each model.

``guides.auto.autoguide(name, model)`` builds Pyro autoguides by name in a whitened basis.
Each hand-written module mirrors the model module of the same name in :mod:`models`, e.g.
``guides.gaussian_latent.guide`` for ``models.gaussian_latent.model``.
"""

from guides import auto, eight_schools, gaussian_latent, mixture, vae

__all__ = ["auto", "eight_schools", "gaussian_latent", "mixture", "vae"]
