"""Formula features a user coming from lme4 expects, against lme4's own numbers.

The lme4 values come from ``Rscript tests/r/issue4_refs.R`` (lme4 1.1.31, R 4.2.2); the R
call is beside each block.
"""
import numpy as np
import pandas as pd
import pytest

import jaxmm
from conftest import load_reference

# lmer(Reaction ~ Days + (Days || Subject), sleepstudy)            (REML)
# lmer(Reaction ~ Days + (Days || Subject), sleepstudy, REML=FALSE) (ML)
LME4_DOUBLE_BAR = {
    "REML": dict(loglik=-871.834646791, fixef=[251.4051048485, 10.4672859596],
                 se=[6.88538081724, 1.55956909807], sd=[25.05132832478, 5.98818667372], sigma=25.56527920157),
    "ML": dict(loglik=-876.001627572, fixef=[251.4051048485, 10.4672859596],
               se=[6.70773745301, 1.51930537201], sd=[24.17158787808, 5.79936617995], sigma=25.55612295670),
}


@pytest.fixture(scope="module")
def sleepstudy():
    return load_reference("sleepstudy_reml")[1]


@pytest.mark.parametrize("method", ["REML", "ML"])
def test_uncorrelated_random_effects_match_lme4(sleepstudy, method):
    ref = LME4_DOUBLE_BAR[method]
    res = jaxmm.fit("Reaction ~ Days + (Days || Subject)", sleepstudy, method=method)
    assert res.converged
    assert res.loglik >= ref["loglik"] - 1e-6 and abs(res.loglik - ref["loglik"]) < 1e-5
    np.testing.assert_allclose(res.fixef.values, ref["fixef"], rtol=1e-6)
    np.testing.assert_allclose(np.sqrt(np.diag(res.vcov)), ref["se"], rtol=1e-4)
    np.testing.assert_allclose(res.sd.values, ref["sd"], rtol=1e-4)
    assert res.sigma == pytest.approx(ref["sigma"], rel=1e-5)
    assert res.D.iloc[0, 1] == 0.0 and res.D.iloc[1, 0] == 0.0
    assert res.npar == 5  # 2 fixed effects, 2 variances, sigma: lme4's df for logLik
    random_effects = res.summary().split("Random effects:")[1].split("Fixed effects:")[0]
    assert "Corr" not in random_effects  # no correlation column under ||


def test_uncorrelated_glmm_has_a_diagonal_D():
    ref, data = load_reference("contraception_q2")
    res = jaxmm.fit(ref["formula"].replace("|", "||"), data, family="binomial")
    full = jaxmm.fit(ref["formula"], data, family="binomial")
    assert res.converged
    assert res.D.iloc[0, 1] == 0.0
    assert res.npar == full.npar - 1
    assert res.loglik <= full.loglik + 1e-8  # a constrained model cannot fit better


# glmer(incidence ~ period + offset(log(size)) + (1 | herd), family = poisson, data = cbpp)
# stops 4.6e-4 short of the optimum (logLik -90.2421059699, sd 0.491406635445); glmmTMB reaches it:
# glmmTMB(incidence ~ period + offset(log(size)) + (1 | herd), family = poisson, data = cbpp)
LME4_LOGLIK = -90.2421059699
LME4_FIXEF = [-1.647809028955, -0.844074794041, -0.966289192726, -1.391056372451]
GLMMTMB_CBPP_OFFSET = dict(loglik=-90.2416477064,
                           fixef=[-1.648364897325, -0.844063315806, -0.966287715399, -1.391046661280],
                           se=[0.193857553156, 0.284533027926, 0.305517884105, 0.409189223328],
                           sd=0.491579141266)


@pytest.fixture(scope="module")
def cbpp():
    return load_reference("cbpp_binomial")[1]


