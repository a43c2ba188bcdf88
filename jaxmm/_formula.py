"""Host-only parsing of an lme4-style formula into its fixed and random parts.

``y ~ x + C(period) + (x | subject)`` becomes the formulaic formula ``y ~ x + C(period)``
for the fixed part, ``x`` for the random-effect model matrix and ``subject`` for the
grouping column. formulaic evaluates the two parts; this module only splits text.
"""
from __future__ import annotations

import dataclasses

from .errors import FormulaError


@dataclasses.dataclass(frozen=True)
class FormulaSpec:
    formula: str
    response: str
    fixed: str
    random: str
    group: str
    correlated: bool = True
    offsets: tuple = ()  # expressions inside offset(...) terms, summed into the linear predictor


def _split_top_level(text: str, sep: str) -> list[str]:
    """Split on ``sep`` where it is not inside brackets."""
    parts, depth, start = [], 0, 0
    for i, ch in enumerate(text):
        if ch in "([{":
            depth += 1
        elif ch in ")]}":
            depth -= 1
            if depth < 0:
                raise FormulaError(f"unbalanced ')' in formula term {text!r}")
        elif ch == sep and depth == 0:
            parts.append(text[start:i])
            start = i + 1
    if depth != 0:
        raise FormulaError(f"unbalanced brackets in formula term {text!r}")
    parts.append(text[start:])
    return parts


def _random_term(term: str):
    """If ``term`` is ``( lhs | group )`` return (lhs, group, correlated), else None."""
    t = term.strip()
    if not (t.startswith("(") and t.endswith(")")):
        return None
    inner = t[1:-1]
    # The outer brackets must enclose the whole term, not e.g. "(a) * (b)".
    if not _balanced(inner):
        return None
    pieces = _split_top_level(inner, "|")
    if len(pieces) == 1:
        return None
    if len(pieces) == 3 and pieces[1] == "":
        lhs, group, correlated = pieces[0], pieces[2], False
    elif len(pieces) == 2:
        lhs, group, correlated = pieces[0], pieces[1], True
    else:
        raise FormulaError(f"cannot read random-effect term {t!r}; expected ( terms | group )")
    lhs, group = lhs.strip(), group.strip()
    if not lhs:
        raise FormulaError(f"random-effect term {t!r} has nothing before '|'; use (1 | group)")
    if not group.isidentifier():
        raise FormulaError(
            f"grouping factor {group!r} in {t!r} must be a single column name "
            "(nested or crossed factors are not supported yet)"
        )
    return lhs, group, correlated


def _balanced(text: str) -> bool:
    depth = 0
    for ch in text:
        depth += ch in "([{"
        depth -= ch in ")]}"
        if depth < 0:
            return False
    return depth == 0


def parse_formula(formula: str) -> FormulaSpec:
    if not isinstance(formula, str):
        raise FormulaError(f"formula must be a string, got {type(formula).__name__}")
    if formula.count("~") != 1:
        raise FormulaError(f"formula {formula!r} must contain exactly one '~' (response ~ terms)")
    lhs, rhs = (s.strip() for s in formula.split("~"))
    if not lhs:
        raise FormulaError(f"formula {formula!r} has no response before '~'")
    if not rhs:
        raise FormulaError(f"formula {formula!r} has no terms after '~'")
    if not _balanced(rhs):
        raise FormulaError(f"unbalanced brackets in formula {formula!r}")
    fixed_terms, randoms, offsets = [], [], []
    for term in _split_top_level(rhs, "+"):
        if not term.strip():
            raise FormulaError(f"empty term (a stray '+') in formula {formula!r}")
        found = _random_term(term)
        offset = _offset_term(term)
        if offset is not None:
            offsets.append(offset)
        elif found is None:
            fixed_terms.append(term.strip())
        else:
            randoms.append(found)
    if not randoms:
        raise FormulaError(
            f"formula {formula!r} has no random-effect term; add one such as (1 | group)"
        )
    if len(randoms) > 1:
        groups = sorted({g for _, g, _ in randoms})
        raise FormulaError(
            f"formula {formula!r} has {len(randoms)} random-effect terms (groups {groups}); "
            "jaxmm supports exactly one grouping factor"
        )
    re_lhs, group, correlated = randoms[0]
    fixed = " + ".join(fixed_terms) if fixed_terms else "1"
    return FormulaSpec(formula, lhs, fixed, re_lhs, group, correlated, tuple(offsets))


def _offset_term(term: str):
    """If ``term`` is ``offset(expr)`` return expr, else None."""
    t = term.strip()
    if not (t.startswith("offset(") and t.endswith(")")):
        return None
    inner = t[len("offset("):-1].strip()
    if not _balanced(inner):
        return None
    if not inner:
        raise FormulaError(f"empty offset term {t!r}; write offset(column) or offset(log(column))")
    return inner
