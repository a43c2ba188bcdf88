"""Parquet datasets as a fit's data (_dataset): only the model's columns are read, batch by
batch, and the fit equals the in-memory one (one term, several terms, by=; devices= in
tests/helpers/sharded_fit.py)."""
import numpy as np
import pandas as pd
import pytest

pa = pytest.importorskip("pyarrow")
pq = pytest.importorskip("pyarrow.parquet")
pytest.importorskip("pyarrow.dataset")  # pa.dataset below

import jaxmm  # noqa: E402
from jaxmm.errors import DataError  # noqa: E402

from conftest import DATA  # noqa: E402


def _write(frame: pd.DataFrame, folder, parts: int = 3, row_group_size: int = 7):
    """The table as ``parts`` Parquet files of small row groups (many record batches)."""
    folder.mkdir()
    for k, rows in enumerate(np.array_split(np.arange(len(frame)), parts)):
        pq.write_table(pa.Table.from_pandas(frame.iloc[rows], preserve_index=False), folder / f"part{k}.parquet",
                       row_group_size=row_group_size)
    return folder


@pytest.fixture
def small_batches(monkeypatch):
    """Tables of 16 rows: a test's small dataset is then many batches, as a large one is."""
    monkeypatch.setattr("jaxmm._stream_batches.BATCH_ROWS", 16)


@pytest.fixture
def streamed(monkeypatch):
    """The tables a fit reads from a dataset: (columns, rows) of each; none of them may be
    all the rows (a test's data are several tables of small_batches' 16 rows)."""
    import importlib

    module = importlib.import_module("jaxmm._stream_batches")
    reads, batches = [], module.batches

    def recorded(dataset, columns, share=None):
        for table, numbers in batches(dataset, columns, share):
            reads.append((tuple(columns), table.num_rows))
            yield table, numbers

    monkeypatch.setattr(module, "batches", recorded)
    return reads


@pytest.fixture(scope="module")
def cbpp(tmp_path_factory):
    data = pd.read_csv(DATA / "cbpp_binomial.csv")
    # text groups and period, a column the model does not use, one missing herd label
    data = data.assign(herd="h" + data["herd"].astype(str), period="p" + data["period"].astype(str),
                       unused=np.arange(len(data)) * 0.5)
    data.loc[5, "herd"] = None
    return data, _write(data, tmp_path_factory.mktemp("cbpp") / "dataset")


def test_a_dataset_fits_as_the_table_does(cbpp):
    data, folder = cbpp
    formula = "incidence ~ C(period) + (1 | herd)"
    table = jaxmm.fit(formula, data, family="binomial", trials="size", missing="drop")
    for source in (folder, str(folder), pa.dataset.dataset(str(folder), format="parquet")):
        res = jaxmm.fit(formula, source, family="binomial", trials="size", missing="drop")
        assert res.n_dropped == table.n_dropped == 1
        assert res.loglik == table.loglik
        np.testing.assert_array_equal(res.fixef, table.fixef)
        assert list(res.ranef.index) == list(table.ranef.index) and list(res.fixef.index) == list(table.fixef.index)
        np.testing.assert_array_equal(res.ranef, table.ranef)


def test_only_the_models_columns_are_read_a_batch_at_a_time(cbpp, small_batches, streamed):
    data, folder = cbpp
    jaxmm.fit("incidence ~ C(period) + (1 | herd)", folder, family="binomial", trials="size", missing="drop")
    assert {columns for columns, _ in streamed} == {("herd", "incidence", "size", "period")}  # the dataset's order
    assert sum(rows for _, rows in streamed) == 2 * len(data)  # two passes
    assert max(rows for _, rows in streamed) < len(data) / 2


def test_several_terms_and_by_stream_from_a_dataset(tmp_path, small_batches, streamed):
    data = pd.read_csv(DATA / "crossed" / "penicillin_crossed_reml.csv")
    data = pd.concat([data.assign(rep="a"), data.assign(rep="b", diameter=data["diameter"] + np.arange(len(data)) % 3)],
                     ignore_index=True)
    folder = _write(data, tmp_path / "pen", parts=2, row_group_size=50)
    for formula in ("diameter ~ 1 + (1 | plate) + (1 | sample)", "diameter ~ 1 + (1 | plate)"):
        table, dataset = jaxmm.fit(formula, data, by="rep"), jaxmm.fit(formula, folder, by="rep")
        np.testing.assert_array_equal(dataset.loglik, table.loglik)
        plates = (lambda r: r.ranef["plate"]) if "sample" in formula else (lambda r: r.ranef)
        np.testing.assert_array_equal(plates(dataset["b"]), plates(table["b"]))
        assert dataset["b"].fitted().index.equals(table["b"].fitted().index)  # the dataset's row numbers
    assert streamed and max(rows for _, rows in streamed) < len(data) / 4


