"""``syllabus export`` writes the same bytes as the per-row implementation it replaced.

The export streams the selected Parquet in record batches and builds its JSON with pyarrow
string kernels (:mod:`syllabus.selection.export`). Its output must stay byte-identical to what
the earlier per-row code wrote (a Python dict per row through ``json.dumps``). Two checks:

- golden files: a small subset with everything that needs care in JSON (quotes, backslashes,
  newlines, control characters, emoji and other non-ASCII text, U+2028, NaN and infinite
  scores, nulls, metadata, multi-turn conversations with a system turn, conversations that
  LLaMA-Factory cannot take) exported in every text format; the expected files in
  ``export_golden/`` were written by the per-row implementation (commit f364b02);
- the per-row definitions kept in the module (``plain_rows``, ``to_alpaca``, ``to_sharegpt``,
  serialised with ``json.dumps`` as before) against the streamed writer on generated subsets
  of random text, over several batch sizes.
"""

from __future__ import annotations

import json
import math
import random
from pathlib import Path

import pyarrow as pa
import pytest

from syllabus.pool.canonical import SCHEMA
from syllabus.selection import export as export_module
from syllabus.selection.export import export_selection
from syllabus.store import Store

GOLDEN = Path(__file__).parent / "export_golden"
MESSAGES = SCHEMA.field("messages").type


def _m(*turns: tuple[str, str]) -> list[dict[str, str]]:
    return [{"role": r, "content": c} for r, c in turns]


def golden_rows() -> list[dict]:
    """The golden subset, in rank order."""
    instr, query = 'Summarise the note: "cough" \\ fever', "Line one\nLine two\twith a tab"
    rows = [
        # Alpaca with an input: instruction and input stay apart.
        {"sample_id": "alp-input", "source": "alpaca.jsonl", "instruction": instr, "input": query,
         "output": "Température 38,5 °C — fièvre 🤒\r\nend", "messages": _m(("user", f"{instr}\n\n{query}"),
                                                                            ("assistant", "Température 38,5 °C — fièvre 🤒\r\nend")),
         "metadata": json.dumps({"file": "alpaca.jsonl", "line": 3, "note": "ünïcödé \"q\""}, ensure_ascii=False)},
        # An input of whitespace only is not an Alpaca input.
        {"sample_id": "alp-blank-input", "source": "alpaca.jsonl", "instruction": "Say hi.", "input": " \n\u3000",
         "output": "Hi.", "messages": _m(("user", "Say hi.\n\n \n\u3000"), ("assistant", "Hi.")), "metadata": None},
        {"sample_id": "alp-no-input", "source": "alpaca.jsonl", "instruction": "Name a symptom of anaemia.", "input": "",
         "output": "Tiredness.", "messages": _m(("user", "Name a symptom of anaemia."), ("assistant", "Tiredness.")),
         "metadata": "{}"},
        # Multi-turn with a system turn, control characters, backslashes, U+2028, DEL.
        {"sample_id": "conv-\"quoted\"-ü", "source": "chats.jsonl", "instruction": None, "input": None, "output": None,
         "messages": _m(("system", "You are careful.\u2028Really."), ("user", "C:\\path\\file\x01\x1f\x7f"),
                        ("assistant", "Since when?\b\f"), ("user", "Two days.\n\n"), ("assistant", "Rest.\t\"ok\""),
                        ("user", ""), ("assistant", "Then see a doctor today. 日本語")),
         "metadata": '{"turns": 7}'},
        # Two turns that do not repeat instruction/input: the turns are the record.
        {"sample_id": "openai-1", "source": "chats.jsonl", "instruction": "Other", "input": "x", "output": "y",
         "messages": _m(("user", "Is 38.5 C a fever?"), ("assistant", "Yes, in adults.")), "metadata": None},
        # Not representable in LLaMA-Factory's formats: left out of alpaca and sharegpt.
        {"sample_id": "two-users", "source": "chats.jsonl", "instruction": None, "input": None, "output": None,
         "messages": _m(("user", "Hello."), ("user", "My knee hurts."), ("assistant", "Ice.")), "metadata": None},
        {"sample_id": "ends-with-user", "source": "chats.jsonl", "instruction": None, "input": None, "output": None,
         "messages": _m(("system", "s"), ("user", "a"), ("assistant", "b"), ("user", "c")), "metadata": None},
        {"sample_id": "system-only", "source": "chats.jsonl", "instruction": None, "input": None, "output": None,
         "messages": _m(("system", "s")), "metadata": None},
        {"sample_id": "tool-turn", "source": "chats.jsonl", "instruction": None, "input": None, "output": None,
         "messages": _m(("user", "a"), ("tool", "b")), "metadata": None},
        {"sample_id": "no-turns", "source": "chats.jsonl", "instruction": None, "input": None, "output": None,
         "messages": [], "metadata": None},
        # A leading system turn, then one exchange; an empty answer.
        {"sample_id": "sys-one", "source": "chats.jsonl", "instruction": "", "input": "", "output": "",
         "messages": _m(("system", "Be brief."), ("user", "Why?"), ("assistant", "")), "metadata": None},
    ]
    return rows


