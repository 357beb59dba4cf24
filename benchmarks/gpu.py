"""The same fits on the CPU and on a GPU: agreement and timing (``python -m benchmarks.gpu``).

Runs ``fit_svi`` (mvn, eight schools), ``run_nuts`` (Gaussian latent model) and the VAE's
training (10 epochs on the digits, networks and data on the device) with
``device="cpu"`` and, when torch sees one, ``device="cuda"``, and prints the posterior
means and sds side by side with the wall-clock time. Without a GPU it says so and runs
the CPU half, so the script itself is checked here; on a machine with one, run it as it is.
The two devices draw different random numbers, so they agree within Monte Carlo error,
not bit for bit.
"""

import sys
import time

import torch

from inference import fit_svi, run_nuts
from inference.lab.vae_training import VAESettings, train_vae
from models import eight_schools, gaussian_latent
from models.images import load_digits


def _fits(device: str) -> dict[str, tuple[float, float, float]]:
    data = eight_schools.load_data()
    out = {}
    start = time.perf_counter()
    fit = fit_svi(eight_schools.noncentered, "mvn", data["y"], data["sigma"], device=device)
    mu = fit.to_datatree(num_samples=4000).posterior["mu"]
    out["svi-mvn mu"] = (float(mu.mean()), float(mu.std()), time.perf_counter() - start)
    x = gaussian_latent.simulate(1000, seed=0)
    start = time.perf_counter()
    mc = run_nuts(
        gaussian_latent.model, x, num_chains=1, num_samples=500, warmup_steps=300, device=device
    )
    z = mc.to_datatree().posterior["z"]
    out["nuts z"] = (float(z.mean()), float(z.std()), time.perf_counter() - start)
    start = time.perf_counter()
    vae = train_vae(load_digits(), VAESettings(epochs=10, device=device))
    elbo = float(vae.test_elbo[-1])
    out["vae test ELBO/image"] = (elbo, float("nan"), time.perf_counter() - start)
    return out


def main() -> int:
    devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    if len(devices) == 1:
        print("no CUDA device here: running the CPU half only", file=sys.stderr)
    results = {d: _fits(d) for d in devices}
    for name in results["cpu"]:
        cells = "  ".join(
            f"{d}: {m:.3f} ± {s:.3f} in {t:.1f} s"
            for d, (m, s, t) in ((d, results[d][name]) for d in devices)
        )
        print(f"{name:<12} {cells}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
