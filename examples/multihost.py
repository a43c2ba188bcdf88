"""One model fitted across two processes on one host, as on a cluster.

    python examples/multihost.py [N]        # launches N worker processes (2 by default) and compares

Each worker is a separate JAX process with 2 CPU devices. ``jax.distributed.initialize``
joins them into one runtime with 4 global devices, and ``jaxmm.fit(..., devices=4)``
shards the groups over all of them: each process places only its own devices' blocks of
the design, solves those groups' modes, and the sums over groups are all-reduced across
processes. A model with two crossed random-effect terms is fitted the same way (its rows and
pairs of cells split over the devices). Both workers print the same estimates; the launcher
checks both models against ordinary single-process fits.

On a GPU cluster the same code runs with one process per host (or per GPU):
``jax.distributed.initialize()`` reads the coordinator address, process count and id from
the cluster environment (SLURM, Open MPI, Kubernetes/TPU metadata), ``jax.devices()``
lists every GPU of every host, and ``devices=len(jax.devices())`` shards the groups over
all of them. Collectives then go over NCCL instead of gloo.
"""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys

import numpy as np

FORMULA = "y ~ x + (x | g)"
# several random-effect terms: rows and pairs of cells split over the processes' devices
CROSSED = "y ~ x + (1 | g) + (1 | h)"


def data():
    import pandas as pd

    rng = np.random.default_rng(11)
    n = 400
    g = np.repeat(np.arange(n), rng.integers(2, 15, n))
    x = rng.normal(size=g.size)
    b = rng.normal(size=(n, 2)) * [0.9, 0.5]
    h = rng.integers(0, 30, g.size)
    eta = -0.4 + 0.7 * x + b[g, 0] + b[g, 1] * x + rng.normal(scale=0.6, size=30)[h]
    return pd.DataFrame({"y": rng.binomial(1, 1 / (1 + np.exp(-eta))), "x": x, "g": g, "h": h})


def summary(res) -> dict:
    D = [np.asarray(d).tolist() for d in res.D.values()] if isinstance(res.D, dict) else res.D_array.tolist()
    return {"loglik": res.loglik, "fixef": res.fixef.tolist(), "D": D, "converged": res.converged,
            "n_devices": res.n_devices}


def worker(process_id: int, port: int, n_processes: int) -> None:
    import jax

    # CPU devices of different processes talk through gloo (GPUs would use NCCL).
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    jax.distributed.initialize(f"localhost:{port}", num_processes=n_processes, process_id=process_id)
    import jaxmm

    res = jaxmm.fit(FORMULA, data(), "binomial", devices=len(jax.devices()))
    crossed = jaxmm.fit(CROSSED, data(), "binomial", devices=len(jax.devices()))
    import resource

    print(json.dumps({"process": jax.process_index(), "local_devices": len(jax.local_devices()),
                      "global_devices": len(jax.devices()), **summary(res), "crossed": summary(crossed),
                      "peak_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}), flush=True)
    jax.distributed.shutdown()


def main(n_processes: int = 2) -> int:
    with socket.socket() as s:
        s.bind(("localhost", 0))
        port = s.getsockname()[1]
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=2", JAX_PLATFORMS="cpu")
    procs = [subprocess.Popen([sys.executable, __file__, "--worker", str(i), str(port), str(n_processes)], env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for i in range(n_processes)]
    results = []
    for p in procs:
        out, err = p.communicate(timeout=600)
        if p.returncode != 0:
            print(err[-3000:], file=sys.stderr)
            return 1
        results.append(json.loads(out.strip().splitlines()[-1]))

    import jaxmm

    single = summary(jaxmm.fit(FORMULA, data(), "binomial"))
    single["crossed"] = summary(jaxmm.fit(CROSSED, data(), "binomial"))
    for r in results:
        print(f"process {r['process']}: {r['local_devices']} local of {r['global_devices']} devices, "
              f"loglik {r['loglik']:.10f}, fixef {np.round(r['fixef'], 8).tolist()}, peak RSS {r['peak_mb']:.0f} MB")
    print(f"single process:            loglik {single['loglik']:.10f}, fixef {np.round(single['fixef'], 8).tolist()}")
    print(f"two crossed terms: loglik {results[0]['crossed']['loglik']:.10f} over {2 * n_processes} devices, "
          f"{single['crossed']['loglik']:.10f} in one process")
    def gap(a, b):
        return max(abs(a["loglik"] - b["loglik"]), float(np.max(np.abs(np.subtract(a["fixef"], b["fixef"])))),
                   float(np.max(np.abs(np.subtract(a["D"], b["D"])))))

    worst = max(max(gap(r, single), gap(r["crossed"], single["crossed"])) for r in results)
    ok = worst < 1e-8 and all(s["converged"] and s["n_devices"] == 2 * n_processes for r in results for s in (r, r["crossed"]))
    print(f"largest difference from the single-process fit: {worst:.2e} -> {'agree' if ok else 'DISAGREE'}")
    return 0 if ok else 1


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--worker":
        worker(int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]))
    else:
        sys.exit(main(int(sys.argv[1]) if len(sys.argv) > 1 else 2))
