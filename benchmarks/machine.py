"""The machine and software a benchmark ran on."""

import datetime
import hashlib
import os
import platform
import subprocess
from importlib import metadata
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
ENGINE_PACKAGES = ("inference", "guides", "models")

PACKAGES = ("torch", "pyro-ppl", "numpyro", "jax", "jaxlib", "arviz", "numpy")


def cpu_model() -> str:
    """The CPU model name from /proc/cpuinfo ('unknown' elsewhere)."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def nproc() -> int:
    """Cores this process may run on (what ``nproc`` prints)."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def versions() -> dict[str, str | None]:
    """Installed versions of the packages that matter here (None when missing)."""
    out = {}
    for name in PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None
    return out


def code_version() -> dict:
    """The git commit of the checkout, whether the engines differ from it, and their hash."""

    def git(*args):
        done = subprocess.run(
            ["git", *args], cwd=ROOT, capture_output=True, text=True, timeout=30, check=True
        )
        return done.stdout.strip()

    try:
        commit = git("rev-parse", "HEAD")
        modified = bool(git("status", "--porcelain", "--", *ENGINE_PACKAGES))
    except (OSError, subprocess.SubprocessError):
        commit = modified = None
    return {"commit": commit, "engines_modified": modified, "engines_sha256": engines_digest()}


def engines_digest() -> str:
    """SHA-256 over the source of ``inference``, ``guides`` and ``models`` as run."""
    digest = hashlib.sha256()
    for package in ENGINE_PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            digest.update(str(path.relative_to(ROOT)).encode())
            digest.update(path.read_bytes())
    return digest.hexdigest()


def machine_info() -> dict:
    """Architecture (``uname -m``), cores, CPU model, load, date (UTC), versions, commit."""
    load = os.getloadavg() if hasattr(os, "getloadavg") else (float("nan"),) * 3
    return {
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "machine": platform.machine(),
        "nproc": nproc(),
        "cpu_model": cpu_model(),
        "load_average_1_5_15": [round(x, 2) for x in load],
        "python": platform.python_version(),
        "versions": versions(),
        "code": code_version(),
    }
