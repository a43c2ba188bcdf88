"""Formulas cannot run code: terms are checked against an allow-list before evaluation."""
import numpy as np
import pandas as pd
import pytest

import jaxmm
from jaxmm._cli import main
from jaxmm._safety import check_formula
from jaxmm.errors import DataError, FormulaError

COLUMNS = ["y", "x", "z", "g", "size", "my col"]


@pytest.mark.parametrize("formula", [
    "y ~ x + (1 | g)",
    "y ~ x * z + x:z + (x || g)",
    "y ~ C(g) + C(g, Treatment('b')) + C(g, levels=['a', 'b']) + (1 | g)",
    "y ~ I(x ** 2) + {x / 10} + {(x > 0) * 1} + log(size) + sqrt(abs(z)) + center(x) + scale(z) + (1 | g)",
    "y ~ 0 + x - 1 + offset(log(size)) + (x | g)",
    "log(y) ~ `my col` + (1 | g)",
])
def test_allowed_formulas_pass(formula):
    check_formula(formula, COLUMNS)


@pytest.mark.parametrize("formula, words", [
    ("y ~ x + {__import__('os').system('echo pwned') or x} + (1 | g)", "__import__"),
    ("y ~ x + {x.__class__} + (1 | g)", "x.__class__"),
    ("y ~ np.log(x) + (1 | g)", "np.log"),
    ("y ~ eval('x') + (1 | g)", "eval"),
    ("y ~ open('/etc/passwd') + (1 | g)", "open"),
    ("y ~ {[c for c in x]} + (1 | g)", "ListComp"),
    ("y ~ {(lambda: x)()} + (1 | g)", "lambda"),
    ("y ~ {(x)(1)} + (1 | g)", "the call x(...)"),
    ("y ~ {x[0]} + (1 | g)", "Subscript"),
    ("y ~ C(g, **{'a': 1}) + (1 | g)", "keyword"),
])
def test_everything_else_is_rejected(formula, words):
    with pytest.raises(FormulaError, match=None) as err:
        check_formula(formula, COLUMNS)
    assert words in str(err.value)


def test_unknown_names_are_missing_columns():
    with pytest.raises(DataError, match="'nosuch', which is not a column"):
        check_formula("y ~ x + nosuch + (1 | g)", COLUMNS)


def test_injection_never_runs_through_fit_or_cli(tmp_path, capsys):
    marker = tmp_path / "pwned"
    data = pd.DataFrame({"y": np.arange(8.0), "x": np.arange(8.0), "g": [1, 1, 2, 2, 3, 3, 4, 4]})
    formula = f"y ~ x + {{__import__('os').system('touch {marker}') or x}} + (1 | g)"
    with pytest.raises(FormulaError, match="__import__"):
        jaxmm.fit(formula, data)
    path = tmp_path / "d.csv"
    data.to_csv(path, index=False)
    assert main(["fit", str(path), formula]) == 2
    err = capsys.readouterr().err
    assert "not allowed" in err and err.count("\n") == 1
    assert not marker.exists()


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
    assert not res.converged and "separation" in res.message
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
    assert res.converged and res.singular and res.D[0, 0] == 0.0
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
        assert err.startswith("jaxmm: error: cannot read data file") and err.count("\n") == 1


@pytest.mark.parametrize("formula, kwargs, words", [
    ("y ~ x + (1 | g)", {}, "response 'y' must be one numeric column"),
    ("x ~ 1 + (1 | g)", {"family": "binomial", "trials": "nope"}, "trials column 'nope' is not in the data"),
    ("x ~ 1 + (1 | g)", {"offset": "nope"}, "offset column 'nope' is not in the data"),
    ("x ~ 1 + (1 | g)", {"weights": "nope"}, "weights column 'nope' is not in the data"),
    ("x ~ nope + (1 | g)", {}, "'nope', which is not a column"),
    ("nope ~ x + (1 | g)", {}, "'nope', which is not a column"),
    ("x ~ 1 + (1 | nope)", {}, "'nope', which is not a column"),
])
def test_missing_columns_and_non_numeric_response_are_named(formula, kwargs, words):
    data = pd.DataFrame({"y": list("abababab"), "x": np.arange(8.0), "g": [1, 1, 2, 2, 3, 3, 4, 4]})
    with pytest.raises(DataError) as err:
        jaxmm.fit(formula, data, **kwargs)
    assert words in str(err.value)
