"""formulaic's model matrices of jaxmm's formula text, and lme4's spelling of their column
names."""
from __future__ import annotations

import re
import warnings

import pandas as pd

from .errors import DataError, FormulaError


# A treatment-coded factor's column, from C(name) or from a factor (text, category, bool) used bare.
_CATEGORY = re.compile(r"^(?:C\((\w+)\)|(\w+))\[T\.(.*)\]$")


def _lme4_name(name: str, factors: bool = True) -> str:
    """A formulaic column name in lme4's spelling: Intercept -> (Intercept), and with
    ``factors`` C(period)[T.2] and period[T.2] -> period2, x:period[T.2] -> x:period2."""
    if name == "Intercept":
        return "(Intercept)"
    if not factors:
        return name
    return ":".join(_CATEGORY.sub(lambda m: (m.group(1) or m.group(2)) + m.group(3), part) for part in name.split(":"))


def _lme4_names(names) -> list[str]:
    """:func:`_lme4_name` of each column, or formulaic's names where two spellings would be the
    same (a factor c with a level b beside a column cb): labels must tell the columns apart."""
    spelled = [_lme4_name(n) for n in names]
    return spelled if len(set(spelled)) == len(spelled) else [_lme4_name(n, factors=False) for n in names]


def for_formulaic(data: pd.DataFrame) -> pd.DataFrame:
    """The table as formulaic is to read it. formulaic encodes text of pandas' default string
    dtype ("str") by its levels, but passes text of the "string" dtype (missing values as
    pd.NA) through as text, which then fails to convert to floats; as Python strings it is
    encoded like "str"."""
    text = [c for c, dtype in data.dtypes.items()
            if isinstance(dtype, pd.StringDtype) and dtype.na_value is pd.NA and (data.columns == c).sum() == 1]
    return data.astype(dict.fromkeys(text, object)) if text else data


def _model_matrix(text: str, frame: pd.DataFrame, what: str, spec=None, state=None):
    """formulaic's model matrix of jaxmm's formula ``text`` over the model frame; its errors
    as one jaxmm error, in the user's terms (``spec.display``). ``state``: the stateful
    transforms' state, where it was learnt from other rows than the frame's."""
    from formulaic import ModelSpec, model_matrix

    try:
        if state:
            return ModelSpec(formula=text, transform_state=state).get_model_matrix(for_formulaic(frame),
                                                                                   na_action="raise")
        return model_matrix(text, for_formulaic(frame), na_action="raise")
    except Exception as exc:  # formulaic raises many types; one clear jaxmm error instead
        msg = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        said = (spec.fixed if what.startswith("fixed") else spec.random) if spec is not None else text
        if spec is not None:
            msg = spec.display(msg)
        if "null values" in msg or "missing" in msg.lower():
            raise DataError(f"{what}: {msg}") from None
        raise FormulaError(f"cannot evaluate the {what} {said!r}: {msg}") from None


# Rows of the table that formulaic evaluates first. Where every column of a model matrix is
# the intercept or a numeric column of the table (most large fits: y ~ x1 + x2 + (x1 | g)),
# the full matrix is filled from the table's columns instead: formulaic's frames of a large
# table and their conversion to one array are slow and hold much fresh memory (docs/performance.md).
_HEAD_ROWS = 8


def _head_matrix(formula: str, head: pd.DataFrame):
    """formulaic's model matrix of the table's first rows, quietly: None where that fails or
    warns, so that the whole table is evaluated and reports it."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            return _model_matrix(formula, head, "formula")
    except Exception:
        return None


_C_OF_COLUMN = re.compile(r"^C\(\s*(\w+)\s*\)$")


def _factor_levels_of(model_spec, frame: pd.DataFrame) -> dict:
    """model-frame column -> levels of each factor formulaic encoded (its encoder state)."""
    out = {}
    for expr, (kind, state) in model_spec.encoder_state.items():
        if getattr(kind, "value", kind) != "categorical" or "categories" not in state:
            continue
        named = _C_OF_COLUMN.match(expr) or re.match(r"^C\((\w+),", expr)
        name = expr if expr in frame.columns else named.group(1) if named else None
        if name in frame.columns:
            out[name] = tuple(state["categories"])
    return out
