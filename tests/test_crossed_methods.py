"""What a fit with several random-effect terms offers besides its estimates: predictions
(conditional, on some factors, at b = 0, population-averaged), Wald intervals, likelihood-ratio
tests against lme4's ``anova`` (REML fits refitted by ML), simulation and the parametric
bootstrap, shrinkage per factor, the JSON report and the CLI. References from
tests/r/crossed_methods_refs.R (lme4 1.1-31)."""
import json
import warnings

import numpy as np
import pandas as pd
import pytest

import jaxmm
from jaxmm._cli import main
from jaxmm.errors import ArgumentError, JaxmmWarning

from conftest import DATA

CROSSED = DATA / "crossed"
REF = json.loads((CROSSED / "crossed_methods.json").read_text())
PEN = REF["penicillin"]
VERB = REF["verbagg"]


@pytest.fixture(scope="module")
def penicillin():
    data = pd.read_csv(CROSSED / "penicillin_crossed_reml.csv")
    return data, jaxmm.fit(PEN["formula"], data)


@pytest.fixture(scope="module")
def verbagg():
    data = pd.read_csv(CROSSED / "verbagg_crossed_binomial.csv")
    return data, jaxmm.fit(VERB["formula"], data, family="binomial")


def test_lmm_predictions_equal_lme4(penicillin):
    _, res = penicillin
    new = pd.DataFrame(PEN["newdata"])  # its third plate was not in the fit
    # lme4 and jaxmm reach the same REML optimum to ~1e-7 in the predictions
    np.testing.assert_allclose(res.predict(), PEN["fitted"], atol=1e-5)
    with pytest.warns(JaxmmWarning, match="1 row.*'plate' not seen") as caught:
        cond = res.predict(new)
    assert caught[0].filename == __file__
    assert cond.attrs["new_groups"] == [("plate", "zz")]
    np.testing.assert_allclose(cond, PEN["conditional"], atol=1e-5)
    np.testing.assert_allclose(res.predict(new, re="zero"), PEN["zero"], atol=1e-5)
    with pytest.warns(JaxmmWarning):
        np.testing.assert_allclose(res.predict(new, re=["plate"]), PEN["plate_only"], atol=1e-5)
    # only the named factors' levels are looked up: an unseen plate is no matter for re=["sample"]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        sample_only = res.predict(new, re=["sample"])
    fixed, full = res.linear_predictors()
    np.testing.assert_allclose(full, res.predict(), rtol=1e-12)
    b_sample = res.ranef["sample"]["(Intercept)"]
    np.testing.assert_allclose(sample_only, fixed[0] + b_sample[new["sample"]].to_numpy(), rtol=1e-12)
    # identity link: averaging over b is b = 0
    np.testing.assert_allclose(res.predict(new, re="population"), PEN["zero"], atol=1e-5)


def test_glmm_predictions_equal_lme4(verbagg):
    _, res = verbagg
    new = pd.DataFrame(VERB["newdata"]).astype({"id": int})  # its last id was not in the fit
    # jaxmm's optimum is 4e-4 above lme4's in log-likelihood: probabilities agree to 5e-5
    with pytest.warns(JaxmmWarning, match="'id' not seen"):
        np.testing.assert_allclose(res.predict(new), VERB["conditional"], atol=5e-4)
    np.testing.assert_allclose(res.predict(new, re="zero"), VERB["zero"], atol=5e-4)
    np.testing.assert_allclose(res.predict(new, re=["item"], type="link"), VERB["item_only"], atol=1.5e-3)
    # population-averaged: E[logistic(η + u)], u ~ N(0, σ²_id + σ²_item) (the terms are
    # independent), by Gauss-Hermite quadrature here
    eta = res.predict(new, re="zero", type="link").to_numpy()
    sd = np.sqrt(sum(c[0, 0] ** 2 for c in res.chols))
    x, w = np.polynomial.hermite_e.hermegauss(60)
    expected = (1 / (1 + np.exp(-(eta[:, None] + sd * x[None])))) @ w / w.sum()
    np.testing.assert_allclose(res.predict(new, re="population"), expected, rtol=1e-8)


