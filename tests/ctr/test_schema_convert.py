"""Schema, CSV → Parquet conversion, readers and item vectors (spec antm2c.md §1, §2, §7; acceptance point 3).

The fixture is a small file in the release's format: a header, the 37 columns, a repeated header line inside
the part, one bad ``log_time``, Chinese text with commas and quotes, dates on both sides of the split bounds.
Expected values are parsed here with the standard library, independently of the converter.
"""

from __future__ import annotations

import csv
import datetime as dt
import gzip
import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from bastion.ctr.convert import (
    ItemVectors,
    convert_csv,
    load_item_vectors,
    read_ctr_csv,
    read_ctr_parquet,
    save_item_vectors,
)
from bastion.ctr.schema import (
    ANTM2C_SPLIT,
    Column,
    ColumnMapping,
    DateSplit,
    Schema,
    antm2c_schema,
    ctr_schema,
)

COLUMNS = [
    "user_id",
    "item_id",
    "log_time",
    "label",
    "bill_entity_seq",
    "service_entity_seq",
    "query_entity_seq",
    "item_entity_names",
    "item_title",
    "scene",
] + [f"deep_features_{i}" for i in range(27)]
FMT = "%Y-%m-%d %H:%M:%S"
BOUNDARY_TIMES = ["2023-08-03 00:00:00", "2023-08-03 00:00:01", "2023-08-05 00:00:00", "2023-08-05 00:00:01"]


def _rows(n: int, seed: int = 0) -> list[list[str]]:
    rng = np.random.default_rng(seed)
    start = dt.datetime(2023, 8, 1)
    out = []
    for i in range(n):
        t = BOUNDARY_TIMES[i] if i < len(BOUNDARY_TIMES) else (start + dt.timedelta(seconds=int(i * 7 * 86400 / n)))
        t = t if isinstance(t, str) else t.strftime(FMT)
        deep = [str(i)]  # deep_features_0: a unique row key
        for j in range(1, 27):
            v = int(rng.integers(-5, 2**40)) if j % 3 else int(rng.integers(0, 100))
            deep.append("" if (i + j) % 11 == 0 else str(v))  # some empty -> null
        out.append(
            [
                str(1000 + int(rng.integers(0, 40))),
                str(int(rng.integers(1, 10**12))),
                t,
                str(int(rng.integers(0, 2))),
                f"账单,缴费{i % 3}",  # comma inside: quoted by the writer
                f'外卖 "快送" {i % 5}',  # quotes inside
                "" if i % 4 == 0 else f"查询{i % 7}",  # empty text stays ""
                f"实体{i % 6},名称",
                f"标题{i % 9}",
                str(i % 5),
                *deep,
            ]
        )
    return out


def _write(
    path: Path, rows: list[list[str]], *, header: list[str] = COLUMNS, extra: dict[int, list[str]] | None = None
):
    """Write ``header`` + rows; ``extra[k]`` is a raw line inserted before data row k. Returns {row key: file row}."""
    extra = extra or {}
    line_of = {}
    line = 1
    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(header)
        for k, r in enumerate(rows):
            if k in extra:
                w.writerow(extra[k])
                line += 1
            w.writerow(r)
            line += 1
            line_of[k] = line
    return line_of


def _expected(row: list[str]) -> dict:
    d = dict(zip(COLUMNS, row, strict=True))
    out = {}
    for c in COLUMNS:
        v = d[c]
        if c in ("user_id", "item_id", "label", "scene") or c.startswith("deep_features_"):
            out[c] = None if v == "" else int(v)
        elif c == "log_time":
            out[c] = dt.datetime.strptime(v, FMT)
        else:
            out[c] = v
    return out


def _quarantine(path: Path) -> list[dict[str, str]]:
    with open(path, encoding="utf-8", newline="") as f:
        return list(csv.DictReader(f))