def test_a_nested_model_streams_its_interaction_levels_drops_and_row_numbers(tmp_path, small_batches, streamed):
    # batch:cask is labelled batch by batch; a fixed factor's level is met in the last file
    # only; rows with a missing covariate are dropped from several batches; and the error of
    # missing="raise" counts rows from the dataset's first, as the table's does
    data = pd.read_csv(DATA / "crossed" / "pastes_nested_reml.csv")
    data["x"] = np.random.default_rng(0).normal(size=len(data))
    data["shift"] = np.where(np.arange(len(data)) >= 50, "night", "day")
    data.loc[[7, 23, 44], "x"] = np.nan
    folder = _write(data, tmp_path / "pastes", parts=3, row_group_size=5)
    formula = "strength ~ x + shift + (1 | batch:cask) + (1 | batch)"
    table = jaxmm.fit(formula, data, missing="drop")
    res = jaxmm.fit(formula, folder, missing="drop")
    assert res.n_dropped == table.n_dropped == 3 and res.loglik == table.loglik
    np.testing.assert_array_equal(res.fixef, table.fixef)
    assert list(res.fixef.index) == list(table.fixef.index) == ["(Intercept)", "x", "shiftnight"]
    for name in ("batch", "batch:cask"):
        assert res.ranef[name].index.equals(table.ranef[name].index)
        np.testing.assert_array_equal(res.ranef[name], table.ranef[name])
    np.testing.assert_array_equal(res.fitted(), table.fitted())
    assert list(res.fitted().index) == list(table.fitted().index)  # the dataset's row numbers
    np.testing.assert_array_equal(res.predict(data.iloc[:9].fillna(0.0)), table.predict(data.iloc[:9].fillna(0.0)))
    data.loc[[30, 52], "cask"] = None
    with pytest.raises(DataError) as from_table:
        jaxmm.fit(formula, data)
    with pytest.raises(DataError) as from_dataset:
        jaxmm.fit(formula, _write(data, tmp_path / "holes", parts=3, row_group_size=5))
    assert str(from_dataset.value) == str(from_table.value)
    assert "'x': 3 row(s) (first rows: [7, 23, 44])" in str(from_table.value)


def test_offset_and_weights_arrays_stream_with_the_dataset_rows(tmp_path, small_batches, streamed):
    # arrays hold one value per dataset row; rows dropped for a missing value drop theirs
    data = pd.read_csv(DATA / "sleepstudy_reml.csv")
    data.loc[[3, 100], "Reaction"] = np.nan
    folder = _write(data, tmp_path / "sleep", parts=3, row_group_size=9)
    weights = 1.0 + (np.arange(len(data)) % 4) / 2
    offset = np.sin(np.arange(len(data)))
    for formula in ("Reaction ~ Days + (Days | Subject)", "Reaction ~ Days + (1 | Subject) + (0 + Days | Subject)"):
        table = jaxmm.fit(formula, data, weights=weights, offset=offset, missing="drop")
        res = jaxmm.fit(formula, folder, weights=weights, offset=offset, missing="drop")
        assert res.loglik == table.loglik and res.n_dropped == 2
        np.testing.assert_array_equal(res.fixef, table.fixef)
    with pytest.raises(DataError, match=r"offset has shape \(3,\); expected one value per row \(180\)"):
        jaxmm.fit("Reaction ~ Days + (1 | Subject)", folder, offset=offset[:3], missing="drop")
    weights[5] = np.nan  # a missing weight is a missing value of its row
    with pytest.raises(DataError, match=r"weights: 1 row\(s\) \(first rows: \[5\]\)"):
        jaxmm.fit("Reaction ~ Days + (1 | Subject)", folder, weights=weights)


