"""``jaxmm.fit``: formula and table in, labelled immutable result out."""
from __future__ import annotations

import warnings

import numpy as np

from ._design import design_from_formula
from ._engine import fit_glmm, fit_lmm
from ._families import get_family
from ._formula import parse_formula
from . import _progress
from ._optimize import OptOptions, Status
from ._params import Params
from ._results import MixedModelResult
from .errors import ArgumentError, ConvergenceWarning, DataError, SingularFitWarning

_METHODS = {"gaussian": ("REML", "ML"), "other": ("laplace",)}


def _resolve_method(family, method):
    allowed = _METHODS["gaussian" if family.name == "gaussian" else "other"]
    if method is None:
        return allowed[0]
    if not isinstance(method, str):
        raise ArgumentError(f"method must be a string; choose one of {list(allowed)}")
    for m in allowed:
        if method.lower() == m.lower():
            return m
    raise ArgumentError(f"unknown method {method!r} for family {family.name!r}; choose one of {list(allowed)}")


def fit(formula: str, data, family="gaussian", *, method: str | None = None, trials: str | None = None,
        link: str | None = None, offset=None, weights=None, missing: str = "raise", bucket: bool = True,
        dtype: str = "float64", verbose: bool = False) -> MixedModelResult:
    """Fit a (generalised) linear mixed model with one grouping factor.

    Parameters
    ----------
    formula : formulaic fixed part plus one lme4 random term, e.g. ``y ~ x + C(period) + (x | subject)``.
    data : a pandas DataFrame (or anything ``pandas.DataFrame`` accepts).
    family : ``"gaussian"`` (exact LMM), ``"binomial"``, ``"poisson"`` or ``"gamma"`` (Laplace).
        For gamma, ``sigma`` is the coefficient of variation 1/√shape.
    method : ``"REML"`` (gaussian default) or ``"ML"``; ``"laplace"`` for other families.
    trials : column with binomial trial counts; without it a binomial response is 0/1.
    link : the link function; the canonical one by default.
    offset : a column name or array added to the linear predictor; ``offset(expr)`` terms in
        the formula are added to it.
    weights : prior weights (a column name or array) for the gaussian family: row i has
        residual variance σ²/wᵢ, as lme4's ``weights=``.
    missing : ``"raise"`` (default) names each used column with missing values and their
        rows; ``"drop"`` drops those rows and records their number as ``n_dropped``.
    bucket : pad rows and groups up to the next of a coarse ladder of sizes (at most 25 %
        more) with inert rows, so that datasets of similar size reuse one compiled fit.
        The estimates do not change; ``False`` compiles for the exact shape.
    verbose : print progress (iteration, −loglik, max|gradient|) on stderr once a fit has
        run for about 2 s.
    dtype : ``"float64"`` (default) or ``"float32"``: the precision of the stored rows and
        of the row- and group-level arithmetic. float32 halves memory traffic (the GPU
        option); parameters, the optimiser and sums over groups stay in float64, and the
        exact LMM accumulates its statistics in float64. Expect estimates to agree with
        float64 to a few significant digits (measured in benchmarks/).
    """
    if missing not in ("raise", "drop"):
        raise ArgumentError(f"missing must be 'raise' or 'drop', got {missing!r}")
    if dtype not in ("float64", "float32"):
        raise ArgumentError(f"dtype must be 'float64' or 'float32', got {dtype!r}")
    fam = get_family(family, link)
    method = _resolve_method(fam, method)
    spec = parse_formula(formula)
    if trials is not None and fam.name != "binomial":
        raise ArgumentError(f"trials= applies only to the binomial family, not {fam.name!r}")
    if weights is not None and fam.name != "gaussian":
        raise ArgumentError(f"weights= (prior weights) applies only to the gaussian family, not {fam.name!r}; "
                            "for binomial counts use trials=")
    if not isinstance(bucket, bool):
        raise ArgumentError(f"bucket must be True or False, got {bucket!r}")
    design, info = design_from_formula(spec, data, trials=trials, offset=offset, weights=weights, dtype=dtype,
                                       bucket=bucket, missing=missing, check_response=fam.check_response)
    layout = info.layout
    n_obs, n_groups = layout.row_slot.size, layout.group_slot.size
    if n_groups < 2:
        raise DataError(f"grouping factor {spec.group!r} has a single level; a random effect needs at least two groups")

    # (x || g): independent random effects, D diagonal (lme4's double bar)
    blocks = None if spec.correlated else (1,) * design.Z.shape[1]
    opt = OptOptions(verbose=bool(verbose))
    if verbose:
        _progress.start()
    try:
        if fam.name == "gaussian":
            out = fit_lmm(None, design, method == "REML", opt=opt, blocks=blocks)
        else:
            out = fit_glmm(None, design, fam, opt=opt, chunks=layout.chunks, blocks=blocks)
        out = {k: np.asarray(v) for k, v in out.items()}
    finally:
        _progress.stop()
    out["ranef"], out["cond_var"] = out["ranef"][layout.group_slot], out["cond_var"][layout.group_slot]

    status = Status(int(out["status"]))
    converged, message = status == Status.CONVERGED, status.message
    finite = all(np.all(np.isfinite(out[k])) for k in ("beta", "vcov", "chol", "loglik"))
    if not finite:
        converged, message = False, "stopped: the estimates or their covariance are not finite"
    separated = _separation(fam, info, out) if finite else None
    if separated:
        converged, message = False, separated
    res = MixedModelResult(
        formula=formula,
        family=fam.name,
        link=fam.link,
        method=method,
        fixef_names=info.fixef_names,
        re_names=info.re_names,
        group_name=info.group_name,
        group_labels=info.group_labels,
        beta=out["beta"],
        vcov_array=out["vcov"],
        D=out["chol"] @ out["chol"].T,
        sigma=float(out["dispersion"]) if fam.n_dispersion else None,
        ranef_array=out["ranef"],
        cond_var=out["cond_var"],
        loglik=float(out["loglik"]),
        n_obs=n_obs,
        n_groups=n_groups,
        converged=converged,
        message=message,
        n_iter=int(out["n_iter"]),
        grad_norm=float(np.max(np.abs(out["grad"]))),
        params=Params(out["beta"], out["chol"], out["dispersion"]),
        n_dispersion=fam.n_dispersion,
        re_blocks=blocks,
        n_dropped=info.n_dropped,
        fit_options=dict(trials=trials, offset=offset, weights=weights, missing=missing),
    )
    if not res.converged:
        warnings.warn(f"the fit did not converge: {res.message}", ConvergenceWarning, stacklevel=2)
    elif res.singular:
        warnings.warn(
            "boundary (singular) fit: a random-effect variance is estimated as zero (or a correlation as "
            "±1), so D is singular. The data do not support this random-effects structure; the fixed "
            "effects are still valid, but consider dropping the term with zero variance.",
            SingularFitWarning, stacklevel=2)
    return res


