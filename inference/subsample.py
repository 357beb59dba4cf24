"""Handing a subsampled plate its indices, instead of letting Pyro draw ``randperm(N)``.

Engines that visit a plate's data themselves use these: the SVI engine's epoch sampler
(:mod:`inference.svi.batches`), the per-datum bounds (:mod:`inference.evidence.per_datum`)
and the Lightning trainer (:mod:`inference.svi.lightning`).
"""

import torch
from pyro.poutine.messenger import Messenger
from pyro.poutine.util import site_is_subsample


class GivenSubsample(Messenger):
    """Gives the plate ``plate`` the subsample ``indices`` (the value its site would draw)."""

    def __init__(self, plate: str, indices: torch.Tensor):
        super().__init__()
        self.plate, self.indices = plate, indices

    def _pyro_sample(self, msg) -> None:
        if msg["name"] == self.plate and site_is_subsample(msg):
            msg["value"] = self.indices


class FirstIndices(Messenger):
    """Gives every plate that would draw its subsample the indices ``0 .. n - 1`` instead:
    for a trace that only needs the model's structure (its sites, shapes and plates),
    without Pyro's ``randperm(N)`` (O(N) time and 8 bytes per index)."""

    def _pyro_sample(self, msg) -> None:
        fn = msg["fn"]
        if site_is_subsample(msg) and msg["value"] is None and fn.subsample_size is not None:
            msg["value"] = torch.arange(min(fn.subsample_size, fn.size), device=fn.device)
