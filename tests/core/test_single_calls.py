"""mmat_core.single_calls: one tool call outside a build, the function behind ``mmat tool run``."""

from __future__ import annotations

from pathlib import Path

import pytest

from mmat_core import hookimpl
from mmat_core.errors import ConfigError, UnknownComponentError
from mmat_core.images import ImageError
from mmat_core.plugins import PluginManager
from mmat_core.run.assembly import create_component
from mmat_core.single_calls import run_tool
from tests.core.conftest import EchoTool, make_png


def manager_with_echo() -> PluginManager:
    manager = PluginManager()
    plugin = type("EchoPlugin", (), {"register_tools": staticmethod(hookimpl(lambda register: register(EchoTool)))})
    manager.register(plugin, "echo-plugin")
    return manager


def test_run_tool_returns_the_call_of_one_operator_on_one_image(tmp_path: Path) -> None:
    call = run_tool("echo", make_png(tmp_path / "a.png"), manager=manager_with_echo())
    assert (call.name, call.result, call.error) == ("echo", "echo says hello", None)


def test_run_tool_refuses_a_file_that_is_not_an_image(tmp_path: Path) -> None:
    text = tmp_path / "notes.png"
    text.write_text("not an image")
    with pytest.raises(ImageError):
        run_tool("echo", text, manager=manager_with_echo())


def test_create_component_names_the_key_of_a_wrong_option() -> None:
    with pytest.raises(ConfigError, match=r"search\.rerank"):
        create_component("search", {"name": "local", "rerank": "sometimes"}, key="search")


def test_create_component_answers_an_unknown_name_with_the_choices() -> None:
    with pytest.raises(UnknownComponentError, match="Did you mean 'local'"):
        create_component("search", "locale")