# On the linear-predictor scale: an estimate this large, with a standard error this large,
# is a coefficient running off to infinity, not an estimate.
_DIVERGED_EFFECT, _DIVERGED_SE = 10.0, 100.0


def _separation(fam, info, out) -> str | None:
    """A reason string when a fixed effect diverges (complete or quasi-complete separation).

    Without a finite maximum likelihood estimate the optimiser stops where the likelihood
    is flat: the coefficient is huge and its standard error far larger (for a 0/1 split by
    x > 0, β·sd(x) ≈ 900 with SE·sd(x) ≈ 7e5). Both scaled by the column's SD must exceed
    the thresholds, so a strong but finite effect (large β, small SE) is not flagged.
    """
    if fam.name not in ("binomial", "poisson"):
        return None
    se = np.sqrt(np.abs(np.diag(out["vcov"])))
    scale = np.asarray(info.x_scale)
    bad = [(name, b * s, e * s) for name, b, e, s in zip(info.fixef_names, out["beta"], se, scale)
           if abs(b * s) > _DIVERGED_EFFECT and e * s > _DIVERGED_SE]
    if not bad:
        return None
    name, eff, err = bad[0]
    names = ", ".join(repr(n) for n, *_ in bad)
    return (f"complete or quasi-complete separation: the estimate for {names} diverges "
            f"({name}: coefficient x SD of the column = {eff:.3g}, its standard error x SD = {err:.3g}); "
            "the maximum likelihood estimate does not exist. Remove or merge the term or level that "
            "separates the outcomes")
