"""The negative binomial (NB2) family against glmmTMB's nbinom2 on grouseticks. lme4's
glmer.nb stops short of the optimum there (logLik -905.861 against -905.663), so glmmTMB
is the target. Numbers from tests/r/nbinom_refs.R (glmmTMB 1.1.5, lme4 1.1.31)."""
import numpy as np
import pytest

import jaxmm

# t <- glmmTMB(TICKS ~ YEAR + cHEIGHT + (1 | LOCATION), grouseticks, family = nbinom2)
GLMMTMB = dict(loglik=-905.662589678, theta=2.04481219501, sd=0.892060091176,
               fixef=(0.6284808253596, 1.1299476322073, -1.1256559718189, -0.0238423961237),
               se=(0.1736263579610, 0.1690143099474, 0.1879502137488, 0.0038658776968))
LME4_LOGLIK = -905.861242184  # glmer.nb(TICKS ~ YEAR + cHEIGHT + (1 | LOCATION), grouseticks)


@pytest.fixture(scope="module")
def nb():
    return jaxmm.fit("TICKS ~ C(YEAR) + cHEIGHT + (1 | LOCATION)", jaxmm.load_example("grouseticks"),
                     "negative_binomial")


def test_negative_binomial_matches_glmmtmb(nb):
    assert nb.converged and nb.family == "negative_binomial"
    assert nb.loglik >= GLMMTMB["loglik"] - 1e-6 and nb.loglik > LME4_LOGLIK
    assert nb.loglik == pytest.approx(GLMMTMB["loglik"], abs=1e-3)
    se = np.sqrt(np.diag(nb.vcov_array))
    np.testing.assert_allclose(nb.fixef.to_numpy(), GLMMTMB["fixef"], atol=0.01 * se.min())
    np.testing.assert_allclose(se, GLMMTMB["se"], rtol=1e-3)
    assert nb.sd.iloc[0] == pytest.approx(GLMMTMB["sd"], rel=1e-3)
    assert nb.nb_size == pytest.approx(GLMMTMB["theta"], rel=1e-4) and nb.sigma is None
    assert nb.npar == 4 + 1 + 1
    assert "Dispersion parameter (nb_size, lme4's theta): 2.045" in nb.summary()
    assert nb.to_dict()["nb_size"] == pytest.approx(nb.nb_size)
    with pytest.raises(AttributeError, match="nb_size"):  # lme4's name, θ in jaxmm is the packed vector
        nb.theta


@pytest.mark.slow
def test_negative_binomial_theta_in_intervals_and_simulation(nb):
    ci = nb.confint("profile")
    assert ci.index[-1] == "nb_size" and ci.loc["nb_size", "lower"] < nb.nb_size < ci.loc["nb_size", "upper"]
    sims = nb.simulate(200, seed=3).to_numpy()
    assert np.all(sims >= 0) and np.all(sims == np.round(sims))
    # NB2 variance μ + μ²/θ exceeds the Poisson's: overdispersion shows in the draws
    mu = nb.predict(re="zero").to_numpy()
    assert np.mean(np.var(sims, axis=1)) > np.mean(sims.mean(axis=1)) > 0.5 * mu.mean()


def test_negative_binomial_response_check():
    data = jaxmm.load_example("grouseticks")
    data["TICKS"] = data["TICKS"].astype(float)  # pandas refuses 1.5 in an integer column
    data.loc[3, "TICKS"] = 1.5
    with pytest.raises(jaxmm.errors.DataError, match="response 'TICKS'.*non-negative whole numbers"):
        jaxmm.fit("TICKS ~ cHEIGHT + (1 | LOCATION)", data, "negative_binomial")
