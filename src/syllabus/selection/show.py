"""Reading a selection and a recipe without pandas: ``syllabus show`` and ``syllabus recipe``.

- ``syllabus show SELECTION`` joins a selection's why-table (``candidates.parquet``: every
  candidate, the rank it was chosen at or the stage that dropped it and why) with the sample
  text from the pool and the scores the recipe read. Chosen rows come first in rank order,
  then dropped rows by stage; ``--chosen``, ``--dropped``, ``--reason TEXT`` and
  ``--limit N`` filter, ``--json`` prints the rows whole.
- ``syllabus recipe show NAME`` prints every selector key of a method with the recipe's
  value, its default and its meaning (the selectors' pydantic fields), and every scorer's
  config with its defaults; ``syllabus recipe list`` names the shipped methods.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Any

DEFAULT_LIMIT = 20
TEXT_WIDTH = 160


# ------------------------------------------------------------------------------ selections
def report_url(selection: str) -> str:
    """The ``report.json`` URL of a selection given as its report, its selected or candidates
    Parquet, or the folder (store prefix) that holds them."""
    url = selection.rstrip("/")
    for name in ("selected.parquet", "candidates.parquet"):
        if url.endswith("/" + name):
            return url[: -len(name)] + "report.json"
    if url.endswith(".json"):
        return url
    if url.endswith(".parquet"):
        raise ValueError(f"{selection} is not a selection file; pass the report.json, selected.parquet or the "
                         "selection folder that `syllabus select` printed")
    return url + "/report.json"


def read_report(selection: str) -> tuple[dict[str, Any], str]:
    from syllabus.selection.scores import read_url_bytes

    url = report_url(selection)
    try:
        data = read_url_bytes(url)
    except FileNotFoundError:
        raise ValueError(f"selection {selection}: {url} does not exist; pass the report URL that `syllabus select` "
                         "printed (report: ...)") from None
    try:
        report = json.loads(data)
    except json.JSONDecodeError:
        raise ValueError(f"{url} is not JSON; pass the report.json that `syllabus select` printed") from None
    if not isinstance(report, dict) or not report.get("outputs", {}).get("candidates"):
        raise ValueError(f"{url} is not a selection report (no outputs.candidates); pass the report.json that "
                         "`syllabus select` printed")
    return report, url


def _scalar(value: Any) -> Any:
    if hasattr(value, "item"):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


@dataclass
class ShownRows:
    report: dict[str, Any]
    url: str
    rows: list[dict[str, Any]]
    n_matching: int
    score_columns: list[str]
    has_text: bool


def selection_rows(selection: str, *, chosen: bool = False, dropped: bool = False, reason: str | None = None,
                   limit: int | None = DEFAULT_LIMIT) -> ShownRows:
    """The why-table of a selection, filtered and ordered (chosen by rank, then dropped by
    stage and sample_id), joined with text and scores for the rows returned."""
    from syllabus.selection.scores import load_candidates, read_url_bytes
    from syllabus.store.store import read_parquet_bytes

    if chosen and dropped:
        raise ValueError("--chosen and --dropped exclude each other; pass one, or neither for both")
    report, url = read_report(selection)
    why = read_parquet_bytes(read_url_bytes(report["outputs"]["candidates"])).to_pylist()
    if chosen:
        why = [r for r in why if r["chosen"]]
    if dropped:
        why = [r for r in why if not r["chosen"]]
    if reason:
        needle = reason.casefold()
        why = [r for r in why if needle in str(r.get("why") or "").casefold()]
    why.sort(key=lambda r: (0, r["rank"], "") if r["chosen"] else (1, r["dropped_at_stage"], r["sample_id"]))
    n_matching = len(why)
    if limit:
        why = why[:limit]

    stages = {s["index"]: s["selector"] for s in report.get("stages", [])}
    final = f"{len(stages)}:{stages[len(stages)]}" if stages else None
    score_urls = [s["url"] for s in report.get("inputs", {}).get("scores", [])]
    pool_url = report.get("inputs", {}).get("pool_manifest")
    records: dict[str, dict[str, Any]] = {}
    score_columns: list[str] = []
    if why and (score_urls or pool_url):
        candidates = load_candidates(score_urls, pool_url)
        table = candidates.records([r["sample_id"] for r in why])
        read = _columns_read(report)
        score_columns = [c for c in table.column_names if c in read] + [
            c for c in table.column_names if c.endswith("_status") and c not in read]
        records = {r["sample_id"]: r for r in table.to_pylist()}
    rows = []
    for r in why:
        record = records.get(r["sample_id"], {})
        dropped = f"{r['dropped_at_stage']}:{stages.get(r['dropped_at_stage'], r.get('dropped_by'))}"
        # A row filled by rank was chosen after the stage at dropped_at_stage had dropped it.
        stage = f"fill (dropped at {dropped})" if r.get("filled") else final if r["chosen"] else dropped
        row: dict[str, Any] = {
            "sample_id": r["sample_id"], "chosen": bool(r["chosen"]), "rank": int(r["rank"]) or None,
            "stage": stage, "why": r["why"],
        }
        if r.get("filled"):
            row["filled"] = True
        if r.get("group") is not None:
            row["group"] = r["group"]
        row["scores"] = {c: _scalar(record.get(c)) for c in score_columns if not isinstance(record.get(c), (list, dict))}
        for column in ("source", "instruction", "input", "output", "messages"):
            if column in record:
                row[column] = record[column]
        rows.append(row)
    return ShownRows(report, url, rows, n_matching, score_columns, bool(records) and pool_url is not None)


def _columns_read(report: dict[str, Any]) -> list[str]:
    """The score columns the selection's stages read (from the configs in its report)."""
    columns: list[str] = []
    for stage in report.get("stages", []):
        config = stage.get("config", {})
        for key, value in config.items():
            names = value if isinstance(value, list) else [value]
            if key in ("column", "metrics") or key.endswith("_column"):
                columns += [str(v) for v in names if v not in columns]
    return columns


