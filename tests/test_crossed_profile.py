"""Profile-likelihood intervals of fits with several random-effect terms against lme4's
``confint(method = "profile", oldNames = FALSE)`` (tests/r/crossed_profile_refs.R): an LMM
with two terms on one factor, and a binomial GLMM whose herd SD interval reaches 0."""
import json

import numpy as np
import pandas as pd
import pytest

import jaxmm

from conftest import DATA

CROSSED = DATA / "crossed"
REF = json.loads((CROSSED / "crossed_profile.json").read_text())
CASES = {
    # lme4's ends come from a spline through its profile: they agree with jaxmm's to 4e-5
    # relative for the LMM, and to 2e-4 absolute for the GLMM (whose lme4 fit is 8e-6 lower)
    "sleepstudy": ("sleepstudy_two_terms_ml", {"method": "ML"}, dict(rtol=5e-4)),
    "cbpp": ("cbpp_observation_level", {"family": "binomial", "trials": "size"}, dict(atol=2e-3)),
}


@pytest.mark.parametrize("name", list(CASES))
def test_profile_intervals_equal_lme4(name):
    file, kw, tol = CASES[name]
    ref = REF[name]
    res = jaxmm.fit(ref["formula"], pd.read_csv(CROSSED / f"{file}.csv"), **kw)
    ci = res.confint("profile")
    assert list(ci.index) == list(res.confint().index)  # the Wald intervals' rows
    expected = pd.DataFrame({"lower": ref["lower"], "upper": ref["upper"]}, index=ref["names"]).reindex(ci.index)
    np.testing.assert_allclose(ci.to_numpy(), expected.to_numpy(), **tol)
    if name == "cbpp":  # the herd SD's lower end is its bound, where the profile is still inside
        assert ci.loc["sd_(Intercept)|herd", "lower"] == 0.0
    else:  # a fit whose processes each hold their own rows has no profile intervals: refused, by name
        import dataclasses

        share = dataclasses.replace(res, job=object())
        with pytest.raises(jaxmm.errors.ArgumentError, match="each hold their own rows"):
            share.confint("profile")
