"""Generative stories for vilab: Pyro model functions, their data and exact facts.

Each module is one model family, e.g. ``from models import gaussian_latent`` and then
``gaussian_latent.model``, ``gaussian_latent.exact_log_evidence``.
"""

from models import eight_schools, gaussian_latent, images, mixture, vae

__all__ = ["eight_schools", "gaussian_latent", "images", "mixture", "vae"]
