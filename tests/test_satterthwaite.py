"""Satterthwaite's degrees of freedom and t tests of the fixed effects of LMMs against
lmerTest (tests/r/satterthwaite_refs.R): sleepstudy by REML and by ML, an unbalanced 31k-row
LMM with a factor (20 to 104 rows per group), and Penicillin's crossed factors; and the F
tests of lmerTest's anova, one and two numerator df."""
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


_FITS = {}


def _fit(name):
    if name not in _FITS:
        ref = REF[name]
        _FITS[name] = jaxmm.fit(ref["formula"], DATASETS[name](), method=ref["method"])
    return _FITS[name]


@pytest.mark.parametrize("name", list(DATASETS))
def test_degrees_of_freedom_and_p_values_equal_lmertest(name):
    ref = REF[name]
    table = _fit(name).coef_table()
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


@pytest.mark.parametrize("name,fit", [("anova_big", "big"), ("anova_sleepstudy", "sleepstudy_reml")])
def test_f_tests_of_the_terms_equal_lmertests_anova(name, fit):
    ref = {k: np.atleast_1d(v) for k, v in REF[name].items() if k != "formula"}
    res = _fit(fit)
    table = jaxmm.anova(res)
    assert list(table.columns) == ["sum_sq", "mean_sq", "num_df", "den_df", "F", "p"]
    assert [t.replace("C(", "").rstrip(")") for t in table.index] == list(ref["terms"])
    assert table["num_df"].tolist() == list(ref["num_df"])
    np.testing.assert_allclose(table["den_df"], ref["den_df"], rtol=5e-4)
    np.testing.assert_allclose(table["F"], ref["F"], rtol=1e-4)  # the optima's t agree to 2e-5
    keep = ref["p"] > 1e-12
    np.testing.assert_allclose(table["p"][keep], ref["p"][keep], rtol=5e-3)
    # one numerator df: F is t², on the coefficient's own df
    t = res.coef_table()
    assert table.loc[table.index[0], "F"] == pytest.approx(t["t"].iloc[1] ** 2, rel=1e-10)
    assert table.loc[table.index[0], "den_df"] == pytest.approx(t["df"].iloc[1], rel=1e-10)


@pytest.mark.parametrize("name", ["anova_interaction", "anova_factorial"])
def test_type_three_f_tests_of_terms_inside_interactions_equal_lmertest(name):
    # the first 4,000 rows of the big LMM: x * C(cat3) (a slope averaged over the factor's
    # levels, a factor at x = 0) and C(cat3) * C(band), unbalanced (unweighted marginal means)
    ref = {k: np.atleast_1d(v) for k, v in REF[name].items() if k != "formula"}
    data = DATASETS["big"]().iloc[:4000]
    data = data.assign(band=np.where(data["x"] < -0.5, "a_lo", np.where(data["x"] < 0.5, "b_mid", "c_hi")))
    table = jaxmm.anova(jaxmm.fit(REF[name]["formula"], data))
    assert [t.replace("C(", "").replace(")", "") for t in table.index] == list(ref["terms"])
    assert table["num_df"].tolist() == list(ref["num_df"])
    np.testing.assert_allclose(table["F"], ref["F"], rtol=1e-4)
    np.testing.assert_allclose(table["den_df"], ref["den_df"], rtol=5e-4)
    if name == "anova_factorial":
        # type III hypotheses do not depend on the coding: sum and Helmert codes give lmerTest's F
        recoded = jaxmm.anova(jaxmm.fit("y ~ C(cat3, Helmert) * C(band, Sum) + (1 | g)", data))
        np.testing.assert_allclose(recoded["F"], ref["F"], rtol=1e-4)
        with pytest.raises(ArgumentError, match="'C\\(band\\)' has no main effect"):
            jaxmm.anova(jaxmm.fit("y ~ C(cat3) + C(cat3):C(band) + (1 | g)", data))


def test_f_tests_refuse_what_they_cannot_answer():
    with pytest.raises(ArgumentError, match="for linear mixed models, not 'binomial'"):
        jaxmm.anova(jaxmm.fit_example("cbpp"))
