"""VarCorr (D, the prior) against the BLUPs (posterior modes): res.shrinkage() and
res.ranef_cov() against lme4's var(ranef(fit)) and cor(ranef(fit)), from
tests/r/issue8_refs.R (lme4 1.1.31)."""
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import jaxmm

DATA = Path(__file__).parent / "data"


@pytest.fixture(scope="module")
def sleep():
    return jaxmm.fit("Reaction ~ Days + (Days | Subject)", jaxmm.load_example("sleepstudy"))


@pytest.fixture(scope="module")
def seedlike():
    return jaxmm.fit("y ~ x + (x | subject)", pd.read_csv(DATA / "seedlike_bernoulli_q2.csv"), "binomial")


def test_sleepstudy_blup_covariance_equals_lme4(sleep):
    # m <- lmer(Reaction ~ Days + (Days | Subject), sleepstudy); var(ranef(m)$Subject); cor(...)
    cov = sleep.ranef_cov()
    assert list(cov.index) == list(cov.columns) == ["(Intercept)", "Days"]
    np.testing.assert_allclose(cov.to_numpy(), [[466.3888477164, 31.0485243342], [31.0485243342, 29.7593801118]],
                               rtol=1e-4)
    table = sleep.shrinkage()
    np.testing.assert_allclose(table["blup_var"], [466.3888477164, 29.7593801118], rtol=1e-4)
    assert table.loc["(Intercept)", "blup_cor_Days"] == pytest.approx(0.26354509952, abs=1e-4)
    # VarCorr's correlation is the prior's: 0.0655512382381
    assert table.loc["(Intercept)", "varcorr_cor_Days"] == pytest.approx(0.0655512382381, abs=1e-4)
    # mean of attr(ranef(m, condVar = TRUE)$Subject, "postVar") over subjects: diag 145.7055875198, 5.31228291226
    np.testing.assert_allclose(table["mean_cond_var"], [145.7055875198, 5.31228291226], rtol=1e-4)


def test_gaussian_prior_variance_splits_into_blup_and_conditional_variance(sleep):
    # D ≈ Var(b̂) + E[Var(b | y)]: the BLUPs show the rest of the prior variance
    t = sleep.shrinkage()
    np.testing.assert_allclose(t["varcorr_var"], t["blup_var"] + t["mean_cond_var"], rtol=1e-3)
    np.testing.assert_allclose(t["shrinkage"], 1 - t["blup_var"] / t["varcorr_var"])
    assert np.all((t["shrinkage"] > 0) & (t["shrinkage"] < 1))


def test_seedlike_bernoulli_blups_equal_lme4(seedlike):
    # g <- glmer(y ~ x + (x | subject), d, binomial); var(ranef(g)$subject); cor(ranef(g)$subject)
    # lme4 stops slightly short of the optimum here (our log-likelihood is higher, as
    # glmmTMB's): its VarCorr differs from ours by up to 2e-3 relative (x: 0.0152907 against
    # 0.0153210), and the BLUP covariance by no more (3e-3 allowed). The question that
    # started the project: D's correlation (about -0.94) against the BLUPs' (about -0.998).
    cov = seedlike.ranef_cov().to_numpy()
    np.testing.assert_allclose(cov, [[0.1930369676418, -0.04234221400489], [-0.04234221400489, 0.00931557510205]],
                               rtol=3e-3)
    np.testing.assert_allclose(np.diag(seedlike.D), [0.2818277956061, 0.0152906662050], rtol=3e-3)
    t = seedlike.shrinkage()
    assert t.loc["(Intercept)", "blup_cor_x"] == pytest.approx(-0.998500953005, abs=1e-4)
    assert t.loc["(Intercept)", "varcorr_cor_x"] == pytest.approx(-0.939573864793, abs=1e-3)
    assert abs(t.loc["(Intercept)", "blup_cor_x"]) > abs(t.loc["(Intercept)", "varcorr_cor_x"])


def test_single_term_table(seedlike):
    res = jaxmm.fit("incidence ~ C(period) + (1 | herd)", jaxmm.load_example("cbpp"), "binomial", trials="size")
    t = res.shrinkage()
    assert list(t.columns) == ["varcorr_var", "blup_var", "mean_cond_var", "shrinkage"]
    assert t.index.tolist() == ["(Intercept)"] and t.index.name == "term"
    assert 0 < t.loc["(Intercept)", "shrinkage"] < 1
