"""The guide docs/varcorr-vs-blups.md runs as written, and its marginal quantities agree
with an independent Monte Carlo computation."""
import re
import warnings
from pathlib import Path

import numpy as np
import pytest

import jaxmm

GUIDE = Path(__file__).parent.parent / "docs" / "varcorr-vs-blups.md"


@pytest.mark.slow
def test_guide_code_blocks_run_as_written():
    blocks = re.findall(r"```python\n(.*?)```", GUIDE.read_text(), flags=re.S)
    assert len(blocks) == 2
    ns: dict = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", jaxmm.errors.JaxmmWarning)  # the simulations include singular fits
        for block in blocks:
            exec(compile(block, str(GUIDE), "exec"), ns)
    assert isinstance(ns["res"], jaxmm.MixedModelResult) and isinstance(ns["batch"], jaxmm.BatchResult)
    t = ns["batch"]["D=1, sigma2=10, m=2"].shrinkage()
    assert t["shrinkage"].iloc[0] > 0.5  # the extreme-shrinkage setting of the guide


@pytest.fixture(scope="module")
def seedlike_mc():
    """The seed-like fit, and every row's marginal mean by Monte Carlo over b ~ N(0, D)
    (q = 2: full bivariate draws, not the one-dimensional reduction jaxmm uses)."""
    data = jaxmm.load_example("seedlike")
    res = jaxmm.fit("y ~ x + (x | subject)", data, "binomial")
    X = np.column_stack([np.ones(len(data)), data["x"].to_numpy()])
    rng = np.random.default_rng(7)
    b = rng.multivariate_normal(np.zeros(2), res.D, size=20_000)       # (draws, 2)
    eta = X @ res.beta
    total = np.zeros(len(data))
    for chunk in np.array_split(b, 20):  # 1000 draws at a time: rows x draws stays ~100 MB
        total += np.sum(1 / (1 + np.exp(-(eta[:, None] + X @ chunk.T))), axis=1)  # Z = X here
    return res, X, total / len(b)


def test_marginal_coefs_agree_with_monte_carlo(seedlike_mc):
    res, X, mu = seedlike_mc
    beta_mc = np.linalg.lstsq(X, np.log(mu / (1 - mu)), rcond=None)[0]
    np.testing.assert_allclose(res.marginal_coefs()["estimate"].to_numpy(), beta_mc, rtol=0.01)


def test_population_predictions_average_the_conditional_ones(seedlike_mc):
    res, _, mu = seedlike_mc
    np.testing.assert_allclose(res.predict(re="population").to_numpy(), mu, rtol=0.005)
