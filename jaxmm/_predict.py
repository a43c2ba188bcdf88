"""Predictions from a fitted model, for its own rows or a new table (pandas at this edge)."""
from __future__ import annotations


import jax.numpy as jnp
import numpy as np
import pandas as pd

from ._model_matrix import for_formulaic
from ._table import _as_float, _column, as_pandas
from ._formula_eval import evaluate, model_frame
from ._formula_nodes import unparse
from ._warn import warn
from .errors import ArgumentError, DataError, JaxmmWarning

_TYPES = ("response", "link")
_RE = ("conditional", "zero", "population")


def new_columns(spec, enc, newdata: pd.DataFrame, fixed: bool = True):
    """(X or None, Z) of a new table, with the fitted model's column encoding (``enc``)."""
    # The response need not be in newdata: only the model frame's columns are evaluated, and
    # a factor's level that the fit never saw is an error rather than its reference level.
    table = for_formulaic(model_frame(spec, newdata, enc.levels))
    try:
        X = enc.fixed.get_model_matrix(table, na_action="raise") if fixed else None
        random = enc.random.get_model_matrix(table, na_action="raise")
    except Exception as exc:  # formulaic raises many types: one clear jaxmm error instead
        msg = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise DataError(f"newdata: cannot evaluate the model's columns: {spec.display(msg)}") from None
    if fixed:
        X = _as_float("newdata fixed-effects columns", np.asarray(X[list(enc.fixed_kept)], dtype=float))
    return X, _as_float("newdata random-effects columns", np.asarray(random, dtype=float))


def new_offset(spec, newdata: pd.DataFrame, fit_offset, offset):
    """The offset of new rows: ``offset`` where given, else the fit's offset column, plus the
    formula's ``offset(...)`` terms (0 where there is none)."""
    out = 0.0
    if offset is not None:
        out = _as_float("offset", np.broadcast_to(np.asarray(offset, dtype=float), (len(newdata),)))
    elif isinstance(fit_offset, str):
        out = _as_float(f"offset column {fit_offset!r}", _column(newdata, fit_offset, "offset"))
    elif fit_offset is not None:
        raise ArgumentError("the fit's offset= was an array: pass predict(newdata, offset=...) with one value "
                            "per new row")
    for expr in spec.offsets:
        out = out + evaluate(expr, newdata, f"offset({unparse(expr)})")
    return out


def level_positions(levels, keys, group_name: str):
    """(position of each key among the fitted ``levels``, −1 for a level not seen in fitting;
    the unseen levels), warning how many rows they hold."""
    if pd.isna(keys).any():
        rows = np.flatnonzero(pd.isna(keys))
        raise DataError(f"newdata: grouping column {group_name!r} has missing values (first rows: "
                        f"{rows[:5].tolist()})")
    pos = pd.Index(levels).get_indexer(keys)
    unseen = pos < 0
    new_groups = pd.unique(keys[unseen]).tolist() if unseen.any() else []
    if new_groups:
        warn(f"{int(unseen.sum())} row(s) of newdata belong to {len(new_groups)} group(s) of "
             f"{group_name!r} not seen in fitting (e.g. {new_groups[:3]}); their random "
             "effects are set to 0 (the population value)", JaxmmWarning)
    return pos, new_groups


def _new_eta(res, newdata: pd.DataFrame, re: str, offset):
    """η for the rows of a new table, with the fitted model's column encoding."""
    from ._formula import parse_formula

    spec = parse_formula(res.formula)
    X, Z = new_columns(spec, res.encoders, newdata)
    eta = X @ res.beta + new_offset(spec, newdata, res.fit_options.offset, offset)
    new_groups = []
    if re == "conditional":
        keys = _column(newdata, res.group_name, "grouping")
        pos, new_groups = level_positions(list(res.group_labels), keys, res.group_name)
        b = np.where(pos[:, None] < 0, 0.0, res.ranef_array[np.maximum(pos, 0)])
        eta = eta + np.sum(Z * b, axis=1)
    return eta, Z, new_groups


def predict(res, newdata=None, *, type="response", re="conditional", offset=None) -> pd.Series:
    if type not in _TYPES:
        raise ArgumentError(f"unknown type {type!r}; choose one of {list(_TYPES)}")
    if re not in _RE:
        raise ArgumentError(f"unknown re {re!r}; choose one of {list(_RE)}")
    family = res.family_spec
    if newdata is None:
        if offset is not None:
            raise ArgumentError("offset= applies to newdata; the fitted rows use the fit's own offset")
        if re == "population":
            from ._marginal import population_means
            from ._sharding import to_host

            # numpy values straight into the jitted call (jnp.asarray would compile a copy program)
            mu = to_host(population_means(res.design, np.asarray(res.beta), np.asarray(res.params.chol),
                                          family))[res.layout.row_slot]
        else:
            fixed, full = res.linear_predictors()
            eta = full if re == "conditional" else fixed
        index, new_groups = res.row_index, []
    else:
        newdata = as_pandas(newdata)
        eta, Z, new_groups = _new_eta(res, newdata, re, offset)
        if re == "population":
            from ._marginal import marginal_means

            L = np.asarray(res.params.chol)
            mu = np.asarray(marginal_means(jnp.asarray(eta), jnp.asarray(np.sum((Z @ L) ** 2, axis=1)), family))
        index = newdata.index
    if re == "population":
        values = mu if type == "response" else np.asarray(family.link_function(jnp.asarray(mu)))
    else:
        values = eta if type == "link" else np.asarray(family.inverse_link(eta))
    out = pd.Series(np.asarray(values, dtype=float), index=index, name="fit")
    out.attrs["new_groups"] = new_groups
    return out
