"""Formulas cannot run code (jaxmm reads and evaluates them itself), and every input problem
is one clear jaxmm error."""
import os
import sys
import time

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

import jaxmm
from jaxmm._cli import main
from jaxmm._design import design_from_formula
from jaxmm._formula import parse_formula
from jaxmm.errors import DataError, FormulaError, JaxmmError

# Every piece of code in the attacks below names "pwn": an audit hook records any event of the
# interpreter (compile, exec, import, open, a process) that carries it.
SENTINEL = "pwn"
_EVENTS, _WATCH = [], [False]
_DANGEROUS = ("os.system", "os.exec", "os.posix_spawn", "os.spawn", "os.fork", "subprocess.Popen", "socket.")


def _audit(event, args):
    if not _WATCH[0]:
        return
    if event.startswith(_DANGEROUS):
        _EVENTS.append((event, repr(args)[:200]))
    elif event in ("compile", "import", "open", "exec", "builtins.input", "os.remove", "os.rename"):
        first = args[0] if args else ""
        if not isinstance(first, (str, bytes)) and hasattr(first, "body"):  # an AST compiled from text
            import ast

            first = ast.unparse(first)
        text = first.decode("utf-8", "replace") if isinstance(first, bytes) else str(first)
        if SENTINEL in text:
            _EVENTS.append((event, text[:200]))


sys.addaudithook(_audit)


class _Watch:
    """Records the dangerous events of a block; fails the test if there were any."""

    def __enter__(self):
        _EVENTS.clear()
        _WATCH[0] = True

    def __exit__(self, *exc):
        _WATCH[0] = False
        assert not _EVENTS, f"a formula ran code: {_EVENTS[:3]}"


DATA = pd.DataFrame({"y": [0.1, 1.2, 0.7, 2.0, 1.1, 0.3, 2.2, 1.5, 0.9, 1.4], "x": np.linspace(0.5, 2.0, 10),
                     "z": [3.0, 1.0, 4.0, 1.0, 5.0, 9.0, 2.0, 6.0, 5.0, 3.0], "g": [1, 1, 2, 2, 3, 3, 4, 4, 5, 5],
                     "f": list("abababcabc"), "my col": np.arange(10.0), "C": np.arange(10.0) % 3,
                     "n": [5, 6, 7, 5, 6, 7, 5, 6, 7, 5]})

ISSUE_ATTACK = "y ~ x + {x #} + exec(\"__import__('os').system('touch pwn_marker')\") + {x\n} + (1 | g)"
ATTACKS = [
    ISSUE_ATTACK,
    ISSUE_ATTACK.replace("\n", "\r"),
    "y ~ x + (x + {x #} + exec(\"__import__('os').system('touch pwn_marker')\") + {x\n} | g)",
    "y ~ x + offset({x #} + exec(\"__import__('os').system('touch pwn_marker')\") + {x\n}) + (1 | g)",
    "{y #} + exec(\"__import__('os').system('touch pwn_marker')\") + {y\n} ~ x + (1 | g)",
    "y ~ x + {__import__('os').system('touch pwn_marker') or x} + (1 | g)",
    "y ~ x + {x.__class__.__bases__[0].__subclasses__()} + (1 | g)",
    "y ~ np.log(x) + (1 | g)",
    "y ~ eval('pwn') + (1 | g)",
    "y ~ open('pwn_marker', 'w') + (1 | g)",
    "y ~ {[pwn for pwn in x]} + (1 | g)",
    "y ~ {(lambda: pwn)()} + (1 | g)",
    "y ~ C(f, **{'pwn': 1}) + (1 | g)",
    "y ~ C(f, contr.treatment.__init__.__globals__) + (1 | g)",
    "y ~ \uff45\uff58\uff45\uff43('pwn') + (1 | g)",  # fullwidth "exec": Python would read it as exec
    "y ~ x + `x` + {`x`} + C(`f`) + (1 | g) # pwn",
]


@pytest.mark.parametrize("formula", ATTACKS)
def test_attacks_run_no_code_through_fit_or_cli(tmp_path, monkeypatch, capsys, formula):
    monkeypatch.chdir(tmp_path)
    with _Watch():
        with pytest.raises(JaxmmError):
            jaxmm.fit(formula, DATA)
    DATA.to_csv("d.csv", index=False)
    with _Watch():
        assert main(["fit", "d.csv", formula]) == 2
    err = capsys.readouterr().err
    assert err.startswith("jaxmm: error:") and err.count("\n") == 1
    assert not os.listdir(tmp_path) == ["pwn_marker"] and not (tmp_path / "pwn_marker").exists()


