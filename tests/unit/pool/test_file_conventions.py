"""Files as other tools write them: a UTF-8 byte order mark before JSON lines (Windows tools,
Python's utf-8-sig, concatenated files), and .csv files separated by semicolons (Excel where the
comma is the decimal separator) or tabs. Each record is read as in the plain file, by both the
per-record and the vectorised path."""

from __future__ import annotations

import csv
import io
import json

import pytest

from syllabus.pool.ingest import NothingValidError, ingest_pool
from syllabus.pool.manifest import read_pool
from syllabus.store import Store

BOM = "\ufeff"


def records(n: int) -> list[dict]:
    return [{"instruction": f"Question {i}: what lowers a fever?", "output": f"Answer {i}: rest, fluids, paracetamol."}
            for i in range(n)]


def ingest(path, store_dir, vectorised=True) -> tuple[dict, list[dict]]:
    result = ingest_pool([str(path)], Store(str(store_dir)), progress=False, vectorised=vectorised)
    return result.summary(), read_pool(result.manifest).to_pylist()


def jsonl(recs: list[dict]) -> str:
    return "".join(json.dumps(r) + "\n" for r in recs)


@pytest.mark.parametrize("n", [5, 200])  # 200: the vectorised path's blocks (MIN_ROWS is 64)
@pytest.mark.parametrize("vectorised", [True, False])
def test_a_byte_order_mark_before_jsonl_is_skipped(tmp_path, n, vectorised):
    recs = records(n)
    (tmp_path / "plain").mkdir()
    (tmp_path / "bom").mkdir()
    (tmp_path / "plain" / "pool.jsonl").write_text(jsonl(recs), encoding="utf-8")
    (tmp_path / "bom" / "pool.jsonl").write_text(jsonl(recs), encoding="utf-8-sig")
    plain, plain_rows = ingest(tmp_path / "plain" / "pool.jsonl", tmp_path / "s1", vectorised)
    marked, marked_rows = ingest(tmp_path / "bom" / "pool.jsonl", tmp_path / "s2", vectorised)
    assert marked["records_ok"] == n and marked["records_rejected"] == 0, marked["rejected_by_reason"]
    # The same source name, so the same rows, shards and fingerprint as the file without the mark.
    assert marked["pool_fingerprint"] == plain["pool_fingerprint"]
    assert [r["sample_id"] for r in marked_rows] == [r["sample_id"] for r in plain_rows]
    assert marked_rows[0]["instruction"] == recs[0]["instruction"]


def test_concatenated_files_keep_the_record_after_each_mark(tmp_path):
    recs = records(150)
    path = tmp_path / "cat.jsonl"
    path.write_text(BOM + jsonl(recs[:100]) + BOM + jsonl(recs[100:]), encoding="utf-8")
    summary, rows = ingest(path, tmp_path / "store")
    assert summary["records_ok"] == 150 and summary["records_rejected"] == 0, summary["rejected_by_reason"]
    assert {r["instruction"] for r in rows} == {r["instruction"] for r in recs}


def excel_csv(recs: list[dict], delimiter: str) -> str:
    buf = io.StringIO()
    w = csv.writer(buf, delimiter=delimiter)  # "\r\n" line ends, as Excel writes them
    w.writerow(["instruction", "output"])
    for r in recs:
        w.writerow([r["instruction"], r["output"].replace(":", ",")])  # answers holding commas
    return buf.getvalue()


@pytest.mark.parametrize("delimiter", [";", "\t"])
def test_a_csv_separated_by_semicolons_or_tabs_is_read_by_its_header(tmp_path, delimiter, caplog):
    recs = records(6)
    path = tmp_path / "export.csv"
    path.write_text(BOM + excel_csv(recs, delimiter), encoding="utf-8", newline="")
    with caplog.at_level("INFO", logger="syllabus.pool.readers"):
        summary, rows = ingest(path, tmp_path / "store")
    assert summary["records_ok"] == 6 and summary["records_rejected"] == 0, summary["rejected_by_reason"]
    assert rows[1]["instruction"] == recs[1]["instruction"]
    assert rows[1]["output"] == "Answer 1, rest, fluids, paracetamol."
    assert "read as a" in caplog.text and "export.csv" in caplog.text


