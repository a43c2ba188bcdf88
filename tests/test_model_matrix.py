"""Model matrices of plain numeric columns are filled from the table; everything else is
formulaic's. Both must give the same design, names and encoders."""
import warnings

import jax
import numpy as np
import pandas as pd
import pytest

import jaxmm
from jaxmm import _design, _place_rows, _plain_matrix
from jaxmm._design import _rows_from_formula
from jaxmm._formula import parse_formula
from jaxmm.errors import DataError

from conftest import assert_same


@pytest.fixture(scope="module")
def table():
    rng = np.random.default_rng(3)
    n = 400
    return pd.DataFrame({
        "g": rng.integers(0, 20, n),
        "x1": rng.normal(size=n),
        "k": rng.integers(-3, 9, n),  # an int column: formulaic reads it as numeric
        "u": rng.integers(0, 5, n).astype(np.uint8),
        "pos": rng.uniform(0.5, 2.0, n),
        "c": rng.choice(list("abc"), n),
        "flag": rng.random(n) < 0.5,
        "y": rng.integers(0, 2, n),
        "count": rng.poisson(2.0, n),
        "yf": rng.normal(size=n),
    }).assign(twice=lambda d: 2.0 * d["x1"], one=1.0,
              # categories in no sorted order, one of them unused (its indicator is aliased)
              cat=lambda d: pd.Categorical(d["c"], categories=["z", "c", "a", "b"]),
              text=lambda d: d["c"].astype("string"))


def _formulaic_only(monkeypatch):
    monkeypatch.setattr(_plain_matrix, "_plain_sources", lambda *args, **kwargs: None)


def _same_rows(a, b):
    for field in ("X", "Z", "y", "groups"):
        left, right = getattr(a, field), getattr(b, field)
        assert left.shape == right.shape and left.dtype == right.dtype, field
        np.testing.assert_array_equal(left, right, err_msg=field)
    assert a.fixef_names == b.fixef_names and a.re_names == b.re_names
    assert a.encoders.fixed_kept == b.encoders.fixed_kept
    assert list(a.encoders.fixed.column_names) == list(b.encoders.fixed.column_names)
    assert list(a.encoders.random.column_names) == list(b.encoders.random.column_names)


@pytest.mark.parametrize("formula,filled", [
    ("y ~ x1 + k + (x1 | g)", [[None, "x1", "k"], [None, "x1"]]),
    ("count ~ 0 + x1 + u + (0 + x1 | g)", [["x1", "u"], ["x1"]]),
    ("yf ~ x1 + (1 | g)", [[None, "x1"], [None]]),
    ("y ~ x1 + (x1 + k || g)", [[None, "x1"], [None, "x1", "k"]]),
    ("y ~ x1 * k + (1 | g)", [[None]]),  # a product
    # factors: the indicator of each level but the first, filled from the level codes
    ("y ~ c + x1 + (x1 | g)", [[None, ("c", "b"), ("c", "c"), "x1"], [None, "x1"]]),
    ("y ~ flag + (1 | g)", [[None, ("flag", True)], [None]]),  # a bool column
    ("y ~ 0 + c + x1 + (1 | g)", [[("c", "a"), ("c", "b"), ("c", "c"), "x1"], [None]]),  # every level
    ("y ~ C(k) + (1 | g)", [[None] + [("k", v) for v in range(-2, 9)], [None]]),  # an int column's values
    ("y ~ cat + (1 | g)", [[None, ("cat", "c"), ("cat", "a")], [None]]),  # cat[T.b] aliased, dropped
    ("y ~ text + u + (text | g)", [[None, ("text", "b"), ("text", "c"), "u"], [None, ("text", "b"), ("text", "c")]]),
    ("y ~ c:x1 + (1 | g)", [[None]]),  # a product with a factor
    # a transform: jaxmm evaluates it into the model frame (placeholder jxf0_), then it is a column
    ("y ~ log(pos) + (log(pos) | g)", [[None, "jxf0_"], [None, "jxf0_"]]),
    ("y ~ x1 + (c | g)", [[None, "x1"], [None, ("c", "b"), ("c", "c")]]),
    ("I(count + 1) ~ x1 + (1 | g)", [[None, "x1"], [None]]),  # a response expression (jaxmm evaluates it)
    ("y ~ x1 + twice + k + (1 | g)", [[None, "x1", "k"], [None]]),  # aliased: dropped before the fill
    ("y ~ x1 + one + (x1 | g)", [[None, "x1"], [None, "x1"]]),
])
def test_plain_columns_give_formulaics_design(table, monkeypatch, formula, filled):
    spec = parse_formula(formula)
    used = []
    real = _design._plain_matrix
    monkeypatch.setattr(_design, "_plain_matrix",
                        lambda sources, data, levels=None: (len(data) == len(table) and used.append(sources))
                        or real(sources, data, levels))
    with warnings.catch_warnings(record=True) as fast_warnings:
        warnings.simplefilter("always")
        fast = _rows_from_formula(spec, table)
    # filled: the columns of each matrix filled from the table, X (with a plain response)
    # then Z; a matrix not listed went through formulaic
    assert used == filled
    monkeypatch.undo()
    _formulaic_only(monkeypatch)
    with warnings.catch_warnings(record=True) as slow_warnings:
        warnings.simplefilter("always")
        slow = _rows_from_formula(spec, table)
    _same_rows(fast, slow)
    assert [str(w.message) for w in fast_warnings] == [str(w.message) for w in slow_warnings]


