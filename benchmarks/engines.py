"""Engine adapters: each runs ONE fit of one problem in a fresh subprocess.

``run_engine(engine, problem, data, timeout=600, repeats=3)`` returns a flat record (dict)
with the timings, the child's peak resident set size (``ru_maxrss`` from ``os.wait4``), the
log-likelihood reached and a status: ``ok``, ``timeout``, ``error`` or ``skipped``.

Engines
-------
jaxmm        cold fit (compile included) then ``repeats`` warm fits of the same model on the
             same data in the same process; warm = median, compile = cold - warm.
jaxmm-f32    the same with ``dtype="float32"`` (float32 rows; θ and sums over groups in float64).
lme4         ``glmer`` (Laplace, nAGQ = 1) or ``lmer(REML = FALSE)`` via Rscript.
glmmTMB      ``glmmTMB`` (Laplace; ML for gaussian) via Rscript.
statsmodels  ``MixedLM.from_formula(...).fit(reml=False)``, gaussian only.

The data reach every child through files written once per problem (``write_data``): a CSV
always (R reads it), plus Parquet when pyarrow is importable (the Python children prefer it).
Reading the file is timed separately (``load_s``) and is never part of a fit time.

This module imports only the standard library at the top, and doubles as the script run in
the Python children: ``python engines.py child ENGINE SPEC_JSON``.
"""
from __future__ import annotations

import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
R_SCRIPT = HERE / "fit_r.R"
ENGINES = ("jaxmm", "jaxmm-f32", "lme4", "glmmTMB", "statsmodels")
JAXMM_ENGINES = ("jaxmm", "jaxmm-f32")
R_ENGINES = ("lme4", "glmmTMB")
DEFAULT_TIMEOUT = 600.0
DEFAULT_REPEATS = 3


# --------------------------------------------------------------------------- data files

def have_parquet() -> bool:
    try:
        import pyarrow  # noqa: F401
    except ImportError:
        return False
    return True


