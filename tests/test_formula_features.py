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
    assert res.D[0, 1] == 0.0 and res.D[1, 0] == 0.0
    assert res.npar == 5  # 2 fixed effects, 2 variances, sigma: lme4's df for logLik
    assert "Corr" not in res.summary()


def test_uncorrelated_glmm_has_a_diagonal_D():
    ref, data = load_reference("contraception_q2")
    res = jaxmm.fit(ref["formula"].replace("|", "||"), data, family="binomial")
    full = jaxmm.fit(ref["formula"], data, family="binomial")
    assert res.converged
    assert res.D[0, 1] == 0.0
    assert res.npar == full.npar - 1
    assert res.loglik <= full.loglik + 1e-8  # a constrained model cannot fit better
