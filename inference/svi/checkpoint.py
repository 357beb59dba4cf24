"""Checkpoints of a fit: its whole state written atomically, read without running code.

A checkpoint is a ``torch.save`` file of plain data (tensors, numbers, strings): the
:class:`~inference.svi.state.SVIState` as a state dict, the RNG state, the seconds
spent so far and a fingerprint of the fit (model, guide, data shapes, options). It is
written to a temporary file in the same directory and renamed over the old one, so a
crash mid-write leaves the previous checkpoint intact. It is read with
``torch.load(..., weights_only=True)``, which refuses anything that would run code.
"""

import os
from pathlib import Path

import torch

FORMAT = "vilab-svi-checkpoint"
VERSION = 1


def fingerprint(model, guide, args, kwargs, settings: dict) -> dict:
    """What must match for a checkpoint to belong to this fit (plain strings)."""

    def describe(value):
        if isinstance(value, torch.Tensor):
            return f"tensor{tuple(value.shape)}:{value.dtype}"
        if value is None or isinstance(value, bool | int | float | str):
            return repr(value)  # a minibatch size, a number of components: its value matters
        return type(value).__name__

    return {
        "model": _name(model),
        "guide": guide if isinstance(guide, str) else _name(guide),
        **_architecture("model", model),
        **_architecture("guide", guide),
        "args": ", ".join(describe(a) for a in args),
        "kwargs": ", ".join(f"{k}={describe(v)}" for k, v in sorted(kwargs.items())),
        **{k: str(v) for k, v in settings.items() if k != "num_steps"},
    }


def _architecture(role: str, fn) -> dict:
    """``{"<role> network": description}`` when ``fn`` is a method of a ``torch.nn.Module``
    (a VAE's ``decoder.model``): its sizes, so a checkpoint of another architecture is
    refused saying what differs. The module's ``extra_repr`` where it has one, else the
    shapes of its parameters."""
    module = getattr(fn, "__self__", None)
    if not isinstance(module, torch.nn.Module):
        return {}
    what = module.extra_repr() or ", ".join(
        f"{name} {tuple(p.shape)}" for name, p in module.named_parameters()
    )
    return {f"{role} network": f"{type(module).__name__}({what})"}


def _name(fn) -> str:
    name = getattr(fn, "__qualname__", None) or type(fn).__qualname__
    return f"{getattr(fn, '__module__', '?')}.{name}"


def save(path, state: dict, rng: dict, elapsed_s: float, print_: dict) -> None:
    """Write the checkpoint atomically (temporary file + rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {
        "format": FORMAT,
        "version": VERSION,
        "fingerprint": print_,
        "state": state,
        "rng": rng,
        "elapsed_s": float(elapsed_s),
    }
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        torch.save(payload, tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def load(path, print_: dict) -> dict | None:
    """The checkpoint at ``path`` (None when there is none), checked against ``print_``.

    Raises ValueError, in one line, for a file that is not a vilab checkpoint (also one
    crafted to run code when unpickled: it is refused, not run) or one of another fit.
    """
    path = Path(path)
    if not path.exists():
        return None
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises UnpicklingError, RuntimeError, EOFError, ...
        first = (str(err).strip().splitlines() or [""])[0][:160]
        raise ValueError(
            f"checkpoint {str(path)!r} is not a vilab checkpoint, or holds code "
            f"(refused, not run): {type(err).__name__}: {first}"
        ) from None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise ValueError(f"checkpoint {str(path)!r} is not a vilab SVI checkpoint")
    if payload.get("version") != VERSION:
        raise ValueError(
            f"checkpoint {str(path)!r} has format version {payload.get('version')}, "
            f"this vilab reads {VERSION}"
        )
    theirs = payload["fingerprint"]
    for key in sorted(set(theirs) | set(print_)):
        if theirs.get(key) != print_.get(key):
            raise ValueError(
                f"checkpoint {str(path)!r} is of another fit: {key} is "
                f"{theirs.get(key)!r} there, {print_.get(key)!r} here"
            )
    return payload


def rng_state() -> dict:
    """Torch's RNG state (CPU, and the default CUDA device when fits run there)."""
    state = {"cpu": torch.get_rng_state()}
    device = torch.get_default_device()
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def set_rng_state(state: dict) -> None:
    """Restore :func:`rng_state`."""
    torch.set_rng_state(state["cpu"])
    if "cuda" in state:
        torch.cuda.set_rng_state(state["cuda"], torch.get_default_device())
