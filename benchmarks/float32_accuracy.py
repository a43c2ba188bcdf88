"""How close float32 fits come to float64 ones, with and without the driver's Newton polish.

For each registry problem: the float64 fit, then the float32 fit twice, once with the
polish switched off (``_driver.POLISH_ABOVE = inf``: the fit as judged by the float32
allowance alone) and once as shipped. Differences are in the float64 fit's own units: β in
standard errors, random-effect SDs and standard errors relative. Writes a Markdown table.

    python benchmarks/float32_accuracy.py --problems binomial-q2-100k-balanced,poisson-q1-100k-skewed \
        --out benchmarks/results/float32.md
"""
from __future__ import annotations

import argparse
import platform
import sys
import warnings
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import problems as P  # noqa: E402
from provenance import commit  # noqa: E402


def _fresh_programs():
    import jax

    from jaxmm import _engine

    jax.clear_caches()
    for program in (_engine.fit_glmm, _engine.fit_lmm):
        program._jitted.clear()


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--problems", default="binomial-q2-100k-balanced,poisson-q1-100k-skewed")
    ap.add_argument("--out", default=None)
    args = ap.parse_args(argv)

    import jax

    import jaxmm
    from jaxmm import _driver

    shipped = _driver.POLISH_ABOVE
    rows = []
    for pid in args.problems.split(","):
        df, formula, kw = P.generate(P.get(pid))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            r64 = jaxmm.fit(formula, df, **kw)
            se = np.sqrt(np.diag(r64.vcov))
            for label, threshold in (("off", np.inf), ("on", shipped)):
                _driver.POLISH_ABOVE = threshold
                _fresh_programs()  # the threshold is read when the program is traced
                r32 = jaxmm.fit(formula, df, dtype="float32", **kw)
                rows.append(dict(
                    problem=pid, polish=label, converged=r32.converged, n_eval=r32.n_eval, n_eval64=r64.n_eval,
                    beta_se=float(np.max(np.abs(r32.fixef.values - r64.fixef.values) / se)),
                    sd_rel=float(np.max(np.abs(r32.sd.values / r64.sd.values - 1))),
                    se_rel=float(np.max(np.abs(np.sqrt(np.diag(r32.vcov)) / se - 1))),
                    dll=float(r32.loglik - r64.loglik)))
                print(rows[-1], flush=True)
        _driver.POLISH_ABOVE = shipped

    lines = [
        "# float32 against float64",
        "",
        f"- **Machine:** {platform.processor() or platform.machine()}, backend {jax.default_backend()} "
        f"({jax.devices()[0].device_kind}); jax {jax.__version__}; jaxmm at {commit()}",
        f"- **Command:** `python benchmarks/float32_accuracy.py --problems {args.problems}`",
        "",
        "*polish*: the driver's Newton step for a converged fit whose decrement is above "
        "`_driver.POLISH_ABOVE` (off = switched off for the comparison). *|Δβ|/SE*: the largest "
        "float32 − float64 difference of a fixed effect in float64 standard errors; *ΔSD*, *ΔSE*: "
        "largest relative differences of the random-effect SDs and of the fixed effects' standard "
        "errors; *Δloglik*: float32 − float64 (the float32 value carries its rounding).",
        "",
        "| problem | polish | converged | evaluations (f32 / f64) | max abs(Δβ)/SE | max rel ΔSD | max rel ΔSE | Δloglik |",
        "|---|---|---|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(f"| {r['problem']} | {r['polish']} | {'yes' if r['converged'] else 'no'} | "
                     f"{r['n_eval']} / {r['n_eval64']} | {r['beta_se']:.1e} | {r['sd_rel']:.1e} | "
                     f"{r['se_rel']:.1e} | {r['dll']:+.1e} |")
    text = "\n".join(lines) + "\n"
    if args.out:
        Path(args.out).write_text(text)
        print(f"wrote {args.out}")
    else:
        print(text)


if __name__ == "__main__":
    main()
