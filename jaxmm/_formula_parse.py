"""Formula text → a syntax tree, by jaxmm's own tokenizer and parser.

Formulas cannot run code by construction: no part of the user's text is ever handed to
Python's ``eval`` or to formulaic. The text is read once, here, into a syntax tree of a
small language: column names, numbers, arithmetic and comparisons, and the functions of
:data:`FUNCTIONS`. Anything else (attribute access, subscripts, other calls, comments,
unknown characters) has no token or no rule, and is a :class:`FormulaError`.
``_formula_eval`` evaluates the tree's expressions with numpy, and formulaic, which builds
the model matrices (contrasts, interactions, stateful transforms), receives a formula that
jaxmm writes itself from the tree: column names that are plain identifiers, placeholder
names for evaluated expressions, a fixed set of functions and the formula operators.
Sizes are bounded (:data:`MAX_CHARS`, :data:`MAX_DEPTH`, numbers, strings), so no formula
costs more than its parse and numpy's float64 arithmetic.
"""
from __future__ import annotations

import builtins
import contextlib
import keyword
import math
import re

from ._formula_nodes import Bin, Brace, Call, Col, FNeg, FOp, FSum, Lst, Num, Random, Str, Unary
from .errors import FormulaError

MAX_CHARS = 10_000       # formula length
MAX_DEPTH = 48           # nesting of brackets, calls, operators
MAX_LITERAL_CHARS = 256  # a number's or a string's text
MAX_FORMULA_POWER = 10   # (a + b + c) ** k

# Elementwise numeric transforms, evaluated by jaxmm (numpy's functions of these names).
NUMERIC_FUNCTIONS = frozenset({
    "log", "log2", "log10", "log1p", "exp", "expm1", "sqrt", "abs", "square",
    "sin", "cos", "tan", "arcsin", "arccos", "arctan", "tanh", "floor", "ceil", "round",
})
# Transforms with state (a mean, a scale, polynomial coefficients) that predict reuses: formulaic's.
STATEFUL_FUNCTIONS = frozenset({"center", "scale", "standardize", "poly"})
CONTRASTS = {"Treatment": "treatment", "Sum": "sum", "Helmert": "helmert", "Diff": "diff", "Poly": "poly"}
# R's spellings: factor(x) is C(x); cbind(successes, failures) is a binomial response only
FUNCTIONS = NUMERIC_FUNCTIONS | STATEFUL_FUNCTIONS | {"C", "I", "offset", "factor", "cbind"}

_TOKEN = re.compile(r"""
  (?P<ws>[ \t\r\n\f\v]+)
| (?P<num>(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?)
| (?P<name>[^\W\d]\w*(?:\.\w+)*)
| (?P<qname>`[^`]*`)
| (?P<str>'[^'\\\r\n]*'|"[^"\\\r\n]*")
| (?P<op>\*\*|//|\|\||==|!=|<=|>=|[~+\-*/%^:|(){}\[\],=<>])
""", re.VERBOSE)


class Token(tuple):
    kind = property(lambda self: self[0])
    text = property(lambda self: self[1])
    pos = property(lambda self: self[2])


def tokenize(text: str) -> list:
    if len(text) > MAX_CHARS:
        raise FormulaError(f"formula is {len(text)} characters long; at most {MAX_CHARS} are allowed")
    out, i = [], 0
    while i < len(text):
        m = _TOKEN.match(text, i)
        if m is None:
            ch = text[i]
            if ch in "'\"`":
                raise FormulaError(f"unterminated quote {ch} at position {i} of the formula (quotes close on the "
                                   "same line; backslashes are not allowed inside them)")
            raise FormulaError(f"character {ch!r} (U+{ord(ch):04X}) at position {i} is not allowed in a formula")
        kind = m.lastgroup
        if kind != "ws":
            tok = m.group()
            if kind in ("num", "str", "qname") and len(tok) > MAX_LITERAL_CHARS:
                raise FormulaError(f"a literal of {len(tok)} characters at position {i}; at most "
                                   f"{MAX_LITERAL_CHARS} are allowed")
            out.append(Token((kind, tok, i)))
        i = m.end()
    out.append(Token(("end", "", len(text))))
    return out


