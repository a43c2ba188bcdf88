"""No silent or unclear answers: inputs a fit cannot honestly use are clear jaxmm errors."""
import dataclasses
import json
import warnings

import numpy as np
import pandas as pd
import pytest

import jaxmm
from jaxmm._cli import main
from jaxmm.errors import ArgumentError, DataError


@pytest.fixture(scope="module")
def cbpp():
    return jaxmm.load_example("cbpp")


@pytest.fixture(scope="module")
def cbpp_fit(cbpp):
    return jaxmm.fit("incidence ~ C(period) + (1 | herd)", cbpp, family="binomial", trials="size")


@pytest.fixture(scope="module")
def text_factor_fit():
    rng = np.random.default_rng(1)
    data = pd.DataFrame({"y": rng.normal(size=60), "f": np.tile(["1", "2", "3"], 20),
                         "g": np.repeat(np.arange(12), 5)})
    return data, jaxmm.fit("y ~ f + (1 | g)", data)


def test_predict_refuses_a_factor_level_the_fit_never_saw(cbpp, cbpp_fit):
    new = cbpp.iloc[:4].copy()
    new["period"] = [1, 2, 5, 7]
    with pytest.raises(DataError, match=r"column 'period' has level\(s\) the fit never saw: \[5, 7\]"):
        cbpp_fit.predict(new)
    assert np.isfinite(cbpp_fit.predict(cbpp.iloc[:4])).all()  # the fit's own levels predict


def test_predict_matches_factor_levels_exactly_or_raises(text_factor_fit):
    data, res = text_factor_fit
    same = res.predict(data.iloc[:6], re="zero")
    as_ints = data.iloc[:6].assign(f=data["f"].iloc[:6].astype(int))  # "1" was fitted, 1 is not "1"
    with pytest.raises(DataError, match=r"column 'f' has level\(s\) the fit never saw: \[1, 2, 3\]"):
        res.predict(as_ints, re="zero")
    categorical = data.iloc[:6].assign(f=pd.Categorical(data["f"].iloc[:6], categories=["1", "2", "3"]))
    np.testing.assert_allclose(res.predict(categorical, re="zero"), same, rtol=1e-12)


def test_a_grouping_column_of_numbers_and_text_is_named():
    data = pd.DataFrame({"y": np.arange(8.0), "g": [1, "a", 2, "b"] * 2})
    with pytest.raises(DataError, match=r"grouping column 'g' mixes values of types \['int', 'str'\]"):
        jaxmm.fit("y ~ 1 + (1 | g)", data)


@pytest.mark.parametrize("trials, successes, words", [
    (0, 0, "every row has zero binomial trials"),
    (2.5, 1, r"binomial trials must be whole numbers: 40 row\(s\)"),
    (-1, 0, "binomial trials must be non-negative"),
    (2, 3, r"exceeds the number of trials in 40 row\(s\) \(first rows: \[0, 1, 2, 3, 4\]\)$"),
])
def test_binomial_trials_are_checked(trials, successes, words):
    rng = np.random.default_rng(0)
    data = pd.DataFrame({"s": successes, "n": trials, "x": rng.normal(size=40), "g": np.repeat(np.arange(10), 4)})
    with pytest.raises(DataError, match=words):
        jaxmm.fit("s ~ x + (1 | g)", data, family="binomial", trials="n")


def test_weights_zero_on_every_row_are_an_error():
    rng = np.random.default_rng(0)
    data = pd.DataFrame({"y": rng.normal(size=40), "g": np.repeat(np.arange(10), 4)})
    with pytest.raises(DataError, match="weights are zero on every row"):
        jaxmm.fit("y ~ 1 + (1 | g)", data, weights=np.zeros(40))


def test_json_has_null_where_a_value_is_not_finite(cbpp_fit, tmp_path):
    vcov = np.asarray(cbpp_fit.vcov_array).copy()
    vcov[1, 1] = np.nan  # an undefined standard error
    res = dataclasses.replace(cbpp_fit, vcov_array=vcov)
    out = json.loads(json.dumps(res.to_dict(), allow_nan=False))
    assert out["se"]["period2"] is None and out["vcov"][1][1] is None
    assert out["se"]["(Intercept)"] == pytest.approx(np.sqrt(vcov[0, 0]))