@pytest.mark.parametrize("formula", ["y ~ x1 + k + (x1 | g)", "y ~ c + x1 + (c | g)", "y ~ x1 + twice + (1 | g)"])
@pytest.mark.parametrize("plain", [True, False])
def test_the_compile_starts_with_the_shapes_of_the_design(table, monkeypatch, formula, plain):
    # plan_design gives the design's shapes (the fit compiles for them) before the columns
    # are filled; they must be the built design's, aliased columns dropped
    from jaxmm._design import place_design, plan_design
    from jaxmm._types import TILE_ROWS

    if not plain:
        _formulaic_only(monkeypatch)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        planned = plan_design(parse_formula(formula), table)
        abstract, shape = planned.abstract("float64", TILE_ROWS), planned.groups.layout.shape
        design, info = place_design(planned)
    layout = info.layout
    assert shape == (layout.n_rows, layout.n_groups, layout.chunks, layout.group_slot.size)
    real = jax.tree.map(lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype), design)
    assert jax.tree.leaves(real) == jax.tree.leaves(abstract)


@pytest.mark.filterwarnings("ignore::jaxmm.errors.SingularFitWarning")
@pytest.mark.parametrize("formula", ["y ~ x1 + k + (x1 | g)", "y ~ x1 + text + flag + (1 | g)"])
def test_plain_columns_give_the_same_fit_and_predictions(table, monkeypatch, formula):
    fast = jaxmm.fit(formula, table, family="binomial")
    new = table.iloc[:50]
    _formulaic_only(monkeypatch)
    slow = jaxmm.fit(formula, table, family="binomial")
    assert_same(fast.loglik, slow.loglik)
    assert_same(fast.fixef.to_numpy(), slow.fixef.to_numpy())
    assert_same(fast.predict(new), slow.predict(new))


@pytest.mark.filterwarnings("ignore:invalid value encountered in log:RuntimeWarning")
def test_plain_path_raises_formulaics_errors(table):
    # the first rows are evaluated quietly; the whole table then reports the problem
    bad = table.assign(pos=np.r_[-1.0, table["pos"].to_numpy()[1:]])
    with pytest.raises(jaxmm.errors.DataError, match=r"log\(pos\)"):
        _rows_from_formula(parse_formula("y ~ log(pos) + (1 | g)"), bad)
    with pytest.raises(jaxmm.errors.FormulaError, match="cannot evaluate"):
        _rows_from_formula(parse_formula("y ~ I(x1 + c) + (1 | g)"), table)


def test_short_tables_and_views_of_the_data(table):
    # a table no longer than formulaic's first rows goes through formulaic; the filled X is a
    # new array, never a view that a later edit of the table would change
    short = table.iloc[:_design._HEAD_ROWS]
    rows = _rows_from_formula(parse_formula("yf ~ x1 + (1 | g)"), short)
    assert rows.X.shape == (len(short), 2)
    rows = _rows_from_formula(parse_formula("yf ~ x1 + (x1 | g)"), table)
    assert not np.shares_memory(rows.X, table["x1"].to_numpy())
    assert not np.shares_memory(rows.Z, table["x1"].to_numpy())


def test_a_repeated_model_column_is_an_error(table):
    data = pd.concat([table, table[["x1"]]], axis=1)
    with pytest.raises(jaxmm.errors.DataError, match=r"\['x1'\] appear more than once"):
        jaxmm.fit("yf ~ x1 + (1 | g)", data)
    jaxmm.fit("yf ~ k + (1 | g)", data)  # a repeated column the model does not use is no error


