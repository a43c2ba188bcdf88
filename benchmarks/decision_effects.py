"""Performance decisions measured by what they change besides a warm run's time: memory,
fresh processes, evaluations, digits, traces and compiles. Each against its alternative.

    python benchmarks/decision_effects.py [--repeats 5] [--processes 8] [--only WORD,WORD]

The rows are written to benchmarks/results/decision_effects.md (``--only`` merges them into
the table there); docs/performance.md points here from each row. Timed rows use
``decisions.compare`` (alternating runs, medians); the others say what they count.
"""
from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))
from decisions import _bernoulli, compare, merge_rows  # noqa: E402
from provenance import commit, machine  # noqa: E402


def _mb(n_bytes):
    return f"{n_bytes / 1e6:.0f} MB"


def plain_matrix(args):
    """XLA's temporaries for a plain model matrix of 10M rows: an intercept, one numeric
    column and a 10-level factor, from the placed sources as jaxmm writes it, and stacked
    column by column. Compiled from abstract shapes, so no array is made."""
    import jax
    import jax.numpy as jnp

    from jaxmm._place_rows import _plain_columns

    n = 10_000_000
    names = (None, "x") + tuple(("f", k) for k in range(1, 10))

    def stacked(names, placed, placed_codes, n_rows, dtype):
        cols = [(placed_codes[k[0]] == k[1]).astype(dtype) if isinstance(k, tuple) else placed[k] for k in names]
        return jnp.stack(cols, axis=1)

    column = jax.ShapeDtypeStruct((n,), jnp.float64)
    codes = jax.ShapeDtypeStruct((n,), jnp.int8)

    def temporaries(fn):
        # the sources as _place_rows._lay_out has them (a None key cannot be a jit argument's)
        program = jax.jit(lambda one, x, f: fn(names, {None: one, "x": x}, {"f": f}, n, jnp.float64)).lower(
            column, column, codes).compile()
        return program.memory_analysis().temp_size_in_bytes

    chosen, alternative = temporaries(_plain_columns), temporaries(stacked)
    return [("a plain matrix laid out on the device as one elementwise expression of its sources",
             "`_place_rows._plain_columns`",
             "10M rows: intercept, one column, a 10-level factor (11 columns, 880 MB out); against stacking "
             "the columns", "XLA temporaries", _mb(chosen), _mb(alternative))]


_PAGES_CHILD = """
import sys, time
import numpy as np, pandas as pd
from jaxmm import _pages
from jaxmm._batch_design import designs_by
from jaxmm._formula import parse_formula
if sys.argv[1] == "hint":
    _pages._SET_HUGEPAGE = None  # numpy's own hint stays on
reps, rows = 1000, 2000
rng = np.random.default_rng(0)
data = pd.DataFrame({"y": rng.normal(size=reps * rows), "x": rng.normal(size=reps * rows),
                     "g": np.tile(np.arange(rows) % 50, reps), "rep": np.repeat(np.arange(reps), rows)})
start = time.perf_counter()
designs_by(parse_formula("y ~ x + (1 | g)"), data, "rep")
print(time.perf_counter() - start)
"""


_CROSSED_PAGES_CHILD = """
import sys, time
import numpy as np
from jaxmm import _pages
from jaxmm._crossed_lmm import Terms, crossed_stats
if sys.argv[1] == "hint":
    _pages._SET_HUGEPAGE = None
n = 1_000_000
rng = np.random.default_rng(0)
users, items, x = rng.integers(0, 50_000, n), rng.integers(0, 1_000, n), rng.normal(size=n)
start = time.perf_counter()
crossed_stats(np.zeros(n), np.zeros((n, 1)), [np.column_stack([np.ones(n), x]), np.ones((n, 1))], [users, items],
              Terms(q=(2, 1), m=(50_000, 1_000)))
print(time.perf_counter() - start)
"""


