"""Formulas cannot run code: every term is checked against an allow-list before evaluation.

formulaic evaluates Python inside terms (``{...}``, ``I(...)``, any call), so
``y ~ x + {__import__('os').system('...') or x}`` would run a shell command. Before any
part of a formula reaches formulaic, its text is turned into a Python expression (the
formula operators ``:``, ``|`` and ``{}`` mapped onto Python ones) and its syntax tree is
walked. Allowed: column names, numbers, the operators of formulas and arithmetic, and calls
of the functions in :data:`ALLOWED_CALLS` (``C``, ``I``, ``offset`` and elementwise
transforms) with such arguments. Everything else (attribute access, subscripts,
dunder names, unknown names or calls, lambdas, comprehensions, ...) raises
:class:`~jaxmm.errors.FormulaError` naming the offending piece; a name that is not a column
raises :class:`~jaxmm.errors.DataError`.
"""
from __future__ import annotations

import ast
import re

from .errors import DataError, FormulaError

# Functions a formula may call. The transforms are the elementwise ones formulaic and numpy
# provide under these names, plus formulaic's stateful centre/scale and C()'s contrasts.
ALLOWED_CALLS = frozenset({
    "C", "I", "offset",
    "log", "log2", "log10", "log1p", "exp", "expm1", "sqrt", "abs", "square",
    "sin", "cos", "tan", "arcsin", "arccos", "arctan", "tanh", "floor", "ceil", "round",
    "center", "scale", "standardize", "poly",
    "Treatment", "Sum", "Helmert", "Diff", "contr",
})
_BINOPS = (ast.Add, ast.Sub, ast.Mult, ast.Div, ast.Pow, ast.BitOr, ast.FloorDiv, ast.Mod, ast.MatMult)
_UNARY = (ast.UAdd, ast.USub)
_CMP = (ast.Eq, ast.NotEq, ast.Lt, ast.LtE, ast.Gt, ast.GtE)
_BACKTICK = re.compile(r"`([^`]*)`")


def _as_python(text: str, quoted: dict) -> str:
    """Formula text → a Python expression with the same tree shape for checking."""

    def quote(match):
        name = f"_jaxmm_col{len(quoted)}"
        quoted[name] = match.group(1)
        return name

    text = _BACKTICK.sub(quote, text)
    # ':' (interaction) → '*', '||' → '|', '{ }' (Python blocks) → ( ); '~' splits sides.
    return text.replace("||", "|").replace(":", "*").replace("{", "(").replace("}", ")")


def check_formula(formula: str, columns) -> None:
    """Raise FormulaError unless every piece of ``formula`` is allowed (see module doc)."""
    columns = set(map(str, columns))
    quoted: dict = {}
    for side in formula.split("~"):
        if not side.strip():
            continue
        source = _as_python(side, quoted)
        try:
            tree = ast.parse(source.strip(), mode="eval")
        except SyntaxError as exc:
            raise FormulaError(f"cannot read formula part {side.strip()!r}: {exc.msg}") from None
        _check(tree.body, columns, quoted, side.strip())


def _reject(what: str, where: str):
    raise FormulaError(f"formula term not allowed: {what} in {where!r}. Formulas may use column names, "
                       f"numbers, + - * / ** : |, C(), I(), {{}}, offset() and the transforms "
                       f"{sorted(ALLOWED_CALLS - {'C', 'I', 'offset'})}")


def _check(node, columns, quoted, where) -> None:
    if isinstance(node, ast.BinOp):
        if not isinstance(node.op, _BINOPS):
            _reject(f"operator {type(node.op).__name__}", where)
        _check(node.left, columns, quoted, where)
        _check(node.right, columns, quoted, where)
    elif isinstance(node, ast.UnaryOp):
        if not isinstance(node.op, _UNARY):
            _reject(f"operator {type(node.op).__name__}", where)
        _check(node.operand, columns, quoted, where)
    elif isinstance(node, ast.Compare):
        # comparisons of columns and numbers, e.g. I(x > 0)
        if not all(isinstance(op, _CMP) for op in node.ops):
            _reject("a comparison operator", where)
        for part in [node.left, *node.comparators]:
            _check(part, columns, quoted, where)
    elif isinstance(node, ast.Constant):
        if not isinstance(node.value, (int, float, str)) or isinstance(node.value, bool):
            _reject(f"the constant {node.value!r}", where)
    elif isinstance(node, ast.Name):
        name = node.id
        if name in quoted:
            name = quoted[name]
        if name.startswith("__") or name not in columns:
            if name.startswith("__"):
                _reject(f"the name {name!r}", where)
            raise DataError(f"formula uses {name!r}, which is not a column of the data "
                               f"(columns: {sorted(columns)[:20]})")
    elif isinstance(node, ast.Call):
        func = node.func
        if not isinstance(func, ast.Name):
            _reject(f"the call {ast.unparse(func)}(...)", where)
        if func.id not in ALLOWED_CALLS:
            _reject(f"the call {func.id}(...)", where)
        for arg in node.args:
            _check(arg, columns, quoted, where)
        for kw in node.keywords:
            if kw.arg is None or kw.arg.startswith("_"):
                _reject("a ** or private keyword argument", where)
            _check_literal(kw.value, columns, quoted, where)
    elif isinstance(node, (ast.List, ast.Tuple)):
        for elt in node.elts:
            _check_literal(elt, columns, quoted, where)
    else:
        _reject(f"a {type(node).__name__} expression ({ast.unparse(node)})", where)


def _check_literal(node, columns, quoted, where) -> None:
    """Keyword values: literals (levels, reference levels), lists of them, or allowed terms."""
    if isinstance(node, (ast.List, ast.Tuple)):
        for elt in node.elts:
            _check_literal(elt, columns, quoted, where)
    else:
        _check(node, columns, quoted, where)
