"""fit(..., by=column): many fits in one compiled, vmapped call. Vmapped equals looped
(each replicate equals its own single fit), padding of unequal replicates changes no
estimate, a failed replicate spoils no other, and a second batch of the same shape
reuses the compiled program."""
import warnings

import numpy as np
import pandas as pd
import pytest

import jaxmm
from jaxmm._engine import fit_lmm_batch
from jaxmm.errors import ArgumentError, ConvergenceWarning, DataError, JaxmmWarning


def _replicates(sizes, seed=0):
    """Random-intercept replicates of unequal size: n_r subjects x 2 measurements."""
    rng = np.random.default_rng(seed)
    parts = []
    for r, n in enumerate(sizes):
        g = np.repeat(np.arange(n), 2)
        x = rng.normal(size=2 * n)
        b = rng.normal(0, 1, n)
        eta = 0.5 + 0.4 * x + b[g]
        parts.append(pd.DataFrame(dict(rep=f"r{r}", y=eta + rng.normal(0, 1.5, 2 * n), x=x, g=g,
                                       yb=(rng.random(2 * n) < 1 / (1 + np.exp(-eta))).astype(int))))
    return pd.concat(parts, ignore_index=True)


def _single(formula, data, family):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", JaxmmWarning)
        return jaxmm.fit(formula, data, family)


def _assert_same_fit(batch_res, single, rtol):
    np.testing.assert_allclose(batch_res.fixef.to_numpy(), single.fixef.to_numpy(), rtol=rtol)
    np.testing.assert_allclose(batch_res.D, single.D, rtol=rtol)
    assert batch_res.loglik == pytest.approx(single.loglik, rel=1e-10)
    if single.sigma is not None:
        assert batch_res.sigma == pytest.approx(single.sigma, rel=rtol)
    np.testing.assert_allclose(batch_res.ranef.to_numpy(), single.ranef.to_numpy(), rtol=1e-5, atol=1e-8)
    assert batch_res.ranef.index.equals(single.ranef.index)


@pytest.fixture(scope="module")
def data():
    # unequal replicates (98 to 112 rows) in one size bucket: their separate fits share a program
    return _replicates([54, 49, 56, 50, 52])


@pytest.fixture(scope="module")
def lmm_batch(data):
    return jaxmm.fit("y ~ x + (1 | g)", data, by="rep")


@pytest.mark.slow
@pytest.mark.parametrize("family, formula", [("gaussian", "y ~ x + (1 | g)"), ("binomial", "yb ~ x + (1 | g)")])
def test_by_equals_separate_fits(data, family, formula):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", JaxmmWarning)
        batch = jaxmm.fit(formula, data, family, by="rep")
    assert batch.keys == ("r0", "r1", "r2", "r3", "r4") and len(batch) == 5
    for key in batch:
        single = _single(formula, data[data.rep == key], family)
        assert batch.converged[key] == single.converged
        _assert_same_fit(batch[key], single, rtol=1e-6)
        np.testing.assert_allclose(batch.fixef.loc[key].to_numpy(), single.fixef.to_numpy(), rtol=1e-6)
        assert batch.loglik[key] == pytest.approx(single.loglik, rel=1e-10)
        assert batch[key].n_obs == single.n_obs and batch[key].n_groups == single.n_groups


def test_batch_result_shapes_and_labels(lmm_batch, data):
    b = lmm_batch
    assert list(b.fixef.columns) == ["(Intercept)", "x"] and b.fixef.index.name == "rep"
    assert b.D.shape == (5, 1, 1)
    for s in (b.sigma, b.loglik, b.converged, b.message, b.n_iter, b.singular):
        assert isinstance(s, pd.Series) and list(s.index) == list(b.keys)
    assert b.converged.all() and np.all(b.sigma > 0)
    frame = b.to_frame()
    assert list(frame.columns) == ["(Intercept)", "x", "sd_(Intercept)", "sigma", "loglik", "converged"]
    np.testing.assert_allclose(frame["sd_(Intercept)"] ** 2, b.D[:, 0, 0])
    assert isinstance(b["r2"], jaxmm.MixedModelResult) and b["r2"] is b["r2"]
    with pytest.raises(KeyError, match="'r9' is not a value of the by column 'rep'"):
        b["r9"]
    with pytest.raises(ValueError):
        b.D[0, 0, 0] = 1.0


def test_failed_replicate_does_not_spoil_the_others(data):
    # r1: x separates the outcome completely, so its coefficient has no finite estimate.
    bad = data.copy()
    rows = bad.rep == "r1"
    bad.loc[rows, "yb"] = (bad.loc[rows, "x"] > 0).astype(int)
    with pytest.warns(ConvergenceWarning, match=r"1 of 5 fits did not converge \(by='rep' values \['r1'\]\)"):
        batch = jaxmm.fit("yb ~ x + (1 | g)", bad, "binomial", by="rep")
    assert not batch.converged["r1"] and "separation" in batch.message["r1"]
    for key in ("r0", "r2", "r3", "r4"):
        assert batch.converged[key]
        _assert_same_fit(batch[key], _single("yb ~ x + (1 | g)", bad[bad.rep == key], "binomial"), rtol=1e-6)


