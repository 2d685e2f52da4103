"""Defect avoidance: how many known-bad samples a selection let through, stage by stage.

Given a labels file (sample id -> defect kind, as ``syllabus plant-defects`` writes it; every
other sample is clean, and so is a row whose value is false, 0, null or empty: see
:func:`defect_kind`) and a selection's per-candidate table, this reports the defect share

- of the pool (the base rate a selection has to beat),
- of the survivors after each stage of the recipe (3DS: after the quality threshold, after
  the difficulty bands, after K-Center), the last being the selection itself,
- of the selection per group of the final stage (DIQ: per quadrant),

each with a 95% Wilson score interval, overall and per defect kind. It needs only scores and
the selection, so it is seconds after scoring.
"""

from __future__ import annotations

import io
import json
import re
from collections import Counter
from typing import Any, Mapping, Sequence

import numpy as np
import pandas as pd

from syllabus.selection.scores import read_url_bytes
from syllabus.store.store import read_parquet_bytes


class LabelsError(ValueError):
    """A labels file that does not fit the pool."""


# A labels value that says "clean": only a true-ish value is a defect (see defect_kind).
_CLEAN_WORDS = {"", "false", "no", "0", "none", "null", "clean"}
_TRUE_WORDS = {"true", "yes", "1"}
GENERIC_KIND = "defect"


def defect_kind(value: Any) -> str | None:
    """The defect kind a labels file's ``defect`` value names, or None for a clean sample.

    A string names its kind (``"truncated"``, as ``syllabus plant-defects`` writes); ``"true"``,
    ``"yes"`` and ``"1"`` (any case) and the JSON ``true`` and ``1`` mark a defect of kind
    ``defect``; ``null``, ``false``, ``0``, ``""`` and the strings ``"false"``, ``"no"``,
    ``"0"``, ``"none"``, ``"null"``, ``"clean"`` mark a clean sample. Anything else (another
    number, a list, an object) raises ValueError."""
    if value is None or value is False:
        return None
    if value is True:
        return GENERIC_KIND
    if isinstance(value, (int, float)):
        if value == 0:
            return None
        if value == 1:
            return GENERIC_KIND
        raise ValueError(f"the number {value!r} is neither 0 (clean) nor 1 (a defect)")
    if isinstance(value, str):
        word = value.strip()
        if word.lower() in _CLEAN_WORDS:
            return None
        return GENERIC_KIND if word.lower() in _TRUE_WORDS else word
    raise ValueError(f"a JSON {type(value).__name__} is not a defect kind")


