"""Gamma(log) GLMMs against glmmTMB (lme4's Gamma log-likelihood is defined differently:
its logLik differs by tens of units on these data, so it is not the target)."""
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import jaxmm

DATA = Path(__file__).parent / "data"

# glmmTMB 1.1.5, from tests/r/gamma_refs.R:
#   t <- glmmTMB(f, d, family = Gamma(link = "log"))
#   logLik(t); fixef(t)$cond; sqrt(diag(vcov(t)$cond)); VarCorr SDs and correlation; sigma(t)
GLMMTMB = {
    "y ~ x + (1 | g)": dict(loglik=-2008.19238013, fixef=(1.09192031184, 0.55245810922),
                            se=(0.0547128890983, 0.0241828507207), sd=(0.545051065513,), cor=None,
                            sigma=0.693118488971),
    "y ~ x + (x | g)": dict(loglik=-1976.28356815, fixef=(1.051759586953, 0.529730628173),
                            se=(0.0538226335190, 0.0356135138921), sd=(0.536639745946, 0.285756152753),
                            cor=0.38102214571, sigma=0.642627810051),
}


@pytest.fixture(scope="module", params=sorted(GLMMTMB))
def gamma_fit(request):
    data = pd.read_csv(DATA / "gamma_log_q2.csv")
    with warnings.catch_warnings():
        warnings.simplefilter("error", jaxmm.errors.JaxmmWarning)
        return request.param, jaxmm.fit(request.param, data, "gamma")


def test_gamma_matches_glmmtmb(gamma_fit):
    formula, res = gamma_fit
    ref = GLMMTMB[formula]
    assert res.converged, res.message
    assert res.loglik >= ref["loglik"] - 1e-6
    assert res.loglik == pytest.approx(ref["loglik"], abs=1e-3)
    se = np.sqrt(np.diag(res.vcov_array))
    np.testing.assert_allclose(res.fixef.to_numpy(), ref["fixef"], atol=0.01 * se.min())
    np.testing.assert_allclose(se, ref["se"], rtol=1e-3)
    sd = np.sqrt(np.diag(res.D))
    np.testing.assert_allclose(sd, ref["sd"], rtol=1e-3)
    if ref["cor"] is not None:
        assert res.D.iloc[0, 1] / (sd[0] * sd[1]) == pytest.approx(ref["cor"], abs=1e-3)
    # σ is the coefficient of variation 1/√shape, as glmmTMB's and lme4's sigma()
    assert res.sigma == pytest.approx(ref["sigma"], rel=1e-4)
    assert res.npar == len(ref["fixef"]) + len(ref["sd"]) * (len(ref["sd"]) + 1) // 2 + 1


@pytest.mark.parametrize("bad", [0.0, -1.5])
def test_gamma_response_must_be_positive(bad):
    data = pd.read_csv(DATA / "gamma_log_q2.csv")
    data.loc[7, "y"] = bad
    with pytest.raises(jaxmm.errors.DataError, match=r"response 'y'.*gamma response must be positive"):
        jaxmm.fit("y ~ x + (1 | g)", data, "gamma")


def test_gamma_link_choices_are_listed():
    data = pd.read_csv(DATA / "gamma_log_q2.csv")
    with pytest.raises(jaxmm.errors.ArgumentError, match=r"unknown link 'inverse'.*\['log'\]"):
        jaxmm.fit("y ~ x + (1 | g)", data, "gamma", link="inverse")
