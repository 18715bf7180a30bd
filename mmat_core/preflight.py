"""What a build still lacks, said once before any work, and how it departs from the paper.

Every build is checked, however it was assembled (``mmat build`` with a recipe, a config file or
flags; :meth:`~mmat_core.pipeline.Pipeline.run` in Python): each component is built and asked
:meth:`~mmat_core.components.Component.preflight`, and every problem (an unknown name, a bad or
missing option, a missing API or search key, detector weights that are not on this machine, a
dataset path that does not exist) goes into one :class:`~mmat_core.errors.ConfigError`, each
line saying how to supply what is missing. Nothing is read, called or written.

This module sits above :mod:`mmat_core.config` (it checks a loaded configuration); the recipe
files and the defaults of a build that names no tools or search are below it, in
:mod:`mmat_core.recipes`. Neither imports a plugin: they ask the registered components.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import ValidationError

from mmat_core.components import Component
from mmat_core.config import PipelineConfig, config_data, load_config, validation_error
from mmat_core.errors import ConfigError
from mmat_core.recipes import PAPER_OPERATORS, operator_off_reason, search_off_reason

if TYPE_CHECKING:
    from mmat_core.plugins import PluginManager

#: Config key -> plugin family of its components.
FAMILIES = {"source": "source", "llm": "llm", "tools": "tool", "search": "search", "critics": "critic",
            "formatters": "formatter", "executor": "executor"}
#: The last line of every "cannot start" message.
NOTHING_DONE = "Nothing was run and nothing was written."


def cannot_start(problems: list[str], file: str | None = None) -> ConfigError:
    """One ConfigError listing every problem, each on its own line; ``.problems`` keeps the list."""
    listing = "\n".join(f"  - {problem}" for problem in problems)
    error = ConfigError(f"this build cannot start; it lacks {len(problems)} thing(s), each with how to supply it:\n"
                        f"{listing}\n{NOTHING_DONE}", file=file)
    error.problems = problems  # type: ignore[attr-defined]
    return error


def readiness(key: str, component: Component) -> list[str]:
    """The component's own :meth:`~mmat_core.components.Component.preflight` lines, each after
    ``KEY (NAME): ``."""
    return [f"{key} ({component.name}): {line}" for line in component.preflight(key)]


# ---- a raw configuration: every component built once and thrown away ---------------------------


def _components(data: dict[str, Any]) -> list[tuple[str, str, str, dict[str, Any]]]:
    """(config key, family, name, options) of every component named in a raw configuration."""
    found = []
    for head, family in FAMILIES.items():
        value = data.get(head)
        items = value if isinstance(value, list) else ([] if value is None else [value])
        for index, item in enumerate(items):
            key = f"{head}[{index}]" if isinstance(value, list) and (head != "source" or len(items) > 1) else head
            if isinstance(item, str):
                found.append((key, family, item, {}))
            elif isinstance(item, dict) and isinstance(item.get("name"), str):
                found.append((key, family, item["name"], {k: v for k, v in item.items() if k != "name"}))
    return found


def _option_problems(key: str, cls: type[Component], exc: ValidationError) -> list[str]:
    problems = []
    for err in exc.errors():
        field = ".".join(str(part) for part in err["loc"])
        if err["type"] == "missing":
            info = cls.Options.model_fields.get(str(err["loc"][0]))
            about = f" ({info.description})" if info is not None and info.description else ""
            problems.append(f"{key}.{field} is required{about}: give it with --set {key}.{field}=VALUE")
        else:
            problems.append(str(validation_error(type(exc).from_exception_data(exc.title, [err]), cls.Options, None,
                                                 prefix=f"{key}.")))
    return problems


def _construction_problem(key: str, family: str, name: str, exc: ConfigError) -> str:
    """A component's own ConfigError, re-keyed to where it sits in the config (``source[3].path``)."""
    message = str(exc)
    if exc.key and message.startswith(f"{exc.key}: "):
        message = message[len(exc.key) + 2:]
    if not exc.key:
        return f"{key}: {message}"
    head, _, rest = exc.key.partition(".")
    where = (key + (f".{rest}" if rest else "")) if head in (key.split("[")[0], family, name) else f"{key}.{exc.key}"
    # A source names the option it lacks (path, image_root): say how to give it.
    hint = f" (give it with --set {where}=...)" if family == "source" and "." not in exc.key else ""
    return f"{where}: {message}{hint}"


def component_problems(data: dict[str, Any], plugins: PluginManager | None = None) -> list[str]:
    """Every problem of the components a raw configuration names (unknown names, bad or missing
    options, what building them or their :meth:`~mmat_core.components.Component.preflight`
    reports), each with how to supply it. Builds each component and throws it away."""
    from mmat_core.plugins import get_plugin_manager

    manager = plugins or get_plugin_manager()
    problems: list[str] = []
    for key, family, name, options in _components(data):
        try:
            cls = manager.get(family, name)
        except ConfigError as exc:
            problems.append(f"{key}.name: {exc}")
            continue
        try:
            parsed = cls.Options(**options)
        except ValidationError as exc:
            problems.extend(_option_problems(key, cls, exc))
            continue
        try:
            component = cls(parsed)
        except ConfigError as exc:
            problems.append(_construction_problem(key, family, name, exc))
            continue
        problems.extend(readiness(key, component))
    return problems


def preflight(config: PipelineConfig, *, plugins: PluginManager | None = None, file: str | None = None) -> None:
    """Raise one ConfigError listing every problem of ``config``'s components (see :func:`component_problems`)."""
    problems = component_problems(config.model_dump(mode="json"), plugins)
    if problems:
        raise cannot_start(problems, file)


def _problem_key(problem: str) -> str:
    return problem.split(":", 1)[0].split(" ", 1)[0]


def load_checked(path: str | Path | None, overrides: dict[str, Any] | None = None,
                 recipe: str | None = None) -> PipelineConfig:
    """``load_config`` for a build, with everything it lacks (the configuration's own errors and
    what its components need: keys, weights, paths) in one message. ``mmat build`` loads every
    configuration this way, with or without a recipe."""
    file = str(path) if path else None
    mine = component_problems(config_data(path, overrides, recipe))
    try:
        config = load_config(path, overrides, recipe)
    except ConfigError as exc:
        if not mine:
            raise  # the configuration's own errors, as load_config words them
        theirs = list(getattr(exc, "problems", None) or [str(exc)])
        covered = {_problem_key(problem) for problem in mine}
        raise cannot_start([p for p in theirs if _problem_key(p) not in covered] + mine, file) from None
    if mine:
        raise cannot_start(mine, file)
    return config


# ---- how a build departs from the paper ----------------------------------------------------------


def paper_departures(config: PipelineConfig, plugins: PluginManager | None = None) -> list[str]:
    """One line for each of the paper's operators (and web RAG) this build does not run, with why."""
    chosen = {spec.name for spec in config.tools}
    asked = "tools" in config.model_fields_set
    notes = []
    for name in PAPER_OPERATORS:
        if name in chosen:
            continue
        reason = None if asked else operator_off_reason(name, config.llm.name, plugins)
        notes.append(f"{name} off: {reason or 'not in the configured tools'}")
    if config.search is None:
        if "search" in config.model_fields_set:
            notes.append("RAG off: search is null in the configuration")
        else:
            notes.append(f"RAG off: {search_off_reason(plugins) or 'no search in the configuration'}")
    elif config.search.name == "local":
        notes.append("RAG searches a local corpus (the paper used Google search; see docs/recipes.md)")
    return notes
