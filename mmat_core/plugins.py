"""The plugin manager: discovers plugins, isolates broken ones and fills the typed registries.

Discovery order (also in docs/plugins/load-order.md):

1. ``mmat`` entry points of every installed distribution, built-ins included (they are declared in
   mmat's own pyproject exactly like a third party's), sorted by distribution then entry-point name.
2. The allow list (``--plugins a,b`` or ``MMAT_PLUGINS``) drops every plugin not named, before
   it is imported.
3. The block list (``-p no:NAME`` or ``MMAT_DISABLE_PLUGINS=a,b``) drops the named ones, also
   before import.
4. Plugins registered in code (``manager.register(obj, name)``) come after entry points.
5. A hook implementation whose name is no hook of mmat's (``register_tool`` for
   ``register_tools``) is reported: a warning naming the plugin, the hook and the closest real
   hook, or an error with ``MMAT_STRICT_PLUGINS=1``.
6. Each plugin's collection hooks run into a staging area; only when all its hooks succeeded are
   its components committed, so a failing plugin leaves nothing half-registered.
7. A name claimed twice in one family is an error naming both plugins.

Loading happens once, lazily, on the first lookup: never at import time. It has two steps, so that
``mmat --help`` stays fast: :meth:`PluginManager.load_hooks` imports and registers the plugins
(steps 1 to 5), which is all that listing the commands of ``register_commands`` needs;
:meth:`PluginManager.load` goes on to run the collection hooks (steps 6 and 7), which import the
component classes (and pydantic with them). This module imports neither for the same reason.
"""

from __future__ import annotations

import difflib
import functools
import importlib
import os
import re
import sys
import warnings
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeVar

import pluggy

from mmat_core import hookspecs
from mmat_core.errors import DuplicateComponentError, PluginError, UnknownComponentError

if TYPE_CHECKING:  # the component bases import pydantic: imported when a collection hook runs
    from mmat_core.components import Component

ENTRY_POINT_GROUP = "mmat"
C = TypeVar("C", bound="Component")


# -- entry points ------------------------------------------------------------------------------
#
# Every mmat command reads the ``mmat`` entry points; importing ``importlib.metadata`` to do so
# (with the email, zipfile and csv modules it pulls in) costs about a quarter of ``mmat --help``.
# Installed distributions are plain folders on ``sys.path`` in nearly every environment, so mmat
# reads their ``entry_points.txt`` itself, the way ``importlib.metadata.entry_points()`` does
# (first distribution of a name on the path wins), and hands anything else (a zip or an egg on
# the path, a finder that supplies distributions of its own) to ``importlib.metadata``.
# tests/core/test_plugins.py checks that both give the same entry points.


@dataclass(frozen=True)
class PluginEntryPoint:
    """One entry point of the ``mmat`` group: its name and the object it names (``module`` or
    ``module:attribute``)."""

    name: str
    value: str

    def load(self) -> Any:
        """Import the module and return the named object (what ``EntryPoint.load`` does)."""
        found = _ENTRY_POINT_VALUE.match(self.value)
        if found is None:
            raise ValueError(f"not an entry point: {self.value!r} (expected module or module:attribute)")
        target: Any = importlib.import_module(found["module"])
        for part in filter(None, (found["attr"] or "").split(".")):
            target = getattr(target, part)
        return target


#: ``module[:attr][ [extras]]``, as importlib.metadata reads an entry point's value.
_ENTRY_POINT_VALUE = re.compile(r"(?P<module>[\w.]+)\s*(:\s*(?P<attr>[\w.]+)\s*)?((?P<extras>\[.*\])\s*)?$")


def _normalized_distribution(folder: str) -> str:
    """The distribution name of a ``.dist-info``/``.egg-info`` folder, normalized as
    importlib.metadata compares them (PEP 503, dashes as underscores)."""
    name = folder.lower().rpartition(".")[0].partition("-")[0]
    return re.sub(r"[-_.]+", "-", name).replace("-", "_")


def _metadata_headers(folder: str) -> dict[str, str]:
    """The header fields (lower-cased names) of a distribution's METADATA or PKG-INFO."""
    for name in ("METADATA", "PKG-INFO"):
        try:
            with open(os.path.join(folder, name), encoding="utf-8", errors="replace") as handle:
                headers: dict[str, str] = {}
                for line in handle:
                    if not line.strip():
                        break  # the body (the long description) follows the first blank line
                    key, colon, value = line.partition(":")
                    if colon and not line[0].isspace():
                        headers.setdefault(key.strip().lower(), value.strip())
                return headers
        except OSError:
            continue
    return {}


