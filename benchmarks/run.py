"""Run the jaxmm benchmark suite: problems x engines, one fresh subprocess per fit.

    python benchmarks/run.py [--sizes 13k,100k] [--families binomial,...] [--q 1,2]
                             [--layout balanced,skewed] [--engines jaxmm,lme4,glmmTMB,statsmodels]
                             [--repeats 3] [--timeout 600] [--out benchmarks/results/suite.md]

Writes, next to --out (default results/suite.md): <stem>.json (every raw record of this run plus
the machine description), the Markdown report (--out) and <stem>_time_vs_rows.png. Everything in the report is
computed from this run's records only. See benchmarks/README.md.
"""
from __future__ import annotations

import argparse
import datetime as _dt
import json
import math
import os
import platform
import shlex
import shutil
import sys
import tempfile
import time
from importlib import metadata
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import engines as E  # noqa: E402
import problems as P  # noqa: E402

ENGINE_STYLE = {  # label -> (colour, marker, linestyle)
    "jaxmm (cold)": ("tab:blue", "o", "-"),
    "jaxmm (warm)": ("tab:blue", "o", "--"),
    "jaxmm-f32 (cold)": ("tab:cyan", "v", "-"),
    "jaxmm-f32 (warm)": ("tab:cyan", "v", "--"),
    "lme4": ("tab:red", "s", "-"),
    "glmmTMB": ("tab:green", "^", "-"),
    "statsmodels": ("tab:purple", "D", "-"),
}


# --------------------------------------------------------------------------- machine description

def _cpu_info() -> dict:
    model, pairs = None, set()
    phys = core = None
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, val = line.partition(":")
            key, val = key.strip(), val.strip()
            if key == "model name" and model is None:
                model = val
            elif key == "physical id":
                phys = val
            elif key == "core id":
                core = val
                pairs.add((phys, core))
    except OSError:
        pass
    try:
        usable = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        usable = os.cpu_count()
    return dict(cpu_model=model or platform.processor() or "unknown", logical_cpus=os.cpu_count(),
                physical_cores=len(pairs) or None, usable_cpus=usable)


def _ram_gib() -> float | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) / 1024**2
    except OSError:
        pass
    return None


def _os_name() -> str:
    try:
        for line in Path("/etc/os-release").read_text().splitlines():
            if line.startswith("PRETTY_NAME="):
                return f"{line.split('=', 1)[1].strip(chr(34))} (kernel {platform.release()})"
    except OSError:
        pass
    return platform.platform()


def _version(dist: str) -> str | None:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


def _git_head() -> str | None:
    """The repository's HEAD commit, read from .git without running git."""
    git = HERE.parent / ".git"
    try:
        head = (git / "HEAD").read_text().strip()
        if not head.startswith("ref:"):
            return head
        ref = head.split(None, 1)[1]
        if (git / ref).exists():
            return (git / ref).read_text().strip()
        for line in (git / "packed-refs").read_text().splitlines():
            if line.endswith(" " + ref):
                return line.split()[0]
    except OSError:
        pass
    return None


def machine_info(engines) -> dict:
    info = dict(_cpu_info())
    info.update(
        ram_gib=_ram_gib(), os=_os_name(), python=platform.python_version(),
        versions={d: _version(d) for d in ("jaxmm", "jax", "jaxlib", "numpy", "pandas", "formulaic",
                                            "statsmodels", "matplotlib", "pyarrow")},
        jaxmm_git_head=_git_head(),
        env={k: os.environ[k] for k in ("XLA_FLAGS", "JAX_PLATFORMS", "OMP_NUM_THREADS",
                                        "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS") if k in os.environ},
        date=_dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
    )
    if any(e in E.R_ENGINES for e in engines):
        info["R"] = E.r_versions() or {"note": "Rscript not found"}
    return info


# --------------------------------------------------------------------------- formatting

def _fmt_s(x) -> str:
    if x is None:
        return "—"
    if x >= 100:
        return f"{x:.0f}"
    if x >= 10:
        return f"{x:.1f}"
    if x >= 1:
        return f"{x:.2f}"
    return f"{x:.3f}"


