"""Export a selected subset for any trainer: plain JSONL, Alpaca or ShareGPT JSON with a
LLaMA-Factory ``dataset_info.json`` entry, or a ``datasets.save_to_disk`` directory.

    syllabus export SELECTION --format {jsonl,alpaca,sharegpt,hf} --out DIR [--name NAME]

SELECTION is what ``syllabus select`` commits: the ``report.json`` or the ``selected.parquet``
URL. Rows keep the selection's rank order and every turn of a conversation:

- ``jsonl`` and ``hf``: one row per sample with the canonical columns (``sample_id``,
  ``rank``, ``source``, ``instruction``, ``input``, ``output``, ``messages``, ``metadata``)
  and the selection's scalar score columns; ``syllabus ingest`` reads either back into the
  same samples (same ids, same messages).
- ``sharegpt``: ``conversations`` as ``{"from": "human"|"gpt", "value"}`` turns, a leading
  system turn in ``system``.
- ``alpaca``: the last user turn as ``instruction`` (with ``input`` kept apart for Alpaca
  sources), the final answer as ``output``, earlier turns as ``history`` pairs (LLaMA-Factory
  trains on those answers too), a leading system turn in ``system``.

LLaMA-Factory's formats need strictly alternating user/assistant turns; a conversation that
does not alternate cannot be written as Alpaca or ShareGPT, so it is left out of those two
formats and named in the summary's ``skipped`` (jsonl and hf keep it as it is).

The subset's fingerprint is a hash of its sample ids in rank order: the same value is the
digest of the subset's dataset in MLflow, so an exported file can be matched to its run.

An export never destroys what is there: an existing target (the ``hf`` folder, the JSONL or
JSON file, or the name's entry in ``dataset_info.json``) is refused unless ``--overwrite`` is
given, and every target is written under a temporary name in the same folder and renamed into
place, so an interrupted export leaves the old target (or none), never a half-written one.
"""

from __future__ import annotations

import json
import logging
import math
import os
import shutil
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable

if TYPE_CHECKING:  # pyarrow is imported where it is used: `syllabus --help` loads this module
    import pyarrow as pa

log = logging.getLogger(__name__)

FORMATS = ("jsonl", "alpaca", "sharegpt", "hf")
DATASET_INFO = "dataset_info.json"
SHAREGPT_ROLES = {"user": "human", "assistant": "gpt"}


def selection_fingerprint(sample_ids: Iterable[str]) -> str:
    """A stable hash of a subset: its sample ids in rank order (20 hex digits, like the pool's)."""
    from syllabus.store import content_hash

    return content_hash([str(s) for s in sample_ids], 20)


def selected_url(selection: str) -> str:
    """The ``selected.parquet`` URL of a selection given as that file or as its ``report.json``."""
    from syllabus.selection.scores import read_url_bytes

    if selection.endswith(".parquet"):
        return selection
    if not selection.endswith(".json"):
        raise ValueError(f"{selection} is neither a selection report (.json) nor a selected subset (.parquet); "
                         "pass the `report` or `selected` URL that `syllabus select --json` printed")
    report = json.loads(read_url_bytes(selection))
    url = report.get("outputs", {}).get("selected") if isinstance(report, dict) else None
    if not url:
        raise ValueError(f"{selection} is not a selection report (it has no outputs.selected); pass the report.json "
                         "or selected.parquet that `syllabus select --json` printed")
    return url


def read_selection(selection: str) -> tuple[pa.Table, str]:
    """The selected rows in rank order and the ``selected.parquet`` URL they came from."""
    from syllabus.selection.scores import read_url_bytes
    from syllabus.store.store import read_parquet_bytes

    url = selected_url(selection)
    table = read_parquet_bytes(read_url_bytes(url))
    missing = [c for c in ("sample_id", "messages") if c not in table.column_names]
    if missing:
        raise ValueError(f"{url} has no {', '.join(missing)} column; it is not a subset written by `syllabus select`")
    if "rank" in table.column_names:
        table = table.sort_by("rank")
    return table, url


def default_name(url: str) -> str:
    """``selections/3ds/3ds-0123abcd/selected.parquet`` -> ``3ds-0123abcd``: the selection's own key."""
    parts = url.rstrip("/").split("/")
    return parts[-2] if len(parts) >= 2 and parts[-1] == "selected.parquet" else Path(parts[-1]).stem


def _plain_columns(table: pa.Table) -> list[str]:
    """Canonical columns and rank first, then scalar score columns (vectors such as
    embeddings are left out: they are model internals, not training data)."""
    import pyarrow as pa

    from syllabus.pool.canonical import COLUMNS as CANONICAL_COLUMNS

    head = [c for c in ("sample_id", "rank", *CANONICAL_COLUMNS[1:]) if c in table.column_names]
    scores = [f.name for f in table.schema
              if f.name not in head and not (pa.types.is_list(f.type) or pa.types.is_large_list(f.type)
                                              or pa.types.is_struct(f.type) or pa.types.is_fixed_size_list(f.type))]
    return head + scores


