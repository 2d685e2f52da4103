"""One merge rule and one override syntax for every configuration in Syllabus.

- :func:`deep_merge`: layering changes on a configuration (a config file over the defaults,
  a recipe's scorer config under a run's overrides, ``--set`` flags over a config file) merges
  mappings key by key at every depth; anything else (numbers, strings, lists) is replaced.
  So changing ``influence.gradients.batch_size`` keeps the recipe's projection size.
- :func:`parse_set`: every command takes ``--set a.b.c=VALUE``: a dotted path into that
  command's configuration, the value read as JSON, else as YAML (``16``, ``2e-4``, ``true``,
  ``[a, b]``, ``null``, text).
- :func:`load_yaml`: the one YAML loader for configs, recipes and ``--set`` values: PyYAML's
  safe loader, with what aliases may expand to capped (:data:`MAX_YAML_EXPANSION` nodes and
  characters beyond the text's own size), so an alias bomb ("billion laughs") fails at once
  instead of growing past gigabytes; an alias that refers to itself and nesting deeper than
  :data:`MAX_YAML_DEPTH` levels are refused too.
- :func:`clip`: error messages quote at most a few hundred characters of any input
  (:data:`MAX_QUOTED_CHARS`), and never build the whole repr of a large value to do so.

What the path starts from is the command's own configuration: the pipeline parameters for
``run`` and ``compare`` (``--set finetune.epochs=2``), the scorer configs for ``score``
(``--set difficulty.max_new_tokens=64``), the selectors for ``select``
(``--set threshold.min_value=85``), the fine-tuning config for ``finetune``
(``--set lora_rank=16``) and the evaluation config for ``evaluate`` (``--set limit=100``).
"""

from __future__ import annotations

from typing import Any, Iterable, Mapping

import difflib
import re

import yaml

# What aliases may add to a YAML document, in nodes plus scalar characters: a real config or
# recipe adds a few hundred; a nine-level alias bomb adds billions.
MAX_YAML_EXPANSION = 1_000_000
# Deeper than any config or recipe; PyYAML would take seconds to reach Python's recursion limit.
MAX_YAML_DEPTH = 100
# The most characters of an input an error message quotes.
MAX_QUOTED_CHARS = 200


def deep_merge(base: Mapping[str, Any], changes: Mapping[str, Any]) -> dict[str, Any]:
    """``base`` with ``changes`` on top: mappings merged key by key at every depth, other
    values replaced. Neither argument is modified."""
    out = {k: _copy(v) for k, v in base.items()}
    for key, value in changes.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = _copy(value)
    return out


def union_alternatives(model: Any) -> list[str]:
    """The keys of which a pydantic ``model`` takes exactly one (its JSON schema's ``oneOf`` of
    required keys: a budget's ``count`` or ``ratio``); empty for an ordinary model."""
    extra = getattr(model, "model_config", {}).get("json_schema_extra") or {}
    alternatives = extra.get("oneOf", []) if isinstance(extra, Mapping) else []
    return [key for alt in alternatives for key in alt.get("required", [])]


def merge_changes(model: Any, base: Mapping[str, Any], changes: Mapping[str, Any]) -> dict[str, Any]:
    """:func:`deep_merge` guided by the pydantic ``model`` that ``base`` is a dump of: where a
    field's type is a union of alternatives (``union_alternatives``), a change that names one
    of them replaces the whole value instead of merging into it, so ``--set budget.ratio=0.1``
    over ``{count: 16}`` is ``{ratio: 0.1}``, as ``--ratio 0.1`` is; a change of its other keys
    (``budget.allow_short``) merges. The one rule for flags and ``--set`` alike."""
    out = {k: _copy(v) for k, v in base.items()}
    fields = getattr(model, "model_fields", {})
    for key, value in changes.items():
        field_model = _model_of(fields[key].annotation) if key in fields else None
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            alternatives = union_alternatives(field_model) if field_model is not None else []
            if alternatives and any(k in value for k in alternatives):
                out[key] = _copy(value)
            elif field_model is not None:
                out[key] = merge_changes(field_model, out[key], value)
            else:
                out[key] = deep_merge(out[key], value)
        else:
            out[key] = _copy(value)
    return out


def _model_of(annotation: Any) -> Any:
    """The one pydantic model an annotation holds (``Optional`` and ``Annotated`` unwrapped)."""
    from pydantic import BaseModel

    models = [m for m in _members(annotation) if isinstance(m, type) and issubclass(m, BaseModel)]
    return models[0] if len(models) == 1 else None