def test_stateful_transforms_learn_their_state_from_all_the_batches(tmp_path, small_batches, streamed):
    # center, scale, standardize and poly: formulaic's state (means, scales, the polynomials'
    # coefficients) from every kept row, not from the sample the encodings come from; new
    # data are then predicted with it
    data = pd.read_csv(DATA / "sleepstudy_reml.csv")
    data.loc[[4, 95], "Reaction"] = np.nan
    data["rep"] = np.arange(len(data)) % 2
    folder = _write(data, tmp_path / "sleep", parts=3, row_group_size=9)
    new = data.iloc[10:20].assign(Days=np.arange(10) * 0.7)
    for formula, by in (("Reaction ~ poly(Days, 2) + (scale(Days) | Subject)", None),
                        ("Reaction ~ center(Days) + (1 | Subject) + (0 + standardize(Days) | Subject)", None),
                        ("Reaction ~ scale(Days) + (1 | Subject)", "rep")):
        table = jaxmm.fit(formula, data, missing="drop", by=by)
        res = jaxmm.fit(formula, folder, missing="drop", by=by)
        np.testing.assert_array_equal(res.loglik, table.loglik)
        if by is None:
            np.testing.assert_array_equal(res.fixef, table.fixef)
            np.testing.assert_array_equal(res.predict(new), table.predict(new))
    assert max(rows for _, rows in streamed) < len(data) / 4


def test_shared_state_is_formulaics_state_from_sums():
    # a job's processes learn a transform's state from sums over their shares (shared_state);
    # with one share it is formulaic's own state to rounding (examples/multihost.py: 4 shares)
    from jaxmm._formula import parse_formula
    from jaxmm._stream_state import learnt_state, shared_state

    spec = parse_formula("y ~ poly(x, 3) + scale(z) + center(x) + standardize(z) + (scale(z) | g)")
    rng = np.random.default_rng(0)
    arguments = {"x": rng.normal(size=500), "z": rng.normal(size=500) * 3 + 1}
    formulaic_state, summed = learnt_state([spec], arguments), shared_state([spec], arguments, np.asarray)
    assert summed.keys() == formulaic_state.keys() == {"poly(x, 3)", "scale(z)", "center(x)", "standardize(z)"}
    for key, state in formulaic_state.items():
        for field, value in state.items():
            expected = value if isinstance(value, dict) else {0: value}
            got = summed[key][field] if isinstance(value, dict) else {0: summed[key][field]}
            assert got.keys() == expected.keys(), (key, field)
            for k in expected:
                assert (got[k] is None) == (expected[k] is None)
                if expected[k] is not None:
                    np.testing.assert_allclose(got[k], expected[k], rtol=1e-13, err_msg=f"{key} {field}")


def test_a_streamed_design_takes_its_encodings_and_checks_from_all_the_batches(tmp_path, small_batches):
    # a one-term fit's design is streamed batch by batch (_stream_design): each file here holds
    # one period only (a factor's levels come from all the batches), a column is constant in
    # every batch but not over the data (no aliasing), rows with a missing value are dropped
    # from the later files only, and a stateful transform learns its state from all the rows
    data = pd.read_csv(DATA / "cbpp_binomial.csv").sort_values("period", kind="stable").reset_index(drop=True)
    data["block"] = data["period"].astype(float)  # constant within each file, not aliased overall
    data.loc[[40, 51], "incidence"] = np.nan
    folder = tmp_path / "periods"
    folder.mkdir()
    for k, rows in data.groupby("period").groups.items():
        pq.write_table(pa.Table.from_pandas(data.loc[rows], preserve_index=False), folder / f"p{k}.parquet",
                       row_group_size=5)
    for formula in ("incidence ~ C(period) + (1 | herd)", "incidence ~ block + (1 | herd)",
                    "incidence ~ scale(block) + (1 | herd)"):
        table = jaxmm.fit(formula, data, family="binomial", trials="size", missing="drop")
        res = jaxmm.fit(formula, folder, family="binomial", trials="size", missing="drop")
        assert res.n_dropped == 2 and list(res.fixef.index) == list(table.fixef.index)
        assert res.loglik == table.loglik
        np.testing.assert_array_equal(res.ranef, table.ranef)
        assert list(res.row_index) == list(table.row_index)  # the dataset's row numbers of the fitted rows
    # aliased over all the rows, though in no single batch: dropped as in the table's fit
    data["twice"] = 2 * data["block"]
    folder2 = _write(data, tmp_path / "aliased", parts=2, row_group_size=5)
    with pytest.warns(jaxmm.errors.JaxmmWarning, match=r"dropping aliased column\(s\) \['twice'\]"):
        res = jaxmm.fit("incidence ~ block + twice + (1 | herd)", folder2, family="binomial", trials="size",
                        missing="drop")
    assert list(res.fixef.index) == ["(Intercept)", "block"]
    # a problem's rows are counted from the dataset's first row, not the batch's
    with pytest.raises(DataError, match=r"missing values in 'incidence': 2 row\(s\) \(first rows: \[40, 51\]\)"):
        jaxmm.fit("incidence ~ block + (1 | herd)", folder, family="binomial", trials="size")