def _fmt_ratio(x, lower_bound=False) -> str:
    """other engine time / jaxmm time as 'N× faster' or 'N× slower' (from jaxmm's side)."""
    word = "faster" if x >= 1 else "slower"
    f = x if x >= 1 else 1.0 / x
    num = f"{f:.0f}" if f >= 10 else f"{f:.1f}"
    return f"{'> ' if lower_bound else ''}{num}× {word}"


def _has_loglik(r) -> bool:
    return r.get("loglik") is not None and r["status"] in ("ok", "timeout")


def best_loglik(records) -> dict:
    """Best float64 loglik per problem. jaxmm-f32 is left out: its loglik carries float32
    rounding (about eps32·|loglik|), so it can land above the true optimum by noise."""
    best = {}
    for r in records:
        if r["engine"] == "jaxmm-f32":
            continue
        if _has_loglik(r) and r["loglik"] == r["loglik"]:  # skip NaN
            best[r["problem"]] = max(best.get(r["problem"], -math.inf), r["loglik"])
    return best


def _converged_cell(r) -> str:
    if r.get("converged") is None:
        return "—"
    s = "yes" if r["converged"] else "no"
    if r.get("singular"):
        s += " (singular)"
    return s


def render_markdown(meta: dict, records: list) -> str:
    best = best_loglik(records)
    jax_cold = {r["problem"]: r for r in records if r["engine"] == "jaxmm" and r.get("cold_s") is not None}
    lines = ["# jaxmm benchmark results", ""]
    m = meta["machine"]
    v = m["versions"]
    cores = f"{m['logical_cpus']} logical CPUs"
    if m.get("physical_cores"):
        cores += f", {m['physical_cores']} physical cores"
    if m.get("usable_cpus") and m["usable_cpus"] != m["logical_cpus"]:
        cores += f", {m['usable_cpus']} usable by this process"
    lines += [
        f"- **Date:** {m['date']}",
        f"- **CPU:** {m['cpu_model']} ({cores})",
        f"- **RAM:** {m['ram_gib']:.1f} GiB" if m.get("ram_gib") else "- **RAM:** unknown",
        f"- **OS:** {m['os']}",
        f"- **Python:** {m['python']}; jax {v.get('jax')}, jaxlib {v.get('jaxlib')}, jaxmm {v.get('jaxmm')}"
        + (f" (git HEAD {m['jaxmm_git_head'][:10]})" if m.get("jaxmm_git_head") else "")
        + f"; numpy {v.get('numpy')}, pandas {v.get('pandas')}, statsmodels {v.get('statsmodels')}",
    ]
    dev = sorted({f"{r.get('backend')} ({r.get('device')})" for r in records
                  if r["engine"] == "jaxmm" and r.get("backend")})
    if dev:
        lines.append(f"- **JAX backend:** {', '.join(dev)}; float64 "
                     + ("on" if all(r.get("x64", True) for r in records if r["engine"] == "jaxmm") else "OFF"))
    if "R" in m:
        R = m["R"]
        if "R" in R:
            lines.append(f"- **R:** {R['R']}; lme4 {R.get('lme4')}, glmmTMB {R.get('glmmTMB')}, "
                         f"Matrix {R.get('Matrix')}, TMB {R.get('TMB')}; BLAS {R.get('BLAS')}")
        else:
            lines.append(f"- **R:** {R.get('note') or R.get('error')}")
    if m.get("env"):
        lines.append("- **Environment:** " + ", ".join(f"`{k}={val}`" for k, val in m["env"].items()))
    s = meta["settings"]
    lines += [
        f"- **Settings:** jaxmm warm repeats = {s['repeats']}, jaxmm cold runs = {s.get('cold_runs', 1)}, "
        f"per-engine timeout = {s['timeout']:g} s",
        f"- **Command:** `{s['command']}`",
        "",
        "Times are seconds of one fit (data loading excluded). jaxmm: *cold* = first fit in a fresh "
        "process (tracing + XLA compilation included), the median over the cold runs (each in its own "
        "process; the samples are in the notes), *warm* = median of the repeated fits, "
        "*compile* = cold − warm. R and statsmodels engines have no compile step: their single fit "
        "time is in the *cold* column. *Peak RSS* is the whole child process (interpreter, data, "
        "fit). *Δloglik* = loglik − best loglik of any float64 engine on that problem (jaxmm-f32 is compared, not ranked: its loglik carries float32 rounding). *jaxmm cold/warm vs "
        "engine* (on that engine's row) = the engine's time ÷ jaxmm's cold (resp. warm) time on the "
        "same problem in this run, written as how many times faster or slower jaxmm is.",
        "",
        "| problem | rows | groups | engine | cold s | warm s (median) | compile s | peak RSS MB "
        "| loglik | Δloglik | converged | jaxmm cold vs engine | jaxmm warm vs engine |",
        "|---|---:|---:|---|---:|---:|---:|---:|---:|---:|---|---:|---:|",
    ]
    notes = []
    for r in records:
        pid = r["problem"]
        if r["status"] == "skipped":
            notes.append((pid, r["engine"], f"skipped: {r['note']}"))
            continue
        if r["status"] == "timeout" and r.get("cold_s") is None:
            cold = f"timeout (> {r['timeout_s']:g})"
        elif r["status"] == "error":
            cold = "error"
        else:
            cold = _fmt_s(r.get("cold_s"))
        warm = _fmt_s(r.get("warm_s"))
        comp = _fmt_s(r.get("compile_s"))
        rss = f"{r['peak_rss_mb']:.0f}" if r.get("peak_rss_mb") and r["status"] != "timeout" else (
            "—" if not r.get("peak_rss_mb") else f"≥ {r['peak_rss_mb']:.0f}")
        ll = f"{r['loglik']:.4f}" if _has_loglik(r) else "—"
        dll = "—"
        if _has_loglik(r) and pid in best:
            d = r["loglik"] - best[pid]
            dll = "0" if d == 0 else f"{d:.1e}"
        sp_c = sp_w = ""
        j = jax_cold.get(pid)
        if r["engine"] not in E.JAXMM_ENGINES and j is not None:
            if r["status"] == "ok" and r.get("time_s"):
                sp_c = _fmt_ratio(r["time_s"] / j["cold_s"])
                if j.get("warm_s"):
                    sp_w = _fmt_ratio(r["time_s"] / j["warm_s"])
            elif r["status"] == "timeout":
                sp_c = _fmt_ratio(r["timeout_s"] / j["cold_s"], lower_bound=True)
                if j.get("warm_s"):
                    sp_w = _fmt_ratio(r["timeout_s"] / j["warm_s"], lower_bound=True)
        lines.append(f"| {pid} | {r['rows']:,} | {r['groups']:,} | {r['engine']} | {cold} | {warm} | {comp} "
                     f"| {rss} | {ll} | {dll} | {_converged_cell(r)} | {sp_c} | {sp_w} |")
        if r.get("note"):
            notes.append((pid, r["engine"], f"{r['status']}: {r['note']}"))
        if len(r.get("cold_runs_s") or []) > 1:
            notes.append((pid, r["engine"], f"cold fits in {len(r['cold_runs_s'])} fresh processes: "
                                            + ", ".join(f"{t:.2f}" for t in r["cold_runs_s"]) + " s"))
        if r["engine"] == "jaxmm-f32" and j is not None and r.get("fixef") and j.get("fixef"):
            # float32 accuracy, measured against the float64 fit of the same problem in this run
            diff = max(abs(r["fixef"][k] - j["fixef"][k]) / max(abs(j["fixef"][k]), 1e-12) for k in j["fixef"])
            dl = r["loglik"] - j["loglik"] if _has_loglik(r) and _has_loglik(j) else float("nan")
            in_se = ""
            if j.get("fixef_se"):
                worst = max(abs(r["fixef"][k] - j["fixef"][k]) / j["fixef_se"][k] for k in j["fixef"])
                in_se = f" ({worst:.1e} of a float64 standard error)"
            notes.append((pid, r["engine"], f"against jaxmm float64: max relative β difference {diff:.1e}{in_se}, "
                                            f"loglik difference {dl:.1e}"))
    if notes:
        lines += ["", "Notes:", ""]
        lines += [f"- {pid} / {eng}: {text}".replace("\n", " ") for pid, eng, text in notes]
    lines += ["", f"Raw records: `{meta['files']['json']}`; plot: `{meta['files']['png']}`.", ""]
    return "\n".join(lines)


