"""Recipes: named, shipped configs a build starts from (``mmat build --recipe paper``).

A recipe is a plain YAML config in this folder; its first comment line is its one-line
description. It is the lowest layer of a build's configuration: a config file given with
``--config`` overrides its keys, and flags and ``--set`` override both.

This module also holds what makes a build *say* how it departs from the paper instead of
silently building something else: the default operators and search for a build that names
none (:func:`default_tools`, :func:`default_search`), the check that lists everything a build
still lacks in one message before any model call (:func:`preflight`), and the notes a build's
summary prints for each of the paper's operators that is off (:func:`paper_departures`).
"""

from __future__ import annotations

import difflib
import importlib.util
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mmat_core.errors import ConfigError

if TYPE_CHECKING:
    from mmat_core.config import PipelineConfig
    from mmat_core.plugins import PluginManager

RECIPES_DIR = Path(__file__).resolve().parent
#: The paper's operators, in the order the paper lists them.
PAPER_OPERATORS = ("image_caption", "label_bbox", "ocr", "face_detection")
#: Operators a build that names none runs in any case (they need no download).
BASE_OPERATORS = ("image_caption", "ocr", "face_detection")
#: The detector ``label_bbox`` downloads when none is given (kept in step with plugins/tools/detectors.py).
DEFAULT_DETECTOR = "IDEA-Research/grounding-dino-tiny"


# ---- the shipped recipes ---------------------------------------------------------------------


def recipe_names() -> list[str]:
    """The shipped recipes, sorted."""
    return sorted(path.stem for path in RECIPES_DIR.glob("*.yaml"))


def recipe_path(name: str) -> Path:
    """The file of a shipped recipe; an unknown name is a ConfigError listing the recipes."""
    path = RECIPES_DIR / f"{name}.yaml"
    if not name or "/" in name or not path.is_file():
        names = recipe_names()
        guess = difflib.get_close_matches(name, names, n=1)
        hint = f" Did you mean '{guess[0]}'?" if guess else ""
        raise ConfigError(f"Unknown recipe '{name}'.{hint} Available: {', '.join(names)} (see `mmat recipes`)",
                          key="--recipe")
    return path


def recipe_description(name: str) -> str:
    """The recipe's one-line description: its first comment line."""
    for line in recipe_path(name).read_text(encoding="utf-8").splitlines():
        if line.startswith("#"):
            return line.lstrip("#").strip()
    return ""


def load_recipe(name: str) -> dict[str, Any]:
    """The recipe's keys as a dict (the lowest layer of a build's configuration)."""
    import yaml

    data = yaml.safe_load(recipe_path(name).read_text(encoding="utf-8")) or {}
    if not isinstance(data, dict):  # pragma: no cover - the shipped files are tested
        raise ConfigError("the top level must be a mapping of keys to values", file=str(recipe_path(name)))
    return data


def merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    """``over`` laid on ``base``: mappings merge key by key, anything else (lists included) replaces."""
    out = dict(base)
    for key, value in over.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge(out[key], value)
        else:
            out[key] = value
    return out


# ---- defaults of a build that names no operators or search ----------------------------------


def _libraries_missing() -> list[str]:
    return [name for name in ("torch", "transformers") if importlib.util.find_spec(name) is None]


def _detector_cached() -> bool:
    from mmat_plugins.tools.detectors import weights_on_this_machine

    return weights_on_this_machine(DEFAULT_DETECTOR)


def label_bbox_off_reason(llm_name: str) -> str | None:
    """Why a build with this backend and no ``tools:`` leaves ``label_bbox`` out (None: it is on).

    With a real model the detector is downloaded on first use, as transformers does. The offline
    backend's build promises no download, so it runs label_bbox only when the weights are
    already on this machine.
    """
    missing = _libraries_missing()
    if missing:
        return f"{' and '.join(missing)} not installed (pip install 'mmat[detect]')"
    if llm_name == "offline" and not _detector_cached():
        return (f"no detector weights on this machine (fetch them once with `huggingface-cli download "
                f"{DEFAULT_DETECTOR}`, or give a local folder: --tools {','.join(PAPER_OPERATORS)} "
                f"--set tools.1.detector.model=PATH)")
    return None


def default_tools(llm_name: str) -> list[dict[str, Any]]:
    """The operators of a build that names none: the paper's four, less label_bbox when it cannot run
    without a download the build did not ask for (see :func:`label_bbox_off_reason`)."""
    if label_bbox_off_reason(llm_name) is not None:
        return [{"name": name} for name in BASE_OPERATORS]
    label_bbox: dict[str, Any] = {"name": "label_bbox"}
    if llm_name == "offline":
        # The weights are in the Hub cache: load them from there, never ask the Hub.
        label_bbox["detector"] = {"name": "transformers", "model": DEFAULT_DETECTOR, "local_files_only": True}
    return [{"name": "image_caption"}, label_bbox, {"name": "ocr"}, {"name": "face_detection"}]


def _web_class(plugins: PluginManager | None = None) -> Any:
    from mmat_core.plugins import get_plugin_manager

    try:
        return (plugins or get_plugin_manager()).get("search", "web")
    except ConfigError:
        return None  # the search plugin is blocked or replaced: no web default


