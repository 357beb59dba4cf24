"""The VAE benchmark: vilab's training per epoch against plain PyTorch, side by side.

The same network (64 → 256 → 8 and back), loss (the negative ELBO with the KL in
closed form), optimiser (Adam, 1e-3), batch (128) and data (scikit-learn's digits, the
DESIGN split), trained for the same epochs:

- ``plain PyTorch``: :mod:`benchmarks.vae_torch`, an independent implementation
  (no Pyro);
- ``vilab meanfield`` and ``vilab trace``: :func:`inference.lab.vae_training.train_vae`
  (``fit_svi`` with ``schedule="constant"``; ``TraceMeanField_ELBO`` / ``Trace_ELBO``,
  compiled by Pyro's JIT), seconds of training only (the per-epoch test ELBO it
  measures is excluded), and ``vilab meanfield, uncompiled`` (``fit_svi`` as the
  trainer calls it, with ``jit=False``).

Runs alternate (plain, vilab, ...) ``repeats`` times in one process so that a busy
machine slows both alike. Seconds per epoch are a run's median epoch (the first epoch,
which holds vilab's one-off setup — compiling the loss, ~0.5 s — is left out);
the table reports each trainer's median over runs, the ratio to plain PyTorch, and the
test ELBO per image (the same seed: equal within noise).
Then the per-image IWAE bound with k = 1000 on the whole test set, timed.

``python -m benchmarks.vae [--quick] [--write]`` runs it alone (``--write`` puts it into
``results.json``); ``python -m benchmarks`` runs it among the rest.
"""

import argparse
import statistics
import time
from dataclasses import dataclass

import numpy as np
import torch

GOAL_RATIO = 1.15  # vilab's seconds per epoch over plain PyTorch's (issue 8)


@dataclass(frozen=True)
class Plan:
    """``epochs`` per training run, ``repeats`` alternations, ``iwae_samples`` k."""

    epochs: int
    repeats: int
    iwae_samples: int


FULL = Plan(epochs=100, repeats=3, iwae_samples=1000)
QUICK = Plan(epochs=5, repeats=1, iwae_samples=100)
TINY = Plan(epochs=1, repeats=1, iwae_samples=10)  # the smoke test's


def _vilab(data, epochs: int, elbo: str, seed: int):
    from inference.lab.vae_training import VAESettings, train_vae

    run = train_vae(data, VAESettings(epochs=epochs, elbo=elbo), seed=seed)
    return _steady(run.epoch_seconds), float(run.test_elbo[-1])


def _steady(epoch_seconds) -> float:
    """Seconds per epoch once running: the median epoch (the first holds the setup)."""
    return float(statistics.median(epoch_seconds[1:] if len(epoch_seconds) > 1 else epoch_seconds))


def _vilab_uncompiled(data, epochs: int, seed: int):
    """``fit_svi`` as ``train_vae`` calls it, with ``jit=False``; epochs timed by callback."""
    from inference import fit_svi
    from inference.lab.vae_training import build_networks, elbo_per_image, steps_for

    x = torch.as_tensor(data.x_train)
    decoder, encoder = build_networks(8, (256,), data.pixels, seed)
    ends = {steps_for(e, len(x), 128): e for e in range(1, epochs + 1)}
    marks = [time.perf_counter()]

    def callback(info):
        if info.step + 1 in ends:
            marks.append(time.perf_counter())

    fit_svi(
        decoder.model,
        encoder.guide,
        x,
        128,
        num_steps=steps_for(epochs, len(x), 128),
        lr=1e-3,
        elbo="meanfield",
        seed=seed,
        dtype=torch.float32,
        schedule="constant",
        jit=False,
        callback=callback,
    )
    elbo = elbo_per_image(decoder, encoder, torch.as_tensor(data.x_test))
    return _steady(np.diff(marks)), elbo


