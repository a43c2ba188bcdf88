"""An lme4-style formula → a :class:`FormulaSpec`: the response, fixed and random parts,
the grouping column and offsets, each as jaxmm's own syntax tree (``_formula_parse``).

formulaic builds the model matrices from text that this module writes, never from the
user's: every term becomes a column of a model frame (``_formula_eval.model_frame``) under
a name formulaic reads as a plain data lookup, the column's own name where it is a plain
identifier and a placeholder ``jxf<k>_`` otherwise, wrapped in the few functions jaxmm
lets formulaic apply (``C``, ``center``, ``scale``, ``standardize``, ``poly`` and the
named contrasts). Column names map back through :attr:`FormulaSpec.displays`.
"""
from __future__ import annotations

import dataclasses

from ._formula_nodes import Bin, Brace, Call, Col, FNeg, FOp, FSum, Lst, Num, Random, Str, Unary, columns_of, unparse
from ._formula_parse import CONTRASTS, NUMERIC_FUNCTIONS, PLACEHOLDER, STATEFUL_FUNCTIONS, parse, plain_name
from .errors import FormulaError

_CONTRAST_KINDS = frozenset(CONTRASTS.values())


@dataclasses.dataclass(frozen=True)
class Binding:
    """One column of the model frame: ``name`` (what formulaic reads), ``kind`` ("column": a
    table column as it is; "numeric": an expression jaxmm evaluates; "categorical": a factor
    jaxmm encodes with its level order), the expression, and its text for column names."""

    name: str
    kind: str
    expr: object
    display: str
    reference: object = None  # categorical: the treatment reference level (first)
    levels: tuple | None = None  # categorical: the levels as written in C(..., levels=[...])


@dataclasses.dataclass(frozen=True)
class TermSpec:
    """One random-effect term of a formula with several: its effects (``random_text`` for
    formulaic, ``random`` for display), whether they are correlated, and its grouping
    factor, the interaction of the columns ``factor`` (one column, or ``a:b``), labelled
    ``label`` (the columns joined by ':')."""

    random: str
    random_text: str
    correlated: bool
    factor: tuple

    @property
    def label(self) -> str:
        return ":".join(self.factor)


@dataclasses.dataclass(frozen=True)
class FormulaSpec:
    formula: str
    response: str          # the response as text (a column name or an expression)
    fixed: str             # the fixed part as text, for messages
    random: str            # the random-effect terms as text
    group: str
    correlated: bool = True
    offsets: tuple = ()    # expressions inside offset(...) terms, summed into the linear predictor
    response_expr: object = None
    fixed_text: str = "1"   # what formulaic reads (bindings' names only)
    random_text: str = "1"
    bindings: tuple = ()
    columns: frozenset = frozenset()  # every table column the formula reads, the group included
    # a formula with several random-effect terms (or one whose factor is not one column):
    # every term, in the formula's order (``a/b`` gives a's term, then a:b's)
    terms: tuple = ()
    # a binomial response written cbind(successes, failures): successes + failures, the trials
    trials_expr: object = None

    def display(self, name: str) -> str:
        """A formulaic column name with the placeholders replaced by the terms' text."""
        texts = {b.name: b.display for b in self.bindings}
        return PLACEHOLDER.sub(lambda m: texts.get(m.group(), m.group()), name)


def _fail(what: str, where: str):
    raise FormulaError(f"formula term not allowed: {what} in {where!r}. Formulas may use column names, numbers, "
                       f"+ - * / ** : |, comparisons, C(), I(), {{}}, offset(), the transforms "
                       f"{sorted(NUMERIC_FUNCTIONS)} and {sorted(STATEFUL_FUNCTIONS)}")


def check_expression(node, where: str) -> None:
    """Raise FormulaError unless ``node`` is an expression jaxmm evaluates: columns, numbers,
    strings (for comparisons), arithmetic, comparisons and the numeric transforms."""
    if isinstance(node, (Num, Str, Col)):
        return
    if isinstance(node, Unary):
        check_expression(node.operand, where)
    elif isinstance(node, Bin):
        check_expression(node.left, where)
        check_expression(node.right, where)
    elif isinstance(node, Call) and (node.func in NUMERIC_FUNCTIONS or node.func == "I"):
        if len(node.args) != 1 or node.kwargs:
            raise FormulaError(f"{node.func}() takes one argument, in {where!r}")
        check_expression(node.args[0], where)
    elif isinstance(node, Call):
        _fail(f"the call {node.func}(...) inside an expression", where)
    else:
        _fail(f"the expression {unparse(node) if not isinstance(node, Lst) else 'a list'}", where)