def _split_of(t: dt.datetime) -> str:
    if t <= dt.datetime(2023, 8, 3):
        return "train"
    return "val" if t <= dt.datetime(2023, 8, 5) else "test"


# ------------------------------------------------------------------------------------------------ schema
def test_public10m_schema_is_the_release_columns_in_order():
    s = antm2c_schema("public10m")
    assert list(s.names) == COLUMNS and len(s) == 37
    assert (s.label, s.scene, s.time, s.num_scenes) == ("label", "scene", "log_time", 5)
    assert s["log_time"].time_format == FMT and s["log_time"].kind == "time"
    assert [c.name for c in s.by_kind("text")] == COLUMNS[4:9]
    assert [c.owner for c in s.by_kind("text")] == ["user", "user", "user", "item", "item"]
    assert [c.name for c in s.by_kind("id")] == ["user_id", "item_id"]
    assert len(s.by_kind("categorical")) == 27 and all(c.dtype == pa.int64() for c in s.by_kind("categorical"))
    assert s["label"].dtype == pa.int8() and s["scene"].dtype == pa.int64() and s["item_title"].dtype == pa.string()
    assert s.required == s.names and not s.reconstruction
    assert antm2c_schema(deep_feature_type=pa.string())["deep_features_3"].dtype == pa.string()


def test_paper_schema_groups_and_unknown_name():
    p = antm2c_schema("paper")
    assert p.reconstruction and "[R]" in p.description
    counts = {k: len(p.by_kind(k)) for k in ("categorical", "numeric", "text", "image", "id", "label", "scene", "time")}
    assert counts == {
        "categorical": 150,
        "numeric": 40,
        "text": 5,
        "image": 1,
        "id": 2,
        "label": 1,
        "scene": 1,
        "time": 1,
    }
    assert all("[R]" in c.description for c in p.by_kind("categorical", "numeric", "image"))
    with pytest.raises(ValueError, match="name must be one of 'public10m', 'paper'"):
        antm2c_schema("public1b")


def test_schema_validate_mapping_and_column_checks():
    s = antm2c_schema()
    arrow = s.arrow_schema()
    assert s.validate(arrow) == s.names
    with pytest.raises(ValueError, match="missing column 'scene'"):
        s.validate(arrow.remove(arrow.get_field_index("scene")))
    with pytest.raises(TypeError, match="column 'label' must have Arrow type int8, got double"):
        s.validate(arrow.set(3, pa.field("label", pa.float64())))
    with pytest.raises(ValueError, match="kind of column 'x'"):
        Column("x", "colour", "user")
    with pytest.raises(ValueError, match="owner of column 'x'"):
        Column("x", "text", "merchant")
    with pytest.raises(TypeError, match="does not fit a 'label' column"):
        Column("y", "label", "context", dtype=pa.float32())
    with pytest.raises(ValueError, match="duplicate column names"):
        Schema("bad", (Column("a", "text", "user"), Column("a", "text", "item")))
    m = ColumnMapping({"uid": "user_id", "click": "label"})
    assert m.apply(["uid", "click", "scene"]) == ["user_id", "label", "scene"]
    with pytest.raises(ValueError, match="duplicate column names"):
        m.apply(["uid", "user_id"])
    with pytest.raises(ValueError, match="several source columns"):
        ColumnMapping({"a": "label", "b": "label"})
    with pytest.raises(ValueError, match="no column for"):
        ColumnMapping({"a": "nope"}).check(s)
    assert s.rename({"user_id": "uid"}).names[0] == "uid"


