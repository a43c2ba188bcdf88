"""Many fits in one call: 1000 replicates of a random-intercept study, jaxmm ``by=`` vs a
loop of ``lme4::lmer`` over the same replicates, in the same run.

    python benchmarks/replicates.py [--replicates 1000] [--repeats 3] [--cold-runs 3] [--r-runs 3]
                                    [--cache-runs 3] [--out benchmarks/results/replicates.md]

The study (issue 6): 1000 subjects x 2 measurements per replicate, y = 1 + b + e with
Var(b) = 1 and Var(e) = 10, REML. jaxmm fits all replicates with one
``jaxmm.fit(..., by="rep")`` call: *cold* is the first call in a fresh process (tracing and
XLA compilation included; library imports excluded, as the R side loads lme4 before its
timer), the median over ``--cold-runs`` processes; *warm* the median of the repeated calls
in this process. lme4 is timed inside R (``system.time`` around the loop; reading the CSV
excluded), the median of ``--r-runs`` runs. On a noisy 2-core machine one cold sample
varied by 30 % between runs of this script. A third jaxmm row, *cached*, times fresh
processes whose persistent compilation cache (``jaxmm.enable_compilation_cache``) an
earlier process filled: a script's second run. Cold runs never use a cache, even when
``JAXMM_CACHE_DIR`` is set. The estimates of the two
engines are compared replicate by replicate, so the speed is never bought with a worse fit.
"""
from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

HERE = Path(__file__).resolve().parent


def simulate(replicates: int, subjects: int = 1000, per_subject: int = 2, seed: int = 20261125) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    n = subjects * per_subject
    b = rng.normal(0.0, 1.0, (replicates, subjects))
    e = rng.normal(0.0, np.sqrt(10.0), (replicates, n))
    subject = np.repeat(np.arange(subjects), per_subject)
    y = 1.0 + b[:, subject] + e
    return pd.DataFrame({"rep": np.repeat(np.arange(replicates), n), "subject": np.tile(subject, replicates),
                         "y": y.ravel()})


def time_jaxmm(data: pd.DataFrame, repeats: int):
    import warnings

    # Library loading stays outside the timings on both sides, as in engines.py: jaxmm
    # imports formulaic on its first formula (about 0.5 s with its lazy submodules), and
    # the R script loads lme4 before its system.time.
    import formulaic  # noqa: F401
    import formulaic.materializers  # noqa: F401
    import jax.numpy as jnp

    import jaxmm

    jnp.zeros(1).block_until_ready()  # start JAX's backend outside the timer, as engines.py does

    def once():
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", jaxmm.errors.JaxmmWarning)  # singular replicates are expected
            t = time.perf_counter()
            res = jaxmm.fit("y ~ 1 + (1 | subject)", data, by="rep")
            return time.perf_counter() - t, res

    cold, res = once()
    warm = [once()[0] for _ in range(repeats)]
    return cold, statistics.median(warm) if warm else None, warm, res


def cold_in_fresh_process(argv: list[str], script: str = __file__, cache_dir: str | None = None) -> float:
    """The cold time of a benchmark script's ``--child-cold`` mode, run in a new interpreter:
    without a persistent compilation cache, or with ``cache_dir`` as jaxmm's cache
    (``JAXMM_CACHE_DIR``, which ``import jaxmm`` turns on)."""
    env = {k: v for k, v in os.environ.items() if k != "JAXMM_CACHE_DIR"}
    if cache_dir is not None:
        env["JAXMM_CACHE_DIR"] = cache_dir
    proc = subprocess.run([sys.executable, str(Path(script).resolve()), "--child-cold", *argv],
                          capture_output=True, text=True, check=True, env=env)
    return float(json.loads(proc.stdout.strip().splitlines()[-1])["cold"])


def cached_in_fresh_processes(argv: list[str], runs: int, script: str = __file__) -> list[float]:
    """``runs`` cold times of fresh processes sharing a persistent compilation cache that one
    earlier process (not timed) filled: what a script pays from its second run on."""
    if runs < 1:
        return []
    with tempfile.TemporaryDirectory() as cache:
        cold_in_fresh_process(argv, script, cache)
        return [cold_in_fresh_process(argv, script, cache) for _ in range(runs)]


