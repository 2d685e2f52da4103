"""One registry: names of scorers and selectors mapped to the classes that implement them.

Registration is at the definition site: a class says what it is registered as, in its own
module (as lm-evaluation-harness does with ``register_model`` in ``lm_eval/api/registry.py``)::

    from syllabus import registry

    @registry.scorer("quality")
    class QualityScorer(Scorer): ...

Finding a name, cheapest first:

1. classes whose decorator has already run (their module was imported);
2. ``TABLE``, the shipped name -> ``"module:Class"`` table. It is a start-up cache, not the
   source of truth: listing names (``names``, CLI choices) and validating a recipe read it and
   import nothing, so ``syllabus --help`` never loads torch; ``lookup`` imports only the one
   module a name needs;
3. discovery, on a miss: every module of the kind's package (``PACKAGES``: pkgutil over
   ``syllabus.scoring`` or ``syllabus.selection``, so a module dropped into the package, or
   into a folder appended to its ``__path__``, is found) and every plugin module named by the
   ``syllabus.plugins`` entry-point group is imported, and the name is looked for again;
4. otherwise an :class:`UnknownNameError` listing the known names and the closest matches.

Why ``TABLE`` is kept exact for the shipped package (``tests/unit/test_registry.py``: every
entry points to a class whose decorator registered that same kind and name, and every
decorated class in ``syllabus.scoring`` and ``syllabus.selection`` has an entry; a failure
names the line to add or remove): a shipped name missing from the table would still be found,
but only after discovery imported every module of the package (torch included), and it would
be absent from ``names`` and so from the CLI's choices until then. A stale entry would send
``lookup`` to a module or class that is no longer there. The test cannot see a user's scorer,
so the table never has to know it: a user adds a scorer in two places, its module (with the
decorator) and the recipe line that names it, and discovery finds the module.
"""

from __future__ import annotations

import difflib
import importlib
import logging
import pkgutil
from typing import Any, Callable, TypeVar

log = logging.getLogger(__name__)

TABLE: dict[str, dict[str, str]] = {
    "scorer": {
        "quality": "syllabus.scoring.quality:QualityScorer",
        "difficulty": "syllabus.scoring.difficulty:DifficultyScorer",
        "ifd": "syllabus.scoring.ifd:IFDScorer",
        "gradients": "syllabus.scoring.gradients:GradientsScorer",
        "influence": "syllabus.scoring.influence:InfluenceScorer",
        "diq_difficulty": "syllabus.scoring.diq_difficulty:DIQDifficultyScorer",
        "relevance": "syllabus.scoring.relevance:RelevanceScorer",
        "injection": "syllabus.scoring.injection:InjectionScorer",
    },
    "selector": {
        "threshold": "syllabus.selection.threshold:ThresholdSelector",
        "band": "syllabus.selection.band:BandSelector",
        "kcenter": "syllabus.selection.kcenter:KCenterSelector",
        "quadrant": "syllabus.selection.quadrant:QuadrantSelector",
        "topk": "syllabus.selection.topk:TopKSelector",
        "random": "syllabus.selection.baselines:RandomSelector",
        "full": "syllabus.selection.baselines:FullSelector",
    },
}

# The package whose modules discovery imports for each kind.
PACKAGES: dict[str, str] = {"scorer": "syllabus.scoring", "selector": "syllabus.selection"}

# Entry points of this group name plugin modules (``value = "mypkg.scorers"``); discovery
# imports them so that their decorators run. One line per plugin package, not per scorer.
PLUGIN_GROUP = "syllabus.plugins"

_decorated: dict[str, dict[str, Any]] = {}  # kind -> name -> class, filled as modules are imported
_added: dict[str, dict[str, str]] = {}  # kind -> name -> "module:Attr", from register() at run time
_failed: dict[str, str] = {}  # module -> why its import failed in the last discovery

T = TypeVar("T")


class UnknownNameError(KeyError):
    def __str__(self) -> str:  # KeyError would print the repr with quotes
        return str(self.args[0])


class RegistrationError(ValueError):
    """Two classes claim one name, or a class's ``name`` contradicts its registration."""


def _where(obj: Any) -> str:
    return f"{obj.__module__}:{obj.__qualname__}"


def registered_as(kind: str, name: str) -> Callable[[T], T]:
    """Class decorator: register the class as ``name`` of ``kind``. Sets the class's ``name``
    attribute when it has none of its own, and refuses one that differs (the name is in the
    output columns and cache keys, so the registry and the class must agree)."""
    if not isinstance(name, str) or not name.strip():
        raise RegistrationError(f"registry name {name!r} for kind {kind!r} must be a non-empty string")

    def decorate(cls: T) -> T:
        own = vars(cls).get("name")
        if own is None:
            setattr(cls, "name", name)
        elif own != name:
            raise RegistrationError(
                f"{_where(cls)} is registered as {kind} {name!r} but its name attribute is {own!r}; "
                "make the two the same"
            )
        table = _decorated.setdefault(kind, {})
        prior = table.get(name)
        # The same class seen again (its module reloaded, or imported under a second name by
        # discovery) replaces itself; another class under the same name is a clash.
        if prior is not None and _where(prior) != _where(cls):
            raise RegistrationError(
                f"{kind} {name!r} is registered twice, by {_where(prior)} and by {_where(cls)}; rename one of them"
            )
        table[name] = cls
        return cls

    return decorate


