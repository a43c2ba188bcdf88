"""``jaxmm.fit`` with several random-effect terms: lme4's and glmmTMB's fits of crossed
(Penicillin, VerbAgg), nested (Pastes, grouseticks), two-terms-on-one-factor (sleepstudy)
and observation-level (cbpp, grouseticks) models, lme4's views of the result, and the
errors for what is not built yet."""
import json
import warnings

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import jaxmm
from jaxmm.errors import ArgumentError, DataError, FormulaError, JaxmmError, JaxmmWarning

from conftest import DATA

CROSSED = DATA / "crossed"
CASES = ["penicillin_crossed_reml", "pastes_nested_reml", "sleepstudy_two_terms_ml"]
GLMM_CASES = ["verbagg_crossed_binomial", "cbpp_observation_level", "grouseticks_three_terms"]
# BLUPs are lme4's, at lme4's optimum, which VerbAgg's glmmTMB (and jaxmm) pass by 4e-4 in
# log-likelihood: there the BLUPs agree to 5e-4 SD, elsewhere to 1e-4
BLUP_TOL = {"verbagg_crossed_binomial": 5e-3}
_FITS = {}


def _fit(name):
    if name not in _FITS:
        ref = json.loads((CROSSED / f"{name}.json").read_text())
        data = pd.read_csv(CROSSED / f"{name}.csv")
        kw = {"method": ref["method"]} if ref["family"] == "gaussian" else {"family": ref["family"]}
        if ref.get("trials"):
            kw["trials"] = ref["trials"]
        _FITS[name] = ref, data, jaxmm.fit(ref["formula"], data, **kw)
    return _FITS[name]


def _parts(label):
    return tuple(sorted(label.split(":")))


@pytest.mark.parametrize("name", CASES)
def test_fits_equal_lme4(name):
    ref, _, res = _fit(name)
    assert res.converged
    # at least lme4's log-likelihood (lme4 stops short by up to 5e-9 on these)
    assert ref["loglik"] - 1e-7 <= res.loglik <= ref["loglik"] + 1e-6
    np.testing.assert_allclose(res.fixef.to_numpy(), np.atleast_1d(ref["fixef"]), rtol=1e-8)
    np.testing.assert_allclose(np.sqrt(np.diag(res.vcov.to_numpy())), np.atleast_1d(ref["fixef_se"]), rtol=3e-4)
    assert res.sigma == pytest.approx(ref["sigma"], rel=1e-5)
    vc = res.varcorr()
    assert list(vc["group"])[-1] == "Residual"
    for term in ref["terms"]:
        group = term["group"].split(".")[0]  # lme4 names a second term on Subject "Subject.1"
        rows = vc[[_parts(g) == _parts(group) for g in vc["group"]]].set_index("name")
        sd = np.sqrt(np.diag(np.atleast_2d(term["D"])))
        got = rows.loc[np.atleast_1d(term["names"]), "std_dev"].to_numpy()
        np.testing.assert_allclose(got, sd, rtol=3e-4)
    assert {_parts(k) for k in res.n_levels} == {_parts(k) for k in ref["n_levels"]}


@pytest.mark.parametrize("name", GLMM_CASES)
def test_laplace_fits_equal_glmmtmb(name):
    ref, _, res = _fit(name)
    tmb = ref["glmmTMB"]  # the better optimum on all three (lme4 stops 4e-4 short on VerbAgg)
    assert res.converged and res.sigma is None
    assert tmb["loglik"] - 1e-7 <= res.loglik <= tmb["loglik"] + 1e-4
    se = np.sqrt(np.diag(res.vcov.to_numpy()))
    np.testing.assert_array_less(np.abs(res.fixef.to_numpy() - np.asarray(tmb["fixef"])) / se, 5e-4)
    # lme4's standard errors (glmmTMB's are not in the file), from its own optimum
    np.testing.assert_allclose(se, ref["fixef_se"], rtol=3e-2 if name in BLUP_TOL else 1e-3)
    vc = res.varcorr().set_index("group")
    assert "Residual" not in vc.index
    for group, sd in tmb["sd"].items():
        assert vc.loc[group, "std_dev"] == pytest.approx(sd, rel=5e-5)