class _Writer:
    """Writes the formulaic text of formula nodes, collecting the model frame's bindings."""

    def __init__(self, where: str):
        self.where = where
        self.bindings: dict = {}

    def bind(self, kind: str, expr, display: str, **extra) -> str:
        key = (kind, expr, tuple(sorted(extra.items())))
        if key not in self.bindings:
            name = expr.name if kind == "column" and plain_name(expr.name) else f"jxf{len(self.bindings)}_"
            self.bindings[key] = Binding(name, kind, expr, display, **extra)
        return self.bindings[key].name

    def operand(self, node) -> str:
        """A transform's argument: a column by name, an expression through a placeholder."""
        if isinstance(node, Col):
            return self.bind("column", node, node.name)
        check_expression(node, self.where)
        return self.bind("numeric", node, unparse(node))

    def write(self, node, outer: int = 0) -> tuple[str, str]:
        """(formulaic text, display text) of a formula node."""
        if isinstance(node, FSum):
            gen, disp = [], []
            for k, (sign, item) in enumerate(node.items):
                g, d = self.write(item)
                gen.append(g if k == 0 and sign == "+" else f"{sign} {g}")
                disp.append(d if k == 0 and sign == "+" else f"{sign} {d}")
            gen, disp = " ".join(gen), " ".join(disp)
            return (f"({gen})", f"({disp})") if outer else (gen, disp)
        if isinstance(node, FNeg):
            g, d = self.write(node.operand, 4)
            return f"-{g}", f"-{d}"
        if isinstance(node, FOp):
            p = {"*": 1, "/": 1, ":": 2, "**": 3}[node.op]
            lg, ld = self.write(node.left, p)
            if node.op == "**":
                k = str(int(node.right.value))
                return f"{lg} ** {k}", f"{ld} ** {k}"
            rg, rd = self.write(node.right, p + 1)
            sep = ":" if node.op == ":" else f" {node.op} "
            g, d = f"{lg}{sep}{rg}", f"{ld}{sep}{rd}"
            return (f"({g})", f"({d})") if outer > p else (g, d)
        if isinstance(node, Random):
            raise FormulaError(f"a random-effect term ({unparse_formula(node.lhs)} | {node.group}) must be added "
                               f"at the top level of the formula, in {self.where!r}")
        if isinstance(node, Num):
            return str(int(node.value)), str(int(node.value))
        if isinstance(node, Col):
            return self.bind("column", node, node.name), node.name
        if isinstance(node, Brace):
            check_expression(node.expr, self.where)
            text = unparse(node.expr)
            return self.bind("numeric", node.expr, text), text
        if isinstance(node, Call):
            return self.call(node)
        raise FormulaError(f"cannot read the term {node!r} in {self.where!r}")  # pragma: no cover

    def call(self, node: Call) -> tuple[str, str]:
        func, text = node.func, unparse(node)
        if func == "offset":
            raise FormulaError(f"offset(...) must be a term of its own on the right-hand side, in {self.where!r}")
        if func == "C":
            return self.categorical(node), text
        if func not in NUMERIC_FUNCTIONS and func not in STATEFUL_FUNCTIONS and func != "I":
            _fail(f"the call {func}(...) as a term", self.where)
        if func == "poly":
            if len(node.args) != 2 or node.kwargs or not _whole(node.args[1], 1, 20):
                raise FormulaError(f"poly() takes a column or expression and a degree from 1 to 20, in {text!r}")
            return f"poly({self.operand(node.args[0])}, {int(node.args[1].value)})", text
        if len(node.args) != 1 or node.kwargs:
            raise FormulaError(f"{func}() takes one argument, in {text!r}")
        if func in STATEFUL_FUNCTIONS:
            return f"{func}({self.operand(node.args[0])})", text
        check_expression(node, self.where)
        return self.bind("numeric", node, text), text

    def categorical(self, node: Call) -> str:
        text = unparse(node)
        if not 1 <= len(node.args) <= 2:
            raise FormulaError(f"C() takes a column and optionally a contrast, in {text!r}")
        kind, reference = "treatment", None
        if len(node.args) == 2:
            kind, reference = _contrast(node.args[1], text)
        levels = None
        for key, value in node.kwargs:
            if key != "levels" or not isinstance(value, Lst) or not value.items:
                raise FormulaError(f"C() takes levels=[...] (a list of levels) as its only keyword, in {text!r}")
            levels = tuple(_literal(v) for v in value.items)
            if len(set(levels)) != len(levels):
                raise FormulaError(f"C(..., levels=[...]) lists a level twice, in {text!r}")
        arg = node.args[0]
        if isinstance(arg, Col) and reference is None and levels is None:
            name = self.bind("column", arg, arg.name)
        else:
            check_expression(arg, self.where)
            extra = {"reference": reference, "levels": levels}
            name = self.bind("categorical", arg, unparse(arg), **extra)
        return f"C({name})" if kind == "treatment" else f"C({name}, contr.{kind})"