def test_a_comma_csv_keeps_its_semicolons_in_the_text(tmp_path):
    path = tmp_path / "plain.csv"
    path.write_text('instruction,output\n"Dose; and timing?","Twice a day; with food."\n', encoding="utf-8")
    summary, rows = ingest(path, tmp_path / "store")
    assert summary["records_ok"] == 1
    assert (rows[0]["instruction"], rows[0]["output"]) == ("Dose; and timing?", "Twice a day; with food.")


def test_a_one_column_csv_header_with_a_semicolon_outside_a_header_line_is_not_split(tmp_path):
    # A header cell quoted over two lines is not a header line to split.
    path = tmp_path / "odd.csv"
    path.write_text('"instruction;\nnote"\n"a question"\n', encoding="utf-8")
    with pytest.raises(NothingValidError, match=r"\(1 records: 1 missing_field\)"):
        ingest(path, tmp_path / "store")


@pytest.mark.parametrize("vectorised", [True, False])
@pytest.mark.parametrize("indent", [2, None])  # pretty-printed, and one minified line
def test_a_json_array_named_jsonl_is_read_as_json(tmp_path, vectorised, indent):
    recs = records(80)
    (tmp_path / "pool.json").write_text(json.dumps(recs), encoding="utf-8")
    (tmp_path / "pool.jsonl").write_text(json.dumps(recs, indent=indent), encoding="utf-8")
    as_json, json_rows = ingest(tmp_path / "pool.json", tmp_path / "s1", vectorised)
    named, named_rows = ingest(tmp_path / "pool.jsonl", tmp_path / "s2", vectorised)
    assert named["records_in"] == named["records_ok"] == 80, named["rejected_by_reason"]
    assert [r["sample_id"] for r in named_rows] == [r["sample_id"] for r in json_rows]


@pytest.mark.parametrize("vectorised", [True, False])
def test_jsonl_lines_that_are_arrays_are_still_quarantined_line_by_line(tmp_path, vectorised):
    path = tmp_path / "arrays.jsonl"
    path.write_text("".join(json.dumps([r]) + "\n" for r in records(3)) + json.dumps(records(1)[0]) + "\n")
    summary, rows = ingest(path, tmp_path / "store", vectorised)
    assert (summary["records_in"], summary["records_ok"], summary["records_rejected"]) == (4, 1, 3)


ODD = [
    ('{"instruction": "q dup", "instruction": "other", "output": "a"}', "duplicate_key", '"instruction" twice'),
    ('{"instruction": "q nested", "output": "a", "meta": {"k": 1, "k" : 2}}', "duplicate_key", '"k" twice'),
]
# Kept: a key end inside a string is no duplicate, and NaN is read as Python reads it.
FINE = ['{"instruction": "a key \\": inside a string", "output": "fine"}',
        '{"instruction": "q nan", "output": "a", "score": NaN}']


@pytest.mark.parametrize("vectorised", [True, False])
def test_a_duplicate_key_quarantines_its_record_in_jsonl(tmp_path, vectorised):
    clean = [json.dumps(r) for r in records(100)]  # enough for the vectorised path
    path = tmp_path / "odd.jsonl"
    path.write_text("\n".join(clean[:50] + [line for line, _, _ in ODD] + FINE + clean[50:]) + "\n")
    result = ingest_pool([str(path)], Store(str(tmp_path / "store")), progress=False, vectorised=vectorised)
    s = result.summary()
    assert (s["records_in"], s["records_ok"]) == (104, 102), s["rejected_by_reason"]
    store, key = Store.open_url(result.quarantine_url)
    quarantined = [json.loads(line) for line in store.read_committed(key).decode().splitlines()]
    assert [(q["line"], q["code"]) for q in quarantined] == [(51 + i, code) for i, (_, code, _) in enumerate(ODD)]
    for q, (_, _, words) in zip(quarantined, ODD):
        assert words in q["reason"]