@pytest.mark.parametrize("formula,heads", [("y ~ x1 + (x1 | g)", 2), ("y ~ c + x1 + (x1 | g)", 2),
                                           ("y ~ c:x1 + (c | g)", 1), ("y ~ x1 + (center(x1) | g)", 1),
                                           ("y ~ x1 + (log(pos) | g)", 2)])
def test_only_plain_parts_are_evaluated_on_a_sample_of_rows(table, monkeypatch, formula, heads):
    # a part with a stateful transform or a product is decided from the parsed formula and goes
    # to formulaic once, on the whole table; jaxmm's own evaluations (log) are plain columns
    calls = []
    real = _design._head_matrix
    monkeypatch.setattr(_design, "_head_matrix", lambda text, head: calls.append(text) or real(text, head))
    _rows_from_formula(parse_formula(formula), table)
    assert len(calls) == heads


@pytest.mark.filterwarnings("ignore::jaxmm.errors.SingularFitWarning")
def test_a_fit_laid_out_on_the_device_equals_the_host_layout(table, monkeypatch):
    # large fits lay plain matrices out on the device from the table's columns; force that
    # path on this small table and compare with the host's
    formula = "y ~ x1 + k + c + (x1 + flag | g)"
    host = jaxmm.fit(formula, table, family="binomial")
    monkeypatch.setattr(_place_rows, "CPU_DEVICE_LAYOUT_ROWS", 0)
    monkeypatch.setattr(_place_rows, "DEVICE_LAYOUT_ROWS", 0)
    laid_out = []
    real = _place_rows._lay_out
    monkeypatch.setattr(_place_rows, "_lay_out", lambda *a, **k: laid_out.append(k["plain"]) or real(*a, **k))
    device = jaxmm.fit(formula, table, family="binomial")
    # levels as their codes: "b" and "c" are 1 and 2 of a, b, c; True is 1 of False, True
    assert laid_out == [(("X", (None, "x1", "k", ("c", 1), ("c", 2))), ("Z", (None, "x1", ("flag", 1))))]
    np.testing.assert_allclose(device.loglik, host.loglik, rtol=1e-12)
    np.testing.assert_allclose(device.fixef.to_numpy(), host.fixef.to_numpy(), rtol=1e-10)
    np.testing.assert_allclose(device.ranef.to_numpy(), host.ranef.to_numpy(), rtol=1e-8, atol=1e-12)


@pytest.mark.filterwarnings("ignore::jaxmm.errors.SingularFitWarning")
@pytest.mark.parametrize("unused", [False, True])
def test_a_categorical_grouping_column_fits_as_its_values(table, unused):
    """A grouping column of category dtype is numbered from its codes, not from the values
    built row by row; the groups, their order (by value, not by category order) and the fit
    are those of the same column as strings. Unused categories are not groups."""
    as_text = table.assign(g=("s" + table["g"].astype(str)).astype(object))
    levels = sorted(as_text["g"].unique(), reverse=True) + (["never"] if unused else [])
    as_category = as_text.assign(g=pd.Categorical(as_text["g"], categories=levels))
    formula = "y ~ x1 + (x1 | g)"
    text_fit = jaxmm.fit(formula, as_text, family="binomial")
    category_fit = jaxmm.fit(formula, as_category, family="binomial")
    assert category_fit.group_labels == text_fit.group_labels
    assert_same(category_fit.loglik, text_fit.loglik)
    assert_same(category_fit.ranef.to_numpy(), text_fit.ranef.to_numpy())
    assert list(category_fit.ranef.index) == list(text_fit.ranef.index)
    new = as_category.iloc[:30]
    assert_same(category_fit.predict(new), text_fit.predict(new))


def test_unique_inverse_of_a_categorical_is_numpys_on_its_values():
    from jaxmm._grouping import unique_inverse

    rng = np.random.default_rng(5)
    for categories in (["b", "a", "c", "zz", "é"], [30, 1, 2, 10]):
        values = pd.Categorical(rng.choice(categories[:-1], 200), categories=categories)
        uniques, inverse = unique_inverse(values)
        expected_uniques, expected_inverse = np.unique(np.asarray(values), return_inverse=True)
        np.testing.assert_array_equal(uniques, expected_uniques)
        np.testing.assert_array_equal(inverse, expected_inverse.ravel())