def _one_line(text: Any, width: int) -> str:
    """Sample text for a terminal: whitespace collapsed, control characters escaped (a sample's
    own escape sequences must not drive the terminal), cut at ``width``."""
    flat = " ".join(str(text or "").split())
    flat = "".join(c if c.isprintable() else repr(c)[1:-1] for c in flat)
    return flat if len(flat) <= width else flat[: width - 3] + "..."


def _prompt_and_answer(row: dict[str, Any]) -> tuple[str, str, int]:
    turns = [t for t in (row.get("messages") or []) if t.get("role") != "system"]
    if turns and len(turns) >= 2:
        return turns[-2]["content"], turns[-1]["content"], len(turns)
    prompt = "\n\n".join(p for p in (row.get("instruction"), row.get("input")) if p)
    return prompt, row.get("output") or "", len(turns)


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return "-" if value is None else str(value)


def print_rows(shown: ShownRows, width: int = TEXT_WIDTH) -> None:
    report = shown.report
    counts = ", ".join(f"{c['stage']} {c['n']:,}" for c in report.get("counts", []))
    print(f"{report.get('method')} selection: {report.get('n_selected', 0):,} chosen of "
          f"{report.get('n_candidates', 0):,} candidates ({counts})")
    print(f"report: {shown.url}")
    for row in shown.rows:
        mark = f"#{row['rank']}" if row["chosen"] else "-"
        print(f"\n{mark:>5}  {row['sample_id']}  {_one_line(row['why'], width)}"
              + (f"  [group {row['group']}]" if "group" in row else ""))
        if row["scores"]:
            print("       " + "  ".join(f"{k} {_fmt(v)}" for k, v in row["scores"].items()))
        if "messages" in row or "instruction" in row:
            prompt, answer, n_turns = _prompt_and_answer(row)
            turns = f" ({n_turns} turns; --json shows all)" if n_turns > 2 else ""
            print(f"       prompt{turns}: {_one_line(prompt, width)}")
            print(f"       answer: {_one_line(answer, width)}")
    shown_n = len(shown.rows)
    if not shown_n:
        print("\nno rows match")
    elif shown_n < shown.n_matching:
        print(f"\nshowing {shown_n:,} of {shown.n_matching:,} matching rows; --limit 0 shows all")
    if shown.rows and not shown.has_text:
        print("(no pool manifest in the report: scores only, no text)")


# ------------------------------------------------------------------------------ recipes
def _default(field: Any) -> Any:
    from pydantic_core import PydanticUndefined

    if field.is_required():
        return PydanticUndefined
    return field.get_default(call_default_factory=True)


def config_keys(config_cls: Any, values: dict[str, Any], prefix: str = "") -> list[dict[str, Any]]:
    """One entry per key of a pydantic config class (nested configs flattened to dotted keys):
    the key, the value in ``values`` (or the default), the default, and the description."""
    from pydantic import BaseModel
    from pydantic_core import PydanticUndefined

    rows = []
    for name, field in config_cls.model_fields.items():
        key = f"{prefix}{name}"
        annotation = field.annotation
        nested = isinstance(annotation, type) and issubclass(annotation, BaseModel)
        given = values.get(name, PydanticUndefined) if isinstance(values, dict) else PydanticUndefined
        if nested:
            default = _default(field)
            base = default.model_dump(mode="json") if isinstance(default, BaseModel) else {}
            rows += config_keys(annotation, {**base, **(given if isinstance(given, dict) else {})}, key + ".")
            continue
        default = _default(field)
        rows.append({
            "key": key,
            "value": _jsonable(given if given is not PydanticUndefined else default),
            "default": None if default is PydanticUndefined else _jsonable(default),
            "required": default is PydanticUndefined,
            "set_by_recipe": given is not PydanticUndefined,
            "description": field.description or "",
        })
    return rows


