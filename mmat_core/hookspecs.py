"""The hook specifications of mmat (pluggy project name ``mmat``).

Most hooks are *collection* hooks: mmat calls each once per plugin with a ``register`` callback, and
the plugin hands over component classes. The classes are imported by the plugin module, but heavy
libraries (torch, transformers, onnxruntime, ray, datasets) are imported only inside a component's
methods, so loading plugins stays cheap. Hooks are always called with keyword arguments.
The one other hook, ``register_commands(cli)``, lets a plugin add subcommands to ``mmat``.

A plugin implements any subset of these hooks::

    from mmat_core import hookimpl

    @hookimpl
    def register_tools(register):
        register(MyTool)
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

import pluggy

if TYPE_CHECKING:
    import click

    from mmat_core.components import (
        Critic,
        Detector,
        Executor,
        Formatter,
        LLMBackend,
        SearchBackend,
        Source,
        Tool,
        Trainer,
    )

PROJECT_NAME = "mmat"

hookspec = pluggy.HookspecMarker(PROJECT_NAME)
hookimpl = pluggy.HookimplMarker(PROJECT_NAME)


@hookspec
def register_sources(register: Callable[[type[Source]], None]) -> None:
    """Register dataset sources (stage 1): classes deriving from :class:`mmat_core.components.Source`."""


@hookspec
def register_llms(register: Callable[[type[LLMBackend]], None]) -> None:
    """Register LLM backends: classes deriving from :class:`mmat_core.components.LLMBackend`."""


@hookspec
def register_tools(register: Callable[[type[Tool]], None]) -> None:
    """Register tools (operators) the generator may call: :class:`mmat_core.components.Tool` classes."""


@hookspec
def register_search_backends(register: Callable[[type[SearchBackend]], None]) -> None:
    """Register retrieval backends used for RAG: :class:`mmat_core.components.SearchBackend` classes."""


@hookspec
def register_detectors(register: Callable[[type[Detector]], None]) -> None:
    """Register object detectors the ``label_bbox`` operator may use: :class:`mmat_core.components.Detector` classes."""


@hookspec
def register_critics(register: Callable[[type[Critic]], None]) -> None:
    """Register reflection critics and verifiers (stage 3): :class:`mmat_core.components.Critic` classes."""


@hookspec
def register_formatters(register: Callable[[type[Formatter]], None]) -> None:
    """Register output formatters and exports (stage 4): :class:`mmat_core.components.Formatter` classes."""


@hookspec
def register_trainers(register: Callable[[type[Trainer]], None]) -> None:
    """Register trainers that fine-tune a model on built data: :class:`mmat_core.components.Trainer` classes."""


@hookspec
def register_executors(register: Callable[[type[Executor]], None]) -> None:
    """Register executors that run a pipeline (in process, on Ray, ...): :class:`mmat_core.components.Executor` classes."""


@hookspec
def register_commands(cli: click.Group) -> None:
    """Add subcommands to the ``mmat`` command line: ``cli`` is a click group, and every command
    the plugin adds to it (``@cli.command()``, ``@cli.group()`` or ``cli.add_command(cmd)``)
    becomes ``mmat NAME``.

    Unlike the collection hooks, this one runs only when a command that is not a core one is asked
    for, or when ``mmat --help`` lists the commands, so import heavy libraries inside the command
    function. A name taken by a core command or by another plugin is an error naming both.
    """


#: Hook name -> component family it fills. The registry and the docs are built from this table.
COLLECTION_HOOKS: dict[str, str] = {
    "register_sources": "source",
    "register_llms": "llm",
    "register_tools": "tool",
    "register_search_backends": "search",
    "register_detectors": "detector",
    "register_critics": "critic",
    "register_formatters": "formatter",
    "register_trainers": "trainer",
    "register_executors": "executor",
}
