"""Minibatches by epoch: a subsampled plate fed its indices at O(batch) cost per step.

A model with ``pyro.plate(name, N, subsample_size=n)`` makes Pyro draw
``torch.randperm(N)`` at every call, so each minibatch step costs O(N) (21 ms at
N = 1e6). When the model has exactly one such plate, :func:`~inference.svi.fit_svi`
draws the indices itself and hands them to the plate as the value of its subsample
site (:class:`~inference.subsample.GivenSubsample`), in the model and in the guide
alike: Pyro's plate then takes them instead of drawing its own, and keeps its
likelihood scale ``N / n``. This is
``poutine.condition(fn, data={name: indices})`` (as :class:`~inference.posterior.replay.Cover`
does) except that the site is not marked observed: Pyro's ELBOs check that every plate
of the guide is an unobserved subsample site of the model, and warn on every step when
the guide has the plate too.

The indices come from an :class:`EpochSampler`:

- Epoch ``e`` is a fresh random permutation of ``range(N)``, drawn from a private
  ``torch.Generator`` seeded from ``(seed, e)``. Drawing it is O(N) once per epoch of
  ``N / n`` steps: O(n) per step, amortised. The sampler's whole state is
  ``(epoch, position)``, so a checkpoint holds two integers, not a permutation.
- The epochs' permutations, one after another, are cut into consecutive slices of ``n``.
  A slice that runs past the end of an epoch is completed from the next epoch's
  permutation (not skipped, not short): every index appears exactly once per epoch, every
  minibatch has ``n`` indices (so Pyro's scale ``N / n`` is exact and a compiled loss keeps
  its shapes), and no data is left out. Each slot of such a minibatch is still uniform
  on ``range(N)``, so its rescaled log-likelihood is still unbiased; an index may then
  appear twice in it, which costs nothing but a repeat.

The loss sees the indices as its last positional argument (:class:`Fed`), so a
JIT-compiled loss takes them as a traced input instead of baking the first ones in as
constants; :func:`~inference.svi.state.compile_loss` checks that it does.
"""

from dataclasses import dataclass, field

import numpy as np
import torch

from inference.sites import subsampled_plates
from inference.subsample import GivenSubsample

INT32_UP_TO = 2**31 - 1  # a permutation of up to this many indices is stored as int32


def feedable_plate(trace) -> tuple[str, int, int] | None:
    """``(name, N, n)`` of the one plate of ``trace`` that draws its own subsample.

    None when the model has no subsampled plate, more than one (Pyro then draws each
    as before), or one whose indices the model already passes (``subsample=``).
    """
    plates = subsampled_plates(trace)
    if len(plates) != 1:
        return None
    ((name, (size, batch)),) = plates.items()
    if trace.nodes[name]["fn"].subsample_size is None:  # the model gave the indices
        return None
    return name, size, batch


def epoch_seed(seed: int, epoch: int) -> int:
    """The seed of epoch ``epoch``'s permutation: 64 bits mixed from ``(seed, epoch)``."""
    return int(np.random.SeedSequence((seed, epoch)).generate_state(1, np.uint64)[0])


@dataclass
class EpochSampler:
    """Minibatch indices of one plate of size ``size``, ``batch`` at a time, by epoch.

    seed: the fit's seed (epoch ``e``'s permutation is seeded from ``(seed, e)``).
    device: where the indices go. epoch, position: the epoch the next index comes from,
    and its place in that epoch's permutation (the sampler's whole state).
    """

    size: int
    batch: int
    seed: int
    device: torch.device = torch.device("cpu")
    epoch: int = 0
    position: int = 0
    _order: tuple[int, torch.Tensor] | None = field(default=None, repr=False)

    @property
    def steps_per_epoch(self) -> float:
        """Minibatches per pass over the data, ``N / n``."""
        return self.size / self.batch

    def permutation(self, epoch: int) -> torch.Tensor:
        """Epoch ``epoch``'s order of ``range(size)`` (drawn, or the cached current one)."""
        if self._order is None or self._order[0] != epoch:
            generator = torch.Generator(device="cpu").manual_seed(epoch_seed(self.seed, epoch))
            dtype = torch.int32 if self.size <= INT32_UP_TO else torch.int64
            order = torch.randperm(self.size, generator=generator, dtype=dtype, device="cpu")
            self._order = (epoch, order)
        return self._order[1]

    def next(self) -> torch.Tensor:
        """The next ``batch`` indices (int64, on ``device``); advances the state."""
        parts, need = [], self.batch
        while need:
            chunk = self.permutation(self.epoch)[self.position : self.position + need]
            parts.append(chunk)
            need -= len(chunk)
            self.position += len(chunk)
            if self.position == self.size:
                self.epoch, self.position = self.epoch + 1, 0
        return torch.cat(parts).to(device=self.device, dtype=torch.int64)

    def state_dict(self) -> dict:
        """``{"epoch", "position"}``: all a checkpoint needs to resume the stream."""
        return {"epoch": self.epoch, "position": self.position}

    def load_state_dict(self, state: dict) -> None:
        """Resume from :meth:`state_dict`."""
        self.epoch, self.position = int(state["epoch"]), int(state["position"])
        if not 0 <= self.position < self.size:
            raise ValueError(f"minibatch position {self.position} is outside 0..{self.size - 1}")


@dataclass(frozen=True, eq=False)
class Fed:
    """``fn`` with its plate ``plate`` fed: called as ``fn(*tensors, indices, **kwargs)``.

    ``args`` are ``fn``'s positional arguments as the fit was given them; its tensors are
    replaced, in order, by the call's ``tensors`` (the traced inputs of a compiled loss),
    the rest (numbers, settings objects) are bound here. A compiled loss then takes only
    tensors, and the indices among them.
    """

    fn: object
    plate: str
    args: tuple

    def __call__(self, *tensors, **kwargs):
        *tensors, indices = tensors
        given = iter(tensors)
        args = tuple(next(given) if isinstance(a, torch.Tensor) else a for a in self.args)
        with GivenSubsample(self.plate, indices):
            return self.fn(*args, **kwargs)


@dataclass(frozen=True, eq=False)
class Feed:
    """What the loss of a fit on minibatches calls: the model and guide fed by ``plate``.

    plate, size, batch: the plate's name, N and n. model, guide: :class:`Fed` wrappers.
    tensors: the tensor positional arguments, to which the indices are appended.
    """

    plate: str
    size: int
    batch: int
    model: Fed
    guide: Fed
    tensors: tuple

    @classmethod
    def of(cls, plate: tuple[str, int, int], model, guide, args: tuple) -> "Feed":
        name, size, batch = plate
        tensors = tuple(a for a in args if isinstance(a, torch.Tensor))
        return cls(name, size, batch, Fed(model, name, args), Fed(guide, name, args), tensors)

    def args(self, indices: torch.Tensor) -> tuple:
        """The loss's positional arguments for the minibatch ``indices``."""
        return (*self.tensors, indices)

    def fixed(self, which: int = 0, device=None) -> torch.Tensor:
        """A fixed minibatch, ``which``-th of the consecutive ones (mod N): the indices of
        the moment snapshots and of the compiled loss's trial calls, no sampler involved."""
        start = which * self.batch
        return torch.arange(start, start + self.batch, device=device) % self.size
