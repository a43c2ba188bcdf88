"""Formula parsing, input errors, the result object and the command line."""
import dataclasses
import gc

import numpy as np
import pandas as pd
import pytest

import jaxmm
from jaxmm._cli import main
from jaxmm._formula import parse_formula
from jaxmm.errors import ArgumentError, DataError, FormulaError, JaxmmError, JaxmmWarning


@pytest.mark.parametrize("formula, fixed, random, group", [
    ("y ~ x + C(period) + (x | subject)", "x + C(period)", "x", "subject"),
    ("y ~ (1 | g)", "1", "1", "g"),
    ("y ~ (0 + x | g) + x", "x", "0 + x", "g"),
    ("y ~ log(x) + (log(x) | g)", "log(x)", "log(x)", "g"),
    ("y ~ x - 1 + (1|g)", "x - 1", "1", "g"),
])
def test_parse_formula(formula, fixed, random, group):
    spec = parse_formula(formula)
    assert (spec.response, spec.fixed, spec.random, spec.group) == ("y", fixed, random, group)


@pytest.mark.parametrize("formula, words", [
    ("y ~ x", "no random-effect term"),
    ("y ~ x + (1 | g:)", "column names joined by ':'"),
    ("y x + (1 | g)", "exactly one '~'"),
    ("y ~ x + (1 | g", "unbalanced"),
    ("~ x + (1 | g)", "no response"),
    ("y ~ x + ( | g)", "nothing before '|'"),
    ("y ~ x + (1 | g/g)", "names a column twice"),
    ("y ~ x + (1 | g + h)", "column names joined by ':'"),
])
def test_formula_errors(formula, words):
    with pytest.raises(FormulaError, match=words.replace("(", r"\(").replace("|", r"\|")):
        parse_formula(formula)


@pytest.fixture(scope="module")
def cbpp():
    return jaxmm.load_example("cbpp")


def test_input_errors_name_the_problem(cbpp):
    f = "incidence ~ C(period) + (1 | herd)"
    with pytest.raises(DataError, match="'flock'"):
        jaxmm.fit("incidence ~ C(period) + (1 | flock)", cbpp, family="binomial", trials="size")
    with pytest.raises(DataError, match="'n_trials'"):
        jaxmm.fit(f, cbpp, family="binomial", trials="n_trials")
    with pytest.raises(DataError, match="exceeds the number of trials"):
        jaxmm.fit(f, cbpp, family="binomial")  # counts without trials= are not 0/1
    with pytest.raises(ArgumentError, match=r"choose one of \['binomial', 'gamma', 'gaussian', 'negative_binomial', 'poisson'\]"):
        jaxmm.fit(f, cbpp, family="binomal")
    with pytest.raises(ArgumentError, match="unknown link 'probit'"):
        jaxmm.fit(f, cbpp, family="poisson", link="probit")
    with pytest.raises(ArgumentError, match=r"\['REML', 'ML'\]"):
        jaxmm.fit(f, cbpp, method="laplace")
    bad = cbpp.assign(size=cbpp["size"].astype(float))
    bad.loc[4, "size"] = np.nan
    with pytest.raises(DataError, match="missing values in 'size': 1 row"):
        jaxmm.fit(f, bad, family="binomial", trials="size")
    bad = cbpp.assign(herd=cbpp["herd"].astype(object))
    bad.loc[2, "herd"] = None
    with pytest.raises(DataError, match="missing values in 'herd': 1 row"):
        jaxmm.fit(f, bad, family="binomial", trials="size")
    bad = cbpp.assign(herd=1)
    with pytest.raises(DataError, match="single level"):
        jaxmm.fit(f, bad, family="binomial", trials="size")
    with pytest.raises(DataError, match="no rows"):
        jaxmm.fit(f, cbpp.iloc[:0], family="binomial", trials="size")
    with pytest.raises(DataError, match="non-negative whole numbers"):
        jaxmm.fit("y ~ 1 + (1 | g)", pd.DataFrame({"y": [0.5, 1, 2, 3], "g": [1, 1, 2, 2]}), family="poisson")
    # the support checks on integer and float responses alike (integers skip the whole-number test)
    g = [1, 1, 2, 2]
    for y, family, words in [([0, -1, 1, 0], "binomial", "must be non-negative"),
                             ([0.0, 0.5, 1.0, 0.0], "binomial", "whole numbers of successes"),
                             ([0, 2, 1, 0], "binomial", "exceeds the number of trials"),
                             ([0, -2, 1, 3], "poisson", "non-negative whole numbers")]:
        with pytest.raises(DataError, match=words):
            jaxmm.fit("y ~ 1 + (1 | g)", pd.DataFrame({"y": y, "g": g}), family=family)
    # every jaxmm error is still a ValueError for generic handlers
    assert issubclass(JaxmmError, ValueError)


def test_missing_covariate_is_not_dropped(cbpp):
    data = cbpp.assign(x=np.arange(len(cbpp), dtype=float))
    data.loc[[3, 7], "x"] = np.nan
    with pytest.raises(DataError, match="x"):
        jaxmm.fit("incidence ~ x + (1 | herd)", data, family="binomial", trials="size")


