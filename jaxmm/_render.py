"""Text rendering of results, in lme4's layout."""
from __future__ import annotations

import numpy as np


def _fmt(x: float, digits: int = 4) -> str:
    return f"{x:.{digits}g}" if abs(x) < 1e5 else f"{x:.{digits}e}"


def aligned(values, digits: int) -> list[str]:
    """A column of numbers with one number of decimals, enough for ``digits`` significant
    digits in its smallest non-zero entry (at most 6), so the decimal points line up, as R
    prints a column; very large or small entries in scientific notation."""
    values = np.asarray(values, dtype=float)
    finite = np.abs(values[np.isfinite(values) & (values != 0)])
    if finite.size and (finite.max() >= 1e6 or finite.min() < 1e-4):
        return [f"{v:.{digits - 1}e}" for v in values]
    decimals = int(np.clip(digits - 1 - np.floor(np.log10(finite.min())), 0, 6)) if finite.size else 0
    return [f"{v:.{decimals}f}" for v in values]


def _table(rows: list[list[str]], header: list[str], left: int = 1) -> list[str]:
    """Columns padded to a common width: the first ``left`` left-aligned (names), the rest right."""
    widths = [max(len(r[i]) for r in rows + [header]) for i in range(len(header))]
    line = lambda r: "  ".join(c.ljust(w) if i < left else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths)))
    return [" " + line(header)] + [" " + line(r) for r in rows]


def _pvalue(p: float) -> str:
    return "<2e-16" if p < 2e-16 else f"{p:.3g}"


def _model_title(res) -> str:
    if res.family_spec.exact:
        return f"Linear mixed model fit by {'REML' if res.method == 'REML' else 'maximum likelihood'}"
    if res.method == "AGHQ":
        return ("Generalized linear mixed model fit by maximum likelihood (Adaptive Gauss-Hermite Quadrature, "
                f"nAGQ = {res.nAGQ})")
    return "Generalized linear mixed model fit by maximum likelihood (Laplace approximation)"


def _correlated_pairs(res) -> np.ndarray:
    """(q, q) bool: True where two random effects share a block of L (their correlation is
    estimated); under (x || g) every effect is its own block."""
    blocks = res.re_blocks or (len(res.re_names),)
    block_of = np.repeat(np.arange(len(blocks)), blocks)
    return block_of[:, None] == block_of[None, :]


def summary_text(res) -> str:
    kind = _model_title(res)
    if res.family != "gaussian":
        kind += f"\n Family: {res.family} ( {res.link} )"
    out = [kind, f"Formula: {res.formula}"] + data_lines(res) + [""] + criteria_lines(res) + residual_lines(res)
    out.append("Random effects:")
    names = res.re_names
    sd = np.sqrt(np.diag(res.D_array))
    corr = res.corr.to_numpy()
    # Correlations are shown within blocks only: under (x || g) they are zero by construction.
    same_block = _correlated_pairs(res)
    with_corr = bool(np.any(same_block & ~np.eye(len(names), dtype=bool)))
    header = ["Groups", "Name", "Variance", "Std.Dev."] + (["Corr"] if with_corr else [])
    rows = []
    variances = list(np.diag(res.D_array)) + ([res.sigma ** 2] if res.sigma is not None else [])
    sds = list(sd) + ([res.sigma] if res.sigma is not None else [])
    var_text, sd_text = aligned(variances, 4), aligned(sds, 4)
    for k, name in enumerate(names):
        row = [res.group_name if k == 0 else "", name, var_text[k], sd_text[k]]
        if with_corr:
            row.append(" ".join(f"{corr[k, j]:.2f}" for j in range(k) if same_block[k, j]))
        rows.append(row)
    if res.sigma is not None:
        rows.append(["Residual", "", var_text[-1], sd_text[-1]] + ([""] if with_corr else []))
    out += [" " + r for r in _table([[c for c in r] for r in rows], header, left=2)]  # names left-aligned, as lme4
    out.append(f"Number of obs: {res.n_obs}, groups:  {res.group_name}, {res.n_groups}")
    if res.nb_size is not None:
        out.append(f"Dispersion parameter (nb_size, lme4's theta): {_fmt(res.nb_size)}")
    out.append("")
    out.append("Fixed effects:")
    out += fixed_effects_lines(res)
    out.append("")
    out += correlation_lines(res)
    out += optimizer_lines(res)
    return "\n".join(out)