# --------------------------------------------------------------------------- plot

def _series(records):
    """{(family, q, layout): {label: [(rows, time, timed_out)]}}"""
    out = {}
    for r in records:
        key = (r["family"], r["q"], r["layout"])
        d = out.setdefault(key, {})
        pts = []
        if r["engine"] in E.JAXMM_ENGINES:
            name = r["engine"]
            if r.get("cold_s") is not None:
                pts.append((f"{name} (cold)", r["cold_s"], False))
            elif r["status"] == "timeout":
                pts.append((f"{name} (cold)", r["timeout_s"], True))
            if r.get("warm_s") is not None:
                pts.append((f"{name} (warm)", r["warm_s"], False))
        elif r["status"] == "ok" and r.get("time_s") is not None:
            pts.append((r["engine"], r["time_s"], False))
        elif r["status"] == "timeout":
            pts.append((r["engine"], r["timeout_s"], True))
        for label, t, to in pts:
            d.setdefault(label, []).append((r["rows"], t, to))
    return out


def render_plot(records, path: Path, title: str = ""):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker
    from matplotlib.lines import Line2D

    series = _series(records)
    if not series:
        return False
    keys = sorted(series, key=lambda k: (P.FAMILIES.index(k[0]), k[1], P.LAYOUTS.index(k[2])))
    ncol = min(len(keys), 3)
    nrow = math.ceil(len(keys) / ncol)
    fig, axes = plt.subplots(nrow, ncol, figsize=(5.2 * ncol, 4.2 * nrow + 0.6), squeeze=False,
                             layout="constrained")
    timeouts = {r["timeout_s"] for r in records if r["status"] == "timeout"}
    all_rows = sorted({r["rows"] for r in records})
    handles = {}
    for ax, key in zip(axes.flat, keys):
        for label in ENGINE_STYLE:
            pts = sorted(series[key].get(label, []))
            if not pts:
                continue
            colour, marker, ls = ENGINE_STYLE[label]
            xs = [p[0] for p in pts if not p[2]]  # the line joins measured times only
            ys = [p[1] for p in pts if not p[2]]
            (h,) = ax.plot(xs, ys, color=colour, marker=marker, linestyle=ls, label=label,
                           markerfacecolor="white" if "warm" in label else colour)
            handles[label] = h
            tx = [p[0] for p in pts if p[2]]
            ty = [p[1] for p in pts if p[2]]
            if tx:
                ax.scatter(tx, ty, marker="x", s=90, color=colour, zorder=5)
                handles.setdefault("timeout (drawn at the limit)",
                                   Line2D([], [], color="grey", marker="x", linestyle="none", markersize=9))
        for t in timeouts:
            ax.axhline(t, color="grey", linestyle=":", linewidth=1)
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xticks(all_rows)
        ax.set_xticklabels([f"{n:,}" for n in all_rows], rotation=20)
        ax.xaxis.set_minor_locator(matplotlib.ticker.NullLocator())
        lo = min(all_rows)
        hi = max(all_rows)
        ax.set_xlim(lo / 1.6, hi * 1.6)
        ax.set_title(f"{key[0]}, q = {key[1]}, {key[2]} groups")
        ax.set_xlabel("rows")
        ax.set_ylabel("fit time (s)")
        ax.grid(True, which="major", alpha=0.3)
        plain = matplotlib.ticker.FuncFormatter(lambda v, _: f"{v:g}")
        ax.yaxis.set_major_formatter(plain)
        lo_y, hi_y = ax.get_ylim()
        # label minor ticks on short axes: all of 2..9 within about a decade, 2 and 5 up to 3 decades
        span = hi_y / lo_y

        def minor_label(v, _, span=span):
            lead = round(v / 10 ** math.floor(math.log10(v) + 1e-9))
            return f"{v:g}" if span < 20 or (span < 1000 and lead in (2, 5)) else ""

        ax.yaxis.set_minor_formatter(matplotlib.ticker.FuncFormatter(minor_label))
    for ax in list(axes.flat)[len(keys):]:
        ax.set_visible(False)
    order = [l for l in list(ENGINE_STYLE) + ["timeout (drawn at the limit)"] if l in handles]
    fig.legend([handles[l] for l in order], order, loc="outside lower center", ncol=len(order), frameon=False)
    if title:
        fig.suptitle(title)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return True