def golden_table() -> pa.Table:
    rows = golden_rows()
    n = len(rows)
    cols = {name: pa.array([r[name] for r in rows], SCHEMA.field(name).type) for name in SCHEMA.names}
    table = pa.table(cols, schema=SCHEMA)
    floats = [0.1, math.nan, math.inf, -0.0, 1e-7, 1e16, 123456789.123, -math.inf, 2.5, 1.0, None]
    table = table.add_column(1, "rank", pa.array(range(1, n + 1), pa.int64()))
    extra = {
        "synthetic_ifd_score": pa.array(floats[:n], pa.float64()),
        "synthetic_ifd_status": pa.array(["ok", "ok", "too_long", None, "error: \"x\"\n", "ok", "ok", "ok", "ok", "ok",
                                          "ok"][:n]),
        "quality_score32": pa.array([0.1, 1.5, None, 3.25, 1e-9, 7, 8, 9, 10, 11, 12][:n], pa.float32()),
        "n_tokens": pa.array([1, 2, None, -4, 2 ** 62, 0, 7, 8, 9, 10, 11][:n], pa.int64()),
        "small_int": pa.array([1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11][:n], pa.int8()),
        "flag": pa.array([True, False, None, True, False, True, True, True, True, True, False][:n], pa.bool_()),
        "band": pa.array(["low", "mid", "high", "mid", "low", "é", "low", "low", "low", "low", "mid"][:n]).dictionary_encode(),
        "embedding": pa.array([[0.5, 1.0]] * n, pa.list_(pa.float32())),  # a vector: never exported
    }
    for name, values in extra.items():
        table = table.append_column(name, values)
    return table


def commit_selection(tmp_path: Path, table: pa.Table, key: str = "selections/full/full-golden/selected.parquet") -> str:
    store = Store(str(tmp_path / "store"))
    store.commit_table(key, table)
    return store.url(key)


def _read(path: str) -> bytes:
    return Path(path).read_bytes()


@pytest.mark.parametrize("fmt", ["jsonl", "alpaca", "sharegpt"])
def test_text_formats_match_the_per_row_implementation_byte_for_byte(tmp_path, fmt):
    url = commit_selection(tmp_path, golden_table())
    summary = export_selection(url, fmt, tmp_path / "out", name=f"golden-{fmt}")
    expected = json.loads((GOLDEN / "summaries.json").read_text(encoding="utf-8"))[fmt]
    got = _read(summary["files"][0])
    want = (GOLDEN / Path(summary["files"][0]).name).read_bytes()
    assert got == want
    assert {k: summary[k] for k in ("samples", "fingerprint", "skipped")} == expected
    if fmt != "jsonl":
        assert _read(summary["files"][1]) == (GOLDEN / f"dataset_info-{fmt}.json").read_bytes()


def test_rows_out_of_rank_order_are_written_in_rank_order(tmp_path):
    table = golden_table()
    shuffled = table.take(pa.array([3, 0, 10, 5, 1, 2, 4, 6, 9, 8, 7]))
    url = commit_selection(tmp_path, shuffled)
    summary = export_selection(url, "jsonl", tmp_path / "out", name="golden-jsonl")
    assert _read(summary["files"][0]) == (GOLDEN / "golden-jsonl.jsonl").read_bytes()


def test_hf_holds_what_the_per_row_implementation_saved(tmp_path):
    """hf was already written from Arrow: the saved table is the subset's plain columns, as
    ``datasets.Dataset`` made it from the whole subset read at once (its types, its values)."""
    import datasets

    url = commit_selection(tmp_path, golden_table())
    summary = export_selection(url, "hf", tmp_path / "out", name="golden-hf")
    loaded = datasets.load_from_disk(summary["files"][0]).data.table
    whole, _ = export_module.read_selection(url)
    expected = datasets.Dataset(whole.select(export_module._plain_columns(whole))).data.table
    assert "embedding" not in loaded.column_names
    assert loaded.schema == expected.schema
    assert repr(loaded.to_pylist()) == repr(expected.to_pylist())  # NaN scores compare as equal text
    assert summary["samples"] == 11
    assert summary["fingerprint"] == json.loads((GOLDEN / "summaries.json").read_text(encoding="utf-8"))["jsonl"]["fingerprint"]


# ---------------------------------------------------------------- against the per-row definitions
ALPHABET = ([chr(c) for c in range(0, 0x20)] + list('"\\/ abcXYZ019{}[],:') + ["\x7f", "é", "ß", "\u2028", "\u2029",
            "\ufeff", "日", "🤒", "\U0010fffd", "\u0301"])