def _read_group(path: str, group: str) -> list[tuple[str, str]]:
    """(name, value) of the ``group`` section of an ``entry_points.txt`` (empty if none)."""
    try:
        with open(path, encoding="utf-8") as handle:
            lines = handle.read().splitlines()
    except OSError:
        return []
    found, section = [], None
    for line in lines:
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("[") and line.endswith("]"):
            section = line[1:-1].strip()
        elif section == group and "=" in line:
            name, _, value = line.partition("=")
            found.append((name.strip(), value.strip()))
    return found


def scan_entry_points(group: str) -> list[tuple[PluginEntryPoint, str, str]] | None:
    """The entry points of ``group`` with their distribution's name and version, read from the
    distribution folders on ``sys.path``; None when the path holds something only
    ``importlib.metadata`` can read (a zip, an egg, a finder with distributions of its own)."""
    from importlib.machinery import PathFinder

    if any(hasattr(finder, "find_distributions") and finder is not PathFinder for finder in sys.meta_path):
        return None
    found: list[tuple[PluginEntryPoint, str, str]] = []
    seen: set[str] = set()
    for entry in sys.path:
        root = entry or "."
        if os.path.isfile(root) or root.lower().endswith(".egg"):
            return None
        try:
            children = os.listdir(root)
        except OSError:
            continue  # a missing folder on the path holds nothing
        for child in children:
            if not child.lower().endswith((".dist-info", ".egg-info")):
                continue
            normalized = _normalized_distribution(child)
            if normalized in seen:
                continue  # the first distribution of a name on the path wins
            seen.add(normalized)
            folder = os.path.join(root, child)
            entries = _read_group(os.path.join(folder, "entry_points.txt"), group)
            if not entries:
                continue
            headers = _metadata_headers(folder)
            for name, value in entries:
                found.append((PluginEntryPoint(name, value), headers.get("name", ""), headers.get("version", "?")))
    return found


def metadata_entry_points(group: str) -> list[tuple[PluginEntryPoint, str, str]]:
    """The same as :func:`scan_entry_points`, through ``importlib.metadata`` (any environment)."""
    import importlib.metadata

    found = []
    names: dict[int, tuple[str, str]] = {}
    for ep in importlib.metadata.entry_points(group=group):
        if ep.dist is None:
            found.append((PluginEntryPoint(ep.name, ep.value), "", "?"))
            continue
        if id(ep.dist) not in names:  # each read of a field parses the metadata file again
            meta = ep.dist.metadata
            names[id(ep.dist)] = (meta["Name"], meta["Version"])
        found.append((PluginEntryPoint(ep.name, ep.value), *names[id(ep.dist)]))
    return found


class PluginWarning(UserWarning):
    """Warning issued when a plugin fails to load and is skipped."""


@dataclass
class PluginInfo:
    """What ``mmat plugins`` shows of one plugin."""

    name: str
    version: str
    distribution: str
    hooks: list[str] = field(default_factory=list)
    components: dict[str, list[str]] = field(default_factory=dict)
    error: str | None = None

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {
            "name": self.name,
            "version": self.version,
            "distribution": self.distribution,
            "hooks": self.hooks,
            "components": self.components,
            **({"error": self.error} if self.error else {}),
        }


class Registry:
    """Components of one family, by name, each stamped with the plugin that supplied it."""

    def __init__(self, family: str) -> None:
        self.family = family
        self._items: dict[str, type[Component]] = {}

    def names(self) -> list[str]:
        """Registered names, sorted."""
        return sorted(self._items)

    def items(self) -> list[tuple[str, type[Component]]]:
        """(name, class) pairs, sorted by name."""
        return sorted(self._items.items())

    def __contains__(self, name: object) -> bool:
        return name in self._items

    def get(self, name: str) -> type[Component]:
        """The class registered as ``name``; an unknown name lists the choices."""
        try:
            return self._items[name]
        except KeyError:
            raise UnknownComponentError(self.family, name, self._items) from None

    def add(self, cls: type[Component], plugin: str) -> None:
        """Register ``cls``; a second plugin claiming the same name is an error naming both."""
        existing = self._items.get(cls.name)
        if existing is not None and existing is not cls:
            raise DuplicateComponentError(
                f"{self.family} '{cls.name}' is registered by two plugins: "
                f"'{existing.plugin}' ({existing.__module__}.{existing.__qualname__}) and "
                f"'{plugin}' ({cls.__module__}.{cls.__qualname__}). Block one with -p no:NAME."
            )
        self._items[cls.name] = cls