def fixed_effects_lines(res) -> list[str]:
    """The fixed-effects table: for gaussian fits with Satterthwaite's df, t and p (as
    lmerTest's summary), for the others with z and p."""
    ct = res.coef_table()
    est, se = aligned(ct["estimate"], 5), aligned(ct["std_error"], 4)
    if "df" in ct.columns:
        rows = [[str(name), e, s, f"{r.df:.2f}", f"{r.t:.3f}", _pvalue(r.p)]
                for (name, r), e, s in zip(ct.iterrows(), est, se)]
        return _table(rows, ["", "Estimate", "Std. Error", "df", "t value", "Pr(>|t|)"])
    rows = [[str(name), e, s, f"{r.z:.3f}", _pvalue(r.p)] for (name, r), e, s in zip(ct.iterrows(), est, se)]
    return _table(rows, ["", "Estimate", "Std. Error", "z value", "Pr(>|z|)"])


def data_lines(res) -> list[str]:
    """What the fit used besides the formula, as lme4's header names it: prior weights, an
    offset, binomial trials, and the rows dropped for missing values."""
    opts, out = res.fit_options, []
    for label, value in (("Weights", opts.weights), ("Offset", opts.offset), ("Trials", opts.trials)):
        if value is not None:
            out.append(f"{label}: " + (value if isinstance(value, str) else f"an array of {np.size(value)} values"))
    if res.n_dropped:
        out.append(f"Rows dropped for missing values: {res.n_dropped}")
    return out


def residual_lines(res) -> list[str]:
    """lme4's "Scaled residuals": quantiles of the Pearson residuals (divided by σ for an LMM)."""
    r = res.residuals("pearson").to_numpy() / (res.sigma if res.family == "gaussian" else 1.0)
    q = np.quantile(r, [0.0, 0.25, 0.5, 0.75, 1.0])
    return ["Scaled residuals:"] + _table([[f"{v:.4f}" for v in q]], ["Min", "1Q", "Median", "3Q", "Max"], left=0) + [""]


def _abbreviated(name: str, length: int = 6) -> str:
    """R's ``abbreviate(name, 6)`` as lme4's summary uses it: lower-case vowels dropped from
    the end (not the first letter), then lower-case letters, then the end cut."""
    chars = list(name)
    for drop in ("aeiou", "abcdefghijklmnopqrstuvwxyz"):
        k = len(chars) - 1
        while len(chars) > length and k > 0:
            if chars[k] in drop and not chars[k - 1].isspace():
                del chars[k]
            k -= 1
    return "".join(chars[:length])


def correlation_lines(res) -> list[str]:
    """lme4's "Correlation of Fixed Effects" (for 2 to 12 fixed effects): the lower triangle."""
    vcov = res.vcov.to_numpy()
    p = vcov.shape[0]
    if not 1 < p <= 12:
        return []
    sd = np.sqrt(np.diag(vcov))
    corr = vcov / np.outer(sd, sd)
    names = [str(n) for n in res.vcov.index]
    rows = [[names[i]] + [f"{corr[i, j]:.3f}" for j in range(i)] + [""] * (p - 1 - i) for i in range(1, p)]
    return ["Correlation of Fixed Effects:"] + _table(rows, [""] + [_abbreviated(n) for n in names[:-1]]) + [""]


def criteria_lines(res) -> list[str]:
    """The REML criterion (REML fits) and the AIC, BIC, logLik, deviance and df.resid row, as
    lme4 prints them."""
    out = [f"REML criterion at convergence: {res.deviance:.4f}", ""] if res.method == "REML" else []
    stats = [["AIC", "BIC", "logLik", "deviance" if res.method != "REML" else "-2*REML", "df.resid"],
             [f"{res.aic:.1f}", f"{res.bic:.1f}", f"{res.loglik:.4f}", f"{res.deviance:.1f}",
              f"{res.n_obs - res.npar}"]]
    w = [max(len(a), len(b)) for a, b in zip(*stats)]
    return out + [" " + "  ".join(s.rjust(k) for s, k in zip(row, w)) for row in stats] + [""]


def optimizer_lines(res) -> list[str]:
    out = [f"Optimizer: {res.message} ({res.n_iter} iterations, {res.n_eval} evaluations, "
           f"max|grad| {res.max_abs_grad:.2g})"]
    if not res.converged:
        out.append("WARNING: the fit did not converge; estimates may not be at the optimum.")
    return out