@pytest.mark.parametrize("family", ["binomial", "gaussian"])
def test_one_row_per_group_is_refused_where_the_variance_is_not_identified(family):
    rng = np.random.default_rng(2)
    data = pd.DataFrame({"y": rng.integers(0, 2, 200), "x": rng.normal(size=200), "g": np.arange(200)})
    with pytest.raises(DataError, match="every group of 'g' has a single row"):
        jaxmm.fit("y ~ x + (1 | g)", data, family=family)


def test_observation_level_random_effects_of_counts_are_allowed():
    rng = np.random.default_rng(3)
    data = pd.DataFrame({"y": rng.poisson(np.exp(1 + rng.normal(0, 0.5, 200))), "g": np.arange(200)})
    res = jaxmm.fit("y ~ 1 + (1 | g)", data, family="poisson")
    assert res.converged and res.D.iloc[0, 0] > 0.05  # the overdispersion is found


def test_lme4s_REML_argument():
    data = jaxmm.load_example("sleepstudy")
    ml = jaxmm.fit("Reaction ~ Days + (Days | Subject)", data, REML=False)
    assert ml.method == "ML"
    assert ml.loglik == pytest.approx(jaxmm.fit("Reaction ~ Days + (Days | Subject)", data, method="ML").loglik,
                                      abs=1e-10)
    assert jaxmm.fit("Reaction ~ Days + (Days | Subject)", data, REML=True).method == "REML"
    with pytest.raises(ArgumentError, match="contradicts method='REML'"):
        jaxmm.fit("Reaction ~ Days + (Days | Subject)", data, REML=False, method="REML")
    with pytest.raises(ArgumentError, match="method='laplace'"):
        jaxmm.fit("Reaction ~ Days + (1 | Subject)", data, family="poisson", REML=False)


@pytest.mark.filterwarnings("always")
def test_cli_warnings_are_one_clean_line(tmp_path, capsys):
    rng = np.random.default_rng(4)
    x = rng.normal(size=40)
    data = pd.DataFrame({"y": rng.normal(size=40), "x": x, "x2": 2 * x, "g": np.repeat(np.arange(8), 5)})
    path = tmp_path / "d.csv"
    data.to_csv(path, index=False)
    assert main(["fit", str(path), "y ~ x + x2 + (1 | g)"]) == 0
    lines = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    warned = [line for line in lines if "rank deficient" in line]
    assert warned == ["jaxmm: warning: fixed-effect model matrix is rank deficient; dropping aliased column(s) "
                      "['x2']"]
    assert not any(".py:" in line for line in lines)



def test_result_records_its_options_and_status(cbpp_fit):
    """The result keeps what fit() was given as a frozen FitOptions and the verdict as a Status."""
    res = cbpp_fit
    assert isinstance(res.fit_options, jaxmm.FitOptions) and res.fit_options.trials == "size"
    assert res.status is jaxmm.Status.CONVERGED and res.converged and res.nAGQ == 1
    assert res.max_abs_grad == res.to_dict()["convergence"]["max_abs_grad"]
    with pytest.raises(dataclasses.FrozenInstanceError):
        res.fit_options.trials = "other"


def test_warnings_name_the_callers_line(tmp_path):
    # every path's warnings are attributed to the line that called jaxmm (jaxmm._warn), not
    # to a line inside it: one term, several terms, by=, a streamed dataset, predict
    from conftest import DATA
    from jaxmm.errors import JaxmmWarning

    data = pd.read_csv(DATA / "sleepstudy_reml.csv").assign(twice=lambda d: 2 * d["Days"],
                                                           rep=lambda d: np.arange(len(d)) % 2)
    folder = tmp_path / "sleep.parquet"
    data.to_parquet(folder, index=False)
    one = "Reaction ~ Days + twice + (1 | Subject)"
    several = "Reaction ~ Days + twice + (1 | Subject) + (0 + Days | Subject)"
    calls = [lambda: jaxmm.fit(one, data), lambda: jaxmm.fit(one, folder), lambda: jaxmm.fit(several, data),
             lambda: jaxmm.fit(several, folder), lambda: jaxmm.fit(one, data, by="rep"),
             lambda: fitted.predict(data.assign(Subject=data["Subject"].astype(str) + "new"))]
    for k, call in enumerate(calls):
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            out = call()
        fitted = out if k == 0 else fitted
        ours = [w for w in caught if issubclass(w.category, JaxmmWarning)]
        assert ours and all(w.filename == __file__ for w in ours), [(w.filename, str(w.message)[:60]) for w in ours]
