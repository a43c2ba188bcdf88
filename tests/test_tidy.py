"""Tidy outputs against broom.mixed and lme4 (tests/r/tidy_refs.R): tidy's four kinds of
rows, glance, augment, coef, fitted and the three kinds of residuals, for an LMM (sleepstudy,
REML) and a binomial GLMM with trials (cbpp); and the same views of a several-term fit."""
import json

import numpy as np
import pandas as pd
import pytest

import jaxmm
from jaxmm.errors import ArgumentError

from conftest import DATA

REF = json.loads((DATA / "r_outputs" / "tidy_refs.json").read_text())
# jaxmm's and lme4's optima agree to 2e-4 in sleepstudy's fitted values (of ~250) and to 1e-3
# in cbpp's, whose jaxmm log-likelihood is 3e-4 higher; lme4's glmer standard errors come
# from a finite-difference Hessian and differ by 0.6 %
TOL = {"sleepstudy": dict(atol=2e-3, se=1e-4), "cbpp": dict(atol=1e-2, se=5e-2)}


@pytest.fixture(scope="module")
def fits():
    sleep = pd.read_csv(DATA / "sleepstudy_reml.csv")
    cbpp = pd.read_csv(DATA / "cbpp_binomial.csv")
    return {"sleepstudy": (sleep, jaxmm.fit("Reaction ~ Days + (Days | Subject)", sleep)),
            "cbpp": (cbpp, jaxmm.fit("incidence ~ C(period) + (1 | herd)", cbpp, family="binomial", trials="size"))}


def _frame(ref):
    return pd.DataFrame({k: np.atleast_1d(v) for k, v in ref.items()})


@pytest.mark.parametrize("name", ["sleepstudy", "cbpp"])
def test_tidy_equals_broom_mixed(fits, name):
    _, res = fits[name]
    ref, tol = REF[name], TOL[name]
    fixed, expected = res.tidy(conf_int=True), _frame(ref["fixed"])
    assert fixed["term"].tolist() == ["(Intercept)", "Days"] if name == "sleepstudy" else len(fixed) == 4
    np.testing.assert_allclose(fixed["estimate"], expected["estimate"], atol=tol["atol"])
    np.testing.assert_allclose(fixed["std_error"], expected["std.error"], rtol=tol["se"])
    np.testing.assert_allclose(fixed[["conf_low", "conf_high"]], expected[["conf.low", "conf.high"]],
                               atol=tol["atol"] + 2 * tol["se"] * expected["std.error"].max())
    # gaussian: t on Satterthwaite's df with its p (broom.mixed's columns for an lmerTest fit)
    assert ("df" in fixed.columns) == (name == "sleepstudy") and "p_value" in fixed.columns
    pars, expected = res.tidy("ran_pars"), _frame(ref["ran_pars"])
    assert pars["group"].tolist() == expected["group"].tolist() and pars["term"].tolist() == expected["term"].tolist()
    np.testing.assert_allclose(pars["estimate"], expected["estimate"], rtol=1e-3)
    for kind in ("ran_vals", "ran_coefs"):
        got, expected = res.tidy(kind), _frame(ref[kind])
        for col in ("group", "level", "term"):
            assert got[col].tolist() == [str(v) for v in expected[col]], (kind, col)
        np.testing.assert_allclose(got["estimate"], expected["estimate"], atol=tol["atol"])
    np.testing.assert_allclose(res.tidy("ran_vals")["std_error"], _frame(ref["ran_vals"])["std.error"],
                               rtol=tol["se"])
    both = res.tidy(["fixed", "ran_pars"])
    assert both["effect"].tolist() == ["fixed"] * len(res.fixef) + ["ran_pars"] * len(pars)