class _Parser:
    def __init__(self, text: str):
        self.text = text
        self.tokens = tokenize(text)
        self.i = 0
        self.depth = 0

    # -- helpers --
    @property
    def tok(self):
        return self.tokens[self.i]

    def take(self, *texts):
        tok = self.tok
        if tok.kind == "op" and tok.text in texts:
            self.i += 1
            return tok.text
        return None

    def expect(self, text: str, what: str):
        if self.take(text) is None:
            closing = "unbalanced brackets: " if text in ")]}" else ""
            self.fail(f"{closing}expected '{text}' {what}")

    def fail(self, msg: str):
        tok = self.tok
        at = "the end" if tok.kind == "end" else f"{tok.text!r} at position {tok.pos}"
        raise FormulaError(f"cannot read formula {self.text!r}: {msg}, found {at}")

    @contextlib.contextmanager
    def nested(self):
        """One level of nesting (a bracket, a call, an operand): bounded by MAX_DEPTH, so a
        hostile formula is refused before Python's recursion limit."""
        self.depth += 1
        if self.depth > MAX_DEPTH:
            raise FormulaError(f"formula is nested more than {MAX_DEPTH} levels deep")
        yield
        self.depth -= 1

    def name(self) -> str | None:
        tok = self.tok
        if tok.kind == "name":
            self.i += 1
            return tok.text
        if tok.kind == "qname":
            self.i += 1
            if len(tok.text) == 2:
                raise FormulaError(f"empty quoted name `` at position {tok.pos}")
            return tok.text[1:-1]
        return None

    def number(self) -> float:
        tok = self.tok
        self.i += 1
        value = float(tok.text)
        if not math.isfinite(value):
            raise FormulaError(f"the number {tok.text} at position {tok.pos} is too large")
        return value

    # -- expressions --
    def expr(self):
        with self.nested():
            left = self.arith()
            op = self.take("<", "<=", ">", ">=", "==", "!=")
            if op:
                left = Bin(op, left, self.arith())
                if self.take("<", "<=", ">", ">=", "==", "!="):
                    self.fail("chained comparisons are not allowed")
        return left

    def chain(self, ops, operand, node_type):
        """operand (op operand)*, left-associative, depth-checked."""
        node = operand()
        while (op := self.take(*ops)):
            node = self._checked(node_type(op, node, operand()))
        return node

    def arith(self):
        return self.chain(("+", "-"), self.term, Bin)

    def term(self):
        return self.chain(("*", "/", "//", "%"), self.unary, Bin)

    def unary(self):
        op = self.take("-", "+")
        if op:
            with self.nested():
                return Unary(op, self.unary())
        base = self.primary()
        if self.take("**", "^"):  # R's ^ is a power inside I() too
            with self.nested():
                base = Bin("**", base, self.unary())
        return base

    def _checked(self, node):
        if _depth(node) > MAX_DEPTH:
            raise FormulaError(f"an expression in formula {self.text!r} is nested more than {MAX_DEPTH} levels deep")
        return node

    def primary(self):
        tok = self.tok
        if tok.kind == "num":
            return Num(self.number())
        if tok.kind == "str":
            self.i += 1
            return Str(tok.text[1:-1])
        if self.take("("):
            node = self.expr()
            self.expect(")", "to close '('")
            return node
        if self.take("{"):
            node = self.expr()
            self.expect("}", "to close '{'")
            return node
        if self.take("["):
            return self.list_rest()
        name = self.name()
        if name is None:
            self.fail("expected a column name, a number or a bracket")
        if tok.kind == "name" and self.tok.kind == "op" and self.tok.text == "(":
            return self.call(name)
        return Col(name)

    def list_rest(self):
        items = []
        if not self.take("]"):
            while True:
                tok = self.tok
                if tok.kind == "num":
                    items.append(Num(self.number()))
                elif tok.kind == "str":
                    self.i += 1
                    items.append(Str(tok.text[1:-1]))
                elif self.take("-") and self.tok.kind == "num":
                    items.append(Num(-self.number()))
                else:
                    self.fail("a list holds numbers and strings only")
                if self.take("]"):
                    break
                self.expect(",", "between list items")
        return Lst(tuple(items))

    def call(self, func: str):
        if func not in FUNCTIONS and func not in CONTRASTS and not func.startswith("contr."):
            raise FormulaError(f"formula term not allowed: the call {func}(...). Formulas may call only "
                               f"{sorted(FUNCTIONS)} (and contrasts inside C())")
        self.expect("(", "after a function name")
        args, kwargs = [], []
        with self.nested():
            while not self.take(")"):
                if args or kwargs:
                    self.expect(",", "between arguments")
                tok = self.tok
                nxt = self.tokens[min(self.i + 1, len(self.tokens) - 1)]
                if tok.kind == "name" and nxt.kind == "op" and nxt.text == "=":
                    self.i += 2
                    kwargs.append((tok.text, self.expr()))
                elif kwargs:
                    self.fail("a positional argument after a keyword argument")
                else:
                    args.append(self.expr())
        return Call("C" if func == "factor" else func, tuple(args), tuple(kwargs))

    # -- formulas --
    def formula(self):
        response = self.expr()
        self.expect("~", "after the response (response ~ terms)")
        rhs = self.fsum()
        if self.tok.kind != "end":
            self.fail("expected '+' or the end of the formula")
        return response, rhs

    def fsum(self):
        items = [("+", self.fitem())]
        while (op := self.take("+", "-")):
            items.append((op, self.fitem()))
        return FSum(tuple(items))

    def fitem(self):
        if self.take("-"):
            with self.nested():
                return FNeg(self.fitem())
        if self.tok.kind == "op" and self.tok.text in ("+", "~") or self.tok.kind == "end":
            self.fail("empty term (a stray '+')")
        return self.chain(("*", "/"), self.finter, FOp)

    def finter(self):
        return self.chain((":",), self.fpow, FOp)

    def fpow(self):
        node = self.fatom()
        if self.take("**", "^"):
            tok = self.tok
            if tok.kind != "num" or not tok.text.isdigit() or not 1 <= int(tok.text) <= MAX_FORMULA_POWER:
                self.fail(f"a formula power takes a whole number from 1 to {MAX_FORMULA_POWER}")
            self.i += 1
            node = FOp("**", node, Num(float(tok.text)))
        return node

    def fatom(self):
        if self.take("("):
            with self.nested():
                return self.fbracket()
        if self.take("{"):
            with self.nested():
                node = Brace(self.expr())
                self.expect("}", "to close '{'")
            return node
        return self.fterm()

    def fbracket(self):
        """After '(': a bracketed sum, or a random-effect term (terms | group)."""
        inner = self.fsum()
        bar = self.take("|", "||")
        if bar:
            if self.tok.kind == "op" and self.tok.text == ")":
                self.fail("expected a grouping column after '|'")
            names, ops = [self.name()], []
            while names[-1] is not None and self.tok.kind == "op" and self.tok.text in (":", "/"):
                ops.append(self.tok.text)
                self.i += 1
                names.append(self.name())
            if names[-1] is not None and self.tok.kind == "end":
                self.fail("unbalanced brackets: expected ')' to close the random-effect term")
            if names[-1] is None or not (self.tok.kind == "op" and self.tok.text == ")"):
                raise FormulaError(f"grouping factor in {self.text!r} must be column names joined by ':' "
                                   "(their interaction) or '/' (nesting: a/b is a + a:b)")
            if len(set(names)) < len(names):
                raise FormulaError(f"grouping factor in {self.text!r} names a column twice")
            # a/b/c = a + a:b + a:b:c; ':' binds tighter, so each '/' closes a factor
            factors, current = [], [names[0]]
            for op, name in zip(ops, names[1:]):
                if op == "/":
                    factors.append(tuple(current))
                current.append(name)
            factors.append(tuple(current))
            group = "".join(n + o for n, o in zip(names, ops + [""]))
            inner = Random(inner, group, bar == "|", tuple(factors))
        self.expect(")", "to close '('")
        return inner

    def fterm(self):
        """0 or 1, a column or a call."""
        tok = self.tok
        if tok.kind == "num":
            value = self.number()
            if value not in (0.0, 1.0):
                raise FormulaError(f"the number {tok.text} at position {tok.pos} is not a term; a formula takes 0 "
                                   "or 1 (the intercept), and I(...) or {...} for constants")
            return Num(value)
        name = self.name()
        if name is None:
            if tok.kind == "op" and tok.text == "|":
                self.fail("nothing before '|' in a random-effect term; use (1 | group)")
            self.fail("expected a term (a column, a call, a bracket, 0 or 1)")
        if tok.kind == "name" and self.tok.kind == "op" and self.tok.text == "(":
            return self.call(name)
        return Col(name)