def pages(args):
    """The by= design of 1000 replicates of 2000 rows built in fresh processes, alternating
    numpy's huge-page hint off (jaxmm) and on."""
    defrag = Path("/sys/kernel/mm/transparent_hugepage/defrag")
    # the kernel's choice is the bracketed word of the file
    setting = defrag.read_text().split("[")[-1].split("]")[0] if defrag.exists() else "unknown"
    show = lambda t: f"{statistics.median(t):.2f} s (range {min(t):.2f}-{max(t):.2f})"
    out = []
    for child, what in ((_PAGES_CHILD, "by= design of 1000 × 2000 rows"),
                        (_CROSSED_PAGES_CHILD, "several-term statistics of 1M rows, 50,000 × 1,000 levels")):
        times = {"off": [], "hint": []}
        for _ in range(args.processes):
            for mode in times:
                run = subprocess.run([sys.executable, "-c", child, mode], capture_output=True, text=True,
                                     cwd=ROOT, check=True)
                times[mode].append(float(run.stdout.split()[-1]))
        out.append(("numpy's huge-page hint off while designs are built", "`_pages`",
                    f"{what} in {args.processes} fresh processes each; THP defrag `{setting}`; against numpy's "
                    "hint", "median build time", show(times["off"]), show(times["hint"])))
    return out


def _fit(formula, data, **kw):
    import jaxmm
    return jaxmm.fit(formula, data, **kw)


def decrement_share(args):
    """The optimiser's stopping share: contraception's iterations and how far its random
    slope's variance is from a fit stopped at a share of 1e-4, and how far sleepstudy's
    slope variance moves when Days is divided by 7 (it should scale by 1/7² exactly)."""
    import jax

    import jaxmm
    from jaxmm import _driver

    sleep = jaxmm.load_example("sleepstudy")
    contra = pd.read_csv(ROOT / "tests" / "data" / "contraception_q2.csv")
    fits = {}
    original = _driver.DECREMENT_SHARE
    for share in (original, 0.1, 1e-4):
        _driver.DECREMENT_SHARE = share
        jax.clear_caches()
        try:
            fits[share] = (_fit("Reaction ~ Days + (Days | Subject)", sleep),
                           _fit("Reaction ~ Days + (Days | Subject)", sleep.assign(Days=sleep["Days"] / 7)),
                           _fit("use01 ~ age + age2 + urban01 + C(livch) + (urban01 | district)", contra,
                                family="binomial"))
        finally:
            _driver.DECREMENT_SHARE = original
    jax.clear_caches()
    tight = float(fits[1e-4][2].D.iloc[1, 1])

    def show(share):
        a, b, c = fits[share]
        rescaled = abs(float(b.D.iloc[1, 1]) / (49 * float(a.D.iloc[1, 1])) - 1)
        return f"{c.n_iter}; {abs(float(c.D.iloc[1, 1]) / tight - 1):.0e}; {rescaled:.0e}"

    return [("the optimiser stops at 1 % of the verdict's allowance", "`_driver.DECREMENT_SHARE`",
             "contraception Bernoulli (urban01 | district), sleepstudy REML with Days and Days/7; against 0.1",
             "contraception's iterations; its slope variance from a fit at 1e-4 (relative); sleepstudy's "
             "slope variance after Days/7 (relative)", show(original), show(0.1))]


def _slowest_refits(res, n, masks_of):
    """Evaluations and log-likelihoods of ``n`` bootstrap refits of ``res``, one by one, with
    ``_engine.layout_masks`` replaced by ``masks_of(original)``."""
    import jax

    from jaxmm import _engine, _simulate

    Y = np.asarray(_simulate._draw(res, n, 1))
    masks = _engine.layout_masks
    _engine.layout_masks = masks_of(masks)
    jax.clear_caches()
    try:
        outs = [_engine.fit_one(res.design._replace(y=y), res.family_spec, res.method == "REML", res.layout.chunks,
                                res.re_blocks, res.nAGQ) for y in Y]
    finally:
        _engine.layout_masks = masks
        jax.clear_caches()
    return np.array([int(o["n_eval"]) for o in outs]), np.array([float(o["loglik"]) for o in outs])