def run_study(plan: Plan, seed: int = 0) -> dict:
    """Seconds per epoch and test ELBO per image of each trainer; IWAE timing."""
    from benchmarks import vae_torch
    from models.images import load_digits

    data = load_digits()
    trainers = {
        "plain PyTorch": lambda: _plain(plan.epochs, seed, vae_torch),
        "vilab meanfield": lambda: _vilab(data, plan.epochs, "meanfield", seed),
        "vilab trace": lambda: _vilab(data, plan.epochs, "trace", seed),
        "vilab meanfield, uncompiled": lambda: _vilab_uncompiled(data, plan.epochs, seed),
    }
    seconds = {name: [] for name in trainers}
    elbos = {}
    for _ in range(plan.repeats):
        for name, train in trainers.items():
            per_epoch, elbo = train()
            seconds[name].append(per_epoch)
            elbos[name] = elbo
    plain = statistics.median(seconds["plain PyTorch"])
    rows = [
        {
            "trainer": name,
            "seconds_per_epoch": statistics.median(times),
            "ratio_to_plain": statistics.median(times) / plain,
            "test_elbo_per_image": elbos[name],
            "runs": times,
        }
        for name, times in seconds.items()
    ]
    iwae = _iwae_timing(data, plan, seed)
    best = min(r["ratio_to_plain"] for r in rows if r["trainer"].startswith("vilab meanfield"))
    return {
        "epochs": plan.epochs,
        "repeats": plan.repeats,
        "rows": rows,
        "iwae": iwae,
        "goals": {
            "ratio_goal": GOAL_RATIO,
            "best_meanfield_ratio": best,
            "met": best <= GOAL_RATIO,
        },
    }


def _plain(epochs: int, seed: int, vae_torch):
    run = vae_torch.train(epochs=epochs, seed=seed)
    return _steady(run.epoch_seconds), run.test_elbo_per_image


def _iwae_timing(data, plan: Plan, seed: int) -> dict:
    from inference.evidence.per_datum import per_datum_bounds
    from inference.lab.vae_training import VAESettings, train_vae

    run = train_vae(data, VAESettings(epochs=min(plan.epochs, 20)), seed=seed)
    x = torch.as_tensor(data.x_test)
    start = time.perf_counter()
    bounds = per_datum_bounds(
        run.decoder.model, run.encoder.guide, x, num_samples=plan.iwae_samples, seed=seed
    )
    elapsed = time.perf_counter() - start
    return {
        "k": plan.iwae_samples,
        "images": len(x),
        "seconds": elapsed,
        "mean_iwae": float(bounds.iwae.mean()),
        "mean_elbo": float(bounds.elbo.mean()),
    }


def render(study: dict) -> str:
    """The study as text: one line per trainer, then the IWAE timing."""
    lines = [
        f"VAE on the digits, {study['epochs']} epochs, median of {study['repeats']} runs",
        f"{'trainer':<30} {'s/epoch':>8} {'x plain':>8} {'test ELBO/image':>16}",
    ]
    for r in study["rows"]:
        lines.append(
            f"{r['trainer']:<30} {r['seconds_per_epoch']:>8.4f} {r['ratio_to_plain']:>8.2f} "
            f"{r['test_elbo_per_image']:>16.3f}"
        )
    i = study["iwae"]
    lines.append(
        f"IWAE k={i['k']} on {i['images']} test images: {i['seconds']:.2f} s "
        f"(mean IWAE {i['mean_iwae']:.3f}, ELBO {i['mean_elbo']:.3f} nats/image)"
    )
    g = study["goals"]
    verdict = "met" if g["met"] else "not met"
    lines.append(f"goal: vilab within {g['ratio_goal']}x plain PyTorch per epoch: {verdict}")
    return "\n".join(lines)


def write_results(study: dict, path, machine: dict) -> None:
    """Put the study into ``path`` (``results.json``) under ``vae`` and its goal under
    ``goals.vae_goals``, leaving the other benchmarks' entries."""
    import json
    from pathlib import Path

    from benchmarks.report import _plain

    path = Path(path)
    payload = json.loads(path.read_text(encoding="utf-8")) if path.exists() else {}
    payload["vae"] = _plain({"machine": machine, **study})
    payload.setdefault("goals", {})["vae_goals"] = _plain(study["goals"])
    path.write_text(json.dumps(payload, indent=2) + "\n", encoding="utf-8")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.vae", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="5 epochs, one run each")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    parser.add_argument("--write", action="store_true", help="put the study into results.json")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    study = run_study(QUICK if args.quick else FULL, args.seed)
    print(render(study))
    if args.write:
        from pathlib import Path

        from benchmarks.machine import machine_info

        name = "results-quick.json" if args.quick else "results.json"
        write_results(study, Path(__file__).resolve().parent / name, machine_info())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
