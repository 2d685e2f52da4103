"""One registry: names of scorers and selectors mapped to the classes that implement them.

Registration is at the definition site: a class says what it is registered as, in its own
module (as lm-evaluation-harness does with ``register_model`` in ``lm_eval/api/registry.py``)::

    from syllabus import registry

    @registry.scorer("quality")
    class QualityScorer(Scorer): ...

Finding a name, cheapest first:

1. classes whose decorator has already run (their module was imported);
2. the **scan**: the source files of the kind's package (``PACKAGES``: ``syllabus.scoring`` or
   ``syllabus.selection``, every folder on its ``__path__``) read as text for
   ``@registry.scorer("name")`` / ``@registry.selector("name")`` at the start of a line with
   the class below it. Listing names (``names``, CLI choices) and validating a recipe read
   only that, so ``syllabus --help`` imports neither torch nor the scorers, and ``lookup``
   imports only the one module a name needs. A file is read again only when its mtime or size
   changes;
3. discovery, on a miss: every module of the kind's package and every plugin module named by
   the ``syllabus.plugins`` entry-point group is imported, and the name is looked for again;
4. otherwise an :class:`UnknownNameError` listing the known names and the closest matches.

So a name is written once, at its decorator: a new scorer is its module and the recipe line that
names it. Why a scan rather than entry points per scorer: an entry point restates the name in
pyproject.toml and is seen only after a reinstall; the scan reads what the decorators say, in
about 2 ms for both packages (regular expressions over about 400 KB; ``ast`` took 70 ms) and
0.3 ms again when no file changed. A decorator the scan cannot read (a name built at run time,
the decorator imported under another name) still works through discovery; ``tests/unit/test_registry.py`` checks that for every
shipped module the scan and the decorators agree, and names the line to rewrite when not.
Plugins outside the package declare one entry point per plugin module, not per scorer.
"""

from __future__ import annotations

import difflib
import importlib
import logging
import os
import pkgutil
import re
import sys
from typing import Any, Callable, TypeVar

log = logging.getLogger(__name__)

# The package whose source files the scan reads, and whose modules discovery imports, for each kind.
PACKAGES: dict[str, str] = {"scorer": "syllabus.scoring", "selector": "syllabus.selection"}

# Entry points of this group name plugin modules (``value = "mypkg.scorers"``); discovery
# imports them so that their decorators run. One line per plugin package, not per scorer.
PLUGIN_GROUP = "syllabus.plugins"

_decorated: dict[str, dict[str, Any]] = {}  # kind -> name -> class, filled as modules are imported
_added: dict[str, dict[str, str]] = {}  # kind -> name -> "module:Attr", from register() at run time
_failed: dict[str, str] = {}  # module -> why its import failed in the last discovery
_scanned: dict[str, tuple[tuple[int, int], list[tuple[str, str, str]]]] = {}  # file -> ((mtime_ns, size), found)

# A registration as the scan reads it: the decorator at the start of a line, its name a string
# literal, then (after any other decorators) the class it registers.
_DECORATOR = re.compile(
    r"""^@registry\.(scorer|selector)\(\s*(["'])([^"'\n]+)\2\s*\)[ \t]*(?:#[^\n]*)?\n(?:@[^\n]*\n)*class[ \t]+(\w+)""",
    re.M)

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
    Its module stays imported; a name whose decorator is still in a package's source comes
    back from the scan on the next lookup."""
    found = _decorated.get(kind, {}).pop(name, None) is not None
    found = _added.get(kind, {}).pop(name, None) is not None or found
    if not found:
        raise UnknownNameError(f"{kind} {name!r} was not registered at run time, so there is nothing to unregister")


def kinds() -> list[str]:
    return sorted(set(PACKAGES) | set(_added) | set(_decorated))


def _package_folders(package: str) -> list[str]:
    """The folders of ``package`` without importing it (its ``__path__`` once it is imported,
    which a user may have extended)."""
    module = sys.modules.get(package)
    if module is not None:
        return list(getattr(module, "__path__", []))
    import importlib.util

    spec = importlib.util.find_spec(package)  # imports the parent package only (syllabus)
    return list(spec.submodule_search_locations or []) if spec is not None else []


def _scan_file(path: str) -> list[tuple[str, str, str]]:
    """(kind, name, class) for every registration the file's text shows; read again only when
    its mtime or size changed."""
    try:
        st = os.stat(path)
    except OSError:
        return []
    stamp = (st.st_mtime_ns, st.st_size)
    cached = _scanned.get(path)
    if cached is not None and cached[0] == stamp:
        return cached[1]
    try:
        with open(path, encoding="utf-8") as fh:
            text = fh.read()
    except (OSError, UnicodeDecodeError):
        return []
    found = [(m.group(1), m.group(3), m.group(4)) for m in _DECORATOR.finditer(text)] if "@registry." in text else []
    _scanned[path] = (stamp, found)
    return found


def scan(kind: str) -> dict[str, str]:
    """Name -> ``"module:Class"`` for every ``@registry.<kind>("name")`` in the source of
    ``kind``'s package, read as text: nothing is imported."""
    package = PACKAGES.get(kind)
    if package is None:
        return {}
    out: dict[str, str] = {}
    for folder in _package_folders(package):
        for root, dirs, files in os.walk(folder):
            dirs[:] = sorted(d for d in dirs if d.isidentifier() and os.path.exists(os.path.join(root, d, "__init__.py")))
            rel = os.path.relpath(root, folder)
            prefix = package if rel == "." else f"{package}.{rel.replace(os.sep, '.')}"
            for file in sorted(files):
                if not file.endswith(".py"):
                    continue
                stem = file[:-3]
                module = prefix if stem == "__init__" else f"{prefix}.{stem}"
                for found_kind, name, cls in _scan_file(os.path.join(root, file)):
                    if found_kind == kind:
                        out.setdefault(name, f"{module}:{cls}")
    return out


def names(kind: str) -> list[str]:
    """Every name of ``kind`` known without importing anything: the scan of its package's
    source, plus what registered itself or was registered so far. Cheap: meant for CLI choices
    and listings."""
    return sorted(set(scan(kind)) | set(_added.get(kind, {})) | set(_decorated.get(kind, {})))


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
    target = _added.get(kind, {}).get(name)
    if target is not None:
        return _resolve(kind, name, target)
    target = scan(kind).get(name)
    if target is not None:
        # Only the one module; its decorator registers the class (a scanned name whose
        # decorator did not run falls through to discovery and its error).
        importlib.import_module(target.split(":", 1)[0])
        found = _decorated.get(kind, {}).get(name)
        if found is not None:
            return found
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
