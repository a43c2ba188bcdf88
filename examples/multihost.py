"""One model fitted across several processes on one host, as on a cluster.

    python examples/multihost.py [N]        # launches N worker processes (2 by default) and compares

Each worker is a separate JAX process with 2 CPU devices. ``jax.distributed.initialize``
joins them into one runtime with 2N global devices, and ``jaxmm.fit(..., devices=2N)``
shards the groups over all of them: each process places only its own devices' blocks of
the design, solves those groups' modes, and the sums over groups are all-reduced across
processes.

The launcher writes the table as a Parquet dataset partitioned by a hash of the group
(``jaxmm.partition_dataset``) and as one plain Parquet file. Given a dataset, each worker
reads only the rows of its own groups: whole parts of the partitioned one, and the rows
whose group hashes to it from the plain file. Models with two crossed random-effect terms
are fitted the same way: a Bernoulli GLMM from the plain file (each process's rows are its
devices' block of the rows) and a gaussian LMM from the partitioned dataset (the processes'
statistics summed). The launcher checks every fit against an ordinary single-process
fit of the whole table, and each worker reports its rows and its peak memory.

On a GPU cluster the same code runs with one process per host (or per GPU):
``jax.distributed.initialize()`` reads the coordinator address, process count and id from
the cluster environment (SLURM, Open MPI, Kubernetes/TPU metadata), ``jax.devices()``
lists every GPU of every host, and ``devices=len(jax.devices())`` shards the groups over
all of them. Collectives then go over NCCL instead of gloo.
"""
from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile

import numpy as np

# a text factor: every process builds its columns with the levels of all the rows; poly and
# scale: their state (the polynomials' coefficients, x's mean and sd) is learnt from all the rows
FORMULA = "y ~ poly(x, 2) + C(site) + (scale(x) | g)"
# several random-effect terms: each process reads its own rows; the pairs of cells split over
# the devices, and a GLMM's rows too
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
    site = np.array(["north", "south", "east"])[rng.integers(0, 3, g.size)]
    site[g == 3] = "west"  # a level of one group's rows, so of one process's share
    k = np.where(g == 3, 9, h % 3)  # a number in C() with a value in one share only: refused by name
    return pd.DataFrame({"y": rng.binomial(1, 1 / (1 + np.exp(-eta))), "x": x, "g": g, "h": h, "site": site, "k": k})


def summary(res) -> dict:
    D = [np.asarray(d).tolist() for d in res.D.values()] if isinstance(res.D, dict) else res.D_array.tolist()
    out = {"loglik": res.loglik, "fixef": res.fixef.tolist(), "D": D, "converged": res.converged,
           "n_devices": res.n_devices, "n_obs": res.n_obs}
    if not isinstance(res.D, dict):  # the modes of every group, by label
        out["ranef"] = res.ranef_array[np.argsort(np.asarray(res.group_labels))].tolist()
    else:  # every term's modes, by label
        out["ranef"] = np.concatenate([b.sort_index().to_numpy().ravel() for b in res.ranef.values()]).tolist()
    fitted = res.predict().to_numpy()  # the fitted rows' means, and how many: this process's rows
    out["own_rows"] = fitted.size
    out["fitted"] = [fitted.size, fitted.sum(), fitted @ fitted]
    out["by_row"] = [res.predict().index.tolist(), fitted.tolist()]  # by the table's row numbers
    return out


