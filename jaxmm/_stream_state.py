"""Stateful transforms (``center``, ``scale``, ``standardize``, ``poly``) in a design streamed
from a dataset. formulaic learns their state (a mean, a scale, the polynomials' recurrence
coefficients) from all the rows it is given at once; a streamed design's encodings come from
a sample. So the first pass gathers the transforms' arguments alone (one column of the model
frame each, not the table), formulaic learns each transform's state from those columns of all
the kept rows, as it does from a table, and the sample is encoded with that state.
"""
from __future__ import annotations

import dataclasses
import re

import numpy as np
import pandas as pd

from ._formula_eval import model_frame
from ._formula_parse import STATEFUL_FUNCTIONS
from ._model_matrix import for_formulaic

_CALL = re.compile(r"\b(?:%s)\(([^()]*)\)" % "|".join(sorted(STATEFUL_FUNCTIONS)))
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def stateful(spec) -> bool:
    """Whether the formula holds a transform whose state is learnt from all the rows."""
    return bool(argument_columns(spec))


def argument_columns(spec) -> tuple:
    """The model frame's columns that the formula's stateful transforms read (jaxmm writes
    their arguments as the frame's column names)."""
    names = {b.name for b in spec.bindings}
    used = set()
    for text in (spec.fixed_text, spec.random_text, *(t.random_text for t in spec.terms)):
        for args in _CALL.findall(text):
            used |= set(_NAME.findall(args)) & names
    return tuple(sorted(used))


def arguments_of(spec, columns: tuple):
    """A batch's values of the frame ``columns``: table -> {column: values}."""
    only = dataclasses.replace(spec, bindings=tuple(b for b in spec.bindings if b.name in columns))
    return lambda table: {c: np.asarray(v) for c, v in model_frame(only, table).items()}


def learnt_state(specs, arguments: dict) -> dict:
    """formulaic's state of every stateful transform of ``specs``' formulas, each transform
    learnt on its own from the ``arguments`` of all the kept rows."""
    from formulaic import model_matrix

    frame = for_formulaic(pd.DataFrame(arguments, copy=False))
    state = {}
    for spec in specs:
        for text in (spec.fixed_text, spec.random_text, *(t.random_text for t in spec.terms)):
            for call in _CALL.finditer(text):
                state.update(model_matrix(call.group(), frame, na_action="raise").model_spec.transform_state)
    return state