def held_block(args):
    """The slowest of many bootstrap refits: cbpp's random intercept held at 0 (jaxmm) or not;
    sleepstudy's correlated (Days | Subject), whose diagonals jaxmm does not hold, against
    holding them too."""
    import jaxmm

    cbpp = jaxmm.fit("incidence ~ C(period) + (1 | herd)", jaxmm.load_example("cbpp"), family="binomial",
                     trials="size")
    sleep = jaxmm.fit("Reaction ~ Days + (Days | Subject)", jaxmm.load_example("sleepstudy"))
    keep = lambda masks: masks
    no_hold = lambda masks: (lambda *a: (masks(*a)[0], None))
    every_diagonal = lambda masks: (lambda *a: (masks(*a)[0], masks(*a)[0]))
    show = lambda e: f"{e.max()} (median {int(np.median(e))})"
    out = []
    for res, name, alternative, against in ((cbpp, "cbpp", no_hold, "no holding"),
                                            (sleep, "sleepstudy", every_diagonal, "holding every diagonal")):
        (chosen, ll_a), (other, ll_b) = (_slowest_refits(res, args.refits, keep),
                                         _slowest_refits(res, args.refits, alternative))
        out.append(("a variance alone in its block held at 0 once the gradient pushes it below "
                    "`BOUNDARY_CANDIDATE`", "`_driver.optimise_and_check`",
                    f"{args.refits} {name} bootstrap refits; log-likelihoods equal to "
                    f"{np.max(np.abs(ll_a - ll_b)):.0e}; against {against}", "evaluations of the slowest refit",
                    show(chosen), show(other)))
    return out


def inner_tolerance(args):
    """grouseticks' covariance of the fixed effects from one chunk of rows and from chunks of
    64 rows (another summation order), at the inner Newton tolerance 1e-13 and 1e-10."""
    import jax

    from jaxmm import _engine, _inner
    from jaxmm._design import design_from_formula
    from jaxmm._families import get_family
    from jaxmm._formula import parse_formula

    data = pd.read_csv(ROOT / "tests" / "data" / "grouseticks_poisson.csv")
    spec = parse_formula("TICKS ~ C(YEAR) + cHEIGHT + (1 | LOCATION)")
    fam = get_family("poisson")
    defaults = _inner.InnerOptions.__new__.__defaults__
    found = {}
    for tol in (defaults[1], 1e-10):
        _inner.InnerOptions.__new__.__defaults__ = (defaults[0], tol) + defaults[2:]
        jax.clear_caches()
        try:
            covs = []
            for chunk_rows in (None, 64):
                design, info = design_from_formula(spec, data, chunk_rows=chunk_rows)
                covs.append(np.asarray(_engine.fit_one(design, fam, False, info.layout.chunks, None)["vcov"]))
        finally:
            _inner.InnerOptions.__new__.__defaults__ = defaults
        found[tol] = f"{np.max(np.abs(covs[0] - covs[1])) / np.max(np.abs(covs[0])):.0e}"
    jax.clear_caches()
    return [("inner Newton tolerance 1e-13", "`_inner.InnerOptions.tol`",
             "grouseticks Poisson fit from one chunk and from chunks of 64 rows; against 1e-10",
             "covariance of β apart, relative to its largest entry", found[defaults[1]], found[1e-10])]


_PROFILE_CHILD = """
import sys, time
import jax
jax.config.update("jax_enable_x64", True)
sys.path.insert(0, "benchmarks")
from decisions import _bernoulli
from jaxmm import _profile
import jaxmm
rows, how = int(sys.argv[1]), sys.argv[2]
res = jaxmm.fit("y ~ x + (x | g)", _bernoulli(rows).assign(y=lambda d: d.y * 3 + d.x), family="gaussian")
if how == "hessian":
    _profile._grad_and_hessian = lambda f, x: (jax.grad(f)(x), jax.hessian(f)(x))
jax.clear_caches()
start = time.perf_counter()
args = (res.design, res.params, res.family_spec, 2, ((0, 1),), True)
program = jax.jit(_profile.profile_start._fun, static_argnames=("family", "structure", "pairs", "exact"))
jax.block_until_ready(program(*args))
print(time.perf_counter() - start)
"""


def profile_hessian(args):
    """Trace, compile and run of the profile's start (an exact fit's Hessian in φ) in a fresh
    process, by ``lax.map`` over forward-over-reverse columns and by ``jax.hessian``; a
    process still running after ``--timeout`` seconds is stopped."""
    rows_list = (20_000, 200_000)
    out = []
    for rows in rows_list:
        found = {}
        for how in ("map", "hessian"):
            try:
                run = subprocess.run([sys.executable, "-c", _PROFILE_CHILD, str(rows), how], capture_output=True,
                                     text=True, cwd=ROOT, timeout=args.timeout, check=True)
                found[how] = f"{float(run.stdout.split()[-1]):.1f} s"
            except subprocess.TimeoutExpired:
                found[how] = f"stopped after {args.timeout} s"
        out.append(("profile intervals' Hessian by `lax.map` over forward-over-reverse columns, not `jax.hessian`",
                    "`_profile._grad_and_hessian`",
                    f"gaussian (x | g) fit of {rows:,} rows, fresh process; against `jax.hessian`",
                    "trace, compile and run of the profile's start", found["map"], found["hessian"]))
    return out


