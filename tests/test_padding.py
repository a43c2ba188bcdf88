"""Row weights and shape bucketing: inert padding changes no estimate, datasets of
similar size share one compiled fit, and prior weights give the exact weighted LMM."""
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd
import pytest
from scipy.stats import multivariate_normal

import jaxmm
from jaxmm._layout import bucket_size
from jaxmm._place_rows import make_design
from jaxmm._engine import fit_glmm
from jaxmm._families import get_family
from jaxmm._laplace import laplace_loglik
from jaxmm._lmm import lmm_loglik, lmm_stats
from jaxmm._params import Params
from conftest import fit_kwargs, load_reference


def test_bucket_ladder():
    sizes = np.arange(1, 5000)
    buckets = np.array([bucket_size(n) for n in sizes])
    assert np.all(buckets >= sizes) and np.all(buckets >= 16)
    assert np.all(np.diff(buckets) >= 0)
    assert np.max(buckets[sizes >= 16] / sizes[sizes >= 16]) <= 1.25
    assert len(np.unique(buckets)) < 40  # few distinct shapes, hence few compiles


@pytest.mark.parametrize("name", ["contraception_q2", "sleepstudy_reml", "grouseticks_poisson"])
def test_padding_changes_no_estimate(reference_fit, name):
    ref, data, padded = reference_fit(name)  # fit() buckets by default
    exact = jaxmm.fit(ref["formula"], data, bucket=False, **fit_kwargs(ref))
    assert padded.converged and exact.converged
    assert abs(padded.loglik - exact.loglik) < 1e-8 * (1 + abs(exact.loglik))
    np.testing.assert_allclose(padded.fixef, exact.fixef, rtol=1e-6, atol=1e-8)
    np.testing.assert_allclose(padded.D, exact.D, rtol=1e-5, atol=1e-9)
    np.testing.assert_allclose(padded.vcov, exact.vcov, rtol=1e-5)
    np.testing.assert_allclose(padded.ranef, exact.ranef, rtol=1e-5, atol=1e-8)
    assert padded.ranef.shape[0] == exact.n_groups == padded.n_groups
    assert padded.n_obs == len(data)


def test_similar_sizes_share_one_compile():
    ref, data = load_reference("contraception_q2")
    jaxmm.fit(ref["formula"], data, **fit_kwargs(ref))
    size = fit_glmm._cache_size()
    # 1934 and 1850 rows: both pad to 2048 rows and 64 groups.
    smaller = data.iloc[:1850]
    res = jaxmm.fit(ref["formula"], smaller, **fit_kwargs(ref))
    assert res.n_obs == 1850
    assert fit_glmm._cache_size() == size


def test_zero_weight_rows_equal_removed_rows():
    rng = np.random.default_rng(5)
    n, m = 300, 20
    X = np.column_stack([np.ones(n), rng.standard_normal(n)])
    g = rng.integers(0, m, n)
    y = rng.poisson(np.exp(0.3 + 0.2 * X[:, 1] + 0.5 * rng.standard_normal(m)[g])).astype(float)
    w = (rng.random(n) > 0.3).astype(float)
    fam = get_family("poisson")
    params = Params(jnp.array([0.2, 0.1]), jnp.array([[0.6]]), jnp.ones(()))
    full, *_ = make_design(X, X[:, :1], y, g, weights=w)
    kept = w > 0
    sub, *_ = make_design(X[kept], X[kept, :1], y[kept], g[kept])
    assert sub.n_groups == m  # every group keeps a row, so the two likelihoods are comparable
    ll_w = laplace_loglik(params, full, jnp.zeros((m, 1)), fam)[0]
    ll_sub = laplace_loglik(params, sub, jnp.zeros((m, 1)), fam)[0]
    np.testing.assert_allclose(float(ll_w), float(ll_sub), rtol=1e-12)
    # bucketed and split into small blocks: padding rows and empty group slots in every block
    padded, *_ = make_design(X[kept], X[kept, :1], y[kept], g[kept], bucket=True, chunk_rows=64)
    assert padded.y.shape[0] > sub.y.shape[0] and padded.n_groups > m
    ll_pad = laplace_loglik(params, padded, jnp.zeros((padded.n_groups, 1)), fam)[0]
    np.testing.assert_allclose(float(ll_pad), float(ll_sub), rtol=1e-12)


