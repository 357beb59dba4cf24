"""Run one fit in a sealed room: its own param store, RNG stream and dtype.

Every engine enters :func:`isolated` so that two fits in one process give the same
numbers as each alone, a seed fixes the numbers, and the caller's global state
(Pyro's param store, torch's RNG, the default dtype) is left as it was.
"""

from collections.abc import Iterator, Mapping
from contextlib import contextmanager

import pyro
import torch

# Pyro's cost on small models is per-operation overhead; intra-op threads only add
# synchronisation (measured here: eight-schools SVI 41 steps/s on one thread, 22 on
# two, with the other core busy). Engines take ``num_threads`` to override.
NUM_THREADS = 1


@contextmanager
def isolated(
    seed: int,
    dtype: torch.dtype | None = torch.float64,
    params=None,
    num_threads: int | None = NUM_THREADS,
) -> Iterator[dict]:
    """Seed, set dtype and thread count, swap in a private param store; restore on exit.

    Yields the private param-store state (a dict that stays valid after exit, so a
    result can re-enter it later with ``params=state``).
    """
    old_dtype, old_threads = torch.get_default_dtype(), torch.get_num_threads()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        with pyro.get_param_store().scope(params) as state:
            try:
                if dtype is not None:
                    torch.set_default_dtype(dtype)
                if num_threads is not None:
                    torch.set_num_threads(num_threads)
                yield state
            finally:
                torch.set_default_dtype(old_dtype)
                torch.set_num_threads(old_threads)


def cast(value, dtype: torch.dtype | None):
    """Cast floating tensors (also inside tuples, lists and dicts) to ``dtype``."""
    if dtype is None:
        return value
    if isinstance(value, torch.Tensor):
        return value.to(dtype) if value.is_floating_point() else value
    if isinstance(value, tuple):
        return tuple(cast(v, dtype) for v in value)
    if isinstance(value, list):
        return [cast(v, dtype) for v in value]
    if isinstance(value, Mapping):
        return {k: cast(v, dtype) for k, v in value.items()}
    return value