def test_dataset_errors_name_the_path_or_column(tmp_path, cbpp):
    _, folder = cbpp
    with pytest.raises(DataError, match=r"column\(s\) \['weight'\] are not in the dataset"):
        jaxmm.fit("incidence ~ weight + (1 | herd)", folder, family="binomial", trials="size")
    with pytest.raises(DataError, match="neither a table nor an existing Parquet file or directory"):
        jaxmm.fit("y ~ 1 + (1 | g)", tmp_path / "nowhere")
    broken = _write(pd.DataFrame({"y": [1.0, 2.0], "g": ["a", "b"]}), tmp_path / "broken", parts=2)
    (broken / "part1.parquet").write_bytes(b"not parquet")  # found when the files are read
    with pytest.raises(DataError, match="cannot read the Parquet dataset"):
        jaxmm.fit("y ~ 1 + (1 | g)", broken)
    (tmp_path / "data.csv").write_text("y,g\n1,a\n")
    with pytest.raises(DataError, match="is a directory with no .parquet or .pq files"):
        jaxmm.fit("y ~ 1 + (1 | g)", DATA / "r_outputs")  # a folder of JSON files
    with pytest.raises(DataError, match="is a file but not Parquet"):
        jaxmm.fit("y ~ 1 + (1 | g)", str(tmp_path / "data.csv"))
    pd.DataFrame({"y": np.zeros(0), "g": np.zeros(0, int), "h": np.zeros(0, int)}).to_parquet(
        tmp_path / "empty.parquet", index=False)
    for formula in ("y ~ 1 + (1 | g)", "y ~ 1 + (1 | g) + (1 | h)"):
        with pytest.raises(DataError, match="the data have no rows"):
            jaxmm.fit(formula, tmp_path / "empty.parquet")


def test_the_cli_fits_a_dataset_directory(cbpp, capsys):
    from jaxmm._cli import main

    _, folder = cbpp
    assert main(["fit", str(folder), "incidence ~ C(period) + (1 | herd)", "--family", "binomial",
                 "--trials", "size", "--missing", "drop"]) == 0
    assert "Number of obs: 55, groups:  herd, 15" in capsys.readouterr().out


def test_partition_dataset_puts_each_group_in_one_part(tmp_path, cbpp):
    data, folder = cbpp
    data = data.dropna(subset=["herd"])
    out = jaxmm.partition_dataset(folder, "herd", 3, tmp_path / "parts")  # a dataset in, streamed
    back = pa.dataset.dataset(str(out), format="parquet", partitioning="hive").to_table().to_pandas()
    assert back.groupby("herd")["jaxmm_part"].nunique().max() == 1 and back["jaxmm_part"].nunique() == 3
    assert len(back) == len(data) + 1  # the row with a missing herd is written too
    formula = "incidence ~ C(period) + (1 | herd)"
    table = jaxmm.fit(formula, data, family="binomial", trials="size")
    parts = jaxmm.fit(formula, out, family="binomial", trials="size", missing="drop")
    assert parts.loglik == pytest.approx(table.loglik, abs=1e-10)
    np.testing.assert_allclose(parts.fixef, table.fixef, rtol=0, atol=1e-9)
    # the same parts from a pandas table (the hash is of the values, not of where they came from)
    again = jaxmm.partition_dataset(data, "herd", 3, tmp_path / "again")
    first = pa.dataset.dataset(str(again), format="parquet", partitioning="hive").to_table().to_pandas()
    assert dict(zip(first["herd"], first["jaxmm_part"])) == dict(zip(back["herd"].dropna(), back["jaxmm_part"]))
    from jaxmm.errors import ArgumentError

    with pytest.raises(ArgumentError, match="exists already"):
        jaxmm.partition_dataset(data, "herd", 3, out)
    with pytest.raises(ArgumentError, match="n_parts must be a positive integer"):
        jaxmm.partition_dataset(data, "herd", 0, tmp_path / "none")
    with pytest.raises(DataError, match="grouping column 'flock' is not in the data"):
        jaxmm.partition_dataset(data, "flock", 2, tmp_path / "none")


