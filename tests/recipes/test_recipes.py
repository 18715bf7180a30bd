"""Recipes: listing and showing them, the layers (recipe < config file < --set), the one-message
preflight, and the defaults and notes that keep a build from silently departing from the paper."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from mmat_core.config import PipelineConfig, load_config
from mmat_core.errors import ConfigError
from mmat_core.preflight import load_checked, paper_departures, preflight
from mmat_core.recipes import load_recipe, recipe_description, recipe_names

MMAT = [sys.executable, "-c", "from mmat_core.cli import run; run()"]
#: The two paths the paper recipe cannot default (TabMWP and InfoSeek are local folders only).
PATHS = {"source[3].path": "/data/tabmwp", "source[4].path": "/data/infoseek"}
WEB_KEYS = ("GOOGLE_API_KEY", "GOOGLE_CSE_ID", "BING_API_KEY", "BRAVE_API_KEY", "TAVILY_API_KEY", "SERPAPI_API_KEY")


def mmat(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """The real command line in a subprocess."""
    return subprocess.run([*MMAT, *args], check=False, capture_output=True, text=True, timeout=600, env=env)


@pytest.fixture(autouse=True)
def no_keys(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No API or search key, and an empty Hub cache: the machine of a new user."""
    for env in (*WEB_KEYS, "OPENAI_API_KEY"):
        monkeypatch.delenv(env, raising=False)
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty-hub-cache"))


def test_shipped_recipes_are_paper_and_sample() -> None:
    assert recipe_names() == ["paper", "sample"]
    assert all(recipe_description(name) for name in recipe_names())


def test_mmat_recipes_lists_each_recipe_on_one_line() -> None:
    result = mmat("recipes")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert [line.split()[0] for line in lines] == ["paper", "sample"]
    assert "MMAT-1M paper's method" in lines[0]


def test_mmat_recipes_show_prints_a_plain_config_that_builds_the_same(tmp_path: Path) -> None:
    result = mmat("recipes", "show", "paper")
    assert result.returncode == 0, result.stderr
    copy = tmp_path / "my.yaml"
    copy.write_text(result.stdout)
    assert load_config(copy, PATHS).fingerprint() == load_config(None, PATHS, recipe="paper").fingerprint()


def test_unknown_recipe_suggests_the_closest() -> None:
    with pytest.raises(ConfigError, match="Unknown recipe 'papr'. Did you mean 'paper'\\? Available: paper, sample"):
        load_config(None, recipe="papr")


def test_sample_recipe_equals_the_default_build() -> None:
    assert load_config(None, recipe="sample").fingerprint() == load_config(None).fingerprint()


def test_paper_recipe_is_the_papers_method() -> None:
    config = load_config(None, PATHS, recipe="paper")
    assert [s.name for s in config.sources] == ["visual_cot", "llava_cot", "cauldron", "tabmwp", "infoseek"]
    assert all(s.options.get("mix") == "paper" for s in config.sources if s.name != "tabmwp")
    assert [t.name for t in config.tools] == ["image_caption", "label_bbox", "ocr", "face_detection"]
    assert config.search is not None and config.search.name == "web"
    assert [c.name for c in config.critics] == ["general", "math", "quality"]
    assert config.engine.final_answer == "label"
    assert [(f.name, f.options) for f in config.formatters] == [("rr", {"naming": "paper"}), ("orr", {"naming": "paper"})]
    assert (config.llm.name, config.llm.options) == ("openai", {"model": "gpt-4o"})


def test_config_file_overrides_the_recipe_and_set_overrides_both(tmp_path: Path) -> None:
    file = tmp_path / "over.yaml"
    file.write_text("engine: {max_turns: 5, final_answer: model}\nllm: {model: gpt-4o-mini}\n")
    config = load_config(file, {**PATHS, "engine.max_turns": 7}, recipe="paper")
    assert config.engine.max_turns == 7 and config.engine.final_answer == "model"
    assert config.llm.name == "openai" and config.llm.options == {"model": "gpt-4o-mini"}  # mappings merge
    assert [c.name for c in config.critics] == ["general", "math", "quality"]  # untouched keys stay the recipe's
    assert load_recipe("paper")["engine"] == {"final_answer": "label"}