@pytest.mark.parametrize("name", CASES + GLMM_CASES)
def test_blups_and_conditional_sds_equal_lme4(name):
    ref, _, res = _fit(name)
    long = pd.DataFrame(ref["ranef_long"])
    for grpvar, rows in long.groupby("grpvar"):
        label = next(k for k in res.ranef if _parts(k) == _parts(grpvar))
        frame, cv = res.ranef[label], res.cond_var[label]
        assert cv.shape == (len(frame), frame.shape[1], frame.shape[1])
        order = [":".join(dict(zip(grpvar.split(":"), str(lv).split(":")))[p] for p in label.split(":"))
                 for lv in rows["level"]]
        for term, part in rows.assign(level=order).groupby("term"):
            c = list(frame.columns).index(term)
            scale = part["condsd"].abs().max()
            got = frame.loc[part["level"], term].to_numpy()
            tol = BLUP_TOL.get(name, 1e-3)
            np.testing.assert_allclose(got, part["condval"], rtol=0, atol=tol * scale)
            pos = [list(frame.index).index(lv) for lv in part["level"]]
            np.testing.assert_allclose(np.sqrt(cv[pos, c, c]), part["condsd"], rtol=tol / 5)


def test_two_terms_on_one_factor_are_one_factor_in_the_views():
    _, _, res = _fit("sleepstudy_two_terms_ml")
    assert list(res.ranef) == ["Subject"] and list(res.ranef["Subject"].columns) == ["(Intercept)", "Days"]
    D = res.D["Subject"]  # labelled by the effects of both terms
    assert list(D.columns) == ["(Intercept)", "Days"]
    assert D.iloc[0, 1] == 0.0 and D.iloc[0, 0] > 0 and D.iloc[1, 1] > 0  # independent terms a priori
    # a posteriori the intercept and slope of one subject are correlated
    assert np.all(np.abs(res.cond_var["Subject"][:, 0, 1]) > 1e-3)
    text = res.summary()
    assert "Subject" in text and "Number of obs: 180, groups:  Subject, 18" in text


def test_nested_factor_is_the_interaction_of_its_columns():
    _, data, res = _fit("pastes_nested_reml")
    assert set(res.n_levels) == {"batch", "batch:cask"}
    assert res.n_levels["batch:cask"] == data.groupby(["batch", "cask"]).ngroups
    again = jaxmm.fit("strength ~ 1 + (1 | batch) + (1 | batch:cask)", data)
    assert again.loglik == pytest.approx(res.loglik, abs=1e-9)


@pytest.mark.parametrize("name,tol,ll_tol", [("cbpp_observation_level", 1e-4, 3e-6),
                                             ("sleepstudy_two_terms_ml", 1e-5, 1e-5)])
def test_float32_rows_agree_with_float64(name, tol, ll_tol):
    """dtype="float32": the GLMM's per-row terms in float32, its sums and factorisation in
    float64; the LMM's rows rounded to float32, its statistics summed in float64. Measured
    agreement: β within 6e-6 SE, Λ within 7e-6 and ℓ within 2e-7 (cbpp); 3e-7, 9e-7 and 1.1e-6
    (sleepstudy)."""
    ref, data, res = _fit(name)
    kw = {"method": ref["method"]} if ref["family"] == "gaussian" else {"family": ref["family"], "trials": ref["trials"]}
    low = jaxmm.fit(ref["formula"], data, dtype="float32", **kw)
    assert low.converged and low.rows.dtype == "float32"
    se = np.sqrt(np.diag(res.vcov.to_numpy()))
    beta_gap = np.max(np.abs(low.fixef.to_numpy() - res.fixef.to_numpy()) / se)
    chol_gap = max(np.max(np.abs(a - b)) for a, b in zip(low.chols, res.chols))
    assert beta_gap < tol and chol_gap < tol
    assert abs(low.loglik - res.loglik) < ll_tol
    assert beta_gap + chol_gap > 0  # the float32 rows were really used