def _json_value(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None  # JSON has no NaN; a missing score is null
    return value


def plain_rows(table: pa.Table) -> list[dict[str, Any]]:
    return [{k: _json_value(v) for k, v in row.items()} for row in table.select(_plain_columns(table)).to_pylist()]


def _split_turns(row: dict[str, Any]) -> tuple[str, list[dict[str, str]]]:
    """``(system prompt, alternating user/assistant turns)``; raises ValueError with the reason
    when the conversation cannot be written in LLaMA-Factory's turn order."""
    turns = list(row["messages"] or [])
    system = ""
    if turns and turns[0]["role"] == "system":
        system, turns = turns[0]["content"], turns[1:]
    for i, turn in enumerate(turns):
        expected = "user" if i % 2 == 0 else "assistant"
        if turn["role"] != expected:
            raise ValueError(f"turn {i + 1} is from {turn['role']} where LLaMA-Factory expects {expected} "
                             "(turns must alternate user/assistant after one optional leading system turn); "
                             "export it as jsonl or hf, which keep any turn order")
    if not turns or len(turns) % 2:
        raise ValueError("the conversation does not end with an assistant answer")
    return system, turns


def to_sharegpt(row: dict[str, Any]) -> dict[str, Any]:
    system, turns = _split_turns(row)
    return {"sample_id": row["sample_id"],
            "conversations": [{"from": SHAREGPT_ROLES[t["role"]], "value": t["content"]} for t in turns],
            "system": system}


def to_alpaca(row: dict[str, Any]) -> dict[str, Any]:
    system, turns = _split_turns(row)
    instruction, query = row.get("instruction") or "", row.get("input") or ""
    alpaca_sourced = len(turns) == 2 and query.strip() and turns[0]["content"] == f"{instruction}\n\n{query}"
    if not alpaca_sourced:  # an Alpaca-sourced sample keeps its instruction and input apart, as they came
        instruction, query = turns[-2]["content"], ""
    history = [[turns[i]["content"], turns[i + 1]["content"]] for i in range(0, len(turns) - 2, 2)]
    return {"sample_id": row["sample_id"], "instruction": instruction, "input": query, "output": turns[-1]["content"],
            "system": system, "history": history}


def dataset_info_entry(fmt: str, file_name: str) -> dict[str, Any]:
    """The entry LLaMA-Factory's ``dataset_info.json`` needs for a file this module wrote
    (fields as documented in LLaMA-Factory's data/README.md)."""
    if fmt == "alpaca":
        return {"file_name": file_name, "formatting": "alpaca",
                "columns": {"prompt": "instruction", "query": "input", "response": "output", "system": "system",
                            "history": "history"}}
    if fmt == "sharegpt":
        return {"file_name": file_name, "formatting": "sharegpt",
                "columns": {"messages": "conversations", "system": "system"},
                "tags": {"role_tag": "from", "content_tag": "value", "user_tag": "human", "assistant_tag": "gpt"}}
    raise ValueError(f"LLaMA-Factory's dataset_info.json describes alpaca and sharegpt files, not {fmt!r}")


class ExportTargetExistsError(FileExistsError):
    """An export target is already there and ``overwrite`` was not asked for."""


def _exists_error(what: str) -> ExportTargetExistsError:
    return ExportTargetExistsError(f"{what} already exists; pass --overwrite to replace it, or choose another --name or --out")


def _present(path: Path) -> bool:
    return path.exists() or path.is_symlink()


def _place(tmp: Path, path: Path, overwrite: bool) -> None:
    """Rename the finished ``tmp`` (a file or a folder, in ``path``'s folder) to ``path``."""
    if _present(path) and not overwrite:  # checked again: another process may have written it since
        raise _exists_error(str(path))
    if not _present(path) or not (tmp.is_dir() or (path.is_dir() and not path.is_symlink())):
        os.replace(tmp, path)  # atomic, over a file too
        return
    # Nothing is renamed over a folder (or a file over a folder): move the old one aside first,
    # and back if the new one cannot take its place.
    old = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}.old-"))
    os.replace(path, old / path.name)
    try:
        os.replace(tmp, path)
    except BaseException:
        os.replace(old / path.name, path)
        raise
    finally:
        shutil.rmtree(old, ignore_errors=True)