def _jsonable(value: Any) -> Any:
    from pydantic import BaseModel

    if isinstance(value, BaseModel):
        return value.model_dump(mode="json")
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if hasattr(value, "value") and not isinstance(value, (int, float, str)):  # enums
        return value.value
    return value


def _summary(cls: Any) -> str:
    """The first line of a class's docstring, else of its module's."""
    import sys

    for doc in (cls.__doc__, getattr(sys.modules.get(cls.__module__), "__doc__", None)):
        if doc and doc.strip():
            return doc.strip().split("\n")[0]
    return ""


def describe_recipe(name: str) -> dict[str, Any]:
    """A method's selectors and scorers with every config key, its value, default and meaning."""
    from syllabus import registry
    from syllabus.selection.recipes import load_recipe

    recipe = load_recipe(name)
    selectors = []
    seen: set[str] = set()
    for i, spec in enumerate(recipe.selectors, start=1):
        cls = registry.lookup("selector", spec.name)
        first = spec.name not in seen
        seen.add(spec.name)
        selectors.append({
            "index": i, "name": spec.name, "final": bool(cls.final), "summary": _summary(cls),
            # --set addresses the first selector of a name (syllabus.selection.recipes.apply_selector_overrides).
            "set_path": spec.name if first else None,
            "keys": config_keys(cls.Config, spec.config),
        })
    scorers = []
    for spec in recipe.scorers:
        cls = registry.lookup("scorer", spec.name)
        config_cls = getattr(cls, "config_cls", None)
        scorers.append({
            "name": spec.name, "summary": _summary(cls),
            "keys": config_keys(config_cls, spec.config) if config_cls is not None else [],
        })
    return {
        "name": recipe.name, "description": " ".join(recipe.description.split()), "paper": recipe.paper,
        "budget": recipe.budget.model_dump(exclude_none=True) if recipe.budget is not None else None,
        "seed": recipe.seed, "selectors": selectors, "scorers": scorers,
    }


def _value_text(value: Any) -> str:
    return json.dumps(value) if not isinstance(value, str) else value


def print_recipe(info: dict[str, Any]) -> None:
    print(f"{info['name']}: {info['description']}")
    if info["paper"]:
        print(f"paper: {info['paper']}")
    budget = ", ".join(f"{k} {v}" for k, v in (info["budget"] or {}).items()) or "none (pass --budget or --ratio)"
    print(f"default budget: {budget}; seed {info['seed']}")
    print("\nselectors, in order (change a key with `syllabus select --set SELECTOR.KEY=VALUE`):")
    for sel in info["selectors"]:
        kind = "final: ranks the budget" if sel["final"] else "filter"
        print(f"  {sel['index']}. {sel['name']} ({kind}): {sel['summary']}")
        if sel["set_path"] is None:
            print(f"     (a second {sel['name']}: --set changes the first; change this one in a copy of the recipe file)")
        _print_keys(sel["keys"], sel["set_path"])
    print("\nscorers (change a key with `syllabus score --set SCORER.KEY=VALUE`):")
    for scorer in info["scorers"]:
        print(f"  {scorer['name']}: {scorer['summary']}")
        _print_keys(scorer["keys"], scorer["name"])


def _print_keys(keys: list[dict[str, Any]], path: str | None) -> None:
    if not keys:
        print("     (no settings)")
        return
    width = max(len(k["key"]) for k in keys)
    values = ["(required)" if k["required"] and not k["set_by_recipe"] else _value_text(k["value"]) for k in keys]
    value_width = min(max(len(v) for v in values), 40)
    for k, value in zip(keys, values):
        default = "required" if k["required"] else _value_text(k["default"])
        origin = f"recipe; default {default}" if k["set_by_recipe"] and k["value"] != k["default"] else "default"
        line = f"     {k['key']:<{width}}  {value:<{value_width}}  ({origin})"
        if k["description"]:
            line += f"  {k['description']}"
        print(line)


def recipe_rows() -> list[dict[str, Any]]:
    """The shipped methods: name, description on one line, paper and recipe file."""
    from syllabus.selection.recipes import known_recipes, read_recipe_file

    rows = []
    for name, path in sorted(known_recipes().items()):
        recipe = read_recipe_file(path)
        rows.append({"name": name, "description": " ".join(recipe.description.split()), "paper": recipe.paper,
                     "path": str(path)})
    return rows


def print_recipe_list(rows: list[dict[str, Any]]) -> None:
    width = max(len(r["name"]) for r in rows)
    for r in rows:
        print(f"{r['name']:<{width}}  {_one_line(r['description'], 110)}")
    print("`syllabus recipe show NAME` lists a method's keys with their defaults")
