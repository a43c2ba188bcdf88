"""``fit(..., by=)`` with several random-effect terms (one fit per replicate, each equal to
its own fit), boundary fits and their warnings, which name the caller's line."""
import numpy as np
import pandas as pd
import pytest

import jaxmm
from jaxmm.errors import DataError, SingularFitWarning

FORMULA = "y ~ x + (1 | subj) + (1 | item)"


def _simulated(replicates: int, seed: int = 1) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    subj, item = np.repeat(np.arange(12), 6), np.tile(np.arange(6), 12)
    parts = []
    for r in range(replicates):
        x = rng.normal(size=subj.size)
        y = 1 + 0.5 * x + rng.normal(0, 0.8, 12)[subj] + rng.normal(0, 0.6, 6)[item] + rng.normal(size=subj.size)
        parts.append(pd.DataFrame({"rep": f"r{r}", "subj": subj, "item": item, "x": x, "y": y}))
    return pd.concat(parts, ignore_index=True)


@pytest.fixture(scope="module")
def batch():
    data = _simulated(4)
    return data, jaxmm.fit(FORMULA, data, by="rep")


def test_each_replicate_equals_its_own_fit(batch):
    data, res = batch
    assert res.keys == ("r0", "r1", "r2", "r3") and len(res) == 4
    for key in ("r0", "r3"):
        alone = jaxmm.fit(FORMULA, data[data["rep"] == key])
        assert res[key].loglik == pytest.approx(alone.loglik, abs=1e-9)
        np.testing.assert_allclose(res[key].fixef, alone.fixef, rtol=1e-8)
        np.testing.assert_allclose(res[key].ranef["item"], alone.ranef["item"], rtol=1e-6, atol=1e-9)
    frame = res.to_frame()
    assert list(frame.columns) == ["(Intercept)", "x", "sd_(Intercept)|subj", "sd_(Intercept)|item", "sigma",
                                   "loglik", "converged"]
    assert frame.loc["r2", "sd_(Intercept)|item"] == pytest.approx(np.sqrt(res["r2"].D["item"].iloc[0, 0]), rel=1e-12)
    assert frame["converged"].all()
    with pytest.raises(KeyError, match="not a value of the by column 'rep'"):
        res["r9"]


def test_replicate_errors_name_the_replicate():
    data = _simulated(2)
    data.loc[data["rep"] == "r1", "item"] = 0
    with pytest.raises(DataError, match="by='rep' value 'r1': grouping factor 'item' has a single level"):
        jaxmm.fit(FORMULA, data, by="rep")
    data = _simulated(2)
    data.loc[data["rep"] == "r0", "x"] = 1.0
    with pytest.raises(DataError, match="by='rep' value 'r0': the fixed-effect columns .* rank deficient"):
        jaxmm.fit(FORMULA, data, by="rep")


def test_a_term_with_no_variance_is_a_boundary_fit_warned_at_the_callers_line():
    data = _simulated(1, seed=3)
    # residuals with equal item means: the item variance is estimated as exactly 0
    data["y"] -= data.groupby("item")["y"].transform("mean") - data["y"].mean()
    with pytest.warns(SingularFitWarning, match="boundary") as caught:
        res = jaxmm.fit(FORMULA, data)
    assert caught[0].filename == __file__
    assert res.singular and res.D["item"].iloc[0, 0] < 1e-8 * res.D["subj"].iloc[0, 0]
