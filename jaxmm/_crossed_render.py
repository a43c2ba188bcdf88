"""The summary of a fit with several random-effect terms, in lme4's layout."""
from __future__ import annotations

import numpy as np

from ._render import _fmt, _table


def summary_text(res) -> str:
    if res.family == "gaussian":
        title = f"Linear mixed model fit by {'REML' if res.method == 'REML' else 'maximum likelihood'}"
    else:
        title = ("Generalized linear mixed model fit by maximum likelihood (Laplace approximation)\n"
                 f" Family: {res.family} ( {res.link} )")
    out = [title, f"Formula: {res.formula}", ""]
    if res.method == "REML":
        out += [f"REML criterion at convergence: {res.deviance:.4f}", ""]
    stats = [["AIC", "BIC", "logLik", "deviance" if res.method != "REML" else "-2*REML"],
             [f"{res.aic:.1f}", f"{res.bic:.1f}", f"{res.loglik:.4f}", f"{res.deviance:.1f}"]]
    w = [max(len(a), len(b)) for a, b in zip(*stats)]
    out.append(" " + "  ".join(s.rjust(k) for s, k in zip(stats[0], w)))
    out.append(" " + "  ".join(s.rjust(k) for s, k in zip(stats[1], w)))
    out += ["", "Random effects:"]
    vc = res.varcorr()
    with_corr = any(len(c) for c in vc["corr"])
    rows, last = [], None
    for _, r in vc.iterrows():
        row = [r.group if r.group != last else "", r["name"], _fmt(r.variance), _fmt(r.std_dev)]
        if with_corr:
            row.append(" ".join(f"{c:.2f}" for c in r["corr"]))
        rows.append(row)
        last = r.group
    out += _table_left(rows, ["Groups", "Name", "Variance", "Std.Dev."] + (["Corr"] if with_corr else []))
    levels = "; ".join(f"{label}, {n}" for label, n in res.n_levels.items())
    out.append(f"Number of obs: {res.n_obs}, groups:  {levels}")
    if res.n_dropped:
        out.append(f"({res.n_dropped} rows with missing values dropped)")
    out += ["", "Fixed effects:"]
    se = np.sqrt(np.diag(res.vcov.to_numpy()))
    rows = [[str(name), f"{b:.5g}", f"{s:.5g}", f"{b / s:.3f}"] for name, b, s in zip(res.fixef.index, res.fixef, se)]
    if res.family != "gaussian":
        from math import erfc, sqrt

        from ._render import _pvalue
        rows = [r + [_pvalue(erfc(abs(float(r[3])) / sqrt(2.0)))] for r in rows]
    out += _table(rows, ["", "Estimate", "Std. Error"] + (["t value"] if res.family == "gaussian"
                                                           else ["z value", "Pr(>|z|)"]))
    out += ["", f"Optimizer: {res.message} ({res.n_iter} iterations, {res.n_eval} evaluations, "
            f"max|grad| {res.max_abs_grad:.2g})"]
    if not res.converged:
        out.append("WARNING: the fit did not converge; estimates may not be at the optimum.")
    return "\n".join(out)


def _table_left(rows, header):
    """Names left-aligned, numbers right-aligned (lme4's random-effects table)."""
    widths = [max(len(r[i]) for r in rows + [header]) for i in range(len(header))]
    line = lambda r: "  ".join(c.ljust(w) if i < 2 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths)))
    return [" " + line(header)] + [" " + line(r) for r in rows]