@pytest.mark.parametrize("formula, error, words", [
    ("y ~ x + {10**10**8 % 7} + (1 | g)", DataError, "missing or infinite"),
    ("y ~ x + I('a' * 10**10) + (1 | g)", FormulaError, "not a number"),
    ("y ~ x + " + " + ".join(["x"] * 25_000) + " + (1 | g)", FormulaError, "characters long"),
    ("y ~ " + "(" * 2000 + "x" + ")" * 2000 + " + (1 | g)", FormulaError, "nested more than"),
    ("y ~ {" + "+".join(["x"] * 2000) + "} + (1 | g)", FormulaError, "nested more than"),
    ("y ~ " + "-" * 3000 + "x + (1 | g)", FormulaError, "nested more than"),
    ("y ~ I(" + "9" * 400 + ") + (1 | g)", FormulaError, "literal of 400 characters"),
    ("y ~ I(1e999) + (1 | g)", FormulaError, "too large"),
    ("y ~ (x + z + C(f)) ** 99 + (1 | g)", FormulaError, "formula power"),
    ("y ~ I('abc') + (1 | g)", FormulaError, "not a number"),
    ("y ~ I(x + f) + (1 | g)", FormulaError, "column 'f' holds text"),
])
def test_resource_bombs_and_bad_values_are_refused_fast(formula, error, words):
    start = time.perf_counter()
    with pytest.raises(error, match=words.replace("(", r"\(")):
        jaxmm.fit(formula, DATA)
    assert time.perf_counter() - start < 1.0


@pytest.mark.filterwarnings("ignore::jaxmm.errors.JaxmmWarning")
def test_a_column_named_like_a_function_is_a_column():
    # C is a column here and C(f) the factor function: each means one thing
    spec = parse_formula("y ~ C + C(f) + (1 | g)")
    assert {b.display for b in spec.bindings} >= {"C", "f"}
    res = jaxmm.fit("y ~ C + C(f) + (1 | g)", DATA)
    assert list(res.fixef.index) == ["(Intercept)", "C", "fb", "fc"]


PIECES = [
    # comments, braces, quotes, backslashes, control characters
    "#", " # ", "#}", "{", "}", "{x}", "{x #}", "'", '"', "'}'", '"#"', "\\", "\\n", "\r", "\n", "\t", "\x00",
    # unicode look-alikes and separators
    "\uff45\uff58\uff45\uff43", "\u0421(x)", "x\u2028", "\u00a0", "\u2170", "\u212f", "\u200b",
    # nested calls, string literals, attribute chains, keyword arguments
    "C(C(x))", "log(exp(log(x)))", "I(I(I(x)))", "'__import__'", "'pwn'", "x.__class__.__bases__",
    "().__class__", "contr.sum.__init__", "C(f, levels=['a', 'b', 'c'])", "C(f, **{'a': 1})", "I(x, pwn=1)",
    "C(f, Treatment('b'))", "C(f, Sum)", "poly(x, 2)", "center(z)",
    # code
    "exec(\"__import__('pwn_mod')\")", "__import__('pwn_mod')", "open('pwn_file', 'w')", "eval('pwn')",
    "(lambda: pwn)()", "[pwn for pwn in x]", "getattr(x, 'pwn')", "breakpoint()", "globals()['pwn']",
    "pwn.system('x')", "`pwn`", "f'{pwn}'",
    # formula pieces
    "+", "-", "*", ":", "/", "**", "|", "||", "~", "(", ")", "[", "]", ",", "=", "%", "^", "@", ";", "0", "1",
    "x", "z", "f", "g", "y", "`my col`", "(1 | g)", "(x | g)", "(x || g)", "offset(z)", "offset(", "{x / 10}",
    "I(x ** 2)", "log(z)", " ", "cbind(", "factor(", "cbind(y, z)",
]
FRAMES = st.sampled_from([("", ""), ("y ~ ", ""), ("y ~ x + ", " + (1 | g)"), ("y ~ ", " + (x | g)"),
                          ("", " ~ x + (1 | g)")])
ADVERSARIAL = st.builds(lambda frame, parts: frame[0] + "".join(parts) + frame[1],
                        FRAMES, st.lists(st.sampled_from(PIECES), max_size=10))
# Formulas of valid terms joined by formula operators, some with an adversarial piece spliced in.
TERMS = ["x", "z", "f", "C(f)", "C(f, Sum)", "C(f, Treatment('c'))", "C(f, levels=['c', 'b', 'a'])", "log(z)",
         "{x / 10}", "I(x ** 2)", "center(z)", "poly(x, 2)", "`my col`", "C", "C(C)", "0", "1", "sqrt(abs(z - 3))",
         "I(x > 1)", "I(f == 'a')", "{z % 2}", "exp(x)", "offset(z)", "log(z - 1)", "x:f", "(x + z)", "(x + f) ** 2",
         "factor(f)", "cbind(x, z)"]