def _text(rng: random.Random, empty_ok: bool = True) -> str:
    n = rng.choice([0, 1, 2, 5, 20]) if empty_ok else rng.choice([1, 3, 12])
    return "".join(rng.choice(ALPHABET) for _ in range(n))


def _random_row(rng: random.Random, i: int) -> dict:
    kind = rng.random()
    if kind < 0.4:  # Alpaca-sourced, sometimes with an input (perhaps only whitespace)
        instr, query = _text(rng), rng.choice(["", " ", "\t\n", _text(rng)])
        user = f"{instr}\n\n{query}" if query.strip() and rng.random() < 0.8 else instr
        out = _text(rng)
        return {"instruction": instr, "input": query, "output": out,
                "messages": _m(("user", user), ("assistant", out))}
    roles = ["system"] if rng.random() < 0.3 else []
    n = rng.choice([0, 1, 2, 2, 4, 6, 3])
    roles += ["user" if j % 2 == 0 else "assistant" for j in range(n)]
    if rng.random() < 0.15 and roles:  # break the alternation somewhere
        roles[rng.randrange(len(roles))] = rng.choice(["user", "assistant", "tool", "system"])
    return {"instruction": rng.choice([None, "", _text(rng)]), "input": rng.choice([None, ""]), "output": None,
            "messages": [{"role": r, "content": _text(rng)} for r in roles]}


def random_table(seed: int, n: int) -> pa.Table:
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        row = {"sample_id": f"s{i:05d}-{_text(rng, empty_ok=False)}", "source": rng.choice(["a.jsonl", "b/ü.json", None]),
               "metadata": rng.choice([None, "{}", json.dumps({"k": _text(rng)}, ensure_ascii=False)]),
               **_random_row(rng, i)}
        rows.append(row)
    table = pa.table({name: pa.array([r[name] for r in rows], SCHEMA.field(name).type) for name in SCHEMA.names},
                     schema=SCHEMA)
    table = table.add_column(1, "rank", pa.array(range(1, n + 1), pa.int64()))
    specials = [math.nan, math.inf, -math.inf, -0.0, 0.0, 5e-324, 1.7976931348623157e308, 1e16, 1e-5, 0.1 + 0.2]
    score = [rng.choice(specials) if rng.random() < 0.3 else rng.uniform(-1e6, 1e6) for _ in range(n)]
    table = table.append_column("s_score", pa.array([None if rng.random() < 0.05 else v for v in score], pa.float64()))
    table = table.append_column("s_status", pa.array([rng.choice(["ok", "too_long", None, _text(rng)]) for _ in range(n)]))
    table = table.append_column("s_count", pa.array([rng.choice([None, 0, -1, 2 ** 63 - 1, rng.randrange(10 ** 6)])
                                                     for _ in range(n)], pa.int64()))
    table = table.append_column("s_half", pa.array([rng.uniform(-10, 10) for _ in range(n)], pa.float16()))
    return table


def per_row_output(table: pa.Table, fmt: str) -> tuple[bytes, list[dict]]:
    """What the per-row implementation wrote: a dict per row through ``json.dumps``."""
    rows = export_module.plain_rows(table)
    if fmt == "jsonl":
        return "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows).encode("utf-8"), []
    convert = export_module.to_alpaca if fmt == "alpaca" else export_module.to_sharegpt
    records, skipped = [], []
    for row in rows:
        try:
            records.append(convert(row))
        except ValueError as exc:
            skipped.append({"sample_id": row["sample_id"], "reason": str(exc)})
    return (json.dumps(records, indent=1, ensure_ascii=False) + "\n").encode("utf-8"), skipped


@pytest.mark.parametrize("seed", [1, 2, 3])
@pytest.mark.parametrize("fmt", ["jsonl", "alpaca", "sharegpt"])
def test_streamed_export_equals_the_per_row_definitions(tmp_path, monkeypatch, seed, fmt):
    table = random_table(seed, 400)
    # Small batches, so that records, separators and skipped rows fall across batch edges.
    monkeypatch.setattr(export_module, "BATCH_ROWS", [7, 64, 1000][seed - 1])
    url = commit_selection(tmp_path, table)
    summary = export_selection(url, fmt, tmp_path / "out", name=f"r{seed}")
    want, skipped = per_row_output(table, fmt)
    assert _read(summary["files"][0]) == want
    assert summary["skipped"] == skipped
    assert summary["samples"] == 400 - len(skipped)


@pytest.mark.parametrize("fmt", ["jsonl", "alpaca", "sharegpt"])
def test_an_empty_subset_writes_what_the_per_row_code_wrote(tmp_path, fmt):
    table = random_table(4, 3).slice(0, 0)
    url = commit_selection(tmp_path, table)
    summary = export_selection(url, fmt, tmp_path / "out", name="empty")
    assert _read(summary["files"][0]) == per_row_output(table, fmt)[0]
    assert summary["samples"] == 0
