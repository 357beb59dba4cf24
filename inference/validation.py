"""Argument checks shared by the engines: one clear ValueError per bad value."""

import math
import numbers


def check_positive_int(name: str, value) -> int:
    """``value`` must be an int >= 1."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
        raise ValueError(f"{name} must be an integer >= 1, got {value!r}")
    return int(value)


def check_positive_float(name: str, value) -> float:
    """``value`` must be a finite number > 0."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise ValueError(f"{name} must be a positive number, got {value!r}")
    if not math.isfinite(value) or value <= 0:
        raise ValueError(f"{name} must be a positive finite number, got {value!r}")
    return float(value)


def check_probability(name: str, value) -> float:
    """``value`` must lie strictly between 0 and 1."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not 0 < value < 1:
        raise ValueError(f"{name} must be strictly between 0 and 1, got {value!r}")
    return float(value)


def check_keys(name: str, given: dict, expected: tuple) -> None:
    """``given`` must have exactly the keys ``expected``; the error lists what is off."""
    unknown = sorted(set(given) - set(expected))
    missing = [key for key in expected if key not in given]
    if unknown or missing:
        raise ValueError(
            f"{name} has unknown keys {unknown} and lacks keys {missing}: it needs exactly "
            f"{expected}"
        )