STRUCTURED = st.builds(
    lambda response, terms, ops, random, splice: (
        response + " ~ " + "".join(t + o for t, o in zip(terms, ops)) + terms[-1] + " + " + random + splice),
    st.sampled_from(["y", "log(y + 1)", "I(y * 2)", "z", "{y}", "`my col`", "cbind(y, z)"]),
    st.lists(st.sampled_from(TERMS), min_size=1, max_size=5),
    st.lists(st.sampled_from([" + ", " - ", ":", " * ", " / "]), min_size=4, max_size=4),
    st.sampled_from(["(1 | g)", "(x | g)", "(x || g)", "(0 + x | g)", "(log(z) | g)", "(C(f) || g)"]),
    st.sampled_from([""] * 6 + PIECES))
FORMULAS = st.one_of(ADVERSARIAL, STRUCTURED)
FUZZ = dict(deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
            derandomize=True)


def _designs_or_refuses(formula):
    # The text's whole path: parsed, evaluated on the table, model matrices built. A fit
    # reads only the arrays this makes (the 150-example test fits what it accepts).
    with _Watch():
        try:
            design, _ = design_from_formula(parse_formula(formula), DATA, host=True)
        except JaxmmError:
            return
    assert design.y.shape[0] >= len(DATA)


def _fits_or_refuses(formula, fit_ok):
    with _Watch():
        try:
            res = jaxmm.fit(formula, DATA)
        except JaxmmError:
            return
    fit_ok.append(formula)
    assert res.n_obs == len(DATA)


@pytest.mark.filterwarnings("ignore::jaxmm.errors.JaxmmWarning")
@settings(max_examples=150, **FUZZ)
@given(FORMULAS)
@example(ISSUE_ATTACK)
@example("y ~ offset(")
def test_fuzzed_formulas_fit_or_raise_a_jaxmm_error(formula):
    _fits_or_refuses(formula, [])


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore::jaxmm.errors.JaxmmWarning")
# The long run: JAXMM_FUZZ_EXAMPLES=50000 python -m pytest -n 0 tests/test_safety.py -k many;
# the suite's default takes 2000.
@settings(max_examples=int(os.environ.get("JAXMM_FUZZ_EXAMPLES", "2000")), **FUZZ)
@given(FORMULAS)
def test_fuzzed_formulas_many(formula):
    _designs_or_refuses(formula)


ARG_PIECES = ["n", "z", "x", "pwn", "'", "\"", "#", "$(touch pwn_marker)", "`touch pwn_marker`", ";", "|", " ",
              "\n", "..", "/", "__import__('pwn')", "-", "--json", "{", "}", "\u00a0", "my col"]
ARGS = st.lists(st.sampled_from(ARG_PIECES), min_size=1, max_size=4).map("".join)


@pytest.mark.filterwarnings("ignore::jaxmm.errors.JaxmmWarning")
@settings(max_examples=40, **FUZZ)
@given(st.one_of(FORMULAS.map(lambda f: ("formula", f)),
                 st.tuples(st.sampled_from(["--offset", "--trials", "--weights"]), ARGS)))
def test_fuzzed_cli_arguments_run_no_code(tmp_path_factory, case):
    where = tmp_path_factory.mktemp("cli")
    path = where / "d.csv"
    DATA.to_csv(path, index=False)
    option, value = case
    if option == "formula":
        argv = ["fit", str(path), value]
    else:
        family = ["--family", "binomial"] if option == "--trials" else []
        argv = ["fit", str(path), "z ~ x + (1 | g)" if family else "y ~ x + (1 | g)", *family, f"{option}={value}"]
    cwd = os.getcwd()
    os.chdir(where)
    try:
        with _Watch():
            try:
                code = main(argv)
            except SystemExit as exc:  # argparse's usage errors
                code = exc.code
    finally:
        os.chdir(cwd)
    assert code in (0, 2)
    assert not any("pwn" in p.name for p in where.iterdir())


@pytest.mark.parametrize("kind", ["complete", "quasi"])
def test_separation_is_not_reported_as_converged(kind):
    rng = np.random.default_rng(0)
    g = np.repeat(np.arange(20), 10)
    x = rng.normal(size=200)
    if kind == "complete":  # x > 0 decides y exactly
        data, formula = pd.DataFrame({"y": (x > 0).astype(int), "x": x, "g": g}), "y ~ x + (1 | g)"
    else:  # one level of f has no successes at all
        f = (np.arange(200) % 4 == 0).astype(int)
        y = np.where(f == 1, 0, rng.integers(0, 2, 200))
        data, formula = pd.DataFrame({"y": y, "x": x, "f": f, "g": g}), "y ~ x + C(f) + (1 | g)"
    with pytest.warns(jaxmm.errors.ConvergenceWarning, match="separation"):
        res = jaxmm.fit(formula, data, family="binomial")
    assert not res.converged and "separation" in res.message and res.status is jaxmm.Status.SEPARATED
    if kind == "quasi":
        assert "'f1'" in res.message and "'x'" not in res.message