def test_second_batch_of_the_same_shape_reuses_the_compiled_fit(lmm_batch):
    before = fit_lmm_batch._cache_size()
    other = _replicates([54, 49, 56, 50, 52], seed=1)
    b2 = jaxmm.fit("y ~ x + (1 | g)", other, by="rep")
    assert fit_lmm_batch._cache_size() == before
    assert not np.allclose(b2.fixef.to_numpy(), lmm_batch.fixef.to_numpy())


def test_by_input_errors(data):
    with pytest.raises(DataError, match="by column 'trial' is not in the data"):
        jaxmm.fit("y ~ x + (1 | g)", data, by="trial")
    with pytest.raises(ArgumentError, match="by must be a column name"):
        jaxmm.fit("y ~ x + (1 | g)", data, by=["rep"])
    with pytest.raises(ArgumentError, match="verbose"):
        jaxmm.fit("y ~ x + (1 | g)", data, by="rep", verbose=True)
    one_group = data.copy()
    one_group.loc[one_group.rep == "r3", "g"] = 0
    with pytest.raises(DataError, match=r"single level in the replicate\(s\) \['r3'\]"):
        jaxmm.fit("y ~ x + (1 | g)", one_group, by="rep")
    missing = data.copy()
    missing.loc[4, "rep"] = None
    with pytest.raises(DataError, match="'rep'"):
        jaxmm.fit("y ~ x + (1 | g)", missing, by="rep")
    dropped = jaxmm.fit("y ~ x + (1 | g)", missing, by="rep", missing="drop")
    assert dropped.n_dropped == 1 and dropped.n_obs_array.sum() == len(data) - 1


def test_replicate_infos_are_built_on_demand_and_match(data):
    """designs_by builds each replicate's labels only when read; what it builds is what a
    single design of that replicate holds, in any order of access."""
    from jaxmm._design import design_from_formula
    from jaxmm._batch_design import designs_by
    from jaxmm._formula import parse_formula

    spec = parse_formula("y ~ x + (1 | g)")
    _, infos, keys, _ = designs_by(spec, data, "rep", tile=1)
    assert len(infos) == len(keys) == 5 and not infos._cache
    np.testing.assert_array_equal(infos.n_rows, data.groupby("rep").size().loc[keys].to_numpy())
    last, first = infos[-1], infos[0]
    assert set(infos._cache) == {0, 4} and infos[4] is last
    assert [i.group_labels for i in infos[1:3]] == [infos[1].group_labels, infos[2].group_labels]
    for r in (0, 4):
        _, single = design_from_formula(spec, data[data["rep"] == keys[r]], tile=1)
        got = infos[r]
        assert got.group_labels == single.group_labels and got.fixef_names == single.fixef_names
        np.testing.assert_allclose(got.x_scale, single.x_scale)
        assert got.row_index.equals(single.row_index)
        assert got.layout.row_slot.size == infos.n_rows[r] == single.layout.row_slot.size
    with pytest.raises(IndexError):
        infos[5]


@pytest.mark.parametrize("bucket", [False, True])
@pytest.mark.parametrize("tile", [1, 4])
@pytest.mark.parametrize("shared_labels", [True, False])
def test_ordered_replicates_lay_out_as_shuffled_ones(bucket, tile, shared_labels):
    """Rows already in replicate-then-group order, replicates of equal size, take the
    reshape path of designs_by; the same rows with the replicate blocks and groups in
    another order take the general scatter. Both must give the same stacked design and
    the same row positions (rows keep their order within a group)."""
    from jaxmm._batch_design import designs_by
    from jaxmm._formula import parse_formula

    rng = np.random.default_rng(3)
    parts = []
    for r in range(4):
        labels = np.arange(5) if shared_labels else np.arange(5) + r  # then not every replicate has every label
        g = np.repeat(labels, 3)
        parts.append(pd.DataFrame(dict(rep=r, g=g, x=rng.normal(size=g.size), y=rng.normal(size=g.size),
                                       w=rng.uniform(0.5, 2, g.size), off=rng.normal(size=g.size))))
    ordered = pd.concat(parts, ignore_index=True)
    # Replicates in reverse, groups within each in reverse; rows of a group keep their order.
    shuffled = pd.concat([p.iloc[np.argsort(-p["g"].to_numpy(), kind="stable")]
                          for _, p in list(ordered.groupby("rep"))[::-1]])
    spec = parse_formula("y ~ x + (x | g)")
    kw = dict(weights="w", offset="off", tile=tile, bucket=bucket)
    a, infos_a, keys_a, _ = designs_by(spec, ordered, "rep", **kw)
    b, infos_b, keys_b, _ = designs_by(spec, shuffled, "rep", **kw)
    assert keys_a == keys_b
    for name in a._fields:
        if getattr(a, name) is None:
            assert getattr(b, name) is None
            continue
        np.testing.assert_array_equal(np.asarray(getattr(a, name)), np.asarray(getattr(b, name)), err_msg=name)
    for r in range(4):
        ia, ib = infos_a[r], infos_b[r]
        assert ia.group_labels == ib.group_labels
        pos_a = pd.Series(ia.layout.row_slot, index=ia.row_index).sort_index()
        pos_b = pd.Series(ib.layout.row_slot, index=ib.row_index).sort_index()
        assert pos_a.equals(pos_b)