def _split_names(value: str | None) -> list[str]:
    return [part.strip() for part in (value or "").split(",") if part.strip()]


class PluginManager:
    """Loads plugins once and answers lookups by family and name."""

    def __init__(
        self,
        *,
        allow: Iterable[str] | None = None,
        block: Iterable[str] = (),
        strict: bool | None = None,
        entry_points: bool = True,
    ) -> None:
        env_allow = _split_names(os.environ.get("MMAT_PLUGINS"))
        self.allow: set[str] | None = set(allow) if allow is not None else (set(env_allow) or None)
        self.block: set[str] = set(block) | set(_split_names(os.environ.get("MMAT_DISABLE_PLUGINS")))
        self.strict = strict if strict is not None else os.environ.get("MMAT_STRICT_PLUGINS") == "1"
        self.use_entry_points = entry_points
        self.pm = pluggy.PluginManager(hookspecs.PROJECT_NAME)
        self.pm.add_hookspecs(hookspecs)
        self.registries = {family: Registry(family) for family in hookspecs.COLLECTION_HOOKS.values()}
        self.plugins: dict[str, PluginInfo] = {}
        #: Plugins registered in code and not yet registered with pluggy.
        self._pending: list[tuple[str, Any, PluginInfo]] = []
        #: Plugins registered with pluggy whose collection hooks have not run yet.
        self._uncollected: list[tuple[str, Any, PluginInfo]] = []
        self._entry_points: list[tuple[PluginEntryPoint, str, str]] | None = None
        self._discovered = False
        self._loaded = False

    # -- discovery -------------------------------------------------------------------------

    def _wanted(self, name: str, distribution: str = "") -> bool:
        """Allow and block lists; ``builtins`` in the allow list stands for every built-in plugin."""
        if name in self.block:
            return False
        if self.allow is None or name in self.allow:
            return True
        return "builtins" in self.allow and distribution == "mmat"

    def entry_points(self) -> list[tuple[PluginEntryPoint, str, str]]:
        """The ``mmat`` entry points with their distribution's name and version, sorted by
        distribution then name (read once per manager; see :func:`scan_entry_points`)."""
        if self._entry_points is None:
            found = scan_entry_points(ENTRY_POINT_GROUP)
            if found is None:
                found = metadata_entry_points(ENTRY_POINT_GROUP)
            self._entry_points = sorted(found, key=lambda row: (row[1], row[0].name))
        return self._entry_points

    def _discover(self) -> list[tuple[str, Any, PluginInfo]]:
        """Import the wanted entry points; failures are reported and skipped."""
        found: list[tuple[str, Any, PluginInfo]] = []
        if not self.use_entry_points:
            return found
        for ep, distribution, version in self.entry_points():
            if not self._wanted(ep.name, distribution):
                continue
            info = PluginInfo(name=ep.name, version=version, distribution=distribution or "?")
            try:
                module = ep.load()
            except Exception as exc:  # a broken plugin must never take mmat down with it
                self._fail(info, f"import failed: {type(exc).__name__}: {exc}", exc)
                continue
            found.append((ep.name, module, info))
        return found

    def register(self, plugin: Any, name: str, version: str = "0") -> None:
        """Register a plugin object (a module or an object with hookimpls) from code, e.g. in tests."""
        info = PluginInfo(name=name, version=version, distribution="(registered in code)")
        if self._loaded:
            if self._register_hooks(name, plugin, info):
                self._collect(name, plugin, info)
        elif self._discovered:
            if self._register_hooks(name, plugin, info):
                self._uncollected.append((name, plugin, info))
        else:
            self._pending.append((name, plugin, info))

    def _fail(self, info: PluginInfo, message: str, exc: BaseException) -> None:
        info.error = message
        self.plugins[info.name] = info
        text = f"mmat: plugin '{info.name}' ({info.distribution} {info.version}) was not loaded: {message}"
        if self.strict:
            raise PluginError(text + " (MMAT_STRICT_PLUGINS=1)") from exc
        warnings.warn(text, PluginWarning, stacklevel=3)

    def unknown_hooks(self, plugin: Any) -> list[str]:
        """Names of the hooks ``plugin`` implements that mmat does not specify.

        The rule of pluggy's ``check_pending()`` (an implementation with no specification that is
        not marked ``optionalhook``), applied to one plugin: ``check_pending`` stops at the first
        offender of any plugin, while the report must name this plugin and each of its hooks."""
        unknown = []
        for caller in self.pm.get_hookcallers(plugin) or ():
            if caller.has_spec():
                continue
            if any(impl.plugin is plugin and not impl.optionalhook for impl in caller.get_hookimpls()):
                unknown.append(caller.name)
        return sorted(unknown)

    def _report_unknown_hooks(self, name: str, plugin: Any, info: PluginInfo) -> None:
        """Warn about (or, in strict mode, refuse) hook implementations nothing will ever call:
        a misspelt ``register_tool`` would otherwise be ignored without a word."""
        unknown = self.unknown_hooks(plugin)
        if not unknown:
            return
        specified = sorted(hook for hook, caller in vars(self.pm.hook).items()
                           if not hook.startswith("_") and caller.has_spec())
        problems = []
        for hook in unknown:
            guess = difflib.get_close_matches(hook, specified, n=1)
            hint = f" Did you mean '{guess[0]}'?" if guess else ""
            problems.append(f"'{hook}' is not an mmat hook.{hint}")
        text = (f"mmat: plugin '{name}' ({info.distribution} {info.version}) implements an unknown hook, "
                f"which is never called: {' '.join(problems)} Hooks: {', '.join(specified)}")
        if self.strict:
            self.pm.unregister(plugin)
            info.error = text
            self.plugins[name] = info
            raise PluginError(text + " (MMAT_STRICT_PLUGINS=1)")
        warnings.warn(text, PluginWarning, stacklevel=4)

    def _register_hooks(self, name: str, plugin: Any, info: PluginInfo) -> bool:
        """Register the plugin's hooks with pluggy (unknown hooks reported); False if it failed.
        Its commands can be listed from here on; its components come with :meth:`_collect`."""
        try:
            self.pm.register(plugin, name=name)
        except Exception as exc:
            self._fail(info, f"registration failed: {type(exc).__name__}: {exc}", exc)
            return False
        self._report_unknown_hooks(name, plugin, info)
        hooks = [hook for hook in (*hookspecs.COLLECTION_HOOKS, "register_commands")
                 if any(impl.plugin is plugin for impl in getattr(self.pm.hook, hook).get_hookimpls())]
        # Until the collection hooks have run, the hooks are the ones implemented.
        info.hooks = hooks
        self.plugins[name] = info
        return True

    def _collect(self, name: str, plugin: Any, info: PluginInfo) -> None:
        """Run the plugin's collection hooks into a staging area, then commit all or nothing."""
        from mmat_core.components import FAMILY_BASES  # pydantic: only now

        staged: list[tuple[str, type[Component]]] = []
        hooks: list[str] = []
        try:
            for hook_name, family in hookspecs.COLLECTION_HOOKS.items():
                impls = [impl for impl in getattr(self.pm.hook, hook_name).get_hookimpls() if impl.plugin is plugin]
                if not impls:
                    continue
                hooks.append(hook_name)
                base = FAMILY_BASES[family]
                for impl in impls:
                    def register(cls: type[Component], _family: str = family, _base: type = base) -> None:
                        if not (isinstance(cls, type) and issubclass(cls, _base)):
                            raise TypeError(f"{cls!r} is not a subclass of {_base.__module__}.{_base.__name__}")
                        if not cls.name:
                            raise TypeError(f"{cls.__qualname__} has no 'name'")
                        staged.append((_family, cls))

                    impl.function(register=register)
            # Check for clashes before touching any registry, so a clash leaves nothing behind.
            seen: dict[tuple[str, str], type[Component]] = {}
            for family, cls in staged:
                key = (family, cls.name)
                if key in seen and seen[key] is not cls:
                    raise DuplicateComponentError(f"{family} '{cls.name}' is registered twice by plugin '{name}'")
                seen[key] = cls
                existing = self.registries[family]._items.get(cls.name)
                if existing is not None and existing is not cls:
                    raise DuplicateComponentError(
                        f"{family} '{cls.name}' is registered by two plugins: '{existing.plugin}' "
                        f"({existing.__module__}) and '{name}' ({cls.__module__}). Block one with -p no:NAME."
                    )
        except DuplicateComponentError:
            self.pm.unregister(plugin)
            self.plugins.pop(name, None)
            raise
        except Exception as exc:
            self.pm.unregister(plugin)
            info.hooks = []
            self._fail(info, f"{type(exc).__name__}: {exc}", exc)
            return
        for family, cls in staged:
            cls.plugin = name
            self.registries[family].add(cls, name)
            info.components.setdefault(family, [])
            if cls.name not in info.components[family]:
                info.components[family].append(cls.name)
        if any(impl.plugin is plugin for impl in self.pm.hook.register_commands.get_hookimpls()):
            hooks.append("register_commands")  # not a collection hook: the CLI runs it when needed
        info.hooks = hooks
        self.plugins[name] = info

    def available_names(self) -> list[str]:
        """Every name an allow or block list may use: the ``mmat`` entry points (read from the
        installed metadata, nothing imported), plugins registered in code, and ``builtins``."""
        names = {ep.name for ep, _dist, _version in self.entry_points()} if self.use_entry_points else set()
        names |= {name for name, _plugin, _info in self._pending} | set(self.plugins)
        return sorted(names | {"builtins"})

    def check_names(self) -> None:
        """Refuse allow or block lists naming a plugin that is not installed (a misspelt name
        would otherwise load nothing, or block nothing, without a word)."""
        listed = [("allow list (--plugins / MMAT_PLUGINS)", name) for name in sorted(self.allow or ())]
        listed += [("block list (-p no:NAME / MMAT_DISABLE_PLUGINS)", name) for name in sorted(self.block)]
        if not listed:
            return
        available = self.available_names()
        problems = []
        for where, name in listed:
            if name not in available:
                guess = difflib.get_close_matches(name, available, n=1)
                hint = f" Did you mean '{guess[0]}'?" if guess else ""
                problems.append(f"unknown plugin '{name}' in the {where}.{hint}")
        if problems:
            raise PluginError(" ".join(problems) + f" Available: {', '.join(available)}")

    def load_hooks(self) -> PluginManager:
        """Import and register the wanted plugins without running their collection hooks
        (idempotent): enough to list the commands plugins add, and cheap when their hook modules
        import their components inside the hooks. Unknown names in the allow or block list are
        an error (:meth:`check_names`)."""
        if self._discovered:
            return self
        self.check_names()
        # Entry points first, then plugins registered in code (see the discovery order above).
        pending, self._pending = self._discover() + self._pending, []
        self._discovered = True
        for name, plugin, info in pending:
            wanted = info.distribution == "(registered in code)" or self._wanted(name, info.distribution)
            if wanted and self._register_hooks(name, plugin, info):
                self._uncollected.append((name, plugin, info))
        return self

    def load(self) -> PluginManager:
        """Discover plugins and fill the registries from their collection hooks (idempotent)."""
        if self._loaded:
            return self
        self.load_hooks()
        while self._uncollected:
            name, plugin, info = self._uncollected.pop(0)
            self._collect(name, plugin, info)
        self._loaded = True
        return self

    # -- lookups ---------------------------------------------------------------------------

    def registry(self, family: str) -> Registry:
        """The registry of one family (loading plugins on first use)."""
        self.load()
        return self.registries[family]

    def get(self, family: str, name: str) -> type[Component]:
        """The component class ``name`` of ``family``; unknown names answer with suggestions."""
        return self.registry(family).get(name)

    def create(self, family: str, name: str, **options: Any) -> Component:
        """Instantiate a component with validated options."""
        return self.get(family, name)(**options)

    def info(self) -> list[PluginInfo]:
        """Every plugin seen (loaded or failed), sorted by name."""
        self.load()
        return [self.plugins[name] for name in sorted(self.plugins)]


_default: PluginManager | None = None


def get_plugin_manager() -> PluginManager:
    """The process-wide manager, configured from the environment (created on first call)."""
    global _default
    if _default is None:
        _default = PluginManager()
    return _default


def set_plugin_manager(manager: PluginManager | None) -> None:
    """Replace the process-wide manager (the CLI does so for --plugins and -p no:NAME)."""
    global _default
    _default = manager


@functools.lru_cache(maxsize=1)
def mmat_version() -> str:
    """The installed version of mmat (read once: every Trace's provenance asks for it, and each
    metadata read parses a file)."""
    import importlib.metadata

    try:
        return importlib.metadata.version("mmat")
    except importlib.metadata.PackageNotFoundError:  # running from a source tree
        return "0+unknown"