def time_lme4(csv: Path, workdir: Path, runs: int = 1):
    """lme4's loop ``runs`` times: (meta with the median seconds and every run's, fits of the first run)."""
    rscript = shutil.which("Rscript")
    if rscript is None:
        return None, "Rscript not found: lme4 skipped"
    out = workdir / "lmer.csv"
    seconds, first = [], None
    for _ in range(runs):
        proc = subprocess.run([rscript, str(HERE / "replicates_lmer.R"), str(csv), str(out)], capture_output=True,
                              text=True)
        if proc.returncode != 0:
            return None, f"lme4 failed: {proc.stderr.strip().splitlines()[-1:]}"
        meta = json.loads(proc.stdout.strip().splitlines()[-1])
        seconds.append(meta["seconds"])
        if first is None:
            first = (meta, pd.read_csv(out))
    meta = dict(first[0], seconds=statistics.median(seconds), runs=seconds)
    return (meta, first[1]), None


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--replicates", type=int, default=1000)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--cold-runs", type=int, default=3, help="fresh processes timing the cold call")
    ap.add_argument("--r-runs", type=int, default=3, help="runs of the lmer loop")
    ap.add_argument("--cache-runs", type=int, default=3,
                    help="fresh processes timed with the persistent compilation cache filled (0: skip)")
    ap.add_argument("--out", default=str(HERE / "results" / "replicates.md"))
    ap.add_argument("--child-cold", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if not args.child_cold:
        os.environ.pop("JAXMM_CACHE_DIR", None)  # cold means compiled in this run

    data = simulate(args.replicates)
    if args.child_cold:
        print(json.dumps({"cold": time_jaxmm(data, 0)[0]}))
        return
    with tempfile.TemporaryDirectory() as tmp:
        csv = Path(tmp) / "replicates.csv"
        data.to_csv(csv, index=False)
        cold_first, warm, warm_all, res = time_jaxmm(data, args.repeats)
        cold_all = [cold_first] + [cold_in_fresh_process(["--replicates", str(args.replicates)])
                                   for _ in range(args.cold_runs - 1)]
        cold = statistics.median(cold_all)
        cached_all = cached_in_fresh_processes(["--replicates", str(args.replicates)], args.cache_runs)
        lme4, note = time_lme4(csv, Path(tmp), args.r_runs)

    import jax
    import jaxmm

    frame = res.to_frame()
    lines = [
        "# Many fits in one call: jaxmm `by=` vs a loop of `lme4::lmer`",
        "",
        f"- **Date:** {_dt.datetime.now(_dt.timezone.utc):%Y-%m-%d %H:%M} UTC",
        f"- **Machine:** {platform.processor() or platform.machine()}, {os.cpu_count()} logical CPUs; "
        f"JAX backend {jax.default_backend()}; jax {jax.__version__}, jaxmm {jaxmm.__version__}",
        f"- **Command:** `python benchmarks/replicates.py --replicates {args.replicates} --repeats {args.repeats} "
        f"--cold-runs {args.cold_runs} --r-runs {args.r_runs} --cache-runs {args.cache_runs}`",
        f"- **Study:** {args.replicates} replicates x 1000 subjects x 2 measurements, Var(b) = 1, Var(e) = 10, "
        "REML; `y ~ 1 + (1 | subject)`",
        "",
        "| engine | seconds for all replicates | per replicate (ms) | lme4 loop / jaxmm |",
        "|---|---:|---:|---:|",
    ]
    ratio = lambda t: f"{lme4[0]['seconds'] / t:.1f}x" if lme4 else "—"
    lines.append(f"| jaxmm `by=`, cold (compile included; median of {len(cold_all)} fresh processes: "
                 f"{', '.join(f'{t:.2f}' for t in cold_all)}) | {cold:.2f} | {1e3 * cold / args.replicates:.2f} "
                 f"| {ratio(cold)} |")
    if cached_all:
        cached = statistics.median(cached_all)
        lines.append(f"| jaxmm `by=`, fresh process with the persistent compilation cache filled "
                     f"(`jaxmm.enable_compilation_cache()`; tracing included, the compiled program read from disk; "
                     f"median of {len(cached_all)}: {', '.join(f'{t:.2f}' for t in cached_all)}) | {cached:.2f} "
                     f"| {1e3 * cached / args.replicates:.2f} | {ratio(cached)} |")
    lines.append(f"| jaxmm `by=`, warm (median of {args.repeats}: {', '.join(f'{t:.2f}' for t in warm_all)}) "
                 f"| {warm:.2f} | {1e3 * warm / args.replicates:.2f} | {ratio(warm)} |")
    if lme4:
        meta, fits = lme4
        lines.append(f"| lme4 {meta['lme4']} `lmer` loop (median of {len(meta['runs'])}: "
                     f"{', '.join(f'{t:.2f}' for t in meta['runs'])}) | {meta['seconds']:.2f} | "
                     f"{1e3 * meta['seconds'] / args.replicates:.2f} | 1 |")
        fits = fits.set_index("rep").loc[list(res.keys)]
        d_reml = frame["loglik"].to_numpy() - fits["reml"].to_numpy()
        d_var = np.abs(frame["sd_(Intercept)"].to_numpy() ** 2 - fits["var_subject"].to_numpy())
        d_beta = np.abs(frame["(Intercept)"].to_numpy() - fits["intercept"].to_numpy())
        d_sigma = np.abs(frame["sigma"].to_numpy() - fits["sigma"].to_numpy())
        lines += [
            "",
            "Agreement, replicate by replicate (jaxmm − lme4):",
            f"- REML criterion: jaxmm at least as high in {int(np.sum(d_reml >= -1e-6))} of {len(d_reml)} "
            f"replicates; min difference {d_reml.min():.2e}, max {d_reml.max():.2e}",
            f"- max |Δ intercept| {d_beta.max():.2e}, max |Δ Var(subject)| {d_var.max():.2e}, "
            f"max |Δ sigma| {d_sigma.max():.2e}",
            f"- singular fits: jaxmm {int(res.singular.sum())}, lme4 {int(fits['singular'].astype(bool).sum())}",
            f"- R: {meta['R']}",
        ]
    else:
        lines += ["", f"lme4: {note}"]
    lines += [
        f"- jaxmm converged in {int(res.converged.sum())} of {len(res)} replicates; mean estimates: intercept "
        f"{frame['(Intercept)'].mean():.4f}, Var(subject) {(frame['sd_(Intercept)'] ** 2).mean():.4f}, "
        f"sigma² {(frame['sigma'] ** 2).mean():.4f}",
        "",
    ]
    Path(args.out).write_text("\n".join(lines))
    print("\n".join(lines))
    if lme4:
        ratio_line = (f"{args.replicates} replicates (1000 subjects x 2, REML) in one `by=` call: jaxmm cold "
                      f"{cold:.2f} s ({compare(lme4[0]['seconds'], cold)} than the lmer loop), warm {warm:.2f} s "
                      f"({compare(lme4[0]['seconds'], warm)}); the `lmer` loop {lme4[0]['seconds']:.2f} s, same run, "
                      f"{_dt.datetime.now(_dt.timezone.utc):%Y-%m-%d}. Details: `{Path(args.out).name}`.")
        record_section(HERE / "results" / "suite.md", "replicates", "## Many fits in one call (`by=`)", ratio_line)


def compare(reference_seconds: float, seconds: float) -> str:
    """How many times faster (or slower) ``seconds`` is than ``reference_seconds``."""
    r = reference_seconds / seconds
    return f"{r:.1f}x faster" if r >= 1 else f"{1 / r:.1f}x slower"


def record_section(report: Path, name: str, title: str, body: str) -> None:
    """Write (or replace) a marked section of the main report; run.py keeps such sections."""
    start, end = f"<!-- section: {name} -->", "<!-- end section -->"
    block = f"{start}\n{title}\n\n{body}\n{end}"
    text = report.read_text() if report.exists() else ""
    i = text.find(start)
    if i >= 0:
        j = text.find(end, i)
        text = text[:i] + block + text[j + len(end):]
    else:
        text = text.rstrip("\n") + "\n\n" + block + "\n"
    report.write_text(text)


if __name__ == "__main__":
    main()