def test_aliased_column_is_dropped_with_a_warning(cbpp):
    data = cbpp.assign(size2=2.0 * cbpp["size"])
    with pytest.warns(JaxmmWarning, match="size2"):
        res = jaxmm.fit("incidence ~ size + size2 + (1 | herd)", data, family="binomial", trials="size")
    assert list(res.fixef.index) == ["(Intercept)", "size"]


def test_result_is_immutable_and_labelled(reference_fit):
    ref, data, res = reference_fit("cbpp_binomial")
    with pytest.raises(dataclasses.FrozenInstanceError):
        res.loglik = 0.0
    with pytest.raises(ValueError, match="read-only"):
        res.D_array[0, 0] = 1.0
    D = res.D  # labelled, and the caller's own copy
    assert list(D.index) == list(D.columns) == ["(Intercept)"]
    D.iloc[0, 0] = 1.0
    assert res.D.iloc[0, 0] == res.D_array[0, 0] != 1.0
    edited = res.fixef
    edited.iloc[0] = 99.0  # a returned Series is the caller's own copy
    assert res.fixef.iloc[0] != 99.0
    assert list(res.fixef.index) == ["(Intercept)", "period2", "period3", "period4"]
    assert res.ranef.index.name == "herd" and list(res.ranef.columns) == ["(Intercept)"]
    assert res.cond_var.shape == (15, 1, 1) and res.D.shape == (1, 1)
    assert res.sigma is None
    table = res.coef_table()
    assert list(table.columns) == ["estimate", "std_error", "z", "p"]
    np.testing.assert_allclose(table["z"], res.fixef / np.sqrt(np.diag(res.vcov)))
    text = res.summary()
    for piece in ["binomial", "AIC", "BIC", "logLik", "Random effects:", "herd", "Number of obs: 56",
                  "Fixed effects:", "period4", "converged"]:
        assert piece in text


def test_string_and_integer_group_labels(reference_fit):
    _, _, res = reference_fit("sleepstudy_reml")  # integer subject ids
    assert res.ranef.index[0] == 308
    _, _, res = reference_fit("seedlike_bernoulli_q2")  # string ids
    assert res.ranef.index[0] == "s00001"


def test_cli_example_prints_the_fit(capsys):
    assert main(["example", "cbpp"]) == 0
    out = capsys.readouterr().out
    assert "herd" in out and "period2" in out and "-92.026" in out


def test_cli_errors_are_one_line(capsys, tmp_path):
    assert main(["example", "nope"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("jaxmm: error: unknown example") and err.count("\n") == 1
    path = tmp_path / "d.csv"
    pd.DataFrame({"y": [1.0, 2.0, 3.0, 4.0], "g": [1, 1, 2, 2]}).to_csv(path, index=False)
    assert main(["fit", str(path), "y ~ x + (1 | g)"]) == 2
    err = capsys.readouterr().err
    assert "x" in err and err.count("\n") == 1


def test_designs_leave_numpys_huge_page_hint_as_they_found_it(cbpp):
    """Design building switches numpy's huge-page hint off (jaxmm._pages) and restores the
    caller's setting, whichever it was, also when building fails."""
    from jaxmm._pages import _SET_HUGEPAGE, small_pages

    assert _SET_HUGEPAGE is not None  # numpy >= 1.26 has it
    original = _SET_HUGEPAGE(True)
    try:
        for setting in (True, False):
            _SET_HUGEPAGE(setting)
            with small_pages():
                assert _SET_HUGEPAGE(False) is False  # off inside
            assert _SET_HUGEPAGE(setting) is setting  # restored
            jaxmm.fit("incidence ~ C(period) + (1 | herd)", cbpp, family="binomial", trials="size")
            assert _SET_HUGEPAGE(setting) is setting
            with pytest.raises(jaxmm.errors.DataError):
                jaxmm.fit("incidence ~ C(period) + (1 | herd)", cbpp.iloc[:0], family="binomial", trials="size")
            assert _SET_HUGEPAGE(setting) is setting
    finally:
        _SET_HUGEPAGE(original)


def test_fits_leave_the_garbage_collector_as_they_found_it(cbpp):
    from jaxmm._gc import frozen_heap

    # Some hosts' interpreters start with objects frozen already (seen: 375 in a pytest worker
    # on the GPU machine); the test starts from an unfrozen heap and refreezes at the end.
    frozen_before = gc.get_freeze_count()
    gc.unfreeze()
    try:
        assert gc.isenabled() and gc.get_freeze_count() == 0
        with frozen_heap():
            assert gc.get_freeze_count() > 0  # the heap is frozen while a fit is traced
        assert gc.get_freeze_count() == 0
        with pytest.raises(RuntimeError), frozen_heap():
            raise RuntimeError("a failing fit")
        assert gc.get_freeze_count() == 0
        jaxmm.fit("incidence ~ C(period) + (1 | herd)", cbpp, family="binomial", trials="size")
        assert gc.isenabled() and gc.get_freeze_count() == 0
        # A process that froze objects itself keeps them frozen, and the fit freezes nothing more.
        gc.freeze()
        frozen = gc.get_freeze_count()
        with frozen_heap():
            assert gc.get_freeze_count() == frozen
        assert gc.get_freeze_count() == frozen
    finally:
        gc.unfreeze()
        if frozen_before:
            gc.freeze()