def test_date_split_bounds():
    assert DateSplit(dt.datetime(2023, 8, 3), dt.datetime(2023, 8, 5)) == ANTM2C_SPLIT
    times = pa.array([dt.datetime.strptime(t, FMT) for t in BOUNDARY_TIMES], pa.timestamp("ms"))
    assert ANTM2C_SPLIT.assign(times).tolist() == [0, 1, 1, 2]
    with pytest.raises(ValueError, match="train_end must be before val_end"):
        DateSplit(dt.datetime(2023, 8, 5), dt.datetime(2023, 8, 3))
    with pytest.raises(TypeError, match="train_end must be a datetime"):
        DateSplit("2023-08-03", dt.datetime(2023, 8, 5))
    with pytest.raises(ValueError, match="null"):
        ANTM2C_SPLIT.assign(pa.array([None], pa.timestamp("ms")))


# ------------------------------------------------------------------------------------------------ convert
@pytest.fixture
def release_file(tmp_path):
    """The release's format: 120 rows, a repeated header before row 50, a bad log_time in row 80."""
    rows = _rows(120)
    rows[80][2] = "2023-08-0x 12:00:00"
    path = tmp_path / "antm2c_10m_part0"
    line_of = _write(path, rows, extra={50: COLUMNS})
    return path, rows, line_of


