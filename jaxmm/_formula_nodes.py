"""The syntax tree of a formula (``_formula_parse`` builds it): expression nodes for the
inside of ``I()``, ``{}``, transforms, the response and offsets; formula nodes for the terms;
their canonical text and the columns they read."""
from __future__ import annotations

import dataclasses


# ---- expression nodes (the inside of I(), {}, transforms, the response, offsets) ----
@dataclasses.dataclass(frozen=True)
class Num:
    value: float


@dataclasses.dataclass(frozen=True)
class Str:
    value: str


@dataclasses.dataclass(frozen=True)
class Col:
    name: str


@dataclasses.dataclass(frozen=True)
class Unary:
    op: str
    operand: object


@dataclasses.dataclass(frozen=True)
class Bin:
    op: str  # + - * / // % ** and the comparisons
    left: object
    right: object


@dataclasses.dataclass(frozen=True)
class Call:
    func: str
    args: tuple
    kwargs: tuple = ()  # ((name, node), ...)


@dataclasses.dataclass(frozen=True)
class Lst:
    items: tuple


@dataclasses.dataclass(frozen=True)
class Brace:
    expr: object  # {expr}: an expression as one term


# ---- formula nodes ----
@dataclasses.dataclass(frozen=True)
class FSum:
    items: tuple  # ((sign, node), ...): a flat sum, so a wide formula is not a deep tree


@dataclasses.dataclass(frozen=True)
class FOp:
    op: str  # * / : **
    left: object
    right: object


@dataclasses.dataclass(frozen=True)
class FNeg:
    operand: object


@dataclasses.dataclass(frozen=True)
class Random:
    """``(lhs | group)``; ``factors``: the grouping factors it stands for, each a tuple of
    columns whose interaction it is: ``a`` is ``(("a",),)``, ``a:b`` is ``(("a", "b"),)``
    and ``a/b`` (lme4's nesting) is ``(("a",), ("a", "b"))``, two terms."""

    lhs: object
    group: str
    correlated: bool
    factors: tuple = ()


_PRECEDENCE = {"<": 1, "<=": 1, ">": 1, ">=": 1, "==": 1, "!=": 1, "+": 2, "-": 2, "*": 3, "/": 3, "//": 3,
               "%": 3, "unary": 4, "**": 5}


def unparse(node, outer: int = 0) -> str:
    """Canonical text of an expression (the spacing of Python's ast.unparse)."""
    if isinstance(node, Num):
        v = node.value
        return str(int(v)) if v.is_integer() and abs(v) < 1e15 else repr(v)
    if isinstance(node, Str):
        return repr(node.value)
    if isinstance(node, Col):
        return node.name
    if isinstance(node, Brace):
        return unparse(node.expr)
    if isinstance(node, Lst):
        return "[" + ", ".join(unparse(i) for i in node.items) + "]"
    if isinstance(node, Call):
        parts = [unparse(a) for a in node.args] + [f"{k}={unparse(v)}" for k, v in node.kwargs]
        return f"{node.func}({', '.join(parts)})"
    if isinstance(node, Unary):
        text = node.op + unparse(node.operand, _PRECEDENCE["unary"])
        return f"({text})" if outer > _PRECEDENCE["unary"] else text
    if isinstance(node, Bin):
        p = _PRECEDENCE[node.op]
        right_assoc = node.op == "**"
        text = (f"{unparse(node.left, p + right_assoc)} {node.op} {unparse(node.right, p + (not right_assoc))}")
        return f"({text})" if outer > p else text
    raise TypeError(node)  # pragma: no cover - every node type is listed


def columns_of(node) -> set:
    """Column names an expression or formula node reads."""
    if isinstance(node, Col):
        return {node.name}
    if isinstance(node, Random):
        return columns_of(node.lhs) | {c for factor in node.factors for c in factor}
    if isinstance(node, Call) and node.func == "C":
        return columns_of(node.args[:1])  # the contrast and levels are not columns
    if isinstance(node, (Num, Str, Lst)):
        return set()
    if dataclasses.is_dataclass(node):
        out = set()
        for f in dataclasses.fields(node):
            out |= columns_of(getattr(node, f.name))
        return out
    if isinstance(node, tuple):
        out = set()
        for item in node:
            out |= columns_of(item)
        return out
    return set()
