"""The eight-schools data and model the benchmarks share, as vilab ships them."""

from models.eight_schools import load_data, noncentered

__all__ = ["arrays", "noncentered"]


def arrays():
    """``(y, sigma)`` as float64 torch tensors of shape (8,)."""
    data = load_data()
    return data["y"], data["sigma"]
