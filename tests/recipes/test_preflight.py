"""Every build says what it lacks in one message before any work, however it was assembled: a
recipe, a copy of it given with --config, flags, or a Pipeline in Python; and a third-party
component's own preflight lines are part of that message."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from mmat_core import hookimpl
from mmat_core.components import Tool, ToolContext, ToolOutput
from mmat_core.config import PipelineConfig
from mmat_core.errors import ConfigError
from mmat_core.pipeline import Pipeline
from mmat_core.plugins import PluginManager
from mmat_core.preflight import component_problems

MMAT = [sys.executable, "-c", "from mmat_core.cli import run; run()"]
KEYS = ("GOOGLE_API_KEY", "GOOGLE_CSE_ID", "BING_API_KEY", "BRAVE_API_KEY", "TAVILY_API_KEY", "SERPAPI_API_KEY",
        "OPENAI_API_KEY")


@pytest.fixture(autouse=True)
def no_keys(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No API or search key, and an empty Hub cache: the machine of a new user."""
    for env in KEYS:
        monkeypatch.delenv(env, raising=False)
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty-hub-cache"))


def mmat(*args: str) -> subprocess.CompletedProcess[str]:
    """The real command line in a subprocess, with the test's environment (no keys)."""
    return subprocess.run([*MMAT, *args], check=False, capture_output=True, text=True, timeout=600, env=dict(os.environ))


def problem_lines(stderr: str) -> list[str]:
    """The listed problems of a "cannot start" message."""
    return [line for line in stderr.splitlines() if line.startswith("  - ")]


class LensTool(Tool):
    """A third party's tool that needs a model it cannot find."""

    name = "lens"
    version = "1"
    description = "looks through a lens"

    def preflight(self, key: str) -> list[str]:
        """The lens model is never on this machine."""
        return [f"no lens model on this machine: set LENS_HOME or give one with --set {key}.home=DIR"]

    async def run(self, args: dict[str, Any], ctx: ToolContext) -> ToolOutput:
        """Never reached: the build stops first."""
        raise AssertionError("a tool that lacks its model ran")


class LensPlugin:
    @staticmethod
    @hookimpl
    def register_tools(register: Callable[..., None]) -> None:
        register(LensTool)


def lens_plugins() -> PluginManager:
    """The built-in plugins and the lens plugin, registered in code."""
    manager = PluginManager()
    manager.register(LensPlugin, "lens-plugin")
    return manager


def test_a_copied_recipe_built_with_config_lists_the_same_problems_as_the_recipe(tmp_path: Path) -> None:
    copy = tmp_path / "paper-copy.yaml"
    shown = mmat("recipes", "show", "paper")
    assert shown.returncode == 0, shown.stderr
    copy.write_text(shown.stdout)
    by_recipe = mmat("build", "--recipe", "paper", "--out", str(tmp_path / "a"))
    by_config = mmat("build", "--config", str(copy), "--out", str(tmp_path / "b"))
    assert by_recipe.returncode == by_config.returncode == 2
    assert by_config.stderr.count("Error:") == 1 and "Nothing was run and nothing was written." in by_config.stderr
    assert len(problem_lines(by_config.stderr)) >= 5
    assert problem_lines(by_config.stderr) == problem_lines(by_recipe.stderr)
    assert not (tmp_path / "b").exists()


def test_a_pipeline_in_python_lists_a_missing_dataset_path_and_key_together_before_creating_the_out_dir(
        tmp_path: Path) -> None:
    out = tmp_path / "run"
    with pytest.raises(ConfigError) as info:
        Pipeline(source={"name": "jsonl", "path": str(tmp_path / "missing.jsonl")}, llm="openai",
                 tools=[], critics=[], formatters=["rr"]).run(out)
    message = str(info.value)
    assert message.startswith("this build cannot start; it lacks 2 thing(s)")
    assert "missing.jsonl does not exist" in message and "OPENAI_API_KEY" in message
    assert not out.exists()


def test_a_third_party_components_preflight_stops_pipeline_run_before_the_out_dir(tmp_path: Path) -> None:
    out = tmp_path / "run"
    pipeline = Pipeline(source="sample", llm="offline", tools=["ocr", "lens"], critics=[], formatters=["rr"],
                        plugins=lens_plugins())
    with pytest.raises(ConfigError, match=r"tools\[1\] \(lens\): no lens model on this machine: set LENS_HOME "
                                          r"or give one with --set tools\[1\]\.home=DIR"):
        pipeline.run(out)
    assert not out.exists()


def test_a_third_party_components_preflight_is_in_the_configs_problems() -> None:
    problems = component_problems({"tools": ["lens"], "llm": "openai"}, plugins=lens_plugins())
    assert "tools[0] (lens): no lens model on this machine: set LENS_HOME or give one with --set tools[0].home=DIR" \
        in problems
    assert any("OPENAI_API_KEY" in problem for problem in problems)


def test_the_default_sample_build_lacks_nothing_with_no_key_and_no_download() -> None:
    config = PipelineConfig()
    assert component_problems(config.model_dump(mode="json")) == []
    Pipeline.from_config(config).check_ready()


def test_an_openai_backend_on_a_local_server_with_its_key_set_is_ready(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LOCAL_VLM_KEY", "k")
    llm = {"name": "openai", "base_url": "http://127.0.0.1:9/v1", "api_key_env": "LOCAL_VLM_KEY"}
    assert component_problems({"llm": llm}) == []
