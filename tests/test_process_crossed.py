"""Several terms over a job's processes (jaxmm._process_crossed): the statistics of the parts
of the rows, merged, are those of all the rows. The job itself (4 processes joined by
jax.distributed, each reading its own rows) is tests/test_multihost.py."""
import numpy as np
import pytest

from jaxmm._crossed_lmm import Terms, crossed_stats
from jaxmm._process_crossed import cell_keys, merged_cells, part_parents


def _crossed():
    # (x | g1) + (1 | g2) + (x | g3): q₁ = 2, a scalar and a 2-column term in the rest
    rng = np.random.default_rng(3)
    n = 400
    codes = [rng.integers(0, 50, n), rng.integers(0, 7, n), rng.integers(0, 5, n)]
    x = rng.normal(size=n)
    X = np.column_stack([np.ones(n), x])
    return X @ [1.0, 0.5] + rng.normal(size=n), X, [X, X[:, :1], X], codes, Terms(q=(2, 1, 2), m=(50, 7, 5))


def _nested():
    # (1 | class) + (x | school) + (1 | district): 5 classes in each of 12 schools, 4 in each of 3 districts
    rng = np.random.default_rng(4)
    n = 240
    klass = rng.permutation(np.arange(n) % 60)
    x = rng.normal(size=n)
    X = np.column_stack([np.ones(n), x])
    return (rng.normal(size=n), X, [X[:, :1], X, X[:, :1]], [klass, klass // 5, klass // 20],
            Terms(q=(1, 2, 1), m=(60, 12, 3), nested=True))


@pytest.mark.parametrize("design", [_crossed, _nested])
@pytest.mark.parametrize("split", ["first factor", "any rows"])
def test_merged_parts_are_the_statistics_of_all_the_rows(design, split):
    # three processes' rows, split by the first factor (the reader's hash) or anyhow: their
    # cells merged by key are all the rows' cells in crossed_stats's order (pairs too), each
    # part's rows point at their own cells, the sums add up, the parents are the chain's
    y, X, Zs, codes, terms = design()
    whole = crossed_stats(y, X, Zs, codes, terms)
    rng = np.random.default_rng(5)
    part = codes[0] % 3 if split == "first factor" else rng.integers(0, 3, y.size)
    parts = []
    for p in range(3):
        rows = np.flatnonzero(part == p)
        stats = crossed_stats(y[rows], X[rows], [Z[rows] for Z in Zs], [c[rows] for c in codes], terms)
        parts.append((rows, stats, part_parents([c[rows] for c in codes], terms)))
    cells, keys = merged_cells([cell_keys(s, terms) for _, s, _ in parts],
                               [np.asarray(s.Z1tZ2) for _, s, _ in parts], terms)
    for name in ("cell_level", "cell_term", "cell_cols", "pair_a", "pair_b"):
        np.testing.assert_array_equal(cells[name], np.asarray(getattr(whole, name)), err_msg=name)
    np.testing.assert_allclose(cells["Z1tZ2"], np.asarray(whole.Z1tZ2), rtol=0, atol=1e-12)
    for rows, stats, _ in parts:
        own = np.searchsorted(keys, cell_keys(stats, terms))[np.asarray(stats.row_cell)]
        np.testing.assert_array_equal(own, np.asarray(whole.row_cell)[rows])
    for name in ("Z1tZ1", "Z1tX", "Z1ty", "Z2tX", "Z2ty", "XtX", "Xty", "yty", "n"):
        np.testing.assert_allclose(sum(np.asarray(getattr(s, name)) for _, s, _ in parts),
                                   np.asarray(getattr(whole, name)), rtol=0, atol=1e-11, err_msg=name)
    blocks = whole.Z2tZ2 if terms.nested else (whole.Z2tZ2,)
    for k, block in enumerate(blocks):
        summed = sum(np.asarray(s.Z2tZ2[k] if terms.nested else s.Z2tZ2) for _, s, _ in parts)
        np.testing.assert_allclose(summed, np.asarray(block), rtol=0, atol=1e-11)
    for k, parent in enumerate(whole.parents):
        np.testing.assert_array_equal(np.max([pp[k] for _, _, pp in parts], axis=0), np.asarray(parent))
    if terms.nested:
        assert len(whole.parents) == 1