@pytest.mark.parametrize("n", [3, 12_000])  # 12,000: a file of over 1 MiB, whose key ends are counted as they are found
def test_a_duplicate_key_quarantines_its_element_of_a_json_array(tmp_path, n):
    elements = [json.dumps(r) for r in records(n)] + [line for line, _, _ in ODD] + FINE
    path = tmp_path / "odd.json"
    path.write_text("[" + ",\n".join(elements) + "]")
    result = ingest_pool([str(path)], Store(str(tmp_path / "store")), progress=False)
    s = result.summary()
    assert (s["records_in"], s["records_ok"]) == (n + 4, n + 2)
    assert s["rejected_by_reason"] == {"duplicate_key": 2}


def test_a_csv_header_naming_a_column_twice_quarantines_each_row(tmp_path):
    path = tmp_path / "twice.csv"
    path.write_text("instruction,output,instruction\nq1,a1,other q1\nq2,a2,other q2\n", encoding="utf-8")
    with pytest.raises(NothingValidError, match=r"\(2 records: 2 duplicate_key\)") as caught:
        ingest(path, tmp_path / "store")
    store, key = Store.open_url(caught.value.quarantine_url)
    first = json.loads(store.read_committed(key).decode().splitlines()[0])
    assert first["line"] == 2 and 'names "instruction" twice' in first["reason"]


@pytest.mark.parametrize("vectorised", [True, False])
@pytest.mark.parametrize("encoding", ["utf-16", "utf-16-be", "utf-32"])
def test_a_utf16_or_utf32_file_with_its_byte_order_mark_is_read_as_utf8(tmp_path, vectorised, encoding):
    recs = [dict(r, output=r["output"] + " Café, 37 °C 🙂.") for r in records(120)]
    (tmp_path / "utf8").mkdir()
    (tmp_path / "other").mkdir()
    (tmp_path / "utf8" / "pool.jsonl").write_text(jsonl(recs), encoding="utf-8")
    # Python's utf-16 and utf-32 write a mark; the -be codec does not, so write it.
    mark = BOM if encoding.endswith("-be") else ""
    (tmp_path / "other" / "pool.jsonl").write_bytes((mark + jsonl(recs)).encode(encoding))
    plain, plain_rows = ingest(tmp_path / "utf8" / "pool.jsonl", tmp_path / "s1", vectorised)
    other, other_rows = ingest(tmp_path / "other" / "pool.jsonl", tmp_path / "s2", vectorised)
    assert other["records_ok"] == 120 and other["pool_fingerprint"] == plain["pool_fingerprint"]
    assert other_rows == plain_rows


def test_excel_unicode_text_is_read(tmp_path):
    # Excel's "Unicode Text" export: UTF-16 (little-endian, with its mark), tab-separated, CRLF.
    path = tmp_path / "excel.tsv"
    path.write_text("instruction\toutput\r\nWhat is gout?\tA form of arthritis.\r\nIs it painful?\tOften, in the big toe.\r\n",
                    encoding="utf-16", newline="")
    summary, rows = ingest(path, tmp_path / "store")
    assert summary["records_ok"] == 2
    assert rows[1]["output"] == "Often, in the big toe."


def test_a_broken_utf16_line_is_quarantined_alone(tmp_path):
    lines = jsonl(records(3)).splitlines(keepends=True)
    data = "\ufeff".encode("utf-16-le") + b"".join(
        line.encode("utf-16-le") if i != 1 else line.replace("Question", "Quest\ud800ion").encode("utf-16-le", "surrogatepass")
        for i, line in enumerate(lines))
    path = tmp_path / "broken.jsonl"
    path.write_bytes(data)
    result = ingest_pool([str(path)], Store(str(tmp_path / "store")), progress=False)
    s = result.summary()
    assert (s["records_in"], s["records_ok"]) == (3, 2) and s["rejected_by_reason"] == {"invalid_utf8": 1}