def test_preflight_lists_everything_the_paper_recipe_lacks_in_one_message() -> None:
    with pytest.raises(ConfigError) as info:
        load_checked(None, None, "paper")
    message = str(info.value)
    assert message.startswith("this build cannot start")
    for needed in ("source[0].image_root", "source[1].image_root", "--set source[3].path=", "--set source[4].path=",
                   "OPENAI_API_KEY", "GOOGLE_API_KEY + GOOGLE_CSE_ID", "--set search.name=local"):
        assert needed in message, needed
    assert message.count("source[3].path") == 2  # listed once (with its --set), not again as a bare "Field required"


def test_preflight_names_missing_detector_weights_when_downloads_are_off(tmp_path: Path,
                                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    config = PipelineConfig(tools=["label_bbox"], critics=[], formatters=[])
    with pytest.raises(ConfigError, match=r"tools\[0\] \(label_bbox\): no detector weights at "
                                          r"'IDEA-Research/grounding-dino-tiny'.*--set tools\[0\]\.detector\.model=PATH"):
        preflight(config)


def test_recipe_build_with_missing_things_stops_before_creating_the_run_folder(tmp_path: Path) -> None:
    out = tmp_path / "run"
    result = mmat("build", "--recipe", "paper", "--out", str(out))
    assert result.returncode == 2
    assert result.stderr.count("Error:") == 1 and "Nothing was run and nothing was written." in result.stderr
    assert not out.exists()


def test_a_real_build_searches_the_web_when_a_key_is_set(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TAVILY_API_KEY", "k")
    config = PipelineConfig(source="infoseek", llm="openai")
    assert config.search is not None and config.search.name == "web"


def test_a_real_build_without_a_search_key_has_rag_off_and_says_which_keys_it_looked_for() -> None:
    config = PipelineConfig(source="infoseek", llm="openai")
    assert config.search is None
    note = next(n for n in paper_departures(config) if n.startswith("RAG off"))
    assert "GOOGLE_API_KEY + GOOGLE_CSE_ID, BING_API_KEY" in note and "search.name=local" in note


def test_a_real_build_runs_all_four_operators_by_default() -> None:
    config = PipelineConfig(source="infoseek", llm="openai")
    assert [t.name for t in config.tools] == ["image_caption", "label_bbox", "ocr", "face_detection"]
    assert config.tools[1].options == {}  # Grounding DINO tiny, downloaded on first use


def test_the_offline_build_leaves_label_bbox_off_without_weights_and_says_why() -> None:
    config = PipelineConfig()
    assert [t.name for t in config.tools] == ["image_caption", "ocr", "face_detection"]
    assert paper_departures(config)[0].startswith("label_bbox off: no detector weights on this machine")


def test_the_offline_build_runs_label_bbox_from_the_hub_cache(tmp_path: Path) -> None:
    snapshot = tmp_path / "empty-hub-cache" / "models--IDEA-Research--grounding-dino-tiny" / "snapshots" / "a1"
    snapshot.mkdir(parents=True)
    (snapshot / "config.json").write_text("{}")
    config = PipelineConfig()
    assert config.tools[1].name == "label_bbox"
    assert config.tools[1].options["detector"]["local_files_only"] is True
    assert not any(n.startswith("label_bbox") for n in paper_departures(config))


def test_chosen_tools_are_noted_as_chosen_not_as_missing_weights() -> None:
    config = PipelineConfig(tools=["ocr"])
    notes = paper_departures(config)
    assert "label_bbox off: not in the configured tools" in notes and "image_caption off: not in the configured tools" in notes


def test_default_sample_build_summary_names_the_operators_left_off(tmp_path: Path) -> None:
    import os

    env = {**os.environ, "HF_HUB_CACHE": str(tmp_path / "empty-hub-cache")}
    result = mmat("build", "--out", str(tmp_path / "run"), "--limit", "2", env=env)
    assert result.returncode == 0, result.stderr
    assert "  paper: label_bbox off: no detector weights on this machine (fetch them once with " in result.stdout
    assert "--set tools.1.detector.model=PATH" in result.stdout


def test_tools_flag_then_set_reaches_one_tools_options(tmp_path: Path) -> None:
    from mmat_core.cli.build import collect_overrides

    overrides = collect_overrides(tools="image_caption,label_bbox", set_items=("tools.1.detector.model=/models/gd",))
    config = load_config(None, overrides)
    assert config.tools[1].options == {"detector": {"model": "/models/gd"}}