def _copy(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {k: _copy(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_copy(v) for v in value]
    return value


def clip(value: Any, limit: int = MAX_QUOTED_CHARS) -> str:
    """A short repr of ``value`` for an error message: at most ``limit`` characters, built with
    :mod:`reprlib` so a huge or deeply shared value (an expanded alias bomb) is never
    rendered whole first."""
    import reprlib

    r = reprlib.Repr()
    r.maxlevel, r.maxstring, r.maxother = 4, limit, limit
    r.maxlist = r.maxtuple = r.maxdict = r.maxset = r.maxfrozenset = r.maxdeque = r.maxarray = 8
    text = r.repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


_NOT_IN_LABEL = re.compile(r"[^A-Za-z0-9_\-.@]+")  # one path segment, safe in a file name too


def label(text: str) -> str:
    """``text`` as one name segment: no slash, nothing a file system or MLflow could read as
    structure (runs of other characters become one ``_``; no leading or trailing dot). Used for
    scorer instance names, selection keys and MLflow run names (:mod:`syllabus.tracking.names`)."""
    out = _NOT_IN_LABEL.sub("_", str(text).strip()).strip("_.")
    return out or "unnamed"


def clip_text(text: str, limit: int = MAX_QUOTED_CHARS) -> str:
    """``text`` cut to at most ``limit`` characters (with "..." where it was cut)."""
    return text if len(text) <= limit else text[: limit - 3] + "..."


class _Loader(yaml.SafeLoader):
    """PyYAML's safe loader that checks what the composed document expands to before any
    Python object is built from it."""

    expansion_limit = MAX_YAML_EXPANSION
    text_size = 0
    depth = 0

    def compose_node(self, parent, index):
        # PyYAML composes recursively, and its scanner slows quadratically with flow nesting:
        # past any real config's depth, stop early with a sentence.
        self.depth += 1
        try:
            if self.depth > MAX_YAML_DEPTH:
                raise yaml.YAMLError(f"the document nests more than {MAX_YAML_DEPTH} levels deep (at line "
                                     f"{self.peek_event().start_mark.line + 1}); flatten it")
            return super().compose_node(parent, index)
        finally:
            self.depth -= 1

    def construct_document(self, node):  # called once per document, with its root node
        _check_expansion(node, self.expansion_limit, self.text_size)
        return super().construct_document(node)


def _check_expansion(root: yaml.Node, limit: int, text_size: int = 0) -> None:
    """Raise ``yaml.YAMLError`` when ``root``, with every alias expanded, holds more than
    ``limit`` nodes plus scalar characters beyond what its text of ``text_size`` characters holds
    without aliases (about twice that at most), or when an alias refers to a node that contains it.
    The composed graph shares aliased nodes, so its expanded size is counted once per node
    (iteratively: a deep document does not recurse)."""
    allowed = limit + 2 * text_size + 16
    sizes: dict[int, int] = {}
    on_path: set[int] = set()
    stack: list[tuple[yaml.Node, bool]] = [(root, False)]

    def children(node: yaml.Node) -> list[yaml.Node]:
        if isinstance(node, yaml.MappingNode):
            return [n for pair in node.value for n in pair]
        return list(node.value) if isinstance(node, yaml.SequenceNode) else []

    while stack:
        node, done = stack.pop()
        key = id(node)
        if done:
            on_path.discard(key)
            if isinstance(node, yaml.ScalarNode):
                size = 1 + len(node.value)
            else:
                size = 1 + sum(sizes[id(c)] for c in children(node))
            if size > allowed:
                mark = node.start_mark
                raise yaml.YAMLError(f"the document expands, through its aliases, past {limit:,} nodes and characters "
                                     f"(at line {mark.line + 1}); write the values out instead of repeating aliases")
            sizes[key] = size
            continue
        if key in sizes:
            continue
        if key in on_path:
            mark = node.start_mark
            raise yaml.YAMLError(f"an alias at line {mark.line + 1} refers to a node that contains it; "
                                 "a config cannot contain itself")
        on_path.add(key)
        stack.append((node, True))
        stack.extend((c, False) for c in children(node) if id(c) not in sizes)


def _flow_depth(text: str) -> int:
    """How deep ``[`` and ``{`` nest in ``text``, counted crudely (quotes and comments too):
    only a document with more openers than a real config has is counted at all."""
    if text.count("[") + text.count("{") <= MAX_YAML_DEPTH:
        return 0
    depth = deepest = 0
    for m in re.finditer(r"[\[\]{}]", text):
        depth = depth + 1 if m.group() in "[{" else max(depth - 1, 0)
        deepest = max(deepest, depth)
    return deepest


# A config or recipe is a few kilobytes; a file past this is not one (or is an attack on the
# loader), and is refused before it is read.
MAX_CONFIG_BYTES = 4 * 1024 * 1024


def read_config_text(path: Any, source: str) -> str:
    """The text of the config or recipe file ``path``: a FIFO or device is refused unopened and
    a file over ``MAX_CONFIG_BYTES`` unread, each in one sentence naming ``source``."""
    import os

    from syllabus.inputs import refuse_special_file

    refuse_special_file(str(path), source)
    size = os.stat(path).st_size
    if size > MAX_CONFIG_BYTES:
        raise ValueError(f"{source} is {size:,} bytes; a config or recipe is at most {MAX_CONFIG_BYTES:,} bytes "
                         "(a few kilobytes is usual): pass the right file")
    with open(path, encoding="utf-8") as fh:
        return fh.read()


def load_yaml(text: str, source: str, expansion: int = MAX_YAML_EXPANSION) -> Any:
    """The YAML document in ``text`` (``None`` when empty), read with the safe loader and
    aliases capped; a bad document raises ``ValueError``: one sentence naming ``source``,
    quoting at most a few hundred characters of the input."""
    if _flow_depth(text) > MAX_YAML_DEPTH:  # before PyYAML's scanner, which is quadratic in it
        raise ValueError(f"{source} cannot be read as YAML: it nests more than {MAX_YAML_DEPTH} brackets deep; flatten it")
    loader = _Loader(text)
    loader.expansion_limit, loader.text_size = expansion, len(text)
    try:
        return loader.get_single_data()
    except yaml.YAMLError as exc:
        problem = getattr(exc, "problem", None)
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        why = clip_text(str(problem if problem else exc), MAX_QUOTED_CHARS)
        raise ValueError(f"{source} cannot be read as YAML{where}: {why}") from None
    except RecursionError:
        raise ValueError(f"{source} nests deeper than YAML can be read here; flatten it") from None
    finally:
        loader.dispose()


def parse_set(items: Iterable[str], example: str = "a.b.c=VALUE") -> dict[str, Any]:
    """``["a.b=1", "a.c=x"]`` -> ``{"a": {"b": 1, "c": "x"}}``; a bad item raises one
    sentence naming it and the expected shape."""
    out: dict[str, Any] = {}
    for item in items:
        path, sep, raw = item.partition("=")
        keys = [k.strip() for k in path.split(".")]
        if not sep or not all(keys):
            raise ValueError(f"--set {clip(item)} must look like PATH=VALUE with a dotted PATH, e.g. --set {example}")
        try:
            value = _value(raw, f"the value of --set {clip(path, 80)}")
        except ValueError as exc:
            raise ValueError(f"{exc}; quote text, e.g. --set {clip(path, 80)}='...'") from None
        nested: Any = value
        for key in reversed(keys):
            nested = {key: nested}
        out = deep_merge(out, nested)
    return out


def _value(raw: str, source: str) -> Any:
    # JSON first: YAML 1.1 reads 2e-4 as text; then YAML for lists, text and the rest.
    import json

    if not raw.strip():
        return ""
    try:
        return json.loads(raw)
    except (ValueError, RecursionError):
        return load_yaml(raw, source)


def describe_errors(exc: Any, model: type | None = None, prefix: str = "") -> str:
    """A pydantic ``ValidationError`` as one line: a sentence per bad setting, ``path = value:
    why`` (a check of the whole model, which has no path, as its message alone), joined by "; ".

    An unknown key reads ``unknown key 'finetune.epoch' - did you mean 'finetune.epochs'?``: the
    closest of the keys allowed at that place (:func:`difflib.get_close_matches`), found by
    walking ``model`` (or, when not given, the loaded pydantic model named in the error's
    title) along the error's path; without a close one, the allowed keys are listed.
    ``prefix`` is put before every path (``threshold`` for a selector's config)."""
    if model is None:
        model = _model_named(getattr(exc, "title", None))
    parts = []
    for e in exc.errors():
        message = str(e["msg"]).removeprefix("Value error, ")
        loc = tuple(e["loc"])
        # A check of the whole model has no path and names what it checks itself.
        path = clip_text(".".join(str(p) for p in ((prefix,) if prefix else ()) + loc)) if loc else ""
        if e["type"] == "extra_forbidden" and loc:
            parts.append(unknown_key(path, _keys_at(model, loc[:-1]) if model is not None else None))
            continue
        message = clip_text(message, 3 * MAX_QUOTED_CHARS)
        parts.append(f"{path} = {clip(e.get('input'))}: {message}" if path and e["type"] != "value_error" else
                     f"{path}: {message}" if path else message)
    return "; ".join(parts)


def unknown_key(path: str, known: Iterable[str] | None) -> str:
    """``unknown key 'a.b' - did you mean 'a.c'?`` for the closest of ``known`` (the keys allowed
    where ``path``'s last part is); without a close one, the known keys are listed."""
    head, _, key = path.rpartition(".")
    text = f"unknown key {clip_text(path)!r}"
    known = sorted(known or [])
    if not known:
        return text
    close = difflib.get_close_matches(key, known, n=1, cutoff=0.6)
    if close:
        return f"{text} - did you mean {(head + '.' if head else '') + close[0]!r}?"
    return f"{text}; the keys there are {clip_text(', '.join(known), 3 * MAX_QUOTED_CHARS)}"


def _model_named(title: Any) -> type | None:
    """The loaded pydantic model class named ``title`` (a ValidationError's title); None when
    no class or several different ones have that name."""
    if not isinstance(title, str):
        return None
    from pydantic import BaseModel

    found: dict[tuple[str, ...], type] = {}
    stack, seen = [BaseModel], set()
    while stack:
        cls = stack.pop()
        for sub in cls.__subclasses__():
            if sub in seen:
                continue
            seen.add(sub)
            stack.append(sub)
            if sub.__name__ == title:
                found.setdefault(tuple(sorted(sub.model_fields)), sub)
    return next(iter(found.values())) if len(found) == 1 else None


def _members(annotation: Any) -> list[Any]:
    """The types an annotation may hold: ``Optional``, ``Union`` and ``Annotated`` unwrapped."""
    import types
    from typing import Annotated, Union, get_args, get_origin

    origin = get_origin(annotation)
    if origin is Annotated:
        return _members(get_args(annotation)[0])
    if origin is Union or origin is types.UnionType:
        return [m for arg in get_args(annotation) for m in _members(arg)]
    return [annotation]


def _keys_at(model: type, loc: tuple) -> list[str] | None:
    """The keys a pydantic ``model`` allows at ``loc`` (a validation error's path without its
    last part), walking nested models, dict values and list items; None when unknown."""
    import collections.abc
    from typing import get_args, get_origin

    from pydantic import BaseModel

    current: list[Any] = [model]
    for part in loc:
        following: list[Any] = []
        for tp in (m for c in current for m in _members(c)):
            if isinstance(tp, type) and issubclass(tp, BaseModel):
                field = tp.model_fields.get(str(part)) or next(
                    (f for f in tp.model_fields.values() if f.alias == part), None)
                if field is not None:
                    following.append(field.annotation)
                elif part == tp.__name__:  # a union member's tag in the path
                    following.append(tp)
                continue
            origin, args = get_origin(tp), get_args(tp)
            if origin in (dict, collections.abc.Mapping) and len(args) == 2:
                following.append(args[1])
            elif origin in (list, tuple, set, frozenset, collections.abc.Sequence) and args and isinstance(part, int):
                following.append(args[0])
        current = following
    for tp in (m for c in current for m in _members(c)):
        if isinstance(tp, type) and issubclass(tp, BaseModel):
            return list(tp.model_fields)
    return None


def check_input_paths(setting: str, urls: Iterable[str | None], source: str = "") -> None:
    """Raise one sentence naming the first local path in ``urls`` that does not exist, or that
    is a FIFO, device or socket (reading it could wait for ever); ``setting`` is the config key
    that named it, ``source`` the config file. Remote URLs (``s3://``, ``memory://``) are left
    to the stage that reads them: checking them needs the network and credentials."""
    import os

    from syllabus.inputs import local_path, refuse_special_file

    where = f"{source}: " if source else ""
    for url in urls:
        if url is None:
            continue
        path = local_path(str(url))
        if path is None:
            continue
        if not os.path.exists(os.path.expanduser(path)):
            hint = "" if os.path.isabs(os.path.expanduser(path)) else f" (relative paths are read from {os.getcwd()})"
            raise ValueError(f"{where}{setting} names {clip_text(str(url))}, which does not exist{hint}; fix the path "
                             "before anything starts")
        refuse_special_file(str(url), f"{where}{setting} input")


def _is_builtin_benchmark(name: str) -> bool:
    # syllabus.evaluation.benchmarks.load_benchmark's built-in names; anything else is a file.
    return name == "mmlu-medical" or name.startswith("mmlu:")


def check_config_paths(params: Any, source: str = "") -> None:
    """Every file a pipeline or compare config names, checked before any Prefect server, flow
    or MLflow run starts (issue 33: a missing pool path surfaced only inside the flow): the
    ``pool`` inputs, the defect ``labels`` file and benchmark files (``benches`` other than the
    built-in names). ``params`` is a PipelineParams or CompareParams; ``source`` the config file."""
    check_input_paths("pool", getattr(params, "pool", None) or [], source)
    check_input_paths("labels", [getattr(params, "labels", None)], source)
    benches = [b for b in getattr(params, "benches", None) or [] if not _is_builtin_benchmark(str(b))]
    check_input_paths("benches", benches, source)