@pytest.mark.parametrize("vectorised", [True, False])
def test_a_parquet_file_with_two_columns_of_one_name_quarantines_each_row(tmp_path, vectorised):
    import pyarrow as pa
    import pyarrow.parquet as pq

    n = 100
    table = pa.Table.from_arrays([pa.array([f"q{i}" for i in range(n)]), pa.array([f"a{i}" for i in range(n)]),
                                  pa.array([f"other {i}" for i in range(n)])], names=["instruction", "output", "instruction"])
    pq.write_table(table, tmp_path / "twice.parquet")
    with pytest.raises(NothingValidError, match=rf"\({n} records: {n} duplicate_key\)") as caught:
        ingest(tmp_path / "twice.parquet", tmp_path / "store", vectorised)
    store, key = Store.open_url(caught.value.quarantine_url)
    first = json.loads(store.read_committed(key).decode().splitlines()[0])
    assert first["row"] == 0 and 'two columns named "instruction"' in first["reason"] and "other 0" in first["raw"]


def test_content_given_as_text_parts_is_read_as_its_text(tmp_path):
    def turns(user, answer):
        return {"messages": [{"role": "user", "content": user}, {"role": "assistant", "content": answer}]}

    as_text = [turns("What is gout?", "A form of arthritis."), turns("And its cause?", "Uric acid crystals in a joint.")]
    as_parts = [turns([{"type": "text", "text": "What is gout?"}], [{"type": "text", "text": "A form of arthritis."}]),
                turns([{"type": "text", "text": "And its "}, {"type": "text", "text": "cause?"}],
                      [{"type": "text", "text": "Uric acid crystals in a joint."}])]
    image = turns([{"type": "image_url", "image_url": {"url": "https://example.org/x.png"}}, {"type": "text", "text": "This?"}],
                  "A rash.")
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    (tmp_path / "a" / "chat.jsonl").write_text(jsonl(as_text))
    (tmp_path / "b" / "chat.jsonl").write_text(jsonl(as_parts + [image]))
    _, text_rows = ingest(tmp_path / "a" / "chat.jsonl", tmp_path / "s1")
    result = ingest_pool([str(tmp_path / "b" / "chat.jsonl")], Store(str(tmp_path / "s2")), progress=False)
    parts_rows = read_pool(result.manifest).to_pylist()
    assert parts_rows == text_rows  # the same ids, texts and turns
    assert result.summary()["rejected_by_reason"] == {"wrong_type": 1}
    store, key = Store.open_url(result.quarantine_url)
    assert "messages[0].content[0] is a part of type 'image_url'" in store.read_committed(key).decode()


def test_hidden_folders_of_a_directory_are_not_the_pool(tmp_path, caplog):
    root = tmp_path / "dataset"
    for folder in ("data", ".ipynb_checkpoints", ".git/objects", "__MACOSX/data"):
        (root / folder).mkdir(parents=True)
    (root / "data" / "train.jsonl").write_text(jsonl(records(4)))
    (root / ".ipynb_checkpoints" / "train-checkpoint.jsonl").write_text(jsonl(records(6)))  # Jupyter's copy
    (root / ".git" / "objects" / "meta.json").write_text('{"a": 1}')
    (root / "__MACOSX" / "data" / "._train.jsonl").write_bytes(b"\x00\x05\x16\x07 mac resource fork")
    with caplog.at_level("INFO", logger="syllabus.pool.readers"):
        summary, rows = ingest(root, tmp_path / "store")
    assert (summary["records_in"], summary["records_ok"]) == (4, 4)
    assert {r["source"] for r in rows} == {"data/train.jsonl"}
    assert "skipping 3 hidden files or files in hidden folders (._train.jsonl, .git, .ipynb_checkpoints)" in caplog.text


def capitalised(recs: list[dict]) -> list[dict]:
    return [{"Question": r["instruction"], "Answer": r["output"], "Source": "sheet", "ID": f"row-{i}"} for i, r in enumerate(recs)]