@pytest.mark.parametrize("how", ["formula", "array", "column"])
def test_poisson_offset_matches_lme4(cbpp, how):
    ref = GLMMTMB_CBPP_OFFSET
    data = cbpp.assign(logsize=np.log(cbpp["size"]))
    if how == "formula":
        res = jaxmm.fit("incidence ~ C(period) + offset(log(size)) + (1 | herd)", data, family="poisson")
    elif how == "array":
        res = jaxmm.fit("incidence ~ C(period) + (1 | herd)", data, family="poisson", offset=np.log(data["size"]))
    else:
        res = jaxmm.fit("incidence ~ C(period) + (1 | herd)", data, family="poisson", offset="logsize")
    assert res.converged
    assert res.loglik >= max(ref["loglik"], LME4_LOGLIK) - 1e-6 and abs(res.loglik - ref["loglik"]) < 1e-6
    np.testing.assert_allclose(res.fixef.values, ref["fixef"], rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(np.sqrt(np.diag(res.vcov)), ref["se"], rtol=1e-3)
    assert res.sd.iloc[0] == pytest.approx(ref["sd"], rel=1e-3)
    # lme4's estimates, from its slightly earlier stop, agree to within 1 % of a standard error
    assert np.max(np.abs(res.fixef.values - LME4_FIXEF) / ref["se"]) < 0.01


def test_formula_offset_adds_to_the_offset_argument(cbpp):
    half = np.log(cbpp["size"]) / 2
    both = jaxmm.fit("incidence ~ C(period) + offset({log(size) / 2}) + (1 | herd)", cbpp,
                     family="poisson", offset=half)
    one = jaxmm.fit("incidence ~ C(period) + offset(log(size)) + (1 | herd)", cbpp, family="poisson")
    np.testing.assert_allclose(both.fixef.values, one.fixef.values, rtol=1e-8)
    assert both.loglik == pytest.approx(one.loglik, abs=1e-8)


def test_offset_errors_name_the_term(cbpp):
    with pytest.raises(jaxmm.errors.JaxmmError, match="nosuch"):
        jaxmm.fit("incidence ~ C(period) + offset(log(nosuch)) + (1 | herd)", cbpp, family="poisson")


# w <- rep(c(1, 2, 0.5), 60)
# lmer(Reaction ~ Days + (Days | Subject), sleepstudy, weights = w)               (REML)
# lmer(Reaction ~ Days + (Days | Subject), sleepstudy, weights = w, REML = FALSE) (ML)
LME4_WEIGHTED = {
    "REML": dict(loglik=-877.039334653, fixef=[251.4752881594, 10.3282453744], se=[6.79959095372, 1.51050012663],
                 sd=[25.0265629353209, 5.8142123504609], corr=0.0147255113169, sigma=26.1537561115982),
    "ML": dict(loglik=-881.16346579, fixef=[251.4790712235, 10.3276858888], se=[6.60719982744, 1.46678700154],
               sd=[24.0824649604532, 5.6093727980393], corr=0.0296006451161, sigma=26.1558932578319),
}


@pytest.mark.parametrize("method", ["REML", "ML"])
@pytest.mark.parametrize("how", ["array", "column"])
def test_prior_weights_match_lme4(sleepstudy, method, how):
    ref = LME4_WEIGHTED[method]
    w = np.tile([1.0, 2.0, 0.5], 60)
    data = sleepstudy.assign(w=w)
    res = jaxmm.fit("Reaction ~ Days + (Days | Subject)", data, method=method,
                    weights=w if how == "array" else "w")
    assert res.converged
    assert res.loglik >= ref["loglik"] - 1e-6 and abs(res.loglik - ref["loglik"]) < 1e-5
    np.testing.assert_allclose(res.fixef.values, ref["fixef"], rtol=1e-6)
    np.testing.assert_allclose(np.sqrt(np.diag(res.vcov)), ref["se"], rtol=1e-4)
    np.testing.assert_allclose(res.sd.values, ref["sd"], rtol=1e-4)
    assert res.corr.iloc[0, 1] == pytest.approx(ref["corr"], abs=1e-4)
    assert res.sigma == pytest.approx(ref["sigma"], rel=1e-5)


def test_weights_are_refused_outside_gaussian(cbpp):
    with pytest.raises(jaxmm.errors.ArgumentError, match="weights"):
        jaxmm.fit("incidence ~ C(period) + (1 | herd)", cbpp, family="poisson", weights=np.ones(len(cbpp)))


def test_missing_raise_names_columns_and_drop_records_the_count(sleepstudy):
    data = sleepstudy.copy()
    data.loc[[3, 10], "Days"] = np.nan
    data.loc[[10, 20, 30], "Reaction"] = np.nan
    data["unused"] = np.nan  # not in the model: never a reason to fail or drop
    with pytest.raises(jaxmm.errors.DataError) as err:
        jaxmm.fit("Reaction ~ Days + (Days | Subject)", data)
    msg = str(err.value)
    assert "'Days': 2 row(s)" in msg and "'Reaction': 3 row(s)" in msg and "unused" not in msg
    res = jaxmm.fit("Reaction ~ Days + (Days | Subject)", data, missing="drop")
    assert res.n_dropped == 4 and res.n_obs == 176
    clean = jaxmm.fit("Reaction ~ Days + (Days | Subject)", data.drop(index=[3, 10, 20, 30]))
    np.testing.assert_allclose(res.fixef.values, clean.fixef.values, rtol=1e-10)
    with pytest.raises(jaxmm.errors.ArgumentError, match="missing"):
        jaxmm.fit("Reaction ~ Days + (Days | Subject)", data, missing="omit")


def test_polars_and_pyarrow_tables(sleepstudy):
    pandas_fit = jaxmm.fit("Reaction ~ Days + (Days | Subject)", sleepstudy)
    import polars
    import pyarrow

    for table in (pyarrow.Table.from_pandas(sleepstudy), polars.from_pandas(sleepstudy)):
        res = jaxmm.fit("Reaction ~ Days + (Days | Subject)", table)
        np.testing.assert_allclose(res.fixef.values, pandas_fit.fixef.values, rtol=1e-12)


def test_transforms_in_fixed_and_random_parts(sleepstudy):
    """C(), interactions, I()/{} arithmetic work in both parts; a rescaled random slope
    rescales its variance and nothing else."""
    base = jaxmm.fit("Reaction ~ Days + (Days | Subject)", sleepstudy, method="ML")
    weeks = jaxmm.fit("Reaction ~ Days + ({Days / 7} | Subject)", sleepstudy, method="ML")
    assert weeks.loglik == pytest.approx(base.loglik, abs=1e-7)
    assert weeks.D.iloc[1, 1] == pytest.approx(49 * base.D.iloc[1, 1], rel=1e-5)
    assert weeks.re_names == ("(Intercept)", "Days / 7")
    data = sleepstudy.assign(half=(sleepstudy["Days"] >= 5).astype(int))
    res = jaxmm.fit("Reaction ~ Days * C(half) + I(Days ** 2) + (1 | Subject)", data, method="ML")
    # main effects first, then the interaction, as lme4 orders them
    assert list(res.fixef.index) == ["(Intercept)", "Days", "half1", "I(Days ** 2)", "Days:half1"]
    assert res.converged


def test_factor_columns_are_named_as_lme4_names_them():
    """A factor's dummy columns are spelled as in lme4 (period2, x:period2) whether it is
    written bare or inside C(); where that spelling would give two columns one name,
    formulaic's names are kept, so the labels still tell the columns apart."""
    from jaxmm._model_matrix import _lme4_names

    assert _lme4_names(["Intercept", "x", "C(period)[T.2]", "period[T.3]", "x:period[T.3]", "I(x ** 2)"]) == [
        "(Intercept)", "x", "period2", "period3", "x:period3", "I(x ** 2)"]
    # other codings and non-identifiers are left as formulaic writes them
    assert _lme4_names(["C(c, contr.sum)[S.a]", "`a b`[T.c]"]) == ["C(c, contr.sum)[S.a]", "`a b`[T.c]"]
    assert _lme4_names(["Intercept", "c[T.b]", "cb"]) == ["(Intercept)", "c[T.b]", "cb"]


def test_lme4_spellings_cbind_and_factor(cbpp):
    """``cbind(successes, failures) ~`` is the binomial fit with trials = their sum, and
    ``factor(x)`` is ``C(x)``; both are read by jaxmm's parser, and refused elsewhere."""
    data = cbpp.assign(failures=cbpp["size"] - cbpp["incidence"])
    with_trials = jaxmm.fit("incidence ~ C(period) + (1 | herd)", data, family="binomial", trials="size")
    for response in ("cbind(incidence, failures)", "cbind(incidence, size - incidence)"):
        res = jaxmm.fit(f"{response} ~ factor(period) + (1 | herd)", data, family="binomial")
        assert res.loglik == pytest.approx(with_trials.loglik, abs=1e-10)
        pd.testing.assert_series_equal(res.fixef, with_trials.fixef, rtol=1e-8)
    assert list(res.fixef.index) == ["(Intercept)", "period2", "period3", "period4"]
    np.testing.assert_allclose(res.residuals("pearson"), with_trials.residuals("pearson"), rtol=1e-8)
    with pytest.raises(jaxmm.errors.ArgumentError, match="response is binomial"):
        jaxmm.fit("cbind(incidence, failures) ~ 1 + (1 | herd)", data, family="poisson")
    with pytest.raises(jaxmm.errors.ArgumentError, match="drop trials="):
        jaxmm.fit("cbind(incidence, failures) ~ 1 + (1 | herd)", data, family="binomial", trials="size")
    for bad in ("incidence ~ cbind(size, failures) + (1 | herd)", "log(cbind(incidence, failures)) ~ 1 + (1 | herd)",
                "cbind(incidence) ~ 1 + (1 | herd)", "cbind(incidence, failures, size) ~ 1 + (1 | herd)"):
        with pytest.raises(jaxmm.errors.FormulaError):
            jaxmm.fit(bad, data, family="binomial")
