"""Where a several-term fit's time goes: compilation, evaluations, and the pieces of one.

    python benchmarks/several_terms_parts.py [--problems verbagg,insteval,sim100k] [--repeats 5]

For each problem of ``several_terms.py`` (the same data): the compiled fit's trace, lowering
and XLA compile; the warm fit and its number of evaluations; and, warm, the pieces of one
evaluation at the estimate's neighbourhood: the blocked factorisation (Schur complement and
Cholesky), the objective, and the objective with its gradient. Medians of ``--repeats``.
Prints a Markdown table (and writes it with ``--out``).
"""
from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from several_terms import PROBLEMS, _data  # noqa: E402
from provenance import commit, machine  # noqa: E402


def _median(fn, repeats):
    import jax

    jax.block_until_ready(fn())
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        jax.block_until_ready(fn())
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def parts(name: str, folder: Path, repeats: int) -> list[str]:
    import jax
    import jax.numpy as jnp

    import jaxmm
    from jaxmm import _crossed_engine, _crossed_laplace, _crossed_lmm

    spec = PROBLEMS[name]
    data = pd.read_csv(_data(name, folder), dtype={c: str for c in spec["factors"]})
    captured = {}
    program = {"gaussian": "fit_crossed_lmm"}.get(spec["family"], "fit_crossed_glmm")
    original = getattr(_crossed_engine, program)

    def grab(*args, **kwargs):
        captured.update(args=args, kwargs=kwargs)
        return original(*args, **kwargs)

    setattr(_crossed_engine, program, grab)
    try:
        res = jaxmm.fit(spec["formula"], data, family=spec["family"])
    finally:
        setattr(_crossed_engine, program, original)
    args, kwargs = captured["args"], captured["kwargs"]
    compiled = getattr(_crossed_engine, program)
    key = ("cpu", True, False)
    jitted = compiled._for(key)
    jax.clear_caches()
    start = time.perf_counter()
    traced = jitted.trace(*args, **kwargs)
    t_trace = time.perf_counter() - start
    lowered = traced.lower()
    t_lower = time.perf_counter() - start - t_trace
    executable = lowered.compile()
    t_compile = time.perf_counter() - start - t_trace - t_lower
    warm = _median(lambda: executable(args[0])["loglik"], max(1, repeats // 2))  # the statics are compiled in

    data_arg, terms, structures = args[0], args[1], args[2]
    # the pieces at relative factors Λ_k = I/2 (their cost does not depend on the values)
    lams = tuple(jnp.eye(s if isinstance(s, int) else len(s)) * 0.5 for s in structures)
    if program == "fit_crossed_lmm":
        stats = data_arg
        fac = jax.jit(lambda l: _crossed_lmm.factor(l, stats, terms))
        f = jax.jit(lambda l: -_crossed_lmm.profiled_loglik(l, stats, terms, True))
        fg = jax.jit(jax.value_and_grad(f))
        factor, value, value_grad = (_median(lambda: fn(lams), repeats) for fn in (fac, f, fg))
    else:
        rows, fam = data_arg, args[3]
        p = rows.X.shape[1]
        beta = jnp.zeros(p, rows.X.dtype)
        one = jnp.ones((), rows.X.dtype)
        u1, u2 = jnp.zeros((terms.m[0], terms.q[0])), jnp.zeros((terms.rest,))
        m1, m2, _ = jax.jit(lambda l: _crossed_laplace.modes(beta, l, one, u1, u2, rows, terms, fam))(lams)
        w = jnp.ones(rows.y.shape[0], rows.X.dtype)
        gram = jax.jit(lambda: _crossed_laplace._gram(w, rows, terms))()
        fac = jax.jit(lambda b, l: _crossed_lmm.factor(l, gram, terms))
        f = jax.jit(lambda b, l: -_crossed_laplace.laplace_loglik(b, l, one, rows, terms, fam, m1, m2)[0])
        fg = jax.jit(jax.value_and_grad(f, argnums=(0, 1)))
        factor, value, value_grad = (_median(lambda: fn(beta, lams), repeats) for fn in (fac, f, fg))
    return [f"| {name} | {t_trace:.2f} | {t_lower:.2f} | {t_compile:.2f} | {warm:.3f} | {res.n_eval} | "
            f"{factor * 1e3:.1f} | {value * 1e3:.1f} | {value_grad * 1e3:.1f} |"]


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--problems", default="verbagg,insteval,sim100k")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--data", default=str(Path(tempfile.gettempdir()) / "jaxmm_several_terms"),
                    help="folder for the problems' CSV files (several_terms.py's)")
    ap.add_argument("--out", default="")
    args = ap.parse_args()
    sys.path.insert(0, str(HERE.parent))
    import jax

    jax.config.update("jax_enable_x64", True)
    folder = Path(args.data)
    folder.mkdir(parents=True, exist_ok=True)
    lines = ["| problem | trace s | lower s | XLA compile s | warm fit s | evaluations | factorisation ms | "
             "objective ms | objective and gradient ms |", "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for name in args.problems.split(","):
        lines += parts(name, folder, args.repeats)
        print(lines[-1], flush=True)
    head = ["# Several random-effect terms: where a fit's time goes", "",
            f"`python benchmarks/several_terms_parts.py --problems {args.problems} --repeats {args.repeats}` at "
            f"{commit()}, {machine()}, jax {jax.__version__}. The compile split "
            "is of a fresh trace; the warm fit runs the compiled program; the pieces are warm medians at Λ_k = I/2 "
            "(a Laplace objective from the modes there: one Newton iteration, then the differentiated step).", ""]
    text = "\n".join(head + lines) + "\n"
    print(text)
    if args.out:
        Path(args.out).write_text(text)


if __name__ == "__main__":
    main()