def test_prediction_arguments_are_checked(penicillin):
    _, res = penicillin
    with pytest.raises(ArgumentError, match=r"does not have; its factors are \['plate', 'sample'\]"):
        res.predict(re=["batch"])
    with pytest.raises(ArgumentError, match="unknown re 'none'"):
        res.predict(re="none")
    with pytest.raises(ArgumentError, match="unknown type"):
        res.predict(type="mean")
    with pytest.raises(ArgumentError, match="offset= applies to newdata"):
        res.predict(offset=1.0)


def test_wald_intervals_and_coef_table_equal_lme4(penicillin):
    _, res = penicillin
    ci = res.confint()
    assert list(ci.index) == ["(Intercept)", "sd_(Intercept)|plate", "sd_(Intercept)|sample", "sigma"]
    np.testing.assert_allclose(ci.loc["(Intercept)"], PEN["wald"], rtol=1e-5)
    assert ci.iloc[1:].isna().all().all()  # as lme4: no Wald intervals for variance parameters
    table = res.coef_table(ddf="normal")
    assert table.loc["(Intercept)", "z"] == pytest.approx(res.fixef.iloc[0] / table.loc["(Intercept)", "std_error"])
    with pytest.raises(ArgumentError, match="profile intervals are computed on the ML likelihood"):
        res.confint("profile")  # a REML fit, as for one term


def test_anova_refits_reml_by_ml_as_lme4(penicillin):
    data, res = penicillin
    one = jaxmm.fit("diameter ~ 1 + (1 | plate)", data)
    table = jaxmm.anova(res, one)
    ref = PEN["anova"]
    assert list(table.index) == ["diameter ~ 1 + (1 | plate)", PEN["formula"]]  # by number of parameters
    assert table.attrs["refitted"] == [PEN["formula"], "diameter ~ 1 + (1 | plate)"]
    for col in ("AIC", "BIC", "loglik", "deviance"):
        np.testing.assert_allclose(table[col], ref[col], rtol=1e-7)
    assert table["npar"].tolist() == ref["npar"]
    assert table["chisq"].iloc[1] == pytest.approx(ref["chisq"], rel=1e-6)
    assert table["p"].iloc[1] == pytest.approx(ref["p"], rel=1e-4)


def test_simulated_responses_have_the_models_covariance(penicillin):
    data, res = penicillin
    sims = res.simulate(5000, seed=1)
    assert sims.shape == (len(data), 5000) and list(sims.index) == list(data.index)
    pd.testing.assert_frame_equal(res.simulate(3, seed=7), res.simulate(3, seed=7))
    C = np.cov(sims.to_numpy())
    same_plate = data["plate"].to_numpy()[:, None] == data["plate"].to_numpy()[None]
    same_sample = data["sample"].to_numpy()[:, None] == data["sample"].to_numpy()[None]
    # rows of one plate and two samples covary by σ²_plate; of one sample and two plates by
    # σ²_sample; of neither not at all; a row varies by σ²_plate + σ²_sample + σ²
    v_plate, v_sample, v_res = res.D["plate"].iloc[0, 0], res.D["sample"].iloc[0, 0], res.sigma ** 2
    assert C[same_plate & ~same_sample].mean() == pytest.approx(v_plate, rel=0.08)
    assert C[same_sample & ~same_plate].mean() == pytest.approx(v_sample, rel=0.08)
    assert C[~same_sample & ~same_plate].mean() == pytest.approx(0.0, abs=0.05)
    assert np.diag(C).mean() == pytest.approx(v_plate + v_sample + v_res, rel=0.05)
    assert sims.to_numpy().mean() == pytest.approx(res.fixef.iloc[0], abs=0.2)


def test_bootstrap_refits_equal_fits_of_the_simulated_responses(penicillin):
    data, res = penicillin
    boot = res.bootstrap(3, seed=5)
    assert list(boot.columns) == list(res.confint().index) and boot.attrs["converged"].all()
    y = res.simulate(3, seed=5)["sim_2"]
    again = jaxmm.fit(PEN["formula"], data.assign(diameter=y))
    row = boot.iloc[1]
    assert row["(Intercept)"] == pytest.approx(again.fixef.iloc[0], rel=1e-9)
    assert row["sigma"] == pytest.approx(again.sigma, rel=1e-6)
    for label in ("plate", "sample"):
        assert row[f"sd_(Intercept)|{label}"] == pytest.approx(np.sqrt(again.D[label].iloc[0, 0]), rel=1e-5)
    ci = res.confint("boot", n=3, seed=5)
    np.testing.assert_allclose(ci["lower"], boot.quantile(0.025), rtol=1e-12)