def _depth(node) -> int:
    if isinstance(node, (Bin, FOp)):
        return 1 + max(_depth(node.left), _depth(node.right))
    return 1


def parse(text: str):
    """(response expression, right-hand side FSum) of ``text``; FormulaError otherwise."""
    if not isinstance(text, str):
        raise FormulaError(f"formula must be a string, got {type(text).__name__}")
    parser = _Parser(text)
    tildes = [k for k, t in enumerate(parser.tokens) if t.kind == "op" and t.text == "~"]
    if len(tildes) != 1:
        raise FormulaError(f"formula {text!r} must contain exactly one '~' (response ~ terms)")
    if tildes[0] == 0:
        raise FormulaError(f"formula {text!r} has no response before '~'")
    if parser.tokens[tildes[0] + 1].kind == "end":
        raise FormulaError(f"formula {text!r} has no terms after '~'")
    return parser.formula()


# Names formulaic would read as something other than a data column in the text jaxmm writes,
# and jaxmm's placeholder prefix: such columns go to formulaic under a placeholder name.
_RESERVED = frozenset(dir(builtins)) | STATEFUL_FUNCTIONS | {"C", "I", "contr", "np", "numpy", "Intercept"}
_PLAIN_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
PLACEHOLDER = re.compile(r"jxf(\d+)_")


def plain_name(name: str) -> bool:
    """Whether a column can appear under its own name in the text jaxmm writes for formulaic."""
    return (_PLAIN_NAME.fullmatch(name) is not None and not keyword.iskeyword(name) and name not in _RESERVED
            and not name.startswith("jxf"))