def _whole(node, low: int, high: int) -> bool:
    return isinstance(node, Num) and node.value.is_integer() and low <= node.value <= high


def _literal(node):
    if isinstance(node, Str):
        return node.value
    if isinstance(node, Num):
        return int(node.value) if node.value.is_integer() else node.value
    if isinstance(node, Unary) and node.op == "-" and isinstance(node.operand, Num):
        return -_literal(node.operand)
    raise FormulaError(f"a level must be a number or a string, not {unparse(node)}")


def _contrast(node, where: str):
    """(kind, reference level or None) of C()'s second argument."""
    name = node.name if isinstance(node, Col) else node.func if isinstance(node, Call) else None
    kind = CONTRASTS.get(name) or (name[6:] if name and name.startswith("contr.") else None)
    if kind not in _CONTRAST_KINDS:
        raise FormulaError(f"unknown contrast {unparse(node)} in {where!r}; use one of {sorted(CONTRASTS)} "
                           f"or contr.{{{', '.join(sorted(_CONTRAST_KINDS))}}}")
    if isinstance(node, Col):
        return kind, None
    kwargs = dict(node.kwargs)
    if set(kwargs) - {"reference", "base"} or len(node.args) + len(kwargs) > 1:
        raise FormulaError(f"{unparse(node)}: a contrast takes at most one reference level, in {where!r}")
    args = list(node.args) + list(kwargs.values())
    if args and kind != "treatment":
        raise FormulaError(f"{unparse(node)}: only treatment contrasts take a reference level, in {where!r}")
    return kind, (_literal(args[0]) if args else None)


def unparse_formula(node) -> str:
    return _Writer("").write(node)[1]


def _response(response, formula: str):
    """(the response expression, the trials expression of ``cbind(successes, failures)`` or None)."""
    if not (isinstance(response, Call) and response.func == "cbind"):
        check_expression(response, formula)
        return response, None
    if len(response.args) != 2 or response.kwargs:
        raise FormulaError(f"cbind(successes, failures) takes two columns or expressions, in {formula!r}")
    for arg in response.args:
        check_expression(arg, formula)
    successes, failures = response.args
    return successes, Bin("+", successes, failures)


def parse_formula(formula: str) -> FormulaSpec:
    whole_response, rhs = parse(formula)
    response, trials = _response(whole_response, formula)
    writer = _Writer(formula)
    fixed, randoms, offsets = [], [], []
    for sign, item in rhs.items:
        if isinstance(item, Random) or (isinstance(item, Call) and item.func == "offset"):
            if sign != "+":
                raise FormulaError(f"a random-effect or offset term cannot be subtracted, in {formula!r}")
            if isinstance(item, Random):
                randoms.append(item)
                continue
            if len(item.args) != 1 or item.kwargs:
                raise FormulaError(f"offset() takes one column or expression, in {formula!r}")
            check_expression(item.args[0], formula)
            offsets.append(item.args[0])
        else:
            fixed.append((sign if fixed or sign == "-" else "+", item))
    if not randoms:
        raise FormulaError(f"formula {formula!r} has no random-effect term; add one such as (1 | group)")
    fixed_text, fixed_display = writer.write(FSum(tuple(fixed))) if fixed else ("1", "1")
    terms = []
    for term in randoms:
        text, display = writer.write(term.lhs)
        terms.extend(TermSpec(display, text, term.correlated, factor) for factor in term.factors)
    if len(terms) > 1 or len(terms[0].factor) > 1:
        first = terms[0]
        return FormulaSpec(
            formula=formula, response=unparse(response), fixed=fixed_display,
            random=" + ".join(f"({t.random} {'|' if t.correlated else '||'} {t.label})" for t in terms),
            group=first.label, correlated=first.correlated, offsets=tuple(offsets), response_expr=response,
            fixed_text=fixed_text, random_text=first.random_text, bindings=tuple(writer.bindings.values()),
            columns=frozenset(columns_of(whole_response) | columns_of(rhs)), terms=tuple(terms), trials_expr=trials,
        )
    term = randoms[0]
    random_text, random_display = terms[0].random_text, terms[0].random
    return FormulaSpec(
        formula=formula, response=unparse(response), fixed=fixed_display, random=random_display, group=term.group,
        correlated=term.correlated, offsets=tuple(offsets), response_expr=response, fixed_text=fixed_text,
        random_text=random_text, bindings=tuple(writer.bindings.values()),
        columns=frozenset(columns_of(whole_response) | columns_of(rhs)), trials_expr=trials,
    )
