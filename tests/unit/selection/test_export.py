"""``syllabus export``: a real pool (Alpaca rows, multi-turn ShareGPT and OpenAI conversations)
ingested and selected with the commands, exported in every format and read back:
``datasets.load_from_disk`` for hf, ``syllabus ingest`` for JSONL, and the Alpaca/ShareGPT JSON
against the fields LLaMA-Factory's data/README.md documents for ``dataset_info.json``."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from syllabus.cli import main
from syllabus.selection.export import export_selection, selection_fingerprint

# LLaMA-Factory data/README.md: the documented keys of a dataset_info.json entry.
LF_ENTRY_KEYS = {"hf_hub_url", "ms_hub_url", "script_url", "file_name", "formatting", "ranking", "subset", "folder",
                 "columns", "tags"}
LF_COLUMNS = {"prompt", "query", "response", "history", "messages", "system", "tools", "images", "chosen", "rejected",
              "kto_tag"}
LF_TAGS = {"role_tag", "content_tag", "user_tag", "assistant_tag", "observation_tag", "function_tag", "system_tag"}

ALPACA = [
    {"id": "alp-1", "instruction": "Name a symptom of anaemia.", "input": "", "output": "Tiredness."},
    {"id": "alp-2", "instruction": "Summarise the note.", "input": "Patient has a cough for 3 days.",
     "output": "A three-day cough."},
]
CONVERSATIONS = [
    {"id": "conv-3turns", "conversations": [
        {"from": "system", "value": "You are a careful clinician."},
        {"from": "human", "value": "I have a headache."},
        {"from": "gpt", "value": "Since when?"},
        {"from": "human", "value": "Two days."},
        {"from": "gpt", "value": "Drink water and rest; see a doctor if it persists."},
        {"from": "human", "value": "And if it gets worse?"},
        {"from": "gpt", "value": "Then see a doctor today."},
    ]},
    {"id": "openai-1", "messages": [
        {"role": "user", "content": "Is 38.5 C a fever?"},
        {"role": "assistant", "content": "Yes, in adults."},
    ]},
    # Two user turns in a row: valid for Syllabus, not representable in LLaMA-Factory's formats.
    {"id": "two-users", "messages": [
        {"role": "user", "content": "Hello."},
        {"role": "user", "content": "My knee hurts."},
        {"role": "assistant", "content": "Rest it and use ice."},
    ]},
]
N = len(ALPACA) + len(CONVERSATIONS)


def _last_json(capsys) -> dict:
    return json.loads(capsys.readouterr().out.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def selection(tmp_path_factory):
    """A full selection of the mixed pool, made with `syllabus ingest` and `syllabus select`."""
    root = tmp_path_factory.mktemp("export")
    pool = root / "pool"
    pool.mkdir()
    (pool / "alpaca.jsonl").write_text("".join(json.dumps(r) + "\n" for r in ALPACA))
    (pool / "chats.jsonl").write_text("".join(json.dumps(r) + "\n" for r in CONVERSATIONS))
    store = str(root / "store")
    # capsys is function-scoped: a module fixture reads the commands' output itself.
    import contextlib
    import io

    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert main(["ingest", str(pool / "alpaca.jsonl"), str(pool / "chats.jsonl"), "--store", store, "--json"]) == 0
    manifest = json.loads(out.getvalue().strip().splitlines()[-1])["manifest"]
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert main(["select", "--method", "full", "--pool", manifest, "--store", store, "--no-plots", "--json"]) == 0
    selected = json.loads(out.getvalue().strip().splitlines()[-1])
    assert selected["n_selected"] == N
    return {"root": root, "store": store, "report": selected["report"], "selected": selected["selected"]}


def _selected_rows(url: str) -> list[dict]:
    from syllabus.selection.export import read_selection

    table, _ = read_selection(url)
    return table.to_pylist()


def test_jsonl_and_hf_keep_every_row_and_turn_and_read_back(selection, tmp_path, capsys):
    import datasets

    expected = _selected_rows(selection["selected"])
    out = tmp_path / "out"
    assert main(["export", selection["report"], "--format", "jsonl", "--out", str(out), "--json"]) == 0
    jsonl = _last_json(capsys)
    assert main(["export", selection["report"], "--format", "hf", "--out", str(out), "--json"]) == 0
    hf = _last_json(capsys)

    # The default name is the selection's own key, and both carry the subset's fingerprint.
    assert jsonl["name"] == hf["name"] == selection["selected"].split("/")[-2]
    assert jsonl["fingerprint"] == hf["fingerprint"] == selection_fingerprint(r["sample_id"] for r in expected)
    rows = [json.loads(line) for line in open(jsonl["files"][0], encoding="utf-8")]
    assert [r["sample_id"] for r in rows] == [r["sample_id"] for r in expected]
    assert [r["rank"] for r in rows] == list(range(1, N + 1))
    assert [r["messages"] for r in rows] == [r["messages"] for r in expected]
    by_id = {r["sample_id"]: r for r in rows}
    assert len(by_id["conv-3turns"]["messages"]) == 7 and by_id["conv-3turns"]["messages"][0]["role"] == "system"
    assert by_id["alp-2"]["input"] == "Patient has a cough for 3 days."

    loaded = datasets.load_from_disk(hf["files"][0])
    assert len(loaded) == N and loaded.to_list() == rows

    # `syllabus ingest` reads the export back into the same samples: same ids, same turns.
    assert main(["ingest", jsonl["files"][0], "--store", str(tmp_path / "again"), "--json"]) == 0
    manifest = _last_json(capsys)
    assert manifest["records_ok"] == N and manifest["records_rejected"] == 0
    from syllabus.pool.manifest import load_manifest, read_shard

    again = [r for s in load_manifest(manifest["manifest"])["shards"] for r in read_shard(s).to_pylist()]
    assert {r["sample_id"]: r["messages"] for r in again} == {r["sample_id"]: r["messages"] for r in expected}


def _check_entry(entry: dict, records: list[dict]) -> None:
    """The entry uses only LLaMA-Factory's documented fields, and its column (and tag) names
    are the ones the records use."""
    assert set(entry) <= LF_ENTRY_KEYS, set(entry) - LF_ENTRY_KEYS
    assert entry["formatting"] in {"alpaca", "sharegpt"}
    assert set(entry["columns"]) <= LF_COLUMNS, set(entry["columns"]) - LF_COLUMNS
    for column in entry["columns"].values():
        assert all(column in r for r in records), column
    assert set(entry.get("tags", {})) <= LF_TAGS


def test_sharegpt_keeps_all_turns_in_llama_factory_order(selection, tmp_path):
    out = tmp_path / "lf"
    out.mkdir()
    # --out may be LLaMA-Factory's own data directory: other entries stay.
    (out / "dataset_info.json").write_text(json.dumps({"alpaca_en_demo": {"file_name": "alpaca_en_demo.json"}}))
    summary = export_selection(selection["selected"], "sharegpt", out, name="medical_3ds")
    info = json.loads((out / "dataset_info.json").read_text())
    assert set(info) == {"alpaca_en_demo", "medical_3ds"}
    entry = info["medical_3ds"]
    assert entry["file_name"] == "medical_3ds.json" and entry["formatting"] == "sharegpt"
    records = json.loads((out / entry["file_name"]).read_text())
    _check_entry(entry, records)

    tags = entry["tags"]
    for r in records:  # LLaMA-Factory: user turns at odd positions, assistant turns at even ones
        roles = [t[tags["role_tag"]] for t in r[entry["columns"]["messages"]]]
        assert roles == [tags["user_tag"], tags["assistant_tag"]] * (len(roles) // 2)
    by_id = {r["sample_id"]: r for r in records}
    chat = by_id["conv-3turns"]
    assert chat["system"] == "You are a careful clinician."
    assert [t["value"] for t in chat["conversations"]][-1] == "Then see a doctor today."
    assert len(chat["conversations"]) == 6
    assert by_id["alp-2"]["conversations"][0]["value"] == "Summarise the note.\n\nPatient has a cough for 3 days."

    assert summary["samples"] == N - 1 and [s["sample_id"] for s in summary["skipped"]] == ["two-users"]
    assert "jsonl or hf" in summary["skipped"][0]["reason"]


def test_alpaca_and_sharegpt_exports_to_one_directory_keep_both(selection, tmp_path):
    alpaca = export_selection(selection["report"], "alpaca", tmp_path)
    sharegpt = export_selection(selection["report"], "sharegpt", tmp_path)
    key = selection["selected"].split("/")[-2]
    assert (alpaca["name"], sharegpt["name"]) == (f"{key}-alpaca", f"{key}-sharegpt")
    info = json.loads((tmp_path / "dataset_info.json").read_text())
    assert {k: v["formatting"] for k, v in info.items()} == {f"{key}-alpaca": "alpaca", f"{key}-sharegpt": "sharegpt"}
    for entry in info.values():
        assert len(json.loads((tmp_path / entry["file_name"]).read_text())) == N - 1


def test_alpaca_keeps_earlier_turns_in_history(selection, tmp_path):
    summary = export_selection(selection["report"], "alpaca", tmp_path, name="medical_alpaca")
    info = json.loads((tmp_path / "dataset_info.json").read_text())
    entry = info["medical_alpaca"]
    assert entry["formatting"] == "alpaca"
    records = json.loads((tmp_path / entry["file_name"]).read_text())
    _check_entry(entry, records)
    by_id = {r["sample_id"]: r for r in records}

    chat = by_id["conv-3turns"]
    assert chat["instruction"] == "And if it gets worse?" and chat["output"] == "Then see a doctor today."
    assert chat["history"] == [["I have a headache.", "Since when?"],
                               ["Two days.", "Drink water and rest; see a doctor if it persists."]]
    assert chat["system"] == "You are a careful clinician."
    # An Alpaca source keeps its instruction and input apart.
    assert (by_id["alp-2"]["instruction"], by_id["alp-2"]["input"]) == ("Summarise the note.", "Patient has a cough for 3 days.")
    assert by_id["openai-1"] == {"sample_id": "openai-1", "instruction": "Is 38.5 C a fever?", "input": "",
                                 "output": "Yes, in adults.", "system": "", "history": []}
    assert "two-users" not in by_id and summary["samples"] == N - 1


def test_bad_selection_and_format_are_named(selection, tmp_path):
    with pytest.raises(ValueError, match="unknown export format 'csv'; use one of jsonl, alpaca, sharegpt, hf"):
        export_selection(selection["report"], "csv", tmp_path)
    with pytest.raises(ValueError, match=r"pool\.txt is neither a selection report"):
        export_selection(str(tmp_path / "pool.txt"), "jsonl", tmp_path)
    broken = tmp_path / "dataset_info.json"
    broken.write_text("{not json")
    with pytest.raises(ValueError, match="dataset_info.json is not valid JSON .*fix or remove it"):
        export_selection(selection["report"], "alpaca", tmp_path)


# ---------------------------------------------------------------- exports never destroy
def _listing(folder) -> set[str]:
    return {p.name for p in folder.iterdir()}


@pytest.mark.parametrize("fmt", ["jsonl", "hf", "alpaca"])
def test_an_existing_target_is_refused_without_overwrite(selection, tmp_path, capsys, fmt):
    out = tmp_path / "out"
    out.mkdir()
    target = out / {"jsonl": "mine.jsonl", "hf": "mine", "alpaca": "mine.json"}[fmt]
    if fmt == "hf":
        target.mkdir()
        (target / "precious.txt").write_text("my own data")
    else:
        target.write_text("my own data")
    before = _listing(out)

    assert main(["export", selection["report"], "--format", fmt, "--out", str(out), "--name", "mine"]) == 1
    err = capsys.readouterr().err.strip()
    assert err == (f"syllabus export: error: {target} already exists; pass --overwrite to replace it, "
                   "or choose another --name or --out")
    assert _listing(out) == before  # no temporary file, no dataset_info.json, nothing else
    assert (target / "precious.txt" if fmt == "hf" else target).read_text() == "my own data"

    assert main(["export", selection["report"], "--format", fmt, "--out", str(out), "--name", "mine", "--overwrite",
                 "--json"]) == 0
    summary = _last_json(capsys)
    assert summary["files"][0] == str(target) and summary["samples"] >= N - 1
    if fmt == "hf":
        import datasets

        assert not (target / "precious.txt").exists() and len(datasets.load_from_disk(str(target))) == N
    elif fmt == "jsonl":
        assert len(target.read_text().splitlines()) == N
    else:
        assert len(json.loads(target.read_text())) == N - 1
    assert not [n for n in _listing(out) if n.startswith(".")]  # no temporary or moved-aside leftovers


def test_a_dataset_info_entry_of_the_same_name_is_refused(selection, tmp_path):
    info = {"medical": {"file_name": "elsewhere/medical.json", "formatting": "alpaca"}}
    (tmp_path / "dataset_info.json").write_text(json.dumps(info))
    with pytest.raises(FileExistsError, match=r"the entry 'medical' of .*dataset_info\.json already exists; pass --overwrite"):
        export_selection(selection["report"], "sharegpt", tmp_path, name="medical")
    assert json.loads((tmp_path / "dataset_info.json").read_text()) == info
    assert not (tmp_path / "medical.json").exists()
    export_selection(selection["report"], "sharegpt", tmp_path, name="medical", overwrite=True)
    assert json.loads((tmp_path / "dataset_info.json").read_text())["medical"]["file_name"] == "medical.json"


def test_an_interrupted_export_leaves_the_old_target_whole(selection, tmp_path, monkeypatch):
    """A write that stops halfway (here: interrupted after two rows) replaces nothing and
    leaves no temporary file; the same for a datasets folder that fails while it is saved."""
    import datasets

    from syllabus.selection import export

    out = tmp_path / "out"
    out.mkdir()
    (out / "mine.jsonl").write_text("the previous export\n")
    (out / "mine").mkdir()
    (out / "mine" / "precious.txt").write_text("the previous folder")
    real_lines, calls = export._jsonl_lines, []

    def interrupted(batch):
        calls.append(batch.num_rows)
        if len(calls) > 1:
            raise KeyboardInterrupt
        return real_lines(batch)

    # Batches of two rows: the first batch is written, the second is interrupted.
    monkeypatch.setattr(export, "BATCH_ROWS", 2)
    monkeypatch.setattr(export, "_jsonl_lines", interrupted)
    with pytest.raises(KeyboardInterrupt):
        export_selection(selection["report"], "jsonl", out, name="mine", overwrite=True)
    monkeypatch.setattr(export, "_jsonl_lines", real_lines)
    assert calls == [2, 2]  # the write had started

    def half_saved(self, path, **kwargs):
        (Path(path) / "data-00000-of-00001.arrow").write_bytes(b"half")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(datasets.Dataset, "save_to_disk", half_saved)
    with pytest.raises(OSError, match="No space left"):
        export_selection(selection["report"], "hf", out, name="mine", overwrite=True)

    assert (out / "mine.jsonl").read_text() == "the previous export\n"
    assert _listing(out / "mine") == {"precious.txt"}
    assert _listing(out) == {"mine.jsonl", "mine"}


def test_the_pipeline_rewrites_its_own_export_on_a_rerun(selection, tmp_path):
    """The pipeline's export option (``export_format``) names each export by the selection's
    content key: a rerun that meets its own earlier output writes the same subset again."""
    from syllabus.pipeline.stages import export_subset

    arm = {"outputs": {"selected": selection["selected"]}}
    first = export_subset(arm, "sharegpt", str(tmp_path))
    again = export_subset(arm, "sharegpt", str(tmp_path))
    assert again["files"] == first["files"] and again["fingerprint"] == first["fingerprint"]
    assert list(json.loads((tmp_path / "dataset_info.json").read_text())) == [first["name"]]
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


@pytest.mark.parametrize("fmt", ["jsonl", "alpaca", "sharegpt", "hf"])
def test_exports_get_the_umask_mode_not_the_temporary_files_owner_only_one(selection, tmp_path, fmt):
    """A trainer may run as another user: the renamed-into-place export has the mode ``open``
    and ``mkdir`` give (0o666/0o777 less the umask), not ``mkstemp``'s owner-only 0o600."""
    import os
    import stat

    old = os.umask(0o022)
    try:
        summary = export_selection(selection["report"], fmt, tmp_path / "out", name="sub")
    finally:
        os.umask(old)
    for written in summary["files"]:
        path = Path(written)
        mode = stat.S_IMODE(path.stat().st_mode)
        assert mode == (0o755 if path.is_dir() else 0o644), (written, oct(mode))
