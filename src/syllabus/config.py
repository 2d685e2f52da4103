"""One merge rule and one override syntax for every configuration in Syllabus.

- :func:`deep_merge`: layering changes on a configuration (a config file over the defaults,
  a recipe's scorer config under a run's overrides, ``--set`` flags over a config file) merges
  mappings key by key at every depth; anything else (numbers, strings, lists) is replaced.
  So changing ``influence.gradients.batch_size`` keeps the recipe's projection size.
- :func:`parse_set`: every command takes ``--set a.b.c=VALUE``: a dotted path into that
  command's configuration, the value read as JSON, else as YAML (``16``, ``2e-4``, ``true``,
  ``[a, b]``, ``null``, text).

What the path starts from is the command's own configuration: the pipeline parameters for
``run`` and ``compare`` (``--set finetune.epochs=2``), the scorer configs for ``score``
(``--set difficulty.max_new_tokens=64``), the selectors for ``select``
(``--set threshold.min_value=85``), the fine-tuning config for ``finetune``
(``--set lora_rank=16``) and the evaluation config for ``evaluate`` (``--set limit=100``).
"""

from __future__ import annotations

from typing import Any, Iterable, Mapping

import argparse

import yaml

SET_HELP = ("change any setting: a dotted path into this command's configuration and a YAML value, "
            "e.g. {example}; repeatable")


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


def _copy(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {k: _copy(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_copy(v) for v in value]
    return value


def parse_set(items: Iterable[str], example: str = "a.b.c=VALUE") -> dict[str, Any]:
    """``["a.b=1", "a.c=x"]`` -> ``{"a": {"b": 1, "c": "x"}}``; a bad item raises one
    sentence naming it and the expected shape."""
    out: dict[str, Any] = {}
    for item in items:
        path, sep, raw = item.partition("=")
        keys = [k.strip() for k in path.split(".")]
        if not sep or not all(keys):
            raise ValueError(f"--set {item!r} must look like PATH=VALUE with a dotted PATH, e.g. --set {example}")
        try:
            value = _value(raw)
        except yaml.YAMLError as exc:
            raise ValueError(f"--set {item!r}: the value is not valid YAML ({exc.problem}); quote text, e.g. "
                             f"--set {path}='...'") from None
        nested: Any = value
        for key in reversed(keys):
            nested = {key: nested}
        out = deep_merge(out, nested)
    return out


def _value(raw: str) -> Any:
    # JSON first: YAML 1.1 reads 2e-4 as text; then YAML for lists, text and the rest.
    import json

    if not raw.strip():
        return ""
    try:
        return json.loads(raw)
    except ValueError:
        return yaml.safe_load(raw)


def describe_errors(exc: Any) -> str:
    """A pydantic ``ValidationError`` as one sentence per bad setting, ``path = value: why``
    (a check of the whole model, which has no path, as its message alone)."""
    parts = []
    for e in exc.errors():
        message = str(e["msg"]).removeprefix("Value error, ")
        path = ".".join(str(p) for p in e["loc"])
        parts.append(f"{path} = {e.get('input')!r}: {message}" if path and e["type"] != "value_error" else
                     f"{path}: {message}" if path else message)
    return "; ".join(parts)


def positive_int(text: str) -> int:
    """argparse type: a whole number of at least 1 (a size of 0 fails every sample)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value} is not allowed; give 1 or more")
    return value