# --------------------------------------------------------------------------- driver

def _csv_list(text, cast=str):
    return None if text is None else [cast(t.strip()) for t in text.split(",") if t.strip()]


def _parser():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", help=f"comma list from {list(P.SIZES)} (default: all)")
    ap.add_argument("--families", help=f"comma list from {list(P.FAMILIES)} (default: all)")
    ap.add_argument("--q", help="comma list from 1,2,3 (default: all)")
    ap.add_argument("--layout", help=f"comma list from {list(P.LAYOUTS)} (default: all)")
    ap.add_argument("--problems", help="comma list of explicit problem ids, e.g. binomial-q2-13k-balanced "
                    "(overrides --sizes/--families/--q/--layout)")
    ap.add_argument("--engines", default=",".join(E.ENGINES), help=f"comma list from {list(E.ENGINES)}")
    ap.add_argument("--repeats", type=int, default=E.DEFAULT_REPEATS, help="jaxmm warm repeats (median)")
    ap.add_argument("--cold-runs", type=int, default=3,
                    help="fresh processes timing each jaxmm cold fit (median; the first also times the warm fits)")
    ap.add_argument("--timeout", type=float, default=E.DEFAULT_TIMEOUT, help="seconds per engine per problem")
    ap.add_argument("--out", default=str(HERE / "results" / "suite.md"),
                    help="Markdown report; its .json and _time_vs_rows.png go in the same folder")
    ap.add_argument("--tmpdir", default=None, help="where the per-problem data files are written")
    ap.add_argument("--keep-data", action="store_true", help="keep the data files and child logs")
    ap.add_argument("--no-skip-larger", action="store_true",
                    help="run an engine at larger sizes even after it timed out on a smaller one")
    ap.add_argument("--render-only", action="store_true",
                    help="re-render the report and plot from the existing .json next to --out, run nothing")
    return ap


