"""The plan: what a set of methods needs scored, and how each method then selects.

Recipes name scorers with configs (``src/syllabus/recipes/*.yaml``); a run adds scorer and
selector overrides. :func:`make_plan` resolves all of it once, for the CLI (``syllabus
score``, ``select``), the Prefect flows and ``compare`` alike:

- a **scorer instance** per distinct (scorer, config): its config is the recipe's with the
  run's overrides deep-merged on top (:func:`syllabus.config.deep_merge`), validated by the
  scorer's pydantic config. When every method that uses a scorer asks for the same config
  the instance is named after the scorer (``influence``); when two methods ask for different
  configs each gets ``<scorer>@<method>`` (``influence@diq``, ``influence@less``), so DIQ and
  LESS run side by side. The instance name is only a label: cache keys come from the scorer,
  its version and config, the model and the shard, so identical configs share scores.
- per method: the recipe with its selector overrides applied (deep-merged, checked by
  building the selectors) and the scorer instances it reads.

Overrides of scorers are keyed by scorer name (every instance of it) or by instance name
(``influence@less: {...}``, applied after the scorer-wide ones).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

from syllabus.config import clip, deep_merge, describe_errors

INSTANCE_SEPARATOR = "@"


def scorer_of(instance: str) -> str:
    """The registered scorer an instance name refers to: ``influence@less`` -> ``influence``."""
    return instance.split(INSTANCE_SEPARATOR, 1)[0]


@dataclass(frozen=True)
class MethodPlan:
    method: str
    recipe: Any  # syllabus.selection.recipes.Recipe, selector overrides applied
    scorers: dict[str, str]  # the recipe's scorer name -> the instance that scores it

    @property
    def instances(self) -> list[str]:
        return list(self.scorers.values())


@dataclass(frozen=True)
class Plan:
    scorers: dict[str, dict[str, Any]] = field(default_factory=dict)  # instance name -> full config
    methods: dict[str, MethodPlan] = field(default_factory=dict)

    def instances_of(self, method: str) -> list[str]:
        return self.methods[method].instances


def validated_config(instance: str, config: Mapping[str, Any]) -> Any:
    """``config`` as the scorer's typed config (its pydantic ScorerConfig); an error names
    the instance, the bad field and its value."""
    from pydantic import ValidationError

    from syllabus import registry

    cls = registry.lookup("scorer", scorer_of(instance)).config_cls
    try:
        return cls.model_validate(dict(config))
    except ValidationError as exc:  # keys named from the instance: difficulty.max_new_tokens
        raise ValueError(f"scorer {instance} config: {describe_errors(exc, cls, instance)}") from None


def scorer_config(instance: str, config: Mapping[str, Any]) -> dict[str, Any]:
    """``config`` checked by :func:`validated_config`, kept as the plain changes the plan
    records (a scoring stage validates it once more, into the object its shards share)."""
    validated_config(instance, config)
    return dict(config)


def make_plan(methods: Sequence[str], scorer_overrides: Mapping[str, Mapping[str, Any]] | None = None,
              selector_overrides: Mapping[str, Mapping[str, Mapping[str, Any]]] | None = None) -> Plan:
    """Resolve ``methods`` (shipped recipe names or recipe file paths) into scorer instances
    and per-method selection; every config is validated here, before any work."""
    from syllabus import registry
    from syllabus.selection.recipes import apply_selector_overrides, load_recipe

    scorer_overrides = dict(scorer_overrides or {})
    selector_overrides = dict(selector_overrides or {})
    known = set(registry.names("scorer"))
    for key in scorer_overrides:
        if scorer_of(key) not in known:
            try:
                registry.lookup("scorer", scorer_of(key))
            except registry.UnknownNameError as exc:
                raise ValueError(f"scorer_configs names {exc}") from None
    # Overrides of methods this run does not use are ignored: the defaults carry the demo's 3DS
    # threshold whatever the methods are.

    recipes, wanted = {}, {}  # method -> recipe; method -> {scorer: config}
    for method in methods:
        recipe = load_recipe(method)
        recipes[method] = apply_selector_overrides(recipe, selector_overrides.get(method), f"selector_overrides.{method}")
        wanted[method] = {spec.name: deep_merge(spec.config, scorer_overrides.get(spec.name, {})) for spec in recipe.scorers}

    # Name the instances: one per distinct config of a scorer.
    configs_of: dict[str, list[tuple[str, dict]]] = {}
    for method in methods:
        for scorer, config in wanted[method].items():
            configs_of.setdefault(scorer, []).append((method, config))
    scorers: dict[str, dict[str, Any]] = {}
    instance_of: dict[tuple[str, str], str] = {}
    for scorer, uses in configs_of.items():
        distinct = []
        for _, config in uses:
            if config not in distinct:
                distinct.append(config)
        for method, config in uses:
            if len(distinct) == 1:
                name = scorer
            else:  # named after the first method that asks for this config
                first = next(m for m, c in uses if c == config)
                name = f"{scorer}{INSTANCE_SEPARATOR}{_label(first)}"
            full = deep_merge(config, scorer_overrides.get(name, {})) if name != scorer else config
            scorers[name] = scorer_config(name, full)
            instance_of[(method, scorer)] = name
    unused = [key for key in scorer_overrides if INSTANCE_SEPARATOR in key and key not in scorers]
    if unused:
        raise ValueError(f"scorer_configs names the instance {clip(unused[0])}, which this run does not have; its scorer "
                         f"instances are {', '.join(scorers) or '(none)'} (an instance is <scorer>@<method> only when "
                         "two methods need one scorer in different configs; otherwise key the change by the scorer)")
    plans = {m: MethodPlan(m, recipes[m], {s: instance_of[(m, s)] for s in wanted[m]}) for m in methods}
    return Plan(scorers=scorers, methods=plans)


def scorer_plan(scorer: str, overrides: Mapping[str, Any] | None = None) -> Plan:
    """A plan of one scorer with no method around it (``syllabus score --method quality``)."""
    return Plan(scorers={scorer: scorer_config(scorer, dict(overrides or {}))})


def _label(method: str) -> str:
    """A method as part of an instance name, which becomes a store key (``scores/manifests/
    <instance>-...``): a recipe file path becomes its stem, made one safe segment (a shipped
    method's name is unchanged, so are its keys)."""
    from pathlib import PurePath

    from syllabus.config import label
    from syllabus.tracking.names import is_recipe_path

    return label(PurePath(method).stem if is_recipe_path(method) else method)