def test_boundary_lmm_converges_at_zero_variance():
    """Pure-noise groups: the variance estimate is 0. The log-diagonal parameter can only creep
    towards −∞, so the fit is finished on the boundary itself and reported converged and
    singular, with the singular-fit warning and no convergence warning."""
    rng = np.random.default_rng(3)
    data = pd.DataFrame({"y": rng.standard_normal(60), "x": rng.standard_normal(60), "g": np.repeat(np.arange(6), 10)})
    with pytest.warns(jaxmm.errors.SingularFitWarning):
        res = jaxmm.fit("y ~ x + (1 | g)", data)
    assert res.converged and res.singular and res.D.iloc[0, 0] == 0.0
    # the boundary is the optimum: any positive variance is worse
    from jaxmm._design import design_from_formula
    from jaxmm._formula import parse_formula
    from jaxmm._lmm import lmm_stats, profiled_loglik
    import jax.numpy as jnp

    design, _ = design_from_formula(parse_formula("y ~ x + (1 | g)"), data)
    stats = lmm_stats(design)
    at = lambda l: float(profiled_loglik(jnp.array([[l]]), stats, True))
    assert res.loglik == pytest.approx(at(0.0), abs=1e-10)
    assert all(at(l) < res.loglik for l in (1e-3, 1e-2, 0.1))


def test_infinite_values_name_the_column_even_with_missing_drop():
    data = pd.DataFrame({"y": np.arange(8.0), "x": np.arange(8.0), "g": [1, 1, 2, 2, 3, 3, 4, 4]})
    data.loc[5, "x"] = np.inf
    for missing in ("raise", "drop"):
        with pytest.raises(DataError, match=r"column 'x' has 1 infinite value\(s\) \(first rows: \[5\]\)"):
            jaxmm.fit("y ~ x + (1 | g)", data, missing=missing)


@pytest.mark.parametrize("argv_tail, words", [
    (["--family"], "expected one argument"),
    (["--bogus", "1"], "unrecognized arguments"),
])
def test_cli_usage_errors_are_one_line(tmp_path, capsys, argv_tail, words):
    path = tmp_path / "d.csv"
    pd.DataFrame({"y": [1.0, 2.0], "g": [1, 2]}).to_csv(path, index=False)
    with pytest.raises(SystemExit) as exc:
        main(["fit", str(path), "y ~ 1 + (1 | g)", *argv_tail])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("jaxmm: error:") and words in err and err.count("\n") == 1


def test_cli_unreadable_files_are_one_line(tmp_path, capsys):
    bad = tmp_path / "bad.parquet"
    bad.write_bytes(b"this is not parquet")
    for path in (tmp_path / "missing.csv", bad):
        assert main(["fit", str(path), "y ~ 1 + (1 | g)"]) == 2
        err = capsys.readouterr().err
        assert err.startswith(("jaxmm: error: cannot read data file", "jaxmm: error: cannot read the Parquet dataset"))
        assert err.count("\n") == 1


@pytest.mark.parametrize("formula, kwargs, words", [
    ("y ~ x + (1 | g)", {}, "response 'y' must be one numeric column"),
    ("x ~ 1 + (1 | g)", {"family": "binomial", "trials": "nope"}, "trials column 'nope' is not in the data"),
    ("x ~ 1 + (1 | g)", {"offset": "nope"}, "offset column 'nope' is not in the data"),
    ("x ~ 1 + (1 | g)", {"weights": "nope"}, "weights column 'nope' is not in the data"),
    ("x ~ nope + (1 | g)", {}, "'nope', which is not a column"),
    ("nope ~ x + (1 | g)", {}, "'nope', which is not a column"),
    ("x ~ 1 + (1 | nope)", {}, "grouping column 'nope' is not in the data"),
])
def test_missing_columns_and_non_numeric_response_are_named(formula, kwargs, words):
    data = pd.DataFrame({"y": list("abababab"), "x": np.arange(8.0), "g": [1, 1, 2, 2, 3, 3, 4, 4]})
    with pytest.raises(DataError) as err:
        jaxmm.fit(formula, data, **kwargs)
    assert words in str(err.value)