@pytest.mark.parametrize("vectorised", [True, False])
@pytest.mark.parametrize("kind", ["jsonl", "parquet", "csv"])
def test_field_names_match_whatever_their_case(tmp_path, vectorised, kind):
    import pyarrow as pa
    import pyarrow.parquet as pq

    recs = records(100)
    recs[7]["output"] += " <|im_end|>"  # a special token in a capitalised field is found (and counted) as in a lower-case one
    lower = [{"question": r["instruction"], "answer": r["output"], "Source": "sheet", "id": f"row-{i}"} for i, r in enumerate(recs)]
    upper = capitalised(recs)
    rows_by_case = []
    for folder, data in (("lower", lower), ("upper", upper)):
        (tmp_path / folder).mkdir()
        path = tmp_path / folder / f"pool.{kind}"
        if kind == "jsonl":
            path.write_text(jsonl(data))
        elif kind == "parquet":
            pq.write_table(pa.Table.from_pylist(data), path)
        else:
            buf = io.StringIO()
            w = csv.DictWriter(buf, fieldnames=list(data[0]))
            w.writeheader()
            w.writerows(data)
            path.write_text(buf.getvalue())
        result = ingest_pool([str(path)], Store(str(tmp_path / f"store-{folder}")), progress=False, vectorised=vectorised)
        assert result.summary()["records_ok"] == 100 and result.summary()["special_tokens"]["records"] == 1
        rows_by_case.append(read_pool(result.manifest).to_pylist())
    assert rows_by_case[0] == rows_by_case[1]  # the same ids, texts and metadata ({"Source": "sheet"})
    assert rows_by_case[1][3]["sample_id"] == "row-3" and json.loads(rows_by_case[1][3]["metadata"]) == {"Source": "sheet"}


@pytest.mark.parametrize("vectorised", [True, False])
def test_two_spellings_of_one_field_take_the_exact_one_first(tmp_path, vectorised):
    recs = [{"question": f"exact {i}" if i % 2 else None, "Question": f"other {i}", "answer": f"a {i}"} for i in range(100)]
    path = tmp_path / "both.jsonl"
    path.write_text(jsonl(recs))
    _, rows = ingest(path, tmp_path / "store", vectorised)
    assert [r["instruction"] for r in rows[:3]] == ["other 0", "exact 1", "other 2"]


def compress(data: bytes, suffix: str) -> bytes:
    import bz2
    import gzip
    import lzma

    import pyarrow as pa

    if suffix == ".zst":
        sink = pa.BufferOutputStream()
        with pa.CompressedOutputStream(sink, "zstd") as out:
            out.write(data)
        return sink.getvalue().to_pybytes()
    return {".gz": gzip.compress, ".bz2": bz2.compress, ".xz": lzma.compress}[suffix](data)


@pytest.mark.parametrize("vectorised", [True, False])
@pytest.mark.parametrize("suffix", [".zst", ".bz2", ".xz", ".gz"])
def test_compressed_pools_read_as_the_plain_file(tmp_path, vectorised, suffix):
    text = jsonl(records(300))
    (tmp_path / "plain").mkdir()
    (tmp_path / "plain" / "pool.jsonl").write_text(text)
    (tmp_path / "packed").mkdir()
    (tmp_path / "packed" / f"pool.jsonl{suffix}").write_bytes(compress(text.encode(), suffix))
    (tmp_path / "packed" / f"table.csv{suffix}").write_bytes(compress(b"instruction,output\nq,a\n", suffix))
    plain, plain_rows = ingest(tmp_path / "plain" / "pool.jsonl", tmp_path / "s1", vectorised)
    packed, packed_rows = ingest(tmp_path / "packed" / f"pool.jsonl{suffix}", tmp_path / "s2", vectorised)
    assert packed["records_ok"] == 300
    assert [r["sample_id"] for r in packed_rows] == [r["sample_id"] for r in plain_rows]
    both, _ = ingest(tmp_path / "packed", tmp_path / "s3", vectorised)  # a directory finds both files
    assert both["records_ok"] == 301