def _write_atomic(path: Path, chunks: Iterable[str], overwrite: bool) -> None:
    """Write ``chunks`` to a temporary file next to ``path``, then rename it into place; the
    temporary file is removed whatever stops the write."""
    fd, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    tmp = Path(name)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            for chunk in chunks:
                fh.write(chunk)
            fh.flush()
            os.fsync(fh.fileno())
        _place(tmp, path, overwrite)
    finally:
        tmp.unlink(missing_ok=True)


def _read_dataset_info(out: Path) -> dict[str, Any]:
    path = out / DATASET_INFO
    if not path.exists():
        return {}
    try:
        info = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path} is not valid JSON ({exc}); fix or remove it, then export again") from exc
    if not isinstance(info, dict):
        raise ValueError(f"{path} is not a JSON object of dataset entries; fix or remove it, then export again")
    return info


def _merge_dataset_info(out: Path, name: str, entry: dict[str, Any]) -> Path:
    """Add (or, checked by the caller, replace) this dataset's entry, keeping every other entry
    of an existing file: ``--out`` may be LLaMA-Factory's own data directory."""
    path = out / DATASET_INFO
    info = _read_dataset_info(out)
    info[name] = entry
    # The shared index is rewritten on every export by design (other entries kept as they are).
    _write_atomic(path, [json.dumps(info, indent=2, ensure_ascii=False) + "\n"], overwrite=True)
    return path


def _check_targets(out: Path, fmt: str, name: str, overwrite: bool) -> None:
    """Refuse, before anything is written, a target that is already there (unless ``overwrite``)
    and a ``dataset_info.json`` that cannot be merged into."""
    info = _read_dataset_info(out) if fmt in ("alpaca", "sharegpt") else {}
    if overwrite:
        return
    target = out / (name if fmt == "hf" else f"{name}.jsonl" if fmt == "jsonl" else f"{name}.json")
    if _present(target):
        raise _exists_error(str(target))
    if name in info:
        raise _exists_error(f"the entry {name!r} of {out / DATASET_INFO}")


def export_selection(selection: str, fmt: str, out_dir: str | Path, name: str | None = None,
                     overwrite: bool = False) -> dict[str, Any]:
    """Write the subset at ``selection`` to ``out_dir`` in ``fmt``; returns a summary with the
    files written, the row count, the fingerprint and the samples left out (with reasons).

    An existing target raises :class:`ExportTargetExistsError` naming it, before anything is
    written, unless ``overwrite``; targets are renamed into place only once complete."""
    if fmt not in FORMATS:
        raise ValueError(f"unknown export format {fmt!r}; use one of {', '.join(FORMATS)}")
    table, url = read_selection(selection)
    # Alpaca and ShareGPT both write NAME.json and a dataset_info.json key: by default each
    # format gets its own, so exporting both to one directory keeps both.
    name = name or default_name(url) + (f"-{fmt}" if fmt in ("alpaca", "sharegpt") else "")
    if not name or "/" in name or name.startswith("."):
        raise ValueError(f"export name {name!r} must be a plain file name (no '/', no leading '.'); pass --name")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    _check_targets(out, fmt, name, overwrite)
    rows = plain_rows(table)
    summary: dict[str, Any] = {"format": fmt, "name": name, "selection": url, "samples": len(rows),
                               "fingerprint": selection_fingerprint(r["sample_id"] for r in rows), "skipped": []}
    if fmt == "jsonl":
        path = out / f"{name}.jsonl"
        _write_atomic(path, (json.dumps(r, ensure_ascii=False) + "\n" for r in rows), overwrite)
        summary["files"] = [str(path)]
    elif fmt == "hf":
        import datasets

        path = out / name
        tmp = Path(tempfile.mkdtemp(dir=out, prefix=f".{name}."))
        try:
            # Built from the Arrow table itself, so column types (the messages structs, the
            # score dtypes) are the subset's own.
            datasets.Dataset(table.select(_plain_columns(table))).save_to_disk(str(tmp))
            _place(tmp, path, overwrite)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        summary["files"] = [str(path)]
    else:
        convert = to_alpaca if fmt == "alpaca" else to_sharegpt
        records = []
        for row in rows:
            try:
                records.append(convert(row))
            except ValueError as exc:
                summary["skipped"].append({"sample_id": row["sample_id"], "reason": str(exc)})
                log.warning("export %s: sample %s left out: %s", fmt, row["sample_id"], exc)
        path = out / f"{name}.json"
        _write_atomic(path, [json.dumps(records, indent=1, ensure_ascii=False) + "\n"], overwrite)
        info = _merge_dataset_info(out, name, dataset_info_entry(fmt, path.name))
        summary["samples"] = len(records)
        summary["files"] = [str(path), str(info)]
        summary["dataset_info"] = {name: dataset_info_entry(fmt, path.name)}
    log.info("exported %d samples of %s as %s to %s", summary["samples"], url, fmt, summary["files"][0])
    return summary
