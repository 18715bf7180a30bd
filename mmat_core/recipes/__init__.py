"""Recipes: named, shipped configs a build starts from (``mmat build --recipe paper``).

A recipe is a plain YAML config in this folder; its first comment line is its one-line
description. It is the lowest layer of a build's configuration: a config file given with
``--config`` overrides its keys, and flags and ``--set`` override both.

This module sits below :mod:`mmat_core.config`, which uses it: the recipe files, and the default
operators and search of a build that names none (:func:`default_tools`, :func:`default_search`),
which ask the registered components through their declared capabilities
(:meth:`~mmat_core.components.Tool.default_off_reason`,
:meth:`~mmat_core.components.SearchBackend.unavailable_reason`). What a build still lacks and how
it departs from the paper are checked above the configuration, in :mod:`mmat_core.preflight`.
"""

from __future__ import annotations

import difflib
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mmat_core.errors import ConfigError

if TYPE_CHECKING:  # the component bases import pydantic; `mmat recipes` lists files and needs none
    from mmat_core.components import Component, SearchBackend, Tool
    from mmat_core.plugins import PluginManager

RECIPES_DIR = Path(__file__).resolve().parent
#: The paper's operators, in the order the paper lists them.
PAPER_OPERATORS = ("image_caption", "label_bbox", "ocr", "face_detection")
#: The search backend of the paper's web RAG, used by a real build that names none when it can be.
WEB_SEARCH = "web"


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


def registered(family: str, name: str, plugins: PluginManager | None = None) -> type[Component] | None:
    """The class registered as ``name`` in ``family``, or None (no plugin provides it, or it is blocked)."""
    from mmat_core.plugins import get_plugin_manager

    try:
        return (plugins or get_plugin_manager()).get(family, name)
    except ConfigError:
        return None


def _tool(name: str, plugins: PluginManager | None) -> type[Tool] | None:
    from mmat_core.components import Tool

    cls = registered("tool", name, plugins)
    return cls if isinstance(cls, type) and issubclass(cls, Tool) else None


def operator_off_reason(name: str, llm_name: str, plugins: PluginManager | None = None) -> str | None:
    """Why a build with this backend and no ``tools:`` leaves the paper's operator ``name`` out
    (None: it runs), as the tool itself says (:meth:`~mmat_core.components.Tool.default_off_reason`)."""
    cls = _tool(name, plugins)
    return cls.default_off_reason(offline=llm_name == "offline") if cls is not None else None


def default_tools(llm_name: str, plugins: PluginManager | None = None) -> list[dict[str, Any]]:
    """The operators of a build that names none: the paper's four, less each one whose tool says
    it cannot run in this build (label_bbox without a download the offline build did not ask for),
    each with the options its tool gives such a build. A name no plugin provides stays, for the
    pipeline to report with its suggestions."""
    offline = llm_name == "offline"
    specs: list[dict[str, Any]] = []
    for name in PAPER_OPERATORS:
        cls = _tool(name, plugins)
        if cls is None:
            specs.append({"name": name})
        elif cls.default_off_reason(offline=offline) is None:
            specs.append({"name": name, **cls.default_options(offline=offline)})
    return specs


def search_off_reason(plugins: PluginManager | None = None) -> str | None:
    """Why a real build that names no search has RAG off (None: the web backend can be used)."""
    from mmat_core.components import SearchBackend

    cls = registered("search", WEB_SEARCH, plugins)
    if not (isinstance(cls, type) and issubclass(cls, SearchBackend)):
        return f"no search backend named {WEB_SEARCH!r} is registered (its plugin is blocked or not installed)"
    return cls.unavailable_reason()


def default_search(plugins: PluginManager | None = None) -> dict[str, Any] | None:
    """``{name: web}`` when the web backend can be used (a search key is set), else None (RAG off,
    and the build's summary says why)."""
    return {"name": WEB_SEARCH} if search_off_reason(plugins) is None else None