def load_labels(path: str) -> dict[str, str]:
    """``{sample_id: defect kind}`` from a JSONL labels file (``sample_id`` and ``defect`` per
    line; other fields are ignored). Only rows whose ``defect`` is true-ish are defects
    (:func:`defect_kind`); rows marked clean are left out. An id labelled on two lines is an
    error naming both."""
    import fsspec

    from syllabus.inputs import refuse_special_file

    try:
        refuse_special_file(path, "labels file")
    except ValueError as exc:
        raise LabelsError(str(exc)) from None
    try:
        with fsspec.open(path, "rb") as f:
            text = f.read().decode("utf-8-sig")  # a byte order mark (Windows tools) is not a label
    except FileNotFoundError:
        raise LabelsError(f"labels file {path} does not exist; write one with `syllabus plant-defects`") from None
    except UnicodeDecodeError as exc:
        raise LabelsError(f"labels file {path} is not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    labels: dict[str, str] = {}
    first_line: dict[str, int] = {}
    rows = 0
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
            sample_id, value = str(row["sample_id"]), row["defect"]
        except (json.JSONDecodeError, KeyError, TypeError):
            raise LabelsError(
                f"labels file {path} line {number} is not a JSON object with sample_id and defect; "
                "write labels with `syllabus plant-defects`"
            ) from None
        if sample_id in first_line:
            raise LabelsError(
                f"labels file {path} labels sample {sample_id!r} twice, on lines {first_line[sample_id]} and {number}; "
                "keep one line per sample"
            )
        first_line[sample_id] = number
        rows += 1
        try:
            kind = defect_kind(value)
        except ValueError as exc:
            raise LabelsError(
                f"labels file {path} line {number}: defect {json.dumps(value)[:80]} is not a defect label ({exc}); "
                'use a kind name such as "truncated", true or 1 for a defect, and false, 0 or null for a clean sample'
            ) from None
        if kind is not None:
            labels[sample_id] = kind
    if not rows:
        raise LabelsError(f"labels file {path} holds no label; write one with `syllabus plant-defects`")
    if not labels:
        raise LabelsError(
            f"labels file {path} marks none of its {rows:,} samples as a defect (every defect value is false, 0, null "
            "or empty); a defect-avoidance audit needs at least one defect"
        )
    return labels


def check_labels(labels: Mapping[str, str], pool_ids: Sequence[str], path: str) -> None:
    """One-line errors for labels that do not describe this pool."""
    pool = set(map(str, pool_ids))
    unknown = [i for i in labels if i not in pool]
    if len(unknown) == len(labels):
        raise LabelsError(
            f"labels file {path}: none of its {len(labels):,} ids is in the pool ({len(pool):,} candidates); "
            "pass the labels written for this pool, and ingest its defects file next to the clean files"
        )
    if unknown:
        raise LabelsError(
            f"labels file {path} names {len(unknown):,} id(s) that are not in the pool (first: {unknown[0]}); "
            "ingest the whole defects file with the clean files (a quarantined defect is not in the pool) "
            "or pass the labels written for this pool"
        )


def wilson(k: int, n: int) -> list[float] | None:
    """95% Wilson score interval of k successes in n trials (None when n = 0)."""
    if n == 0:
        return None
    from scipy.stats import binomtest

    ci = binomtest(int(k), int(n)).proportion_ci(confidence_level=0.95, method="wilson")
    return [float(ci.low), float(ci.high)]


def _cell(ids: np.ndarray, labels: Mapping[str, str], kinds: Sequence[str]) -> dict[str, Any]:
    found = Counter(labels[i] for i in ids if i in labels)
    n, k = int(len(ids)), int(sum(found.values()))
    return {"n": n, "defects": k, "share": (k / n) if n else None, "ci": wilson(k, n),
            "per_kind": {kind: int(found.get(kind, 0)) for kind in kinds}}


def stage_label(stage: Mapping[str, Any]) -> str:
    """``2:threshold`` for a report stage, with the column a threshold cuts when the report
    has it (``2:threshold(relevance_score)``): a recipe may hold two thresholds."""
    label = f"{int(stage['index'])}:{stage['selector']}"
    column = (stage.get("config") or {}).get("column") if stage["selector"] == "threshold" else None
    return f"{label}({column})" if column else label


def audit_selection(candidates: pd.DataFrame, labels: Mapping[str, str], stages: Sequence[Mapping[str, Any]],
                    path: str = "labels") -> dict[str, Any]:
    """The defect shares of one selection. ``candidates`` is the selection's per-candidate
    table (``sample_id``, ``dropped_at_stage``, ``chosen``, optional ``group``); ``stages``
    its report's stages (``index``, ``selector``)."""
    ids = candidates["sample_id"].astype(str).to_numpy()
    check_labels(labels, ids, path)
    kinds = sorted(set(labels.values()))
    dropped_at = candidates["dropped_at_stage"].to_numpy()
    out: dict[str, Any] = {"kinds": kinds, "pool": _cell(ids, labels, kinds), "stages": []}
    for stage in stages:
        index = int(stage["index"])
        alive = (dropped_at == 0) | (dropped_at > index)
        out["stages"].append({"stage": stage_label(stage), **_cell(ids[alive], labels, kinds)})
    chosen = candidates["chosen"].to_numpy(dtype=bool)
    out["selected"] = _cell(ids[chosen], labels, kinds)
    if "group" in candidates.columns:
        groups = candidates["group"].to_numpy(dtype=object)
        out["groups"] = {str(g): _cell(ids[chosen & (groups == g)], labels, kinds)
                         for g in sorted({g for g in groups[chosen] if g is not None})}
    # Of each kind's defects in the pool, the share that made it into the selection.
    pool_kinds = out["pool"]["per_kind"]
    out["passed_per_kind"] = {kind: (out["selected"]["per_kind"][kind] / pool_kinds[kind]) if pool_kinds[kind] else None
                              for kind in kinds}
    return out


def audit_url(candidates_url: str, labels: Mapping[str, str], stages: Sequence[Mapping[str, Any]], path: str) -> dict[str, Any]:
    """:func:`audit_selection` of a committed selection's ``candidates.parquet``."""
    frame = read_parquet_bytes(read_url_bytes(candidates_url)).to_pandas()
    return audit_selection(frame, labels, stages, path)


# ------------------------------------------------------------------------------- report
def _pct(share: float | None) -> str:
    return "-" if share is None else f"{100 * share:.1f}%"


def _share_ci(cell: Mapping[str, Any]) -> str:
    if not cell["n"]:
        return "- (empty)"
    lo, hi = cell["ci"]
    return f"{_pct(cell['share'])} [{_pct(lo)}, {_pct(hi)}]"


def audit_markdown(audits: Mapping[str, Mapping[str, Any]], notes: Mapping[str, Sequence[str]] | None = None) -> str:
    """Markdown tables: one row per arm (and the pool's base rate), then the share after each
    stage and per group for the arms that have several stages or groups."""
    if not audits:
        return ""
    first = next(iter(audits.values()))
    kinds = first["kinds"]
    head = "| arm | selected | defects | share [95% CI] | " + " | ".join(kinds) + " |"
    lines = ["### Defect avoidance", "",
             "Share of planted defects in each selection (95% Wilson interval); the pool's base rate is what "
             "a selection that ignores quality lands near. Per kind: defects of that kind in the selection.", "",
             head, "|" + "---|" * (4 + len(kinds))]
    pool = first["pool"]
    lines.append(f"| pool (base rate) | {pool['n']:,} | {pool['defects']:,} | {_share_ci(pool)} | "
                 + " | ".join(str(pool["per_kind"][k]) for k in kinds) + " |")
    for arm, a in audits.items():
        s = a["selected"]
        lines.append(f"| {arm} | {s['n']:,} | {s['defects']:,} | {_share_ci(s)} | "
                     + " | ".join(str(s["per_kind"][k]) for k in kinds) + " |")
    staged = {arm: a for arm, a in audits.items() if len(a["stages"]) > 1 or a.get("groups")}
    if staged:
        lines += ["", "Share after each stage (the last is the selection), and per group of the final stage:", "",
                  "| arm | after | n | defects | share [95% CI] |", "|---|---|---|---|---|"]
        for arm, a in staged.items():
            for st in a["stages"]:
                lines.append(f"| {arm} | {st['stage']} | {st['n']:,} | {st['defects']:,} | {_share_ci(st)} |")
            for group, cell in (a.get("groups") or {}).items():
                lines.append(f"| {arm} | group {group} | {cell['n']:,} | {cell['defects']:,} | {_share_ci(cell)} |")
    for arm, items in (notes or {}).items():
        for note in items:
            lines.append(f"\n- {arm}: {note}")
    return "\n".join(lines) + "\n"


def plot_audit(audits: Mapping[str, Mapping[str, Any]]) -> bytes:
    """Defect share per arm with its interval next to the pool's base rate (left), and the
    selection's make-up by defect kind (right)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    arms = list(audits)
    first = audits[arms[0]]
    kinds = first["kinds"]
    base = first["pool"]["share"] or 0.0
    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 0.45 * len(arms) + 2.0), sharey=True)
    y = np.arange(len(arms))
    share = np.array([100 * (audits[a]["selected"]["share"] or 0.0) for a in arms])
    lo = np.array([100 * (audits[a]["selected"]["ci"] or [0, 0])[0] for a in arms])
    hi = np.array([100 * (audits[a]["selected"]["ci"] or [0, 0])[1] for a in arms])
    left.barh(y, share, color="tab:red", alpha=0.7)
    left.errorbar(share, y, xerr=[share - lo, hi - share], fmt="none", color="black", capsize=3)
    left.axvline(100 * base, color="grey", linestyle="--", label=f"pool base rate {100 * base:.1f}%")
    left.set_yticks(y, arms)
    left.invert_yaxis()
    left.set_xlabel("defects in the selection (%), 95% Wilson interval")
    left.legend(loc="lower right", fontsize=8)
    acc = np.zeros(len(arms))
    colors = plt.get_cmap("tab10")
    for j, kind in enumerate(kinds):
        vals = np.array([100 * audits[a]["selected"]["per_kind"][kind] / max(audits[a]["selected"]["n"], 1) for a in arms])
        right.barh(y, vals, left=acc, color=colors(j % 10), label=kind)
        acc += vals
    right.set_xlabel("share of the selection by defect kind (%)")
    right.legend(loc="lower right", fontsize=7)
    fig.suptitle("Defect avoidance")
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    plt.close(fig)
    return buf.getvalue()


def audit_metrics(audit: Mapping[str, Any]) -> dict[str, float]:
    """Flat MLflow metrics of one arm's audit."""
    out = {"defects/share": audit["selected"]["share"] or 0.0, "defects/n": float(audit["selected"]["defects"]),
           "defects/pool_share": audit["pool"]["share"] or 0.0}
    for kind, n in audit["selected"]["per_kind"].items():
        out[f"defects/kind/{kind}"] = float(n)
    for st in audit["stages"]:
        if st["share"] is not None:
            out[f"defects/after_stage/{re.sub(r'[^A-Za-z0-9_]+', '_', st['stage']).strip('_')}"] = st["share"]
    for group, cell in (audit.get("groups") or {}).items():
        if cell["share"] is not None:
            out[f"defects/group/{group}"] = cell["share"]
    return out
