"""Non-canonical binomial links against glmmTMB, whose Laplace approximation uses the
observed Hessian at the mode, as jaxmm's does. lme4 uses expected (Fisher) weights there
and reports a different log-likelihood (-1836.14 and -1946.51 on these data), so it is
not the target. Numbers from tests/r/links_refs.R (glmmTMB 1.1.5)."""
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import jaxmm

DATA = Path(__file__).parent / "data"

# t <- glmmTMB(cbind(y, size - y) ~ x + (x | g), d, family = binomial(link = link))
# logLik(t); fixef(t)$cond; sqrt(diag(vcov(t)$cond)); VarCorr SDs; correlation
GLMMTMB = {
    "probit": dict(y="yp", loglik=-1833.63834324, fixef=(-0.323212915817, 0.620801909409),
                   se=(0.0560519176056, 0.0414128178673), sd=(0.631911195082, 0.384594634210),
                   cor=0.165897282218),
    "cloglog": dict(y="yc", loglik=-1944.45869666, fixef=(-0.714327172949, 0.578842270300),
                    se=(0.0540010033028, 0.0414093426837), sd=(0.578569649913, 0.349029129604),
                    cor=0.399053915692),
}


@pytest.mark.parametrize("link", sorted(GLMMTMB))
def test_binomial_link_matches_glmmtmb(link):
    ref = GLMMTMB[link]
    data = pd.read_csv(DATA / "links_binomial.csv")
    res = jaxmm.fit(f"{ref['y']} ~ x + (x | g)", data, "binomial", trials="size", link=link)
    assert res.converged and res.link == link
    assert res.loglik >= ref["loglik"] - 1e-6
    assert res.loglik == pytest.approx(ref["loglik"], abs=1e-3)
    se = np.sqrt(np.diag(res.vcov_array))
    np.testing.assert_allclose(res.fixef.to_numpy(), ref["fixef"], atol=0.01 * se.min())
    np.testing.assert_allclose(se, ref["se"], rtol=1e-3)
    np.testing.assert_allclose(res.sd.to_numpy(), ref["sd"], rtol=1e-3)
    assert res.corr.iloc[0, 1] == pytest.approx(ref["cor"], abs=1e-3)
    # predictions go through the link: the response scale is the probability
    eta = res.predict(type="link").to_numpy()
    inverse = {"probit": lambda e: 0.5 * (1 + np.vectorize(__import__("math").erf)(e / np.sqrt(2))),
               "cloglog": lambda e: -np.expm1(-np.exp(e))}[link]
    np.testing.assert_allclose(res.predict().to_numpy(), inverse(eta), rtol=1e-10)