def test_prior_weights_give_the_weighted_gaussian_likelihood():
    # y_i | b ~ N(x_iβ + z_ib, σ²/w_i): compare with the dense marginal normal per group.
    rng = np.random.default_rng(8)
    n, m = 120, 8
    X = np.column_stack([np.ones(n), rng.standard_normal(n)])
    Z = X.copy()
    g = np.repeat(np.arange(m), n // m)
    y = rng.standard_normal(n) + X[:, 1]
    w = rng.uniform(0.2, 3.0, n)
    w[::17] = 0.0  # zero weight: the row is absent
    L = np.array([[0.8, 0.0], [-0.3, 0.4]])
    beta, sigma = np.array([0.1, 0.9]), 1.3
    design, *_ = make_design(X, Z, y, g, weights=w)
    ll = float(lmm_loglik(Params(jnp.asarray(beta), jnp.asarray(L), jnp.asarray(sigma)), lmm_stats(design)))
    expected = 0.0
    for i in range(m):
        r = (g == i) & (w > 0)
        V = Z[r] @ L @ L.T @ Z[r].T + sigma**2 * np.diag(1.0 / w[r])
        expected += multivariate_normal(X[r] @ beta, V).logpdf(y[r])
    np.testing.assert_allclose(ll, expected, rtol=1e-10)


@pytest.mark.parametrize("name", ["contraception_q2", "grouseticks_poisson"])
def test_blocked_fit_equals_one_block(reference_fit, monkeypatch, name):
    """Large designs are fitted block by block (group-aligned blocks, derivatives summed);
    forcing small blocks on a small case must give the one-block fit."""
    from jaxmm import _types as sizes

    ref, data, one_block = reference_fit(name)
    monkeypatch.setattr(sizes, "CHUNK_ROWS", 128)
    monkeypatch.setattr(sizes, "GPU_CHUNK_ROWS", 128)
    size = fit_glmm._cache_size()
    blocked = jaxmm.fit(ref["formula"], data, **fit_kwargs(ref))
    assert fit_glmm._cache_size() == size + 1  # a new (blocked) program really ran
    assert blocked.converged
    assert abs(blocked.loglik - one_block.loglik) < 1e-8 * (1 + abs(one_block.loglik))
    np.testing.assert_allclose(blocked.fixef, one_block.fixef, rtol=1e-6, atol=1e-8)
    np.testing.assert_allclose(blocked.D, one_block.D, rtol=1e-5, atol=1e-9)
    np.testing.assert_allclose(blocked.vcov, one_block.vcov, rtol=1e-5)
    # The two fits sum in different orders, so their optimisers stop at slightly different
    # points inside the convergence allowance: a BLUP near 0 agrees to 1e-6 of the BLUPs' scale.
    scale = float(np.max(np.abs(one_block.ranef.to_numpy())))
    np.testing.assert_allclose(blocked.ranef, one_block.ranef, rtol=1e-5, atol=1e-6 * scale)



@pytest.mark.parametrize("family", ["binomial", "poisson", "gaussian"])
def test_start_values_chunk_by_chunk_equal_whole_design(family):
    # The start values and the preconditioner are sums over the rows, taken one chunk at a
    # time for large designs (_start._design_sums): they must equal those of all rows at once.
    from jaxmm._engine import _chunked
    from jaxmm._start import _design_sums, _orthonormalising_map, initial_theta, weighted_gram

    rng = np.random.default_rng(7)
    g = np.repeat(np.arange(300), rng.integers(1, 9, 300))
    X = np.column_stack([np.ones(g.size), rng.normal(size=g.size), rng.normal(size=g.size) * 30])
    eta = X @ [0.3, 0.5, 0.01]
    y = {"binomial": rng.random(g.size) < 1 / (1 + np.exp(-eta)), "poisson": rng.poisson(np.exp(eta)),
         "gaussian": eta + rng.normal(size=g.size)}[family].astype(float)
    design, _, layout = make_design(X, X[:, :2], y, g, chunk_rows=200)
    assert layout.chunks > 2
    fam = get_family(family)
    chunked = _chunked(design, layout.chunks)
    for whole in (False, True):
        np.testing.assert_allclose(initial_theta(chunked, fam, whole=whole), initial_theta(_chunked(design, 1), fam),
                                   rtol=1e-12)
        A, A_inv = _orthonormalising_map(*weighted_gram(chunked, jnp.float64, whole))
        np.testing.assert_allclose(A, _orthonormalising_map(*weighted_gram(_chunked(design, 1), jnp.float64))[0],
                                   rtol=1e-12)
    total = _design_sums(lambda d: jnp.sum(d.weights), chunked)
    assert float(total) == g.size

def test_layout_keeps_groups_whole_and_sorted():
    from jaxmm._layout import plan_layout

    rng = np.random.default_rng(2)
    sizes = rng.integers(1, 60, 400)
    codes = rng.permutation(np.repeat(np.arange(400), sizes))
    lay = plan_layout(codes, 400, bucket=True, chunk_rows=1000)
    assert lay.chunks > 1 and lay.n_rows % lay.chunks == 0 and lay.n_groups % lay.chunks == 0
    rows_per, slots_per = lay.n_rows // lay.chunks, lay.n_groups // lay.chunks
    assert len(np.unique(lay.row_slot)) == codes.size and len(np.unique(lay.group_slot)) == 400
    slot_of_row = lay.group_slot[codes]
    # each row sits in the block of its group, and rows are ordered by group slot
    np.testing.assert_array_equal(lay.row_slot // rows_per, slot_of_row // slots_per)
    by_row = np.empty(lay.n_rows, np.int64)
    by_row[:] = -1
    by_row[lay.row_slot] = slot_of_row
    real = by_row[by_row >= 0]
    assert np.all(np.diff(real) >= 0)



@pytest.mark.parametrize("n_groups", [450, 700, 1000])
def test_blocks_share_the_rows_evenly(n_groups):
    # Rows just above a multiple of chunk_rows: as few blocks as chunk_rows allows, of equal
    # size, so the padding is at most a largest group (plus a tile) per block, not most of
    # a block (450 groups of 10 rows in tiles of 4 are 5400 rows: 3 blocks of 2000 rows
    # took 6000, 11 % padding; 4.5M rows in blocks of 2^22, 55 %).
    from jaxmm._layout import plan_layout

    codes = np.repeat(np.arange(n_groups), 10)
    lay = plan_layout(codes, n_groups, chunk_rows=2000, tile=4)
    total = 12 * n_groups  # 10 rows in 3 tiles of 4
    assert lay.chunks == -(-total // 2000)
    assert lay.n_rows <= total + lay.chunks * (12 + 4)
    rows_per = lay.n_rows // lay.chunks
    np.testing.assert_array_equal(np.unique(lay.row_slot // rows_per), np.arange(lay.chunks))

@pytest.mark.parametrize("chunk_rows", [1000, 1 << 20])
def test_tiles_hold_rows_of_one_group(chunk_rows):
    """Every group starts on a tile boundary, each tile's rows share its group, and the
    rows padding a tile are inert (weight 0)."""
    rng = np.random.default_rng(3)
    sizes = rng.integers(1, 30, 120)
    g = rng.permutation(np.repeat(np.arange(120), sizes))
    X = np.column_stack([np.ones(g.size), rng.normal(size=g.size)])
    design, labels, lay = make_design(X, X[:, :1], rng.normal(size=g.size), g, bucket=True, chunk_rows=chunk_rows)
    assert (lay.chunks > 1) == (chunk_rows == 1000)
    tile_group, group = np.asarray(design.tile_group), np.asarray(design.group)
    weights, counts = np.asarray(design.weights), np.asarray(design.counts)
    assert group.size == 4 * tile_group.size
    np.testing.assert_array_equal(group, np.repeat(tile_group, 4))
    first_row = np.full(lay.n_groups, group.size)
    np.minimum.at(first_row, lay.group_slot[g], lay.row_slot)
    assert np.all(first_row[lay.group_slot] % 4 == 0)
    np.testing.assert_array_equal(group[lay.row_slot], lay.group_slot[g])
    assert np.all(np.diff(tile_group) >= 0)  # sorted, as the segment sums over tiles assume
    padding = np.ones(group.size, bool)
    padding[lay.row_slot] = False
    assert np.all(weights[padding] == 0) and np.all(weights[~padding] == 1)
    np.testing.assert_array_equal(np.bincount(group, weights=weights, minlength=lay.n_groups), counts)
    # the layout packs each block's groups without gaps between them
    block_rows = lay.n_rows // lay.chunks
    last_row = np.zeros(lay.n_groups, np.int64)
    np.maximum.at(last_row, lay.group_slot[g], lay.row_slot)
    nxt = np.sort(first_row[lay.group_slot])
    ends = np.sort(-(-(last_row[lay.group_slot] + 1) // 4) * 4)
    same_block = nxt[1:] // block_rows == ends[:-1] // block_rows
    np.testing.assert_array_equal(nxt[1:][same_block], ends[:-1][same_block])


def test_default_block_size_follows_the_backend(monkeypatch):
    """CPU blocks of 4M rows (2**19 for fits differentiated through the rows); accelerators
    get far larger ones."""
    from jaxmm import _types as sizes

    monkeypatch.setattr(sizes.jax, "default_backend", lambda: "cpu")
    assert sizes.default_chunk_rows() == sizes.CHUNK_ROWS
    assert sizes.default_chunk_rows(autodiff=True) == sizes.AUTODIFF_CHUNK_ROWS < sizes.CHUNK_ROWS
    monkeypatch.setattr(sizes.jax, "default_backend", lambda: "gpu")
    assert sizes.default_chunk_rows() == sizes.GPU_CHUNK_ROWS > sizes.CHUNK_ROWS


def test_sorted_and_shuffled_rows_give_the_same_design():
    """Rows already sorted by group take the slice path of make_design, others the scatter
    path; both must give the same padded arrays."""
    from jaxmm._place_rows import make_design

    rng = np.random.default_rng(5)
    g = np.repeat(np.arange(40), rng.integers(1, 9, 40))
    X = np.column_stack([np.ones(g.size), rng.normal(size=g.size)])
    y = rng.normal(size=g.size)
    w = rng.uniform(0.5, 2.0, g.size)
    sorted_design, labels, lay = make_design(X, X[:, :1], y, g, weights=w, bucket=True)
    # groups in a random order, each group's rows in their original order
    perm = np.argsort(rng.permutation(40)[g], kind="stable")
    shuffled, labels2, _ = make_design(X[perm], X[perm, :1], y[perm], g[perm], weights=w[perm], bucket=True)
    assert labels == labels2 and lay.n_rows > g.size  # padded
    for a, b in zip(sorted_design, shuffled):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


# Five two-way choices in 8 cases, not 32: the rows of an orthogonal array (L8), in which
# every pair of choices takes each of its 4 combinations twice.
_L8 = [(0, 0, 0, 0, 0), (0, 0, 1, 1, 1), (0, 1, 0, 1, 1), (0, 1, 1, 0, 0),
       (1, 0, 0, 1, 0), (1, 0, 1, 0, 1), (1, 1, 0, 0, 1), (1, 1, 1, 1, 0)]


@pytest.mark.parametrize("tile,chunk_rows,shuffled,dtype,given", [
    ((1, 4)[a], (200, 1 << 20)[b], bool(c), ("float64", "float32")[d], bool(e)) for a, b, c, d, e in _L8])
def test_device_layout_equals_host_layout(tile, chunk_rows, shuffled, dtype, given):
    """Accelerators pad large designs on the device (make_design's device_layout); every
    array must equal the host-padded one: blocks or one block, tiles or rows, sorted or
    shuffled groups, float64 or float32, trials/offset/weights given or defaulted."""
    rng = np.random.default_rng(11)
    g = np.repeat(np.arange(60), rng.integers(1, 12, 60))
    if shuffled:
        g = g[np.argsort(rng.permutation(60)[g], kind="stable")]
    n = g.size
    X = np.column_stack([np.ones(n), rng.normal(size=n), rng.normal(size=n)])
    kw = dict(trials=rng.integers(1, 5, n), offset=rng.normal(size=n), weights=rng.uniform(0.5, 2, n)) if given else {}
    y = rng.integers(0, 2, n).astype(float)
    common = dict(bucket=True, chunk_rows=chunk_rows, tile=tile, dtype=dtype, **kw)
    host, labels, lay = make_design(X, X[:, :2], y, g, device_layout=False, **common)
    device, labels2, lay2 = make_design(X, X[:, :2], y, g, device_layout=True, **common)
    assert labels == labels2 and lay.n_rows > n and (lay.chunks > 1) == (chunk_rows == 200)
    assert (host.tile_group is None) == (device.tile_group is None) == (tile == 1)
    for name, a, b in zip(host._fields, host, device):
        if a is None:
            continue
        assert a.dtype == b.dtype and a.shape == b.shape, name
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b), err_msg=name)


@pytest.mark.parametrize("device_layout", [False, True])
@pytest.mark.parametrize("dtype,tile,bucket,chunk_rows", [
    (jnp.float64, 4, False, None), (jnp.float32, 1, True, None), (jnp.float64, 4, False, 64), (jnp.float64, 1, False, 50)])
def test_abstract_design_is_what_make_design_builds(device_layout, dtype, tile, bucket, chunk_rows):
    # A fit compiles its program for the abstract design before the arrays exist; any
    # difference in shape or dtype would compile it a second time.
    from jaxmm._layout import plan_groups
    from jaxmm._types import abstract_design

    rng = np.random.default_rng(5)
    n = 301
    g = rng.integers(0, 23, n)
    X = np.column_stack([np.ones(n), rng.normal(size=n), rng.normal(size=n)])
    plan = plan_groups(g, bucket=bucket, chunk_rows=chunk_rows, tile=tile)
    shape = plan.layout.shape
    abstract = abstract_design(shape.n_rows, shape.n_groups, 3, 2, dtype, tile)
    design, _, layout = make_design(X, X[:, :2], rng.integers(0, 2, n).astype(float), g, trials=None,
                                    weights=rng.uniform(0.5, 2, n), dtype=dtype, tile=tile,
                                    device_layout=device_layout, plan=plan)
    assert shape == (layout.n_rows, layout.n_groups, layout.chunks, layout.group_slot.size)
    real = jax.tree.map(lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype, weak_type=a.weak_type), design)
    assert jax.tree.structure(real) == jax.tree.structure(abstract)
    assert jax.tree.leaves(real) == jax.tree.leaves(abstract)


def test_device_layout_program_holds_no_cumulative_sums():
    """The tiled layout repeats each tile's group by a broadcast. jnp.repeat with
    total_repeat_length builds its indices by cumsums over constants, which XLA:GPU folded
    at compile time for minutes at 10M rows; no cumsum or reduce_window may come back."""
    from jaxmm._place_rows import _lay_out

    n, tile = 40, 4
    text = _lay_out.lower({"y": np.ones(n)}, np.arange(n, dtype=np.int32), np.repeat(np.arange(10, dtype=np.int32), 4),
                          n_rows=2 * n, rows_per_chunk=2 * n, groups_per_chunk=11, tile=tile, dtype="float64",
                          constants=(("weights", 1.0),), sorted_rows=True).as_text()
    assert "reduce_window" not in text and "cumsum" not in text


def test_device_layout_of_a_factor_holds_no_column_per_level(monkeypatch):
    """A factor's indicator columns are computed into X in one loop. Stacked column by
    column, XLA materialised each one first: 10M rows and 10 levels held 1010 MB of
    temporaries. The layout program's temporaries must not grow with the levels."""
    from jaxmm import _place_rows
    from jaxmm._plain_matrix import PlainMatrix

    rng = np.random.default_rng(2)
    n = 200_000
    g = np.sort(rng.integers(0, n // 10, n))
    table = pd.DataFrame({"x": rng.normal(size=n), "f": rng.choice([f"l{j}" for j in range(10)], n)})
    X = PlainMatrix((None, "x") + tuple(("f", f"l{j}") for j in range(1, 10)), table)
    calls = []
    real = _place_rows._lay_out
    monkeypatch.setattr(_place_rows, "_lay_out", lambda *a, **k: calls.append((a, k)) or real(*a, **k))
    design, _, layout = make_design(X, PlainMatrix((None,), table), rng.integers(0, 2, n).astype(float), g,
                                    device_layout=True)
    assert design.X.shape == (layout.n_rows, 11)
    (args, kwargs), = calls
    temps = real.lower(*args, **kwargs).compile().memory_analysis().temp_size_in_bytes
    assert temps < 4 * 8 * layout.n_rows, temps  # a few columns, not one per level (9 x 8 bytes a row)


_SOURCES = [((None, "x", "k"), (None, "k")), ((), ("x",)), ((None, ("f", "b"), "x", ("f", "c")), (None, ("f", "c")))]


# Each source set twice, so that every pair of choices (a source set and a two-way choice,
# or two two-way choices) takes each of its combinations: 6 cases, not 24.
@pytest.mark.parametrize("sources,dtype,chunk_rows,tile", [
    (_SOURCES[s], ("float64", "float32")[a], (200, 1 << 20)[b], (1, 4)[c])
    for s, a, b, c in [(0, 0, 0, 0), (0, 1, 1, 1), (1, 0, 1, 1), (1, 1, 0, 0), (2, 0, 0, 1), (2, 1, 1, 0)]])
def test_plain_matrices_laid_out_on_the_device_equal_filled_ones(sources, dtype, chunk_rows, tile):
    """Plain model matrices (intercept, table columns and indicators of a factor's levels) are
    built on the device from the distinct table columns and level codes; the design must equal
    the one from the filled matrices."""
    from jaxmm._plain_matrix import PlainMatrix

    rng = np.random.default_rng(4)
    g = np.repeat(np.arange(50), rng.integers(1, 9, 50))
    g = g[np.argsort(rng.permutation(50)[g], kind="stable")]
    n = g.size
    table = pd.DataFrame({"x": rng.normal(size=n), "k": rng.integers(-5, 2 ** 25, n),  # k: not exact in float32
                          "f": rng.choice(["a", "b", "c"], n)})  # a factor: indicators of its levels
    X, Z = (PlainMatrix(names, table) for names in sources)
    y = rng.integers(0, 2, n).astype(float)
    common = dict(chunk_rows=chunk_rows, tile=tile, dtype=dtype, weights=rng.uniform(0.5, 2, n))
    host, _, lay = make_design(np.asarray(X), np.asarray(Z), y, g, device_layout=False, **common)
    device, _, _ = make_design(X, Z, y, g, device_layout=True, **common)
    assert (lay.chunks > 1) == (chunk_rows == 200)
    for name, a, b in zip(host._fields, host, device):
        if a is None:
            assert b is None, name
            continue
        assert a.dtype == b.dtype and a.shape == b.shape, name
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b), err_msg=name)


def test_integer_columns_laid_out_on_the_device_without_x64():
    # JAXMM_FLOAT32=1 leaves x64 off, where a transferred int64 column would wrap to int32
    code = """
import numpy as np, pandas as pd, jax
from jaxmm._plain_matrix import PlainMatrix
from jaxmm._place_rows import make_design
assert not jax.config.jax_enable_x64
table = pd.DataFrame({"k": np.arange(40, dtype=np.int64) + 2 ** 40})
g = np.repeat(np.arange(8), 5)
X = PlainMatrix((None, "k"), table)
host, _, _ = make_design(np.asarray(X), np.asarray(X), np.ones(40), g, dtype="float32", device_layout=False)
device, _, _ = make_design(X, X, np.ones(40), g, dtype="float32", device_layout=True)
np.testing.assert_array_equal(np.asarray(host.X), np.asarray(device.X))
assert float(np.asarray(device.X)[0, 1]) == 2.0 ** 40
print("ok")
"""
    env = dict(os.environ, JAXMM_FLOAT32="1", JAX_PLATFORMS=os.environ.get("JAX_PLATFORMS", "cpu"))
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert out.returncode == 0 and out.stdout.strip().endswith("ok"), out.stderr[-2000:]