def test_what_cannot_be_fitted_is_refused_by_name():
    _, data, _ = _fit("penicillin_crossed_reml")
    with pytest.raises(ArgumentError, match="devices= splits one fit over devices; it cannot be combined with by="):
        jaxmm.fit("diameter ~ 1 + (1 | plate) + (1 | sample)", data.assign(r=1), devices=1, by="r")
    with pytest.raises(ArgumentError, match="devices=0"):
        jaxmm.fit("diameter ~ 1 + (1 | plate) + (1 | sample)", data, devices=0)
    with pytest.raises(ArgumentError, match="nAGQ > 1"):
        jaxmm.fit("diameter ~ 1 + (1 | plate) + (1 | sample)", data, nAGQ=3)
    with pytest.raises(DataError, match="one level per row"):
        jaxmm.fit("diameter ~ 1 + (1 | plate) + (1 | plate:sample)", data)
    with pytest.raises(FormulaError, match="names a column twice"):
        jaxmm.fit("diameter ~ 1 + (1 | plate:plate)", data)


def test_progress_reports_the_optimisers_iterations():
    """verbose=f gets (iteration, −loglik, max|grad|, elapsed) after every accepted iteration,
    as for one term, and the fit is the one without it."""
    ref, data, res = _fit("penicillin_crossed_reml")
    seen = []
    reported = jaxmm.fit(ref["formula"], data, method=ref["method"], verbose=lambda *a: seen.append(a))
    assert [a[0] for a in seen] == list(range(len(seen))) and len(seen) >= res.n_iter  # 0: the start
    assert seen[-1][1] == pytest.approx(-res.loglik, abs=1e-9)
    assert reported.loglik == res.loglik
    np.testing.assert_array_equal(reported.fixef.to_numpy(), res.fixef.to_numpy())


@st.composite
def crossed_problems(draw):
    family = draw(st.sampled_from(["gaussian", "poisson"]))
    m1, m2 = draw(st.integers(2, 12)), draw(st.integers(2, 6))
    n = draw(st.integers(4, 80))
    rng = np.random.default_rng(draw(st.integers(0, 2**31 - 1)))
    g, h = rng.integers(0, m1, n), rng.integers(0, m2, n)
    x = rng.normal(size=n)
    eta = 0.2 + 0.4 * x + rng.normal(0, 0.5, m1)[g] + rng.normal(0, 0.5, m2)[h]
    y = eta + rng.normal(size=n) if family == "gaussian" else rng.poisson(np.exp(eta))
    terms = draw(st.sampled_from(["(1 | g) + (1 | h)", "(x | g) + (1 | h)", "(1 | g/h)", "(1 | g) + (0 + x | g)"]))
    data = pd.DataFrame({"y": y, "x": x, "g": [f"g{v}" for v in g], "h": [f"h{v}" for v in h]})
    return family, f"y ~ x + {terms}", data


@settings(max_examples=5, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
@given(crossed_problems())
def test_random_crossed_designs_fit_or_raise_a_jaxmm_error(problem):
    # whatever the sizes (a level with one row, a factor that ends up with one level, as
    # many levels as rows), a fit either gives finite estimates or raises jaxmm's own error
    family, formula, data = problem
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", JaxmmWarning)
            res = jaxmm.fit(formula, data, family=family)
    except JaxmmError:
        return
    assert np.isfinite(res.loglik) or not res.converged
    if res.converged:
        assert np.all(np.isfinite(res.fixef)) and all(np.all(np.isfinite(v)) for v in res.cond_var.values())


def test_a_rescaled_covariate_changes_neither_the_laplace_fit_nor_its_cost():
    """β is optimised in orthonormalised coordinates, as for one term: a covariate in other
    units (cHEIGHT × 1000) gives the same fit, its coefficient ÷ 1000, in about as many
    evaluations."""
    ref, data, res = _fit("grouseticks_three_terms")
    scaled = jaxmm.fit(ref["formula"], data.assign(cHEIGHT=data["cHEIGHT"] * 1000), family=ref["family"])
    assert scaled.converged
    assert scaled.loglik == pytest.approx(res.loglik, abs=1e-7)
    np.testing.assert_allclose(scaled.fixef["cHEIGHT"] * 1000, res.fixef["cHEIGHT"], rtol=1e-5)
    np.testing.assert_allclose(scaled.vcov.loc["cHEIGHT", "cHEIGHT"] * 1e6, res.vcov.loc["cHEIGHT", "cHEIGHT"],
                               rtol=1e-4)
    assert abs(scaled.n_eval - res.n_eval) <= 6, (scaled.n_eval, res.n_eval)
