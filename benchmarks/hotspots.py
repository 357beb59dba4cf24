"""Where ``run_nuts`` spends its time: cProfile of one short chain."""

import cProfile
import io
import pstats

from benchmarks.data import arrays, noncentered
from inference import run_nuts


def profile_run_nuts(
    warmup_steps: int = 100, num_samples: int = 100, *, jit: bool = False, top: int = 25
) -> str:
    """Profile one chain of vilab ``run_nuts`` on eight schools; the stats as text.

    Two listings: by own time (``tottime``, where the CPU is) and by cumulative time
    (``cumtime``, which calls are dear).
    """
    y, sigma = arrays()
    profiler = cProfile.Profile()
    profiler.enable()
    run_nuts(
        noncentered,
        y,
        sigma,
        num_samples=num_samples,
        warmup_steps=warmup_steps,
        num_chains=1,
        jit=jit,
    )
    profiler.disable()
    out = io.StringIO()
    stats = pstats.Stats(profiler, stream=out).strip_dirs()
    stats.sort_stats("tottime").print_stats(top)
    stats.sort_stats("cumulative").print_stats(top)
    return out.getvalue()
