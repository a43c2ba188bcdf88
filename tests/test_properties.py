"""Property-based checks (hypothesis): valid random designs always fit; invalid inputs only
ever raise jaxmm's own errors. Plus determinism: the same input gives bit-identical output."""
import json
import subprocess
import sys
import warnings

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import jaxmm
from jaxmm.errors import JaxmmError, JaxmmWarning

from conftest import bit_reproducible

SETTINGS = settings(max_examples=10, deadline=None, suppress_health_check=[HealthCheck.too_slow],
                    derandomize=True)


@st.composite
def valid_problems(draw):
    family = draw(st.sampled_from(["gaussian", "binomial", "poisson", "gamma"]))
    m = draw(st.integers(2, 9))
    sizes = draw(st.lists(st.integers(1, 7), min_size=m, max_size=m))
    if max(sizes) == 1:  # one row in every group: refused as lme4 does (test_input_errors)
        sizes[0] = 2
    seed = draw(st.integers(0, 2**31 - 1))
    rng = np.random.default_rng(seed)
    g = np.repeat(np.arange(m), sizes)
    x = rng.normal(size=g.size)
    eta = 0.3 + 0.5 * x + rng.normal(0, 0.7, m)[g]
    y = {"gaussian": eta + rng.normal(size=g.size),
         "binomial": (rng.random(g.size) < 1 / (1 + np.exp(-eta))).astype(int),
         "poisson": rng.poisson(np.exp(eta)),
         "gamma": rng.gamma(2.0, np.exp(eta) / 2.0)}[family]
    term = draw(st.sampled_from(["(1 | g)", "(x | g)", "(x || g)"]))
    return family, f"y ~ x + {term}", pd.DataFrame({"y": y, "x": x, "g": [f"s{i}" for i in g]})


@pytest.mark.slow
@SETTINGS
@given(valid_problems())
def test_valid_random_designs_fit(problem):
    family, formula, data = problem
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", JaxmmWarning)  # singular or separated fits warn, correctly
        res = jaxmm.fit(formula, data, family=family)
    assert res.n_obs == len(data)
    assert np.isfinite(res.loglik) or not res.converged
    if res.converged:
        assert np.all(np.isfinite(res.fixef)) and np.all(np.isfinite(res.vcov.to_numpy()))


BASE = pd.DataFrame({"y": [0, 1, 1, 0, 1, 0, 2, 1.5], "x": np.linspace(-1, 1, 8), "g": [1, 1, 2, 2, 3, 3, 4, 4],
                     "s": list("abcdefgh")})
FORMULA_CHARS = "yxgs~+-*:/()|{}[]._ 01'\"C"


@st.composite
def invalid_inputs(draw):
    kind = draw(st.sampled_from(["formula", "cell", "family", "rows"]))
    data, formula, family = BASE.copy(), "y ~ x + (1 | g)", "gaussian"
    if kind == "formula":
        formula = draw(st.text(alphabet=FORMULA_CHARS, max_size=30))
    elif kind == "cell":
        col = draw(st.sampled_from(["y", "x", "g"]))
        row = draw(st.integers(0, 7))
        value = draw(st.sampled_from([np.nan, np.inf, -np.inf, "text", None, -3.0, 0.5, 7]))
        data[col] = data[col].astype(object)
        data.loc[row, col] = value
        family = draw(st.sampled_from(["gaussian", "binomial", "poisson"]))
    elif kind == "family":
        family = draw(st.text(max_size=10))
    else:
        data = data.iloc[: draw(st.integers(0, 3))]
    return formula, data, family


@SETTINGS
@given(invalid_inputs())
def test_invalid_inputs_raise_only_jaxmm_errors(case):
    formula, data, family = case
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", JaxmmWarning)
        try:
            jaxmm.fit(formula, data, family=family)
        except JaxmmError:
            pass  # the only acceptable failure


def test_same_input_gives_bit_identical_output(tmp_path, reference_fit):
    ref, data, first = reference_fit("contraception_q2")
    again = jaxmm.fit(ref["formula"], data, family="binomial")
    if not bit_reproducible():
        np.testing.assert_allclose(again.fixef, first.fixef, rtol=1e-7)
        assert again.loglik == pytest.approx(first.loglik, rel=1e-10)
        return
    assert json.dumps(first.to_dict()) == json.dumps(again.to_dict())
    # and in a fresh process, through the CLI, which reports progress: a program with the
    # progress callbacks in it, so compared with such a fit (the callbacks may change the
    # last bits: small programs are compiled without LLVM's optimisations, _jit)
    shown = jaxmm.fit(ref["formula"], data, family="binomial", verbose=lambda *_: None)
    np.testing.assert_allclose(shown.fixef, first.fixef, rtol=1e-13)
    path, out = tmp_path / "d.csv", tmp_path / "r.json"
    data.to_csv(path, index=False)
    code = subprocess.run([sys.executable, "-m", "jaxmm._cli", "fit", str(path), ref["formula"], "--family",
                           "binomial", "--json", str(out)], capture_output=True, text=True).returncode
    assert code == 0
    fresh = json.loads(out.read_text())
    mine = json.loads(json.dumps(shown.to_dict()))
    assert fresh["fixef"] == mine["fixef"] and fresh["loglik"] == mine["loglik"] and fresh["D"] == mine["D"]