def single_site(args):
    """What a fit compiles: one program whose loop evaluates the objective at one site for
    the optimiser, the boundary, the Hessian's differences and the verdict; the alternative
    adds a separate forward-over-reverse Hessian program (timed as the fit plus that
    program's trace and compile, both cold)."""
    import jax

    from jaxmm._laplace import laplace_loglik

    seeds = pd.read_csv(ROOT / "tests" / "data" / "seedlike_bernoulli_q2.csv")
    res = _fit("y ~ x + (x | subject)", seeds, family="binomial")
    u0 = np.zeros((res.design.n_groups, 2))

    def hessian_program():
        f = lambda p: laplace_loglik(p, res.design, u0, res.family_spec)[0]
        return jax.jit(jax.hessian(f)).lower(res.params).compile()

    fit = lambda _: _fit("y ~ x + (x | subject)", seeds, family="binomial")
    return [("a single evaluation site in the fit's loop (optimiser, boundary, Hessian, verdict share it)",
             "`_driver`", "cold Bernoulli q = 2 fit of 12,867 rows; against the fit and a separate "
             "forward-over-reverse Hessian program", "cold time (median)",
             *(f"{t:.2f} s" for t in compare(fit, lambda _: (fit(_), hessian_program()), lambda: None,
                                               args.repeats, jax.clear_caches)))]


def written_gradient(args):
    """The Laplace value and gradient at 1M rows (Bernoulli q = 2, warm), as the fit's
    program computes them (two fused passes) and by JAX's reverse mode through
    ``laplace_loglik``, both compiled as jaxmm compiles a fit of that size."""
    import jax
    import jax.numpy as jnp

    from jaxmm import _engine
    from jaxmm._design import design_from_formula
    from jaxmm._families import get_family
    from jaxmm._formula import parse_formula
    from jaxmm._gradient import laplace_loglik_for_fit
    from jaxmm._inner import InnerOptions
    from jaxmm._jit import kernels_for
    from jaxmm._laplace import laplace_loglik
    from jaxmm._params import Params

    rows = 1_000_000
    design, _ = design_from_formula(parse_formula("y ~ x + (x | g)"), _bernoulli(rows, seed=3), bucket=True)
    fam = get_family("binomial")
    inner = InnerOptions(kernels=kernels_for("cpu", True))
    params = Params(jnp.array([-0.3, 0.6]), jnp.array([[0.8, 0.0], [0.1, 0.4]]), jnp.ones(()))
    u0 = laplace_loglik(params._replace(beta=params.beta + 0.01), design, jnp.zeros((design.n_groups, 2)), fam,
                        inner)[1]
    options = _engine.fit_glmm._options(("cpu", True, False))

    def program(loglik):
        f = jax.jit(jax.value_and_grad(lambda p, d, u: loglik(p, d, u, fam, inner)[0]), compiler_options=options)
        compiled = f.lower(params, design, u0).compile()
        return lambda _: jax.block_until_ready(compiled(params, design, u0))

    return [("the Laplace gradient written out in two fused passes", "`_gradient`",
             f"value and gradient at {rows:.0e} Bernoulli q = 2 rows, warm, elemental emitters; against JAX's "
             "reverse mode through `laplace_loglik`", "median time",
             *(f"{t:.3f} s" for t in compare(program(laplace_loglik_for_fit), program(laplace_loglik),
                                               lambda: None, args.repeats)))]