def test_convert_round_trip_with_split_skip_and_quarantine(release_file, tmp_path):
    path, rows, line_of = release_file
    out = tmp_path / "out"
    summary = convert_csv(
        [path],
        out,
        split=ANTM2C_SPLIT,
        bad_rows="skip",
        rows_per_file=40,
        row_group_size=16,
        block_size=2048,  # many blocks: the stream is cut inside the file
    )
    good = [r for k, r in enumerate(rows) if k != 80]
    expected = {"train": [], "val": [], "test": []}
    for r in good:
        e = _expected(r)
        expected[_split_of(e["log_time"])].append(e)
    assert all(len(v) > 0 for v in expected.values())
    assert summary.rows == {s: len(v) for s, v in expected.items()}
    assert (summary.rows_read, summary.header_rows, summary.bad_rows) == (121, 1, 1)
    schema = antm2c_schema().arrow_schema()
    for split, exp in expected.items():
        files = summary.files[split]
        assert files == sorted((out / split).glob("part-*.parquet"))
        assert len(files) == -(-len(exp) // 40)
        got = []
        for f in files:
            meta = pq.ParquetFile(f).metadata
            assert meta.num_rows <= 40
            assert meta.row_group(0).column(0).compression == "ZSTD"
            t = pq.read_table(f)
            assert t.schema.remove_metadata() == schema
            for g in range(meta.num_rows_group if hasattr(meta, "num_rows_group") else meta.num_row_groups):
                rg = pq.ParquetFile(f).read_row_group(g).column("log_time").to_pylist()
                assert len(rg) <= 16
                assert rg == sorted(rg)  # time-sorted within each row group
            got += t.to_pylist()
        got.sort(key=lambda d: d["deep_features_0"])
        assert got == sorted(exp, key=lambda d: d["deep_features_0"])
    # quarantine: the bad row with its 1-based file row number (the repeated header counts as a row)
    q = _quarantine(summary.quarantine_path)
    assert len(q) == 1
    assert (int(q[0]["_row"]), q[0]["_column"], q[0]["log_time"]) == (line_of[80], "log_time", "2023-08-0x 12:00:00")
    assert q[0]["item_title"] == rows[80][8] and q[0]["_file"] == str(path)
    info = json.loads((out / "_summary.json").read_text(encoding="utf-8"))
    assert info["rows"] == summary.rows and info["bad_rows"] == 1
    assert info["split"] == {"train_end": "2023-08-03T00:00:00", "val_end": "2023-08-05T00:00:00"}
    # the generic Parquet reader gives back the same rows, with the schema's checks
    back = read_ctr_parquet(out / "train", antm2c_schema())
    assert back.num_rows == len(expected["train"])
    assert sorted(back.column("deep_features_0").to_pylist()) == sorted(e["deep_features_0"] for e in expected["train"])
    # a second conversion into the same folder must be asked for
    with pytest.raises(FileExistsError, match="overwrite=True"):
        convert_csv([path], out, split=ANTM2C_SPLIT, bad_rows="skip")
    again = convert_csv([path], out, split=ANTM2C_SPLIT, bad_rows="skip", overwrite=True)
    assert again.rows == summary.rows and all(len(v) == 1 for v in again.files.values())


def test_bad_log_time_raises_with_its_row_number(release_file, tmp_path):
    path, _, line_of = release_file
    with pytest.raises(ValueError, match=rf"antm2c_10m_part0: row {line_of[80]}, column 'log_time'") as e:
        convert_csv([path], tmp_path / "out", split=ANTM2C_SPLIT, block_size=2048, row_group_size=16)
    assert "2023-08-0x 12:00:00" in str(e.value)
    assert not list((tmp_path / "out").rglob("*.parquet"))  # nothing half-written is left behind


def test_no_split_two_files_and_header_only_rows(tmp_path):
    a, b = tmp_path / "p0.csv", tmp_path / "p1.csv.gz"
    rows = _rows(30, seed=3)
    _write(a, rows[:20], extra={0: COLUMNS, 10: COLUMNS})
    with gzip.open(b, "wt", newline="", encoding="utf-8") as f:  # compressed input streams too
        w = csv.writer(f)
        w.writerow(COLUMNS)
        w.writerows(rows[20:])
    s = convert_csv([a, b], tmp_path / "o", split=None, row_group_size=8)
    assert s.rows == {"all": 30} and s.header_rows == 2 and s.bad_rows == 0 and s.quarantine_path is None
    got = pq.read_table(s.files["all"][0]).to_pylist()
    assert sorted(got, key=lambda d: d["deep_features_0"]) == [_expected(r) for r in rows]


def test_missing_scene_column_names_it(tmp_path):
    rows = [r[:9] + r[10:] for r in _rows(5)]
    path = tmp_path / "x.csv"
    _write(path, rows, header=[c for c in COLUMNS if c != "scene"])
    with pytest.raises(ValueError, match=r"missing column 'scene' required by schema 'public10m'"):
        convert_csv([path], tmp_path / "out")
    assert not list((tmp_path / "out").rglob("*.parquet"))


@pytest.mark.parametrize(
    ("col", "value", "match"),
    [
        ("label", "2", r"column 'label': value '2' label must be 0 or 1"),
        ("label", "yes", r"column 'label': value 'yes' is not a number"),
        ("scene", "5", r"column 'scene': value '5' scene must lie in \[0, 5\)"),
        ("scene", "-1", r"column 'scene': value '-1' scene must lie in \[0, 5\)"),
        ("user_id", "", r"column 'user_id': value '' empty value"),
        ("item_id", "12a", r"column 'item_id': value '12a' is not an integer"),
        ("deep_features_4", "abc", r"column 'deep_features_4'.*dtype=pa.string\(\)"),
    ],
)
def test_bad_values_raise_naming_the_column_and_row(tmp_path, col, value, match):
    rows = _rows(12)
    rows[7][COLUMNS.index(col)] = value
    path = tmp_path / "x.csv"
    line_of = _write(path, rows)
    with pytest.raises(ValueError, match=rf"row {line_of[7]}, {match}"):
        convert_csv([path], tmp_path / "out")
    # the same row is quarantined with bad_rows="skip"
    s = convert_csv([path], tmp_path / "skip", bad_rows="skip")
    assert s.bad_rows == 1 and s.rows["all"] == 11
    q = _quarantine(s.quarantine_path)
    assert (int(q[0]["_row"]), q[0]["_column"]) == (line_of[7], col)


def test_numeric_nan_inf_and_user_mapping(tmp_path):
    schema = ctr_schema("mine", label="label", user="user_id", numeric=["price"], categorical=["city"])
    path = tmp_path / "u.csv"
    path.write_text("uid,click,price,city,junk\n1,0,2.5,paris,x\n2,1,nan,rome,y\n3,1,-inf,oslo,z\n4,0,,lima,w\n")
    mapping = {"uid": "user_id", "click": "label"}
    with pytest.raises(ValueError, match=r"row 3, column 'price': value 'nan' is NaN or infinite"):
        convert_csv(path, tmp_path / "o1", schema=schema, mapping=mapping)
    with pytest.warns(UserWarning, match="junk"):
        s = convert_csv(path, tmp_path / "o2", schema=schema, mapping=mapping, bad_rows="skip")
    assert s.bad_rows == 2 and s.ignored_columns == ("junk",)
    t = pq.read_table(s.files["all"][0])
    assert t.to_pydict() == {"user_id": [1, 4], "label": [0, 0], "city": ["paris", "lima"], "price": [2.5, None]}
    with pytest.raises(ValueError, match="missing column 'label'"):
        convert_csv(path, tmp_path / "o3", schema=schema, mapping={"uid": "user_id"})


def test_argument_errors(tmp_path, release_file):
    path = release_file[0]
    with pytest.raises(ValueError, match="paths is empty"):
        convert_csv([], tmp_path / "o")
    with pytest.raises(FileNotFoundError, match=r"paths\[1\]"):
        convert_csv([path, tmp_path / "nope.csv"], tmp_path / "o")
    with pytest.raises(ValueError, match="bad_rows must be one of"):
        convert_csv([path], tmp_path / "o", bad_rows="fill")
    with pytest.raises(ValueError, match="rows_per_file must be >= 1"):
        convert_csv([path], tmp_path / "o", rows_per_file=0)
    with pytest.raises(ValueError, match="compression"):
        convert_csv([path], tmp_path / "o", compression="zip9")
    with pytest.raises(ValueError, match="split needs a time column"):
        convert_csv([path], tmp_path / "o", schema=ctr_schema(user="user_id"), split=ANTM2C_SPLIT)
    empty = tmp_path / "empty.csv"
    empty.write_text("")
    with pytest.raises(ValueError, match="no header line"):
        convert_csv([empty], tmp_path / "o")


def test_malformed_rows_keep_exact_row_numbers(tmp_path):
    rows = _rows(60, seed=9)
    rows[40][2] = "not a time"
    rows[10][3] = "7"  # a bad label right after the malformed line: its row number must not shift
    path = tmp_path / "m.csv"
    line_of = _write(path, rows, extra={10: ["1", "2", "3"], 25: COLUMNS})
    with pytest.raises(ValueError, match=rf"row {line_of[10] - 1} has 3 fields, expected 37"):
        convert_csv([path], tmp_path / "o", block_size=1024)
    s = convert_csv([path], tmp_path / "o", block_size=1024, bad_rows="skip", row_group_size=7)
    q = _quarantine(s.quarantine_path)
    assert sorted(int(r["_row"]) for r in q) == [line_of[10] - 1, line_of[10], line_of[40]]
    assert {r["_reason"] for r in q} == {
        "has 3 fields, expected 37",
        "label must be 0 or 1",
        "is not a time in the format '%Y-%m-%d %H:%M:%S'",
    }
    assert (s.rows["all"], s.bad_rows, s.header_rows, s.rows_read) == (58, 3, 1, 62)


# ------------------------------------------------------------------------------------------------ readers
def test_read_ctr_csv_generic_and_streaming(tmp_path):
    path = tmp_path / "c.csv"
    path.write_text("t,click,u,scene,genre,age\n2023-01-02 10:00:00,1,5,1,drama,31\n2023-01-01 00:00:00,0,6,0,,40.5\n")
    t = read_ctr_csv(
        path, label="click", user="u", scene="scene", num_scenes=2, time="t", categorical=["genre"], numeric=["age"]
    )
    assert t.to_pydict() == {
        "u": [5, 6],
        "t": [dt.datetime(2023, 1, 2, 10), dt.datetime(2023, 1, 1)],
        "click": [1, 0],
        "scene": [1, 0],
        "genre": ["drama", None],
        "age": [31.0, 40.5],
    }
    batches = read_ctr_csv(path, label="click", scene="scene", num_scenes=1, batches=True, block_size=1024)
    with pytest.raises(ValueError, match=r"row 2, column 'scene': value '1' scene must lie in \[0, 1\)"):
        list(batches)
    with pytest.raises(ValueError, match="missing column 'label'"):
        read_ctr_csv(path, batches=True)  # the header is checked at once, before iterating


def test_read_ctr_parquet_checks_values(tmp_path):
    f = tmp_path / "d.parquet"
    pq.write_table(pa.table({"label": pa.array([0, 1, 2], pa.int64()), "x": [1.0, 2.0, 3.0]}), f)
    with pytest.raises(ValueError, match=r"row 3, column 'label': value 2 label must be 0 or 1"):
        read_ctr_parquet(f)
    pq.write_table(pa.table({"label": [0.0, 1.0], "x": [1.0, float("nan")]}), f)
    assert read_ctr_parquet(f).num_rows == 2
    with pytest.raises(ValueError, match=r"row 2, column 'x'.*NaN or infinite"):
        read_ctr_parquet(f, numeric=["x"])
    with pytest.raises(ValueError, match="missing column 'scene'"):
        read_ctr_parquet(f, scene="scene")
    with pytest.raises(ValueError, match=r"missing columns 'user_id', .*'scene', .* and 24 more required"):
        read_ctr_parquet(f, antm2c_schema())
    with pytest.raises(ValueError, match="paths is empty"):
        read_ctr_parquet([])


# ------------------------------------------------------------------------------------------------ vectors
def test_item_vectors_lookup_files_and_errors(tmp_path):
    rng = np.random.default_rng(0)
    ids = np.array([30, 10, 20_000_000_001, 7], dtype=np.int64)
    vec = rng.normal(size=(4, 5)).astype(np.float32)
    np.save(tmp_path / "v.npy", vec)
    np.save(tmp_path / "ids.npy", ids)
    for v in (
        load_item_vectors(vec, ids),
        load_item_vectors(tmp_path / "v.npy", tmp_path / "ids.npy"),
        load_item_vectors(save_item_vectors(tmp_path / "v.safetensors", vec, ids)),
    ):
        assert (v.num_items, v.dim) == (4, 5)
        q = np.array([7, 99, 20_000_000_001, 30, 30])
        got = v.lookup(q)
        assert got.dtype == np.float32 and got.shape == (5, 5)
        np.testing.assert_array_equal(got, np.stack([vec[3], np.zeros(5), vec[2], vec[0], vec[0]]))
        table = v.padded_table()
        np.testing.assert_array_equal(table[v.index(q)], got)
        assert v.known(q).tolist() == [True, False, True, True, True]
        tq = v.lookup(torch.tensor([[10, 5]]))
        assert isinstance(tq, torch.Tensor) and tq.shape == (1, 2, 5)
        assert torch.equal(tq[0, 0], torch.from_numpy(vec[1])) and not tq[0, 1].any()
    with pytest.raises(ValueError, match=r"vectors has 4 rows but item_ids has 3 items \(embedding rows != items\)"):
        load_item_vectors(vec, ids[:3])
    with pytest.raises(ValueError, match="unique"):
        ItemVectors(vec, np.array([1, 2, 1, 3]))
    bad = vec.copy()
    bad[2, 1] = np.nan
    with pytest.raises(ValueError, match=r"NaN or infinite values .*row 2"):
        ItemVectors(bad, ids)
    with pytest.raises(TypeError, match="floating point"):
        ItemVectors(np.ones((4, 2), dtype=np.int64), ids)
    with pytest.raises(ValueError, match="item_ids is required"):
        load_item_vectors(vec)