@pytest.mark.parametrize("name", ["sleepstudy", "cbpp"])
def test_glance_augment_and_residuals_equal_lme4(fits, name):
    data, res = fits[name]
    ref, tol = REF[name], TOL[name]
    row, expected = res.glance().iloc[0], ref["glance"]
    assert row["nobs"] == expected["nobs"] and row["df_residual"] == expected["df.residual"]
    assert row["sigma"] == pytest.approx(expected["sigma"], rel=1e-4)
    assert row["loglik"] == pytest.approx(expected["logLik"], abs=1e-3)
    crit = "reml_crit" if name == "sleepstudy" else "deviance"
    assert row[crit] == pytest.approx(expected["REMLcrit" if name == "sleepstudy" else "deviance"], abs=1e-2)
    for kind in ("response", "pearson", "deviance"):
        np.testing.assert_allclose(res.residuals(kind), ref[kind], atol=tol["atol"])
    np.testing.assert_allclose(res.fitted(), ref["fitted"], atol=tol["atol"])
    aug = res.augment(data)
    assert list(aug.columns[:len(data.columns)]) == list(data.columns)
    for col in (".fitted", ".resid", ".fixed", ".mu"):
        np.testing.assert_allclose(aug[col], ref["augment"][col], atol=tol["atol"])
    with pytest.raises(ArgumentError, match="unknown residual type"):
        res.residuals("studentized")


def test_leverage_and_cooks_distance_equal_lme4(fits):
    # lme4's hatvalues and cooks.distance (broom.mixed's .hat, .cooksd) of sleepstudy and of a
    # weighted, unbalanced fit; measured: .hat within 1.1e-6, .cooksd within 1.7e-5 (the two
    # optima differ by about 1e-6 relative)
    data, res = fits["sleepstudy"]
    aug = res.augment()
    assert list(aug.columns) == [".fitted", ".resid", ".hat", ".cooksd", ".fixed", ".mu"]
    np.testing.assert_allclose(aug[".hat"], REF["sleepstudy"]["augment"][".hat"], rtol=0, atol=1e-5)
    np.testing.assert_allclose(aug[".cooksd"], REF["sleepstudy"]["augment"][".cooksd"], rtol=0, atol=2e-4)
    weighted = data.assign(w=1 + (data["Days"] % 3) / 2)
    subject = weighted["Subject"].rank(method="dense").astype(int)  # R's factor codes
    weighted = weighted[~((weighted["Days"] == 9) & (subject % 3 == 0))]
    fit = jaxmm.fit("Reaction ~ Days + (Days | Subject)", weighted, weights="w")
    assert fit.loglik == pytest.approx(REF["weighted"]["logLik"], abs=1e-6)
    aug = fit.augment()
    np.testing.assert_allclose(aug[".hat"], REF["weighted"]["hat"], rtol=0, atol=1e-5)
    np.testing.assert_allclose(aug[".cooksd"], REF["weighted"]["cooksd"], rtol=0, atol=2e-4)
    # the fitted values are H y: the hat values sum to the model's effective degrees of freedom,
    # between p and p + Σq
    assert 2 < aug[".hat"].sum() < 2 + 2 * 18


def test_coef_adds_each_levels_blups_to_the_fixed_effects(fits):
    _, res = fits["sleepstudy"]
    table = res.coef()["Subject"]
    assert list(table.columns) == ["(Intercept)", "Days"] and table.index.name == "Subject"
    np.testing.assert_allclose(table.to_numpy(), res.fixef.to_numpy() + res.ranef.to_numpy(), rtol=1e-12)
    with pytest.raises(ArgumentError, match="effects must be among"):
        res.tidy("random")


def test_several_terms_have_the_same_views():
    data = pd.read_csv(DATA / "crossed" / "penicillin_crossed_reml.csv")
    res = jaxmm.fit("diameter ~ 1 + (1 | plate) + (1 | sample)", data)
    pars = res.tidy("ran_pars")
    assert pars["group"].tolist() == ["plate", "sample", "Residual"]
    np.testing.assert_allclose(pars["estimate"], [np.sqrt(res.D["plate"].iloc[0, 0]), np.sqrt(res.D["sample"].iloc[0, 0]),
                                                   res.sigma], rtol=1e-12)
    vals = res.tidy("ran_vals")
    assert vals.groupby("group").size().to_dict() == {"plate": 24, "sample": 6}
    np.testing.assert_allclose(vals.loc[vals["group"] == "sample", "estimate"],
                               res.ranef["sample"]["(Intercept)"], rtol=1e-12)
    assert set(res.coef()) == {"plate", "sample"}
    np.testing.assert_allclose(res.fitted() + res.residuals(), data["diameter"], rtol=1e-12)
    assert res.glance()["reml_crit"].iloc[0] == pytest.approx(-2 * res.loglik)
