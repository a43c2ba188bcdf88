"""Predictions from a fit with several random-effect terms, for its own rows or a new table:
conditional on every term's BLUPs, on some factors' only (lme4's ``re.form = ~(1 | g)``),
at b = 0, or averaged over b (pandas at this edge)."""
from __future__ import annotations

import jax.numpy as jnp
import numpy as np
import pandas as pd

from ._grouping import factor_keys
from ._predict import _RE, _TYPES, level_positions, new_columns, new_offset
from ._table import as_pandas
from .errors import ArgumentError


def _chosen_terms(res, re) -> list:
    """The indices of the terms whose BLUPs enter η: every term for ``"conditional"``, none for
    ``"zero"`` and ``"population"`` (where b is integrated out), else the terms of the named
    factors."""
    if isinstance(re, str):
        if re not in _RE:
            raise ArgumentError(f"unknown re {re!r}; choose one of {list(_RE)} or a list of grouping factors "
                                f"among {list(res.n_levels)}")
        return list(range(len(res.terms))) if re == "conditional" else []
    labels = list(re) if isinstance(re, (list, tuple)) else None
    if labels is None or not all(isinstance(v, str) for v in labels):
        raise ArgumentError(f"re must be one of {list(_RE)} or a list of grouping factors, got {re!r}")
    unknown = [v for v in labels if v not in res.n_levels]
    if unknown:
        raise ArgumentError(f"re names grouping factor(s) {unknown} that the model does not have; its factors are "
                            f"{list(res.n_levels)}")
    return [k for k, term in enumerate(res.terms) if term.label in labels]


def _fitted_parts(res):
    """(X, offset, [Z_k], [level position of each row in term k]) of the fitted rows."""
    rows = res.rows
    offset = 0.0 if rows.offset is None else rows.offset
    return rows.X, offset, [t.Z for t in res.terms], [t.codes for t in res.terms], rows.index, []


def _new_parts(res, newdata: pd.DataFrame, offset, chosen):
    """As :func:`_fitted_parts` for a new table; a level not seen in fitting has position −1."""
    X, Zs, positions, new_groups = None, [], [], []
    for k, term in enumerate(res.terms):
        # the fixed columns once; Z only of the terms that enter η (or the marginal variance)
        Xk, Z = new_columns(term.spec, term.encoders, newdata, fixed=X is None)
        X = Xk if X is None else X
        Zs.append(Z)
        if k in chosen:
            pos, unseen = level_positions(term.values, factor_keys(newdata, term.columns), term.label)
            new_groups += [(term.label, v) for v in unseen if (term.label, v) not in new_groups]
        else:
            pos = np.full(len(newdata), -1)
        positions.append(pos)
    eta_offset = new_offset(res.terms[0].spec, newdata, res.fit_options.offset, offset)
    return X, eta_offset, Zs, positions, newdata.index, new_groups


def eta_parts(res, newdata, re, offset):
    """(Xβ + offset, Σ over the chosen terms of z_k b_k, [Z_k], index, new levels)."""
    chosen = _chosen_terms(res, re)
    if newdata is None:
        if offset is not None:
            raise ArgumentError("offset= applies to newdata; the fitted rows use the fit's own offset")
        X, off, Zs, positions, index, new_groups = _fitted_parts(res)
    else:
        X, off, Zs, positions, index, new_groups = _new_parts(res, as_pandas(newdata), offset, chosen)
    fixed = X @ res.fixef.to_numpy() + off
    random = np.zeros_like(fixed)
    for k in chosen:
        pos = positions[k]
        b = np.where(pos[:, None] < 0, 0.0, res.ranefs[k][np.maximum(pos, 0)])
        random = random + np.sum(Zs[k] * b, axis=1)
    return fixed, random, Zs, index, new_groups


def linear_predictors(res) -> tuple[np.ndarray, np.ndarray]:
    """(Xβ + offset, Xβ + offset + Σ_k Z_k b̂_k) for the fitted rows, in input order."""
    fixed, random, *_ = eta_parts(res, None, "conditional", None)
    return fixed, fixed + random


def predict(res, newdata=None, *, type="response", re="conditional", offset=None) -> pd.Series:
    if type not in _TYPES:
        raise ArgumentError(f"unknown type {type!r}; choose one of {list(_TYPES)}")
    fixed, random, Zs, index, new_groups = eta_parts(res, newdata, re, offset)
    family = res.family_spec
    if isinstance(re, str) and re == "population":
        from ._marginal import marginal_means

        # the terms are independent: Var(Σ_k z_k b_k) = Σ_k z_k D_k z_kᵀ
        var = sum(np.sum((Z @ L) ** 2, axis=1) for Z, L in zip(Zs, res.chols))
        mu = np.asarray(marginal_means(jnp.asarray(fixed), jnp.asarray(var), family))
        values = mu if type == "response" else np.asarray(family.link_function(jnp.asarray(mu)))
    else:
        eta = fixed + random
        values = eta if type == "link" else np.asarray(family.inverse_link(jnp.asarray(eta)))
    out = pd.Series(np.asarray(values, dtype=float), index=index, name="fit")
    out.attrs["new_groups"] = new_groups
    return out