@settings(max_examples=60, deadline=None)
@given(st.lists(st.integers(-3, 3), max_size=40), st.booleans(), st.booleans())
def test_unique_inverse_equals_numpy(values, sort, as_float):
    from jaxmm._grouping import unique_inverse

    a = np.array(sorted(values) if sort else values, dtype=float if as_float else np.int64)
    uniques, inverse = unique_inverse(a)
    expected_uniques, expected_inverse = np.unique(a, return_inverse=True)
    np.testing.assert_array_equal(uniques, expected_uniques)
    np.testing.assert_array_equal(inverse, expected_inverse.ravel())
    if a.size:
        np.testing.assert_array_equal(uniques[inverse], a)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.sampled_from(["a", "b", "c10", "c9", "Z", "é"]), max_size=40), st.booleans())
def test_unique_inverse_of_labels_equals_numpy(values, as_object):
    """Unsorted labels go through a hash and a sort of the distinct values only."""
    from jaxmm._grouping import unique_inverse

    a = np.array(values, dtype=object if as_object else str)
    uniques, inverse = unique_inverse(a)
    expected_uniques, expected_inverse = np.unique(a, return_inverse=True)
    np.testing.assert_array_equal(uniques, expected_uniques)
    np.testing.assert_array_equal(inverse, expected_inverse.ravel())


@settings(max_examples=80, deadline=None)
@given(st.data())
def test_unique_inverse_of_integer_ids_equals_numpy(data):
    """Integer ids over a narrow range take a table of the values present instead of a hash;
    wide ranges, negative ids, ids beyond int64 and small dtypes (whose differences would
    overflow) included."""
    from jaxmm._grouping import unique_inverse

    dtype = data.draw(st.sampled_from(["int8", "int32", "int64", "uint16", "uint64"]))
    info = np.iinfo(dtype)
    lo = data.draw(st.integers(int(info.min), int(info.max)))
    hi = min(int(info.max), lo + data.draw(st.integers(0, 300)))
    values = data.draw(st.lists(st.integers(lo, hi), max_size=60))
    a = np.array(values, dtype=dtype)
    uniques, inverse = unique_inverse(a)
    expected_uniques, expected_inverse = np.unique(a, return_inverse=True)
    assert uniques.dtype == a.dtype
    np.testing.assert_array_equal(uniques, expected_uniques)
    np.testing.assert_array_equal(inverse, expected_inverse.ravel())


@pytest.mark.parametrize("m", [1, 7, 1 << 16, (1 << 16) + 5, 300_000])
def test_code_order_is_numpys_stable_argsort(m):
    """The radix order of group codes (one or two 16-bit passes) is numpy's stable argsort:
    codes in random order, with ties whose input order must be kept."""
    from jaxmm._grouping import _code_order, stable_order

    rng = np.random.default_rng(m)
    codes = rng.integers(0, m, 5 * m + 50)
    np.testing.assert_array_equal(_code_order(codes, m), np.argsort(codes, kind="stable"))
    np.testing.assert_array_equal(stable_order(codes), np.argsort(codes, kind="stable"))
    np.testing.assert_array_equal(stable_order(np.sort(codes)), np.arange(codes.size))


def test_layout_keeps_the_row_order_within_each_group():
    from jaxmm._layout import plan_layout

    rng = np.random.default_rng(4)
    codes = rng.integers(0, 70_000, 300_000)  # unsorted, more groups than one radix pass holds
    lay = plan_layout(codes, 70_000, chunk_rows=1 << 16, tile=4)
    order = np.argsort(codes, kind="stable")
    slots = lay.row_slot[order]  # rows by group, in input order within a group
    same = codes[order][1:] == codes[order][:-1]
    assert np.all(slots[1:][same] == slots[:-1][same] + 1)
    assert np.all(slots[1:][~same] > slots[:-1][~same])


@settings(max_examples=60, deadline=None)
@given(st.lists(st.integers(1, 9), min_size=1, max_size=60), st.sampled_from([1, 4]), st.integers(0, 20),
       st.integers(0, 3), st.integers(0, 3))