def vmap_anchor(args):
    """The trace of the by= LMM program for 1000 replicates, with the loop's state anchored
    to the data and without."""
    import jax

    from jaxmm import _driver, _engine
    from jaxmm._batch_design import designs_by
    from jaxmm._formula import parse_formula

    rng = np.random.default_rng(5)
    reps, rows = 1000, 60
    data = pd.DataFrame({"y": rng.normal(size=reps * rows), "x": rng.normal(size=reps * rows),
                         "g": np.tile(np.arange(rows) % 6, reps), "rep": np.repeat(np.arange(reps), rows)})
    designs = designs_by(parse_formula("y ~ x + (1 | g)"), data, "rep")[0]
    anchored = _driver.anchored

    def trace(anchor):
        def run(_):
            _driver.anchored = anchored if anchor else (lambda carry, args, dtype: carry)
            try:
                return jax.jit(_engine.fit_lmm_batch._fun, static_argnames=("reml", "opt", "blocks", "kernels")
                               ).trace(designs, True)
            finally:
                _driver.anchored = anchored
        return run

    return [("a zero from the data added to the loop's state under vmap", "`_driver.anchored`",
             f"trace of the by= REML program for {reps} replicates of {rows} rows; against no anchor",
             "median trace time", *(f"{t:.2f} s" for t in compare(trace(True), trace(False), lambda: None,
                                                                   args.repeats, jax.clear_caches)))]


def negligible_search(args):
    """InstEval's crossed REML fit (lme4's data, exported by R): evaluations and warm time with
    a line search that stops once it seeks a negligible decrease, and with one that spends
    its trials on the objective's rounding."""
    import tempfile

    import jaxmm
    from jaxmm import _crossed_engine
    from jaxmm._optimize import OptOptions
    from several_terms import _data

    data = pd.read_csv(_data("insteval", Path(tempfile.mkdtemp())), dtype={"s": str, "d": str, "service": str})
    program = _crossed_engine.fit_crossed_lmm
    found = {}
    for stop in (True, False):
        _crossed_engine.fit_crossed_lmm = lambda *a, _s=stop, **k: program(*a, opt=OptOptions(negligible_stop=_s), **k)
        try:
            fit = lambda _: jaxmm.fit("y ~ C(service) + (1 | s) + (1 | d)", data)
            res = fit(None)
            times = [_timed_once(fit) for _ in range(args.repeats)]
        finally:
            _crossed_engine.fit_crossed_lmm = program
        found[stop] = f"{res.n_eval}; {statistics.median(times):.2f} s"
    return [("a rejected line-search trial seeking a negligible decrease ends the search",
             "`_optimize.OptOptions.negligible_stop`",
             f"InstEval REML, (1 | s) + (1 | d), 73,421 rows, warm (median of {args.repeats}); against the search "
             "running to its 30 trials", "evaluations; warm fit", found[True], found[False])]


def _timed_once(fn):
    start = time.perf_counter()
    fn(None)
    return time.perf_counter() - start


MEASURES = (plain_matrix, pages, decrement_share, held_block, inner_tolerance, profile_hessian, single_site,
            written_gradient, vmap_anchor, negligible_search)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--processes", type=int, default=8, help="fresh processes per choice (huge pages)")
    ap.add_argument("--refits", type=int, default=500, help="bootstrap refits (held block)")
    ap.add_argument("--timeout", type=int, default=300, help="seconds before a profile process is stopped")
    ap.add_argument("--only", default="", help="comma-separated words; run the measures whose function name has one")
    ap.add_argument("--out", default=str(HERE / "results" / "decision_effects.md"))
    args = ap.parse_args()
    sys.path.insert(0, str(ROOT))
    import jax

    jax.config.update("jax_enable_x64", True)
    words = [w for w in args.only.split(",") if w]
    lines = []
    for measure in MEASURES:
        if words and not any(w in measure.__name__ for w in words):
            continue
        for row in measure(args):
            line = "| " + " | ".join(cell.replace("|", "\\|") for cell in row) + " |"
            print(line, flush=True)
            lines.append(line)
    out = Path(args.out)
    if words and out.exists():  # --only: the other rows are kept
        merge_rows(out, lines, f"Rows of {', '.join(words)}: `--only {args.only}` at {commit()}.")
        return
    head = ["# Performance decisions: what else they change", "",
            f"`python benchmarks/decision_effects.py --repeats {args.repeats} --processes {args.processes} "
            f"--refits {args.refits}` at {commit()}, {machine()}, "
            f"jax {jax.__version__}, numpy {np.__version__}. Timed rows: medians of {args.repeats} alternating "
            "runs each.", "",
            "| decision | where | setting | measure | jaxmm | alternative |", "|---|---|---|---|---:|---:|"]
    out.write_text("\n".join(head + lines) + "\n")


if __name__ == "__main__":
    main()