def test_shrinkage_per_factor_from_lme4s_blups(penicillin):
    _, res = penicillin
    table = res.shrinkage()
    ref = json.loads((CROSSED / "penicillin_crossed_reml.json").read_text())["ranef_long"]
    long = pd.DataFrame(ref)
    for label in ("plate", "sample"):
        part = long[long["grpvar"] == label]
        row = table.loc[(label, "(Intercept)")]
        # lme4's BLUPs and conditional SDs agree with jaxmm's to 1e-6 relative
        assert row["blup_var"] == pytest.approx(np.var(part["condval"], ddof=1), rel=1e-5)
        assert row["mean_cond_var"] == pytest.approx(np.mean(np.square(part["condsd"])), rel=1e-5)
        assert row["varcorr_var"] == pytest.approx(res.D[label].iloc[0, 0], rel=1e-12)
        assert res.ranef_cov()[label].iloc[0, 0] == pytest.approx(row["blup_var"], rel=1e-12)
        # the BLUPs are shrunk: their variance is below D's
        assert 0 < row["shrinkage"] < 1


def test_cli_writes_the_report_and_plot_of_several_terms(tmp_path, capsys, penicillin):
    data, res = penicillin
    path = tmp_path / "pen.csv"
    data.to_csv(path, index=False)
    out_json, out_png = tmp_path / "fit.json", tmp_path / "cat.png"
    assert main(["fit", str(path), PEN["formula"], "--json", str(out_json), "--plot", str(out_png)]) == 0
    assert "sample, 6" in capsys.readouterr().out
    report = json.loads(out_json.read_text())
    assert report["loglik"] == pytest.approx(res.loglik, rel=1e-12)
    assert report["n_levels"] == {"plate": 24, "sample": 6}
    np.testing.assert_allclose(report["ranef"]["sample"]["values"], res.ranef["sample"].to_numpy(), rtol=1e-12)
    assert out_png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    page = res._repr_html_()  # a notebook's view: the same tables
    assert "levels: plate 24, sample 6" in page and page.count("<table") == 2


def test_marginal_coefs_average_over_every_term(penicillin, verbagg):
    _, lmm = penicillin
    pd.testing.assert_frame_equal(lmm.marginal_coefs(), lmm.coef_table(ddf="normal"))  # identity link: β itself
    _, res = verbagg
    X = res.rows.X
    x, w = np.polynomial.hermite_e.hermegauss(60)

    def marginal_beta(phi):  # (β, SD of id, SD of item): μ by quadrature, then least squares
        sd = np.hypot(phi[-2], phi[-1])  # the terms are independent: their variances add
        mu = (1 / (1 + np.exp(-((X @ phi[:-2])[:, None] + sd * x[None])))) @ w / w.sum()
        return np.linalg.lstsq(X, np.log(mu / (1 - mu)), rcond=None)[0]

    phi = np.concatenate([res.fixef.to_numpy(), [res.chols[0][0, 0], res.chols[1][0, 0]]])
    table = res.marginal_coefs()
    np.testing.assert_allclose(table["estimate"], marginal_beta(phi), rtol=1e-8)
    # attenuated towards 0, as a logit's population-averaged effects are
    assert np.all(np.abs(table["estimate"]) < np.abs(res.fixef))
    # the delta method with a Jacobian by central differences
    J = np.column_stack([(marginal_beta(phi + e) - marginal_beta(phi - e)) / 2e-6 for e in 1e-6 * np.eye(phi.size)])
    cov = J @ res.cov_natural[:phi.size, :phi.size] @ J.T
    np.testing.assert_allclose(table["std_error"], np.sqrt(np.diag(cov)), rtol=1e-5)
