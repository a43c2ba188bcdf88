"""Inference against lme4 (issue 7): predictions, likelihood-ratio tests, Wald intervals.
lme4's numbers come from tests/r/issue7_refs.R (lme4 1.1.31), with the R call beside each."""
import warnings

import numpy as np
import pandas as pd
import pytest

import jaxmm
from jaxmm.errors import ArgumentError, JaxmmWarning

ROWS = [0, 1, 2, 49, 179]  # R's rows 1, 2, 3, 50, 180


@pytest.fixture(scope="module")
def sleep():
    data = jaxmm.load_example("sleepstudy")
    return data, jaxmm.fit("Reaction ~ Days + (Days | Subject)", data, method="ML")


@pytest.fixture(scope="module")
def cbpp():
    data = jaxmm.load_example("cbpp")
    return data, jaxmm.fit("incidence ~ C(period) + (1 | herd)", data, "binomial", trials="size")


def test_predict_fitted_rows_equal_lme4(sleep):
    # m <- lmer(Reaction ~ Days + (Days | Subject), sleepstudy, REML = FALSE)
    # predict(m)[rows];  predict(m, re.form = NA)[rows]
    data, res = sleep
    conditional = [254.220893868, 273.763686605, 293.306479342, 340.660187559, 369.525900175]
    population = [251.405104848, 261.872390808, 272.339676768, 345.610678485, 345.610678485]
    fitted = res.predict()
    assert fitted.index.equals(data.index)
    np.testing.assert_allclose(fitted.to_numpy()[ROWS], conditional, rtol=2e-6)
    np.testing.assert_allclose(res.predict(re="zero").to_numpy()[ROWS], population, rtol=2e-6)
    np.testing.assert_allclose(res.predict(type="link").to_numpy(), fitted.to_numpy())  # identity link
    # newdata equal to the fitted rows gives the fitted values
    np.testing.assert_allclose(res.predict(data.iloc[ROWS]).to_numpy(), fitted.to_numpy()[ROWS], rtol=1e-12)


def test_predict_newdata_with_an_unseen_group(sleep):
    # nd <- data.frame(Days = c(0, 5, 9.5), Subject = factor(c("308", "999", "372")))
    # predict(m, nd, allow.new.levels = TRUE)
    _, res = sleep
    nd = pd.DataFrame({"Days": [0.0, 5.0, 9.5], "Subject": [308, 999, 372]})
    with pytest.warns(JaxmmWarning, match=r"1 row\(s\) of newdata belong to 1 group\(s\) of 'Subject' not seen"):
        pred = res.predict(nd)
    np.testing.assert_allclose(pred.to_numpy(), [254.220893868, 303.741534646, 375.414903887], rtol=2e-6)
    assert pred.attrs["new_groups"] == [999]


def test_predict_binomial_equals_lme4(cbpp):
    # g <- glmer(cbind(incidence, size - incidence) ~ period + (1 | herd), cbpp, binomial)
    # predict(g, type = "response")[rows]; predict(g)[rows]; predict(g, re.form = NA, type = "response")[rows]
    # lme4 stops slightly short of the optimum on cbpp (its β differ from ours and glmmTMB's by
    # about 1e-3 of a standard error), so the predictions agree to 1e-3 relative, not to 1e-10.
    data, res = cbpp
    rows = ROWS[:4]
    np.testing.assert_allclose(res.predict().to_numpy()[rows],
                               [0.308164724138, 0.141773370297, 0.125985555169, 0.194674747775], rtol=1e-3)
    np.testing.assert_allclose(res.predict(type="link").to_numpy()[rows],
                               [-0.808713427979, -1.800638402955, -1.936929643922, -1.419916030007], rtol=1e-3)
    np.testing.assert_allclose(res.predict(re="zero").to_numpy()[rows],
                               [0.1980792055096, 0.0839178392751, 0.0740171370073, 0.0839178392751], rtol=1e-3)
    # new rows: the factor levels are encoded as in the fit, whatever levels newdata holds
    new = data.iloc[[49, 3]][["period", "herd"]]
    np.testing.assert_allclose(res.predict(new).to_numpy(), res.predict().to_numpy()[[49, 3]], rtol=1e-12)


def test_predict_argument_errors(sleep):
    _, res = sleep
    with pytest.raises(ArgumentError, match=r"unknown type 'prob'; choose one of \['response', 'link'\]"):
        res.predict(type="prob")
    with pytest.raises(ArgumentError, match=r"unknown re 'none'"):
        res.predict(re="none")
    with pytest.raises(jaxmm.errors.DataError, match="'Days'"):
        res.predict(pd.DataFrame({"Subject": [308]}))