def scorer(name: str) -> Callable[[T], T]:
    """``@registry.scorer("quality")`` above a :class:`~syllabus.scoring.base.Scorer` subclass."""
    return registered_as("scorer", name)


def selector(name: str) -> Callable[[T], T]:
    """``@registry.selector("band")`` above a :class:`~syllabus.selection.base.Selector` subclass."""
    return registered_as("selector", name)


def register(kind: str, name: str, target: str) -> None:
    """Register ``target`` ("package.module:Attr") under ``name`` for ``kind`` without
    importing it (for objects outside any discovered package, such as test doubles)."""
    if ":" not in target:
        raise ValueError(f"registry target {target!r} must look like 'package.module:Attr'")
    _added.setdefault(kind, {})[name] = target


def unregister(kind: str, name: str) -> None:
    """Forget ``name`` of ``kind`` registered at run time (by a decorator or :func:`register`).
    Its module stays imported; a shipped name comes back from ``TABLE`` on the next lookup."""
    found = _decorated.get(kind, {}).pop(name, None) is not None
    found = _added.get(kind, {}).pop(name, None) is not None or found
    if not found:
        raise UnknownNameError(f"{kind} {name!r} was not registered at run time, so there is nothing to unregister")


def kinds() -> list[str]:
    return sorted(set(TABLE) | set(PACKAGES) | set(_added) | set(_decorated))


def names(kind: str) -> list[str]:
    """Every name of ``kind`` known without importing anything: the shipped table, plus what
    registered itself or was registered so far. Cheap: meant for CLI choices and listings."""
    return sorted(set(TABLE.get(kind, {})) | set(_added.get(kind, {})) | set(_decorated.get(kind, {})))


def classes(kind: str) -> dict[str, Any]:
    """The classes of ``kind`` whose decorators have run so far, by name."""
    return dict(_decorated.get(kind, {}))


def discover(kind: str) -> dict[str, str]:
    """Import every module of ``kind``'s package and every plugin module, so that their
    decorators run. Returns the modules that failed to import, with why (also logged); a
    clash between two registrations is raised, not returned."""
    from importlib import metadata  # 30 ms at import: only discovery needs it

    failed: dict[str, str] = {}
    package = PACKAGES.get(kind)
    if package is not None:
        root = importlib.import_module(package)
        for info in pkgutil.walk_packages(root.__path__, prefix=f"{package}.", onerror=lambda _name: None):
            _import_for_discovery(info.name, failed)
    for entry in metadata.entry_points(group=PLUGIN_GROUP):
        _import_for_discovery(entry.value.split(":", 1)[0].strip(), failed)
    _failed.clear()
    _failed.update(failed)
    return failed


def _import_for_discovery(module: str, failed: dict[str, str]) -> None:
    try:
        importlib.import_module(module)
    except RegistrationError:
        raise
    except Exception as exc:  # a broken or optional module must not hide every other name
        failed[module] = f"{type(exc).__name__}: {exc}"
        log.warning("registry discovery could not import %s: %s", module, failed[module])


def lookup(kind: str, name: str) -> Any:
    """The class registered as ``name`` of ``kind``, importing only what it needs; on a miss,
    after :func:`discover`."""
    if kind not in kinds():
        raise UnknownNameError(f"unknown registry kind {kind!r}; known kinds: {', '.join(kinds())}")
    found = _decorated.get(kind, {}).get(name)
    if found is not None:
        return found
    target = _added.get(kind, {}).get(name) or TABLE.get(kind, {}).get(name)
    if target is not None:
        return _resolve(kind, name, target)
    discover(kind)
    found = _decorated.get(kind, {}).get(name)
    if found is not None:
        return found
    known = names(kind)
    close = difflib.get_close_matches(name, known, n=3)
    hint = f" Did you mean {', '.join(repr(c) for c in close)}?" if close else ""
    broken = "".join(f" {module} could not be imported ({why}) and may hold it." for module, why in _failed.items())
    raise UnknownNameError(f"unknown {kind} {name!r}.{hint} Known {kind}s: {', '.join(known) or '(none)'}.{broken}")


def _resolve(kind: str, name: str, target: str) -> Any:
    module_name, attr = target.split(":", 1)
    module = importlib.import_module(module_name)
    # The decorator is the source of truth; the target's attribute serves objects registered
    # by register() that carry no decorator.
    found = _decorated.get(kind, {}).get(name)
    if found is not None:
        return found
    try:
        return getattr(module, attr)
    except AttributeError as exc:
        raise ImportError(f"registry entry {kind} {name!r} points to {target}, which does not exist") from exc