@pytest.mark.filterwarnings("ignore::jaxmm.errors.SingularFitWarning")
def test_a_categorical_grouping_column_with_a_missing_value(table):
    as_text = table.assign(g=("s" + table["g"].astype(str)).astype(object))
    as_text.loc[3, "g"] = None
    as_category = as_text.assign(g=pd.Categorical(as_text["g"]))
    for data in (as_text, as_category):
        with pytest.raises(DataError, match="missing values in .g."):
            jaxmm.fit("y ~ x1 + (1 | g)", data, family="binomial")
    dropped = [jaxmm.fit("y ~ x1 + (1 | g)", data, family="binomial", missing="drop") for data in (as_text, as_category)]
    assert dropped[0].group_labels == dropped[1].group_labels
    assert_same(dropped[0].loglik, dropped[1].loglik)


@pytest.mark.filterwarnings("ignore::jaxmm.errors.SingularFitWarning")
@pytest.mark.parametrize("dtype", ["str", "string[python]", "string[pyarrow]"])
def test_a_string_grouping_column_is_hashed_as_a_pandas_array(table, dtype):
    """A grouping column of pandas string dtype gives the groups, order and fit of the same
    strings as Python objects."""
    if dtype == "string[pyarrow]":
        pytest.importorskip("pyarrow")
    as_objects = table.assign(g=pd.Series(("s" + table["g"].astype(str)).tolist(), index=table.index, dtype=object))
    as_strings = as_objects.assign(g=as_objects["g"].astype(dtype))
    assert isinstance(as_strings["g"].dtype, pd.StringDtype) and as_objects["g"].dtype == object
    formula = "y ~ x1 + (x1 | g)"
    reference = jaxmm.fit(formula, as_objects, family="binomial")
    fit = jaxmm.fit(formula, as_strings, family="binomial")
    assert fit.group_labels == reference.group_labels
    assert_same(fit.loglik, reference.loglik)
    assert_same(fit.ranef.to_numpy(), reference.ranef.to_numpy())
    from jaxmm._grouping import unique_inverse

    with_missing = pd.array(["b", None, "a", "b"], dtype=dtype)
    with pytest.raises(TypeError):  # as np.unique of the same values as objects
        np.unique(np.asarray(with_missing, dtype=object))
    with pytest.raises(TypeError):
        unique_inverse(with_missing)


def test_factor_indicators_give_the_gram_matrix_and_scales_of_the_filled_matrix(table):
    # XᵀX (for aliased columns) and the column SDs come from level counts and sums by level,
    # without the matrix: they must equal the filled matrix's, across two factors and numbers
    from jaxmm._plain_matrix import PlainMatrix
    from jaxmm._column_stats import column_scales

    sources = [None, "x1", ("c", "b"), ("c", "c"), ("cat", "a"), ("flag", True), "k", ("text", "c")]
    X = PlainMatrix(sources, table)
    filled = np.asarray(X)
    expected = np.column_stack([np.ones(len(table)), table["x1"], table["c"] == "b", table["c"] == "c",
                                table["cat"] == "a", table["flag"], table["k"], table["text"] == "c"])
    np.testing.assert_array_equal(filled, expected.astype(float))
    np.testing.assert_allclose(X.gram(), filled.T @ filled, rtol=1e-12)
    np.testing.assert_allclose(column_scales(X), column_scales(filled), rtol=1e-12)


def test_other_encodings_of_a_factor_go_to_formulaic(table):
    # only dummy (treatment) columns are filled from level codes; a sum-to-zero contrast's
    # columns are not indicators of one level each
    from formulaic import model_matrix

    levels = _plain_matrix._levels_of([_plain_matrix._Factor("c")], table)
    dummy = model_matrix("C(c)", table)
    assert _plain_matrix._plain_sources(dummy, table, levels) == [None, ("c", "b"), ("c", "c")]
    assert _plain_matrix._plain_sources(model_matrix("C(c, contr.sum)", table), table, levels) is None


@pytest.mark.filterwarnings("ignore::jaxmm.errors.SingularFitWarning")
def test_text_of_the_string_dtype_is_encoded_by_its_levels(table):
    # formulaic passes a "string" column (pd.NA for missing) through as text; jaxmm gives it
    # the levels of the same text as Python strings, on every path
    as_objects = table.assign(text=table["c"].astype(object))
    for rows in (table, table.iloc[:_design._HEAD_ROWS]):
        strings = _rows_from_formula(parse_formula("y ~ text + (1 | g)"), rows)
        objects = _rows_from_formula(parse_formula("y ~ text + (1 | g)"), as_objects.loc[rows.index])
        _same_rows(strings, objects)
    fit = jaxmm.fit("y ~ x1 + text + (1 | g)", table, family="binomial")
    assert list(fit.fixef.index) == ["(Intercept)", "x1", "textb", "textc"]  # lme4's spelling
