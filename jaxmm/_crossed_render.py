"""The summary of a fit with several random-effect terms, in lme4's layout."""
from __future__ import annotations

import numpy as np

from ._render import (_finite_or_none, _table, aligned, correlation_lines, criteria_lines, data_lines,
                      fixed_effects_lines, optimizer_lines, residual_lines)


def summary_text(res) -> str:
    if res.family == "gaussian":
        title = f"Linear mixed model fit by {'REML' if res.method == 'REML' else 'maximum likelihood'}"
    else:
        title = ("Generalized linear mixed model fit by maximum likelihood (Laplace approximation)\n"
                 f" Family: {res.family} ( {res.link} )")
    out = ([title, f"Formula: {res.formula}"] + data_lines(res) + [""] + criteria_lines(res) + residual_lines(res)
           + ["Random effects:"])
    vc = res.varcorr()
    with_corr = any(len(c) for c in vc["corr"])
    rows, last = [], None
    var_text, sd_text = aligned(vc["variance"], 4), aligned(vc["std_dev"], 4)
    for (_, r), v, sd in zip(vc.iterrows(), var_text, sd_text):
        row = [r.group if r.group != last else "", r["name"], v, sd]
        if with_corr:
            row.append(" ".join(f"{c:.2f}" for c in r["corr"]))
        rows.append(row)
        last = r.group
    # names left-aligned, numbers right-aligned (lme4's random-effects table)
    out += _table(rows, ["Groups", "Name", "Variance", "Std.Dev."] + (["Corr"] if with_corr else []), left=2)
    levels = "; ".join(f"{label}, {n}" for label, n in res.n_levels.items())
    out.append(f"Number of obs: {res.n_obs}, groups:  {levels}")
    if res.n_dropped:
        out.append(f"({res.n_dropped} rows with missing values dropped)")
    out += ["", "Fixed effects:"] + fixed_effects_lines(res)
    out += [""] + correlation_lines(res) + optimizer_lines(res)
    return "\n".join(out)


def result_dict(res) -> dict:
    """Plain Python values only (None for a value that is not finite), ready for json.dump:
    the one-term result's fields, with the random effects per grouping factor."""
    ct, wald = res.coef_table(), res.coef_table(ddf="normal")
    vc = res.varcorr()
    return _finite_or_none({
        "formula": res.formula, "family": res.family, "link": res.link, "method": res.method,
        "fixef": {k: float(v) for k, v in res.fixef.items()},
        "se": {k: float(v) for k, v in ct["std_error"].items()},
        "z": {k: float(v) for k, v in wald["z"].items()},
        "df": {k: float(v) for k, v in ct["df"].items()} if "df" in ct.columns else None,
        "p": {k: float(v) for k, v in ct["p"].items()},
        "vcov": res.vcov.to_numpy().tolist(),
        "varcorr": [{"group": r.group, "name": r["name"], "variance": float(r.variance), "std_dev": float(r.std_dev),
                     "corr": [float(c) for c in r["corr"]]} for _, r in vc.iterrows()],
        "D": {label: np.asarray(D).tolist() for label, D in res.D.items()},
        "sigma": None if res.sigma is None else float(res.sigma),
        "n_levels": {label: int(n) for label, n in res.n_levels.items()},
        "ranef": {label: {"names": list(frame.columns), "levels": [str(v) for v in frame.index],
                          "values": frame.to_numpy().tolist(), "cond_var": np.asarray(res.cond_var[label]).tolist()}
                  for label, frame in res.ranef.items()},
        "loglik": float(res.loglik), "aic": float(res.aic), "bic": float(res.bic),
        "deviance": float(res.deviance), "npar": int(res.npar),
        "n_obs": int(res.n_obs), "n_dropped": int(res.n_dropped),
        "convergence": {"converged": bool(res.converged), "message": res.message,
                        "n_iter": int(res.n_iter), "n_eval": int(res.n_eval), "max_abs_grad": float(res.max_abs_grad)},
    })


def summary_html(res) -> str:
    """Notebook rendering: the summary's header, random-effects and fixed-effects tables."""
    import html

    kind = "Linear mixed model" if res.family == "gaussian" else f"GLMM, {res.family} ({res.link})"
    levels = ", ".join(f"{html.escape(label)} {n}" for label, n in res.n_levels.items())
    stats = (f"logLik {res.loglik:.4f} &nbsp; AIC {res.aic:.1f} &nbsp; BIC {res.bic:.1f} &nbsp; obs {res.n_obs} "
             f"&nbsp; levels: {levels}")
    status = "converged" if res.converged else "<b>NOT converged</b>: " + html.escape(res.message)
    vc = res.varcorr().assign(corr=lambda f: [" ".join(f"{c:.2f}" for c in cs) for cs in f["corr"]])
    return "".join([f"<div><b>{html.escape(kind)}</b> ({res.method})<br><code>{html.escape(res.formula)}</code><br>"
                    f"{stats}<br>{status}", "<p><b>Random effects</b></p>",
                    vc.to_html(index=False, na_rep="", float_format="%.4g"), "<p><b>Fixed effects</b></p>",
                    res.coef_table().to_html(float_format="%.4g"), "</div>"])
