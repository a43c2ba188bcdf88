"""A one-term fit's engine output as a ``MixedModelResult``: the labels put back, and the
host-side verdicts on it (non-finite estimates, separation) that the optimiser cannot give."""
from __future__ import annotations

import numpy as np

from ._optimize import Status
from ._params import Params
from ._results import MixedModelResult


def _outcome(fam, info, out) -> tuple[Status, str]:
    """(status, message) of one fit from the engine's status and the host-side checks."""
    status = Status(int(out["status"]))
    finite = all(np.all(np.isfinite(out[k])) for k in ("beta", "vcov", "chol", "loglik"))
    if not finite:
        return Status.NONFINITE, "stopped: the estimates or their covariance are not finite"
    separated = _separation(fam, info, out)
    if separated:
        return Status.SEPARATED, separated
    return status, status.message


def _result(out, info, fam, formula, method, blocks, fit_options, design, n_devices=1,
            n_obs=None) -> MixedModelResult:
    """One fit's engine output (host arrays) and labels as a ``MixedModelResult``;
    ``n_obs`` where the layout holds only this process's rows."""
    layout = info.layout
    status, message = _outcome(fam, info, out)
    return MixedModelResult(
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
        D_array=out["chol"] @ out["chol"].T,
        sigma=float(out["dispersion"]) if fam.n_dispersion and fam.dispersion_name == "sigma" else None,
        nb_size=float(out["dispersion"]) if fam.dispersion_name == "nb_size" else None,
        ranef_array=out["ranef"][layout.group_slot],
        cond_var=out["cond_var"][layout.group_slot],
        loglik=float(out["loglik"]),
        n_obs=layout.row_slot.size if n_obs is None else n_obs,
        n_groups=layout.group_slot.size,
        converged=status == Status.CONVERGED,
        message=message,
        status=status,
        family_spec=fam,
        n_iter=int(out["n_iter"]),
        n_eval=int(out["n_eval"]),
        max_abs_grad=float(np.max(np.abs(out["grad"]))),
        params=Params(out["beta"], out["chol"], out["dispersion"]),
        n_dispersion=fam.n_dispersion,
        re_blocks=blocks,
        n_dropped=info.n_dropped,
        fit_options=fit_options,
        n_devices=n_devices,
        design=design,
        layout=layout,
        row_index=info.row_index,
        cov_natural=np.linalg.inv(out["hess"]) if "hess" in out else None,
        encoders=info.encoders,
    )


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
    if fam.name not in ("binomial", "poisson", "negative_binomial"):
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
