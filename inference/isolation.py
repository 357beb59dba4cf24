"""Run one fit in a sealed room: its own param store, RNG stream, dtype, device and threads.

Every engine enters :func:`isolated` so that two fits in one process give the same
numbers as each alone, a seed fixes the numbers, and the caller's global state
(Pyro's param store, torch's RNG, the default dtype and device, the thread count) is
left as it was. :func:`prepare` checks and moves a model's arguments up front, so bad
data fails with one line naming the argument instead of deep inside an engine.
"""

import numbers
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
import pyro
import torch

# Pyro's cost on small models is per-operation overhead; intra-op threads only add
# synchronisation (measured here: eight-schools SVI 41 steps/s on one thread, 22 on
# two, with the other core busy). Engines take ``num_threads`` to override.
NUM_THREADS = 1


@dataclass(frozen=True)
class Room:
    """The settings of a sealed run: seed, dtype (None: leave), device, threads (None: leave)."""

    seed: int
    dtype: torch.dtype | None = torch.float64
    device: torch.device = torch.device("cpu")
    num_threads: int | None = NUM_THREADS


def resolve_device(device) -> torch.device:
    """``None`` → CPU; ``"cpu"``, ``"cuda"``, ``"cuda:1"`` or a ``torch.device`` as given.

    A CUDA device on a machine without one is refused with one line.
    """
    if device is None:
        return torch.device("cpu")
    try:
        device = torch.device(device)
    except (RuntimeError, TypeError) as err:
        raise ValueError(f"device must be 'cpu', 'cuda' or a torch.device, got {device!r}") from err
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {str(device)!r} asked for, but torch sees no CUDA device here")
    if device.type not in ("cpu", "cuda"):
        raise ValueError(f"device {str(device)!r} is not supported: use 'cpu' or 'cuda'")
    return device


@contextmanager
def isolated(room: Room, params=None) -> Iterator[dict]:
    """Seed, set dtype, device and thread count, swap in a private param store; restore on exit.

    Yields the private param-store state (a dict that stays valid after exit, so a
    result can re-enter it later with ``params=state``).
    """
    old_dtype, old_threads = torch.get_default_dtype(), torch.get_num_threads()
    old_device = torch.get_default_device()
    # A default-device context routes every torch call through a Python
    # __torch_function__ hook (40% of an SVI step of the gmm case): set it only where
    # the device changes.
    moved = room.device != old_device
    cuda = [room.device] if room.device.type == "cuda" else []
    with torch.random.fork_rng(devices=cuda, device_type="cuda" if cuda else "cpu"):
        torch.manual_seed(room.seed)
        with pyro.get_param_store().scope(params) as state:
            try:
                if room.dtype is not None:
                    torch.set_default_dtype(room.dtype)
                if room.num_threads is not None:
                    torch.set_num_threads(room.num_threads)
                if moved:
                    torch.set_default_device(room.device)
                yield state
            finally:
                if moved:
                    torch.set_default_device(old_device)
                torch.set_default_dtype(old_dtype)
                torch.set_num_threads(old_threads)


def cast(value, dtype: torch.dtype | None, device: torch.device | None = None):
    """Floating tensors (also inside tuples, lists and dicts) to ``dtype``; all to ``device``."""
    if isinstance(value, torch.Tensor):
        if dtype is not None and value.is_floating_point():
            value = value.to(dtype)
        return value if device is None else value.to(device)
    if isinstance(value, tuple):
        return tuple(cast(v, dtype, device) for v in value)
    if isinstance(value, list):
        return [cast(v, dtype, device) for v in value]
    if isinstance(value, Mapping):
        return {k: cast(v, dtype, device) for k, v in value.items()}
    return value


def check_seed(seed) -> int:
    """A seed must be an integer in ``[0, 2**63)`` (torch's range); no silent wrap-around."""
    if isinstance(seed, bool) or not isinstance(seed, numbers.Integral):
        raise ValueError(f"seed must be an integer >= 0, got {seed!r}")
    if not 0 <= seed < 2**63:
        raise ValueError(f"seed must be between 0 and 2**63 - 1, got {seed}")
    return int(seed)


def prepare(args: tuple, kwargs: dict, room: Room) -> tuple[tuple, dict]:
    """The model's arguments checked and moved into ``room``: one ValueError naming a bad one.

    Tensors must be finite (NaN and inf are refused, naming the argument and the first
    bad index). Numpy arrays become tensors. A list or tuple of numbers is refused: a
    model cannot tell it from a structure, so the user must say ``torch.tensor(...)``.
    """
    named = [(f"argument {i + 1}", a) for i, a in enumerate(args)]
    named += [(f"model_kwargs[{k!r}]", v) for k, v in kwargs.items()]
    checked = [_checked(name, value) for name, value in named]
    values = [cast(v, room.dtype, room.device) for v in checked]
    return tuple(values[: len(args)]), dict(zip(kwargs, values[len(args) :], strict=True))


def _checked(name: str, value):
    if isinstance(value, np.ndarray):
        if value.dtype.kind not in "biuf":
            raise ValueError(f"{name} is a numpy array of {value.dtype}: pass numbers")
        value = torch.from_numpy(np.ascontiguousarray(value))
    if isinstance(value, list | tuple) and value and all(_is_number(v) for v in value):
        raise ValueError(
            f"{name} is a {type(value).__name__} of numbers: pass torch.tensor(...) instead"
        )
    if isinstance(value, torch.Tensor) and value.is_floating_point():
        count, first, nan = _nonfinite(value)
        if count:
            where = f"at index {first[0] if len(first) == 1 else first}" if first else ""
            kind = "NaN" if nan else "inf"
            raise ValueError(
                f"{name} holds {count} non-finite value(s) ({kind}), the first {where}"
            )
    return value


CHECK_VALUES = 1 << 20  # values checked at a time: the check's temporaries stay this small


def _nonfinite(value: torch.Tensor) -> tuple[int, tuple, bool]:
    """How many values are NaN or inf, the index of the first, and whether one is NaN.

    Large tensors are checked a block of rows at a time, so that the temporaries
    (``isfinite`` takes a float copy and a mask, ~10 bytes a value) stay small: a
    numpy memory map larger than memory is read once, never held.
    """
    if value.dim() == 0 or value.numel() <= CHECK_VALUES:
        bad = ~torch.isfinite(value)
        if not bad.any():
            return 0, (), False
        first = tuple(int(i) for i in bad.nonzero()[0])
        return int(bad.sum()), first, bool(torch.isnan(value).any())
    rows = max(1, CHECK_VALUES // max(1, value[0].numel()))
    count, first, nan = 0, None, False
    for start in range(0, value.shape[0], rows):
        block = value[start : start + rows]
        bad = ~torch.isfinite(block)
        if bad.any():
            count += int(bad.sum())
            nan = nan or bool(torch.isnan(block).any())
            if first is None:
                index = [int(i) for i in bad.nonzero()[0]]
                first = (start + index[0], *index[1:])
    return count, first or (), nan


def _is_number(value) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool)
