"""Stateful transforms (``center``, ``scale``, ``standardize``, ``poly``) in a design streamed
from a dataset. formulaic learns their state (a mean, a scale, the polynomials' recurrence
coefficients) from all the rows it is given at once; a streamed design's encodings come from
a sample. So the first pass gathers the transforms' arguments alone (one column of the model
frame each, not the table), formulaic learns each transform's state from those columns of all
the kept rows, as it does from a table, and the sample is encoded with that state. Where each
process of a job holds its own rows, the state is made of sums over the processes instead
(:func:`shared_state`).
"""
from __future__ import annotations

import ast
import dataclasses
import inspect
import re

import numpy as np
import pandas as pd

from ._formula_eval import model_frame
from ._formula_parse import STATEFUL_FUNCTIONS
from ._model_matrix import for_formulaic

_CALL = re.compile(r"\b(?:%s)\(([^()]*)\)" % "|".join(sorted(STATEFUL_FUNCTIONS)))
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def argument_columns(spec) -> tuple:
    """The model frame's columns that the formula's stateful transforms read (jaxmm writes
    their arguments as the frame's column names)."""
    names = {b.name for b in spec.bindings}
    return tuple(sorted({n for call in _calls([spec]) for n in _NAME.findall(_CALL.match(call).group(1))} & names))


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
    for call in _calls(specs):
        state.update(model_matrix(call, frame, na_action="raise").model_spec.transform_state)
    return state


def _calls(specs) -> list:
    """The stateful calls of ``specs``' formulas, as jaxmm wrote them for formulaic."""
    texts = [t for s in specs for t in (s.fixed_text, s.random_text, *(term.random_text for term in s.terms))]
    return list(dict.fromkeys(m.group() for text in texts for m in _CALL.finditer(text)))


def shared_state(specs, arguments: dict, total) -> dict:
    """:func:`learnt_state` over a job's processes, each holding its share's ``arguments``:
    the sums each state is made of (counts, sums, sums of squares; the polynomials'
    recurrence sums degree by degree) are summed over the processes by ``total``, in the
    same order on every process. Equal to one process's state to rounding."""
    from formulaic import model_matrix
    from formulaic.transforms import TRANSFORMS

    frame = pd.DataFrame(arguments, copy=False)
    state = {}
    for call in _calls(specs):
        local = model_matrix(call, for_formulaic(frame), na_action="raise").model_spec.transform_state
        node = ast.parse(call, mode="eval").body
        name = node.func.id
        params = inspect.signature(TRANSFORMS[name]).bind(
            node.args[0].id, *(ast.literal_eval(a) for a in node.args[1:]),
            **{k.arg: ast.literal_eval(k.value) for k in node.keywords})
        params.apply_defaults()
        x = np.asarray(frame[node.args[0].id], dtype=np.float64)
        if name == "poly":
            learnt = {} if params.arguments["raw"] else _poly_state(x, params.arguments["degree"], total)
        else:  # center is scale(x, scale=False); standardize is scale(x, center, rescale, ddof=0)
            args = params.arguments
            learnt = _scale_state(x, args.get("center", True), args.get("scale", args.get("rescale", False)),
                                  args.get("ddof", 1), total)
        for key in local:  # formulaic's name of the call
            state[key] = learnt
    return state


def _scale_state(x, center, scale, ddof, total) -> dict:
    n, sum_x = total(np.array([x.size, np.sum(x)], np.float64))
    mean = None if center is False else np.float64(sum_x / n) if center is True else np.array(center)
    shift = x if mean is None else x - mean
    spread = None
    if scale is True:
        spread = np.float64(np.sqrt(total(np.array([np.sum(shift ** 2)]))[0] / (n - ddof)))
    elif scale is not False:
        spread = np.array(scale)
    return {"ddof": ddof, "center": mean, "scale": spread}


def _poly_state(x, degree: int, total) -> dict:
    """formulaic's three-term recurrence of monic orthogonal polynomials, its sums over all
    the processes' rows."""
    alpha, norms2 = {}, {}
    P = [np.ones_like(x)]
    for k in range(degree + 1):
        weighted, norm = total(np.array([np.sum(x * P[k] ** 2), np.sum(P[k] ** 2)]))
        norms2[k] = np.float64(norm)
        if k == degree:
            break
        alpha[k] = np.float64(weighted / norm)
        nxt = (x - alpha[k]) * P[k]
        if k >= 1:
            nxt = nxt - (norms2[k] / norms2[k - 1]) * P[k - 1]
        P.append(nxt)
    return {"alpha": alpha, "norms2": norms2}