SECTION_START, SECTION_END = "<!-- section:", "<!-- end section -->"


def kept_sections(path: Path) -> str:
    """Sections other scripts (e.g. replicates.py) wrote into the report, kept on re-render."""
    if not path.exists():
        return ""
    text, kept, pos = path.read_text(), [], 0
    while (start := text.find(SECTION_START, pos)) >= 0:
        end = text.find(SECTION_END, start)
        if end < 0:
            break
        kept.append(text[start:end + len(SECTION_END)])
        pos = end
    return "".join("\n" + k + "\n" for k in kept)


def _write_outputs(meta, records, out_md: Path, out_json: Path, out_png: Path):
    out_json.write_text(json.dumps({"meta": meta, "records": records}, indent=1, default=str))
    out_md.write_text(render_markdown(meta, records) + kept_sections(out_md))
    render_plot(records, out_png, title="jaxmm benchmark: fit time vs rows")


def main(argv=None) -> int:
    args = _parser().parse_args(argv)
    out_md = Path(args.out).resolve()
    out_json = out_md.with_suffix(".json")
    out_png = out_md.parent / f"{out_md.stem}_time_vs_rows.png"
    out_md.parent.mkdir(parents=True, exist_ok=True)

    if args.render_only:
        saved = json.loads(out_json.read_text())
        saved["meta"].setdefault("files", {}).update(json=out_json.name, png=out_png.name)
        _write_outputs(saved["meta"], saved["records"], out_md, out_json, out_png)
        print(f"re-rendered {out_md} and {out_png} from {out_json}")
        return 0

    engines = _csv_list(args.engines)
    bad = [e for e in engines if e not in E.ENGINES]
    if bad:
        print(f"unknown engine(s) {bad}; choose from {list(E.ENGINES)}", file=sys.stderr)
        return 2
    try:
        if args.problems:
            problems = [P.get(pid) for pid in _csv_list(args.problems)]
            P.all_problems([p.size for p in problems], [p.family for p in problems], [p.q for p in problems],
                           [p.layout for p in problems])  # validates the parts
        else:
            problems = P.all_problems(_csv_list(args.sizes), _csv_list(args.families), _csv_list(args.q, int),
                                      _csv_list(args.layout))
    except ValueError as exc:
        print(exc, file=sys.stderr)
        return 2
    if args.repeats < 1 or args.cold_runs < 1:
        print("--repeats and --cold-runs must be at least 1", file=sys.stderr)
        return 2

    command = "python " + " ".join(shlex.quote(a) for a in [os.path.relpath(__file__)] + sys.argv[1:])
    if argv is not None:
        command = "python benchmarks/run.py " + " ".join(shlex.quote(a) for a in argv)
    meta = dict(
        machine=machine_info(engines),
        settings=dict(repeats=args.repeats, cold_runs=args.cold_runs, timeout=args.timeout, engines=engines,
                      command=command,
                      problems=[p.id for p in problems], data_format="parquet" if E.have_parquet() else "csv"),
        files=dict(json=out_json.name, png=out_png.name, md=out_md.name),
    )
    if "R" in meta["machine"] and "R" not in meta["machine"]["R"]:
        print(f"note: R engines will be skipped ({meta['machine']['R']})")

    tmp = Path(tempfile.mkdtemp(prefix="jaxmm-bench-", dir=args.tmpdir))
    records: list = []
    timed_out: dict = {}  # (engine, family, q, layout) -> size label that timed out
    n_total = len(problems) * len(engines)
    k = 0
    t_start = time.perf_counter()
    print(f"{len(problems)} problem(s) x {len(engines)} engine(s); data in {tmp}", flush=True)
    try:
        for prob in problems:
            t0 = time.perf_counter()
            df, _, _ = P.generate(prob)
            t_gen = time.perf_counter() - t0
            data = E.write_data(df, tmp, prob.id)
            del df
            print(f"== {prob.id}: {prob.rows:,} rows, {prob.groups:,} groups, {prob.formula} "
                  f"(generated {t_gen:.1f} s, written {data['write_s']:.1f} s)", flush=True)
            for eng in engines:
                k += 1
                tag = f"[{k}/{n_total}] {prob.id} {eng:<11}"
                key = (eng, prob.family, prob.q, prob.layout)
                skip = E.skip_reason(eng, prob)
                if skip is None and key in timed_out and not args.no_skip_larger:
                    skip = f"timed out at the smaller size {timed_out[key]}"
                if skip is not None:
                    rec = E._base_record(eng, prob, args.timeout)
                    rec.update(status="skipped", note=skip)
                else:
                    print(f"{tag} running ...", flush=True)
                    rec = E.run_engine(eng, prob, data, timeout=args.timeout, repeats=args.repeats, workdir=tmp,
                                       cold_runs=args.cold_runs)
                    if rec["status"] == "timeout":
                        timed_out[key] = prob.size
                records.append(rec)
                msg = f"{tag} {rec['status']}"
                if rec.get("cold_s") is not None:
                    msg += f"  time {rec['cold_s']:.3f} s"
                if rec.get("warm_s") is not None:
                    msg += f"  warm {rec['warm_s']:.3f} s"
                if rec.get("loglik") is not None:
                    msg += f"  loglik {rec['loglik']:.4f}"
                if rec.get("peak_rss_mb"):
                    msg += f"  RSS {rec['peak_rss_mb']:.0f} MB"
                if rec.get("note") and rec["status"] != "ok":
                    msg += f"  ({rec['note'][:200]})"
                print(msg, flush=True)
                _write_outputs(meta, records, out_md, out_json, out_png)
            if not args.keep_data:
                for f in tmp.glob(f"{prob.id}.*"):
                    f.unlink(missing_ok=True)
    except KeyboardInterrupt:
        print("interrupted; writing what has finished", flush=True)
    finally:
        meta["settings"]["total_wall_s"] = time.perf_counter() - t_start
        _write_outputs(meta, records, out_md, out_json, out_png)
        if args.keep_data:
            print(f"data and child logs kept in {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    print(f"wrote {out_md}, {out_json}, {out_png} ({time.perf_counter() - t_start:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