def varcorr_frame(res):
    """The random-effects table of the summary as a DataFrame: one row per random effect
    (and ``Residual`` for gaussian), with its variance, SD and its correlations with the
    effects above it in the same block (NaN elsewhere)."""
    import pandas as pd

    names = list(res.re_names)
    sd = np.sqrt(np.diag(res.D_array))
    corr = res.corr.to_numpy()
    same_block = _correlated_pairs(res)
    rows = []
    for k, name in enumerate(names):
        row = {"group": res.group_name, "name": name, "variance": float(res.D_array[k, k]), "std_dev": float(sd[k])}
        for j in range(len(names) - 1):
            row[f"corr_{names[j]}"] = float(corr[k, j]) if j < k and same_block[k, j] else np.nan
        rows.append(row)
    if res.sigma is not None:
        row = {"group": "Residual", "name": "", "variance": res.sigma**2, "std_dev": res.sigma}
        row.update({f"corr_{names[j]}": np.nan for j in range(len(names) - 1)})
        rows.append(row)
    return pd.DataFrame(rows)


def _finite_or_none(value):
    """JSON has no NaN or infinity: such a value (an undefined standard error) is null."""
    if isinstance(value, float):
        return value if np.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _finite_or_none(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_finite_or_none(v) for v in value]
    return value


def result_dict(res) -> dict:
    """Plain Python values only (floats, ints, strings, lists, dicts, None for a value that is
    not finite), ready for json.dump."""
    ct, wald = res.coef_table(), res.coef_table(ddf="normal")
    labels = [str(g) for g in res.group_labels]
    return _finite_or_none({
        "formula": res.formula, "family": res.family, "link": res.link, "method": res.method, "nAGQ": res.nAGQ,
        "fixef": {k: float(v) for k, v in res.fixef.items()},
        "se": {k: float(v) for k, v in ct["std_error"].items()},
        "z": {k: float(v) for k, v in wald["z"].items()},
        "df": {k: float(v) for k, v in ct["df"].items()} if "df" in ct.columns else None,
        "p": {k: float(v) for k, v in ct["p"].items()},
        "vcov": np.asarray(res.vcov_array).tolist(),
        "re_names": list(res.re_names),
        "D": res.D_array.tolist(),
        "sd": [float(v) for v in np.sqrt(np.diag(res.D_array))],
        "sigma": None if res.sigma is None else float(res.sigma),
        "nb_size": None if res.nb_size is None else float(res.nb_size),
        "group": res.group_name,
        "ranef": {g: [float(v) for v in row] for g, row in zip(labels, np.asarray(res.ranef_array))},
        "cond_var": {g: np.asarray(cv).tolist() for g, cv in zip(labels, np.asarray(res.cond_var))},
        "loglik": float(res.loglik), "aic": float(res.aic), "bic": float(res.bic),
        "deviance": float(res.deviance), "npar": int(res.npar),
        "n_obs": int(res.n_obs), "n_groups": int(res.n_groups), "n_dropped": int(res.n_dropped),
        "singular": bool(res.singular),
        "convergence": {"converged": bool(res.converged), "message": res.message,
                        "n_iter": int(res.n_iter), "n_eval": int(res.n_eval), "max_abs_grad": float(res.max_abs_grad)},
    })


def summary_html(res) -> str:
    """Notebook rendering: the summary's header, random-effects and fixed-effects tables."""
    import html

    kind = _model_title(res) + ("" if res.family_spec.exact else f", {res.family} ({res.link})")
    fit_stats = (f"logLik {res.loglik:.4f} &nbsp; AIC {res.aic:.1f} &nbsp; BIC {res.bic:.1f} &nbsp; "
                 f"deviance {res.deviance:.1f} &nbsp; obs {res.n_obs} &nbsp; groups ({html.escape(res.group_name)}) "
                 f"{res.n_groups}")
    status = "converged" if res.converged else "<b>NOT converged</b>: " + html.escape(res.message)
    parts = [f"<div><b>{html.escape(kind)}</b><br><code>{html.escape(res.formula)}</code><br>{fit_stats}<br>{status}",
             "<p><b>Random effects</b></p>", varcorr_frame(res).to_html(index=False, na_rep="", float_format="%.4g"),
             "<p><b>Fixed effects</b></p>", res.coef_table().to_html(float_format="%.4g"), "</div>"]
    return "\n".join(parts)
