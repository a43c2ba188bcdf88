"""Performance decisions that the code encodes, each against its alternative, in one run.

    python benchmarks/decisions.py [--rows 1e7] [--fit-rows 4e6] [--repeats 5] [--only WORD,WORD]

Every decision is a pair of functions, jaxmm's choice and the alternative it replaced, run
alternately ``--repeats`` times on the same input after one untimed call of each; the
table gives their medians and the ratio. The host-side decisions (group codes, column
statistics) run at ``--rows``; how the row passes write their per-group sums on a warm
Bernoulli fit of ``--fit-rows`` (the choice applies from 2²² rows, where fits take XLA:CPU's
fused emitters); tiles and logit's log1p on a warm 1M-row fit as jaxmm compiles it; forward
or central differences for the Hessian on cbpp; the emitters of a by= fit and the CPU
bootstrap's refits one by one, cold. What a program
compiles (device_put, the start's solve, the refit's outputs) is timed as fresh traces and
compiles.
docs/performance.md points here from each row.
"""
from __future__ import annotations

import argparse
import contextlib
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
from provenance import commit, machine  # noqa: E402

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent


def _timed(fn, arg):
    start = time.perf_counter()
    fn(arg)
    return time.perf_counter() - start


def compare(chosen, alternative, make, repeats, before=None):
    """Medians (s) of ``chosen(x)`` and ``alternative(x)`` on ``x = make()``, alternating.
    ``before``, where given, runs untimed before every timed call (a cold start: caches
    cleared, the fit done again), and the untimed first calls are left out."""
    x = make()
    if before is None:
        chosen(x), alternative(x)  # untimed: first touches, caches
    a, b = [], []
    for _ in range(repeats):
        for fn, times in ((chosen, a), (alternative, b)):
            if before is not None:
                before()
            times.append(_timed(fn, x))
    return statistics.median(a), statistics.median(b)


# --- host-side decisions -------------------------------------------------------------------