def write_data(df, directory, name: str) -> dict:
    """Write the problem's data once. Returns {"csv": path, "parquet": path or None, "write_s": s}."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    csv = directory / f"{name}.csv"
    df.to_csv(csv, index=False)
    parquet = None
    if have_parquet():
        parquet = directory / f"{name}.parquet"
        df.to_parquet(parquet, index=False)
    return {"csv": str(csv), "parquet": None if parquet is None else str(parquet),
            "write_s": time.perf_counter() - t0}


# --------------------------------------------------------------------------- subprocess runner

def _run_child(cmd, timeout: float, log_path: Path, env=None) -> dict:
    """Run cmd in its own session; wait with os.wait4 for the exit status and rusage.

    On timeout the whole process group is killed with SIGKILL.
    """
    with open(log_path, "w") as log:
        t0 = time.perf_counter()
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                start_new_session=True, env=env)
    state = {"done": False, "timed_out": False}
    lock = threading.Lock()

    def kill():
        with lock:
            if state["done"]:
                return
            state["timed_out"] = True
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass

    timer = threading.Timer(timeout, kill)
    timer.daemon = True
    timer.start()
    try:
        while True:
            try:
                _, status, ru = os.wait4(proc.pid, 0)
                break
            except InterruptedError:
                continue
            except KeyboardInterrupt:
                kill()
                raise
    finally:
        with lock:
            state["done"] = True
        timer.cancel()
    wall = time.perf_counter() - t0
    proc.returncode = os.waitstatus_to_exitcode(status)  # reaped by wait4, tell Popen
    # Clean up anything the child left behind in its process group (normally nothing).
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    return {"returncode": proc.returncode, "timed_out": state["timed_out"], "wall_s": wall,
            "peak_rss_mb": ru.ru_maxrss / 1024.0}  # ru_maxrss is in KiB on Linux


def _tail(path: Path, n: int = 1500) -> str:
    try:
        text = Path(path).read_text(errors="replace")
    except OSError:
        return ""
    return text[-n:].strip()


def _read_json(path: Path):
    try:
        return json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return None


# --------------------------------------------------------------------------- R helpers

def rscript() -> str | None:
    return shutil.which("Rscript")


_R_VERSIONS = None


def r_versions() -> dict | None:
    """R, lme4, glmmTMB, Matrix, TMB versions and BLAS (cached); None when Rscript is absent."""
    global _R_VERSIONS
    if _R_VERSIONS is None:
        exe = rscript()
        if exe is None:
            return None
        try:
            out = subprocess.run([exe, str(R_SCRIPT), "versions"], capture_output=True, text=True, timeout=120)
            line = [l for l in out.stdout.splitlines() if l.strip().startswith("{")][-1]
            _R_VERSIONS = json.loads(line)
        except Exception as exc:  # noqa: BLE001 - report, don't crash the harness
            _R_VERSIONS = {"error": f"could not query R: {exc}"}
    return _R_VERSIONS


# --------------------------------------------------------------------------- adapter

def _base_record(engine: str, problem, timeout: float) -> dict:
    return dict(problem=problem.id, family=problem.family, q=problem.q, size=problem.size,
                layout=problem.layout, rows=problem.rows, groups=problem.groups,
                formula=problem.formula, engine=engine, status=None, note="",
                time_s=None, cold_s=None, warm_s=None, compile_s=None, warm_times=None,
                peak_rss_mb=None, wall_s=None, load_s=None, loglik=None, converged=None,
                singular=None, n_iter=None, fixef=None, fixef_se=None, timeout_s=timeout)


def skip_reason(engine: str, problem) -> str | None:
    """Why ``engine`` cannot fit ``problem`` here (None when it can)."""
    if engine not in ENGINES:
        raise ValueError(f"unknown engine {engine!r}; choose from {ENGINES}")
    if engine == "statsmodels" and problem.family != "gaussian":
        return "statsmodels MixedLM fits gaussian models only"
    if engine in R_ENGINES:
        if rscript() is None:
            return "Rscript not found"
        vers = r_versions() or {}
        if "error" not in vers and vers.get(engine) in (None, "NA"):
            return f"R package {engine} not installed"
    return None


def run_engine(engine: str, problem, data: dict, timeout: float = DEFAULT_TIMEOUT,
               repeats: int = DEFAULT_REPEATS, workdir=None, cold_runs: int = 1) -> dict:
    """Run one fit of ``problem`` with ``engine`` in a fresh subprocess; return its record.

    jaxmm engines with ``cold_runs`` > 1 start that many fresh processes in all: the first
    also times the warm repeats, the others only the cold fit. ``cold_s`` is then the median
    of the cold fits (``cold_runs_s`` lists them) and ``peak_rss_mb`` the largest. One cold
    sample is a single compilation on a shared machine: it varied by 20-30 % between
    processes here."""
    rec = _run_engine_once(engine, problem, data, timeout, repeats, workdir)
    if engine not in JAXMM_ENGINES or cold_runs <= 1 or rec["status"] != "ok":
        return rec
    colds = [rec["cold_s"]]
    for k in range(1, cold_runs):
        more = _run_engine_once(engine, problem, data, timeout, 0, workdir, tag=f"cold{k}")
        if more["status"] != "ok":
            rec["note"] = f"cold run {k + 1} of {cold_runs}: {more['status']}: {more.get('note', '')}"[:300]
            break
        colds.append(more["cold_s"])
        rec["peak_rss_mb"] = max(rec.get("peak_rss_mb") or 0, more.get("peak_rss_mb") or 0) or None
    rec["cold_runs_s"] = colds
    rec["cold_s"] = rec["time_s"] = statistics.median(colds)
    if rec.get("warm_s") is not None:
        rec["compile_s"] = rec["cold_s"] - rec["warm_s"]
    return rec


def _run_engine_once(engine: str, problem, data: dict, timeout: float, repeats: int, workdir, tag: str = ""):
    rec = _base_record(engine, problem, timeout)
    workdir = Path(workdir or Path(data["csv"]).parent)
    out = workdir / f"{problem.id}.{engine}{tag}.result.json"
    log = workdir / f"{problem.id}.{engine}{tag}.log"
    out.unlink(missing_ok=True)

    skip = skip_reason(engine, problem)
    if skip is not None:
        rec.update(status="skipped", note=skip)
        return rec

    if engine in R_ENGINES:
        exe = rscript()
        cmd = [exe, str(R_SCRIPT), engine, problem.family, problem.formula, data["csv"], str(out)]
    elif engine in JAXMM_ENGINES + ("statsmodels",):
        kwargs = dict(problem.fit_kwargs, **({"dtype": "float32"} if engine == "jaxmm-f32" else {}))
        spec = dict(formula=problem.formula, fit_kwargs=kwargs, csv=data["csv"],
                    parquet=data.get("parquet"), out=str(out), repeats=int(repeats), q=problem.q)
        cmd = [sys.executable, str(Path(__file__).resolve()), "child", engine, json.dumps(spec)]
    else:
        raise ValueError(f"unknown engine {engine!r}; choose from {ENGINES}")

    run = _run_child(cmd, timeout, log)
    rec.update(peak_rss_mb=run["peak_rss_mb"], wall_s=run["wall_s"])
    res = _read_json(out)
    if res and not isinstance(res.get("loglik"), (int, float, type(None))):
        # jsonlite writes a numeric NA as the string "NA"
        res["warnings"] = list(res.get("warnings") or []) + [f"loglik reported as {res['loglik']!r}"]
        res["loglik"] = None
    if res:
        for k in ("loglik", "converged", "n_iter", "fixef", "fixef_se", "load_s", "cold_s", "warm_s", "warm_times",
                  "compile_s", "startup_s", "device", "backend", "message", "warnings", "loglik_spread",
                  "x64", "singular"):
            if k in res:
                rec[k] = res[k]
        rec["time_s"] = res.get("cold_s", res.get("time_s"))
        if engine not in JAXMM_ENGINES:
            rec["cold_s"] = rec["time_s"]
    if run["timed_out"]:
        rec["status"] = "timeout"
        rec["note"] = f"killed after {timeout:g} s"
        if engine in JAXMM_ENGINES and res and res.get("cold_s") is not None:
            n_warm = len(res.get("warm_times") or [])
            rec["note"] += f", after the cold fit and {n_warm} of {repeats} warm fits"
        else:
            rec["time_s"] = rec["cold_s"] = rec["loglik"] = None
    elif run["returncode"] != 0 or not res or res.get("loglik") is None:
        rec["status"] = "error"
        rec["note"] = f"exit status {run['returncode']}: {_tail(log, 600)}"
    else:
        rec["status"] = "ok"
        if res.get("warnings"):
            rec["note"] = "; ".join(str(w) for w in res["warnings"])[:300]
    return rec


# --------------------------------------------------------------------------- children

def _load_frame(spec):
    import pandas as pd

    t0 = time.perf_counter()
    if spec.get("parquet"):
        df = pd.read_parquet(spec["parquet"])
    else:
        df = pd.read_csv(spec["csv"])
    return df, time.perf_counter() - t0


def _dump(path, obj):
    tmp = str(path) + ".tmp"
    with open(tmp, "w") as f:
        json.dump(obj, f, default=float)
    os.replace(tmp, path)


def _child_jaxmm(spec):
    t0 = time.perf_counter()
    import jax
    import jax.numpy as jnp

    # No persistent compilation cache: the cold fit must compile from scratch.
    try:
        jax.config.update("jax_enable_compilation_cache", False)
    except Exception:  # noqa: BLE001 - older/newer jax without the flag
        pass
    import formulaic  # noqa: F401 - jaxmm imports it lazily; keep that import out of the cold fit
    import numpy as np
    import pandas  # noqa: F401

    import jaxmm

    jnp.zeros(1).block_until_ready()  # initialise the backend outside the timed fits
    startup = time.perf_counter() - t0
    df, load_s = _load_frame(spec)
    kw = spec["fit_kwargs"]
    out = dict(startup_s=startup, load_s=load_s, backend=jax.default_backend(),
               device=str(jax.devices()[0].device_kind), x64=bool(jax.config.jax_enable_x64))

    jax.clear_caches()
    t = time.perf_counter()
    res = jaxmm.fit(spec["formula"], df, **kw)  # returns host numpy values: the work is done
    cold = time.perf_counter() - t
    out.update(cold_s=cold, loglik=res.loglik, converged=bool(res.converged), n_iter=int(res.n_iter),
               singular=bool(res.singular),
               message=getattr(res, "message", None), fixef={k: float(v) for k, v in res.fixef.items()},
               fixef_se={k: float(v) for k, v in zip(res.fixef.index, np.sqrt(np.diag(res.vcov)))},
               warm_times=[])
    _dump(spec["out"], out)
    logliks = [res.loglik]
    # A result keeps its design (as lme4 keeps its model frame): drop each one before the
    # next fit, so that peak RSS is that of one fit, not of two designs side by side.
    del res
    for _ in range(spec["repeats"]):
        t = time.perf_counter()
        r = jaxmm.fit(spec["formula"], df, **kw)
        out["warm_times"].append(time.perf_counter() - t)
        logliks.append(r.loglik)
        del r
        out["warm_s"] = statistics.median(out["warm_times"])
        out["compile_s"] = cold - out["warm_s"]
        out["loglik_spread"] = float(np.ptp(logliks))
        _dump(spec["out"], out)
    _dump(spec["out"], out)


def _child_statsmodels(spec):
    import warnings

    import statsmodels.formula.api as smf

    df, load_s = _load_frame(spec)
    fixed = spec["formula"].split("+ (")[0].strip()
    re_formula = {1: "1", 2: "~x1", 3: "~x1 + x2"}[spec["q"]]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        t = time.perf_counter()
        model = smf.mixedlm(fixed, df, groups=df["g"], re_formula=re_formula)
        res = model.fit(reml=False)
        elapsed = time.perf_counter() - t
    msgs = sorted({f"{w.category.__name__}: {w.message}" for w in caught})
    _dump(spec["out"], dict(time_s=elapsed, load_s=load_s, loglik=float(res.llf),
                            converged=bool(res.converged), fixef={k: float(v) for k, v in res.fe_params.items()},
                            warnings=msgs))


def _child_main(argv):
    engine, spec = argv[0], json.loads(argv[1])
    {"jaxmm": _child_jaxmm, "jaxmm-f32": _child_jaxmm, "statsmodels": _child_statsmodels}[engine](spec)


if __name__ == "__main__":
    if len(sys.argv) >= 2 and sys.argv[1] == "child":
        _child_main(sys.argv[2:])
    else:
        print(__doc__)
