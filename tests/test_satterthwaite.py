"""Satterthwaite's degrees of freedom and t tests of the fixed effects of LMMs against
lmerTest (tests/r/satterthwaite_refs.R): sleepstudy by REML and by ML, an unbalanced 31k-row
LMM with a factor (20 to 104 rows per group), and Penicillin's crossed factors."""
import json

import numpy as np
import pandas as pd
import pytest

import jaxmm
from jaxmm._satterthwaite import t_two_sided
from jaxmm.errors import ArgumentError

from conftest import DATA

REF = json.loads((DATA / "r_outputs" / "satterthwaite_refs.json").read_text())
SLEEP = pd.read_csv(DATA / "sleepstudy_reml.csv")
DATASETS = {"sleepstudy_reml": lambda: SLEEP, "sleepstudy_ml": lambda: SLEEP,
            "big": lambda: pd.read_csv(DATA / "big_lmm_reml.csv"),
            "penicillin": lambda: pd.read_csv(DATA / "crossed" / "penicillin_crossed_reml.csv")}


@pytest.mark.parametrize("name", list(DATASETS))
def test_degrees_of_freedom_and_p_values_equal_lmertest(name):
    ref = REF[name]
    res = jaxmm.fit(ref["formula"], DATASETS[name](), method=ref["method"])
    table = res.coef_table()
    assert list(table.columns) == ["estimate", "std_error", "df", "t", "p"]
    # lmerTest differentiates by finite differences: its df agree with the autodiff ones to 9e-5
    np.testing.assert_allclose(table["df"], np.atleast_1d(ref["df"]), rtol=5e-4)
    np.testing.assert_allclose(table["t"], np.atleast_1d(ref["t"]), rtol=1e-4)  # the optima agree to 2e-5
    # p-values above 1e-12 (below, a 1e-7 difference in t moves p by more than 1e-4); they agree
    # to 1.2e-3, Penicillin's (t = 28 on 5.5 df) moved that far by the 9e-5 in its df
    p, expected = table["p"].to_numpy(), np.atleast_1d(ref["p"])
    keep = expected > 1e-12
    np.testing.assert_allclose(p[keep], expected[keep], rtol=5e-3)


def test_the_t_distribution_equals_lmertests_p_at_its_own_t_and_df():
    for name in ("sleepstudy_reml", "sleepstudy_ml", "big"):
        ref = REF[name]
        np.testing.assert_allclose(t_two_sided(np.asarray(ref["t"]), np.asarray(ref["df"])), ref["p"], rtol=1e-9,
                                   atol=1e-300)


def test_summary_and_the_other_tables_follow_the_choice():
    res = jaxmm.fit(REF["sleepstudy_reml"]["formula"], SLEEP)
    text = res.summary()
    assert "df  t value  Pr(>|t|)" in text and "17.00" in text
    normal = res.coef_table(ddf="normal")
    assert list(normal.columns) == ["estimate", "std_error", "z", "p"]
    with pytest.raises(ArgumentError, match="ddf must be one of"):
        res.coef_table(ddf="Kenward-Roger")
    cbpp = jaxmm.fit_example("cbpp")
    with pytest.raises(ArgumentError, match="applies to gaussian fits"):
        cbpp.coef_table(ddf="Satterthwaite")
    assert "Pr(>|z|)" in cbpp.summary()