def test_a_truncated_zstd_file_keeps_the_records_before_the_damage(tmp_path):
    data = compress(jsonl(records(20_000)).encode(), ".zst")
    path = tmp_path / "cut.jsonl.zst"
    path.write_bytes(data[: len(data) // 2])
    summaries = [ingest_pool([str(path)], Store(str(tmp_path / f"store-{v}")), progress=False, vectorised=v).summary()
                 for v in (True, False)]
    for s in summaries:
        assert s["rejected_by_reason"] == {"damaged_file": 1}
        assert 0 < s["records_ok"] < 20_000
    assert summaries[0]["pool_fingerprint"] == summaries[1]["pool_fingerprint"]  # both paths stop at the same line


def test_a_saved_dataset_takes_the_vectorised_path_with_the_same_result(tmp_path, monkeypatch):
    import datasets

    from syllabus.pool import vectorised as vectorised_module

    recs = [dict(r, score=i, tags=["a", "b"] if i % 10 == 0 else [], note=f"n{i}") for i, r in enumerate(records(300))]
    recs[5]["output"] = "   "  # empty: quarantined
    recs[6]["output"] += " <|im_end|>"  # a spelled token: counted
    recs[8] = dict(recs[7])  # a duplicate
    recs[9]["note"] = None  # a null metadata value: the per-record path keeps it
    full = datasets.Dataset.from_list(recs)
    # A dataset and a dataset dict of two splits (records named url[split], rows numbered per split).
    full.save_to_disk(str(tmp_path / "one"))
    datasets.DatasetDict({"train": full.select(range(200)), "test": full.select(range(200, 300))}).save_to_disk(
        str(tmp_path / "two"))
    calls = []
    real = vectorised_module.prepare_batch
    monkeypatch.setattr("syllabus.pool.ingest.prepare_batch", lambda *a: calls.append(1) or real(*a))
    for folder in ("one", "two"):
        results = {}
        for vectorised in (True, False):
            result = ingest_pool([str(tmp_path / folder)], Store(str(tmp_path / f"store-{folder}-{vectorised}")),
                                 progress=False, vectorised=vectorised)
            store, key = Store.open_url(result.quarantine_url)
            quarantine = [{k: v for k, v in json.loads(line).items() if k != "file"}
                          for line in store.read_committed(key).decode().splitlines()]
            results[vectorised] = (result.summary()["pool_fingerprint"], read_pool(result.manifest).to_pylist(), quarantine,
                                   result.summary()["special_tokens"])
        assert results[True] == results[False]
        fingerprint, rows, quarantine, spelled = results[True]
        assert len(rows) == 298 and [q["code"] for q in quarantine] == ["empty_field", "duplicate_content"]
        assert spelled["records"] == 1
    assert calls  # the batches went through the vectorised path


def conversations(n: int, sharegpt: bool) -> list[dict]:
    role, text = ("from", "value") if sharegpt else ("role", "content")
    user, answer = ("human", "gpt") if sharegpt else ("user", "assistant")
    return [{"conversations" if sharegpt else "messages": [{role: user, text: r["instruction"]}, {role: answer, text: r["output"]}],
             "lang": "en", **({"id": f"c{i}"} if i % 3 == 0 else {})} for i, r in enumerate(records(n))]


def odd_conversations(recs: list[dict], sharegpt: bool) -> list[dict]:
    """The same conversations with rows the per-record path must see: a system turn, a tool
    role, a blank answer, a spelled token, one turn, a duplicate."""
    recs = [json.loads(json.dumps(r)) for r in recs]
    role, text = ("from", "value") if sharegpt else ("role", "content")
    turns = [r.get("conversations") or r.get("messages") for r in recs]
    turns[1].insert(0, {role: "system", text: "Be brief."})
    turns[3][0][role] = "tool"
    turns[5][1][text] = "  "
    turns[7][1][text] += " <|im_end|>"
    del turns[11][1]
    recs[13] = json.loads(json.dumps(recs[1]))  # a duplicate
    return recs


@pytest.mark.parametrize("sharegpt", [True, False])
@pytest.mark.parametrize("kind", ["jsonl", "parquet", "hf"])
def test_conversations_of_one_exchange_take_the_vectorised_path_with_the_same_result(tmp_path, kind, sharegpt, monkeypatch):
    import datasets
    import pyarrow as pa
    import pyarrow.parquet as pq

    from syllabus.pool import vectorised as vectorised_module

    recs = odd_conversations(conversations(300, sharegpt), sharegpt)
    if kind == "jsonl":
        path = tmp_path / "chat.jsonl"
        path.write_text(jsonl(recs))
    elif kind == "parquet":
        path = tmp_path / "chat.parquet"
        pq.write_table(pa.Table.from_pylist(recs), path)
    else:
        path = tmp_path / "chat"
        datasets.Dataset.from_list(recs).save_to_disk(str(path))
    taken = []
    real = vectorised_module._flat_conversations

    def spy(table, fields):
        out, ok = real(table, fields)
        taken.append(0 if ok is None else int(ok.sum()))
        return out, ok

    monkeypatch.setattr(vectorised_module, "_flat_conversations", spy)
    results = {}
    for vectorised in (True, False):
        result = ingest_pool([str(path)], Store(str(tmp_path / f"store-{vectorised}")), progress=False, vectorised=vectorised)
        store, key = Store.open_url(result.quarantine_url)
        results[vectorised] = (result.summary(), read_pool(result.manifest).to_pylist(), store.read_committed(key))
    assert results[True][1] == results[False][1]  # every row, id and metadata
    assert results[True][2] == results[False][2]  # the quarantine, byte for byte
    assert results[True][0]["pool_fingerprint"] == results[False][0]["pool_fingerprint"]
    assert sum(taken) >= 290  # the one-exchange rows were read column by column
    rows = results[True][1]
    assert [t["role"] for t in rows[0]["messages"]] == ["user", "assistant"] and rows[0]["sample_id"] == "c0"
    assert [t["role"] for t in rows[1]["messages"]] == ["system", "user", "assistant"]
    assert results[True][0]["rejected_by_reason"] == {"bad_conversation": 2, "duplicate_content": 1, "empty_field": 1}


def test_a_json_array_takes_the_vectorised_path_with_the_same_result(tmp_path, monkeypatch):
    from syllabus.pool import vectorised as vectorised_module

    deep: object = "x"
    for _ in range(120):
        deep = [deep]
    recs: list = [dict(r, source="sheet") for r in records(5000)]
    recs[10] = "a string, not a record"  # its run of 2,048 goes element by element
    b = 2048  # the second run: all objects, read as one Arrow batch
    recs[b + 3]["input"] = "Age 40."
    recs[b + 4].pop("source")  # a key the others have: goes on, read as it is
    recs[b + 5]["source"] = None  # a null: kept in the metadata by the per-record path
    recs[b + 6]["score"] = 1.5  # a number
    recs[b + 7]["output"] = ""  # empty: quarantined
    recs[b + 8] = dict(recs[b + 2])  # a duplicate
    recs[b + 9]["nested"] = {"a": [1, 2]}
    recs[b + 11]["deep"] = deep  # too deep: quarantined
    recs[b + 12]["output"] += " [INST]"  # a spelled token
    recs[2 * b + 1]["id"] = 7  # the third run: an integer id and a text id, no one column type
    recs[2 * b + 2]["id"] = "seven"
    path = tmp_path / "pool.json"
    path.write_text(json.dumps(recs))
    batches = []
    real = vectorised_module.prepare_batch
    monkeypatch.setattr("syllabus.pool.ingest.prepare_batch", lambda *a: batches.append(a[0].first_row) or real(*a))
    results = {}
    for vectorised in (True, False):
        result = ingest_pool([str(path)], Store(str(tmp_path / f"store-{vectorised}")), progress=False, vectorised=vectorised)
        store, key = Store.open_url(result.quarantine_url)
        results[vectorised] = (result.summary(), read_pool(result.manifest).to_pylist(), store.read_committed(key))
    assert results[True][1] == results[False][1]
    assert results[True][2] == results[False][2]
    assert results[True][0]["pool_fingerprint"] == results[False][0]["pool_fingerprint"]
    assert results[True][0]["rejected_by_reason"] == {"duplicate_content": 1, "empty_field": 1, "too_deep": 1, "wrong_type": 1}
    assert b in batches  # the second run was read as an Arrow batch


def test_a_field_named_in_capitals_on_the_command_line_matches_any_case():
    from syllabus.pool.canonical import FieldMap, normalise

    fields = FieldMap.from_overrides({"instruction": "Frage", "output": "ANTWORT"})
    assert not fields.folded and FieldMap().folded
    sample = normalise({"frage": "Was ist Gicht?", "Antwort": "Eine Arthritis.", "Frage2": "x"}, "s", fields)
    assert (sample.instruction, sample.output) == ("Was ist Gicht?", "Eine Arthritis.")
    assert sample.metadata == {"Frage2": "x"}