def default_search(plugins: PluginManager | None = None) -> dict[str, Any] | None:
    """``{name: web}`` when a web search key is set, else None (RAG off, and the summary says why)."""
    cls = _web_class(plugins)
    return {"name": "web"} if cls is not None and cls.available_provider() is not None else None


# ---- what a build lacks, in one message --------------------------------------------------------


#: Config key -> plugin family of its components (the executor is left out: it checks nothing).
_FAMILIES = {"source": "source", "llm": "llm", "tools": "tool", "search": "search", "critics": "critic",
             "formatters": "formatter"}


def _components(data: dict[str, Any]) -> list[tuple[str, str, str, dict[str, Any]]]:
    """(config key, family, name, options) of every component named in a raw configuration."""
    found = []
    for head, family in _FAMILIES.items():
        value = data.get(head)
        items = value if isinstance(value, list) else ([] if value is None else [value])
        for index, item in enumerate(items):
            key = f"{head}[{index}]" if isinstance(value, list) and (head != "source" or len(items) > 1) else head
            if isinstance(item, str):
                found.append((key, family, item, {}))
            elif isinstance(item, dict) and isinstance(item.get("name"), str):
                found.append((key, family, item["name"], {k: v for k, v in item.items() if k != "name"}))
    return found


def _option_problem(key: str, cls: Any, exc: Any) -> list[str]:
    from mmat_core.config import validation_error

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


def _detector_problem(key: str, options: dict[str, Any]) -> str | None:
    import os

    detector = options.get("detector", "transformers")
    detector = {"name": detector} if isinstance(detector, str) else dict(detector)
    if detector.get("name", "transformers") != "transformers":
        return None
    missing = _libraries_missing()
    if missing:
        return f"{key} (label_bbox) needs {' and '.join(missing)}: pip install 'mmat[detect]'"
    from mmat_plugins.tools.detectors import weights_on_this_machine

    model = str(detector.get("model") or DEFAULT_DETECTOR)
    offline = detector.get("local_files_only") or os.environ.get("HF_HUB_OFFLINE", "") not in ("", "0")
    if (offline or Path(model).expanduser().is_absolute() or model.startswith(".")) and not weights_on_this_machine(model):
        return (f"{key} (label_bbox) has no detector weights at {model!r} and may not download them: give a local "
                f"folder with --set {key}.detector.model=PATH, or allow the download (unset HF_HUB_OFFLINE, "
                "detector.local_files_only: false)")
    return None


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
    options, missing API keys, search keys, detector weights, dataset paths), each with how to
    supply it. Builds each component and throws it away: nothing is read, called or written."""
    from pydantic import ValidationError

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
            problems.extend(_option_problem(key, cls, exc))
            continue
        try:
            cls(parsed)
        except ConfigError as exc:
            problems.append(_construction_problem(key, family, name, exc))
            continue
        if family == "tool" and name == "label_bbox":
            problem = _detector_problem(key, options)
            if problem:
                problems.append(problem)
    return problems


def _problems_error(problems: list[str], file: str | None) -> ConfigError:
    listing = "\n".join(f"  - {problem}" for problem in problems)
    return ConfigError(f"this build cannot start; it lacks {len(problems)} thing(s), each with how to supply it:\n"
                       f"{listing}\nNothing was run and nothing was written.", file=file)


def preflight(config: PipelineConfig, *, plugins: PluginManager | None = None, file: str | None = None) -> None:
    """Raise one ConfigError listing every problem of ``config``'s components (see :func:`component_problems`)."""
    problems = component_problems(config.model_dump(mode="json"), plugins)
    if problems:
        raise _problems_error(problems, file)


def _problem_key(problem: str) -> str:
    return problem.split(":", 1)[0].split(" ", 1)[0]


def load_checked(path: str | Path | None, overrides: dict[str, Any] | None, recipe: str) -> PipelineConfig:
    """``load_config`` for a recipe build, with everything the build lacks (the configuration's own
    errors and what its components need: keys, weights, paths) in one message."""
    from mmat_core.config import config_data, load_config

    file = str(path) if path else None
    mine = component_problems(config_data(path, overrides, recipe))
    try:
        config = load_config(path, overrides, recipe)
    except ConfigError as exc:
        theirs = list(getattr(exc, "problems", None) or [str(exc)])
        covered = {_problem_key(problem) for problem in mine}
        raise _problems_error([p for p in theirs if _problem_key(p) not in covered] + mine, file) from None
    if mine:
        raise _problems_error(mine, file)
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
        reason = None if asked or name != "label_bbox" else label_bbox_off_reason(config.llm.name)
        notes.append(f"{name} off: {reason or 'not in the configured tools'}")
    if config.search is None:
        if "search" in config.model_fields_set:
            notes.append("RAG off: search is null in the configuration")
        else:
            from mmat_plugins.search.web import LOCAL_HINT, WEB_BACKENDS, looked_for

            notes.append(f"RAG off: no web search key is set (looked for "
                         f"{looked_for([cls.name for cls in WEB_BACKENDS], {})}); set one, {LOCAL_HINT}")
    elif config.search.name == "local":
        notes.append("RAG searches a local corpus (the paper used Google search; see docs/recipes.md)")
    return notes