def _codes(rows):
    return np.random.default_rng(0).integers(0, rows // 10, rows)


def _wide_ids(rows):
    # integer ids over a range far wider than the data: the table of present ids does not apply
    return np.random.default_rng(1).integers(0, rows // 10, rows) * 7919 + 10 ** 12


def _strings(rows):
    ids = np.random.default_rng(2).permutation(rows // 10)
    return np.char.add("subject-", ids.astype(str)).astype(object)


def _categories(rows):
    return pd.Categorical.from_codes(_codes(rows), categories=_strings(rows))


def _string_column(rows):
    return pd.array(_strings(rows)[_codes(rows)], dtype="string")


def host_decisions(rows):
    from jaxmm import _column_stats, _grouping

    m = rows // 10

    def hashed(values):  # unique_inverse's general path: hash, then sort the distinct values
        codes, uniques = pd.factorize(values, sort=False)
        return _grouping._by_value(np.asarray(uniques), codes)

    X = lambda: np.column_stack([np.ones(rows), np.random.default_rng(3).normal(size=(rows, 2))])
    return [
        ("group codes' stable order: two 16-bit radix passes", "`_grouping._code_order`",
         lambda c: _grouping._code_order(c, m), lambda c: np.argsort(c, kind="stable"),
         lambda: _codes(rows), f"{rows:.0e} codes of {m:.0e} groups, random order; against numpy's stable sort"),
        ("integer ids: a table of the values present", "`_grouping.unique_inverse`",
         _grouping.unique_inverse, hashed,
         lambda: _codes(rows), f"{rows:.0e} ids of {m:.0e} groups, random order; against hashing them"),
        ("other values: hashed, then the distinct ones sorted", "`_grouping.unique_inverse`",
         _grouping.unique_inverse, lambda v: np.unique(v, return_inverse=True),
         lambda: _wide_ids(rows), f"{rows:.0e} sparse int64 ids; against `np.unique`"),
        ("distinct strings sorted as fixed-width numpy text", "`_grouping._value_order`",
         _grouping._value_order, lambda v: np.argsort(v, kind="stable"),
         lambda: _strings(rows), f"{m:.0e} distinct strings; against sorting the Python objects"),
        ("a categorical grouping column numbered from its codes", "`_grouping.unique_inverse`",
         _grouping.unique_inverse, lambda c: _grouping.unique_inverse(np.asarray(c)),
         lambda: _categories(rows), f"{rows:.0e} rows of {m:.0e} string categories; against the values built "
         "row by row and hashed"),
        ("a string grouping column hashed as pandas' string array", "`_table._group_column`",
         _grouping.unique_inverse, lambda a: _grouping.unique_inverse(np.asarray(a, dtype=object)),
         lambda: _string_column(rows), f"{rows:.0e} rows of {m:.0e} distinct strings; against one Python "
         "object per row first"),
        ("aliased columns from the Cholesky factor of XᵀX", "`_column_stats.aliased_columns`",
         _column_stats.aliased_columns, lambda A: np.linalg.qr(A, mode="r"),
         X, f"{rows:.0e} × 3; against a Householder QR of X"),
        ("column SDs in blocks of rows", "`_column_stats.column_scales`",
         _column_stats.column_scales, lambda A: A.std(axis=0),
         X, f"{rows:.0e} × 3; against `X.std(axis=0)`"),
    ]


# --- fit-side decisions --------------------------------------------------------------------

def _bernoulli(rows, seed=0):
    rng = np.random.default_rng(seed)
    g = rng.integers(0, rows // 10, rows)
    x = rng.normal(size=rows)
    b = rng.normal(size=(rows // 10, 2)) * [0.8, 0.4]
    eta = -0.3 + 0.6 * x + b[g, 0] + b[g, 1] * x
    return pd.DataFrame({"y": (rng.random(rows) < 1 / (1 + np.exp(-eta))).astype(float), "x": x, "g": g})


def fit_decisions(rows):
    import jax
    import jax.numpy as jnp

    import jaxmm
    from jaxmm import _driver, _engine, _verdict
    from jaxmm._design import design_from_formula
    from jaxmm._families import get_family
    from jaxmm._formula import parse_formula
    from jaxmm._jit import Kernels

    fam = get_family("binomial")
    out = []

    # Per-group sums of a row pass with XLA:CPU's fused emitters: one segment sum per
    # output, or one over the stacked outputs.
    design, _ = design_from_formula(parse_formula("y ~ x + (x | g)"), _bernoulli(rows), bucket=True)
    programs = {}
    for separate in (True, False):
        kernels = Kernels(separate_group_sums=separate)
        program = jax.jit(lambda d, k=kernels: _engine._fit_glmm(None, d, fam, kernels=k)).lower(design).compile(
            compiler_options=_engine.fit_glmm._options(("cpu", False, False)))
        programs[separate] = lambda d, p=program: jax.block_until_ready(p(d))
    out.append(("one segment sum per output with the fused emitters", "`_jit.kernels_for`",
                programs[True], programs[False], lambda: design,
                f"warm Bernoulli q = 2 fit of {rows:.0e} rows, fused emitters; against one sum over the stacked "
                "outputs"))

    # A 1M-row fit as jaxmm compiles it (the elemental emitters), with the rows in tiles of
    # 4 or one per row (per-row segment sums), and with logit's log1p as jaxmm's polynomial
    # or XLA's log1p.
    from jaxmm import _families
    from jaxmm._jit import kernels_for

    small = 1_000_000
    table = _bernoulli(small, seed=1)
    tiled = {tile: design_from_formula(parse_formula("y ~ x + (x | g)"), table, bucket=True, tile=tile)[0]
             for tile in (4, 1)}

    def elemental_fit(design, log1p=None):
        original = _families.log1p_unit
        if log1p is not None:
            _families.log1p_unit = log1p
        try:
            program = jax.jit(lambda d: _engine._fit_glmm(None, d, fam, kernels=kernels_for("cpu", True))).lower(
                design).compile(compiler_options=_engine.fit_glmm._options(("cpu", True, False)))
        finally:
            _families.log1p_unit = original
        return lambda d: jax.block_until_ready(program(d))

    in_tiles, by_row = elemental_fit(tiled[4]), elemental_fit(tiled[1])
    out.append(("groups in whole tiles of 4 rows", "`_types.TILE_ROWS`",
                lambda _: in_tiles(tiled[4]), lambda _: by_row(tiled[1]), lambda: None,
                f"warm Bernoulli q = 2 fit of {small:.0e} rows, elemental emitters; against one row per tile "
                "(per-row segment sums)"))
    out.append(("logit's log1p as a polynomial", "`_families.log1p_unit`", elemental_fit(tiled[4]),
                elemental_fit(tiled[4], jnp.log1p), lambda: tiled[4],
                f"warm Bernoulli q = 2 fit of {small:.0e} rows, elemental emitters; against XLA's `log1p`"))

    # The Hessian after the optimum: forward differences of the exact gradient in float64
    # (k extra gradients), or central ones (2k).
    cbpp = jaxmm.load_example("cbpp")

    def fit(central):
        def run(_):
            original = _verdict.central_differences
            # read by name in both modules when the fit is traced
            _driver.central_differences = _verdict.central_differences = lambda dtype: central
            try:
                jax.clear_caches()
                return jaxmm.fit("incidence ~ C(period) + (1 | herd)", cbpp, family="binomial", trials="size")
            finally:
                _driver.central_differences = _verdict.central_differences = original
        return run

    evals = {c: fit(c)(None).n_eval for c in (False, True)}
    out.append(("forward differences for the Hessian in float64", "`_verdict.central_differences`",
                fit(False), fit(True), lambda: None,
                f"cbpp, cold fit (the program compiled each time); evaluations {evals[False]} against "
                f"{evals[True]} with central differences"))
    return out


def compile_decisions():
    """Decisions about what a program compiles, timed as fresh traces and compiles."""
    import itertools

    import jax
    import jax.numpy as jnp

    import jaxmm
    from jaxmm import _simulate
    from jaxmm._engine import _fit_lmm
    from jaxmm._place_rows import to_device

    out = []
    sizes = itertools.count(1000)

    def new_shapes(put):  # four host arrays of shapes not seen before, as a cold fit has
        n = next(sizes)
        return jax.block_until_ready([put(np.ones(n + k)) for k in range(4)])

    out.append(("`jax.device_put` rather than `jnp.asarray` for host arrays", "`_place_rows.to_device`",
                lambda _: new_shapes(to_device), lambda _: new_shapes(jnp.asarray), lambda: None,
                "four host arrays of new shapes; against `jnp.asarray`"))

    def solve_compile(solve):
        def run(_):
            G = jnp.eye(5) * 2.0
            return jax.jit(lambda A, b: solve(A, b)).lower(G, jnp.ones(5)).compile()
        return run

    out.append(("start values' β by a Cholesky solve", "`_start.initial_theta`",
                solve_compile(lambda A, b: jax.scipy.linalg.cho_solve((jnp.linalg.cholesky(A), True), b)),
                solve_compile(jnp.linalg.solve), lambda: None,
                "trace and compile of one 5 × 5 solve; against `jnp.linalg.solve` (LU with pivoting)"))

    sleep = jaxmm.fit("Reaction ~ Days + (Days | Subject)", jaxmm.load_example("sleepstudy"), method="ML")
    Y = np.tile(np.asarray(sleep.design.y), (8, 1))

    def refit_compile(keep):
        def run(_):
            fit = lambda y: {k: v for k, v in _fit_lmm(None, sleep.design._replace(y=y), False).items() if keep(k)}
            return jax.jit(jax.vmap(fit)).lower(Y).compile()
        return run

    out.append(("a refit's program returns only the estimates and counters", "`_simulate.REFIT_OUTPUTS`",
                refit_compile(lambda k: k in _simulate.REFIT_OUTPUTS), refit_compile(lambda k: True),
                lambda: None, "trace and compile of the vmapped sleepstudy ML refit; against every output"))

    cbpp = jaxmm.fit("incidence ~ C(period) + (1 | herd)", jaxmm.load_example("cbpp"), family="binomial",
                     trials="size")
    design, fam = cbpp.design, cbpp.family_spec

    def split_keys(seed, design, beta, chol, dispersion, n):  # the alternative: a vmap over n keys
        def one(key):
            kb, ky = jax.random.split(key)
            b = jax.random.normal(kb, (design.n_groups, chol.shape[0]), beta.dtype) @ chol.T
            eta = design.X @ beta + design.offset + jnp.sum(design.Z * b[design.group], axis=-1)
            return fam.sample(ky, eta, design.trials.astype(beta.dtype), dispersion, design.weights)
        return jax.vmap(one)(jax.random.split(jax.random.key(seed), n))

    def draws_compile(draw):
        def run(_):
            args = (0, design, cbpp.params.beta, cbpp.params.chol, jnp.ones(()))
            return jax.jit(lambda *a: draw(*a), static_argnums=()).lower(*args).compile()
        return run

    simulate = _simulate.simulate_responses.__wrapped__
    out.append(("simulated responses drawn once with shape (n, …), the key made inside the program",
                "`_simulate.simulate_responses`",
                draws_compile(lambda *a: simulate(*a, fam, 500)), draws_compile(lambda *a: split_keys(*a, 500)),
                lambda: None, "trace and compile of 500 cbpp draws; against a vmap over 500 split keys"))
    return out


def small_matrix_decisions(groups=20000, repeats=20):
    """The q×q factorisations unrolled over the groups against jaxlib's batched kernels, warm."""
    import jax
    import jax.numpy as jnp

    from jaxmm import _smallmat

    out = []
    for q in (2, 3):
        def make(q=q):
            A = np.random.default_rng(q).normal(size=(groups, q, q))
            return jnp.asarray(A @ np.swapaxes(A, 1, 2) + q * np.eye(q))

        def unrolled(A):
            L = _smallmat.cholesky(A)
            return _smallmat.logdet_from_cholesky(L), _smallmat.cho_inverse(L)

        def batched(A):
            L = jnp.linalg.cholesky(A)
            inv = jax.scipy.linalg.cho_solve((L, True), jnp.broadcast_to(jnp.eye(A.shape[-1]), A.shape))
            return 2.0 * jnp.sum(jnp.log(jnp.diagonal(L, axis1=-2, axis2=-1)), -1), inv

        def timed(fn):
            jitted = jax.jit(fn)
            return lambda A: jax.block_until_ready([jitted(A) for _ in range(repeats)])

        out.append(("q×q factorisations unrolled over the groups, not jaxlib's batched potrf/trsm",
                    "`_smallmat`", timed(unrolled), timed(batched), make,
                    f"{repeats} Cholesky factors, log-determinants and inverses of {groups:,} "
                    f"{q}×{q} matrices, warm; against `jnp.linalg.cholesky` and `cho_solve`"))
    return out


def crossed_decisions(repeats=10):
    """The Schur complement of several terms: its pair sum scattered by flat index or by
    (row, column) pairs, warm, on a crossed design of InstEval's size."""
    import jax
    import jax.numpy as jnp

    from jaxmm import _crossed_lmm as cl

    rng = np.random.default_rng(4)
    n, m1, m2 = 73_421, 2_972, 1_128
    g1, g2 = rng.integers(0, m1, n), rng.integers(0, m2, n)
    terms = cl.Terms(q=(1, 1), m=(m1, m2))
    stats = cl.crossed_stats(rng.normal(size=n), np.ones((n, 1)), [np.ones((n, 1))] * 2, [g1, g2], terms)
    lams = (jnp.array([[0.3]]), jnp.array([[0.4]]))

    def by_pairs(lams, st):  # the alternative: a scatter with (row, column) index arrays
        f = cl.factor(lams, st, terms)
        Cc, r = f.Cc, terms.rest
        blocks = jnp.einsum("pia,pib->pab", Cc[st.pair_a], Cc[st.pair_b])
        rows, cols = st.cell_cols[st.pair_a][:, :, None], st.cell_cols[st.pair_b][:, None, :]
        return jnp.zeros((r + 1, r + 1)).at[rows, cols].add(blocks)

    def flat(lams, st):
        f = cl.factor(lams, st, terms)
        Cc, r = f.Cc, terms.rest
        blocks = jnp.einsum("pia,pib->pab", Cc[st.pair_a], Cc[st.pair_b])
        target = st.cell_cols[st.pair_a][:, :, None] * (r + 1) + st.cell_cols[st.pair_b][:, None, :]
        return jnp.zeros(((r + 1) ** 2,)).at[target.reshape(-1)].add(blocks.reshape(-1))

    def timed(fn):
        jitted = jax.jit(fn)
        return lambda _: jax.block_until_ready([jitted(lams, stats) for _ in range(repeats)])

    out = [("the Schur complement's pair sum scattered by flat index", "`_crossed_lmm.factor`", timed(flat),
            timed(by_pairs), lambda: None,
            f"{repeats} factorisations and pair sums of a crossed design of {n:,} rows, {m1:,} × {m2:,} levels "
            f"({stats.pair_a.shape[0]:,} pairs a ≤ b of cells), warm; against (row, column) index arrays")]

    # C_cᵀC_c from the pairs a ≤ b (M + Mᵀ, a cell's own block halved) or from every ordered pair
    Cc, r = cl.factor(lams, stats, terms).Cc, terms.rest
    a, b = np.asarray(stats.pair_a), np.asarray(stats.pair_b)
    other = a != b
    every = (jnp.asarray(np.concatenate([a, b[other]])), jnp.asarray(np.concatenate([b, a[other]])))

    def pair_sum(pa, pb, scale):
        blocks = jnp.einsum("pia,pib->pab", Cc[pa], Cc[pb]) * scale[:, None, None]
        target = stats.cell_cols[pa][:, :, None] * (r + 1) + stats.cell_cols[pb][:, None, :]
        return jnp.zeros(((r + 1) ** 2,)).at[target.reshape(-1)].add(blocks.reshape(-1)).reshape(r + 1, r + 1)

    def half(pa, pb):
        M = pair_sum(pa, pb, jnp.where(pa == pb, 0.5, 1.0))
        return M + M.T

    def repeated(fn, *args):
        jitted = jax.jit(fn)
        return lambda _: jax.block_until_ready([jitted(*args) for _ in range(repeats)])

    out.append(("C_cᵀC_c summed over the pairs a ≤ b of cells, then M + Mᵀ", "`_crossed_lmm.schur`",
                repeated(half, stats.pair_a, stats.pair_b),
                repeated(lambda pa, pb: pair_sum(pa, pb, jnp.ones(pa.shape)), *every), lambda: None,
                f"{repeats} pair sums at InstEval's size ({a.size:,} pairs a ≤ b), warm; against the "
                f"{every[0].shape[0]:,} ordered pairs"))

    # the pair products: one scalar column of C_c gathered at a time, or its (q₁, q̄) rows, on a
    # user × item design's C_c (q₁ = 2)
    big = cl.Terms(q=(2, 1), m=(50_000, 1_000))
    n_big = 1_000_000
    users, items = rng.integers(0, 50_000, n_big), rng.integers(0, 1_000, n_big)
    x = rng.normal(size=n_big)
    cells = cl.crossed_stats(np.zeros(n_big), np.zeros((n_big, 1)), [np.column_stack([np.ones(n_big), x]),
                                                                     np.ones((n_big, 1))], [users, items], big)
    C = jnp.asarray(rng.normal(size=(cells.cell_level.shape[0], 2, 1)))

    def by_columns(C, pa, pb):
        at_a = lambda col: col.at[pa].get(mode="promise_in_bounds", indices_are_sorted=True)
        at_b = lambda col: col.at[pb].get(mode="promise_in_bounds")
        return sum(at_a(C[:, i, 0]) * at_b(C[:, i, 0]) for i in range(2))

    def by_rows(C, pa, pb):
        return jnp.einsum("pia,pib->pab", C[pa], C[pb])[:, 0, 0]

    out.append(("the pair products gather one scalar column of C_c at a time", "`_crossed_lmm.schur`",
                repeated(by_columns, C, cells.pair_a, cells.pair_b),
                repeated(by_rows, C, cells.pair_a, cells.pair_b), lambda: None,
                f"{repeats} pair products of a 1M-row user × item design, (x \\| user) + (1 \\| item) "
                f"({cells.pair_a.shape[0]:,} pairs), warm; against gathering C_c's (2, 1) rows"))

    # the profiled REML criterion's gradient: log|S| and TᵀS⁻¹T with their written derivative,
    # or JAX's through the Cholesky factor
    from jax.scipy.linalg import cho_solve

    def plain(S, T):
        C = jnp.linalg.cholesky(S)
        return 2.0 * jnp.sum(jnp.log(jnp.diagonal(C))), T.T @ cho_solve((C, True), T)

    def gradient(forms):
        def run(lams, st):
            original = cl.logdet_and_forms
            cl.logdet_and_forms = forms
            try:
                return jax.grad(lambda l: cl.profiled_loglik(l, st, terms, True))(lams)
            finally:
                cl.logdet_and_forms = original
        return repeated(jax.jit(run), lams, stats)

    out.append(("log\\|S\\| and TᵀS⁻¹T with their derivative written from S⁻¹", "`_spd.logdet_and_forms`",
                gradient(cl.logdet_and_forms), gradient(plain), lambda: None,
                f"{repeats} gradients of the profiled REML criterion at InstEval's size, warm; against JAX's "
                "derivative through the Cholesky factor"))
    return out


def quick_decisions():
    """Small programs at LLVM's optimisation level 0: a first fit, cold (JAX's caches
    cleared first), and the price, a warm fit."""
    import jax

    import jaxmm
    from jaxmm import _engine

    def fit_at(limit, formula, data, **kw):
        def run(_):
            original = _engine.QUICK_MAX_ROWS
            _engine.QUICK_MAX_ROWS = original if limit is None else limit
            try:
                return jaxmm.fit(formula, data, **kw)
            finally:
                _engine.QUICK_MAX_ROWS = original
        return run

    sleep = ("Reaction ~ Days + (Days | Subject)", jaxmm.load_example("sleepstudy"))
    contra = ("use01 ~ age + age2 + urban01 + C(livch) + (urban01 | district)",
              pd.read_csv(ROOT / "tests" / "data" / "contraception_q2.csv"))
    seeds = ("y ~ x + (x | subject)", pd.read_csv(ROOT / "tests" / "data" / "seedlike_bernoulli_q2.csv"))
    grouse = ("TICKS ~ C(YEAR) + cHEIGHT + (1 | BROOD) + (1 | INDEX) + (1 | LOCATION)",
              pd.read_csv(ROOT / "tests" / "data" / "crossed" / "grouseticks_three_terms.csv"))
    name = "programs over at most 2,048 rows compile at LLVM's optimisation level 0"
    out = []
    for what, (formula, data), kw, before in (
            ("cold sleepstudy REML fit (180 rows)", sleep, {}, jax.clear_caches),
            ("cold grouseticks Poisson fit with three terms (403 rows)", grouse, {"family": "poisson"},
             jax.clear_caches),
            ("cold contraception Bernoulli q = 2 fit (1,934 rows)", contra, {"family": "binomial"}, jax.clear_caches),
            ("warm contraception Bernoulli q = 2 fit (1,934 rows)", contra, {"family": "binomial"}, None)):
        out.append((name, "`_engine.QUICK_MAX_ROWS`", fit_at(None, formula, data, **kw), fit_at(0, formula, data, **kw),
                    lambda: None, f"{what}; against the default level", *([before] if before else [])))
    out.append((name, "`_engine.QUICK_MAX_ROWS`", fit_at(None, *seeds, family="binomial"),
                fit_at(1 << 40, *seeds, family="binomial"), lambda: None,
                "above the limit: warm Bernoulli q = 2 fit of 12,867 rows at the default level; against level 0"))
    return out


def many_fit_decisions():
    """Decisions for many fits in one call, timed cold (JAX's caches cleared first)."""
    import jax

    import jaxmm
    from jaxmm import _engine, _gc, _simulate

    out = []
    frames = []
    for r in range(200):
        frame = _bernoulli(480, seed=100 + r)
        frame["g"] = frame["g"] % 48
        frames.append(frame.assign(rep=r))
    reps = pd.concat(frames, ignore_index=True)

    def by_fit(fused):
        def run(_):
            original = _engine.ELEMENTAL_MAX_ROWS
            _engine.ELEMENTAL_MAX_ROWS = 0 if fused else original
            try:
                return jaxmm.fit("y ~ x + (x | g)", reps, family="binomial", by="rep")
            finally:
                _engine.ELEMENTAL_MAX_ROWS = original
        return run

    out.append(("vmapped fits count all replicates' rows toward the elemental emitters' limit",
                "`_engine.elemental_rows`", by_fit(False), by_fit(True), lambda: None,
                "cold by= fit of 200 Bernoulli q = 2 replicates of 480 rows (elemental emitters); against "
                "XLA:CPU's fused emitters", jax.clear_caches))

    lmm_reps = reps.assign(y=reps["x"] + 0.3 * (reps["g"] % 5) + np.random.default_rng(7).normal(size=len(reps)))

    def heap(frozen):
        def run(_):
            original = _gc.frozen_heap
            _gc.frozen_heap = original if frozen else contextlib.nullcontext
            try:
                return jaxmm.fit("y ~ x + (1 | g)", lmm_reps, by="rep")
            finally:
                _gc.frozen_heap = original
        return run

    ballast = [{"k": i, "v": [i]} for i in range(2_000_000)]  # a process holding many objects, as pandas does
    out.append(("the garbage collector's heap frozen while a fit is traced", "`_gc.frozen_heap`", heap(True),
                heap(False), lambda: ballast,
                "cold by= LMM fit of 200 replicates of 480 rows, 2M Python objects held; against collections "
                "walking the whole heap", jax.clear_caches))

    cbpp = jaxmm.load_example("cbpp")
    state = {}

    def fitted():  # a fresh process's state after the fit: the fit's program compiled, nothing else
        jax.clear_caches()
        res = jaxmm.fit("incidence ~ C(period) + (1 | herd)", cbpp, family="binomial", trials="size")
        state["res"], state["Y"] = res, _simulate._draw(res, 500, 1)

    refits = lambda one_by_one: lambda _: _simulate._refits(state["res"], state["Y"], state["res"].family_spec,
                                                              one_by_one)
    out.append(("on the CPU, bootstrap refits one by one rather than one vmapped program", "`_simulate.bootstrap`",
                refits(True), refits(False), lambda: None,
                "500 cbpp refits right after the fit (the fit's program compiled); against one vmapped program",
                fitted))
    return out


def merge_rows(path: Path, lines: list, note: str) -> None:
    """Rerun rows into the table at ``path``: a row with the same decision, place and setting
    is replaced, a new one goes after the last row; the other rows are kept, and ``note``
    says which were rerun."""
    key = lambda line: tuple(line.split(" | ")[:3])
    new = {key(line): line for line in lines}
    kept = [new.pop(key(line), line) for line in path.read_text().splitlines()]
    last = max(i for i, line in enumerate(kept) if line.startswith("|"))
    kept = kept[:last + 1] + list(new.values()) + kept[last + 1:] + ["", note]
    path.write_text("\n".join(kept) + "\n")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rows", type=float, default=1e7)
    ap.add_argument("--fit-rows", type=float, default=4e6)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--only", default="", help="comma-separated words; run the decisions whose name has one")
    ap.add_argument("--out", default=str(HERE / "results" / "decisions.md"))
    args = ap.parse_args()
    sys.path.insert(0, str(ROOT))
    import jax

    jax.config.update("jax_enable_x64", True)
    rows = int(args.rows)
    decisions = (host_decisions(rows) + compile_decisions() + fit_decisions(int(args.fit_rows))
                 + small_matrix_decisions() + crossed_decisions() + quick_decisions() + many_fit_decisions())
    words = [w for w in args.only.split(",") if w]
    lines = []
    for name, where, chosen, alternative, make, setting, *before in decisions:
        if words and not any(w in name for w in words):
            continue
        a, b = compare(chosen, alternative, make, args.repeats, *before)
        line = f"| {name} | {where} | {setting} | {a:.3f} | {b:.3f} | {b / a:.2f} |"
        print(line, flush=True)
        lines.append(line)
    if words and Path(args.out).exists():
        # --only: the other rows of the table are kept, and the header says which were rerun
        merge_rows(Path(args.out), lines, f"Rows whose decision has {', '.join(repr(w) for w in words)} in its "
                   f"name: `--only {args.only} --repeats {args.repeats}` at {commit()}.")
        print(f"updated {args.out}")
        return
    head = [
        "# Performance decisions against their alternatives", "",
        f"`python benchmarks/decisions.py --rows {args.rows:.0e} --fit-rows {args.fit_rows:.0e} "
        f"--repeats {args.repeats}` at {commit()}, "
        f"{machine()}, jax {jax.__version__}, "
        f"numpy {np.__version__}, pandas {pd.__version__}. Medians of {args.repeats} alternating runs each, "
        "after one untimed call of each.", "",
        "| decision | where | setting | jaxmm (s) | alternative (s) | alternative / jaxmm |",
        "|---|---|---|---:|---:|---:|",
    ]
    Path(args.out).write_text("\n".join(head + lines) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