def worker(process_id: int, port: int, n_processes: int, folder: str) -> None:
    import jax

    # CPU devices of different processes talk through gloo (GPUs would use NCCL).
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    jax.distributed.initialize(f"localhost:{port}", num_processes=n_processes, process_id=process_id)
    import jaxmm

    devices = len(jax.devices())
    res = jaxmm.fit(FORMULA, os.path.join(folder, "parts"), "binomial", devices=devices)
    # the same groups, from one plain file (every process reads it, keeping its groups' rows)
    from_file = jaxmm.fit(FORMULA, os.path.join(folder, "table.parquet"), "binomial", devices=devices)
    # several terms: each process reads its own rows (of g's hash), a GLMM from the plain file,
    # an LMM from the partitioned dataset
    crossed = jaxmm.fit(CROSSED, os.path.join(folder, "table.parquet"), "binomial", devices=devices)
    lmm = jaxmm.fit(CROSSED, os.path.join(folder, "parts"), devices=devices)
    # what reaches every process's rows from one's result: Satterthwaite's df (the LMM's design
    # split over the job) and a parametric bootstrap (each process simulating its own rows, the
    # refits summing their statistics)
    extras = {"df": lmm.coef_table()["df"].tolist(), "boot": lmm.bootstrap(2, seed=1).to_numpy().tolist()}
    refused = []  # one group's response out of the Bernoulli support (found after the processes
    # summed their Gram matrices), one's x missing (found before), the response of a two-term
    # model, and a two-term model whose C(k) takes a value in one share only: every process
    # raises, none waits for the others
    for formula, bad in ((FORMULA, "bad_y.parquet"), (FORMULA, "bad_x.parquet"), (CROSSED, "bad_y.parquet"),
                         ("y ~ C(k) + (1 | g) + (1 | h)", "table.parquet")):
        try:
            jaxmm.fit(formula, os.path.join(folder, bad), "binomial", devices=devices)
            refused.append(None)
        except jaxmm.errors.DataError as exc:
            refused.append(str(exc))
    import resource

    print(json.dumps({"process": jax.process_index(), "local_devices": len(jax.local_devices()),
                      "global_devices": devices, **summary(res), "file": summary(from_file),
                      "crossed": summary(crossed), "lmm": summary(lmm), "refused": refused, **extras,
                      "peak_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}), flush=True)
    jax.distributed.shutdown()


def main(n_processes: int = 2) -> int:
    with socket.socket() as s:
        s.bind(("localhost", 0))
        port = s.getsockname()[1]
    import jaxmm

    folder = tempfile.mkdtemp(prefix="jaxmm_multihost_")
    jaxmm.partition_dataset(data(), "g", 8, os.path.join(folder, "parts"))
    data().to_parquet(os.path.join(folder, "table.parquet"), index=False)
    data().assign(y=lambda d: np.where(d.g == 7, 2, d.y)).to_parquet(os.path.join(folder, "bad_y.parquet"), index=False)
    data().assign(x=lambda d: np.where(d.g == 8, np.nan, d.x)).to_parquet(os.path.join(folder, "bad_x.parquet"),
                                                                          index=False)
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=2", JAX_PLATFORMS="cpu")
    # each worker's output to its own files: a pipe read one worker at a time could fill and
    # stop another in the middle of a collective
    logs = [(open(os.path.join(folder, f"worker{i}.out"), "w+"), open(os.path.join(folder, f"worker{i}.err"), "w+"))
            for i in range(n_processes)]
    procs = [subprocess.Popen([sys.executable, __file__, "--worker", str(i), str(port), str(n_processes), folder],
                              env=env, stdout=out, stderr=err, text=True)
             for i, (out, err) in enumerate(logs)]
    # the single-process fits meanwhile, on the cores the workers leave idle while they wait
    # for one another in their collectives
    single = summary(jaxmm.fit(FORMULA, data(), "binomial"))
    single["crossed"] = summary(jaxmm.fit(CROSSED, data(), "binomial"))
    lmm = jaxmm.fit(CROSSED, data())
    single["lmm"], single["df"] = summary(lmm), lmm.coef_table()["df"].to_numpy()
    results = []
    for p, (out, err) in zip(procs, logs):
        p.wait(timeout=600)
        out.seek(0), err.seek(0)
        if p.returncode != 0:
            print(err.read()[-3000:], file=sys.stderr)
            return 1
        results.append(json.loads(out.read().strip().splitlines()[-1]))
        out.close(), err.close()

    shutil.rmtree(folder)
    for r in results:
        print(f"process {r['process']}: {r['local_devices']} local of {r['global_devices']} devices, read "
              f"{r['own_rows']} and {r['file']['own_rows']} of {r['n_obs']} rows, loglik {r['loglik']:.10f}, "
              f"fixef {np.round(r['fixef'], 8).tolist()}, peak RSS {r['peak_mb']:.0f} MB")
    print(f"single process: {'':>38} loglik {single['loglik']:.10f}, fixef {np.round(single['fixef'], 8).tolist()}")
    for name in ("crossed", "lmm"):
        print(f"{name}: loglik {results[0][name]['loglik']:.10f} over {2 * n_processes} devices (rows read "
              f"{[r[name]['own_rows'] for r in results]}), {single[name]['loglik']:.10f} in one process")

    def gap(a, b):
        return max([abs(a["loglik"] - b["loglik"])] + [float(np.max(np.abs(np.subtract(a[k], b[k]))))
                                                       for k in ("fixef", "D", "ranef")])

    for r in results:
        print(f"process {r['process']} refused the bad response: {r['refused'][0]}\n{'':>10}and the missing x: "
              f"{r['refused'][1]}\n{'':>10}and the two-term model's bad response: {r['refused'][2]}\n{'':>10}"
              f"and C(k) of one share's value: {r['refused'][3]}")
    fits = ([(r[name], single[name]) for r in results for name in ("crossed", "lmm")]
            + [(f, single) for r in results for f in (r, r["file"])])
    worst = max(gap(a, b) for a, b in fits)
    # the processes' rows' fitted values add up to the table's (count, sum, sum of squares)
    for name in (None, "file", "crossed", "lmm"):
        shares = [(r if name is None else r[name])["fitted"] for r in results]
        whole = single["fitted"] if name in (None, "file") else single[name]["fitted"]
        worst = max(worst, float(np.max(np.abs(np.sum(shares, axis=0) - whole))))
    # read from the plain file, each process's rows keep their row numbers in it
    numbered = True
    for name in ("file", "crossed"):
        index = np.concatenate([r[name]["by_row"][0] for r in results])
        values = np.concatenate([r[name]["by_row"][1] for r in results])
        whole = np.asarray((single if name == "file" else single[name])["by_row"][1])
        numbered &= bool(np.array_equal(np.sort(index), np.arange(whole.size)))
        worst = max(worst, float(np.max(np.abs(values - whole[index]))))
    df_gap = max(float(np.max(np.abs(np.asarray(r["df"]) / single["df"] - 1))) for r in results)
    boots = [np.asarray(r["boot"]) for r in results]
    booted = all(np.array_equal(b, boots[0]) for b in boots) and bool(np.all(np.isfinite(boots[0])))
    print(f"Satterthwaite's df {np.round(results[0]['df'], 3).tolist()} (relative gap {df_gap:.1e}); bootstrap "
          f"replicates {'the same in every process' if booted else 'DIFFER'}")
    ok = (worst < 1e-8 and df_gap < 1e-6 and booted and numbered and all(a["converged"] and a["n_devices"] == 2 * n_processes and a["n_obs"] == b["n_obs"]
                               for a, b in fits)
          and all(sum((r if name is None else r[name])["own_rows"] for r in results) == single["n_obs"]
                  and max((r if name is None else r[name])["own_rows"] for r in results) < single["n_obs"] / 2
                  for name in (None, "file", "crossed", "lmm"))
          and all(r["refused"][k] and "response 'y'" in r["refused"][k] for r in results for k in (0, 2))
          and all(r["refused"][3] and "different model columns" in r["refused"][3] for r in results)
          and all(r["refused"][1] and "missing values in 'x'" in r["refused"][1] for r in results))
    print(f"largest difference from the single-process fit: {worst:.2e} -> {'agree' if ok else 'DISAGREE'}")
    return 0 if ok else 1


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--worker":
        worker(int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), sys.argv[5])
    else:
        sys.exit(main(int(sys.argv[1]) if len(sys.argv) > 1 else 2))