def test_problems_are_named_by_their_dataset_rows_in_a_share_and_after_drops(tmp_path, small_batches):
    # a process's share and the rows kept after drops are not the data's rows: an error
    # found in them still names the data's row numbers
    from jaxmm._dataset import hash_parts
    from jaxmm._formula import parse_formula
    from jaxmm._stream_design import plan_streamed

    n = 120
    data = pd.DataFrame({"y": np.sin(np.arange(n)), "x": np.cos(np.arange(n)), "w": 1.0, "g": np.arange(n) % 17})
    part = hash_parts(pa.array(data["g"]), 3)
    p = int(part[90])
    mine = np.flatnonzero(part == p)
    data.loc[mine[2], "x"] = np.nan  # dropped, before the bad weight in the same share
    data.loc[90, "w"] = -1.0
    folder = _write(data, tmp_path / "rows", parts=2, row_group_size=8)
    spec = parse_formula("y ~ x + (1 | g)")
    with pytest.raises(DataError, match=rf"'x': 1 row\(s\) \(first rows: \[{mine[2]}\]\)"):
        plan_streamed(spec, folder, weights="w", tile=1, share=("g", p, 3))
    plan = plan_streamed(spec, folder, weights="w", missing="drop", tile=1, share=("g", p, 3))
    with pytest.raises(DataError, match=r"weights has 1 negative value\(s\) \(first rows: \[90\]\)"):
        plan.place(tile=1, host=True)
    for source in (folder, data):  # the table's fit names its own rows so too
        with pytest.raises(DataError, match=r"weights has 1 negative value\(s\) \(first rows: \[90\]\)"):
            jaxmm.fit("y ~ x + (1 | g)", source, weights="w", missing="drop")


@pytest.mark.parametrize("n_processes", [3, 4])
def test_each_process_reads_the_rows_of_its_own_groups(tmp_path, cbpp, n_processes):
    # a job's process p reads the parts k = p mod P of a dataset partitioned on the model's
    # group, and otherwise the rows whose group hashes to it; either way each group is read
    # by one process, and all of them read every row once (examples/multihost.py fits them)
    from jaxmm._dataset import open_dataset
    from jaxmm._process_rows import hash_partition_files, own_parts
    from jaxmm._stream_batches import batches

    data, folder = cbpp
    data = data.dropna(subset=["herd"])
    parts = jaxmm.partition_dataset(data, "herd", 6, tmp_path / "parts")
    files = hash_partition_files(parts, "herd")
    assert set(files) <= set(range(6)) and hash_partition_files(parts, "period") is None
    assert hash_partition_files(folder, "herd") is None  # not partitioned: read by filtering
    columns = ["herd", "incidence", "size", "period"]

    def rows(source, share=None):
        tables = [t.to_pandas() for t, _ in batches(source, columns, share)]
        return pd.concat(tables) if tables else pd.DataFrame(columns=columns)

    for by_parts in (True, False):
        shares = [rows(own_parts(parts, files, p, n_processes)) if by_parts else
                  rows(open_dataset(folder), ("herd", p, n_processes)) for p in range(n_processes)]
        herds = [set(share["herd"].dropna()) for share in shares]
        assert sum(len(h) for h in herds) == len(set().union(*herds)) == data["herd"].nunique()
        both = pd.concat(shares).dropna(subset=["herd"]).astype({"herd": object, "period": object})
        key = ["herd", "period", "incidence", "size"]
        assert both.sort_values(key)[key].reset_index(drop=True).equals(
            data.astype({"herd": object, "period": object}).sort_values(key)[key].reset_index(drop=True))
    empty = next((p for p in range(8) if not any(k % 8 == p for k in files)), None)
    if empty is not None:  # a process that would hold no part is told so
        with pytest.raises(DataError, match=f"process {empty} of 8 holds no part"):
            own_parts(parts, files, empty, 8)