def test_a_layout_in_agreed_chunks_holds_every_group_in_one_chunk(sizes, tile, extra, more_groups, more_chunks):
    # the processes of a job lay out their own groups in chunks of the rows they agreed on
    from jaxmm._layout import layout_slots, plan_in_chunks

    codes = np.repeat(np.arange(len(sizes)), sizes)
    biggest = -(-max(sizes) // tile) * tile
    rows_per = biggest + tile * (1 + extra)
    least = plan_in_chunks(codes, len(sizes), rows_per, tile=tile)
    plan = plan_in_chunks(codes, len(sizes), rows_per, groups_per=least.groups_per + more_groups,
                          n_chunks=least.shape.chunks + more_chunks, tile=tile)
    assert plan.shape.n_rows == plan.shape.chunks * rows_per and plan.shape.chunks == least.shape.chunks + more_chunks
    lay = layout_slots(plan)
    chunk_of_row = lay.row_slot // rows_per
    chunk_of_group = lay.group_slot // plan.groups_per
    assert np.all(chunk_of_row == chunk_of_group[codes])  # each group's rows in its own chunk
    assert np.unique(lay.row_slot).size == codes.size and np.unique(lay.group_slot).size == len(sizes)
    assert lay.row_slot.max() < plan.shape.n_rows and np.all(lay.row_slot[np.r_[0, np.cumsum(sizes)[:-1]]] % tile == 0)
    with pytest.raises(ValueError, match="cannot hold"):
        plan_in_chunks(codes, len(sizes), biggest, tile=tile)
    if least.groups_per > 1:
        with pytest.raises(ValueError, match="cannot hold"):
            plan_in_chunks(codes, len(sizes), rows_per, groups_per=least.groups_per - 1, tile=tile)


@settings(max_examples=80, deadline=None)
@given(st.lists(st.text(max_size=6), max_size=40, unique=True))
def test_strings_are_ordered_as_python_orders_them(values):
    """Distinct string labels are sorted as fixed-width numpy text where that gives Python's
    order: any code point, empty strings and trailing NULs (which numpy's text drops)."""
    from jaxmm._grouping import _value_order

    a = np.array(values, dtype=object)
    assert [a[i] for i in _value_order(a)] == sorted(values)


def test_unique_inverse_refuses_labels_that_cannot_be_ordered():
    from jaxmm._grouping import unique_inverse

    with pytest.raises(TypeError):
        unique_inverse(np.array([2, "a", 1], dtype=object))


def _aliased_by_qr(X, rtol=1e-7):
    norms = np.linalg.norm(X, axis=0)
    r = np.abs(np.diag(np.linalg.qr(X, mode="r")))
    return [j for j in range(X.shape[1]) if r[j] <= rtol * max(norms[j], 1e-300)]


@settings(max_examples=60, deadline=None)
@given(st.integers(0, 10_000), st.lists(st.sampled_from(["new", "copy", "combo", "zero", "near", "scaled"]),
                                        min_size=1, max_size=6))
def test_aliased_columns_from_the_gram_matrix_equal_the_qr(seed, kinds):
    """aliased_columns decides from XᵀX (a QR where that is ambiguous); it must drop what
    a Householder QR of X drops: copies, linear combinations, zero columns, columns a
    hair's breadth from the span, at any column scale."""
    from jaxmm._column_stats import aliased_columns, column_scales

    rng = np.random.default_rng(seed)
    n = 300
    cols = [np.ones(n)]
    for kind in kinds:
        if kind == "new":
            cols.append(rng.normal(size=n) * 10.0 ** rng.integers(-4, 5))
        elif kind == "copy":
            cols.append(cols[rng.integers(len(cols))] * rng.normal())
        elif kind == "combo":
            w = rng.normal(size=len(cols))
            cols.append(sum(c * wi for c, wi in zip(cols, w)))
        elif kind == "zero":
            cols.append(np.zeros(n))
        elif kind == "near":
            cols.append(cols[-1] + 10.0 ** rng.integers(-10, -4) * rng.normal(size=n) * np.linalg.norm(cols[-1]))
        else:
            cols.append(cols[rng.integers(len(cols))] * 1e6 + rng.normal(size=n))
    X = np.column_stack(cols)
    assert aliased_columns(X) == _aliased_by_qr(X)
    # plain formula columns: XᵀX from the table's columns, the matrix filled only for a QR
    from jaxmm._plain_matrix import _plain_gram, _plain_matrix

    table = pd.DataFrame({f"c{j}": c for j, c in enumerate(cols[1:])})
    sources = [None] + list(table.columns)
    assert aliased_columns(lambda: _plain_matrix(sources, table), gram=_plain_gram(sources, table)) == _aliased_by_qr(X)
    expected = tuple(float(s) if s > 0 else 1.0 for s in X.std(axis=0))
    np.testing.assert_allclose(column_scales(X, rows=64), expected, rtol=1e-9)
