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


@pytest.fixture(scope="module")
def ticks():
    return jaxmm.fit("TICKS ~ C(YEAR) + cHEIGHT + (1 | LOCATION)", jaxmm.load_example("grouseticks"), "poisson")


def test_poisson_marginal_coefficients_are_exact(ticks):
    # log link, random intercept: E[exp(η + b)] = exp(η + σ²/2), so the marginal intercept is
    # β0 + σ²/2 and every other coefficient is unchanged
    m = ticks.marginal_coefs()
    assert list(m.columns) == ["estimate", "std_error", "z", "p"] and list(m.index) == list(ticks.fixef.index)
    shift = np.zeros(len(m))
    shift[0] = ticks.D.iloc[0, 0] / 2
    np.testing.assert_allclose(m["estimate"].to_numpy(), ticks.beta + shift, atol=1e-12)
    pop = ticks.predict(re="population", type="link").to_numpy()
    np.testing.assert_allclose(pop, ticks.predict(re="zero", type="link").to_numpy() + ticks.D.iloc[0, 0] / 2, atol=1e-12)
    np.testing.assert_allclose(ticks.predict(re="population").to_numpy(), np.exp(pop), rtol=1e-12)


def test_marginal_standard_errors_match_the_bootstrap(ticks):
    # delta method against the spread of β0 + σ²/2 over 300 parametric-bootstrap refits
    # (Monte Carlo error of an SD from 300 draws: about 4 %)
    boot = ticks.bootstrap(300, seed=4)
    marginal_intercept = boot["(Intercept)"] + boot["sd_(Intercept)"] ** 2 / 2
    se = ticks.marginal_coefs()["std_error"]
    assert se.iloc[0] == pytest.approx(marginal_intercept.std(), rel=0.2)
    assert se.iloc[3] == pytest.approx(boot["cHEIGHT"].std(), rel=0.2)


def test_logit_marginal_means_and_attenuation():
    # the quadrature mean against a Monte Carlo average of the conditional probabilities
    res = jaxmm.fit("incidence ~ C(period) + (1 | herd)", jaxmm.load_example("cbpp"), "binomial", trials="size")
    pop = res.predict(re="population").to_numpy()
    eta = res.predict(re="zero", type="link").to_numpy()
    draws = np.random.default_rng(0).normal(0.0, np.sqrt(res.D.iloc[0, 0]), 400_000)
    for i in (0, 5, 30):
        p = 1 / (1 + np.exp(-(eta[i] + draws)))
        assert pop[i] == pytest.approx(p.mean(), abs=4 * p.std() / np.sqrt(draws.size))
    # population-averaged effects are attenuated towards 0 on the logit scale
    m = res.marginal_coefs()
    assert np.all(np.abs(m["estimate"].iloc[1:]) < np.abs(res.beta[1:]))
    assert np.all(m["std_error"] > 0)


def test_identity_link_marginal_equals_conditional(sleep):
    m = sleep.marginal_coefs()
    np.testing.assert_allclose(m["estimate"], sleep.beta)
    np.testing.assert_allclose(m["std_error"], np.sqrt(np.diag(sleep.vcov_array)))
    np.testing.assert_allclose(sleep.predict(re="population"), sleep.predict(re="zero"), rtol=1e-12)


def test_mean_conditional_variance_of_unbalanced_groups_equals_lme4():
    # tests/r/shrinkage_unbalanced_refs.R: subjects keep 3 to 10 days, so their conditional
    # variances differ (the median of lme4's postVar is 142.52 and 13.84, not the mean)
    data = jaxmm.load_example("sleepstudy")
    code = data["Subject"].rank(method="dense").astype(int)  # R's as.integer(factor(Subject))
    unbalanced = data[data["Days"] < 3 + code % 8]
    assert len(unbalanced) == 113
    res = jaxmm.fit("Reaction ~ Days + (Days | Subject)", unbalanced)
    assert res.loglik == pytest.approx(-533.4796703456, abs=1e-6)
    np.testing.assert_allclose(res.shrinkage()["mean_cond_var"], [139.2944893812, 15.0253952192], rtol=1e-4)
